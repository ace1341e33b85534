import type { IncomingMessage } from 'node:http';
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
}

/** A handler for a server's `upgrade` event. */
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

const OWN = new Set(['host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded', 'authorization']);

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
  const proxy: ProxyServer = createProxyServer({ ws: true, xfwd: false, ignorePath: true, prependPath: true, connectTimeout });
  // Errors are handled per request through the callback; this keeps a stray one from throwing.
  proxy.on('error', () => undefined);
  return function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const ex = exchange(req);
    resolveClient(ex, policy.trust);
    const sel = pool.selection(req, ex);
    const peer = pool.select(sel);
    if (peer === undefined) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    ex.upstreamAddr.push(peer.name);
    const t = peer.target;
    const host = t.hostname.includes(':') ? `[${t.hostname}]` : t.hostname;
    const target = `${t.protocol}//${host}:${t.port}${t.prefix}${upstreamTarget(ex)}`;
    const flat = upstreamRequestHeaders(ex, policy, t.authority, [], t.auth);
    const headers: Record<string, string> = {};
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i]!.toLowerCase();
      if (OWN.has(name)) headers[name] = flat[i + 1]!;
    }
    const started = performance.now();
    let failed = false;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      pool.finish(peer, failed ? 'failed' : 'ok', { header: failed ? -1 : 0, response: performance.now() - started, inflightDone: false }, failed ? undefined : 101);
    };
    socket.once('close', finish);
    proxy.ws(req, socket, head, { target, headers }, (err) => {
      if (finished) return;
      failed = true;
      ex.upstreamStatus.push(502);
      if (!socket.destroyed && socket.writable) socket.write('HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      void err;
    });
  };
}
