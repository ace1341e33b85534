// healthCheck(): NGINX Plus active health checks (nginx-semantics.md section 5) against real
// upstreams on port 0, on a manual clock (no real intervals are slept).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { UpstreamPool, StateChange } from '../../src/pool/index.ts';
import { healthCheck, MAX_PROBE_BODY, type HealthCheck, type HealthCheckOptions } from '../../src/health/index.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { deadPort, poolOf, until } from '../helpers.ts';
import { pick } from '../pool/support.ts';
import { ManualClock, fail, garbage, ok, probes, sleep, switchable } from './support.ts';

function makePool(t: TestContext, clock: ManualClock, servers: Array<{ url: string; id: string }>): UpstreamPool {
  return poolOf(t, servers, { name: 'hc', now: clock.now });
}

function check(t: TestContext, pool: UpstreamPool, clock: ManualClock, options: HealthCheckOptions = {}): HealthCheck {
  const hc = healthCheck(pool, { clock, interval: 1000, ...options });
  clock.attach(hc);
  t.after(() => hc.stop());
  return hc;
}

const stat = (pool: UpstreamPool, id: string) => pool.stats().servers.find((s) => s.id === id)!;
const state = (pool: UpstreamPool, id: string): string => stat(pool, id).state;

function stateEvents(pool: UpstreamPool): Array<[string, string, string]> {
  const out: Array<[string, string, string]> = [];
  pool.on('state', (c: StateChange) => out.push([c.id, c.from, c.to]));
  return out;
}

function events(hc: HealthCheck): string[] {
  const out: string[] = [];
  hc.on('healthy', (id) => out.push(`healthy ${id}`));
  hc.on('unhealthy', (id) => out.push(`unhealthy ${id}`));
  return out;
}

async function noConnections(u: { connections(): Promise<number> }): Promise<void> {
  const closed = await until(async () => (await u.connections()) === 0, 2000, 'the upstream connections to close').catch(() => false);
  assert.ok(closed, `upstream still has ${await u.connections()} open connection(s)`);
}

test('defaults: the first probe GETs / with Host = host:port and the switchyard user-agent', async (t) => {
  const u = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: u.url, id: 'a' }]);
  const hc = check(t, pool, clock);
  const got = probes(hc);
  assert.equal(u.seen.length, 0, 'nothing is probed before the first timer fires');
  await clock.advance(0);
  assert.equal(u.seen.length, 1);
  assert.equal(u.seen[0]!.method, 'GET');
  assert.equal(u.seen[0]!.url, '/');
  assert.equal(u.seen[0]!.headers.host, u.host);
  assert.equal(u.seen[0]!.headers['user-agent'], 'switchyard-health-check');
  assert.deepEqual(got, [{ id: 'a', passed: true, status: 200, reason: undefined, healthy: true }]);
  await hc.ready;
  assert.equal(hc.name, 'health');
});

test('custom uri, method, headers (Host replaced) and name', async (t) => {
  const u = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: u.url, id: 'a' }]);
  const hc = check(t, pool, clock, { uri: '/healthz?full=1', method: 'head', headers: { Host: 'health.example', 'X-Probe': 'yes' }, name: 'hz' });
  await clock.advance(0);
  assert.equal(u.seen.length, 1);
  assert.equal(u.seen[0]!.method, 'HEAD');
  assert.equal(u.seen[0]!.url, '/healthz?full=1');
  assert.equal(u.seen[0]!.headers.host, 'health.example');
  assert.equal(u.seen[0]!.headers['x-probe'], 'yes');
  assert.equal(u.seen[0]!.headers['user-agent'], 'switchyard-health-check');
  assert.equal(hc.name, 'hz');
});

test('port: probes another port than the server url', async (t) => {
  const u = await switchable(t);
  const dead = await deadPort();
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: `http://127.0.0.1:${dead}`, id: 'a' }]);
  const hc = check(t, pool, clock, { port: u.port });
  const got = probes(hc);
  await clock.advance(0);
  assert.equal(u.seen.length, 1, 'the probe went to the port option');
  assert.equal(got[0]?.passed, true);
  assert.equal(state(pool, 'a'), 'up');
});

test('fails 2: one failure keeps the server up, the second makes it unhealthy; exact counters and events', async (t) => {
  const u = await switchable(t, fail);
  const other = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [
    { url: u.url, id: 'a' },
    { url: other.url, id: 'b' },
  ]);
  const changes = stateEvents(pool);
  const hc = check(t, pool, clock, { fails: 2, passes: 3 });
  const ev = events(hc);
  const got = probes(hc);
  await clock.advance(0);
  const a1 = got.filter((r) => r.id === 'a');
  assert.deepEqual(a1, [{ id: 'a', passed: false, status: 500, reason: 'status 500', healthy: true }]);
  assert.equal(state(pool, 'a'), 'up');
  assert.deepEqual(stat(pool, 'a').healthChecks, { checks: 1, fails: 1, unhealthy: 0, lastPassed: false });
  assert.deepEqual(ev, []);
  assert.deepEqual(changes, []);

  await clock.advance(1000);
  assert.equal(u.seen.length, 2);
  assert.equal(state(pool, 'a'), 'unhealthy');
  assert.deepEqual(stat(pool, 'a').healthChecks, { checks: 2, fails: 2, unhealthy: 1, lastPassed: false });
  assert.deepEqual(ev, ['unhealthy a']);
  assert.deepEqual(changes, [['a', 'up', 'unhealthy']]);
  assert.equal(got.findLast((r) => r.id === 'a')!.healthy, false);
  // An unhealthy server gets no requests.
  for (let i = 0; i < 6; i++) assert.equal(pick(pool), other.url.replace('http://', ''));
  assert.deepEqual(stat(pool, 'b').healthChecks, { checks: 2, fails: 0, unhealthy: 0, lastPassed: true });

  // Further failures do not count as becoming unhealthy again.
  await clock.advance(1000);
  assert.deepEqual(stat(pool, 'a').healthChecks, { checks: 3, fails: 3, unhealthy: 1, lastPassed: false });
  assert.deepEqual(ev, ['unhealthy a']);
});

test('passes 3: needs 3 consecutive passes to come back; a failure in between starts over', async (t) => {
  const u = await switchable(t, fail);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: u.url, id: 'a' }]);
  const changes = stateEvents(pool);
  const hc = check(t, pool, clock, { passes: 3 });
  const ev = events(hc);
  await clock.advance(0);
  assert.equal(state(pool, 'a'), 'unhealthy', 'fails defaults to 1');
  u.mode = ok;
  await clock.advance(1000);
  await clock.advance(1000);
  assert.equal(state(pool, 'a'), 'unhealthy', 'two passes are not enough');
  u.mode = fail;
  await clock.advance(1000);
  u.mode = ok;
  await clock.advance(1000);
  await clock.advance(1000);
  assert.equal(state(pool, 'a'), 'unhealthy', 'the failure reset the passes');
  assert.deepEqual(ev, ['unhealthy a']);
  await clock.advance(1000);
  assert.equal(state(pool, 'a'), 'up');
  assert.deepEqual(ev, ['unhealthy a', 'healthy a']);
  assert.deepEqual(changes, [
    ['a', 'up', 'unhealthy'],
    ['a', 'unhealthy', 'up'],
  ]);
  assert.deepEqual(stat(pool, 'a').healthChecks, { checks: 7, fails: 2, unhealthy: 1, lastPassed: true });
  assert.equal(u.seen.length, 7);
});

test('interval: no probe before it elapses, the next one right when it does', async (t) => {
  const u = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: u.url, id: 'a' }]);
  check(t, pool, clock, { interval: '3s' });
  await clock.advance(0);
  assert.equal(u.seen.length, 1);
  assert.deepEqual(clock.delays(), [3000]);
  await clock.advance(2999);
  assert.equal(u.seen.length, 1, 'no probe before the interval');
  await clock.advance(1);
  assert.equal(u.seen.length, 2, 'a probe right at the interval');
  await clock.advance(2999);
  assert.equal(u.seen.length, 2);
  await clock.advance(1);
  assert.equal(u.seen.length, 3);
});

test('jitter: a random delay up to jitter is added to the interval (injected random)', async (t) => {
  const u = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: u.url, id: 'a' }]);
  const draws = [0.5, 0.25, 0.999];
  let calls = 0;
  check(t, pool, clock, { interval: 1000, jitter: 400, random: () => draws[calls++ % draws.length]! });
  await clock.advance(200);
  assert.equal(u.seen.length, 1, 'first probe after 0 + 0.5 * 400');
  // Next: 1000 + floor(0.25 * 400) = 1100 after the first.
  assert.deepEqual(clock.delays(), [1100]);
  await clock.advance(1099);
  assert.equal(u.seen.length, 1);
  await clock.advance(1);
  assert.equal(u.seen.length, 2);
  assert.deepEqual(clock.delays(), [1000 + Math.floor(0.999 * 400)]);
  assert.ok(calls >= 3);
});

test('a hanging upstream fails with reason "timeout" once the timeout passes, and leaves no socket', async (t) => {
  const u = await switchable(t, { kind: 'hang' });
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: u.url, id: 'a' }]);
  const hc = check(t, pool, clock, { timeout: '2s', interval: '10s' });
  const got = probes(hc);
  await clock.advance(0, { settle: false });
  assert.ok(await until(() => u.seen.length === 1, 3000, 'the upstream to get the probe'), 'the upstream got the probe');
  await clock.advance(1999, { settle: false });
  await sleep(20);
  assert.deepEqual(got, [], 'no result before the timeout');
  await clock.advance(1);
  assert.deepEqual(got, [{ id: 'a', passed: false, status: undefined, reason: 'timeout', healthy: false }]);
  assert.equal(state(pool, 'a'), 'unhealthy');
  await noConnections(u);
  hc.stop();
  assert.equal(clock.pending, 0);
});

test('reset, garbage and refused each count as a failure with a reason, and leave no socket', async (t) => {
  const reset = await switchable(t, { kind: 'reset' });
  const junk = await garbage(t);
  const dead = await deadPort();
  const clock = new ManualClock();
  const pool = makePool(t, clock, [
    { url: reset.url, id: 'reset' },
    { url: junk.url, id: 'junk' },
    { url: `http://127.0.0.1:${dead}`, id: 'dead' },
  ]);
  const hc = check(t, pool, clock, { interval: '10s' });
  const got = probes(hc);
  await clock.advance(0);
  await until(() => got.length === 3, 3000, 'three probe results');
  const by = Object.fromEntries(got.map((r) => [r.id, r]));
  for (const id of ['reset', 'junk', 'dead']) {
    assert.equal(by[id]?.passed, false, `${id} failed`);
    assert.equal(by[id]?.healthy, false);
    assert.equal(typeof by[id]?.reason, 'string', `${id} has a reason`);
    assert.notEqual(by[id]!.reason, '');
    assert.equal(state(pool, id), 'unhealthy');
  }
  assert.equal(by.dead!.reason, 'ECONNREFUSED');
  assert.match(by.reset!.reason!, /ECONNRESET|hang up/i);
  assert.match(by.junk!.reason!, /HPE_|parse/i);
  assert.equal(junk.accepted, 1);
  hc.stop();
  await noConnections(reset);
  await noConnections(junk);
});

test('the body is read up to 256 KiB: a marker past it is not seen, and the 10 MB body is not read', async (t) => {
  const size = 10 * 1024 * 1024;
  const far = await switchable(t, { kind: 'stream', size, marker: 'MARKER', at: 300 * 1024 });
  const near = await switchable(t, { kind: 'stream', size, marker: 'MARKER', at: 100 * 1024 });
  const clock = new ManualClock();
  const pool = makePool(t, clock, [
    { url: far.url, id: 'far' },
    { url: near.url, id: 'near' },
  ]);
  const hc = check(t, pool, clock, { interval: '10s', match: { body: /MARKER/ } });
  const got = probes(hc);
  await clock.advance(0);
  await until(() => got.length === 2, 3000, 'two probe results');
  const by = Object.fromEntries(got.map((r) => [r.id, r]));
  assert.deepEqual(by.far, { id: 'far', passed: false, status: 200, reason: 'body condition failed', healthy: false });
  assert.deepEqual(by.near, { id: 'near', passed: true, status: 200, reason: undefined, healthy: true });
  assert.equal(MAX_PROBE_BODY, 256 * 1024);
  for (const u of [far, near]) {
    assert.ok(await until(() => u.streams[0]?.closed === true, 3000, 'the upstream to see the connection closed'), 'the upstream sees the connection closed');
    assert.equal(u.streams[0]!.finished, false, 'the response was cut short, not read to the end');
    assert.ok(u.streams[0]!.written < size, `upstream wrote ${u.streams[0]!.written} of ${size} bytes`);
  }
});

test('probes of one server never overlap (check() called repeatedly while the timer fires)', async (t) => {
  const u = await switchable(t, { kind: 'slow', ms: 500 });
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: u.url, id: 'a' }]);
  const hc = check(t, pool, clock, { interval: 100, timeout: '1h' });
  const got = probes(hc);
  const calls = [hc.check(), hc.check()];
  await clock.advance(0, { settle: false }); // the scheduled first probe fires during the running one
  calls.push(hc.check());
  await sleep(100);
  calls.push(hc.check());
  await Promise.all(calls);
  assert.equal(u.maxInflight, 1);
  assert.equal(u.seen.length, 1, 'the callers joined the running probe');
  assert.equal(got.length, 1);
  await sleep(10);
  // The timer firing while check() runs: still one at a time.
  const more = [hc.check()];
  await clock.advance(100, { settle: false });
  more.push(hc.check());
  await Promise.all(more);
  await until(() => u.inflight === 0, 3000, 'no probe in flight');
  assert.equal(u.maxInflight, 1, 'never two probes at once on the upstream');
  assert.ok(u.seen.length >= 2);
});

test('mandatory: servers start checking and get no requests until their first probe passes', async (t) => {
  const a = await switchable(t);
  const b = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [
    { url: a.url, id: 'a' },
    { url: b.url, id: 'b' },
  ]);
  const hc = check(t, pool, clock, { mandatory: true });
  const ev = events(hc);
  assert.equal(state(pool, 'a'), 'checking');
  assert.equal(state(pool, 'b'), 'checking');
  assert.equal(pick(pool), undefined, 'no server takes requests while checking');
  let ready = false;
  void hc.ready.then(() => (ready = true));
  await clock.advance(0);
  await hc.ready;
  assert.ok(ready);
  assert.equal(state(pool, 'a'), 'up');
  assert.equal(state(pool, 'b'), 'up');
  assert.notEqual(pick(pool), undefined);
  assert.deepEqual(ev.sort(), ['healthy a', 'healthy b']);
});

test('mandatory: a failing first probe makes the server unhealthy directly (even with fails 3)', async (t) => {
  const a = await switchable(t, fail);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: a.url, id: 'a' }]);
  const changes = stateEvents(pool);
  const hc = check(t, pool, clock, { mandatory: true, fails: 3 });
  const ev = events(hc);
  await clock.advance(0);
  assert.equal(state(pool, 'a'), 'unhealthy');
  assert.deepEqual(changes, [
    ['a', 'up', 'checking'],
    ['a', 'checking', 'unhealthy'],
  ]);
  assert.deepEqual(stat(pool, 'a').healthChecks, { checks: 1, fails: 1, unhealthy: 1, lastPassed: false });
  assert.deepEqual(ev, ['unhealthy a'], "the first mandatory failure emits 'unhealthy' (HealthCheckEvents docs)");
});

test('mandatory: a server added at run time starts checking and is probed soon', async (t) => {
  const a = await switchable(t);
  const c = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: a.url, id: 'a' }]);
  const hc = check(t, pool, clock, { mandatory: true, interval: '1m' });
  await clock.advance(0);
  await hc.ready;
  pool.add({ url: c.url, id: 'c' });
  assert.equal(state(pool, 'c'), 'checking');
  for (let i = 0; i < 4; i++) assert.equal(pick(pool), a.host, 'the new server gets no requests yet');
  assert.ok(clock.delays()[0] === 0, 'its first probe is due at once, not after the interval');
  await clock.advance(0);
  assert.equal(c.seen.length, 1);
  assert.equal(state(pool, 'c'), 'up');
});

test('without mandatory, servers start up and an added one takes requests at once', async (t) => {
  const a = await switchable(t);
  const c = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: a.url, id: 'a' }]);
  check(t, pool, clock);
  assert.equal(state(pool, 'a'), 'up');
  pool.add({ url: c.url, id: 'c' });
  assert.equal(state(pool, 'c'), 'up');
  await clock.advance(0);
  assert.equal(c.seen.length, 1, 'the added server is probed too');
});

test('mandatory persistent: servers up at start are not held back, added ones are', async (t) => {
  const a = await switchable(t);
  const c = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: a.url, id: 'a' }]);
  check(t, pool, clock, { mandatory: true, persistent: true });
  assert.equal(state(pool, 'a'), 'up');
  assert.equal(pick(pool), a.host);
  pool.add({ url: c.url, id: 'c' });
  assert.equal(state(pool, 'c'), 'checking');
  await clock.advance(0);
  assert.equal(state(pool, 'c'), 'up');
});

test('several checks on one pool: failing either makes the server unhealthy, both must pass to come back', async (t) => {
  const paths: Record<string, boolean> = { '/a': true, '/b': true };
  const u = await switchable(t, (path) => (paths[path] ? ok : fail));
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: u.url, id: 's' }]);
  const changes = stateEvents(pool);
  check(t, pool, clock, { uri: '/a', name: 'a' });
  check(t, pool, clock, { uri: '/b', name: 'b' });
  await clock.advance(0);
  assert.deepEqual(u.seen.map((r) => r.url).sort(), ['/a', '/b']);
  assert.equal(state(pool, 's'), 'up');
  paths['/a'] = false;
  await clock.advance(1000);
  assert.equal(state(pool, 's'), 'unhealthy', 'check a fails (b passes)');
  paths['/b'] = false;
  await clock.advance(1000);
  assert.equal(state(pool, 's'), 'unhealthy', 'both fail');
  paths['/a'] = true;
  await clock.advance(1000);
  assert.equal(state(pool, 's'), 'unhealthy', 'a passes again but b still fails');
  paths['/b'] = true;
  await clock.advance(1000);
  assert.equal(state(pool, 's'), 'up', 'both pass');
  paths['/b'] = false;
  await clock.advance(1000);
  assert.equal(state(pool, 's'), 'unhealthy', 'check b alone fails (a passes)');
  paths['/b'] = true;
  await clock.advance(1000);
  assert.equal(state(pool, 's'), 'up');
  assert.deepEqual(changes, [
    ['s', 'up', 'unhealthy'],
    ['s', 'unhealthy', 'up'],
    ['s', 'up', 'unhealthy'],
    ['s', 'unhealthy', 'up'],
  ]);
  assert.equal(stat(pool, 's').healthChecks.unhealthy, 2);
  assert.equal(u.seen.length, 14);
});

test('a removed server is no longer probed, without error', async (t) => {
  const a = await switchable(t);
  const b = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [
    { url: a.url, id: 'a' },
    { url: b.url, id: 'b' },
  ]);
  const hc = check(t, pool, clock);
  const errors: unknown[] = [];
  hc.on('error' as 'probe', (e: unknown) => errors.push(e));
  await clock.advance(0);
  assert.equal(b.seen.length, 1);
  pool.remove('b');
  await clock.advance(1000);
  await clock.advance(1000);
  await clock.advance(1000);
  assert.equal(b.seen.length, 1, 'no probe after removal');
  assert.equal(a.seen.length, 4);
  assert.deepEqual(errors, []);
  assert.deepEqual(clock.delays(), [1000], "only a's timer is left");
});

test('a server removed during its probe: the probe is aborted, ready resolves', async (t) => {
  const a = await switchable(t);
  const b = await switchable(t, { kind: 'hang' });
  const clock = new ManualClock();
  const pool = makePool(t, clock, [
    { url: a.url, id: 'a' },
    { url: b.url, id: 'b' },
  ]);
  const hc = check(t, pool, clock, { timeout: '1h' });
  const got = probes(hc);
  await clock.advance(0, { settle: false });
  assert.ok(await until(() => b.seen.length === 1 && a.seen.length === 1, 3000, 'a probe on a and on b'));
  pool.remove('b');
  await withTimeout(hc.ready, 2000, 'ready');
  await noConnections(b);
  await sleep(20);
  assert.deepEqual(
    got.map((r) => r.id),
    ['a'],
    'no probe result for the removed server',
  );
});

test('ready resolves when a server is removed before its first probe, and when stopped first', async (t) => {
  const a = await switchable(t);
  const b = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [
    { url: a.url, id: 'a' },
    { url: b.url, id: 'b' },
  ]);
  const hc = check(t, pool, clock);
  pool.remove('b');
  await clock.advance(0);
  await withTimeout(hc.ready, 2000, 'ready after removal');
  assert.equal(b.seen.length, 0);

  const clock2 = new ManualClock();
  const pool2 = makePool(t, clock2, [{ url: a.url, id: 'a' }]);
  const hc2 = check(t, pool2, clock2, { mandatory: true });
  hc2.stop();
  await withTimeout(hc2.ready, 2000, 'ready after stop');
  assert.equal(state(pool2, 'a'), 'up', 'stop lifts the mandatory hold');
  assert.equal(clock2.pending, 0);
});

test('stop(): clears every timer, aborts a running probe, lifts the hold', async (t) => {
  const hang = await switchable(t, { kind: 'hang' });
  const bad = await switchable(t, fail);
  const good = await switchable(t);
  const clock = new ManualClock();
  const pool = makePool(t, clock, [
    { url: bad.url, id: 'bad' },
    { url: good.url, id: 'good' },
    { url: hang.url, id: 'hang' },
  ]);
  const changes = stateEvents(pool);
  const hc = check(t, pool, clock, { timeout: '1h' });
  const got = probes(hc);
  await clock.advance(0, { settle: false });
  assert.ok(await until(() => got.length === 2 && hang.seen.length === 1, 3000, 'two probe results and the hung request'));
  await sleep(10);
  assert.equal(state(pool, 'bad'), 'unhealthy');
  assert.ok(clock.pending > 0);
  hc.stop();
  await sleep(20);
  assert.equal(clock.pending, 0, 'no timer left (schedules and probe timeouts)');
  assert.equal(state(pool, 'bad'), 'up', 'the unhealthy server is up again');
  assert.deepEqual(
    changes.filter((c) => c[0] === 'bad'),
    [
      ['bad', 'up', 'unhealthy'],
      ['bad', 'unhealthy', 'up'],
    ],
  );
  await noConnections(hang);
  assert.equal(got.length, 2, 'the aborted probe is not reported');
  // Nothing runs after stop.
  await clock.advance(10_000);
  assert.equal(bad.seen.length + good.seen.length + hang.seen.length, 3);
  hc.stop(); // twice is fine
});

test('invalid options throw InvalidOptionError naming the option', async (t) => {
  const clock = new ManualClock();
  const pool = makePool(t, clock, [{ url: 'http://127.0.0.1:1', id: 'a' }]);
  const table: Array<[HealthCheckOptions, string]> = [
    [{ uri: 'x' }, 'uri'],
    [{ uri: '/a b' }, 'uri'],
    [{ interval: 0 }, 'interval'],
    [{ interval: -5 }, 'interval'],
    [{ jitter: -1 }, 'jitter'],
    [{ fails: 0 }, 'fails'],
    [{ fails: -1 }, 'fails'],
    [{ passes: 1.5 }, 'passes'],
    [{ timeout: -1 }, 'timeout'],
    [{ timeout: 0 }, 'timeout'],
    [{ port: 70000 }, 'port'],
    [{ port: 0 }, 'port'],
    [{ method: 'G T' }, 'method'],
    [{ headers: { 'X-A': 'a\r\nInjected: 1' } }, 'headers.X-A'],
    [{ headers: { 'Bad Name': 'v' } }, 'headers.Bad Name'],
    [{ clock: {} as never }, 'clock'],
    [{ random: 1 as never }, 'random'],
    [{ mandatory: 'yes' as never }, 'mandatory'],
    [{ persistent: 1 as never }, 'persistent'],
    [{ name: '' }, 'name'],
    [{ match: { status: 'x' } }, 'match.status'],
  ];
  for (const [options, option] of table) {
    assert.throws(
      () => healthCheck(pool, { clock, ...options }),
      (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      `${JSON.stringify(options)} should name ${option}`,
    );
  }
  assert.throws(
    () => healthCheck({} as never),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'pool',
  );
  assert.throws(
    () => healthCheck(pool, 5 as never),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'options',
  );
  assert.equal(clock.pending, 0, 'a rejected check leaves no timer');
  assert.equal(pool.listenerCount('add'), 0, 'nor listeners');
});

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
