// random and random two (least_conn) (nginx-semantics.md 2.6, nginx-tests upstream_random.t).
// Distributions are checked statistically with fixed counts and bounds of 5+ standard deviations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPool, type ServerOptions, type UpstreamPool } from '../../src/pool/index.ts';
import type { Peer } from '../../src/pool/peer.ts';
import { finishOk, selection, sequence } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

type TestContext = { after(fn: () => void): void };

function pool(t: TestContext, method: 'random' | 'random-two' | 'round-robin', ...list: Array<Partial<ServerOptions>>): UpstreamPool {
  const p = createPool({
    name: 'rnd',
    method,
    servers: list.map((o, i) => ({ url: `http://127.0.0.1:${19301 + i}`, id: String.fromCharCode(97 + i), ...o })),
  });
  t.after(() => p.close());
  return p;
}

function counts(ids: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const id of ids) out[id] = (out[id] ?? 0) + 1;
  return out;
}

/** Asserts n·p within 5 standard deviations (and at least ±2 %). */
function near(actual: number | undefined, n: number, p: number, what: string): void {
  const sd = Math.sqrt(n * p * (1 - p));
  const slack = Math.max(5 * sd, 0.02 * n);
  assert.ok(actual !== undefined && Math.abs(actual - n * p) <= slack, `${what}: ${actual} not within ${n * p} ± ${slack.toFixed(0)}`);
}

test('random: shares follow the weights (1:2:3 over 6000 requests)', (t) => {
  const c = counts(sequence(pool(t, 'random', {}, { weight: 2 }, { weight: 3 }), 6000));
  near(c.a, 6000, 1 / 6, 'a');
  near(c.b, 6000, 2 / 6, 'b');
  near(c.c, 6000, 3 / 6, 'c');
});

test('random: equal weights share evenly, and the choice is not a fixed order', (t) => {
  const ids = sequence(pool(t, 'random', {}, {}, {}, {}), 4000);
  const c = counts(ids);
  for (const id of 'abcd') near(c[id], 4000, 1 / 4, id);
  assert.notDeepEqual(ids.slice(0, 16), sequence(pool(t, 'round-robin', {}, {}, {}, {}), 16));
});

test('random: down, draining and full servers are never chosen; the others keep their relative weights', (t) => {
  const p = pool(t, 'random', { down: true, weight: 5 }, { weight: 1 }, { drain: true, weight: 5 }, { weight: 3 }, { maxConns: 1, weight: 5 });
  // fill e
  let e: Peer | undefined;
  while (e === undefined) {
    const peer = internals(p).select(selection(p))!;
    if (peer.id === 'e') e = peer;
    else finishOk(p, peer);
  }
  const c = counts(sequence(p, 4000));
  assert.deepEqual(Object.keys(c).sort(), ['b', 'd']);
  near(c.b, 4000, 1 / 4, 'b');
  finishOk(p, e);
});

test('random-two, every server idle: the second of two distinct weighted draws (1:3 -> a gets 3/4)', (t) => {
  // two distinct draws; with equal loads the second is used. With two servers the second draw is
  // a exactly when the first was b: P = 3/4 (nginx's algorithm, not a 1:3 share)
  const c = counts(sequence(pool(t, 'random-two', {}, { weight: 3 }), 6000));
  near(c.a, 6000, 3 / 4, 'a');
});

test('random-two avoids a loaded server (upstream_random.t): never chosen while another is less loaded', (t) => {
  const p = pool(t, 'random-two', {}, {}, {});
  let busy: Peer | undefined;
  while (busy === undefined) {
    const peer = internals(p).select(selection(p))!;
    if (peer.id === 'a') busy = peer;
    else finishOk(p, peer);
  }
  const c = counts(sequence(p, 3000));
  assert.equal(c.a, undefined);
  near(c.b, 3000, 1 / 2, 'b');
  finishOk(p, busy);
  assert.ok(counts(sequence(p, 600)).a! > 100, 'a is back once idle');
});

test('random-two compares load per unit of weight: 1 in flight on weight 2 beats 1 on weight 1', (t) => {
  const p = pool(t, 'random-two', {}, { weight: 2 });
  const held: Peer[] = [];
  while (held.length < 2 || held[0]!.id === held[1]!.id) {
    for (const x of held.splice(0)) finishOk(p, x);
    held.push(internals(p).select(selection(p))!, internals(p).select(selection(p))!);
  }
  // a: 1/1, b: 1/2 -> b strictly less loaded; with two servers every draw pair is {a, b}
  assert.deepEqual(counts(sequence(p, 200)), { b: 200 });
  for (const x of held) finishOk(p, x);
});

for (const method of ['random', 'random-two'] as const) {
  test(`${method}: one request's retries skip the servers it tried, then undefined`, (t) => {
    for (let round = 0; round < 50; round++) {
      const p = pool(t, method, {}, {}, {});
      const sel = selection(p);
      const got: string[] = [];
      for (let peer = internals(p).select(sel); peer !== undefined; peer = internals(p).select(sel)) {
        got.push(peer.id);
        internals(p).finish(peer, 'next', { header: 1, response: 1, inflightDone: false }, 404);
      }
      assert.deepEqual([...got].sort(), ['a', 'b', 'c'], got.join(''));
    }
  });

  test(`${method}: maxConns respected (upstream_random.t), all full -> undefined`, (t) => {
    const p = pool(t, method, { maxConns: 1 }, { maxConns: 1 }, { maxConns: 2, weight: 2 });
    const held: Peer[] = [];
    for (let i = 0; i < 4; i++) {
      const peer = internals(p).select(selection(p));
      assert.ok(peer !== undefined, `attempt ${i + 1}`);
      held.push(peer);
    }
    assert.deepEqual(held.map((x) => x.id).sort(), ['a', 'b', 'c', 'c']);
    assert.equal(internals(p).select(selection(p)), undefined);
    for (const x of held) finishOk(p, x);
  });
}

test('random-two falls back to round robin after 20 draws without two eligible servers', (t) => {
  const p = pool(t, 'random-two', {}, { down: true, weight: 50 }, { drain: true, weight: 50 });
  const sel = selection(p);
  const peer = internals(p).select(sel);
  assert.equal(peer?.id, 'a');
  assert.equal(sel.tries, 21, 'gave up drawing after 20 retries');
  finishOk(p, peer!);
  assert.deepEqual(sequence(p, 5), ['a', 'a', 'a', 'a', 'a']);
});

test('random falls back to round robin after 20 draws of ineligible servers', (t) => {
  // a is (almost) never drawn (weight 1 of 10^9 + 1): the draws hit b (down) until the retries run out
  const p = pool(t, 'random', {}, { down: true, weight: 1_000_000_000 });
  const sel = selection(p);
  assert.equal(internals(p).select(sel)?.id, 'a');
  assert.equal(sel.tries, 21);
});

test('random with one server takes the round-robin path', (t) => {
  const p = pool(t, 'random', { maxConns: 1 });
  const a = internals(p).select(selection(p))!;
  assert.equal(a.id, 'a');
  assert.equal(internals(p).select(selection(p)), undefined);
  finishOk(p, a);
});
