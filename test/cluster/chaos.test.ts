// Chaos (issue 14, "Outages"): three gateway processes share a pool through a private redis-server,
// under load, and that redis-server is SIGKILLed and started again, empty or with its data.
//   - Every request is answered while Redis is away, and none waits on it (each request's latency is
//     recorded; the bound is generous, the p99s before, during and after are reported).
//   - Changes made during the outage apply at once where they were made, and reach every gateway
//     within 1 s of the gateways reconnecting; they win over what Redis kept from before the outage.
//   - Nothing stale comes back: a server added before the outage and removed during it stays
//     removed, a weight set before and reset during stays reset, in the pools, in the traffic, and
//     for a gateway that starts after the outage.
// A third test freezes Redis (SIGSTOP: connections stay open, commands time out) instead of killing
// it: no request waits for the command timeout, and the changes made meanwhile reach everyone within
// 1 s of it answering again (the pushes that timed out are tried again), without any reconnection.
// Needs redis-server (skipped without it, unless REQUIRE_REDIS=1). Everything started is killed in
// t.after; the data directory is a temporary one, removed at the end.
import assert from 'node:assert/strict';
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { createClient } from '@redis/client';
import { deadPort, type Upstream, upstream, until } from '../helpers.ts';
import { redisAvailability } from '../redis.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/chaos-gateway.ts', import.meta.url));
/**
 * No request may take this long. A request that waited on Redis would wait for its reconnection
 * (seconds: the outage lasts 1.5 s and more) or, Redis frozen, for the 1 s command timeout; the
 * margin below that is for a busy machine (the p99s are reported, not asserted).
 */
const SLOWEST_MS = 900;
/** The issue's target: every instance in step within 1 s of reconnecting. */
const CONVERGE_MS = 1000;

const redis = redisAvailability();

// ---- a private redis-server with a data directory ------------------------------------------------

interface ChaosRedis {
  url: string;
  /** Starts redis-server on the same port, loading the directory's dump when there is one. */
  start(): Promise<void>;
  /** SIGKILL, and waits for the process to be gone. */
  kill(): Promise<void>;
  /** SIGSTOP: connections stay open, nothing is answered. */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
  /** SAVE: writes the dump the next start loads. */
  save(): Promise<void>;
  /** Whether the last start loaded a dump (from its log). */
  loadedFromDisk(): boolean;
}

async function chaosRedis(t: TestContext): Promise<ChaosRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-chaos-'));
  const port = await deadPort();
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let log = '';
  const kill = async (): Promise<void> => {
    const c = child;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGKILL');
    await exited;
  };
  t.after(async () => {
    child?.kill('SIGCONT');
    await kill();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    url,
    async start() {
      log = join(dir, `redis-${Date.now()}.log`);
      const args = [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
        '--dbfilename',
        'dump.rdb',
        '--logfile',
        log,
      ];
      child = spawn('redis-server', args, { stdio: 'ignore' });
      // It listens before it has loaded its dump: ready is what its log says.
      await until(() => existsSync(log) && /Ready to accept connections/.test(readFileSync(log, 'utf8')), 5000, `redis-server ready on port ${port}`, 20);
    },
    kill,
    freeze: () => child?.kill('SIGSTOP'),
    thaw: () => child?.kill('SIGCONT'),
    async save() {
      const client = createClient({ url, disableOfflineQueue: true });
      client.on('error', () => {});
      await client.connect();
      try {
        await client.sendCommand(['SAVE']);
      } finally {
        client.destroy();
      }
    },
    loadedFromDisk: () => /DB loaded from disk/.test(readFileSync(log, 'utf8')),
  };
}

// ---- gateway processes ---------------------------------------------------------------------------

interface Reply {
  ok: boolean;
  view: string;
  error?: string;
}

interface Gateway {
  name: string;
  url: string;
  child: ChildProcess;
  /** Every view it reported, with its time (the first is the one it started with). */
  views: Array<{ view: string; t: number }>;
  /** Every connection change it reported. */
  connections: Array<{ up: boolean; t: number }>;
  readonly view: string;
  readonly connected: boolean;
  call(command: { op: 'add' | 'update' | 'remove'; server: string; changes?: object; options?: object }): Promise<Reply>;
}

async function startGateway(t: TestContext, name: string, env: Record<string, string>): Promise<Gateway> {
  const child = fork(FIXTURE, [], { env: { ...process.env, ...env, INSTANCE: name }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const views: Gateway['views'] = [];
  const connections: Gateway['connections'] = [];
  const replies = new Map<number, (reply: Reply) => void>();
  let connected = false;
  let next = 0;
  const ready = new Promise<number>((resolve, reject) => {
    child.once('exit', (code, signal) => reject(new Error(`gateway ${name} exited (${signal ?? code}) before it was ready`)));
    child.on('message', (m: { type: string; t: number; port?: number; view?: string; up?: boolean; connected?: boolean; id?: number } & Reply) => {
      if (m.type === 'ready') {
        connected = m.connected === true;
        views.push({ view: m.view as string, t: m.t });
        resolve(m.port as number);
      } else if (m.type === 'view') views.push({ view: m.view, t: m.t });
      else if (m.type === 'connection') {
        connected = m.up === true;
        connections.push({ up: connected, t: m.t });
      } else if (m.type === 'reply') replies.get(m.id as number)?.(m);
    });
  });
  const timeout = sleep(60_000, undefined, { ref: false }).then(() => {
    throw new Error(`gateway ${name} not ready within 60 s`);
  });
  const port = await Promise.race([ready, timeout]);
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    child,
    views,
    connections,
    get view() {
      return views.at(-1)?.view ?? '';
    },
    get connected() {
      return connected;
    },
    call(command) {
      const id = ++next;
      return new Promise<Reply>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`gateway ${name}: no reply to ${command.op} ${command.server}`)), 5000);
        replies.set(id, (reply) => {
          clearTimeout(timer);
          replies.delete(id);
          resolve(reply);
        });
        child.send({ id, ...command });
      });
    },
  };
}

// ---- load ----------------------------------------------------------------------------------------

interface Sample {
  gateway: string;
  /** When the request was sent (Date.now()). */
  at: number;
  ms: number;
  status: number;
  error?: string;
}

/** Loops of requests through every gateway (`perGateway` each, `pauseMs` between requests), keep-alive. */
function startLoad(gateways: Gateway[], perGateway = 2, pauseMs = 10): { samples: Sample[]; stop(): Promise<void> } {
  const samples: Sample[] = [];
  let running = true;
  const agents: Agent[] = [];
  const once = (gw: Gateway, agent: Agent): Promise<void> =>
    new Promise((resolve) => {
      const at = Date.now();
      const start = performance.now();
      const done = (status: number, error?: string): void => {
        samples.push({ gateway: gw.name, at, ms: performance.now() - start, status, ...(error === undefined ? {} : { error }) });
        resolve();
      };
      const req = request(`${gw.url}/chaos`, { agent }, (res) => {
        res.resume();
        res.on('end', () => done(res.statusCode ?? 0));
        res.on('error', (err) => done(0, err.message));
      });
      req.setTimeout(5000, () => req.destroy(new Error('no answer within 5 s')));
      req.on('error', (err) => done(0, err.message));
      req.end();
    });
  const loops = gateways.flatMap((gw) => {
    const agent = new Agent({ keepAlive: true, maxSockets: perGateway });
    agents.push(agent);
    return Array.from({ length: perGateway }, async () => {
      while (running) {
        await once(gw, agent);
        await sleep(pauseMs);
      }
    });
  });
  return {
    samples,
    async stop() {
      running = false;
      await Promise.all(loops);
      for (const agent of agents) agent.destroy();
    },
  };
}

/** {@link until}, failing with what every gateway shows at the end. */
async function inStep(gws: Gateway[], cond: () => boolean, ms: number, what: string): Promise<void> {
  try {
    await until(cond, ms, what);
  } catch (err) {
    const now = gws.map((g) => `${g.name} ${g.connected ? 'connected' : 'disconnected'} at "${g.view}"`).join('; ');
    throw new Error(`${(err as Error).message} (now: ${now})`);
  }
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

// ---- the scenario --------------------------------------------------------------------------------

const START = 'a:w1 b:w1 c:w1';
/** Before the outage, gateway 0 adds d and sets b's weight to 5. */
const BEFORE = 'a:w1 b:w5 c:w1 d:w1';
/** During it, gateway 1 removes d and sets b's weight back to 1 (undoing both); gateway 2 marks c down. */
const FINAL = 'a:w1 b:w1 c:w1:down';

async function outage(t: TestContext, mode: 'empty' | 'data' | 'frozen'): Promise<void> {
  const keepData = mode === 'data';
  const r = await chaosRedis(t);
  await r.start();
  const ups: Record<string, Upstream> = {};
  for (const name of ['a', 'b', 'c', 'd']) ups[name] = await upstream(t, name);
  const url = (name: string): string => (ups[name] as Upstream).url;
  const env = {
    REDIS_URL: r.url,
    NAMESPACE: `chaos-${randomUUID().slice(0, 8)}`,
    SERVERS: JSON.stringify(['a', 'b', 'c'].map((id) => ({ id, url: url(id) }))),
  };
  const gws = await Promise.all(['g0', 'g1', 'g2'].map((name) => startGateway(t, name, env)));
  const [g0, g1, g2] = gws as [Gateway, Gateway, Gateway];
  await until(() => gws.every((g) => g.connected), 5000, 'every gateway connected to Redis');
  assert.deepEqual(
    gws.map((g) => g.view),
    [START, START, START],
  );

  const load = startLoad(gws);
  t.after(() => load.stop());
  const loadStart = Date.now();

  // Before the outage: changes on g0 reach everyone. A history of changes first, as a cluster
  // that has run for a while has: the versions Redis handed out are well above the few the outage's
  // changes will take after a restart empty.
  for (const weight of [2, 3, 4, 2, 3, 4, 2, 3, 4, 5]) assert.equal((await g0.call({ op: 'update', server: 'b', changes: { weight } })).ok, true);
  assert.equal((await g0.call({ op: 'add', server: 'd', options: { id: 'd', url: url('d') } })).ok, true);
  await until(() => gws.every((g) => g.view === BEFORE), 3000, `every gateway at "${BEFORE}"`);
  await sleep(1500);
  if (keepData) await r.save();

  // Redis killed (or frozen) under load.
  const killAt = Date.now();
  if (mode === 'frozen') r.freeze();
  else {
    await r.kill();
    await until(() => gws.every((g) => !g.connected), 3000, 'every gateway noticing the outage');
  }
  // Changes during the outage: applied at once where they are made.
  const removed = await g1.call({ op: 'remove', server: 'd' });
  const reset = await g1.call({ op: 'update', server: 'b', changes: { weight: 1 } });
  const down = await g2.call({ op: 'update', server: 'c', changes: { down: true } });
  assert.deepEqual([removed.ok, reset.ok, down.ok], [true, true, true], `${removed.error ?? ''} ${reset.error ?? ''} ${down.error ?? ''}`);
  assert.equal(reset.view, 'a:w1 b:w1 c:w1', 'g1 applies its changes at once');
  assert.equal(down.view, 'a:w1 b:w5 c:w1:down d:w1', 'g2 applies its change at once');
  const changedAt = Date.now();
  await sleep(1500);
  assert.equal(g0.view, BEFORE, 'without Redis, g0 carries on with what it knew');
  if (mode !== 'frozen')
    assert.ok(
      gws.every((g) => !g.connected),
      'Redis still away',
    );

  // Redis back: empty, or with the dump saved before the outage (or thawed).
  const restartAt = Date.now();
  if (mode === 'frozen') r.thaw();
  else {
    await r.start();
    assert.equal(r.loadedFromDisk(), keepData, keepData ? 'redis-server loaded its dump' : 'redis-server started empty');
  }
  const back = (g: Gateway): number | undefined => (mode === 'frozen' ? restartAt : g.connections.find((c) => c.up && c.t >= restartAt)?.t);
  const hits = (name: string): number => (ups[name] as Upstream).seen.length;

  // Every gateway in step again, traffic following, nothing stale anywhere.
  await inStep(gws, () => gws.every((g) => back(g) !== undefined && g.view === FINAL), 10_000, `every gateway reconnected and at "${FINAL}"`);
  const reconnected = gws.map((g) => back(g) as number);
  const converged = gws.map((g) => (g.views.find((v) => v.view === FINAL && v.t >= restartAt) as { t: number }).t);
  const lastReconnect = Math.max(...reconnected);
  const convergence = Math.max(...converged) - lastReconnect;
  const after = mode === 'frozen' ? 'the thaw (no reconnection)' : 'the last reconnection';
  t.diagnostic(
    `${mode === 'frozen' ? '' : `reconnected ${reconnected.map((x) => x - restartAt).join(', ')} ms after the restart; `}in step ${convergence} ms after ${after} ` +
      `(per gateway: ${converged.map((x) => x - lastReconnect).join(', ')} ms)`,
  );
  assert.ok(convergence <= CONVERGE_MS, `every gateway in step within ${CONVERGE_MS} ms of reconnecting, took ${convergence} ms`);

  // Traffic follows: once in step (and the requests then in flight answered), no gateway sends
  // anything to c (down) or d (removed).
  await sleep(300);
  const [a0, b0, c0, d0] = [hits('a'), hits('b'), hits('c'), hits('d')];
  await sleep(800);
  assert.deepEqual([hits('c') - c0, hits('d') - d0], [0, 0], 'c (down) and d (removed) receive nothing once the gateways are in step');
  assert.ok(hits('a') > a0 && hits('b') > b0, 'a and b still serve');
  await load.stop();

  // A gateway that starts now comes back with the outage's changes, not the static list or a stale record.
  const late = await startGateway(t, 'late', env);
  await inStep([late], () => late.connected && late.view === FINAL, 3000, `the late gateway at "${FINAL}"`);

  // Nothing stale comes back: once a gateway shows the final list it never leaves it, and the
  // gateways that undid or changed something during the outage never show the older state again.
  for (const g of gws) {
    const first = g.views.findIndex((v) => v.view === FINAL);
    assert.deepEqual(
      g.views.slice(first).map((v) => v.view),
      [FINAL],
      `${g.name} after it was in step: ${JSON.stringify(g.views)}`,
    );
  }
  const since = (g: Gateway): string[] => g.views.filter((v) => v.t >= changedAt).map((v) => v.view);
  assert.ok(!since(g1).some((v) => v.includes('d:') || v.includes('b:w5')), `g1 never shows d or b:w5 again: ${since(g1).join(' | ')}`);
  assert.ok(!since(g2).some((v) => !v.includes('c:w1:down')), `g2 never shows c up again: ${since(g2).join(' | ')}`);
  assert.ok(!late.views.some((v) => v.view.includes('d:') || v.view.includes('b:w5')), `the late gateway never shows d or b:w5: ${JSON.stringify(late.views)}`);
  await load.stop();

  // No request failed, none waited on Redis.
  const failed = load.samples.filter((s) => s.status !== 200);
  assert.equal(failed.length, 0, `requests not answered 200: ${JSON.stringify(failed.slice(0, 5))}`);
  const phase = (from: number, to: number): number[] => load.samples.filter((s) => s.at >= from && s.at < to).map((s) => s.ms);
  const phases = {
    before: phase(loadStart + 500, killAt),
    outage: phase(killAt, restartAt),
    back: phase(restartAt, Number.POSITIVE_INFINITY),
  };
  const figures = Object.entries(phases).map(
    ([name, ms]) =>
      `${name}: ${ms.length} requests, p50 ${percentile(ms, 50).toFixed(2)} ms, p99 ${percentile(ms, 99).toFixed(2)} ms, max ${Math.max(...ms).toFixed(1)} ms`,
  );
  t.diagnostic(figures.join('; '));
  t.diagnostic(`p99 outage / before: ${(percentile(phases.outage, 99) / percentile(phases.before, 99)).toFixed(2)}x`);
  assert.ok(phases.outage.length > 50, `load ran during the outage (${phases.outage.length} requests)`);
  const slowest = load.samples.reduce((a, s) => (s.ms > a.ms ? s : a));
  const when = slowest.at < killAt ? 'before the outage' : slowest.at < restartAt ? 'during the outage' : 'after it';
  assert.ok(slowest.ms < SLOWEST_MS, `no request waits on Redis: the slowest took ${slowest.ms.toFixed(1)} ms, ${when} (${JSON.stringify(slowest)})`);
}

test('Redis SIGKILLed under load and restarted empty: no request fails or waits, the outage changes reach everyone within 1 s, nothing stale comes back', {
  timeout: 40_000,
}, async (t) => {
  const skip = redis.private();
  if (skip) return t.skip(skip);
  await outage(t, 'empty');
});

test('Redis SIGKILLed under load and restarted with its data: the changes made during the outage win over the records it kept', {
  timeout: 40_000,
}, async (t) => {
  const skip = redis.private();
  if (skip) return t.skip(skip);
  await outage(t, 'data');
});

test('Redis frozen (SIGSTOP) under load and thawed: no request fails or waits for the command timeout, the changes made meanwhile reach everyone', {
  timeout: 40_000,
}, async (t) => {
  const skip = redis.private();
  if (skip) return t.skip(skip);
  await outage(t, 'frozen');
});
