import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { createProxyServer, type ProxyServer } from 'http-proxy-3';
import { parseDuration, type Duration } from '../core/duration.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { exchange, upstreamTarget } from '../core/exchange.ts';
import { UpstreamPool } from '../pool/index.ts';
import { resolveClient, upstreamRequestHeaders, type ForwardingPolicy } from './headers.ts';
import { compileTrust, type TrustProxy } from './trust.ts';

/** Options of {@link upgrade}; the same meaning as in balance(). */
export interface UpgradeOptions {
  /** @default false */
  trustProxy?: TrustProxy;
  /** @default true */
  xForwarded?: boolean;
  /** @default true */
  forwarded?: boolean;
  /** @default 'upstream' */
  host?: 'upstream' | 'client' | (string & {});
  /** @default '60s' */
  connectTimeout?: Duration;
  /** Time for the upstream to answer the upgrade (101 or a refusal); 504 after it. @default '60s' */
  headerTimeout?: Duration;
}

/** A handler for a server's `upgrade` event. */
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

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
}

/**
 * Proxies WebSocket (and other HTTP/1.1 upgrade) requests to a server chosen by
 * the pool's method, on http-proxy-3. Attach it to the server's `upgrade` event;
 * the Fastify plugin does it for you.
 * @example
 * ```ts
 * const server = app.listen(8080);
 * server.on('upgrade', upgrade(pool));
 * ```
 */
export function upgrade(pool: UpstreamPool, options: UpgradeOptions = {}): UpgradeHandler {
  if (!(pool instanceof UpstreamPool)) throw new InvalidOptionError('pool', 'an UpstreamPool from createPool()', pool);
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('options', 'an object', options);
  const policy: ForwardingPolicy = {
    trust: compileTrust(options.trustProxy, 'trustProxy'),
    xForwarded: options.xForwarded ?? true,
    forwarded: options.forwarded ?? true,
    host: options.host ?? 'upstream',
  };
  const connectTimeout = parseDuration(options.connectTimeout ?? '60s', 'connectTimeout');
  const headerTimeout = parseDuration(options.headerTimeout ?? '60s', 'headerTimeout');
  const proxy: ProxyServer = createProxyServer({ ws: true, xfwd: false, ignorePath: true, prependPath: true, connectTimeout });
  // Errors are handled per request through the callback; this keeps a stray one from throwing.
  proxy.on('error', () => undefined);
  const pending = new WeakMap<IncomingMessage, Pending>();
  // http-proxy-3 copies every client header; replace them with exactly the ones
  // balance() would send (no hop-by-hop headers, none named in Connection, no
  // client X-Forwarded-* unless trusted) before the request goes out.
  proxy.on('proxyReqWs', (proxyReq, req) => {
    const p = pending.get(req);
    if (p === undefined) return;
    pending.delete(req);
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
    p.sent(proxyReq);
    proxyReq.once('upgrade', () => p.answered(101));
    proxyReq.once('response', (response: IncomingMessage) => p.answered(response.statusCode ?? 0));
  });
  return function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const ex = exchange(req);
    resolveClient(ex, policy.trust);
    if (!ex.uriValid) {
      socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    let peer: ReturnType<UpstreamPool['select']>;
    try {
      peer = pool.select(pool.selection(req, ex));
    } catch {
      // A throwing hash key function: an event listener must not throw.
      socket.end('HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    if (peer === undefined) {
      ex.upstreamAddr.push(pool.name);
      ex.upstreamStatus.push(503);
      socket.end('HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    ex.upstreamAddr.push(peer.name);
    const t = peer.target;
    const host = t.hostname.includes(':') ? `[${t.hostname}]` : t.hostname;
    const target = `${t.protocol}//${host}:${t.port}${t.prefix}${upstreamTarget(ex)}`;
    const headers = upstreamRequestHeaders(ex, policy, t.authority, [], t.auth);
    const started = performance.now();
    let status: number | undefined;
    let headerTime = -1;
    let failed = false;
    let finished = false;
    let request: ClientRequest | undefined;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      if (timer !== undefined) clearTimeout(timer);
      pool.finish(peer, failed ? 'failed' : 'ok', { header: headerTime, response: performance.now() - started, inflightDone: false }, failed ? undefined : status);
    };
    pending.set(req, {
      headers,
      upgrade: String(req.headers.upgrade ?? 'websocket'),
      sent(proxyReq) {
        request = proxyReq;
      },
      answered(code) {
        if (status !== undefined || failed) return;
        if (timer !== undefined) clearTimeout(timer);
        status = code;
        headerTime = performance.now() - started;
        ex.upstreamStatus.push(code);
        ex.server = { id: peer.id, name: peer.name, sid: peer.sid };
      },
    });
    socket.once('close', finish);
    // nginx's proxy_read_timeout covers the answer to an upgrade too: a server that
    // accepts the connection and never answers must not hold the client or the slot.
    if (headerTimeout > 0) {
      timer = setTimeout(() => {
        if (finished || status !== undefined) return;
        failed = true;
        ex.upstreamStatus.push(504);
        request?.destroy();
        socket.end('HTTP/1.1 504 Gateway Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n', () => socket.destroy());
      }, headerTimeout);
    }
    proxy.ws(req, socket, head, { target }, (err) => {
      if (finished || status !== undefined) return;
      failed = true;
      ex.upstreamStatus.push(502);
      if (!socket.destroyed && socket.writable) socket.write('HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      void err;
    });
  };
}
