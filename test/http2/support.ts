// Shared by the HTTP/2 client tests: gateways on node:http2 servers (TLS with allowHTTP1 and a
// private CA, and cleartext h2c), node:http2 clients, and a request helper. Everything listens on
// 127.0.0.1 port 0 and is closed by the test's `after` hook, sessions included, so a file exits by
// itself.
import http2, {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type Http2Server,
  type Http2SecureServer,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http2';
import http, { type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import { listen } from '../helpers.ts';
import { createTestCa, type KeyPair } from '../support/tls.ts';

/** `secure`: `http2.createSecureServer({ allowHTTP1: true })`; `h2c`: `http2.createServer()`. */
export type H2Kind = 'secure' | 'h2c';

export const KINDS: readonly H2Kind[] = ['secure', 'h2c'];

/** A private CA and a server certificate for 127.0.0.1 and localhost, made once per test file. */
export interface Certs {
  ca: string;
  server: KeyPair;
}

let certs: Certs | undefined;

/** The file's CA and server certificate (made with openssl on first use). */
export function testCerts(): Certs {
  if (certs === undefined) {
    const ca = createTestCa('switchyard http2 test CA');
    certs = { ca: ca.ca, server: ca.issue({ names: ['127.0.0.1', 'localhost'] }) };
  }
  return certs;
}

export interface H2Gateway {
  /** `https://127.0.0.1:<port>` or `http://127.0.0.1:<port>`. */
  url: string;
  port: number;
  server: Http2Server | Http2SecureServer;
}

type Listener = (req: IncomingMessage, res: ServerResponse) => void;

/** Keeps track of a server's sessions and sockets so that closing it ends them all. */
function closer(server: Http2Server | Http2SecureServer): () => Promise<void> {
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<import('node:net').Socket>();
  server.on('session', (s) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  server.on('connection', (s: import('node:net').Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  let closed = false;
  return async () => {
    if (closed) return;
    closed = true;
    const done = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sessions) s.destroy();
    for (const s of sockets) s.destroy();
    await done;
  };
}

/** A gateway of `kind` on port 0 with `listener` (a chain, or a framework's handler). */
export async function h2Gateway(t: TestContext, kind: H2Kind, listener: Listener | RequestListener): Promise<H2Gateway> {
  // node:http2's compatibility request and response stand in for node:http's.
  const handler = listener as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void;
  const server = kind === 'secure' ? http2.createSecureServer({ ...testCerts().server, allowHTTP1: true }, handler) : http2.createServer(handler);
  const close = closer(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(close);
  const port = (server.address() as AddressInfo).port;
  return { url: `${kind === 'secure' ? 'https' : 'http'}://127.0.0.1:${port}`, port, server };
}

/** An HTTP/2 client session to `url` (trusting the test CA for https), closed by the test's `after` hook. */
export function h2Connect(t: TestContext, url: string): ClientHttp2Session {
  const session = url.startsWith('https:') ? http2.connect(url, { ca: testCerts().ca }) : http2.connect(url);
  // A session error (the gateway closing first) is the test's to see through its requests.
  session.on('error', () => undefined);
  t.after(
    () =>
      new Promise<void>((resolve) => {
        if (session.closed || session.destroyed) return resolve();
        session.close(() => resolve());
        setTimeout(() => {
          session.destroy();
          resolve();
        }, 1000).unref();
      }),
  );
  return session;
}

export interface H2Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

/**
 * One request on `session`: `headers` (`:path` and so on; GET / by default), then `body` (a
 * string or buffer, or chunks written one after the other with a pause, streamed without a
 * Content-Length). Rejects on a stream error or after `timeout` ms.
 */
export function h2Request(
  session: ClientHttp2Session,
  headers: OutgoingHttpHeaders = {},
  body?: string | Buffer | Array<string | Buffer>,
  timeout = 10_000,
): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': '/', ...headers }, { endStream: body === undefined });
    const timer = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error(`no complete answer within ${timeout} ms for ${String(headers[':path'] ?? '/')}`));
    }, timeout);
    let head: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      head = h;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      clearTimeout(timer);
      const buf = Buffer.concat(chunks);
      resolve({ status: Number(head[':status']), headers: head, body: buf, text: buf.toString() });
    });
    stream.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    if (Array.isArray(body)) void writeSlowly(stream, body);
    else if (body !== undefined) stream.end(body);
  });
}

async function writeSlowly(stream: ClientHttp2Stream, chunks: Array<string | Buffer>): Promise<void> {
  for (const c of chunks) {
    if (stream.destroyed) return;
    stream.write(c);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  if (!stream.destroyed) stream.end();
}

/** Header names HTTP/2 forbids (RFC 9113 §8.2.2) found among `headers`. */
export function connectionHeaders(headers: IncomingHttpHeaders): string[] {
  return Object.keys(headers).filter((n) =>
    ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'te'].includes(n),
  );
}

/** Pseudo-headers among what an upstream received. */
export function pseudoHeaders(headers: IncomingMessage['headers'], raw: string[] = []): string[] {
  return [...Object.keys(headers), ...raw.filter((_, i) => i % 2 === 0)].filter((n) => n.startsWith(':'));
}

/**
 * Opens `path` on `session` and resets the stream (CANCEL) at its first response chunk, as a client
 * that goes away mid-response. Rejects when no chunk comes within `ms`.
 */
export function cancelAfterFirstChunk(session: ClientHttp2Session, path: string, ms = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path });
    stream.on('error', () => undefined);
    const timer = setTimeout(() => reject(new Error(`no first chunk of ${path} within ${ms} ms`)), ms);
    stream.once('data', () => {
      clearTimeout(timer);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      resolve();
    });
  });
}

export interface TickingUpstream {
  url: string;
  /** Responses that closed (the gateway aborted them: they never end by themselves). */
  closed(): number;
}

/** An HTTP/1.1 upstream that answers `/ok` with `ok`, and anything else with a line every 10 ms, forever. */
export async function tickingUpstream(t: TestContext): Promise<TickingUpstream> {
  let closed = 0;
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    if (req.url?.endsWith('/ok')) return res.end('ok');
    res.writeHead(200, { 'content-type': 'text/plain' });
    const timer = setInterval(() => res.write('tick\n'), 10);
    timers.add(timer);
    res.once('close', () => {
      clearInterval(timer);
      timers.delete(timer);
      closed++;
    });
  });
  t.after(() => timers.forEach(clearInterval));
  const up = await listen(t, server);
  return { url: up.url, closed: () => closed };
}
