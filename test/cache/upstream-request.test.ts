// cache() tells balance() how the request goes upstream (GET for a HEAD, no client conditionals,
// its own revalidation validators) through the exchange record, never by changing the request:
// what comes after cache() sees the client's method and headers as they were.
import { strict as assert } from 'node:assert';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { test, type TestContext } from 'node:test';
import { balance, cache, chain, createPool, type Middleware } from '../../src/index.ts';
import { fetchText, gateway, upstream } from '../helpers.ts';

interface Seen {
  method: string | undefined;
  ifNoneMatch: string | undefined;
  ifModifiedSince: string | undefined;
  range: string | undefined;
}

function seenOf(req: IncomingMessage): Seen {
  const h = req.headers;
  return { method: req.method, ifNoneMatch: h['if-none-match'], ifModifiedSince: h['if-modified-since'], range: h.range as string | undefined };
}

/** A middleware that records what it sees of each request. */
function spy(into: Seen[]): Middleware {
  return (req, _res, next) => {
    into.push(seenOf(req));
    next();
  };
}

async function setup(t: TestContext) {
  let clock = 1_000_000;
  const up = await upstream(t, 'up', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=10', etag: '"v1"', 'last-modified': 'Mon, 01 Jan 2024 00:00:00 GMT' });
    res.end('body');
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  return { up, pool, advance: (ms: number) => (clock += ms), now: () => clock };
}

test("a middleware between cache() and balance() sees the client's method and headers; the upstream gets GET, without them", async (t) => {
  const { up, pool, now } = await setup(t);
  const seen: Seen[] = [];
  const gw = await gateway(t, chain(cache({ revalidate: true, now }), spy(seen), balance(pool)));
  const r = await fetchText(`${gw.url}/a`, { method: 'HEAD', headers: { 'if-none-match': '"client"', range: 'bytes=0-1' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-cache-status'], 'MISS');
  assert.deepEqual(seen, [{ method: 'HEAD', ifNoneMatch: '"client"', ifModifiedSince: undefined, range: 'bytes=0-1' }]);
  assert.equal(up.seen.length, 1);
  assert.equal(up.seen[0]!.method, 'GET');
  assert.equal(up.seen[0]!.headers['if-none-match'], undefined);
  assert.equal(up.seen[0]!.headers.range, undefined);
  // The HEAD was fetched as GET and stored: a GET is a HIT with the whole body.
  const hit = await fetchText(`${gw.url}/a`);
  assert.deepEqual([hit.headers['x-cache-status'], hit.body], ['HIT', 'body']);
});

test("revalidation: the middleware sees the client's validators, the upstream gets the stored entry's", async (t) => {
  const { up, pool, now, advance } = await setup(t);
  const seen: Seen[] = [];
  const gw = await gateway(t, chain(cache({ revalidate: true, now }), spy(seen), balance(pool)));
  assert.equal((await fetchText(`${gw.url}/b`)).headers['x-cache-status'], 'MISS');
  advance(20_000);
  const r = await fetchText(`${gw.url}/b`, { headers: { 'if-modified-since': 'Sat, 01 Jan 2000 00:00:00 GMT' } });
  assert.equal(r.headers['x-cache-status'], 'EXPIRED');
  assert.deepEqual(seen[1], { method: 'GET', ifNoneMatch: undefined, ifModifiedSince: 'Sat, 01 Jan 2000 00:00:00 GMT', range: undefined });
  assert.equal(up.seen[1]!.headers['if-none-match'], '"v1"');
  assert.equal(up.seen[1]!.headers['if-modified-since'], 'Mon, 01 Jan 2024 00:00:00 GMT');
});

test("a local handler behind cache() sees the client's method and conditional headers", async (t) => {
  const seen: Seen[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    seen.push(seenOf(req));
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' });
    res.end('local');
  };
  const gw = await gateway(t, chain(cache(), handler));
  const r = await fetchText(`${gw.url}/c`, { method: 'HEAD', headers: { 'if-none-match': '"client"', 'if-modified-since': 'Sat, 01 Jan 2000 00:00:00 GMT' } });
  assert.equal(r.status, 200);
  assert.deepEqual(seen, [{ method: 'HEAD', ifNoneMatch: '"client"', ifModifiedSince: 'Sat, 01 Jan 2000 00:00:00 GMT', range: undefined }]);
  // What the handler wrote for the HEAD is stored all the same (node leaves the body off the wire).
  const hit = await fetchText(`${gw.url}/c`);
  assert.deepEqual([hit.headers['x-cache-status'], hit.body], ['HIT', 'local']);
});
