// monitor(): NGINX Plus API (version 9) against live traffic through balance(): real upstreams on
// port 0 and a real gateway `chain(monitor({ prefix: '/status', ... }), cache?, balance(pool))`.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import { test } from 'node:test';
import express from 'express';
import { balance, chain, createPool, healthCheck, monitor } from '../../src/index.ts';
import { cacheJson } from '../../src/monitor/api.ts';
import { RESPONSE_TIME_BUCKETS } from '../../src/pool/peer.ts';
import { fetchText, listen, upstream } from '../helpers.ts';
import { call, getJson, startMonitorGateway, tally, traffic, whoAnswers, type MonitorGateway } from './support.ts';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const HREF = 'https://nginx.org/en/docs/http/ngx_http_api_module.html';
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const admin = { 'x-admin': 'yes' };
const byAdmin = (req: { headers: Record<string, unknown> }): boolean => req.headers['x-admin'] === 'yes';

/** Asserts NGINX Plus's error body and returns it. */
function assertApiError(
  r: { status: number; headers: Record<string, unknown>; body: any; text: string },
  status: number,
  code?: string,
  mention?: string,
): void {
  assert.equal(r.status, status, `status ${r.status} body ${r.text}`);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  assert.deepEqual(Object.keys(r.body).sort(), ['error', 'href', 'request_id']);
  assert.deepEqual(Object.keys(r.body.error).sort(), ['code', 'status', 'text']);
  assert.equal(r.body.error.status, status);
  assert.equal(typeof r.body.error.text, 'string');
  if (code !== undefined) assert.equal(r.body.error.code, code, r.text);
  if (mention !== undefined) assert.ok(r.body.error.text.includes(mention), `error text ${JSON.stringify(r.body.error.text)} should name ${mention}`);
  assert.equal(typeof r.body.request_id, 'string');
  assert.ok(r.body.request_id.length > 0);
  assert.equal(r.body.href, HREF);
}

const peer = (_gw: MonitorGateway, json: any, id: string): any => {
  const p = json.peers.find((x: any) => x.id === id);
  assert.ok(p, `peer ${id} in ${JSON.stringify(json.peers.map((x: any) => x.id))}`);
  return p;
};
const hostPort = (url: string): string => url.replace(/^http:\/\//, '');

test('GET /api lists the versions, /api/9 the root endpoints; unknown versions and paths are 404', async (t) => {
  const gw = await startMonitorGateway(t);
  const versions = await call(`${gw.status}/api`);
  assert.equal(versions.status, 200);
  assert.match(String(versions.headers['content-type']), /^application\/json/);
  assert.deepEqual(versions.body, [9]);
  const root = await call(`${gw.status}/api/9`);
  assert.equal(root.status, 200);
  assert.ok(Array.isArray(root.body));
  for (const name of ['nginx', 'connections', 'http']) assert.ok(root.body.includes(name), `root list has ${name}: ${root.text}`);
  const slash = await call(`${gw.status}/api/9/`);
  assert.deepEqual(slash.body, root.body);
  const http = await call(`${gw.api}/http`);
  assert.equal(http.status, 200);
  for (const name of ['requests', 'upstreams', 'caches']) assert.ok(http.body.includes(name));

  assertApiError(await call(`${gw.status}/api/8/http/upstreams`), 404, 'UnknownVersion');
  assertApiError(await call(`${gw.status}/api/10`), 404, 'UnknownVersion');
  assertApiError(await call(`${gw.api}/nope`), 404);
  assertApiError(await call(`${gw.api}/http/nope`), 404);
  assertApiError(await call(`${gw.status}/nope`), 404);
  // nothing reached the upstreams
  assert.equal(gw.upstreams.a!.seen.length + gw.upstreams.b!.seen.length, 0);
});

test('GET /api/9/http/upstreams/{name}: every peer field follows live traffic (200s, 500s and a dead server)', async (t) => {
  const gw = await startMonitorGateway(t, {
    upstreams: {
      a: undefined,
      b: (_req, res) => {
        res.statusCode = 500;
        res.setHeader('x-upstream', 'b');
        res.end('boom from b');
      },
    },
    dead: 1,
  });
  const before = Date.now();
  const statuses = await traffic(gw.url, 6);
  const all = await call(`${gw.api}/http/upstreams`);
  assert.equal(all.status, 200);
  assert.deepEqual(Object.keys(all.body), ['backend']);
  const one = await call(`${gw.api}/http/upstreams/backend`);
  assert.equal(one.status, 200);
  const u = one.body;
  assert.equal(u.zone, 'backend');
  assert.equal(u.zombies, 0);
  assert.equal(typeof u.keepalive, 'number');
  assert.ok(u.keepalive >= 1, `idle keep-alive connections after traffic: ${u.keepalive}`);
  assert.equal('queue' in u, false, 'no queue without the queue option');
  assert.deepEqual(
    u.peers.map((p: any) => p.id),
    ['a', 'b', 'dead1'],
  );
  // the collection shows the same upstream
  assert.deepEqual(
    all.body.backend.peers.map((p: any) => [p.id, p.requests]),
    u.peers.map((p: any) => [p.id, p.requests]),
  );

  const a = peer(gw, u, 'a');
  const b = peer(gw, u, 'b');
  const d = peer(gw, u, 'dead1');
  const fiveHundreds = statuses.filter((s) => s === 500).length;
  const twoHundreds = statuses.filter((s) => s === 200).length;
  assert.equal(fiveHundreds + twoHundreds, 6, `statuses ${statuses}`);
  // attempts: one per client request to a live server, plus the one that failed on the dead server
  assert.equal(a.requests, twoHundreds);
  assert.equal(b.requests, fiveHundreds);
  assert.equal(d.requests, 1);
  assert.equal(a.requests, gw.upstreams.a!.seen.length);
  assert.equal(b.requests, gw.upstreams.b!.seen.length);

  for (const [p, up] of [
    [a, gw.upstreams.a!],
    [b, gw.upstreams.b!],
  ] as const) {
    assert.equal(p.server, hostPort(up.url));
    assert.equal(p.name, hostPort(up.url));
    assert.equal(p.backup, false);
    assert.equal(p.weight, 1);
    assert.equal(p.state, 'up');
    assert.equal(p.active, 0);
    assert.equal(p.max_conns, 0);
    assert.equal(p.fails, 0, 'a 500 is a response, not a failure, without next-upstream http_500');
    assert.equal(p.unavail, 0);
    assert.ok(p.sent > 0, `sent ${p.sent}`);
    assert.ok(p.received > 0, `received ${p.received}`);
    assert.match(p.selected, ISO);
    assert.ok(Date.parse(p.selected) >= before - 1000 && Date.parse(p.selected) <= Date.now() + 1000);
    assert.equal(p.downtime, 0);
    assert.equal('downstart' in p, false);
    assert.equal(typeof p.header_time, 'number');
    assert.equal(typeof p.response_time, 'number');
    assert.ok(p.header_time >= 0 && p.response_time >= 0);
    assert.deepEqual(p.health_checks, { checks: 0, fails: 0, unhealthy: 0 });
    const h = p.response_time_hist;
    assert.equal(h.count, p.requests);
    assert.equal(typeof h.sum, 'number');
    assert.deepEqual(Object.keys(h.buckets), [...RESPONSE_TIME_BUCKETS.map(String), 'inf']);
    assert.deepEqual(Object.keys(h.buckets), ['5', '10', '25', '50', '75', '100', '250', '500', '750', '1000', '2500', '5000', '7500', '10000', 'inf']);
    assert.equal(
      Object.values(h.buckets as Record<string, number>).reduce((x, y) => x + y, 0),
      h.count,
    );
  }
  assert.deepEqual(a.responses, { '1xx': 0, '2xx': twoHundreds, '3xx': 0, '4xx': 0, '5xx': 0, codes: { '200': twoHundreds }, total: twoHundreds });
  assert.deepEqual(b.responses, { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': fiveHundreds, codes: { '500': fiveHundreds }, total: fiveHundreds });
  // received counts the response bytes: b's body alone is 11 bytes per response
  assert.ok(b.received >= fiveHundreds * 'boom from b'.length);

  assert.equal(d.server, hostPort(gw.dead[0]!));
  assert.equal(d.state, 'unavail');
  assert.equal(d.fails, 1);
  assert.equal(d.unavail, 1);
  assert.equal(d.responses.total, 0);
  assert.deepEqual(d.responses.codes, {});
  assert.equal(d.received, 0);
  assert.match(d.downstart, ISO);
  assert.ok(Date.parse(d.downstart) >= before - 1000 && Date.parse(d.downstart) <= Date.now() + 1000);
  assert.match(d.selected, ISO);
  assert.equal(typeof d.downtime, 'number');
  assert.ok(d.downtime >= 0);
  assert.equal(d.response_time_hist.count, 0);
});

test('health_checks, queue: healthCheck() results and the wait queue show in the upstream', async (t) => {
  const gw = await startMonitorGateway(t, {
    upstreams: { a: undefined, b: (_req, res) => ((res.statusCode = 500), res.end('no')) },
    dead: 1,
    pool: { queue: { size: 7 } },
  });
  const hc = healthCheck(gw.pool, { interval: '1h' });
  t.after(() => hc.stop());
  // Counted exactly: `ready` is the first scheduled probe of each server (the next is an hour away),
  // then check() adds one. (check() right away raced the first scheduled probe: a refused
  // connection could end before it fired, and that server was probed twice.)
  await hc.ready;
  const counts = async (): Promise<any> => {
    const u = await getJson(`${gw.api}/http/upstreams/backend`);
    return Object.fromEntries(['a', 'b', 'dead1'].map((id) => [id, peer(gw, u, id).health_checks]));
  };
  assert.deepEqual(await counts(), {
    a: { checks: 1, fails: 0, unhealthy: 0, last_passed: true },
    b: { checks: 1, fails: 1, unhealthy: 1, last_passed: false },
    dead1: { checks: 1, fails: 1, unhealthy: 1, last_passed: false },
  });
  await hc.check();
  const u = await getJson(`${gw.api}/http/upstreams/backend`);
  assert.deepEqual(u.queue, { size: 0, max_size: 7, overflows: 0 });
  const a = peer(gw, u, 'a');
  const b = peer(gw, u, 'b');
  const d = peer(gw, u, 'dead1');
  assert.equal(a.health_checks.checks, 2);
  assert.equal(a.health_checks.fails, 0);
  assert.equal(a.health_checks.unhealthy, 0);
  assert.equal(a.health_checks.last_passed, true);
  assert.equal(a.state, 'up');
  for (const p of [b, d]) {
    assert.equal(p.health_checks.checks, 2);
    assert.equal(p.health_checks.fails, 2);
    // times it became unhealthy: still once
    assert.equal(p.health_checks.unhealthy, 1);
    assert.equal(p.health_checks.last_passed, false);
    assert.equal(p.state, 'unhealthy');
    assert.match(p.downstart, ISO);
  }
  // unhealthy servers get no traffic
  assert.deepEqual(tally(await whoAnswers(gw.url, 4)), { a: 4 });
});

test('GET …/servers lists NGINX Plus server objects; credentials in a server url never show anywhere', async (t) => {
  const a = await upstream(t, 'a');
  const b = await upstream(t, 'b');
  const gw = await startMonitorGateway(t, {
    upstreams: {},
    servers: () => [{ url: a.url, id: 'a', weight: 2, maxConns: 5, maxFails: 3, route: 'ra' }, { url: `http://sekretuser:hunter2pw@127.0.0.1:${b.port}` }],
    write: () => true,
  });
  await traffic(gw.url, 4);
  assert.ok(b.seen.length > 0, 'the credentialed server got traffic');
  assert.equal(b.seen[0]!.headers.authorization, `Basic ${Buffer.from('sekretuser:hunter2pw').toString('base64')}`);

  const list = await call(`${gw.api}/http/upstreams/backend/servers`);
  assert.equal(list.status, 200);
  assert.equal(list.body.length, 2);
  const [sa, sb] = list.body;
  assert.deepEqual(
    {
      id: sa.id,
      server: sa.server,
      weight: sa.weight,
      max_conns: sa.max_conns,
      max_fails: sa.max_fails,
      fail_timeout: sa.fail_timeout,
      slow_start: sa.slow_start,
      route: sa.route,
      backup: sa.backup,
      down: sa.down,
      drain: sa.drain,
    },
    {
      id: 'a',
      server: hostPort(a.url),
      weight: 2,
      max_conns: 5,
      max_fails: 3,
      fail_timeout: '10s',
      slow_start: '0s',
      route: 'ra',
      backup: false,
      down: false,
      drain: false,
    },
  );
  assert.equal(sb.server, `127.0.0.1:${b.port}`);
  assert.equal(sb.weight, 1);
  assert.equal(sb.max_conns, 0);
  assert.equal(sb.max_fails, 1);
  assert.equal(sb.fail_timeout, '10s');
  assert.equal(sb.slow_start, '0s');
  assert.equal(sb.route, '');
  assert.equal(sb.backup, false);
  assert.equal(sb.down, false);
  assert.equal(sb.drain, false);
  // one server by id (URL-encoded when it is a url)
  const single = await call(`${gw.api}/http/upstreams/backend/servers/${encodeURIComponent(sb.id)}`);
  assert.equal(single.status, 200);
  assert.deepEqual(single.body, sb);

  // every output: JSON endpoints, metrics, dashboard, and the answers to writes
  const outputs = [
    list.text,
    single.text,
    (await call(`${gw.api}/http/upstreams`)).text,
    (await call(`${gw.api}/http/upstreams/backend`)).text,
    (await call(`${gw.api}/switchyard`)).text,
    (await call(`${gw.api}/nginx`)).text,
    (await call(`${gw.metrics}`)).text,
    (await call(`${gw.api}/http/upstreams/backend/servers/${encodeURIComponent(sb.id)}`, { method: 'PATCH', json: { weight: 2 } })).text,
    (await call(`${gw.api}/http/upstreams/backend/servers`, { method: 'POST', json: { url: `http://sekretuser:hunter2pw@127.0.0.1:${a.port}/x`, id: 'c' } }))
      .text,
    (await call(`${gw.api}/http/upstreams/backend/servers/c`, { method: 'DELETE' })).text,
  ];
  for (const text of outputs) {
    assert.ok(text.length > 0);
    assert.ok(!text.includes('sekretuser'), `user name leaked in ${text.slice(0, 300)}`);
    assert.ok(!text.includes('hunter2pw'), `password leaked in ${text.slice(0, 300)}`);
  }
});

test('PATCH drain:true: new requests avoid the server; its state is draining', async (t) => {
  const gw = await startMonitorGateway(t, { upstreams: { a: undefined, b: undefined, c: undefined }, write: () => true });
  assert.deepEqual(tally(await whoAnswers(gw.url, 6)), { a: 2, b: 2, c: 2 });
  const r = await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', json: { drain: true } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.id, 'a');
  assert.equal(r.body.drain, true);
  assert.equal(r.body.down, false);
  assert.equal(gw.pool.get('a')!.drain, true);
  const seenA = gw.upstreams.a!.seen.length;
  assert.deepEqual(tally(await whoAnswers(gw.url, 6)), { b: 3, c: 3 });
  assert.equal(gw.upstreams.a!.seen.length, seenA);
  const u = await getJson(`${gw.api}/http/upstreams/backend`);
  assert.equal(peer(gw, u, 'a').state, 'draining');
  // and back
  const back = await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', json: { drain: false } });
  assert.equal(back.status, 200);
  assert.ok((await whoAnswers(gw.url, 6)).includes('a'));
});

test('PATCH down:true takes the server out; down:false brings it back', async (t) => {
  const gw = await startMonitorGateway(t, { write: () => true });
  const down = await call(`${gw.api}/http/upstreams/backend/servers/b`, { method: 'PATCH', json: { down: true } });
  assert.equal(down.status, 200, down.text);
  assert.equal(down.body.down, true);
  assert.deepEqual(tally(await whoAnswers(gw.url, 4)), { a: 4 });
  const u = await getJson(`${gw.api}/http/upstreams/backend`);
  assert.equal(peer(gw, u, 'b').state, 'down');
  assert.match(peer(gw, u, 'b').downstart, ISO);
  const listed = await getJson(`${gw.api}/http/upstreams/backend/servers/b`);
  assert.equal(listed.down, true);
  const up = await call(`${gw.api}/http/upstreams/backend/servers/b`, { method: 'PATCH', json: { down: false } });
  assert.equal(up.status, 200);
  assert.equal(up.body.down, false);
  assert.deepEqual(tally(await whoAnswers(gw.url, 4)), { a: 2, b: 2 });
  assert.equal(peer(gw, await getJson(`${gw.api}/http/upstreams/backend`), 'b').state, 'up');
});

test('PATCH weight 3: the distribution follows smooth weighted round robin', async (t) => {
  const gw = await startMonitorGateway(t, { write: () => true });
  const r = await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', json: { weight: 3 } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.weight, 3);
  assert.equal(peer(gw, await getJson(`${gw.api}/http/upstreams/backend`), 'a').weight, 3);
  assert.deepEqual(await whoAnswers(gw.url, 8), ['a', 'a', 'b', 'a', 'a', 'a', 'b', 'a']);
});

test('POST …/servers adds a server (201 with it) that gets traffic; DELETE removes it (200 with the rest)', async (t) => {
  const c = await upstream(t, 'c');
  const gw = await startMonitorGateway(t, { write: () => true });
  const added = await call(`${gw.api}/http/upstreams/backend/servers`, { method: 'POST', json: { server: hostPort(c.url), weight: 2 } });
  assert.equal(added.status, 201, added.text);
  assert.equal(added.body.server, hostPort(c.url));
  assert.equal(added.body.weight, 2);
  assert.equal(added.body.max_fails, 1);
  assert.equal(added.body.fail_timeout, '10s');
  assert.equal(added.body.backup, false);
  assert.equal(added.body.down, false);
  assert.equal(typeof added.body.id, 'string');
  const id = added.body.id as string;
  assert.deepEqual(
    gw.pool.servers.map((s) => s.id),
    ['a', 'b', id],
  );
  assert.deepEqual(tally(await whoAnswers(gw.url, 8)), { a: 2, b: 2, c: 4 });
  assert.equal(c.seen.length, 4);
  const list = await getJson(`${gw.api}/http/upstreams/backend/servers`);
  assert.deepEqual(
    list.map((s: any) => s.id),
    ['a', 'b', id],
  );

  const removed = await call(`${gw.api}/http/upstreams/backend/servers/${encodeURIComponent(id)}`, { method: 'DELETE' });
  assert.equal(removed.status, 200, removed.text);
  assert.ok(Array.isArray(removed.body));
  assert.deepEqual(
    removed.body.map((s: any) => s.id),
    ['a', 'b'],
  );
  assert.deepEqual(removed.body[0], (await getJson(`${gw.api}/http/upstreams/backend/servers`))[0]);
  await traffic(gw.url, 6);
  assert.equal(c.seen.length, 4, 'no more traffic to the removed server');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers/${encodeURIComponent(id)}`), 404, 'UpstreamServerNotFound');
  assert.deepEqual(peer(gw, await getJson(`${gw.api}/http/upstreams/backend`), 'a').id, 'a');
});

test('DELETE /http/upstreams/{name} resets the statistics (204); DELETE /http/caches/{name} resets the cache counters', async (t) => {
  const gw = await startMonitorGateway(t, { write: () => true, cache: { valid: '1m', name: 'pages' } });
  await traffic(gw.url, 3, '/one');
  await traffic(gw.url, 2, '/two');
  const before = await getJson(`${gw.api}/http/upstreams/backend`);
  assert.equal(
    before.peers.reduce((n: number, p: any) => n + p.requests, 0),
    2,
  );
  const cacheBefore = await getJson(`${gw.api}/http/caches/pages`);
  assert.equal(cacheBefore.miss.responses, 2);
  assert.equal(cacheBefore.hit.responses, 3);

  const reset = await call(`${gw.api}/http/upstreams/backend`, { method: 'DELETE' });
  assert.equal(reset.status, 204);
  assert.equal(reset.text, '');
  const after = await getJson(`${gw.api}/http/upstreams/backend`);
  for (const p of after.peers) {
    assert.equal(p.requests, 0);
    assert.equal(p.responses.total, 0);
    assert.deepEqual(p.responses.codes, {});
    assert.equal(p.sent, 0);
    assert.equal(p.received, 0);
    assert.equal(p.fails, 0);
    assert.equal(p.response_time_hist.count, 0);
  }
  // servers and their settings stay
  assert.deepEqual(
    after.peers.map((p: any) => p.id),
    ['a', 'b'],
  );

  const cacheReset = await call(`${gw.api}/http/caches/pages`, { method: 'DELETE' });
  assert.equal(cacheReset.status, 204);
  const c = await getJson(`${gw.api}/http/caches/pages`);
  for (const k of ['hit', 'stale', 'updating', 'revalidated', 'miss', 'expired', 'bypass']) assert.equal(c[k].responses, 0, k);
  assert.deepEqual(c, JSON.parse(JSON.stringify(cacheJson(gw.cache!))));
  // the cache still holds its entries: the next request is a hit
  await traffic(gw.url, 1, '/one');
  assert.equal((await getJson(`${gw.api}/http/caches/pages`)).hit.responses, 1);
  assertApiError(await call(`${gw.api}/http/caches/nope`), 404);
});

test("writes are refused by default: 405 MethodDisabled with NGINX Plus's error body, and nothing changes", async (t) => {
  const gw = await startMonitorGateway(t);
  await traffic(gw.url, 2);
  const patch = await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', json: { down: true } });
  assertApiError(patch, 405, 'MethodDisabled');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers`, { method: 'POST', json: { server: '127.0.0.1:1' } }), 405, 'MethodDisabled');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'DELETE' }), 405, 'MethodDisabled');
  assertApiError(await call(`${gw.api}/http/upstreams/backend`, { method: 'DELETE' }), 405, 'MethodDisabled');
  assertApiError(await call(`${gw.api}/connections`, { method: 'DELETE' }), 405, 'MethodDisabled');
  assert.equal(gw.pool.get('a')!.down, false);
  assert.deepEqual(
    gw.pool.servers.map((s) => s.id),
    ['a', 'b'],
  );
  assert.equal(gw.pool.stats().servers[0]!.requests, 1);
  assert.deepEqual(tally(await whoAnswers(gw.url, 2)), { a: 1, b: 1 });
  const sy = await getJson(`${gw.api}/switchyard`);
  assert.equal(sy.write, false);
});

test('write: (req) => predicate: only the requests it accepts can write; /switchyard shows it', async (t) => {
  const gw = await startMonitorGateway(t, { write: byAdmin as never });
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', json: { down: true } }), 405, 'MethodDisabled');
  assertApiError(
    await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', headers: { 'x-admin': 'no' }, json: { down: true } }),
    405,
    'MethodDisabled',
  );
  assert.equal(gw.pool.get('a')!.down, false);
  const ok = await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', headers: admin, json: { down: true } });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(gw.pool.get('a')!.down, true);
  assert.equal((await getJson(`${gw.api}/switchyard`)).write, false);
  const sy = (await call(`${gw.api}/switchyard`, { headers: admin })).body;
  assert.equal(sy.write, true);
  assert.deepEqual(sy.upstreams, ['backend']);
  assert.equal(sy.version, VERSION);
});

test('GET never changes state: ?down=true on a server url does nothing', async (t) => {
  const gw = await startMonitorGateway(t, { write: () => true });
  const r = await call(`${gw.api}/http/upstreams/backend/servers/a?down=true&drain=true&weight=9`);
  assert.equal(r.status, 200);
  assert.equal(r.body.down, false);
  assert.equal(r.body.drain, false);
  assert.equal(r.body.weight, 1);
  const head = await call(`${gw.api}/http/upstreams/backend/servers/a?down=true`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(gw.pool.get('a')!.down, false);
  assert.equal(gw.pool.get('a')!.drain, false);
  assert.deepEqual(tally(await whoAnswers(gw.url, 4)), { a: 2, b: 2 });
});

test('writes need Content-Type application/json: form-encoded, text/plain or none → 415, state unchanged', async (t) => {
  const gw = await startMonitorGateway(t, { write: () => true });
  const url = `${gw.api}/http/upstreams/backend/servers/a`;
  assertApiError(await call(url, { method: 'PATCH', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'down=true' }), 415);
  assertApiError(await call(url, { method: 'PATCH', headers: { 'content-type': 'text/plain' }, body: '{"down":true}' }), 415);
  assertApiError(await call(url, { method: 'PATCH', body: '{"down":true}' }), 415);
  assertApiError(
    await call(`${gw.api}/http/upstreams/backend/servers`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"server":"127.0.0.1:9"}' }),
    415,
  );
  assert.equal(gw.pool.get('a')!.down, false);
  assert.deepEqual(
    gw.pool.servers.map((s) => s.id),
    ['a', 'b'],
  );
  // with a charset parameter it is JSON
  const ok = await call(url, { method: 'PATCH', headers: { 'content-type': 'application/json; charset=utf-8' }, body: '{"weight":2}' });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(gw.pool.get('a')!.weight, 2);
});

test('bad write bodies are 400s naming the field, with NGINX Plus codes; state unchanged', async (t) => {
  const gw = await startMonitorGateway(t, { write: () => true });
  const url = `${gw.api}/http/upstreams/backend/servers/a`;
  const patch = (body: string) => call(url, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body });
  assertApiError(await patch('{"down": tru'), 400, 'JsonError');
  assertApiError(await patch(''), 400, 'JsonError');
  assertApiError(await patch('{"colour": 1}'), 400, 'UpstreamConfFormatError', 'colour');
  assertApiError(await patch('{"weight": "3"}'), 400, 'UpstreamConfFormatError', 'weight');
  assertApiError(await patch('{"down": "yes"}'), 400, 'UpstreamConfFormatError', 'down');
  assertApiError(await patch('{"max_conns": 1.5}'), 400, undefined, 'max_conns');
  assertApiError(await patch('{"weight": 0}'), 400, 'UpstreamBadWeight', 'weight');
  assertApiError(await patch('{"max_fails": -1}'), 400, 'UpstreamBadMaxFails', 'max_fails');
  assertApiError(await patch('{"max_conns": -1}'), 400, 'UpstreamBadMaxConns', 'max_conns');
  assertApiError(await patch('{"weight": {"value": 3}}'), 400, 'UpstreamConfFormatError', 'weight');
  assertApiError(await patch('{"route": ["x"]}'), 400, 'UpstreamConfFormatError', 'route');
  assertApiError(await patch('[{"weight": 3}]'), 400, 'UpstreamConfFormatError');
  assertApiError(await patch('"down"'), 400, 'UpstreamConfFormatError');
  for (const field of ['server', 'backup', 'id']) {
    const value = field === 'backup' ? true : field === 'server' ? '127.0.0.1:9' : 'z';
    assertApiError(await patch(JSON.stringify({ [field]: value })), 400, undefined, field);
  }
  // a valid field with an invalid one: nothing applied
  assertApiError(await patch('{"weight": 5, "colour": 1}'), 400, undefined, 'colour');
  const post = (body: string) => call(`${gw.api}/http/upstreams/backend/servers`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  assertApiError(await post('{"weight": 2}'), 400, 'UpstreamConfFormatError', 'server');
  assertApiError(await post('{"server": "127.0.0.1:9", "weight": 0}'), 400, 'UpstreamBadWeight');
  assertApiError(await post('{"server": "127.0.0.1:9", "flavour": "x"}'), 400, undefined, 'flavour');
  const info = gw.pool.get('a')!;
  assert.equal(info.weight, 1);
  assert.equal(info.down, false);
  assert.equal(info.maxFails, 1);
  assert.equal(info.maxConns, 0);
  assert.equal(info.route, '');
  assert.deepEqual(
    gw.pool.servers.map((s) => s.id),
    ['a', 'b'],
  );
});

test('a write body over maxBodySize → 413', async (t) => {
  const gw = await startMonitorGateway(t, { write: () => true, monitor: { maxBodySize: 64 } });
  const big = JSON.stringify({ route: 'r', pad: 'x'.repeat(500) });
  let reply: Awaited<ReturnType<typeof call>> | undefined;
  let error: unknown;
  try {
    reply = await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', json: JSON.parse(big) });
  } catch (err) {
    error = err;
  }
  assert.equal(error, undefined, `the client got an error instead of a 413: ${String(error)}`);
  assertApiError(reply!, 413);
  assert.equal(gw.pool.get('a')!.route, '');
  // a small body still works
  const ok = await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', json: { route: 'r' } });
  assert.equal(ok.status, 200);
});

test('unknown upstream 404 UpstreamNotFound, unknown server 404 UpstreamServerNotFound, duplicate id 409, backup on hash 400', async (t) => {
  const h1 = await upstream(t, 'h1');
  const hashPool = createPool({ name: 'hashed', method: { name: 'hash', key: '$request_uri' }, servers: [{ url: h1.url, id: 'h1' }] });
  t.after(() => hashPool.close());
  const gw = await startMonitorGateway(t, { write: () => true, monitor: {} });
  // a second monitor with both pools, same gateway style
  const mon = monitor({ pools: { backend: gw.pool, hashed: hashPool }, write: () => true });
  t.after(() => mon.close());
  const g2 = await listen(t, createServer(chain(mon, balance(gw.pool))));

  assertApiError(await call(`${gw.api}/http/upstreams/nope`), 404, 'UpstreamNotFound');
  assertApiError(await call(`${gw.api}/http/upstreams/nope/servers`), 404, 'UpstreamNotFound');
  assertApiError(await call(`${gw.api}/http/upstreams/nope/servers/a`, { method: 'PATCH', json: { down: true } }), 404, 'UpstreamNotFound');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers/zz`), 404, 'UpstreamServerNotFound');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers/zz`, { method: 'PATCH', json: { down: true } }), 404, 'UpstreamServerNotFound');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers/zz`, { method: 'DELETE' }), 404, 'UpstreamServerNotFound');
  const dup = await call(`${gw.api}/http/upstreams/backend/servers`, { method: 'POST', json: { server: hostPort(h1.url), id: 'a' } });
  assertApiError(dup, 409, 'EntryExists');
  assert.deepEqual(
    gw.pool.servers.map((s) => s.id),
    ['a', 'b'],
  );
  const backup = await call(`${g2.url}/api/9/http/upstreams/hashed/servers`, { method: 'POST', json: { server: '127.0.0.1:9', backup: true } });
  assertApiError(backup, 400, 'UpstreamNoBackup');
  assert.deepEqual(
    hashPool.servers.map((s) => s.id),
    ['h1'],
  );
  // a backup on round robin is fine
  const rr = await call(`${g2.url}/api/9/http/upstreams/backend/servers`, { method: 'POST', json: { server: '127.0.0.1:9', backup: true, id: 'spare' } });
  assert.equal(rr.status, 201, rr.text);
  assert.equal(rr.body.backup, true);
  assert.deepEqual(Object.keys(await getJson(`${g2.url}/api/9/http/upstreams`)), ['backend', 'hashed']);
});

test('server ids that are urls work URL-encoded in the path', async (t) => {
  const a = await upstream(t, 'a');
  const b = await upstream(t, 'b');
  const gw = await startMonitorGateway(t, { upstreams: {}, servers: () => [{ url: a.url }, { url: b.url }], write: () => true });
  assert.deepEqual(
    gw.pool.servers.map((s) => s.id),
    [a.url, b.url],
  );
  const path = `${gw.api}/http/upstreams/backend/servers/${encodeURIComponent(a.url)}`;
  const got = await call(path);
  assert.equal(got.status, 200, got.text);
  assert.equal(got.body.id, a.url);
  const patched = await call(path, { method: 'PATCH', json: { down: true } });
  assert.equal(patched.status, 200, patched.text);
  assert.equal(gw.pool.get(a.url)!.down, true);
  assert.deepEqual(tally(await whoAnswers(gw.url, 3)), { b: 3 });
  const removed = await call(path, { method: 'DELETE' });
  assert.equal(removed.status, 200, removed.text);
  assert.deepEqual(
    removed.body.map((s: any) => s.id),
    [b.url],
  );
});

test('mounting: Express app.use("/status", monitor()) without prefix; other paths reach the proxy', async (t) => {
  const a = await upstream(t, 'a');
  const pool = createPool({ name: 'backend', servers: [{ url: a.url, id: 'a' }] });
  t.after(() => pool.close());
  const mon = monitor({ pools: { backend: pool } });
  t.after(() => mon.close());
  const app = express();
  app.use('/status', mon as never);
  app.use(balance(pool) as never);
  const g = await listen(t, createServer(app));
  const api = await call(`${g.url}/status/api`);
  assert.deepEqual(api.body, [9]);
  const u = await call(`${g.url}/status/api/9/http/upstreams/backend`);
  assert.equal(u.status, 200);
  assert.deepEqual(
    u.body.peers.map((p: any) => p.id),
    ['a'],
  );
  assert.equal((await call(`${g.url}/status/metrics`)).status, 200);
  const proxied = await fetchText(`${g.url}/hello`);
  assert.equal(proxied.body, 'a');
  assert.equal(a.seen.at(-1)!.url, '/hello');
  assert.equal((await getJson(`${g.url}/status/api/9/http/upstreams/backend`)).peers[0].requests, 1);
});

test('mounting: prefix in a plain chain(); requests outside it go on to the proxy', async (t) => {
  const gw = await startMonitorGateway(t, { upstreams: { a: undefined } });
  assert.deepEqual((await call(`${gw.url}/status/api`)).body, [9]);
  for (const path of ['/api', '/api/9', '/statusx/api', '/metrics', '/', '/stat']) {
    const r = await fetchText(`${gw.url}${path}`);
    assert.equal(r.status, 200, path);
    assert.equal(r.body, 'a', `${path} answered by the proxy`);
    assert.equal(gw.upstreams.a!.seen.at(-1)!.url, path);
  }
  assert.equal(gw.upstreams.a!.seen.length, 6);
  // prefix with a trailing slash is the same mount
  const mon = monitor({ pools: [gw.pool], prefix: '/ops/' });
  t.after(() => mon.close());
  const g2 = await listen(t, createServer(chain(mon, balance(gw.pool))));
  assert.deepEqual((await call(`${g2.url}/ops/api`)).body, [9]);
  assert.equal((await fetchText(`${g2.url}/opsx`)).body, 'a');
});

test("/api/9/nginx, /connections and /http/requests count the gateway's real connections and requests", async (t) => {
  const gw = await startMonitorGateway(t, { upstreams: { a: undefined } });
  const nginx = await getJson(`${gw.api}/nginx`);
  assert.equal(nginx.version, VERSION);
  assert.equal(nginx.pid, process.pid);
  assert.equal(nginx.ppid, process.ppid);
  assert.match(nginx.load_timestamp, ISO);
  assert.match(nginx.timestamp, ISO);
  assert.equal(typeof nginx.generation, 'number');
  // fresh gateway: 3 keep-alive connections, 5 proxied requests over them
  const g = await startMonitorGateway(t, { upstreams: { a: undefined } });
  const agents = [0, 1, 2].map(() => new Agent({ keepAlive: true, maxSockets: 1 }));
  t.after(() => agents.forEach((x) => x.destroy()));
  const get = (agent: Agent, path: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = request(`${g.url}${path}`, { agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
  for (let i = 0; i < 5; i++) assert.equal((await get(agents[i % 3]!, '/')).status, 200);
  const conns = JSON.parse((await get(agents[0]!, '/status/api/9/connections')).body);
  assert.equal(conns.accepted, 3);
  assert.equal(conns.active, 3);
  assert.equal(conns.dropped, 0);
  assert.equal(typeof conns.idle, 'number');
  const reqs = JSON.parse((await get(agents[1]!, '/status/api/9/http/requests')).body);
  assert.ok(reqs.total >= 5, `requests total ${reqs.total}`);
  assert.equal(reqs.total, 7, 'five proxied requests, the connections query and this one');
  assert.equal(reqs.current, 1, 'only this request is in progress');
  // after close(), the monitor stops counting
  g.mon.close();
  await get(agents[2]!, '/');
  assert.equal(JSON.parse((await get(agents[2]!, '/status/api/9/http/requests')).body).total, 7);
});

test('methods an endpoint does not support are 405 MethodNotSupported even when writes are allowed; nothing changes', async (t) => {
  const gw = await startMonitorGateway(t, { write: () => true });
  assertApiError(await call(`${gw.api}/nginx`, { method: 'PATCH', json: { pid: 1 } }), 405, 'MethodNotSupported');
  assertApiError(await call(`${gw.api}/switchyard`, { method: 'DELETE' }), 405, 'MethodNotSupported');
  assertApiError(await call(`${gw.api}/http/upstreams`, { method: 'DELETE' }), 405, 'MethodNotSupported');
  assertApiError(await call(`${gw.api}/http/upstreams/backend`, { method: 'PATCH', json: { zone: 'x' } }), 405, 'MethodNotSupported');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers`, { method: 'PATCH', json: { down: true } }), 405, 'MethodNotSupported');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers`, { method: 'DELETE' }), 405, 'MethodNotSupported');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'POST', json: { server: '127.0.0.1:9' } }), 405, 'MethodNotSupported');
  assertApiError(await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PUT', json: { down: true } }), 405, 'MethodNotSupported');
  assertApiError(await call(gw.metrics, { method: 'POST', json: {} }), 405);
  assert.deepEqual(
    gw.pool.servers.map((s) => [s.id, s.down]),
    [
      ['a', false],
      ['b', false],
    ],
  );
});
