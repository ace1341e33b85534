import type { Peer } from '../peer.ts';
import { FULL_CAPABILITIES, type Balancer, type MethodDefinition, type PeerSet, type Selection } from './types.ts';

/**
 * One step of nginx's smooth weighted round robin, the one copy every method uses: each peer of
 * `list` (from index `from` on) that may take this attempt (not tried yet, usable) and that `also`
 * accepts gains its effective weight (capped by slow start, see Peer.weightAt); the largest
 * current weight wins (the earliest listed on ties) and pays the total back; effective weights
 * recover by one per step. With `chosen` (a sticky request's server), the step runs as usual but
 * `chosen` pays the total, whether it took part or not (a draining server).
 */
export function smoothStep(list: readonly Peer[], sel: Selection, also?: (peer: Peer) => boolean, from = 0, chosen?: Peer): Peer | undefined {
  const now = sel.now;
  let best: Peer | undefined;
  let total = 0;
  for (let i = from; i < list.length; i++) {
    const peer = list[i]!;
    if ((also !== undefined && !also(peer)) || sel.tried.has(peer) || !peer.usable(now)) continue;
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
    const best = smoothStep(peers.primary, sel);
    if (best !== undefined || peers.backup.length === 0) return best;
    sel.backup = true;
  }
  return smoothStep(peers.backup, sel);
}

/**
 * A sticky-bound request under round robin (nginx's `get_rr_peer_by_sid`): it still takes its
 * share of the weights, so unbound requests keep the configured proportions; once the bound server
 * is a whole round ahead it is chosen without touching them.
 */
function boundRoundRobin(peers: PeerSet, sel: Selection, found: Peer): Peer {
  if (peers.single) return found;
  const list = sel.backup ? peers.backup : peers.primary;
  let totalWeight = 0;
  if (sel.backup) for (const p of list) totalWeight += p.weight;
  else totalWeight = peers.totalWeight;
  if (found.currentWeight <= -(totalWeight - found.weight)) return found;
  return smoothStep(list, sel, undefined, 0, found)!;
}

/** `round-robin`: nginx's default method. */
export function createRoundRobin(): Balancer {
  return { select: roundRobin, bound: boundRoundRobin };
}

/** The registry's entry for `round-robin`. */
export const ROUND_ROBIN: MethodDefinition<Record<never, never>> = {
  name: 'round-robin',
  parameters: {},
  capabilities: () => FULL_CAPABILITIES,
  create: createRoundRobin,
};

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
  if (best === undefined || !many) return best;
  // Ties: smooth weighted round robin among the tied peers, from the first minimum on.
  const tied = (peer: Peer): boolean => metric(peer) * bestWeight === bestMetric * (now < peer.rampEnd ? Math.max(peer.weightAt(now), 1e-6) : peer.weight);
  return smoothStep(list, sel, tied, first);
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
