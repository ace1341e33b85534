import { STATUS_CODES, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { createRequire } from 'node:module';
import { isIP, Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Server as TlsServer, TLSSocket } from 'node:tls';
import type { ProxyServer } from 'http-proxy-3';
import { channels, type UpstreamErrorFailure } from '../core/diagnostics.ts';
import type { Duration } from '../core/duration.ts';
import { GatewayTimeoutError, NoServerAvailableError } from '../core/errors.ts';
import { booleanOption, objectOption } from '../core/options.ts';
import { exchange, upstreamTarget, type Exchange } from '../core/exchange.ts';
import { poolOption, type UpstreamPool } from '../pool/index.ts';
import { internals, type PoolInternals } from '../pool/internal.ts';
import type { Peer, PeerTarget } from '../pool/peer.ts';
import { attemptTimeouts, TIMEOUT_OPTIONS } from './forward.ts';
import { FORWARDING_OPTIONS, forwardingPolicy, resolveClient, upstreamRequestHeaders } from './headers.ts';
import type { TrustProxy } from './trust.ts';

const require = createRequire(import.meta.url);

/** Options of {@link upgrade}; the same meaning as in balance(). */
export interface UpgradeOptions {
  /** @default false */
  trustProxy?: TrustProxy | undefined;
  /** @default true */
  xForwarded?: boolean | undefined;
  /** @default true */
  forwarded?: boolean | undefined;
  /** @default 'upstream' */
  host?: 'upstream' | 'client' | (string & {}) | undefined;
  /** @default '60s' */
  connectTimeout?: Duration | undefined;
  /** Time for the upstream to answer the upgrade (101 or a refusal); 504 after it. @default '60s' */
  headerTimeout?: Duration | undefined;
  /**
   * Longest silence in both directions of an upgraded tunnel (nginx `proxy_read_timeout`): after it
   * both connections are closed and the server's slot is freed. 0 keeps silent tunnels open.
   * @default '60s'
   */
  idleTimeout?: Duration | undefined;
  /**
   * Forward the client's handshake headers whose names contain `_` (nginx `underscores_in_headers
   * on`); by default they are dropped, as nginx does. balance() gives its own `underscoresInHeaders`.
   * @default false
   */
  underscoresInHeaders?: boolean | undefined;
}

/** The keys of {@link UpgradeOptions}. */
const UPGRADE_OPTIONS = [...FORWARDING_OPTIONS, ...TIMEOUT_OPTIONS, 'underscoresInHeaders'] as const satisfies ReadonlyArray<keyof UpgradeOptions>;

/** A handler for a server's `upgrade` event. */
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

/** The handler {@link upgrade} returns: an `upgrade` listener that also says which upgrades it tunnels. */
export interface ProxyUpgradeHandler extends UpgradeHandler {
  /**
   * False for an upgrade request the handler does not tunnel but answers as an ordinary HTTP request
   * (RFC 9110 §7.8): `Upgrade: h2c` (or `h2`), an empty `Upgrade`, a request with a body. Give it to
   * the server as `shouldUpgradeCallback` (Node 22.21 and 24.9 onwards) and Node sends those requests
   * to the `request` listener straight away; without it the handler hands them back to the server.
   * @example
   * ```ts
   * const server = createServer({ shouldUpgradeCallback: proxy.upgrade.shouldUpgrade }, chain(proxy));
   * server.on('upgrade', proxy.upgrade);
   * ```
   */
  readonly shouldUpgrade: (req: IncomingMessage) => boolean;
}

/** Upgrade protocols never tunneled: HTTP/2 over a tunnel would bypass everything the gateway checks per request (h2c smuggling). */
const NOT_TUNNELED = new Set(['h2c', 'h2']);

/**
 * Whether an upgrade request is tunneled to an upstream. Not tunneled, and so answered as an ordinary
 * request: an upgrade to HTTP/2 (a tunnel would carry requests the gateway never sees), an `Upgrade`
 * header naming no protocol, and a request with a body (the tunnel would carry the body as if it came
 * after the switch). Handed out as {@link ProxyUpgradeHandler.shouldUpgrade}.
 */
function shouldUpgrade(req: IncomingMessage): boolean {
  const h = req.headers;
  if (h['transfer-encoding'] !== undefined) return false;
  const length = h['content-length'];
  if (length !== undefined && !/^0+$/.test(length)) return false;
  const value = h.upgrade;
  if (typeof value !== 'string') return false;
  let named = false;
  for (const item of value.split(',')) {
    const protocol = item.trim().toLowerCase();
    if (protocol === '') continue;
    const slash = protocol.indexOf('/');
    if (NOT_TUNNELED.has(slash === -1 ? protocol : protocol.slice(0, slash).trim())) return false;
    named = true;
  }
  return named;
}

const ignore = (): void => undefined;

/**
 * @internal Keeps a client socket's errors (a reset while an upgrade is refused, bound or proxied)
 * from becoming an uncaught exception: Node takes its own error listener off the socket before it
 * emits `upgrade`.
 */
export function guardSocket(socket: Duplex): void {
  if (!socket.listeners('error').includes(ignore)) socket.on('error', ignore);
}

/** @internal Answers an upgrade request with a bodiless status and closes the connection. */
export function refuseUpgrade(socket: Duplex, status: 400 | 404 | 405 | 500 | 501 | 502 | 503 | 504, reason: string): void {
  guardSocket(socket);
  if (socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`, () => socket.destroy());
}

/**
 * A request target http-proxy-3 (and the exchange record) can take: origin form, or an absolute form
 * with an http(s)/ws(s) URL that parses. `*`, authority form and any other shape get 400.
 */
function proxiableTarget(target: string | undefined): boolean {
  if (target === undefined || target === '') return false;
  if (target.startsWith('/')) return true;
  return /^(?:https?|wss?):\/\/[^/?#]/i.test(target) && URL.canParse(target);
}

/**
 * Hands an upgrade request that is not tunneled back to its server as an ordinary HTTP request
 * (RFC 9110 §7.8 lets a server ignore an upgrade): the request head is written again without its
 * `Upgrade` header in front of the bytes that followed it, and the connection is given to the server
 * as a new one (Node documents emitting `connection` to inject a connection), so Node's own parser
 * reads the request, its body and any later requests on the connection, keep-alive included.
 * False when that cannot be done: the server is unknown, or Node still streams the request's body.
 */
function handBack(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
  const server = (socket as Partial<Socket> & { server?: unknown }).server;
  if (!(server instanceof NetServer) || socket !== req.socket || !req.complete || server.listenerCount('request') === 0) return false;
  const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() !== 'upgrade') lines.push(`${raw[i]}: ${raw[i + 1]}`);
  lines.push('', '');
  const data = Buffer.concat([Buffer.from(lines.join('\r\n'), 'latin1'), head]);
  afterResponses(socket, (paused) => {
    if (socket.destroyed || !socket.writable) return;
    socket.unshift(data);
    // An https server parses HTTP on its TLS connections, which it announces as `secureConnection`.
    server.emit(server instanceof TlsServer ? 'secureConnection' : 'connection', socket);
    if (paused) socket.resume();
  });
  return true;
}

/**
 * Runs `then` once no response to an earlier request on the connection is being written. Node emits
 * `upgrade` for a request pipelined behind others (two h2c requests in one packet, say) while their
 * responses are still to come; a connection handed back then gets a new parser whose response is
 * never written behind the pending one, and the client waits for it forever. The socket is paused
 * meanwhile (nothing reads it between two parsers); `then` is told so, to resume it.
 */
function afterResponses(socket: Duplex, then: (paused: boolean) => void, paused = false): void {
  const pending = (socket as Duplex & { _httpMessage?: Duplex | null })._httpMessage;
  if (pending == null || pending.destroyed) {
    then(paused);
    return;
  }
  if (!paused) socket.pause();
  let done = false;
  const next = (): void => {
    if (done) return;
    done = true;
    // Node's own 'finish' listener has run by now: it detached this response and attached the next queued one.
    afterResponses(socket, then, true);
  };
  pending.once('finish', next);
  pending.once('close', next);
}

/**
 * @internal What every upgrade entry point does first, before anything reads the target: guards the
 * socket, answers an upgrade it does not tunnel as ordinary HTTP, and refuses a target that is not a
 * path (400) and a request the exchange refuses (with its status: TRACE 405, a bad or repeated Host
 * 400). True when the request has been dealt with and the caller must stop.
 */
export function screenUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
  guardSocket(socket);
  if (socket.destroyed) return true;
  if (!shouldUpgrade(req)) {
    if (!handBack(req, socket, head)) refuseUpgrade(socket, 501, 'Not Implemented');
    return true;
  }
  if (!proxiableTarget(req.url)) {
    refuseUpgrade(socket, 400, 'Bad Request');
    return true;
  }
  const ex = exchange(req);
  if (!ex.uriValid) {
    // A request the exchange refuses whatever its path (TRACE 405, a bad or repeated Host 400) gets that status.
    const status = ex.refusal?.statusCode === 405 ? 405 : 400;
    refuseUpgrade(socket, status, STATUS_CODES[status]!);
    return true;
  }
  return false;
}

/**
 * The connection of an upgrade to an `https://` server: an agent of its own (a tunnel keeps its
 * connection, which never goes back to a pool, and a kept-alive one the server may have closed
 * cannot be retried here) with the TLS settings of the pool's https agent, so it verifies the same
 * CA and name and presents the same client certificate as proxied requests and health probes. SNI:
 * the pool's `servername`, else the server's host name; for an IP address, Node's default (the name
 * of the Host header sent upstream, never an address).
 */
function tunnelAgent(inner: PoolInternals, t: PeerTarget): HttpsAgent {
  const tls = inner.tls;
  return new HttpsAgent({ ...tls, servername: tls.servername ?? (isIP(t.hostname) === 0 ? t.hostname : undefined) });
}

/** The value of `name` in flat `[name, value, ...]` pairs with lowercase names. */
function headerValue(pairs: readonly string[], name: string): string | undefined {
  for (let i = 0; i < pairs.length; i += 2) if (pairs[i] === name) return pairs[i + 1];
  return undefined;
}

/** Publishes on `switchyard:upstream:error` (NODE_DEBUG=switchyard prints it): an upgrade makes one attempt, never retried. */
function publishError(ex: Exchange, pool: UpstreamPool, peer: Peer | undefined, failure: UpstreamErrorFailure, error: Error): void {
  if (!channels.upstreamError.hasSubscribers) return;
  channels.upstreamError.publish({
    ex,
    pool: pool.name,
    server: peer === undefined ? undefined : { id: peer.id, name: peer.name },
    attempt: 1,
    failure,
    error,
    retry: false,
  });
}

/** What one proxied upgrade needs once http-proxy-3 has created its upstream request. */
interface Pending {
  /** The upstream request headers, as balance() builds them (hop-by-hop ones already dropped). */
  headers: string[];
  /** The client's Upgrade header value. */
  upgrade: string;
  /** Records the upstream's answer: 101, or the status of an HTTP response refusing the upgrade. */
  answered(status: number): void;
  /** Hands over the upstream request, so a timeout can destroy it. */
  sent(request: ClientRequest): void;
  /** Hands over the upstream connection once the upstream switched protocols. */
  tunnel(upstream: Duplex): void;
  /** Ends the exchange after something threw: 502 before the upstream answered, else both connections closed. */
  abort(err: unknown): void;
}

/**
 * Proxies WebSocket (and other HTTP/1.1 upgrade) requests to a server chosen by
 * the pool's method, on http-proxy-3. Attach it to the server's `upgrade` event;
 * the Fastify plugin does it for you. A target that is not a path gets 400; an
 * upgrade it does not tunnel (see the handler's `shouldUpgrade`) is answered as an
 * ordinary HTTP request by the server's `request` listener; a tunnel silent in
 * both directions for `idleTimeout` is closed.
 * @example
 * ```ts
 * const server = app.listen(8080);
 * server.on('upgrade', upgrade(pool));
 * ```
 */
export function upgrade(pool: UpstreamPool, options: UpgradeOptions = {}): ProxyUpgradeHandler {
  return upgradeHandler(poolOption(pool), options);
}

/**
 * {@link upgrade} over `target`: one pool, or a function choosing the pool per request (balance()'s
 * pool selector; a throw, an {@link UnknownPoolError}, answers 502), with `shape` changing the
 * handshake's upstream headers (balance()'s `setHeaders`). @internal
 */
export function upgradeHandler(
  target: UpstreamPool | ((req: IncomingMessage, ex: Exchange) => UpstreamPool),
  options: UpgradeOptions = {},
  shape?: (headers: string[], ex: Exchange) => string[],
): ProxyUpgradeHandler {
  objectOption(options, '', UPGRADE_OPTIONS);
  const fixed = typeof target === 'function' ? undefined : target;
  const fixedInner = fixed === undefined ? undefined : internals(fixed);
  const policy = { ...forwardingPolicy(options), underscores: booleanOption(options.underscoresInHeaders, 'underscoresInHeaders', false) };
  const { connect: connectTimeout, header: headerTimeout, idle: idleTimeout } = attemptTimeouts(options);
  const pending = new WeakMap<IncomingMessage, Pending>();
  // http-proxy-3 is required, and its proxy server made, by the first upgrade to tunnel: a gateway
  // that never sees one does not load it (issue 15).
  let proxy: ProxyServer | undefined;
  const proxyServer = (): ProxyServer => {
    if (proxy !== undefined) return proxy;
    const { createProxyServer } = require('http-proxy-3') as typeof import('http-proxy-3');
    const server = createProxyServer({ ws: true, xfwd: false, ignorePath: true, prependPath: true, connectTimeout });
    // http-proxy-3 closes, without a word, every upgrade that is not a GET to `websocket`; which
    // upgrades are tunneled is decided by shouldUpgrade(), before the request gets here.
    const passes = (server as unknown as { wsPasses?: unknown }).wsPasses;
    if (Array.isArray(passes)) {
      const at = passes.findIndex((pass: { name?: string }) => pass.name === 'checkMethodAndHeader');
      if (at !== -1) passes.splice(at, 1);
    }
    // Errors are handled per request through the callback; this keeps a stray one from throwing.
    server.on('error', ignore);
    // http-proxy-3 copies every client header; replace them with exactly the ones
    // balance() would send (no hop-by-hop headers, none named in Connection, no
    // client X-Forwarded-* unless trusted) before the request goes out.
    // A throw here ends in the try around proxy.ws() (http-proxy-3 emits this synchronously).
    server.on('proxyReqWs', (proxyReq, req) => {
      const p = pending.get(req);
      if (p === undefined) return;
      pending.delete(req);
      p.sent(proxyReq);
      // http-proxy-3 adds its error listener after this event: a throw below must not leave none.
      proxyReq.on('error', ignore);
      for (const name of proxyReq.getHeaderNames()) proxyReq.removeHeader(name);
      const grouped = new Map<string, string[]>();
      for (let i = 0; i < p.headers.length; i += 2) {
        const name = p.headers[i]!.toLowerCase();
        const list = grouped.get(name);
        if (list === undefined) grouped.set(name, [p.headers[i + 1]!]);
        else list.push(p.headers[i + 1]!);
      }
      for (const [name, values] of grouped) proxyReq.setHeader(name, values.length === 1 ? values[0]! : values);
      proxyReq.setHeader('connection', 'Upgrade');
      proxyReq.setHeader('upgrade', p.upgrade);
      // These run later, from the upstream request's events: nothing thrown may reach its emit().
      proxyReq.once('upgrade', (_response: IncomingMessage, upstream: Duplex) => {
        try {
          p.answered(101);
          p.tunnel(upstream);
        } catch (err) {
          upstream.destroy();
          p.abort(err);
        }
      });
      proxyReq.once('response', (response: IncomingMessage) => {
        // http-proxy-3 relays a refusal and closes the client's connection at its end only: one the
        // upstream cuts short would leave that connection, and the server's slot, held for good.
        response.once('close', () => {
          if (!response.complete) p.abort(new Error('The upstream cut its answer to the upgrade short'));
        });
        try {
          p.answered(response.statusCode ?? 0);
        } catch (err) {
          p.abort(err);
        }
      });
    });
    proxy = server;
    return server;
  };
  const handler = function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (screenUpgrade(req, socket, head)) return;
    const ex = exchange(req);
    let peer: Peer | undefined;
    let pool: UpstreamPool;
    let inner: PoolInternals;
    try {
      resolveClient(ex, policy.trust);
      if (fixed !== undefined) {
        pool = fixed;
        inner = fixedInner!;
      } else {
        try {
          pool = (target as (req: IncomingMessage, ex: Exchange) => UpstreamPool)(req, ex);
          inner = internals(pool);
        } catch {
          // The pool selector named no pool (UnknownPoolError): nginx's 502 for an upstream it cannot resolve.
          refuseUpgrade(socket, 502, 'Bad Gateway');
          return;
        }
      }
      peer = inner.select(inner.selection(req, ex));
    } catch {
      // A throwing trustProxy or hash key function: an event listener must not throw.
      refuseUpgrade(socket, 500, 'Internal Server Error');
      return;
    }
    if (peer === undefined) {
      ex.upstreamAddr.push(pool.name);
      ex.upstreamStatus.push(503);
      ex.upstreamConnectTime.push(-1);
      ex.upstreamHeaderTime.push(-1);
      ex.upstreamResponseTime.push(0);
      publishError(ex, pool, undefined, 'no_server', new NoServerAvailableError(pool.name));
      refuseUpgrade(socket, 503, 'Service Unavailable');
      return;
    }
    ex.upstreamAddr.push(peer.name);
    const started = performance.now();
    let status: number | undefined;
    let headerTime = -1;
    let connectTime = -1;
    /** A status was recorded for the attempt: its times go with it (the response time once the tunnel closes). */
    let recorded = false;
    const record = (code: number): void => {
      recorded = true;
      ex.upstreamStatus.push(code);
      ex.upstreamConnectTime.push(connectTime);
      ex.upstreamHeaderTime.push(headerTime);
    };
    let failed = false;
    let finished = false;
    let request: ClientRequest | undefined;
    let tunnel: Duplex | undefined;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      if (timer !== undefined) clearTimeout(timer);
      const response = performance.now() - started;
      if (recorded) ex.upstreamResponseTime.push(response);
      inner.finish(peer, failed ? 'failed' : 'ok', { header: headerTime, response, inflightDone: false }, failed ? undefined : status);
    };
    // The slot taken by select() is given back when the client's connection closes, however it ends.
    socket.once('close', finish);
    // http-proxy-3's callback: the upstream connection failed (refused, reset, TLS verification,
    // connectTimeout) before the upstream answered. A connect that timed out is a 504, as nginx
    // answers when proxy_connect_timeout passes; every other failure a 502.
    const fail = (err: unknown): void => {
      if (finished || status !== undefined) return;
      failed = true;
      const error = err instanceof Error ? err : new Error(String(err));
      const timedOut = (error as NodeJS.ErrnoException).code === 'ECONNECT_TIMEOUT';
      record(timedOut ? 504 : 502);
      if (timedOut) publishError(ex, pool, peer, 'timeout', new GatewayTimeoutError(`Timed out connecting to ${peer.name}`, { cause: error }));
      else publishError(ex, pool, peer, 'error', error);
      request?.destroy();
      if (timedOut) refuseUpgrade(socket, 504, 'Gateway Timeout');
      else refuseUpgrade(socket, 502, 'Bad Gateway');
    };
    const abort = (err: unknown): void => {
      pending.delete(req);
      if (status === undefined) fail(err);
      else {
        tunnel?.destroy();
        socket.destroy();
      }
    };
    // Building the upstream request, and http-proxy-3 parsing the target and the request's URL,
    // creating and sending the upstream request, all happen synchronously: whatever throws there
    // must answer this request, never reach the server's emit().
    try {
      const t = peer.target;
      const host = t.hostname.includes(':') ? `[${t.hostname}]` : t.hostname;
      const target = `${t.protocol}//${host}:${t.port}${t.prefix}${upstreamTarget(ex)}`;
      let headers = upstreamRequestHeaders(ex, policy, t.authority, [], t.auth);
      if (shape !== undefined) headers = shape(headers, ex);
      pending.set(req, {
        headers,
        upgrade: String(req.headers.upgrade),
        sent(proxyReq) {
          request = proxyReq;
          // nginx's $upstream_connect_time: until the connection (and its TLS handshake) is up.
          proxyReq.once('socket', (s: Socket) => {
            if (!s.connecting) connectTime = 0;
            else s.once(s instanceof TLSSocket ? 'secureConnect' : 'connect', () => (connectTime = performance.now() - started));
          });
        },
        tunnel(upstream) {
          tunnel = upstream;
          // The upstream connection carries both directions, so its own inactivity timer sees all the
          // traffic: what the client sends is written to it, what the upstream sends is read from it.
          if (idleTimeout <= 0 || typeof (upstream as Partial<Socket>).setTimeout !== 'function') return;
          upstream.once('timeout', () => {
            upstream.destroy();
            socket.destroy();
          });
          // After http-proxy-3's own 'upgrade' listener, which clears the socket's timeout.
          process.nextTick(() => {
            if (!upstream.destroyed) (upstream as Socket).setTimeout(idleTimeout);
          });
        },
        answered(code) {
          if (status !== undefined || failed) return;
          if (timer !== undefined) clearTimeout(timer);
          status = code;
          headerTime = performance.now() - started;
          record(code);
          ex.server = { id: peer.id, name: peer.name, sid: peer.sid };
        },
        abort,
      });
      // nginx's proxy_read_timeout covers the answer to an upgrade too: a server that
      // accepts the connection and never answers must not hold the client or the slot.
      if (headerTimeout > 0) {
        timer = setTimeout(() => {
          if (finished || status !== undefined) return;
          failed = true;
          record(504);
          publishError(ex, pool, peer, 'timeout', new GatewayTimeoutError(`upstream did not answer the upgrade in ${headerTimeout}ms`));
          request?.destroy();
          refuseUpgrade(socket, 504, 'Gateway Timeout');
        }, headerTimeout);
      }
      // Headers set when the upstream request is made, before 'proxyReqWs' replaces the client's:
      // `expect: ''` overrides a client's `Expect: 100-continue`, with which Node's ClientRequest sends
      // the head at once; the Host header sent upstream is the one Node takes the SNI name from.
      const early = { expect: '', host: headerValue(headers, 'host') ?? t.authority };
      proxyServer().ws(req, socket, head, { target, agent: t.protocol === 'https:' ? tunnelAgent(inner, t) : undefined, headers: early }, fail);
    } catch (err) {
      abort(err);
    }
  };
  return Object.assign(handler, { shouldUpgrade });
}
