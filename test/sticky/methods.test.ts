// sticky() over every balancing method: a bound request goes to its server whatever the method, and
// unbound requests still follow the method. Round robin keeps the configured weights for unbound
// requests while bound ones take their share (nginx TST upstream_sticky.t regression_tests).
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { createPool, type MethodOption } from '../../src/index.ts';
import { finishOk, selection } from '../pool/support.ts';
import { poolOf } from '../helpers.ts';
import { named, sidOf, stickyGateway } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

const METHODS: Array<[string, MethodOption]> = [
  ['round-robin', 'round-robin'],
  ['least-conn', 'least-conn'],
  ['least-time', 'least-time'],
  ['hash $request_uri', { name: 'hash', key: '$request_uri' }],
  ['hash consistent', { name: 'hash', key: '$request_uri', consistent: true }],
  ['ip-hash', 'ip-hash'],
  ['random', 'random'],
  ['random-two', 'random-two'],
];

for (const [name, method] of METHODS) {
  test(`${name}: cookie-bound requests all go to c while it is up; unbound ones follow the method`, async (t) => {
    const ups = await named(t, ['a', 'b', 'c', 'd']);
    const pool = poolOf(t, ups, { method });
    const gw = await stickyGateway(t, pool, { cookie: true });
    const cookie = `srv_id=${sidOf(pool, 'c')}`;
    const unbound: Record<string, string> = {};
    for (let i = 0; i < 40; i++) {
      const path = `/k${i}`;
      const b = await gw.get(path, { cookie });
      assert.equal(b.body, 'c', `bound request ${i}`);
      const u = await gw.get(path);
      assert.equal(u.status, 200);
      unbound[path] = u.body;
    }
    const hit = new Set(Object.values(unbound));
    if (name === 'ip-hash') {
      assert.equal(hit.size, 1, 'one client address → one server');
    } else {
      assert.ok(hit.size > 1, `unbound requests spread: ${[...hit].join(',')}`);
    }
    if (name.startsWith('hash')) {
      // the same key keeps its server
      for (const path of ['/k1', '/k7', '/k33']) assert.equal((await gw.get(path)).body, unbound[path]);
    }
    if (name === 'round-robin') {
      const fresh = poolOf(t, ups, { method });
      const g2 = await stickyGateway(t, fresh, { cookie: true });
      const seq: string[] = [];
      for (let i = 0; i < 8; i++) seq.push((await g2.get()).body);
      assert.deepEqual(seq, ['a', 'b', 'c', 'd', 'a', 'b', 'c', 'd']);
    }
    pool.update('c', { down: true });
    const moved = await gw.get('/k1', { cookie });
    assert.notEqual(moved.body, 'c');
  });
}

/** nginx's get_peer with a sticky peer, as the reference (2.1) describes it. */
function reference(weights: number[], plan: Array<number | undefined>): number[] {
  const peers = weights.map((w) => ({ w, cur: 0, eff: w }));
  const total = weights.reduce((a, b) => a + b, 0);
  const out: number[] = [];
  for (const st of plan) {
    if (st !== undefined && peers[st]!.cur <= -(total - peers[st]!.w)) {
      out.push(st);
      continue;
    }
    let best = -1;
    let sum = 0;
    peers.forEach((p, i) => {
      p.cur += p.eff;
      sum += p.eff;
      if (p.eff < p.w) p.eff++;
      if (best === -1 || p.cur > peers[best]!.cur) best = i;
    });
    if (st !== undefined) best = st;
    peers[best]!.cur -= sum;
    out.push(best);
  }
  return out;
}

function run(plan: Array<number | undefined>): number[] {
  const ids = ['a', 'b', 'c', 'd'];
  const pool = createPool({ servers: ids.map((id, i) => ({ id, url: `http://10.0.0.${i + 1}:80`, weight: i + 1 })) });
  try {
    return plan.map((st) => {
      const sel = selection(pool);
      if (st !== undefined) sel.ex!.hint = pool.get(ids[st]!)!.sid;
      const peer = internals(pool).select(sel);
      assert.ok(peer !== undefined);
      finishOk(pool, peer);
      return ids.indexOf(peer.id);
    });
  } finally {
    pool.close();
  }
}

const PLANS: Array<[string, Array<number | undefined>]> = [
  ['100 bound to d, then 100 unbound', [...Array<number>(100).fill(3), ...Array<undefined>(100).fill(undefined)]],
  ['bound to d interleaved with unbound', Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? 3 : undefined))],
  ['bound to a (weight 1) interleaved', Array.from({ length: 200 }, (_, i) => (i % 3 === 0 ? 0 : undefined))],
  ['bound to b, two of every five', Array.from({ length: 200 }, (_, i) => (i % 5 < 2 ? 1 : undefined))],
];

test('reference implementation: weights 1,2,3,4 unbound give d c b d a c d b c d', () => {
  assert.deepEqual(
    reference([1, 2, 3, 4], Array<undefined>(10).fill(undefined))
      .map((i) => 'abcd'[i])
      .join(' '),
    'd c b d a c d b c d',
  );
});

for (const [name, plan] of PLANS) {
  test(`round robin weight accounting with sticky requests (weights 1,2,3,4): ${name}`, () => {
    const got = run(plan);
    assert.deepEqual(
      got.map((i) => 'abcd'[i]).join(''),
      reference([1, 2, 3, 4], plan)
        .map((i) => 'abcd'[i])
        .join(''),
    );
    plan.forEach((st, i) => {
      if (st !== undefined) assert.equal(got[i], st, `bound request ${i}`);
    });
  });
}

test('after 100 sticky requests to d, new requests keep the 1:2:3:4 distribution (TST upstream_sticky.t)', () => {
  const plan = [...Array<number>(100).fill(3), ...Array<undefined>(100).fill(undefined)];
  const got = run(plan).slice(100);
  const counts = [0, 0, 0, 0];
  for (const i of got) counts[i]!++;
  assert.deepEqual(counts, [10, 20, 30, 40]);
});
