// The Redis engine of the cluster-wide state (issue 14): the Transport interface on node-redis.
// Two connections (commands; subscriptions), no offline queue, a short command timeout, and
// reconnection with backoff. `version`, `put` and `increment` are Lua scripts so each is one atomic
// step; leases are SET NX PX plus compare-and-renew / compare-and-delete scripts. Scope entries and
// broadcast messages arrive on distinct channel name spaces (`<ns>:channel:<scope>`,
// `<ns>:broadcast:<channel>`) and are routed by exact channel name. Everything read back from Redis
// is treated as hostile: malformed records and messages are ignored.
// The commands may also run on a node-redis client the user built (`client`): the transport then
// subscribes on a duplicate of it, which it closes, and never closes the user's client.
import { createClient, RESP_TYPES, type TypeMapping } from '@redis/client';
import { createHash } from 'node:crypto';
import { InvalidOptionError } from '../core/errors.ts';
import { objectOption } from '../core/options.ts';
import { checkIncrement, type Transport, type VersionedEntry } from './transport.ts';

/**
 * What switchyard's Redis transport uses of a node-redis client: the standalone client
 * `createClient()` returns fits, whatever its modules, RESP version or type mapping. A Redis
 * Cluster or Sentinel client (`createCluster()`, `createSentinel()`) does not: its commands take
 * other arguments, and it has no single connection state.
 *
 * @example
 * ```ts
 * import { createClient } from '@redis/client';
 * const client: RedisClientLike = createClient({ url: 'rediss://cache.internal:6380', disableOfflineQueue: true });
 * const shared = sync({ redis: { client } });
 * ```
 */
export interface RedisClientLike {
  /** Whether the socket is open (connected, or reconnecting). */
  readonly isOpen: boolean;
  /** Whether commands can be sent now. */
  readonly isReady: boolean;
  /** Opens the connection. */
  connect(): Promise<unknown>;
  /** A new client with the same options (and `overrides`), not connected. */
  duplicate(overrides?: { disableOfflineQueue?: boolean }): RedisClientLike;
  /** Sends one command. */
  sendCommand(args: string[], options?: { abortSignal?: AbortSignal; typeMapping?: TypeMapping }): Promise<unknown>;
  /** Subscribes `listener` to a channel. */
  subscribe(channel: string, listener: (message: string, channel: string) => void): Promise<unknown>;
  /** Takes `listener` off a channel. */
  unsubscribe(channel: string, listener: (message: string, channel: string) => void): Promise<unknown>;
  /** Adds a listener of a client event (`ready`, `end`, `error`...). */
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Removes a listener added with `on`. */
  off(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Closes the connection at once, rejecting what is pending. */
  destroy(): void;
}

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
   * A node-redis client you built (your own TLS, ACL or RESP settings), used for the commands: the
   * transport connects it if it is not open yet, subscribes on a duplicate of it (which it closes), applies
   * its own command timeout, and never closes the client itself. Give it `disableOfflineQueue: true`, as
   * the transport does with the clients it makes.
   */
  client?: RedisClientLike | undefined;
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

const sha1 = (script: string): string => createHash('sha1').update(script).digest('hex');
const SCRIPTS = { version: VERSION, put: PUT, renew: RENEW, release: RELEASE, increment: INCREMENT } as const;
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

/** JSON.parse that yields `undefined` instead of throwing. */
function parseJson(text: unknown): unknown {
  if (typeof text !== 'string') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function positive(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new InvalidOptionError(option, 'a positive number of milliseconds', value);
  return value;
}

/** The options of a RedisTransport, checked: `url` or `client`, exactly one. */
function checkOptions(options: RedisTransportOptions): { url: string; client?: undefined } | { url?: undefined; client: RedisClientLike } {
  const o = objectOption(options, '', OPTIONS, 'an object { url } or { client }');
  if (o.url !== undefined && o.client !== undefined)
    throw new InvalidOptionError('client', '', o.client, 'Invalid option "client": give either "url" or "client", not both');
  if (o.client !== undefined) return { client: clientOption(o.client) };
  if (typeof o.url !== 'string' || !/^rediss?:\/\//.test(o.url))
    throw new InvalidOptionError('url', 'a redis:// or rediss:// URL (or a node-redis client as "client")', o.url);
  return { url: o.url };
}

const CLIENT_METHODS = ['connect', 'duplicate', 'sendCommand', 'subscribe', 'unsubscribe', 'on', 'off', 'destroy'] as const;

/** A node-redis standalone client, told apart from a Cluster client (no `isReady`) and a Sentinel one (no `duplicate`). */
function clientOption(value: unknown): RedisClientLike {
  const c = value as Record<string, unknown> | null;
  const fits = typeof c === 'object' && c !== null && typeof c.isReady === 'boolean' && typeof c.isOpen === 'boolean';
  if (!fits || CLIENT_METHODS.some((method) => typeof c[method] !== 'function'))
    throw new InvalidOptionError('client', 'a node-redis client from createClient() (Cluster and Sentinel clients are not supported)', value);
  return value as RedisClientLike;
}

/** How replies are read, whatever the client's own type mapping: strings as strings, RESP3 maps as flat arrays (as RESP2 sends them). */
const TYPE_MAPPING = {
  [RESP_TYPES.BLOB_STRING]: String,
  [RESP_TYPES.SIMPLE_STRING]: String,
  [RESP_TYPES.NUMBER]: Number,
  [RESP_TYPES.MAP]: Array,
} as TypeMapping;

/** The client events the connection state follows. */
const STATE_EVENTS = ['ready', 'end', 'reconnecting', 'error'] as const;

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
 * The {@link Transport} on Redis (node-redis). Call {@link RedisTransport.connect} once and
 * {@link RedisTransport.close} at the end. While either connection is down, every operation
 * rejects at once and nothing published meanwhile is delivered; node-redis reconnects with
 * backoff and resubscribes.
 *
 * @example
 * ```ts
 * const transport = new RedisTransport({ url: 'redis://127.0.0.1:6379', namespace: 'gw' });
 * await transport.connect();
 * const version = await transport.version('pool:api', 0);
 * ```
 */
export class RedisTransport implements Transport {
  readonly #prefix: string;
  readonly #timeout: number;
  readonly #commands: RedisClientLike;
  readonly #subscriber: RedisClientLike;
  /** Whether the transport made the commands connection (from `url`), and so closes it. */
  readonly #ownsCommands: boolean;
  readonly #listeners = new Set<(connected: boolean) => void>();
  /** Handlers of scope entries, by the Redis channel they arrive on (`<ns>:channel:<scope>`). */
  readonly #entryHandlers = new Map<string, Set<(entry: VersionedEntry) => void>>();
  /** Handlers of broadcast messages, by the Redis channel they arrive on (`<ns>:broadcast:<channel>`). */
  readonly #messageHandlers = new Map<string, Set<(message: string) => void>>();
  /** Redis channels the subscriber connection has subscribed. */
  readonly #active = new Set<string>();
  /** Redis channels left that node-redis may still hold (their UNSUBSCRIBE could not go out): retried on reconnection. */
  readonly #stale = new Set<string>();
  /** The first connection attempts {@link RedisTransport.connect} waits for, settled by `close()` too. */
  readonly #opening = new Set<() => void>();
  readonly #onState = (): void => this.#update();
  #connected = false;
  #closed = false;

  /** @throws InvalidOptionError on an invalid option. */
  constructor(options: RedisTransportOptions) {
    const { url, client } = checkOptions(options);
    const namespace = options.namespace ?? 'switchyard';
    if (typeof namespace !== 'string' || namespace === '') throw new InvalidOptionError('namespace', 'a non-empty string', namespace);
    this.#prefix = namespace;
    this.#timeout = positive('timeout', options.timeout, 1000);
    if (client !== undefined) {
      if (options.maxReconnectDelay !== undefined)
        throw new InvalidOptionError(
          'maxReconnectDelay',
          '',
          options.maxReconnectDelay,
          'Invalid option "maxReconnectDelay": with "client", the client reconnects as it was built to',
        );
      this.#commands = client;
      this.#ownsCommands = false;
      this.#subscriber = client.duplicate({ disableOfflineQueue: true });
    } else {
      const maxDelay = positive('maxReconnectDelay', options.maxReconnectDelay, 2000);
      this.#commands = createClient({
        url,
        disableOfflineQueue: true,
        socket: {
          connectTimeout: this.#timeout,
          reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 16), maxDelay) * (0.5 + Math.random() / 2),
        },
      });
      this.#ownsCommands = true;
      this.#subscriber = this.#commands.duplicate();
    }
    for (const client of [this.#commands, this.#subscriber]) for (const event of STATE_EVENTS) client.on(event, this.#onState);
    this.#subscriber.on('ready', () => this.#resubscribe());
  }

  get connected(): boolean {
    return this.#connected;
  }

  /**
   * Opens the connections (a `client` already open is left as it is); settles once the first
   * attempt of each ends, connected or not: reconnection goes on.
   */
  async connect(): Promise<void> {
    if (this.#closed) return;
    await Promise.all([this.#open(this.#commands), this.#open(this.#subscriber)]);
    this.#update();
  }

  /** Opens `client` unless it is open, and resolves once it is ready or an attempt failed (or the transport closed). */
  #open(client: RedisClientLike): Promise<void> {
    if (client.isReady) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        for (const event of ['ready', 'error', 'end']) client.off(event, done);
        this.#opening.delete(done);
        resolve();
      };
      this.#opening.add(done);
      for (const event of ['ready', 'error', 'end']) client.on(event, done);
      if (!client.isOpen) client.connect().then(done, done);
    });
  }

  /** Closes the connections the transport made (not a `client` it was given), at once; the transport stays disconnected. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#ownsCommands) for (const event of STATE_EVENTS) this.#commands.off(event, this.#onState);
    for (const done of [...this.#opening]) done();
    for (const client of this.#ownsCommands ? [this.#commands, this.#subscriber] : [this.#subscriber]) if (client.isOpen) client.destroy();
    this.#update();
  }

  #update(): void {
    const up = !this.#closed && this.#commands.isReady && this.#subscriber.isReady;
    if (up === this.#connected) return;
    this.#connected = up;
    for (const listener of [...this.#listeners]) listener(up);
  }

  onConnection(listener: (connected: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #key(kind: 'version' | 'scope' | 'channel' | 'lease' | 'broadcast' | 'counter', name: string): string {
    return `${this.#prefix}:${kind}:${name}`;
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

  /** On (re)connection: subscribes what never went through, and leaves what is no longer wanted. */
  #resubscribe(): void {
    for (const channel of [...this.#stale]) if (!this.#wanted(channel)) this.#unsubscribe(channel);
    for (const channel of [...this.#entryHandlers.keys(), ...this.#messageHandlers.keys()]) this.#subscribe(channel);
  }

  #subscribe(channel: string): void {
    this.#stale.delete(channel);
    // node-redis keeps a subscription across reconnections; only one that never went through is retried.
    if (!this.#subscriber.isReady || this.#active.has(channel)) return;
    this.#subscriber.subscribe(channel, this.#onMessage).then(
      () => {
        if (this.#wanted(channel)) this.#active.add(channel);
      },
      () => {},
    );
  }

  #unsubscribe(channel: string): void {
    this.#active.delete(channel);
    this.#stale.add(channel);
    if (!this.#subscriber.isReady) return;
    this.#subscriber.unsubscribe(channel, this.#onMessage).then(
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
      this.#subscribe(channel);
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

  /** Sends one command, rejecting at once while disconnected and after the command timeout. */
  async #send(args: string[]): Promise<unknown> {
    if (!this.#connected || !this.#commands.isReady) throw disconnected();
    // The timeout is ours: node-redis's own does not reject a command already written to a frozen server.
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        abort.abort();
        reject(new Error(`switchyard sync: Redis did not answer within ${this.#timeout} ms`));
      }, this.#timeout);
    });
    const reply = this.#commands.sendCommand(args, { abortSignal: abort.signal, typeMapping: TYPE_MAPPING });
    reply.catch(() => {});
    try {
      return await Promise.race([reply, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs a script by its SHA1, loading it with EVAL when Redis does not know it yet. */
  async #script(name: keyof typeof SCRIPTS, keys: string[], args: string[]): Promise<unknown> {
    const tail = [String(keys.length), ...keys, ...args];
    try {
      return await this.#send(['EVALSHA', SHAS[name], ...tail]);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return this.#send(['EVAL', SCRIPTS[name], ...tail]);
    }
  }

  async version(scope: string, floor: number): Promise<number> {
    const reply = Number(await this.#script('version', [this.#key('version', scope)], [String(Math.max(0, Math.floor(floor) || 0))]));
    if (!Number.isSafeInteger(reply) || reply < 1) throw new Error('switchyard sync: Redis returned an invalid version');
    return reply;
  }

  async put(scope: string, entry: VersionedEntry): Promise<boolean> {
    const stored = JSON.stringify({ version: entry.version, origin: entry.origin, value: entry.value });
    const message = JSON.stringify({ key: entry.key, version: entry.version, origin: entry.origin, value: entry.value });
    const reply = await this.#script('put', [this.#key('scope', scope)], [entry.key, String(entry.version), stored, message, this.#key('channel', scope)]);
    return Number(reply) === 1;
  }

  async snapshot(scope: string): Promise<VersionedEntry[]> {
    let reply: unknown;
    try {
      reply = await this.#send(['HGETALL', this.#key('scope', scope)]);
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
    const taken = await this.#send(['SET', this.#key('lease', key), holder, 'NX', 'PX', ttl]);
    if (taken === 'OK') return true;
    return this.renew(key, holder, ttlMs);
  }

  async renew(key: string, holder: string, ttlMs: number): Promise<boolean> {
    const ttl = String(Math.max(1, Math.ceil(ttlMs)));
    return Number(await this.#script('renew', [this.#key('lease', key)], [holder, ttl])) === 1;
  }

  async release(key: string, holder: string): Promise<void> {
    await this.#script('release', [this.#key('lease', key)], [holder]);
  }

  async broadcast(channel: string, message: string): Promise<void> {
    await this.#send(['PUBLISH', this.#key('broadcast', channel), message]);
  }

  async increment(key: string, by: number, ttlMs: number): Promise<number> {
    checkIncrement(by, ttlMs);
    const ttl = String(Math.max(1, Math.ceil(ttlMs)));
    const reply = Number(await this.#script('increment', [this.#key('counter', key)], [String(by), ttl]));
    if (!Number.isSafeInteger(reply)) throw new Error('switchyard sync: Redis returned an invalid counter');
    return reply;
  }

  async remove(key: string): Promise<void> {
    await this.#send(['DEL', this.#key('counter', key)]);
  }
}
