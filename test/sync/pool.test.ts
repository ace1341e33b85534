// A pool's run-time configuration and passive health shared across instances (issue 14), over the
// in-memory engine: several pools of one name, each an instance with its own handle.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test, type TestContext } from 'node:test';
import { balance, chain, type UpstreamPool } from '../../src/index.ts';
import { SyncHandle } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { fetchText, gateway, listen, poolOf, until } from '../helpers.ts';

const SERVERS = { a: 'http://127.0.0.1:1', b: 'http://127.0.0.1:2', c: 'http://127.0.0.1:3' };

/** `n` instances of the pool `api` on one engine. */
function instances(t: TestContext, hub: MemoryHub, n: number, servers: Parameters<typeof poolOf>[1] = SERVERS, extra = {}): UpstreamPool[] {
  const pools: UpstreamPool[] = [];
  for (let i = 0; i < n; i++) {
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 't', instance: `i${i}` });
    t.after(() => handle.close());
    pools.push(poolOf(t, servers, { name: 'api', sync: handle, ...extra }));
  }
  return pools;
}

const view = (pool: UpstreamPool): string =>
  pool.servers
    .map((s) => `${s.id}:w${s.weight}${s.drain ? ':drain' : ''}${s.down ? ':down' : ''}`)
    .sort()
    .join(' ');

const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

test('a drain and a weight change made on one instance reach every instance', async (t) => {
  const hub = new MemoryHub();
  const [a, b, c] = instances(t, hub, 3) as [UpstreamPool, UpstreamPool, UpstreamPool];
  await settle();
  a.update('a', { drain: true });
  b.update('b', { weight: 5 });
  await until(() => view(c) === 'a:w1:drain b:w5 c:w1', 1000, 'both changes on c');
  assert.equal(view(a), view(c));
  assert.equal(view(b), view(c));
});

test('add and remove reach every instance; a removal is not undone by an older add', async (t) => {
  const hub = new MemoryHub();
  const [a, b, c] = instances(t, hub, 3) as [UpstreamPool, UpstreamPool, UpstreamPool];
  await settle();
  b.add({ id: 'd', url: 'http://127.0.0.1:4', weight: 2, failTimeout: '30s' });
  await until(() => a.get('d') !== undefined && c.get('d') !== undefined, 1000, 'd everywhere');
  assert.equal(a.get('d')?.failTimeout, 30_000);
  assert.equal(a.get('d')?.weight, 2);
  c.remove('a');
  await until(() => a.get('a') === undefined && b.get('a') === undefined, 1000, 'a removed everywhere');
  assert.equal(view(a), 'b:w1 c:w1 d:w2');
});

test('an update merges into the server as last shared: changes of different fields made one after the other on two instances both hold', async (t) => {
  // Server records are last-writer-wins as a whole (the version Redis assigns orders them); an
  // update is merged into the record its instance last saw, so sequential changes never undo each other.
  const hub = new MemoryHub();
  const [a, b] = instances(t, hub, 2) as [UpstreamPool, UpstreamPool];
  await settle();
  a.update('c', { weight: 3 });
  await until(() => b.get('c')?.weight === 3, 1000, 'b sees the weight');
  b.update('c', { maxConns: 7 });
  await until(() => a.get('c')?.weight === 3 && a.get('c')?.maxConns === 7 && b.get('c')?.weight === 3, 1000, 'merged');
});

test('an instance that starts later comes back with the changes made while it was away', async (t) => {
  const hub = new MemoryHub();
  const [a] = instances(t, hub, 1) as [UpstreamPool];
  await settle();
  a.update('a', { down: true });
  a.remove('c');
  a.add({ id: 'e', url: 'http://127.0.0.1:5' });
  await settle();
  const [late] = instances(t, hub, 1) as [UpstreamPool];
  await late.ready;
  assert.equal(view(late), 'a:w1:down b:w1 e:w1', 'in step once ready, without waiting for more');
});

test('Redis down: changes apply locally and reach the others when it returns; an engine restarted empty gets them back', async (t) => {
  const hub = new MemoryHub();
  const [a, b] = instances(t, hub, 2) as [UpstreamPool, UpstreamPool];
  await settle();
  a.update('b', { weight: 4 });
  await until(() => b.get('b')?.weight === 4, 1000, 'b sees the first change');
  hub.down();
  a.update('a', { drain: true });
  b.update('c', { weight: 9 });
  assert.equal(a.get('a')?.drain, true, 'applied locally at once');
  await settle();
  assert.equal(b.get('a')?.drain, false, 'not reached during the outage');
  hub.up({ keepData: false });
  await until(() => view(a) === 'a:w1:drain b:w4 c:w9' && view(b) === view(a), 1000, 'converged after the outage');
  // The engine lost its data: the instances stored it again, so a newcomer gets all of it.
  const [late] = instances(t, hub, 1) as [UpstreamPool];
  await until(() => view(late) === view(a), 1000, 'newcomer in step');
});

test('a hostile record in the engine changes nothing and breaks nothing', async (t) => {
  const hub = new MemoryHub();
  const [a] = instances(t, hub, 1) as [UpstreamPool];
  await settle();
  const rogue = hub.connect();
  const bad = [
    { key: 'a', value: JSON.stringify({ removed: false, fields: { url: 'http://127.0.0.1:1', weight: -4 } }) },
    { key: 'x', value: JSON.stringify({ removed: false, fields: { url: 'javascript:alert(1)' } }) },
    { key: 'b', value: '{"removed":false,"fields":null}' },
    { key: 'c', value: 'not json' },
  ];
  for (const [i, r] of bad.entries()) await rogue.put('pool:api', { key: r.key, version: 1000 + i, origin: 'rogue', value: r.value });
  await settle();
  assert.equal(view(a), 'a:w1 b:w1 c:w1');
});

test('passive health: about maxFails failures in total reach a failing server, not maxFails per instance', async (t) => {
  // A server that accepts and resets every connection (a failure, tried on the next server), and a good one.
  let hits = 0;
  const bad = createServer();
  bad.on('connection', (socket) => {
    hits++;
    socket.destroy();
  });
  const failing = await listen(t, bad);
  const good = await listen(
    t,
    createServer((_req, res) => res.end('ok')),
  );
  const hub = new MemoryHub();
  const pools = instances(t, hub, 3, { bad: failing.url, good: good.url }, { each: { maxFails: 3, failTimeout: '30s' } });
  await settle();
  const gateways = await Promise.all(pools.map((pool) => gateway(t, chain(balance(pool)))));
  // Requests round robin over the instances, one at a time, letting each failure's news travel.
  for (let i = 0; i < 30; i++) {
    const gw = gateways[i % gateways.length]!;
    const reply = await fetchText(`${gw.url}/`);
    assert.equal(reply.status, 200);
    await settle();
  }
  assert.ok(hits >= 3 && hits <= 4, `failures that reached the failing server: ${hits} (9 without sharing)`);
  for (const pool of pools) assert.equal(pool.stats().servers.find((s) => s.id === 'bad')?.state, 'unavail');
});
