// Smooth weighted round robin (nginx's default method), backups, down / drain / max_conns.
// Expected sequences: nginx-semantics.md 2.1 (verified against nginx 1.22; also in fixtures/sequences.json).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { MethodOption, ServerOptions, UpstreamPool } from '../../src/pool/index.ts';
import { clock, poolOf } from '../helpers.ts';
import { finishOk, selection, sequence } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

/** Servers a, b, c... on distinct ports with the given extra options. */
function servers(...list: Array<Partial<ServerOptions>>): ServerOptions[] {
  return list.map((o, i) => ({ url: `http://127.0.0.1:${19001 + i}`, id: String.fromCharCode(97 + i), ...o }));
}

function pool(t: TestContext, list: ServerOptions[], method: MethodOption = 'round-robin', now?: () => number): UpstreamPool {
  return poolOf(t, list, { name: 'rr', method, now });
}

const SWRR: Array<[string, Array<Partial<ServerOptions>>, string]> = [
  ['{5,1,1}', [{ weight: 5 }, {}, {}], 'aabacaa aabacaa'],
  ['{1,2,3,4}', [{}, { weight: 2 }, { weight: 3 }, { weight: 4 }], 'dcbdacdbcd dcbdacdbcd'],
  ['{1,1,1}', [{}, {}, {}], 'abc abc abc'],
  ['{2,1}', [{ weight: 2 }, {}], 'aba aba aba'],
  ['{1,2}', [{}, { weight: 2 }], 'bab bab'],
  ['{a, b down, c}', [{}, { down: true }, {}], 'acacac'],
  ['{a, b drain, c}: drain gets no unbound requests', [{}, { drain: true }, {}], 'acacac'],
  ['{a down, b, c down}', [{ down: true }, {}, { down: true }], 'bbbb'],
  ['{a, b backup}: backup unused while a primary is up', [{}, { backup: true }], 'aaaa'],
  ['{a down, b backup, c backup weight 2}', [{ down: true }, { backup: true }, { backup: true, weight: 2 }], 'cbc cbc'],
  ['{a weight 3 drain, b weight 2, c}', [{ weight: 3, drain: true }, { weight: 2 }, {}], 'bcb bcb'],
];

for (const [name, list, expected] of SWRR) {
  test(`smooth weighted round robin ${name} -> ${expected}`, (t) => {
    const exp = expected.replace(/ /g, '');
    assert.deepEqual(sequence(pool(t, servers(...list)), exp.length), [...exp]);
  });
}

test('least-conn ties (every server idle) fall to the same SWRR order; least-time too when times and weights are equal', (t) => {
  assert.deepEqual(sequence(pool(t, servers({ weight: 5 }, {}, {}), 'least-conn'), 7), [...'aabacaa']);
  assert.deepEqual(sequence(pool(t, servers({}, {}, {}), 'least-time'), 6), [...'abcabc']);
  // least-time compares time/weight: with equal (clustered) times the heavier server is strictly better
  assert.deepEqual(sequence(pool(t, servers({ weight: 5 }, {}, {}), 'least-time'), 4), [...'aaaa']);
});

test('a server at maxConns is skipped until its request ends; all full -> undefined (no live upstreams)', (t) => {
  const p = pool(t, servers({ maxConns: 1 }, { maxConns: 2 }));
  const held = [internals(p).select(selection(p))!, internals(p).select(selection(p))!, internals(p).select(selection(p))!];
  assert.deepEqual(
    held.map((x) => x.id),
    ['a', 'b', 'b'],
  );
  assert.equal(internals(p).select(selection(p)), undefined);
  finishOk(p, held[1]!);
  assert.equal(internals(p).select(selection(p))?.id, 'b');
  assert.equal(internals(p).select(selection(p)), undefined);
  for (const peer of [held[0]!, held[2]!]) finishOk(p, peer);
});

test('maxConns counts attempts in flight, not weight', (t) => {
  const p = pool(t, servers({ weight: 10, maxConns: 1 }, {}));
  const first = internals(p).select(selection(p))!;
  assert.equal(first.id, 'a');
  assert.deepEqual(sequence(p, 4), ['b', 'b', 'b', 'b']);
  finishOk(p, first);
  assert.equal(internals(p).select(selection(p))?.id, 'a');
});

test('one request never gets the same server twice; after every primary, the backups; then undefined', (t) => {
  const p = pool(t, servers({}, { weight: 3 }, { backup: true }, { backup: true }));
  const sel = selection(p);
  const got: string[] = [];
  for (let peer = internals(p).select(sel); peer !== undefined; peer = internals(p).select(sel)) {
    got.push(peer.id);
    internals(p).finish(peer, 'next', { header: 5, response: 5, inflightDone: false }, 404);
  }
  assert.deepEqual(got, ['b', 'a', 'c', 'd']);
  assert.equal(sel.backup, true);
  assert.equal(internals(p).maxTries(), 4);
});

test('backup is used only when every primary is unavailable (down, failed, full)', (t) => {
  const c = clock();
  const p = pool(t, servers({ maxFails: 1 }, { maxConns: 1 }, { backup: true }), 'round-robin', c.now);
  assert.deepEqual(sequence(p, 4), ['a', 'b', 'a', 'b']);
  p.update('a', { down: true });
  assert.deepEqual(sequence(p, 2), ['b', 'b'], 'one primary left: no backup');
  const held = internals(p).select(selection(p))!;
  assert.equal(held.id, 'b');
  assert.deepEqual(sequence(p, 2), ['c', 'c'], 'a down, b full -> backup');
  finishOk(p, held);
  p.update('a', { down: false });
  // a fails once (maxFails 1): unavailable for failTimeout; b is still there
  const sel = selection(p);
  let peer = internals(p).select(sel)!;
  while (peer.id !== 'a') {
    finishOk(p, peer);
    peer = internals(p).select(selection(p))!;
  }
  internals(p).finish(peer, 'failed', { header: -1, response: 1, inflightDone: false }, undefined);
  assert.deepEqual(sequence(p, 3), ['b', 'b', 'b']);
  c.advance(10_001);
  assert.ok(sequence(p, 3).includes('a'), 'a is back after failTimeout');
});

test('the single-server pool: its only server is chosen until down, drained or full', (t) => {
  const p = pool(t, servers({ maxConns: 1 }));
  const held = internals(p).select(selection(p))!;
  assert.equal(held.id, 'a');
  assert.equal(internals(p).select(selection(p)), undefined, 'full');
  finishOk(p, held);
  p.update('a', { drain: true });
  assert.equal(internals(p).select(selection(p)), undefined, 'draining');
  p.update('a', { drain: false, down: true });
  assert.equal(internals(p).select(selection(p)), undefined, 'down');
  assert.equal(internals(p).maxTries(), 1);
});

test('maxTries is nginx peer.tries: servers neither down nor draining, backups included; 1 for a single server', (t) => {
  assert.equal(internals(pool(t, servers({}, {}, {}))).maxTries(), 3);
  assert.equal(internals(pool(t, servers({}, { down: true }, { backup: true }))).maxTries(), 2);
  assert.equal(internals(pool(t, servers({}, { drain: true }, {}))).maxTries(), 2);
  assert.equal(internals(pool(t, servers({}))).maxTries(), 1);
  assert.equal(internals(pool(t, servers({}, { backup: true }))).maxTries(), 2);
});

test('effective weight: a failure lowers it by weight/maxFails (integer, floor 0); each SWRR pass gives back 1', (t) => {
  const rows: Array<[weight: number, maxFails: number, failures: number, effective: number]> = [
    [10, 2, 1, 5],
    [10, 3, 1, 7],
    [10, 4, 2, 7], // 10-2 = 8, +1 on the next pass, 9-2 = 7
    [10, 2, 2, 1], // 10-5 = 5, +1, 6-5 = 1
    [1, 2, 1, 1],
    [3, 1, 1, 0],
    [6, 5, 3, 5], // 6-1, +1, 6-1, +1, 6-1
    [10, 2, 3, 0], // 5, 6, 1, 2, floor 0
    [10, 0, 3, 10],
  ];
  for (const [weight, maxFails, failures, effective] of rows) {
    const c = clock();
    // b is down so that a is chosen every time and nothing else moves the weights
    const p = pool(t, servers({ weight, maxFails }, { down: true }), 'round-robin', c.now);
    let peer = internals(p).select(selection(p))!;
    for (let i = 0; i < failures; i++) {
      assert.equal(peer.id, 'a');
      internals(p).finish(peer, 'failed', { header: -1, response: 1, inflightDone: false }, undefined);
      c.advance(60_001); // past failTimeout: a can be chosen again
      if (i < failures - 1) peer = internals(p).select(selection(p))!;
    }
    assert.equal(peer.effectiveWeight, effective, `weight ${weight} maxFails ${maxFails} after ${failures} failures`);
    // recovery: +1 per pass where a is considered, up to its weight
    for (let e = effective; e < weight; e++) {
      const again = internals(p).select(selection(p))!;
      assert.equal(again.effectiveWeight, e + 1);
      finishOk(p, again);
    }
    const last = internals(p).select(selection(p))!;
    assert.equal(last.effectiveWeight, weight);
    finishOk(p, last);
  }
});

test('a failure shifts the SWRR share away from the failed server until its effective weight recovers', (t) => {
  // nginx 1.22 gives the same sequence for this setup (fixtures/sequences.json "phweight")
  const p = pool(t, servers({ weight: 10, maxFails: 2 }, {}));
  const sel = selection(p);
  const first = internals(p).select(sel)!;
  assert.equal(first.id, 'a');
  internals(p).finish(first, 'failed', { header: 5, response: 5, inflightDone: false }, 500);
  const retry = internals(p).select(sel)!;
  assert.equal(retry.id, 'b');
  finishOk(p, retry);
  const after = sequence(p, 22).join('');
  assert.equal(after, 'aaabaaaaaaaaabaaaaaaaa');
  // without the failure, b's turns come later
  const q = pool(t, servers({ weight: 10, maxFails: 2 }, {}));
  assert.equal(sequence(q, 22).join(''), 'aaaaabaaaaaaaaaabaaaaa');
});
