// The Redis engine of the cluster-wide state (issue 14): the Transport interface on node-redis.
// No offline queue, a short command timeout, and reconnection with backoff. `version`, `put` and
// `increment` are Lua scripts so each is one atomic step; leases are SET NX PX plus compare-and-renew /
// compare-and-delete scripts. Scope entries and broadcast messages arrive on distinct channel name
// spaces (`<ns>:channel:<scope>`, `<ns>:broadcast:<channel>`) and are routed by exact channel name.
// Everything read back from Redis is treated as hostile: malformed records and messages are ignored.
// It runs on a standalone Redis (from a URL, or a `createClient()` client the user built), on a Redis
// Cluster (`createCluster()`) or on a master watched by sentinels (`createSentinel()`): how each is
// reached, and when each counts as connected, is in redis-clients.ts. A client the user built is
// never closed by the transport.
import type { TypeMapping } from '@redis/client';
import { createHash } from 'node:crypto';
import { InvalidOptionError } from '../core/errors.ts';
import { objectOption } from '../core/options.ts';
import {
  type ClientKind,
  clientKind,
  clusterEngine,
  type Engine,
  type EngineHooks,
  type RedisClientLike,
  type RedisClusterLike,
  type RedisSentinelLike,
  sentinelEngine,
  StandaloneEngine,
  timed,
} from './redis-clients.ts';
import {
  type BucketCheck,
  checkBuckets,
  checkGauges,
  checkIncrement,
  type GaugeCheck,
  type GaugeOp,
  parseJson,
  type Transport,
  type VersionedEntry,
} from './transport.ts';

export type { RedisClientLike, RedisClusterLike, RedisSentinelLike } from './redis-clients.ts';

/**
 * Options of a {@link RedisTransport}: where Redis is, as `url` or as a `client`; exactly one of them.
 *
 * @example
 * ```ts
 * const options: RedisTransportOptions = { url: 'redis://127.0.0.1:6379', namespace: 'gw', timeout: 500 };
 * ```
 */
export interface RedisTransportOptions {
  /** Where Redis is, e.g. `'redis://127.0.0.1:6379'`: the transport makes its two connections, and closes them. */
  url?: string | undefined;
  /**
   * A node-redis client you built: a standalone one from `createClient()` (your own TLS, ACL or RESP
   * settings), a Redis Cluster one from `createCluster()` or a Sentinel one from `createSentinel()`.
   * The transport connects it if it is not open yet, applies its own command timeout, and never closes
   * it. A standalone client's subscriptions go through a duplicate of it (which the transport closes);
   * a Cluster or Sentinel client's through its own pub/sub connection (the transport unsubscribes on
   * close). Build it without an offline queue (`disableOfflineQueue: true`; a Cluster client's
   * `defaults`, a Sentinel client's `nodeClientOptions`), as the transport does with the clients it makes.
   */
  client?: RedisClientLike | RedisClusterLike | RedisSentinelLike | undefined;
  /** Prefix of every key and channel, so several clusters can share one Redis. @default `'switchyard'` */
  namespace?: string | undefined;
  /** How long a command may take before it rejects, in milliseconds. @default `1000` */
  timeout?: number | undefined;
  /** The longest wait between reconnection attempts, in milliseconds (with `url` only: a `client` reconnects as it was built to). @default `2000` */
  maxReconnectDelay?: number | undefined;
}

const OPTIONS = ['url', 'client', 'namespace', 'timeout', 'maxReconnectDelay'] as const;

// INCR raised to a floor: the next version is above both the counter and `floor`. A counter that
// is not a number (or not a string) counts as 0 and is overwritten.
const VERSION = `local got = redis.pcall('GET', KEYS[1])
local cur = type(got) == 'string' and tonumber(got) or 0
local floor = tonumber(ARGV[1]) or 0
if floor > cur then cur = floor end
cur = cur + 1
redis.call('SET', KEYS[1], string.format('%.0f', cur))
return cur`;

// Compare-version HSET plus PUBLISH (on ARGV[5], a channel: not a key): stored (and published)
// only over a lower version. A key of another type than a hash is garbage: replaced.
const PUT = `local cur = redis.pcall('HGET', KEYS[1], ARGV[1])
if type(cur) == 'table' and cur.err then redis.call('DEL', KEYS[1]) cur = false end
if cur then
  local ok, d = pcall(cjson.decode, cur)
  if ok and type(d) == 'table' and type(d.version) == 'number' and d.version >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1`;

// Compare-and-renew and compare-and-delete of a lease.
const RENEW = `if redis.pcall('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0`;
const RELEASE = `if redis.pcall('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0`;

// INCRBY that sets the expiry when it creates the counter (and only then). A value that is not an
// integer of at most 2^53 - 1, a key of another type, or one without an expiry is garbage: the
// counter starts again from ARGV[1].
const INCREMENT = `local got = redis.pcall('GET', KEYS[1])
local n = type(got) == 'string' and string.match(got, '^%-?%d+$') and tonumber(got) or nil
if n == nil or n > 9007199254740991 or n < -9007199254740991 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return tonumber(ARGV[1])
end
return redis.call('INCRBY', KEYS[1], ARGV[1])`;

// nginx's limit_req arithmetic on several buckets in one atomic step, on Redis's clock (TIME):
// transport.ts's `leak`, line for line. ARGV holds each bucket's rate and burst (milli-requests). A
// bucket is "excess last" with an expiry at the time it would be drained to nothing; a value that is
// not one (garbage, another type) is a bucket never seen, and is replaced.
const BUCKETS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {0}
local lasts = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local got = redis.pcall('GET', KEYS[i])
  local excess, last = 0, now
  if type(got) == 'string' then
    local e, l = string.match(got, '^(%d+) (%-?%d+)$')
    if e then
      e = tonumber(e)
      l = tonumber(l)
      local ms = now - l
      if ms < -60000 then ms = 1 elseif ms < 0 then ms = 0 end
      excess = e - math.floor(rate * ms / 1000) + 1000
      if excess < 0 then excess = 0 end
      if excess > burst then return {i, excess} end
      if ms == 0 then last = l end
    end
  end
  out[i + 1] = excess
  lasts[i] = last
end
for i = 1, #KEYS do
  local ttl = math.floor((out[i + 1] + 1000) * 1000 / tonumber(ARGV[2 * i - 1])) + 1
  redis.call('SET', KEYS[i], string.format('%.0f %.0f', out[i + 1], lasts[i]), 'PX', string.format('%.0f', ttl))
end
return out`;

// Requests in progress per key and holder (transport.ts's `tally`, line for line): each key a hash of
// holder -> "count expiry", expired shares dropped as they are read. ARGV: holder, op (add, sub, set),
// ttl, then each key's value (add: the most it may hold; set: the holder's count). The key expires
// `ttl` after its last write: every holder writes its shares again within that.
const GAUGES = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder, op, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local totals, mines = {}, {}
for k = 1, #KEYS do
  local all = redis.pcall('HGETALL', KEYS[k])
  if type(all) ~= 'table' or all.err then redis.call('DEL', KEYS[k]) all = {} end
  local total, mine = 0, 0
  for i = 1, #all, 2 do
    local c, e = string.match(all[i + 1], '^(%d+) (%d+)$')
    if c == nil or tonumber(e) <= now then
      redis.call('HDEL', KEYS[k], all[i])
    else
      total = total + tonumber(c)
      if all[i] == holder then mine = tonumber(c) end
    end
  end
  if op == 'add' and total >= tonumber(ARGV[3 + k]) then return {k, total} end
  totals[k] = total
  mines[k] = mine
end
local out = {0}
for k = 1, #KEYS do
  local n
  if op == 'add' then n = mines[k] + 1 elseif op == 'sub' then n = math.max(0, mines[k] - 1) else n = tonumber(ARGV[3 + k]) end
  out[k + 1] = totals[k] - mines[k] + n
  if n <= 0 then redis.call('HDEL', KEYS[k], holder) else redis.call('HSET', KEYS[k], holder, string.format('%.0f %.0f', n, now + ttl)) end
  if redis.call('HLEN', KEYS[k]) == 0 then redis.call('DEL', KEYS[k]) else redis.call('PEXPIRE', KEYS[k], string.format('%.0f', ttl)) end
end
return out`;

const sha1 = (script: string): string => createHash('sha1').update(script).digest('hex');
const SCRIPTS = { version: VERSION, put: PUT, renew: RENEW, release: RELEASE, increment: INCREMENT, buckets: BUCKETS, gauges: GAUGES } as const;
const SHAS = Object.fromEntries(Object.entries(SCRIPTS).map(([name, script]) => [name, sha1(script)])) as Record<keyof typeof SCRIPTS, string>;

/** The error every operation of a disconnected {@link RedisTransport} rejects with. */
const disconnected = (): Error => new Error('switchyard sync: the transport is disconnected');

/** An entry's fields from parsed JSON, or `undefined` when they are not one. */
function toEntry(key: unknown, data: unknown): VersionedEntry | undefined {
  if (typeof key !== 'string' || typeof data !== 'object' || data === null) return undefined;
  const d = data as { version?: unknown; origin?: unknown; value?: unknown };
  if (typeof d.version !== 'number' || !Number.isSafeInteger(d.version) || d.version < 1) return undefined;
  if (typeof d.origin !== 'string' || typeof d.value !== 'string') return undefined;
  return { key, version: d.version, origin: d.origin, value: d.value };
}

function positive(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new InvalidOptionError(option, 'a positive number of milliseconds', value);
  return value;
}

/** A client the user gave, with its kind. */
type GivenClient =
  | { kind: 'client'; client: RedisClientLike }
  | { kind: 'cluster'; client: RedisClusterLike }
  | { kind: 'sentinel'; client: RedisSentinelLike };

/** The options of a RedisTransport, checked: `url` or `client`, exactly one. */
function checkOptions(options: RedisTransportOptions): { url: string; given?: undefined } | { url?: undefined; given: GivenClient } {
  const o = objectOption(options, '', OPTIONS, 'an object { url } or { client }');
  if (o.url !== undefined && o.client !== undefined)
    throw new InvalidOptionError('client', '', o.client, 'Invalid option "client": give either "url" or "client", not both');
  if (o.client !== undefined) {
    const kind = clientKind(o.client);
    if (kind === undefined) throw new InvalidOptionError('client', 'a node-redis client from createClient(), createCluster() or createSentinel()', o.client);
    return { given: { kind, client: o.client } as GivenClient };
  }
  if (typeof o.url !== 'string' || !/^rediss?:\/\//.test(o.url))
    throw new InvalidOptionError('url', 'a redis:// or rediss:// URL (or a node-redis client as "client")', o.url);
  return { url: o.url };
}

/**
 * The RESP type bytes of the replies {@link TYPE_MAPPING} maps: `@redis/client`'s `RESP_TYPES`, which
 * are the protocol's own (`$`, `+`, `:`, `%`), written out so that this module does not load
 * `@redis/client` (issue 15: a process that never uses Redis does not pay for it).
 * test/package/lazy-modules.test.ts checks them against `RESP_TYPES`. @internal
 */
export const RESP = { BLOB_STRING: 36, SIMPLE_STRING: 43, NUMBER: 58, MAP: 37 } as const;

/** How replies are read, whatever the client's own type mapping: strings as strings, RESP3 maps as flat arrays (as RESP2 sends them). */
const TYPE_MAPPING = {
  [RESP.BLOB_STRING]: String,
  [RESP.SIMPLE_STRING]: String,
  [RESP.NUMBER]: Number,
  [RESP.MAP]: Array,
} as TypeMapping;

/**
 * Calls every handler with `value()`. A handler that throws neither stops the others nor reaches
 * node-redis's reply reader (which would lose its place in the stream): its error is rethrown on
 * its own, as an uncaught exception, as it would be from the in-memory engine.
 */
function dispatch<T>(handlers: ReadonlySet<(value: T) => void>, value: () => T): void {
  for (const handler of [...handlers]) {
    try {
      handler(value());
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }
}

/**
 * The {@link Transport} on Redis (node-redis): a standalone server, a Redis Cluster or a master
 * watched by sentinels. Call {@link RedisTransport.connect} once and {@link RedisTransport.close} at
 * the end. While a connection is down, every operation rejects at once and nothing published
 * meanwhile is delivered; node-redis reconnects with backoff and resubscribes.
 *
 * @example
 * ```ts
 * const transport = new RedisTransport({ url: 'redis://127.0.0.1:6379', namespace: 'gw' });
 * await transport.connect();
 * const version = await transport.version('pool:api', 0);
 * ```
 */
export class RedisTransport implements Transport {
  /** What the transport runs on: a URL (`'url'`) or the kind of client the user gave. */
  readonly kind: 'url' | ClientKind;
  readonly #timeout: number;
  readonly #engine: Engine;
  readonly #listeners = new Set<(connected: boolean) => void>();
  /** Handlers of scope entries, by the Redis channel they arrive on (`<ns>:channel:<scope>`). */
  readonly #entryHandlers = new Map<string, Set<(entry: VersionedEntry) => void>>();
  /** Handlers of broadcast messages, by the Redis channel they arrive on (`<ns>:broadcast:<channel>`). */
  readonly #messageHandlers = new Map<string, Set<(message: string) => void>>();
  /** Redis channels the subscriber connection has subscribed. */
  readonly #active = new Set<string>();
  /** Redis channels left that node-redis may still hold (their UNSUBSCRIBE could not go out): retried on reconnection. */
  readonly #stale = new Set<string>();
  #connected = false;
  #closed = false;

  /** @throws InvalidOptionError on an invalid option. */
  constructor(options: RedisTransportOptions) {
    const { url, given } = checkOptions(options);
    const namespace = options.namespace ?? 'switchyard';
    if (typeof namespace !== 'string' || namespace === '') throw new InvalidOptionError('namespace', 'a non-empty string', namespace);
    this.#timeout = positive('timeout', options.timeout, 1000);
    const hooks: EngineHooks = { changed: () => this.#update(), resubscribe: () => this.#resubscribe() };
    if (given === undefined) {
      const maxReconnectDelay = positive('maxReconnectDelay', options.maxReconnectDelay, 2000);
      this.kind = 'url';
      this.#engine = new StandaloneEngine(namespace, { url, timeout: this.#timeout, maxReconnectDelay }, hooks);
      return;
    }
    if (options.maxReconnectDelay !== undefined)
      throw new InvalidOptionError(
        'maxReconnectDelay',
        '',
        options.maxReconnectDelay,
        'Invalid option "maxReconnectDelay": with "client", the client reconnects as it was built to',
      );
    this.kind = given.kind;
    this.#engine =
      given.kind === 'cluster'
        ? clusterEngine(namespace, given.client, this.#timeout, hooks)
        : given.kind === 'sentinel'
          ? sentinelEngine(namespace, given.client, this.#timeout, hooks)
          : new StandaloneEngine(namespace, { client: given.client }, hooks);
  }

  get connected(): boolean {
    return this.#connected;
  }

  /**
   * Opens the connections (a `client` already open is left as it is); settles once the first
   * attempt ends, connected or not: reconnection goes on.
   */
  async connect(): Promise<void> {
    if (this.#closed) return;
    await this.#engine.open();
    this.#update();
  }

  /** Closes the connections the transport made (not a `client` it was given), at once; the transport stays disconnected. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#engine.close();
    this.#update();
  }

  #update(): void {
    const up = !this.#closed && this.#engine.up;
    if (up === this.#connected) return;
    this.#connected = up;
    for (const listener of [...this.#listeners]) listener(up);
  }

  onConnection(listener: (connected: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #key(kind: 'version' | 'scope' | 'channel' | 'lease' | 'broadcast' | 'counter' | 'limit', name: string): string {
    return this.#engine.key(kind, name);
  }

  /** Routes what arrives on the subscriber connection by its exact channel name; drops it while disconnected (as a missed message). */
  readonly #onMessage = (message: unknown, channel: unknown): void => {
    if (!this.#connected || typeof message !== 'string' || typeof channel !== 'string') return;
    const listeners = this.#messageHandlers.get(channel);
    if (listeners !== undefined) return dispatch(listeners, () => message);
    const handlers = this.#entryHandlers.get(channel);
    if (handlers === undefined) return;
    const data = parseJson(message) as { key?: unknown } | undefined;
    const entry = toEntry(data?.key, data);
    if (entry !== undefined) dispatch(handlers, () => ({ ...entry }));
  };

  #wanted(channel: string): boolean {
    return this.#entryHandlers.has(channel) || this.#messageHandlers.has(channel);
  }

  /** On (re)connection: leaves what is no longer wanted, and subscribes what never went through; resolves with whether every wanted channel is subscribed. */
  async #resubscribe(): Promise<boolean> {
    for (const channel of [...this.#stale]) if (!this.#wanted(channel)) this.#unsubscribe(channel);
    const wanted = [...this.#entryHandlers.keys(), ...this.#messageHandlers.keys()];
    await Promise.all(wanted.map((channel) => this.#subscribe(channel)));
    return wanted.every((channel) => this.#active.has(channel) || !this.#wanted(channel));
  }

  #subscribe(channel: string): Promise<void> {
    this.#stale.delete(channel);
    // node-redis keeps a subscription across reconnections; only one that never went through is retried.
    if (!this.#engine.canSubscribe || this.#active.has(channel)) return Promise.resolve();
    return this.#engine.subscribe(channel, this.#onMessage).then(
      () => {
        if (this.#wanted(channel)) this.#active.add(channel);
      },
      (err: unknown) => this.#engine.failed(err),
    );
  }

  #unsubscribe(channel: string): void {
    this.#active.delete(channel);
    this.#stale.add(channel);
    if (!this.#engine.canSubscribe) return;
    this.#engine.unsubscribe(channel, this.#onMessage).then(
      () => {
        if (!this.#wanted(channel)) this.#stale.delete(channel);
      },
      () => {},
    );
  }

  /** Adds `handler` for `channel` in `map`, subscribing the channel for its first handler; returns the function that takes it out. */
  #join<T>(map: Map<string, Set<(value: T) => void>>, channel: string, handler: (value: T) => void): () => void {
    let handlers = map.get(channel);
    if (handlers === undefined) {
      handlers = new Set();
      map.set(channel, handlers);
      void this.#subscribe(channel);
    }
    handlers.add(handler);
    return () => {
      handlers.delete(handler);
      if (handlers.size > 0 || map.get(channel) !== handlers) return;
      map.delete(channel);
      if (!this.#closed) this.#unsubscribe(channel);
    };
  }

  subscribe(scope: string, handler: (entry: VersionedEntry) => void): () => void {
    return this.#join(this.#entryHandlers, this.#key('channel', scope), handler);
  }

  listen(channel: string, handler: (message: string) => void): () => void {
    return this.#join(this.#messageHandlers, this.#key('broadcast', channel), handler);
  }

  /** Sends one command about `firstKey` (the key, or the channel, it names first), rejecting at once while disconnected and after the command timeout. */
  async #send(firstKey: string, args: string[]): Promise<unknown> {
    if (!this.#connected || !this.#engine.up) throw disconnected();
    try {
      return await timed(this.#timeout, (abortSignal) => this.#engine.send(firstKey, args, { abortSignal, typeMapping: TYPE_MAPPING }));
    } catch (err) {
      this.#engine.failed(err);
      throw err;
    }
  }

  /**
   * Runs a script on its key (or keys, of one hash slot) by the script's SHA1, loading it with EVAL when Redis does not know
   * it yet (on a cluster, each master has its own script cache: both go to the master of `key`).
   */
  async #script(name: keyof typeof SCRIPTS, key: string | string[], args: string[]): Promise<unknown> {
    const keys = typeof key === 'string' ? [key] : key;
    const tail = [String(keys.length), ...keys, ...args];
    try {
      return await this.#send(keys[0]!, ['EVALSHA', SHAS[name], ...tail]);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return this.#send(keys[0]!, ['EVAL', SCRIPTS[name], ...tail]);
    }
  }

  async version(scope: string, floor: number): Promise<number> {
    const reply = Number(await this.#script('version', this.#key('version', scope), [String(Math.max(0, Math.floor(floor) || 0))]));
    if (!Number.isSafeInteger(reply) || reply < 1) throw new Error('switchyard sync: Redis returned an invalid version');
    return reply;
  }

  async put(scope: string, entry: VersionedEntry): Promise<boolean> {
    const stored = JSON.stringify({ version: entry.version, origin: entry.origin, value: entry.value });
    const message = JSON.stringify({ key: entry.key, version: entry.version, origin: entry.origin, value: entry.value });
    const reply = await this.#script('put', this.#key('scope', scope), [entry.key, String(entry.version), stored, message, this.#key('channel', scope)]);
    return Number(reply) === 1;
  }

  async snapshot(scope: string): Promise<VersionedEntry[]> {
    let reply: unknown;
    try {
      const key = this.#key('scope', scope);
      reply = await this.#send(key, ['HGETALL', key]);
    } catch (err) {
      // A key of another type is garbage, as a malformed record is: nothing stored (the next put replaces it).
      if (err instanceof Error && err.message.startsWith('WRONGTYPE')) return [];
      throw err;
    }
    const pairs: Array<[unknown, unknown]> = Array.isArray(reply)
      ? reply.flatMap((_, i, all) => (i % 2 === 0 ? [[all[i], all[i + 1]] as [unknown, unknown]] : []))
      : typeof reply === 'object' && reply !== null
        ? Object.entries(reply)
        : [];
    const entries: VersionedEntry[] = [];
    for (const [field, text] of pairs) {
      const entry = toEntry(field, parseJson(text));
      if (entry !== undefined) entries.push(entry);
    }
    return entries;
  }

  async acquire(key: string, holder: string, ttlMs: number): Promise<boolean> {
    const ttl = String(Math.max(1, Math.ceil(ttlMs)));
    const name = this.#key('lease', key);
    const taken = await this.#send(name, ['SET', name, holder, 'NX', 'PX', ttl]);
    if (taken === 'OK') return true;
    return this.renew(key, holder, ttlMs);
  }

  async renew(key: string, holder: string, ttlMs: number): Promise<boolean> {
    const ttl = String(Math.max(1, Math.ceil(ttlMs)));
    return Number(await this.#script('renew', this.#key('lease', key), [holder, ttl])) === 1;
  }

  async release(key: string, holder: string): Promise<void> {
    await this.#script('release', this.#key('lease', key), [holder]);
  }

  async broadcast(channel: string, message: string): Promise<void> {
    const name = this.#key('broadcast', channel);
    await this.#send(name, ['PUBLISH', name, message]);
  }

  async increment(key: string, by: number, ttlMs: number): Promise<number> {
    checkIncrement(by, ttlMs);
    const ttl = String(Math.max(1, Math.ceil(ttlMs)));
    const reply = Number(await this.#script('increment', this.#key('counter', key), [String(by), ttl]));
    if (!Number.isSafeInteger(reply)) throw new Error('switchyard sync: Redis returned an invalid counter');
    return reply;
  }

  async remove(key: string): Promise<void> {
    const name = this.#key('counter', key);
    await this.#send(name, ['DEL', name]);
  }

  async buckets(scope: string, checks: readonly BucketCheck[]): Promise<number[]> {
    checkBuckets(checks);
    const prefix = this.#key('limit', scope);
    const reply = await this.#script(
      'buckets',
      checks.map((c) => `${prefix}:${c.key}`),
      checks.flatMap((c) => [String(c.rate), String(c.burst)]),
    );
    const out = Array.isArray(reply) ? reply.map(Number) : [];
    if (out.length < 2 || !out.every(Number.isSafeInteger)) throw new Error('switchyard sync: Redis returned an invalid bucket reply');
    return out;
  }

  async gauges(scope: string, holder: string, checks: readonly GaugeCheck[], op: GaugeOp, ttlMs: number): Promise<number[]> {
    checkGauges(checks, holder, op, ttlMs);
    const prefix = this.#key('limit', scope);
    const reply = await this.#script(
      'gauges',
      checks.map((c) => `${prefix}:${c.key}`),
      [holder, op, String(ttlMs), ...checks.map((c) => String(c.value))],
    );
    const out = Array.isArray(reply) ? reply.map(Number) : [];
    if (out.length < 2 || !out.every(Number.isSafeInteger)) throw new Error('switchyard sync: Redis returned an invalid gauge reply');
    return out;
  }
}
