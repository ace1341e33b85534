// Which runs where, shapeResponse() and cache() (issue 17: "a response hook that sets a header applies
// to HITs, a hook that would change what is stored runs before the cache captures"): shapeResponse()
// before cache() shapes MISSes and HITs alike and nothing of it is stored (a second gateway without it,
// on the same store, HITs without its headers); after cache() it shapes what is stored, and a HIT,
// answered before it, does not run it. A hook that fails before cache() fails the client's answer
// only: the upstream's answer is stored as it came. balance()'s onResponse runs before cache() captures:
// what it does is stored.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { balance, cache, chain, createMemoryStore, type Middleware } from '../../src/index.ts';
import { shapeResponse } from '../../src/shape/index.ts';
import { fetchText, gateway, poolOf, upstream } from '../helpers.ts';

const T = { timeout: 15_000 };

async function setup(t: TestContext) {
  const up = await upstream(t, 'origin', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60', 'x-powered-by': 'origin' });
    res.end(`origin ${req.url}`);
  });
  const pool = poolOf(t, [up.url]);
  const store = createMemoryStore();
  /** A gateway with `before` the cache, the cache on the shared store (keyed without the gateway's port), `after` it, balance() last. */
  const gw = async (before: Middleware[], after: Middleware[] = []) =>
    (await gateway(t, chain(...before, cache({ store, key: '$request_uri' }), ...after, balance(pool)))).url;
  return { up, gw };
}

test('shapeResponse() before cache(): its headers on the MISS and on the HIT, none of them stored', T, async (t) => {
  const { up, gw } = await setup(t);
  let hooked = 0;
  const shape = shapeResponse({
    add: { 'X-Shaped': '$upstream_cache_status' },
    remove: ['x-powered-by'],
    hook(ctx) {
      hooked++;
      ctx.headers.set('X-Hooked', String(hooked));
    },
  });
  const shaped = await gw([shape]);
  const plain = await gw([]);
  const miss = await fetchText(`${shaped}/a`);
  assert.equal(miss.headers['x-cache-status'], 'MISS');
  assert.equal(miss.headers['x-shaped'], 'MISS');
  assert.equal(miss.headers['x-hooked'], '1');
  assert.equal(miss.headers['x-powered-by'], undefined);
  const hit = await fetchText(`${shaped}/a`);
  assert.equal(hit.headers['x-cache-status'], 'HIT');
  assert.equal(hit.headers['x-shaped'], 'HIT');
  assert.equal(hit.headers['x-hooked'], '2', 'the hook runs for the HIT');
  assert.equal(hit.headers['x-powered-by'], undefined);
  assert.equal(hit.body, 'origin /a');
  // The entry as stored: a HIT through a gateway without shapeResponse() on the same store.
  const stored = await fetchText(`${plain}/a`);
  assert.equal(stored.headers['x-cache-status'], 'HIT');
  assert.equal(stored.headers['x-shaped'], undefined);
  assert.equal(stored.headers['x-hooked'], undefined);
  assert.equal(stored.headers['x-powered-by'], 'origin', 'what shapeResponse() removed is still in the entry');
  assert.equal(up.seen.length, 1);
});

test('shapeResponse() after cache(): what it does is stored with the entry, and a HIT does not run it', T, async (t) => {
  const { up, gw } = await setup(t);
  let hooked = 0;
  const shape = shapeResponse({
    set: { 'X-Stored': 'yes' },
    remove: ['x-powered-by'],
    hook() {
      hooked++;
    },
  });
  const shaped = await gw([], [shape]);
  const plain = await gw([]);
  const miss = await fetchText(`${shaped}/b`);
  assert.equal(miss.headers['x-cache-status'], 'MISS');
  assert.equal(miss.headers['x-stored'], 'yes');
  const hit = await fetchText(`${shaped}/b`);
  assert.equal(hit.headers['x-cache-status'], 'HIT');
  assert.equal(hit.headers['x-stored'], 'yes');
  assert.equal(hooked, 1, 'the HIT was answered before shapeResponse()');
  const stored = await fetchText(`${plain}/b`);
  assert.equal(stored.headers['x-stored'], 'yes', 'stored with the entry');
  assert.equal(stored.headers['x-powered-by'], undefined);
  assert.equal(up.seen.length, 1);
});

test("a hook that fails before cache() fails the client's answer only; the upstream's answer is stored as it came", T, async (t) => {
  const { up, gw } = await setup(t);
  let fail = true;
  const shape = shapeResponse({
    hook() {
      if (fail) throw new Error('boom');
    },
  });
  const shaped = await gw([shape]);
  const first = await fetchText(`${shaped}/c`);
  assert.equal(first.status, 500);
  assert.equal(first.body, '500 Internal Server Error\n');
  fail = false;
  const hit = await fetchText(`${shaped}/c`);
  assert.equal(hit.status, 200);
  assert.equal(hit.headers['x-cache-status'], 'HIT');
  assert.equal(hit.body, 'origin /c');
  assert.equal(up.seen.length, 1);
});

test("balance()'s onResponse runs before cache() captures: what it does is stored; shapeResponse() before cache() is not", T, async (t) => {
  const up = await upstream(t, 'origin', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60', 'x-powered-by': 'origin' });
    res.end(`origin ${req.url}`);
  });
  const pool = poolOf(t, [up.url]);
  const store = createMemoryStore();
  let responses = 0;
  let shaped = 0;
  const proxy = balance(pool, {
    onResponse(ctx) {
      responses++;
      ctx.headers.set('X-On-Response', 'stored');
      ctx.headers.delete('x-powered-by');
    },
  });
  const shape = shapeResponse({
    hook(ctx) {
      shaped++;
      ctx.headers.set('X-Shape', `${ctx.ex.cacheStatus}`);
    },
  });
  const withBoth = (await gateway(t, chain(shape, cache({ store, key: '$request_uri' }), proxy))).url;
  const plain = (await gateway(t, chain(cache({ store, key: '$request_uri' }), balance(pool)))).url;
  const miss = await fetchText(`${withBoth}/d`);
  assert.equal(miss.headers['x-cache-status'], 'MISS');
  assert.equal(miss.headers['x-on-response'], 'stored');
  assert.equal(miss.headers['x-shape'], 'MISS');
  assert.equal(miss.headers['x-powered-by'], undefined);
  const hit = await fetchText(`${withBoth}/d`);
  assert.equal(hit.headers['x-cache-status'], 'HIT');
  assert.equal(hit.headers['x-on-response'], 'stored', 'from the entry');
  assert.equal(hit.headers['x-shape'], 'HIT');
  assert.equal(responses, 1, 'a HIT does not reach balance()');
  assert.equal(shaped, 2);
  const stored = await fetchText(`${plain}/d`);
  assert.equal(stored.headers['x-cache-status'], 'HIT');
  assert.equal(stored.headers['x-on-response'], 'stored');
  assert.equal(stored.headers['x-powered-by'], undefined, 'what onResponse removed is not in the entry');
  assert.equal(stored.headers['x-shape'], undefined);
  assert.equal(up.seen.length, 1);
});
