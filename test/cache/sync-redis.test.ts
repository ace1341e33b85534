// cache() across real gateway processes sharing a real Redis (issue 14): 3 child `node` processes
// (test/cache/fixtures/sync-gateway.ts), each a cache() with `lock` before balance(), in front of
// one upstream that counts what it receives and holds its answer until every request has reached
// a cache. The issue: a lock lets one fill per process through. Measured: fills per hot key with
// sync on (1) and off (one per process), with each process's memory store and with a Redis store.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient } from '@redis/client';
import { fetchText, until, upstream, type Reply, type Upstream } from '../helpers.ts';
import { REDIS_URL, redisAvailability } from '../redis.ts';
import { type GatewayChild, startGateway } from '../support/child.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/sync-gateway.ts', import.meta.url));
const PROCESSES = 3;
const PER_PROCESS = 20;

const redis = redisAvailability();

/**
 * Starts PROCESSES gateways (and their upstream); resolves, once they listen, the run of
 * PER_PROCESS concurrent requests for one hot key on each: the upstream's fills, and the replies.
 */
async function hotKey(t: TestContext, syncOn: boolean, store: 'memory' | 'redis'): Promise<() => Promise<{ fills: number; replies: Reply[] }>> {
  const namespace = `test-cache-${randomUUID()}`;
  const admin = createClient({ url: REDIS_URL });
  await admin.connect();
  t.after(async () => {
    const keys: string[] = [];
    for await (const key of admin.scanIterator({ MATCH: `*${namespace}*`, COUNT: 100 })) keys.push(...(Array.isArray(key) ? key : [key]));
    if (keys.length > 0) await admin.del(keys);
    admin.destroy();
  });
  let open = (): void => {};
  const gate = new Promise<void>((resolve) => (open = resolve));
  const up = await upstream(t, 'origin', (_req, res) => {
    const n = up.seen.length;
    void gate.then(() => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
      res.end(`fill #${n}`);
    });
  });
  const env = { REDIS_URL, NAMESPACE: namespace, UPSTREAM: up.url, SYNC: syncOn ? 'on' : 'off', STORE: store };
  const children = Array.from({ length: PROCESSES }, (_, i) => startGateway(t, FIXTURE, `p${i}`, env, 120_000));
  const failed = (): string => children.map((c) => `${c.name}: ${c.stderr}`).join('\n');
  await until(() => children.every((c) => c.url !== undefined), 60_000, `every process listening (${failed()})`);
  if (syncOn)
    assert.ok(
      children.every((c) => c.hello?.connected === true),
      'every process connected to Redis',
    );
  return () => run(children, up, open, failed);
}

async function run(children: GatewayChild[], up: Upstream, open: () => void, failed: () => string): Promise<{ fills: number; replies: Reply[] }> {
  const replies = children.flatMap((c) => Array.from({ length: PER_PROCESS }, () => fetchText(`${c.url}/hot`, { headers: { host: 'hot.example' } })));
  const arrived = async (): Promise<number> => {
    let sum = 0;
    for (const c of children) sum += Number((await fetchText(`${c.url}/__arrived`)).body);
    return sum;
  };
  await until(async () => (await arrived()) === PROCESSES * PER_PROCESS && up.seen.length >= 1, 30_000, `every request at its cache (${failed()})`);
  // The locks are asked for in Redis within a round trip of each request's arrival.
  await new Promise((resolve) => setTimeout(resolve, 100));
  open();
  const answered = await Promise.all(replies);
  return { fills: up.seen.length, replies: answered };
}

for (const store of ['memory', 'redis'] as const) {
  test(`${PROCESSES} gateway processes on Redis (${store} store), ${PER_PROCESS} concurrent requests each for one hot key: 1 fill with sync, ${PROCESSES} without`, async (t) => {
    const skip = redis.shared();
    if (skip !== false) return t.skip(skip);
    // Both sets of processes start at once (a process takes seconds to start on a busy machine).
    const [runOff, runOn] = await Promise.all([hotKey(t, false, store), hotKey(t, true, store)]);
    const off = await runOff();
    t.diagnostic(`fills per hot key, ${PROCESSES} processes × ${PER_PROCESS} requests, ${store} store, sync off: ${off.fills}`);
    assert.equal(off.fills, PROCESSES, 'the problem: one fill per process');
    assert.ok(off.replies.every((r) => r.status === 200));
    const on = await runOn();
    t.diagnostic(`fills per hot key, ${PROCESSES} processes × ${PER_PROCESS} requests, ${store} store, sync on: ${on.fills}`);
    assert.equal(on.fills, 1);
    assert.ok(
      on.replies.every((r) => r.status === 200 && r.body === 'fill #1'),
      on.replies.map((r) => `${r.status} ${String(r.headers['x-cache-status'])} ${r.body}`).join(', '),
    );
  });
}
