// The state of one limit_req zone in one process: nginx's leaky bucket in milli-requests
// (ngx_http_limit_req_module.c), per key, in a table of at most `maxKeys` states kept in LRU order
// as nginx's zone is. The states live in typed arrays indexed by slot, with the LRU order as a
// doubly linked list of slots, so a key costs its string, one Map entry and 36 bytes of arrays.
import { InvalidOptionError } from '../core/errors.ts';

/** Requests per second, or per minute, as nginx writes a rate: `'10r/s'`, `'30r/m'`. */
export type Rate = `${number}r/s` | `${number}r/m`;

/** The largest number of requests per second or minute a rate may name (its milli-requests stay exact). */
const MAX_RATE = 1_000_000_000;

/**
 * A rate in milli-requests per second, as nginx computes it: `rate * 1000 / scale` in integers
 * (`'30r/m'` is 500; `'1r/m'` is 16, not 16.67, so nginx's own rounding is kept).
 * @internal
 */
export function parseRate(value: unknown, path: string): number {
  const m = typeof value === 'string' ? /^([0-9]+)r\/([sm])$/.exec(value) : null;
  const n = m === null ? Number.NaN : Number(m[1]);
  if (m === null || !Number.isSafeInteger(n) || n <= 0 || n > MAX_RATE)
    throw new InvalidOptionError(path, "a rate such as '10r/s' or '30r/m' (a positive integer of requests per second or minute)", value);
  return Math.floor((n * 1000) / (m[2] === 's' ? 1 : 60));
}

/** What {@link RequestZone.lookup} found, as nginx's `NGX_OK`, `NGX_AGAIN`, `NGX_BUSY` and `NGX_ERROR`. @internal */
export const LOOKUP = { ok: 0, again: 1, busy: 2, error: 3 } as const;

/** How long a state must be idle, and drained, before a new key may take its place (nginx: 60 s). */
const IDLE_MS = 60_000;

/**
 * The states of one zone: per key, `excess` (milli-requests above the rate) and `last` (the ms of the
 * last accounted request), and `count`, the requests that looked the key up and are not accounted
 * yet (nginx's, which keeps the state from being evicted meanwhile).
 * @internal
 */
export class RequestZone {
  readonly name: string;
  /** Milli-requests per second. */
  readonly rate: number;
  readonly maxKeys: number;
  readonly #index = new Map<string, number>();
  #keys: Array<string | undefined> = [];
  #excess = new Float64Array(0);
  #last = new Float64Array(0);
  #count = new Int32Array(0);
  #prev = new Int32Array(0);
  #next = new Int32Array(0);
  /** Slots ever used (the arrays' used length); freed slots are on `#free`. */
  #used = 0;
  #free: number[] = [];
  /** Most and least recently used slot, -1 when empty. */
  #head = -1;
  #tail = -1;
  /** The excess the last {@link RequestZone.lookup} computed (nginx's `*ep`). */
  excess = 0;
  /** The slot the last lookup found or made. */
  slot = -1;

  constructor(name: string, rate: number, maxKeys: number) {
    this.name = name;
    this.rate = rate;
    this.maxKeys = maxKeys;
  }

  /** Keys held now. */
  get size(): number {
    return this.#index.size;
  }

  /** The excess and last time of `key`, for tests and the shared fallback; `undefined` when the zone does not hold it. */
  peek(key: string): { excess: number; last: number; count: number } | undefined {
    const slot = this.#index.get(key);
    if (slot === undefined) return undefined;
    return { excess: this.#excess[slot]!, last: this.#last[slot]!, count: this.#count[slot]! };
  }

  /**
   * nginx's `ngx_http_limit_req_lookup`: the key's excess after the time since its last request
   * drained it, plus this request (1000). Above `burst` (milli-requests) it is `busy` and nothing is
   * stored. Otherwise, with `account`, the excess is stored (`ok`); without (a limit that is not the
   * last of the request's), the state is held (`again`) until {@link RequestZone.account} or
   * {@link RequestZone.unlock}. A new key starts at excess 0. `error` when the table is full of states
   * still in use.
   */
  lookup(key: string, now: number, burst: number, account: boolean): number {
    let slot = this.#index.get(key);
    if (slot !== undefined) {
      this.#touch(slot);
      const ms = elapsed(now, this.#last[slot]!);
      let excess = this.#excess[slot]! - Math.floor((this.rate * ms) / 1000) + 1000;
      if (excess < 0) excess = 0;
      this.excess = excess;
      this.slot = slot;
      if (excess > burst) return LOOKUP.busy;
      if (account) {
        this.#excess[slot] = excess;
        if (ms !== 0) this.#last[slot] = now;
        return LOOKUP.ok;
      }
      this.#count[slot]!++;
      return LOOKUP.again;
    }
    this.excess = 0;
    this.#expire(now, 1);
    if (this.#index.size >= this.maxKeys) {
      this.#expire(now, 0);
      if (this.#index.size >= this.maxKeys) {
        this.slot = -1;
        return LOOKUP.error;
      }
    }
    slot = this.#alloc(key);
    this.slot = slot;
    this.#excess[slot] = 0;
    if (account) {
      this.#last[slot] = now;
      this.#count[slot] = 0;
      return LOOKUP.ok;
    }
    // nginx stores `last = 0` here, which its clock (ms since boot) puts so far back that accounting
    // drains the request to nothing: a new key starts at 0 whichever limit it is in. A clock that
    // starts near 0 (performance.now()) needs the distance spelled out.
    this.#last[slot] = Number.NEGATIVE_INFINITY;
    this.#count[slot] = 1;
    return LOOKUP.again;
  }

  /**
   * nginx's `ngx_http_limit_req_account` for one held state: drains and adds this request, stores the
   * excess, lets the state go. Returns the excess.
   */
  account(slot: number, now: number): number {
    const ms = elapsed(now, this.#last[slot]!);
    let excess = this.#excess[slot]! - Math.floor((this.rate * ms) / 1000) + 1000;
    if (excess < 0) excess = 0;
    if (ms !== 0) this.#last[slot] = now;
    this.#excess[slot] = excess;
    this.#count[slot]!--;
    return excess;
  }

  /** Lets a held state go unaccounted (another limit of the request rejected it). */
  unlock(slot: number): void {
    this.#count[slot]!--;
  }

  /**
   * nginx's `ngx_http_limit_req_expire`: from the least recently used end, deletes up to two states
   * idle for a minute and drained to zero; with `n = 0` first deletes the oldest whatever its state.
   * A state still held stops it.
   */
  #expire(now: number, n: number): void {
    while (n < 3) {
      const slot = this.#tail;
      if (slot === -1 || this.#count[slot] !== 0) return;
      if (n++ !== 0) {
        const ms = Math.abs(now - this.#last[slot]!);
        if (ms < IDLE_MS) return;
        if (this.#excess[slot]! - Math.floor((this.rate * ms) / 1000) > 0) return;
      }
      this.#delete(slot);
    }
  }

  #alloc(key: string): number {
    let slot = this.#free.pop();
    if (slot === undefined) {
      slot = this.#used++;
      if (slot >= this.#excess.length) this.#grow();
    }
    this.#keys[slot] = key;
    this.#index.set(key, slot);
    this.#prev[slot] = -1;
    this.#next[slot] = this.#head;
    if (this.#head !== -1) this.#prev[this.#head] = slot;
    this.#head = slot;
    if (this.#tail === -1) this.#tail = slot;
    return slot;
  }

  #grow(): void {
    const size = Math.min(this.maxKeys, Math.max(64, this.#excess.length * 2));
    const grow = <T extends Float64Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const b = make(size);
      b.set(a);
      return b;
    };
    this.#excess = grow(this.#excess, (n) => new Float64Array(n));
    this.#last = grow(this.#last, (n) => new Float64Array(n));
    this.#count = grow(this.#count, (n) => new Int32Array(n));
    this.#prev = grow(this.#prev, (n) => new Int32Array(n));
    this.#next = grow(this.#next, (n) => new Int32Array(n));
  }

  #unlink(slot: number): void {
    const prev = this.#prev[slot]!;
    const next = this.#next[slot]!;
    if (prev === -1) this.#head = next;
    else this.#next[prev] = next;
    if (next === -1) this.#tail = prev;
    else this.#prev[next] = prev;
  }

  /** Moves `slot` to the most recently used end. */
  #touch(slot: number): void {
    if (this.#head === slot) return;
    this.#unlink(slot);
    this.#prev[slot] = -1;
    this.#next[slot] = this.#head;
    this.#prev[this.#head] = slot;
    this.#head = slot;
  }

  #delete(slot: number): void {
    this.#unlink(slot);
    this.#index.delete(this.#keys[slot]!);
    this.#keys[slot] = undefined;
    this.#free.push(slot);
  }

  /** Forgets every state. */
  clear(): void {
    this.#index.clear();
    this.#keys = [];
    this.#used = 0;
    this.#free = [];
    this.#head = -1;
    this.#tail = -1;
  }
}

/**
 * Milliseconds since `last`, as nginx reads them: a clock that went back by up to a minute counts
 * as no time, further back as 1 ms.
 */
function elapsed(now: number, last: number): number {
  const ms = now - last;
  if (ms < -60_000) return 1;
  if (ms < 0) return 0;
  return ms;
}
