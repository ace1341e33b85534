// What the cluster-wide state (issue 14) needs from its engine, and an in-process engine for tests.
// The Redis transport (redis.ts) maps each operation to one command or Lua script: `version` to
// INCR (raised to a floor), `put` to a compare-version HSET plus PUBLISH, `snapshot` to HGETALL,
// `acquire` / `renew` / `release` to SET NX PX and compare-and-set scripts, `broadcast` to
// PUBLISH, `increment` to INCRBY with an expiry set on creation, `remove` to DEL, `buckets` to a
// script applying nginx's limit_req arithmetic to several keys at once on the engine's clock, `gauges`
// to a script counting requests in progress per key and instance (limit_conn).

/**
 * One versioned record of a scope (a server of a pool, later other kinds of state): what
 * {@link Transport.put} stores and publishes, {@link Transport.subscribe} delivers and
 * {@link Transport.snapshot} returns.
 *
 * @example
 * ```ts
 * const entry: VersionedEntry = { key: '10.0.0.1:80', version: 7, origin: 'gw-1', value: '{"weight":2}' };
 * ```
 */
export interface VersionedEntry {
  /** What the record is about, unique in its scope. */
  readonly key: string;
  /** Assigned by {@link Transport.version}; a higher one wins, whatever the host clocks say. */
  readonly version: number;
  /** The instance that wrote it (so an instance recognises its own echoes). */
  readonly origin: string;
  /** The record, serialized (JSON): what crosses the transport is always a string. */
  readonly value: string;
}

/**
 * One leaky bucket of {@link Transport.buckets}: nginx's `limit_req` state of one key of one zone.
 *
 * @example
 * ```ts
 * const check: BucketCheck = { key: 'per_ip:10.0.0.7', rate: 10_000, burst: 20_000 };
 * ```
 */
export interface BucketCheck {
  /** The bucket's name, unique in its scope (`<zone>:<key>`). */
  readonly key: string;
  /** How fast the bucket drains, in milli-requests per second (nginx's `ctx->rate`): a positive safe integer. */
  readonly rate: number;
  /** The most excess the bucket takes, in milli-requests (nginx's `limit->burst`): a safe integer >= 0. */
  readonly burst: number;
}

/**
 * nginx's limit_req arithmetic on buckets kept by an engine, one atomic step for all of `checks`
 * (what Redis does in one script): each bucket's excess is drained by the time since its last
 * request, on the engine's clock, plus this request (1000); a bucket never seen, or one drained long
 * enough to be forgotten, starts at 0. If one is above its burst, nothing is stored and the result is
 * `[i + 1, excess]` (the first such bucket `i`); else every excess is stored and the result is
 * `[0, excess_0, excess_1, ...]`. Shared by the in-memory engine and the tests of the Redis script.
 * @internal
 */
export function leak(
  checks: readonly BucketCheck[],
  now: number,
  read: (key: string) => { excess: number; last: number } | undefined,
  write: (key: string, excess: number, last: number, ttlMs: number) => void,
): number[] {
  const out = [0];
  const lasts: number[] = [];
  for (const [i, c] of checks.entries()) {
    const state = read(c.key);
    let excess = 0;
    let last = now;
    if (state !== undefined) {
      let ms = now - state.last;
      if (ms < -60_000) ms = 1;
      else if (ms < 0) ms = 0;
      excess = Math.max(0, state.excess - Math.floor((c.rate * ms) / 1000) + 1000);
      if (excess > c.burst) return [i + 1, excess];
      if (ms === 0) last = state.last;
    }
    out.push(excess);
    lasts.push(last);
  }
  for (const [i, c] of checks.entries()) write(c.key, out[i + 1]!, lasts[i]!, bucketTtl(out[i + 1]!, c.rate));
  return out;
}

/**
 * How long a bucket is kept after a request left it at `excess`: until a further request would
 * find it drained to nothing, which is what a bucket never seen gives (nginx: 0), so forgetting it
 * then changes no decision.
 * @internal
 */
export function bucketTtl(excess: number, rate: number): number {
  return Math.floor(((excess + 1000) * 1000) / rate) + 1;
}

/**
 * Checks the arguments of {@link Transport.buckets}, the same way on every engine. Throws a RangeError.
 * @internal
 */
export function checkBuckets(checks: readonly BucketCheck[]): void {
  if (!Array.isArray(checks) || checks.length === 0) throw new RangeError('switchyard sync: buckets takes at least one bucket');
  for (const c of checks)
    if (typeof c.key !== 'string' || !Number.isSafeInteger(c.rate) || c.rate <= 0 || !Number.isSafeInteger(c.burst) || c.burst < 0)
      throw new RangeError('switchyard sync: a bucket has a key, a positive integer rate and an integer burst >= 0');
}

/**
 * One gauge of {@link Transport.gauges}: the requests in progress of one key of one zone, counted per
 * holder (instance), each holder's count expiring unless it is written again.
 *
 * @example
 * ```ts
 * const check: GaugeCheck = { key: 'conn_per_ip:10.0.0.7', value: 10 };
 * ```
 */
export interface GaugeCheck {
  /** The gauge's name, unique in its scope (`<zone>:<key>`). */
  readonly key: string;
  /** With `'add'`: the most the gauge may hold (nginx's `limit_conn` number); with `'set'`: the holder's count; unused with `'sub'`. */
  readonly value: number;
}

/** What {@link Transport.gauges} does to the holder's count of every gauge: one more (if all have room), one less, or set to each check's value. */
export type GaugeOp = 'add' | 'sub' | 'set';

/** One holder's count in a gauge, and when it expires. @internal */
export interface GaugeShare {
  count: number;
  until: number;
}

/**
 * The arithmetic of {@link Transport.gauges} on an engine's data, shared by the in-memory engine and
 * mirrored line for line by the Redis script: each gauge's total is the sum of its holders' counts
 * that have not expired (expired ones are dropped). With `'add'`, if a gauge's total is already at its
 * `value`, nothing changes and the result is `[i + 1, total]` (the first such gauge `i`); otherwise
 * the holder's count of every gauge is changed (a count of 0 is dropped) and lives `ttlMs` more, and
 * the result is `[0, total_0, total_1, ...]` after the change.
 * @internal
 */
export function tally(
  checks: readonly GaugeCheck[],
  holder: string,
  op: GaugeOp,
  ttlMs: number,
  now: number,
  shares: (key: string) => Map<string, GaugeShare>,
): number[] {
  const totals: number[] = [];
  const mine: number[] = [];
  for (const [i, c] of checks.entries()) {
    const all = shares(c.key);
    let total = 0;
    for (const [h, share] of all) {
      if (share.until <= now) all.delete(h);
      else total += share.count;
    }
    if (op === 'add' && total >= c.value) return [i + 1, total];
    totals.push(total);
    mine.push(all.get(holder)?.count ?? 0);
  }
  const out = [0];
  for (const [i, c] of checks.entries()) {
    const n = op === 'add' ? mine[i]! + 1 : op === 'sub' ? Math.max(0, mine[i]! - 1) : c.value;
    out.push(totals[i]! - mine[i]! + n);
    const all = shares(c.key);
    if (n <= 0) all.delete(holder);
    else all.set(holder, { count: n, until: now + ttlMs });
  }
  return out;
}

/** Checks the arguments of {@link Transport.gauges}, the same way on every engine. Throws a RangeError. @internal */
export function checkGauges(checks: readonly GaugeCheck[], holder: string, op: GaugeOp, ttlMs: number): void {
  if (!Array.isArray(checks) || checks.length === 0) throw new RangeError('switchyard sync: gauges takes at least one gauge');
  if (typeof holder !== 'string' || holder === '' || !['add', 'sub', 'set'].includes(op))
    throw new RangeError('switchyard sync: gauges takes a holder and an op');
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw new RangeError('switchyard sync: a gauge lives a positive integer of milliseconds');
  for (const c of checks)
    if (typeof c.key !== 'string' || !Number.isSafeInteger(c.value) || c.value < 0)
      throw new RangeError('switchyard sync: a gauge has a key and an integer value >= 0');
}

/**
 * The operations the sync logic runs on a shared engine. Every operation rejects while the
 * transport is disconnected (fail fast: nothing is queued and replayed later).
 *
 * @example
 * ```ts
 * const version = await transport.version('pool:api', 0);
 * await transport.put('pool:api', { key: 'a:80', version, origin: 'gw-1', value: '{}' });
 * ```
 */
export interface Transport {
  /** Whether operations can reach the engine now. */
  readonly connected: boolean;
  /** Calls `listener` on every connection change; returns the function that stops it. */
  onConnection(listener: (connected: boolean) => void): () => void;
  /**
   * The next version of `scope`: one more than the last one handed out, and above `floor`
   * (an engine that lost its data must not hand out versions the instances already know).
   */
  version(scope: string, floor: number): Promise<number>;
  /**
   * Stores `entry` in `scope` unless the stored one for its key has the same or a higher version,
   * and when stored, publishes it to every subscriber of `scope`, the writer included.
   * Resolves with whether it was stored.
   */
  put(scope: string, entry: VersionedEntry): Promise<boolean>;
  /** Calls `handler` with every entry published in `scope` from now on; returns the function that stops it. */
  subscribe(scope: string, handler: (entry: VersionedEntry) => void): () => void;
  /** Every entry stored in `scope` (tombstones included). */
  snapshot(scope: string): Promise<VersionedEntry[]>;
  /** Takes `key` for `holder` for `ttlMs` if nobody holds it (or `holder` already does); resolves with whether `holder` holds it. */
  acquire(key: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Extends `holder`'s hold on `key` by `ttlMs`; resolves `false` when `holder` no longer holds it. */
  renew(key: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Lets go of `key` if `holder` holds it. */
  release(key: string, holder: string): Promise<void>;
  /** Sends `message` to every listener of `channel` on every instance, this one's included; nothing is stored. Rejects while disconnected. */
  broadcast(channel: string, message: string): Promise<void>;
  /** Calls `handler` with every message broadcast on `channel` from now on; returns the function that stops it. */
  listen(channel: string, handler: (message: string) => void): () => void;
  /**
   * Adds `by` to the counter `key` and resolves with its new value; a counter created by this call
   * expires `ttlMs` after (later increments do not extend it). `by` is a safe integer and `ttlMs`
   * positive, or it rejects with a RangeError.
   */
  increment(key: string, by: number, ttlMs: number): Promise<number>;
  /** Deletes a counter. */
  remove(key: string): Promise<void>;
  /**
   * Applies nginx's limit_req arithmetic ({@link leak}) to the buckets `checks` of `scope` in one
   * atomic step on the engine's clock (one round trip). On Redis Cluster, the buckets of one scope
   * share a hash slot. Rejects with a RangeError on invalid checks.
   */
  buckets(scope: string, checks: readonly BucketCheck[]): Promise<number[]>;
  /**
   * Changes `holder`'s count of the gauges `checks` of `scope` in one atomic step on the engine's
   * clock ({@link tally}): `'add'` one more in each if every gauge is below its `value` (else none),
   * `'sub'` one less, `'set'` to each check's `value`; the holder's counts expire `ttlMs` after this
   * call unless written again. On Redis Cluster, the gauges of one scope share a hash slot. Rejects
   * with a RangeError on invalid arguments.
   */
  gauges(scope: string, holder: string, checks: readonly GaugeCheck[], op: GaugeOp, ttlMs: number): Promise<number[]>;
}

/**
 * Checks the arguments of {@link Transport.increment}, the same way on every engine: `by` a safe
 * integer (Redis counts in integers), `ttlMs` a positive finite number. Throws a RangeError.
 * @internal
 */
export function checkIncrement(by: number, ttlMs: number): void {
  if (!Number.isSafeInteger(by)) throw new RangeError(`switchyard sync: a counter is incremented by a safe integer, not ${String(by)}`);
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0)
    throw new RangeError(`switchyard sync: a counter's lifetime is a positive number of milliseconds, not ${String(ttlMs)}`);
}

/** The clock a {@link MemoryHub} measures lease and counter lifetimes with. */
export interface HubClock {
  now(): number;
}

/** What a {@link MemoryHub} holds: the engine's data. */
interface HubData {
  /** The version counters of the scopes. */
  counters: Map<string, number>;
  scopes: Map<string, Map<string, VersionedEntry>>;
  leases: Map<string, { holder: string; until: number }>;
  /** The counters of {@link Transport.increment}, each with the time it expires at. */
  tallies: Map<string, { value: number; until: number }>;
  /** The buckets of {@link Transport.buckets} by scope and key, each with the time it is forgotten at. */
  buckets: Map<string, { excess: number; last: number; until: number }>;
  /** The gauges of {@link Transport.gauges} by scope and key: each holder's share. */
  gauges: Map<string, Map<string, GaugeShare>>;
}

const emptyData = (): HubData => ({ counters: new Map(), scopes: new Map(), leases: new Map(), tallies: new Map(), buckets: new Map(), gauges: new Map() });

/**
 * An in-process engine shared by several {@link MemoryTransport}s (one per simulated instance),
 * for tests: it can go down and come back with or without its data, and hold published messages
 * back to deliver them late or out of order.
 *
 * @example
 * ```ts
 * const hub = new MemoryHub();
 * const a = hub.connect(), b = hub.connect();
 * hub.down();
 * hub.up({ keepData: false }); // like a Redis restarted empty
 * ```
 */
export class MemoryHub {
  #data: HubData = emptyData();
  readonly #clients = new Set<MemoryTransport>();
  readonly #clock: HubClock;
  #held: Array<() => void> | undefined;

  /** @param clock - measures lease and counter lifetimes. @default `{ now: Date.now }` */
  constructor(clock: HubClock = { now: Date.now }) {
    this.#clock = clock;
  }

  /** A new client of this engine, connected. */
  connect(): MemoryTransport {
    const client = new MemoryTransport(this);
    this.#clients.add(client);
    return client;
  }

  /** Simulates an outage of the engine: every client disconnects. */
  down(): void {
    for (const client of this.#clients) client.disconnect();
  }

  /** Ends an outage: the engine comes back with its data, or empty (`keepData: false`), and every client reconnects. */
  up(options: { keepData?: boolean } = {}): void {
    if (options.keepData === false) this.#data = emptyData();
    for (const client of this.#clients) client.reconnect();
  }

  /** From now on, published entries and broadcast messages wait in a queue until {@link MemoryHub.release}. */
  hold(): void {
    this.#held ??= [];
  }

  /**
   * Delivers the messages held since {@link MemoryHub.hold}, in the order `order` gives
   * (publication order by default; `(q) => q.reverse()` reorders them), and stops holding.
   */
  release(order: <T>(queue: T[]) => T[] = (q) => q): void {
    const queue = this.#held ?? [];
    this.#held = undefined;
    for (const deliver of order(queue)) deliver();
  }

  /** @internal the operations of {@link MemoryTransport}, run on the engine's data. */
  version(scope: string, floor: number): number {
    const next = Math.max(this.#data.counters.get(scope) ?? 0, floor) + 1;
    this.#data.counters.set(scope, next);
    return next;
  }

  /** @internal */
  put(scope: string, entry: VersionedEntry): boolean {
    let entries = this.#data.scopes.get(scope);
    if (entries === undefined) {
      entries = new Map();
      this.#data.scopes.set(scope, entries);
    }
    const stored = entries.get(entry.key);
    if (stored !== undefined && stored.version >= entry.version) return false;
    const copy = { ...entry };
    entries.set(entry.key, copy);
    for (const client of this.#clients) this.#send(() => client.deliver(scope, { ...copy }));
    return true;
  }

  /** Delivers in a later microtask, or queues while the hub holds messages back. */
  #send(deliver: () => void): void {
    if (this.#held) this.#held.push(deliver);
    else queueMicrotask(deliver);
  }

  /** @internal */
  broadcast(channel: string, message: string): void {
    for (const client of this.#clients) this.#send(() => client.hear(channel, message));
  }

  /** @internal */
  increment(key: string, by: number, ttlMs: number): number {
    const now = this.#clock.now();
    const tally = this.#data.tallies.get(key);
    if (tally !== undefined && tally.until > now) return (tally.value += by);
    this.#data.tallies.set(key, { value: by, until: now + ttlMs });
    return by;
  }

  /** @internal */
  remove(key: string): void {
    this.#data.tallies.delete(key);
  }

  /** @internal */
  buckets(scope: string, checks: readonly BucketCheck[]): number[] {
    const now = Math.floor(this.#clock.now());
    const buckets = this.#data.buckets;
    const name = (key: string): string => `${scope}\n${key}`;
    return leak(
      checks,
      now,
      (key) => {
        const b = buckets.get(name(key));
        return b !== undefined && b.until > now ? b : undefined;
      },
      (key, excess, last, ttl) => {
        buckets.set(name(key), { excess, last, until: now + ttl });
      },
    );
  }

  /** @internal */
  gauges(scope: string, holder: string, checks: readonly GaugeCheck[], op: GaugeOp, ttlMs: number): number[] {
    const gauges = this.#data.gauges;
    const out = tally(checks, holder, op, ttlMs, Math.floor(this.#clock.now()), (key) => {
      const name = `${scope}\n${key}`;
      let shares = gauges.get(name);
      if (shares === undefined) {
        shares = new Map();
        gauges.set(name, shares);
      }
      return shares;
    });
    for (const c of checks) if (gauges.get(`${scope}\n${c.key}`)?.size === 0) gauges.delete(`${scope}\n${c.key}`);
    return out;
  }

  /** @internal */
  snapshot(scope: string): VersionedEntry[] {
    return [...(this.#data.scopes.get(scope)?.values() ?? [])].map((e) => ({ ...e }));
  }

  /** @internal */
  lease(op: 'acquire' | 'renew' | 'release', key: string, holder: string, ttlMs: number): boolean {
    const now = this.#clock.now();
    const lease = this.#data.leases.get(key);
    const live = lease !== undefined && lease.until > now;
    const mine = live && lease.holder === holder;
    if (op === 'release') {
      if (mine) this.#data.leases.delete(key);
      return mine;
    }
    if (op === 'renew' ? !mine : live && !mine) return false;
    this.#data.leases.set(key, { holder, until: now + ttlMs });
    return true;
  }
}

/** The error every operation of a disconnected {@link MemoryTransport} rejects with. */
const disconnected = (): Error => new Error('switchyard sync: the transport is disconnected');

/**
 * One instance's connection to a {@link MemoryHub}: the {@link Transport} the sync logic is
 * tested on. Operations settle asynchronously, as over a network; published entries arrive in a
 * later microtask (or when the hub releases them). A disconnected client rejects every operation
 * and misses what is published meanwhile, as a Redis subscriber does.
 *
 * @example
 * ```ts
 * const t = new MemoryHub().connect();
 * t.disconnect(); // this instance alone loses the engine
 * t.reconnect();
 * ```
 */
export class MemoryTransport implements Transport {
  readonly #hub: MemoryHub;
  #connected = true;
  readonly #listeners = new Set<(connected: boolean) => void>();
  readonly #handlers = new Map<string, Set<(entry: VersionedEntry) => void>>();
  readonly #channels = new Map<string, Set<(message: string) => void>>();

  /** Use {@link MemoryHub.connect}. */
  constructor(hub: MemoryHub) {
    this.#hub = hub;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Loses the engine (listeners hear `false`). */
  disconnect(): void {
    if (!this.#connected) return;
    this.#connected = false;
    for (const listener of [...this.#listeners]) listener(false);
  }

  /** Reaches the engine again (listeners hear `true`). */
  reconnect(): void {
    if (this.#connected) return;
    this.#connected = true;
    for (const listener of [...this.#listeners]) listener(true);
  }

  /** @internal called by the hub. */
  deliver(scope: string, entry: VersionedEntry): void {
    if (!this.#connected) return;
    for (const handler of [...(this.#handlers.get(scope) ?? [])]) handler(entry);
  }

  /** @internal called by the hub. */
  hear(channel: string, message: string): void {
    if (!this.#connected) return;
    for (const handler of [...(this.#channels.get(channel) ?? [])]) handler(message);
  }

  onConnection(listener: (connected: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  subscribe(scope: string, handler: (entry: VersionedEntry) => void): () => void {
    return join(this.#handlers, scope, handler);
  }

  listen(channel: string, handler: (message: string) => void): () => void {
    return join(this.#channels, channel, handler);
  }

  /** Runs `op` on the hub after a tick, as a network round trip would, or rejects when disconnected. */
  async #call<T>(op: () => T): Promise<T> {
    await Promise.resolve();
    if (!this.#connected) throw disconnected();
    return op();
  }

  version(scope: string, floor: number): Promise<number> {
    return this.#call(() => this.#hub.version(scope, floor));
  }

  put(scope: string, entry: VersionedEntry): Promise<boolean> {
    return this.#call(() => this.#hub.put(scope, entry));
  }

  snapshot(scope: string): Promise<VersionedEntry[]> {
    return this.#call(() => this.#hub.snapshot(scope));
  }

  acquire(key: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.#call(() => this.#hub.lease('acquire', key, holder, ttlMs));
  }

  renew(key: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.#call(() => this.#hub.lease('renew', key, holder, ttlMs));
  }

  async release(key: string, holder: string): Promise<void> {
    await this.#call(() => this.#hub.lease('release', key, holder, 0));
  }

  broadcast(channel: string, message: string): Promise<void> {
    return this.#call(() => this.#hub.broadcast(channel, message));
  }

  async increment(key: string, by: number, ttlMs: number): Promise<number> {
    checkIncrement(by, ttlMs);
    return this.#call(() => this.#hub.increment(key, by, ttlMs));
  }

  remove(key: string): Promise<void> {
    return this.#call(() => this.#hub.remove(key));
  }

  async buckets(scope: string, checks: readonly BucketCheck[]): Promise<number[]> {
    checkBuckets(checks);
    return this.#call(() => this.#hub.buckets(scope, checks));
  }

  async gauges(scope: string, holder: string, checks: readonly GaugeCheck[], op: GaugeOp, ttlMs: number): Promise<number[]> {
    checkGauges(checks, holder, op, ttlMs);
    return this.#call(() => this.#hub.gauges(scope, holder, checks, op, ttlMs));
  }
}

/** Adds `handler` to the set of `name` in `map`; returns the function that takes it out (and drops an emptied set). */
function join<T>(map: Map<string, Set<(value: T) => void>>, name: string, handler: (value: T) => void): () => void {
  let handlers = map.get(name);
  if (handlers === undefined) {
    handlers = new Set();
    map.set(name, handlers);
  }
  handlers.add(handler);
  return () => {
    handlers.delete(handler);
    if (handlers.size === 0 && map.get(name) === handlers) map.delete(name);
  };
}

/** A message or stored text read as JSON: `undefined` instead of an exception when it is not JSON (what the store holds is hostile). @internal */
export function parseJson(text: unknown): unknown {
  if (typeof text !== 'string') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A text that holds a JSON object (not null, not an array), or `undefined`. @internal */
export function parseJsonObject(text: unknown): Record<string, unknown> | undefined {
  const value = parseJson(text);
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}
