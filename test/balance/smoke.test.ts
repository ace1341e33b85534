import { test } from 'node:test';
import assert from 'node:assert/strict';
import { balance, chain, createPool } from '../../src/index.ts';
import { deadPort, fetchText, gateway, sequence, upstream } from '../helpers.ts';

test('round robin over three upstreams with weights 5,1,1 gives a a b a c a a', async (t) => {
  const a = await upstream(t, 'a');
  const b = await upstream(t, 'b');
  const c = await upstream(t, 'c');
  const pool = createPool({ servers: [{ url: a.url, weight: 5 }, { url: b.url }, { url: c.url }] });
  t.after(() => pool.close());
  const gw = await gateway(t, chain(balance(pool)));
  assert.deepEqual(await sequence(gw.url, 14), [...'aabacaaaabacaa']);
});

test('connect failure moves on to the next server', async (t) => {
  const a = await upstream(t, 'a');
  const dead = await deadPort();
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${dead}` }, { url: a.url }] });
  t.after(() => pool.close());
  const gw = await gateway(t, chain(balance(pool)));
  const r = await fetchText(gw.url, { method: 'POST', body: 'hello' });
  assert.equal(r.status, 200);
  assert.equal(a.seen[0]!.body, 'hello');
});
