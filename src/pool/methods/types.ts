import type { IncomingMessage } from 'node:http';
import type { Exchange } from '../../core/exchange.ts';
import type { Peer } from '../peer.ts';

/** The server lists a balancer chooses from, in configuration order. @internal */
export interface PeerSet {
  readonly primary: readonly Peer[];
  readonly backup: readonly Peer[];
  /** One primary and no backup: nginx never marks it unavailable and never retries. */
  readonly single: boolean;
  /** Sum of the primaries' weights, down ones included (nginx `total_weight`). */
  readonly totalWeight: number;
}

/**
 * One request's selection state across its attempts (nginx's per-request peer
 * data: the `tried` bitmap, the backup switch, hash and retry counters). @internal
 */
export interface Selection {
  readonly tried: Set<Peer>;
  /** True once the primaries were exhausted and the backups are in use. */
  backup: boolean;
  /** The pool clock, read once per attempt. */
  now: number;
  readonly req: IncomingMessage | undefined;
  readonly ex: Exchange | undefined;
  /** Method scratch space that lives as long as the request (hash value, tries). */
  hash: number;
  rehash: number;
  tries: number;
  key: string | undefined;
}

/** Timings of a finished attempt, for least_time. @internal */
export interface AttemptTimings {
  /** ms to the response header, or -1 when none arrived. */
  header: number;
  /** ms to the last byte. */
  response: number;
  /** True when {@link Balancer.header} already ended the attempt's in-flight accounting. */
  inflightDone: boolean;
}

/** One balancing method. Adding a method is one file and one table entry. @internal */
export interface Balancer {
  /** Picks the server for this attempt, or undefined when none can take it (nginx `NGX_BUSY`). */
  select(peers: PeerSet, sel: Selection): Peer | undefined;
  /** Called when the server list or weights changed. */
  rebuild?(peers: PeerSet): void;
  /** Called when an attempt on `peer` ended. */
  finished?(peer: Peer, outcome: 'ok' | 'failed' | 'next', timings: AttemptTimings, now: number): void;
  /** Called when the response header of an attempt arrived; returns true if it ended in-flight accounting. */
  header?(peer: Peer, headerTime: number, now: number): boolean;
  /** Called when `peer` was chosen for an attempt. */
  chosen?(peer: Peer, now: number): void;
}
