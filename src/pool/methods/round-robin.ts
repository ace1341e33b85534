import type { Peer } from '../peer.ts';
import type { Balancer, PeerSet, Selection } from './types.ts';

/**
 * nginx's smooth weighted round robin over one list: each eligible peer gains
 * its effective weight, the largest current weight wins (the earliest listed on
 * ties) and pays the total back. Effective weights recover by one per pass.
 * With `chosen` (a sticky request's server), the pass runs as usual but
 * `chosen` pays the total, whether it took part or not (a draining server).
 */
export function smoothWeighted(list: readonly Peer[], sel: Selection, chosen?: Peer): Peer | undefined {
  const now = sel.now;
  let best: Peer | undefined;
  let total = 0;
  for (const peer of list) {
    if (sel.tried.has(peer) || !peer.usable(now)) continue;
    // Slow start caps what a returning server adds (see Peer.weightAt).
    const ew = now < peer.rampEnd ? Math.min(peer.effectiveWeight, peer.weightAt(now)) : peer.effectiveWeight;
    peer.currentWeight += ew;
    total += ew;
    if (peer.effectiveWeight < peer.weight) peer.effectiveWeight++;
    if (best === undefined || peer.currentWeight > best.currentWeight) best = peer;
  }
  if (chosen !== undefined) best = chosen;
  if (best === undefined) return undefined;
  best.currentWeight -= total;
  return best;
}

/**
 * The round-robin choice with the single-server rule and the fall-over to the
 * backup list; the other methods fall back to it as nginx's do.
 */
export function roundRobin(peers: PeerSet, sel: Selection): Peer | undefined {
  if (peers.single) {
    const only = peers.primary[0]!;
    return only.down || only.drain || only.checking() || only.unhealthy() || only.full() ? undefined : only;
  }
  if (!sel.backup) {
    const best = smoothWeighted(peers.primary, sel);
    if (best !== undefined || peers.backup.length === 0) return best;
    sel.backup = true;
  }
  return smoothWeighted(peers.backup, sel);
}

/** `round-robin`: nginx's default method. */
export function createRoundRobin(): Balancer {
  return { select: roundRobin };
}

/**
 * Shared by least_conn and least_time: among the eligible peers of `list`, the
 * one minimizing `metric/weight` (cross-multiplied); ties go to smooth weighted
 * round robin among the tied peers from the first minimum on.
 */
export function leastBy(list: readonly Peer[], sel: Selection, metric: (peer: Peer) => number): Peer | undefined {
  const now = sel.now;
  let best: Peer | undefined;
  let bestMetric = 0;
  let bestWeight = 0;
  let first = 0;
  let many = false;
  for (let i = 0; i < list.length; i++) {
    const peer = list[i]!;
    if (sel.tried.has(peer) || !peer.usable(now)) continue;
    const m = metric(peer);
    // Weights as slow start has them now; a server at the very start of its ramp weighs almost nothing.
    const w = now < peer.rampEnd ? Math.max(peer.weightAt(now), 1e-6) : peer.weight;
    if (best === undefined || m * bestWeight < bestMetric * w) {
      best = peer;
      bestMetric = m;
      bestWeight = w;
      first = i;
      many = false;
    } else if (m * bestWeight === bestMetric * w) {
      many = true;
    }
  }
  if (best === undefined) return undefined;
  if (many) {
    let total = 0;
    for (let i = first; i < list.length; i++) {
      const peer = list[i]!;
      if (sel.tried.has(peer) || !peer.usable(now)) continue;
      const w = now < peer.rampEnd ? Math.max(peer.weightAt(now), 1e-6) : peer.weight;
      if (metric(peer) * bestWeight !== bestMetric * w) continue;
      const ew = now < peer.rampEnd ? Math.min(peer.effectiveWeight, peer.weightAt(now)) : peer.effectiveWeight;
      peer.currentWeight += ew;
      total += ew;
      if (peer.effectiveWeight < peer.weight) peer.effectiveWeight++;
      if (peer.currentWeight > best.currentWeight) best = peer;
    }
    best.currentWeight -= total;
  }
  return best;
}

/** Runs `pick` on the primaries, then (once they are exhausted) on the backups. */
export function withBackup(peers: PeerSet, sel: Selection, pick: (list: readonly Peer[]) => Peer | undefined): Peer | undefined {
  if (!sel.backup) {
    const best = pick(peers.primary);
    if (best !== undefined || peers.backup.length === 0) return best;
    sel.backup = true;
  }
  return pick(peers.backup);
}
