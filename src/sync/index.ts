// The cluster-wide state's handle (issue 14): `sync()` connects an instance to the engine every
// instance shares (Redis), and the pool, healthCheck(), cache(), sticky() and monitor() reach what
// they share through it: replicas of the server lists, leases, counters, broadcasts and the
// statistics board. Nothing on the request path waits for the engine: what is shared is pushed to
// every instance and read from memory.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { type TimerClock, unrefClock } from '../core/clock.ts';
import type { Duration } from '../core/duration.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { durationOption, objectOption, stringOption } from '../core/options.ts';
import { ConfigReplica, type ConfigReplicaOptions } from './config.ts';
import { Lease } from './lease.ts';
import { type RedisClientLike, type RedisClusterLike, type RedisSentinelLike, RedisTransport } from './redis.ts';
import { parseJsonObject, type Transport } from './transport.ts';

export type { ServerChange, ServerFields } from './config.ts';
export { ConfigReplica } from './config.ts';
export { Lease } from './lease.ts';
export type { Transport, VersionedEntry } from './transport.ts';
export type { RedisClientLike, RedisClusterLike, RedisSentinelLike } from './redis.ts';

/** Default {@link SyncOptions.namespace}. */
export const DEFAULT_SYNC_NAMESPACE = 'switchyard';
/** Default {@link SyncOptions.statsInterval}: how often an instance publishes its statistics. */
export const DEFAULT_STATS_INTERVAL: Duration = '1s';
/** Default {@link SyncOptions.timeout}: how long one Redis command may take. */
export const DEFAULT_SYNC_TIMEOUT: Duration = '1s';

/**
 * Options of {@link sync}.
 *
 * @example
 * ```ts
 * const shared = sync({ redis: 'redis://127.0.0.1:6379', namespace: 'shop-gateway' });
 * ```
 */
export interface SyncOptions {
  /**
   * Where the shared state lives: a `redis://` or `rediss://` URL, or `{ client }`, a node-redis
   * client you made: with `createClient()` (your own TLS, ACL or RESP settings), `createCluster()`
   * for Redis Cluster (each scope's keys share a hash slot) or `createSentinel()` for a master
   * watched by sentinels. Build it without an offline queue (`disableOfflineQueue: true`: in a
   * Cluster client's `defaults`, a Sentinel client's `nodeClientOptions`). A client you give is
   * not closed by {@link SyncHandle.close}. With a Sentinel client, sticky's learned sessions are not
   * shared by default (give `learn` a store).
   */
  redis:
    | string
    | {
        /** The client: connected by the handle if it is not yet, never closed by it. */
        client: RedisClientLike | RedisClusterLike | RedisSentinelLike;
      };
  /**
   * Prefix of every key and channel: instances that share a namespace act as one gateway; other
   * gateways can share the same Redis under other namespaces. @default 'switchyard'
   */
  namespace?: string | undefined;
  /** This instance's name in the statistics' per-instance breakdown; unique per process. @default `<hostname>:<pid>:<random>` */
  instance?: string | undefined;
  /** The longest a Redis command may take before it fails (the instance then carries on alone). @default '1s' */
  timeout?: Duration | undefined;
  /** How often this instance publishes its statistics to the others. @default '1s' */
  statsInterval?: Duration | undefined;
}

/** Events of a {@link SyncHandle}. */
export interface SyncEvents {
  /** The engine is reachable (first connection, or back after an outage). */
  connect: [];
  /** The engine was lost: every instance carries on with what it knows. */
  disconnect: [];
}

/** What an instance publishes about itself on the statistics board, about once per interval. */
export interface InstanceReport {
  /** The instance's name ({@link SyncOptions.instance}). */
  readonly instance: string;
  /** The host it runs on. */
  readonly host: string;
  /** Its process id. */
  readonly pid: number;
  /** Sections by name (a pool's statistics under `pool:<name>`, a cache's under `cache:<zone>`...). */
  readonly sections: Readonly<Record<string, unknown>>;
}

/** The statistics board: every live instance's last report. @internal */
export interface StatsBoard {
  /** Adds a section this instance publishes; returns the function that withdraws it. */
  provide(section: string, read: () => unknown): () => void;
  /** The last report of every instance heard from within three intervals (this one's included, always fresh), by instance name. */
  reports(): Map<string, InstanceReport>;
  /** Publishes this instance's report now (the board also does so every interval). */
  publish(): Promise<void>;
}

/** What the pool, the factories and the monitor reach through `syncInternals(handle)`. @internal */
export interface SyncInternals {
  readonly transport: Transport;
  /** This instance's unique name. */
  readonly instance: string;
  /** The host name leases of scope `'host'` are named after. */
  readonly host: string;
  readonly namespace: string;
  /** The timers background work runs on. */
  readonly clock: TimerClock;
  /** A replica of a server list in `scope` (prefixed by nothing: the transport adds the namespace). */
  replica(scope: string, apply: ConfigReplicaOptions['apply']): ConfigReplica;
  /** A lease on `key` held under this instance's name. */
  lease(key: string, ttl: number, onChange: (held: boolean) => void): Lease;
  readonly board: StatsBoard;
  /** Calls `fn` when the handle closes (before the transport does). */
  onClose(fn: () => void | Promise<void>): void;
  /** Where the engine is, for a store that shares data through the same Redis (sticky's learned sessions); `undefined` on another engine. */
  readonly redis: string | { client: RedisClientLike | RedisClusterLike } | undefined;
}

const kSync = Symbol('switchyard.sync');

const SYNC_OPTIONS = ['redis', 'namespace', 'instance', 'timeout', 'statsInterval'] as const;

/** A transport the handle may own: the Redis one opens and closes connections. */
interface OwnedTransport extends Transport {
  connect?(): Promise<void>;
  close?(): void;
}

/** How the handle is built: from the user's options, or on a given transport (tests). @internal */
export interface SyncSetup {
  transport: OwnedTransport;
  /** Whether {@link SyncHandle.close} closes the transport. */
  owned: boolean;
  namespace: string;
  instance?: string | undefined;
  host?: string | undefined;
  statsInterval?: Duration | undefined;
  clock?: TimerClock | undefined;
  /** Where the engine is, when it is Redis. */
  redis?: string | { client: RedisClientLike | RedisClusterLike } | undefined;
}

/**
 * One instance's connection to the state a cluster of switchyard instances shares. Made by
 * {@link sync}; pass it as `sync` to `createPool`, `cache`, `sticky` and `monitor`.
 *
 * @example
 * ```ts
 * const shared = sync({ redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' });
 * shared.on('disconnect', () => console.warn('Redis lost: carrying on with what this instance knows'));
 * await shared.ready;
 * const pool = createPool({ name: 'api', servers: [{ url: 'http://127.0.0.1:3001' }], sync: shared });
 * ```
 */
export class SyncHandle extends EventEmitter<SyncEvents> {
  /** Settles once the first connection attempt is over (connected or not: a gateway starts without Redis, and catches up later). */
  readonly ready: Promise<void>;
  /** This instance's name. */
  readonly instance: string;
  /** The namespace every key and channel is under. */
  readonly namespace: string;
  readonly #transport: OwnedTransport;
  readonly #owned: boolean;
  readonly #closers: Array<() => void | Promise<void>> = [];
  #closed: Promise<void> | undefined;

  /** @internal Use {@link sync}. */
  constructor(setup: SyncSetup) {
    super();
    this.#transport = setup.transport;
    this.#owned = setup.owned;
    this.namespace = setup.namespace;
    const host = setup.host ?? hostname();
    this.instance = setup.instance ?? `${host}:${process.pid}:${randomUUID().slice(0, 8)}`;
    const clock = setup.clock ?? unrefClock;
    const statsInterval = durationOption(setup.statsInterval, 'statsInterval', DEFAULT_STATS_INTERVAL, true);
    const stop = this.#transport.onConnection((up) => {
      this.emit(up ? 'connect' : 'disconnect');
    });
    this.#closers.push(stop);
    const board = new Board(this.#transport, this.instance, host, statsInterval, clock);
    this.#closers.push(() => board.close());
    const internals: SyncInternals = {
      transport: this.#transport,
      instance: this.instance,
      host,
      namespace: this.namespace,
      clock,
      board,
      replica: (scope, apply) => new ConfigReplica({ transport: this.#transport, scope, origin: this.instance, apply }),
      lease: (key, ttl, onChange) => new Lease({ transport: this.#transport, key, holder: this.instance, ttl, clock, onChange }),
      redis: setup.redis,
      onClose: (fn) => {
        this.#closers.unshift(fn);
      },
    };
    Object.defineProperty(this, kSync, { value: internals });
    this.ready = (this.#transport.connect?.() ?? Promise.resolve()).then(() => {});
  }

  /** Whether the engine is reachable now. */
  get connected(): boolean {
    return this.#transport.connected;
  }

  /** Stops everything shared through this handle (leases given back, timers stopped) and closes its connections. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      for (const fn of this.#closers.splice(0)) {
        try {
          await fn();
        } catch {}
      }
      if (this.#owned) this.#transport.close?.();
    })();
    return this.#closed;
  }
}

/**
 * Connects this instance to the state it shares with the other instances of the gateway, through
 * Redis. Nothing connects anywhere until you call it; nothing on the request path waits for Redis.
 *
 * @example
 * ```ts
 * import { createPool, monitor, sync } from 'switchyard-proxy';
 * const shared = sync({ redis: 'redis://127.0.0.1:6379', namespace: 'gw' });
 * const pool = createPool({ name: 'api', servers: [{ url: 'http://127.0.0.1:3001' }], sync: shared });
 * const api = monitor({ pools: [pool], sync: shared });
 * // at shutdown
 * pool.close();
 * await shared.close();
 * ```
 * @throws InvalidOptionError on an invalid option.
 */
export function sync(options: SyncOptions): SyncHandle {
  const o = objectOption(options, '', SYNC_OPTIONS, 'an object { redis, namespace? }');
  const namespace = stringOption(o.namespace, 'namespace', DEFAULT_SYNC_NAMESPACE, { nonEmpty: true });
  const timeout = durationOption(o.timeout, 'timeout', DEFAULT_SYNC_TIMEOUT, true);
  const instance = o.instance === undefined ? undefined : stringOption(o.instance, 'instance', '', { nonEmpty: true });
  const redis = o.redis;
  let transport: RedisTransport;
  let engine: string | { client: RedisClientLike | RedisClusterLike } | undefined;
  if (typeof redis === 'string') {
    transport = new RedisTransport({ url: redis, namespace, timeout });
    engine = redis;
  } else if (redis !== null && typeof redis === 'object' && !Array.isArray(redis) && 'client' in redis) {
    objectOption(redis, 'redis', ['client'], 'a redis:// URL or { client }');
    const client = (redis as { client: RedisClientLike | RedisClusterLike | RedisSentinelLike }).client;
    transport = new RedisTransport({ client, namespace, timeout });
    // sticky's shared sessions run on a duplicate of the client, which a Sentinel client cannot make
    engine = transport.kind === 'sentinel' ? undefined : { client: client as RedisClientLike | RedisClusterLike };
  } else {
    throw new InvalidOptionError('redis', 'a redis:// or rediss:// URL, or { client } (a node-redis client)', redis);
  }
  return new SyncHandle({ transport, owned: true, namespace, instance, statsInterval: o.statsInterval as Duration | undefined, redis: engine });
}

/** Whether a value is a {@link SyncHandle}. @internal */
export function isSyncHandle(value: unknown): value is SyncHandle {
  return value instanceof SyncHandle;
}

/** The internals of a handle. @internal */
export function syncInternals(handle: SyncHandle): SyncInternals {
  return (handle as unknown as { [kSync]: SyncInternals })[kSync];
}

/**
 * The `sync` option of createPool, cache(), sticky() and monitor(): a handle, or the options of
 * one the caller then owns (`owned: true`, to close with itself). `undefined` when not given.
 * @internal
 */
export function syncOption(value: unknown, path = 'sync'): { handle: SyncHandle; owned: boolean } | undefined {
  if (value === undefined) return undefined;
  if (value instanceof SyncHandle) return { handle: value, owned: false };
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new InvalidOptionError(path, 'a handle from sync(), or sync options such as { redis: "redis://127.0.0.1:6379" }', value);
  try {
    return { handle: sync(value as SyncOptions), owned: true };
  } catch (err) {
    if (err instanceof InvalidOptionError)
      throw new InvalidOptionError(`${path}.${err.option}`, '', undefined, err.message.replace(/"([^"]*)"/, `"${path}.$1"`));
    throw err;
  }
}

/** The statistics board: publishes this instance's sections every interval and keeps the others' last reports. */
class Board implements StatsBoard {
  readonly #transport: Transport;
  readonly #self: { instance: string; host: string; pid: number };
  readonly #interval: number;
  readonly #clock: TimerClock;
  readonly #sections = new Map<string, () => unknown>();
  /** The others' reports by instance name: the last valid one read, and the text heard since, read when reports() asks. */
  readonly #heard = new Map<string, HeardReport>();
  /** How this instance's own reports begin (the engine echoes them back). */
  readonly #ownPrefix: string;
  #timer: unknown;
  #stop: () => void;

  constructor(transport: Transport, instance: string, host: string, interval: number, clock: TimerClock) {
    this.#transport = transport;
    this.#self = { instance, host, pid: process.pid };
    this.#ownPrefix = `{"instance":${JSON.stringify(instance)},`;
    this.#interval = interval;
    this.#clock = clock;
    this.#stop = transport.listen('stats', (message) => this.#hear(message));
  }

  provide(section: string, read: () => unknown): () => void {
    this.#sections.set(section, read);
    if (this.#timer === undefined && this.#sections.size > 0) this.#schedule();
    return () => {
      if (this.#sections.get(section) === read) this.#sections.delete(section);
    };
  }

  #schedule(): void {
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.publish().catch(() => {});
      this.#forget();
      if (this.#sections.size > 0) this.#schedule();
    }, this.#interval);
  }

  #report(): InstanceReport {
    const sections: Record<string, unknown> = {};
    for (const [name, read] of this.#sections) {
      try {
        sections[name] = read();
      } catch {}
    }
    return { ...this.#self, sections };
  }

  async publish(): Promise<void> {
    if (!this.#transport.connected || this.#sections.size === 0) return;
    await this.#transport.broadcast('stats', JSON.stringify(this.#report()));
  }

  /**
   * A report heard. Every instance hears every report each interval, but the reports are read only
   * when the monitor asks: a report that begins as a board writes it (`{"instance":"<name>",`) is kept
   * as text under its name, and {@link Board.reports} reads the newest valid one; this instance's
   * own, echoed back by the engine, is dropped unread. Any other message is read now.
   */
  #hear(message: string): void {
    if (message.startsWith(this.#ownPrefix)) return;
    const now = this.#clock.now();
    const name = nameOf(message);
    if (name === undefined) {
      const report = reportOf(message);
      if (report !== undefined && report.instance !== this.#self.instance) {
        const heard = this.#heard.get(report.instance);
        if (heard === undefined) this.#heard.set(report.instance, { at: now, report, unread: [] });
        else {
          heard.at = now;
          heard.report = report;
          heard.unread.length = 0;
        }
      }
      return;
    }
    if (name === this.#self.instance) return;
    const heard = this.#heard.get(name);
    if (heard === undefined) this.#heard.set(name, { at: now, report: undefined, unread: [{ text: message, at: now }] });
    else if (heard.unread.push({ text: message, at: now }) > MAX_UNREAD) heard.unread.shift();
  }

  /** Forgets the instances not heard from for three intervals, whether or not anyone reads the reports. */
  #forget(): void {
    const oldest = this.#clock.now() - 3 * this.#interval;
    for (const [name, heard] of this.#heard) if ((heard.unread.at(-1)?.at ?? heard.at) < oldest) this.#heard.delete(name);
  }

  reports(): Map<string, InstanceReport> {
    const out = new Map<string, InstanceReport>([[this.#self.instance, this.#report()]]);
    const oldest = this.#clock.now() - 3 * this.#interval;
    for (const [name, heard] of this.#heard) {
      // The newest text that is a report of this instance; the others (malformed, naming another) are ignored.
      for (let i = heard.unread.length - 1; i >= 0; i--) {
        const { text, at } = heard.unread[i] as { text: string; at: number };
        const report = reportOf(text);
        if (report !== undefined && report.instance === name) {
          heard.report = report;
          heard.at = at;
          break;
        }
      }
      heard.unread.length = 0;
      if (heard.report === undefined || heard.at < oldest) this.#heard.delete(name);
      else out.set(name, heard.report);
    }
    return out;
  }

  close(): void {
    this.#stop();
    this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#sections.clear();
  }
}

/** What the board keeps of another instance's reports. */
interface HeardReport {
  /** When `report` was heard. */
  at: number;
  /** The last valid report read. */
  report: InstanceReport | undefined;
  /** What was heard since under the instance's name, oldest first, not read yet (at most {@link MAX_UNREAD}). */
  unread: Array<{ text: string; at: number }>;
}

/** The texts a board keeps unread per instance: its newest valid report survives this many malformed ones heard after it. */
const MAX_UNREAD = 4;

/** The instance name a report begins with when a board wrote it (`{"instance":"<name>",`); `undefined` for any other text. */
function nameOf(message: string): string | undefined {
  const quoted = /^\{"instance":("(?:[^"\\]|\\.){1,400}"),/.exec(message)?.[1];
  if (quoted === undefined) return undefined;
  try {
    const name: unknown = JSON.parse(quoted);
    return typeof name === 'string' && name.length <= 200 ? name : undefined;
  } catch {
    return undefined;
  }
}

/** The report a message holds, checked (the engine is shared: anything may arrive); `undefined` when it holds none. */
function reportOf(message: string): InstanceReport | undefined {
  const r = parseJsonObject(message) as Partial<InstanceReport> | undefined;
  if (r === undefined) return undefined;
  if (typeof r.instance !== 'string' || r.instance.length > 200) return undefined;
  if (typeof r.host !== 'string' || typeof r.pid !== 'number' || r.sections === null || typeof r.sections !== 'object' || Array.isArray(r.sections))
    return undefined;
  return { instance: r.instance, host: r.host, pid: r.pid, sections: r.sections };
}
