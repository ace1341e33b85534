import type { Peer } from '../peer.ts';
import { Lanes, loadWeight, rampWeight, type LoadMeasure } from './lanes.ts';
import { FULL_CAPABILITIES, type Balancer, type MethodDefinition, type PeerSet, type Selection } from './types.ts';

/**
 * One step of nginx's smooth weighted round robin as a pass over `list`, the form the hash methods
 * use (their fall-back to round robin, consistent hash among the peers of one server) and the
 * reference the lanes (lanes.ts) are tested against: each peer of `list` (from index `from` on) that
 * may take this attempt (not tried yet, usable) and that `also` accepts gains its effective weight
 * (capped by slow start, see {@link rampWeight}); the largest current weight wins (the earliest
 * listed on ties) and pays the total back; effective weights recover by one per step. With `chosen`
 * (a sticky request's server), the step runs as usual but `chosen` pays the total, whether it took
 * part or not (a draining server).
 */
export function smoothStep(list: readonly Peer[], sel: Selection, also?: (peer: Peer) => boolean, from = 0, chosen?: Peer): Peer | undefined {
  const now = sel.now;
  let best: Peer | undefined;
  let total = 0;
  for (let i = from; i < list.length; i++) {
    const peer = list[i]!;
    if ((also !== undefined && !also(peer)) || sel.tried.has(peer) || !peer.usable(now)) continue;
    const ew = now < peer.rampEnd ? Math.min(peer.effectiveWeight, rampWeight(peer, now)) : peer.effectiveWeight;
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

/** The single-server rule: its only server unless down, draining, held out by a health check or full (never failed). */
function only(peers: PeerSet): Peer | undefined {
  const peer = peers.primary[0]!;
  return peer.down || peer.drain || peer.checking() || peer.unhealthy() || peer.full() ? undefined : peer;
}

/**
 * The round-robin choice as a pass over the servers, with the single-server rule and the fall-over
 * to the backup list; the hash and random methods fall back to it as nginx's do.
 */
export function roundRobin(peers: PeerSet, sel: Selection): Peer | undefined {
  if (peers.single) return only(peers);
  if (!sel.backup) {
    const best = smoothStep(peers.primary, sel);
    if (best !== undefined || peers.backup.length === 0) return best;
    sel.backup = true;
  }
  return smoothStep(peers.backup, sel);
}

/**
 * Shared by least_conn and least_time as a pass over `list` (the reference of their lanes): among the
 * eligible peers, the one minimizing `metric/weight` (cross-multiplied); ties go to smooth weighted
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
    const w = loadWeight(peer, now);
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
  const tied = (peer: Peer): boolean => metric(peer) * bestWeight === bestMetric * loadWeight(peer, now);
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

/**
 * For the tests that compare the lanes with the passes above: while `scan` is true, the round-robin,
 * least-conn and least-time balancers created make their choices by passes over every server. @internal
 */
export const reference = { scan: false };

/**
 * The largest sum of weights a list may have for its lanes: current weights stay within about the
 * sum, and with slow start's steps of 2^-16 every value is then exact (below 2^48), so the lanes'
 * additions, made in another order than the pass's, give the same numbers. A heavier list (weights
 * up to 2^53 - 1 are accepted) is chosen from by the pass itself, rounding as it rounds. @internal
 */
export const EXACT_WEIGHT = 2 ** 32;

/**
 * The primaries' and the backups' {@link Lanes} of one pool, remade when its lists change, and the
 * choice with nginx's fall-over from the primaries to the backups. A list heavier than
 * {@link EXACT_WEIGHT} keeps no lanes: the passes above choose in it. @internal
 */
export class LaneLists {
  readonly #measure: LoadMeasure | undefined;
  #set: PeerSet | undefined;
  #primary: Lanes | undefined;
  #backup: Lanes | undefined;
  /** Whether each list is in lanes (light enough), else chosen from by a pass. */
  #primaryLanes = true;
  #backupLanes = true;
  /** Sum of the backups' weights (the primaries' is the set's totalWeight). */
  backupWeight = 0;

  constructor(measure: LoadMeasure | undefined) {
    this.#measure = measure;
  }

  rebuild(peers: PeerSet): void {
    this.#set = peers;
    this.backupWeight = 0;
    for (const p of peers.backup) this.backupWeight += p.weight;
    this.#primaryLanes = peers.totalWeight <= EXACT_WEIGHT;
    this.#backupLanes = this.backupWeight <= EXACT_WEIGHT;
    // a list left to the pass lets its servers go (their current weights back on the peers)
    const primary = this.#primaryLanes ? peers.primary : [];
    const backup = this.#backupLanes ? peers.backup : [];
    if (this.#primary === undefined || this.#backup === undefined) {
      this.#primary = new Lanes(primary, this.#measure);
      this.#backup = new Lanes(backup, this.#measure);
    } else {
      this.#primary.reset(primary);
      this.#backup.reset(backup);
    }
  }

  /** The server's current weight in the list in use (nginx `current_weight`). */
  current(peers: PeerSet, backup: boolean, peer: Peer): number {
    if (peers !== this.#set) this.rebuild(peers);
    return (backup ? this.#backup! : this.#primary!).current(peer);
  }

  /**
   * nginx's choice in the list in use (the backups after a fall-over), without falling over; with
   * `forced` (round robin's sticky request), the pass runs and `forced` pays the total.
   */
  choose(peers: PeerSet, sel: Selection, forced?: Peer): Peer | undefined {
    if (peers !== this.#set) this.rebuild(peers);
    const backup = sel.backup;
    if (backup ? this.#backupLanes : this.#primaryLanes) return (backup ? this.#backup! : this.#primary!).select(sel, forced);
    const list = backup ? peers.backup : peers.primary;
    const measure = this.#measure;
    if (measure === undefined || forced !== undefined) return smoothStep(list, sel, undefined, 0, forced);
    const now = sel.now;
    if (measure.before !== undefined) for (const peer of list) if (!sel.tried.has(peer) && peer.usable(now)) measure.before(peer, now);
    return leastBy(list, sel, (peer) => measure.load(peer, now));
  }

  select(peers: PeerSet, sel: Selection): Peer | undefined {
    if (!sel.backup) {
      const best = this.choose(peers, sel);
      if (best !== undefined || peers.backup.length === 0) return best;
      sel.backup = true;
    }
    return this.choose(peers, sel);
  }
}

/** `round-robin`: nginx's default method, its SWRR kept in lanes (lanes.ts). */
export function createRoundRobin(): Balancer {
  if (reference.scan) return { select: roundRobin, bound: (peers, sel, found) => boundScan(peers, sel, found) };
  const lists = new LaneLists(undefined);
  return {
    select: (peers, sel) => (peers.single ? only(peers) : lists.select(peers, sel)),
    rebuild: (peers) => lists.rebuild(peers),
    /**
     * A sticky-bound request (nginx's `get_rr_peer_by_sid`): it still takes its share of the
     * weights, so unbound requests keep the configured proportions; once the bound server is a whole
     * round ahead it is chosen without touching them.
     */
    bound(peers, sel, found) {
      if (peers.single) return found;
      const totalWeight = sel.backup ? lists.backupWeight : peers.totalWeight;
      if (lists.current(peers, sel.backup, found) <= -(totalWeight - found.weight)) return found;
      return lists.choose(peers, sel, found)!;
    },
    // a server with maxConns leaves its lane when full and comes back when a request ends
    chosen(peer) {
      if (peer.maxConns !== 0) peer.watch?.changed();
    },
    finished(peer) {
      if (peer.maxConns !== 0) peer.watch?.changed();
    },
  };
}

/** {@link createRoundRobin}'s `bound` as a pass over the servers (the reference). */
function boundScan(peers: PeerSet, sel: Selection, found: Peer): Peer {
  if (peers.single) return found;
  const list = sel.backup ? peers.backup : peers.primary;
  let totalWeight = 0;
  if (sel.backup) for (const p of list) totalWeight += p.weight;
  else totalWeight = peers.totalWeight;
  if (found.currentWeight <= -(totalWeight - found.weight)) return found;
  return smoothStep(list, sel, undefined, 0, found)!;
}

/** The registry's entry for `round-robin`. */
export const ROUND_ROBIN: MethodDefinition<Record<never, never>> = {
  name: 'round-robin',
  parameters: {},
  capabilities: () => FULL_CAPABILITIES,
  create: createRoundRobin,
};
