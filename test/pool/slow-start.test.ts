// NGINX Plus slow_start (nginx-semantics.md section 1 and 5): a server coming back from unhealthy
// (active checks) or unavailable (max_fails) has its weight ramp linearly from 0 to its nominal weight
// over slowStart. Not with hash, ip-hash or random; ignored in a pool of one server. Unit level on the
// pool clock, plus one end-to-end run through balance() with real upstreams.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { MethodOption, ServerOptions, UpstreamPool } from '../../src/pool/index.ts';
import type { Peer } from '../../src/pool/peer.ts';
import { balance, chain, healthCheck, InvalidOptionError, type HealthClock } from '../../src/index.ts';
import { clock, fetchText, gateway, poolOf, upstream, type Clock } from '../helpers.ts';
import { finishOk, lettered, selection, sequence } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

/** Pool "ss" on clock `c` over servers a, b, … (ports nothing listens on) with the settings in `servers`. */
function rampPool(t: TestContext, c: Clock, servers: Array<Partial<ServerOptions>>, method?: MethodOption): UpstreamPool {
  return poolOf(t, lettered(19501, servers), { name: 'ss', method, now: c.now });
}

const peerOf = (p: UpstreamPool, id: string): Peer =>
  internals(p)
    .peers()
    .find((x) => x.id === id)!;

/** Takes server `id` out as an active check does, then (at the current clock time) lets it back in. */
function unhealthyThenBack(p: UpstreamPool, id: string): void {
  const check = internals(p).healthCheckId();
  internals(p).healthMark(peerOf(p, id), check, true, false);
  assert.equal(p.stats().servers.find((s) => s.id === id)!.state, 'unhealthy');
  internals(p).healthMark(peerOf(p, id), check, false, false);
  assert.equal(p.stats().servers.find((s) => s.id === id)!.state, 'up');
}

const share = (ids: readonly string[], id: string): number => ids.filter((x) => x === id).length / ids.length;

test('ramp shape: weight 4, slowStart 10s coming back from unhealthy weighs 0, 1, 2, 4 at 0, 2.5, 5, 10 s', (t) => {
  const c = clock();
  const p = rampPool(t, c, [{ weight: 4, slowStart: '10s' }, { weight: 4 }]);
  const a = peerOf(p, 'a');
  assert.equal(a.weightAt(c.t), 4, 'no ramp before it ever went away');
  unhealthyThenBack(p, 'a');
  const t0 = c.t;
  assert.equal(a.weightAt(t0), 0);
  assert.equal(a.weightAt(t0 + 2500), 1);
  assert.equal(a.weightAt(t0 + 5000), 2);
  assert.equal(a.weightAt(t0 + 7500), 3);
  assert.equal(a.weightAt(t0 + 10_000), 4);
  assert.equal(a.weightAt(t0 + 60_000), 4);
  assert.equal(peerOf(p, 'b').weightAt(t0), 4, 'the other server is not ramped');
});

test('ramp shape through healthCheck() with a fake HealthClock: the ramp starts when the server passes again', async (t) => {
  let healthy = true;
  const up = await upstream(t, 'a', (_req, res) => {
    res.statusCode = healthy ? 200 : 503;
    res.end();
  });
  const c = clock();
  const p = poolOf(
    t,
    [
      { id: 'a', url: up.url, weight: 4, slowStart: '10s' },
      { id: 'b', url: 'http://127.0.0.1:19599', weight: 4 },
    ],
    { name: 'ss', now: c.now },
  );
  // Timers never fire: the test drives every probe with check().
  const fake: HealthClock = { now: c.now, setTimeout: () => ({}), clearTimeout: () => undefined };
  const hc = healthCheck(p, { clock: fake });
  t.after(() => hc.stop());
  const a = peerOf(p, 'a');
  await hc.check();
  assert.equal(a.weightAt(c.t), 4, 'a first passing probe starts no ramp');
  healthy = false;
  await hc.check();
  assert.equal(p.stats().servers[0]!.state, 'unhealthy');
  c.advance(30_000);
  healthy = true;
  await hc.check();
  assert.equal(p.stats().servers[0]!.state, 'up');
  const t0 = c.t;
  assert.equal(a.weightAt(t0), 0);
  assert.equal(a.weightAt(t0 + 2500), 1);
  assert.equal(a.weightAt(t0 + 5000), 2);
  assert.equal(a.weightAt(t0 + 10_000), 4);
});

test("round robin: the returning server's share follows the ramp (windows of 1000 selections at 1, 5, 9, 11 s)", (t) => {
  const c = clock();
  const p = rampPool(t, c, [{ weight: 4, slowStart: '10s' }, { weight: 4 }]);
  unhealthyThenBack(p, 'a');
  const t0 = c.t;
  assert.equal(share(sequence(p, 200), 'a'), 0, 'at t=0 its weight is 0: no request');
  const shares: number[] = [];
  for (const at of [1000, 5000, 9000, 11_000]) {
    c.t = t0 + at;
    const w = Math.min(4, (4 * at) / 10_000);
    const expected = w / (w + 4);
    const got = share(sequence(p, 1000), 'a');
    shares.push(got);
    assert.ok(Math.abs(got - expected) <= 0.03, `at ${at} ms: share ${got}, expected ${expected.toFixed(3)}`);
  }
  for (let i = 1; i < shares.length; i++) assert.ok(shares[i]! > shares[i - 1]!, `share grows: ${shares.join(', ')}`);
});

test('least-conn honours the ramp: with requests held open, the returning server takes conns in proportion to its ramped weight', (t) => {
  const c = clock();
  const p = rampPool(t, c, [{ weight: 4, slowStart: '10s' }, { weight: 4 }], 'least-conn');
  unhealthyThenBack(p, 'a');
  const t0 = c.t;
  const hold = (n: number): Peer[] => {
    const held: Peer[] = [];
    for (let i = 0; i < n; i++) held.push(internals(p).select(selection(p))!);
    return held;
  };
  const release = (held: Peer[]): void => {
    for (const peer of held) finishOk(p, peer);
  };
  const windows: Array<{ at: number; expected: number }> = [
    { at: 0, expected: 0 },
    { at: 2500, expected: 1 / 5 },
    { at: 5000, expected: 2 / 6 },
    { at: 10_000, expected: 1 / 2 },
  ];
  for (const { at, expected } of windows) {
    c.t = t0 + at;
    const held = hold(100);
    const got = held.filter((x) => x.id === 'a').length / held.length;
    assert.ok(Math.abs(got - expected) <= 0.03, `least-conn at ${at} ms: share of held requests ${got}, expected ${expected.toFixed(3)}`);
    release(held);
  }
  // Sequential requests (all conns 0, a tie): the tie-break by smooth weighted round robin uses the ramped weight too.
  c.t = t0 + 2500;
  const seq = share(sequence(p, 1000), 'a');
  assert.ok(Math.abs(seq - 0.2) <= 0.03, `least-conn ties at 2.5 s: share ${seq}, expected 0.2`);
});

test('passive failure: unavailable through maxFails, the first successful request after failTimeout starts the ramp', (t) => {
  const c = clock();
  const p = rampPool(t, c, [{ weight: 4, slowStart: '10s', maxFails: 1, failTimeout: '10s' }, { weight: 4 }]);
  const a = peerOf(p, 'a');
  let failedOnce = false;
  for (let i = 0; i < 4 && !failedOnce; i++) {
    const peer = internals(p).select(selection(p))!;
    if (peer.id === 'a') {
      internals(p).finish(peer, 'failed', { header: -1, response: 1, inflightDone: false }, undefined);
      failedOnce = true;
    } else finishOk(p, peer);
  }
  assert.ok(failedOnce);
  assert.equal(p.stats().servers[0]!.state, 'unavail');
  assert.deepEqual(sequence(p, 6), ['b', 'b', 'b', 'b', 'b', 'b'], 'a is skipped while unavailable');
  assert.equal(a.weightAt(c.t), 4, 'no ramp while merely unavailable');

  c.advance(10_001);
  // After failTimeout a is tried again (nginx's probe request) once its effective weight, cut to 0 by
  // the failure, has grown back enough for smooth round robin to pick it; it succeeds.
  let probe: Peer | undefined;
  for (let i = 0; i < 20 && probe === undefined; i++) {
    const peer = internals(p).select(selection(p))!;
    if (peer.id === 'a') probe = peer;
    else finishOk(p, peer);
  }
  assert.ok(probe !== undefined, 'a gets a request after failTimeout');
  finishOk(p, probe);
  const t0 = c.t;
  assert.equal(p.stats().servers[0]!.state, 'up');
  assert.ok(a.weightAt(t0) < a.weight, `weight right after coming back: ${a.weightAt(t0)} < 4`);
  assert.equal(a.weightAt(t0), 0);
  assert.equal(a.weightAt(t0 + 5000), 2);
  assert.equal(a.weightAt(t0 + 10_000), 4);
  c.t = t0 + 1000;
  const early = share(sequence(p, 1000), 'a');
  assert.ok(early < 0.15, `share 1 s into the ramp: ${early}`);
  c.t = t0 + 11_000;
  const late = share(sequence(p, 1000), 'a');
  assert.ok(Math.abs(late - 0.5) <= 0.03, `share after the ramp: ${late}`);
});

const REFUSING: Array<{ label: string; method: MethodOption }> = [
  { label: 'hash', method: { name: 'hash', key: '$request_uri' } },
  { label: 'hash consistent', method: { name: 'hash', key: '$request_uri', consistent: true } },
  { label: 'ip-hash', method: 'ip-hash' },
  { label: 'random', method: 'random' },
  { label: 'random-two', method: 'random-two' },
];

for (const { label, method } of REFUSING) {
  test(`slowStart is refused with method ${label} (createPool, add, update), naming the field`, (t) => {
    const c = clock();
    const refused =
      (option: string) =>
      (err: unknown): boolean => {
        assert.ok(err instanceof InvalidOptionError, String(err));
        assert.equal(err.option, option);
        assert.match(err.message, new RegExp(option.replace(/[[\].]/g, '\\$&')));
        return true;
      };
    assert.throws(() => rampPool(t, c, [{ slowStart: '10s' }, {}], method), refused('servers[0].slowStart'));
    assert.throws(() => rampPool(t, c, [{}, { slowStart: 5000 }], method), refused('servers[1].slowStart'));
    const p = rampPool(t, c, [{}, {}], method);
    assert.throws(() => p.add({ url: 'http://127.0.0.1:19599', id: 'z', slowStart: '1s' }), refused('server.slowStart'));
    assert.equal(p.get('z'), undefined, 'the refused server was not added');
    assert.throws(() => p.update('a', { slowStart: '1s' }), refused('changes.slowStart'));
    assert.equal(p.get('a')!.slowStart, 0);
    // 0 (off) is not slow start: accepted everywhere.
    assert.doesNotThrow(() => p.update('a', { slowStart: 0 }));
  });
}

for (const method of ['round-robin', 'least-conn', 'least-time'] as const) {
  test(`slowStart is accepted with method ${method} (createPool, add, update)`, (t) => {
    const c = clock();
    const p = rampPool(t, c, [{ slowStart: '10s' }, {}], method);
    assert.equal(p.get('a')!.slowStart, 10_000);
    assert.equal(p.add({ url: 'http://127.0.0.1:19599', id: 'z', slowStart: '2s' }).slowStart, 2000);
    assert.equal(p.update('b', { slowStart: '30s' }).slowStart, 30_000);
    assert.equal(p.get('b')!.slowStart, 30_000);
  });
}

test('slowStart 0 means no ramp: a server coming back takes its full share at once', (t) => {
  const c = clock();
  const p = rampPool(t, c, [{ weight: 4, slowStart: 0 }, { weight: 4 }]);
  unhealthyThenBack(p, 'a');
  assert.equal(peerOf(p, 'a').weightAt(c.t), 4);
  assert.equal(share(sequence(p, 1000), 'a'), 0.5);
});

test('slowStart set by update() applies to the next return', (t) => {
  const c = clock();
  const p = rampPool(t, c, [{ weight: 4 }, { weight: 4 }]);
  p.update('a', { slowStart: '10s' });
  unhealthyThenBack(p, 'a');
  assert.equal(peerOf(p, 'a').weightAt(c.t), 0);
  assert.equal(peerOf(p, 'a').weightAt(c.t + 5000), 2);
});

test('a single-server pool ignores slowStart: back from unhealthy or unavailable, it takes every request at once', (t) => {
  const c = clock();
  const p = rampPool(t, c, [{ weight: 4, slowStart: '10s', maxFails: 1 }]);
  const a = peerOf(p, 'a');
  unhealthyThenBack(p, 'a');
  assert.equal(a.weightAt(c.t), 4, 'no ramp after unhealthy');
  assert.deepEqual(sequence(p, 5), ['a', 'a', 'a', 'a', 'a']);
  const peer = internals(p).select(selection(p))!;
  internals(p).finish(peer, 'failed', { header: -1, response: 1, inflightDone: false }, undefined);
  assert.equal(p.stats().servers[0]!.state, 'up', 'a single server is never unavailable');
  finishOk(p, internals(p).select(selection(p))!);
  assert.equal(a.weightAt(c.t), 4, 'no ramp after a failure');
  assert.deepEqual(sequence(p, 3), ['a', 'a', 'a']);
});

test('end to end: a server healthy again with slowStart 1s gets a smaller share in its first 300 ms than after 1 s', async (t) => {
  let aHealthy = true;
  const a = await upstream(t, 'a', (req, res) => {
    if (req.url === '/health') res.statusCode = aHealthy ? 200 : 500;
    res.end('a');
  });
  const b = await upstream(t, 'b');
  const p = poolOf(t, { a, b }, { name: 'e2e', extra: { a: { slowStart: '1s' } } });
  const hc = healthCheck(p, { uri: '/health', interval: '1h' });
  t.after(() => hc.stop());
  await hc.ready;
  const gw = await gateway(t, chain(balance(p)));

  aHealthy = false;
  await hc.check();
  assert.equal(p.stats().servers[0]!.state, 'unhealthy');
  aHealthy = true;
  await hc.check();
  const back = Date.now();
  assert.equal(p.stats().servers[0]!.state, 'up');

  const windowShare = async (until: number): Promise<{ share: number; n: number }> => {
    let n = 0;
    let hitsA = 0;
    while (Date.now() < until) {
      const r = await fetchText(gw.url + '/');
      assert.equal(r.status, 200);
      n++;
      if (r.body === 'a') hitsA++;
    }
    return { share: n === 0 ? 0 : hitsA / n, n };
  };
  const early = await windowShare(back + 300);
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, back + 1100 - Date.now())));
  const late = await windowShare(Date.now() + 300);
  // At least a handful in each window (a loaded machine serves fewer in 300 ms; the shares hold all the same).
  assert.ok(early.n >= 5 && late.n >= 5, `enough requests: ${early.n}, ${late.n}`);
  assert.ok(early.share < 0.3, `first 300 ms share ${early.share.toFixed(3)} (${early.n} requests)`);
  assert.ok(late.share > 0.4, `share after 1 s ${late.share.toFixed(3)} (${late.n} requests)`);
  assert.ok(late.share - early.share > 0.15, `share grows: ${early.share.toFixed(3)} -> ${late.share.toFixed(3)}`);
});

test('mandatory + slowStart: a server added at run time warms up after its first passing probe (NGINX Plus)', async (t) => {
  const up = await upstream(t, 'a');
  const c = clock();
  const p = poolOf(t, { b: 'http://127.0.0.1:19598' }, { name: 'warm', now: c.now, each: { weight: 4 } });
  const fake: HealthClock = { now: c.now, setTimeout: () => ({}), clearTimeout: () => undefined };
  const hc = healthCheck(p, { clock: fake, mandatory: true, persistent: true });
  t.after(() => hc.stop());
  p.add({ id: 'a', url: up.url, weight: 4, slowStart: '10s' });
  assert.equal(p.stats().servers[1]!.state, 'checking');
  await hc.check();
  assert.equal(p.stats().servers[1]!.state, 'up');
  const a = peerOf(p, 'a');
  const t0 = c.t;
  assert.equal(a.weightAt(t0), 0);
  assert.equal(a.weightAt(t0 + 5000), 2);
  assert.equal(a.weightAt(t0 + 10_000), 4);
});
