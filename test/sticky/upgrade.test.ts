// sticky() for WebSocket upgrades, which do not go through the middleware chain: st.wrapUpgrade()
// binds them before balance()'s upgrade handler picks the server.
import { strict as assert } from 'node:assert';
import { Agent, createServer } from 'node:http';
import { test, type TestContext } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { balance, chain, createPool, sticky } from '../../src/index.ts';
import { gateway, listen } from '../helpers.ts';
import { H2C, send, upgradeStatus } from '../proxy/upgrade-support.ts';

async function wsUpstream(t: Parameters<typeof listen>[0], name: string): Promise<string> {
  const server = createServer((_req, res) => res.end(name));
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.send(name));
  t?.after(() => wss.close());
  return (await listen(t, server)).url;
}

function firstMessage(url: string, headers: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('message', (data) => {
      ws.close();
      resolve(String(data));
    });
    ws.once('error', reject);
  });
}

/**
 * WebSocket upstreams named `names` (ids and routes the same), and a gateway running
 * `chain(sticky(pool, { cookie: true }), balance(pool))` with its upgrades bound by `st.wrapUpgrade()`.
 */
async function cookieGateway(t: TestContext, names: string) {
  const urls = await Promise.all([...names].map((n) => wsUpstream(t, n)));
  const pool = createPool({ servers: urls.map((url, i) => ({ url, id: names[i]!, route: names[i]! })) });
  t.after(() => pool.close());
  const proxy = balance(pool);
  const st = sticky(pool, { cookie: true });
  const gw = await gateway(t, chain(st, proxy));
  gw.server.on('upgrade', st.wrapUpgrade(proxy.upgrade));
  return { proxy, gw };
}

test('st.wrapUpgrade() binds WebSocket upgrades: the cookie and the route pick the server, as for HTTP', async (t) => {
  const { proxy, gw } = await cookieGateway(t, 'abc');
  const ws = gw.url.replace('http:', 'ws:');
  const seen: string[] = [];
  for (let i = 0; i < 4; i++) seen.push(await firstMessage(ws, { cookie: 'srv_id=c' }));
  assert.deepEqual(seen, ['c', 'c', 'c', 'c']);
  // Unbound upgrades are balanced (round robin, which counted the bound ones against c's share).
  const unbound = new Set<string>();
  for (let i = 0; i < 6; i++) unbound.add(await firstMessage(ws, {}));
  assert.ok(unbound.size >= 2, [...unbound].join());
  // Without the wrapper the cookie is not seen: the upgrade is balanced.
  const plain = await gateway(t, chain(proxy));
  plain.server.on('upgrade', proxy.upgrade);
  const direct = new Set<string>();
  for (let i = 0; i < 3; i++) direct.add(await firstMessage(plain.url.replace('http:', 'ws:'), { cookie: 'srv_id=c' }));
  assert.equal(direct.size, 3, 'plain round robin over a, b, c');
});

test('st.wrapUpgrade() in learn mode waits for the session lookup before the upgrade is proxied', async (t) => {
  const urls = await Promise.all(['a', 'b'].map((n) => wsUpstream(t, n)));
  const pool = createPool({ servers: urls.map((url, i) => ({ url, id: 'ab'[i]! })) });
  t.after(() => pool.close());
  const proxy = balance(pool);
  const st = sticky(pool, { learn: { create: { header: 'x-session' }, lookup: { cookie: 'sid' } } });
  t.after(() => st.close());
  const sid = pool.get('b')!.sid;
  // A session learned for b (as a response of b carrying `x-session: s1` would create it).
  assert.equal(await st.store!.setText(`s:${(await import('node:crypto')).createHash('sha256').update('s1').digest('base64url')}`, sid, 60_000), true);
  const gw = await gateway(t, chain(st, proxy));
  gw.server.on('upgrade', st.wrapUpgrade(proxy.upgrade));
  const ws = gw.url.replace('http:', 'ws:');
  const seen: string[] = [];
  for (let i = 0; i < 3; i++) seen.push(await firstMessage(ws, { cookie: 'sid=s1' }));
  assert.deepEqual(seen, ['b', 'b', 'b']);
});

test('the Fastify plugin binds upgrades with a sticky() before balance() in `use`', async (t) => {
  const { default: Fastify } = await import('fastify');
  const { switchyard } = await import('../../src/adapters/fastify.ts');
  const urls = await Promise.all(['a', 'b', 'c'].map((n) => wsUpstream(t, n)));
  const pool = createPool({ servers: urls.map((url, i) => ({ url, id: 'abc'[i]!, route: 'abc'[i]! })) });
  t.after(() => pool.close());
  const app = Fastify();
  t.after(() => app.close());
  await app.register(switchyard, { prefix: '/ws', use: [sticky(pool, { cookie: true }), balance(pool)] });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as import('node:net').AddressInfo;
  const seen: string[] = [];
  for (let i = 0; i < 4; i++) seen.push(await firstMessage(`ws://127.0.0.1:${port}/ws/chat`, { cookie: 'srv_id=b' }));
  assert.deepEqual(seen, ['b', 'b', 'b', 'b']);
});

test('st.wrapUpgrade() answers hostile targets 400 before anything binds or parses them; the process keeps running', async (t) => {
  const { gw } = await cookieGateway(t, 'ab');
  for (const target of ['*', 'http://x:a/', 'http://[/', 'http://127.0.0.1:1[/', '/a/../../b', '/%zz']) {
    assert.equal(await upgradeStatus(t, gw.port, target, 'Cookie: srv_id=b\r\n'), 400, target);
  }
  assert.equal(await firstMessage(gw.url.replace('http:', 'ws:'), { cookie: 'srv_id=b' }), 'b');
});

test('st.wrapUpgrade() in learn mode: a listener that throws after the lookup is answered 500, with no unhandled rejection', async (t) => {
  const urls = await Promise.all(['a', 'b'].map((n) => wsUpstream(t, n)));
  const pool = createPool({ servers: urls.map((url, i) => ({ url, id: 'ab'[i]! })) });
  t.after(() => pool.close());
  const st = sticky(pool, { learn: { create: { header: 'x-session' }, lookup: { cookie: 'sid' } } });
  t.after(() => st.close());
  const gw = await gateway(t, chain(st, balance(pool)));
  gw.server.on(
    'upgrade',
    st.wrapUpgrade(() => {
      throw new Error('listener failed');
    }),
  );
  // The cookie makes the binding look the session up: the listener runs in a promise callback.
  assert.equal(await upgradeStatus(t, gw.port, '/ws', 'Cookie: sid=s1\r\n'), 500);
  assert.equal(await upgradeStatus(t, gw.port, '/ws'), 500);
});

test('st.wrapUpgrade() hands an h2c upgrade back as ordinary HTTP, bound by the sticky() in the chain', async (t) => {
  const { gw } = await cookieGateway(t, 'abc');
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  for (let i = 0; i < 3; i++) {
    const r = await send(gw.port, agent, '/h2c', { ...H2C, cookie: 'srv_id=c' });
    assert.deepEqual([r.status, r.body], [200, 'c']);
  }
});
