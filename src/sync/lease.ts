// A lease of issue 14: one holder per key across the instances (one prober per server and scope).
// The holder renews every TTL/3; a renewal refused or failed loses the lease at once, and so does a
// renewal that has not come back before the TTL measured from when it was sent (the engine may
// have handed the key to someone else by then). A non-holder tries to take the key at the same
// pace, so it takes over within TTL + TTL/3 of the holder's death.
import { randomUUID } from 'node:crypto';
import { type TimerClock, unrefClock } from '../core/clock.ts';
import type { Duration } from '../core/duration.ts';
import { durationOption } from '../core/options.ts';
import type { Transport } from './transport.ts';

/**
 * The timers a {@link Lease} runs on: the real ones (unref'd) by default; tests give their own.
 *
 * @example
 * ```ts
 * const clock: LeaseClock = { now: () => t, setTimeout: (fn, ms) => schedule(fn, t + ms), clearTimeout: (id) => cancel(id) };
 * ```
 */
export type LeaseClock = TimerClock;

/** Options of a {@link Lease}. */
export interface LeaseOptions {
  /** The engine the lease is held in. */
  transport: Transport;
  /** What is leased (e.g. `'<namespace>:probe:<pool>:<server>'`). */
  key: string;
  /** This holder's name; must differ between instances. @default a random UUID */
  holder?: string | undefined;
  /** How long a hold lasts without renewal. @default '3s' */
  ttl?: Duration | undefined;
  /** Timers and clock. @default the real ones, unref'd (a lease never keeps the process alive) */
  clock?: LeaseClock | undefined;
  /** Called with `true` when the lease is taken and `false` when it is lost or given up. */
  onChange?: ((held: boolean) => void) | undefined;
}

/** The default {@link LeaseOptions.ttl}. */
export const DEFAULT_LEASE_TTL: Duration = '3s';

/**
 * Holds one key of a {@link Transport} for this instance whenever nobody else does.
 *
 * @example
 * ```ts
 * const lease = new Lease({ transport, key: 'gw:probe:api:10.0.0.1:80', ttl: '3s', onChange: (held) => (probing = held) });
 * lease.start();
 * // ...
 * await lease.stop();
 * ```
 */
export class Lease {
  /** This holder's name. */
  readonly holder: string;
  /** The TTL in milliseconds. */
  readonly ttl: number;
  /** The transport, the key and `onChange`, as given. */
  readonly #o: LeaseOptions;
  readonly #clock: LeaseClock;
  /** Until when the lease is held (by the clock), or `undefined` when it is not. */
  #until: number | undefined;
  #timer: unknown;
  #busy = false;
  #stopped = true;

  /** @throws InvalidOptionError when `ttl` is not a positive duration. */
  constructor(options: LeaseOptions) {
    this.#o = options;
    this.holder = options.holder ?? randomUUID();
    this.ttl = durationOption(options.ttl, 'ttl', DEFAULT_LEASE_TTL, true);
    this.#clock = options.clock ?? unrefClock;
  }

  /** Whether this instance holds the key now. */
  get held(): boolean {
    return this.#until !== undefined && this.#clock.now() < this.#until;
  }

  /** Starts trying to take the key, then keeps it renewed. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#tick();
  }

  /** Stops the timers and lets go of the key if held (a release that fails is left to expire). */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#until === undefined) return;
    this.#set(undefined);
    await this.#o.transport.release(this.#o.key, this.holder).catch(() => {});
  }

  #set(until: number | undefined): void {
    const was = this.#until !== undefined;
    this.#until = until;
    if (was !== (until !== undefined)) this.#o.onChange?.(until !== undefined);
  }

  #tick(): void {
    if (this.#stopped) return;
    this.#timer = this.#clock.setTimeout(() => this.#tick(), Math.max(1, Math.floor(this.ttl / 3)));
    // A renewal still out when the hold ends: the hold is over whatever it answers.
    if (this.#until !== undefined && this.#clock.now() >= this.#until) this.#set(undefined);
    if (this.#busy) return;
    this.#busy = true;
    const sent = this.#clock.now();
    const holding = this.#until !== undefined;
    const op = holding ? this.#o.transport.renew(this.#o.key, this.holder, this.ttl) : this.#o.transport.acquire(this.#o.key, this.holder, this.ttl);
    op.then(
      (ok) => this.#settle(ok, sent, holding),
      () => this.#settle(false, sent, holding),
    );
  }

  #settle(ok: boolean, sent: number, holding: boolean): void {
    this.#busy = false;
    if (this.#stopped) {
      // Taken after stop() was called: give it back.
      if (ok && !holding) this.#o.transport.release(this.#o.key, this.holder).catch(() => {});
      return;
    }
    // A renewal answered after the hold lapsed locally does not revive it: take the key afresh next tick.
    if (holding && this.#until === undefined) return;
    const until = sent + this.ttl;
    this.#set(ok && this.#clock.now() < until ? until : undefined);
  }
}
