// An https:// upstream behind a plain http gateway (issue 12): WebSocket upgrades, plain HTTP
// requests and health checks all connect with the pool's TLS settings (a private CA, servername,
// client certificate, or those of the user's own https agent); a failed TLS handshake is answered
// 502, closes the client's connection and is published on switchyard:upstream:error. Real HTTPS
// upstreams on 127.0.0.1 with certificates from a private CA made for the test (test/support/tls.ts).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Server as HttpServer } from 'node:http';
import { Agent as HttpsAgent, createServer as createHttpsServer, type ServerOptions } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import { healthCheck, type UpstreamPool } from '../../src/index.ts';
import { fetchText, listen, poolOf, until, type PoolOfOptions } from '../helpers.ts';
import { gatewayFor, RawClient } from '../balance/support.ts';
import { createTestCa, NO_OPENSSL, type TestCa } from '../support/tls.ts';
import { exchangeMessages, upstreamErrors } from './upgrade-support.ts';

const NAME = 'upstream.test';
/** Handshakes with openssl-made certificates on a loaded machine: generous, still bounded. */
const TIMEOUT = 20_000;
let authority: TestCa | undefined;
/** The test CA, made once for the file (only when a test runs: none is made when openssl is missing). */
const ca = (): TestCa => (authority ??= createTestCa());

/** What the upstream saw of one request or one WebSocket upgrade. */
interface Seen {
  url: string;
  /** The SNI name the gateway sent (undefined: none). */
  servername: string | undefined;
  /** Whether the gateway presented a client certificate the server verified. */
  authorized: boolean;
}

function seen(req: { url?: string | undefined; socket: unknown }): Seen {
  const socket = req.socket as TLSSocket;
  const sni = socket.servername;
  return { url: req.url ?? '', servername: typeof sni === 'string' && sni !== '' ? sni : undefined, authorized: socket.authorized };
}

/**
 * An HTTPS server on 127.0.0.1, port 0, with a `ws` WebSocketServer on it echoing `name:message`;
 * plain requests are answered 200 `name`. Records the SNI name of each request and each upgrade.
 */
async function wssUpstream(t: TestContext, options: ServerOptions, name = 'a') {
  const requests: Seen[] = [];
  const upgrades: Seen[] = [];
  const server = createHttpsServer(options, (req, res) => {
    requests.push(seen(req));
    req.resume();
    res.end(name);
  });
  // A refused handshake is what some tests prove: not an error of the server.
  server.on('tlsClientError', () => undefined);
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    upgrades.push(seen(req));
    ws.on('message', (data) => ws.send(`${name}:${String(data)}`));
  });
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });
  // listen() takes an http.Server: an https.Server listens and closes the same way
  const up = await listen(t, server as unknown as HttpServer);
  return { url: `https://127.0.0.1:${up.port}`, port: up.port, requests, upgrades };
}

function makePool(t: TestContext, url: string, options: PoolOfOptions): UpstreamPool {
  return poolOf(t, { a: url }, { name: 'wss', ...options });
}

const UPGRADE =
  'GET /chat HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';

/** Sends an upgrade request on a raw connection: the gateway's status, once it closed the connection. */
async function refusedAndClosed(t: TestContext, port: number): Promise<number> {
  const c = await RawClient.open(t, port);
  c.write(UPGRADE);
  const { status } = await c.response();
  await c.closedByPeer();
  return status;
}

test('an https upstream with a private CA and tls.servername: health checks, a plain HTTP request and a WebSocket through a plain http gateway', {
  skip: NO_OPENSSL,
  timeout: TIMEOUT,
}, async (t) => {
  const up = await wssUpstream(t, ca().issue({ names: [NAME] }));
  const pool = makePool(t, up.url, { tls: { ca: ca().ca, servername: NAME } });
  const hc = healthCheck(pool, { interval: '1h', timeout: '10s' });
  t.after(() => hc.stop());
  await hc.ready;
  assert.equal(pool.stats().servers[0]!.state, 'up', 'the probe passed verification');
  assert.deepEqual(up.requests, [{ url: '/', servername: NAME, authorized: false }]);

  const gw = await gatewayFor(t, pool);
  const r = await fetchText(`${gw.url}/plain`);
  assert.equal(r.status, 200);
  assert.equal(r.body, 'a');
  assert.deepEqual(up.requests.at(-1), { url: '/plain', servername: NAME, authorized: false });

  assert.deepEqual(await exchangeMessages(`ws://127.0.0.1:${gw.port}/chat?room=1`, ['hi', 'there']), ['a:hi', 'a:there']);
  assert.deepEqual(up.upgrades, [{ url: '/chat?room=1', servername: NAME, authorized: false }]);
  await until(() => pool.stats().servers[0]!.active === 0, 5000, 'active 0 after the WebSocket closed');
  const s = pool.stats().servers[0]!;
  assert.equal(s.responses.codes['101'], 1);
  assert.equal(s.fails, 0);
});

test('a WebSocket upgrade with a tls.servername the certificate does not name is answered 502, closed, and published', {
  skip: NO_OPENSSL,
  timeout: TIMEOUT,
}, async (t) => {
  const up = await wssUpstream(t, ca().issue({ names: [NAME] }));
  const pool = makePool(t, up.url, { tls: { ca: ca().ca, servername: 'other.test' } });
  const errors = upstreamErrors(t);
  const gw = await gatewayFor(t, pool);
  assert.equal(await refusedAndClosed(t, gw.port), 502);
  assert.equal(up.upgrades.length, 0);
  await until(() => pool.stats().servers[0]!.active === 0, 5000, 'the slot freed');
  const mine = errors.filter((m) => m.pool === 'wss');
  assert.equal(mine.length, 1, 'one upstream error published');
  assert.equal(mine[0]!.failure, 'error');
  assert.equal(mine[0]!.server?.id, 'a');
  assert.equal(mine[0]!.retry, false);
  assert.equal((mine[0]!.error as NodeJS.ErrnoException).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
  assert.equal(mine[0]!.ex.req.url, '/chat');
});

test('a WebSocket upgrade to an https upstream whose CA the pool does not trust is answered 502 and closed', {
  skip: NO_OPENSSL,
  timeout: TIMEOUT,
}, async (t) => {
  const up = await wssUpstream(t, ca().issue({ names: [NAME] }));
  // no tls.ca: the system's CAs, which never signed the test certificate
  const pool = makePool(t, up.url, { tls: { servername: NAME } });
  const errors = upstreamErrors(t);
  const gw = await gatewayFor(t, pool);
  assert.equal(await refusedAndClosed(t, gw.port), 502);
  assert.equal(up.upgrades.length, 0);
  const mine = errors.filter((m) => m.pool === 'wss');
  assert.equal((mine[0]?.error as NodeJS.ErrnoException | undefined)?.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
});

test("a WebSocket upgrade to a server given by IP address with no tls.servername sends no SNI, not even the client's Host name", {
  skip: NO_OPENSSL,
  timeout: TIMEOUT,
}, async (t) => {
  const up = await wssUpstream(t, ca().issue({ names: ['127.0.0.1'] }));
  const pool = makePool(t, up.url, { tls: { ca: ca().ca } });
  const gw = await gatewayFor(t, pool);
  assert.deepEqual(await exchangeMessages(`ws://127.0.0.1:${gw.port}/chat`, ['x'], { host: 'gateway.example' }), ['a:x']);
  assert.deepEqual(up.upgrades, [{ url: '/chat', servername: undefined, authorized: false }]);
});

test('a WebSocket upgrade to a server given by host name sends that name as SNI (localhost)', { skip: NO_OPENSSL, timeout: TIMEOUT }, async (t) => {
  const up = await wssUpstream(t, ca().issue({ names: ['localhost'] }));
  const pool = makePool(t, `https://localhost:${up.port}`, { tls: { ca: ca().ca } });
  const gw = await gatewayFor(t, pool);
  assert.deepEqual(await exchangeMessages(`ws://127.0.0.1:${gw.port}/chat`, ['x']), ['a:x']);
  assert.deepEqual(
    up.upgrades.map((u) => u.servername),
    ['localhost'],
  );
});

test("a WebSocket upgrade presents the pool's client certificate (tls.cert, tls.key) to a server that requires one", {
  skip: NO_OPENSSL,
  timeout: TIMEOUT,
}, async (t) => {
  const up = await wssUpstream(t, { ...ca().issue({ names: [NAME] }), ca: ca().ca, requestCert: true, rejectUnauthorized: true });
  const client = ca().issue({ names: ['gateway.test'], client: true });
  const withCert = makePool(t, up.url, { tls: { ca: ca().ca, servername: NAME, ...client } });
  const gw = await gatewayFor(t, withCert);
  assert.deepEqual(await exchangeMessages(`ws://127.0.0.1:${gw.port}/chat`, ['x']), ['a:x']);
  assert.deepEqual(up.upgrades, [{ url: '/chat', servername: NAME, authorized: true }]);
  // the server does refuse a gateway without one
  const without = makePool(t, up.url, { tls: { ca: ca().ca, servername: NAME } });
  const gw2 = await gatewayFor(t, without);
  assert.equal(await refusedAndClosed(t, gw2.port), 502);
  assert.equal(up.upgrades.length, 1);
});

test("a WebSocket upgrade uses the TLS settings of the user's own https agent (pool option agent.https)", { skip: NO_OPENSSL, timeout: TIMEOUT }, async (t) => {
  const up = await wssUpstream(t, ca().issue({ names: [NAME] }));
  const agent = new HttpsAgent({ ca: ca().ca, servername: NAME, keepAlive: true });
  t.after(() => agent.destroy());
  const pool = makePool(t, up.url, { agent: { https: agent } });
  const gw = await gatewayFor(t, pool);
  assert.deepEqual(await exchangeMessages(`ws://127.0.0.1:${gw.port}/chat`, ['x']), ['a:x']);
  assert.deepEqual(
    up.upgrades.map((u) => u.servername),
    [NAME],
  );
});

test('a WebSocket upgrade honours tls.rejectUnauthorized: false (a certificate from an unknown CA is accepted)', {
  skip: NO_OPENSSL,
  timeout: TIMEOUT,
}, async (t) => {
  const up = await wssUpstream(t, createTestCa('another CA').issue({ names: [NAME] }));
  const pool = makePool(t, up.url, { tls: { rejectUnauthorized: false, servername: NAME } });
  const gw = await gatewayFor(t, pool);
  assert.deepEqual(await exchangeMessages(`ws://127.0.0.1:${gw.port}/chat`, ['x']), ['a:x']);
});
