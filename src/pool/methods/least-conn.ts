import type { Peer } from '../peer.ts';
import { LaneLists, leastBy, reference, roundRobin, withBackup } from './round-robin.ts';
import { FULL_CAPABILITIES, type Balancer, type MethodDefinition } from './types.ts';

const conns = (peer: Peer): number => peer.conns;

/**
 * `least-conn`: the server with the fewest active connections relative to its weight; ties by
 * weighted round robin (nginx `least_conn`). Servers sit in lanes by conns per unit of weight
 * (lanes.ts), so a choice does not pass over every server.
 */
export function createLeastConn(): Balancer {
  if (reference.scan) {
    return { select: (peers, sel) => (peers.single ? roundRobin(peers, sel) : withBackup(peers, sel, (list) => leastBy(list, sel, conns))) };
  }
  const lists = new LaneLists({ load: conns });
  return {
    select: (peers, sel) => (peers.single ? roundRobin(peers, sel) : lists.select(peers, sel)),
    rebuild: (peers) => lists.rebuild(peers),
    // a server's conns changed: it moves to the lane of its new load before the next choice
    chosen: (peer) => peer.watch?.changed(),
    finished: (peer) => peer.watch?.changed(),
  };
}

/** The registry's entry for `least-conn`. */
export const LEAST_CONN: MethodDefinition<Record<never, never>> = {
  name: 'least-conn',
  parameters: {},
  capabilities: () => FULL_CAPABILITIES,
  create: createLeastConn,
};
