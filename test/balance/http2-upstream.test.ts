// HTTP/2 upstreams (issue 15): a server with `http2: true` is spoken to over HTTP/2, h2c with prior
// knowledge for http:// and ALPN for https://, and its response trailers reach the client, so a gRPC
// service can be balanced. The upstreams are gRPC-shaped servers on node:http2's core API
// (application/grpc, length-prefixed messages, `grpc-status` in trailers, unary and server
// streaming calls, trailers-only errors); the gateways are node:http2 servers (h2c and TLS) and a
// plain node:http one for HTTP/1.1 clients.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { connect } from 'node:net';
import { balance, chain, createPool, InvalidOptionError, type UpstreamPool } from '../../src/index.ts';
import { deadPort, gateway, listen, until } from '../helpers.ts';
import { h2Connect, h2Gateway, KINDS, testCerts } from '../http2/support.ts';
import { NO_OPENSSL } from '../support/tls.ts';
import { rawUpstream, TEST_TIMEOUT } from './support.ts';

/** One gRPC message: a flag byte (0, not compressed), the length (big-endian uint32), the bytes. */
function frame(message: string | Buffer): Buffer {
  const body = Buffer.from(message);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** The messages of a gRPC body. */
function messages(buf: Buffer): string[] {
  const out: string[] = [];
  for (let pos = 0; pos + 5 <= buf.length; ) {
    const len = buf.readUInt32BE(pos + 1);
    out.push(buf.subarray(pos + 5, pos + 5 + len).toString());
    pos += 5 + len;
  }
  return out;
}

interface GrpcUpstream {
  url: string;
  port: number;
  /** The request headers of every call, in order. */
  calls: IncomingHttpHeaders[];
  /** HTTP/2 sessions (connections) the server accepted. */
  sessions(): number;
}

const GRPC = { 'content-type': 'application/grpc' };

/**
 * A gRPC-shaped server on node:http2 (h2c, or TLS with `tls`): `/test.Echo/Unary` answers the
 * request's message as `echo:<message>`; `/test.Echo/Stream` sends `count` messages (the request's
 * number, 5 by default) 20 ms apart; `/test.Echo/Big` sends as many messages of 64 KiB (64 by
 * default) as fast as the flow control lets it; `/test.Echo/Collect` answers `got:` and the request's messages (a client
 * stream); every call then ends with trailers `grpc-status: 0`. `/test.Echo/Missing`
 * answers trailers-only (`grpc-status: 12` in the header, end of stream). `/plain` answers 4 MiB
 * without trailers.
 */
async function grpcUpstream(t: TestContext, tls?: { key: string; cert: string }): Promise<GrpcUpstream> {
  const calls: IncomingHttpHeaders[] = [];
  let sessions = 0;
  const server = tls === undefined ? http2.createServer() : http2.createSecureServer({ ...tls, allowHTTP1: false });
  server.on('session', () => sessions++);
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    calls.push(headers);
    stream.on('error', () => undefined);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const path = String(headers[':path']);
      const request = messages(Buffer.concat(chunks));
      if (path === '/plain') {
        stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
        stream.end(Buffer.alloc(4 * 1024 * 1024, 'p'));
        return;
      }
      if (path === '/test.Echo/Missing') {
        stream.respond({ ':status': 200, ...GRPC, 'grpc-status': '12', 'grpc-message': 'no such method' }, { endStream: true });
        return;
      }
      stream.respond({ ':status': 200, ...GRPC }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'done' }));
      if (path === '/test.Echo/Unary') {
        stream.end(frame(`echo:${request[0] ?? ''}`));
      } else if (path === '/test.Echo/Collect') {
        stream.end(frame(`got:${request.join(',')}`));
      } else if (path === '/test.Echo/Stream') {
        const count = Number(request[0] ?? '5');
        let i = 0;
        const next = (): void => {
          if (stream.destroyed) return;
          if (i === count) return void stream.end();
          stream.write(frame(`message ${i++}`));
          setTimeout(next, 20);
        };
        next();
      } else if (path === '/test.Echo/Big') {
        const big = frame(Buffer.alloc(64 * 1024, 'b'));
        const count = Number(request[0] ?? '64');
        let i = 0;
        const pump = (): void => {
          while (i < count) {
            i++;
            if (!stream.write(big)) return void stream.once('drain', pump);
          }
          stream.end();
        };
        pump();
      } else {
        stream.end();
      }
    });
  });
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  );
  const port = (server.address() as AddressInfo).port;
  return { url: `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`, port, calls, sessions: () => sessions };
}

interface GrpcReply {
  headers: IncomingHttpHeaders;
  messages: string[];
  trailers: IncomingHttpHeaders | undefined;
  /** When each message arrived (ms since the call started). */
  at: number[];
}

/**
 * One gRPC call on an HTTP/2 session: the request message (or messages, written 30 ms apart), then
 * the answer, its messages and trailers.
 */
function grpcCall(session: ClientHttp2Session, path: string, message: string | string[], options: { slow?: boolean } = {}): Promise<GrpcReply> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const stream = session.request({ ':method': 'POST', ':path': path, ...GRPC, te: 'trailers' });
    const timer = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error(`no complete answer to ${path} in time`));
    }, 15_000);
    let headers: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | undefined;
    let buf = Buffer.alloc(0);
    const at: number[] = [];
    stream.on('response', (h) => {
      headers = h;
      if (options.slow === true) {
        // A client that does not read for a while: the gateway's buffer for it fills up.
        stream.pause();
        setTimeout(() => stream.resume(), 500);
      }
    });
    stream.on('trailers', (h) => (trailers = h));
    stream.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      at.push(performance.now() - started);
    });
    stream.on('end', () => {
      clearTimeout(timer);
      resolve({ headers, messages: messages(buf), trailers, at });
    });
    stream.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    if (typeof message === 'string') return void stream.end(frame(message));
    void (async () => {
      for (const m of message) {
        stream.write(frame(m));
        await new Promise((r) => setTimeout(r, 30));
      }
      stream.end();
    })();
  });
}

function h2Pool(t: TestContext, url: string, options: Partial<Parameters<typeof createPool>[0]> = {}): UpstreamPool {
  const pool = createPool({ name: 'grpc', servers: [{ url, http2: true }], ...options });
  t.after(() => pool.close());
  return pool;
}

for (const kind of KINDS) {
  test(`gRPC unary call through a ${kind} gateway to an h2c upstream: message, trailers with grpc-status, te: trailers upstream`, {
    skip: kind === 'secure' ? NO_OPENSSL : false,
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const up = await grpcUpstream(t);
    const pool = h2Pool(t, up.url);
    const gw = await h2Gateway(t, kind, chain(balance(pool)));
    const session = h2Connect(t, gw.url);
    const r = await grpcCall(session, '/test.Echo/Unary', 'hello');
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.headers['content-type'], 'application/grpc');
    assert.deepEqual(r.messages, ['echo:hello']);
    assert.equal(r.trailers?.['grpc-status'], '0', `trailers: ${JSON.stringify(r.trailers)}`);
    assert.equal(r.trailers?.['grpc-message'], 'done');
    const call = up.calls[0]!;
    assert.equal(call[':method'], 'POST');
    assert.equal(call[':authority'], `127.0.0.1:${up.port}`);
    assert.equal(call.te, 'trailers', 'gRPC servers are told the proxy takes trailers');
    assert.equal(call['content-type'], 'application/grpc');
    await until(() => pool.stats().servers[0]!.active === 0, 2000, 'active 0');
    const s = pool.stats().servers[0]!;
    assert.equal(s.responses.codes['200'], 1);
    assert.ok(s.sent > 0 && s.received > 0, 'bytes are counted for HTTP/2 attempts too');
  });
}

test('gRPC server streaming: each message reaches the client as the upstream sends it, then the trailers', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await grpcUpstream(t);
  const pool = h2Pool(t, up.url);
  const gw = await h2Gateway(t, 'h2c', chain(balance(pool)));
  const r = await grpcCall(h2Connect(t, gw.url), '/test.Echo/Stream', '6');
  assert.deepEqual(r.messages, ['message 0', 'message 1', 'message 2', 'message 3', 'message 4', 'message 5']);
  assert.equal(r.trailers?.['grpc-status'], '0');
  // 20 ms apart upstream: streamed, not gathered into one write at the end.
  assert.ok(r.at.length >= 3, `messages came in ${r.at.length} reads`);
  assert.ok(r.at.at(-1)! - r.at[0]! >= 50, `the reads spread over ${(r.at.at(-1)! - r.at[0]!).toFixed(0)} ms`);
});

test('gRPC client streaming: messages the client sends over time reach the upstream on one call; a refused first server gets them replayed to the next', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await grpcUpstream(t);
  const dead = await deadPort();
  const pool = createPool({
    name: 'grpc',
    servers: [
      { url: `http://127.0.0.1:${dead}`, http2: true },
      { url: up.url, http2: true },
    ],
  });
  t.after(() => pool.close());
  const gw = await h2Gateway(t, 'h2c', chain(balance(pool)));
  const session = h2Connect(t, gw.url);
  const r = await grpcCall(session, '/test.Echo/Collect', ['a', 'b', 'c']);
  assert.deepEqual(r.messages, ['got:a,b,c']);
  assert.equal(r.trailers?.['grpc-status'], '0');
  const again = await grpcCall(session, '/test.Echo/Collect', ['d', 'e']);
  assert.deepEqual(again.messages, ['got:d,e']);
  assert.equal(up.calls.length, 2);
});

test('a trailers-only gRPC answer (grpc-status in the header, no body) reaches the client as such', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await grpcUpstream(t);
  const pool = h2Pool(t, up.url);
  const gw = await h2Gateway(t, 'h2c', chain(balance(pool)));
  const r = await grpcCall(h2Connect(t, gw.url), '/test.Echo/Missing', 'x');
  assert.equal(r.headers[':status'], 200);
  assert.equal(r.headers['grpc-status'], '12');
  assert.equal(r.headers['grpc-message'], 'no such method');
  assert.deepEqual(r.messages, []);
});

for (const count of [19, 64]) {
  test(`a client that does not read for a while still gets every message of a ${count} × 64 KiB gRPC stream, and its trailers`, {
    timeout: 30_000,
  }, async (t) => {
    // 19 messages: the gateway's buffer for the client fills up (1 MiB) when what the upstream has
    // left fits in the HTTP/2 window, so its trailers follow at once: undici drops what a paused
    // stream still holds when they come, so a gRPC response must never be paused.
    const up = await grpcUpstream(t);
    const pool = h2Pool(t, up.url);
    const gw = await h2Gateway(t, 'h2c', chain(balance(pool)));
    const r = await grpcCall(h2Connect(t, gw.url), '/test.Echo/Big', String(count), { slow: true });
    assert.equal(r.messages.length, count);
    for (const m of r.messages) assert.equal(m.length, 64 * 1024);
    assert.equal(r.trailers?.['grpc-status'], '0');
  });
}

test('a 4 MiB HTTP/2 response without trailers reaches a slow client whole (the upstream stream is paused meanwhile)', { timeout: 30_000 }, async (t) => {
  const up = await grpcUpstream(t);
  const pool = h2Pool(t, up.url);
  const gw = await h2Gateway(t, 'h2c', chain(balance(pool)));
  const session = h2Connect(t, gw.url);
  const total = await new Promise<number>((resolve, reject) => {
    const stream = session.request({ ':path': '/plain' });
    let n = 0;
    let reads = 0;
    stream.on('data', (c: Buffer) => {
      n += c.length;
      if (++reads === 2) {
        stream.pause();
        setTimeout(() => stream.resume(), 500);
      }
    });
    stream.on('end', () => resolve(n));
    stream.on('error', reject);
  });
  assert.equal(total, 4 * 1024 * 1024);
});

test('calls share one HTTP/2 connection to the upstream: 10 at once after the first open no other', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await grpcUpstream(t);
  const pool = h2Pool(t, up.url);
  const gw = await h2Gateway(t, 'h2c', chain(balance(pool)));
  const session = h2Connect(t, gw.url);
  await grpcCall(session, '/test.Echo/Unary', 'first');
  const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => grpcCall(session, '/test.Echo/Unary', `m${i}`)));
  assert.deepEqual(
    replies.map((r) => r.messages[0]),
    Array.from({ length: 10 }, (_, i) => `echo:m${i}`),
  );
  for (const r of replies) assert.equal(r.trailers?.['grpc-status'], '0');
  assert.equal(up.sessions(), 1, `one upstream connection, not ${up.sessions()}`);
});

test('an HTTP/1.1 client gets the HTTP/2 upstream’s trailers after the last chunk', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await grpcUpstream(t);
  const pool = h2Pool(t, up.url);
  const gw = await gateway(t, chain(balance(pool)));
  const body = frame('over http/1.1');
  const text = await new Promise<string>((resolve, reject) => {
    const socket = connect(gw.port, '127.0.0.1');
    let got = '';
    socket.setEncoding('latin1');
    socket.on('data', (s: string) => {
      got += s;
      // The end of a chunked body: the last chunk, the trailers, an empty line.
      if (/\r\n0\r\n(?:[^\r\n]+\r\n)*\r\n$/.test(got)) socket.end();
    });
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
    socket.write(`POST /test.Echo/Unary HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\nContent-Type: application/grpc\r\nContent-Length: ${body.length}\r\n\r\n`);
    socket.write(body);
  });
  assert.match(text, /^HTTP\/1\.1 200/);
  assert.match(text, /transfer-encoding: chunked/i);
  const tail = text.slice(text.lastIndexOf('\r\n0\r\n'));
  assert.match(tail, /grpc-status: 0\r\n/i, `trailers after the last chunk: ${JSON.stringify(tail)}`);
  assert.match(tail, /grpc-message: done\r\n/i);
  assert.ok(text.includes('echo:over http/1.1'));
});

test('HTTP/2 over TLS (ALPN h2) with the pool’s CA and servername: unary call and trailers', { skip: NO_OPENSSL, timeout: TEST_TIMEOUT }, async (t) => {
  const up = await grpcUpstream(t, testCerts().server);
  const pool = h2Pool(t, up.url, { tls: { ca: testCerts().ca, servername: 'localhost' } });
  const gw = await h2Gateway(t, 'h2c', chain(balance(pool)));
  const r = await grpcCall(h2Connect(t, gw.url), '/test.Echo/Unary', 'tls');
  assert.deepEqual(r.messages, ['echo:tls']);
  assert.equal(r.trailers?.['grpc-status'], '0');
  assert.equal(up.calls[0]![':scheme'], 'https');
});

test('http2: true to an https server that offers HTTP/1.1 only: ALPN falls back, requests still go through', {
  skip: NO_OPENSSL,
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const server = createHttpsServer(testCerts().server, (req, res) => {
    req.resume();
    res.end(`h1 ${req.httpVersion}`);
  });
  const up = await listen(t, server as unknown as import('node:http').Server);
  const pool = createPool({ servers: [{ url: `https://127.0.0.1:${up.port}`, http2: true }], tls: { ca: testCerts().ca } });
  t.after(() => pool.close());
  const gw = await gateway(t, chain(balance(pool)));
  for (let i = 0; i < 3; i++) {
    const res = await fetch(gw.url);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'h1 1.1');
  }
});

test('the http2 server field: a boolean, fixed for the server’s life, shown in servers', () => {
  assert.throws(
    () => createPool({ servers: [{ url: 'http://127.0.0.1:1', http2: 'yes' as unknown as boolean }] }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'servers[0].http2',
  );
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1', http2: true }, { url: 'http://127.0.0.1:2' }] });
  assert.deepEqual(
    pool.servers.map((s) => s.http2),
    [true, false],
  );
  assert.throws(
    () => pool.update('http://127.0.0.1:1', { http2: false } as never),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'changes.http2',
  );
  pool.close();
});

test('trailers of an HTTP/1.1 upstream’s chunked response reach an HTTP/2 client; fields a trailer may not carry are left out', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const raw = await rawUpstream(t, (s) =>
    s.once('data', () =>
      s.end(
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n' + '5\r\nhello\r\n0\r\nX-Checksum: abc123\r\nSet-Cookie: a=1\r\n\r\n',
      ),
    ),
  );
  const pool = createPool({ servers: [{ url: raw.url }] });
  t.after(() => pool.close());
  const gw = await h2Gateway(t, 'h2c', chain(balance(pool)));
  const session = h2Connect(t, gw.url);
  const r = await new Promise<{ body: string; trailers: IncomingHttpHeaders | undefined }>((resolve, reject) => {
    const stream = session.request({ ':path': '/' });
    let body = '';
    let trailers: IncomingHttpHeaders | undefined;
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    stream.on('trailers', (h) => (trailers = h));
    stream.on('end', () => resolve({ body, trailers }));
    stream.on('error', reject);
  });
  assert.equal(r.body, 'hello');
  assert.equal(r.trailers?.['x-checksum'], 'abc123');
  assert.equal(r.trailers?.['set-cookie'], undefined);
});
