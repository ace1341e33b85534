// cache() end to end: real upstreams and gateways on port 0, cache() in front of
// balance() or a local handler; stale serving, locking, background updates,
// revalidation, client conditionals, streaming safety. A fake clock (`now`)
// expires entries without sleeping, except where locks need real time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { TestContext } from 'node:test';
import express from 'express';
import {
  balance,
  cache,
  CacheStore,
  chain,
  createMemoryStore,
  createPool,
  type BalanceOptions,
  type CacheOptions,
  type UpstreamPool,
} from '../../src/index.ts';
import { abortAfterFirstChunk, clock, deadPort, fetchText, listen, until, upstream, type Upstream } from '../helpers.ts';
import { delay, rawUpstream, tryFetch } from '../balance/support.ts';

const T = { timeout: 10_000 };
/** The fake clock's start (cache({ now })): 2026-01-01T00:00:00Z. */
const START = Date.UTC(2026, 0, 1);

interface Gw {
  url: string;
  pool: UpstreamPool;
}

/** `createServer(chain(cache(opts), balance(pool)))` on port 0 in front of `urls`. */
async function gw(t: TestContext, urls: string[], opts: CacheOptions, bopts: BalanceOptions = {}, server: { maxFails?: number } = {}): Promise<Gw> {
  const pool = createPool({ servers: urls.map((url) => ({ url, ...server })) });
  t.after(() => pool.close());
  const g = await listen(t, createServer(chain(cache(opts), balance(pool, bopts))));
  return { url: g.url, pool };
}

const status = (r: { headers: IncomingMessage['headers'] }): string | undefined => r.headers['x-cache-status'] as string | undefined;

/** A GET read as bytes. */
function fetchBuf(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** An upstream whose answer the test changes: body, status, extra headers, delay, or hanging. */
interface Script {
  body: string;
  status: number;
  headers: Record<string, string>;
  delay: number;
  hang: boolean;
}
async function scripted(t: TestContext, init: Partial<Script> = {}): Promise<Upstream & { script: Script }> {
  const script: Script = { body: 'v1', status: 200, headers: {}, delay: 0, hang: false, ...init };
  const up = await upstream(t, 'scripted', (_req, res) => {
    if (script.hang) return;
    const { body, status: code, headers } = script;
    const send = (): void => {
      res.writeHead(code, { 'content-type': 'text/plain', ...headers });
      res.end(body);
    };
    if (script.delay > 0) setTimeout(send, script.delay);
    else send();
  });
  return Object.assign(up, { script });
}

// 1. useStale ------------------------------------------------------------------------------------

test('useStale error: upstream down after expiry → STALE, STALE with the old body', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t);
  const g = await gw(t, [up.url], { valid: '1m', useStale: ['error', 'timeout'], now: c.now });
  const r1 = await fetchText(`${g.url}/a`);
  assert.equal(status(r1), 'MISS');
  assert.equal(r1.body, 'v1');
  c.advance(120_000);
  await up.close();
  for (let i = 0; i < 2; i++) {
    const r = await fetchText(`${g.url}/a`);
    assert.equal(r.status, 200);
    assert.equal(status(r), 'STALE');
    assert.equal(r.body, 'v1');
  }
});

test('useStale error: a pool server pointing at a closed port → STALE from an entry stored earlier', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t);
  const dead = await deadPort();
  // Two gateways sharing one store and key: one reaches the live upstream, the other a closed port.
  const store = new CacheStore({ store: createMemoryStore({ now: c.now }) });
  const live = await gw(t, [up.url], { valid: '1m', key: '$uri', store, now: c.now });
  const down = await gw(t, [`http://127.0.0.1:${dead}`], { valid: '1m', key: '$uri', store, useStale: ['error'], now: c.now });
  assert.equal(status(await fetchText(`${live.url}/p`)), 'MISS');
  assert.equal(status(await fetchText(`${down.url}/p`)), 'HIT');
  c.advance(120_000);
  for (let i = 0; i < 2; i++) {
    const r = await fetchText(`${down.url}/p`);
    assert.equal(r.status, 200);
    assert.equal(status(r), 'STALE');
    assert.equal(r.body, 'v1');
  }
  assert.equal(up.seen.length, 1);
});

test('useStale timeout: a hanging upstream past headerTimeout → STALE with the old body', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t);
  const g = await gw(t, [up.url], { valid: '1m', useStale: ['timeout'], now: c.now }, { headerTimeout: 100 });
  assert.equal(status(await fetchText(`${g.url}/t`)), 'MISS');
  c.advance(120_000);
  up.script.hang = true;
  const r = await fetchText(`${g.url}/t`);
  assert.equal(r.status, 200);
  assert.equal(status(r), 'STALE');
  assert.equal(r.body, 'v1');
});

test('useStale error only: a timeout is not covered → 504 reaches the client', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t);
  const g = await gw(t, [up.url], { valid: '1m', useStale: ['error'], now: c.now }, { headerTimeout: 100 });
  assert.equal(status(await fetchText(`${g.url}/t`)), 'MISS');
  c.advance(120_000);
  up.script.hang = true;
  const r = await fetchText(`${g.url}/t`);
  assert.equal(r.status, 504);
  assert.notEqual(r.body, 'v1');
});

for (const code of [500, 503, 404, 429, 403]) {
  test(`useStale http_${code}: stale served only when listed`, T, async (t) => {
    const c = clock(START);
    const up = await scripted(t);
    const listed = await gw(t, [up.url], { valid: '1m', useStale: [`http_${code}` as 'http_500'], now: c.now });
    const other = await gw(t, [up.url], { valid: '1m', useStale: ['error', 'timeout', code === 500 ? 'http_503' : 'http_500'], now: c.now });
    assert.equal(status(await fetchText(`${listed.url}/s`)), 'MISS');
    assert.equal(status(await fetchText(`${other.url}/s`)), 'MISS');
    c.advance(120_000);
    up.script.status = code;
    up.script.body = `error ${code}`;
    const a = await fetchText(`${listed.url}/s`);
    assert.equal(a.status, 200);
    assert.equal(status(a), 'STALE');
    assert.equal(a.body, 'v1');
    const b = await fetchText(`${other.url}/s`);
    assert.equal(b.status, code);
    assert.equal(b.body, `error ${code}`);
    assert.equal(status(b), 'EXPIRED');
  });
}

test('without useStale the upstream error reaches the client (502)', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t);
  const g = await gw(t, [up.url], { valid: '1m', now: c.now });
  assert.equal(status(await fetchText(`${g.url}/a`)), 'MISS');
  c.advance(120_000);
  await up.close();
  const r = await fetchText(`${g.url}/a`);
  assert.equal(r.status, 502);
  assert.notEqual(r.body, 'v1');
});

test('Cache-Control stale-if-error=60 serves STALE on a 502 without useStale', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t, { headers: { 'cache-control': 'max-age=1, stale-if-error=60' } });
  const g = await gw(t, [up.url], { now: c.now });
  assert.equal(status(await fetchText(`${g.url}/e`)), 'MISS');
  assert.equal(status(await fetchText(`${g.url}/e`)), 'HIT');
  c.advance(2000);
  await up.close();
  const r = await fetchText(`${g.url}/e`);
  assert.equal(r.status, 200);
  assert.equal(status(r), 'STALE');
  assert.equal(r.body, 'v1');
  // Past the window: the error reaches the client.
  c.advance(120_000);
  const late = await fetchText(`${g.url}/e`);
  assert.equal(late.status, 502);
});

test('stale-if-error never serves a stale 5xx entry', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t, { status: 500, body: 'stored 500', headers: { 'cache-control': 'max-age=1, stale-if-error=60' } });
  const g = await gw(t, [up.url], { valid: { '500': '1s' }, now: c.now });
  const first = await fetchText(`${g.url}/e`);
  assert.equal(first.status, 500);
  assert.equal(status(first), 'MISS');
  const again = await fetchText(`${g.url}/e`);
  assert.equal(status(again), 'HIT', 'the 500 is stored (Cache-Control max-age=1)');
  c.advance(2000);
  await up.close();
  const r = await fetchText(`${g.url}/e`);
  assert.equal(r.status, 502);
  assert.notEqual(status(r), 'STALE');
});

// 2. lock ------------------------------------------------------------------------------------------

test('lock: 4 concurrent cold requests → 1 upstream hit, MISS + 3×HIT', T, async (t) => {
  const up = await scripted(t, { delay: 300 });
  const g = await gw(t, [up.url], { valid: '1m', lock: true });
  const rs = await Promise.all([1, 2, 3, 4].map(() => fetchText(`${g.url}/l`)));
  assert.equal(up.seen.length, 1);
  assert.deepEqual(rs.map(status).sort(), ['HIT', 'HIT', 'HIT', 'MISS']);
  for (const r of rs) assert.equal(r.body, 'v1');
});

test('no lock: 4 concurrent cold requests → 4 upstream hits, 4×MISS', T, async (t) => {
  const up = await scripted(t, { delay: 300 });
  const g = await gw(t, [up.url], { valid: '1m' });
  const rs = await Promise.all([1, 2, 3, 4].map(() => fetchText(`${g.url}/l`)));
  assert.equal(up.seen.length, 4);
  assert.deepEqual(rs.map(status), ['MISS', 'MISS', 'MISS', 'MISS']);
});

test('lockTimeout 100ms: 3 concurrent → 3 upstream hits, 3×MISS; later HIT serves the first response', T, async (t) => {
  let n = 0;
  const up = await upstream(t, 'counted', (_req, res) => {
    const body = `r${++n}`;
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(body);
    }, 500);
  });
  const g = await gw(t, [up.url], { valid: '1m', lock: true, lockTimeout: '100ms' });
  const first = fetchText(`${g.url}/lt`);
  await until(() => up.seen.length === 1, 2000, 'the first request upstream');
  const rest = [fetchText(`${g.url}/lt`), fetchText(`${g.url}/lt`)];
  const rs = [await first, ...(await Promise.all(rest))];
  assert.equal(up.seen.length, 3);
  assert.deepEqual(rs.map(status), ['MISS', 'MISS', 'MISS']);
  assert.equal(rs[0]!.body, 'r1');
  await delay(20);
  const later = await fetchText(`${g.url}/lt`);
  assert.equal(status(later), 'HIT');
  assert.equal(later.body, 'r1');
});

test('lockAge 100ms (lockTimeout 5s): a second concurrent request goes upstream after ~100 ms', T, async (t) => {
  const arrivals: number[] = [];
  const up = await upstream(t, 'aged', (_req, res) => {
    arrivals.push(performance.now());
    setTimeout(() => res.end('aged'), 500);
  });
  const g = await gw(t, [up.url], { valid: '1m', lock: true, lockAge: '100ms', lockTimeout: '5s' });
  const a = fetchText(`${g.url}/la`);
  await until(() => up.seen.length === 1, 2000, 'the first request upstream');
  const b = fetchText(`${g.url}/la`);
  await Promise.all([a, b]);
  assert.equal(up.seen.length, 2);
  const gap = arrivals[1]! - arrivals[0]!;
  assert.ok(gap >= 80 && gap < 450, `second upstream request ${gap.toFixed(0)} ms after the first`);
});

// 3. useStale updating ------------------------------------------------------------------------------

async function updatingFlow(t: TestContext, opts: CacheOptions, headers: Record<string, string>, advance: number): Promise<void> {
  const c = clock(START);
  const up = await scripted(t, { headers });
  const g = await gw(t, [up.url], { ...opts, now: c.now });
  assert.equal(status(await fetchText(`${g.url}/u`)), 'MISS');
  c.advance(advance);
  up.script.delay = 300;
  up.script.body = 'v2';
  const a = fetchText(`${g.url}/u`);
  await until(() => up.seen.length === 2, 2000, 'A upstream');
  const [b, cc] = await Promise.all([fetchText(`${g.url}/u`), fetchText(`${g.url}/u`)]);
  for (const r of [b, cc]) {
    assert.equal(status(r), 'UPDATING');
    assert.equal(r.body, 'v1');
  }
  const ra = await a;
  assert.equal(status(ra), 'EXPIRED');
  assert.equal(ra.body, 'v2');
  const after = await fetchText(`${g.url}/u`);
  assert.equal(status(after), 'HIT');
  assert.equal(after.body, 'v2');
  assert.equal(up.seen.length, 2);
}

test('useStale updating (no background): A EXPIRED slowly, B and C UPDATING with the stale body, then HIT', T, async (t) => {
  await updatingFlow(t, { valid: '1m', useStale: ['updating'] }, {}, 120_000);
});

test('stale-while-revalidate=60 enables UPDATING without useStale', T, async (t) => {
  await updatingFlow(t, {}, { 'cache-control': 'max-age=1, stale-while-revalidate=60' }, 2000);
});

test('without updating or stale-while-revalidate, concurrent requests on an expired entry go upstream', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t);
  const g = await gw(t, [up.url], { valid: '1m', now: c.now });
  assert.equal(status(await fetchText(`${g.url}/u`)), 'MISS');
  c.advance(120_000);
  up.script.delay = 200;
  const rs = await Promise.all([fetchText(`${g.url}/u`), fetchText(`${g.url}/u`)]);
  assert.deepEqual(rs.map(status), ['EXPIRED', 'EXPIRED']);
  assert.equal(up.seen.length, 3);
});

// 4. background update (microcache) -----------------------------------------------------------------

const MICRO: CacheOptions = { valid: '1s', lock: true, useStale: ['updating'], backgroundUpdate: true };

async function microFlow(url: string, up: Upstream & { script: Script }, c: ReturnType<typeof clock>): Promise<void> {
  const r1 = await fetchText(`${url}/m`);
  assert.equal(status(r1), 'MISS');
  assert.equal(status(await fetchText(`${url}/m`)), 'HIT');
  c.advance(2000);
  up.script.delay = 400;
  up.script.body = 'v2';
  const t0 = performance.now();
  const a = await fetchText(`${url}/m`);
  const took = performance.now() - t0;
  assert.equal(status(a), 'STALE');
  assert.equal(a.body, 'v1');
  assert.ok(took < 300, `STALE answered in ${took.toFixed(0)} ms, not waiting for the 400 ms upstream`);
  const rs = await Promise.all([fetchText(`${url}/m`), fetchText(`${url}/m`)]);
  for (const r of rs) {
    assert.equal(status(r), 'UPDATING');
    assert.equal(r.body, 'v1');
  }
  await until(() => up.seen.length === 2, 2000, 'the background update upstream');
  await delay(550);
  const after = await fetchText(`${url}/m`);
  assert.equal(status(after), 'HIT');
  assert.equal(after.body, 'v2');
  assert.equal(up.seen.length, 2, 'one upstream request for the update');
}

test('microcache: backgroundUpdate → STALE at once, UPDATING meanwhile, then HIT with the new body', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t);
  const g = await gw(t, [up.url], { ...MICRO, now: c.now });
  await microFlow(g.url, up, c);
});

test('microcache background update works through Express (app.use(cache, balance))', T, async (t) => {
  const c = clock(START);
  const up = await scripted(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const app = express();
  app.set('env', 'test');
  app.use(cache({ ...MICRO, now: c.now }), balance(pool));
  const g = await listen(t, createServer(app));
  await microFlow(g.url, up, c);
});

// 5. revalidate -------------------------------------------------------------------------------------

test('revalidate with ETag: after expiry REVALIDATED (upstream saw If-None-Match), then HIT', T, async (t) => {
  const c = clock(START);
  const up = await upstream(t, 'etag', (req, res) => {
    if (req.headers['if-none-match'] === '"e1"') {
      res.writeHead(304, { etag: '"e1"' });
      res.end();
      return;
    }
    res.writeHead(200, { etag: '"e1"', 'content-type': 'text/plain' });
    res.end('body e1');
  });
  const g = await gw(t, [up.url], { valid: '1m', revalidate: true, now: c.now });
  assert.equal(status(await fetchText(`${g.url}/r`)), 'MISS');
  c.advance(120_000);
  const r = await fetchText(`${g.url}/r`);
  assert.equal(status(r), 'REVALIDATED');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'body e1');
  assert.equal(up.seen[1]!.headers['if-none-match'], '"e1"');
  const h = await fetchText(`${g.url}/r`);
  assert.equal(status(h), 'HIT');
  assert.equal(h.body, 'body e1');
  assert.equal(up.seen.length, 2);
});

test('revalidate with Last-Modified: upstream sees If-Modified-Since, REVALIDATED then HIT', T, async (t) => {
  const c = clock(START);
  const lm = new Date(START - 86_400_000).toUTCString();
  const up = await upstream(t, 'lm', (req, res) => {
    if (req.headers['if-modified-since'] === lm) {
      res.writeHead(304, { 'last-modified': lm });
      res.end();
      return;
    }
    res.writeHead(200, { 'last-modified': lm, 'content-type': 'text/plain' });
    res.end('body lm');
  });
  const g = await gw(t, [up.url], { valid: '1m', revalidate: true, now: c.now });
  assert.equal(status(await fetchText(`${g.url}/r`)), 'MISS');
  c.advance(120_000);
  const r = await fetchText(`${g.url}/r`);
  assert.equal(status(r), 'REVALIDATED');
  assert.equal(r.body, 'body lm');
  assert.equal(up.seen[1]!.headers['if-modified-since'], lm);
  assert.equal(status(await fetchText(`${g.url}/r`)), 'HIT');
});

test('revalidate: the upstream answers 200 with new content → EXPIRED and the new body, then HIT', T, async (t) => {
  const c = clock(START);
  let version = 1;
  const up = await upstream(t, 'changing', (req, res) => {
    const tag = `"e${version}"`;
    if (req.headers['if-none-match'] === tag) {
      res.writeHead(304, { etag: tag });
      res.end();
      return;
    }
    res.writeHead(200, { etag: tag });
    res.end(`body ${version}`);
  });
  const g = await gw(t, [up.url], { valid: '1m', revalidate: true, now: c.now });
  assert.equal(status(await fetchText(`${g.url}/r`)), 'MISS');
  c.advance(120_000);
  version = 2;
  const r = await fetchText(`${g.url}/r`);
  assert.equal(up.seen[1]!.headers['if-none-match'], '"e1"');
  assert.equal(status(r), 'EXPIRED');
  assert.equal(r.body, 'body 2');
  const h = await fetchText(`${g.url}/r`);
  assert.equal(status(h), 'HIT');
  assert.equal(h.body, 'body 2');
});

test('without revalidate the upstream never sees conditional headers', T, async (t) => {
  const c = clock(START);
  const lm = new Date(START - 86_400_000).toUTCString();
  const up = await scripted(t, { headers: { etag: '"x"', 'last-modified': lm } });
  const g = await gw(t, [up.url], { valid: '1m', now: c.now });
  assert.equal(status(await fetchText(`${g.url}/r`)), 'MISS');
  c.advance(120_000);
  const r = await fetchText(`${g.url}/r`);
  assert.equal(status(r), 'EXPIRED');
  assert.equal(up.seen.length, 2);
  for (const s of up.seen) {
    assert.equal(s.headers['if-none-match'], undefined);
    assert.equal(s.headers['if-modified-since'], undefined);
  }
});

test("clients' own If-None-Match, If-Modified-Since and Range are not forwarded upstream on a MISS", T, async (t) => {
  const up = await scripted(t, { body: 'hello world', headers: { etag: '"x"' } });
  const g = await gw(t, [up.url], { valid: '1m' });
  const r = await fetchText(`${g.url}/c`, {
    headers: { 'if-none-match': '"x"', 'if-modified-since': new Date().toUTCString(), range: 'bytes=0-1', 'if-range': '"x"' },
  });
  assert.equal(status(r), 'MISS');
  assert.equal(up.seen.length, 1);
  const h = up.seen[0]!.headers;
  assert.equal(h['if-none-match'], undefined);
  assert.equal(h['if-modified-since'], undefined);
  assert.equal(h.range, undefined);
  assert.equal(h['if-range'], undefined);
  // The full response was stored.
  const full = await fetchText(`${g.url}/c`);
  assert.equal(status(full), 'HIT');
  assert.equal(full.body, 'hello world');
});

// 6. client conditionals and ranges on a HIT --------------------------------------------------------

test('HIT: If-None-Match, If-Modified-Since, Range, If-Range and HEAD', T, async (t) => {
  const lm = new Date(START - 86_400_000).toUTCString();
  const up = await scripted(t, { body: 'hello world', headers: { etag: '"abc"', 'last-modified': lm } });
  const g = await gw(t, [up.url], { valid: '1m' });
  const u = `${g.url}/h`;
  assert.equal(status(await fetchText(u)), 'MISS');

  const inm = await fetchText(u, { headers: { 'if-none-match': '"abc"' } });
  assert.equal(inm.status, 304);
  assert.equal(inm.body, '');
  assert.equal(status(inm), 'HIT');
  assert.equal(inm.headers.etag, '"abc"');

  const other = await fetchText(u, { headers: { 'if-none-match': '"zzz"' } });
  assert.equal(other.status, 200);
  assert.equal(other.body, 'hello world');

  const ims = await fetchText(u, { headers: { 'if-modified-since': lm } });
  assert.equal(ims.status, 304);
  assert.equal(ims.body, '');

  const range = await fetchText(u, { headers: { range: 'bytes=0-4' } });
  assert.equal(range.status, 206);
  assert.equal(range.headers['content-range'], 'bytes 0-4/11');
  assert.equal(range.headers['content-length'], '5');
  assert.equal(range.body, 'hello');

  const suffix = await fetchText(u, { headers: { range: 'bytes=-3' } });
  assert.equal(suffix.status, 206);
  assert.equal(suffix.headers['content-range'], 'bytes 8-10/11');
  assert.equal(suffix.body, 'rld');

  const beyond = await fetchText(u, { headers: { range: 'bytes=1000-' } });
  assert.equal(beyond.status, 416);
  assert.equal(beyond.headers['content-range'], 'bytes */11');

  const ifRangeMiss = await fetchText(u, { headers: { range: 'bytes=0-4', 'if-range': '"other"' } });
  assert.equal(ifRangeMiss.status, 200);
  assert.equal(ifRangeMiss.body, 'hello world');

  const ifRangeHit = await fetchText(u, { headers: { range: 'bytes=0-4', 'if-range': '"abc"' } });
  assert.equal(ifRangeHit.status, 206);
  assert.equal(ifRangeHit.body, 'hello');

  const head = await fetchText(u, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(status(head), 'HIT');
  assert.equal(head.headers['content-length'], '11');
  assert.equal(head.body, '');

  assert.equal(up.seen.length, 1);
});

test('a 304 from the cache has no Content-Type or other body headers, as nginx (If-None-Match and If-Modified-Since)', T, async (t) => {
  const lm = new Date(START - 86_400_000).toUTCString();
  const kept = {
    etag: '"abc"',
    'last-modified': lm,
    'cache-control': 'max-age=600',
    expires: new Date(START + 600_000).toUTCString(),
    vary: 'X-V',
    'content-language': 'en',
    'content-location': '/h.en',
    'x-other': '1',
  };
  const up = await scripted(t, {
    body: 'hello world',
    headers: { ...kept, 'content-type': 'text/html', 'content-encoding': 'identity', 'accept-ranges': 'bytes' },
  });
  const g = await gw(t, [up.url], { valid: '1m' });
  const u = `${g.url}/h`;
  assert.equal(status(await fetchText(u)), 'MISS');
  for (const conditional of [{ 'if-none-match': '"abc"' }, { 'if-modified-since': lm }]) {
    const r = await fetchText(u, { headers: conditional });
    assert.equal(r.status, 304);
    assert.equal(status(r), 'HIT');
    for (const gone of ['content-type', 'content-encoding', 'content-length', 'accept-ranges', 'transfer-encoding']) {
      assert.equal(r.headers[gone], undefined, `${gone} on a 304 (${Object.keys(conditional)[0]})`);
    }
    for (const [name, value] of Object.entries(kept)) assert.equal(r.headers[name], value, `${name} kept on a 304`);
  }
  assert.equal(up.seen.length, 1);
});

test('a 206 from the cache has no Accept-Ranges (nginx drops it), a 200 keeps it', T, async (t) => {
  const up = await scripted(t, { body: 'hello world', headers: { 'accept-ranges': 'bytes' } });
  const g = await gw(t, [up.url], { valid: '1m' });
  const u = `${g.url}/r`;
  assert.equal(status(await fetchText(u)), 'MISS');
  const range = await fetchText(u, { headers: { range: 'bytes=0-4' } });
  assert.deepEqual([range.status, range.body, range.headers['content-range']], [206, 'hello', 'bytes 0-4/11']);
  assert.equal(range.headers['accept-ranges'], undefined);
  assert.equal(range.headers['content-type'], 'text/plain');
  const whole = await fetchText(u);
  assert.deepEqual([whole.status, whole.headers['accept-ranges']], [200, 'bytes']);
});

// 7. streaming and safety ---------------------------------------------------------------------------

const MB3 = 3 * 1024 * 1024;
async function bigUpstream(t: TestContext): Promise<{ up: Upstream; sha: string }> {
  const data = Buffer.alloc(MB3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 10)) & 0xff;
  const sha = createHash('sha256').update(data).digest('hex');
  const up = await upstream(t, 'big', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    let off = 0;
    const pump = (): void => {
      while (off < data.length) {
        const chunk = data.subarray(off, off + 64 * 1024);
        off += chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  });
  return { up, sha };
}
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('a 3 MB streamed response over the default maxEntrySize is delivered complete but not stored', T, async (t) => {
  const { up, sha } = await bigUpstream(t);
  const g = await gw(t, [up.url], { valid: '1m' });
  const r1 = await fetchBuf(`${g.url}/big`);
  assert.equal(status(r1), 'MISS');
  assert.equal(r1.body.length, MB3);
  assert.equal(sha256(r1.body), sha);
  await delay(20);
  const r2 = await fetchBuf(`${g.url}/big`);
  assert.equal(status(r2), 'MISS');
  assert.equal(sha256(r2.body), sha);
  assert.equal(up.seen.length, 2);
});

test('with maxEntrySize 4 MiB the 3 MB response is stored and the HIT is byte-identical', T, async (t) => {
  const { up, sha } = await bigUpstream(t);
  const g = await gw(t, [up.url], { valid: '1m', maxEntrySize: 4 * 1024 * 1024 });
  const r1 = await fetchBuf(`${g.url}/big`);
  assert.equal(status(r1), 'MISS');
  assert.equal(sha256(r1.body), sha);
  await delay(20);
  const r2 = await fetchBuf(`${g.url}/big`);
  assert.equal(status(r2), 'HIT');
  assert.equal(r2.body.length, MB3);
  assert.equal(sha256(r2.body), sha);
  assert.equal(up.seen.length, 1);
});

test('an upstream that resets mid-body (content-length 1000, 100 bytes sent) is not stored', T, async (t) => {
  const raw = await rawUpstream(t, (socket) => {
    const n = raw.connections;
    socket.once('data', () => {
      const head = 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\ncache-control: max-age=60\r\n\r\n';
      if (n === 1) {
        socket.write(head + 'x'.repeat(100), () => setTimeout(() => socket.resetAndDestroy(), 20));
      } else {
        socket.end(head + 'y'.repeat(1000));
      }
    });
  });
  const g = await gw(t, [raw.url], { valid: '1m' }, {}, { maxFails: 0 });
  const broken = await tryFetch(`${g.url}/reset`);
  assert.ok('error' in broken, 'the client sees a broken response');
  await delay(20);
  const next = await fetchText(`${g.url}/reset`);
  assert.equal(next.status, 200);
  assert.equal(status(next), 'MISS');
  assert.equal(next.body, 'y'.repeat(1000));
  assert.equal(status(await fetchText(`${g.url}/reset`)), 'HIT');
});

test('a client that aborts mid-response of a slow streaming upstream leaves nothing stored', T, async (t) => {
  const up = await upstream(t, 'slow', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    let i = 0;
    const timer = setInterval(() => {
      if (res.destroyed) return clearInterval(timer);
      res.write(`chunk ${i}\n`);
      if (++i === 8) {
        clearInterval(timer);
        res.end();
      }
    }, 40);
    res.on('close', () => clearInterval(timer));
  });
  const g = await gw(t, [up.url], { valid: '1m' });
  await abortAfterFirstChunk(`${g.url}/slow`);
  await delay(450);
  const r = await fetchText(`${g.url}/slow`);
  assert.equal(status(r), 'MISS');
  assert.equal(r.body.split('\n').length, 9);
  assert.equal(status(await fetchText(`${g.url}/slow`)), 'HIT');
});

// 8. any local handler ------------------------------------------------------------------------------

test('a plain local handler behind cache(): MISS then HIT with the first body', T, async (t) => {
  let n = 0;
  const g = await listen(
    t,
    createServer(
      chain(cache({ valid: '1m' }), (_req: IncomingMessage, res: ServerResponse) => {
        res.setHeader('content-type', 'text/plain');
        res.end(`local ${n++}`);
      }),
    ),
  );
  const a = await fetchText(`${g.url}/x`);
  assert.equal(status(a), 'MISS');
  assert.equal(a.body, 'local 0');
  const b = await fetchText(`${g.url}/x`);
  assert.equal(status(b), 'HIT');
  assert.equal(b.body, 'local 0');
  assert.equal(b.headers['content-type'], 'text/plain');
  assert.equal(n, 1);
});

test('headers set with setHeader before writeHead are stored', T, async (t) => {
  let n = 0;
  const g = await listen(
    t,
    createServer(
      chain(cache({ valid: '1m' }), (_req: IncomingMessage, res: ServerResponse) => {
        n++;
        res.setHeader('x-custom', 'kept');
        res.setHeader('content-type', 'text/html');
        res.writeHead(200, { 'x-given': 'too' });
        res.end('<p>hi</p>');
      }),
    ),
  );
  assert.equal(status(await fetchText(`${g.url}/h`)), 'MISS');
  const b = await fetchText(`${g.url}/h`);
  assert.equal(status(b), 'HIT');
  assert.equal(b.headers['x-custom'], 'kept');
  assert.equal(b.headers['x-given'], 'too');
  assert.equal(b.headers['content-type'], 'text/html');
  assert.equal(b.body, '<p>hi</p>');
  assert.equal(n, 1);
});

test('Express routes using res.send and res.json behind app.use(cache()) → HIT with the same type and body', T, async (t) => {
  let calls = 0;
  const app = express();
  app.set('env', 'test');
  app.use(cache({ valid: '1m' }));
  app.get('/send', (_req, res) => {
    calls++;
    res.send(`<b>sent ${calls}</b>`);
  });
  app.get('/json', (_req, res) => {
    calls++;
    res.json({ calls });
  });
  const g = await listen(t, createServer(app));
  for (const path of ['/send', '/json']) {
    const a = await fetchText(`${g.url}${path}`);
    assert.equal(status(a), 'MISS');
    const b = await fetchText(`${g.url}${path}`);
    assert.equal(status(b), 'HIT', path);
    assert.equal(b.headers['content-type'], a.headers['content-type']);
    assert.equal(b.body, a.body);
  }
  assert.equal(calls, 2);
  assert.match((await fetchText(`${g.url}/json`)).headers['content-type'] as string, /application\/json/);
});
