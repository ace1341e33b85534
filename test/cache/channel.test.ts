// cache() on diagnostics_channel: each request's cache status is published on
// `switchyard:cache:status` (MISS with its key, a fast-path HIT before any exchange
// record exists, BYPASS for a request with a body), real upstream and gateway.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { createServer } from 'node:http';
import { balance, cache, chain, createPool, type CacheStatusMessage } from '../../src/index.ts';
import { fetchText, listen, upstream } from '../helpers.ts';

test('every cache status is published on switchyard:cache:status (MISS with its key, fast-path HIT, BYPASS)', async (t) => {
  const up = await upstream(t, 'a', (_req, res) => {
    res.setHeader('cache-control', 'max-age=60');
    res.end('cached');
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const c = cache({});
  t.after(() => c.close());
  const gw = await listen(t, createServer(chain(c, balance(pool))));
  const seen: CacheStatusMessage[] = [];
  const onMessage = (m: unknown): void => void seen.push(m as CacheStatusMessage);
  subscribe('switchyard:cache:status', onMessage);
  t.after(() => unsubscribe('switchyard:cache:status', onMessage));

  await fetchText(`${gw.url}/page?x=1`);
  assert.equal((await fetchText(`${gw.url}/page?x=1`)).body, 'cached');
  await fetchText(`${gw.url}/page?x=1`, { method: 'GET', headers: { 'content-type': 'text/plain', 'content-length': '3' }, body: 'fat' });

  assert.deepEqual(
    seen.map((m) => m.status),
    ['MISS', 'HIT', 'BYPASS'],
  );
  assert.equal(seen[0]!.key, `http://127.0.0.1:${gw.port}/page?x=1`, 'the MISS carries its key');
  assert.equal(seen[0]!.ex?.cacheStatus, 'MISS');
  assert.equal(seen[1]!.ex, undefined, 'the fast-path HIT is published before any exchange record is made');
  assert.equal(seen[1]!.req.url, '/page?x=1');
  assert.equal(up.seen.length, 2, 'the HIT did not reach the upstream');
});
