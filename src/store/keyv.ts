/**
 * Everything switchyard knows about Keyv and `@keyv/redis` beyond `get`/`set`/`delete`: recognizing a
 * Keyv instance and a storage adapter, the key Keyv stores a key under, listing and purging a
 * namespace (Redis `SCAN`, a `Map`, the memory store, Keyv's iterator), and a Redis client's
 * connection state. When Keyv or `@keyv/redis` change, this is the file to look at;
 * test/store/keyv.test.ts fails when what it assumes no longer holds.
 * @module
 */
import { createRequire } from 'node:module';
import { Keyv, type KeyvStoreAdapter } from 'keyv';
import { isMemoryStore } from './memory.ts';

// `@keyv/redis` (and the `@redis/client` under it) is required only when a shared Redis store is
// made: a process that never uses Redis does not load it (issue 15). Its CommonJS build is a
// separate copy from the ESM one a user imports; nothing here relies on `instanceof` KeyvRedis
// (a Redis adapter is told by its shape, see `isRedisAdapter`).
const require = createRequire(import.meta.url);

/** Whether `value` is a Keyv instance (also one from another copy of the `keyv` package). */
export function isKeyv(value: unknown): value is Keyv {
  if (value instanceof Keyv) return true;
  const v = value as Record<string, unknown> | null;
  return typeof v === 'object' && v !== null && typeof v.getRaw === 'function' && typeof v.hooks === 'object' && 'store' in v;
}

/** Whether `value` is something Keyv takes as its store: a `Map`, or an object with `get`, `set`, `delete` and `clear`. */
export function isStoreAdapter(value: unknown): value is KeyvStoreAdapter | Map<unknown, unknown> {
  if (value instanceof Map) return true;
  const s = value as Record<string, unknown> | null;
  return typeof s === 'object' && s !== null && ['get', 'set', 'delete', 'clear'].every((m) => typeof s[m] === 'function');
}

/**
 * The Keyv the fail-open wrapper puts around a storage adapter: keys under `namespace`, and errors
 * thrown rather than swallowed, so that the wrapper sees every failure.
 */
export function keyvFor(store: KeyvStoreAdapter | Map<unknown, unknown>, namespace: string): Keyv {
  return new Keyv({ store, namespace, throwOnErrors: true });
}

/**
 * The key `keyv` hands its store for `key`: `<namespace>:<key>`, or `key` itself when Keyv has no
 * namespace, does not prefix keys (`useKeyPrefix: false`), or `key` already starts with the prefix.
 *
 * Keyv 5 does this in a private method (`_getKeyPrefix`); this is the same rule built from its
 * public `namespace` and `useKeyPrefix`. test/store/keyv.test.ts checks it against the keys Keyv
 * really writes, so a Keyv that changes its rule fails that test rather than purges.
 */
export function storageKey(keyv: Keyv, key: string): string {
  const namespace = keyv.namespace;
  if (!keyv.useKeyPrefix || namespace === undefined || namespace === '') return key;
  return key.startsWith(`${namespace}:`) ? key : `${namespace}:${key}`;
}

/** What a Redis adapter's client tells of its connection (node-redis clients, clusters, sentinels). */
export interface RedisConnection {
  isOpen: boolean;
  isReady: boolean;
  destroy(): void;
}

interface RedisLikeClient {
  scan(cursor: string, options: { MATCH: string; COUNT: number }): Promise<{ cursor: string | number; keys: string[] }>;
  unlink(keys: string[]): Promise<number>;
}

/** The parts of `@keyv/redis`'s adapter the purge uses (all public in @keyv/redis 5). */
interface RedisLikeAdapter {
  namespace?: string | undefined;
  getMasterNodes(): Promise<RedisLikeClient[]>;
  createKeyPrefix(key: string, namespace?: string): string;
}

function isRedisAdapter(store: unknown): store is RedisLikeAdapter {
  const s = store as Record<string, unknown> | null;
  return typeof s === 'object' && s !== null && typeof s.getMasterNodes === 'function' && typeof s.createKeyPrefix === 'function';
}

/** The connection of a `@keyv/redis` adapter's client, or `undefined` for any other store. */
export function redisConnection(store: unknown): RedisConnection | undefined {
  if (!isRedisAdapter(store)) return undefined;
  const c = (store as { client?: Partial<RedisConnection> | null }).client;
  if (typeof c !== 'object' || c === null || typeof c.isOpen !== 'boolean' || typeof c.isReady !== 'boolean' || typeof c.destroy !== 'function')
    return undefined;
  return c as RedisConnection;
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/**
 * Removes every key of `keyv`'s namespace that starts with `prefix` (`''`: all of it), and resolves
 * how many store keys were removed: a Redis `SCAN MATCH <namespace>...<prefix>*` with `UNLINK` on
 * every master (`@keyv/redis`), the keys of the memory store or of a `Map`, or Keyv's iterator.
 * Rejects when the store cannot list its keys.
 */
export async function deleteByPrefix(keyv: Keyv, prefix: string): Promise<number> {
  const store: unknown = keyv.store;
  // The memory store's keys are always `<namespace>:<key>` (the fail-open wrapper writes them so);
  // Keyv's own prefixing leaves a key that already carries the prefix alone.
  const rawPrefix = isMemoryStore(store) ? storageKey(keyv, '') + prefix : storageKey(keyv, prefix);
  if (isRedisAdapter(store)) {
    const match = `${escapeGlob(store.createKeyPrefix(rawPrefix, store.namespace))}*`;
    let removed = 0;
    for (const client of await store.getMasterNodes()) {
      let cursor = '0';
      do {
        const page = await client.scan(cursor, { MATCH: match, COUNT: 1000 });
        cursor = String(page.cursor);
        if (page.keys.length > 0) removed += await client.unlink(page.keys);
      } while (cursor !== '0');
    }
    return removed;
  }
  let keys: string[];
  if (isMemoryStore(store)) keys = store.keys().filter((k) => k.startsWith(rawPrefix));
  else if (store instanceof Map) keys = [...store.keys()].filter((k): k is string => typeof k === 'string' && k.startsWith(rawPrefix));
  else if (keyv.iterator !== undefined) {
    keys = [];
    for await (const [key] of keyv.iterator(keyv.namespace) as AsyncIterable<[string, unknown]>) {
      if (key.startsWith(prefix)) keys.push(storageKey(keyv, key));
    }
  } else {
    throw new Error('This keyv store cannot list its keys, so it cannot purge by prefix');
  }
  let removed = 0;
  const s = store as { delete(key: string): unknown };
  for (const k of keys) if ((await s.delete(k)) !== false) removed++;
  return removed;
}

/**
 * Every value of `keyv`'s namespace: what Keyv's iterator gives (a Redis `SCAN` with `MGET` for
 * `@keyv/redis`), or, for the memory store (which has no iterator), Keyv's value for each of its
 * keys in the namespace. Rejects when the store cannot list its keys.
 */
export async function namespaceValues(keyv: Keyv): Promise<unknown[]> {
  const store: unknown = keyv.store;
  const out: unknown[] = [];
  if (isMemoryStore(store)) {
    const rawPrefix = storageKey(keyv, '');
    for (const k of store.keys()) if (k.startsWith(rawPrefix)) out.push(await keyv.get(k.slice(rawPrefix.length)));
    return out;
  }
  if (keyv.iterator === undefined) throw new Error('This keyv store cannot list its keys');
  for await (const [, value] of keyv.iterator(keyv.namespace) as AsyncIterable<[string, unknown]>) out.push(value);
  return out;
}

/**
 * A `@keyv/redis` adapter on the Redis a sync handle uses (sticky's learned sessions shared by
 * default): its own connection, without an offline queue (a command sent while Redis is away fails
 * at once rather than waits). For a client the user built, a duplicate of it, closed with the store.
 */
export function sharedRedisAdapter(redis: string | { client: { duplicate(overrides?: { disableOfflineQueue?: boolean }): unknown } }): KeyvStoreAdapter {
  const KeyvRedis = (require('@keyv/redis') as typeof import('@keyv/redis')).default;
  if (typeof redis === 'string') return new KeyvRedis({ url: redis, disableOfflineQueue: true }) as unknown as KeyvStoreAdapter;
  return new KeyvRedis(redis.client.duplicate({ disableOfflineQueue: true }) as never) as unknown as KeyvStoreAdapter;
}
