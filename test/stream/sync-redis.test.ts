// Stream statistics over two real gateway processes sharing a real Redis (issue 19): each a child
// `node` process (test/stream/fixtures/gateway.ts) with a pool with sync, streamBalance() and
// monitor({ streams }). Sessions through either process show in the totals read from both; each
// process's own series in /metrics; a process that dies leaves the totals.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { until } from '../helpers.ts';
import { call, getJson } from '../monitor/support.ts';
import { REDIS_URL, redisAvailability, testNamespace } from '../redis.ts';
import { type GatewayChild, startGateway } from '../support/child.ts';
import { echo, exchangeBytes } from './support.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/gateway.ts', import.meta.url));
const redis = redisAvailability();

/** The stream sessions' totals a process's monitor answers with: zone connections, upstream connections and bytes received from clients. */
async function totals(c: GatewayChild): Promise<[number, number, number]> {
  const zone = await getJson(`${c.url}/status/api/9/stream/server_zones/front`);
  const up = await getJson(`${c.url}/status/api/9/stream/upstreams/tcp`);
  return [zone.connections, up.peers[0].connections, zone.received];
}

test('2 TCP gateway processes on Redis: the stream totals over both from either, each process its own series', { timeout: 90_000 }, async (t) => {
  const skip = redis.shared();
  if (skip !== false) return t.skip(skip);
  const namespace = await testNamespace(t, 'test-stream');
  const up = await echo(t);
  const env = { REDIS_URL, NAMESPACE: namespace, UPSTREAM: up.url };
  const [p0, p1] = ['p0', 'p1'].map((name) => startGateway(t, FIXTURE, name, env)) as [GatewayChild, GatewayChild];
  const failed = (): string => [p0, p1].map((c) => `${c.name}: ${c.stderr}`).join('\n');
  await until(() => p0.url !== undefined && p1.url !== undefined, 60_000, `both processes listening (${failed()})`);
  assert.equal(p0.hello?.connected, true);

  for (const [c, n] of [
    [p0, 4],
    [p1, 2],
  ] as const)
    for (let i = 0; i < n; i++) assert.equal(await exchangeBytes(Number(c.hello?.stream), 'ping!'), 'ping!');
  assert.equal(up.accepted, 6);

  for (const c of [p0, p1]) await until(async () => (await totals(c)).join() === '6,6,30', 5000, `the totals from ${c.name} (${failed()})`);
  for (const c of [p0, p1]) {
    const metrics = (await call(`${c.url}/status/metrics`)).text;
    assert.match(metrics, /^switchyard_stream_server_zone_connections_total\{zone="front",instance="p0"\} 4$/m);
    assert.match(metrics, /^switchyard_stream_server_zone_connections_total\{zone="front",instance="p1"\} 2$/m);
    assert.match(metrics, /^switchyard_stream_upstream_server_connections_total\{upstream="tcp",server="[^"]+",id="a",instance="p1"\} 2$/m);
  }
  const instances = await getJson(`${p1.url}/status/api/9/switchyard/instances`);
  assert.deepEqual([instances.p0.stream.server_zones.front.connections, instances.p1.stream.server_zones.front.connections], [4, 2]);

  // A process that dies leaves the totals of the other.
  p1.process.kill('SIGKILL');
  await until(async () => (await totals(p0)).join() === '4,4,20', 5000, 'p1 out of the totals of p0');
  p0.process.kill('SIGTERM');
});
