// Run-time changes (add / remove / update) with requests in flight, the pool's events, and stats().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import {
  createPool,
  InvalidOptionError,
  ServerNotFoundError,
  type MethodOption,
  type ServerInfo,
  type StateChange,
  type UpstreamPool,
} from '../../src/index.ts';
import type { Peer } from '../../src/pool/peer.ts';
import { clock, type Clock } from '../helpers.ts';
import { finishOk, selection, sequence } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

type TestContext = { after(fn: () => void): void };

const md5hex = (text: string): string => createHash('md5').update(text).digest('hex');
const url = (i: number): string => `http://127.0.0.1:${19700 + i}`;

function make(t: TestContext, c: Clock, method: MethodOption = 'round-robin', n = 2): UpstreamPool {
  const p = createPool({
    name: 'rt',
    method,
    servers: Array.from({ length: n }, (_, i) => ({ url: url(i + 1), id: String.fromCharCode(97 + i) })),
    now: c.now,
  });
  t.after(() => p.close());
  return p;
}

/** Collects the pool's events in order. */
function record(p: UpstreamPool): Array<[string, unknown]> {
  const events: Array<[string, unknown]> = [];
  for (const name of ['state', 'add', 'remove', 'update'] as const) p.on(name, (payload: unknown) => events.push([name, payload]));
  return events;
}

const FAILED = { header: -1, response: 1, inflightDone: false };

test('add while requests are in flight: the new server takes its SWRR turn at once; "add" carries its settings', (t) => {
  const p = make(t, clock());
  const events = record(p);
  const held = internals(p).select(selection(p))!;
  assert.equal(held.id, 'a');
  const info = p.add({ url: url(3), id: 'c', weight: 1, maxConns: 7 });
  // nginx's SID without a route: md5 of "127.0.0.1:19703"
  const expected: ServerInfo = {
    id: 'c',
    url: url(3),
    weight: 1,
    maxConns: 7,
    maxFails: 1,
    failTimeout: 10_000,
    backup: false,
    down: false,
    drain: false,
    route: '',
    sid: md5hex('127.0.0.1:19703'),
    slowStart: 0,
    http2: false,
  };
  assert.deepEqual(info, expected);
  assert.deepEqual(p.get('c'), expected);
  assert.deepEqual(events, [['add', expected]]);
  assert.deepEqual(sequence(p, 3), ['b', 'c', 'a']);
  finishOk(p, held);
  assert.equal(p.stats().servers[0]!.active, 0);
});

test('remove while an attempt is in flight: it finishes normally, the server is a zombie until then, never chosen again', (t) => {
  const c = clock();
  const p = make(t, c, 'round-robin', 3);
  const events = record(p);
  const held = internals(p).select(selection(p))!;
  assert.equal(held.id, 'a');
  const removed = p.remove('a');
  assert.equal(removed.id, 'a');
  assert.deepEqual(events, [['remove', removed]]);
  assert.equal(p.stats().zombies, 1);
  assert.deepEqual(
    p.servers.map((s) => s.id),
    ['b', 'c'],
  );
  assert.equal(p.get('a'), undefined);
  assert.deepEqual(sequence(p, 4), ['b', 'c', 'b', 'c']);
  internals(p).finish(held, 'failed', FAILED, undefined); // a failure on a removed server changes nothing any more
  assert.equal(p.stats().zombies, 0);
  assert.deepEqual(events.length, 1, 'no state event for a removed server');
  assert.deepEqual(
    p.stats().servers.map((s) => [s.id, s.active, s.state]),
    [
      ['b', 0, 'up'],
      ['c', 0, 'up'],
    ],
  );
});

for (const method of [
  'least-conn',
  'least-time',
  'random',
  'random-two',
  'ip-hash',
  { name: 'hash', key: '$uri' },
  { name: 'hash', key: '$uri', consistent: true },
] as MethodOption[]) {
  const name = typeof method === 'string' ? method : `hash${'consistent' in method && method.consistent ? ' consistent' : ''}`;
  test(`${name}: remove and add with attempts in flight keep the balancer consistent`, (t) => {
    const p = make(t, clock(), method, 3);
    const held: Peer[] = [];
    for (let i = 0; i < 3; i++) held.push(internals(p).select(selection(p, { url: `/${i}`, clientAddress: `10.0.${i}.1` }))!);
    const gone = held[0]!.id;
    p.remove(gone);
    p.add({ url: url(9), id: 'z' });
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const peer = internals(p).select(selection(p, { url: `/k${i}`, clientAddress: `10.${i}.0.1` }))!;
      assert.notEqual(peer.id, gone);
      seen.add(peer.id);
      finishOk(p, peer);
    }
    assert.ok(seen.has('z'), `the added server gets requests (${[...seen].join(',')})`);
    for (const x of held) finishOk(p, x);
    assert.equal(p.stats().zombies, 0);
    assert.ok(p.stats().servers.every((s) => s.active === 0));
  });
}

test('update: weight, down, drain at run time; "update" carries the new settings, "state" the transition', (t) => {
  const c = clock();
  const p = make(t, c, 'round-robin', 3);
  const events = record(p);
  const held = internals(p).select(selection(p))!;
  assert.equal(held.id, 'a');
  const info = p.update('a', { weight: 3, maxConns: 5, failTimeout: '30s', route: 'r1' });
  assert.deepEqual(info, {
    id: 'a',
    url: url(1),
    weight: 3,
    maxConns: 5,
    maxFails: 1,
    failTimeout: 30_000,
    backup: false,
    down: false,
    drain: false,
    route: 'r1',
    sid: 'r1',
    slowStart: 0,
    http2: false,
  });
  assert.deepEqual(events, [['update', info]]);
  assert.deepEqual(sequence(p, 5), [...'abaca'], 'SWRR with the new weight, a starting afresh');
  p.update('b', { down: true });
  p.update('c', { drain: true });
  assert.deepEqual(
    events.slice(1).map(([name, e]) => (name === 'state' ? `${(e as StateChange).id}:${(e as StateChange).from}->${(e as StateChange).to}` : name)),
    ['update', 'b:up->down', 'update', 'c:up->draining'],
  );
  const change = events.find(([name]) => name === 'state')![1] as StateChange;
  assert.deepEqual(change, { pool: 'rt', id: 'b', server: url(2), from: 'up', to: 'down' });
  assert.deepEqual(sequence(p, 3), ['a', 'a', 'a']);
  finishOk(p, held);
  p.update('b', { down: false });
  assert.deepEqual(events.at(-1), ['state', { pool: 'rt', id: 'b', server: url(2), from: 'down', to: 'up' }]);
});

test('update or remove an unknown id: ServerNotFoundError; removing the last server: InvalidOptionError', (t) => {
  const p = make(t, clock(), 'round-robin', 1);
  assert.throws(
    () => p.update('nope', { weight: 2 }),
    (err: unknown) => err instanceof ServerNotFoundError && err.code === 'SWY_ERR_SERVER_NOT_FOUND' && err.statusCode === 404,
  );
  assert.throws(() => p.remove('nope'), ServerNotFoundError);
  assert.throws(
    () => p.remove('a'),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'id',
  );
  assert.deepEqual(
    p.servers.map((s) => s.id),
    ['a'],
  );
});

test('state events follow passive health: up -> unavail on the failure, unavail -> up once failTimeout has passed', (t) => {
  const c = clock();
  const p = make(t, c);
  const events = record(p);
  const a = internals(p).select(selection(p))!;
  internals(p).finish(a, 'failed', FAILED, undefined);
  assert.deepEqual(events, [['state', { pool: 'rt', id: 'a', server: url(1), from: 'up', to: 'unavail' }]]);
  c.advance(5000);
  p.stats();
  assert.equal(events.length, 1);
  c.advance(5001);
  assert.equal(p.stats().servers[0]!.state, 'up');
  assert.deepEqual(events[1], ['state', { pool: 'rt', id: 'a', server: url(1), from: 'unavail', to: 'up' }]);
  assert.equal(events.length, 2);
});

test('state changes are also published on diagnostics_channel "switchyard:pool:state"', (t) => {
  const p = make(t, clock());
  const got: unknown[] = [];
  const onMessage = (m: unknown): void => {
    got.push(m);
  };
  subscribe('switchyard:pool:state', onMessage);
  t.after(() => unsubscribe('switchyard:pool:state', onMessage));
  p.update('b', { drain: true });
  assert.deepEqual(got, [{ pool: 'rt', id: 'b', server: url(2), from: 'up', to: 'draining' }]);
});

test('stats(): state, active, requests, responses by class and code, fails, unavail, downtime, selected', (t) => {
  const c = clock(Date.UTC(2026, 0, 1));
  const p = createPool({
    name: 'st',
    servers: [
      { url: url(1), id: 'a', maxFails: 2, failTimeout: '10s', weight: 2 },
      { url: url(2), id: 'b', backup: true },
      { url: url(3), id: 'c', down: true },
      { url: url(4), id: 'd', drain: true, route: 'dd' },
    ],
    now: c.now,
  });
  t.after(() => p.close());
  const on = (status: number | 'failed'): void => {
    const peer = internals(p).select(selection(p))!;
    assert.equal(peer.id, 'a');
    if (status === 'failed') internals(p).finish(peer, 'failed', FAILED, undefined);
    else internals(p).finish(peer, 'ok', { header: 40, response: 60, inflightDone: false }, status);
  };
  on(200);
  c.advance(1000);
  on(200);
  on(304);
  on(404);
  on(503);
  on('failed');
  const inflight = internals(p).select(selection(p))!;
  c.advance(1000);
  on('failed'); // second failure within failTimeout: unavailable
  const t0 = c.t;
  c.advance(4000);
  const s = p.stats();
  assert.equal(s.name, 'st');
  assert.equal(s.method, 'round-robin');
  assert.equal(s.zombies, 0);
  const [a, b, cc, d] = s.servers;
  assert.deepEqual(
    { ...a, responses: undefined },
    {
      id: 'a',
      server: url(1),
      name: '127.0.0.1:19701',
      backup: false,
      weight: 2,
      state: 'unavail',
      active: 1,
      maxConns: 0,
      maxFails: 2,
      failTimeout: 10_000,
      route: '',
      requests: 8,
      responses: undefined,
      sent: 0,
      received: 0,
      fails: 2,
      unavail: 1,
      downtime: 4000,
      downstart: new Date(t0).toISOString(),
      selected: new Date(t0).toISOString(),
      headerTime: 40,
      responseTime: 60,
      healthChecks: { checks: 0, fails: 0, unhealthy: 0, lastPassed: undefined },
      responseTimeHist: a!.responseTimeHist,
    },
  );
  assert.equal(a!.responseTimeHist.count, 5);
  assert.equal(
    Object.values(a!.responseTimeHist.buckets).reduce((x, y) => x + y, 0),
    5,
  );
  assert.deepEqual(a!.responses, { '1xx': 0, '2xx': 2, '3xx': 1, '4xx': 1, '5xx': 1, codes: { '200': 2, '304': 1, '404': 1, '503': 1 }, total: 5 });
  assert.deepEqual([b!.state, b!.backup, b!.requests, b!.selected], ['up', true, 0, undefined]);
  assert.deepEqual(
    [cc!.state, cc!.downtime, cc!.downstart],
    ['down', c.t - Date.UTC(2026, 0, 1), new Date(Date.UTC(2026, 0, 1)).toISOString()],
    'down since the pool was created',
  );
  assert.deepEqual([d!.state, d!.downtime, d!.route], ['draining', 0, 'dd']);
  // recovery: downtime stops growing, downstart clears
  c.advance(6001);
  const back = p.stats().servers[0]!;
  assert.deepEqual([back.state, back.downtime, back.downstart], ['up', 10_001, undefined]);
  c.advance(5000);
  assert.equal(p.stats().servers[0]!.downtime, 10_001);
  finishOk(p, inflight);
  assert.equal(p.stats().servers[0]!.active, 0);
  // resetStats zeroes the counters, not the state
  p.resetStats();
  const r = p.stats().servers[0]!;
  assert.deepEqual([r.requests, r.responses.total, r.fails, r.unavail, r.downtime, r.state], [0, 0, 0, 0, 0, 'up']);
  assert.equal(p.stats().servers[2]!.downtime, 0);
});

test('a server configured down or draining starts in that state: no state event for it', (t) => {
  const c = clock();
  const events: unknown[] = [];
  const p = createPool({ servers: [{ url: url(1) }, { url: url(2), down: true }, { url: url(3), drain: true }], now: c.now });
  t.after(() => p.close());
  p.on('state', (e) => events.push(e));
  assert.deepEqual(
    p.stats().servers.map((s) => s.state),
    ['up', 'down', 'draining'],
  );
  p.add({ url: url(4), down: true });
  assert.deepEqual(
    p.stats().servers.map((s) => s.state),
    ['up', 'down', 'draining', 'down'],
  );
  assert.deepEqual(events, []);
});

test('no credentials in servers, get(), stats(), events or ids when a url has user:password', (t) => {
  const c = clock();
  const p = createPool({ servers: [{ url: 'http://admin:s3cret@127.0.0.1:19701/app' }, { url: 'https://ops:pa%40ss@127.0.0.1:19702' }], now: c.now });
  t.after(() => p.close());
  const events: unknown[] = [];
  for (const name of ['state', 'add', 'remove', 'update'] as const) p.on(name, (e: unknown) => events.push(e));
  const ids = p.servers.map((s) => s.id);
  assert.deepEqual(ids, ['http://127.0.0.1:19701/app', 'https://127.0.0.1:19702']);
  const peer = internals(p).select(selection(p))!;
  internals(p).finish(peer, 'failed', FAILED, undefined);
  const added = p.add({ url: 'http://root:hunter2@127.0.0.1:19703' });
  p.update(ids[1]!, { drain: true });
  p.remove(added.id);
  const text = JSON.stringify([p.servers, p.get(ids[0]!), p.stats(), events, added]);
  for (const secret of ['s3cret', 'admin', 'pa%40ss', 'pa@ss', 'ops:', 'hunter2', 'root']) assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
  assert.equal(peer.name, '127.0.0.1:19701');
  assert.equal(peer.target.auth, 'admin:s3cret', 'kept for the upstream request (Basic authorization), never shown');
});
