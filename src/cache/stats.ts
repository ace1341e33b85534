/**
 * `cache()`'s statistics, shaped as NGINX Plus's cache object: responses and bytes per cache status,
 * and what was written to the store; and each request's status, on its exchange record and the
 * `switchyard:cache:status` diagnostics channel.
 * @module
 */
import type { IncomingMessage } from 'node:http';
import { channels } from '../core/diagnostics.ts';
import { setEarlyCacheStatus, type Exchange } from '../core/exchange.ts';
import type { CacheStore } from '../store/index.ts';
import type { CacheStatus } from './options.ts';

/** Records a request's cache status on its exchange and publishes it on `switchyard:cache:status`. */
export function setStatus(ex: Exchange, status: CacheStatus, key?: string): void {
  ex.cacheStatus = status;
  if (channels.cacheStatus.hasSubscribers) channels.cacheStatus.publish({ req: ex.req, ex, status, key });
}

/** {@link setStatus} for a HIT answered before the request had an exchange record (the fast path). */
export function setEarlyHit(req: IncomingMessage): void {
  setEarlyCacheStatus(req, 'HIT');
  if (channels.cacheStatus.hasSubscribers) channels.cacheStatus.publish({ req, ex: undefined, status: 'HIT', key: undefined });
}

/** Responses and bytes for one cache status (NGINX Plus cache counters). */
export interface CacheCounter {
  /** Responses answered with this status. */
  responses: number;
  /** Body bytes sent with this status. */
  bytes: number;
}

/** A counter for statuses that go upstream: also what was written to the cache. */
export interface CacheWriteCounter extends CacheCounter {
  /** Responses of this status stored in the cache (NGINX Plus `responses_written`). */
  responsesWritten: number;
  /** Body bytes of this status stored in the cache (NGINX Plus `bytes_written`). */
  bytesWritten: number;
}

/**
 * Statistics of one cache, NGINX Plus's `/api/9/http/caches/{name}` in camelCase (monitor() serves
 * them under NGINX Plus's names: `max_size`, `responses_written`, `bytes_written`).
 */
export interface CacheStats {
  /** Bytes held (the in-memory store's count; 0 for external stores, which keep their own). */
  size: number;
  /** The in-memory store's `maxBytes` (undefined for external stores); NGINX Plus `max_size`. */
  maxSize: number | undefined;
  /** Always false: there is no loader. */
  cold: boolean;
  /** Responses answered from a fresh entry. */
  hit: CacheCounter;
  /** Responses answered from an expired entry (`useStale`). */
  stale: CacheCounter;
  /** Responses answered from an expired entry while another request updates it. */
  updating: CacheCounter;
  /** Responses answered from an entry the upstream confirmed with 304 (`revalidate`). */
  revalidated: CacheCounter;
  /** Responses fetched because nothing was cached. */
  miss: CacheWriteCounter;
  /** Responses fetched because the entry had expired. */
  expired: CacheWriteCounter;
  /** Responses fetched past the cache (`bypass`, a body, an unkeyed header, ...). */
  bypass: CacheWriteCounter;
}

const COUNTER = { MISS: 'miss', BYPASS: 'bypass', EXPIRED: 'expired', STALE: 'stale', UPDATING: 'updating', REVALIDATED: 'revalidated', HIT: 'hit' } as const;

function zero(): CacheStats {
  const c = (): CacheCounter => ({ responses: 0, bytes: 0 });
  const w = (): CacheWriteCounter => ({ responses: 0, bytes: 0, responsesWritten: 0, bytesWritten: 0 });
  return { size: 0, maxSize: undefined, cold: false, hit: c(), stale: c(), updating: c(), revalidated: c(), miss: w(), expired: w(), bypass: w() };
}

/** The counters of one cache. */
export class CacheCounters {
  #counters = zero();

  /** One response answered with `status`, `bytes` of body. */
  count(status: CacheStatus, bytes: number): void {
    const c = this.#counters[COUNTER[status]];
    c.responses++;
    c.bytes += bytes;
  }

  /** A response fetched as `status` (MISS, EXPIRED, BYPASS) was stored, `bytes` of body. */
  written(status: CacheStatus, bytes: number): void {
    if (status !== 'MISS' && status !== 'EXPIRED' && status !== 'BYPASS') return;
    const c = this.#counters[COUNTER[status]];
    c.responsesWritten++;
    c.bytesWritten += bytes;
  }

  /** A copy of the counters, with the memory store's size (0 and undefined for other stores). */
  snapshot(store: CacheStore): CacheStats {
    const s = structuredClone(this.#counters);
    s.size = store.memory?.bytes ?? 0;
    s.maxSize = store.memory === undefined ? undefined : (store.memory.opts as { maxBytes: number }).maxBytes;
    return s;
  }

  /** Zeroes the counters. */
  reset(): void {
    this.#counters = zero();
  }
}
