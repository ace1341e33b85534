// monitor({ streams }): NGINX Plus's /api/9/stream/upstreams and /api/9/stream/server_zones over
// live TCP traffic through streamBalance(), and the stream upstreams' servers managed by the API.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { monitor } from '../../src/monitor/index.ts';
import { createPool } from '../../src/pool/index.ts';
import { streamBalance } from '../../src/stream/index.ts';
import { until } from '../helpers.ts';
import { call, getJson } from '../monitor/support.ts';
import { gatewayOf, named, names, tally } from './support.ts';

test('monitor({ streams }): stream upstreams and server zones as NGINX Plus shows them, apart from HTTP; servers managed; resets', async (t) => {
  const [a, b] = [await named(t, 'a'), await named(t, 'b')];
  const pool = createPool({
    name: 'tcp_backend',
    servers: [
      { url: a.url, id: 'a' },
      { url: b.url, id: 'b' },
    ],
  });
  t.after(() => pool.close());
  const handler = streamBalance(pool, { zone: 'tcp_front' });
  const g = await gatewayOf(t, handler);
  const mon = monitor({ pools: [pool], streams: [handler], write: () => true });
  t.after(() => mon.close());
  const http = createServer((req, res) => mon(req, res, () => res.writeHead(404).end()));
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  t.after(() => http.close());
  const api = `http://127.0.0.1:${(http.address() as AddressInfo).port}/api/9`;

  assert.deepEqual(tally(await names(g.port, 4)), { a: 2, b: 2 });
  await until(() => handler.stats().processing === 0);
  assert.deepEqual(await getJson(`${api}/`), ['nginx', 'connections', 'http', 'stream', 'switchyard']);
  assert.deepEqual(await getJson(`${api}/stream`), ['server_zones', 'upstreams']);
  const zones = await getJson(`${api}/stream/server_zones`);
  assert.deepEqual(zones, {
    tcp_front: { processing: 0, connections: 4, sessions: { '2xx': 4, '4xx': 0, '5xx': 0, total: 4 }, discarded: 0, received: 0, sent: 4 },
  });
  const up = await getJson(`${api}/stream/upstreams/tcp_backend`);
  assert.equal(up.zone, 'tcp_backend');
  assert.deepEqual(
    up.peers.map((p: Record<string, unknown>) => [p.id, p.server, p.state, p.connections, p.received, p.fails]),
    [
      ['a', `127.0.0.1:${a.port}`, 'up', 2, 2, 0],
      ['b', `127.0.0.1:${b.port}`, 'up', 2, 2, 0],
    ],
  );
  assert.ok(
    up.peers.every(
      (p: Record<string, number>) => typeof p.connect_time === 'number' && typeof p.first_byte_time === 'number' && typeof p.response_time === 'number',
    ),
  );
  // Prometheus: the zones and the stream statistics of the pool's servers
  const metrics = (await call(api.replace('/api/9', '/metrics'))).text;
  assert.match(metrics, /^switchyard_stream_server_zone_sessions_total\{zone="tcp_front",code="2xx"\} 4$/m);
  assert.match(
    metrics,
    new RegExp(`^switchyard_stream_upstream_server_connections_total\\{upstream="tcp_backend",server="127\\.0\\.0\\.1:${a.port}",id="a"\\} 2$`, 'm'),
  );
  assert.match(metrics, /^# TYPE switchyard_stream_upstream_server_first_byte_time_seconds gauge$/m);
  // the HTTP view of the same pool counts no requests
  const httpUp = await getJson(`${api}/http/upstreams/tcp_backend`);
  assert.deepEqual(
    httpUp.peers.map((p: { requests: number }) => p.requests),
    [0, 0],
  );
  // servers through the API: a new one takes connections
  const c = await named(t, 'c');
  const added = await call(`${api}/stream/upstreams/tcp_backend/servers`, { method: 'POST', json: { server: `127.0.0.1:${c.port}`, id: 'c' } });
  assert.equal(added.status, 201);
  assert.deepEqual(tally(await names(g.port, 3)), { a: 1, b: 1, c: 1 });
  const patched = await call(`${api}/stream/upstreams/tcp_backend/servers/a`, { method: 'PATCH', json: { down: true } });
  assert.equal(patched.status, 200);
  assert.ok(!(await names(g.port, 4)).includes('a'));
  assert.equal((await call(`${api}/stream/upstreams/tcp_backend/servers/c`, { method: 'DELETE' })).status, 200);
  // resets
  assert.equal((await call(`${api}/stream/upstreams/tcp_backend`, { method: 'DELETE' })).status, 204);
  assert.deepEqual(
    (await getJson(`${api}/stream/upstreams/tcp_backend`)).peers.map((p: { connections: number }) => p.connections),
    [0, 0],
  );
  assert.equal((await call(`${api}/stream/server_zones/tcp_front`, { method: 'DELETE' })).status, 204);
  assert.equal((await getJson(`${api}/stream/server_zones/tcp_front`)).connections, 0);
  // unknown names
  assert.equal((await call(`${api}/stream/upstreams/nope`)).status, 404);
  assert.equal((await call(`${api}/stream/server_zones/nope`)).body.error.code, 'ServerZoneNotFound');
  assert.equal((await call(`${api}/stream/caches`)).status, 404);
});

test('monitor() refuses streams that are not streamBalance() handlers', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  try {
    assert.throws(() => monitor({ pools: [pool], streams: [() => undefined] as never }), { option: 'streams[0]' });
    assert.throws(() => monitor({ pools: [pool], streams: 'x' as never }), { option: 'streams' });
  } finally {
    pool.close();
  }
});
