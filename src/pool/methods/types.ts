import type { IncomingMessage } from 'node:http';
import { booleanOption } from '../../core/options.ts';
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
  /** True for a stream (TCP/UDP) connection of streamBalance(): counted in the stream statistics. */
  readonly stream: boolean;
  /** Method scratch space that lives as long as the request (hash value, tries). */
  hash: number;
  rehash: number;
  tries: number;
  key: string | undefined;
}

/** Timings of a finished attempt. @internal */
export interface AttemptTimings {
  /** ms to the response header, or -1 when none arrived. */
  header: number;
  /** ms to the last byte. */
  response: number;
  /**
   * True when the pool's `header()` returned true for this attempt: the method took the header time
   * as it arrived (capability `headerTime: 'header'`) and ended the attempt's in-flight accounting there.
   */
  inflightDone: boolean;
}

/** Timings and byte counts of a finished stream (TCP/UDP) connection of streamBalance(). @internal */
export interface StreamTimings {
  /** ms to the upstream connection (TCP), or -1 when it never connected. */
  connect: number;
  /** ms to the first byte from the server, or -1 when none came. */
  firstByte: number;
  /** ms to the end of the session. */
  response: number;
  /** Bytes sent to the server. */
  sent: number;
  /** Bytes received from the server. */
  received: number;
}

/**
 * One balancing method's per-pool state and choice. The pool keeps every statistic (response
 * times included) itself; the hooks are for the method's own bookkeeping. @internal
 */
export interface Balancer {
  /** Picks the server for this attempt, or undefined when none can take it (nginx `NGX_BUSY`). */
  select(peers: PeerSet, sel: Selection): Peer | undefined;
  /** Called when the server list or weights changed. */
  rebuild?(peers: PeerSet): void;
  /**
   * A sticky hint named `peer`, which can take the request: returns the server to use (`peer`),
   * after whatever bookkeeping keeps the method fair to the requests that are not bound.
   */
  bound?(peers: PeerSet, sel: Selection, peer: Peer): Peer;
  /** Called when `peer` was chosen for an attempt. */
  chosen?(peer: Peer, now: number): void;
  /** Called when the response header of an attempt arrived. */
  header?(peer: Peer, headerTime: number, now: number): void;
  /** Called when an attempt on `peer` ended. */
  finished?(peer: Peer, outcome: 'ok' | 'failed' | 'next', timings: AttemptTimings, now: number): void;
}

/** What a method allows and needs from the pool. @internal */
export interface MethodCapabilities {
  /** Backup servers are allowed (nginx refuses them with hash, ip_hash and random). */
  readonly backup: boolean;
  /** `slowStart` is allowed (NGINX Plus refuses it with hash, ip_hash and random). */
  readonly slowStart: boolean;
  /**
   * When a response's header time goes into the server's average: `'end'`, when the attempt ends
   * successfully (nginx); `'header'`, as soon as the header arrives (least_time header inflight,
   * which ends the attempt's in-flight accounting there). The pool keeps the averages either way.
   */
  readonly headerTime: 'header' | 'end';
}

/**
 * A balancing method as the registry (`methods/index.ts`) lists it. Adding a method is one file
 * exporting one of these, and one entry in the registry. @internal
 */
export interface MethodDefinition<P extends object = Record<string, unknown>> {
  /** The kebab-case name (`least-conn`); nginx's spelling (`least_conn`) is accepted too. */
  readonly name: string;
  /** Other names, each with the parameters it implies: `random-two` is `random` with `two: true`. */
  readonly aliases?: Readonly<Record<string, Partial<P>>> | undefined;
  /**
   * The parameters of the `{ name, ... }` form, checked in this order: each takes the given value
   * (undefined when absent) and returns it resolved, or throws an InvalidOptionError naming `option`.
   */
  readonly parameters: { readonly [K in keyof P]-?: (value: unknown, option: string) => P[K] };
  /** What servers may use with this method and when it takes response times, given its parameters. */
  capabilities(params: P): MethodCapabilities;
  /** The name the pool reports (`stats().method`). @default the definition's `name` */
  label?(params: P): string;
  /** A balancer for one pool. */
  create(params: P, env: MethodEnvironment): Balancer;
}

/** What a pool gives its method's balancer besides the parameters. @internal */
export interface MethodEnvironment {
  /** The pool's random numbers in [0, 1) (its `random` option). */
  readonly random: () => number;
}

/** The capabilities of most methods: everything allowed, header times taken when an attempt ends. @internal */
export const FULL_CAPABILITIES: MethodCapabilities = Object.freeze({ backup: true, slowStart: true, headerTime: 'end' });

/** The capabilities of the hash and random methods: no backup servers, no slow start (as nginx). @internal */
export const HASHED_CAPABILITIES: MethodCapabilities = Object.freeze({ backup: false, slowStart: false, headerTime: 'end' });

/** A method parameter that is a boolean, false when absent. @internal */
export function booleanParameter(value: unknown, option: string): boolean {
  return booleanOption(value, option, false);
}
