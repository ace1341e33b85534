/**
 * Timers a background task runs on (health checks, leases): the real ones by default, a manual
 * clock in tests so intervals and TTLs run without sleeping.
 * @internal
 */
export interface TimerClock {
  /** Milliseconds since an origin of the clock's choosing. */
  now(): number;
  /** Calls `fn` after `ms` milliseconds; returns a handle for {@link TimerClock.clearTimeout}. */
  setTimeout(fn: () => void, ms: number): unknown;
  /** Cancels a timer {@link TimerClock.setTimeout} returned. */
  clearTimeout(handle: unknown): void;
}

/** The real timers, unref'd: a background task never keeps the process alive by itself. @internal */
export const unrefClock: TimerClock = {
  now: Date.now,
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};
