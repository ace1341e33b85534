/**
 * The tables `cache()` keeps per process: the fills in flight by key (nginx `proxy_cache_lock`,
 * `proxy_cache_lock_age` and `updating`), and the requests counted per key (nginx
 * `proxy_cache_min_uses`).
 * @module
 */

/** A fill in flight: one request populating or updating a key. */
export interface Fill {
  /** When it began (the cache's clock). */
  readonly since: number;
  /** Settles when it is over, stored or not. */
  readonly done: Promise<void>;
  /** Ends it (once it is over); the key is free again. */
  release(): void;
}

/** The fills in flight, one per key at most: the newest claim of a key is its fill. */
export class FillTable {
  readonly #fills = new Map<string, Fill>();
  readonly #now: () => number;

  constructor(now: () => number) {
    this.#now = now;
  }

  /** The fill in flight for `key`, if any. */
  get(key: string): Fill | undefined {
    return this.#fills.get(key);
  }

  /** Records a fill of `key` starting now; released, it leaves the table unless a newer one took its place. */
  claim(key: string): Fill {
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    const fills = this.#fills;
    const fill: Fill = {
      since: this.#now(),
      done,
      release() {
        if (fills.get(key) === fill) fills.delete(key);
        resolve();
      },
    };
    fills.set(key, fill);
    return fill;
  }
}

/** Most keys {@link UseCounter} remembers; the least recently counted are forgotten first. */
export const USES_LIMIT = 10_000;

/** Requests counted per key, for nginx's `min_uses`: at most {@link USES_LIMIT} keys. */
export class UseCounter {
  readonly #uses = new Map<string, number>();
  readonly #minUses: number;

  constructor(minUses: number) {
    this.#minUses = minUses;
  }

  /** Counts one more request for `key`; true once `minUses` requests were counted (always with `minUses` 1). */
  use(key: string): boolean {
    if (this.#minUses <= 1) return true;
    const uses = this.#uses;
    const n = (uses.get(key) ?? 0) + 1;
    uses.delete(key);
    uses.set(key, n);
    if (uses.size > USES_LIMIT) uses.delete(uses.keys().next().value!);
    return n >= this.#minUses;
  }
}

/** Resolves true when `done` settles within `ms`, else false; leaves no timer behind. */
export function waitUntil(done: Promise<void>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms, false);
    void done.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
