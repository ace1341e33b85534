// A pool's upstream connections: undici dispatchers (one Pool per server origin, and per protocol
// when a server speaks HTTP/2) built from the pool's keep-alive, TLS and connection settings. The
// proxy engine (src/proxy/forward.ts) sends its attempts through them with the Dispatcher API; what
// it needs to know of the connection an attempt went out on (the socket, for the bytes it moved and
// whether it was reused; a write error while it owns it) it reads from the Connection this module
// keeps on every socket it makes.
import type { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions as HttpsAgentOptions } from 'node:https';
import { isIP, type Socket } from 'node:net';
import { Client, Pool, buildConnector, type Dispatcher } from 'undici';
import { InvalidOptionError } from '../core/errors.ts';
import type { Peer } from './peer.ts';

/** Keep-alive and TLS settings of a pool's own connections, resolved. @internal */
export interface ConnectionSettings {
  /** Keep connections open between requests. */
  readonly keepAlive: boolean;
  /** Idle connections kept per server (nginx `keepalive`). */
  readonly maxFree: number;
  /** Connections per server, in use or idle (Infinity: no limit). */
  readonly maxSockets: number;
  /** An idle connection is closed after this long (ms), or sooner when the server's Keep-Alive header says so. */
  readonly keepAliveTimeout: number;
  /** TLS options of connections to `https://` servers. */
  readonly tls: Readonly<HttpsAgentOptions>;
}

/** What an attempt is told when a write on the connection it owns failed (the server reset the connection mid-upload). @internal */
export interface WriteErrorOwner {
  onWriteError(err: Error): void;
}

/** One upstream connection made by a pool's own dispatchers. @internal */
export class Connection {
  readonly socket: Socket;
  readonly origin: OriginState;
  /** Requests sent on it so far. */
  uses = 0;
  /** Counted among its origin's idle connections. */
  idle = false;
  /** The attempt that owns it now (write errors go to it), or undefined between attempts. */
  owner: WriteErrorOwner | undefined;

  constructor(socket: Socket, origin: OriginState) {
    this.socket = socket;
    this.origin = origin;
  }

  /** True for an HTTP/2 session's socket, shared by the streams of several requests. */
  get multiplexed(): boolean {
    return (this.socket as Socket & { alpnProtocol?: string | false }).alpnProtocol === 'h2';
  }

  /** An attempt starts on it: no longer idle. Returns true when it carried a request before (a kept-alive connection). */
  take(owner: WriteErrorOwner): boolean {
    if (this.idle) {
      this.idle = false;
      this.origin.idle--;
    }
    this.owner = owner;
    return this.uses++ > 0;
  }

  /**
   * The attempt that owned it is over. `reusable`: its response ended whole on a connection undici
   * keeps; it is then idle, unless its origin already keeps `maxFree` idle connections (nginx's
   * `keepalive` cache): then it is closed.
   */
  release(owner: WriteErrorOwner, reusable: boolean): void {
    if (this.owner === owner) this.owner = undefined;
    if (!reusable || this.idle || this.socket.destroyed || this.multiplexed) return;
    if (this.origin.idle >= this.origin.maxFree) {
      this.socket.destroy();
      return;
    }
    this.idle = true;
    this.origin.idle++;
  }

  /** The socket closed. */
  closed(): void {
    if (this.idle) {
      this.idle = false;
      this.origin.idle--;
    }
  }
}

/** One server origin's connections: how many are idle, and how many may be. @internal */
export interface OriginState {
  idle: number;
  readonly maxFree: number;
}

const kConnection = Symbol('switchyard.connection');
const kClientSlot = Symbol('switchyard.clientSlot');

type TrackedSocket = Socket & { [kConnection]?: Connection };

/** The connection a client of the pool's own dispatchers is on, or is making. @internal */
export interface ClientSlot {
  /** The latest connection the client made (undici keeps one per client). */
  connection: Connection | undefined;
  /** The socket while it connects, so that a connect timeout can end it. */
  connecting: Socket | undefined;
}

/** A dispatch handler that wants to know the client it was given to (the engine's attempts). @internal */
export interface SlotAware {
  slot: ClientSlot | undefined;
}

/**
 * Node destroys a socket on its first failed write, discarding what the server sent before it
 * reset the connection: an upload refused early (413, 401 with `Connection: close`, then a reset)
 * would lose its answer. While an attempt owns the connection, a failed write is reported to the
 * attempt instead, so the read side stays open and the response already received is parsed as
 * usual; the reset then ends the read side too. Installed once per socket.
 */
function guardWrites(socket: Socket, connection: Connection): void {
  type Callback = (err?: Error | null) => void;
  // Node hands every write the same callback (the stream's onwrite): its guarded form is made once.
  let plain: Callback | undefined;
  let guarded: Callback | undefined;
  const guard = (cb: Callback): Callback => {
    if (cb === plain) return guarded!;
    plain = cb;
    guarded = (err) => {
      const owner = connection.owner;
      if (err == null || owner === undefined) return cb(err);
      owner.onWriteError(err);
      cb();
    };
    return guarded;
  };
  const write = socket._write;
  socket._write = function (chunk, encoding, cb) {
    write.call(this, chunk, encoding, guard(cb));
  };
  const writev = socket._writev;
  if (writev !== undefined) {
    socket._writev = function (chunks, cb) {
      writev.call(this, chunks, guard(cb));
    };
  }
}

/** undici's connector, as this module calls it (its published types are narrower than what it does). */
type Connector = (options: Record<string, unknown>, callback: (err: Error | null, socket: Socket | null) => void) => Socket;

/**
 * An undici Client that tells the attempts dispatched to it which connection carries them: each
 * client has a connector of its own, which records the socket it makes.
 */
class TrackedClient extends Client {
  readonly [kClientSlot]: ClientSlot;

  constructor(origin: string | URL, options: Client.Options, base: Connector, state: OriginState, sni: string | undefined) {
    const slot: ClientSlot = { connection: undefined, connecting: undefined };
    const connect: Connector = (o, callback) => {
      const socket: TrackedSocket = base({ ...o, servername: sni }, (err, made) => {
        if (slot.connecting === socket) slot.connecting = undefined;
        callback(err, made);
      });
      const connection = new Connection(socket, state);
      socket[kConnection] = connection;
      slot.connection = connection;
      slot.connecting = socket;
      guardWrites(socket, connection);
      socket.once('close', () => connection.closed());
      return socket;
    };
    super(origin, { ...options, connect: connect as unknown as NonNullable<Client.Options['connect']> });
    this[kClientSlot] = slot;
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    // Only the engine's attempts are given to the pool's own dispatchers.
    (handler as unknown as SlotAware).slot = this[kClientSlot];
    return super.dispatch(options, handler);
  }
}

/** The longest delay a timer takes (about 24.8 days): a keepAliveTimeout of 0, no limit of the gateway's. */
const LONGEST_TIMER = 2 ** 31 - 1;

/** Where an attempt to a server goes: the dispatcher, and what its dispatch options name. @internal */
export interface Route {
  readonly dispatcher: Dispatcher;
  /** `http://host:port` or `https://host:port`. */
  readonly origin: string;
  /** The TLS server name dispatches carry for an `https://` server (the SNI itself is the connector's), undefined for `http://`. */
  readonly servername: string | undefined;
  /** True when the dispatcher is the pool's own: attempts learn their connection (bytes, reuse). */
  readonly tracked: boolean;
  /** True when requests go over HTTP/2 (the server's `http2`). */
  readonly http2: boolean;
}

/** The SNI of connections to `target`: the pool's `tls.servername`, else the host name; none for an IP address. */
function sniFor(tls: Readonly<HttpsAgentOptions>, hostname: string): string | undefined {
  return tls.servername ?? (isIP(hostname) === 0 ? hostname : undefined);
}

/**
 * A pool's upstream connections: its own undici Pools (one per origin and protocol), or the user's
 * dispatcher. @internal
 */
export class UpstreamConnections {
  readonly settings: ConnectionSettings | undefined;
  readonly #user: Dispatcher | undefined;
  readonly #pools = new Map<string, { pool: Pool; state: OriginState }>();
  readonly #routes = new WeakMap<Peer, Route>();
  #closed = false;

  /** With `settings`, the pool's own connections; with `user`, every request goes to that dispatcher. */
  constructor(settings: ConnectionSettings | undefined, user?: Dispatcher) {
    this.settings = settings;
    this.#user = user;
  }

  /** The route of attempts to `peer` (made once per server). */
  routeFor(peer: Peer): Route {
    let route = this.#routes.get(peer);
    if (route === undefined) {
      route = this.#route(peer);
      this.#routes.set(peer, route);
    }
    return route;
  }

  #route(peer: Peer): Route {
    const t = peer.target;
    const host = t.hostname.includes(':') ? `[${t.hostname}]` : t.hostname;
    const origin = `${t.protocol}//${host}:${t.port}`;
    const http2 = peer.http2;
    const tls = this.settings?.tls ?? {};
    const servername = t.protocol === 'https:' ? (tls.servername ?? t.hostname) : undefined;
    if (this.#user !== undefined) return { dispatcher: this.#user, origin, servername, tracked: false, http2 };
    const key = http2 ? `${origin} h2` : origin;
    let entry = this.#pools.get(key);
    if (entry === undefined) {
      entry = this.#makePool(origin, t.protocol, t.hostname, http2);
      this.#pools.set(key, entry);
    }
    return { dispatcher: entry.pool, origin, servername, tracked: true, http2 };
  }

  #makePool(origin: string, protocol: string, hostname: string, http2: boolean): { pool: Pool; state: OriginState } {
    const s = this.settings!;
    const keepAlive = s.keepAlive || http2;
    const state: OriginState = { idle: 0, maxFree: keepAlive ? s.maxFree : 0 };
    const base = buildConnector({
      ...(protocol === 'https:' ? s.tls : {}),
      allowH2: http2 && protocol === 'https:',
      // h2c with prior knowledge: the connection speaks HTTP/2 from its first byte.
      useH2c: http2 && protocol === 'http:',
      // The attempt's connectTimeout governs (it ends a connect that hangs): none here.
      timeout: 0,
    } as unknown as buildConnector.BuildOptions) as unknown as Connector;
    const sni = protocol === 'https:' ? sniFor(s.tls, hostname) : undefined;
    const options = {
      connections: s.maxSockets === Infinity ? null : s.maxSockets,
      // HTTP/2: up to 100 streams per connection; HTTP/1.1: one request at a time, none pipelined.
      pipelining: http2 ? 100 : keepAlive ? 1 : 0,
      keepAliveTimeout: s.keepAliveTimeout > 0 ? s.keepAliveTimeout : LONGEST_TIMER,
      keepAliveMaxTimeout: s.keepAliveTimeout > 0 ? s.keepAliveTimeout : LONGEST_TIMER,
      // The engine times every attempt itself (connectTimeout, headerTimeout, idleTimeout).
      headersTimeout: 0,
      bodyTimeout: 0,
      factory: (o: string | URL, opts: object) => new TrackedClient(o, opts as Client.Options, base, state, sni),
      ...(http2 ? { allowH2: true, maxConcurrentStreams: 100 } : {}),
    };
    return { pool: new Pool(origin, options as Pool.Options), state };
  }

  /** Idle kept-alive connections of the pool's own dispatchers. */
  idle(): number {
    let n = 0;
    for (const { state } of this.#pools.values()) n += state.idle;
    return n;
  }

  /** Closes the pool's own connections (the user's dispatcher is the user's to close). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const { pool } of this.#pools.values()) pool.destroy().catch(() => undefined);
    this.#pools.clear();
  }
}

/** Settings of an https.Agent about its pool of connections, not about TLS. */
const AGENT_ONLY = [
  'keepAlive',
  'keepAliveMsecs',
  'agentKeepAliveTimeoutBuffer',
  'maxSockets',
  'maxTotalSockets',
  'maxFreeSockets',
  'maxCachedSessions',
  'scheduling',
  'timeout',
  'proxyEnv',
  'defaultPort',
  'path',
] as const;

/** An https agent's options less those about its pool of connections: what a connection of its own needs. @internal */
export function tlsSettings(options: Readonly<HttpsAgentOptions>): Readonly<HttpsAgentOptions> {
  const settings: Record<string, unknown> = { ...options };
  for (const key of AGENT_ONLY) delete settings[key];
  return Object.freeze(settings) as HttpsAgentOptions;
}

/**
 * Checks that a user's node:http or node:https agent can be read as settings: a plain `http.Agent`
 * or `https.Agent` (or a subclass that makes its connections the usual way). An agent that makes
 * them otherwise (a proxy agent, a custom `createConnection`) cannot be honoured by the undici
 * engine: the pool refuses it, naming the `dispatcher` form that can.
 * @internal
 */
export function plainAgent<T extends HttpAgent>(agent: T, path: string, base: typeof HttpAgent | typeof HttpsAgent): T {
  const proto = base.prototype as unknown as Record<string, unknown>;
  const own = agent as unknown as Record<string, unknown>;
  for (const method of ['createConnection', 'createSocket', 'addRequest']) {
    if (own[method] !== proto[method]) {
      throw new InvalidOptionError(
        path,
        `an ${base === HttpsAgent ? 'https' : 'http'}.Agent that makes its connections itself (this one overrides ${method}): ` +
          'switchyard reads its settings and sends requests through undici; give an undici Dispatcher as agent.dispatcher instead',
        agent,
      );
    }
  }
  return agent;
}
