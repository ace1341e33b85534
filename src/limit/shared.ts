// limitRequests() with `sync`: every instance's requests go through the same buckets, kept by the
// sync engine (Redis) and decided there in one atomic step per request (Transport.buckets, nginx's
// arithmetic on Redis's clock). When the engine is lost, or a call fails, the middleware goes on at
// once with its own zones (each instance then limits on its own: never no limit, never an error),
// says so with a 'fallback' event, and tries the engine again with one request a second, going back
// to the shared buckets ('shared' event) as soon as one call goes through.
import { EventEmitter } from 'node:events';
import { InvalidOptionError } from '../core/errors.ts';
import { isSyncHandle, type SyncHandle, syncInternals } from '../sync/index.ts';
import type { Transport } from '../sync/transport.ts';
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

/** The shared buckets of one limitRequests() middleware, and whether to use them now. @internal */
export class SharedBuckets {
  readonly events = new EventEmitter<LimitEvents>();
  readonly #transport: Transport;
  readonly #scope: string;
  readonly #limits: readonly SharedLimit[];
  readonly #clock: LimitClock;
  #local = false;
  #retryAt = 0;
  #probing = false;

  constructor(handle: SyncHandle, limits: readonly SharedLimit[], clock: LimitClock) {
    const internals = syncInternals(handle);
    this.#transport = internals.transport;
    // On Redis Cluster the buckets of one scope share a hash slot: those of a middleware are under its first zone.
    this.#scope = `limit_req:${limits[0]!.name}`;
    this.#limits = limits;
    this.#clock = clock;
    // Each zone's counters on the statistics board, summed over the instances by monitor().
    for (const l of limits) internals.board.provide(`limit_req:${l.name}`, () => l.stats);
  }

  /** Whether this request goes to the shared buckets: yes while they answer; after a failure, one request a second. */
  ready(): boolean {
    if (!this.#transport.connected) {
      this.#fallBack(new Error('switchyard limit: the sync engine is disconnected'));
      return false;
    }
    if (!this.#local) return true;
    if (this.#probing || this.#clock.now() < this.#retryAt) return false;
    this.#probing = true;
    return true;
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
    const out = await this.#transport.buckets(this.#scope, checks);
    this.#probing = false;
    if (this.#local) {
      this.#local = false;
      this.events.emit('shared');
    }
    const excess = keys.map(() => -1);
    if (out[0]! > 0) return { rejected: applied[out[0]! - 1] ?? -1, excess };
    for (let j = 0; j < applied.length; j++) excess[applied[j]!] = out[j + 1]!;
    return { rejected: -1, excess };
  }

  /** A call failed: this instance's own zones for the next second at least. */
  failed(err: unknown): void {
    this.#probing = false;
    this.#retryAt = this.#clock.now() + RETRY_MS;
    this.#fallBack(err instanceof Error ? err : new Error(String(err)));
  }

  #fallBack(err: Error): void {
    if (this.#local) return;
    this.#local = true;
    this.events.emit('fallback', err);
  }
}

/**
 * The `sync` option of limitRequests(): a handle from sync(), with every limit named (the name is
 * the zone every instance shares).
 * @internal
 */
export function sharedOption(value: unknown, limits: readonly SharedLimit[], unnamed: string | undefined, clock: LimitClock): SharedBuckets {
  if (!isSyncHandle(value)) throw new InvalidOptionError('sync', 'a handle from sync()', value);
  if (unnamed !== undefined) throw new InvalidOptionError(unnamed, 'a zone name: with "sync", each limit names the zone the instances share', undefined);
  return new SharedBuckets(value, limits, clock);
}
