// WebSocket upgrades through balance(pool).upgrade on the gateway server's `upgrade` event.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';
import { createPool } from '../../src/index.ts';
import { deadPort, listen, upstream } from '../helpers.ts';
import { gatewayFor, RawClient, until, TEST_TIMEOUT } from '../balance/support.ts';

/** A ws echo upstream that records the upgrade requests it accepted. */
async function echoUpstream(t: TestContext, name: string) {
  const server = createServer((_req, res) => res.end('plain http'));
  const wss = new WebSocketServer({ server });
  const upgrades: IncomingMessage[] = [];
  wss.on('connection', (ws, req) => {
    upgrades.push(req);
    ws.on('message', (data, binary) => ws.send(binary ? data : `${name}:${String(data)}`, { binary }));
  });
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });
  const up = await listen(t, server);
  return { ...up, upgrades };
}

/** Opens a WebSocket, sends each message, returns the replies, and closes it. */
async function exchangeMessages(url: string, messages: Array<string | Buffer>, headers?: Record<string, string>): Promise<Array<string | Buffer>> {
  const ws = new WebSocket(url, { headers });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
  const replies: Array<string | Buffer> = [];
  for (const m of messages) {
    const reply = new Promise<string | Buffer>((resolve) => ws.once('message', (data, binary) => resolve(binary ? (data as Buffer) : String(data))));
    ws.send(m);
    replies.push(await reply);
  }
  ws.close();
  await new Promise<void>((resolve) => ws.once('close', () => resolve()));
  return replies;
}

/** Resolves with the HTTP status an upgrade was refused with (0 when the socket was cut). */
function refusedUpgrade(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => reject(new Error('the upgrade unexpectedly succeeded')));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', () => resolve({ status: 0, body: '' }));
  });
}

test('WebSocket echo through balance(pool).upgrade, balanced round robin, text and binary', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await echoUpstream(t, 'a');
  const b = await echoUpstream(t, 'b');
  const pool = createPool({ servers: [{ url: a.url }, { url: b.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const wsUrl = `ws://127.0.0.1:${gw.port}/chat?room=1`;
  assert.deepEqual(await exchangeMessages(wsUrl, ['hi', 'there']), ['a:hi', 'a:there']);
  const bin = Buffer.from([0, 1, 2, 255]);
  const replies = await exchangeMessages(wsUrl, [bin]);
  assert.deepEqual(replies[0], bin);
  assert.equal(a.upgrades.length, 1);
  assert.equal(b.upgrades.length, 1);
  assert.equal(a.upgrades[0]!.url, '/chat?room=1');
  await until(() => pool.stats().servers.every((s) => s.active === 0), 2000, 'active 0 after the sockets closed');
  for (const s of pool.stats().servers) {
    assert.equal(s.requests, 1);
    assert.equal(s.responses.codes['101'], 1);
    assert.equal(s.fails, 0);
  }
});

test('the upgrade request carries the gateway\'s Host and X-Forwarded headers; hop-by-hop ones named in Connection are dropped', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await echoUpstream(t, 'a');
  const pool = createPool({ servers: [{ url: `${a.url}/ws-base` }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write(
    'GET /sock HTTP/1.1\r\n' +
      `Host: 127.0.0.1:${gw.port}\r\n` +
      'Connection: Upgrade, X-Secret\r\n' +
      'Upgrade: websocket\r\n' +
      'X-Secret: hop\r\n' +
      'Keep-Alive: timeout=5\r\n' +
      'X-Forwarded-For: 203.0.113.9\r\n' +
      'Forwarded: for=203.0.113.9\r\n' +
      'Sec-WebSocket-Version: 13\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
      '\r\n',
  );
  const r = await c.response();
  assert.equal(r.status, 101);
  assert.equal(r.headers.get('sec-websocket-accept'), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  const h = a.upgrades[0]!.headers;
  assert.equal(a.upgrades[0]!.url, '/ws-base/sock');
  assert.equal(h.host, `127.0.0.1:${a.port}`);
  assert.equal(h['x-forwarded-for'], '127.0.0.1');
  assert.equal(h['x-forwarded-proto'], 'http');
  assert.equal(h['x-forwarded-host'], `127.0.0.1:${gw.port}`);
  assert.equal(h.forwarded, `for=127.0.0.1;host="127.0.0.1:${gw.port}";proto=http`);
  assert.equal(h['x-secret'], undefined);
  assert.equal(h['keep-alive'], undefined);
  assert.equal(h.connection, 'Upgrade');
  assert.equal(h.upgrade, 'websocket');
  assert.equal(h['sec-websocket-key'], 'dGhlIHNhbXBsZSBub25jZQ==');
  assert.equal(a.upgrades[0]!.rawHeaders.filter((x) => x.toLowerCase() === 'host').length, 1);
});

test('an upgrade to a dead server is answered 502 and counted as a failure', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await deadPort();
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }, { url: `http://127.0.0.1:${port}/x` }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await refusedUpgrade(`ws://127.0.0.1:${gw.port}/`);
  assert.equal(r.status, 502);
  await until(() => pool.stats().servers[0]!.active === 0, 2000, 'active 0');
  assert.equal(pool.stats().servers[0]!.fails, 1);
});

test('an upgrade with no server available is answered 503', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await upstream(t, 'x');
  const pool = createPool({ servers: [{ url: up.url, down: true }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await refusedUpgrade(`ws://127.0.0.1:${gw.port}/`);
  assert.equal(r.status, 503);
});

test('an upstream that refuses the upgrade: its HTTP answer is passed on and counted with its status', { timeout: TEST_TIMEOUT }, async (t) => {
  const plain = await upstream(t, 'plain', (_req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('no websocket here');
  });
  const pool = createPool({ servers: [{ url: plain.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await refusedUpgrade(`ws://127.0.0.1:${gw.port}/`);
  assert.equal(r.status, 404);
  assert.equal(r.body, 'no websocket here');
  await until(() => pool.stats().servers[0]!.active === 0, 2000, 'active 0');
  assert.equal(pool.stats().servers[0]!.responses.codes['404'], 1);
  assert.equal(pool.stats().servers[0]!.responses.codes['101'], undefined);
});

test('an upgrade whose hash key function throws is answered 500, the process keeps running', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await echoUpstream(t, 'a');
  const b = await echoUpstream(t, 'b');
  const pool = createPool({
    method: {
      name: 'hash',
      key: () => {
        throw new Error('key function failed');
      },
    },
    servers: [{ url: a.url }, { url: b.url }],
  });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await refusedUpgrade(`ws://127.0.0.1:${gw.port}/`);
  assert.equal(r.status, 500);
  assert.equal(a.upgrades.length + b.upgrades.length, 0);
});

test('an upgrade with a path that climbs above the root is answered 400 and never reaches a server', { timeout: TEST_TIMEOUT }, async (t) => {
  let upgrades = 0;
  const up = await upstream(t, 'ws');
  up.server.on('upgrade', (_req, socket) => {
    upgrades++;
    socket.destroy();
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write('GET /a/../../etc/passwd HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  const res = await c.response();
  assert.equal(res.status, 400);
  assert.equal(upgrades, 0);
});

test('an upstream that accepts an upgrade and never answers gets 504 after headerTimeout and frees its slot', { timeout: TEST_TIMEOUT }, async (t) => {
  // Registered first so it runs before the upstream's close, which would wait for these sockets.
  const held: import('node:stream').Duplex[] = [];
  t.after(() => held.forEach((s) => s.destroy()));
  const up = await upstream(t, 'silent');
  up.server.on('upgrade', (_req, socket) => held.push(socket)); // takes the socket, answers nothing
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { headerTimeout: 150 });
  const c = await RawClient.open(t, gw.port);
  c.write('GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  const res = await c.response();
  assert.equal(res.status, 504);
  await until(() => pool.stats().servers[0]!.active === 0);
});
