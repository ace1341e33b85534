// random and random two (least_conn) (nginx-semantics.md 2.6, nginx-tests upstream_random.t).
// The pool's `random` option feeds the draws: scripted draws check each choice exactly, and a
// seeded generator checks the shares over many requests (the same numbers on every run, so the
// bounds are a sanity check that cannot flake, not a statistical test).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createPool, InvalidOptionError, type ServerOptions, type UpstreamPool } from '../../src/index.ts';
import type { Peer } from '../../src/pool/peer.ts';
import { poolOf } from '../helpers.ts';
import { finishOk, lettered, seeded, selection, sequence } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

/** Draws given one by one, in a loop; `set` replaces them and starts over. */
interface Script {
  (): number;
  set(...draws: number[]): void;
  /** How many draws were taken. */
  taken: number;
}

function script(...draws: number[]): Script {
  let list = draws;
  const next = (() => {
    const value = list[next.taken % list.length]!;
    next.taken++;
    return value;
  }) as Script;
  next.taken = 0;
  next.set = (...values: number[]) => {
    list = values;
    next.taken = 0;
  };
  return next;
}

/** The draw that lands on unit `k` of `total` weight units (the middle of it). */
function unit(k: number, total: number): number {
  return (k + 0.5) / total;
}

/** Every unit of `total`, in order: one draw per unit. */
function everyUnit(total: number): number[] {
  return Array.from({ length: total }, (_, k) => unit(k, total));
}

function pool(t: TestContext, method: 'random' | 'random-two' | 'round-robin', random: () => number, ...list: Array<Partial<ServerOptions>>): UpstreamPool {
  return poolOf(t, lettered(19301, list), { name: 'rnd', method, random });
}

function counts(ids: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const id of ids) out[id] = (out[id] ?? 0) + 1;
  return out;
}

/** Asserts n·p within 5 standard deviations (and at least ±2 %): a sanity check of the seeded draws. */
function near(actual: number | undefined, n: number, p: number, what: string): void {
  const sd = Math.sqrt(n * p * (1 - p));
  const slack = Math.max(5 * sd, 0.02 * n);
  assert.ok(actual !== undefined && Math.abs(actual - n * p) <= slack, `${what}: ${actual} not within ${n * p} ± ${slack.toFixed(0)}`);
}

test('random: the pool takes its draws from the random option, and checks it is a function', (t) => {
  const rng = script(unit(0, 6));
  const p = pool(t, 'random', rng, {}, { weight: 2 }, { weight: 3 });
  sequence(p, 3);
  assert.equal(rng.taken, 3, 'one draw per request with every server eligible');
  assert.throws(
    () => createPool({ method: 'random', random: 0.5 as never, servers: [{ url: 'http://127.0.0.1:19301' }] }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'random',
  );
});

test('random: a draw picks the server whose weight range holds it (1:2:3 -> a b b c c c)', (t) => {
  const p = pool(t, 'random', script(...everyUnit(6)), {}, { weight: 2 }, { weight: 3 });
  assert.deepEqual(sequence(p, 12), ['a', 'b', 'b', 'c', 'c', 'c', 'a', 'b', 'b', 'c', 'c', 'c']);
});

test('random: shares follow the weights (1:2:3 over 6000 seeded requests)', (t) => {
  const c = counts(sequence(pool(t, 'random', seeded(1), {}, { weight: 2 }, { weight: 3 }), 6000));
  near(c.a, 6000, 1 / 6, 'a');
  near(c.b, 6000, 2 / 6, 'b');
  near(c.c, 6000, 3 / 6, 'c');
});

test('random: equal weights share evenly, and the choice is not a fixed order', (t) => {
  const ids = sequence(pool(t, 'random', seeded(2), {}, {}, {}, {}), 4000);
  const c = counts(ids);
  for (const id of 'abcd') near(c[id], 4000, 1 / 4, id);
  assert.notDeepEqual(ids.slice(0, 16), sequence(pool(t, 'round-robin', Math.random, {}, {}, {}, {}), 16));
});

test('random: down, draining and full servers are never chosen; the others keep their relative weights', (t) => {
  // weights 5 1 5 3 5: a [0, 5) down, b [5, 6), c [6, 11) draining, d [11, 14), e [14, 19) full
  const rng = script(unit(14, 19));
  const p = pool(t, 'random', rng, { down: true, weight: 5 }, { weight: 1 }, { drain: true, weight: 5 }, { weight: 3 }, { maxConns: 1, weight: 5 });
  const e = internals(p).select(selection(p))!;
  assert.equal(e.id, 'e');
  // Every unit drawn in turn: each cycle of 19 draws lands once on b and three times on d.
  rng.set(...everyUnit(19));
  assert.deepEqual(counts(sequence(p, 400)), { b: 100, d: 300 });
  finishOk(p, e);
});

test('random-two, every server idle: the second of two distinct draws is used', (t) => {
  // a [0, 1), b [1, 4): a repeated draw of the same server is drawn again
  const cases: Array<[draws: number[], chosen: string]> = [
    [[unit(1, 4), unit(0, 4)], 'a'],
    [[unit(0, 4), unit(3, 4)], 'b'],
    [[unit(2, 4), unit(3, 4), unit(0, 4)], 'a'],
    [[unit(0, 4), unit(0, 4), unit(2, 4)], 'b'],
  ];
  for (const [draws, chosen] of cases) {
    const rng = script(...draws);
    const p = pool(t, 'random-two', rng, {}, { weight: 3 });
    assert.deepEqual(sequence(p, 1), [chosen], draws.join(' '));
    assert.equal(rng.taken, draws.length, `draws taken for ${draws.join(' ')}`);
  }
});

test("random-two, every server idle: a gets 3/4 of 6000 seeded requests with weights 1:3 (nginx's algorithm, not a 1:3 share)", (t) => {
  // a is chosen exactly when the first draw was b: P = 3/4
  const c = counts(sequence(pool(t, 'random-two', seeded(3), {}, { weight: 3 }), 6000));
  near(c.a, 6000, 3 / 4, 'a');
});

test('random-two avoids a loaded server (upstream_random.t): never chosen while the other of the pair is less loaded', (t) => {
  // b drawn first, then a: a is used, and held
  const rng = script(unit(1, 3), unit(0, 3));
  const p = pool(t, 'random-two', rng, {}, {}, {});
  const busy = internals(p).select(selection(p))!;
  assert.equal(busy.id, 'a');
  const pairs: Array<[draws: number[], chosen: string]> = [
    [[unit(0, 3), unit(1, 3)], 'b'],
    [[unit(1, 3), unit(0, 3)], 'b'],
    [[unit(0, 3), unit(2, 3)], 'c'],
    [[unit(2, 3), unit(0, 3)], 'c'],
    [[unit(1, 3), unit(2, 3)], 'c'],
  ];
  for (const [draws, chosen] of pairs) {
    rng.set(...draws);
    assert.deepEqual(sequence(p, 1), [chosen], draws.join(' '));
  }
  finishOk(p, busy);
  rng.set(unit(1, 3), unit(0, 3));
  assert.deepEqual(sequence(p, 1), ['a'], 'a is back once idle');
});

test('random-two compares load per unit of weight: 1 in flight on weight 2 beats 1 on weight 1', (t) => {
  // a [0, 1), b [1, 3)
  const rng = script(unit(1, 3), unit(0, 3));
  const p = pool(t, 'random-two', rng, {}, { weight: 2 });
  const onA = internals(p).select(selection(p))!;
  rng.set(unit(0, 3), unit(1, 3));
  const onB = internals(p).select(selection(p))!;
  assert.deepEqual([onA.id, onB.id], ['a', 'b']);
  // a: 1/1, b: 1/2 -> b strictly less loaded, whichever comes second in the pair
  rng.set(...everyUnit(3));
  assert.deepEqual(counts(sequence(p, 200)), { b: 200 });
  for (const x of [onA, onB]) finishOk(p, x);
});

for (const method of ['random', 'random-two'] as const) {
  test(`${method}: one request's retries skip the servers it tried, then undefined`, (t) => {
    const rng = seeded(4);
    for (let round = 0; round < 50; round++) {
      const p = pool(t, method, rng, {}, {}, {});
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
    const p = pool(t, method, seeded(5), { maxConns: 1 }, { maxConns: 1 }, { maxConns: 2, weight: 2 });
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
  // every draw lands on b (down)
  const p = pool(t, 'random-two', script(unit(1, 101)), {}, { down: true, weight: 50 }, { drain: true, weight: 50 });
  const sel = selection(p);
  const peer = internals(p).select(sel);
  assert.equal(peer?.id, 'a');
  assert.equal(sel.tries, 21, 'gave up drawing after 20 retries');
  finishOk(p, peer!);
  assert.deepEqual(sequence(p, 5), ['a', 'a', 'a', 'a', 'a']);
});

test('random falls back to round robin after 20 draws of ineligible servers', (t) => {
  // every draw lands on b (down)
  const p = pool(t, 'random', script(unit(1, 2)), {}, { down: true });
  const sel = selection(p);
  assert.equal(internals(p).select(sel)?.id, 'a');
  assert.equal(sel.tries, 21);
});

test('random with one server takes the round-robin path', (t) => {
  const rng = script(0.5);
  const p = pool(t, 'random', rng, { maxConns: 1 });
  const a = internals(p).select(selection(p))!;
  assert.equal(a.id, 'a');
  assert.equal(internals(p).select(selection(p)), undefined);
  assert.equal(rng.taken, 0, 'no draw');
  finishOk(p, a);
});
