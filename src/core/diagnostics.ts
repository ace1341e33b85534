/**
 * Every `diagnostics_channel` switchyard publishes on, with the shape of its
 * messages. A tracer, a logger or a metrics exporter subscribes by name
 * (`diagnostics_channel.subscribe('switchyard:upstream:end', fn)`); a channel
 * nobody subscribes to costs one `hasSubscribers` check, and no message is
 * built. `NODE_DEBUG=switchyard` is one subscriber among others: when it is set,
 * this module subscribes a printer to every channel (see the end of the file).
 *
 * Messages are plain objects made for the subscriber at the moment of the event;
 * the objects they point to (`req`, the exchange record, the upstream response)
 * are switchyard's and the application's own: read them, do not change them,
 * except where a message says otherwise. A subscriber that throws does not stop
 * the request, but Node rethrows its error on the next tick (an uncaught
 * exception), as for any `diagnostics_channel` subscriber.
 * @module
 */
import { channel, type Channel } from 'node:diagnostics_channel';
import type { IncomingMessage } from 'node:http';
import { debuglog } from 'node:util';
import type { CacheStoreError, CacheStoreOperation } from './errors.ts';
import type { Exchange } from './exchange.ts';

/** A pool's server as upstream messages name it. */
export interface UpstreamServerRef {
  /** The server's id in its pool. */
  readonly id: string;
  /** `host:port` of the server, as nginx's `$upstream_addr` shows it. */
  readonly name: string;
}

/**
 * `switchyard:request:start`: balance() took a request, before choosing a server
 * (the client address is resolved; rewrite() and cache(), if in front, have
 * done their part).
 */
export interface RequestStartMessage {
  /** The client's request. */
  readonly req: IncomingMessage;
  /** The request's exchange record. */
  readonly ex: Exchange;
  /** The pool's name. */
  readonly pool: string;
}

/**
 * `switchyard:upstream:attempt`: an attempt of the request is about to be sent
 * to `server`, before the connection is made.
 * @example
 * ```ts
 * import { subscribe } from 'node:diagnostics_channel';
 * import type { UpstreamAttemptMessage } from 'switchyard-proxy';
 *
 * // A tracer without HTTP instrumentation sends its context upstream.
 * subscribe('switchyard:upstream:attempt', (m) => {
 *   (m as UpstreamAttemptMessage).headers.push('traceparent', currentTraceparent());
 * });
 * ```
 */
export interface UpstreamAttemptMessage {
  /** The request's exchange record. */
  readonly ex: Exchange;
  /** The pool's name. */
  readonly pool: string;
  /** The server the attempt goes to. */
  readonly server: UpstreamServerRef;
  /** 1 for the request's first attempt, then 2, 3... (a retry on a fresh connection after a kept-alive one was closed counts). */
  readonly attempt: number;
  /** The request method sent upstream. */
  readonly method: string;
  /** The path and query sent upstream (a server url's path prefix included). */
  readonly path: string;
  /**
   * The request headers about to be sent, as flat `[name, value, ...]` pairs with lowercase
   * names. A subscriber may append pairs (a tracer's `traceparent`, say): they are sent with
   * the others. Nothing else of the message may be changed.
   */
  readonly headers: string[];
}

/** `switchyard:upstream:header`: the server's response header arrived. */
export interface UpstreamHeaderMessage {
  /** The request's exchange record. */
  readonly ex: Exchange;
  /** The pool's name. */
  readonly pool: string;
  /** The server that answered. */
  readonly server: UpstreamServerRef;
  /** The attempt's number: 1 for the request's first, then 2, 3... */
  readonly attempt: number;
  /** The response status. */
  readonly status: number;
  /** Milliseconds from the start of the attempt to the response header (nginx `$upstream_header_time`). */
  readonly headerTime: number;
  /** The upstream response (its body not read yet). */
  readonly response: IncomingMessage;
}

/**
 * How an attempt that got a response ended: `complete` (the whole response was
 * read from the upstream and passed on to the client), `next` (its status is one of `nextUpstream`'s: it was discarded and
 * the request moved on to the next server) or `aborted` (the client or the
 * upstream connection went away before the end).
 */
export type UpstreamEndOutcome = 'complete' | 'next' | 'aborted';

/**
 * `switchyard:upstream:end`: an attempt that got a response is over.
 * @example
 * ```ts
 * import { subscribe } from 'node:diagnostics_channel';
 * import type { UpstreamEndMessage } from 'switchyard-proxy';
 *
 * subscribe('switchyard:upstream:end', (message) => {
 *   const { ex, server, status, outcome, responseTime } = message as UpstreamEndMessage;
 *   console.log(`${ex.requestUri} ${server.name} ${status} ${outcome} ${responseTime.toFixed(1)}ms`);
 * });
 * ```
 */
export interface UpstreamEndMessage {
  /** The request's exchange record. */
  readonly ex: Exchange;
  /** The pool's name. */
  readonly pool: string;
  /** The server of the attempt. */
  readonly server: UpstreamServerRef;
  /** The attempt's number: 1 for the request's first, then 2, 3... */
  readonly attempt: number;
  /** The response status. */
  readonly status: number;
  /** How the attempt ended. */
  readonly outcome: UpstreamEndOutcome;
  /** Bytes the attempt wrote to the upstream connection (request line, headers, body). */
  readonly bytesSent: number;
  /** Bytes the attempt read from the upstream connection (status line, headers, body). */
  readonly bytesReceived: number;
  /** Milliseconds from the start of the attempt to its end (nginx `$upstream_response_time`). */
  readonly responseTime: number;
}

/**
 * Why an attempt, or the request, failed without a response: nginx's
 * `proxy_next_upstream` conditions `error`, `timeout` and `invalid_header`, or
 * `no_server` when no server of the pool could take the request.
 */
export type UpstreamErrorFailure = 'error' | 'timeout' | 'invalid_header' | 'no_server';

/** `switchyard:upstream:error`: an attempt failed without a usable response, or no server could take the request. */
export interface UpstreamErrorMessage {
  /** The request's exchange record. */
  readonly ex: Exchange;
  /** The pool's name. */
  readonly pool: string;
  /** The server of the failed attempt; undefined for `no_server`. */
  readonly server: UpstreamServerRef | undefined;
  /** The failed attempt's number; for `no_server`, the attempt that found no server. */
  readonly attempt: number;
  /** Why it failed. */
  readonly failure: UpstreamErrorFailure;
  /** What went wrong: the socket's or parser's error, a timeout, or the error the request fails with for `no_server`. */
  readonly error: Error;
  /** True when the request goes on to another attempt. */
  readonly retry: boolean;
}

/**
 * `switchyard:cache:status`: cache() decided how it handles a request (`HIT`,
 * `MISS`, `EXPIRED`, `STALE`, `UPDATING`, `REVALIDATED`, `BYPASS`...).
 */
export interface CacheStatusMessage {
  /** The client's request. */
  readonly req: IncomingMessage;
  /** The exchange record; undefined for a HIT answered before one was made. */
  readonly ex: Exchange | undefined;
  /** The cache status, as nginx's `$upstream_cache_status` names it. */
  readonly status: string;
  /** The cache key, when one was computed. */
  readonly key: string | undefined;
}

/** `switchyard:store:error`: an operation of a cache or session store failed (the cache then serves from upstream). */
export interface StoreErrorMessage {
  /** The store's name (its namespace). */
  readonly store: string;
  /** The store operation that failed. */
  readonly operation: CacheStoreOperation;
  /** The store's error; the original error, if any, is its `cause`. */
  readonly error: CacheStoreError;
}

/** A server's state as the monitoring API names it (NGINX Plus `state`). */
export type ServerState = 'up' | 'draining' | 'down' | 'unavail' | 'checking' | 'unhealthy';

/** `switchyard:pool:state`: a server's state changed (the same object as the pool's `state` event). */
export interface PoolStateMessage {
  /** The pool's name. */
  readonly pool: string;
  /** The server's id. */
  readonly id: string;
  /** The server's url. */
  readonly server: string;
  /** The state before. */
  readonly from: ServerState;
  /** The state now. */
  readonly to: ServerState;
}

/** `switchyard:pool:change`: a server was added, removed or updated at run time. */
export interface PoolChangeMessage {
  /** The pool's name. */
  readonly pool: string;
  /** What was done to the server. */
  readonly action: 'add' | 'remove' | 'update';
  /** The server's id. */
  readonly id: string;
  /** The server's url. */
  readonly server: string;
  /** For `update`: the changes as given. */
  readonly changes: Readonly<Record<string, unknown>> | undefined;
}

/**
 * Every switchyard channel by name. Each name's message type is documented on
 * its interface.
 * @internal
 */
export const channels = Object.freeze({
  /** {@link RequestStartMessage} */
  requestStart: channel('switchyard:request:start'),
  /** {@link UpstreamAttemptMessage} */
  upstreamAttempt: channel('switchyard:upstream:attempt'),
  /** {@link UpstreamHeaderMessage} */
  upstreamHeader: channel('switchyard:upstream:header'),
  /** {@link UpstreamEndMessage} */
  upstreamEnd: channel('switchyard:upstream:end'),
  /** {@link UpstreamErrorMessage} */
  upstreamError: channel('switchyard:upstream:error'),
  /** {@link CacheStatusMessage} */
  cacheStatus: channel('switchyard:cache:status'),
  /** {@link StoreErrorMessage} */
  storeError: channel('switchyard:store:error'),
  /** {@link PoolStateMessage} */
  poolState: channel('switchyard:pool:state'),
  /** {@link PoolChangeMessage} */
  poolChange: channel('switchyard:pool:change'),
});

/**
 * The name of every channel switchyard publishes on, for subscribers:
 * `diagnostics_channel.subscribe(name, fn)`.
 * @example
 * ```ts
 * import { subscribe } from 'node:diagnostics_channel';
 * import { DIAGNOSTICS_CHANNELS } from 'switchyard-proxy';
 *
 * for (const name of DIAGNOSTICS_CHANNELS) subscribe(name, (message) => console.log(name, message));
 * ```
 */
export const DIAGNOSTICS_CHANNELS: readonly string[] = Object.freeze(Object.values(channels).map((c: Channel) => String(c.name)));

// NODE_DEBUG=switchyard: one subscriber per channel, printing a line each (as undici does for
// NODE_DEBUG=undici). Node reads NODE_DEBUG when it starts, so this is decided once, here.
const debug = debuglog('switchyard');
if (debug.enabled) {
  const target = (ex: Exchange): string => `${ex.req.method ?? 'GET'} ${ex.requestUri}`;
  const ms = (n: number): string => n.toFixed(1);
  channels.requestStart.subscribe((m) => {
    const { ex, pool } = m as RequestStartMessage;
    debug('pool %s: %s from %s', pool, target(ex), ex.clientAddress);
  });
  channels.upstreamAttempt.subscribe((m) => {
    const { ex, pool, server, attempt, method, path } = m as UpstreamAttemptMessage;
    debug('pool %s: %s attempt %d: %s %s to %s (%s)', pool, target(ex), attempt, method, path, server.id, server.name);
  });
  channels.upstreamHeader.subscribe((m) => {
    const { ex, pool, server, attempt, status, headerTime } = m as UpstreamHeaderMessage;
    debug('pool %s: %s attempt %d: %s answered %d in %sms', pool, target(ex), attempt, server.id, status, ms(headerTime));
  });
  channels.upstreamEnd.subscribe((m) => {
    const { ex, pool, server, attempt, status, outcome, bytesSent, bytesReceived, responseTime } = m as UpstreamEndMessage;
    debug(
      'pool %s: %s attempt %d: %s %d %s, %d bytes sent, %d received, %sms',
      pool,
      target(ex),
      attempt,
      server.id,
      status,
      outcome,
      bytesSent,
      bytesReceived,
      ms(responseTime),
    );
  });
  channels.upstreamError.subscribe((m) => {
    const { ex, pool, server, attempt, failure, error, retry } = m as UpstreamErrorMessage;
    if (server === undefined) debug('pool %s: %s: no live upstreams (%s)', pool, target(ex), error.message);
    else debug('pool %s: %s attempt %d: %s on %s: %s%s', pool, target(ex), attempt, failure, server.id, error.message, retry ? ', trying the next server' : '');
  });
  channels.cacheStatus.subscribe((m) => {
    const { req, status, key } = m as CacheStatusMessage;
    debug('cache: %s %s %s%s', req.method ?? 'GET', req.url ?? '', status, key === undefined ? '' : ` key ${JSON.stringify(key)}`);
  });
  channels.storeError.subscribe((m) => {
    const { store, operation, error } = m as StoreErrorMessage;
    debug('store %s: %s failed: %s', store, operation, error.message);
  });
  channels.poolState.subscribe((m) => {
    const { pool, id, from, to } = m as PoolStateMessage;
    debug('pool %s: server %s %s -> %s', pool, id, from, to);
  });
  channels.poolChange.subscribe((m) => {
    const { pool, action, id, changes } = m as PoolChangeMessage;
    if (changes === undefined) debug('pool %s: %s %s', pool, action, id);
    else debug('pool %s: %s %s %j', pool, action, id, changes);
  });
}
