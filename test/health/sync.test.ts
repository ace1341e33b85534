// healthCheck() shared across instances (issue 14) over the in-memory engine: several pools of one
// name, each an instance with its own sync handle, probing real upstreams on port 0. One manual
// clock drives the checks, the leases and the engine, so intervals and takeovers run without
// sleeping and every count is exact.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { TimerClock } from '../../src/core/clock.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { type HealthCheck, type HealthCheckOptions, healthCheck, type ProbeResult } from '../../src/health/index.ts';
import { leaseTtl } from '../../src/health/shared.ts';
import type { UpstreamPool } from '../../src/pool/index.ts';
import { SyncHandle } from '../../src/sync/index.ts';
import { MemoryHub, type MemoryTransport } from '../../src/sync/transport.ts';
import { poolOf } from '../helpers.ts';
import { fail, ok, type Switchable, switchable } from './support.ts';

const INTERVAL = 1000;
/** The probes' timeout: its timers tell the clock which probes are still out. */
const PROBE_TIMEOUT = 4999;

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One clock for the checks, the leases and the engine: time moves only on `advance`, which fires
 * the timers due in order and, after each, lets the engine's answers arrive and waits (in real
 * time, bounded) for the probes it started to end.
 */
class Clock implements TimerClock {
  t = 1_000_000;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; ms: number; fn: () => void }>();
  now = (): number => this.t;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.t + Math.max(0, ms), ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  get pending(): number {
    return this.#timers.size;
  }
  /** Probes under way: their timeout timers are still set. */
  #probing(): number {
    let n = 0;
    for (const timer of this.#timers.values()) if (timer.ms === PROBE_TIMEOUT) n++;
    return n;
  }
  async settle(): Promise<void> {
    for (let i = 0; i < 4; i++) await turn();
    const end = performance.now() + 3000;
    while (this.#probing() > 0) {
      if (performance.now() > end) throw new Error('a probe did not end within 3 s');
      await sleep(1);
    }
    for (let i = 0; i < 4; i++) await turn();
  }
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) if (entry[1].at <= target && (next === undefined || entry[1].at < next[1].at)) next = entry;
      if (next === undefined) break;
      this.#timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
      await this.settle();
    }
    this.t = target;
    await this.settle();
  }
}

interface Instance {
  name: string;
  transport: MemoryTransport;
  handle: SyncHandle;
  pool: UpstreamPool;
  hc: HealthCheck;
  /** The probes this instance ran itself. */
  own: ProbeResult[];
  /** The results other instances published, as this one heard them. */
  heard: ProbeResult[];
  events: string[];
}

interface Cluster {
  clock: Clock;
  hub: MemoryHub;
  a: Switchable;
  b: Switchable;
  instances: Instance[];
  /** Starts one more instance. */
  start(host?: string, options?: HealthCheckOptions): Instance;
  /** Probes that reached each upstream so far. */
  count(): { a: number; b: number };
}

async function cluster(t: TestContext, hosts: readonly string[], options: HealthCheckOptions = {}): Promise<Cluster> {
  const clock = new Clock();
  const hub = new MemoryHub(clock);
  const a = await switchable(t, ok);
  const b = await switchable(t, ok);
  const instances: Instance[] = [];
  const start = (host = 'h1', extra: HealthCheckOptions = options): Instance => {
    const name = `i${instances.length}`;
    const transport = hub.connect();
    const handle = new SyncHandle({ transport, owned: false, namespace: 't', instance: name, host, clock });
    const pool = poolOf(t, { a, b }, { name: 'api', sync: handle, now: clock.now });
    const hc = healthCheck(pool, { clock, interval: INTERVAL, timeout: PROBE_TIMEOUT, ...extra });
    const inst: Instance = { name, transport, handle, pool, hc, own: [], heard: [], events: [] };
    hc.on('probe', (r) => (r.from === undefined ? inst.own : inst.heard).push(r));
    hc.on('healthy', (id) => inst.events.push(`healthy ${id}`));
    hc.on('unhealthy', (id) => inst.events.push(`unhealthy ${id}`));
    t.after(async () => {
      hc.stop();
      await handle.close();
    });
    instances.push(inst);
    return inst;
  };
  for (const host of hosts) start(host);
  return { clock, hub, a, b, instances, start, count: () => ({ a: a.seen.length, b: b.seen.length }) };
}

/** Probes reaching each upstream in each of `n` intervals. */
async function perInterval(c: Cluster, n: number): Promise<Array<{ a: number; b: number }>> {
  const out: Array<{ a: number; b: number }> = [];
  for (let i = 0; i < n; i++) {
    const before = c.count();
    await c.clock.advance(INTERVAL);
    const after = c.count();
    out.push({ a: after.a - before.a, b: after.b - before.b });
  }
  return out;
}

const times = (n: number, per: { a: number; b: number }) => Array.from({ length: n }, () => per);
const state = (pool: UpstreamPool, id: string): string => pool.stats().servers.find((s) => s.id === id)!.state;
const checks = (pool: UpstreamPool, id: string) => pool.stats().servers.find((s) => s.id === id)!.healthChecks;
/** The instances that ran a probe of server `id` among the last `n` results they saw. */
const probers = (c: Cluster, id: string): string[] => c.instances.filter((i) => i.own.some((r) => r.id === id)).map((i) => i.name);

test('3 instances, 2 servers: exactly one probe per server per interval reaches the upstream; every instance sees the same state', async (t) => {
  const c = await cluster(t, ['h1', 'h1', 'h1']);
  await c.clock.advance(0);
  assert.deepEqual(c.count(), { a: 1, b: 1 }, 'one first probe per server, not three');
  assert.deepEqual(await perInterval(c, 8), times(8, { a: 1, b: 1 }));
  assert.equal(probers(c, 'a').length, 1, 'one prober for a');
  assert.equal(probers(c, 'b').length, 1, 'one prober for b');

  c.a.mode = fail;
  await c.clock.advance(INTERVAL);
  for (const i of c.instances) {
    assert.equal(state(i.pool, 'a'), 'unhealthy', `${i.name} took a out`);
    assert.equal(state(i.pool, 'b'), 'up', `${i.name} keeps b`);
    assert.deepEqual(i.events, ['unhealthy a'], `${i.name}'s events`);
  }
  c.a.mode = ok;
  await c.clock.advance(INTERVAL);
  for (const i of c.instances) {
    assert.equal(state(i.pool, 'a'), 'up', `${i.name} brought a back`);
    assert.deepEqual(i.events, ['unhealthy a', 'healthy a']);
  }
  // Each instance counts the probes it sent: summed over the instances (as the monitor does), every probe once.
  const sum = (id: string, field: 'checks' | 'fails'): number => c.instances.reduce((n, i) => n + checks(i.pool, id)[field], 0);
  assert.equal(sum('a', 'checks'), 11);
  assert.equal(sum('a', 'fails'), 1);
  assert.equal(sum('b', 'checks'), 11);
  assert.ok(c.instances.filter((i) => checks(i.pool, 'a').checks > 0).length === 1, 'only the prober of a counts probes of a');
  const heard = c.instances.filter((i) => i.heard.length > 0);
  assert.ok(heard.length >= 2, 'the others hear the results');
  for (const i of heard) assert.ok(i.heard.every((r) => r.from !== i.name && c.instances.some((o) => o.name === r.from)));
});

test('a prober that dies without giving its lease back is replaced within two intervals', async (t) => {
  const c = await cluster(t, ['h1', 'h1', 'h1']);
  await c.clock.advance(0);
  await perInterval(c, 2);
  const [dead] = probers(c, 'a');
  const victim = c.instances.find((i) => i.name === dead)!;
  // Its last probe was at the start of this interval; it dies just before the next one: its process
  // is gone (no probe, no renewal), and its lease stays in the engine until it expires.
  const arrivals: number[] = [];
  c.a.mode = () => {
    arrivals.push(c.clock.now());
    return ok;
  };
  const lastProbe = c.clock.now();
  await c.clock.advance(INTERVAL - 10);
  victim.transport.disconnect();
  victim.hc.stop();
  const death = c.clock.now();
  await c.clock.advance(2 * INTERVAL);
  assert.ok(arrivals.length >= 1, 'another instance probed a');
  const takeover = arrivals[0]! - death;
  t.diagnostic(
    `takeover: next probe of a ${takeover} ms after the prober died (${arrivals[0]! - lastProbe} ms after its last probe; TTL ${leaseTtl(INTERVAL)} ms)`,
  );
  assert.ok(arrivals[0]! - lastProbe <= 2 * INTERVAL, `the probes of a resumed ${arrivals[0]! - lastProbe} ms after the last one`);
  const heirs = c.instances.filter((i) => i !== victim && i.own.some((r) => r.id === 'a'));
  assert.equal(heirs.length, 1, 'one heir');
  // Back to one probe per interval, by the heir.
  assert.deepEqual(await perInterval(c, 4), times(4, { a: 1, b: 1 }));
});

test('stop() gives the leases back: another instance takes over at its next try, and nothing is left running', async (t) => {
  const c = await cluster(t, ['h1', 'h1']);
  await c.clock.advance(0);
  await perInterval(c, 1);
  const holder = c.instances.find((i) => i.own.length > 0)!;
  const other = c.instances.find((i) => i !== holder)!;
  holder.hc.stop();
  await c.clock.advance(leaseTtl(INTERVAL) / 3);
  // check() probes what this instance probes: the servers whose leases it holds.
  const before = c.count();
  await other.hc.check();
  assert.deepEqual(c.count(), { a: before.a + 1, b: before.b + 1 }, 'the other instance holds both leases within a lease try (TTL/3), not after the TTL');
  assert.deepEqual(await perInterval(c, 3), times(3, { a: 1, b: 1 }));
  other.hc.stop();
  await holder.handle.close();
  await other.handle.close();
  for (const i of c.instances) i.pool.close();
  await c.clock.settle();
  assert.equal(c.clock.pending, 0, 'no timer left on the clock (checks, leases, handles)');
});

test("scope 'each': every instance probes for itself, as without sync", async (t) => {
  const c = await cluster(t, ['h1', 'h1', 'h1'], { shared: 'each' });
  await c.clock.advance(0);
  assert.deepEqual(c.count(), { a: 3, b: 3 });
  assert.deepEqual(await perInterval(c, 3), times(3, { a: 3, b: 3 }));
  for (const i of c.instances) assert.equal(i.heard.length, 0, 'nothing is shared');
});

test("scope 'host' (default): one prober per host; 'cluster': one for all hosts", async (t) => {
  await t.test('host', async (t) => {
    const c = await cluster(t, ['h1', 'h1', 'h2', 'h2']);
    await c.clock.advance(0);
    assert.deepEqual(await perInterval(c, 4), times(4, { a: 2, b: 2 }));
    const byHost = (host: string) => c.instances.filter((_, k) => (k < 2 ? 'h1' : 'h2') === host);
    for (const host of ['h1', 'h2']) {
      const mine = byHost(host).map((i) => i.name);
      const ran = byHost(host).filter((i) => i.own.some((r) => r.id === 'a'));
      assert.equal(ran.length, 1, `one prober of a on ${host}`);
      for (const i of byHost(host))
        assert.ok(
          i.heard.every((r) => mine.includes(r.from!)),
          `${i.name} hears only its host's prober`,
        );
    }
  });
  await t.test('cluster', async (t) => {
    const c = await cluster(t, ['h1', 'h1', 'h2', 'h2'], { shared: 'cluster' });
    await c.clock.advance(0);
    assert.deepEqual(await perInterval(c, 4), times(4, { a: 1, b: 1 }));
  });
});

test('an outage of the engine: every instance probes for itself; back: one prober again', async (t) => {
  const c = await cluster(t, ['h1', 'h1', 'h1']);
  await c.clock.advance(0);
  assert.deepEqual(await perInterval(c, 2), times(2, { a: 1, b: 1 }));
  c.hub.down();
  const during = await perInterval(c, 3);
  assert.deepEqual(during.slice(1), times(2, { a: 3, b: 3 }), `every instance probes during the outage: ${JSON.stringify(during)}`);
  c.a.mode = fail;
  await c.clock.advance(INTERVAL);
  for (const i of c.instances) assert.equal(state(i.pool, 'a'), 'unhealthy', `${i.name} saw a fail by itself`);
  c.a.mode = ok;
  c.hub.up();
  await c.clock.advance(INTERVAL);
  assert.deepEqual(await perInterval(c, 3), times(3, { a: 1, b: 1 }), 'one prober per server again');
  for (const i of c.instances) assert.equal(state(i.pool, 'a'), 'up');
});

test('an instance that starts later takes the current health from the stored results, without a probe (mandatory checking cleared)', async (t) => {
  const c = await cluster(t, ['h1', 'h1'], { mandatory: true });
  c.a.mode = fail;
  await c.clock.advance(0);
  await perInterval(c, 1);
  for (const i of c.instances) assert.equal(state(i.pool, 'a'), 'unhealthy');
  const before = c.count();
  const late = c.start('h1');
  assert.equal(state(late.pool, 'a'), 'checking');
  assert.equal(state(late.pool, 'b'), 'checking');
  await c.clock.advance(0);
  assert.deepEqual(c.count(), before, 'no probe was needed');
  assert.equal(state(late.pool, 'a'), 'unhealthy', 'a is unhealthy at once');
  assert.equal(state(late.pool, 'b'), 'up', "b's checking state is cleared at once");
  await late.hc.ready;
  assert.deepEqual(late.events.sort(), ['healthy b', 'unhealthy a']);
  assert.equal(late.own.length + late.heard.length, 0, 'no probe event: nothing was probed');
});

test('checks with different settings do not share; the same sharedKey does', async (t) => {
  const c = await cluster(t, []);
  c.start('h1', { uri: '/one' });
  c.start('h1', { uri: '/two' });
  await c.clock.advance(0);
  assert.deepEqual(await perInterval(c, 2), times(2, { a: 2, b: 2 }), 'two different checks probe each');
  const d = await cluster(t, []);
  d.start('h1', { uri: '/one', sharedKey: 'api-health' });
  d.start('h1', { uri: '/one', sharedKey: 'api-health', fails: 1 });
  await d.clock.advance(0);
  assert.deepEqual(await perInterval(d, 2), times(2, { a: 1, b: 1 }));
});

test('options shared and sharedKey are validated; misspelled keys are refused', async (t) => {
  const pool = poolOf(t, ['http://127.0.0.1:1']);
  assert.throws(
    () => healthCheck(pool, { shared: 'hosts' as 'host' }),
    (err: unknown) => err instanceof InvalidOptionError && /shared/.test(err.message),
  );
  assert.throws(
    () => healthCheck(pool, { sharedKey: 'a b' }),
    (err: unknown) => err instanceof InvalidOptionError && /sharedKey/.test(err.message),
  );
  assert.throws(() => healthCheck(pool, { sharedKey: '' }), InvalidOptionError);
  assert.throws(
    () => healthCheck(pool, { sahred: 'cluster' } as HealthCheckOptions),
    (err: unknown) => err instanceof InvalidOptionError && /shared/.test(err.message),
  );
  // Without sync the option changes nothing.
  const hc = healthCheck(pool, { shared: 'cluster', sharedKey: 'x', interval: '1h' });
  hc.stop();
});
