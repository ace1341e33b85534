// sticky() for WebSocket upgrades, which do not go through the middleware chain: st.wrapUpgrade()
// binds them before balance()'s upgrade handler picks the server.
import { strict as assert } from 'node:assert';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { balance, chain, createPool, sticky } from '../../src/index.ts';
import { gateway, listen } from '../helpers.ts';

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

test('st.wrapUpgrade() binds WebSocket upgrades: the cookie and the route pick the server, as for HTTP', async (t) => {
  const urls = await Promise.all(['a', 'b', 'c'].map((n) => wsUpstream(t, n)));
  const pool = createPool({ servers: urls.map((url, i) => ({ url, id: 'abc'[i]!, route: 'abc'[i]! })) });
  t.after(() => pool.close());
  const proxy = balance(pool);
  const st = sticky(pool, { cookie: true });
  const gw = await gateway(t, chain(st, proxy));
  gw.server.on('upgrade', st.wrapUpgrade(proxy.upgrade));
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
