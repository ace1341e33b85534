// streamBalance(): nginx's stream module (TCP and UDP load balancing) on an UpstreamPool. The pool
// chooses (every method, backup, down, drain, maxConns, maxFails, slow start) and keeps the stream
// statistics apart from HTTP's; this folder moves the bytes: tcp.ts (one TCP connection), udp.ts
// (datagram sessions), proxy-protocol.ts, rate.ts.
import type { Socket as DgramSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duration } from '../core/duration.ts';
import type { SwitchyardError } from '../core/errors.ts';
import { exchange, type Exchange } from '../core/exchange.ts';
import { booleanOption, durationOption, enumOption, integerOption, objectOption, stringOption } from '../core/options.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { internals, type PoolInternals } from '../pool/internal.ts';
import { poolOption, type ServerInfo, type StateChange, type UpstreamPool } from '../pool/index.ts';
import { compileTrust, type TrustProxy, type TrustTest } from '../proxy/trust.ts';
import { TcpSession } from './tcp.ts';
import { UdpListener } from './udp.ts';

/** Default time to connect to a server (nginx `proxy_connect_timeout 60s`). */
export const DEFAULT_STREAM_CONNECT_TIMEOUT = '60s';
/** Default idle time between two reads or writes before a session is closed (nginx `proxy_timeout 10m`). */
export const DEFAULT_STREAM_IDLE_TIMEOUT = '10m';
/** Default time to read a client's PROXY protocol header (nginx `proxy_protocol_timeout 30s`). */
export const DEFAULT_PROXY_PROTOCOL_TIMEOUT = '30s';

/** Options of {@link streamBalance}. */
export interface StreamBalanceOptions {
  /**
   * `'tcp'`: the handler takes connections (`net.createServer(handler)`, `tls.createServer(handler)`).
   * `'udp'`: the handler is attached to a `dgram` socket ({@link StreamHandler.attach}), each client
   * address and port a session (nginx `listen ... udp`). @default 'tcp'
   */
  protocol?: 'tcp' | 'udp' | undefined;
  /** Time to connect to a server before the next is tried (nginx `proxy_connect_timeout`). TCP only. @default '60s' */
  connectTimeout?: Duration | undefined;
  /**
   * A session with no byte read or written either way for this long is closed (nginx `proxy_timeout`);
   * for UDP, a session that waits this long for a server's answer. @default '10m'
   */
  idleTimeout?: Duration | undefined;
  /**
   * Try the next server when connecting fails or times out (nginx `proxy_next_upstream on`). Once the
   * connection is made and a byte may have gone to the server it is never retried. UDP: a session
   * whose server is unreachable (an ICMP unreachable) before it answered moves on with its datagrams.
   * @default true
   */
  nextUpstream?: boolean | undefined;
  /** Most connection attempts per client connection, the first included; 0: as many as the pool has servers (nginx `proxy_next_upstream_tries`). @default 0 */
  tries?: number | undefined;
  /** Time from the first attempt after which no other server is tried; 0: no limit (nginx `proxy_next_upstream_timeout`). @default 0 */
  nextUpstreamTimeout?: Duration | undefined;
  /** Bytes per second read from the client, per connection; 0: unlimited (nginx `proxy_upload_rate`). TCP only. @default 0 */
  uploadRate?: number | undefined;
  /** Bytes per second read from the server, per connection; 0: unlimited (nginx `proxy_download_rate`). TCP only. @default 0 */
  downloadRate?: number | undefined;
  /**
   * Send the PROXY protocol header to the server before the client's bytes (nginx `proxy_protocol on`,
   * which sends version 1): `'v1'` (text) or `'v2'` (binary; for UDP, in front of every datagram, as
   * NGINX Plus does). @default false
   */
  proxyProtocol?: false | 'v1' | 'v2' | undefined;
  /**
   * Clients that must begin with a PROXY protocol header (v1 or v2, nginx `listen ... proxy_protocol`
   * with `set_real_ip_from`): `true`, addresses or CIDR ranges (`'10.0.0.0/8'`, `'loopback'`), or a
   * function of the address. Their header's client address is the session's (`$remote_addr`, hash
   * keys, the header sent on); a trusted client without a valid header is closed (status 400). TCP only.
   * @default false
   */
  acceptProxyProtocol?: TrustProxy | undefined;
  /** Time to read a trusted client's PROXY protocol header (nginx `proxy_protocol_timeout`). @default '30s' */
  proxyProtocolTimeout?: Duration | undefined;
  /**
   * When one side ends its writing (FIN), end the other's and keep the other direction open until it
   * ends too (nginx `proxy_half_close on`). With false, the session closes when either side ends.
   * Either way the handler sets `allowHalfOpen` on the client socket. TCP only. @default true
   */
  halfClose?: boolean | undefined;
  /**
   * Datagrams the server is expected to answer each client datagram with; 0: no answer awaited
   * (nginx `proxy_responses`). UDP only. @default Infinity (the session lasts until `idleTimeout`)
   */
  responses?: number | undefined;
  /** Client datagrams after which the session ends and the next goes to a newly chosen server; 0: no limit (nginx `proxy_requests`). UDP only. @default 0 */
  requests?: number | undefined;
  /** The name of the handler's statistics (NGINX Plus `/stream/server_zones/{zone}`). @default the pool's name */
  zone?: string | undefined;
  /**
   * Close the sessions of a server at once when it is removed from the pool, set `down`, or found
   * unhealthy by a health check (NGINX Plus `proxy_session_drop on`); otherwise they go on until they
   * end by themselves. @default false
   */
  sessionDrop?: boolean | undefined;
}

/** The keys of {@link StreamBalanceOptions}. */
const OPTIONS = [
  'protocol',
  'connectTimeout',
  'idleTimeout',
  'nextUpstream',
  'tries',
  'nextUpstreamTimeout',
  'uploadRate',
  'downloadRate',
  'proxyProtocol',
  'acceptProxyProtocol',
  'proxyProtocolTimeout',
  'halfClose',
  'responses',
  'requests',
  'zone',
  'sessionDrop',
] as const satisfies ReadonlyArray<keyof StreamBalanceOptions>;

/** The options resolved. @internal */
export interface StreamSettings {
  readonly protocol: 'tcp' | 'udp';
  readonly connectTimeout: number;
  readonly idleTimeout: number;
  readonly nextUpstream: boolean;
  readonly tries: number;
  readonly nextUpstreamTimeout: number;
  readonly uploadRate: number;
  readonly downloadRate: number;
  readonly proxyProtocol: false | 'v1' | 'v2';
  readonly acceptProxyProtocol: TrustTest | undefined;
  readonly proxyProtocolTimeout: number;
  readonly halfClose: boolean;
  readonly responses: number;
  readonly requests: number;
  readonly zone: string;
  readonly sessionDrop: boolean;
}

/** Sessions of a server zone by how they ended (NGINX Plus `sessions`). */
export interface StreamSessionCounters {
  /** Sessions that ended normally (status 200). */
  '2xx': number;
  /** Sessions refused: a trusted client without a valid PROXY protocol header (400). */
  '4xx': number;
  /** Sessions no server could take or none could be connected to (502). */
  '5xx': number;
  /** Every session counted. */
  total: number;
}

/** A stream handler's statistics (NGINX Plus `/api/9/stream/server_zones/{zone}`). */
export interface StreamZoneStats {
  /** The zone's name. */
  zone: string;
  /** `'tcp'` or `'udp'`. */
  protocol: 'tcp' | 'udp';
  /** Sessions in progress. */
  processing: number;
  /** Client connections (UDP: sessions) accepted. */
  connections: number;
  /** Sessions ended, by status. */
  sessions: StreamSessionCounters;
  /** Connections closed before a session began (a client gone while its PROXY header was read, an invalid header). */
  discarded: number;
  /** Bytes received from clients. */
  received: number;
  /** Bytes sent to clients. */
  sent: number;
}

/** One session as it ended: what nginx's stream access log shows. */
export interface StreamSession {
  /** The client's address (the PROXY protocol header's, when one was accepted): nginx `$remote_addr`. */
  remoteAddress: string;
  /** The client's port: nginx `$remote_port`. */
  remotePort: number;
  /** `'tcp'` or `'udp'`. */
  protocol: 'tcp' | 'udp';
  /** nginx `$status`: 200 ended normally, 400 bad PROXY protocol header, 502 no server could be used. */
  status: number;
  /** Each server tried, `host:port` (nginx `$upstream_addr`). */
  upstreamAddr: string[];
  /** Each attempt's time to connect in ms, -1 for one that failed (nginx `$upstream_connect_time`). */
  upstreamConnectTime: number[];
  /** Time to the server's first byte in ms, -1 when none came (nginx `$upstream_first_byte_time`). */
  upstreamFirstByteTime: number;
  /** Bytes received from the client (nginx `$bytes_received`). */
  bytesReceived: number;
  /** Bytes sent to the client (nginx `$bytes_sent`). */
  bytesSent: number;
  /** Bytes sent to the server (nginx `$upstream_bytes_sent`). */
  upstreamBytesSent: number;
  /** Bytes received from the server (nginx `$upstream_bytes_received`). */
  upstreamBytesReceived: number;
  /** The session's length in ms (nginx `$session_time`). */
  sessionTime: number;
}

/** Events of a {@link StreamHandler}. */
export interface StreamEvents {
  /** A session ended (any status): an access-log line. */
  session: [session: StreamSession];
  /**
   * A session failed: no server available (`SWY_ERR_NO_SERVER`, 502), every connection attempt failed
   * (`SWY_ERR_BAD_GATEWAY`, or `SWY_ERR_GATEWAY_TIMEOUT` when the last one timed out) or a bad PROXY
   * protocol header (`SWY_ERR_BAD_REQUEST`). Emitted only while a listener is attached: without one, nothing is thrown.
   */
  error: [error: SwitchyardError, session: StreamSession];
}

/**
 * What {@link streamBalance} returns: a connection listener for `net.createServer()` /
 * `tls.createServer()` (TCP), or a handler to {@link StreamHandler.attach} to a `dgram` socket (UDP),
 * with its statistics and events.
 */
export interface StreamHandler {
  /** Takes one client connection (TCP). */
  (socket: Socket): void;
  /** The pool the servers are chosen from. */
  readonly pool: UpstreamPool;
  /** The handler's statistics name. */
  readonly zone: string;
  /** `'tcp'` or `'udp'`. */
  readonly protocol: 'tcp' | 'udp';
  /**
   * UDP: serves the datagrams arriving on `socket` (a bound or unbound `dgram` socket); answers go
   * back from it. Several sockets may be attached. Throws for a TCP handler.
   */
  attach(socket: DgramSocket): void;
  /** The handler's statistics (NGINX Plus `/stream/server_zones/{zone}`). */
  stats(): StreamZoneStats;
  /** Resets the handler's counters (not `processing`). */
  resetStats(): void;
  /**
   * Ends every session in progress at once, detaches from UDP sockets (they stay open: they are the
   * caller's) and stops watching the pool for `sessionDrop`.
   */
  close(): void;
  /** Adds a listener. */
  on<E extends keyof StreamEvents>(event: E, listener: (...args: StreamEvents[E]) => void): this;
  /** Adds a listener called once. */
  once<E extends keyof StreamEvents>(event: E, listener: (...args: StreamEvents[E]) => void): this;
  /** Removes a listener. */
  off<E extends keyof StreamEvents>(event: E, listener: (...args: StreamEvents[E]) => void): this;
}

/** The client side of a session as hash keys and the PROXY protocol see it. @internal */
export interface ClientFacts {
  remoteAddress: string;
  remotePort: number;
  remoteFamily: string;
  localAddress: string;
  localPort: number;
}

/** A session the handler can end at once. @internal */
export interface Closable {
  close(): void;
  /** The id of the server the session is connected to, if any. */
  readonly server: string | undefined;
}

/** What every session of one handler shares. @internal */
export class StreamBalancer extends EventEmitter<StreamEvents> {
  readonly pool: UpstreamPool;
  readonly inner: PoolInternals;
  readonly settings: StreamSettings;
  readonly sessions = new Set<Closable>();
  readonly udp: UdpListener[] = [];
  processing = 0;
  connections = 0;
  discarded = 0;
  received = 0;
  sent = 0;
  counters: StreamSessionCounters = { '2xx': 0, '4xx': 0, '5xx': 0, total: 0 };

  constructor(pool: UpstreamPool, settings: StreamSettings) {
    super();
    this.pool = pool;
    this.inner = internals(pool);
    this.settings = settings;
    if (settings.sessionDrop) {
      pool.on('state', this.#onState);
      pool.on('remove', this.#onRemove);
    }
  }

  /** NGINX Plus proxy_session_drop: a server set down or found unhealthy loses its sessions. */
  readonly #onState = (change: StateChange): void => {
    if (change.to === 'down' || change.to === 'unhealthy') this.drop(change.id);
  };

  readonly #onRemove = (info: ServerInfo): void => this.drop(info.id);

  /** Ends every session connected to server `id`. */
  drop(id: string): void {
    for (const s of [...this.sessions]) if (s.server === id) s.close();
  }

  /**
   * An exchange record for the session, so that hash keys (`$remote_addr`, `$remote_port`,
   * `$server_addr`, `$server_port`) read the client's side as they do an HTTP request's.
   */
  exchangeFor(facts: ClientFacts): Exchange {
    const req = { socket: facts, headers: {}, rawHeaders: [], method: 'GET', url: '/', httpVersion: '1.1', httpVersionMajor: 1, httpVersionMinor: 1 };
    return exchange(req as unknown as IncomingMessage);
  }

  /** Counts one ended session (`discarded`: a connection closed before its session began, not counted as one). */
  ended(session: StreamSession, error: SwitchyardError | undefined, discarded = false): void {
    this.processing--;
    this.received += session.bytesReceived;
    this.sent += session.bytesSent;
    if (discarded) {
      this.discarded++;
      if (error !== undefined && this.listenerCount('error') > 0) this.emit('error', error, session);
      return;
    }
    const c = this.counters;
    if (session.status < 300) c['2xx']++;
    else if (session.status < 500) c['4xx']++;
    else c['5xx']++;
    c.total++;
    if (error !== undefined && this.listenerCount('error') > 0) this.emit('error', error, session);
    if (this.listenerCount('session') > 0) this.emit('session', session);
  }

  stats(): StreamZoneStats {
    return {
      zone: this.settings.zone,
      protocol: this.settings.protocol,
      processing: this.processing,
      connections: this.connections,
      sessions: { ...this.counters },
      discarded: this.discarded,
      received: this.received,
      sent: this.sent,
    };
  }

  resetStats(): void {
    this.connections = 0;
    this.discarded = 0;
    this.received = 0;
    this.sent = 0;
    this.counters = { '2xx': 0, '4xx': 0, '5xx': 0, total: 0 };
  }

  close(): void {
    this.pool.off('state', this.#onState);
    this.pool.off('remove', this.#onRemove);
    for (const s of [...this.sessions]) s.close();
    for (const l of this.udp.splice(0)) l.detach();
  }
}

/** A rate in bytes per second: an integer >= 0. */
function rateOption(value: unknown, path: string): number {
  return integerOption(value, path, 0, { min: 0 });
}

function resolveSettings(pool: UpstreamPool, options: StreamBalanceOptions | undefined): StreamSettings {
  const o = objectOption(options, '', OPTIONS, 'stream options', true) as StreamBalanceOptions;
  const protocol = enumOption(o.protocol, 'protocol', ['tcp', 'udp'] as const, 'tcp');
  const proxyProtocol =
    o.proxyProtocol === undefined || o.proxyProtocol === false ? false : enumOption(o.proxyProtocol, 'proxyProtocol', ['v1', 'v2'] as const, 'v1');
  if (protocol === 'udp' && proxyProtocol === 'v1')
    throw new InvalidOptionError('proxyProtocol', "'v2' or false with protocol 'udp' (version 1 has no UDP form)", 'v1');
  const accept = o.acceptProxyProtocol;
  if (protocol === 'udp' && accept !== undefined && accept !== false) throw new InvalidOptionError('acceptProxyProtocol', "false with protocol 'udp'", accept);
  const responses = o.responses === Infinity || o.responses === undefined ? Infinity : integerOption(o.responses, 'responses', 0, { min: 0 });
  return Object.freeze({
    protocol,
    connectTimeout: durationOption(o.connectTimeout, 'connectTimeout', DEFAULT_STREAM_CONNECT_TIMEOUT, true),
    idleTimeout: durationOption(o.idleTimeout, 'idleTimeout', DEFAULT_STREAM_IDLE_TIMEOUT, true),
    nextUpstream: booleanOption(o.nextUpstream, 'nextUpstream', true),
    tries: integerOption(o.tries, 'tries', 0, { min: 0 }),
    nextUpstreamTimeout: durationOption(o.nextUpstreamTimeout, 'nextUpstreamTimeout', 0),
    uploadRate: rateOption(o.uploadRate, 'uploadRate'),
    downloadRate: rateOption(o.downloadRate, 'downloadRate'),
    proxyProtocol,
    acceptProxyProtocol: accept === undefined || accept === false ? undefined : compileTrust(accept, 'acceptProxyProtocol'),
    proxyProtocolTimeout: durationOption(o.proxyProtocolTimeout, 'proxyProtocolTimeout', DEFAULT_PROXY_PROTOCOL_TIMEOUT, true),
    halfClose: booleanOption(o.halfClose, 'halfClose', true),
    responses,
    requests: integerOption(o.requests, 'requests', 0, { min: 0 }),
    zone: stringOption(o.zone, 'zone', pool.name, { nonEmpty: true }),
    sessionDrop: booleanOption(o.sessionDrop, 'sessionDrop', false),
  });
}

/**
 * nginx's stream proxy (`stream { upstream ...; server { listen ...; proxy_pass ...; } }`): TCP
 * connections or UDP datagrams balanced over the pool's servers with its method, passive health and
 * limits. Each server's `host:port` is taken from its url (the scheme is not used, except that
 * `https://` servers are reached over TLS with the pool's `tls` settings, nginx `proxy_ssl on`).
 * Statistics go to {@link UpstreamPool.streamStats}, apart from HTTP's. Options are validated here.
 * @example
 * ```ts
 * import net from 'node:net';
 * import { createPool, streamBalance } from 'switchyard-proxy';
 *
 * const pool = createPool({ name: 'redis', servers: [{ url: 'http://10.0.0.1:6379' }, { url: 'http://10.0.0.2:6379', backup: true }] });
 * const proxy = streamBalance(pool, { connectTimeout: '2s', idleTimeout: '1h' });
 * proxy.on('error', (err, session) => console.warn(err.code, session.remoteAddress));
 * net.createServer({ allowHalfOpen: true }, proxy).listen(6380);
 * ```
 */
export function streamBalance(pool: UpstreamPool, options?: StreamBalanceOptions): StreamHandler {
  poolOption(pool);
  const balancer = new StreamBalancer(pool, resolveSettings(pool, options));
  const tcp = balancer.settings.protocol === 'tcp';
  const handler = function streamBalance(socket: Socket): void {
    if (!tcp) throw new InvalidOptionError('protocol', "'tcp' to take connections (attach() a UDP handler to a dgram socket)", 'udp');
    new TcpSession(balancer, socket).start();
  } as StreamHandler;
  Object.defineProperties(handler, {
    pool: { value: pool, enumerable: true },
    zone: { value: balancer.settings.zone, enumerable: true },
    protocol: { value: balancer.settings.protocol, enumerable: true },
  });
  const methods: Omit<StreamHandler, '' | 'pool' | 'zone' | 'protocol'> = {
    attach(socket: DgramSocket) {
      if (tcp) throw new InvalidOptionError('protocol', "'udp' to attach to a dgram socket", 'tcp');
      balancer.udp.push(new UdpListener(balancer, socket));
    },
    stats: () => balancer.stats(),
    resetStats: () => balancer.resetStats(),
    close: () => balancer.close(),
    on(event, listener) {
      balancer.on(event, listener as never);
      return handler;
    },
    once(event, listener) {
      balancer.once(event, listener as never);
      return handler;
    },
    off(event, listener) {
      balancer.off(event, listener as never);
      return handler;
    },
  };
  return Object.assign(handler, methods);
}
