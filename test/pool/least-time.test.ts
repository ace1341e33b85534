// least_time header | last_byte [inflight] (nginx-semantics.md 2.3, nginx-tests upstream_least_time.t):
// eta = clustered average time x (1 + active), per unit of weight; the average halves once per
// fail_timeout (+1 s) a server was not re-checked; with inflight, old requests in flight count.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { ServerOptions, UpstreamPool } from '../../src/pool/index.ts';
import type { Peer } from '../../src/pool/peer.ts';
import { clock, poolOf, type Clock } from '../helpers.ts';
import { lettered, selection } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

function pool(
  t: TestContext,
  c: Clock,
  method: { measure?: 'header' | 'last-byte'; inflight?: boolean },
  ...list: Array<Partial<ServerOptions>>
): UpstreamPool {
  return poolOf(t, lettered(19201, list), { name: 'lt', method: { name: 'least-time', ...method }, now: c.now });
}

/** An attempt that got its header after `header` ms and its last byte after `response` ms, as balance() reports it. */
function complete(p: UpstreamPool, peer: Peer, header: number, response = header): void {
  const inflightDone = internals(p).header(peer, header);
  internals(p).finish(peer, 'ok', { header, response, inflightDone }, 200);
}

/** n requests, each completing with the times `times(peer)` gives (the clock, if given, moves on by them). */
function run(p: UpstreamPool, n: number, times: (id: string) => [number, number], c?: Clock): string {
  let out = '';
  for (let i = 0; i < n; i++) {
    const peer = internals(p).select(selection(p))!;
    out += peer.id;
    const [header, response] = times(peer.id);
    c?.advance(response);
    complete(p, peer, header, response);
  }
  return out;
}

for (const measure of ['header', 'last-byte'] as const) {
  test(`least-time ${measure}: equal times -> round robin (upstream_least_time.t "equal response time": 5/5)`, (t) => {
    const p = pool(t, clock(), { measure }, {}, {});
    // first: idle tie (SWRR a); b has no time yet (eta 20 < 120); then equal clustered times tie, SWRR decides
    assert.equal(
      run(p, 10, () => [100, 200]),
      'abbabababa',
    );
  });

  test(`least-time ${measure}: the server with the lower average wins`, (t) => {
    const p = pool(t, clock(), { measure }, {}, {});
    assert.equal(
      run(p, 12, (id) => (id === 'a' ? [300, 400] : [100, 150])),
      'abbbbbbbbbbb',
    );
  });
}

test('least-time header vs last-byte: the measure decides which average counts', (t) => {
  const times = (id: string): [number, number] => (id === 'a' ? [50, 500] : [200, 250]);
  assert.equal(run(pool(t, clock(), { measure: 'header' }, {}, {}), 8, times), 'abaaaaaa');
  assert.equal(run(pool(t, clock(), { measure: 'last-byte' }, {}, {}), 8, times), 'abbbbbbb');
});

test('least-time: averages within one 20 ms cluster tie (round robin), a cluster apart do not', (t) => {
  // 101 and 119 both round up to 120; 119 and 121 fall in clusters 120 and 140
  assert.equal(
    run(pool(t, clock(), {}, {}, {}), 6, (id) => (id === 'a' ? [101, 101] : [119, 119])),
    'abbaba',
  );
  assert.equal(
    run(pool(t, clock(), {}, {}, {}), 6, (id) => (id === 'a' ? [119, 119] : [121, 121])),
    'abaaaa',
  );
});

test('least-time: times above 5 s count as 5 s, so such servers share by active count (least-conn)', (t) => {
  assert.equal(
    run(pool(t, clock(), {}, {}, {}), 6, (id) => (id === 'a' ? [6000, 6000] : [9000, 9000])),
    'abbaba',
  );
});

test('least-time: eta = time x (1 + active): a slower idle server beats a faster busy one', (t) => {
  const c = clock();
  const p = pool(t, c, {}, {}, {});
  assert.equal(
    run(p, 2, (id) => (id === 'a' ? [100, 100] : [150, 150])),
    'ab',
  );
  const held = internals(p).select(selection(p))!; // a: 120 < 160
  assert.equal(held.id, 'a');
  const next = internals(p).select(selection(p))!; // a: 120 x 2 = 240 > b: 160
  assert.equal(next.id, 'b');
  complete(p, next, 150);
  complete(p, held, 100);
});

// a averages 1000 ms, b 100 ms (eta 120); a's time is shifted right by floor(seconds / (10 + 1))
const DECAY: Array<[delta: number, second: string]> = [
  [10_000, 'b'], // not past failTimeout: no decay
  [11_000, 'b'], // a: 1000 >> 1 = 500 -> 520 > 120
  [22_000, 'b'], // a: 250 -> 260
  [43_000, 'b'], // a: 125 -> 140 (3 halvings: 43 / 11)
  [44_000, 'a'], // a: 62 -> 80 < 120: the slow server gets a probe
];
for (const [delta, second] of DECAY) {
  test(`least-time decay: a slow server not checked for ${delta / 1000} s (failTimeout 10 s) -> ${second}`, (t) => {
    const c = clock();
    const p = pool(t, c, {}, { failTimeout: '10s' }, { failTimeout: '10s' });
    assert.equal(
      run(p, 2, (id) => (id === 'a' ? [1000, 1000] : [100, 100])),
      'ab',
    );
    c.advance(delta);
    // b serves first and is re-checked (no decay for it any more); then a's halved time competes
    assert.equal(
      run(p, 1, () => [100, 100]),
      'b',
    );
    assert.equal(
      run(p, 1, (id) => (id === 'a' ? [1000, 1000] : [100, 100])),
      second,
    );
    // a probe re-checks a: its full time counts again
    assert.equal(
      run(p, 3, (id) => (id === 'a' ? [1000, 1000] : [100, 100])),
      'bbb',
    );
  });
}

for (const inflight of [true, false]) {
  test(`least-time inflight=${inflight}: a server whose request has been in flight for 3 s ${inflight ? 'gets no new ones' : 'still shares by active count'}`, (t) => {
    const c = clock();
    const p = pool(t, c, { inflight }, {}, {});
    assert.equal(
      run(p, 2, () => [100, 100]),
      'ab',
    );
    const old = internals(p).select(selection(p))!;
    c.advance(3000);
    const young = internals(p).select(selection(p))!;
    assert.notEqual(young.id, old.id);
    c.advance(1);
    const picks = run(p, 4, () => [100, 100], c);
    if (inflight) assert.equal(picks, young.id.repeat(4));
    else assert.ok(picks.includes(old.id), picks);
    complete(p, old, 3001);
    complete(p, young, 1);
  });
}

test('least-time inflight ages the in-flight requests of backups too when it falls over to them', (t) => {
  const c = clock();
  const p = pool(t, c, { inflight: true }, { down: true }, { backup: true }, { backup: true });
  const old = internals(p).select(selection(p))!;
  assert.equal(old.id, 'b');
  c.advance(3000);
  const young = internals(p).select(selection(p))!;
  assert.equal(young.id, 'c');
  c.advance(1);
  assert.equal(
    run(p, 3, () => [100, 100], c),
    'ccc',
  );
  complete(p, old, 3001);
  complete(p, young, 1);
});

test('least-time: internals(pool).header() ends in-flight accounting only for "header inflight"', (t) => {
  const rows: Array<[measure: 'header' | 'last-byte', inflight: boolean, ends: boolean]> = [
    ['header', true, true],
    ['header', false, false],
    ['last-byte', true, false],
    ['last-byte', false, false],
  ];
  for (const [measure, inflight, ends] of rows) {
    const p = pool(t, clock(), { measure, inflight }, {}, {});
    const peer = internals(p).select(selection(p))!;
    assert.equal(internals(p).header(peer, 10), ends, `${measure} inflight=${inflight}`);
    internals(p).finish(peer, 'ok', { header: 10, response: 20, inflightDone: ends }, 200);
    assert.equal(p.stats().servers[0]!.headerTime, 10);
    assert.equal(p.stats().servers[0]!.responseTime, 20);
  }
});

test('least-time: only successful attempts with a header update the averages (nginx moving average)', (t) => {
  const p = pool(t, clock(), {}, { maxFails: 0 }, { maxFails: 0 });
  const at = (): number => p.stats().servers[0]!.headerTime;
  const attempt = (outcome: 'ok' | 'failed' | 'next', header: number): void => {
    let peer = internals(p).select(selection(p))!;
    while (peer.id !== 'a') {
      complete(p, peer, 10_000);
      peer = internals(p).select(selection(p))!;
    }
    internals(p).finish(peer, outcome, { header, response: header, inflightDone: false }, outcome === 'ok' ? 200 : 502);
  };
  attempt('ok', 200);
  assert.equal(at(), 200, 'first value taken as is');
  attempt('failed', 5000);
  assert.equal(at(), 200);
  attempt('next', 5000);
  assert.equal(at(), 200);
  attempt('ok', -1);
  assert.equal(at(), 200, 'no header: not counted');
  attempt('ok', 400);
  assert.equal(at(), 210, '0.5 + 0.05 x 400 + 0.95 x 200 = 210.5, truncated');
});

test('least-time backup: used only when no primary can take the request', (t) => {
  const c = clock();
  const p = pool(t, c, {}, { maxConns: 1 }, { backup: true });
  const a = internals(p).select(selection(p))!;
  assert.equal(a.id, 'a');
  assert.equal(
    run(p, 2, () => [100, 100]),
    'bb',
  );
  complete(p, a, 5000);
  assert.equal(
    run(p, 2, () => [100, 100]),
    'aa',
    'a is slower but the backup is only for when no primary can serve',
  );
});
