// The pool's protocol with balance(), sticky(), healthCheck() and the proxy engine: reached through
// a module-private symbol (undici's kDispatch pattern), never through public members, so it is not
// in the published types and no user code can call it (and corrupt the counters) by accident.
import type { IncomingMessage } from 'node:http';
import type { AgentOptions as HttpsAgentOptions } from 'node:https';
import type { Cancellation } from '../core/cancel.ts';
import type { Exchange } from '../core/exchange.ts';
import type { SyncHandle } from '../sync/index.ts';
import type { Route } from './connections.ts';
import type { UpstreamPool } from './index.ts';
import type { AttemptTimings, Selection, StreamTimings } from './methods/types.ts';
import type { AttemptOutcome, Peer } from './peer.ts';

/** The key of a pool's internals: a non-enumerable property no public type mentions. @internal */
export const kPool: unique symbol = Symbol('switchyard.pool');

/** What the middlewares of this package ask of a pool on the request path and in the background. @internal */
export interface PoolInternals {
  /** Starts one request's selection state. */
  selection(req: IncomingMessage | undefined, ex: Exchange | undefined, stream?: boolean): Selection;
  /**
   * nginx `peer.tries`: attempts a request may make (primaries + backups that are neither down nor
   * draining: nginx's `drain` is a kind of `down`), 1 for a single server.
   */
  maxTries(): number;
  /** Picks a server for the next attempt (conns++, probe bookkeeping), or undefined. */
  select(sel: Selection): Peer | undefined;
  /** True when requests that find no server may wait in the queue. */
  readonly queueing: boolean;
  /**
   * Waits in the queue for a server (NGINX Plus `queue`): resolves with the selected server, or
   * undefined on overflow, timeout, abort or close.
   */
  wait(sel: Selection, signal: Cancellation): Promise<Peer | undefined>;
  /**
   * The response header of an attempt arrived. Returns true when the method takes the header time
   * now (least_time header inflight): pass it on as the attempt's `inflightDone`.
   */
  header(peer: Peer, headerTime: number): boolean;
  /** Adds bytes an attempt moved to the server's `sent` and `received` counters. */
  transferred(peer: Peer, sent: number, received: number): void;
  /** An attempt ended: passive health (nginx's free_round_robin_peer) and statistics. */
  finish(peer: Peer, outcome: AttemptOutcome, timings: AttemptTimings, status: number | undefined): void;
  /**
   * A stream connection (streamBalance()) ended, or its connect failed: the stream statistics (kept
   * apart from HTTP's), the method's bookkeeping and passive health, as {@link PoolInternals.finish}.
   */
  finishStream(peer: Peer, outcome: AttemptOutcome, timings: StreamTimings): void;
  /** Where attempts to a server go: the pool's undici dispatcher for it (or the user's), with the dispatch's origin and server name. */
  agentFor(peer: Peer): Route;
  /**
   * The TLS settings of connections to `https://` servers the pool's dispatchers do not make (health
   * probes, WebSocket tunnels): those of its own (the `tls` option, or the user's own `agent.https`),
   * so they verify the same CA and name and present the same client certificate as proxied requests.
   */
  readonly tls: Readonly<HttpsAgentOptions>;
  /** The servers in order, as health checks see them. */
  peers(): readonly Peer[];
  /** A new id for one healthCheck() on this pool. */
  healthCheckId(): number;
  /** Records one probe's outcome in the server's counters. */
  healthProbe(peer: Peer, passed: boolean): void;
  /**
   * Sets what check `checkId` says of a server: `failing` (it holds the server out as unhealthy)
   * and `pending` (mandatory, first check not passed yet). A server that is free of every check
   * again starts its slow start; every change of state is observed (event, downtime).
   */
  healthMark(peer: Peer, checkId: number, failing: boolean, pending: boolean): void;
  /** The pool clock. */
  now(): number;
  /** The pool's cluster-wide state handle, when it has one (healthCheck(), cache(), sticky() and monitor() share through it). */
  sync(): SyncHandle | undefined;
}

/** The internals of a pool. @internal */
export function internals(pool: UpstreamPool): PoolInternals {
  return (pool as unknown as { readonly [kPool]: PoolInternals })[kPool];
}
