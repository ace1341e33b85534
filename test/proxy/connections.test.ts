// The pool's upstream connections on undici (issue 15): keep-alive settings (maxFreeSockets as
// nginx's keepalive cache, maxSockets, keepAlive off), the idle count in stats(), an undici
// Dispatcher of the user's own (agent.dispatcher), node:http agents read as settings, and agents
// that make their own connections refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent as HttpAgent, createServer } from 'node:http';
import type { Socket } from 'node:net';
import { Agent as UndiciAgent, type Dispatcher } from 'undici';
import { createPool, InvalidOptionError } from '../../src/index.ts';
import { fetchText, listen, until } from '../helpers.ts';
import { gatewayFor, TEST_TIMEOUT } from '../balance/support.ts';
import { createTestCa, NO_OPENSSL, tlsUpstream, type TestCa } from '../support/tls.ts';

let authority: TestCa | undefined;
/** The test CA, made once for the file (only when a test needs it). */
const ca = (): TestCa => (authority ??= createTestCa());

/** An upstream that answers after `delay` ms and counts the connections it accepted and those still open. */
async function countingUpstream(t: Parameters<typeof listen>[0], delay = 0) {
  let accepted = 0;
  const open = new Set<Socket>();
  const server = createServer((req, res) => {
    req.resume();
    setTimeout(() => res.end('ok'), delay);
  });
  server.on('connection', (s: Socket) => {
    accepted++;
    open.add(s);
    s.once('close', () => open.delete(s));
  });
  const up = await listen(t, server);
  return {
    url: up.url,
    accepted: () => accepted,
    open: () => open.size,
  };
}

test('maxFreeSockets is the idle cache per server (nginx keepalive): connections beyond it are closed once idle; stats().keepalive counts the idle ones', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await countingUpstream(t, 50);
  const pool = createPool({ servers: [{ url: up.url }], agent: { maxFreeSockets: 2 } });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const replies = await Promise.all(Array.from({ length: 5 }, () => fetchText(gw.url)));
  assert.deepEqual(
    replies.map((r) => r.body),
    ['ok', 'ok', 'ok', 'ok', 'ok'],
  );
  assert.equal(up.accepted(), 5, 'five at once open five connections');
  await until(() => up.open() === 2, 2000, 'the connections beyond the cache to close');
  assert.equal(pool.stats().keepalive, 2);
  // The kept ones carry the next requests.
  for (let i = 0; i < 3; i++) assert.equal((await fetchText(gw.url)).body, 'ok');
  assert.equal(up.accepted(), 5);
});

test('maxSockets caps the connections to a server: requests beyond wait for one', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await countingUpstream(t, 30);
  const pool = createPool({ servers: [{ url: up.url }], agent: { maxSockets: 2 } });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const replies = await Promise.all(Array.from({ length: 6 }, () => fetchText(gw.url)));
  assert.ok(replies.every((r) => r.status === 200));
  assert.equal(up.accepted(), 2);
});

test('agent.dispatcher: every upstream request goes through the user’s undici Dispatcher, which the pool does not close', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await countingUpstream(t);
  const origins: string[] = [];
  const base = new UndiciAgent();
  const agent = base.compose((dispatch: Dispatcher['dispatch']) => (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean => {
    origins.push(String(options.origin));
    return dispatch(options, handler);
  });
  t.after(() => base.close());
  const pool = createPool({ servers: [{ url: up.url }], agent: { dispatcher: agent } });
  const gw = await gatewayFor(t, pool);
  for (let i = 0; i < 3; i++) assert.equal((await fetchText(gw.url)).body, 'ok');
  assert.deepEqual(origins, [up.url, up.url, up.url]);
  pool.close();
  assert.equal(base.closed, false, 'the user’s dispatcher is the user’s to close');
  await until(() => pool.stats().servers[0]!.active === 0, 1000, 'active 0');
  assert.ok(pool.stats().servers[0]!.sent > 0, 'bytes are estimated when the connection is not the pool’s');
});

test('node:http agents are read as settings: keepAlive false opens a connection per request; an agent that makes its own connections is refused', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await countingUpstream(t);
  const plain = new HttpAgent({ keepAlive: false });
  const pool = createPool({ servers: [{ url: up.url }], agent: { http: plain } });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  for (let i = 0; i < 3; i++) assert.equal((await fetchText(gw.url)).body, 'ok');
  assert.equal(up.accepted(), 3);

  class Tunnel extends HttpAgent {
    override createConnection(...args: Parameters<HttpAgent['createConnection']>): ReturnType<HttpAgent['createConnection']> {
      return super.createConnection(...args);
    }
  }
  assert.throws(
    () => createPool({ servers: [{ url: up.url }], agent: { http: new Tunnel() } }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'agent.http' && /agent\.dispatcher/.test(err.message),
  );
  assert.throws(
    () => createPool({ servers: [{ url: up.url }], agent: { dispatcher: {} as Dispatcher } }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'agent.dispatcher',
  );
});

test('TLS of proxied requests: the pool’s CA and client certificate; SNI the host name, none for an IP address (not even the Host sent upstream), tls.servername when given', {
  skip: NO_OPENSSL,
  timeout: 20_000,
}, async (t) => {
  const server = ca().issue({ names: ['127.0.0.1', 'localhost', 'upstream.test'] });
  const up = await tlsUpstream(t, 'a', { ...server, ca: ca().ca, requestCert: true, rejectUnauthorized: false });
  const client = ca().issue({ names: ['gateway.test'], client: true });
  const cases: Array<[string, Parameters<typeof createPool>[0]['tls'], string | undefined, string]> = [
    [up.url, { ca: ca().ca, ...client }, undefined, 'client'],
    [`https://localhost:${up.port}`, { ca: ca().ca, ...client }, 'localhost', 'upstream'],
    [up.url, { ca: ca().ca, ...client, servername: 'upstream.test' }, 'upstream.test', 'upstream'],
  ];
  for (const [url, tls, sni, host] of cases) {
    const pool = createPool({ servers: [{ url }], tls });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool, { host });
    const r = await fetchText(gw.url, { headers: { host: 'gateway.example' } });
    assert.equal(r.status, 200, url);
    const seen = up.seen.at(-1)!;
    assert.equal(seen.servername, sni, `SNI for ${url} (${JSON.stringify(tls?.servername)})`);
    assert.equal(seen.authorized, true, 'the pool’s client certificate was presented');
  }
  // Without the pool's CA the handshake fails: 502.
  const untrusting = createPool({ servers: [{ url: up.url }] });
  t.after(() => untrusting.close());
  assert.equal((await fetchText((await gatewayFor(t, untrusting)).url)).status, 502);
});
