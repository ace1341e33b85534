/**
 * The bounded in-memory keyv store ({@link createMemoryStore}): the default store of `cache()` and of
 * `sticky()`'s learn mode, bounded by entries and by the memory its entries take, with nginx's
 * `inactive`. Usable on its own with `new Keyv({ store })`.
 * @module
 */
import { EventEmitter } from 'node:events';
import { Buffer } from 'node:buffer';
import type { KeyvStoreAdapter } from 'keyv';
import type { Duration } from '../core/duration.ts';
import { durationOption, integerOption, nowOption, objectOption } from '../core/options.ts';

/** Default {@link MemoryStoreOptions.maxEntries}: 10 000 entries. */
export const DEFAULT_MAX_ENTRIES = 10_000;
/** Default {@link MemoryStoreOptions.maxBytes}: 64 MiB (nginx `max_size` is unbounded; switchyard is not). */
export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
/** Default {@link MemoryStoreOptions.inactive}: `'10m'`, as nginx `proxy_cache_path ... inactive=10m`. */
export const DEFAULT_INACTIVE = '10m';
/** Size charged for a value {@link estimateSize} cannot measure: a function, a symbol, or what lies past its walk's limit. */
export const UNKNOWN_VALUE_SIZE = 1024;
/**
 * Bytes the memory store charges per entry for its own bookkeeping (the entry's slot with its LRU
 * links and two timestamps, and the Map's entry), on top of the key and the value.
 */
export const ENTRY_OVERHEAD = 160;

/** Every key of {@link MemoryStoreOptions}: any other is refused, naming the nearest of these. */
export const MEMORY_STORE_OPTIONS = ['maxEntries', 'maxBytes', 'inactive', 'now'] as const satisfies ReadonlyArray<keyof MemoryStoreOptions>;

/** The dialect {@link createMemoryStore}'s stores declare in `opts`, by which they are recognized. */
const MEMORY_DIALECT = 'switchyard-memory';

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Most entries kept; the least recently used go first.
   * @default DEFAULT_MAX_ENTRIES (10000)
   */
  maxEntries?: number | undefined;
  /**
   * Most memory kept, in bytes: what the entries take in the V8 heap and in Buffers, as the store
   * estimates it (key and value by `estimateSize`, plus `ENTRY_OVERHEAD` per entry;
   * within 25% of the measured heap for small and large cache entries). The least recently used
   * go first. A single entry larger than this is not stored.
   * @default DEFAULT_MAX_BYTES (64 MiB)
   */
  maxBytes?: number | undefined;
  /**
   * nginx `inactive`: an entry neither read nor written for this long is dropped whatever its TTL.
   * @default DEFAULT_INACTIVE ('10m')
   */
  inactive?: Duration | undefined;
  /**
   * Clock in milliseconds, for tests.
   * @default Date.now
   */
  now?: (() => number) | undefined;
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

// Sizes in the V8 heap of 64-bit Node (no pointer compression), as test/store/heap-probe.ts measures them.
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
export function ownMemory(body: Buffer): Buffer {
  if (body.buffer.byteLength === body.byteLength) return body;
  const copy = Buffer.allocUnsafeSlow(body.byteLength);
  body.copy(copy);
  return copy;
}

/**
 * Creates a bounded in-memory keyv store: the default store of `CacheStore`, `cache()` and
 * `sticky()`'s learn mode, also usable with a plain `new Keyv({ store })`.
 * @example
 * ```ts
 * const store = createMemoryStore({ maxEntries: 1000, maxBytes: 10 * 1024 * 1024, inactive: '10m' });
 * const cache = new CacheStore({ store });
 * ```
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryStore {
  objectOption(options, '', MEMORY_STORE_OPTIONS);
  const maxEntries = integerOption(options.maxEntries, 'maxEntries', DEFAULT_MAX_ENTRIES, { min: 1 });
  const maxBytes = integerOption(options.maxBytes, 'maxBytes', DEFAULT_MAX_BYTES, { min: 1 });
  const inactive = durationOption(options.inactive, 'inactive', DEFAULT_INACTIVE, true);
  const now = nowOption(options.now);
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
    opts: Object.freeze({ dialect: MEMORY_DIALECT, maxEntries, maxBytes, inactive }),
    namespace: undefined as string | undefined,
    // biome-ignore lint/suspicious/noExplicitAny: the signature keyv's store adapter interface declares
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

/** Whether `store` is a store made by {@link createMemoryStore}. */
export function isMemoryStore(store: unknown): store is MemoryStore {
  const s = store as { opts?: { dialect?: unknown }; keys?: unknown } | null;
  return typeof s === 'object' && s !== null && s.opts?.dialect === MEMORY_DIALECT && typeof s.keys === 'function';
}
