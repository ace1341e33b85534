import type { Peer } from '../peer.ts';
import { roundRobin } from './round-robin.ts';
import { booleanParameter, HASHED_CAPABILITIES, type Balancer, type MethodDefinition, type PeerSet } from './types.ts';

/**
 * `random` and `random-two`: a weighted random server (nginx `random`); with
 * two choices, two distinct eligible servers are drawn and the second is used
 * unless it is strictly more loaded per unit of weight (nginx `random two least_conn`).
 */
export function createRandom(two: boolean, random: () => number): Balancer {
  let ranges: number[] = [];
  let list: readonly Peer[] = [];
  let total = 0;
  const rebuild = (peers: PeerSet): void => {
    list = peers.primary;
    ranges = [];
    total = 0;
    for (const p of list) {
      ranges.push(total);
      total += p.weight;
    }
  };
  const peek = (): Peer => {
    const x = Math.floor(random() * total);
    let i = 0;
    let j = ranges.length;
    while (j - i > 1) {
      const k = (i + j) >>> 1;
      if (x < ranges[k]!) j = k;
      else i = k;
    }
    return list[i]!;
  };
  return {
    rebuild,
    select(peers, sel) {
      if (sel.tries > 20 || peers.primary.length < 2) return roundRobin(peers, sel);
      let prev: Peer | undefined;
      for (;;) {
        const peer = peek();
        if (peer !== prev && !sel.tried.has(peer) && peer.usable(sel.now)) {
          if (!two) return peer;
          if (prev !== undefined) return peer.conns * prev.weight > prev.conns * peer.weight ? prev : peer;
          prev = peer;
        }
        if (++sel.tries > 20) return roundRobin(peers, sel);
      }
    },
  };
}

/** Parameters of `random`. */
interface RandomParams {
  two: boolean;
}

/** The registry's entry for `random` and `random-two` (nginx `random [two least_conn]`). */
export const RANDOM: MethodDefinition<RandomParams> = {
  name: 'random',
  aliases: { 'random-two': { two: true } },
  parameters: { two: booleanParameter },
  capabilities: () => HASHED_CAPABILITIES,
  label: (p) => (p.two ? 'random-two' : 'random'),
  create: (p, env) => createRandom(p.two, env.random),
};
