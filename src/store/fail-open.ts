/**
 * The fail-open wrapper over a keyv store ({@link CacheStore}): what `cache()` keeps its entries in
 * and `sticky()`'s learn mode its sessions. A failing store never fails a request; a store that keeps
 * failing is skipped by a circuit breaker.
 * @module
 */
import { EventEmitter } from 'node:events';
import type { Keyv, KeyvStoreAdapter } from 'keyv';
import { channels } from '../core/diagnostics.ts';
import type { Duration } from '../core/duration.ts';
import { CacheStoreError, InvalidOptionError, type CacheStoreOperation } from '../core/errors.ts';
import { durationOption, objectOption, stringOption } from '../core/options.ts';
import { CircuitBreaker, TRIPPED, type StoreBreakerOptions, type StoreBreakerState } from './breaker.ts';
import { deleteByPrefix, isKeyv, isStoreAdapter, keyvFor, namespaceValues, redisConnection, storageKey, type RedisConnection } from './keyv.ts';
import { createMemoryStore, isMemoryStore, type MemoryStore, type MemoryStoreOptions } from './memory.ts';
import { decode, encode, heldEntry, validEntry, type CacheEntry } from './record.ts';

/** Default {@link CacheStoreOptions.timeout}: a second per store operation. */
export const DEFAULT_STORE_TIMEOUT = '1s';
/** Default {@link CacheStoreOptions.namespace} of the Keyv that {@link CacheStore} creates itself. */
export const DEFAULT_NAMESPACE = 'switchyard';

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

/** Options of {@link CacheStore}. */
export interface CacheStoreOptions {
  /**
   * Where entries live: a `Keyv` instance (used as is), or a keyv storage adapter such as
   * `new KeyvRedis(url)` or a {@link createMemoryStore} store, wrapped in a Keyv created with
   * `namespace` and `throwOnErrors: true`.
   * @default createMemoryStore(memory)
   */
  store?: Keyv | KeyvStoreAdapter | Map<unknown, unknown> | undefined;
  /**
   * Options of the default memory store (ignored when `store` is given).
   * @default {}
   */
  memory?: MemoryStoreOptions | undefined;
  /**
   * Namespace of the Keyv the wrapper creates (ignored when `store` is a Keyv instance).
   * @default DEFAULT_NAMESPACE ('switchyard')
   */
  namespace?: string | undefined;
  /**
   * Longest a store operation may take before it counts as failed (a miss for `get`). Also the
   * longest {@link CacheStore.disconnect} waits for operations in flight (at most a second).
   * @default DEFAULT_STORE_TIMEOUT ('1s')
   */
  timeout?: Duration | undefined;
  /**
   * When a failing store is marked down and skipped, and how it is probed ({@link StoreBreakerOptions});
   * `false`: every operation goes to the store and may wait up to `timeout`.
   * @default {}
   */
  breaker?: StoreBreakerOptions | false | undefined;
}

/** Every key of {@link CacheStoreOptions}. */
const CACHE_STORE_OPTIONS = ['store', 'memory', 'namespace', 'timeout', 'breaker'] as const satisfies ReadonlyArray<keyof CacheStoreOptions>;

/** The key a probe reads (a miss is an answer as good as a hit). */
const PROBE_KEY = '\u0000switchyard-probe';

const TIMED_OUT: unique symbol = Symbol('timed out');
const SKIPPED = Object.freeze({ ok: false as const });
/** Longest {@link CacheStore.disconnect} waits for operations in flight on a Redis client. */
const DISCONNECT_WAIT = 1000;
/** How often an operation waiting for a Redis client's first connection looks whether it is ready. */
const CONNECT_POLL = 10;

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

/** A TTL in milliseconds as the stores take it: `undefined` for none (`0`), else at least 1 ms. */
function storeTtl(ttlMs: number): number | undefined {
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs < 0) throw new InvalidOptionError('ttlMs', 'a non-negative number of milliseconds', ttlMs);
  return ttlMs === 0 ? undefined : Math.max(1, Math.round(ttlMs));
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
 * A Redis client (`@keyv/redis`) is sent nothing until it is ready. While its first connection is
 * under way (a store just created: the first operations open it), operations wait for it, each within
 * its `timeout`; the wait ends as soon as the connection fails. A client that is reconnecting (it was
 * connected, or its first connection failed) is a store known to be down: the operation fails at once
 * instead of waiting in node-redis's offline queue, which would replay it (stale sessions and entries)
 * once Redis is back. Create the client with `disableOfflineQueue: true` all the same, for anything
 * else that uses it.
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
  readonly #breaker: CircuitBreaker<CacheStoreError>;
  /** Whether the store is an adapter with a Redis client whose connection can be read. */
  readonly #redis: boolean;
  /** Errors the store reported so far: an operation during which one came did not succeed. */
  #storeErrors = 0;
  /**
   * Whether the Redis client's first connection has ended: it was ready once, or it failed (an
   * error, or not ready within `timeout`). Until then operations wait for it; afterwards a client
   * that is not ready is a store known to be down, and operations fail at once.
   */
  #firstConnectionOver = false;
  /** The wait for the Redis client's first connection, shared by the operations issued meanwhile. */
  #firstConnection: Promise<void> | undefined;
  #closed = false;
  /** Store operations in flight, for disconnect() to let them finish. */
  readonly #inflight = new Set<Promise<unknown>>();

  constructor(options: CacheStoreOptions = {}) {
    super();
    objectOption(options, '', CACHE_STORE_OPTIONS);
    this.timeout = durationOption(options.timeout, 'timeout', DEFAULT_STORE_TIMEOUT, true);
    this.#breaker = new CircuitBreaker<CacheStoreError>(options.breaker, {
      probe: async () => {
        const result = await this.#attempt('get', PROBE_KEY, () => this.keyv.get(PROBE_KEY), true);
        return result.ok && !result.storeError;
      },
      down: (error) => this.#emitSafely('storeDown', error),
      up: () => this.#emitSafely('storeUp'),
    });
    const namespace = stringOption(options.namespace, 'namespace', DEFAULT_NAMESPACE, { nonEmpty: true });
    const store = options.store ?? createMemoryStore(options.memory ?? {});
    this.memory = undefined;
    if (isKeyv(store)) {
      this.keyv = store;
    } else {
      if (isMemoryStore(store)) this.memory = store;
      if (!isStoreAdapter(store)) throw new InvalidOptionError('store', 'a Keyv instance or a keyv storage adapter (get, set, delete, clear)', store);
      this.keyv = keyvFor(store, namespace);
    }
    // Errors the store reports on its own (a Redis client losing its connection, an error an adapter
    // swallows) reach Keyv's 'error' event. Those that also failed an operation are reported once,
    // by the operation; the rest are reported as operation 'store' on the next turn of the loop.
    this.#onKeyvError = (error: unknown) => {
      this.#storeErrors++;
      // Whatever the store reports, a Redis client's first connection is over (failed, if it was never ready).
      this.#firstConnectionOver = true;
      setImmediate(() => {
        if (typeof error === 'object' && error !== null && this.#claimed.has(error)) return;
        const failure = new CacheStoreError('store', 'error', undefined, `Cache store reported an error: ${message(error)}`, error);
        this.#report(failure);
        this.#breaker.failed(failure);
      });
    };
    this.keyv.on('error', this.#onKeyvError);
    this.#prefix = storageKey(this.keyv, '');
    this.#redis = redisConnection(this.keyv.store) !== undefined;
  }

  /**
   * The circuit breaker: `'closed'` while the store is used, `'open'` while it is marked down and
   * skipped, `'half-open'` while a probe is in flight (still skipped).
   */
  get breakerState(): StoreBreakerState {
    return this.#breaker.state;
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
    const ttl = storeTtl(ttlMs);
    if (this.memory !== undefined) return this.memory.set(this.#prefix + key, heldEntry(entry), ttl);
    const record = encode(entry);
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
    const ttl = storeTtl(ttlMs);
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
      const memory = this.memory;
      if (memory === undefined) return namespaceValues(this.keyv);
      const values: unknown[] = [];
      for (const k of memory.keys()) if (k.startsWith(this.#prefix)) values.push(memory.getSync(k));
      return values;
    });
    return result.ok ? result.value.filter((v): v is string => typeof v === 'string') : [];
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
    const result = await this.#run('deletePrefix', prefix, () => deleteByPrefix(this.keyv, prefix));
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
    this.#breaker.stop();
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

  /**
   * One store operation, fail open: skipped at once while the breaker is open, failed at once while
   * a Redis client known to be down reconnects, else raced against `timeout` (a Redis client's first
   * connection included). Failures are reported and counted by the breaker.
   */
  async #run<T>(operation: CacheStoreOperation, key: string | undefined, fn: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false }> {
    // Marked down, or disconnected (an operation must not open the connection again).
    if ((this.#breaker.state !== 'closed' || this.#closed) && operation !== 'disconnect') return SKIPPED;
    const result = await this.#attempt(operation, key, fn, operation === 'disconnect');
    if (result.ok) {
      if (!result.storeError) this.#breaker.succeeded();
      return result;
    }
    this.#report(result.error);
    if (operation !== 'disconnect') this.#breaker.failed(result.error);
    return SKIPPED;
  }

  /**
   * Runs `fn` against the store within `timeout` (and, unless `untripped`, until the breaker opens);
   * never rejects, reports nothing.
   */
  async #attempt<T>(
    operation: CacheStoreOperation,
    key: string | undefined,
    fn: () => Promise<T>,
    untripped = false,
  ): Promise<{ ok: true; value: T; storeError: boolean } | { ok: false; error: CacheStoreError }> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<typeof TIMED_OUT>((resolve) => {
      timer = setTimeout(resolve, this.timeout, TIMED_OUT);
      // A store that hangs must not keep the process up, but disconnect() must settle all the same.
      if (operation !== 'disconnect') timer.unref();
    });
    const abandon = (value: unknown) => {
      if (value === TRIPPED)
        return {
          ok: false as const,
          error: new CacheStoreError(operation, 'error', key, `Cache store ${operation} abandoned: the store was marked down meanwhile`),
        };
      if (value === TIMED_OUT)
        return { ok: false as const, error: new CacheStoreError(operation, 'timeout', key, `Cache store ${operation} timed out after ${this.timeout}ms`) };
      return undefined;
    };
    const racers: Array<Promise<typeof TIMED_OUT | typeof TRIPPED>> = untripped ? [deadline] : [deadline, this.#breaker.tripped];
    try {
      const connection = this.#redis ? redisConnection(this.keyv.store) : undefined;
      if (connection !== undefined) {
        if (connection.isReady) this.#firstConnectionOver = true;
        else if (connection.isOpen) {
          // A client that is opening its first connection: wait for it (within the deadline).
          if (!this.#firstConnectionOver) {
            const abandoned = abandon(await Promise.race([this.#awaitFirstConnection(connection), ...racers]));
            if (abandoned !== undefined) return abandoned;
          }
          // A client known to be down, reconnecting: sent to it, the command would wait in its offline queue.
          if (!connection.isReady) {
            return { ok: false, error: new CacheStoreError(operation, 'error', key, `Cache store ${operation} failed: the Redis client is not connected`) };
          }
        }
      }
      const errorsBefore = this.#storeErrors;
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
      const value = await Promise.race([pending, ...racers]);
      const abandoned = abandon(value);
      if (abandoned !== undefined) return abandoned;
      // Answered by a Redis client: it has been connected.
      if (connection !== undefined) this.#firstConnectionOver = true;
      return { ok: true, value: value as T, storeError: this.#storeErrors !== errorsBefore };
    } catch (error) {
      return { ok: false, error: this.#failure(operation, key, error) };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Resolves once the Redis client's first connection is over: the client is ready, its connection
   * failed or was closed, the store was disconnected, or `timeout` has passed (a connection that
   * slow counts as failed). Looks every {@link CONNECT_POLL} ms (node-redis's clients and sentinels
   * do not all emit `'ready'`); one wait for all the operations issued meanwhile.
   */
  #awaitFirstConnection(connection: RedisConnection): Promise<void> {
    this.#firstConnection ??= new Promise<void>((resolve) => {
      const started = performance.now();
      const look = (): void => {
        if (connection.isReady || !connection.isOpen || this.#firstConnectionOver || this.#closed || performance.now() - started >= this.timeout) {
          this.#firstConnectionOver = true;
          resolve();
          return;
        }
        setTimeout(look, CONNECT_POLL).unref();
      };
      look();
    });
    return this.#firstConnection;
  }

  #failure(operation: CacheStoreOperation, key: string | undefined, error: unknown): CacheStoreError {
    if (typeof error === 'object' && error !== null) this.#claimed.add(error);
    return new CacheStoreError(operation, 'error', key, `Cache store ${operation} failed: ${message(error)}`, error);
  }

  #fail(operation: CacheStoreOperation, key: string | undefined, error: unknown): void {
    this.#report(this.#failure(operation, key, error));
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
