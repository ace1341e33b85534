// monitor() over two real gateway processes sharing a real Redis (issue 14): each a child `node`
// process (test/monitor/fixtures/gateway.ts) with a pool with sync, balance() and two monitors.
// The issue measured Prometheus scrapes reading 12, 6, 12, 6 for a counter that was really 18,
// whichever worker took the scrape: `/local` (one process's view) still does, `/status` reads 18
// every time, each instance's series the same from both processes; a process that dies leaves the
// totals within 5 s.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { until, upstream } from '../helpers.ts';
import { REDIS_URL, redisAvailability, testNamespace } from '../redis.ts';
import { type GatewayChild, startGateway } from '../support/child.ts';
import { call, getJson, traffic } from './support.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/gateway.ts', import.meta.url));
const COUNTER = 'switchyard_upstream_server_requests_total';

/** The sum of COUNTER's samples in a scrape, and the samples by their `instance` label. */
async function scrape(url: string): Promise<{ sum: number; byInstance: Record<string, number> }> {
  const text = (await call(url)).text;
  let sum = 0;
  const byInstance: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${COUNTER}{`)) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    const instance = /instance="([^"]*)"/.exec(line)?.[1] ?? '';
    sum += value;
    byInstance[instance] = (byInstance[instance] ?? 0) + value;
  }
  return { sum, byInstance };
}

const redis = redisAvailability();

test('2 gateway processes on Redis: scrapes alternating between them read 18 every time, not 12, 6, 12, 6', async (t) => {
  const skip = redis.shared();
  if (skip !== false) return t.skip(skip);
  const namespace = await testNamespace(t, 'test-monitor');
  const up = await upstream(t, 'a');
  const env = { REDIS_URL, NAMESPACE: namespace, UPSTREAM: up.url };
  const [p0, p1] = ['p0', 'p1'].map((name) => startGateway(t, FIXTURE, name, env)) as [GatewayChild, GatewayChild];
  const failed = (): string => [p0, p1].map((c) => `${c.name}: ${c.stderr}`).join('\n');
  await until(() => p0.url !== undefined && p1.url !== undefined, 60_000, `both processes listening (${failed()})`);

  await traffic(p0.url!, 12);
  await traffic(p1.url!, 6);
  assert.equal(up.seen.length, 18);

  // The problem: each process answers with what it saw.
  const before: number[] = [];
  for (const c of [p0, p1, p0, p1]) before.push((await scrape(`${c.url}/local/metrics`)).sum);
  t.diagnostic(`one process's view, scrapes alternating: ${before.join(', ')}`);
  assert.deepEqual(before, [12, 6, 12, 6]);

  // Fixed: once the reports are in (one statistics interval, 1 s), every read is 18.
  await until(
    async () => (await scrape(`${p0.url}/status/metrics`)).sum === 18 && (await scrape(`${p1.url}/status/metrics`)).sum === 18,
    5000,
    `both processes to read 18 (${failed()})`,
  );
  const after: number[] = [];
  for (let i = 0; i < 8; i++) {
    const s = await scrape(`${(i % 2 === 0 ? p0 : p1).url}/status/metrics`);
    after.push(s.sum);
    assert.deepEqual(s.byInstance, { p0: 12, p1: 6 }, 'each instance its own series, the same from both processes');
  }
  t.diagnostic(`every live instance, scrapes alternating: ${after.join(', ')}`);
  assert.deepEqual(after, [18, 18, 18, 18, 18, 18, 18, 18]);
  for (const c of [p0, p1]) {
    const u = await getJson(`${c.url}/status/api/9/http/upstreams/backend`);
    assert.equal(u.peers[0].requests, 18, `the API of ${c.name}`);
    assert.deepEqual(Object.keys(await getJson(`${c.url}/status/api/9/switchyard/instances`)), ['p0', 'p1']);
  }

  // A process that dies (no goodbye) leaves the totals of the other within 5 s.
  p1.process.kill('SIGKILL');
  const killed = performance.now();
  await until(async () => (await scrape(`${p0.url}/status/metrics`)).sum === 12, 5000, 'p1 out of the totals of p0');
  t.diagnostic(`p1 left the totals ${Math.round(performance.now() - killed)} ms after it was killed`);
  assert.equal((await getJson(`${p0.url}/status/api/9/http/upstreams/backend`)).peers[0].requests, 12);
  assert.deepEqual(Object.keys(await getJson(`${p0.url}/status/api/9/switchyard/instances`)), ['p0']);
  p0.process.kill('SIGTERM');
});
