// Broken clients, broken upstreams, connection reuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { BadGatewayError, chain, balance, createPool } from '../../src/index.ts';
import { abortAfterFirstChunk, deadPort, fetchText, listen, upstream } from '../helpers.ts';
import { complete, gatewayFor, rawUpstream, RawClient, tryFetch, until, TEST_TIMEOUT } from './support.ts';

test('client aborts mid-response: the upstream request is destroyed and active returns to 0', { timeout: TEST_TIMEOUT }, async (t) => {
  let upstreamClosed = false;
  const up = await upstream(t, 'stream', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first chunk');
    res.once('close', () => (upstreamClosed = true)); // never ends by itself
    void req;
  });
  const pool = createPool({ servers: [{ url: up.url }, { url: up.url + '/other' }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  await abortAfterFirstChunk(gw.url, 2000);
  await until(() => upstreamClosed, 2000, 'the upstream request to be destroyed');
  await until(() => pool.stats().servers.every((s) => s.active === 0), 2000, 'active to return to 0');
  const s = pool.stats().servers[0]!;
  assert.equal(s.fails, 0, "a client abort is not the server's failure");
  assert.equal(s.state, 'up');
});

test('client aborts before the response header: the upstream request is destroyed, no retry, active 0', { timeout: TEST_TIMEOUT }, async (t) => {
  let closed = 0;
  let arrived = 0;
  const hang = await upstream(t, 'hang', (_req, res) => {
    arrived++;
    res.once('close', () => closed++);
  });
  const other = await upstream(t, 'other');
  const pool = createPool({ servers: [{ url: hang.url }, { url: other.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const req = request(gw.url, { agent: false });
  req.on('error', () => undefined);
  req.end();
  await until(() => arrived === 1, 2000, 'the request to reach the upstream');
  req.destroy();
  await until(() => closed === 1, 2000, 'the upstream request to be destroyed');
  await until(() => pool.stats().servers[0]!.active === 0, 2000, 'active 0');
  await gw.settled(1);
  assert.equal(other.seen.length, 0, 'a gone client is not retried elsewhere');
  assert.equal(pool.stats().servers[0]!.fails, 0);
});

test('client aborts while uploading: the upstream request is destroyed, active 0', { timeout: TEST_TIMEOUT }, async (t) => {
  let upstreamGotBytes = false;
  let upstreamClosed = false;
  const server = createServer((req) => {
    req.on('data', () => (upstreamGotBytes = true));
    req.on('close', () => (upstreamClosed = true));
  });
  const up = await listen(t, server);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write('PUT /u HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(1000));
  await until(() => upstreamGotBytes, 2000, 'body bytes to reach the upstream');
  c.socket.destroy();
  await until(() => upstreamClosed, 2000, 'the upstream request to be destroyed');
  await until(() => pool.stats().servers[0]!.active === 0, 2000, 'active 0');
});

test('upstream resets mid-body: the client connection is cut, the gateway keeps serving', { timeout: TEST_TIMEOUT }, async (t) => {
  let n = 0;
  const up = await upstream(t, 'reset', (req, res) => {
    if (n++ === 0) {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('partial');
      setTimeout(() => req.socket.resetAndDestroy(), 20);
      return;
    }
    res.end('fine');
  });
  const pool = createPool({ servers: [{ url: up.url }, { url: up.url + '/p' }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await tryFetch(gw.url);
  assert.ok('error' in r, 'the client must see a cut connection, not a complete response');
  assert.equal(r.status, 200);
  assert.equal(r.received, 'partial'.length);
  const again = complete(await tryFetch(gw.url));
  assert.equal(again.status, 200);
  assert.equal(again.body.toString(), 'fine');
  await until(() => pool.stats().servers.every((s) => s.active === 0), 1000, 'active 0');
  // nginx frees the peer with state 0 once the header went to the client: not a failure.
  assert.ok(pool.stats().servers.every((s) => s.fails === 0));
});

test('upstream sends garbage: 502 BadGatewayError (invalid_header), counted as a failure', { timeout: TEST_TIMEOUT }, async (t) => {
  for (const garbage of [
    'SSH-2.0-OpenSSH_9.6\r\n\r\n',
    'HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n',
    'HTTP/1.1 abc\r\n\r\n',
    // a transfer coding other than chunked: where the body ends cannot be known (nginx 1.23+: invalid header)
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: foo\r\nConnection: close\r\n\r\nabc',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
  ]) {
    const raw = await rawUpstream(t, (s) => s.once('data', () => s.end(garbage)));
    const pool = createPool({ servers: [{ url: raw.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool);
    const r = await fetchText(gw.url);
    assert.equal(r.status, 502, JSON.stringify(garbage));
    await gw.settled(1);
    assert.ok(gw.log[0]!.error instanceof BadGatewayError);
    assert.match(((gw.log[0]!.error as Error).cause as { code: string }).code, /^HPE_/);
    assert.equal(pool.stats().servers[0]!.active, 0);
  }
});

test('upstream closes the connection without answering: an error, retried for GET', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = await rawUpstream(t, (s) => s.once('data', () => s.end()));
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: raw.url }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  assert.equal((await fetchText(gw.url)).body, 'ok');
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [502, 200]);
  assert.equal(pool.stats().servers[0]!.fails, 1);
});

test('keep-alive: sequential requests reuse one upstream connection', { timeout: TEST_TIMEOUT }, async (t) => {
  let connections = 0;
  const up = await upstream(t, 'ka');
  up.server.on('connection', () => connections++);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  for (let i = 0; i < 5; i++) assert.equal((await fetchText(gw.url)).body, 'ka');
  assert.equal(up.seen.length, 5);
  assert.equal(connections, 1);
});

test('keep-alive off: agent { keepAlive: false } opens a connection per request', { timeout: TEST_TIMEOUT }, async (t) => {
  let connections = 0;
  const up = await upstream(t, 'noka');
  up.server.on('connection', () => connections++);
  const pool = createPool({ servers: [{ url: up.url }], agent: { keepAlive: false } });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  for (let i = 0; i < 3; i++) assert.equal((await fetchText(gw.url)).body, 'noka');
  assert.equal(connections, 3);
});

/** An upstream that drops each connection when a second request arrives on it. */
function staleUpstream(t: Parameters<typeof upstream>[0]) {
  const perSocket = new WeakMap<Socket, number>();
  return upstream(t, 'ka', (req: IncomingMessage, res) => {
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, n);
    if (n > 1) {
      req.socket.destroy();
      return;
    }
    res.end(`ok ${req.method}`);
  });
}

for (const method of ['GET', 'PUT']) {
  test(`a kept-alive connection the upstream closed is retried transparently on a new one (${method})`, { timeout: TEST_TIMEOUT }, async (t) => {
    // The upstream drops each connection when a second request arrives on it, as a server
    // whose keep-alive timeout fired just as the gateway reused the connection.
    let connections = 0;
    const up = await staleUpstream(t);
    up.server.on('connection', () => connections++);
    const pool = createPool({ servers: [{ url: up.url }, { url: up.url + '/p' }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool);
    for (let i = 0; i < 3; i++) {
      const r = await fetchText(gw.url, { method, body: method === 'PUT' ? 'body' : undefined });
      assert.equal(r.status, 200);
      assert.equal(r.body, `ok ${method}`);
    }
    await gw.settled(3);
    for (const s of gw.log) assert.equal(s.addr.length, 1, 'the stale connection is not a separate attempt');
    assert.ok(connections >= 3);
    for (const s of pool.stats().servers) {
      assert.equal(s.fails, 0, "a stale connection is not the server's failure");
      assert.equal(s.active, 0);
    }
  });
}

test('a POST on a kept-alive connection the upstream closed is not re-sent unless non_idempotent is listed (nginx)', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await staleUpstream(t);
  for (const [nextUpstream, second] of [
    [['error', 'timeout'], 502],
    [['error', 'timeout', 'non_idempotent'], 200],
  ] as const) {
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool, { nextUpstream: [...nextUpstream] });
    assert.equal((await fetchText(gw.url, { method: 'POST', body: 'one' })).status, 200);
    assert.equal((await fetchText(gw.url, { method: 'POST', body: 'two' })).status, second, nextUpstream.join(','));
  }
});

test("parallel requests: every server's active count returns to 0 and responses are counted by code", { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await upstream(t, 'a', (_req, res) => setTimeout(() => res.end('a'), 20));
  const b = await upstream(t, 'b', (_req, res) => {
    res.statusCode = 404;
    setTimeout(() => res.end('b'), 20);
  });
  const pool = createPool({ servers: [{ url: a.url }, { url: b.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const replies = await Promise.all(Array.from({ length: 10 }, () => fetchText(gw.url)));
  assert.equal(replies.filter((r) => r.status === 200).length, 5);
  assert.equal(replies.filter((r) => r.status === 404).length, 5);
  await until(() => pool.stats().servers.every((s) => s.active === 0), 1000, 'active 0');
  const [sa, sb] = pool.stats().servers;
  assert.equal(sa!.responses.codes['200'], 5);
  assert.equal(sb!.responses.codes['404'], 5);
  assert.equal(sb!.responses['4xx'], 5);
  assert.equal(sa!.requests + sb!.requests, 10);
});

test('chain() without an error handler answers the minimal default response', { timeout: TEST_TIMEOUT }, async (t) => {
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }] });
  t.after(() => pool.close());
  const gw = await listen(t, createServer(chain(balance(pool))));
  const r = await fetchText(gw.url);
  assert.equal(r.status, 502);
  assert.equal(r.body, '502 Bad Gateway\n');
  assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
  const head = await fetchText(gw.url, { method: 'HEAD' });
  assert.equal(head.status, 502);
  assert.equal(head.body, '');
});

test('HEAD: the header is passed on without a body, and the upstream connection stays usable', { timeout: TEST_TIMEOUT }, async (t) => {
  let connections = 0;
  const up = await upstream(t, 'head', (req, res) => {
    res.setHeader('content-length', '10');
    res.setHeader('x-kind', 'head');
    res.end(req.method === 'HEAD' ? undefined : '0123456789');
  });
  up.server.on('connection', () => connections++);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write('HEAD /a HTTP/1.1\r\nHost: gw\r\n\r\n');
  // A HEAD response has no body whatever its Content-Length: read the header only.
  const head = await new Promise<string>((resolve) => {
    let text = '';
    const onData = (b: Buffer): void => {
      text += b.toString('latin1');
      if (text.includes('\r\n\r\n')) {
        c.socket.off('data', onData);
        resolve(text);
      }
    };
    c.socket.on('data', onData);
  });
  assert.match(head, /^HTTP\/1\.1 200/);
  assert.match(head, /content-length: 10/i);
  assert.match(head, /x-kind: head/i);
  assert.ok(head.endsWith('\r\n\r\n'), 'nothing after the header');
  assert.equal((await fetchText(gw.url)).body, '0123456789');
  assert.equal(connections, 1);
});

test('an interim response (103 Early Hints) from the upstream is skipped: the final response is relayed', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = await rawUpstream(t, (s) =>
    s.once('data', () => s.end('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal')),
  );
  const pool = createPool({ servers: [{ url: raw.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url);
  assert.equal(r.status, 200);
  assert.equal(r.body, 'final');
  assert.equal(r.headers.link, undefined, "the interim response's fields are not the final one's");
});
