/**
 * Stores shared by `cache()` and `sticky()`'s learn mode: the bounded memory store, the fail-open
 * wrapper with its circuit breaker, and {@link resolveStore}, the one place where the store forms a
 * factory accepts become a {@link CacheStore}.
 * @module
 */
import type { Keyv, KeyvStoreAdapter } from 'keyv';
import type { Duration } from '../core/duration.ts';
import { InvalidOptionError } from '../core/errors.ts';
import type { StoreBreakerOptions } from './breaker.ts';
import { CacheStore } from './fail-open.ts';
import { isKeyv, isStoreAdapter } from './keyv.ts';
export { sharedRedisAdapter } from './keyv.ts';
import { objectOption } from '../core/options.ts';
import { createMemoryStore, MEMORY_STORE_OPTIONS, type MemoryStoreOptions } from './memory.ts';

export { CacheStore, DEFAULT_NAMESPACE, DEFAULT_STORE_TIMEOUT, type CacheStoreEvents, type CacheStoreOptions } from './fail-open.ts';
export { CacheStoreError } from '../core/errors.ts';
export type { CacheStoreFailure, CacheStoreOperation } from '../core/errors.ts';
export { DEFAULT_BREAKER_FAILURES, DEFAULT_MAX_PROBE_DELAY, DEFAULT_PROBE_DELAY, type StoreBreakerOptions, type StoreBreakerState } from './breaker.ts';
export {
  createMemoryStore,
  estimateSize,
  DEFAULT_INACTIVE,
  DEFAULT_MAX_BYTES,
  DEFAULT_MAX_ENTRIES,
  ENTRY_OVERHEAD,
  UNKNOWN_VALUE_SIZE,
  type MemoryStore,
  type MemoryStoreOptions,
} from './memory.ts';
export { decode as decodeEntry, encode as encodeEntry, type CacheEntry, type StoredRecord } from './record.ts';

/**
 * The store forms `cache()` and `sticky()`'s learn mode accept: switchyard's own {@link CacheStore}
 * (used as it is), a `Keyv` instance (used with its own namespace and serializer), or a keyv storage
 * adapter such as `new KeyvRedis(...)` or {@link createMemoryStore}'s store (wrapped in a Keyv with
 * the factory's namespace).
 */
export type StoreOption = CacheStore | Keyv | KeyvStoreAdapter;

/** How a factory wants its store: its options as the user gave them, and its own defaults. */
export interface StoreSettings {
  /** The option's path, for errors (`'store'`, `'learn.store'`). */
  readonly option: string;
  /** Bounds of the default memory store, as the user gave them. */
  readonly memory: MemoryStoreOptions | undefined;
  /** The factory's own bounds of its default memory store, under the user's. */
  readonly memoryDefaults?: MemoryStoreOptions | undefined;
  /** The factory's clock, given to the default memory store unless `memory.now` is set. */
  readonly now: (() => number) | undefined;
  /** Namespace of the Keyv put around an adapter. */
  readonly namespace: string;
  /** The factory's `storeTimeout`. */
  readonly timeout: Duration | undefined;
  /** The factory's `storeBreaker`. */
  readonly breaker: StoreBreakerOptions | false | undefined;
}

/**
 * The fail-open store for a factory's `store` option, whatever its form ({@link StoreOption}): a
 * {@link CacheStore} as it is (the factory's `namespace`, `storeTimeout`, `storeBreaker` and `memory`
 * are then the store's own business), anything else wrapped in a new one with the factory's
 * settings, and nothing given a bounded memory store. Throws an {@link InvalidOptionError} naming
 * `settings.option` for anything else.
 * @example
 * ```ts
 * const store = resolveStore(options.store, {
 *   option: 'store',
 *   memory: options.memory,
 *   now: options.now,
 *   namespace: options.namespace ?? 'switchyard',
 *   timeout: options.storeTimeout,
 *   breaker: options.storeBreaker,
 * });
 * ```
 */
export function resolveStore(store: StoreOption | undefined, settings: StoreSettings): CacheStore {
  if (store instanceof CacheStore) return store;
  if (store !== undefined && !isKeyv(store) && !isStoreAdapter(store)) {
    throw new InvalidOptionError(settings.option, 'a CacheStore, a Keyv instance or a keyv storage adapter (get, set, delete, clear)', store);
  }
  // The memory bounds sit beside the store option: `memory` beside `store`, `learn.memory` beside `learn.store`.
  const memory = objectOption(settings.memory, settings.option.replace(/store$/, 'memory'), MEMORY_STORE_OPTIONS, 'an object', true) as MemoryStoreOptions;
  const withClock = settings.now !== undefined && memory.now === undefined ? { now: settings.now } : {};
  return new CacheStore({
    store: store ?? createMemoryStore({ ...settings.memoryDefaults, ...memory, ...withClock }),
    namespace: settings.namespace,
    ...(settings.timeout !== undefined ? { timeout: settings.timeout } : {}),
    ...(settings.breaker !== undefined ? { breaker: settings.breaker } : {}),
  });
}
