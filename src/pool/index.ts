import { EventEmitter } from 'node:events';
import { Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions as HttpsAgentOptions } from 'node:https';
import type { Dispatcher } from 'undici';
import type { Cancellation } from '../core/cancel.ts';
import { channels } from '../core/diagnostics.ts';
import type { Exchange } from '../core/exchange.ts';
import type { Duration } from '../core/duration.ts';
import { InvalidOptionError, ServerNotFoundError } from '../core/errors.ts';
import { booleanOption, durationOption, instanceOption, integerOption, nowOption, objectOption, randomOption, stringOption } from '../core/options.ts';
import { plainAgent, tlsSettings, UpstreamConnections } from './connections.ts';
import { applyUpdate, resolveServer, resolveUpdate, serverInfo, type FieldContext, type ServerConfig } from './fields.ts';
import { kPool, type PoolInternals } from './internal.ts';
import { PoolSync } from './sync.ts';
import { type SyncHandle, type SyncOptions, syncOption } from '../sync/index.ts';
import { resolveMethod, type MethodOption } from './methods/index.ts';
import type { AttemptTimings, Balancer, MethodCapabilities, PeerSet, Selection, StreamTimings } from './methods/types.ts';
import { emptyResponses, histogramOf, movingAverage, Peer, recordResponseTime, type AttemptOutcome, type ServerState, type ServerStats } from './peer.ts';

export type { ServerState, ServerStats, ResponseCounters, ResponseTimeHistogram, HealthCheckStats } from './peer.ts';
export { RESPONSE_TIME_BUCKETS } from './peer.ts';
export type { MethodOption } from './methods/index.ts';
export { DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_CONNS, DEFAULT_MAX_FAILS, DEFAULT_WEIGHT } from './fields.ts';

/** Default idle keep-alive connections kept per server (nginx `keepalive 32`). */
export const DEFAULT_KEEPALIVE = 32;
/** Default idle timeout of a kept-alive upstream connection (nginx `keepalive_timeout 60s`). */
export const DEFAULT_KEEPALIVE_TIMEOUT = '60s';

// ServerOptions, ServerUpdate and ServerInfo name the fields of the server-field table (fields.ts),
// which validates, defaults, updates and maps them to the API: a field is added there and here.

/** One upstream server, as given to {@link createPool} or {@link UpstreamPool.add}. */
export interface ServerOptions {
  /**
   * `http://host:port` or `https://host:port`, optionally with a path prefix joined before each request path.
   * Consistent hashing hashes its `host[:port]` as written, as nginx hashes the `server` text, so keep
   * the spelling of an nginx config you migrate (`10.0.0.1:80` and `10.0.0.1` place different points).
   */
  url: string;
  /** Stable id for run-time changes. @default the url (with `#2`, `#3`… for repeats) */
  id?: string | undefined;
  /** Integer >= 1: share of requests relative to the others. @default 1 */
  weight?: number | undefined;
  /** Maximum simultaneous requests; 0 is unlimited. @default 0 */
  maxConns?: number | undefined;
  /** Failures within `failTimeout` that make the server unavailable; 0 disables accounting. @default 1 */
  maxFails?: number | undefined;
  /** The failure window and the unavailability period. @default '10s' */
  failTimeout?: Duration | undefined;
  /** Used only when every primary server is unavailable. Not with hash, ip-hash or random. @default false */
  backup?: boolean | undefined;
  /** Permanently unavailable. @default false */
  down?: boolean | undefined;
  /** Gets only requests bound to it by sticky(); no new ones. @default false */
  drain?: boolean | undefined;
  /** Session route for sticky(); at most 32 characters. @default none: the session id is then the MD5 of `host:port`, as nginx (see {@link ServerInfo.sid}) */
  route?: string | undefined;
  /**
   * NGINX Plus `slow_start`: when the server becomes healthy again (healthCheck()) or available again
   * after passive failure, its weight rises linearly from zero to `weight` over this time. Not with
   * hash, ip-hash or random; ignored in a pool of one server, as nginx. @default 0 (off)
   */
  slowStart?: Duration | undefined;
  /**
   * Speak HTTP/2 to the server: over TLS (`https://`) negotiated by ALPN (a server that answers
   * HTTP/1.1 instead is spoken to in HTTP/1.1), in clear text (`http://`, h2c) with prior knowledge.
   * Requests share a connection (up to 100 at once); response trailers are passed on to the client
   * (HTTP/2, or HTTP/1.1 with a chunked response), so gRPC services can be balanced.
   * @default false (HTTP/1.1)
   */
  http2?: boolean | undefined;
}

/** Fields {@link UpstreamPool.update} can change at run time. */
export type ServerUpdate = Partial<Pick<ServerOptions, 'weight' | 'maxConns' | 'maxFails' | 'failTimeout' | 'down' | 'drain' | 'route' | 'slowStart'>>;

/** A server's configuration as the pool holds it (durations in ms, no credentials). */
export interface ServerInfo {
  /** The server's id. */
  id: string;
  /** The server's url, without credentials. */
  url: string;
  /** Share of requests relative to the others. */
  weight: number;
  /** Maximum simultaneous requests; 0 is unlimited. */
  maxConns: number;
  /** Failures within `failTimeout` that make the server unavailable; 0 disables accounting. */
  maxFails: number;
  /** The failure window and the unavailability period, in milliseconds. */
  failTimeout: number;
  /** Used only when every primary server is unavailable. */
  backup: boolean;
  /** Permanently unavailable. */
  down: boolean;
  /** Gets only requests bound to it by sticky(). */
  drain: boolean;
  /** Session route for sticky(); empty when none was given. */
  route: string;
  /** The session id sticky() binds to: `route`, else the hex MD5 of `host:port` (nginx's SID). */
  sid: string;
  /** Slow start in milliseconds (0: off). */
  slowStart: number;
  /** Requests go to the server over HTTP/2. */
  http2: boolean;
}

/** Keep-alive settings of a pool's upstream connections. */
export interface AgentSettings {
  /** Keep upstream connections open between requests. @default true */
  keepAlive?: boolean | undefined;
  /** Idle connections kept per server (nginx `keepalive`); one more that becomes idle is closed. 0: none (as keepAlive false). @default 32 */
  maxFreeSockets?: number | undefined;
  /** Maximum connections per server, in use or idle; requests beyond wait for one. @default Infinity */
  maxSockets?: number | undefined;
  /**
   * Idle connections are closed after this long, or sooner when the server's `Keep-Alive: timeout=N`
   * header says so (undici closes them a moment before the server would). 0: only the server closes them.
   * @default '60s'
   */
  keepAliveTimeout?: Duration | undefined;
}

/** Options of {@link createPool}. */
export interface PoolOptions {
  /** Name shown in stats and errors (nginx's upstream name). @default 'upstream' */
  name?: string | undefined;
  /** Balancing method. @default 'round-robin' */
  method?: MethodOption | undefined;
  /** The servers, in order: order matters to round robin and hash as in nginx. */
  servers: ServerOptions[];
  /**
   * Upstream connection reuse: keep-alive settings; or an undici `Dispatcher` of your own
   * (`{ dispatcher }`: an `Agent`, a `ProxyAgent`, one with interceptors...), which then makes every
   * connection (the pool neither configures nor closes it, and cannot count the bytes of each attempt
   * on its connection, nor retry a kept-alive connection the server closed); or node:http agents
   * (`{ http, https }`), whose settings the pool reads (keep-alive, `maxSockets`, `maxFreeSockets`,
   * `timeout`, and the https agent's TLS options): requests go through undici, not through the
   * agents, so an agent that makes its connections otherwise (a proxy agent) is refused.
   * @default { keepAlive: true, maxFreeSockets: 32, keepAliveTimeout: '60s' }
   */
  agent?:
    | AgentSettings
    | {
        /** An undici Dispatcher every upstream request goes through; the pool does not close it. */
        dispatcher: Dispatcher;
      }
    | {
        /** Settings for `http://` servers, read from this agent. @default those of a new `http.Agent()` */
        http?: HttpAgent | undefined;
        /** Settings and TLS options for `https://` servers, read from this agent. @default those of a new `https.Agent(tls)` */
        https?: HttpsAgent | undefined;
      };
  /**
   * TLS options for `https://` servers (`ca`, `cert`, `key`, `rejectUnauthorized`, `servername`...),
   * for proxied requests, health probes and WebSocket tunnels alike. SNI is `servername`, else the
   * server's host name; a server given by IP address gets none.
   * @default {}
   */
  tls?: HttpsAgentOptions | undefined;
  /** Clock in ms, injectable for tests. @default Date.now */
  now?: (() => number) | undefined;
  /**
   * Random numbers in [0, 1) for the `random` and `random-two` methods, injectable for tests (a
   * seeded generator makes their choices repeatable). @default Math.random
   */
  random?: (() => number) | undefined;
  /**
   * Requests that find no server able to take them (all at `maxConns`, say) wait
   * here, first in first out, for one to free up (NGINX Plus `queue N timeout=T`).
   * Past `size` waiting requests or after `timeout`, the request fails as when no
   * server is available. @default none: such requests fail at once
   */
  queue?: QueueOptions | undefined;
  /**
   * Share this pool's run-time configuration, passive health and statistics with every instance of
   * the gateway (see the README's "Running several instances"): a handle from {@link sync}, or sync
   * options (`{ redis: 'redis://127.0.0.1:6379' }`) for a connection the pool makes and closes with
   * itself. Instances share a pool by its `name`. @default none: everything stays in this process
   */
  sync?: SyncHandle | SyncOptions | undefined;
}

/** Options of the pool's wait queue. */
export interface QueueOptions {
  /** Most requests waiting at once. */
  size: number;
  /** Longest wait. @default '60s' */
  timeout?: Duration | undefined;
}

/** Default longest wait in the pool's queue (NGINX Plus `queue … timeout=60s`). */
export const DEFAULT_QUEUE_TIMEOUT = '60s';
/** Default pool name (nginx's upstream name in stats and errors). */
export const DEFAULT_POOL_NAME = 'upstream';

/** The keys of {@link PoolOptions}. */
const POOL_OPTIONS = ['name', 'method', 'servers', 'agent', 'tls', 'now', 'random', 'queue', 'sync'] as const satisfies ReadonlyArray<keyof PoolOptions>;
/** The keys of {@link QueueOptions}. */
const QUEUE_OPTIONS = ['size', 'timeout'] as const satisfies ReadonlyArray<keyof QueueOptions>;
/** The keys of {@link AgentSettings}, and of the `{ http, https }` form of {@link PoolOptions.agent}. */
const AGENT_OPTIONS = ['keepAlive', 'maxFreeSockets', 'maxSockets', 'keepAliveTimeout', 'http', 'https', 'dispatcher'] as const;

/** The wait queue's statistics (NGINX Plus `queue`). */
export interface QueueStats {
  /** Requests waiting now. */
  size: number;
  /** Most requests waiting at once: the queue's `size` option. */
  maxSize: number;
  /** Requests refused because the queue was full, or that waited past the timeout. */
  overflows: number;
}

/** Pool-wide statistics. */
export interface PoolStats {
  /** The pool's name. */
  name: string;
  /** The balancing method's name (`random-two` for random with `two`). */
  method: string;
  /** Every server's statistics, in the pool's order. */
  servers: ServerStats[];
  /** Removed servers that still have requests in flight. */
  zombies: number;
  /** Idle keep-alive connections to the servers (NGINX Plus `keepalive`). */
  keepalive: number;
  /** The wait queue, when the pool has one. */
  queue: QueueStats | undefined;
}

/**
 * One server's stream (TCP/UDP) statistics, counted apart from its HTTP ones (NGINX Plus
 * `/api/9/stream/upstreams/{name}` peer). State, weight, `unavail`, health checks and downtime are
 * the server's, whatever the traffic; `active` counts HTTP requests and stream connections in flight
 * (one count, as the balancing method sees it).
 */
export interface StreamServerStats
  extends Pick<
    ServerStats,
    'id' | 'server' | 'name' | 'backup' | 'weight' | 'state' | 'active' | 'maxConns' | 'unavail' | 'healthChecks' | 'downtime' | 'downstart' | 'selected'
  > {
  /** Stream connections (and UDP sessions) sent to the server, connect failures included. */
  connections: number;
  /** Bytes sent to the server by stream connections. */
  sent: number;
  /** Bytes received from the server by stream connections. */
  received: number;
  /** Stream connections that failed to connect (nginx counts these as `fails`). */
  fails: number;
  /** Average time to connect, in ms (nginx's moving average). */
  connectTime: number;
  /** Average time to the first byte from the server, in ms. */
  firstByteTime: number;
  /** Average time of a whole session, in ms. */
  responseTime: number;
}

/** A pool's stream statistics ({@link UpstreamPool.streamStats}). */
export interface StreamPoolStats {
  /** The pool's name. */
  name: string;
  /** The balancing method's name. */
  method: string;
  /** Every server's stream statistics, in the pool's order. */
  servers: StreamServerStats[];
  /** Removed servers that still have connections or requests in flight. */
  zombies: number;
}

interface Waiter {
  sel: Selection;
  done: (peer: Peer | undefined) => void;
}

/** A server state change, as emitted by the pool's `state` event. */
export interface StateChange {
  /** The pool's name. */
  pool: string;
  /** The server's id. */
  id: string;
  /** The server's url, without credentials. */
  server: string;
  /** The state before. */
  from: ServerState;
  /** The state now. */
  to: ServerState;
}

/** The arguments of the pool's `add`, `remove` and `update` events: the server's settings. */
export type ServerEvent = [server: ServerInfo];

/** Events of {@link UpstreamPool}. */
export interface PoolEvents {
  /** A server changed state (up, unavail, down, draining...). */
  state: [change: StateChange];
  /** A server was added at run time (here, or on another instance through `sync`). */
  add: ServerEvent;
  /** A server was removed at run time. */
  remove: ServerEvent;
  /** A server's settings changed at run time. */
  update: ServerEvent;
}

/**
 * The upstream pool: the one object shared by balance(), sticky(), healthCheck()
 * and monitor(). Holds the servers with nginx's balancing and passive-health
 * state, changes at run time without dropping requests in flight, and reports
 * live statistics. Create it with {@link createPool}.
 */
export class UpstreamPool extends EventEmitter<PoolEvents> {
  /** The pool's name. */
  readonly name: string;
  /** The balancing method's name. */
  readonly method: string;
  /** What the method allows (backup servers, slow start) and when it takes header times. */
  #capabilities: MethodCapabilities;
  #balancer: Balancer;
  #peers: Peer[] = [];
  #set: PeerSet = { primary: [], backup: [], single: false, totalWeight: 0 };
  #zombies = new Set<Peer>();
  #now: () => number;
  #connections: UpstreamConnections;
  #tls: Readonly<HttpsAgentOptions>;
  #closed = false;
  /** nginx `peer.tries`, recomputed whenever the server list or a server's down/drain changes. */
  #tries = 0;
  #queueSize: number;
  #queueTimeout: number;
  #waiters: Waiter[] = [];
  #overflows = 0;
  #nextCheckId = 1;
  #sync: PoolSync | undefined;
  /**
   * Settles once the pool holds the run-time configuration its instances share (with `sync`: the
   * changes Redis keeps, read at start; at once when Redis cannot be reached, or without `sync`).
   * Await it before serving to start with the shared list rather than the static one. Never rejects.
   * @example
   * ```ts
   * const pool = createPool({ name: 'api', servers: [{ url: 'http://10.0.0.1:8080' }], sync: { redis: 'redis://127.0.0.1:6379' } });
   * await pool.ready;
   * ```
   */
  readonly ready: Promise<void>;

  /** @internal Use {@link createPool}. */
  constructor(options: PoolOptions) {
    super();
    objectOption(options, '', POOL_OPTIONS, 'an object with servers');
    this.name = stringOption(options.name, 'name', DEFAULT_POOL_NAME, { nonEmpty: true });
    const method = resolveMethod(options.method);
    this.method = method.name;
    this.#capabilities = method.capabilities;
    this.#now = nowOption(options.now);
    this.#balancer = method.create({ random: randomOption(options.random) });
    if (!Array.isArray(options.servers) || options.servers.length === 0) {
      throw new InvalidOptionError('servers', 'a non-empty array of { url }', options.servers);
    }
    // one by one, so that a repeated url gets its `#2` id from the servers before it
    const peers: Peer[] = [];
    for (const [i, s] of options.servers.entries()) peers.push(this.#makePeer(s, `servers[${i}]`, peers));
    const ids = new Set<string>();
    for (const [i, p] of peers.entries()) {
      if (ids.has(p.id)) throw new InvalidOptionError(`servers[${i}].id`, 'an id not used by another server', p.id);
      ids.add(p.id);
    }
    const q = objectOption(options.queue, 'queue', QUEUE_OPTIONS, 'an object { size, timeout }', true);
    if (options.queue !== undefined && q.size === undefined) throw new InvalidOptionError('queue.size', 'an integer >= 1', undefined);
    this.#queueSize = integerOption(q.size, 'queue.size', 0, { min: 1 });
    this.#queueTimeout = durationOption(q.timeout, 'queue.timeout', DEFAULT_QUEUE_TIMEOUT);
    this.#connections = this.#makeConnections(options);
    this.#tls = this.#connections.settings?.tls ?? tlsSettings(options.tls ?? {});
    this.#peers = peers;
    const start = this.#now();
    for (const p of peers) initialState(p, start);
    this.#rebuild();
    Object.defineProperty(this, kPool, { value: this.#internals() });
    const shared = syncOption(options.sync);
    if (shared !== undefined) {
      this.#sync = new PoolSync(this, shared.handle, shared.owned, {
        add: (server) => this.#add(server),
        update: (id, changes) => this.#update(this.#find(id), changes),
        remove: (id) => this.#remove(this.#find(id)),
        failed: (id) => this.#sharedFailure(id),
        peer: (id) => this.#peers.find((p) => p.id === id),
      });
    }
    this.ready = this.#sync?.ready() ?? Promise.resolve();
  }

  #makeConnections(options: PoolOptions): UpstreamConnections {
    const tls = options.tls;
    if (tls !== undefined && (tls === null || typeof tls !== 'object' || Array.isArray(tls)))
      throw new InvalidOptionError('tls', 'an object of TLS options (ca, servername, rejectUnauthorized...)', tls);
    const a = objectOption(options.agent, 'agent', AGENT_OPTIONS, 'agent settings, { dispatcher } or { http, https } agents', true);
    if (a.dispatcher !== undefined) {
      const d = a.dispatcher as Partial<Dispatcher> | null;
      if (d === null || typeof d !== 'object' || typeof d.dispatch !== 'function')
        throw new InvalidOptionError('agent.dispatcher', 'an undici Dispatcher (an Agent, a Pool, a ProxyAgent...)', a.dispatcher);
      return new UpstreamConnections({ keepAlive: true, maxFree: 0, maxSockets: Infinity, keepAliveTimeout: 0, tls: tlsSettings(tls ?? {}) }, d as Dispatcher);
    }
    if (a.http instanceof HttpAgent || a.https instanceof HttpsAgent) {
      // The user's agents: their settings, read (requests go through undici).
      const http = a.http === undefined ? new HttpAgent() : plainAgent(a.http as HttpAgent, 'agent.http', HttpAgent);
      const https = a.https === undefined ? undefined : plainAgent(a.https as HttpsAgent, 'agent.https', HttpsAgent);
      const o = (https ?? (http as unknown as { options: HttpsAgentOptions })).options as HttpsAgentOptions & { timeout?: number };
      return new UpstreamConnections({
        keepAlive: o.keepAlive === true,
        maxFree: o.maxFreeSockets ?? 256,
        maxSockets: o.maxSockets ?? Infinity,
        keepAliveTimeout: o.timeout !== undefined && o.timeout > 0 ? o.timeout : durationOption(undefined, 'agent', DEFAULT_KEEPALIVE_TIMEOUT),
        tls: tlsSettings(https === undefined ? (tls ?? {}) : https.options),
      });
    }
    const maxFreeSockets = integerOption(a.maxFreeSockets, 'agent.maxFreeSockets', DEFAULT_KEEPALIVE);
    const maxSockets = a.maxSockets === Infinity ? Infinity : integerOption(a.maxSockets, 'agent.maxSockets', Infinity, { min: 1 });
    const keepAliveTimeout = durationOption(a.keepAliveTimeout, 'agent.keepAliveTimeout', DEFAULT_KEEPALIVE_TIMEOUT);
    const keepAlive = booleanOption(a.keepAlive, 'agent.keepAlive', true) && maxFreeSockets > 0;
    return new UpstreamConnections({ keepAlive, maxFree: maxFreeSockets, maxSockets, keepAliveTimeout, tls: tlsSettings(tls ?? {}) });
  }

  /** What the server fields are checked against: the method and what it allows. */
  get #fieldContext(): FieldContext {
    return { method: this.method, capabilities: this.#capabilities };
  }

  #makePeer(s: ServerOptions, path: string, existing: readonly Peer[]): Peer {
    const taken = (id: string): boolean => existing.some((p) => p.id === id) || this.#peers.some((p) => p.id === id);
    const { config, target } = resolveServer(s, path, this.#fieldContext, taken);
    return new Peer(config, target);
  }

  #rebuild(): void {
    const primary = this.#peers.filter((p) => !p.backup);
    const backup = this.#peers.filter((p) => p.backup);
    this.#set = {
      primary,
      backup,
      single: primary.length === 1 && backup.length === 0,
      totalWeight: primary.reduce((sum, p) => sum + p.weight, 0),
    };
    let tries = 0;
    for (const p of this.#peers) if (!p.down && !p.drain) tries++;
    this.#tries = this.#set.single ? 1 : tries;
    this.#balancer.rebuild?.(this.#set);
  }

  #find(id: string): Peer {
    if (typeof id !== 'string') throw new InvalidOptionError('id', 'a server id string', id);
    const peer = this.#peers.find((p) => p.id === id);
    if (peer === undefined) throw new ServerNotFoundError(id);
    return peer;
  }

  /** The servers' current configuration, in order. */
  get servers(): ServerInfo[] {
    return this.#peers.map(serverInfo);
  }

  /** The server with this id, or undefined. */
  get(id: string): ServerInfo | undefined {
    const peer = this.#peers.find((p) => p.id === id);
    return peer === undefined ? undefined : serverInfo(peer);
  }

  /**
   * Adds a server at run time; it takes new requests at once.
   * @example
   * ```ts
   * pool.add({ url: 'http://10.0.0.4:8080', weight: 2 });
   * ```
   */
  add(server: ServerOptions): ServerInfo {
    const result = this.#add(server);
    this.#sync?.added(result.id);
    return result;
  }

  #add(server: ServerOptions): ServerInfo {
    const peer = this.#makePeer(server, 'server', []);
    if (this.#peers.some((p) => p.id === peer.id)) throw new InvalidOptionError('server.id', 'an id not used by another server', peer.id);
    initialState(peer, this.#now());
    this.#peers.push(peer);
    try {
      this.#rebuild();
    } catch (err) {
      // the method refused the new list (a consistent hash ring too large): the pool stays as it was
      this.#peers.pop();
      this.#rebuild();
      throw err;
    }
    const result = serverInfo(peer);
    if (channels.poolChange.hasSubscribers) channels.poolChange.publish({ pool: this.name, action: 'add', id: peer.id, server: peer.url, changes: undefined });
    this.emit('add', result);
    this.#serveQueue();
    return result;
  }

  /**
   * Removes a server at run time. Requests in flight on it finish normally.
   * @example
   * ```ts
   * pool.update('a', { drain: true });
   * // ...when pool.stats() shows it idle:
   * pool.remove('a');
   * ```
   */
  remove(id: string): ServerInfo {
    const result = this.#remove(this.#find(id));
    this.#sync?.removed(result.id);
    return result;
  }

  #remove(peer: Peer): ServerInfo {
    const id = peer.id;
    if (this.#peers.length === 1) throw new InvalidOptionError('id', 'a server other than the last one (a pool cannot be empty)', id);
    this.#peers = this.#peers.filter((p) => p !== peer);
    peer.removed = true;
    if (peer.conns > 0) this.#zombies.add(peer);
    this.#rebuild();
    const result = serverInfo(peer);
    if (channels.poolChange.hasSubscribers)
      channels.poolChange.publish({ pool: this.name, action: 'remove', id: peer.id, server: peer.url, changes: undefined });
    this.emit('remove', result);
    return result;
  }

  /**
   * Changes a server's settings at run time: `weight`, `maxConns`, `maxFails`, `failTimeout`,
   * `down`, `drain`, `route` and `slowStart` (see {@link ServerUpdate}). Validated like
   * {@link createPool}; a new weight starts a fresh round.
   * @example
   * ```ts
   * pool.update('http://10.0.0.2:8080', { drain: true });
   * ```
   */
  update(id: string, changes: ServerUpdate): ServerInfo {
    const result = this.#update(this.#find(id), changes);
    this.#sync?.updated(result.id, changes);
    return result;
  }

  #update(peer: Peer, changes: ServerUpdate): ServerInfo {
    const resolved = resolveUpdate(changes, this.#fieldContext);
    const before: Record<string, unknown> = {};
    for (const name of Object.keys(resolved)) before[name] = (peer as unknown as Record<string, unknown>)[name];
    applyUpdate(peer, resolved);
    try {
      this.#rebuild();
    } catch (err) {
      // the method refused the change (a consistent hash ring too large): the server keeps its settings
      applyUpdate(peer, before as Partial<ServerConfig>);
      this.#rebuild();
      throw err;
    }
    const result = serverInfo(peer);
    if (channels.poolChange.hasSubscribers)
      channels.poolChange.publish({ pool: this.name, action: 'update', id: peer.id, server: peer.url, changes: { ...changes } });
    this.emit('update', result);
    this.#observe(peer, this.#now());
    this.#serveQueue();
    return result;
  }

  /**
   * Live statistics of every server, as NGINX Plus's API reports them.
   * @example
   * ```ts
   * for (const s of pool.stats().servers) console.log(s.id, s.state, s.active, s.responses.total);
   * ```
   */
  stats(): PoolStats {
    const now = this.#now();
    return {
      name: this.name,
      method: this.method,
      servers: this.#peers.map((p) => this.#serverStats(p, now)),
      zombies: this.#zombies.size,
      keepalive: this.#connections.idle(),
      queue: this.#queueSize === 0 ? undefined : { size: this.#waiters.length, maxSize: this.#queueSize, overflows: this.#overflows },
    };
  }

  /**
   * The stream (TCP/UDP) statistics of every server, counted apart from {@link UpstreamPool.stats}'s
   * HTTP ones (NGINX Plus `/api/9/stream/upstreams/{name}`).
   * @example
   * ```ts
   * for (const s of pool.streamStats().servers) console.log(s.id, s.connections, s.sent, s.received);
   * ```
   */
  streamStats(): StreamPoolStats {
    const now = this.#now();
    return {
      name: this.name,
      method: this.method,
      servers: this.#peers.map((p): StreamServerStats => {
        const { id, server, name, backup, weight, state, active, maxConns, unavail, healthChecks, downtime, downstart, selected } = this.#serverStats(p, now);
        return {
          ...{ id, server, name, backup, weight, state, active, maxConns, unavail, healthChecks, downtime, downstart, selected },
          connections: p.streamConnections,
          sent: p.streamSent,
          received: p.streamReceived,
          fails: p.streamFails,
          connectTime: p.streamConnectTime,
          firstByteTime: p.streamFirstByteTime,
          responseTime: p.streamResponseTime,
        };
      }),
      zombies: this.#zombies.size,
    };
  }

  /** Resets the stream counters of every server (NGINX Plus `DELETE /stream/upstreams/{name}`); the HTTP ones stay. */
  resetStreamStats(): void {
    for (const p of this.#peers) {
      p.streamConnections = 0;
      p.streamSent = 0;
      p.streamReceived = 0;
      p.streamFails = 0;
    }
  }

  /** Resets the counters of every server (NGINX Plus `DELETE /http/upstreams/{name}`). */
  resetStats(): void {
    for (const p of this.#peers) {
      p.requests = 0;
      p.responses = emptyResponses();
      p.sent = 0;
      p.received = 0;
      p.totalFails = 0;
      p.unavail = 0;
      p.downtime = 0;
      p.hcChecks = 0;
      p.hcFails = 0;
      p.hcUnhealthy = 0;
      p.rtBuckets.fill(0);
      p.rtCount = 0;
      p.rtSum = 0;
      if (p.downSince !== undefined) p.downSince = this.#now();
    }
  }

  #serverStats(p: Peer, now: number): ServerStats {
    const state = this.#observe(p, now);
    return {
      id: p.id,
      server: p.url,
      name: p.name,
      backup: p.backup,
      weight: p.weight,
      state,
      active: p.conns,
      maxConns: p.maxConns,
      maxFails: p.maxFails,
      failTimeout: p.failTimeout,
      route: p.route,
      requests: p.requests,
      responses: { ...p.responses, codes: { ...p.responses.codes } },
      sent: p.sent,
      received: p.received,
      fails: p.totalFails,
      unavail: p.unavail,
      downtime: p.downtime + (p.downSince === undefined ? 0 : now - p.downSince),
      downstart: p.downSince === undefined ? undefined : new Date(p.downSince).toISOString(),
      selected: p.selectedAt === undefined ? undefined : new Date(p.selectedAt).toISOString(),
      headerTime: p.avgHeaderTime,
      responseTime: p.avgResponseTime,
      healthChecks: { checks: p.hcChecks, fails: p.hcFails, unhealthy: p.hcUnhealthy, lastPassed: p.hcLastPassed },
      responseTimeHist: histogramOf(p),
    };
  }

  /** Computes the state, records downtime and emits `state` on a change. */
  #observe(p: Peer, now: number): ServerState {
    const to = p.state(now);
    const from = p.lastState;
    if (to === from) return to;
    p.lastState = to;
    const wasDown = from !== 'up' && from !== 'draining';
    const isDown = to !== 'up' && to !== 'draining';
    if (!wasDown && isDown) p.downSince = now;
    if (wasDown && !isDown && p.downSince !== undefined) {
      p.downtime += now - p.downSince;
      p.downSince = undefined;
    }
    const change: StateChange = { pool: this.name, id: p.id, server: p.url, from, to };
    if (channels.poolState.hasSubscribers) channels.poolState.publish(change);
    this.emit('state', change);
    return to;
  }

  /** Closes the pool's own upstream connections (not a dispatcher given as `agent.dispatcher`) and fails waiting requests. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sync?.close();
    for (const w of this.#waiters.splice(0)) w.done(undefined);
    this.#connections.close();
  }

  // ---- the request path and the health checks: reached through internals(pool) (internal.ts) ----

  /** The pool's internals, kept under a module-private symbol. */
  #internals(): PoolInternals {
    const pool = this;
    return Object.freeze({
      selection: (req: IncomingMessage | undefined, ex: Exchange | undefined, stream = false): Selection => ({
        tried: new Set(),
        backup: false,
        now: 0,
        req,
        ex,
        stream,
        hash: 0,
        rehash: 0,
        tries: 0,
        key: undefined,
      }),
      maxTries: () => this.#tries,
      select: (sel: Selection) => this.#select(sel),
      get queueing(): boolean {
        return pool.#queueSize > 0;
      },
      wait: (sel: Selection, signal: Cancellation) => this.#wait(sel, signal),
      header: (peer: Peer, headerTime: number) => this.#header(peer, headerTime),
      transferred: (peer: Peer, sent: number, received: number) => {
        peer.sent += sent;
        peer.received += received;
      },
      finish: (peer: Peer, outcome: AttemptOutcome, timings: AttemptTimings, status: number | undefined) => this.#finish(peer, outcome, timings, status),
      finishStream: (peer: Peer, outcome: AttemptOutcome, timings: StreamTimings) => this.#finishStream(peer, outcome, timings),
      agentFor: (peer: Peer) => this.#connections.routeFor(peer),
      tls: this.#tls,
      peers: () => this.#peers,
      healthCheckId: () => this.#nextCheckId++,
      healthProbe: (peer: Peer, passed: boolean) => {
        peer.hcChecks++;
        if (!passed) peer.hcFails++;
        peer.hcLastPassed = passed;
      },
      healthMark: (peer: Peer, checkId: number, failing: boolean, pending: boolean) => this.#healthMark(peer, checkId, failing, pending),
      now: () => this.#now(),
      sync: () => this.#sync?.handle,
    });
  }

  /** Picks a server for the next attempt (conns++, probe bookkeeping), or undefined. */
  #select(sel: Selection): Peer | undefined {
    const now = this.#now();
    sel.now = now;
    const hint = sel.ex?.hint;
    const peer = (hint === undefined ? undefined : this.#bound(hint, sel, now)) ?? this.#balancer.select(this.#set, sel);
    if (peer === undefined) return undefined;
    sel.tried.add(peer);
    if (now - peer.checked > peer.failTimeout) peer.checked = now;
    peer.conns++;
    if (sel.stream) peer.streamConnections++;
    else peer.requests++;
    peer.selectedAt = now;
    this.#balancer.chosen?.(peer, now);
    return peer;
  }

  /**
   * The server a sticky hint names (nginx's `get_rr_peer_by_sid`), looked up in the list in use
   * (the backups only after a fall-over): not for a server already tried, down, failed or full, but
   * a draining one takes it. The method then does its bookkeeping (round robin charges the bound
   * request its share of the weights).
   */
  #bound(hint: string, sel: Selection, now: number): Peer | undefined {
    const list = sel.backup ? this.#set.backup : this.#set.primary;
    let found: Peer | undefined;
    for (const p of list) {
      if (p.sid === hint) {
        found = p;
        break;
      }
    }
    if (found === undefined || sel.tried.has(found) || found.down || found.checking() || found.unhealthy() || found.failed(now) || found.full())
      return undefined;
    return this.#balancer.bound?.(this.#set, sel, found) ?? found;
  }

  /** Waits in the queue for a server (NGINX Plus `queue`). */
  #wait(sel: Selection, signal: Cancellation): Promise<Peer | undefined> {
    if (this.#closed || this.#waiters.length >= this.#queueSize) {
      this.#overflows++;
      return Promise.resolve(undefined);
    }
    return new Promise((resolve) => {
      const waiter: Waiter = {
        sel,
        done: (peer) => {
          clearTimeout(timer);
          signal.off(onAbort);
          resolve(peer);
        },
      };
      const leave = (): void => {
        const i = this.#waiters.indexOf(waiter);
        if (i !== -1) this.#waiters.splice(i, 1);
      };
      const timer = setTimeout(() => {
        leave();
        this.#overflows++;
        waiter.done(undefined);
      }, this.#queueTimeout);
      const onAbort = (): void => {
        leave();
        waiter.done(undefined);
      };
      signal.onAbort(onAbort);
      this.#waiters.push(waiter);
    });
  }

  /** Hands freed capacity to waiting requests, first come first served. */
  #serveQueue(): void {
    while (this.#waiters.length > 0) {
      const peer = this.#select(this.#waiters[0]!.sel);
      if (peer === undefined) return;
      this.#waiters.shift()!.done(peer);
    }
  }

  /** The response header of an attempt arrived: true when the method takes its header time now. */
  #header(peer: Peer, headerTime: number): boolean {
    this.#balancer.header?.(peer, headerTime, this.#now());
    if (this.#capabilities.headerTime !== 'header') return false;
    peer.avgHeaderTime = movingAverage(peer.avgHeaderTime, headerTime);
    return true;
  }

  /** An attempt ended: statistics, the method's bookkeeping, passive health (nginx's free_round_robin_peer). */
  #finish(peer: Peer, outcome: AttemptOutcome, timings: AttemptTimings, status: number | undefined): void {
    const now = this.#now();
    if (status !== undefined) countResponse(peer, status);
    // Response times, for every method: nginx's moving averages of successful attempts with a header.
    if (timings.header >= 0 && outcome === 'ok') {
      recordResponseTime(peer, timings.response);
      peer.avgResponseTime = movingAverage(peer.avgResponseTime, timings.response);
      if (!timings.inflightDone) peer.avgHeaderTime = movingAverage(peer.avgHeaderTime, timings.header);
    }
    this.#release(peer, outcome, timings, now);
  }

  /** A stream connection ended: its statistics (apart from HTTP's), then as an HTTP attempt. */
  #finishStream(peer: Peer, outcome: AttemptOutcome, t: StreamTimings): void {
    const now = this.#now();
    peer.streamSent += t.sent;
    peer.streamReceived += t.received;
    if (outcome === 'failed') peer.streamFails++;
    if (outcome === 'ok') {
      if (t.connect >= 0) peer.streamConnectTime = movingAverage(peer.streamConnectTime, t.connect);
      if (t.firstByte >= 0) peer.streamFirstByteTime = movingAverage(peer.streamFirstByteTime, t.firstByte);
      peer.streamResponseTime = movingAverage(peer.streamResponseTime, t.response);
    }
    this.#release(peer, outcome, { header: t.firstByte, response: t.response, inflightDone: false }, now);
  }

  /** The end of an attempt common to HTTP and streams: the method's bookkeeping, passive health, the queue. */
  #release(peer: Peer, outcome: AttemptOutcome, timings: AttemptTimings, now: number): void {
    this.#balancer.finished?.(peer, outcome, timings, now);
    peer.conns--;
    if (peer.removed) {
      if (peer.conns === 0) this.#zombies.delete(peer);
      this.#serveQueue();
      return;
    }
    if (this.#set.single && this.#set.primary[0] === peer) {
      peer.fails = 0;
      this.#observe(peer, now);
      this.#serveQueue();
      return;
    }
    if (outcome === 'failed') {
      peer.totalFails++;
      peer.fails++;
      peer.accessed = now;
      peer.checked = now;
      if (peer.maxFails !== 0) {
        peer.effectiveWeight -= Math.floor(peer.weight / peer.maxFails);
        // The change to 'unavail' is published by #observe below.
        if (peer.fails >= peer.maxFails) peer.unavail++;
        this.#sync?.failure(peer, peer.fails >= peer.maxFails);
      }
      if (peer.effectiveWeight < 0) peer.effectiveWeight = 0;
    } else if (peer.accessed < peer.checked) {
      // Back after passive failure: slow start ramps its weight up again.
      if (peer.maxFails !== 0 && peer.fails >= peer.maxFails) peer.startRamp(now);
      peer.fails = 0;
    }
    this.#observe(peer, now);
    this.#serveQueue();
  }

  /**
   * Other instances' failures took the server to `maxFails` (shared passive health): it is
   * unavailable here too for `failTimeout`, as if the failures had happened here.
   */
  #sharedFailure(id: string): void {
    const peer = this.#peers.find((p) => p.id === id);
    if (peer === undefined || peer.maxFails === 0 || this.#set.single) return;
    const now = this.#now();
    if (peer.failed(now)) return;
    peer.fails = peer.maxFails;
    peer.accessed = now;
    peer.checked = now;
    peer.effectiveWeight = 0;
    peer.unavail++;
    this.#observe(peer, now);
  }

  /** What check `checkId` says of a server (see PoolInternals.healthMark). */
  #healthMark(peer: Peer, checkId: number, failing: boolean, pending: boolean): void {
    const now = this.#now();
    // Unhealthy or still checking (mandatory): coming out of either warms up with slow start.
    const wasBlocked = peer.failingChecks.size > 0 || peer.pendingChecks.size > 0;
    const wasUnhealthy = peer.failingChecks.size > 0;
    if (failing) peer.failingChecks.add(checkId);
    else peer.failingChecks.delete(checkId);
    if (pending) peer.pendingChecks.add(checkId);
    else peer.pendingChecks.delete(checkId);
    peer.held = peer.failingChecks.size + peer.pendingChecks.size;
    if (!wasUnhealthy && peer.failingChecks.size > 0) peer.hcUnhealthy++;
    if (wasBlocked && peer.failingChecks.size === 0 && peer.pendingChecks.size === 0 && !this.#set.single) peer.startRamp(now);
    if (peer.removed) return;
    this.#observe(peer, now);
    this.#serveQueue();
  }
}

/** A server's configured state is where it starts: no `state` event for it, downtime counted from now. */
function initialState(peer: Peer, now: number): void {
  peer.lastState = peer.state(now);
  if (peer.lastState !== 'up' && peer.lastState !== 'draining') peer.downSince = now;
}

function countResponse(peer: Peer, status: number): void {
  const r = peer.responses;
  const cls = `${Math.floor(status / 100)}xx` as '1xx' | '2xx' | '3xx' | '4xx' | '5xx';
  if (cls in r) r[cls]++;
  r.codes[status] = (r.codes[status] ?? 0) + 1;
  r.total++;
}

/**
 * Creates the upstream pool shared by balance(), sticky(), healthCheck() and
 * monitor(). Validates every option at once and throws an
 * {@link InvalidOptionError} naming the field.
 * @example
 * ```ts
 * const pool = createPool({
 *   name: 'app',
 *   method: 'least-conn',
 *   servers: [
 *     { url: 'http://127.0.0.1:3001', weight: 2 },
 *     { url: 'http://127.0.0.1:3002', maxFails: 3, failTimeout: '30s' },
 *     { url: 'http://127.0.0.1:3003', backup: true },
 *   ],
 * });
 * ```
 */
export function createPool(options: PoolOptions): UpstreamPool {
  return new UpstreamPool(options);
}

/**
 * The pool a factory is given (balance(), sticky(), healthCheck(), upgrade()): an UpstreamPool, or
 * an InvalidOptionError naming `path`. @internal
 */
export function poolOption(value: unknown, path = 'pool'): UpstreamPool {
  return instanceOption(value, path, UpstreamPool, 'an UpstreamPool from createPool()');
}
