/**
 * `cache()`: nginx's `proxy_cache` as a middleware. The request's way through it is in decide.ts
 * (keys in key.ts), a response's capture in capture.ts, the entry format in entry.ts, the lock and
 * min-uses tables in lock.ts, statistics in stats.ts, purging in purge.ts and what it shares with
 * other instances (option `sync`) in sync.ts; its store is one of src/store/.
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Middleware, Next } from '../core/chain.ts';
import { stringOption } from '../core/options.ts';
import { DEFAULT_NAMESPACE, resolveStore, type CacheStore } from '../store/index.ts';
import { decide, fastHit, type CacheContext } from './decide.ts';
import { KnownKeys } from './key.ts';
import { FillTable, UseCounter } from './lock.ts';
import { resolveCacheOptions, type CacheOptions } from './options.ts';
import { Purger } from './purge.ts';
import { CacheCounters, type CacheStats } from './stats.ts';
import { CacheCluster } from './sync.ts';

export {
  DEFAULT_CACHE_BODIES,
  DEFAULT_CACHE_TRUST_PROXY,
  DEFAULT_LOCK_AGE,
  DEFAULT_LOCK_TIMEOUT,
  DEFAULT_MAX_ENTRY_SIZE,
  DEFAULT_STATUS_HEADER,
  DEFAULT_UNKEYED_HEADERS,
} from './options.ts';
export type { CacheOptions, CacheStatus, RequestSwitch, UseStaleCondition } from './options.ts';
export type { CacheCounter, CacheStats, CacheWriteCounter } from './stats.ts';

/** The middleware returned by {@link cache}, with its store and controls. */
export interface CacheMiddleware extends Middleware {
  /** The cache's name (option `name`). */
  readonly name: string;
  /** The fail-open store; listen to its `'storeError'` event to see store failures. */
  readonly store: CacheStore;
  /**
   * Removes the entry of `key` (as the `key` option computes it, before the method is added),
   * every method's and every Vary variant's; a key ending in `*` removes every entry whose key
   * starts with the rest. Resolves how many store keys were removed. With `sync`, every instance
   * removes the entries from its memory store (a shared store is purged once), and a response
   * fetched before the purge, here or elsewhere, is not stored after it.
   */
  purge(key: string): Promise<number>;
  /** A snapshot of the counters. */
  stats(): CacheStats;
  /** Zeroes the counters. */
  resetStats(): void;
  /**
   * Disconnects the store (closes a Redis client): store operations in flight get up to
   * `storeTimeout` (at most a second) to finish, then the client is closed whether Redis answers
   * or not. With `sync`, the cache stops taking part in the cluster (its statistics leave the
   * board); the sync handle stays open. Never rejects.
   */
  close(): Promise<void>;
}

/**
 * nginx's `proxy_cache` as a middleware: put it in front of balance() (or any handler). Fresh
 * entries are answered from the store (HIT); other requests go on down the chain while the
 * response streams to the client and is captured for the store when nginx's rules allow it
 * (`valid`, X-Accel-Expires, Cache-Control, Expires, Set-Cookie, Vary, Authorization).
 * X-Accel-Expires is read, never passed on: the client does not get it, on a MISS or from an
 * entry (nginx hides it by default; the cache does even when balance()'s `passHeaders` names it).
 * Stale serving, locking, background updates and revalidation follow nginx's directives of the
 * same names. The store is in memory and bounded by default; give `@keyv/redis` to share it.
 * A failing store never fails a request: the cache goes upstream and the store emits `'storeError'`.
 * @example
 * ```ts
 * import express from 'express';
 * import { createPool, balance, cache } from 'switchyard-proxy';
 *
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }] });
 * const app = express();
 * // Microcaching: each URL reaches the upstream about once a second, however hot.
 * app.use(cache({ valid: '1s', lock: true, useStale: ['updating'], backgroundUpdate: true }), balance(pool));
 * app.listen(8080);
 * ```
 */
export function cache(options: CacheOptions = {}): CacheMiddleware {
  const settings = resolveCacheOptions(options);
  const store = resolveStore(options.store, {
    option: 'store',
    memory: options.memory,
    now: options.now,
    namespace: stringOption(options.namespace, 'namespace', DEFAULT_NAMESPACE, { nonEmpty: true }),
    timeout: options.storeTimeout,
    breaker: options.storeBreaker,
  });
  const stats = new CacheCounters();
  const fills = new FillTable(settings.now);
  const purger = new Purger(store);
  const cluster =
    settings.sync === undefined
      ? undefined
      : new CacheCluster(settings.sync, {
          name: settings.name,
          store,
          fills,
          purger,
          lockAge: settings.lockAge,
          usesWindow: Math.max(1, settings.retention),
          stats: () => stats.snapshot(store),
        });
  const known = store.memory === undefined ? undefined : new KnownKeys(store.keyPrefix);
  const ctx: CacheContext = { settings, store, stats, fills, uses: new UseCounter(settings.minUses), purger, cluster, known };
  // HITs answered before anything needs the request's exchange record: only with the default key
  // and nothing that must see every request (a purge or bypass switch).
  const fastPath = settings.key === undefined && settings.purge === undefined && settings.bypass === undefined;
  const handler = function cache(req: IncomingMessage, res: ServerResponse, next: Next): void {
    if (fastPath && fastHit(ctx, req, res)) return;
    decide(ctx, req, res, next);
  };
  // A function's own `name` is read-only to assignment, not to definition.
  Object.defineProperty(handler, 'name', { value: settings.name, configurable: true });
  return Object.assign(handler, {
    store,
    purge: (key: string): Promise<number> => ctx.purger.purge(key),
    stats: (): CacheStats => ctx.stats.snapshot(store),
    resetStats: (): void => ctx.stats.reset(),
    close: (): Promise<void> => {
      cluster?.close();
      return store.disconnect();
    },
  }) as CacheMiddleware;
}
