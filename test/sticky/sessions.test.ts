// sessions(): only requests their bound server answered count, and what a client sends cannot
// make the bookkeeping grow without bound.
import { strict as assert } from 'node:assert';
import { Agent, request } from 'node:http';
import { test, type TestContext } from 'node:test';
import { balance, chain, createPool, sticky } from '../../src/index.ts';
import { fetchText, gateway, upstream, type Reply } from '../helpers.ts';

test('route mode: a route naming no server is not counted; a bound request counts once its server answered', async (t) => {
  const a = await upstream(t, 'a');
  const b = await upstream(t, 'b');
  const pool = createPool({
    servers: [
      { url: a.url, id: 'a', route: 'ra' },
      { url: b.url, id: 'b', route: 'rb' },
    ],
  });
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
  const pool = createPool({
    servers: [
      { url: a.url, id: 'a' },
      { url: 'http://127.0.0.1:9', id: 'dead', down: true },
    ],
  });
  t.after(() => pool.close());
  const st = sticky(pool, { cookie: true });
  const gw = await gateway(t, chain(st, balance(pool)));
  const cookie = `srv_id=${pool.get('a')!.sid}`;
  const big = 'x'.repeat(16_000);
  for (let i = 0; i < 3; i++) await fetchText(gw.url, { headers: { cookie, 'user-agent': `${big}${i}` } });
  // The three agents differ only beyond the bounded part of the key: one client as far as counting
  // goes, given the cookie by the first answer and back with it in the next requests.
  assert.equal(await st.sessions('a'), 1);
  await fetchText(gw.url, { headers: { cookie, 'user-agent': 'another' } });
  assert.equal(await st.sessions('a'), 1, 'not back with its cookie yet');
  await fetchText(gw.url, { headers: { cookie, 'user-agent': 'another' } });
  assert.equal(await st.sessions('a'), 2);
});

/** `n` GETs over `parallel` keep-alive connections; `headersOf(i)` gives each request's headers. */
async function flood(t: TestContext, url: string, n: number, parallel: number, headersOf: (i: number) => Record<string, string>): Promise<Reply[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: parallel });
  t.after(() => agent.destroy());
  const replies: Reply[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      replies[i] = await new Promise<Reply>((resolve, reject) => {
        const req = request(url, { agent, headers: headersOf(i) }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      });
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return replies;
}

test('cookie mode: rotating user agents with a forged cookie stay within maxSessions and are no sessions; a client back with its cookie is one, until sessionTimeout', async (t) => {
  const a = await upstream(t, 'a');
  const b = await upstream(t, 'b');
  const pool = createPool({
    servers: [
      { url: a.url, id: 'a' },
      { url: b.url, id: 'b' },
    ],
  });
  t.after(() => pool.close());
  let now = 1_800_000_000_000;
  const st = sticky(pool, { cookie: true, maxSessions: 200, sessionTimeout: '10m', now: () => now });
  const gw = await gateway(t, chain(st, balance(pool)));
  const cookie = `srv_id=${pool.get('b')!.sid}`;
  pool.update('b', { drain: true });
  const replies = await flood(t, gw.url, 2000, 16, (i) => ({ cookie, 'user-agent': `bot/${i} ${'x'.repeat(150)}` }));
  assert.ok(
    replies.every((r) => r.status === 200 && r.body === 'b'),
    'a draining server keeps its bound requests',
  );
  assert.ok(st.tracked <= 400, `${st.tracked} clients remembered (maxSessions 200)`);
  assert.equal(await st.sessions('b'), 0, 'no client came back with the cookie it was given');

  // A browser: balanced to a (b drains), then back with the cookie it got.
  const first = await fetchText(gw.url, { headers: { 'user-agent': 'browser' } });
  const given = /srv_id=([^;]+)/.exec(String(first.headers['set-cookie']))![1]!;
  await fetchText(gw.url, { headers: { cookie: `srv_id=${given}`, 'user-agent': 'browser' } });
  assert.equal(await st.sessions('a'), 1);
  now += 10 * 60_000;
  assert.equal(await st.sessions('a'), 0, 'idle for sessionTimeout');
  assert.equal(await st.sessions('b'), 0);
  await fetchText(gw.url, { headers: { 'user-agent': 'later' } });
  assert.ok(st.tracked <= 2, `idle clients dropped (${st.tracked} left)`);
});

test('cookie mode: clients that do come back are bounded by maxSessions, the least recently seen dropped, and expire', async (t) => {
  const b = await upstream(t, 'b');
  const pool = createPool({ servers: [{ url: b.url, id: 'b' }] });
  t.after(() => pool.close());
  let now = 1_800_000_000_000;
  const st = sticky(pool, { cookie: true, maxSessions: 100, sessionTimeout: '1m', now: () => now });
  const gw = await gateway(t, chain(st, balance(pool)));
  const cookie = `srv_id=${pool.get('b')!.sid}`;
  // Each agent twice in a row: given the cookie, then back with it.
  await flood(t, gw.url, 600, 1, (i) => ({ cookie, 'user-agent': `agent-${i >> 1}` }));
  assert.equal(await st.sessions('b'), 100);
  assert.ok(st.tracked <= 200, `${st.tracked} clients remembered`);
  now += 60_000;
  assert.equal(await st.sessions('b'), 0);
});

test('maxSessions is validated', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:9' }] });
  try {
    for (const bad of [0, -1, 1.5, '10'])
      assert.throws(() => sticky(pool, { cookie: true, maxSessions: bad as number }), { code: 'SWY_ERR_INVALID_OPTION', option: 'maxSessions' });
    assert.equal(sticky(pool, { learn: { create: { cookie: 's' }, lookup: { cookie: 's' } } }).tracked, 0);
  } finally {
    pool.close();
  }
});
