// proxy_next_upstream and passive health, end to end (reference §3.1-3.4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BadGatewayError, createPool, GatewayTimeoutError, NoServerAvailableError, type NextUpstreamCondition } from '../../src/index.ts';
import { deadPort, fetchText, upstream } from '../helpers.ts';
import { complete, gatewayFor, rawUpstream, tryFetch, TEST_TIMEOUT } from './support.ts';

const host = (url: string): string => url.slice('http://'.length);

/** An upstream answering `status` with its name as the body and an x-upstream header. */
const answering =
  (status: number) =>
  (_req: IncomingMessage, res: ServerResponse): void => {
    res.statusCode = status;
    res.setHeader('x-upstream', 'bad');
    res.end(`status ${status}`);
  };

test('a refused connection moves on to the next server by default; $upstream_status is 502, 200', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await deadPort();
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url);
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ok');
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.addr, [`127.0.0.1:${port}`, host(ok.url)]);
  assert.deepEqual(gw.log[0]!.status, [502, 200]);
});

test('a header timeout moves on to the next server by default; $upstream_status is 504, 200', { timeout: TEST_TIMEOUT }, async (t) => {
  const slow = await upstream(t, 'slow', () => undefined); // never answers
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: slow.url }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { headerTimeout: 100 });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ok');
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [504, 200]);
  assert.equal(slow.seen.length, 1);
});

test('nextUpstream ["off"] does not retry even a refused connection', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await deadPort();
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { nextUpstream: ['off'] });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 502);
  assert.equal(ok.seen.length, 0);
  await gw.settled(1);
  assert.ok(gw.log[0]!.error instanceof BadGatewayError);
});

const STATUS_CASES: Array<[number, NextUpstreamCondition]> = [
  [500, 'http_500'],
  [502, 'http_502'],
  [503, 'http_503'],
  [504, 'http_504'],
  [429, 'http_429'],
  [403, 'http_403'],
  [404, 'http_404'],
];

for (const [status, condition] of STATUS_CASES) {
  test(`${status} is passed to the client unchanged unless ${condition} is listed`, { timeout: TEST_TIMEOUT }, async (t) => {
    const bad = await upstream(t, 'bad', answering(status));
    const ok = await upstream(t, 'ok');
    const pool = createPool({ servers: [{ url: bad.url }, { url: ok.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool);
    const r = await fetchText(gw.url);
    assert.equal(r.status, status);
    assert.equal(r.body, `status ${status}`);
    assert.equal(r.headers['x-upstream'], 'bad');
    assert.equal(ok.seen.length, 0);
    await gw.settled(1);
    assert.deepEqual(gw.log[0]!.status, [status]);
    assert.equal(pool.stats().servers[0]!.fails, 0, 'an HTTP answer is not a failure unless it is retried');
  });

  test(`${status} moves on to the next server when ${condition} is listed`, { timeout: TEST_TIMEOUT }, async (t) => {
    const bad = await upstream(t, 'bad', answering(status));
    const ok = await upstream(t, 'ok');
    const pool = createPool({ servers: [{ url: bad.url }, { url: ok.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', condition] });
    const r = await fetchText(gw.url);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'ok');
    await gw.settled(1);
    assert.deepEqual(gw.log[0]!.addr, [host(bad.url), host(ok.url)]);
    assert.deepEqual(gw.log[0]!.status, [status, 200]);
    const s = pool.stats().servers;
    // 403 and 404 are never failures (NGX_PEER_NEXT); the 5xx and 429 are when retried.
    assert.equal(s[0]!.fails, status === 403 || status === 404 ? 0 : 1);
    assert.equal(s[0]!.state, status === 403 || status === 404 ? 'up' : 'unavail');
    assert.equal(s[0]!.responses.codes[String(status)], 1);
    assert.equal(s[1]!.responses.codes['200'], 1);
  });
}

test('tries: 3 servers all 404 under http_404 with tries 2 make 2 attempts, $upstream_status 404, 404', { timeout: TEST_TIMEOUT }, async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map((n) => upstream(t, n, answering(404))));
  const pool = createPool({ servers: ups.map((u) => ({ url: u.url })) });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_404'], tries: 2 });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 404);
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [404, 404]);
  assert.equal(
    ups.reduce((n, u) => n + u.seen.length, 0),
    2,
  );
});

test('tries 0: 3 servers all 404 under http_404 are each tried once, $upstream_status 404, 404, 404', { timeout: TEST_TIMEOUT }, async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map((n) => upstream(t, n, answering(404))));
  const pool = createPool({ servers: ups.map((u) => ({ url: u.url })) });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_404'] });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 404);
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [404, 404, 404]);
  assert.deepEqual([...gw.log[0]!.addr].sort(), ups.map((u) => host(u.url)).sort());
  // "not down": 404 under http_404 is not a failure, every server stays in rotation.
  for (const s of pool.stats().servers) {
    assert.equal(s.fails, 0);
    assert.equal(s.state, 'up');
  }
  const again = await fetchText(gw.url);
  assert.equal(again.status, 404);
  await gw.settled(2);
  assert.equal(gw.log[1]!.status.length, 3);
});

test('tries counts backups too: tries 2 with a backup still makes 2 attempts', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await upstream(t, 'a', answering(404));
  const b = await upstream(t, 'b', answering(404));
  const c = await upstream(t, 'c', answering(404));
  const pool = createPool({ servers: [{ url: a.url }, { url: b.url }, { url: c.url, backup: true }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_404'], tries: 2 });
  await fetchText(gw.url);
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [404, 404]);
  assert.equal(c.seen.length, 0);
});

test('nextUpstreamTimeout: no retry once the budget from the first attempt is spent; the answer is passed on', { timeout: TEST_TIMEOUT }, async (t) => {
  const slow502 = await upstream(t, 'slow', (_req, res) => {
    setTimeout(() => {
      res.statusCode = 502;
      res.end('late 502');
    }, 150);
  });
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: slow502.url }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_502'], nextUpstreamTimeout: 100 });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 502);
  assert.equal(r.body, 'late 502');
  assert.equal(ok.seen.length, 0);
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [502]);
});

test('nextUpstreamTimeout: within the budget the retry happens', { timeout: TEST_TIMEOUT }, async (t) => {
  const slow502 = await upstream(t, 'slow', (_req, res) => {
    setTimeout(() => {
      res.statusCode = 502;
      res.end('late 502');
    }, 20);
  });
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: slow502.url }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_502'], nextUpstreamTimeout: 2000 });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 200);
});

test('nextUpstreamTimeout: a timed-out attempt past the budget gives 504 without a retry', { timeout: TEST_TIMEOUT }, async (t) => {
  const hang = await upstream(t, 'hang', () => undefined);
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: hang.url }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { headerTimeout: 120, nextUpstreamTimeout: 100 });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 504);
  assert.equal(ok.seen.length, 0);
  await gw.settled(1);
  assert.ok(gw.log[0]!.error instanceof GatewayTimeoutError);
});

for (const method of ['POST', 'PATCH', 'LOCK']) {
  test(`${method} that reached a server is not re-sent on a listed 502 unless non_idempotent is listed`, { timeout: TEST_TIMEOUT }, async (t) => {
    const bad = await upstream(t, 'bad', answering(502));
    const ok = await upstream(t, 'ok');
    const pool = createPool({ servers: [{ url: bad.url }, { url: ok.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_502'] });
    const r = await fetchText(gw.url, { method, body: 'payload' });
    assert.equal(r.status, 502);
    assert.equal(r.body, 'status 502');
    assert.equal(ok.seen.length, 0);
    assert.equal(bad.seen[0]!.body, 'payload');
  });

  test(`${method} that reached a server is re-sent on a listed 502 with non_idempotent`, { timeout: TEST_TIMEOUT }, async (t) => {
    const bad = await upstream(t, 'bad', answering(502));
    const ok = await upstream(t, 'ok');
    const pool = createPool({ servers: [{ url: bad.url }, { url: ok.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_502', 'non_idempotent'] });
    const r = await fetchText(gw.url, { method, body: 'payload' });
    assert.equal(r.status, 200);
    assert.equal(ok.seen[0]!.method, method);
    assert.equal(ok.seen[0]!.body, 'payload');
  });
}

test('a POST whose connection was reset after it was sent is not re-sent (error, not idempotent)', { timeout: TEST_TIMEOUT }, async (t) => {
  const resetter = await upstream(t, 'reset', (req) => req.socket.destroy());
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: resetter.url }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url, { method: 'POST', body: 'x' });
  assert.equal(r.status, 502);
  assert.equal(ok.seen.length, 0);
  await gw.settled(1);
  assert.ok(gw.log[0]!.error instanceof BadGatewayError);
  assert.deepEqual(gw.log[0]!.status, [502]);
});

test('a PUT whose connection was reset after it was sent is re-sent with its body (idempotent)', { timeout: TEST_TIMEOUT }, async (t) => {
  const resetter = await upstream(t, 'reset', (req) => req.socket.destroy());
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: resetter.url }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url, { method: 'PUT', body: 'x' });
  assert.equal(r.status, 200);
  assert.equal(ok.seen[0]!.body, 'x');
});

test('a POST to a refused port is retried: the request never reached a server', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await deadPort();
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url, { method: 'POST', body: 'hello' });
  assert.equal(r.status, 200);
  assert.equal(ok.seen[0]!.body, 'hello');
});

test("the last attempt's error response goes to the client unchanged, status, headers and body", { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await upstream(t, 'a', (_req, res) => {
    res.writeHead(503, { 'x-from': 'a', 'retry-after': '1' });
    res.end('a is busy');
  });
  const b = await upstream(t, 'b', (_req, res) => {
    res.writeHead(503, { 'x-from': 'b', 'retry-after': '7' });
    res.end('b is busy');
  });
  const pool = createPool({ servers: [{ url: a.url }, { url: b.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_503'] });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 503);
  assert.equal(r.body, 'b is busy');
  assert.equal(r.headers['x-from'], 'b');
  assert.equal(r.headers['retry-after'], '7');
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [503, 503]);
  assert.equal(gw.log[0]!.error, undefined);
});

test('attempts run out on errors: 502 BadGatewayError', { timeout: TEST_TIMEOUT }, async (t) => {
  const p1 = await deadPort();
  const p2 = await deadPort();
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${p1}` }, { url: `http://127.0.0.1:${p2}` }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url);
  assert.equal(r.status, 502);
  await gw.settled(1);
  const err = gw.log[0]!.error as BadGatewayError;
  assert.ok(err instanceof BadGatewayError);
  assert.equal(err.code, 'SWY_ERR_BAD_GATEWAY');
  assert.equal(err.statusCode, 502);
  assert.deepEqual(gw.log[0]!.status, [502, 502]);
});

test('attempts run out on timeouts: 504 GatewayTimeoutError', { timeout: TEST_TIMEOUT }, async (t) => {
  const h1 = await upstream(t, 'h1', () => undefined);
  const h2 = await upstream(t, 'h2', () => undefined);
  const pool = createPool({ servers: [{ url: h1.url }, { url: h2.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { headerTimeout: 80 });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 504);
  await gw.settled(1);
  const err = gw.log[0]!.error as GatewayTimeoutError;
  assert.ok(err instanceof GatewayTimeoutError);
  assert.equal(err.code, 'SWY_ERR_GATEWAY_TIMEOUT');
  assert.deepEqual(gw.log[0]!.status, [504, 504]);
});

test('an invalid response (invalid_header) is a failure: 502, not retried unless listed', { timeout: TEST_TIMEOUT }, async (t) => {
  const garbage = await rawUpstream(t, (s) => s.once('data', () => s.end('this is not http\r\n\r\n')));
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: garbage.url }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url);
  assert.equal(r.status, 502);
  assert.equal(ok.seen.length, 0);
  await gw.settled(1);
  assert.ok(gw.log[0]!.error instanceof BadGatewayError);
  assert.equal(pool.stats().servers[0]!.fails, 1, 'invalid_header always counts as a failure');

  const pool2 = createPool({ servers: [{ url: garbage.url }, { url: ok.url }] });
  t.after(() => pool2.close());
  const gw2 = await gatewayFor(t, pool2, { nextUpstream: ['error', 'timeout', 'invalid_header'] });
  const r2 = await fetchText(gw2.url);
  assert.equal(r2.status, 200);
});

test('no live upstreams after attempts: 502, $upstream_addr ends with the pool name', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await upstream(t, 'a', answering(500));
  const b = await upstream(t, 'b', answering(500));
  const pool = createPool({ name: 'grp', servers: [{ url: a.url }, { url: b.url, down: true }, { url: `http://127.0.0.1:1`, down: true }] });
  t.after(() => pool.close());
  // maxTries counts 1 non-down server: a's 500 is the last attempt and is passed on.
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_500'] });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 500);

  // With two usable servers and the second at max conns, the retry finds none.
  const c = await upstream(t, 'c', answering(500));
  const hold = await upstream(t, 'hold', () => undefined);
  const pool2 = createPool({
    name: 'busy',
    servers: [
      { url: c.url, maxFails: 0 },
      { url: hold.url, maxConns: 1 },
    ],
  });
  t.after(() => pool2.close());
  const gw2 = await gatewayFor(t, pool2, { nextUpstream: ['error', 'timeout', 'http_500'], headerTimeout: 5000 });
  const pending = tryFetch(gw2.url); // c (500, retried) then hold, which never answers
  while (pool2.stats().servers[1]!.active === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  const r2 = await fetchText(gw2.url); // c's 500 is retried, hold is full: no live upstreams
  assert.equal(r2.status, 502);
  await gw2.settled(1);
  assert.deepEqual(gw2.log[0]!.addr, [host(c.url), 'busy']);
  assert.deepEqual(gw2.log[0]!.status, [500, 502]);
  assert.ok(gw2.log[0]!.error instanceof BadGatewayError);
  await hold.close();
  await pending;
});

test('no server at all: 503 NoServerAvailableError by default, 502 with noServerStatus: 502', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await upstream(t, 'a');
  const pool = createPool({
    name: 'off',
    servers: [
      { url: a.url, down: true },
      { url: 'http://127.0.0.1:1', down: true },
    ],
  });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url);
  assert.equal(r.status, 503);
  await gw.settled(1);
  const err = gw.log[0]!.error as NoServerAvailableError;
  assert.ok(err instanceof NoServerAvailableError);
  assert.equal(err.code, 'SWY_ERR_NO_SERVER');
  assert.equal(err.statusCode, 503);
  assert.equal(err.pool, 'off');
  assert.deepEqual(gw.log[0]!.addr, ['off']);
  assert.deepEqual(gw.log[0]!.status, [503]);

  const gw502 = await gatewayFor(t, pool, { noServerStatus: 502 });
  const r502 = await fetchText(gw502.url);
  assert.equal(r502.status, 502);
  await gw502.settled(1);
  assert.ok(gw502.log[0]!.error instanceof NoServerAvailableError);
  assert.equal(a.seen.length, 0);
});

test("reference 3.4 timeline: both 500, http_500, s1 maxFails=2 failTimeout=3s: the last attempt's 500 is not counted", {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const s1 = await upstream(t, 's1', answering(500));
  const s2 = await upstream(t, 's2', answering(500));
  const pool = createPool({ name: 'mf', servers: [{ url: s1.url, maxFails: 2, failTimeout: '3s' }, { url: s2.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_500'], noServerStatus: 502 });
  const S1 = host(s1.url);
  const S2 = host(s2.url);

  const r1 = await fetchText(gw.url);
  assert.equal(r1.status, 500);
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.addr, [S1, S2]);
  assert.deepEqual(gw.log[0]!.status, [500, 500]);
  let st = pool.stats().servers;
  assert.equal(st[0]!.fails, 1, 's1: the retried 500 counts');
  assert.equal(st[1]!.fails, 0, "s2: the last attempt's 500 is a success for max_fails");
  assert.equal(st[1]!.state, 'up');

  const r2 = await fetchText(gw.url);
  assert.equal(r2.status, 500);
  await gw.settled(2);
  assert.deepEqual(gw.log[1]!.addr, [S2, S1]);
  assert.deepEqual(gw.log[1]!.status, [500, 500]);
  st = pool.stats().servers;
  assert.equal(st[1]!.state, 'unavail', 's2 (max_fails=1) failed once, when retried');
  assert.equal(st[0]!.state, 'up', 's1 still has 1 of 2 failures: its last-attempt 500 was not counted');

  const r3 = await fetchText(gw.url);
  assert.equal(r3.status, 502);
  await gw.settled(3);
  assert.deepEqual(gw.log[2]!.addr, [S1, 'mf']);
  assert.deepEqual(gw.log[2]!.status, [500, 502]);
  assert.ok(gw.log[2]!.error instanceof BadGatewayError);

  const r4 = await fetchText(gw.url);
  assert.equal(r4.status, 502);
  await gw.settled(4);
  assert.deepEqual(gw.log[3]!.addr, ['mf']);
  assert.ok(gw.log[3]!.error instanceof NoServerAvailableError);

  st = pool.stats().servers;
  assert.equal(st[0]!.fails, 2);
  assert.equal(st[0]!.unavail, 1);
  assert.equal(st[1]!.fails, 1);
  assert.equal(st[1]!.unavail, 1);
  assert.equal(s1.seen.length, 3);
  assert.equal(s2.seen.length, 2);
  for (const s of st) assert.equal(s.active, 0);
});

test('passive health: a failed server is skipped within failTimeout and stats count fails, unavail and codes', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await deadPort();
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}`, maxFails: 1, failTimeout: '10s' }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  for (let i = 0; i < 4; i++) assert.equal((await fetchText(gw.url)).status, 200);
  await gw.settled(4);
  assert.deepEqual(
    gw.log.map((s) => s.addr.length),
    [2, 1, 1, 1],
  );
  const [dead, live] = pool.stats().servers;
  assert.equal(dead!.fails, 1);
  assert.equal(dead!.unavail, 1);
  assert.equal(dead!.state, 'unavail');
  assert.equal(dead!.requests, 1);
  assert.equal(dead!.active, 0);
  assert.equal(live!.responses.codes['200'], 4);
  assert.equal(live!.responses['2xx'], 4);
  assert.equal(live!.responses.total, 4);
  assert.equal(live!.active, 0);
  assert.equal(live!.fails, 0);
});

test('the connection is never cut once the response began: retry only before anything reached the client', { timeout: TEST_TIMEOUT }, async (t) => {
  // A 500 with a body is the final answer when http_500 is not listed, even if the pool has more servers.
  const a = await upstream(t, 'a', answering(500));
  const b = await upstream(t, 'b');
  const pool = createPool({ servers: [{ url: a.url }, { url: b.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = complete(await tryFetch(gw.url));
  assert.equal(r.status, 500);
  assert.equal(r.body.toString(), 'status 500');
});

test('backup fall-over: refused primaries, then the backup; the next request goes straight to the backup', { timeout: TEST_TIMEOUT }, async (t) => {
  const p1 = await deadPort();
  const p2 = await deadPort();
  const backup = await upstream(t, 'backup');
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${p1}` }, { url: `http://127.0.0.1:${p2}` }, { url: backup.url, backup: true }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  assert.equal((await fetchText(gw.url)).body, 'backup');
  assert.equal((await fetchText(gw.url)).body, 'backup');
  await gw.settled(2);
  assert.deepEqual(gw.log[0]!.addr, [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`, host(backup.url)]);
  assert.deepEqual(gw.log[0]!.status, [502, 502, 200]);
  assert.deepEqual(gw.log[1]!.addr, [host(backup.url)]);
});

test('single server: one attempt, and a failure never makes it unavailable', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await deadPort();
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  for (let i = 0; i < 3; i++) assert.equal((await fetchText(gw.url)).status, 502);
  await gw.settled(3);
  for (const s of gw.log) {
    assert.deepEqual(s.status, [502], 'attempted every time, never "no server"');
    assert.ok(s.error instanceof BadGatewayError);
  }
  assert.equal(pool.stats().servers[0]!.state, 'up');
});

test('two servers with the same url get distinct default ids (nginx allows equal server lines)', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:9' }, { url: 'http://127.0.0.1:9' }] });
  try {
    assert.deepEqual(
      pool.servers.map((s) => s.id),
      ['http://127.0.0.1:9', 'http://127.0.0.1:9#2'],
    );
  } finally {
    pool.close();
  }
});
