import { leastBy, roundRobin, withBackup } from './round-robin.ts';
import type { Balancer } from './types.ts';

/**
 * `least-conn`: the server with the fewest active connections relative to its
 * weight; ties by weighted round robin (nginx `least_conn`).
 */
export function createLeastConn(): Balancer {
  return {
    select(peers, sel) {
      if (peers.single) return roundRobin(peers, sel);
      return withBackup(peers, sel, (list) => leastBy(list, sel, (p) => p.conns));
    },
  };
}
