/**
 * The circuit breaker of the fail-open store wrapper: a store that keeps failing is marked down and
 * skipped at once, and probed in the background, one probe at a time, until it answers.
 * @module
 */
import type { Duration } from '../core/duration.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { durationOption, integerOption, objectOption } from '../core/options.ts';

/** Default {@link StoreBreakerOptions.failures}: 3 failures in a row mark a store down. */
export const DEFAULT_BREAKER_FAILURES = 3;
/** Default {@link StoreBreakerOptions.probeDelay}: 500 ms before the first probe of a store marked down. */
export const DEFAULT_PROBE_DELAY = '500ms';
/** Default {@link StoreBreakerOptions.maxProbeDelay}: at most 10 s between probes. */
export const DEFAULT_MAX_PROBE_DELAY = '10s';

/** Every key of {@link StoreBreakerOptions}. */
const BREAKER_OPTIONS = ['failures', 'probeDelay', 'maxProbeDelay'] as const satisfies ReadonlyArray<keyof StoreBreakerOptions>;

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
  failures?: number | undefined;
  /**
   * Wait before the first probe of a store marked down; doubled after each failed probe.
   * @default DEFAULT_PROBE_DELAY ('500ms')
   */
  probeDelay?: Duration | undefined;
  /**
   * Longest wait between two probes.
   * @default DEFAULT_MAX_PROBE_DELAY ('10s')
   */
  maxProbeDelay?: Duration | undefined;
}

/** The breaker's state: `'closed'` (the store is used), `'open'` (skipped), `'half-open'` (skipped, a probe in flight). */
export type StoreBreakerState = 'closed' | 'open' | 'half-open';

interface BreakerSettings {
  failures: number;
  probeDelay: number;
  maxProbeDelay: number;
}

/** What the breaker asks of the store it guards. */
export interface BreakerHooks<E> {
  /** Reads the store once; resolves true when it answered. Never rejects. */
  probe(): Promise<boolean>;
  /** The breaker opened, after `error`, the failure that reached the count. */
  down(error: E): void;
  /** A probe succeeded: the breaker closed. */
  up(): void;
}

function resolveBreaker(options: StoreBreakerOptions | false | undefined): BreakerSettings | undefined {
  if (options === false) return undefined;
  const o = objectOption(options, 'breaker', BREAKER_OPTIONS, 'an object or false', true) as StoreBreakerOptions;
  const failures = integerOption(o.failures, 'breaker.failures', DEFAULT_BREAKER_FAILURES, { min: 1 });
  const probeDelay = durationOption(o.probeDelay, 'breaker.probeDelay', DEFAULT_PROBE_DELAY, true);
  const maxProbeDelay =
    o.maxProbeDelay === undefined
      ? Math.max(durationOption(undefined, 'breaker.maxProbeDelay', DEFAULT_MAX_PROBE_DELAY), probeDelay)
      : durationOption(o.maxProbeDelay, 'breaker.maxProbeDelay', DEFAULT_MAX_PROBE_DELAY);
  if (maxProbeDelay < probeDelay)
    throw new InvalidOptionError('breaker.maxProbeDelay', `a duration of at least probeDelay (${probeDelay} ms)`, o.maxProbeDelay);
  return Object.freeze({ failures, probeDelay, maxProbeDelay });
}

/** The value {@link CircuitBreaker.tripped} resolves with. */
export const TRIPPED: unique symbol = Symbol('breaker opened');

/**
 * Counts a store's failures in a row; the one that reaches `failures` opens it. While open, the
 * store is skipped, and probed after `probeDelay`, then twice as long after each failed probe (at
 * most `maxProbeDelay`, with up to a tenth more so that gateways sharing a store do not probe it in
 * step); the first probe that succeeds closes it. Turned off (`breaker: false`), it never opens.
 * Its timers never keep the process alive.
 */
export class CircuitBreaker<E> {
  readonly #settings: BreakerSettings | undefined;
  readonly #hooks: BreakerHooks<E>;
  #state: StoreBreakerState = 'closed';
  #failures = 0;
  #probeDelay = 0;
  #probeTimer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** Resolves when the breaker opens: operations still waiting on the store give up then. */
  #tripped!: Promise<typeof TRIPPED>;
  #trip!: () => void;

  /** Validates `options` (option paths `breaker.*`). */
  constructor(options: StoreBreakerOptions | false | undefined, hooks: BreakerHooks<E>) {
    this.#settings = resolveBreaker(options);
    this.#hooks = hooks;
    this.#arm();
  }

  /** `'closed'` while the store is used, `'open'` while it is skipped, `'half-open'` while a probe is in flight. */
  get state(): StoreBreakerState {
    return this.#state;
  }

  /** A promise that resolves with {@link TRIPPED} when the breaker next opens. */
  get tripped(): Promise<typeof TRIPPED> {
    return this.#tripped;
  }

  /** An operation succeeded: the count starts again. */
  succeeded(): void {
    this.#failures = 0;
  }

  /** Counts a failure; the one that reaches `failures` opens the breaker. */
  failed(error: E): void {
    const settings = this.#settings;
    if (settings === undefined || this.#stopped || this.#state !== 'closed') return;
    if (++this.#failures < settings.failures) return;
    this.#state = 'open';
    this.#probeDelay = settings.probeDelay;
    this.#schedule();
    this.#trip();
    this.#hooks.down(error);
  }

  /** Stops probing for good (the store was disconnected). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
  }

  #arm(): void {
    this.#tripped = new Promise((resolve) => {
      this.#trip = () => resolve(TRIPPED);
    });
  }

  #schedule(): void {
    if (this.#stopped) return;
    const delay = this.#probeDelay * (1 + Math.random() / 10);
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = undefined;
      this.#probe().catch(() => undefined);
    }, delay);
    this.#probeTimer.unref();
  }

  async #probe(): Promise<void> {
    if (this.#stopped || this.#state !== 'open') return;
    this.#state = 'half-open';
    const answered = await this.#hooks.probe();
    if (this.#stopped) return;
    if (answered) {
      this.#arm();
      this.#state = 'closed';
      this.#failures = 0;
      this.#hooks.up();
      return;
    }
    this.#state = 'open';
    this.#probeDelay = Math.min(this.#probeDelay * 2, this.#settings!.maxProbeDelay);
    this.#schedule();
  }
}
