// Passive health: max_fails / fail_timeout exactly as nginx (nginx-semantics.md 3.3 and 3.4), with the
// pool's injected clock instead of sleeping. More timelines recorded from nginx: fixtures/sequences.json.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { ServerOptions, UpstreamPool } from '../../src/pool/index.ts';
import type { AttemptOutcome } from '../../src/pool/peer.ts';
import { clock, poolOf, type Clock } from '../helpers.ts';
import { finishOk, lettered, replay, selection, type SequenceGroup } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

const DEAD = '127.0.0.1:18099';
const OK = '127.0.0.1:18082';

function pool(t: TestContext, c: Clock, ...list: Array<Partial<ServerOptions>>): UpstreamPool {
  return poolOf(t, lettered(19401, list), { name: 'ph', now: c.now });
}

/** Sends requests until one is given server `id` and ends it with `outcome`; false if it is never chosen. */
function attemptOn(p: UpstreamPool, id: string, outcome: AttemptOutcome): boolean {
  for (let i = 0; i < 20; i++) {
    const peer = internals(p).select(selection(p));
    if (peer === undefined) return false;
    if (peer.id !== id) {
      finishOk(p, peer);
      continue;
    }
    internals(p).finish(peer, outcome, { header: outcome === 'failed' ? -1 : 5, response: 5, inflightDone: false }, outcome === 'failed' ? undefined : 200);
    return true;
  }
  return false;
}

const fails = (p: UpstreamPool, id: string): number => p.stats().servers.find((s) => s.id === id)!.fails;
const state = (p: UpstreamPool, id: string): string => p.stats().servers.find((s) => s.id === id)!.state;

function timeline(t: TestContext, servers: SequenceGroup['servers'], steps: SequenceGroup['steps']): string[][] {
  const c = clock();
  const group: SequenceGroup = { name: 'tl', method: 'round-robin', servers, steps, results: [] };
  const listed = servers.map((s) => ({
    url: `http://${s.server}`,
    maxFails: s.maxFails,
    failTimeout: s.failTimeout === undefined ? undefined : `${s.failTimeout}s`,
  }));
  const p = poolOf(t, listed, { name: 'tl', now: c.now });
  return replay(p, group, [DEAD], c).flatMap((r) => (r.op === 'get' ? [r.addrs.map((a) => (a === DEAD ? 'dead' : 'ok'))] : []));
}

test('verified timeline (reference 3.4): dead max_fails=2 fail_timeout=2s + ok, 8 requests, then after 2.2 s one failing probe', (t) => {
  const got = timeline(
    t,
    [{ server: DEAD, maxFails: 2, failTimeout: 2 }, { server: OK }],
    [
      { op: 'get', n: 8 },
      { op: 'sleep', ms: 2200 },
      { op: 'get', n: 4 },
    ],
  );
  assert.deepEqual(got, [['dead', 'ok'], ['ok'], ['dead', 'ok'], ['ok'], ['ok'], ['ok'], ['ok'], ['ok'], ['ok'], ['dead', 'ok'], ['ok'], ['ok']]);
});

test('verified timeline: max_fails=3 fail_timeout=30s -> three failing attempts interleaved with RR, then never again', (t) => {
  const got = timeline(
    t,
    [{ server: DEAD, maxFails: 3, failTimeout: 30 }, { server: OK }],
    [
      { op: 'get', n: 10 },
      { op: 'sleep', ms: 29_000 },
      { op: 'get', n: 4 },
    ],
  );
  assert.deepEqual(
    got.map((r) => r.join('+')),
    ['dead+ok', 'ok', 'dead+ok', 'ok', 'dead+ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok'],
  );
});

for (const delay of [0, 200]) {
  test(`upstream.t: peer 1 fails every 3rd of its requests, max_fails=3 fail_timeout=10s -> 6/24 of 30 (${delay} ms apart)`, (t) => {
    const c = clock();
    const p = pool(t, c, { maxFails: 3, failTimeout: '10s' }, { maxFails: 3, failTimeout: '10s' });
    const balanced = { a: 0, b: 0 };
    for (let i = 0; i < 30; i++) {
      const peer = internals(p).select(selection(p))!;
      balanced[peer.id as 'a' | 'b']++;
      finishOk(p, peer);
    }
    assert.deepEqual(balanced, { a: 15, b: 15 });
    const answered = { a: 0, b: 0 };
    let count = 1;
    for (let i = 0; i < 30; i++) {
      const sel = selection(p);
      for (;;) {
        const peer = internals(p).select(sel)!;
        if (peer.id === 'a' && count++ % 3 === 0) {
          internals(p).finish(peer, 'failed', { header: -1, response: 1, inflightDone: false }, undefined);
          continue;
        }
        answered[peer.id as 'a' | 'b']++;
        finishOk(p, peer);
        break;
      }
      c.advance(delay);
    }
    assert.deepEqual(answered, { a: 6, b: 24 });
  });
}

const ACCUMULATE: Array<[name: string, events: Array<[at: number, outcome: AttemptOutcome]>, available: boolean]> = [
  [
    'two failures 9 s apart',
    [
      [0, 'failed'],
      [9000, 'failed'],
    ],
    false,
  ],
  [
    'a success in between does not reset (no re-check yet)',
    [
      [0, 'failed'],
      [5000, 'ok'],
      [9000, 'failed'],
    ],
    false,
  ],
  [
    'failures further apart than failTimeout still add up',
    [
      [0, 'failed'],
      [11_000, 'failed'],
    ],
    false,
  ],
  [
    'a success after a re-check (selected > failTimeout after the failure) resets',
    [
      [0, 'failed'],
      [11_000, 'ok'],
      [12_000, 'failed'],
    ],
    true,
  ],
  [
    'a "next" outcome (403/404) is not a failure',
    [
      [0, 'failed'],
      [1000, 'next'],
      [2000, 'next'],
      [3000, 'next'],
    ],
    true,
  ],
  ['one failure of two allowed', [[0, 'failed']], true],
];
for (const [name, events, available] of ACCUMULATE) {
  test(`maxFails=2 failTimeout=10s: ${name} -> ${available ? 'available' : 'unavailable'}`, (t) => {
    const c = clock();
    const p = pool(t, c, { maxFails: 2, failTimeout: '10s' }, {});
    const start = c.t;
    for (const [at, outcome] of events) {
      c.t = start + at;
      assert.ok(attemptOn(p, 'a', outcome), `a selectable at ${at} ms`);
    }
    assert.equal(p.stats().servers[0]!.unavail, available ? 0 : 1);
    assert.equal(fails(p, 'a'), events.filter(([, o]) => o === 'failed').length, 'stats fails counts every failure');
    assert.equal(state(p, 'a'), available ? 'up' : 'unavail');
    assert.equal(attemptOn(p, 'a', 'ok'), available);
  });
}

test('probe: unavailable for exactly failTimeout, then one request tries it; a failing probe blocks it again', (t) => {
  const c = clock();
  const p = pool(t, c, { maxFails: 1, failTimeout: '10s' }, {});
  const start = c.t;
  assert.ok(attemptOn(p, 'a', 'failed'));
  c.t = start + 10_000;
  assert.equal(attemptOn(p, 'a', 'ok'), false, 'still out at failTimeout');
  assert.equal(state(p, 'a'), 'unavail');
  c.t = start + 10_001;
  assert.equal(state(p, 'a'), 'up');
  assert.ok(attemptOn(p, 'a', 'failed'), 'probe');
  assert.equal(attemptOn(p, 'a', 'ok'), false, 'blocked again');
  c.t = start + 20_001;
  assert.equal(attemptOn(p, 'a', 'ok'), false, 'counted from the probe, not the first failure');
  c.t = start + 20_002;
  assert.ok(attemptOn(p, 'a', 'ok'), 'second probe succeeds');
  assert.equal(fails(p, 'a'), 2, 'fails counts every failure (stats)');
  assert.ok(attemptOn(p, 'a', 'failed'), 'recovered: a new failure is the first of a new count');
  assert.equal(state(p, 'a'), 'unavail');
  assert.equal(p.stats().servers[0]!.unavail, 3);
});

test('probe success resets the failure count: the next failure starts from one', (t) => {
  const c = clock();
  const p = pool(t, c, { maxFails: 2, failTimeout: '1s' }, {});
  assert.ok(attemptOn(p, 'a', 'failed'));
  assert.ok(attemptOn(p, 'a', 'failed'));
  assert.equal(state(p, 'a'), 'unavail');
  c.advance(1001);
  assert.ok(attemptOn(p, 'a', 'ok'));
  assert.ok(attemptOn(p, 'a', 'failed'));
  assert.equal(state(p, 'a'), 'up', 'one failure of two after the reset');
});

test('a single-server pool is never unavailable (its failures are forgotten)', (t) => {
  const c = clock();
  const p = pool(t, c, { maxFails: 1, failTimeout: '1h' });
  for (let i = 0; i < 5; i++) {
    const peer = internals(p).select(selection(p));
    assert.equal(peer?.id, 'a', `request ${i + 1}`);
    internals(p).finish(peer!, 'failed', { header: -1, response: 1, inflightDone: false }, undefined);
  }
  assert.equal(state(p, 'a'), 'up');
  assert.equal(internals(p).maxTries(), 1);
});

test('a single server with a backup is not "single": it can become unavailable', (t) => {
  const c = clock();
  const p = pool(t, c, { maxFails: 1 }, { backup: true });
  assert.ok(attemptOn(p, 'a', 'failed'));
  assert.equal(state(p, 'a'), 'unavail');
  assert.equal(internals(p).select(selection(p))?.id, 'b');
});

test('maxFails 0 disables accounting: never unavailable, effective weight untouched', (t) => {
  const c = clock();
  const p = pool(t, c, { maxFails: 0, weight: 4 }, {});
  for (let i = 0; i < 6; i++) assert.ok(attemptOn(p, 'a', 'failed'), `failure ${i + 1}`);
  assert.equal(state(p, 'a'), 'up');
  assert.equal(p.stats().servers[0]!.unavail, 0);
  let peer = internals(p).select(selection(p))!;
  while (peer.id !== 'a') {
    finishOk(p, peer);
    peer = internals(p).select(selection(p))!;
  }
  assert.equal(peer.effectiveWeight, 4);
  finishOk(p, peer);
});

test('a down server is neither selected nor probed, whatever its failures', (t) => {
  const c = clock();
  const p = pool(t, c, { maxFails: 1, failTimeout: '1s' }, {});
  assert.ok(attemptOn(p, 'a', 'failed'));
  p.update('a', { down: true });
  c.advance(5000);
  assert.equal(attemptOn(p, 'a', 'ok'), false);
  assert.equal(state(p, 'a'), 'down');
});
