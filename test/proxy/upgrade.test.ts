// WebSocket upgrades through balance(pool).upgrade on the gateway server's `upgrade` event.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, createServer, type IncomingMessage } from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';
import { balance, chain, createPool, GatewayTimeoutError, InvalidOptionError, upgrade } from '../../src/index.ts';
import { blackholePort, deadPort, listen, until, upstream } from '../helpers.ts';
import { delay, gatewayFor, RawClient, TEST_TIMEOUT } from '../balance/support.ts';
import { exchangeMessages, H2C, refusedUpgrade, send, upgradeStatus, upstreamErrors } from './upgrade-support.ts';

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

test("the upgrade request carries the gateway's Host and X-Forwarded headers; hop-by-hop ones named in Connection are dropped", {
  timeout: TEST_TIMEOUT,
}, async (t) => {
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

test("an upgrade with Expect: 100-continue is proxied with the gateway's headers, not the client's", { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await echoUpstream(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write(
    'GET /sock HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, X-Secret\r\nUpgrade: websocket\r\nExpect: 100-continue\r\nX-Secret: hop\r\n' +
      'X-Forwarded-For: 203.0.113.9\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
  assert.equal((await c.response()).status, 101);
  const h = a.upgrades[0]!.headers;
  assert.equal(h['x-forwarded-for'], '127.0.0.1');
  assert.equal(h['x-secret'], undefined);
  assert.equal(h.expect, undefined);
  assert.equal(h.connection, 'Upgrade');
});

test('handshake headers with _ in their names are dropped unless underscoresInHeaders (balance() gives it to its upgrade handler)', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const a = await echoUpstream(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  t.after(() => pool.close());
  const handshake = (port: number): Promise<number> => upgradeStatus(t, port, '/sock', 'X_User: alice\r\nX-Plain: kept\r\n');
  const byDefault = await gatewayFor(t, pool);
  const allowed = await gatewayFor(t, pool, { underscoresInHeaders: true });
  const direct = await listen(t, createServer((_req, res) => res.end()).on('upgrade', upgrade(pool, { underscoresInHeaders: true })));
  const directDefault = await listen(t, createServer((_req, res) => res.end()).on('upgrade', upgrade(pool)));
  for (const port of [byDefault.port, allowed.port, direct.port, directDefault.port]) assert.equal(await handshake(port), 101);
  assert.deepEqual(
    a.upgrades.map((r) => `${r.headers['x_user'] ?? '-'} ${r.headers['x-plain']}`),
    ['- kept', 'alice kept', 'alice kept', '- kept'],
  );
  assert.throws(() => upgrade(pool, { underscoresInHeaders: 'yes' as never }), InvalidOptionError);
});

test('an upgrade the exchange refuses gets its status (TRACE 405, a repeated Host 400) and never reaches a server', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await echoUpstream(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const raw = async (head: string): Promise<number> => {
    const c = await RawClient.open(t, gw.port);
    c.write(`${head}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    return (await c.response()).status;
  };
  assert.equal(await raw('TRACE /sock HTTP/1.1\r\nHost: gw'), 405);
  assert.equal(await raw('GET /sock HTTP/1.1\r\nHost: a.test\r\nHost: b.test'), 400);
  assert.equal(await raw('GET /sock HTTP/1.1\r\nHost: a.test/b'), 400);
  assert.equal(a.upgrades.length, 0);
  assert.equal(pool.stats().servers[0]!.requests, 0);
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

test('an upgrade whose connect times out is answered 504 (nginx proxy_connect_timeout), published as a timeout and counted as a failure', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const errors = upstreamErrors(t);
  const port = await blackholePort(t);
  // two servers: a pool of one never counts failures (nginx)
  const pool = createPool({
    name: 'up-hang',
    servers: [
      { url: `http://127.0.0.1:${port}`, id: 'h' },
      { url: `http://127.0.0.1:${port}/x`, id: 'h2' },
    ],
  });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { connectTimeout: 100 });
  const r = await refusedUpgrade(`ws://127.0.0.1:${gw.port}/`);
  assert.equal(r.status, 504);
  await until(() => pool.stats().servers[0]!.active === 0, 2000, 'active 0');
  assert.equal(pool.stats().servers[0]!.fails, 1);
  const mine = errors.filter((m) => m.pool === 'up-hang');
  assert.equal(mine.length, 1);
  assert.equal(mine[0]!.failure, 'timeout');
  assert.ok(mine[0]!.error instanceof GatewayTimeoutError);
  assert.equal((mine[0]!.error as GatewayTimeoutError).statusCode, 504);
  assert.equal(((mine[0]!.error as GatewayTimeoutError).cause as NodeJS.ErrnoException).code, 'ECONNECT_TIMEOUT');
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

test('an upgrade whose trustProxy function throws is answered 500, the process keeps running', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await echoUpstream(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, {
    trustProxy: () => {
      throw new Error('trust function failed');
    },
  });
  assert.equal(await upgradeStatus(t, gw.port, '/ws'), 500);
  assert.equal(a.upgrades.length, 0);
  assert.equal(pool.stats().servers[0]!.active, 0);
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
  c.write(
    'GET /a/../../etc/passwd HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
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
  c.write(
    'GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
  const res = await c.response();
  assert.equal(res.status, 504);
  await until(() => pool.stats().servers[0]!.active === 0);
});

test('upgrade failures are published on switchyard:upstream:error: a refused connection, no answer within headerTimeout, no server', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const errors = upstreamErrors(t);
  const held: import('node:stream').Duplex[] = [];
  t.after(() => held.forEach((s) => s.destroy()));
  const port = await deadPort();
  const dead = createPool({ name: 'up-dead', servers: [{ url: `http://127.0.0.1:${port}`, id: 'd' }] });
  t.after(() => dead.close());
  assert.equal((await refusedUpgrade(`ws://127.0.0.1:${(await gatewayFor(t, dead)).port}/a`)).status, 502);
  const up = await upstream(t, 'silent');
  up.server.on('upgrade', (_req, socket) => held.push(socket));
  const silent = createPool({ name: 'up-silent', servers: [{ url: up.url, id: 's' }] });
  t.after(() => silent.close());
  assert.equal((await refusedUpgrade(`ws://127.0.0.1:${(await gatewayFor(t, silent, { headerTimeout: 150 })).port}/b`)).status, 504);
  const none = createPool({ name: 'up-none', servers: [{ url: up.url, down: true }] });
  t.after(() => none.close());
  assert.equal((await refusedUpgrade(`ws://127.0.0.1:${(await gatewayFor(t, none)).port}/c`)).status, 503);
  const mine = errors
    .filter((m) => m.pool.startsWith('up-'))
    .map((m) => ({ pool: m.pool, server: m.server?.id, url: m.ex.req.url, failure: m.failure, code: (m.error as NodeJS.ErrnoException).code, retry: m.retry }));
  assert.deepEqual(mine, [
    { pool: 'up-dead', server: 'd', url: '/a', failure: 'error', code: 'ECONNREFUSED', retry: false },
    { pool: 'up-silent', server: 's', url: '/b', failure: 'timeout', code: 'SWY_ERR_GATEWAY_TIMEOUT', retry: false },
    { pool: 'up-none', server: undefined, url: '/c', failure: 'no_server', code: 'SWY_ERR_NO_SERVER', retry: false },
  ]);
});

test('hostile upgrade targets (*, http://x:a/, http://[/, one-byte variations) are answered 400 and the process keeps running', {
  timeout: 20_000,
}, async (t) => {
  const a = await echoUpstream(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  for (const target of ['*', 'http://x:a/', 'http://[/', 'http://x:99999/ws', 'ws://[::1/ws', 'https://:80/', 'ftp://x/ws', 'x/ws', 'http:x', '%zz']) {
    assert.equal(await upgradeStatus(t, gw.port, target), 400, target);
  }
  // One-byte variations of an absolute-form target: each is either proxied or refused, never a crash.
  const base = `http://127.0.0.1:${a.port}/ws`;
  for (let i = 0; i < base.length; i++) {
    for (const byte of ['[', ':', '%', '@', '*']) {
      const target = base.slice(0, i) + byte + base.slice(i + 1);
      const status = await upgradeStatus(t, gw.port, target);
      if (!URL.canParse(target)) assert.equal(status, 400, target);
      else assert.ok(status === 400 || status === 101, `${target}: ${status}`);
    }
  }
  assert.equal(await upgradeStatus(t, gw.port, base), 101, 'a valid absolute-form target is proxied');
  await until(() => pool.stats().servers[0]!.active === 0, 3000, 'active 0');
});

for (const wiring of ['the upgrade handler hands it back to the server', 'shouldUpgradeCallback: proxy.upgrade.shouldUpgrade'] as const) {
  test(`Upgrade: h2c is answered as ordinary HTTP, with a body and keep-alive (${wiring})`, { timeout: TEST_TIMEOUT }, async (t) => {
    const up = await upstream(t, 'plain', (req, res, body) => res.end(`${req.method} ${req.url} ${body}`));
    let upgrades = 0;
    up.server.on('upgrade', (_req, socket) => {
      upgrades++;
      socket.destroy();
    });
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const proxy = balance(pool);
    const server = wiring.startsWith('should')
      ? createServer({ shouldUpgradeCallback: proxy.upgrade.shouldUpgrade }, chain(proxy))
      : createServer(chain(proxy));
    server.on('upgrade', proxy.upgrade);
    const gw = await listen(t, server);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    const first = await send(gw.port, agent, '/h2c?x=1', { ...H2C, 'content-type': 'text/plain' }, 'hello body');
    assert.deepEqual(first, { status: 200, body: 'POST /h2c?x=1 hello body', reused: false });
    const second = await send(gw.port, agent, '/next', H2C);
    assert.deepEqual(second, { status: 200, body: 'GET /next ', reused: true });
    const third = await send(gw.port, agent, '/plain', {});
    assert.deepEqual(third, { status: 200, body: 'GET /plain ', reused: true });
    assert.equal(upgrades, 0);
    assert.equal(up.seen.length, 3);
    for (const s of up.seen) {
      assert.equal(s.headers.upgrade, undefined);
      assert.equal(s.headers['http2-settings'], undefined);
    }
  });
}

test('h2c requests pipelined behind others on one connection are all answered, in order, when handed back to the server', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  // The first answer is the slowest: later hand-backs must wait for it, not get a response that is never written.
  const up = await upstream(t, 'plain', (req, res, body) => setTimeout(() => res.end(`${req.url} ${body}`), req.url === '/1' ? 200 : 0));
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const proxy = balance(pool);
  const server = createServer(chain(proxy));
  server.on('upgrade', proxy.upgrade);
  const gw = await listen(t, server);
  const h2c = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n';
  const c = await RawClient.open(t, gw.port);
  c.write(
    'GET /0 HTTP/1.1\r\nHost: gw\r\n\r\n' +
      `GET /1 HTTP/1.1\r\nHost: gw\r\n${h2c}\r\n` +
      `POST /2 HTTP/1.1\r\nHost: gw\r\n${h2c}Content-Length: 4\r\n\r\nbody` +
      `GET /3 HTTP/1.1\r\nHost: gw\r\n${h2c}\r\n` +
      'GET /4 HTTP/1.1\r\nHost: gw\r\n\r\n',
  );
  const timer = setTimeout(() => c.socket.destroy(), 3000);
  t.after(() => clearTimeout(timer));
  const bodies: string[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await c.response();
    assert.equal(r.status, 200);
    bodies.push(r.body);
  }
  assert.deepEqual(bodies, ['/0 ', '/1 ', '/2 body', '/3 ', '/4 ']);
});

test('shouldUpgrade: which upgrades are tunneled and which are answered as ordinary HTTP', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  const { shouldUpgrade } = balance(pool).upgrade;
  const cases: Array<[Record<string, string>, boolean]> = [
    [{ upgrade: 'websocket' }, true],
    [{ upgrade: 'WebSocket', 'content-length': '0' }, true],
    [{ upgrade: 'echo/1, foo' }, true],
    [{ upgrade: 'h2c' }, false],
    [{ upgrade: 'H2C' }, false],
    [{ upgrade: 'websocket, h2c' }, false],
    [{ upgrade: 'h2c/1' }, false],
    [{ upgrade: 'h2' }, false],
    [{ upgrade: '' }, false],
    [{ upgrade: ' , ' }, false],
    [{}, false],
    [{ upgrade: 'websocket', 'content-length': '5' }, false],
    [{ upgrade: 'websocket', 'transfer-encoding': 'chunked' }, false],
  ];
  for (const [headers, expected] of cases) assert.equal(shouldUpgrade({ headers } as unknown as IncomingMessage), expected, JSON.stringify(headers));
  pool.close();
});

test('an upgrade to another protocol than WebSocket is tunneled to the upstream', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await upstream(t, 'plain');
  up.server.on('upgrade', (req, socket) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${req.headers.upgrade}\r\n\r\n`);
    socket.pipe(socket);
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write('GET /echo HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n');
  const r = await c.response();
  assert.equal(r.status, 101);
  assert.equal(r.headers.get('upgrade'), 'echo/1');
  const echoed = new Promise<string>((resolve) => c.socket.once('data', (d: Buffer) => resolve(String(d))));
  c.write('ping');
  assert.equal(await echoed, 'ping');
  c.socket.destroy();
  await until(() => pool.stats().servers[0]!.active === 0, 3000, 'active 0 after the client left');
});

/** Opens a WebSocket and resolves once it is open. */
async function openSocket(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return ws;
}

test('idleTimeout closes a silent WebSocket tunnel on both sides and frees the server slot; traffic keeps it open', { timeout: 10_000 }, async (t) => {
  const a = await echoUpstream(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { idleTimeout: 200 });
  const ws = await openSocket(`ws://127.0.0.1:${gw.port}/chat`);
  t.after(() => ws.terminate());
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  let isClosed = false;
  void closed.then(() => (isClosed = true));
  assert.equal(pool.stats().servers[0]!.active, 1);
  // Traffic in either direction resets the timer: 12 round trips 60 ms apart span 3.6 idle periods.
  for (let i = 0; i < 12; i++) {
    const reply = new Promise<string>((resolve) => ws.once('message', (d) => resolve(String(d))));
    ws.send(`m${i}`);
    assert.equal(await reply, `a:m${i}`);
    await delay(60);
  }
  assert.equal(isClosed, false, 'a tunnel with traffic stays open');
  // Silence: closed on the client side and on the upstream side, and the slot is freed.
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([closed, new Promise<number>((resolve) => (timer = setTimeout(() => resolve(-1), 5000)))]);
  clearTimeout(timer);
  assert.notEqual(code, -1, 'the silent tunnel was not closed');
  await until(() => a.upgrades[0]!.socket.destroyed, 3000, 'the upstream side of the tunnel closed');
  await until(() => pool.stats().servers[0]!.active === 0, 3000, 'active 0 after the idle close');
});

test('idleTimeout: traffic in one direction only (the upstream pushing) keeps a tunnel open', { timeout: 10_000 }, async (t) => {
  const server = createServer();
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => {
    let n = 0;
    const push = setInterval(() => (n++ < 12 ? ws.send(`push${n}`) : clearInterval(push)), 60);
    ws.on('close', () => clearInterval(push));
  });
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });
  const up = await listen(t, server);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { idleTimeout: 200 });
  const ws = await openSocket(`ws://127.0.0.1:${gw.port}/feed`);
  t.after(() => ws.terminate());
  const pushed: string[] = [];
  ws.on('message', (d) => pushed.push(String(d)));
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  await until(() => pushed.length === 12, 5000, 'twelve pushes over 3.6 idle periods');
  assert.equal(ws.readyState, WebSocket.OPEN);
  await closed; // then silence: closed after idleTimeout (the test's timeout bounds the wait)
  await until(() => pool.stats().servers[0]!.active === 0, 3000, 'active 0 after the idle close');
});

test('idleTimeout: 0 keeps a silent tunnel open', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await echoUpstream(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { idleTimeout: 0 });
  const ws = await openSocket(`ws://127.0.0.1:${gw.port}/chat`);
  t.after(() => ws.terminate());
  await delay(400);
  assert.equal(ws.readyState, WebSocket.OPEN);
  assert.equal(pool.stats().servers[0]!.active, 1);
  ws.terminate();
  await until(() => pool.stats().servers[0]!.active === 0, 3000, 'active 0 after the client left');
});
