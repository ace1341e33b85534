import { leastBy, roundRobin, withBackup } from './round-robin.ts';
import { FULL_CAPABILITIES, type Balancer, type MethodDefinition } from './types.ts';

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

/** The registry's entry for `least-conn`. */
export const LEAST_CONN: MethodDefinition<Record<never, never>> = {
  name: 'least-conn',
  parameters: {},
  capabilities: () => FULL_CAPABILITIES,
  create: createLeastConn,
};
