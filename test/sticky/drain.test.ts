// Draining with sticky() (reference 4.5): a draining server keeps its bound clients and takes no new
// ones; sessions() counts bound clients so a drained server can be removed once it reaches zero.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { ServerNotFoundError, type StateChange } from '../../src/index.ts';
import { poolOf } from '../helpers.ts';
import { named, sidOf, stickyGateway } from './support.ts';

test('cookie mode {a, b drain, c}: new requests a c a c a c, b-bound requests b b b; stats and state event', async (t) => {
  const ups = await named(t, ['a', 'b', 'c']);
  const pool = poolOf(t, ups);
  const gw = await stickyGateway(t, pool, { cookie: true });
  const events: StateChange[] = [];
  pool.on('state', (e: StateChange) => events.push(e));
  pool.update('b', { drain: true });
  assert.ok(
    events.some((e) => e.id === 'b' && e.from === 'up' && e.to === 'draining'),
    JSON.stringify(events),
  );
  assert.equal(pool.stats().servers.find((s) => s.id === 'b')!.state, 'draining');
  const fresh: string[] = [];
  for (let i = 0; i < 6; i++) fresh.push((await gw.get()).body);
  assert.deepEqual(fresh, ['a', 'c', 'a', 'c', 'a', 'c']);
  const bound: string[] = [];
  for (let i = 0; i < 3; i++) bound.push((await gw.get('/', { cookie: `srv_id=${sidOf(pool, 'b')}` })).body);
  assert.deepEqual(bound, ['b', 'b', 'b']);
});

test('draining server as the only one left: bound requests reach it, unbound get 503/502', async (t) => {
  const ups = await named(t, ['a', 'b', 'c']);
  const pool = poolOf(t, ups);
  const gw = await stickyGateway(t, pool, { cookie: true }, { noServerStatus: 503 });
  const cookie = `srv_id=${sidOf(pool, 'b')}`;
  pool.update('b', { drain: true });
  pool.remove('a');
  pool.remove('c');
  for (let i = 0; i < 3; i++) {
    const r = await gw.get('/', { cookie });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'b');
  }
  const unbound = await gw.get();
  assert.equal(unbound.status, 503);
});

test('down stops bound requests to a draining server, and so does removing it', async (t) => {
  const ups = await named(t, ['a', 'b', 'c']);
  const pool = poolOf(t, ups);
  const gw = await stickyGateway(t, pool, { cookie: true });
  const cookie = `srv_id=${sidOf(pool, 'b')}`;
  pool.update('b', { drain: true });
  assert.equal((await gw.get('/', { cookie })).body, 'b');
  pool.update('b', { down: true });
  for (let i = 0; i < 3; i++) {
    const r = await gw.get('/', { cookie });
    assert.equal(r.status, 200);
    assert.notEqual(r.body, 'b');
  }
  pool.update('b', { down: false });
  assert.equal((await gw.get('/', { cookie })).body, 'b');
  const before = ups.b!.seen.length;
  pool.remove('b');
  for (let i = 0; i < 3; i++) {
    const r = await gw.get('/', { cookie });
    assert.equal(r.status, 200);
    assert.ok(r.body === 'a' || r.body === 'c');
  }
  assert.equal(ups.b!.seen.length, before);
});

test('down stops bound requests with 502/503 when nothing else is left', async (t) => {
  const ups = await named(t, ['a', 'b']);
  const pool = poolOf(t, ups);
  const gw = await stickyGateway(t, pool, { cookie: true });
  const cookie = `srv_id=${sidOf(pool, 'b')}`;
  pool.update('b', { drain: true });
  pool.remove('a');
  pool.update('b', { down: true });
  const r = await gw.get('/', { cookie });
  assert.ok(r.status === 502 || r.status === 503, String(r.status));
  assert.equal(ups.b!.seen.length, 0);
});

test('sessions() counts distinct clients back with their cookie within sessionTimeout, then 0', async (t) => {
  const ups = await named(t, ['a', 'b', 'c']);
  const pool = poolOf(t, ups);
  let now = 1_800_000_000_000;
  const gw = await stickyGateway(t, pool, { cookie: true, sessionTimeout: '5m', now: () => now });
  const cookie = `srv_id=${sidOf(pool, 'b')}`;
  assert.equal(await gw.mw.sessions('b'), 0);
  // The first bound request of each client gets the cookie; coming back with it makes a session.
  for (const ua of ['ua-1', 'ua-2', 'ua-3', 'ua-1', 'ua-2', 'ua-3', 'ua-1']) await gw.get('/', { cookie, 'user-agent': ua });
  for (let i = 0; i < 2; i++) await gw.get('/', { cookie: `srv_id=${sidOf(pool, 'a')}`, 'user-agent': 'ua-4' });
  await gw.get('/', { 'user-agent': 'ua-5' }); // unbound: not counted anywhere
  await gw.get('/', { cookie, 'user-agent': 'ua-6' }); // not back yet: not counted
  assert.equal(await gw.mw.sessions('b'), 3);
  assert.equal(await gw.mw.sessions('a'), 1);
  assert.equal(await gw.mw.sessions('c'), 0);
  now += 4 * 60_000;
  await gw.get('/', { cookie, 'user-agent': 'ua-2' }); // refreshed
  now += 2 * 60_000;
  assert.equal(await gw.mw.sessions('b'), 1);
  now += 5 * 60_000;
  assert.equal(await gw.mw.sessions('b'), 0);
  assert.equal(await gw.mw.sessions('a'), 0);
});

test('documented workflow: drain, poll sessions until 0, remove', async (t) => {
  const ups = await named(t, ['a', 'b', 'c']);
  const pool = poolOf(t, ups);
  let now = 1_800_000_000_000;
  const gw = await stickyGateway(t, pool, { cookie: true, sessionTimeout: '10m', now: () => now });
  const cookie = `srv_id=${sidOf(pool, 'b')}`;
  for (const ua of ['x', 'y', 'x', 'y']) assert.equal((await gw.get('/', { cookie, 'user-agent': ua })).body, 'b');
  pool.update('b', { drain: true });
  let polls = 0;
  while ((await gw.mw.sessions('b')) > 0) {
    polls++;
    assert.ok(polls < 100, 'sessions never reached 0');
    // clients keep coming for a while, then go away
    if (polls <= 3) assert.equal((await gw.get('/', { cookie, 'user-agent': 'x' })).body, 'b', 'still sticky while draining');
    now += 60_000;
  }
  assert.ok(polls >= 10, `sessions stayed > 0 until the timeout after the last request (${polls} polls)`);
  pool.remove('b');
  assert.equal(pool.get('b'), undefined);
  const r = await gw.get('/', { cookie });
  assert.ok(r.body === 'a' || r.body === 'c');
  await assert.rejects(gw.mw.sessions('b'), ServerNotFoundError);
});

test("sessions('unknown') rejects with ServerNotFoundError", async (t) => {
  const ups = await named(t, ['a']);
  const pool = poolOf(t, ups);
  const gw = await stickyGateway(t, pool, { cookie: true });
  await assert.rejects(gw.mw.sessions('unknown'), ServerNotFoundError);
});

test('route mode: sessions() counts bound routes per server', async (t) => {
  const ups = await named(t, ['a', 'b']);
  const pool = poolOf(t, ups, { extra: { a: { route: 'ra' }, b: { route: 'rb' } } });
  const gw = await stickyGateway(t, pool, { route: { cookie: 'JSESSIONID', pattern: /\.(?<route>\w+)$/ } });
  for (const s of ['s1.rb', 's2.rb', 's1.rb', 's3.ra']) await gw.get('/', { cookie: `JSESSIONID=${s}` });
  assert.equal(await gw.mw.sessions('b'), 2);
  assert.equal(await gw.mw.sessions('a'), 1);
});

test('sessions() accepts the server url or route as well as its id (as documented)', async (t) => {
  const ups = await named(t, ['a', 'b']);
  const pool = poolOf(t, ups, { extra: { b: { route: 'rb' } } });
  const gw = await stickyGateway(t, pool, { cookie: true });
  for (const ua of ['u1', 'u2', 'u1', 'u2']) await gw.get('/', { cookie: 'srv_id=rb', 'user-agent': ua });
  assert.equal(await gw.mw.sessions('b'), 2);
  assert.equal(await gw.mw.sessions('rb'), 2, 'by route');
  assert.equal(await gw.mw.sessions(ups.b!.url), 2, 'by url');
});
