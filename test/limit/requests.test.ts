// limitRequests(): nginx's limit_req on real sockets, with a manual clock so the verified sequences
// of the reference (nginx-semantics.md §9.1) and nginx-tests' limit_req*.t run without waiting; one
// test on the real clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { chain, exchange, InvalidOptionError, limitRequests, RateLimitedError, type LimitRequestsOptions } from '../../src/index.ts';
import { h2Connect, h2Gateway, h2Request } from '../http2/support.ts';
import { fetchText, gateway, until } from '../helpers.ts';
import { limited, ManualClock, statuses, tick } from './support.ts';

/** A gateway behind limitRequests(options) on a manual clock. */
async function setup(t: import('node:test').TestContext, options: LimitRequestsOptions) {
  const clock = new ManualClock();
  const limit = limitRequests({ clock, ...options });
  const gw = await limited(t, limit);
  return { clock, limit, url: gw.url };
}

test('1r/s: 200 503 503 503 503 (reference, rapid sequential)', async (t) => {
  const { url, limit } = await setup(t, { key: '$remote_addr', rate: '1r/s' });
  assert.deepEqual(await statuses(url, 5), [200, 503, 503, 503, 503]);
  assert.deepEqual(limit.stats(), { limit_req: { passed: 1, delayed: 0, rejected: 4, delayedDryRun: 0, rejectedDryRun: 0 } });
});

test('2r/s burst=1 nodelay: 200 200 503 503 503', async (t) => {
  const { url } = await setup(t, { key: '$remote_addr', rate: '2r/s', burst: 1, nodelay: true });
  assert.deepEqual(await statuses(url, 5), [200, 200, 503, 503, 503]);
});

test('1r/s burst=3 nodelay: four 200 then 503', async (t) => {
  const { url } = await setup(t, { key: '$remote_addr', rate: '1r/s', burst: 3, nodelay: true });
  assert.deepEqual(await statuses(url, 5), [200, 200, 200, 200, 503]);
});

test('rejected requests are not counted: access again after 1/rate (limit_req.t)', async (t) => {
  const { url, clock } = await setup(t, { key: '$remote_addr', rate: '2r/s', burst: 1, nodelay: true });
  assert.deepEqual(await statuses(url, 4), [200, 200, 503, 503]);
  clock.advance(500);
  // Had the two rejections been stored, the excess would still be above the burst.
  assert.deepEqual(await statuses(url, 2), [200, 503]);
});

test('negative excess is handled: a fast zone drained long ago passes (limit_req.t)', async (t) => {
  const { url, clock } = await setup(t, { key: '$remote_addr', rate: '1000r/s', burst: 1 });
  assert.equal((await fetchText(url)).status, 200);
  clock.advance(100);
  assert.equal((await fetchText(url)).status, 200);
});

/** Sends `n` requests at once; resolves with each one's status and when it ended (by the manual clock), in order of sending. */
function concurrent(url: string, n: number, clock: ManualClock): Promise<Array<{ status: number; at: number }>> {
  return Promise.all(Array.from({ length: n }, () => fetchText(url).then((r) => ({ status: r.status, at: clock.now() }))));
}

test('five concurrent with 1r/s burst=3: one at once, three delayed 1 s, 2 s, 3 s, one rejected', async (t) => {
  const { url, clock, limit } = await setup(t, { key: '$remote_addr', rate: '1r/s', burst: 3 });
  const start = clock.now();
  const all = concurrent(url, 5, clock);
  await until(() => limit.waiting === 3, 5000, 'three delayed');
  // One timer for the three waiting requests.
  assert.equal(clock.pending, 1);
  for (const step of [999, 1, 999, 1, 1000]) {
    clock.advance(step);
    await tick();
  }
  const results = await all;
  const ok = results
    .filter((r) => r.status === 200)
    .map((r) => r.at - start)
    .sort((a, b) => a - b);
  assert.deepEqual(ok, [0, 1000, 2000, 3000]);
  assert.equal(results.filter((r) => r.status === 503).length, 1);
  assert.equal(clock.pending, 0);
  assert.deepEqual(limit.stats().limit_req, { passed: 1, delayed: 3, rejected: 1, delayedDryRun: 0, rejectedDryRun: 0 });
});

test('burst=3 delay=1: two at once, two delayed 1 s and 2 s, one rejected', async (t) => {
  const { url, clock, limit } = await setup(t, { key: '$remote_addr', rate: '1r/s', burst: 3, delay: 1 });
  const start = clock.now();
  const all = concurrent(url, 5, clock);
  await until(() => limit.waiting === 2, 5000, 'two delayed');
  for (const step of [1000, 1000]) {
    clock.advance(step);
    await tick();
  }
  const results = await all;
  assert.deepEqual(
    results
      .filter((r) => r.status === 200)
      .map((r) => r.at - start)
      .sort((a, b) => a - b),
    [0, 0, 1000, 2000],
  );
  assert.equal(results.filter((r) => r.status === 503).length, 1);
});

test('30r/m delay=1 burst=2: first two at once, the third delayed, the fourth 503 (limit_req_delay.t)', async (t) => {
  const { url, clock, limit } = await setup(t, { key: '$remote_addr', rate: '30r/m', burst: 2, delay: 1 });
  assert.deepEqual(await statuses(url, 2), [200, 200]);
  const third = fetchText(url);
  await until(() => limit.waiting === 1, 5000, 'the third delayed');
  assert.equal((await fetchText(url)).status, 503);
  // 30r/m is 500 milli-requests per second: excess 2000 over delay 1000 waits 2 s.
  clock.advance(1999);
  await tick();
  assert.equal(limit.waiting, 1);
  clock.advance(1);
  const r = await third;
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-limit-req'], 'DELAYED');
});

test('several limits: the strictest applies, and no key means no limit (limit_req2.t)', async (t) => {
  for (const nodelay of [false, true]) {
    const clock = new ManualClock();
    const limit = limitRequests({
      clock,
      limits: [
        { key: '$arg_b', rate: '1000r/s', name: 'fast', nodelay },
        { key: '$arg_a', rate: '1r/m', name: 'slow', nodelay },
      ],
    });
    const { url } = await limited(t, limit);
    const step = async (query: string): Promise<number> => {
      const s = (await fetchText(`${url}/t1.html${query}`)).status;
      clock.advance(100);
      return s;
    };
    assert.deepEqual([await step('?b=1'), await step('?b=1')], [200, 200], 'fast');
    assert.deepEqual([await step('?a=1'), await step('?a=1')], [200, 503], 'slow');
    assert.deepEqual([await step('?a=2&b=2'), await step('?a=2&b=2')], [200, 503], 'both');
    assert.deepEqual([await step(''), await step('')], [200, 200], 'no key');
    assert.equal((await fetchText(`${url}/`)).headers['x-limit-req'], '-', 'no key: $limit_req_status is empty');
  }
});

test('a request another limit rejects is not accounted in the limits before it', async (t) => {
  const clock = new ManualClock();
  const limit = limitRequests({
    clock,
    limits: [
      { key: '$remote_addr', rate: '1r/s', burst: 1, nodelay: true, name: 'wide' },
      { key: '$arg_user', rate: '1r/s', name: 'narrow' },
    ],
  });
  const { url } = await limited(t, limit);
  assert.equal((await fetchText(`${url}/?user=a`)).status, 200);
  // `narrow` rejects user a: `wide` must not count these.
  assert.deepEqual(await statuses(`${url}/?user=a`, 3), [503, 503, 503]);
  // `wide` has one request in it (excess 0): another user passes once more (burst 1), then 503.
  assert.deepEqual(await statuses(`${url}/?user=b`, 1), [200]);
  assert.deepEqual(await statuses(`${url}/?user=c`, 1), [503]);
  assert.deepEqual(limit.stats().wide, { passed: 2, delayed: 0, rejected: 1, delayedDryRun: 0, rejectedDryRun: 0 });
  assert.equal(limit.stats().narrow?.rejected, 3);
});

test('several limits: the longest delay applies', async (t) => {
  const clock = new ManualClock();
  const limit = limitRequests({
    clock,
    limits: [
      { key: '$remote_addr', rate: '1r/s', burst: 5, name: 'a' },
      { key: '$remote_addr', rate: '2r/s', burst: 5, name: 'b' },
    ],
  });
  const { url } = await limited(t, limit);
  assert.equal((await fetchText(url)).status, 200);
  const second = fetchText(url);
  await until(() => limit.waiting === 1);
  // a asks 1000 ms, b 500 ms: 1000 ms.
  clock.advance(999);
  await tick();
  assert.equal(limit.waiting, 1);
  clock.advance(1);
  assert.equal((await second).status, 200);
});

test('dry run: PASSED, DELAYED_DRY_RUN, REJECTED_DRY_RUN, every request through (limit_req_dry_run.t)', async (t) => {
  const clock = new ManualClock();
  const delay = limitRequests({ clock, key: '$remote_addr', rate: '1r/m', burst: 2, dryRun: true, name: 'delay' });
  const reject = limitRequests({ clock, key: '$remote_addr', rate: '1r/m', dryRun: true, name: 'reject' });
  const off = limitRequests({ clock, key: '$remote_addr', rate: '1r/m', name: 'off' });
  const d = await limited(t, delay);
  const r = await limited(t, reject);
  const o = await limited(t, off);
  const a = await fetchText(d.url);
  const b = await fetchText(d.url);
  assert.deepEqual([a.status, a.headers['x-limit-req']], [200, 'PASSED']);
  assert.deepEqual([b.status, b.headers['x-limit-req']], [200, 'DELAYED_DRY_RUN']);
  await fetchText(r.url);
  const c = await fetchText(r.url);
  assert.deepEqual([c.status, c.headers['x-limit-req']], [200, 'REJECTED_DRY_RUN']);
  await fetchText(o.url);
  assert.equal((await fetchText(o.url)).status, 503);
  assert.equal(delay.waiting, 0);
  assert.deepEqual(delay.stats().delay, { passed: 1, delayed: 0, rejected: 0, delayedDryRun: 1, rejectedDryRun: 0 });
  assert.deepEqual(reject.stats().reject, { passed: 1, delayed: 0, rejected: 0, delayedDryRun: 0, rejectedDryRun: 1 });
});

test('the rejection is a RateLimitedError through next(err), with the status option', async (t) => {
  const errors: unknown[] = [];
  const limit = limitRequests({ clock: new ManualClock(), key: '$remote_addr', rate: '1r/s', status: 429, name: 'per_ip' });
  const gw = await gateway(
    t,
    chain(limit, (_req, res) => res.end('ok'), {
      final: (err, req, res) => {
        errors.push(err);
        res.statusCode = (err as RateLimitedError).statusCode;
        res.end(exchange(req).limitStatus?.req);
      },
    }),
  );
  assert.equal((await fetchText(gw.url)).status, 200);
  const r = await fetchText(gw.url);
  assert.equal(r.status, 429);
  assert.equal(r.body, 'REJECTED');
  const err = errors[0] as RateLimitedError;
  assert.ok(err instanceof RateLimitedError);
  assert.equal(err.code, 'SWY_ERR_RATE_LIMITED');
  assert.equal(err.zone, 'per_ip');
});

test('keys: variables, a function, an empty key is not limited', async (t) => {
  const clock = new ManualClock();
  const byHeader = limitRequests({ clock, key: '$http_x_api_key', rate: '1r/s' });
  const gw = await limited(t, byHeader);
  assert.deepEqual(await statuses(gw.url, 2, { 'x-api-key': 'k1' }), [200, 503]);
  assert.deepEqual(await statuses(gw.url, 2, { 'x-api-key': 'k2' }), [200, 503]);
  assert.deepEqual(await statuses(gw.url, 3), [200, 200, 200]);
  const byFn = limitRequests({ clock, key: (req) => (req.url?.startsWith('/free') ? '' : 'all'), rate: '1r/s' });
  const gw2 = await limited(t, byFn);
  assert.deepEqual(await statuses(`${gw2.url}/paid`, 2), [200, 503]);
  assert.deepEqual(await statuses(`${gw2.url}/free`, 2), [200, 200]);
  const throwing = limitRequests({
    clock,
    key: () => {
      throw new Error('key failed');
    },
    rate: '1r/s',
  });
  assert.equal((await fetchText((await limited(t, throwing)).url)).status, 500);
});

test('a client that goes away while delayed leaves the queue at once: no timer, no listener left', async (t) => {
  const clock = new ManualClock();
  const limit = limitRequests({ clock, key: '$remote_addr', rate: '1r/s', burst: 5 });
  let handled = 0;
  const leftOver: number[] = [];
  const gw = await gateway(
    t,
    chain(
      (_req, res, next) => {
        const before = res.listenerCount('close');
        next();
        // Runs once the request is through limitRequests(): released at once, or after its delay.
        res.once('finish', () => leftOver.push(res.listenerCount('close') - before));
      },
      limit,
      (_req, res) => {
        handled++;
        res.end('ok');
      },
    ),
  );
  assert.equal((await fetchText(gw.url)).status, 200);
  const req = request(gw.url, { agent: false });
  req.on('error', () => undefined);
  req.end();
  await until(() => limit.waiting === 1);
  assert.equal(clock.pending, 1);
  req.destroy();
  await until(() => limit.waiting === 0, 5000, 'the waiter dropped');
  assert.equal(clock.pending, 0, 'the shared timer cleared');
  clock.advance(5000);
  await tick();
  assert.equal(handled, 1, 'the dropped request never reaches the handler');
  // A delayed request that is released takes its 'close' listener back.
  assert.equal((await fetchText(gw.url)).status, 200);
  const delayed = fetchText(gw.url);
  await until(() => limit.waiting === 1);
  clock.advance(1000);
  assert.equal((await delayed).status, 200);
  assert.deepEqual(leftOver, [0, 0, 0]);
});

test('one middleware mounted on two routes shares its zone (as nginx zones are across locations)', async (t) => {
  const limit = limitRequests({ clock: new ManualClock(), key: '$remote_addr', rate: '1r/s' });
  const gw = await gateway(
    t,
    chain((req, res, next) => {
      if (req.url === '/a' || req.url === '/b') return limit(req, res, (err) => (err ? next(err) : res.end(req.url)));
      next();
    }),
  );
  assert.equal((await fetchText(`${gw.url}/a`)).status, 200);
  assert.equal((await fetchText(`${gw.url}/b`)).status, 503);
});

test('maxKeys: the least recently used state makes room for a new key', async (t) => {
  const limit = limitRequests({ clock: new ManualClock(), key: '$arg_k', rate: '1r/s', maxKeys: 2 });
  const { url } = await limited(t, limit);
  for (const k of ['a', 'b']) assert.equal((await fetchText(`${url}/?k=${k}`)).status, 200);
  assert.equal((await fetchText(`${url}/?k=a`)).status, 503, 'a is known, and now the most recent');
  assert.equal((await fetchText(`${url}/?k=c`)).status, 200, 'c takes b’s place');
  assert.equal((await fetchText(`${url}/?k=a`)).status, 503, 'a was kept');
  assert.equal((await fetchText(`${url}/?k=b`)).status, 200, 'b was forgotten: a new key again');
});

test('the real clock: a delayed request waits about 1/rate', async (t) => {
  const limit = limitRequests({ key: '$remote_addr', rate: '5r/s', burst: 1 });
  const { url } = await limited(t, limit);
  assert.equal((await fetchText(url)).status, 200);
  const start = performance.now();
  const r = await fetchText(url);
  const waited = performance.now() - start;
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-limit-req'], 'DELAYED');
  assert.ok(waited >= 190, `waited ${waited} ms`);
});

test('options are checked when limitRequests() is called', () => {
  const bad: Array<[unknown, string]> = [
    [{ key: '$remote_addr', rate: '10r/h' }, 'rate'],
    [{ key: '$remote_addr', rate: '0r/s' }, 'rate'],
    [{ key: '$remote_addr' }, 'rate'],
    [{ rate: '1r/s' }, 'key'],
    [{ key: 1, rate: '1r/s' }, 'key'],
    [{ key: '$remote_addr', rate: '1r/s', burst: -1 }, 'burst'],
    [{ key: '$remote_addr', rate: '1r/s', delay: 1, nodelay: true }, 'delay'],
    [{ key: '$remote_addr', rate: '1r/s', status: 200 }, 'status'],
    [{ key: '$remote_addr', rate: '1r/s', maxKeys: 0 }, 'maxKeys'],
    [{ key: '$remote_addr', rate: '1r/s', name: 'a/b' }, 'name'],
    [{ key: '$remote_addr', rate: '1r/s', brust: 1 }, 'brust'],
    [{ key: '$remote_addr', limits: [{ key: '$uri', rate: '1r/s' }] }, 'key'],
    [{ limits: [] }, 'limits'],
    [
      {
        limits: [
          { key: '$uri', rate: '1r/s', name: 'a' },
          { key: '$uri', rate: '2r/s', name: 'a' },
        ],
      },
      'limits[1].name',
    ],
    [{ limits: [{ key: '$uri', rate: '1r/s', status: 429 }] }, 'limits[0].status'],
    [{ key: '$remote_addr', rate: '1r/s', clock: {} }, 'clock'],
  ];
  for (const [options, option] of bad)
    assert.throws(
      () => limitRequests(options as LimitRequestsOptions),
      (e: unknown) => e instanceof InvalidOptionError && e.option === option,
      JSON.stringify(options),
    );
  const mw = limitRequests({
    limits: [
      { key: '$uri', rate: '1r/s' },
      { key: '$uri', rate: '2r/s' },
    ],
  });
  assert.deepEqual(mw.zones, ['limit_req', 'limit_req_2']);
  assert.equal(mw.name, 'limitRequests');
});

test('HTTP/2: a stream cancelled while delayed leaves the queue at once; another stream of the session is released on time', async (t) => {
  const clock = new ManualClock();
  const limit = limitRequests({ clock, key: '$remote_addr', rate: '1r/s', burst: 5 });
  let handled = 0;
  const gw = await h2Gateway(
    t,
    'h2c',
    chain(limit, (_req, res) => {
      handled++;
      res.end('ok');
    }),
  );
  const session = h2Connect(t, gw.url);
  assert.equal((await h2Request(session, { ':path': '/' })).status, 200);
  const gone = session.request({ ':path': '/' });
  gone.on('error', () => undefined);
  await until(() => limit.waiting === 1);
  const kept = h2Request(session, { ':path': '/' });
  await until(() => limit.waiting === 2);
  gone.close();
  await until(() => limit.waiting === 1, 5000, 'the cancelled stream dropped');
  // The first waiter went: the second is due 2 s after the first request, as before.
  clock.advance(1999);
  await tick();
  assert.equal(limit.waiting, 1);
  clock.advance(1);
  assert.equal((await kept).status, 200);
  assert.equal(handled, 2);
  assert.equal(clock.pending, 0);
});
