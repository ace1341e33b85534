/**
 * Storage for the future `cache()` middleware (nginx `proxy_cache`): a bounded
 * in-memory keyv store ({@link createMemoryStore}) and a fail-open wrapper over
 * any Keyv instance or keyv storage adapter ({@link CacheStore}).
 * @module
 */
import { EventEmitter } from 'node:events';
import { Buffer } from 'node:buffer';
import { Keyv, type KeyvStoreAdapter } from 'keyv';
import { channels } from '../core/diagnostics.ts';
import { parseDuration, type Duration } from '../core/duration.ts';
import { CacheStoreError, InvalidOptionError, type CacheStoreOperation } from '../core/errors.ts';

export { CacheStoreError } from '../core/errors.ts';
export type { CacheStoreFailure, CacheStoreOperation } from '../core/errors.ts';

/** Default {@link MemoryStoreOptions.maxEntries}: 10 000 entries. */
export const DEFAULT_MAX_ENTRIES = 10_000;
/** Default {@link MemoryStoreOptions.maxBytes}: 64 MiB (nginx `max_size` is unbounded; switchyard is not). */
export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
/** Default {@link MemoryStoreOptions.inactive}: `'10m'`, as nginx `proxy_cache_path ... inactive=10m`. */
export const DEFAULT_INACTIVE = '10m';
/** Default {@link CacheStoreOptions.timeout}: 1000 ms per store operation. */
export const DEFAULT_STORE_TIMEOUT = 1000;
/** Default {@link CacheStoreOptions.namespace} of the Keyv that {@link CacheStore} creates itself. */
export const DEFAULT_NAMESPACE = 'switchyard';
/** Size charged for a value {@link estimateSize} cannot measure: a function, a symbol, or what lies past its walk's limit. */
export const UNKNOWN_VALUE_SIZE = 1024;
/**
 * Bytes the memory store charges per entry for its own bookkeeping (the entry's slot with its LRU
 * links and two timestamps, and the Map's entry), on top of the key and the value.
 */
export const ENTRY_OVERHEAD = 160;
/** Default {@link StoreBreakerOptions.failures}: 3 failures in a row mark a store down. */
export const DEFAULT_BREAKER_FAILURES = 3;
/** Default {@link StoreBreakerOptions.probeDelay}: 500 ms before the first probe of a store marked down. */
export const DEFAULT_PROBE_DELAY = 500;
/** Default {@link StoreBreakerOptions.maxProbeDelay}: at most 10 s between probes. */
export const DEFAULT_MAX_PROBE_DELAY = 10_000;

// ---------------------------------------------------------------------------
// Bounded memory store
// ---------------------------------------------------------------------------

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Most entries kept; the least recently used go first.
   * @default DEFAULT_MAX_ENTRIES (10000)
   */
  maxEntries?: number;
  /**
   * Most memory kept, in bytes: what the entries take in the V8 heap and in Buffers, as the store
   * estimates it (key and value by {@link estimateSize}, plus {@link ENTRY_OVERHEAD} per entry;
   * within 25% of the measured heap for small and large cache entries). The least recently used
   * go first. A single entry larger than this is not stored.
   * @default DEFAULT_MAX_BYTES (64 MiB)
   */
  maxBytes?: number;
  /**
   * nginx `inactive`: an entry neither read nor written for this long is dropped whatever its TTL.
   * @default DEFAULT_INACTIVE ('10m')
   */
  inactive?: Duration;
  /**
   * Clock in milliseconds, for tests.
   * @default Date.now
   */
  now?: () => number;
}

/**
 * A keyv storage adapter kept in process memory, bounded by entries and bytes with LRU eviction and
 * nginx's `inactive`. No timers: expiry is checked on access, and every operation first drops the
 * entries at the cold end of the LRU list that have been inactive too long.
 */
export interface MemoryStore extends KeyvStoreAdapter {
  /** Value of `key`, or `undefined` when missing, expired or inactive. Marks it recently used. */
  get<Value>(key: string): Promise<Value | undefined>;
  /** {@link MemoryStore.get} without the promise. */
  getSync<Value>(key: string): Value | undefined;
  /** Stores `value`; `ttl` in milliseconds, none when `undefined` or `0`. `false` when the value is larger than `maxBytes`. */
  set(key: string, value: unknown, ttl?: number): Promise<boolean>;
  /** Removes `key`; `true` when it was there. */
  delete(key: string): Promise<boolean>;
  /** Removes every entry. */
  clear(): Promise<void>;
  /** Whether `key` is live, without marking it used. */
  has(key: string): Promise<boolean>;
  /** Live keys, least recently used first. */
  keys(): string[];
  /** Number of entries held (expired ones not yet noticed included). */
  readonly size: number;
  /** Bytes held (estimated heap and Buffer memory of the entries), as counted against `maxBytes`. */
  readonly bytes: number;
}

interface Slot {
  key: string;
  value: unknown;
  bytes: number;
  expiresAt: number;
  lastUsed: number;
  /** Neighbours in LRU order. */
  prev: Slot | undefined;
  next: Slot | undefined;
}

// Sizes in the V8 heap of 64-bit Node (no pointer compression), as test/cache/heap-probe.ts measures them.
const STRING_HEADER = 16;
const OBJECT_HEADER = 24;
/** A JSArray and the header of its backing store. */
const ARRAY_HEADER = 48;
const FIELD = 8;
const HEAP_NUMBER = 16;
/** A Buffer or typed array object (its bytes are counted apart). */
const VIEW_OVERHEAD = 100;
/** An ArrayBuffer object and the bookkeeping of its memory. */
const ARRAY_BUFFER_OVERHEAD = 110;
/** Most objects and arrays {@link estimateSize} walks into for one value. */
const WALK_LIMIT = 10_000;

/** Heap bytes of a string: a header and one byte per character (two when one is beyond Latin-1), in 8-byte words. */
function stringSize(s: string): number {
  const n = s.length;
  const wide = Buffer.byteLength(s) !== n && /[^\x00-\xff]/.test(s);
  return STRING_HEADER + ((((wide ? 2 * n : n) + 7) >>> 3) << 3);
}

/**
 * Memory a value takes, in bytes: its V8 heap (strings by character, objects and arrays by field,
 * numbers that are not small integers boxed) plus the bytes of Buffers and typed arrays, which live
 * outside the heap. Objects and arrays are walked (each counted once, at most 10 000 of them);
 * functions, symbols and what lies past the walk count {@link UNKNOWN_VALUE_SIZE}.
 * The memory store charges this for each key and value, plus {@link ENTRY_OVERHEAD}.
 * @example
 * ```ts
 * estimateSize('hello');          // 24: a 16-byte header and 5 characters, in 8-byte words
 * estimateSize(Buffer.alloc(10)); // 220: the Buffer and ArrayBuffer objects, and 10 bytes
 * estimateSize({ a: 1 });         // 32: an object with one field holding a small integer
 * ```
 */
export function estimateSize(value: unknown): number {
  if (typeof value === 'string') return stringSize(value);
  if (typeof value !== 'object' || value === null) return sizeOf(value, undefined);
  return sizeOf(value, { seen: new Set(), left: WALK_LIMIT });
}

interface Walk {
  seen: Set<object>;
  left: number;
}

function sizeOf(value: unknown, walk: Walk | undefined): number {
  switch (typeof value) {
    case 'string':
      return stringSize(value);
    case 'number':
      return Number.isInteger(value) && value >= -0x8000_0000 && value <= 0x7fff_ffff ? 0 : HEAP_NUMBER;
    case 'boolean':
    case 'undefined':
      return 0;
    case 'bigint':
      return HEAP_NUMBER + 8 * Math.ceil(value.toString(16).length / 16);
    case 'object':
      break;
    default:
      return UNKNOWN_VALUE_SIZE;
  }
  if (value === null) return 0;
  if (ArrayBuffer.isView(value)) {
    // A view of a larger ArrayBuffer (a Buffer from Node's pool) shares that buffer's object.
    return VIEW_OVERHEAD + value.byteLength + (value.buffer.byteLength === value.byteLength ? ARRAY_BUFFER_OVERHEAD : 0);
  }
  if (value instanceof ArrayBuffer) return ARRAY_BUFFER_OVERHEAD + value.byteLength;
  if (walk === undefined || walk.seen.has(value)) return 0;
  if (--walk.left < 0) return UNKNOWN_VALUE_SIZE;
  walk.seen.add(value);
  if (value instanceof Date) return OBJECT_HEADER + HEAP_NUMBER;
  if (Array.isArray(value)) {
    let size = ARRAY_HEADER + FIELD * value.length;
    for (const item of value) size += sizeOf(item, walk);
    return size;
  }
  if (value instanceof Map || value instanceof Set) {
    let size = OBJECT_HEADER + ARRAY_HEADER + 5 * FIELD * value.size;
    for (const [k, v] of value.entries()) size += sizeOf(k, walk) + (value instanceof Map ? sizeOf(v, walk) : 0);
    return size;
  }
  const keys = Object.keys(value);
  let size = OBJECT_HEADER + FIELD * keys.length;
  for (const k of keys) size += sizeOf((value as Record<string, unknown>)[k], walk);
  return size;
}

/**
 * `body`, or a copy of it in memory of its own when it is a view of a larger buffer: a small Buffer
 * from Node's pool keeps the whole pool slab (64 KiB) alive, whatever else it held.
 */
function ownMemory(body: Buffer): Buffer {
  if (body.buffer.byteLength === body.byteLength) return body;
  const copy = Buffer.allocUnsafeSlow(body.byteLength);
  body.copy(copy);
  return copy;
}

function positiveInteger(value: unknown, option: string, fallback: number): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new InvalidOptionError(option, 'a positive integer', v);
  return v;
}

/**
 * Creates a bounded in-memory keyv store: the default store of {@link CacheStore}, also usable
 * with a plain `new Keyv({ store })`.
 * @example
 * ```ts
 * const store = createMemoryStore({ maxEntries: 1000, maxBytes: 10 * 1024 * 1024, inactive: '10m' });
 * const cache = new CacheStore({ store });
 * ```
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryStore {
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('options', 'an object', options);
  const maxEntries = positiveInteger(options.maxEntries, 'maxEntries', DEFAULT_MAX_ENTRIES);
  const maxBytes = positiveInteger(options.maxBytes, 'maxBytes', DEFAULT_MAX_BYTES);
  const inactive = parseDuration(options.inactive ?? DEFAULT_INACTIVE, 'inactive');
  if (inactive <= 0) throw new InvalidOptionError('inactive', 'a positive duration', options.inactive);
  const now = options.now ?? Date.now;
  if (typeof now !== 'function') throw new InvalidOptionError('now', 'a function returning milliseconds', now);

  // Lookup by key; LRU order in a doubly linked list through the slots (head: least recently used),
  // so a read relinks two pointers instead of reinserting into the Map.
  const slots = new Map<string, Slot>();
  let head: Slot | undefined;
  let tail: Slot | undefined;
  let bytes = 0;
  const emitter = new EventEmitter();

  const unlink = (slot: Slot): void => {
    if (slot.prev === undefined) head = slot.next;
    else slot.prev.next = slot.next;
    if (slot.next === undefined) tail = slot.prev;
    else slot.next.prev = slot.prev;
    slot.prev = undefined;
    slot.next = undefined;
  };
  const append = (slot: Slot): void => {
    slot.prev = tail;
    slot.next = undefined;
    if (tail === undefined) head = slot;
    else tail.next = slot;
    tail = slot;
  };
  const drop = (slot: Slot): void => {
    unlink(slot);
    slots.delete(slot.key);
    bytes -= slot.bytes;
  };
  const dead = (slot: Slot, t: number): boolean => t >= slot.expiresAt || t - slot.lastUsed >= inactive;
  // Entries are ordered by last use, so the inactive ones are all at the head. Looking for them
  // at most every tenth of `inactive` (a second at most) keeps reads cheap; an entry read is
  // still checked on its own.
  const pruneEvery = Math.min(1000, inactive / 10);
  let pruned = Number.NEGATIVE_INFINITY;
  const pruneInactive = (t: number): void => {
    if (t - pruned < pruneEvery && t >= pruned) return;
    pruned = t;
    while (head !== undefined && t - head.lastUsed >= inactive) drop(head);
  };
  const live = (key: string, t: number): Slot | undefined => {
    const slot = slots.get(key);
    if (slot === undefined) return undefined;
    if (dead(slot, t)) {
      drop(slot);
      return undefined;
    }
    return slot;
  };

  const store = {
    opts: Object.freeze({ dialect: 'switchyard-memory', maxEntries, maxBytes, inactive }),
    namespace: undefined as string | undefined,
    on(event: string, listener: (...args: any[]) => void) {
      emitter.on(event, listener);
      return store;
    },
    async get<Value>(key: string): Promise<Value | undefined> {
      return store.getSync<Value>(key);
    },
    getSync<Value>(key: string): Value | undefined {
      const t = now();
      pruneInactive(t);
      const slot = live(key, t);
      if (slot === undefined) return undefined;
      slot.lastUsed = t;
      if (slot !== tail) {
        unlink(slot);
        append(slot);
      }
      return slot.value as Value;
    },
    async set(key: string, value: unknown, ttl?: number): Promise<boolean> {
      const t = now();
      pruneInactive(t);
      const old = slots.get(key);
      if (old !== undefined) drop(old);
      const size = ENTRY_OVERHEAD + stringSize(key) + estimateSize(value);
      if (size > maxBytes) return false;
      const expiresAt = typeof ttl === 'number' && ttl > 0 ? t + ttl : Number.POSITIVE_INFINITY;
      const slot: Slot = { key, value, bytes: size, expiresAt, lastUsed: t, prev: undefined, next: undefined };
      slots.set(key, slot);
      append(slot);
      bytes += size;
      while (head !== undefined && (slots.size > maxEntries || bytes > maxBytes)) drop(head);
      return true;
    },
    async delete(key: string): Promise<boolean> {
      const t = now();
      pruneInactive(t);
      const slot = live(key, t);
      if (slot === undefined) return false;
      drop(slot);
      return true;
    },
    async clear(): Promise<void> {
      slots.clear();
      head = undefined;
      tail = undefined;
      bytes = 0;
    },
    async has(key: string): Promise<boolean> {
      return live(key, now()) !== undefined;
    },
    keys(): string[] {
      const t = now();
      pruneInactive(t);
      const out: string[] = [];
      for (let slot = head; slot !== undefined; slot = slot.next) if (!dead(slot, t)) out.push(slot.key);
      return out;
    },
    get size() {
      return slots.size;
    },
    get bytes() {
      return bytes;
    },
  };
  return store as MemoryStore;
}

// ---------------------------------------------------------------------------
// Fail-open wrapper
// ---------------------------------------------------------------------------

/** A cached response as {@link CacheStore} stores it. */
export interface CacheEntry {
  /** HTTP status code. */
  status: number;
  /** Response headers as a flat `[name, value, name, value, ...]` list (like `rawHeaders`). */
  headers: string[];
  /** The response body. */
  body: Buffer;
  /** When the entry was stored, in milliseconds since the epoch. */
  storedAt: number;
  /** Anything else the cache needs (validators, Vary data); must survive `JSON.stringify`. */
  meta?: Record<string, unknown>;
}

/** Events of {@link CacheStore}. */
export interface CacheStoreEvents {
  /** A store failure that the wrapper absorbed. */
  storeError: [error: CacheStoreError];
  /**
   * The breaker opened: after `failures` failures in a row (the last one given) the store is
   * skipped until a background probe finds it answering again.
   */
  storeDown: [error: CacheStoreError];
  /** A probe found the store answering: the breaker closed and operations reach the store again. */
  storeUp: [];
}

/**
 * The circuit breaker of {@link CacheStore}: a store that keeps failing is marked down and skipped
 * at once (a `get` is a miss, a write is dropped, nothing waits for `timeout`), and probed in the
 * background, one probe at a time, until it answers.
 */
export interface StoreBreakerOptions {
  /**
   * Failures in a row that mark the store down: operations that throw, reject or time out, and
   * errors the store reports on its own (a Redis client failing to reconnect). A success resets the count.
   * @default DEFAULT_BREAKER_FAILURES (3)
   */
  failures?: number;
  /**
   * Wait before the first probe of a store marked down; doubled after each failed probe.
   * @default DEFAULT_PROBE_DELAY ('500ms')
   */
  probeDelay?: Duration;
  /**
   * Longest wait between two probes.
   * @default DEFAULT_MAX_PROBE_DELAY ('10s')
   */
  maxProbeDelay?: Duration;
}

/** Options of {@link CacheStore}. */
export interface CacheStoreOptions {
  /**
   * Where entries live: a `Keyv` instance (used as is), or a keyv storage adapter such as
   * `new KeyvRedis(url)` or a {@link createMemoryStore} store, wrapped in a Keyv created with
   * `namespace` and `throwOnErrors: true`.
   * @default createMemoryStore(memory)
   */
  store?: Keyv | KeyvStoreAdapter | Map<unknown, unknown>;
  /**
   * Options of the default memory store (ignored when `store` is given).
   * @default {}
   */
  memory?: MemoryStoreOptions;
  /**
   * Namespace of the Keyv the wrapper creates (ignored when `store` is a Keyv instance).
   * @default DEFAULT_NAMESPACE ('switchyard')
   */
  namespace?: string;
  /**
   * Longest a store operation may take before it counts as failed (a miss for `get`). Also the
   * longest {@link CacheStore.disconnect} waits for operations in flight (at most a second).
   * @default DEFAULT_STORE_TIMEOUT (1000 ms)
   */
  timeout?: Duration;
  /**
   * When a failing store is marked down and skipped, and how it is probed ({@link StoreBreakerOptions});
   * `false`: every operation goes to the store and may wait up to `timeout`.
   * @default {}
   */
  breaker?: StoreBreakerOptions | false;
}

/** The breaker's state: `'closed'` (the store is used), `'open'` (skipped), `'half-open'` (skipped, a probe in flight). */
export type StoreBreakerState = 'closed' | 'open' | 'half-open';

interface Breaker {
  failures: number;
  probeDelay: number;
  maxProbeDelay: number;
}

function resolveBreaker(options: StoreBreakerOptions | false | undefined): Breaker | undefined {
  if (options === false) return undefined;
  const o = options ?? {};
  if (o === null || typeof o !== 'object') throw new InvalidOptionError('breaker', 'an object or false', o);
  const failures = positiveInteger(o.failures, 'breaker.failures', DEFAULT_BREAKER_FAILURES);
  const probeDelay = parseDuration(o.probeDelay ?? DEFAULT_PROBE_DELAY, 'breaker.probeDelay');
  if (probeDelay <= 0) throw new InvalidOptionError('breaker.probeDelay', 'a positive duration', o.probeDelay);
  const maxProbeDelay = parseDuration(o.maxProbeDelay ?? Math.max(DEFAULT_MAX_PROBE_DELAY, probeDelay), 'breaker.maxProbeDelay');
  if (maxProbeDelay < probeDelay) throw new InvalidOptionError('breaker.maxProbeDelay', `a duration of at least probeDelay (${probeDelay} ms)`, o.maxProbeDelay);
  return Object.freeze({ failures, probeDelay, maxProbeDelay });
}

/** What a Redis adapter's client tells of its connection (node-redis clients, clusters, sentinels). */
interface RedisConnection {
  isOpen: boolean;
  isReady: boolean;
  destroy(): void;
}

function redisConnection(store: unknown): RedisConnection | undefined {
  if (!isRedisAdapter(store)) return undefined;
  const c = (store as { client?: Partial<RedisConnection> | null }).client;
  if (typeof c !== 'object' || c === null || typeof c.isOpen !== 'boolean' || typeof c.isReady !== 'boolean' || typeof c.destroy !== 'function') return undefined;
  return c as RedisConnection;
}

/** The key a probe reads (a miss is an answer as good as a hit). */
const PROBE_KEY = '\u0000switchyard-probe';

interface StoredRecord {
  v: 1;
  status: number;
  headers: string[];
  body: string;
  storedAt: number;
  meta?: Record<string, unknown>;
}

const TIMED_OUT: unique symbol = Symbol('timed out');
const TRIPPED: unique symbol = Symbol('breaker opened');
const SKIPPED = Object.freeze({ ok: false as const });
/** Longest {@link CacheStore.disconnect} waits for operations in flight on a Redis client. */
const DISCONNECT_WAIT = 1000;

/** Resolves once `promise` settles or `ms` have passed, whichever comes first (a timer that keeps the process up meanwhile). */
function settleWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    void promise.then(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function isKeyv(value: unknown): value is Keyv {
  if (value instanceof Keyv) return true;
  const v = value as Record<string, unknown> | null;
  return typeof v === 'object' && v !== null && typeof v.getRaw === 'function' && typeof v.hooks === 'object' && 'store' in v;
}

function validEntry(entry: CacheEntry): void {
  if (entry === null || typeof entry !== 'object') throw new InvalidOptionError('entry', 'an object', entry);
  if (!Number.isInteger(entry.status) || entry.status < 100 || entry.status > 999) throw new InvalidOptionError('entry.status', 'an HTTP status code', entry.status);
  if (!Array.isArray(entry.headers) || entry.headers.length % 2 !== 0 || !entry.headers.every((h) => typeof h === 'string')) {
    throw new InvalidOptionError('entry.headers', 'a flat array of name/value strings', entry.headers);
  }
  if (!Buffer.isBuffer(entry.body)) throw new InvalidOptionError('entry.body', 'a Buffer', entry.body);
  if (typeof entry.storedAt !== 'number' || !Number.isFinite(entry.storedAt)) throw new InvalidOptionError('entry.storedAt', 'a finite number of milliseconds', entry.storedAt);
  if (entry.meta !== undefined && (entry.meta === null || typeof entry.meta !== 'object' || Array.isArray(entry.meta))) {
    throw new InvalidOptionError('entry.meta', 'a plain object', entry.meta);
  }
}

function decode(raw: unknown): CacheEntry | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const r = raw as Partial<StoredRecord>;
  if (r.v !== 1) return undefined;
  if (typeof r.status !== 'number' || !Number.isInteger(r.status) || r.status < 100 || r.status > 999) return undefined;
  if (!Array.isArray(r.headers) || r.headers.length % 2 !== 0 || !r.headers.every((h) => typeof h === 'string')) return undefined;
  if (typeof r.body !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(r.body) || r.body.length % 4 !== 0) return undefined;
  if (typeof r.storedAt !== 'number' || !Number.isFinite(r.storedAt)) return undefined;
  if (r.meta !== undefined && (r.meta === null || typeof r.meta !== 'object' || Array.isArray(r.meta))) return undefined;
  const entry: CacheEntry = { status: r.status, headers: r.headers.slice(), body: Buffer.from(r.body, 'base64'), storedAt: r.storedAt };
  if (r.meta !== undefined) entry.meta = r.meta;
  return entry;
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

interface RedisLikeClient {
  scan(cursor: string, options: { MATCH: string; COUNT: number }): Promise<{ cursor: string | number; keys: string[] }>;
  unlink(keys: string[]): Promise<number>;
}

interface RedisLikeAdapter {
  namespace?: string | undefined;
  getMasterNodes(): Promise<RedisLikeClient[]>;
  createKeyPrefix(key: string, namespace?: string): string;
}

function isRedisAdapter(store: unknown): store is RedisLikeAdapter {
  const s = store as Record<string, unknown> | null;
  return typeof s === 'object' && s !== null && typeof s.getMasterNodes === 'function' && typeof s.createKeyPrefix === 'function';
}

function isMemoryStore(store: unknown): store is MemoryStore {
  const s = store as { opts?: { dialect?: unknown }; keys?: unknown } | null;
  return typeof s === 'object' && s !== null && s.opts?.dialect === 'switchyard-memory' && typeof s.keys === 'function';
}

/**
 * The cache's view of a keyv store: entries in, entries out, and **fail open**. A store that throws,
 * rejects, takes longer than `timeout` or returns something that is not an entry never makes a
 * method throw: `get` answers `undefined` (a miss), `set`/`delete`/`deletePrefix` resolve (`false`/`0`),
 * and the failure is emitted as a `'storeError'` event carrying a {@link CacheStoreError} (and
 * published on the `switchyard:store:error` diagnostics channel). With no listener the failure is
 * dropped, nothing crashes.
 *
 * A store that keeps failing is marked down by a circuit breaker (option `breaker`): after
 * `failures` failures in a row it is skipped at once, without waiting for `timeout` or emitting
 * `'storeError'` for each skipped operation, and `'storeDown'` is emitted. One probe at a time reads
 * it in the background, after `probeDelay`, then twice as long after each failed probe (at most
 * `maxProbeDelay`); the first probe that succeeds closes the breaker (`'storeUp'`).
 *
 * A Redis client (`@keyv/redis`) that is connecting or reconnecting is not sent anything: the
 * operation fails at once instead of waiting in node-redis's offline queue, which would replay it
 * (stale sessions and entries) once Redis is back. Create the client with `disableOfflineQueue: true`
 * all the same, for anything else that uses it.
 *
 * Entries are stored as `{ v: 1, status, headers, body: base64, storedAt, meta }` so they survive any
 * keyv serializer (JSON included) and can be checked on the way back.
 *
 * `deletePrefix` (nginx Plus `proxy_cache_purge` with a trailing `*`) scans: the memory store's keys,
 * a `Map`'s keys, or Redis with `SCAN MATCH <namespace>...<prefix>*` and `UNLINK` on every master
 * (for `@keyv/redis`). Other stores use Keyv's iterator when it has one, else the purge fails (event).
 * @example
 * ```ts
 * import KeyvRedis from '@keyv/redis';
 * const cache = new CacheStore({ store: new KeyvRedis('redis://127.0.0.1:6379'), namespace: 'gw' });
 * cache.on('storeError', (err) => console.warn(err.operation, err.reason, err.cause));
 * await cache.set('GET:/a', { status: 200, headers: ['content-type', 'text/plain'], body: Buffer.from('hi'), storedAt: Date.now() }, 60_000);
 * const hit = await cache.get('GET:/a');
 * await cache.deletePrefix('GET:/a');
 * await cache.disconnect();
 * ```
 */
export class CacheStore extends EventEmitter<CacheStoreEvents> {
  /** The Keyv instance the entries go through. */
  readonly keyv: Keyv;
  /** Operation timeout in milliseconds. */
  readonly timeout: number;
  /**
   * The bounded memory store when entries live in this process (the default): entries are then
   * kept as objects, never serialized, and reads skip Keyv and the timeout race.
   */
  readonly memory: MemoryStore | undefined;
  readonly #claimed = new WeakSet<object>();
  #prefix = '';
  readonly #onKeyvError: (error: unknown) => void;
  readonly #breaker: Breaker | undefined;
  /** Whether the store is an adapter with a Redis client whose connection can be read. */
  readonly #redis: boolean;
  #state: StoreBreakerState = 'closed';
  #failures = 0;
  #probeDelay = 0;
  #probeTimer: NodeJS.Timeout | undefined;
  /** Resolves when the breaker opens: operations still waiting on the store give up then. */
  #tripped!: Promise<typeof TRIPPED>;
  #trip!: () => void;
  /** Errors the store reported so far: an operation during which one came did not succeed. */
  #storeErrors = 0;
  #closed = false;
  /** Store operations in flight, for disconnect() to let them finish. */
  readonly #inflight = new Set<Promise<unknown>>();

  constructor(options: CacheStoreOptions = {}) {
    super();
    if (options === null || typeof options !== 'object') throw new InvalidOptionError('options', 'an object', options);
    this.timeout = parseDuration(options.timeout ?? DEFAULT_STORE_TIMEOUT, 'timeout');
    if (this.timeout <= 0) throw new InvalidOptionError('timeout', 'a positive duration', options.timeout);
    this.#breaker = resolveBreaker(options.breaker);
    this.#armTrip();
    const namespace = options.namespace ?? DEFAULT_NAMESPACE;
    if (typeof namespace !== 'string' || namespace === '') throw new InvalidOptionError('namespace', 'a non-empty string', namespace);
    const store = options.store ?? createMemoryStore(options.memory ?? {});
    this.memory = undefined;
    if (isKeyv(store)) {
      this.keyv = store;
    } else {
      if (isMemoryStore(store)) this.memory = store;
      const s = store as Record<string, unknown> | null;
      if (!(store instanceof Map) && (typeof s !== 'object' || s === null || ['get', 'set', 'delete', 'clear'].some((m) => typeof s[m] !== 'function'))) {
        throw new InvalidOptionError('store', 'a Keyv instance or a keyv storage adapter (get, set, delete, clear)', store);
      }
      this.keyv = new Keyv({ store, namespace, throwOnErrors: true });
    }
    // Errors the store reports on its own (a Redis client losing its connection, an error an adapter
    // swallows) reach Keyv's 'error' event. Those that also failed an operation are reported once,
    // by the operation; the rest are reported as operation 'store' on the next turn of the loop.
    this.#onKeyvError = (error: unknown) => {
      this.#storeErrors++;
      setImmediate(() => {
        if (typeof error === 'object' && error !== null && this.#claimed.has(error)) return;
        const failure = new CacheStoreError('store', 'error', undefined, `Cache store reported an error: ${message(error)}`, error);
        this.#report(failure);
        this.#failed(failure);
      });
    };
    this.keyv.on('error', this.#onKeyvError);
    this.#prefix = this.keyv._getKeyPrefix('');
    this.#redis = redisConnection(this.keyv.store) !== undefined;
  }

  /**
   * The circuit breaker: `'closed'` while the store is used, `'open'` while it is marked down and
   * skipped, `'half-open'` while a probe is in flight (still skipped).
   */
  get breakerState(): StoreBreakerState {
    return this.#state;
  }

  /**
   * The entry under `key` when entries live in this process ({@link CacheStore.memory}), without a
   * promise; `undefined` on a miss or with any other store.
   */
  getSync(key: string): CacheEntry | undefined {
    return this.memory?.getSync<CacheEntry>(this.#prefix + key);
  }

  /**
   * The entry stored under `key`, or `undefined` on a miss, including when the store fails.
   * @example
   * ```ts
   * const entry = await cache.get('GET:example.com/');
   * if (entry) res.writeHead(entry.status, entry.headers).end(entry.body);
   * ```
   */
  async get(key: string): Promise<CacheEntry | undefined> {
    if (this.memory !== undefined) return this.memory.getSync<CacheEntry>(this.#prefix + key);
    const result = await this.#run('get', key, () => this.keyv.get(key));
    if (!result.ok || result.value === undefined || result.value === null) return undefined;
    const entry = decode(result.value);
    if (entry === undefined) {
      this.#report(new CacheStoreError('get', 'invalid', key, `Cache store returned something that is not an entry for "${key}"`));
    }
    return entry;
  }

  /**
   * Stores `entry` under `key` for `ttlMs` milliseconds (`0`: until evicted). Resolves `true` when
   * stored, `false` when the store failed or refused it. Rejects only on an invalid entry or TTL.
   * @example
   * ```ts
   * await cache.set(key, { status: 200, headers: ['etag', '"1"'], body, storedAt: Date.now() }, 60_000);
   * ```
   */
  async set(key: string, entry: CacheEntry, ttlMs: number): Promise<boolean> {
    validEntry(entry);
    if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs < 0) throw new InvalidOptionError('ttlMs', 'a non-negative number of milliseconds', ttlMs);
    const ttl = ttlMs === 0 ? undefined : Math.max(1, Math.round(ttlMs));
    if (this.memory !== undefined) {
      // Held as a frozen object: readers share it and must not change it.
      const held: CacheEntry = { status: entry.status, headers: Object.freeze(entry.headers.slice()) as string[], body: ownMemory(entry.body), storedAt: entry.storedAt };
      if (entry.meta !== undefined) held.meta = Object.freeze({ ...entry.meta });
      return this.memory.set(this.#prefix + key, Object.freeze(held), ttl);
    }
    const record: StoredRecord = { v: 1, status: entry.status, headers: entry.headers.slice(), body: entry.body.toString('base64'), storedAt: entry.storedAt };
    if (entry.meta !== undefined) record.meta = entry.meta;
    const result = await this.#run('set', key, () => this.keyv.set(key, record, ttl));
    return result.ok && result.value !== false;
  }

  /**
   * A plain string stored under `key` with {@link CacheStore.setText} (sticky()'s learned sessions),
   * or `undefined` on a miss, a failure or a value that is not a string.
   * @example
   * ```ts
   * const sid = await sessions.getText('session:3f2a');
   * ```
   */
  async getText(key: string): Promise<string | undefined> {
    let value: unknown;
    if (this.memory !== undefined) value = this.memory.getSync(this.#prefix + key);
    else {
      const result = await this.#run('get', key, () => this.keyv.get(key));
      if (!result.ok) return undefined;
      value = result.value;
    }
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') {
      this.#report(new CacheStoreError('get', 'invalid', key, `Store returned something that is not a string for "${key}"`));
      return undefined;
    }
    return value;
  }

  /** What keys get in front of them in the store (`<namespace>:`). */
  get keyPrefix(): string {
    return this.#prefix;
  }

  /** {@link CacheStore.getText} without the promise, when values live in this process; else `undefined`. */
  getTextSync(key: string): string | undefined {
    const value = this.memory?.getSync(this.#prefix + key);
    return typeof value === 'string' ? value : undefined;
  }

  /**
   * Stores a plain string under `key` for `ttlMs` milliseconds (`0`: until evicted). Resolves
   * `false` when the store failed.
   * @example
   * ```ts
   * await sessions.setText('session:3f2a', 'b', 600_000);
   * ```
   */
  async setText(key: string, value: string, ttlMs: number): Promise<boolean> {
    if (typeof value !== 'string') throw new InvalidOptionError('value', 'a string', value);
    if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs < 0) throw new InvalidOptionError('ttlMs', 'a non-negative number of milliseconds', ttlMs);
    const ttl = ttlMs === 0 ? undefined : Math.max(1, Math.round(ttlMs));
    if (this.memory !== undefined) return this.memory.set(this.#prefix + key, value, ttl);
    const result = await this.#run('set', key, () => this.keyv.set(key, value, ttl));
    return result.ok && result.value !== false;
  }

  /**
   * Every string value of this namespace (for counting sticky sessions): the memory store's, or a
   * Redis `SCAN` with `MGET`, or Keyv's iterator. Resolves `[]` when the store fails.
   */
  async texts(): Promise<string[]> {
    const result = await this.#run('list', '', async () => {
      const keyv = this.keyv;
      const rawPrefix = keyv._getKeyPrefix('');
      const out: string[] = [];
      if (this.memory !== undefined) {
        for (const k of this.memory.keys()) {
          if (!k.startsWith(rawPrefix)) continue;
          const v = await this.memory.get(k);
          if (typeof v === 'string') out.push(v);
        }
        return out;
      }
      if (keyv.iterator !== undefined) {
        for await (const [, value] of keyv.iterator(keyv.namespace) as AsyncIterable<[string, unknown]>) if (typeof value === 'string') out.push(value);
        return out;
      }
      throw new Error('This keyv store cannot list its keys');
    });
    return result.ok ? result.value : [];
  }

  /**
   * Removes the entry under `key`. Resolves `true` when the store removed something.
   * @example
   * ```ts
   * await cache.delete('GET:example.com/');
   * ```
   */
  async delete(key: string): Promise<boolean> {
    if (this.memory !== undefined) return this.memory.delete(this.#prefix + key);
    const result = await this.#run('delete', key, () => this.keyv.delete(key));
    return result.ok && result.value === true;
  }

  /**
   * Removes every entry whose key starts with `prefix` (`''`: all of this namespace), and resolves
   * how many keys were removed (`0` when the store failed). The timeout applies to the whole purge.
   * @example
   * ```ts
   * await cache.deletePrefix('GET:example.com/images/');
   * ```
   */
  async deletePrefix(prefix: string): Promise<number> {
    if (typeof prefix !== 'string') throw new InvalidOptionError('prefix', 'a string', prefix);
    const result = await this.#run('deletePrefix', prefix, () => this.#purge(prefix));
    return result.ok ? result.value : 0;
  }

  /**
   * Stops listening to the store and disconnects it (closes a Redis client). Never rejects. Store
   * operations in flight on a Redis client get up to `timeout` (at most a second) to finish, then
   * the client is closed whether Redis answers or not. Afterwards every operation answers as with
   * a store that is down (a miss, nothing stored), without opening a connection again.
   * @example
   * ```ts
   * process.on('SIGTERM', () => cache.disconnect());
   * ```
   */
  async disconnect(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    const connection = redisConnection(this.keyv.store);
    if (connection === undefined) {
      await this.#run('disconnect', undefined, () => this.keyv.disconnect());
    } else {
      // A Redis client: operations in flight get up to `timeout` to finish, then the client is
      // destroyed (its socket, its reconnection and whatever it still queues), answered or not.
      if (this.#inflight.size > 0) await settleWithin(Promise.allSettled(this.#inflight), Math.min(this.timeout, DISCONNECT_WAIT));
      if (connection.isOpen) {
        try {
          connection.destroy();
        } catch (error) {
          this.#fail('disconnect', undefined, error);
        }
      }
    }
    this.keyv.off('error', this.#onKeyvError);
  }

  async #purge(prefix: string): Promise<number> {
    const keyv = this.keyv;
    const store: unknown = keyv.store;
    // Memory keys are always `<namespace>:<key>` (see set); Keyv's own prefixing skips keys that already carry it.
    const rawPrefix = isMemoryStore(store) ? this.#prefix + prefix : keyv._getKeyPrefix(prefix);
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
        if (key.startsWith(prefix)) keys.push(keyv._getKeyPrefix(key));
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
   * One store operation, fail open: skipped at once while the breaker is open, failed at once while
   * a Redis client is not connected, else raced against `timeout`. Failures are reported and
   * counted by the breaker.
   */
  async #run<T>(operation: CacheStoreOperation, key: string | undefined, fn: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false }> {
    // Marked down, or disconnected (an operation must not open the connection again).
    if ((this.#state !== 'closed' || this.#closed) && operation !== 'disconnect') return SKIPPED;
    const result = await this.#attempt(operation, key, fn, operation === 'disconnect');
    if (result.ok) {
      if (!result.storeError) this.#succeeded();
      return result;
    }
    this.#report(result.error);
    if (operation !== 'disconnect') this.#failed(result.error);
    return SKIPPED;
  }

  #armTrip(): void {
    this.#tripped = new Promise((resolve) => {
      this.#trip = () => resolve(TRIPPED);
    });
  }

  /**
   * Runs `fn` against the store within `timeout` (and, unless `untripped`, until the breaker opens);
   * never rejects, reports nothing.
   */
  async #attempt<T>(operation: CacheStoreOperation, key: string | undefined, fn: () => Promise<T>, untripped = false): Promise<{ ok: true; value: T; storeError: boolean } | { ok: false; error: CacheStoreError }> {
    if (this.#redis) {
      // Sent to a client that is (re)connecting, the command would wait in its offline queue.
      const connection = redisConnection(this.keyv.store);
      if (connection !== undefined && connection.isOpen && !connection.isReady) {
        return { ok: false, error: new CacheStoreError(operation, 'error', key, `Cache store ${operation} failed: the Redis client is not connected`) };
      }
    }
    const errorsBefore = this.#storeErrors;
    let timer: NodeJS.Timeout | undefined;
    let pending: Promise<T>;
    try {
      pending = Promise.resolve(fn());
    } catch (error) {
      return { ok: false, error: this.#failure(operation, key, error) };
    }
    // A late rejection of an operation that already timed out must not become an unhandled rejection.
    const settled = pending.then(
      () => undefined,
      (error: unknown) => {
        if (typeof error === 'object' && error !== null) this.#claimed.add(error);
      },
    );
    this.#inflight.add(settled);
    void settled.then(() => this.#inflight.delete(settled));
    const deadline = new Promise<typeof TIMED_OUT>((resolve) => {
      timer = setTimeout(resolve, this.timeout, TIMED_OUT);
      // A store that hangs must not keep the process up, but disconnect() must settle all the same.
      if (operation !== 'disconnect') timer.unref();
    });
    try {
      const value = await Promise.race(untripped ? [pending, deadline] : [pending, deadline, this.#tripped]);
      if (value === TRIPPED) {
        return { ok: false, error: new CacheStoreError(operation, 'error', key, `Cache store ${operation} abandoned: the store was marked down meanwhile`) };
      }
      if (value === TIMED_OUT) {
        return { ok: false, error: new CacheStoreError(operation, 'timeout', key, `Cache store ${operation} timed out after ${this.timeout}ms`) };
      }
      return { ok: true, value, storeError: this.#storeErrors !== errorsBefore };
    } catch (error) {
      return { ok: false, error: this.#failure(operation, key, error) };
    } finally {
      clearTimeout(timer);
    }
  }

  #failure(operation: CacheStoreOperation, key: string | undefined, error: unknown): CacheStoreError {
    if (typeof error === 'object' && error !== null) this.#claimed.add(error);
    return new CacheStoreError(operation, 'error', key, `Cache store ${operation} failed: ${message(error)}`, error);
  }

  #fail(operation: CacheStoreOperation, key: string | undefined, error: unknown): void {
    this.#report(this.#failure(operation, key, error));
  }

  #succeeded(): void {
    this.#failures = 0;
  }

  /** Counts a failure; the one that reaches `breaker.failures` opens the breaker. */
  #failed(error: CacheStoreError): void {
    const breaker = this.#breaker;
    if (breaker === undefined || this.#closed || this.#state !== 'closed') return;
    if (++this.#failures < breaker.failures) return;
    this.#state = 'open';
    this.#probeDelay = breaker.probeDelay;
    this.#schedule();
    this.#trip();
    this.#emitSafely('storeDown', error);
  }

  #schedule(): void {
    if (this.#closed) return;
    // Up to a tenth more, so that gateways sharing a store do not probe it in step.
    const delay = this.#probeDelay * (1 + Math.random() / 10);
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = undefined;
      this.#probe().catch(() => undefined);
    }, delay);
    this.#probeTimer.unref();
  }

  async #probe(): Promise<void> {
    if (this.#closed || this.#state !== 'open') return;
    this.#state = 'half-open';
    const result = await this.#attempt('get', PROBE_KEY, () => this.keyv.get(PROBE_KEY), true);
    if (this.#closed) return;
    if (result.ok && !result.storeError) {
      this.#armTrip();
      this.#state = 'closed';
      this.#failures = 0;
      this.#emitSafely('storeUp');
      return;
    }
    this.#state = 'open';
    this.#probeDelay = Math.min(this.#probeDelay * 2, this.#breaker!.maxProbeDelay);
    this.#schedule();
  }

  /** Calls each listener of `event` in turn: one that throws stops neither the others nor the store. */
  #emitSafely<E extends keyof CacheStoreEvents>(event: E, ...args: CacheStoreEvents[E]): void {
    for (const listener of this.rawListeners(event) as Array<(...a: unknown[]) => unknown>) {
      try {
        listener.apply(this, args);
      } catch {
        // A throwing listener must not turn a fail-open cache into a failing one.
      }
    }
  }

  #report(error: CacheStoreError): void {
    if (channels.storeError.hasSubscribers) channels.storeError.publish({ store: this.keyv.namespace ?? '', operation: error.operation, error });
    if (this.listenerCount('storeError') === 0) return;
    this.#emitSafely('storeError', error);
  }
}

function message(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
