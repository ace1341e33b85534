// Stream pools with `sync` share configuration and passive health as HTTP pools do (issue 14 and
// 19), over the in-memory engine: a connect failure seen through one instance's streamBalance()
// makes the server unavailable on the others; a server added on one instance takes connections on
// another. Their stream statistics are summed over the instances in /api/9/stream/* and listed per
// instance in /metrics, as the HTTP upstreams' are.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { mergeStreamServer } from '../../src/monitor/cluster.ts';
import { monitor } from '../../src/monitor/index.ts';
import { createPool, type StreamServerStats, type UpstreamPool } from '../../src/pool/index.ts';
import { streamBalance, type StreamHandler } from '../../src/stream/index.ts';
import { SyncHandle } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { deadPort, listen, until } from '../helpers.ts';
import { call, getJson } from '../monitor/support.ts';
import { echo, exchangeBytes, gatewayOf, named, names, tally } from './support.ts';

test('sync: a stream connect failure on one instance makes the server unavailable on every instance; a server added on one serves on another', async (t) => {
  const hub = new MemoryHub();
  const dead = await deadPort();
  const good = await named(t, 'good');
  const pools: UpstreamPool[] = [];
  for (let i = 0; i < 2; i++) {
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 'stream', instance: `i${i}` });
    t.after(() => handle.close());
    const pool = createPool({
      name: 'tcp',
      sync: handle,
      servers: [
        { id: 'dead', url: `http://127.0.0.1:${dead}`, maxFails: 1, failTimeout: '30s' },
        { id: 'good', url: good.url },
      ],
    });
    t.after(() => pool.close());
    pools.push(pool);
  }
  const [a, b] = pools as [UpstreamPool, UpstreamPool];
  await Promise.all([a.ready, b.ready]);
  const ga = await gatewayOf(t, streamBalance(a));
  const gb = await gatewayOf(t, streamBalance(b));
  // instance a meets the refused server once (then the good one serves)
  assert.deepEqual(tally(await names(ga.port, 2)), { good: 2 });
  assert.equal(a.streamStats().servers[0]!.fails, 1);
  await until(() => b.streamStats().servers[0]!.state === 'unavail', 2000, 'the failure shared with b');
  // b never tries it
  assert.deepEqual(tally(await names(gb.port, 4)), { good: 4 });
  assert.equal(b.streamStats().servers[0]!.connections, 0);
  // configuration: a server added through b takes connections through a
  const extra = await named(t, 'extra');
  b.add({ id: 'extra', url: extra.url });
  await until(() => a.get('extra') !== undefined, 2000, 'the new server on a');
  assert.deepEqual(tally(await names(ga.port, 4)), { good: 2, extra: 2 });
});

test('sync: /api/9/stream/* are the totals over the instances, /metrics lists each instance, a reset reaches every instance with a monitor', async (t) => {
  const hub = new MemoryHub();
  const servers = [await echo(t), await echo(t)];
  const list = servers.map((s, i) => ({ id: `e${i}`, url: s.url }));
  // i0: a pool with sync and a monitor; i1: a pool without sync, its monitor publishes for it;
  // i2: a pool with sync and no monitor (its pool publishes its stream statistics, its zone counts nowhere)
  const gws: Array<{ pool: UpstreamPool; handler: StreamHandler; port: number; api: string | undefined }> = [];
  for (const [i, setup] of (['sync+monitor', 'monitor', 'sync'] as const).entries()) {
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 'stream-stats', instance: `i${i}`, statsInterval: 50 });
    t.after(() => handle.close());
    const pool = createPool({ name: 'tcp', servers: list, ...(setup === 'monitor' ? {} : { sync: handle }) });
    t.after(() => pool.close());
    await pool.ready;
    const handler = streamBalance(pool, { zone: 'front' });
    const { port } = await gatewayOf(t, handler);
    let api: string | undefined;
    if (setup !== 'sync') {
      const mon = monitor({ pools: [], streams: [handler], sync: handle, write: () => true });
      t.after(() => mon.close());
      const http = await listen(
        t,
        createServer((req, res) => mon(req, res, () => res.writeHead(404).end())),
      );
      api = `${http.url}/api/9`;
    }
    gws.push({ pool, handler, port, api });
  }
  const [a, b, c] = gws as [(typeof gws)[0], (typeof gws)[0], (typeof gws)[0]];
  const apis = [a.api!, b.api!];
  for (const [g, n] of [
    [a, 3],
    [b, 2],
    [c, 1],
  ] as const)
    for (let i = 0; i < n; i++) assert.equal(await exchangeBytes(g.port, 'ping!'), 'ping!');
  await until(() => gws.every((g) => g.handler.stats().processing === 0), 2000, 'the sessions to end');
  const connections = (id: string): number => gws.reduce((n, g) => n + (g.pool.streamStats().servers.find((s) => s.id === id)?.connections ?? 0), 0);
  const want = { e0: connections('e0'), e1: connections('e1') };
  assert.equal(want.e0 + want.e1, 6);
  const zone = { processing: 0, connections: 5, sessions: { '2xx': 5, '4xx': 0, '5xx': 0, total: 5 }, discarded: 0, received: 25, sent: 25 };
  for (const api of apis) {
    await until(
      async () => JSON.stringify(await getJson(`${api}/stream/server_zones`)) === JSON.stringify({ front: zone }),
      5000,
      `the zone's totals from ${api}`,
    );
    await until(
      async () => {
        const up = await getJson(`${api}/stream/upstreams/tcp`);
        return up.peers[0].connections === want.e0 && up.peers[1].connections === want.e1;
      },
      5000,
      `the upstream's totals from ${api}`,
    );
    const up = await getJson(`${api}/stream/upstreams`);
    assert.deepEqual(
      up.tcp.peers.map((p: Record<string, unknown>) => [p.id, p.state, p.connections, p.sent, p.received, p.fails]),
      [
        ['e0', 'up', want.e0, 5 * want.e0, 5 * want.e0, 0],
        ['e1', 'up', want.e1, 5 * want.e1, 5 * want.e1, 0],
      ],
    );
    assert.ok(up.tcp.peers.every((p: Record<string, unknown>) => typeof p.connect_time === 'number' && typeof p.first_byte_time === 'number'));
  }
  // each instance's own figures, and its series in /metrics (never summed), the same from both monitors
  const instances = await getJson(`${b.api}/switchyard/instances`);
  assert.deepEqual(Object.keys(instances), ['i0', 'i1', 'i2']);
  assert.deepEqual(
    ['i0', 'i1'].map((i) => instances[i].stream.server_zones.front.connections),
    [3, 2],
  );
  assert.deepEqual(instances.i2.stream.server_zones, {});
  assert.equal(
    instances.i2.stream.upstreams.tcp.peers.reduce((n: number, p: { connections: number }) => n + p.connections, 0),
    1,
  );
  for (const api of apis) {
    const metrics = (await call(api.replace('/api/9', '/metrics'))).text;
    assert.match(metrics, /^switchyard_stream_server_zone_connections_total\{zone="front",instance="i0"\} 3$/m);
    assert.match(metrics, /^switchyard_stream_server_zone_connections_total\{zone="front",instance="i1"\} 2$/m);
    assert.match(metrics, /^switchyard_stream_upstream_server_connections_total\{upstream="tcp",server="127\.0\.0\.1:\d+",id="e0",instance="i2"\} 1$/m);
  }
  // DELETE on one monitor resets every instance that runs a monitor (as for HTTP upstreams): i2 keeps its 1
  assert.equal((await call(`${a.api}/stream/server_zones/front`, { method: 'DELETE' })).status, 204);
  assert.equal((await call(`${a.api}/stream/upstreams/tcp`, { method: 'DELETE' })).status, 204);
  const total = (g: (typeof gws)[0]): number => g.pool.streamStats().servers.reduce((n, s) => n + s.connections, 0);
  await until(() => b.handler.stats().connections === 0 && total(a) === 0 && total(b) === 0, 2000, 'the resets on both monitored instances');
  assert.equal(total(c), 1);
  for (const api of apis) {
    await until(async () => (await getJson(`${api}/stream/server_zones/front`)).connections === 0, 5000, 'the zone reset in the totals');
    await until(
      async () => (await getJson(`${api}/stream/upstreams/tcp`)).peers.reduce((n: number, p: { connections: number }) => n + p.connections, 0) === 1,
      5000,
      'the upstream reset in the totals',
    );
  }
});

test('merging a stream server over instances: sums, the largest for shared events, connection-weighted times', () => {
  const server = { id: 'a', server: 'http://127.0.0.1:1', name: '127.0.0.1:1', backup: false, weight: 1, state: 'up' as const, maxConns: 0 };
  const times = { connectTime: 0, firstByteTime: 0, responseTime: 0, downstart: undefined, selected: undefined };
  const counts = { active: 0, unavail: 0, downtime: 0, connections: 0, sent: 0, received: 0, fails: 0 };
  const base: StreamServerStats = { ...server, ...times, ...counts, healthChecks: { checks: 0, fails: 0, unhealthy: 0, lastPassed: undefined } };
  const one = {
    ...base,
    active: 1,
    connections: 10,
    sent: 100,
    received: 1000,
    fails: 2,
    unavail: 1,
    downtime: 3000,
    connectTime: 1,
    firstByteTime: 4,
    responseTime: 10,
  };
  const two = {
    ...base,
    active: 2,
    connections: 30,
    sent: 300,
    received: 3000,
    unavail: 1,
    downtime: 2000,
    connectTime: 5,
    firstByteTime: 8,
    responseTime: 50,
  };
  const m = mergeStreamServer({ ...base, weight: 3, state: 'draining' }, [one, two]);
  assert.deepEqual(
    [m.weight, m.state, m.active, m.connections, m.sent, m.received, m.fails, m.unavail, m.downtime],
    [3, 'draining', 3, 40, 400, 4000, 2, 1, 3000],
  );
  assert.deepEqual([m.connectTime, m.firstByteTime, m.responseTime], [4, 7, 40], '(1 × 10 + 5 × 30) / 40, ...');
  assert.equal(mergeStreamServer({ ...base, connectTime: 9 }, []).connectTime, 9, 'no connections anywhere: this instance’s figure');
});

test('sync: stream sections that are not what an instance publishes are read as zeros; the monitor takes a stream pool’s handle', async (t) => {
  const hub = new MemoryHub();
  const server = await echo(t);
  const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 'stream-rogue', instance: 'i0', statsInterval: 50 });
  t.after(() => handle.close());
  const pool = createPool({ name: 'tcp', servers: [{ id: 'e0', url: server.url }], sync: handle });
  t.after(() => pool.close());
  const handler = streamBalance(pool, { zone: 'front' });
  const { port } = await gatewayOf(t, handler);
  const mon = monitor({ pools: [], streams: [handler] });
  t.after(() => mon.close());
  const api = `${
    (
      await listen(
        t,
        createServer((req, res) => mon(req, res, () => res.writeHead(404).end())),
      )
    ).url
  }/api/9`;
  await exchangeBytes(port, 'ping!');
  const rogue = hub.connect();
  const hostile = {
    instance: 'rogue',
    host: 'h',
    pid: 1,
    sections: {
      'stream:tcp': { servers: [{ id: 'e0', connections: 'lots', sent: -5, received: Infinity, connectTime: 'slow', healthChecks: [] }, null, 7] },
      'stream_zone:front': { connections: -1, sessions: { '2xx': 'x', total: null }, received: '9' },
    },
  };
  const publish = setInterval(() => void rogue.broadcast('stats', JSON.stringify(hostile)).catch(() => {}), 20);
  t.after(() => clearInterval(publish));
  await until(async () => Object.keys(await getJson(`${api}/switchyard/instances`)).includes('rogue'), 2000, 'the rogue report heard');
  await until(async () => (await getJson(`${api}/stream/server_zones/front`)).connections === 1, 2000, 'the own report in the totals');
  assert.deepEqual(await getJson(`${api}/stream/server_zones/front`), {
    processing: 0,
    connections: 1,
    sessions: { '2xx': 1, '4xx': 0, '5xx': 0, total: 1 },
    discarded: 0,
    received: 5,
    sent: 5,
  });
  const [peer] = (await getJson(`${api}/stream/upstreams/tcp`)).peers;
  assert.deepEqual([peer.connections, peer.sent, peer.received, peer.fails], [1, 5, 5, 0]);
  assert.ok(Number.isFinite(peer.connect_time));
  assert.equal((await call(api.replace('/api/9', '/metrics'))).status, 200);
});
