// healthCheck() shared across gateway processes on a real Redis (issue 14): three child `node`
// processes (test/health/fixtures/prober.ts), each a pool with sync and a health check at a 1 s
// interval, in front of two upstreams that count the probes they receive. The issue measured 15
// probes in 8 s per server with 2 workers; shared, it is one per interval whatever the process
// count, and a prober SIGKILLed is replaced within two intervals.
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient } from '@redis/client';
import { REDIS_URL, redisAvailability } from '../redis.ts';
import { until } from '../helpers.ts';
import { ok, switchable } from './support.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/prober.ts', import.meta.url));
const INTERVAL = 1000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Report {
  instance: string;
  t: number;
  event: 'ready' | 'probe' | 'stopped';
  id?: string;
  own?: boolean;
}

interface Child {
  name: string;
  process: ChildProcessWithoutNullStreams;
  reports: Report[];
  stderr: string;
}

function startChild(t: TestContext, name: string, env: Record<string, string>): Child {
  const child = spawn(process.execPath, [FIXTURE], { env: { ...process.env, ...env, INSTANCE: name }, stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Child = { name, process: child, reports: [], stderr: '' };
  let buffer = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    buffer += s;
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      try {
        out.reports.push(JSON.parse(line) as Report);
      } catch {
        out.stderr += `bad line: ${line}\n`;
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => (out.stderr += s));
  // Never outlives the test, whatever happens.
  const limit = setTimeout(() => child.kill('SIGKILL'), 90_000);
  t.after(() => {
    clearTimeout(limit);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return out;
}

const exited = (child: Child): Promise<void> =>
  child.process.exitCode !== null || child.process.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.process.once('exit', () => resolve()));

const redis = redisAvailability();

test('3 gateway processes on Redis: one probe per server per interval, and a SIGKILLed prober is replaced within two intervals', async (t) => {
  const skip = redis.shared();
  if (skip !== false) return t.skip(skip);
  const namespace = `test-health-${randomUUID()}`;
  const admin = createClient({ url: REDIS_URL });
  await admin.connect();
  const children: Child[] = [];
  t.after(async () => {
    // The instances first (a failed assertion leaves them running), then their keys.
    for (const c of children) c.process.kill('SIGKILL');
    await Promise.all(children.map(exited));
    const keys: string[] = [];
    for await (const key of admin.scanIterator({ MATCH: `${namespace}:*`, COUNT: 100 })) keys.push(...(Array.isArray(key) ? key : [key]));
    if (keys.length > 0) await admin.del(keys);
    admin.destroy();
  });

  const arrivals: Record<'a' | 'b', number[]> = { a: [], b: [] };
  const counting = (list: number[]) => () => {
    list.push(Date.now());
    return ok;
  };
  const a = await switchable(t, counting(arrivals.a));
  const b = await switchable(t, counting(arrivals.b));
  const env = { REDIS_URL, NAMESPACE: namespace, UPSTREAMS: JSON.stringify({ a: a.url, b: b.url }), INTERVAL: String(INTERVAL) };
  children.push(...['p0', 'p1', 'p2'].map((name) => startChild(t, name, env)));
  const failed = () => children.map((c) => `${c.name}: ${c.stderr}`).join('\n');
  const started = Date.now();
  await until(() => children.every((c) => c.reports.some((r) => r.event === 'ready')), 60_000, `the 3 instances ready (${failed()})`);
  t.diagnostic(`the 3 instances were ready in ${Date.now() - started} ms`);

  // Counted over 4 intervals: one probe per server per interval (without sharing: 3).
  const window = 4 * INTERVAL;
  const from = Date.now();
  await sleep(window);
  const to = Date.now();
  const inWindow = (list: number[]) => list.filter((x) => x >= from && x < to).length;
  const counts = { a: inWindow(arrivals.a), b: inWindow(arrivals.b) };
  t.diagnostic(`probes in ${window} ms at a ${INTERVAL} ms interval with 3 processes: a ${counts.a}, b ${counts.b}`);
  for (const id of ['a', 'b'] as const) {
    assert.ok(counts[id] >= 2 && counts[id] <= 5, `server ${id}: ${counts[id]} probes in 4 intervals, not about 4 (${failed()})`);
  }
  for (const id of ['a', 'b'] as const) {
    const probers = children.filter((c) => c.reports.some((r) => r.event === 'probe' && r.id === id && r.own && r.t >= from));
    assert.equal(probers.length, 1, `one process probes ${id}: ${probers.map((c) => c.name).join(', ')}`);
    const others = children.filter((c) => !probers.includes(c));
    for (const c of others)
      assert.ok(
        c.reports.some((r) => r.event === 'probe' && r.id === id && !r.own),
        `${c.name} hears the results of ${id}`,
      );
  }

  // SIGKILL the prober of a half an interval after one of its probes: its lease stays in Redis until it expires.
  const prober = children.find((c) => c.reports.some((r) => r.event === 'probe' && r.id === 'a' && r.own && r.t >= from))!;
  const seen = arrivals.a.length;
  await until(() => arrivals.a.length > seen, 3 * INTERVAL, 'the next probe of a');
  await sleep(INTERVAL / 2);
  const lastProbe = arrivals.a.at(-1)!;
  prober.process.kill('SIGKILL');
  await exited(prober);
  const killed = Date.now();
  await until(() => arrivals.a.some((x) => x > killed), 4 * INTERVAL, 'a probe of a after the prober was killed');
  const next = arrivals.a.find((x) => x > killed)!;
  t.diagnostic(`takeover: next probe of a ${next - killed} ms after the SIGKILL, ${next - lastProbe} ms after the last probe (interval ${INTERVAL} ms)`);
  assert.ok(next - lastProbe <= 2 * INTERVAL + 250, `the probes of a resumed ${next - lastProbe} ms after the last one, not within two intervals`);
  const heirs = () => children.filter((c) => c !== prober && c.reports.some((r) => r.event === 'probe' && r.id === 'a' && r.own && r.t >= killed));
  await until(() => heirs().length > 0, 2 * INTERVAL, 'the heir reporting its probe');
  assert.equal(heirs().length, 1, 'one surviving process took a over');

  // The two survivors: still one probe per interval.
  const from2 = Date.now();
  await sleep(2 * INTERVAL);
  const to2 = Date.now();
  const after = arrivals.a.filter((x) => x >= from2 && x < to2).length;
  t.diagnostic(`after the takeover: a ${after} probes in 2 intervals`);
  assert.ok(after >= 1 && after <= 3, `after the takeover, a got ${after} probes in 2 intervals`);

  const survivors = children.filter((c) => c !== prober);
  for (const c of survivors) c.process.kill('SIGTERM');
  await Promise.all(survivors.map(exited));
  for (const c of survivors)
    assert.ok(
      c.reports.some((r) => r.event === 'stopped'),
      `${c.name} stopped cleanly: ${c.stderr}`,
    );
});
