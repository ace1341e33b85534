// limitRequests() and limitConnections() with `sync`: one limit across instances. On the in-memory
// engine (handles on one hub), then with two real gateway processes (test/limit/fixtures/gateway.ts)
// on a private redis-server: together they let through what one nginx would (10r/s over 5 s), each
// falls back to its own limit while that redis-server is killed, and they share the limit again once
// it is back; and limitConnections() on a private redis-server.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Agent, request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chain, InvalidOptionError, limitConnections, limitRequests, SyncHandle, sync } from '../../src/index.ts';
import { syncInternals } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { h2Connect, h2Gateway } from '../http2/support.ts';
import { fetchText, gateway, until } from '../helpers.ts';
import { privateRedis, redisAvailability } from '../redis.ts';
import { holding, limited, ManualClock, statuses } from './support.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/gateway.ts', import.meta.url));

function handles(t: TestContext, hub: MemoryHub, n: number): SyncHandle[] {
  return Array.from({ length: n }, (_, i) => {
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 't', instance: `i${i}` });
    t.after(() => handle.close());
    return handle;
  });
}

test('two instances on one engine enforce one limit', async (t) => {
  const hub = new MemoryHub();
  const [a, b] = handles(t, hub, 2);
  // 1r/m: nothing drains during the test.
  const limitA = limitRequests({ key: '$http_x_user', rate: '1r/m', burst: 2, nodelay: true, name: 'api', sync: a! });
  const limitB = limitRequests({ key: '$http_x_user', rate: '1r/m', burst: 2, nodelay: true, name: 'api', sync: b! });
  const ga = await limited(t, limitA);
  const gb = await limited(t, limitB);
  const u1 = { 'x-user': 'u1' };
  const seen: number[] = [];
  for (let i = 0; i < 3; i++) {
    seen.push((await fetchText(ga.url, { headers: u1 })).status);
    seen.push((await fetchText(gb.url, { headers: u1 })).status);
  }
  assert.deepEqual(seen, [200, 200, 200, 503, 503, 503], 'burst 2: three in all, not three each');
  assert.deepEqual(await statuses(ga.url, 1, { 'x-user': 'u2' }), [200], 'another key has its own bucket');
  assert.equal(limitA.stats().api?.passed, 3);
  assert.equal(limitB.stats().api?.rejected, 2);
});

test('the engine lost: each instance limits on its own at once, with an event; back: shared again', async (t) => {
  const hub = new MemoryHub();
  const [a, b] = handles(t, hub, 2);
  const clock = new ManualClock();
  const events: string[] = [];
  const make = (handle: SyncHandle, name: string) => {
    const limit = limitRequests({ key: 'all', rate: '1r/m', name: 'api', sync: handle, clock });
    limit.on('fallback', (err) => events.push(`${name} fallback ${err.message}`));
    limit.on('shared', () => events.push(`${name} shared`));
    return limit;
  };
  const ga = await limited(t, make(a!, 'a'));
  const gb = await limited(t, make(b!, 'b'));
  assert.deepEqual([...(await statuses(ga.url, 1)), ...(await statuses(gb.url, 1))], [200, 503]);
  hub.down();
  // Each instance's own zone: its first request passes, the next is limited (never no limit).
  assert.deepEqual([...(await statuses(ga.url, 2)), ...(await statuses(gb.url, 2))], [200, 503, 200, 503]);
  assert.deepEqual(events, ['a fallback switchyard limit: the sync engine is disconnected', 'b fallback switchyard limit: the sync engine is disconnected']);
  hub.up();
  // Back on the shared bucket, which kept its state: rejected as before the outage.
  assert.deepEqual([...(await statuses(ga.url, 1)), ...(await statuses(gb.url, 1))], [503, 503]);
  assert.deepEqual(events.slice(2), ['a shared', 'b shared']);
});

test('a call that fails while the engine seems up: this request and the next second local, then one request tries again', async (t) => {
  const hub = new MemoryHub();
  const [a] = handles(t, hub, 1);
  const clock = new ManualClock();
  const limit = limitRequests({ key: 'all', rate: '1r/m', name: 'api', sync: a!, clock });
  const events: string[] = [];
  limit.on('fallback', () => events.push('fallback'));
  limit.on('shared', () => events.push('shared'));
  const gw = await limited(t, limit);
  // A transport whose calls fail while it says it is connected (a frozen Redis answering nothing).
  const internals = (await import('../../src/sync/index.ts')).syncInternals(a!);
  const transport = internals.transport as { buckets: (...args: never[]) => Promise<number[]> };
  const real = transport.buckets.bind(transport);
  transport.buckets = async () => {
    throw new Error('command timed out');
  };
  assert.deepEqual(await statuses(gw.url, 2), [200, 503], 'the local zone, at once');
  assert.deepEqual(events, ['fallback']);
  transport.buckets = real as typeof transport.buckets;
  assert.deepEqual(await statuses(gw.url, 1), [503], 'still local within the second');
  clock.advance(1000);
  assert.deepEqual(await statuses(gw.url, 1), [200], 'the shared bucket again: it had seen nothing');
  assert.deepEqual(events, ['fallback', 'shared']);
});

test('limitConnections with sync: the instances count their requests in progress together; each on its own while the engine is lost', async (t) => {
  const hub = new MemoryHub();
  const [a, b] = handles(t, hub, 2);
  const events: string[] = [];
  const make = (handle: SyncHandle, name: string) => {
    const conns = limitConnections({ key: 'all', max: 1, name: 'conn', sync: handle });
    conns.on('fallback', () => events.push(`${name} fallback`));
    conns.on('shared', () => events.push(`${name} shared`));
    return conns;
  };
  const ca = make(a!, 'a');
  const cb = make(b!, 'b');
  const ga = await holding(t, () => ca);
  const gb = await holding(t, () => cb);
  const slow = fetchText(`${ga.url}/w`);
  await until(() => ga.held.length === 1);
  assert.equal((await fetchText(`${gb.url}/`)).status, 503, 'b: the request a holds counts');
  assert.equal((await fetchText(`${ga.url}/`)).status, 503, 'a: its own too');
  ga.release();
  await slow;
  await until(async () => (await fetchText(`${gb.url}/`)).status === 200, 5000, 'b passes once a let go');

  // The engine lost: each instance counts its own requests, the one a holds included.
  const slowA = fetchText(`${ga.url}/w`);
  await until(() => ga.held.length === 1);
  hub.down();
  assert.equal((await fetchText(`${ga.url}/`)).status, 503, 'a: still holds one');
  const slowB = fetchText(`${gb.url}/w`);
  await until(() => gb.held.length === 1, 5000, 'b passes on its own count');
  assert.deepEqual(events.sort(), ['a fallback', 'b fallback']);
  // Back: a request on b counts a's request (kept by the engine), and b's own once it is written again.
  hub.up();
  assert.equal((await fetchText(`${gb.url}/`)).status, 503);
  await until(() => events.includes('b shared'), 5000, 'b shared again');
  ga.release();
  gb.release();
  await Promise.all([slowA, slowB]);
  await until(async () => (await fetchText(`${ga.url}/`)).status === 200, 5000, 'every count let go, on the engine too');
  assert.equal((await fetchText(`${gb.url}/`)).status, 200);
});

test('a client that goes away while the engine decides holds nothing (HTTP/1.1 and HTTP/2 streams)', async (t) => {
  const hub = new MemoryHub();
  const [a] = handles(t, hub, 1);
  const conns = limitConnections({ key: 'all', max: 5, name: 'conn', sync: a! });
  const limit = limitRequests({ key: 'all', rate: '1r/m', burst: 5, name: 'req', sync: a! });
  // The engine answers only when the test says so.
  const transport = syncInternals(a!).transport as unknown as Record<'gauges' | 'buckets', (...args: never[]) => Promise<number[]>>;
  const gates: Array<() => void> = [];
  for (const op of ['gauges', 'buckets'] as const) {
    const real = transport[op]!.bind(transport);
    // The decisions wait (gauges' 'add', buckets); what a request does once it ends goes through.
    transport[op] = (...args: never[]) =>
      op === 'gauges' && (args as unknown[])[3] !== 'add' ? real(...args) : new Promise<void>((resolve) => gates.push(resolve)).then(() => real(...args));
  }
  let handled = 0;
  const listener = chain(conns, limit, (_req, res) => {
    handled++;
    res.end('ok');
  });
  const h1 = await gateway(t, listener);
  const h2 = await h2Gateway(t, 'h2c', listener);
  const session = h2Connect(t, h2.url);
  // HTTP/1.1: the client goes while limitConnections() waits for the engine.
  const req = request(h1.url, { agent: false });
  req.on('error', () => undefined);
  req.end();
  await until(() => gates.length === 1, 5000, 'the first call to the engine');
  req.destroy();
  await sleep(50);
  // HTTP/2: a stream cancelled while limitConnections() waits.
  const stream = session.request({ ':path': '/' });
  stream.on('error', () => undefined);
  await until(() => gates.length === 2, 5000, 'the second call');
  stream.close();
  await sleep(50);
  for (const open of gates.splice(0)) open();
  await until(() => conns.active() === 0 && gates.length === 0, 5000, 'nothing held by the gone clients');
  // A request that passes limitConnections and waits for limitRequests' decision, then goes: nothing held either.
  const second = request(h1.url, { agent: false });
  second.on('error', () => undefined);
  second.end();
  await until(() => gates.length === 1, 5000, 'limitConnections asks');
  gates.shift()?.();
  await until(() => gates.length === 1, 5000, 'limitRequests asks');
  second.destroy();
  await sleep(50);
  gates.shift()?.();
  await until(() => conns.active() === 0 && limit.waiting === 0, 5000, 'the count let go');
  assert.equal(handled <= 1, true);
});

test('with sync, a limit needs its name, and sync is a handle', () => {
  const handle = new SyncHandle({ transport: new MemoryHub().connect(), owned: false, namespace: 't' });
  const bad: Array<[unknown, string]> = [
    [{ key: 'all', rate: '1r/s', sync: handle }, 'name'],
    [
      {
        limits: [
          { key: 'a', rate: '1r/s', name: 'a' },
          { key: 'b', rate: '1r/s' },
        ],
        sync: handle,
      },
      'limits[1].name',
    ],
    [{ key: 'all', rate: '1r/s', name: 'a', sync: { redis: 'redis://127.0.0.1' } }, 'sync'],
  ];
  assert.throws(
    () => limitConnections({ key: 'all', max: 1, sync: handle }),
    (e: unknown) => e instanceof InvalidOptionError && e.option === 'name',
  );
  for (const [options, option] of bad)
    assert.throws(
      () => limitRequests(options as never),
      (e: unknown) => e instanceof InvalidOptionError && e.option === option,
      option,
    );
  void handle.close();
});

// ---- two gateway processes on a private redis-server --------------------------------------------

interface Gateway {
  port: number;
  child: ChildProcess;
  messages: Array<{ type: string }>;
}

async function startGateway(t: TestContext, env: Record<string, string>): Promise<Gateway> {
  const child = fork(FIXTURE, [], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const messages: Gateway['messages'] = [];
  t.after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(timer);
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.on('message', (m: { type: string; port?: number }) => {
      messages.push(m);
      if (m.type === 'ready') resolve(m.port!);
    });
    child.once('exit', (code) => reject(new Error(`gateway exited with ${code}`)));
  });
  return { port, child, messages };
}

/** Requests `port` in a loop for `ms` (one every 2 ms or so, on kept-alive connections); the count of each status. */
async function hammer(port: number, ms: number): Promise<{ counts: Record<number, number>; elapsed: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const counts: Record<number, number> = {};
  const start = performance.now();
  while (performance.now() - start < ms) {
    const status = await new Promise<number>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', () => resolve(-1));
      req.end();
    });
    counts[status] = (counts[status] ?? 0) + 1;
    await sleep(2);
  }
  const elapsed = performance.now() - start;
  agent.destroy();
  return { counts, elapsed };
}

/** The most nginx lets through at `rate` r/s (burst 0) in `ms`: the first at once, then one each 1/rate, and one for the edges. */
const nginxFigure = (rate: number, ms: number): number => 1 + Math.floor((rate * ms) / 1000) + 1;

const redis = redisAvailability();

test('two gateway processes on one Redis enforce one 10r/s limit; each falls back to its own while Redis is killed; shared again after', async (t) => {
  const skip = redis.private();
  if (skip !== false) return t.skip(skip);
  const server = await privateRedis(t);
  const env = { REDIS_URL: server.url, NAMESPACE: `limit-${randomUUID()}`, RATE: '10r/s' };
  const [a, b] = await Promise.all([startGateway(t, env), startGateway(t, env)]);

  const shared = await Promise.all([hammer(a.port, 5000), hammer(b.port, 5000)]);
  const passed = (r: { counts: Record<number, number> }): number => r.counts[200] ?? 0;
  const total = passed(shared[0]) + passed(shared[1]);
  const figure = nginxFigure(10, Math.max(shared[0].elapsed, shared[1].elapsed));
  t.diagnostic(`shared: ${JSON.stringify(shared.map((r) => r.counts))}, ${total} passed, nginx's figure ${figure}`);
  assert.ok(total <= figure, `${total} passed together over 5 s, nginx lets through at most ${figure}`);
  assert.ok(total >= 40, `${total} passed: the limit lets 10 a second through`);
  for (const r of shared) assert.deepEqual(Object.keys(r.counts).sort(), ['200', '503'], 'only 200 and 503');

  await server.stop();
  await until(() => [a, b].every((g) => g.messages.some((m) => m.type === 'fallback')) || false, 5000, 'both gateways fall back').catch(async () => {
    // A gateway notices a lost Redis on its next request at the latest.
    await Promise.all([fetchText(`http://127.0.0.1:${a.port}/`), fetchText(`http://127.0.0.1:${b.port}/`)]);
    await until(() => [a, b].every((g) => g.messages.some((m) => m.type === 'fallback')), 5000, 'both gateways fall back');
  });
  const alone = await Promise.all([hammer(a.port, 2000), hammer(b.port, 2000)]);
  t.diagnostic(`Redis down: ${JSON.stringify(alone.map((r) => r.counts))}`);
  for (const r of alone) {
    assert.deepEqual(Object.keys(r.counts).sort(), ['200', '503'], 'only 200 and 503 while Redis is down: never an error, never no limit');
    assert.ok(passed(r) <= nginxFigure(10, r.elapsed) + 1, `${passed(r)} passed on one gateway alone`);
    assert.ok(passed(r) >= 12, `${passed(r)} passed: each gateway has its own 10r/s`);
  }

  await server.start();
  await until(
    async () => {
      await Promise.all([fetchText(`http://127.0.0.1:${a.port}/`), fetchText(`http://127.0.0.1:${b.port}/`)]);
      return [a, b].every((g) => g.messages.some((m) => m.type === 'shared'));
    },
    10_000,
    'both gateways share the limit again',
    100,
  );
  const again = await Promise.all([hammer(a.port, 2000), hammer(b.port, 2000)]);
  const together = passed(again[0]) + passed(again[1]);
  t.diagnostic(`Redis back: ${JSON.stringify(again.map((r) => r.counts))}`);
  assert.ok(together <= nginxFigure(10, Math.max(again[0].elapsed, again[1].elapsed)) + 1, `${together} passed together once Redis is back`);
});

test('limitConnections with sync on a real Redis: two instances count together; each instance’s share is a hash field that lives 30 s unless written again', async (t) => {
  const skip = redis.private();
  if (skip !== false) return t.skip(skip);
  const server = await privateRedis(t);
  const namespace = `limit-conn-${randomUUID()}`;
  const [a, b] = [sync({ redis: server.url, namespace }), sync({ redis: server.url, namespace })];
  t.after(() => Promise.all([a.close(), b.close()]));
  await Promise.all([a.ready, b.ready]);
  const ca = limitConnections({ key: '$remote_addr', max: 2, name: 'conn', sync: a });
  const cb = limitConnections({ key: '$remote_addr', max: 2, name: 'conn', sync: b });
  const ga = await holding(t, () => ca);
  const gb = await holding(t, () => cb);
  const held = [fetchText(`${ga.url}/w`), fetchText(`${gb.url}/w`)];
  await until(() => ga.held.length === 1 && gb.held.length === 1);
  assert.deepEqual([(await fetchText(`${ga.url}/`)).status, (await fetchText(`${gb.url}/`)).status], [503, 503], 'two in progress over both: full');
  gb.release();
  await held[1];
  await until(async () => (await fetchText(`${ga.url}/`)).status === 200, 5000, 'a passes once b let go');
  // What Redis holds: one share per instance, "count expiry", under the zone's hash slot.
  const admin = await server.admin();
  const keys: string[] = [];
  for await (const k of admin.scanIterator({ MATCH: `${namespace}:limit:*`, COUNT: 100 })) keys.push(...(Array.isArray(k) ? k : [k]));
  assert.equal(keys.length, 1, keys.join(', '));
  const shares = (await admin.sendCommand(['HGETALL', keys[0]!])) as string[];
  assert.equal(shares.length, 2, 'only a holds one now');
  assert.match(shares[1]!, /^1 \d+$/);
  const ttl = Number(await admin.sendCommand(['PTTL', keys[0]!]));
  assert.ok(ttl > 20_000 && ttl <= 30_000, `the key lives 30 s after its last write (${ttl} ms left)`);
  ga.release();
  await held[0];
});

test('a frozen Redis (connections open, nothing answered): one request waits the command timeout, the next go local without asking; shared again once it answers', async (t) => {
  const skip = redis.private();
  if (skip !== false) return t.skip(skip);
  const server = await privateRedis(t);
  const handle = sync({ redis: server.url, namespace: `limit-freeze-${randomUUID()}`, timeout: 200 });
  t.after(async () => {
    server.resume();
    await handle.close();
  });
  await handle.ready;
  const limit = limitRequests({ key: 'all', rate: '1000r/s', burst: 100, nodelay: true, name: 'api', sync: handle });
  const events: string[] = [];
  limit.on('fallback', (err) => events.push(`fallback: ${err.message}`));
  limit.on('shared', () => events.push('shared'));
  const gw = await limited(t, limit);
  assert.equal((await fetchText(gw.url)).status, 200);
  server.pause();
  const timed = async (): Promise<[number, number]> => {
    const start = performance.now();
    const r = await fetchText(gw.url);
    return [r.status, performance.now() - start];
  };
  const transport = syncInternals(handle).transport as unknown as { buckets: (...args: never[]) => Promise<number[]> };
  const real = transport.buckets.bind(transport);
  let calls = 0;
  transport.buckets = (...args: never[]) => {
    calls++;
    return real(...args);
  };
  const [first, firstMs] = await timed();
  assert.equal(first, 200, 'answered from the local zone');
  assert.ok(firstMs >= 150, `the first request waited for the command timeout (${firstMs.toFixed(0)} ms)`);
  assert.equal(calls, 1);
  assert.equal((await fetchText(gw.url)).status, 200);
  assert.equal(calls, 1, 'the next request did not ask Redis: local at once');
  assert.equal(events.length, 1);
  assert.match(events[0]!, /^fallback: /);
  server.resume();
  await until(
    async () => {
      await fetchText(gw.url);
      return events.includes('shared');
    },
    10_000,
    'the limit shared again',
    100,
  );
});
