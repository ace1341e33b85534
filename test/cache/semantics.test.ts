// End-to-end semantics of cache(): real upstream and gateway servers on port 0,
// `createServer(chain(cache(options), balance(pool)))`. Expected sequences come from
// the reference's verified nginx matrix (nginx-semantics.md 6.1 and 6.4); the clock is
// injected (`now`) instead of sleeping.
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import { balance, cache, chain, createPool, InvalidOptionError, type CacheMiddleware, type CacheOptions } from '../../src/index.ts';
import { fetchText, gateway, until, upstream, type Reply, type Upstream } from '../helpers.ts';

/** A fake clock start: 2026-01-01T00:00:00Z. */
const T0 = Date.UTC(2026, 0, 1);
const TEST_TIMEOUT = 5000;

type Origin = (req: IncomingMessage, res: ServerResponse, n: number, body: string) => void;

interface Rig {
  up: Upstream;
  mw: CacheMiddleware;
  url: string;
  /** Upstream requests so far. */
  readonly hits: number;
  /** One request through the gateway; `cs` is the X-Cache-Status header. */
  get(
    path: string,
    init?: { method?: string | undefined; headers?: Record<string, string> | undefined; body?: string | undefined },
  ): Promise<Reply & { cs: string | undefined }>;
}

/** Upstream (answering with `origin`, default 200 "body-<n>"), pool, cache and gateway. */
async function rig(t: TestContext, options: CacheOptions, origin?: Origin): Promise<Rig> {
  const up = await upstream(t, 'origin', (req, res, body) => {
    const n = up.seen.length;
    if (origin !== undefined) return origin(req, res, n, body);
    res.end(`body-${n}`);
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const mw = cache(options);
  const gw = await gateway(t, chain(mw, balance(pool)));
  return {
    up,
    mw,
    url: gw.url,
    get hits() {
      return up.seen.length;
    },
    async get(path, init = {}) {
      const r = await fetchText(gw.url + path, init);
      const v = r.headers['x-cache-status'];
      return { ...r, cs: Array.isArray(v) ? v.join(',') : v };
    },
  };
}

/** Runs GETs of `path` in order, returning [status header, upstream hits after it] per request. */
async function statuses(r: Rig, path: string, n: number, headers?: Record<string, string>): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(`${(await r.get(path, { headers })).cs}(${r.hits})`);
  return out;
}

/** An origin answering `status` with `headers` and body "body-<n>". */
function answering(status: number, headers: Record<string, string | string[]> = {}): Origin {
  return (_req, res, n) => {
    res.writeHead(status, headers);
    res.end(`body-${n}`);
  };
}

describe('cache(): nginx verified matrix (6.4)', { timeout: TEST_TIMEOUT }, () => {
  it('valid 1s: MISS, HIT, then after expiry EXPIRED, HIT', async (t) => {
    let clock = T0;
    const r = await rig(t, { valid: '1s', now: () => clock });
    assert.deepEqual(await statuses(r, '/a', 2), ['MISS(1)', 'HIT(1)']);
    clock += 999;
    assert.deepEqual(await statuses(r, '/a', 1), ['HIT(1)']);
    clock += 2;
    const expired = await r.get('/a');
    assert.equal(expired.cs, 'EXPIRED');
    assert.equal(expired.body, 'body-2');
    assert.equal(r.hits, 2);
    const hit = await r.get('/a');
    assert.equal(hit.cs, 'HIT');
    assert.equal(hit.body, 'body-2');
    assert.equal(r.hits, 2);
  });

  it('valid 1m (time only) caches 200, 301, 302 but not 404', async (t) => {
    const r = await rig(t, { valid: '1m' }, (req, res, n) => {
      const status = Number(req.url!.slice(1));
      res.writeHead(status, status === 301 || status === 302 ? { location: '/elsewhere' } : {});
      res.end(`body-${n}`);
    });
    assert.deepEqual(await statuses(r, '/200', 2), ['MISS(1)', 'HIT(1)']);
    assert.deepEqual(await statuses(r, '/301', 2), ['MISS(2)', 'HIT(2)']);
    assert.deepEqual(await statuses(r, '/302', 2), ['MISS(3)', 'HIT(3)']);
    assert.deepEqual(await statuses(r, '/404', 2), ['MISS(4)', 'MISS(5)']);
    const hit = await r.get('/302');
    assert.equal(hit.status, 302);
    assert.equal(hit.headers.location, '/elsewhere');
  });

  it('no valid and no caching headers: MISS, MISS', async (t) => {
    const r = await rig(t, {});
    assert.deepEqual(await statuses(r, '/a', 2), ['MISS(1)', 'MISS(2)']);
  });

  it('no valid + Cache-Control: max-age=60: MISS, HIT', async (t) => {
    const r = await rig(t, {}, answering(200, { 'cache-control': 'max-age=60' }));
    assert.deepEqual(await statuses(r, '/a', 2), ['MISS(1)', 'HIT(1)']);
  });

  it('no valid + X-Accel-Expires: 60: MISS, HIT', async (t) => {
    const r = await rig(t, {}, answering(200, { 'x-accel-expires': '60' }));
    assert.deepEqual(await statuses(r, '/a', 2), ['MISS(1)', 'HIT(1)']);
  });

  it('X-Accel-Expires: @T already past: stored expired from the start, MISS then EXPIRED (nginx)', async (t) => {
    const clock = T0;
    const past = `@${Math.floor(T0 / 1000) - 10}`;
    const r = await rig(t, { valid: '1m', useStale: ['http_500'], now: () => clock }, (_req, res, n) => {
      res.writeHead(n < 3 ? 200 : 500, { 'x-accel-expires': past });
      res.end(`body-${n}`);
    });
    assert.deepEqual(await statuses(r, '/a', 2), ['MISS(1)', 'EXPIRED(2)']);
    // The expired copy is there to serve when the upstream fails.
    const failed = await r.get('/a');
    assert.deepEqual([failed.cs, failed.body], ['STALE', 'body-2']);
  });

  const uncacheable: Array<[string, Record<string, string>]> = [
    ['Expires in the past', { expires: new Date(T0 - 3_600_000).toUTCString() }],
    ['Set-Cookie', { 'set-cookie': 'sid=1' }],
    ['Cache-Control: private', { 'cache-control': 'private' }],
    ['Cache-Control: no-store', { 'cache-control': 'no-store' }],
    ['Cache-Control: max-age=0', { 'cache-control': 'max-age=0' }],
    ['Vary: *', { vary: '*' }],
    ['X-Accel-Expires: 0', { 'x-accel-expires': '0' }],
  ];
  for (const [name, headers] of uncacheable) {
    it(`${name} (even with valid 1m): MISS, MISS`, async (t) => {
      const clock = T0;
      const r = await rig(t, { valid: '1m', now: () => clock }, answering(200, headers));
      assert.deepEqual(await statuses(r, '/a', 2), ['MISS(1)', 'MISS(2)']);
    });
  }

  it('Cache-Control: public is cached with valid (MISS, HIT), not without (MISS, MISS)', async (t) => {
    const withValid = await rig(t, { valid: '1m' }, answering(200, { 'cache-control': 'public' }));
    assert.deepEqual(await statuses(withValid, '/a', 2), ['MISS(1)', 'HIT(1)']);
    const without = await rig(t, {}, answering(200, { 'cache-control': 'public' }));
    assert.deepEqual(await statuses(without, '/a', 2), ['MISS(1)', 'MISS(2)']);
  });

  it('Vary: X-A keeps one variant per value', async (t) => {
    const r = await rig(t, { valid: '1m' }, (req, res, n) => {
      res.writeHead(200, { vary: 'X-A' });
      res.end(`a=${String(req.headers['x-a'])} n=${n}`);
    });
    const seq: string[] = [];
    for (const a of ['1', '1', '2', '1', '2']) {
      const reply = await r.get('/v', { headers: { 'x-a': a } });
      seq.push(`${reply.cs} ${reply.body}`);
    }
    assert.deepEqual(seq, ['MISS a=1 n=1', 'HIT a=1 n=1', 'MISS a=2 n=2', 'HIT a=1 n=1', 'HIT a=2 n=2']);
    assert.equal(r.hits, 2);
  });

  it('valid { any: 10s } caches a 404: MISS, HIT', async (t) => {
    const r = await rig(t, { valid: { any: '10s' } }, answering(404));
    assert.deepEqual(await statuses(r, '/missing', 2), ['MISS(1)', 'HIT(1)']);
    const hit = await r.get('/missing');
    assert.equal(hit.status, 404);
    assert.equal(hit.body, 'body-1');
  });

  it('500 with valid 1m: MISS, MISS', async (t) => {
    const r = await rig(t, { valid: '1m' }, answering(500));
    assert.deepEqual(await statuses(r, '/a', 2), ['MISS(1)', 'MISS(2)']);
  });

  it('minUses 2: MISS(1), MISS(2), HIT(2), HIT(2)', async (t) => {
    const r = await rig(t, { valid: '1m', minUses: 2 });
    assert.deepEqual(await statuses(r, '/a', 4), ['MISS(1)', 'MISS(2)', 'HIT(2)', 'HIT(2)']);
    // The stored copy is the second response.
    assert.equal((await r.get('/a')).body, 'body-2');
  });

  it('bypass replaces the cached copy; bypass + noCache does not; nocache=0 is a HIT', async (t) => {
    const r = await rig(t, { valid: '1m', key: '$scheme$host$uri', bypass: '$arg_nocache', noCache: '$arg_nostore' });
    const step = async (path: string): Promise<string> => {
      const reply = await r.get(path);
      return `${reply.cs}(${r.hits}) ${reply.body}`;
    };
    assert.deepEqual(
      [
        await step('/b'),
        await step('/b'),
        await step('/b?nocache=1'),
        await step('/b'),
        await step('/b?nocache=1&nostore=1'),
        await step('/b'),
        await step('/b?nocache=0'),
      ],
      ['MISS(1) body-1', 'HIT(1) body-1', 'BYPASS(2) body-2', 'HIT(2) body-2', 'BYPASS(3) body-3', 'HIT(3) body-2', 'HIT(3) body-2'],
    );
  });
});

describe('cache(): X-Accel-Expires is read, never shown (nginx proxy_hide_header)', { timeout: TEST_TIMEOUT }, () => {
  /** `[status header, upstream hits, the X-Accel-Expires the client got]` of one request. */
  async function seen(r: Rig, path: string): Promise<string> {
    const reply = await r.get(path);
    return `${reply.cs}(${r.hits}) ${reply.headers['x-accel-expires'] ?? '-'}`;
  }

  it('MISS and HIT: the header gives the time, the client never gets it', async (t) => {
    let clock = T0;
    const r = await rig(t, { now: () => clock }, answering(200, { 'x-accel-expires': '2' }));
    assert.deepEqual([await seen(r, '/a'), await seen(r, '/a')], ['MISS(1) -', 'HIT(1) -']);
    clock += 3000;
    assert.equal(await seen(r, '/a'), 'EXPIRED(2) -');
  });

  it('a header set with setHeader() by a local handler behind the cache is dropped too', async (t) => {
    const gw = await gateway(
      t,
      chain(cache({}), (_req, res) => {
        res.setHeader('X-Accel-Expires', '60');
        res.end('local');
      }),
    );
    const first = await fetchText(`${gw.url}/l`);
    const second = await fetchText(`${gw.url}/l`);
    assert.deepEqual(
      [first, second].map((x) => `${x.headers['x-cache-status']} ${x.body} ${x.headers['x-accel-expires'] ?? '-'}`),
      ['MISS local -', 'HIT local -'],
    );
  });

  it('REVALIDATED (the 304 gives the new time) and STALE answers do not carry it', async (t) => {
    let clock = T0;
    const r = await rig(t, { revalidate: true, useStale: ['http_500'], now: () => clock }, (req, res, n) => {
      if (n === 4) {
        res.writeHead(500, { 'x-accel-expires': '1' });
        res.end('failed');
        return;
      }
      if (req.headers['if-none-match'] === '"v"') res.writeHead(304, { etag: '"v"', 'x-accel-expires': n === 2 ? '60' : '1' });
      else res.writeHead(200, { etag: '"v"', 'x-accel-expires': '1' });
      res.end(req.headers['if-none-match'] === '"v"' ? undefined : `body-${n}`);
    });
    assert.equal(await seen(r, '/a'), 'MISS(1) -');
    clock += 2000;
    // The 304's X-Accel-Expires: 60 keeps the entry for a minute.
    assert.equal(await seen(r, '/a'), 'REVALIDATED(2) -');
    clock += 30_000;
    assert.equal(await seen(r, '/a'), 'HIT(2) -');
    clock += 31_000;
    assert.equal(await seen(r, '/a'), 'REVALIDATED(3) -');
    clock += 2000;
    const stale = await r.get('/a');
    assert.deepEqual([stale.cs, r.hits, stale.body, stale.headers['x-accel-expires']], ['STALE', 4, 'body-1', undefined]);
  });
});

describe('cache(): methods', { timeout: TEST_TIMEOUT }, () => {
  const echoMethod: Origin = (req, res, n) => res.end(`${req.method} ${n}`);

  it('POST is not cached by default and gets no status header', async (t) => {
    const r = await rig(t, { valid: '1m' }, echoMethod);
    for (let i = 1; i <= 2; i++) {
      const reply = await r.get('/p', { method: 'POST', body: 'x' });
      assert.equal(reply.headers['x-cache-status'], undefined);
      assert.equal(reply.body, `POST ${i}`);
    }
    assert.equal(r.hits, 2);
  });

  it('methods [POST] with cacheBodies: POST MISS then HIT; POST and GET of one URL are separate entries', async (t) => {
    const r = await rig(t, { valid: '1m', methods: ['POST'], cacheBodies: true }, echoMethod);
    const seq: string[] = [];
    for (const method of ['POST', 'POST', 'GET', 'GET', 'POST']) {
      const reply = await r.get('/p', { method, ...(method === 'POST' ? { body: 'x' } : {}) });
      seq.push(`${method} ${reply.cs} ${reply.body}`);
    }
    assert.deepEqual(seq, ['POST MISS POST 1', 'POST HIT POST 1', 'GET MISS GET 2', 'GET HIT GET 2', 'POST HIT POST 1']);
    assert.equal(r.hits, 2);
  });

  it('HEAD with convertHead (default): upstream sees GET, a later GET is a HIT with the body', async (t) => {
    const r = await rig(t, { valid: '1m' }, echoMethod);
    const head = await r.get('/h', { method: 'HEAD' });
    assert.equal(head.cs, 'MISS');
    assert.equal(head.body, '');
    assert.deepEqual(
      r.up.seen.map((s) => s.method),
      ['GET'],
    );
    const get = await r.get('/h');
    assert.equal(get.cs, 'HIT');
    assert.equal(get.body, 'GET 1');
    assert.equal(r.hits, 1);
  });

  it('convertHead: false: HEAD is stored and served (MISS, HIT) with the upstream Content-Length, apart from GET', async (t) => {
    const r = await rig(t, { valid: '1m', convertHead: false }, (req, res, n) => {
      const body = `${req.method} ${n}`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    const seq: string[] = [];
    for (const method of ['HEAD', 'HEAD', 'GET', 'GET', 'HEAD']) {
      const reply = await r.get('/h', { method });
      seq.push(`${method} ${reply.cs} ${reply.headers['content-length']} ${JSON.stringify(reply.body)}`);
    }
    // A GET after the HEAD does not get the HEAD's empty body: each method is its own entry.
    assert.deepEqual(seq, ['HEAD MISS 6 ""', 'HEAD HIT 6 ""', 'GET MISS 5 "GET 2"', 'GET HIT 5 "GET 2"', 'HEAD HIT 6 ""']);
    assert.deepEqual(
      r.up.seen.map((s) => s.method),
      ['HEAD', 'GET'],
    );
    // A range on the HEAD's entry: there is no body to take it from.
    const range = await r.get('/h', { method: 'HEAD', headers: { range: 'bytes=0-1' } });
    assert.deepEqual([range.status, range.cs, range.headers['content-length']], [200, 'HIT', '6']);
  });

  it('convertHead: false: a HEAD entry is revalidated and kept (REVALIDATED, then HIT)', async (t) => {
    let clock = T0;
    const r = await rig(t, { convertHead: false, revalidate: true, now: () => clock }, (req, res) => {
      if (req.headers['if-none-match'] === '"h"') res.writeHead(304, { etag: '"h"', 'cache-control': 'max-age=60' });
      else res.writeHead(200, { etag: '"h"', 'cache-control': 'max-age=1', 'content-length': 4 });
      res.end();
    });
    assert.equal((await r.get('/h', { method: 'HEAD' })).cs, 'MISS');
    clock += 2000;
    const again = await r.get('/h', { method: 'HEAD' });
    assert.deepEqual([again.cs, again.headers['content-length']], ['REVALIDATED', '4']);
    const hit = await r.get('/h', { method: 'HEAD' });
    assert.deepEqual([hit.cs, hit.headers['content-length']], ['HIT', '4']);
    assert.equal(r.hits, 2);
  });

  it('convertHead: false sends HEAD upstream as HEAD', async (t) => {
    const r = await rig(t, { valid: '1m', convertHead: false }, echoMethod);
    const head = await r.get('/h', { method: 'HEAD' });
    assert.equal(head.cs, 'MISS');
    assert.deepEqual(
      r.up.seen.map((s) => s.method),
      ['HEAD'],
    );
  });
});

describe('cache(): Set-Cookie and Authorization', { timeout: TEST_TIMEOUT }, () => {
  it('with ignoreHeaders [Set-Cookie] the response is cached but the HIT has no Set-Cookie', async (t) => {
    const r = await rig(t, { valid: '1m', ignoreHeaders: ['Set-Cookie'] }, answering(200, { 'set-cookie': 'sid=secret' }));
    const miss = await r.get('/c');
    assert.equal(miss.cs, 'MISS');
    assert.deepEqual(miss.headers['set-cookie'], ['sid=secret']);
    const hit = await r.get('/c');
    assert.equal(hit.cs, 'HIT');
    assert.equal(hit.body, 'body-1');
    assert.equal(hit.headers['set-cookie'], undefined);
    assert.equal(r.hits, 1);
  });

  it('a request with Authorization and a max-age response is not stored', async (t) => {
    const r = await rig(t, {}, answering(200, { 'cache-control': 'max-age=60' }));
    const auth = { authorization: 'Bearer a' };
    assert.deepEqual(await statuses(r, '/x', 2, auth), ['MISS(1)', 'MISS(2)']);
    assert.deepEqual(await statuses(r, '/x', 1), ['MISS(3)']);
  });

  it('Cache-Control: public, max-age=60 is stored from an Authorization request and served to one', async (t) => {
    const r = await rig(t, {}, answering(200, { 'cache-control': 'public, max-age=60' }));
    const auth = { authorization: 'Bearer a' };
    assert.deepEqual(await statuses(r, '/x', 2, auth), ['MISS(1)', 'HIT(1)']);
    assert.deepEqual(await statuses(r, '/x', 1, { authorization: 'Bearer other' }), ['HIT(1)']);
  });

  it('an entry stored from a plain request (max-age only) is not served to an Authorization request', async (t) => {
    const r = await rig(t, {}, answering(200, { 'cache-control': 'max-age=60' }));
    assert.deepEqual(await statuses(r, '/x', 1), ['MISS(1)']);
    const authed = await r.get('/x', { headers: { authorization: 'Bearer a' } });
    assert.equal(authed.cs, 'MISS');
    assert.equal(authed.body, 'body-2');
    assert.equal(r.hits, 2);
    // The authorized response did not replace the shared entry.
    const plain = await r.get('/x');
    assert.equal(plain.cs, 'HIT');
    assert.equal(plain.body, 'body-1');
    assert.equal(r.hits, 2);
  });
});

describe('cache(): statusHeader', { timeout: TEST_TIMEOUT }, () => {
  it('a custom header name carries the status', async (t) => {
    const r = await rig(t, { valid: '1m', statusHeader: 'X-Edge' });
    const first = await r.get('/a');
    const second = await r.get('/a');
    assert.equal(first.headers['x-edge'], 'MISS');
    assert.equal(second.headers['x-edge'], 'HIT');
    assert.equal(first.cs, undefined);
    assert.equal(second.cs, undefined);
  });

  it('false: no status header, caching still works', async (t) => {
    const r = await rig(t, { valid: '1m', statusHeader: false });
    const first = await r.get('/a');
    const second = await r.get('/a');
    assert.equal(first.cs, undefined);
    assert.equal(second.cs, undefined);
    assert.equal(second.body, 'body-1');
    assert.equal(r.hits, 1);
  });
});

describe('cache(): keys', { timeout: TEST_TIMEOUT }, () => {
  it('default key is scheme://host:port + target: the query string and Host (with its port) make different entries', async (t) => {
    const r = await rig(t, { valid: '1m' });
    assert.deepEqual(await statuses(r, '/a?x=1', 2), ['MISS(1)', 'HIT(1)']);
    assert.deepEqual(await statuses(r, '/a?x=2', 2), ['MISS(2)', 'HIT(2)']);
    assert.deepEqual(await statuses(r, '/a', 1, { host: 'one.example' }), ['MISS(3)']);
    assert.deepEqual(await statuses(r, '/a', 1, { host: 'two.example' }), ['MISS(4)']);
    assert.deepEqual(await statuses(r, '/a', 1, { host: 'one.example:8080' }), ['MISS(5)']);
    assert.deepEqual(await statuses(r, '/a', 1, { host: 'ONE.example' }), ['HIT(5)']);
    // The exact key format: purging it removes exactly that entry.
    assert.equal(await r.mw.purge(`http://${new URL(r.url).host}/a?x=1`), 1);
    assert.equal(await r.mw.purge('http://one.example/a'), 1);
    assert.deepEqual(await statuses(r, '/a?x=1', 1), ['MISS(6)']);
    assert.deepEqual(await statuses(r, '/a?x=2', 1), ['HIT(6)']);
  });

  it('a template key ($uri) shares one entry across query strings', async (t) => {
    const r = await rig(t, { valid: '1m', key: '$uri' });
    assert.deepEqual(await statuses(r, '/k?x=1', 1), ['MISS(1)']);
    const other = await r.get('/k?x=2');
    assert.equal(other.cs, 'HIT');
    assert.equal(other.body, 'body-1');
    assert.equal(await r.mw.purge('/k'), 1);
  });

  it('a function key', async (t) => {
    const r = await rig(t, { valid: '1m', key: (req) => `tenant:${String(req.headers['x-tenant'] ?? 'none')}` });
    assert.deepEqual(await statuses(r, '/one', 1, { 'x-tenant': 'a' }), ['MISS(1)']);
    assert.deepEqual(await statuses(r, '/two', 1, { 'x-tenant': 'a' }), ['HIT(1)']);
    assert.deepEqual(await statuses(r, '/one', 1, { 'x-tenant': 'b' }), ['MISS(2)']);
    assert.deepEqual(await statuses(r, '/one', 1), ['MISS(3)']);
    assert.equal(await r.mw.purge('tenant:a'), 1);
  });

  const echoHeaders: Origin = (req, res, n) => {
    res.end(`n=${n} xfh=${String(req.headers['x-forwarded-host'])} xou=${String(req.headers['x-original-url'])}`);
  };

  it('X-Forwarded-Host from a client is neither keyed nor passed upstream: it cannot poison the entry', async (t) => {
    const r = await rig(t, { valid: '1m' }, echoHeaders);
    const evil = await r.get('/p', { headers: { 'x-forwarded-host': 'evil' } });
    assert.equal(evil.cs, 'MISS');
    assert.doesNotMatch(evil.body, /evil/);
    const plain = await r.get('/p');
    assert.equal(plain.cs, 'HIT');
    assert.equal(plain.body, evil.body);
    assert.equal(r.hits, 1);
    assert.equal(await r.mw.purge(`http://${new URL(r.url).host}/p`), 1);
  });

  it('X-Original-URL is not part of the key: the same entry as a plain request, which it cannot change', async (t) => {
    const r = await rig(t, { valid: '1m' }, echoHeaders);
    const plain = await r.get('/p');
    assert.equal(plain.cs, 'MISS');
    const evil = await r.get('/p', { headers: { 'x-original-url': '/other', 'x-forwarded-host': 'evil' } });
    assert.equal(evil.cs, 'HIT');
    assert.equal(evil.body, plain.body);
    const again = await r.get('/p');
    assert.equal(again.cs, 'HIT');
    assert.equal(again.body, plain.body);
    assert.equal(r.hits, 1);
    // A request to /other is its own entry, not the one the header named.
    assert.deepEqual(await statuses(r, '/other', 1), ['MISS(2)']);
  });

  it('on a cold key, a request with an override header goes upstream but its answer is not stored for others', async (t) => {
    // An upstream that routes on X-Original-URL, as IIS-style frameworks do.
    const routing: Origin = (req, res, n) => res.end(`page ${String(req.headers['x-original-url'] ?? req.url)} #${n}`);
    const r = await rig(t, { valid: '1m' }, routing);
    for (const header of ['x-original-url', 'x-rewrite-url', 'x-http-method-override']) {
      const evil = await r.get('/home', { headers: { [header]: '/admin' } });
      assert.equal(evil.cs, 'MISS');
    }
    const plain = await r.get('/home');
    assert.equal(plain.cs, 'MISS');
    assert.match(plain.body, /^page \/home #4$/);
    assert.equal((await r.get('/home')).body, plain.body);
    // Explicitly allowed: the poisoned answer is stored, which is what the default prevents.
    const open = await rig(t, { valid: '1m', unkeyedHeaders: [] }, routing);
    await open.get('/home', { headers: { 'x-original-url': '/admin' } });
    assert.match((await open.get('/home')).body, /^page \/admin/);
  });
});

describe('cache(): purge', { timeout: TEST_TIMEOUT }, () => {
  it('mw.purge(key) removes an entry', async (t) => {
    const r = await rig(t, { valid: '1m' });
    assert.deepEqual(await statuses(r, '/a?x=1', 2), ['MISS(1)', 'HIT(1)']);
    assert.equal(await r.mw.purge(`http://${new URL(r.url).host}/a?x=1`), 1);
    assert.equal(await r.mw.purge(`http://${new URL(r.url).host}/a?x=1`), 0);
    assert.deepEqual(await statuses(r, '/a?x=1', 2), ['MISS(2)', 'HIT(2)']);
  });

  it('mw.purge with a trailing * removes by prefix', async (t) => {
    const r = await rig(t, { valid: '1m' });
    await statuses(r, '/a?x=1', 1);
    await statuses(r, '/a?x=2', 1);
    await statuses(r, '/b', 1);
    assert.equal(r.hits, 3);
    assert.equal(await r.mw.purge(`http://${new URL(r.url).host}/a*`), 2);
    assert.deepEqual(await statuses(r, '/a?x=1', 1), ['MISS(4)']);
    assert.deepEqual(await statuses(r, '/a?x=2', 1), ['MISS(5)']);
    assert.deepEqual(await statuses(r, '/b', 1), ['HIT(5)']);
  });

  it('purge option: PURGE answers 204 and removes the entry, 404 when nothing is cached', async (t) => {
    const r = await rig(t, { valid: '1m', purge: (req) => req.method === 'PURGE' });
    assert.deepEqual(await statuses(r, '/a', 2), ['MISS(1)', 'HIT(1)']);
    const purged = await r.get('/a', { method: 'PURGE' });
    assert.equal(purged.status, 204);
    assert.equal(r.hits, 1);
    assert.deepEqual(await statuses(r, '/a', 1), ['MISS(2)']);
    const none = await r.get('/nothing', { method: 'PURGE' });
    assert.equal(none.status, 404);
    assert.equal(r.hits, 2);
  });

  it('without the purge option a PURGE request goes upstream', async (t) => {
    const r = await rig(t, { valid: '1m' }, (req, res, n) => res.end(`${req.method} ${n}`));
    assert.deepEqual(await statuses(r, '/a', 1), ['MISS(1)']);
    const reply = await r.get('/a', { method: 'PURGE' });
    assert.equal(reply.status, 200);
    assert.equal(reply.body, 'PURGE 2');
    assert.equal(reply.cs, undefined);
    assert.deepEqual(await statuses(r, '/a', 1), ['HIT(2)']);
  });
});

describe('cache(): stats', { timeout: TEST_TIMEOUT }, () => {
  it('counts responses and bytes per status, written entries, size; resetStats zeroes them', async (t) => {
    let clock = T0;
    const r = await rig(t, { valid: '1s', key: '$scheme$host$uri', bypass: '$arg_nocache', now: () => clock }, (_req, res) => res.end('hello'));
    assert.deepEqual(await statuses(r, '/s', 3), ['MISS(1)', 'HIT(1)', 'HIT(1)']);
    clock += 1500;
    assert.deepEqual(await statuses(r, '/s', 1), ['EXPIRED(2)']);
    assert.deepEqual(await statuses(r, '/s?nocache=1', 1), ['BYPASS(3)']);
    await until(() => r.mw.stats().bypass.responsesWritten === 1, 2000, 'the bypass write');
    const s = r.mw.stats();
    assert.deepEqual(s.hit, { responses: 2, bytes: 10 });
    assert.deepEqual(s.miss, { responses: 1, bytes: 5, responsesWritten: 1, bytesWritten: 5 });
    assert.deepEqual(s.expired, { responses: 1, bytes: 5, responsesWritten: 1, bytesWritten: 5 });
    assert.deepEqual(s.bypass, { responses: 1, bytes: 5, responsesWritten: 1, bytesWritten: 5 });
    assert.deepEqual(s.stale, { responses: 0, bytes: 0 });
    assert.deepEqual(s.updating, { responses: 0, bytes: 0 });
    assert.deepEqual(s.revalidated, { responses: 0, bytes: 0 });
    assert.equal(s.cold, false);
    assert.ok(s.size > 0, `size ${s.size}`);
    assert.equal(typeof s.maxSize, 'number');
    r.mw.resetStats();
    const z = r.mw.stats();
    assert.deepEqual(
      { hit: z.hit, stale: z.stale, updating: z.updating, revalidated: z.revalidated, miss: z.miss, expired: z.expired, bypass: z.bypass },
      {
        hit: { responses: 0, bytes: 0 },
        stale: { responses: 0, bytes: 0 },
        updating: { responses: 0, bytes: 0 },
        revalidated: { responses: 0, bytes: 0 },
        miss: { responses: 0, bytes: 0, responsesWritten: 0, bytesWritten: 0 },
        expired: { responses: 0, bytes: 0, responsesWritten: 0, bytesWritten: 0 },
        bypass: { responses: 0, bytes: 0, responsesWritten: 0, bytesWritten: 0 },
      },
    );
    assert.ok(z.size > 0, 'resetStats does not empty the store');
  });
});

describe('cache(): option validation', () => {
  const cases: Array<[string, CacheOptions, string]> = [
    ['useStale entry', { useStale: ['bogus' as never] }, 'useStale[0]'],
    ['minUses 0', { minUses: 0 }, 'minUses'],
    ['statusHeader with a space', { statusHeader: 'bad header' }, 'statusHeader'],
    ['method with a space', { methods: ['GE T'] }, 'methods[0]'],
    ['lockTimeout not a duration', { lockTimeout: 'x' }, 'lockTimeout'],
    ['key a number', { key: 42 as never }, 'key'],
  ];
  for (const [name, options, option] of cases) {
    it(`${name} throws InvalidOptionError naming ${option}`, () => {
      assert.throws(
        () => cache(options),
        (err: unknown) => {
          assert.ok(err instanceof InvalidOptionError, `got ${String(err)}`);
          assert.equal(err.option, option);
          return true;
        },
      );
    });
  }
});
