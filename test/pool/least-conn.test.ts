// least_conn: fewest active attempts per unit of weight, ties by SWRR among the tied (nginx-semantics.md 2.2,
// nginx-tests upstream_least_conn.t; the in-flight cases are also recorded from nginx in fixtures/sequences.json).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { ServerOptions, UpstreamPool } from '../../src/pool/index.ts';
import type { Peer } from '../../src/pool/peer.ts';
import { poolOf } from '../helpers.ts';
import { finishOk, lettered, selection, sequence } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

function pool(t: TestContext, ...list: Array<Partial<ServerOptions>>): UpstreamPool {
  return poolOf(t, lettered(19101, list), { name: 'lc', method: 'least-conn' });
}

/** Starts attempts that stay in flight; returns them. */
function hold(p: UpstreamPool, n: number): Peer[] {
  const out: Peer[] = [];
  for (let i = 0; i < n; i++) out.push(internals(p).select(selection(p))!);
  return out;
}

const IDLE: Array<[string, Array<Partial<ServerOptions>>, string]> = [
  ['weights 1 and 2 (verified, nginx 1.31)', [{}, { weight: 2 }], 'babbab babbab'],
  ['weights 1 and 1 (upstream_least_conn.t: 5/5)', [{}, {}], 'ababababab'],
  ['weights 3,1,1', [{ weight: 3 }, {}, {}], 'abaca abaca'],
  ['{a, b down, c}', [{}, { down: true }, {}], 'acac'],
];

for (const [name, list, expected] of IDLE) {
  test(`least-conn, all idle, ${name} -> SWRR ${expected}`, (t) => {
    const exp = expected.replace(/ /g, '');
    assert.deepEqual(sequence(pool(t, ...list), exp.length), [...exp]);
  });
}

test('least-conn: two requests hanging on one server, the next ten go to the other (upstream_least_conn.t)', (t) => {
  const p = pool(t, {}, {});
  const held = hold(p, 4); // a, b (a is busier), b (tie: SWRR), a (fewer)
  assert.deepEqual(
    held.map((x) => x.id),
    ['a', 'b', 'b', 'a'],
  );
  for (const x of held.filter((x) => x.id === 'b')) finishOk(p, x);
  assert.deepEqual(sequence(p, 10), Array(10).fill('b'));
  for (const x of held.filter((x) => x.id === 'a')) finishOk(p, x);
  assert.deepEqual(sequence(p, 2).sort(), ['a', 'b']);
});

test('least-conn: one in flight on each of weights 1 and 2 -> new requests go to the weight-2 server (1/2 < 1/1)', (t) => {
  const p = pool(t, {}, { weight: 2 });
  const held = hold(p, 2);
  assert.deepEqual(
    held.map((x) => x.id),
    ['b', 'a'],
  );
  assert.deepEqual(sequence(p, 4), ['b', 'b', 'b', 'b']);
  // b now holds 2 (2/2 = 1/1): a tie, settled by SWRR among the tied servers
  held.push(internals(p).select(selection(p))!);
  assert.equal(held[2]!.id, 'b');
  const tied = sequence(p, 3);
  assert.deepEqual(tied, ['a', 'b', 'b']);
  for (const x of held) finishOk(p, x);
});

test('least-conn compares conns/weight by cross-multiplying', (t) => {
  const p = pool(t, { weight: 3 }, { weight: 2 });
  const held = hold(p, 3);
  // idle tie -> a; b (0 < 1/3); a (1/3 < 1/2)
  assert.deepEqual(
    held.map((x) => x.id),
    ['a', 'b', 'a'],
  );
  // a: 2/3, b: 1/2 -> b (1*3 < 2*2)
  held.push(internals(p).select(selection(p))!);
  assert.equal(held[3]!.id, 'b');
  // a: 2/3, b: 2/2 -> a (2*2 < 2*3)
  held.push(internals(p).select(selection(p))!);
  assert.equal(held[4]!.id, 'a');
  for (const x of held) finishOk(p, x);
});

test('least-conn: a tried server is skipped by the same request, a full one by all', (t) => {
  const p = pool(t, {}, { maxConns: 1 }, {});
  const sel = selection(p);
  const first = internals(p).select(sel)!;
  assert.equal(first.id, 'a');
  internals(p).finish(first, 'next', { header: 1, response: 1, inflightDone: false }, 404);
  const second = internals(p).select(sel)!;
  assert.equal(second.id, 'b');
  // b is now full (in flight), a was tried by this request: c
  assert.equal(internals(p).select(sel)?.id, 'c');
  assert.equal(internals(p).select(sel), undefined);
  assert.notEqual(internals(p).select(selection(p))?.id, 'b', 'b is full for everyone');
});

test('least-conn backup fall-over: backups only when no primary can take the request, least-conn among them', (t) => {
  const p = pool(t, { maxConns: 1 }, { down: true }, { backup: true }, { backup: true, weight: 2 });
  const a = internals(p).select(selection(p))!;
  assert.equal(a.id, 'a');
  assert.deepEqual(sequence(p, 3), ['d', 'c', 'd'], 'a full, b down: SWRR among idle backups');
  const d = internals(p).select(selection(p))!;
  assert.equal(d.id, 'd');
  assert.equal(internals(p).select(selection(p))?.id, 'c', 'd has 1 in flight (1/2), c none');
  finishOk(p, a);
  assert.deepEqual(sequence(p, 2), ['a', 'a'], 'primary back: backups idle again');
  finishOk(p, d);
});

test('least-conn with a single server takes the round-robin path (full -> undefined)', (t) => {
  const p = pool(t, { maxConns: 1 });
  const a = internals(p).select(selection(p))!;
  assert.equal(a.id, 'a');
  assert.equal(internals(p).select(selection(p)), undefined);
  finishOk(p, a);
  assert.equal(internals(p).select(selection(p))?.id, 'a');
});
