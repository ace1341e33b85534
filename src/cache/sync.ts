/**
 * `cache()` across instances (option `sync`, issue 14): the lock (`lock`, `lockAge`, `updating` and
 * background updates) taken in the shared engine, one fill per key however many instances; the
 * `minUses` count kept in a shared counter; purges broadcast to every instance's memory store; and
 * the entries an instance fills sent to the others' memory stores, so that the instances that waited
 * for a fill elsewhere serve it. With the engine away, every instance carries on alone at once: the
 * lock is per process again, nothing waits for Redis.
 *
 * Keys and channel, under the sync handle's namespace: lease `cachelock:<name>:<hash of the key>`
 * (TTL `lockAge`), counter `cacheuses:<name>:<hash>` (TTL `staleRetention`), channel `cache:<name>`.
 * Messages are JSON, `{ o: origin, t: 'done' | 'purge', ... }`; what arrives is checked, never trusted.
 * @module
 */
import { createHash, randomUUID } from 'node:crypto';
import { InvalidOptionError } from '../core/errors.ts';
import { type CacheStore, decodeEntry, encodeEntry } from '../store/index.ts';
import { isSyncHandle, type SyncHandle, type SyncInternals, syncInternals } from '../sync/index.ts';
import { parseJsonObject } from '../sync/transport.ts';
import type { Written } from './entry.ts';
import type { Fill, FillTable } from './lock.ts';
import { type Purger, removeFrom } from './purge.ts';

/**
 * How long a message takes, at most, in the purge test of an entry another instance filled: a purge
 * heard up to this long before the fill began still keeps the entry out (in doubt, not stored).
 */
export const MESSAGE_MARGIN_MS = 250;
/**
 * With a shared store, a purge is run again this long after it: a fill elsewhere that stored its
 * response before the purge's broadcast reached it is removed too.
 */
export const PURGE_REPEAT_MS = 1000;
/** Most store writes one fill message carries (a Vary marker and its variant). */
const MAX_WRITES = 4;

/** The `sync` option of cache(): a handle from `sync()`, or `undefined`. */
export function syncHandleOption(value: unknown, path = 'sync'): SyncHandle | undefined {
  if (value === undefined) return undefined;
  if (isSyncHandle(value)) return value;
  throw new InvalidOptionError(path, 'a handle from sync()', value);
}

/** The cluster lock a fill holds: a lease in the shared engine, given back when the fill ends. */
export interface ClusterLock {
  readonly key: string;
  readonly holder: string;
}

/** What {@link CacheCluster} works with. */
export interface CacheClusterParts {
  /** The cache's name: instances whose caches share a name (and a namespace) share their locks, counters and purges. */
  readonly name: string;
  readonly store: CacheStore;
  readonly fills: FillTable;
  readonly purger: Purger;
  /** `lockAge` in milliseconds: the TTL of a cluster lock. */
  readonly lockAge: number;
  /** How long a key's use count lasts (`staleRetention`, nginx's `inactive`), in milliseconds. */
  readonly usesWindow: number;
  /** The cache's statistics, for the board. */
  readonly stats: () => unknown;
}

/** A fill elsewhere this instance waits for: the local fill standing for it, and its end by lock age. */
interface RemoteFill {
  readonly fill: Fill;
  readonly timer: unknown;
}

/** A message that came on the cache's channel, checked. */
type Message = { o: string; t: 'done'; k: string; a: number; e?: unknown[] | undefined } | { o: string; t: 'purge'; k: string; p: boolean };

function parse(text: string): Message | undefined {
  const r = parseJsonObject(text);
  if (r === undefined || typeof r.o !== 'string' || typeof r.k !== 'string') return undefined;
  if (r.t === 'purge' && typeof r.p === 'boolean') return { o: r.o, t: 'purge', k: r.k, p: r.p };
  if (r.t !== 'done' || typeof r.a !== 'number' || !Number.isFinite(r.a) || r.a < 0) return undefined;
  if (r.e !== undefined && !(Array.isArray(r.e) && r.e.length <= MAX_WRITES)) return undefined;
  return { o: r.o, t: 'done', k: r.k, a: r.a, e: r.e as unknown[] | undefined };
}

/** One cache's part of the cluster-wide state. */
export class CacheCluster {
  readonly #shared: SyncInternals;
  readonly #parts: CacheClusterParts;
  /** This cache in this process: its messages' origin and its locks' holders' prefix. */
  readonly #origin: string;
  readonly #channel: string;
  readonly #remote = new Map<string, RemoteFill>();
  readonly #timers = new Set<unknown>();
  readonly #stops: Array<() => void>;
  #holds = 0;
  #closed = false;

  constructor(handle: SyncHandle, parts: CacheClusterParts) {
    this.#shared = syncInternals(handle);
    this.#parts = parts;
    this.#origin = `${this.#shared.instance}/${randomUUID().slice(0, 8)}`;
    this.#channel = `cache:${parts.name}`;
    const t = this.#shared.transport;
    this.#stops = [
      t.listen(this.#channel, (text) => this.#heard(text)),
      // The engine lost: the fills elsewhere this instance waited for are over for it (per-process lock).
      t.onConnection((up) => {
        if (!up) for (const base of [...this.#remote.keys()]) this.#unwatch(base);
      }),
      this.#shared.board.provide(`cache:${parts.name}`, parts.stats),
    ];
    parts.purger.onPurge = (base, prefix) => this.#purged(base, prefix);
    this.#shared.onClose(() => this.close());
  }

  /** Whether the engine is reachable now: else everything is per process, at once. */
  get active(): boolean {
    return !this.#closed && this.#shared.transport.connected;
  }

  #hash(base: string): string {
    return createHash('sha1').update(base).digest('base64url');
  }

  /**
   * Takes the cluster lock of `base` for a fill this instance is about to make, `fill` its local
   * claim. Resolves the lock when this fill may go, `'busy'` when another instance fills the key
   * (then `fill` stands here for that fill until it ends, by its message, by `lockAge`, or by the
   * engine going away), and `undefined` when the engine cannot be asked (per-process lock).
   */
  async take(base: string, fill: Fill): Promise<ClusterLock | 'busy' | undefined> {
    const key = `cachelock:${this.#parts.name}:${this.#hash(base)}`;
    const holder = `${this.#origin}:${++this.#holds}`;
    let held: boolean;
    try {
      held = await this.#shared.transport.acquire(key, holder, this.#parts.lockAge);
    } catch {
      return undefined;
    }
    if (held) return { key, holder };
    if (!this.active) return undefined;
    this.#watch(base, fill);
    return 'busy';
  }

  /** Counts one request for `base` in the shared counter; resolves the count (rejects when the engine cannot be asked). */
  count(base: string): Promise<number> {
    return this.#shared.transport.increment(`cacheuses:${this.#parts.name}:${this.#hash(base)}`, 1, this.#parts.usesWindow);
  }

  /**
   * A fill of `base` that began `age` ms ago is over: `written` what it stored (undefined: nothing).
   * The others hear of it when they may wait for it (it held the cluster lock) or when their memory
   * stores take what it stored; then the lock is given back. Nothing waits for the engine.
   */
  finished(base: string, lock: ClusterLock | undefined, written: readonly Written[] | undefined, age: number): void {
    const share = written !== undefined && written.length > 0 && this.#parts.store.memory !== undefined;
    if ((lock === undefined && !share) || !this.active) return;
    const t = this.#shared.transport;
    const message: Record<string, unknown> = { o: this.#origin, t: 'done', k: base, a: Math.max(0, Math.round(age)) };
    if (share) message.e = written.map(([key, entry, ttl]) => [key, encodeEntry(entry), ttl]);
    t.broadcast(this.#channel, JSON.stringify(message))
      .catch(() => {})
      .then(() => (lock === undefined ? undefined : t.release(lock.key, lock.holder)))
      .catch(() => {});
  }

  /** A purge made here: every instance hears of it; a shared store (purged once, here) is purged again a little later. */
  async #purged(base: string, prefix: boolean): Promise<void> {
    if (this.#closed) return;
    if (this.#parts.store.memory === undefined) {
      const timer = this.#shared.clock.setTimeout(() => {
        this.#timers.delete(timer);
        removeFrom(this.#parts.store, base, prefix).catch(() => {});
      }, PURGE_REPEAT_MS);
      this.#timers.add(timer);
    }
    if (!this.active) return;
    await this.#shared.transport.broadcast(this.#channel, JSON.stringify({ o: this.#origin, t: 'purge', k: base, p: prefix })).catch(() => {});
  }

  #heard(text: string): void {
    const m = parse(text);
    if (m === undefined || m.o === this.#origin || this.#closed) return;
    const { store, purger } = this.#parts;
    if (m.t === 'purge') {
      purger.note(m.k, m.p);
      // A shared store was purged once, by the instance that purged.
      if (store.memory !== undefined) removeFrom(store, m.k, m.p).catch(() => {});
      return;
    }
    if (m.e === undefined || store.memory === undefined || !purger.mayStoreSince(m.k, m.a, MESSAGE_MARGIN_MS)) {
      this.#unwatch(m.k);
      return;
    }
    this.#storeWrites(m.k, m.e).then(
      () => this.#unwatch(m.k),
      () => this.#unwatch(m.k),
    );
  }

  /** Stores in this instance's memory store what another instance's fill of `base` stored. */
  async #storeWrites(base: string, writes: unknown[]): Promise<void> {
    for (const w of writes) {
      if (!Array.isArray(w) || w.length !== 3) return;
      const [key, record, ttl] = w as [unknown, unknown, unknown];
      if (typeof key !== 'string' || (key !== base && !key.startsWith(`${base}\n`))) return;
      if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0) return;
      const entry = decodeEntry(record);
      if (entry === undefined) return;
      await this.#parts.store.set(key, entry, ttl);
    }
  }

  /** `fill` stands here for another instance's fill of `base`, until that one ends or `lockAge` passes. */
  #watch(base: string, fill: Fill): void {
    this.#unwatch(base);
    const timer = this.#shared.clock.setTimeout(() => this.#unwatch(base, fill), this.#parts.lockAge);
    this.#remote.set(base, { fill, timer });
  }

  /** The fill elsewhere of `base` is over for this instance: the requests waiting for it look again. */
  #unwatch(base: string, fill?: Fill): void {
    const remote = this.#remote.get(base);
    if (remote === undefined || (fill !== undefined && remote.fill !== fill)) return;
    this.#remote.delete(base);
    this.#shared.clock.clearTimeout(remote.timer);
    remote.fill.release();
  }

  /** Stops listening and publishing; the requests waiting for fills elsewhere look again. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const stop of this.#stops.splice(0)) stop();
    for (const base of [...this.#remote.keys()]) this.#unwatch(base);
    for (const timer of this.#timers) this.#shared.clock.clearTimeout(timer);
    this.#timers.clear();
    this.#parts.purger.onPurge = undefined;
  }
}
