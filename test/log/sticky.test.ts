// $sticky_sid and $sticky_sessid in an access log in front of sticky() and balance(): the sid of the
// server that answered a request sticky() handled, and learn mode's session id, whether the request
// brought it or the server created it. Real upstreams, real cookies.
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { test } from 'node:test';
import { balance } from '../../src/balance/index.ts';
import { chain } from '../../src/core/chain.ts';
import { accessLog } from '../../src/log/index.ts';
import { sticky } from '../../src/sticky/index.ts';
import { fetchText, gateway, poolOf, upstream } from '../helpers.ts';
import { lineCount } from './support.ts';

const FORMAT = '$sticky_sid|$sticky_sessid|$upstream_addr';

/** Two upstreams that answer with their name; `?set=V` makes them set `sid=V`. */
async function pair(t: import('node:test').TestContext) {
  const answer = (name: string) => (req: IncomingMessage, res: ServerResponse) => {
    const set = new URL(req.url ?? '/', 'http://x').searchParams.get('set');
    if (set !== null) res.setHeader('set-cookie', `sid=${set}; path=/`);
    res.end(name);
  };
  const a = await upstream(t, 'a', answer('a'));
  const b = await upstream(t, 'b', answer('b'));
  return { a, b, pool: poolOf(t, [a.url, b.url]) };
}

test('cookie mode: $sticky_sid is the sid of the server that answered, the one its cookie names; $sticky_sessid is empty', async (t) => {
  const { pool } = await pair(t);
  const lines: unknown[] = [];
  const gw = await gateway(t, chain(accessLog({ format: FORMAT, to: (l) => lines.push(l) }), sticky(pool, { cookie: true }), balance(pool)));
  const first = await fetchText(gw.url);
  const cookie = String(first.headers['set-cookie']).split(';')[0]!;
  const second = await fetchText(gw.url, { headers: { cookie } });
  assert.equal(second.body, first.body);
  await lineCount(lines, 2);
  const server = pool.servers[first.body === 'a' ? 0 : 1]!;
  const [sid, sessid, addr] = (lines[0] as string).split('|');
  assert.equal(sid, server.sid);
  assert.equal(cookie, `srv_id=${server.sid}`);
  assert.equal(sessid, '-');
  assert.equal(addr, server.url.slice('http://'.length));
  assert.equal(lines[1], lines[0]);
});

test('learn mode: $sticky_sessid is the session the server created, then the one the request brings; $sticky_sid its server', async (t) => {
  const { pool } = await pair(t);
  const lines: unknown[] = [];
  const gw = await gateway(
    t,
    chain(
      accessLog({ format: FORMAT, to: (l) => lines.push(l) }),
      sticky(pool, { learn: { create: { cookie: 'sid' }, lookup: { cookie: 'sid' } } }),
      balance(pool),
    ),
  );
  const created = await fetchText(`${gw.url}/?set=s-123`);
  const back = await fetchText(`${gw.url}/`, { headers: { cookie: 'sid=s-123' } });
  assert.equal(back.body, created.body);
  const unknown = await fetchText(`${gw.url}/`, { headers: { cookie: 'sid=never-made' } });
  await lineCount(lines, 3);
  const server = pool.servers[created.body === 'a' ? 0 : 1]!;
  const other = pool.servers[unknown.body === 'a' ? 0 : 1]!;
  assert.deepEqual(
    lines.map((l) => (l as string).split('|').slice(0, 2).join('|')),
    [`${server.sid}|s-123`, `${server.sid}|s-123`, `${other.sid}|never-made`],
  );
});

test('without sticky() both are empty, and balance() alone never sets them', async (t) => {
  const { pool } = await pair(t);
  const lines: unknown[] = [];
  const gw = await gateway(t, chain(accessLog({ format: FORMAT, to: (l) => lines.push(l) }), balance(pool)));
  await fetchText(gw.url);
  await lineCount(lines, 1);
  assert.match(lines[0] as string, /^-\|-\|127\.0\.0\.1:\d+$/);
});
