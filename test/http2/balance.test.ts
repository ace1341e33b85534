// balance() and healthCheck() behind node:http2 servers (issue 12): TLS with allowHTTP1 and h2c,
// HTTP/2 clients (http2.connect) to HTTP/1.1 upstreams. Pseudo-headers never go upstream, the
// upstream gets a proper Host, :authority is the request's host, the scheme is the connection's,
// connection-specific response headers never reach an HTTP/2 client, bodies stream both ways, and
// a client that resets its stream aborts the upstream request and releases the server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { balance, chain, healthCheck, respondWithError, type BalanceOptions, type UpstreamPool } from '../../src/index.ts';
import { deadPort, listen, poolOf, until, upstream, type Upstream } from '../helpers.ts';
import {
  cancelAfterFirstChunk,
  connectionHeaders,
  h2Connect,
  h2Gateway,
  h2Request,
  KINDS,
  pseudoHeaders,
  testCerts,
  tickingUpstream,
  type H2Gateway,
  type H2Kind,
} from './support.ts';
import type { TestContext } from 'node:test';

const T = { timeout: 20_000 };

async function proxyGateway(t: TestContext, kind: H2Kind, pool: UpstreamPool, options: BalanceOptions = {}): Promise<H2Gateway> {
  return h2Gateway(t, kind, chain(balance(pool, options)));
}

for (const kind of KINDS) {
  const scheme = kind === 'secure' ? 'https' : 'http';

  test(
    `${kind}: an HTTP/2 request reaches an HTTP/1.1 upstream without pseudo-headers, with the upstream's Host and :authority as X-Forwarded-Host and Forwarded host`,
    T,
    async (t) => {
      const up = await upstream(t, 'a');
      const pool = poolOf(t, [up.url]);
      const gw = await proxyGateway(t, kind, pool);
      const session = h2Connect(t, gw.url);
      const r = await h2Request(session, { ':path': '/p/q?x=1', 'x-user': 'u1', cookie: 'a=1' });
      assert.equal(r.status, 200);
      assert.equal(r.text, 'a');
      assert.equal(up.seen.length, 1);
      const seen = up.seen[0]!;
      assert.equal(seen.url, '/p/q?x=1');
      assert.deepEqual(pseudoHeaders(seen.headers), []);
      assert.equal(seen.headers.host, `127.0.0.1:${up.port}`);
      assert.equal(seen.headers['x-forwarded-host'], `127.0.0.1:${gw.port}`);
      assert.equal(seen.headers['x-forwarded-proto'], scheme);
      assert.equal(seen.headers.forwarded, `for=127.0.0.1;host="127.0.0.1:${gw.port}";proto=${scheme}`);
      assert.equal(seen.headers['x-user'], 'u1');
      assert.equal(seen.headers.cookie, 'a=1');
    },
  );

  test(`${kind}: host 'client' sends :authority upstream as Host`, T, async (t) => {
    const up = await upstream(t, 'a');
    const pool = poolOf(t, [up.url]);
    const gw = await proxyGateway(t, kind, pool, { host: 'client' });
    const session = h2Connect(t, gw.url);
    const r = await h2Request(session, { ':path': '/', ':authority': 'app.example:8443' });
    assert.equal(r.status, 200);
    assert.equal(up.seen[0]!.headers.host, 'app.example:8443');
    assert.equal(up.seen[0]!.headers['x-forwarded-host'], 'app.example:8443');
  });

  test(`${kind}: the scheme is the connection's, whatever :scheme says`, T, async (t) => {
    const up = await upstream(t, 'a');
    const pool = poolOf(t, [up.url]);
    const gw = await proxyGateway(t, kind, pool);
    const session = h2Connect(t, gw.url);
    const lie = kind === 'secure' ? 'http' : 'https';
    const r = await h2Request(session, { ':path': '/', ':scheme': lie });
    assert.equal(r.status, 200);
    assert.equal(up.seen[0]!.headers['x-forwarded-proto'], scheme);
    assert.match(String(up.seen[0]!.headers.forwarded), new RegExp(`;proto=${scheme}$`));
  });

  test(`${kind}: connection-specific upstream response headers never reach the HTTP/2 client`, T, async (t) => {
    const up = await upstream(t, 'a', (_req, res) => {
      res.setHeader('connection', 'keep-alive, x-hop');
      res.setHeader('keep-alive', 'timeout=5');
      res.setHeader('proxy-connection', 'keep-alive');
      res.setHeader('upgrade', 'h2c');
      res.setHeader('http2-settings', 'AAMAAABkAAQAAP__');
      res.setHeader('x-hop', 'dropped');
      res.setHeader('x-kept', 'yes');
      // No Content-Length: the upstream's answer is chunked.
      res.write('one,');
      res.end('two');
    });
    const pool = poolOf(t, [up.url]);
    const gw = await proxyGateway(t, kind, pool);
    const session = h2Connect(t, gw.url);
    const r = await h2Request(session, { ':path': '/' });
    assert.equal(r.status, 200);
    assert.equal(r.text, 'one,two');
    assert.deepEqual(connectionHeaders(r.headers), []);
    assert.equal(r.headers['x-hop'], undefined);
    assert.equal(r.headers['x-kept'], 'yes');
  });

  test(`${kind}: a streamed upload reaches the upstream as it comes, and a large response streams back`, T, async (t) => {
    const SIZE = 8 * 1024 * 1024;
    const block = Buffer.alloc(64 * 1024, 'z');
    let firstChunkAt = -1;
    let received = 0;
    const hash = createHash('sha256');
    let framing: IncomingMessage['headers'] = {};
    let release: () => void = () => undefined;
    const firstSeen = new Promise<void>((resolve) => (release = resolve));
    const server = http.createServer((req, res) => {
      framing = req.headers;
      req.on('data', (c: Buffer) => {
        if (firstChunkAt === -1) {
          firstChunkAt = received;
          release();
        }
        received += c.length;
        hash.update(c);
      });
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-received': String(received), 'x-sha256': hash.digest('hex') });
        let sent = 0;
        const pump = (): void => {
          while (sent < SIZE) {
            sent += block.length;
            if (!res.write(block)) {
              res.once('drain', pump);
              return;
            }
          }
          res.end();
        };
        pump();
      });
    });
    const up = await listen(t, server);
    const pool = poolOf(t, [up.url]);
    const gw = await proxyGateway(t, kind, pool);
    const session = h2Connect(t, gw.url);
    const stream = session.request({ ':path': '/upload', ':method': 'POST', 'content-type': 'application/octet-stream' });
    const sentHash = createHash('sha256');
    const part = Buffer.alloc(16 * 1024, 'u');
    // The first part goes alone: the upstream must see it before the client sends anything else.
    stream.write(part);
    sentHash.update(part);
    await firstSeen;
    for (let i = 0; i < 31; i++) {
      stream.write(part);
      sentHash.update(part);
    }
    stream.end();
    const reply = await new Promise<{ headers: http2.IncomingHttpHeaders; length: number }>((resolve, reject) => {
      let headers: http2.IncomingHttpHeaders = {};
      let length = 0;
      stream.on('response', (h) => (headers = h));
      stream.on('data', (c: Buffer) => (length += c.length));
      stream.on('end', () => resolve({ headers, length }));
      stream.on('error', reject);
    });
    assert.equal(firstChunkAt, 0);
    assert.equal(framing['transfer-encoding'], 'chunked');
    assert.equal(framing['content-length'], undefined);
    assert.equal(reply.headers[':status'], 200);
    assert.equal(reply.headers['x-received'], String(32 * part.length));
    assert.equal(reply.headers['x-sha256'], sentHash.digest('hex'));
    assert.equal(reply.length, SIZE);
  });

  test(`${kind}: an upload with a Content-Length is forwarded with it`, T, async (t) => {
    const up = await upstream(t, 'a', (req, res, body) => res.end(`${req.headers['content-length']}:${body}`));
    const pool = poolOf(t, [up.url]);
    const gw = await proxyGateway(t, kind, pool);
    const session = h2Connect(t, gw.url);
    const r = await h2Request(session, { ':path': '/', ':method': 'PUT', 'content-length': '5' }, 'hello');
    assert.equal(r.status, 200);
    assert.equal(r.text, '5:hello');
  });

  test(`${kind}: an upstream 500 is relayed; a pool with no server available answers 503`, T, async (t) => {
    const up = await upstream(t, 'a', (_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('broken');
    });
    const gw = await proxyGateway(t, kind, poolOf(t, [up.url]));
    const session = h2Connect(t, gw.url);
    const r = await h2Request(session, { ':path': '/' });
    assert.equal(r.status, 500);
    assert.equal(r.text, 'broken');

    const none = await proxyGateway(t, kind, poolOf(t, [up.url], { each: { down: true } }));
    const r2 = await h2Request(h2Connect(t, none.url), { ':path': '/' });
    assert.equal(r2.status, 503);

    const dead = await proxyGateway(t, kind, poolOf(t, [`http://127.0.0.1:${await deadPort()}`]));
    const r3 = await h2Request(h2Connect(t, dead.url), { ':path': '/' });
    assert.equal(r3.status, 502);
  });

  test(`${kind}: chain()'s error answer to an HTTP/2 client leaves out a Keep-Alive a middleware set (503, no crash)`, T, async (t) => {
    const up = await upstream(t, 'a');
    const careless = (_req: IncomingMessage, res: http.ServerResponse, next: (err?: unknown) => void): void => {
      res.setHeader('keep-alive', 'timeout=5');
      next();
    };
    const gw = await h2Gateway(t, kind, chain(careless, balance(poolOf(t, [up.url], { each: { down: true } }))));
    const r = await h2Request(h2Connect(t, gw.url), { ':path': '/' });
    assert.equal(r.status, 503);
    assert.equal(r.text, '503 Service Unavailable\n');
    assert.deepEqual(connectionHeaders(r.headers), []);
  });

  test(`${kind}: a client that resets its stream mid-response aborts the upstream request and releases the server`, T, async (t) => {
    const up = await tickingUpstream(t);
    const pool = poolOf(t, [up.url]);
    const gw = await proxyGateway(t, kind, pool);
    const session = h2Connect(t, gw.url);
    await cancelAfterFirstChunk(session, '/stream');
    await until(() => up.closed() === 1, 5000, 'the upstream request to be aborted');
    await until(() => pool.stats().servers.every((s) => s.active === 0), 5000, 'active to return to 0');
    // The gateway and the session are still fine.
    const r = await h2Request(session, { ':path': '/ok' });
    assert.equal(r.status, 200);
    assert.equal(r.text, 'ok');
  });

  test(`${kind}: a client that resets its stream before the response header aborts the upstream request`, T, async (t) => {
    let upstreamClosed = 0;
    let arrived = 0;
    const server = http.createServer((_req, res) => {
      arrived++;
      res.once('close', () => upstreamClosed++);
    });
    const up = await listen(t, server);
    const pool = poolOf(t, [up.url]);
    const gw = await proxyGateway(t, kind, pool);
    const session = h2Connect(t, gw.url);
    const stream = session.request({ ':path': '/slow' });
    stream.on('error', () => undefined);
    await until(() => arrived === 1, 5000, 'the request upstream');
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await until(() => upstreamClosed === 1, 5000, 'the upstream request to be aborted');
    await until(() => pool.stats().servers.every((s) => s.active === 0), 5000, 'active to return to 0');
    assert.equal(arrived, 1);
  });

  test(`${kind}: healthCheck() runs on the pool while HTTP/2 clients are served by the healthy server`, T, async (t) => {
    const good = await upstream(t, 'good');
    const bad = await upstream(t, 'bad', (req, res) => {
      res.statusCode = req.url === '/health' ? 500 : 200;
      res.end('bad');
    });
    const pool = poolOf(t, [good.url, bad.url]);
    const hc = healthCheck(pool, { uri: '/health', interval: '100ms', fails: 1, passes: 1 });
    t.after(() => hc.stop());
    await hc.ready;
    const gw = await proxyGateway(t, kind, pool);
    const session = h2Connect(t, gw.url);
    const bodies = [];
    for (let i = 0; i < 4; i++) bodies.push((await h2Request(session, { ':path': '/' })).text);
    assert.deepEqual(bodies, ['good', 'good', 'good', 'good']);
    assert.ok(good.seen.some((s) => s.url === '/health'));
    assert.ok(bad.seen.some((s) => s.url === '/health'));
  });
}

test('secure: an HTTP/1.1 client of the allowHTTP1 server is still proxied as before', T, async (t) => {
  const up = await upstream(t, 'a');
  const pool = poolOf(t, [up.url]);
  const gw = await proxyGateway(t, 'secure', pool);
  const r = await new Promise<{ status: number; version: string; body: string; headers: IncomingMessage['headers'] }>((resolve, reject) => {
    const req = https.request(`${gw.url}/h1?a=b`, { ca: testCerts().ca, agent: false, headers: { connection: 'keep-alive' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, version: res.httpVersion, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
  assert.equal(r.status, 200);
  assert.equal(r.version, '1.1');
  assert.equal(r.body, 'a');
  assert.equal(up.seen[0]!.url, '/h1?a=b');
  assert.equal(up.seen[0]!.headers['x-forwarded-host'], `127.0.0.1:${gw.port}`);
  assert.equal(up.seen[0]!.headers['x-forwarded-proto'], 'https');
});

test('h2c: an error chain answer (final handler) reaches the HTTP/2 client', T, async (t) => {
  const up: Upstream = await upstream(t, 'a');
  const pool = poolOf(t, [up.url]);
  const gw = await h2Gateway(t, 'h2c', chain(balance(pool), { final: (err, req, res) => respondWithError(err, req, res) }));
  const r = await h2Request(h2Connect(t, gw.url), { ':path': '/a%00b' });
  assert.equal(r.status, 400);
});
