// Shared by the store tests: an entry to store, and a collector of a store's failures.
import type { CacheEntry, CacheStore, CacheStoreError } from '../../src/store/index.ts';

/** A cache entry with `body`, repeated Set-Cookie headers and a fixed date. */
export function entry(body: Buffer | string = 'hello', extra: Partial<CacheEntry> = {}): CacheEntry {
  return {
    status: 200,
    headers: ['content-type', 'application/octet-stream', 'set-cookie', 'a=1', 'set-cookie', 'b=2'],
    body: Buffer.isBuffer(body) ? body : Buffer.from(body),
    storedAt: 1_700_000_000_000,
    ...extra,
  };
}

/** The `'storeError'` events `store` emits from now on. */
export function collect(store: CacheStore): CacheStoreError[] {
  const errors: CacheStoreError[] = [];
  store.on('storeError', (err) => errors.push(err));
  return errors;
}
