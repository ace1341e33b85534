// NGINX Plus `queue`: requests that find every server at maxConns wait for one to free up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { balance, chain, createPool, InvalidOptionError } from '../../src/index.ts';
import { fetchText, gateway, upstream } from '../helpers.ts';

async function slowPool(t: Parameters<typeof upstream>[0], delay: number, queue?: { size: number; timeout?: number | string }) {
  let inFlight = 0;
  let most = 0;
  const up = await upstream(t, 'slow', (_req, res) => {
    inFlight++;
    most = Math.max(most, inFlight);
    setTimeout(() => {
      inFlight--;
      res.end('ok');
    }, delay);
  });
  const pool = createPool({ servers: [{ url: up.url, maxConns: 1 }], ...(queue === undefined ? {} : { queue }) });
  t?.after(() => pool.close());
  const gw = await gateway(t, chain(balance(pool)));
  return { pool, gw, most: () => most };
}

test('without a queue, a request that finds the only server full fails at once with 503', async (t) => {
  const { gw } = await slowPool(t, 150);
  const statuses = await Promise.all([fetchText(gw.url), fetchText(gw.url)].map((p) => p.then((r) => r.status)));
  assert.deepEqual(statuses.sort(), [200, 503]);
});

test('queued requests wait, first come first served, and maxConns is never exceeded', async (t) => {
  const { gw, pool, most } = await slowPool(t, 60, { size: 5, timeout: '5s' });
  const replies = await Promise.all(Array.from({ length: 4 }, () => fetchText(gw.url)));
  assert.deepEqual(
    replies.map((r) => r.status),
    [200, 200, 200, 200],
  );
  assert.equal(most(), 1);
  assert.deepEqual(pool.stats().queue, { size: 0, maxSize: 5, overflows: 0 });
});

test('past the queue size a request is refused; past the timeout a waiting one is too', async (t) => {
  const full = await slowPool(t, 200, { size: 1, timeout: '5s' });
  const statuses = await Promise.all(Array.from({ length: 3 }, () => fetchText(full.gw.url).then((r) => r.status)));
  assert.deepEqual(statuses.sort(), [200, 200, 503]);
  assert.equal(full.pool.stats().queue?.overflows, 1);

  const slow = await slowPool(t, 300, { size: 5, timeout: 50 });
  const timed = await Promise.all(Array.from({ length: 2 }, () => fetchText(slow.gw.url).then((r) => r.status)));
  assert.deepEqual(timed.sort(), [200, 503]);
  assert.equal(slow.pool.stats().queue?.overflows, 1);
  assert.equal(slow.pool.stats().queue?.size, 0);
});

test('a queue needs a size of at least 1', () => {
  for (const queue of [{}, { size: 0 }, { size: 1.5 }, { size: 2, timeout: 'soon' }]) {
    assert.throws(() => createPool({ servers: [{ url: 'http://127.0.0.1:9' }], queue: queue as never }), InvalidOptionError, JSON.stringify(queue));
  }
});
