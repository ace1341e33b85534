// The requests limitRequests() delays: one queue per middleware, ordered by the time each is due,
// on one timer set for the earliest. A request whose client goes away while it waits leaves the
// queue at once, its listener and place taken back.
import type { ServerResponse } from 'node:http';
import { unrefClock } from '../core/clock.ts';

/**
 * The time and timers a limit runs on: the real ones by default; a manual clock in tests, so delays
 * are checked without waiting for them.
 *
 * @example
 * ```ts
 * const clock: LimitClock = { now: () => performance.now(), setTimeout, clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };
 * ```
 */
export interface LimitClock {
  /** Milliseconds from an origin of the clock's choosing, never going back (`performance.now()`). */
  now(): number;
  /** Calls `fn` after `ms` milliseconds; returns a handle for {@link LimitClock.clearTimeout}. */
  setTimeout(fn: () => void, ms: number): unknown;
  /** Cancels a timer {@link LimitClock.setTimeout} returned. */
  clearTimeout(handle: unknown): void;
}

/** The real clock: `performance.now()` and unref'd timers (a waiting request's socket keeps the process alive, not the timer). @internal */
export const realLimitClock: LimitClock = { ...unrefClock, now: () => performance.now() };

/**
 * Whether the response is over: ended, or its client gone (an HTTP/1.x response destroyed, an
 * HTTP/2 compatibility response whose stream is, which has no `destroyed` of its own). A request a
 * limit decided on after an await (Redis) may find its client gone: it holds nothing then. @internal
 */
export function responseOver(res: ServerResponse): boolean {
  return res.writableEnded || res.destroyed === true || (res as { stream?: { destroyed?: boolean } }).stream?.destroyed === true;
}

/** One delayed request: when it is due, what releases it, and the listener that drops it when its client goes. */
class Waiter {
  readonly due: number;
  readonly res: ServerResponse;
  readonly go: () => void;
  readonly queue: DelayQueue;
  constructor(queue: DelayQueue, due: number, res: ServerResponse, go: () => void) {
    this.queue = queue;
    this.due = due;
    this.res = res;
    this.go = go;
  }
  /** The client went away while the request waited: out of the queue at once. */
  readonly gone = (): void => {
    this.queue.drop(this);
  };
}

/** Delayed requests, released in the order they fall due, on one timer. @internal */
export class DelayQueue {
  readonly #clock: LimitClock;
  /** Ordered by `due`; equal dues in arrival order. */
  readonly #waiting: Waiter[] = [];
  #timer: unknown;
  /** When the timer is set to fire, `Infinity` when no timer is set. */
  #timerAt = Number.POSITIVE_INFINITY;

  constructor(clock: LimitClock) {
    this.#clock = clock;
  }

  /** Requests waiting now. */
  get size(): number {
    return this.#waiting.length;
  }

  /** Runs `go` once `ms` have passed, unless `res` closes first (the client went away: then, or already, nothing runs). */
  add(ms: number, res: ServerResponse, go: () => void): void {
    if (responseOver(res)) return;
    const waiter = new Waiter(this, this.#clock.now() + ms, res, go);
    const list = this.#waiting;
    // Binary search for the first waiter due later: equal dues keep their arrival order.
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.due <= waiter.due) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, waiter);
    res.once('close', waiter.gone);
    if (lo === 0) this.#arm();
  }

  /** Takes `waiter` out (its client went away). */
  drop(waiter: Waiter): void {
    const i = this.#waiting.indexOf(waiter);
    if (i === -1) return;
    this.#waiting.splice(i, 1);
    if (i === 0) this.#arm();
  }

  /** Sets the one timer for the earliest waiter, or clears it when none waits. */
  #arm(): void {
    const first = this.#waiting[0];
    const at = first === undefined ? Number.POSITIVE_INFINITY : first.due;
    if (at === this.#timerAt) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = at;
    if (first === undefined) return;
    this.#timer = this.#clock.setTimeout(this.#fire, Math.max(1, Math.ceil(at - this.#clock.now())));
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const now = this.#clock.now();
    const list = this.#waiting;
    let n = 0;
    while (n < list.length && list[n]!.due <= now) n++;
    const due = list.splice(0, n);
    this.#arm();
    for (const waiter of due) {
      waiter.res.removeListener('close', waiter.gone);
      waiter.go();
    }
  };
}
