// The Redis engine of the cluster-wide state (issue 14): the Transport interface on node-redis.
// Two connections (commands; subscriptions), no offline queue, a short command timeout, and
// reconnection with backoff. `version` and `put` are Lua scripts so each is one atomic step;
// leases are SET NX PX plus compare-and-renew / compare-and-delete scripts. Everything read back
// from Redis is treated as hostile: malformed records and messages are ignored.
import { createClient, RESP_TYPES } from '@redis/client';
import { createHash } from 'node:crypto';
import { InvalidOptionError } from '../core/errors.ts';
import type { Transport, VersionedEntry } from './transport.ts';

/** Options of a {@link RedisTransport}. */
export interface RedisTransportOptions {
  /** Where Redis is, e.g. `'redis://127.0.0.1:6379'`. */
  url: string;
  /** Prefix of every key and channel, so several clusters can share one Redis. @default `'switchyard'` */
  namespace?: string | undefined;
  /** How long a command may take before it rejects, in milliseconds. @default `1000` */
  timeout?: number | undefined;
  /** The longest wait between reconnection attempts, in milliseconds. @default `2000` */
  maxReconnectDelay?: number | undefined;
}

// INCR raised to a floor: the next version is above both the counter and `floor`.
const VERSION = `local cur = tonumber(redis.call('GET', KEYS[1])) or 0
local floor = tonumber(ARGV[1]) or 0
if floor > cur then cur = floor end
cur = cur + 1
redis.call('SET', KEYS[1], string.format('%.0f', cur))
return cur`;

// Compare-version HSET plus PUBLISH: stored (and published) only over a lower version.
const PUT = `local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, d = pcall(cjson.decode, cur)
  if ok and type(d) == 'table' and type(d.version) == 'number' and d.version >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[4])
return 1`;

// Compare-and-renew and compare-and-delete of a lease.
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0`;

const sha1 = (script: string): string => createHash('sha1').update(script).digest('hex');
const SCRIPTS = { version: VERSION, put: PUT, renew: RENEW, release: RELEASE } as const;
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

type Client = ReturnType<typeof createClient>;

/**
 * The {@link Transport} on Redis (node-redis). Call {@link RedisTransport.connect} once and
 * {@link RedisTransport.close} at the end. While either connection is down, every operation
 * rejects at once; node-redis reconnects with backoff and resubscribes.
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
  readonly #commands: Client;
  readonly #subscriber: Client;
  readonly #listeners = new Set<(connected: boolean) => void>();
  readonly #handlers = new Map<string, Set<(entry: VersionedEntry) => void>>();
  /** Scopes whose channel the subscriber connection has subscribed. */
  readonly #active = new Set<string>();
  #connected = false;
  #closed = false;

  constructor(options: RedisTransportOptions) {
    if (typeof options?.url !== 'string' || !/^rediss?:\/\//.test(options.url))
      throw new InvalidOptionError('url', 'a redis:// or rediss:// URL', options?.url);
    const namespace = options.namespace ?? 'switchyard';
    if (typeof namespace !== 'string' || namespace === '') throw new InvalidOptionError('namespace', 'a non-empty string', namespace);
    this.#prefix = namespace;
    this.#timeout = positive('timeout', options.timeout, 1000);
    const maxDelay = positive('maxReconnectDelay', options.maxReconnectDelay, 2000);
    this.#commands = createClient({
      url: options.url,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: this.#timeout,
        reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 16), maxDelay) * (0.5 + Math.random() / 2),
      },
    });
    this.#subscriber = this.#commands.duplicate();
    for (const client of [this.#commands, this.#subscriber]) {
      client.on('error', () => this.#update());
      for (const event of ['ready', 'end', 'reconnecting']) client.on(event, () => this.#update());
    }
    this.#subscriber.on('ready', () => this.#resubscribe());
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Opens both connections; settles once the first attempt ends (connected or not: reconnection goes on). */
  async connect(): Promise<void> {
    await Promise.allSettled([this.#commands.connect(), this.#subscriber.connect()]);
    this.#update();
  }

  /** Closes both connections at once; the transport stays disconnected. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const client of [this.#commands, this.#subscriber]) if (client.isOpen) client.destroy();
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

  #key(kind: string, name: string): string {
    return `${this.#prefix}:${kind}:${name}`;
  }

  #onMessage = (message: string, channel: string): void => {
    const scope = channel.slice(`${this.#prefix}:channel:`.length);
    const data = parseJson(message) as { key?: unknown } | undefined;
    const entry = toEntry(data?.key, data);
    if (entry === undefined) return;
    for (const handler of [...(this.#handlers.get(scope) ?? [])]) handler({ ...entry });
  };

  #resubscribe(): void {
    for (const scope of this.#handlers.keys()) this.#subscribe(scope);
  }

  #subscribe(scope: string): void {
    // node-redis keeps a subscription across reconnections; only one that never went through is retried.
    if (!this.#subscriber.isReady || this.#active.has(scope)) return;
    this.#subscriber.subscribe(this.#key('channel', scope), this.#onMessage).then(
      () => {
        if (this.#handlers.has(scope)) this.#active.add(scope);
      },
      () => {},
    );
  }

  subscribe(scope: string, handler: (entry: VersionedEntry) => void): () => void {
    let handlers = this.#handlers.get(scope);
    if (handlers === undefined) {
      handlers = new Set();
      this.#handlers.set(scope, handlers);
      this.#subscribe(scope);
    }
    handlers.add(handler);
    return () => {
      handlers.delete(handler);
      if (handlers.size > 0 || this.#handlers.get(scope) !== handlers) return;
      this.#handlers.delete(scope);
      this.#active.delete(scope);
      if (this.#subscriber.isReady) this.#subscriber.unsubscribe(this.#key('channel', scope), this.#onMessage).catch(() => {});
    };
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
    const reply = this.#commands.sendCommand(args, { abortSignal: abort.signal, typeMapping: { [RESP_TYPES.BLOB_STRING]: String } });
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
    const reply = await this.#script('put', [this.#key('scope', scope), this.#key('channel', scope)], [entry.key, String(entry.version), stored, message]);
    return Number(reply) === 1;
  }

  async snapshot(scope: string): Promise<VersionedEntry[]> {
    const reply = await this.#send(['HGETALL', this.#key('scope', scope)]);
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
}
