// The three kinds of node-redis client RedisTransport (redis.ts) runs on, behind one face (`Engine`):
// a standalone client (`createClient()`: two connections, their own state events), a Redis Cluster
// client (`createCluster()`: commands routed by key to the master of its slot, classic pub/sub on one
// node of the cluster) and a Sentinel client (`createSentinel()`: commands and pub/sub on the master
// the sentinels name). A Cluster or Sentinel client tells little of its connections, so for them
// "connected" is proven rather than read: any error the client reports (or a command failing without
// a reply) makes the engine go down, and it comes back up only once a probe went all the way through
// (every master's connection up, the transport's channels subscribed, a read answered, and a message
// published and heard back on the subscriber connection).
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import type { TypeMapping } from '@redis/client';

// @redis/client (CommonJS, ~4-7 MiB once loaded) is required only when a transport makes its own
// client from a URL: a process that never syncs through Redis does not load it (issue 15).
const require = createRequire(import.meta.url);
let redisClientModule: typeof import('@redis/client') | undefined;
/** `@redis/client`, loaded on first use. */
function redisClient(): typeof import('@redis/client') {
  redisClientModule ??= require('@redis/client') as typeof import('@redis/client');
  return redisClientModule;
}

/**
 * Whether `err` is a node-redis `ErrorReply` (Redis answered with an error: a `SimpleError`,
 * `BlobError`, `MultiErrorReply`...). Told by its class's name, not `instanceof`: the error comes
 * from the client the user built, whose copy of `@redis/client` may not be switchyard's, and
 * switchyard's own copy is not loaded for a client it was given. @internal
 */
export function isErrorReply(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  for (let proto: unknown = Object.getPrototypeOf(err); proto !== null && proto !== Error.prototype; proto = Object.getPrototypeOf(proto)) {
    if ((proto as { constructor?: { name?: unknown } }).constructor?.name === 'ErrorReply') return true;
  }
  return false;
}

/**
 * What switchyard's Redis transport uses of a node-redis standalone client: the one `createClient()`
 * returns fits, whatever its modules, RESP version or type mapping. For Redis Cluster and Sentinel,
 * see {@link RedisClusterLike} and {@link RedisSentinelLike}.
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
  subscribe(channel: string, listener: (message: unknown, channel: unknown) => void): Promise<unknown>;
  /** Takes `listener` off a channel. */
  unsubscribe(channel: string, listener: (message: unknown, channel: unknown) => void): Promise<unknown>;
  /** Adds a listener of a client event (`ready`, `end`, `error`...). */
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Removes a listener added with `on`. */
  off(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Closes the connection at once, rejecting what is pending. */
  destroy(): void;
}

/**
 * What switchyard's Redis transport uses of a node-redis Redis Cluster client, the one
 * `createCluster()` returns. Each command goes to the master of its key's slot; the transport
 * subscribes through the cluster client's own pub/sub connection (one node of the cluster: Redis
 * Cluster delivers a PUBLISH on any node to the subscribers of every node). Give the client's
 * `defaults` `disableOfflineQueue: true`, so its node connections fail fast as the transport's own do.
 *
 * @example
 * ```ts
 * import { createCluster } from '@redis/client';
 * const client: RedisClusterLike = createCluster({
 *   rootNodes: [{ url: 'redis://10.0.0.1:7000' }, { url: 'redis://10.0.0.2:7000' }],
 *   defaults: { disableOfflineQueue: true },
 * });
 * const shared = sync({ redis: { client } });
 * ```
 */
export interface RedisClusterLike {
  /** Whether the cluster client is open (it stays open while its node connections reconnect). */
  readonly isOpen: boolean;
  /** The masters the client knows, each with its connection once it has one. */
  readonly masters: ReadonlyArray<{
    /** The master's connection, once the client made it. */
    readonly client?:
      | {
          /** Whether commands can be sent on it now. */
          readonly isReady: boolean;
        }
      | undefined;
  }>;
  /** The node the client's pub/sub connection is on, once there is one. */
  readonly pubSubNode?:
    | {
        /** The pub/sub connection. */
        readonly client: {
          /** Whether it is up now. */
          readonly isReady: boolean;
        };
      }
    | undefined;
  /** Discovers the cluster and connects to its masters. */
  connect(): Promise<unknown>;
  /** A new cluster client with the same options, not connected (sticky's shared sessions run on one). */
  duplicate(): unknown;
  /** Sends one command to the master of `firstKey`'s slot. */
  sendCommand(
    firstKey: string | undefined,
    isReadonly: boolean | undefined,
    args: string[],
    options?: { abortSignal?: AbortSignal; typeMapping?: TypeMapping },
  ): Promise<unknown>;
  /** Subscribes `listener` to a channel (classic pub/sub, on one node of the cluster). */
  subscribe(channel: string, listener: (message: unknown, channel: unknown) => void): Promise<unknown>;
  /** Takes `listener` off a channel. */
  unsubscribe(channel: string, listener: (message: unknown, channel: unknown) => void): Promise<unknown>;
  /** Adds a listener of a client event (`error`, `node-error`, `node-reconnecting`, `disconnect`...). */
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Removes a listener added with `on`. */
  off(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Returns a master: its presence tells a Cluster client from the others. */
  getSlotMaster(slot: number): unknown;
}

/**
 * What switchyard's Redis transport uses of a node-redis Sentinel client, the one `createSentinel()`
 * returns: commands go to the master the sentinels name, and the transport subscribes through the
 * client's own pub/sub connection to that master (moved by node-redis when the master changes).
 * Give it `nodeClientOptions: { disableOfflineQueue: true }`.
 *
 * @example
 * ```ts
 * import { createSentinel } from '@redis/client';
 * const client: RedisSentinelLike = createSentinel({
 *   name: 'mymaster',
 *   sentinelRootNodes: [{ host: '10.0.0.1', port: 26379 }],
 *   nodeClientOptions: { disableOfflineQueue: true },
 * });
 * const shared = sync({ redis: { client } });
 * ```
 */
export interface RedisSentinelLike {
  /** Whether the client is open. */
  readonly isOpen: boolean;
  /** Whether its first connection went through (it stays so while the master is away). */
  readonly isReady: boolean;
  /** Asks the sentinels for the master and connects to it. */
  connect(): Promise<unknown>;
  /** The master, when a connection to it is up. */
  getMasterNode():
    | {
        /** The master's host. */
        host: string;
        /** The master's port. */
        port: number;
      }
    | undefined;
  /** Sends one command, to the master unless `isReadonly` and the client reads from replicas. */
  sendCommand(isReadonly: boolean | undefined, args: string[], options?: { abortSignal?: AbortSignal; typeMapping?: TypeMapping }): Promise<unknown>;
  /** Subscribes `listener` to a channel (on the master). */
  subscribe(channel: string, listener: (message: unknown, channel: unknown) => void): Promise<unknown>;
  /** Takes `listener` off a channel. */
  unsubscribe(channel: string, listener: (message: unknown, channel: unknown) => void): Promise<unknown>;
  /** Adds a listener of a client event (`error`, `topology-change`). */
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Removes a listener added with `on`. */
  off(event: string, listener: (...args: unknown[]) => void): unknown;
}

/** The options of one command. */
interface CommandOptions {
  abortSignal?: AbortSignal;
  typeMapping?: TypeMapping;
}

/** A pub/sub listener, as node-redis calls it (a string unless the subscription asked for buffers). */
type MessageListener = (message: unknown, channel: unknown) => void;

/** The kind of client a transport runs on. @internal */
export type ClientKind = 'client' | 'cluster' | 'sentinel';

/** Which kind of node-redis client `value` is, or `undefined` when it is none of them. @internal */
export function clientKind(value: unknown): ClientKind | undefined {
  const c = value as Record<string, unknown> | null;
  if (typeof c !== 'object' || c === null || typeof c.isOpen !== 'boolean') return undefined;
  const has = (...methods: string[]): boolean => methods.every((method) => typeof c[method] === 'function');
  if (!has('connect', 'sendCommand', 'subscribe', 'unsubscribe', 'on', 'off')) return undefined;
  if (has('getMasterNode') && typeof c.isReady === 'boolean') return 'sentinel';
  if (has('getSlotMaster', 'duplicate') && Array.isArray(c.masters)) return 'cluster';
  if (has('duplicate', 'destroy') && typeof c.isReady === 'boolean') return 'client';
  return undefined;
}

/** The error a command rejects with when Redis did not answer in time. */
class CommandTimeout extends Error {}

/**
 * Runs one command with a deadline of `ms`: rejects once it is over, and aborts the command (node-redis
 * drops it if it is not written yet). The deadline is ours: node-redis's own does not reject a command
 * already written to a frozen server. @internal
 */
export async function timed<T>(ms: number, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(new CommandTimeout(`switchyard sync: Redis did not answer within ${ms} ms`));
    }, ms);
  });
  const reply = (async () => run(abort.signal))();
  reply.catch(() => {});
  try {
    return await Promise.race([reply, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** What an engine tells its transport. @internal */
export interface EngineHooks {
  /** The connection state may have changed: the transport reads {@link Engine.up} again. */
  changed(): void;
  /** Subscribes every channel the transport wants that is not subscribed yet; resolves with whether all of them are. */
  resubscribe(): Promise<boolean>;
}

/** How the transport reaches Redis, whatever the client. @internal */
export interface Engine {
  /** Whether commands and subscriptions work now. */
  readonly up: boolean;
  /** Whether a SUBSCRIBE can be sent now. */
  readonly canSubscribe: boolean;
  /** Opens what is not open yet; settles once the first attempt is over, up or not. */
  open(): Promise<void>;
  /** Closes what the engine made (never a client the user gave), stops its timers. */
  close(): void;
  /** Sends one command about `firstKey` (the key or channel the command names first). */
  send(firstKey: string, args: string[], options: CommandOptions): Promise<unknown>;
  subscribe(channel: string, listener: MessageListener): Promise<unknown>;
  unsubscribe(channel: string, listener: MessageListener): Promise<unknown>;
  /** The name of a key or channel: `<prefix>:<kind>:<name>`, the name in a hash tag on a cluster. */
  key(kind: string, name: string): string;
  /** Tells the engine a command failed, so it can tell a lost connection from a refusal. */
  failed(err: unknown): void;
}

/** The client events the standalone engine's connection state follows. */
const STATE_EVENTS = ['ready', 'end', 'reconnecting', 'error'] as const;

/** Where a standalone engine's connections come from: a URL (its own clients) or the user's client. @internal */
export type StandaloneSource = { url: string; timeout: number; maxReconnectDelay: number; client?: undefined } | { client: RedisClientLike; url?: undefined };

/**
 * A standalone Redis: a commands connection and a subscriber connection, each with its own state.
 * With a URL both are the engine's; with the user's client, the commands go through it and the
 * subscriptions through a duplicate of it, which the engine closes (never the user's client). @internal
 */
export class StandaloneEngine implements Engine {
  readonly #prefix: string;
  readonly #commands: RedisClientLike;
  readonly #subscriber: RedisClientLike;
  /** Whether the engine made the commands connection (from a URL), and so closes it. */
  readonly #ownsCommands: boolean;
  /** The first connection attempts {@link StandaloneEngine.open} waits for, settled by `close()` too. */
  readonly #opening = new Set<() => void>();
  readonly #onState: () => void;

  constructor(prefix: string, source: StandaloneSource, hooks: EngineHooks) {
    this.#prefix = prefix;
    this.#onState = () => hooks.changed();
    if (source.client !== undefined) {
      this.#commands = source.client;
      this.#ownsCommands = false;
      this.#subscriber = source.client.duplicate({ disableOfflineQueue: true });
    } else {
      const { maxReconnectDelay } = source;
      this.#commands = redisClient().createClient({
        url: source.url,
        disableOfflineQueue: true,
        socket: {
          connectTimeout: source.timeout,
          reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 16), maxReconnectDelay) * (0.5 + Math.random() / 2),
        },
      });
      this.#ownsCommands = true;
      this.#subscriber = this.#commands.duplicate();
    }
    for (const client of [this.#commands, this.#subscriber]) for (const event of STATE_EVENTS) client.on(event, this.#onState);
    this.#subscriber.on('ready', () => void hooks.resubscribe());
  }

  get up(): boolean {
    return this.#commands.isReady && this.#subscriber.isReady;
  }

  get canSubscribe(): boolean {
    return this.#subscriber.isReady;
  }

  async open(): Promise<void> {
    await Promise.all([this.#open(this.#commands), this.#open(this.#subscriber)]);
  }

  /** Opens `client` unless it is open, and resolves once it is ready or an attempt failed (or the engine closed). */
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

  close(): void {
    if (!this.#ownsCommands) for (const event of STATE_EVENTS) this.#commands.off(event, this.#onState);
    for (const done of [...this.#opening]) done();
    for (const client of this.#ownsCommands ? [this.#commands, this.#subscriber] : [this.#subscriber]) if (client.isOpen) client.destroy();
  }

  send(_firstKey: string, args: string[], options: CommandOptions): Promise<unknown> {
    return this.#commands.sendCommand(args, options);
  }

  subscribe(channel: string, listener: MessageListener): Promise<unknown> {
    return this.#subscriber.subscribe(channel, listener);
  }

  unsubscribe(channel: string, listener: MessageListener): Promise<unknown> {
    return this.#subscriber.unsubscribe(channel, listener);
  }

  key(kind: string, name: string): string {
    return `${this.#prefix}:${kind}:${name}`;
  }

  failed(): void {}
}

/** Replies that mean the server cannot serve now (a cluster without all its slots, a replica without its master, a dataset loading). */
const DOWN_REPLIES = /^(CLUSTERDOWN|MASTERDOWN|LOADING)\b/;
/** The first wait between probes, and the longest (the wait doubles in between). */
const PROBE_DELAY = { first: 50, max: 1000 } as const;
/**
 * How often an engine that is up looks at its client's connections (no I/O): node-redis reports no
 * event when a Sentinel client's master connection drops, and routes its pub/sub connection past
 * `nodeAddressMap`, so that connection's errors do not always tell either.
 */
const WATCH_INTERVAL = 250;

/** What a {@link ProbedEngine} needs of its client: a Cluster or a Sentinel one, adapted. */
interface ProbedClient {
  /** Whether the client is open. */
  isOpen(): boolean;
  /** Whether the client's connections that matter are up (not proof that they work: the probe is). */
  ready(): boolean;
  connect(): Promise<unknown>;
  /** The client events that mean something failed. */
  readonly failureEvents: readonly string[];
  on(event: string, listener: () => void): unknown;
  off(event: string, listener: () => void): unknown;
  send(firstKey: string, args: string[], options: CommandOptions): Promise<unknown>;
  subscribe(channel: string, listener: MessageListener): Promise<unknown>;
  unsubscribe(channel: string, listener: MessageListener): Promise<unknown>;
  /** Whether names carry a hash tag (Redis Cluster). */
  readonly tagged: boolean;
}

/**
 * An engine whose client does not tell when it is usable (Cluster, Sentinel): it goes down on any
 * error the client reports or any command failing without a reply (or with one saying the server
 * cannot serve), and comes up again only once a probe went through: the client's connections up,
 * the transport's channels subscribed, a read answered (which a cluster without all its slots
 * refuses), and a message published on the engine's own probe channel and heard back. Probes run
 * only while down, with backoff, on unref'd timers; while up, the connections are looked at every
 * {@link WATCH_INTERVAL} ms. The user's client is never closed: the engine
 * unsubscribes what it subscribed and stops listening to it. @internal
 */
export class ProbedEngine implements Engine {
  readonly #prefix: string;
  readonly #client: ProbedClient;
  readonly #hooks: EngineHooks;
  readonly #timeout: number;
  readonly #lost = (): void => this.#lose();
  /** The channels subscribed through the user's client, with their listeners: unsubscribed on close. */
  readonly #subscribed = new Map<string, MessageListener>();
  readonly #probeChannel: string;
  readonly #probeKey: string;
  /** Probe messages published and not heard yet, by their content. */
  readonly #waiting = new Map<string, () => void>();
  readonly #onProbe = (message: unknown): void => {
    if (typeof message === 'string') this.#waiting.get(message)?.();
  };
  #up = false;
  #closed = false;
  /** Counts the failures seen: a probe that saw one while it ran does not bring the engine up. */
  #failures = 0;
  #probing = false;
  /** The next probe while down; the watch of the connections while up. */
  #timer: NodeJS.Timeout | undefined;
  #delay: number = PROBE_DELAY.first;
  /** Whether the engine may (re)connect the client: it was not open when the engine got it, and no attempt succeeded yet. */
  #mayConnect: boolean;
  /** Settles the first attempt {@link ProbedEngine.open} waits for. */
  #opened: (() => void) | undefined;

  constructor(prefix: string, client: ProbedClient, timeout: number, hooks: EngineHooks) {
    this.#prefix = prefix;
    this.#client = client;
    this.#timeout = timeout;
    this.#hooks = hooks;
    this.#mayConnect = !client.isOpen();
    const id = randomUUID();
    this.#probeChannel = this.key('probe', id);
    this.#probeKey = this.key('probe-key', id);
    for (const event of client.failureEvents) client.on(event, this.#lost);
  }

  get up(): boolean {
    return this.#up && !this.#closed;
  }

  get canSubscribe(): boolean {
    return !this.#closed && this.#client.isOpen() && this.#client.ready();
  }

  open(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#opened = resolve;
      void this.#probe();
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const event of this.#client.failureEvents) this.#client.off(event, this.#lost);
    for (const done of [...this.#waiting.values()]) done();
    this.#opened?.();
    if (this.#client.isOpen()) for (const [channel, listener] of this.#subscribed) this.#client.unsubscribe(channel, listener).catch(() => {});
    this.#subscribed.clear();
  }

  send(firstKey: string, args: string[], options: CommandOptions): Promise<unknown> {
    return this.#client.send(firstKey, args, options);
  }

  subscribe(channel: string, listener: MessageListener): Promise<unknown> {
    this.#subscribed.set(channel, listener);
    return this.#client.subscribe(channel, listener);
  }

  unsubscribe(channel: string, listener: MessageListener): Promise<unknown> {
    this.#subscribed.delete(channel);
    return this.#client.unsubscribe(channel, listener);
  }

  key(kind: string, name: string): string {
    return this.#client.tagged ? `${this.#prefix}:${kind}:{${name}}` : `${this.#prefix}:${kind}:${name}`;
  }

  failed(err: unknown): void {
    if (err instanceof CommandTimeout) return;
    if (isErrorReply(err) && !DOWN_REPLIES.test((err as Error).message)) return;
    this.#lose();
  }

  /** Something failed: the engine is down until a probe goes through. */
  #lose(): void {
    if (this.#closed) return;
    this.#failures++;
    clearTimeout(this.#timer);
    if (this.#up) {
      this.#up = false;
      this.#hooks.changed();
    }
    if (!this.#probing) this.#schedule();
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#probe(), this.#delay);
    this.#timer.unref();
    this.#delay = Math.min(this.#delay * 2, PROBE_DELAY.max);
  }

  async #probe(): Promise<void> {
    if (this.#closed || this.#probing) return;
    this.#probing = true;
    clearTimeout(this.#timer);
    let failures = this.#failures;
    let through = false;
    try {
      if (!this.#client.isOpen() && this.#mayConnect) {
        await this.#client.connect();
        this.#mayConnect = false;
        // what the connection reported on its way up (a Sentinel client's topology changes) is no failure
        failures = this.#failures;
      }
      through = this.#client.isOpen() && this.#client.ready() && (await this.#roundTrip());
    } catch {
      through = false;
    }
    this.#probing = false;
    this.#opened?.();
    this.#opened = undefined;
    if (this.#closed) return;
    if (through && failures === this.#failures && this.#client.ready()) {
      this.#delay = PROBE_DELAY.first;
      this.#timer = setInterval(() => {
        if (!this.#client.ready()) this.#lose();
      }, WATCH_INTERVAL);
      this.#timer.unref();
      if (!this.#up) {
        this.#up = true;
        this.#hooks.changed();
      }
      return;
    }
    this.#schedule();
  }

  /** The transport's channels and the probe channel subscribed, a read answered, a message published and heard back. */
  async #roundTrip(): Promise<boolean> {
    const subscribed = this.subscribe(this.#probeChannel, this.#onProbe);
    subscribed.catch(() => {});
    await timed(this.#timeout, () => subscribed);
    const resubscribed = this.#hooks.resubscribe();
    if (!(await timed(this.#timeout, () => resubscribed))) return false;
    await timed(this.#timeout, (abortSignal) => this.#client.send(this.#probeKey, ['EXISTS', this.#probeKey], { abortSignal }));
    const nonce = randomUUID();
    let timer: NodeJS.Timeout | undefined;
    const heard = new Promise<boolean>((resolve) => {
      this.#waiting.set(nonce, () => resolve(!this.#closed));
      timer = setTimeout(resolve, this.#timeout, false);
    });
    try {
      await timed(this.#timeout, (abortSignal) => this.#client.send(this.#probeChannel, ['PUBLISH', this.#probeChannel, nonce], { abortSignal }));
      return await heard;
    } finally {
      clearTimeout(timer);
      this.#waiting.delete(nonce);
    }
  }
}

/**
 * A Redis Cluster through the user's `createCluster()` client. Every name carries its scope (or
 * lease, counter, channel) in a hash tag (`<prefix>:scope:{<scope>}`, `<prefix>:version:{<scope>}`),
 * so what belongs to one scope lives in one slot; every command goes to the master of its key's
 * slot, and a PUBLISH to the master of its channel's slot, so the messages of one channel leave from
 * one node, in order (Redis Cluster delivers them to the subscribers of every node). Up while the
 * client is open, every master's connection and its pub/sub connection are up, and no error was
 * reported since the last probe went through. @internal
 */
export function clusterEngine(prefix: string, client: RedisClusterLike, timeout: number, hooks: EngineHooks): Engine {
  return new ProbedEngine(
    prefix,
    {
      isOpen: () => client.isOpen,
      ready: () => {
        const masters = client.masters;
        return masters.length > 0 && masters.every((m) => m.client === undefined || m.client.isReady) && (client.pubSubNode?.client.isReady ?? true);
      },
      connect: () => client.connect(),
      failureEvents: ['error', 'node-error', 'node-reconnecting', 'node-disconnect', 'disconnect'],
      on: (event, listener) => client.on(event, listener),
      off: (event, listener) => client.off(event, listener),
      // Always to the master: a replica may not have the last write yet.
      send: (firstKey, args, options) => client.sendCommand(firstKey, false, args, options),
      subscribe: (channel, listener) => client.subscribe(channel, listener),
      unsubscribe: (channel, listener) => client.unsubscribe(channel, listener),
      tagged: true,
    },
    timeout,
    hooks,
  );
}

/**
 * A master watched by sentinels, through the user's `createSentinel()` client: commands and
 * subscriptions on the master the sentinels name (node-redis moves both when the master changes).
 * Up while a connection to the master is up (node-redis tells it only through `getMasterNode()`,
 * which the engine watches), no error was reported (node-redis reports its pub/sub connection's, and
 * the sentinels' when it looks for a master) and no topology change happened since the last probe
 * went through. @internal
 */
export function sentinelEngine(prefix: string, client: RedisSentinelLike, timeout: number, hooks: EngineHooks): Engine {
  return new ProbedEngine(
    prefix,
    {
      isOpen: () => client.isOpen,
      ready: () => client.isReady && client.getMasterNode() !== undefined,
      connect: () => client.connect(),
      failureEvents: ['error', 'topology-change'],
      on: (event, listener) => client.on(event, listener),
      off: (event, listener) => client.off(event, listener),
      send: (_firstKey, args, options) => client.sendCommand(false, args, options),
      subscribe: (channel, listener) => client.subscribe(channel, listener),
      unsubscribe: (channel, listener) => client.unsubscribe(channel, listener),
      tagged: false,
    },
    timeout,
    hooks,
  );
}
