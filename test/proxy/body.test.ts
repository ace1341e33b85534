// Request and response bodies: streaming, replay on retries, request framing,
// bodies consumed by a parser.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import express from 'express';
import {
  balance,
  type BadRequestError,
  chain,
  createPool,
  exchange,
  respondWithError,
  SwitchyardError,
  UnsupportedTransferCodingError,
} from '../../src/index.ts';
import { deadPort, fetchText, listen, until } from '../helpers.ts';
import { complete, gatewayFor, rawUpstream, RawClient, tryFetch, TEST_TIMEOUT } from '../balance/support.ts';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
  socket: Socket;
}

/** An http upstream that records each request with its body and the connection it came on. */
async function recordingUpstream(t: TestContext, answer?: (req: IncomingMessage, body: Buffer) => { status?: number; body?: string; destroy?: boolean }) {
  const requests: Recorded[] = [];
  const clientErrors: Error[] = [];
  let connections = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, socket: req.socket });
      const a = answer?.(req, body) ?? {};
      if (a.destroy === true) {
        req.socket.destroy();
        return;
      }
      res.statusCode = a.status ?? 200;
      res.end(a.body ?? `${req.method} ${req.url} ${body.length}`);
    });
  });
  server.on('connection', () => connections++);
  server.on('clientError', (err: Error, socket: Socket) => {
    clientErrors.push(err);
    socket.destroy();
  });
  const up = await listen(t, server);
  return {
    ...up,
    requests,
    clientErrors,
    get connections() {
      return connections;
    },
  };
}

test('a 16 MiB request body is streamed to the upstream intact, without waiting for the whole body', { timeout: 20_000 }, async (t) => {
  const total = 16 * 1024 * 1024;
  const data = randomBytes(total);
  let received = 0;
  const hash = createHash('sha256');
  const server = createServer((req, res) => {
    req.on('data', (c: Buffer) => {
      received += c.length;
      hash.update(c);
    });
    req.on('end', () => res.end(JSON.stringify({ length: received, sha: hash.digest('hex'), te: req.headers['transfer-encoding'] ?? null })));
  });
  const up = await listen(t, server);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const reply = new Promise<string>((resolve, reject) => {
    const req = request(gw.url, { method: 'PUT', agent: false, headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c));
      res.on('end', () => resolve(text));
    });
    req.on('error', reject);
    (async () => {
      const first = 1024 * 1024;
      req.write(data.subarray(0, first));
      // The upstream must see bytes while most of the body is still with the client.
      await until(() => received > 0, 5000, 'the upstream to receive the first bytes before the body ended');
      for (let off = first; off < total; off += 256 * 1024) {
        if (!req.write(data.subarray(off, Math.min(total, off + 256 * 1024)))) await new Promise((r) => req.once('drain', r));
      }
      req.end();
    })().catch(reject);
  });
  const got = JSON.parse(await reply);
  assert.equal(got.length, total);
  assert.equal(got.sha, sha(data));
  assert.equal(got.te, 'chunked', 'a chunked client body stays chunked upstream');
  await until(() => pool.stats().servers[0]!.active === 0, 1000, 'active 0');
  assert.ok(pool.stats().servers[0]!.sent > total, 'sent bytes count the whole request');
});

test('an upstream that answers before the body is sent closes its connection: the half-sent request is not left open', { timeout: TEST_TIMEOUT }, async (t) => {
  let upstreamClosed = false;
  const server = createServer((req, res) => {
    req.socket.once('close', () => (upstreamClosed = true));
    res.writeHead(413, { 'content-type': 'text/plain' });
    res.end('too large');
  });
  const up = await listen(t, server);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write('PUT /big HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
  const r = await c.response(); // the body never ends
  assert.equal(r.status, 413);
  assert.equal(r.body, 'too large');
  await until(() => upstreamClosed, 1000, 'the upstream connection of the half-sent request to close');
  assert.equal(pool.stats().servers[0]!.active, 0);
});

test('a 16 MiB response body is streamed to the client intact, before the upstream finished it', { timeout: 20_000 }, async (t) => {
  const total = 16 * 1024 * 1024;
  const data = randomBytes(total);
  let clientReceived = 0;
  const server = createServer(async (_req, res) => {
    res.writeHead(200, { 'content-length': String(total) });
    res.write(data.subarray(0, 1024 * 1024));
    await until(() => clientReceived > 0, 5000, 'the client to receive the first bytes before the upstream finished');
    for (let off = 1024 * 1024; off < total; off += 256 * 1024) {
      if (!res.write(data.subarray(off, Math.min(total, off + 256 * 1024)))) await new Promise((r) => res.once('drain', r));
    }
    res.end();
  });
  const up = await listen(t, server);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const digest = await new Promise<{ sha: string; length: string | undefined }>((resolve, reject) => {
    const req = request(gw.url, { agent: false }, (res) => {
      const hash = createHash('sha256');
      res.on('data', (c: Buffer) => {
        clientReceived += c.length;
        hash.update(c);
      });
      res.on('end', () => resolve({ sha: hash.digest('hex'), length: res.headers['content-length'] }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
  assert.equal(clientReceived, total);
  assert.equal(digest.sha, sha(data));
  assert.equal(digest.length, String(total));
  await until(() => pool.stats().servers[0]!.active === 0, 1000, 'active 0');
  assert.ok(pool.stats().servers[0]!.received > total, 'received bytes are counted');
});

test('a body under retryBodyLimit is replayed to the next server after a failure once it was sent', { timeout: TEST_TIMEOUT }, async (t) => {
  const body = randomBytes(32 * 1024);
  const s1 = await recordingUpstream(t, () => ({ destroy: true }));
  const s2 = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: s1.url }, { url: s2.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url, { method: 'PUT', body });
  assert.equal(r.status, 200);
  assert.equal(sha(s1.requests[0]!.body), sha(body), 's1 got the whole body before failing');
  assert.equal(sha(s2.requests[0]!.body), sha(body));
  assert.equal(s2.requests[0]!.headers['content-length'], String(body.length));
});

test('a chunked body is replayed with the same framing', { timeout: TEST_TIMEOUT }, async (t) => {
  const s1 = await recordingUpstream(t, () => ({ status: 503 }));
  const s2 = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: s1.url }, { url: s2.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_503', 'non_idempotent'] });
  const c = await RawClient.open(t, gw.port);
  c.write('POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n');
  const r = await c.response();
  assert.equal(r.status, 200);
  assert.equal(s2.requests[0]!.body.toString(), 'abcdef');
  assert.equal(s2.requests[0]!.headers['transfer-encoding'], 'chunked');
  assert.equal(s2.requests[0]!.headers['content-length'], undefined);
});

test('a body over retryBodyLimit is not replayed once sent: no retry, 502', { timeout: TEST_TIMEOUT }, async (t) => {
  const body = randomBytes(200 * 1024);
  const s1 = await recordingUpstream(t, () => ({ destroy: true }));
  const s2 = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: s1.url }, { url: s2.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { retryBodyLimit: 64 * 1024 });
  const r = await fetchText(gw.url, { method: 'PUT', body });
  assert.equal(r.status, 502);
  assert.equal(s1.requests.length, 1);
  assert.equal(s2.requests.length, 0);
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [502]);
});

test('a body over retryBodyLimit is still retried after a refused connect: nothing of it was read', { timeout: TEST_TIMEOUT }, async (t) => {
  const body = randomBytes(200 * 1024);
  const port = await deadPort();
  const s2 = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }, { url: s2.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { retryBodyLimit: 1024 });
  const r = await fetchText(gw.url, { method: 'POST', body });
  assert.equal(r.status, 200);
  assert.equal(sha(s2.requests[0]!.body), sha(body));
});

test('retryBodyLimit 0: a sent body is never replayed, an empty one is', { timeout: TEST_TIMEOUT }, async (t) => {
  const s1 = await recordingUpstream(t, () => ({ destroy: true }));
  const s2 = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: s1.url }, { url: s2.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { retryBodyLimit: 0 });
  assert.equal((await fetchText(gw.url, { method: 'PUT', body: 'x' })).status, 502);
  assert.equal(s2.requests.length, 0);
});

for (const method of ['DELETE', 'OPTIONS', 'GET']) {
  test(`framing: a ${method} with a chunked body and no Content-Length is one upstream request, and the next request on that connection parses`, {
    timeout: TEST_TIMEOUT,
  }, async (t) => {
    const up = await recordingUpstream(t);
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool);
    const c = await RawClient.open(t, gw.port);
    c.write(`${method} /one HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`);
    const r1 = await c.response();
    assert.equal(r1.status, 200);
    assert.equal(r1.body, `${method} /one 11`);
    c.write('GET /two HTTP/1.1\r\nHost: gw\r\n\r\n');
    const r2 = await c.response();
    assert.equal(r2.status, 200);
    assert.equal(r2.body, 'GET /two 0');
    assert.deepEqual(
      up.requests.map((q) => [q.method, q.url, q.body.toString()]),
      [
        [method, '/one', 'hello world'],
        ['GET', '/two', ''],
      ],
    );
    assert.equal(up.requests[0]!.headers['transfer-encoding'], 'chunked');
    assert.equal(up.requests[0]!.headers['content-length'], undefined);
    assert.equal(up.connections, 1, 'both requests went over one kept-alive upstream connection');
    assert.equal(up.requests[0]!.socket, up.requests[1]!.socket);
    assert.deepEqual(up.clientErrors, []);
  });

  test(`framing: a ${method} with a Content-Length body keeps its length upstream`, { timeout: TEST_TIMEOUT }, async (t) => {
    const up = await recordingUpstream(t);
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool);
    const c = await RawClient.open(t, gw.port);
    c.write(`${method} /one HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello`);
    assert.equal((await c.response()).body, `${method} /one 5`);
    c.write('GET /two HTTP/1.1\r\nHost: gw\r\n\r\n');
    assert.equal((await c.response()).body, 'GET /two 0');
    assert.equal(up.requests[0]!.headers['content-length'], '5');
    assert.equal(up.requests[0]!.body.toString(), 'hello');
    assert.equal(up.connections, 1);
    assert.deepEqual(up.clientErrors, []);
  });
}

test('a POST without a body is sent with Content-Length: 0', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write('POST /empty HTTP/1.1\r\nHost: gw\r\n\r\n');
  assert.equal((await c.response()).status, 200);
  assert.equal(up.requests[0]!.headers['content-length'], '0');
  assert.equal(up.requests[0]!.headers['transfer-encoding'], undefined);
});

test('express.json() consumed the body: the parsed body is re-sent, also on a retry', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await deadPort();
  const up = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }, { url: up.url }] });
  t.after(() => pool.close());
  const app = express();
  app.use(express.json());
  app.use(balance(pool));
  const gw = await listen(t, createServer(app));
  const payload = { a: 1, b: [1, 2], s: 'héllo' };
  const r = await fetchText(gw.url + '/api', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) });
  assert.equal(r.status, 200);
  const got = up.requests[0]!;
  assert.deepEqual(JSON.parse(got.body.toString()), payload);
  assert.equal(got.headers['content-length'], String(got.body.length));
  assert.equal(got.url, '/api');
});

test('express.urlencoded() consumed the body: the parsed form is re-sent', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(balance(pool));
  const gw = await listen(t, createServer(app));
  const r = await fetchText(gw.url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=x+y&b=z' });
  assert.equal(r.status, 200);
  assert.deepEqual(
    [...new URLSearchParams(up.requests[0]!.body.toString())],
    [
      ['a', '1'],
      ['b', 'x y'],
      ['b', 'z'],
    ],
  );
});

test('a body consumed with no usable req.body fails fast: 500 SWY_ERR_BODY_CONSUMED, never a hang', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const errors: unknown[] = [];
  const drain = (req: IncomingMessage, _res: unknown, next: (err?: unknown) => void): void => {
    req.on('data', () => undefined);
    req.on('end', () => next());
  };
  const gw = await listen(
    t,
    createServer(
      chain(drain, balance(pool), {
        final: (err, req, res) => {
          errors.push(err);
          respondWithError(err, req, res);
        },
      }),
    ),
  );
  const started = performance.now();
  const r = complete(await tryFetch(gw.url, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: 'raw bytes' }));
  assert.ok(performance.now() - started < 1000);
  assert.equal(r.status, 500);
  const err = errors[0] as BadRequestError;
  assert.ok(err instanceof SwitchyardError);
  assert.equal(err.code, 'SWY_ERR_BODY_CONSUMED');
  assert.equal(err.statusCode, 500);
  assert.equal(up.requests.length, 0);
});

test('express: a consumed body with no req.body reaches the express error handler as SWY_ERR_BODY_CONSUMED', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const app = express();
  app.use((req, _res, next) => {
    req.resume();
    req.on('end', () => next());
  });
  app.use(balance(pool));
  app.use((err: SwitchyardError, req: express.Request, res: express.Response, _next: express.NextFunction) => {
    res.status(err.statusCode).json({ code: err.code, path: exchange(req).requestUri });
  });
  const gw = await listen(t, createServer(app));
  const r = await fetchText(gw.url + '/x', { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'abc' });
  assert.equal(r.status, 500);
  assert.deepEqual(JSON.parse(r.body), { code: 'SWY_ERR_BODY_CONSUMED', path: '/x' });
});

test('Expect: 100-continue from the client: the body is forwarded, the Expect header is not', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write('PUT /e HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n');
  const cont = await c.response();
  assert.equal(cont.status, 100);
  c.write('hello');
  const r = await c.response();
  assert.equal(r.status, 200);
  assert.equal(up.requests[0]!.body.toString(), 'hello');
  assert.equal(up.requests[0]!.headers.expect, undefined);
});

/**
 * A raw upstream that answers an upload before reading it, then resets the
 * connection: `answer` is written once the first bytes arrive, then the socket
 * is destroyed with most of the body unread (the kernel sends a reset). A GET
 * gets 200.
 */
async function refusesUploads(t: TestContext, answer: string) {
  return rawUpstream(t, (socket) => {
    socket.once('data', (first: Buffer) => {
      if (first.toString('latin1').startsWith('GET ')) socket.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
      else socket.write(answer, () => socket.destroy());
    });
  });
}

test('an upload refused early (413 or 401 with Connection: close, then a reset) is relayed and is not a server failure', { timeout: 20_000 }, async (t) => {
  const upload = randomBytes(1024 * 1024);
  for (const [status, reason] of [
    [413, 'Payload Too Large'],
    [401, 'Unauthorized'],
  ] as const) {
    const answer = `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain\r\nX-Refused: yes\r\nContent-Length: 7\r\nConnection: close\r\n\r\nrefused`;
    const a = await refusesUploads(t, answer);
    const b = await refusesUploads(t, answer);
    const pool = createPool({
      servers: [
        { url: a.url, maxFails: 1 },
        { url: b.url, maxFails: 1 },
      ],
    });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool);
    // Two uploads per server: before the fix the first two took both servers out.
    for (let i = 0; i < 4; i++) {
      const r = complete(await tryFetch(gw.url, { method: 'POST', body: upload, headers: { 'content-type': 'application/octet-stream' } }));
      assert.equal(r.status, status, `upload ${i}`);
      assert.equal(r.headers['x-refused'], 'yes');
      assert.equal(r.body.toString(), 'refused');
    }
    await gw.settled(4);
    assert.deepEqual(
      gw.log.map((s) => s.status),
      [[status], [status], [status], [status]],
      'one attempt each, no retry',
    );
    for (const s of pool.stats().servers) {
      assert.equal(s.fails, 0, `${s.id}: an early answer is not a failure`);
      assert.equal(s.state, 'up');
      assert.equal(s.responses.codes[String(status)], 2);
    }
    const g = complete(await tryFetch(gw.url));
    assert.equal(g.status, 200, 'the servers are still in the pool');
    await until(() => pool.stats().servers.every((s) => s.active === 0), 2000, 'active 0');
  }
});

test('an upload refused early whose answer is cut by the reset: the status goes to the client, the server is not failed', { timeout: 20_000 }, async (t) => {
  // Content-Length promises 100 bytes; 9 come before the reset.
  const up = await refusesUploads(t, 'HTTP/1.1 413 Payload Too Large\r\nContent-Length: 100\r\nConnection: close\r\n\r\ntoo large');
  const pool = createPool({
    servers: [
      { url: up.url, maxFails: 1 },
      { url: up.url + '/b', maxFails: 1 },
    ],
  });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await tryFetch(gw.url, { method: 'PUT', body: randomBytes(1024 * 1024) });

  assert.ok('error' in r, 'the client connection is cut: the body is incomplete');
  assert.equal(r.status, 413);
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [413]);
  for (const s of pool.stats().servers) assert.equal(s.fails, 0);
});

test('a request body in a transfer coding other than chunked alone is refused with 501 UnsupportedTransferCodingError, never forwarded', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await recordingUpstream(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const chunked = '5\r\nhello\r\n0\r\n\r\n';
  const cases = [
    ['Transfer-Encoding: gzip, chunked\r\n', 'gzip, chunked'],
    ['Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n', 'gzip, chunked'],
    ['Transfer-Encoding: x-custom ,chunked\r\n', 'x-custom ,chunked'],
  ];
  const c = await RawClient.open(t, gw.port);
  for (const [i, [header, value]] of cases.entries()) {
    c.write(`POST /te HTTP/1.1\r\nHost: gw\r\n${header}\r\n${chunked}`);
    const r = await c.response();
    assert.equal(r.status, 501, header);
    await gw.settled(i + 1);
    const err = gw.log[i]!.error as UnsupportedTransferCodingError;
    assert.ok(err instanceof UnsupportedTransferCodingError, header);
    assert.equal(err.code, 'SWY_ERR_TRANSFER_CODING');
    assert.equal(err.statusCode, 501);
    assert.equal(err.transferEncoding, value);
  }
  assert.equal(up.requests.length, 0, 'nothing reached the upstream');
  // The refused bodies were read off the connection: the next request on it parses.
  c.write(`POST /ok HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: Chunked\r\n\r\n${chunked}`);
  const ok = await c.response();
  assert.equal(ok.status, 200);
  assert.equal(up.requests[0]!.body.toString(), 'hello');
  assert.equal(up.requests[0]!.headers['transfer-encoding'], 'chunked');
});

test("an upload cut short by the upstream leaves the client's keep-alive connection usable: the rest of its body is read and dropped", {
  timeout: 20_000,
}, async (t) => {
  // First an upstream that resets without answering (502, a failure), then one that refuses early (413, not a failure).
  for (const [answer, status] of [
    ['', 502],
    ['HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n', 413],
  ] as const) {
    const up = await refusesUploads(t, answer);
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool);
    const c = await RawClient.open(t, gw.port);
    const size = 4 * 1024 * 1024;
    c.write(`POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: ${size}\r\n\r\n`);
    c.write(Buffer.alloc(size, 'x'));
    assert.equal((await c.response()).status, status);
    c.write('GET /next HTTP/1.1\r\nHost: gw\r\n\r\n');
    const next = await c.response();
    assert.equal(next.status, 200, 'the request after the upload parses on the same connection');
    assert.equal(next.body, 'ok');
    await gw.settled(2);
    assert.deepEqual(
      gw.log.map((s) => s.status),
      [[status], [200]],
    );
  }
});

test('an upload reset without any answer is still a failure: 502, counted for passive health', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await refusesUploads(t, '');
  const pool = createPool({
    servers: [
      { url: up.url, maxFails: 1 },
      { url: up.url + '/b', maxFails: 1 },
    ],
  });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = complete(await tryFetch(gw.url, { method: 'POST', body: randomBytes(1024 * 1024) }));
  assert.equal(r.status, 502);
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [502], 'a POST that reached a server is not re-sent');
  assert.ok(gw.log[0]!.error instanceof SwitchyardError);
  assert.equal(pool.stats().servers[0]!.fails, 1);
});
