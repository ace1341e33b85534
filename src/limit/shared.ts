// limitRequests() with `sync`: every instance's requests go through the same buckets, kept by the
// sync engine (Redis) and decided there in one atomic step per request (Transport.buckets, nginx's
// arithmetic on Redis's clock). When the engine is lost, or a call fails, the middleware goes on at
// once with its own zones (each instance then limits on its own: never no limit, never an error),
// says so with a 'fallback' event, and tries the engine again with one request a second, going back
// to the shared buckets ('shared' event) as soon as one call goes through.
import { EventEmitter } from 'node:events';
import { InvalidOptionError } from '../core/errors.ts';
import { isSyncHandle, type SyncHandle, syncInternals } from '../sync/index.ts';
import type { TimerClock } from '../core/clock.ts';
import type { GaugeCheck, Transport } from '../sync/transport.ts';
import type { LimitClock } from './delay.ts';

/**
 * Events of a limit middleware with `sync`.
 *
 * @example
 * ```ts
 * limit.on('fallback', (err) => console.warn('rate limits are per instance for now:', err.message));
 * limit.on('shared', () => console.info('rate limits are shared again'));
 * ```
 */
export interface LimitEvents {
  /** The shared buckets could not be reached: this instance limits on its own from now on, until `shared`. */
  fallback: [err: Error];
  /** The shared buckets are reached again: the limits hold across the instances again. */
  shared: [];
}

/** How long the middleware stays on its own zones after a failed call before one request tries the engine again. */
const RETRY_MS = 1000;

/** What the shared buckets decided for one request: the limit that rejected it (-1: none), and each limit's excess (-1: its key was empty). */
export interface SharedDecision {
  readonly rejected: number;
  readonly excess: number[];
}

/** A limit as the shared buckets need it. */
interface SharedLimit {
  readonly name: string;
  readonly zone: { readonly rate: number };
  readonly burst: number;
  readonly stats: object;
}

/**
 * Whether a limit middleware uses the shared state now: yes while the engine answers; after a
 * failure (or while the engine is disconnected) no, but one request a second tries again. Emits
 * `fallback` when it stops using it and `shared` when it starts again. @internal
 */
export class SharedMode {
  readonly events = new EventEmitter<LimitEvents>();
  readonly transport: Transport;
  readonly #now: () => number;
  #local = false;
  #retryAt = 0;
  #probing = false;

  constructor(transport: Transport, now: () => number) {
    this.transport = transport;
    this.#now = now;
  }

  /** Whether the shared state is in use (not fallen back). */
  get shared(): boolean {
    return !this.#local && this.transport.connected;
  }

  /** Whether this request goes to the shared state: yes while it answers; after a failure, one request a second. */
  ready(): boolean {
    if (!this.transport.connected) {
      this.#fallBack(new Error('switchyard limit: the sync engine is disconnected'));
      return false;
    }
    if (!this.#local) return true;
    if (this.#probing || this.#now() < this.#retryAt) return false;
    this.#probing = true;
    return true;
  }

  /** A call went through. */
  succeeded(): void {
    this.#probing = false;
    if (!this.#local) return;
    this.#local = false;
    this.events.emit('shared');
  }

  /** A call failed: this instance's own zones for the next second at least. */
  failed(err: unknown): void {
    this.#probing = false;
    this.#retryAt = this.#now() + RETRY_MS;
    this.#fallBack(err instanceof Error ? err : new Error(String(err)));
  }

  #fallBack(err: Error): void {
    if (this.#local) return;
    this.#local = true;
    this.events.emit('fallback', err);
  }
}

/** The shared buckets of one limitRequests() middleware. @internal */
export class SharedBuckets {
  readonly mode: SharedMode;
  readonly #scope: string;
  readonly #limits: readonly SharedLimit[];

  constructor(handle: SyncHandle, limits: readonly SharedLimit[], clock: LimitClock) {
    const internals = syncInternals(handle);
    this.mode = new SharedMode(internals.transport, () => clock.now());
    // On Redis Cluster the buckets of one scope share a hash slot: those of a middleware are under its first zone.
    this.#scope = `limit_req:${limits[0]!.name}`;
    this.#limits = limits;
    // Each zone's counters on the statistics board, summed over the instances by monitor().
    for (const l of limits) internals.board.provide(`limit_req:${l.name}`, () => l.stats);
  }

  /** One round trip: every limit with a key, checked and accounted together. */
  async check(keys: readonly string[]): Promise<SharedDecision> {
    const applied: number[] = [];
    const checks = [];
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] === '') continue;
      const l = this.#limits[i]!;
      applied.push(i);
      checks.push({ key: `${l.name}:${keys[i]}`, rate: l.zone.rate, burst: l.burst });
    }
    const out = await this.mode.transport.buckets(this.#scope, checks);
    this.mode.succeeded();
    const excess = keys.map(() => -1);
    if (out[0]! > 0) return { rejected: applied[out[0]! - 1] ?? -1, excess };
    for (let j = 0; j < applied.length; j++) excess[applied[j]!] = out[j + 1]!;
    return { rejected: -1, excess };
  }
}

/** How long an instance's count of a key lives in the shared gauges unless written again: an instance that dies lets go within it. */
export const GAUGE_TTL_MS = 30_000;
/** How many gauges one refresh call writes. */
const REFRESH_BATCH = 256;

/** A limit as the shared gauges need it. */
interface GaugeLimit {
  readonly name: string;
  readonly max: number;
  /** This process's requests in progress per key (every one, shared or not). */
  readonly zone: { readonly counts: ReadonlyMap<string, number> };
  readonly stats: object;
}

/**
 * The shared gauges of one limitConnections() middleware: every instance's requests in progress per
 * key, this instance's share written on each request (one round trip to pass, one, off the request's
 * way, when it ends) and set again from its own counts every ttl/3 and when the engine is back, so
 * what a lost write left wrong is right again within that. @internal
 */
export class SharedGauges {
  readonly mode: SharedMode;
  readonly #scope: string;
  readonly #holder: string;
  readonly #limits: readonly GaugeLimit[];
  readonly #clock: TimerClock;
  /** Keys whose share could not be written, by limit: set again at the next refresh. */
  readonly #dirty: Array<Set<string>>;
  #timer: unknown;
  #closed = false;

  constructor(handle: SyncHandle, limits: readonly GaugeLimit[]) {
    const internals = syncInternals(handle);
    this.#clock = internals.clock;
    this.mode = new SharedMode(internals.transport, () => this.#clock.now());
    this.#scope = `limit_conn:${limits[0]!.name}`;
    this.#holder = internals.instance;
    this.#limits = limits;
    this.#dirty = limits.map(() => new Set());
    for (const l of limits) internals.board.provide(`limit_conn:${l.name}`, () => l.stats);
    this.mode.events.on('shared', () => this.refresh());
    internals.onClose(() => this.close());
    this.#schedule();
  }

  #checks(keys: readonly string[], value: (limit: GaugeLimit, key: string) => number): { applied: number[]; checks: GaugeCheck[] } {
    const applied: number[] = [];
    const checks: GaugeCheck[] = [];
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] === '') continue;
      const l = this.#limits[i]!;
      applied.push(i);
      checks.push({ key: `${l.name}:${keys[i]}`, value: value(l, keys[i]!) });
    }
    return { applied, checks };
  }

  /** One round trip: one more request for every limit with a key, if every one has room; the limit that refused, or -1. */
  async add(keys: readonly string[]): Promise<number> {
    const { applied, checks } = this.#checks(keys, (l) => l.max);
    const out = await this.mode.transport.gauges(this.#scope, this.#holder, checks, 'add', GAUGE_TTL_MS);
    this.mode.succeeded();
    return out[0]! > 0 ? (applied[out[0]! - 1] ?? -1) : -1;
  }

  /** A request that passed has ended: its share taken back now, or at the next refresh if that fails. */
  sub(keys: readonly string[]): void {
    if (!this.mode.shared) return this.stale(keys);
    const { checks } = this.#checks(keys, () => 0);
    this.mode.transport.gauges(this.#scope, this.#holder, checks, 'sub', GAUGE_TTL_MS).catch(() => this.stale(keys));
  }

  /**
   * A request the shared gauges did not count has ended (it passed on this process's zones while Redis
   * was away, and a refresh may have written it since): its keys' shares are set to this process's
   * counts now, or at the next refresh.
   */
  stale(keys: readonly string[]): void {
    const later = (): void => {
      keys.forEach((key, i) => {
        if (key !== '') this.#dirty[i]!.add(key);
      });
    };
    if (!this.mode.shared) return later();
    const { checks } = this.#checks(keys, (l, key) => l.zone.counts.get(key) ?? 0);
    this.mode.transport.gauges(this.#scope, this.#holder, checks, 'set', GAUGE_TTL_MS).catch(later);
  }

  /** Sets this instance's share of every key it counts (and of those a failed write left behind) to its own count. */
  refresh(): void {
    if (this.#closed || !this.mode.transport.connected) return;
    const checks: GaugeCheck[] = [];
    const written: Array<[number, string]> = [];
    this.#limits.forEach((l, i) => {
      const keys = new Set([...l.zone.counts.keys(), ...this.#dirty[i]!]);
      for (const key of keys) {
        checks.push({ key: `${l.name}:${key}`, value: l.zone.counts.get(key) ?? 0 });
        written.push([i, key]);
      }
    });
    for (let start = 0; start < checks.length; start += REFRESH_BATCH) {
      const batch = written.slice(start, start + REFRESH_BATCH);
      this.mode.transport.gauges(this.#scope, this.#holder, checks.slice(start, start + REFRESH_BATCH), 'set', GAUGE_TTL_MS).then(
        () => {
          for (const [i, key] of batch) this.#dirty[i]!.delete(key);
        },
        () => {},
      );
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.refresh();
      this.#schedule();
    }, GAUGE_TTL_MS / 3);
  }

  /** Stops refreshing (the sync handle closes). */
  close(): void {
    this.#closed = true;
    this.#clock.clearTimeout(this.#timer);
  }
}

/**
 * The `sync` option of limitRequests() and limitConnections(): a handle from sync(), with every
 * limit named (the name is the zone every instance shares).
 * @internal
 */
export function sharedOption(value: unknown, unnamed: string | undefined): SyncHandle {
  if (!isSyncHandle(value)) throw new InvalidOptionError('sync', 'a handle from sync()', value);
  if (unnamed !== undefined) throw new InvalidOptionError(unnamed, 'a zone name: with "sync", each limit names the zone the instances share', undefined);
  return value;
}
