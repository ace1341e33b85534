// sessions(): only requests their bound server answered count, and what a client sends cannot
// make the bookkeeping grow without bound.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { balance, chain, createPool, sticky } from '../../src/index.ts';
import { fetchText, gateway, upstream } from '../helpers.ts';

test('route mode: a route naming no server is not counted; a bound request counts once its server answered', async (t) => {
  const a = await upstream(t, 'a');
  const b = await upstream(t, 'b');
  const pool = createPool({ servers: [{ url: a.url, id: 'a', route: 'ra' }, { url: b.url, id: 'b', route: 'rb' }] });
  t.after(() => pool.close());
  const st = sticky(pool, { route: { query: 'route' } });
  const gw = await gateway(t, chain(st, balance(pool)));
  for (let i = 0; i < 5; i++) await fetchText(`${gw.url}/?route=zz${'x'.repeat(i)}`);
  assert.equal(await st.sessions('a'), 0);
  assert.equal(await st.sessions('b'), 0);
  await fetchText(`${gw.url}/?route=rb`);
  assert.equal(await st.sessions('b'), 1);
  // Down: the bound request is balanced to a, which does not make it a session of a or b.
  pool.update('b', { down: true });
  await fetchText(`${gw.url}/?route=rb&again=1`);
  assert.equal(await st.sessions('a'), 0);
});

test('cookie mode: a 16 KB user agent is counted like any other client, on a bounded key', async (t) => {
  const a = await upstream(t, 'a');
  const pool = createPool({ servers: [{ url: a.url, id: 'a' }, { url: 'http://127.0.0.1:9', id: 'dead', down: true }] });
  t.after(() => pool.close());
  const st = sticky(pool, { cookie: true });
  const gw = await gateway(t, chain(st, balance(pool)));
  const cookie = `srv_id=${pool.get('a')!.sid}`;
  const big = 'x'.repeat(16_000);
  for (let i = 0; i < 3; i++) await fetchText(gw.url, { headers: { cookie, 'user-agent': `${big}${i}` } });
  // The three agents differ only beyond the bounded part of the key: one client as far as counting goes.
  assert.equal(await st.sessions('a'), 1);
  await fetchText(gw.url, { headers: { cookie, 'user-agent': 'another' } });
  assert.equal(await st.sessions('a'), 2);
});
