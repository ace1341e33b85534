// examples/cluster as its README runs it (issue 14): a node:cluster primary forking two workers on
// one port, each a gateway with its pool synced through the shared Redis. A drain sent to the
// monitor API (whichever worker takes it) must reach both: requests on many connections, which the
// primary hands to the workers in turn, all avoid the drained server. It stops cleanly on SIGTERM.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fetchText, until } from '../helpers.ts';
import { REDIS_URL, redisAvailability, testNamespace } from '../redis.ts';
import { median } from './support.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const redis = redisAvailability();

test('examples/cluster: a drain sent to one worker through the API is honoured by every worker; SIGTERM stops it all', async (t) => {
  const skip = redis.shared();
  if (skip !== false) return t.skip(skip);
  assert.ok(existsSync(`${root}dist/index.js`), 'dist/ is missing: build the package first (npm run build; npm test does it)');
  assert.match(readFileSync(`${root}dist/index.js`, 'utf8'), /\bsync\b/, 'dist/ predates sync(): rebuild it (npm run build)');
  const namespace = await testNamespace(t, 'test-cluster-example');
  const token = 'test-token';
  const child = spawn(process.execPath, ['examples/cluster/server.ts'], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '', PORT: '0', UPSTREAM_PORT: '0', WORKERS: '2', REDIS_URL, NAMESPACE: namespace, ADMIN_TOKEN: token },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const pids = new Set<number>();
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
  });
  await until(
    () => /listening on http:/.test(stdout) || child.exitCode !== null,
    20_000,
    `the example's "listening on" line (stdout: ${stdout}, stderr: ${stderr})`,
  );
  const url = /listening on (http:\/\/[\d.:]+)/.exec(stdout)?.[1];
  assert.ok(url !== undefined, `the example exited before listening: ${stderr}`);

  /** A GET on a fresh connection: which worker answered (its pid) and, for proxied requests, which upstream. */
  const get = async (path: string) => {
    const reply = await fetchText(`${url}${path}`);
    const pid = Number(/pid (\d+)/.exec(String(reply.headers['x-worker']))?.[1]);
    assert.ok(pid > 0, `no x-worker header: ${JSON.stringify(reply.headers)}`);
    pids.add(pid);
    return { ...reply, pid };
  };
  const spread = async (n: number) => {
    const byWorker = new Map<number, Map<string, number>>();
    for (let i = 0; i < n; i++) {
      const reply = await get('/hello');
      assert.equal(reply.status, 200, reply.body);
      const upstream = (JSON.parse(reply.body) as { upstream: string }).upstream;
      const seen = byWorker.get(reply.pid) ?? new Map<string, number>();
      seen.set(upstream, (seen.get(upstream) ?? 0) + 1);
      byWorker.set(reply.pid, seen);
    }
    return byWorker;
  };
  const show = (byWorker: Map<number, Map<string, number>>) => JSON.stringify([...byWorker].map(([pid, m]) => [pid, Object.fromEntries(m)]));

  // Both workers answer, and each sends requests to beta before the drain.
  const before = await spread(24);
  assert.equal(before.size, 2, `two workers answer: ${show(before)}`);
  for (const [pid, seen] of before) assert.ok((seen.get('beta') ?? 0) > 0, `worker ${pid} sent nothing to beta before the drain: ${show(before)}`);

  // The drain, as the README sends it; then every worker's API shows it.
  const beta = `/status/api/9/http/upstreams/demo/servers/beta`;
  const refused = await fetchText(`${url}${beta}`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: '{"drain":true}' });
  assert.equal(refused.status, 405, 'a write without the token is refused');
  const times: number[] = [];
  for (let run = 0; run < 5; run++) {
    const value = run % 2 === 0;
    const started = performance.now();
    const patched = await fetchText(`${url}${beta}`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ drain: value }),
    });
    assert.equal(patched.status, 200, patched.body);
    const shown = new Set<number>();
    await until(
      async () => {
        const reply = await get(beta);
        if ((JSON.parse(reply.body) as { drain: boolean }).drain === value) shown.add(reply.pid);
        return shown.size === 2;
      },
      5000,
      `drain ${value} shown by both workers`,
      5,
    );
    times.push(performance.now() - started);
  }
  t.diagnostic(
    `drain propagation to 2 node:cluster workers (PATCH sent → both APIs show it): median ${median(times).toFixed(1)} ms, runs ${times.map((m) => m.toFixed(1)).join(', ')} ms`,
  );
  for (const ms of times) assert.ok(ms < 1000, `a drain took ${Math.round(ms)} ms to reach both workers`);

  // The last run left beta drained: on many connections, spread over both workers, nothing reaches it.
  const after = await spread(30);
  assert.equal(after.size, 2, `two workers answer: ${show(after)}`);
  for (const [pid, seen] of after) assert.equal(seen.get('beta') ?? 0, 0, `worker ${pid} still sends requests to the drained beta: ${show(after)}`);

  // SIGTERM: the primary stops the workers, closes the upstreams and ends by itself.
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const ended = await Promise.race([exited, new Promise<'timeout'>((resolve) => (timer = setTimeout(resolve, 10_000, 'timeout')))]);
  clearTimeout(timer);
  assert.notEqual(ended, 'timeout', 'the example did not end within 10 s of SIGTERM: something stays open');
  assert.deepEqual(ended, { code: 0, signal: null }, stderr);
  for (const pid of pids) assert.throws(() => process.kill(pid, 0), `worker ${pid} is still running after the primary ended`);
  assert.equal(stderr, '');
});
