// cache(), rewrite(), sticky() and monitor() behind node:http2 servers (issue 12), TLS with
// allowHTTP1 and h2c, with HTTP/2 clients: :authority is the request's host (cache key, Host check,
// `$host`, redirects, server names, allowedHosts), responses the middleware answer themselves carry
// no connection-specific header, and a client that resets its stream leaves nothing half-stored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http, { type IncomingMessage } from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { balance, cache, chain, monitor, rewrite, sticky, type CacheOptions, type Middleware, type RewriteRule } from '../../src/index.ts';
import { listen, poolOf, until, upstream } from '../helpers.ts';
import { cancelAfterFirstChunk, connectionHeaders, h2Connect, h2Gateway, h2Request, KINDS, testCerts } from './support.ts';

const T = { timeout: 20_000 };
const START = Date.UTC(2026, 0, 1);

/** A middleware that sets response headers HTTP/2 forbids, as a careless app or hook might. */
const careless: Middleware = (_req, res, next) => {
  res.setHeader('keep-alive', 'timeout=5');
  res.setHeader('proxy-connection', 'keep-alive');
  next();
};

/** An HTTP/1.1 GET over TLS to the allowHTTP1 gateway. */
function h1Get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { ca: testCerts().ca, agent: false, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

for (const kind of KINDS) {
  const scheme = kind === 'secure' ? 'https' : 'http';

  // ---- cache() ----

  test(`${kind}: cache() answers the second HTTP/2 request from the cache (HIT), keyed by :authority`, T, async (t) => {
    let n = 0;
    const up = await upstream(t, 'a', (_req, res) => {
      n++;
      res.writeHead(200, { 'cache-control': 'max-age=60', connection: 'keep-alive', 'keep-alive': 'timeout=5', 'content-type': 'text/plain' });
      res.end(`v${n}`);
    });
    const pool = poolOf(t, { a: up.url });
    const gw = await h2Gateway(t, kind, chain(cache(), balance(pool)));
    const session = h2Connect(t, gw.url);
    const first = await h2Request(session, { ':path': '/c?x=1' });
    assert.equal(first.status, 200);
    assert.equal(first.headers['x-cache-status'], 'MISS');
    assert.equal(first.text, 'v1');
    assert.deepEqual(connectionHeaders(first.headers), []);
    const second = await h2Request(session, { ':path': '/c?x=1' });
    assert.equal(second.status, 200);
    assert.equal(second.headers['x-cache-status'], 'HIT');
    assert.equal(second.text, 'v1');
    assert.deepEqual(connectionHeaders(second.headers), []);
    assert.equal(up.seen.length, 1);
    // Another :authority is another key.
    const other = await h2Request(session, { ':path': '/c?x=1', ':authority': 'other.example' });
    assert.equal(other.headers['x-cache-status'], 'MISS');
    assert.equal(other.text, 'v2');
    // A :authority that is not a host name is not cached at all (it could forge another key).
    const forged = await h2Request(session, { ':path': '/c?x=1', ':authority': 'bad..example' });
    assert.equal(forged.headers['x-cache-status'], undefined);
    if (kind === 'secure') {
      // An HTTP/1.1 client naming the same host in Host gets the same entry.
      const h1 = await h1Get(`${gw.url}/c?x=1`);
      assert.equal(h1.headers['x-cache-status'], 'HIT');
      assert.equal(h1.body, 'v1');
    }
  });

  test(`${kind}: response headers HTTP/2 forbids, set before cache(), are left out of a MISS and a HIT`, T, async (t) => {
    const up = await upstream(t, 'a', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' });
      res.end('body');
    });
    const pool = poolOf(t, { a: up.url });
    const gw = await h2Gateway(t, kind, chain(careless, cache(), balance(pool)));
    const session = h2Connect(t, gw.url);
    const miss = await h2Request(session, { ':path': '/' });
    assert.equal(miss.status, 200);
    assert.deepEqual(connectionHeaders(miss.headers), []);
    const hit = await h2Request(session, { ':path': '/' });
    assert.equal(hit.status, 200);
    assert.equal(hit.headers['x-cache-status'], 'HIT');
    assert.equal(hit.text, 'body');
    assert.deepEqual(connectionHeaders(hit.headers), []);
  });

  test(`${kind}: a client that resets its stream mid-response leaves no truncated entry in the cache`, T, async (t) => {
    let n = 0;
    const timers = new Set<NodeJS.Timeout>();
    t.after(() => timers.forEach(clearInterval));
    const server = http.createServer((_req, res) => {
      n++;
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' });
      if (n > 1) return res.end('whole');
      let left = 20;
      const timer = setInterval(() => {
        if (--left === 0) {
          clearInterval(timer);
          res.end('end');
        } else res.write('part ');
      }, 20);
      timers.add(timer);
      res.once('close', () => clearInterval(timer));
    });
    const up = await listen(t, server);
    const pool = poolOf(t, { a: up.url });
    const gw = await h2Gateway(t, kind, chain(cache(), balance(pool)));
    const session = h2Connect(t, gw.url);
    await cancelAfterFirstChunk(session, '/slow');
    await until(() => pool.stats().servers.every((s) => s.active === 0), 5000, 'the upstream request to end');
    const again = await h2Request(session, { ':path': '/slow' });
    assert.equal(again.status, 200);
    assert.notEqual(again.headers['x-cache-status'], 'HIT');
    assert.equal(again.text, 'whole');
  });

  test(`${kind}: a background update for an HTTP/2 client tells the upstream the client's address`, T, async (t) => {
    const c = { t: START };
    let version = 0;
    const up = await upstream(t, 'a', (_req, res) => {
      version++;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`v${version}`);
    });
    const pool = poolOf(t, { a: up.url });
    const options: CacheOptions = { valid: '1s', lock: true, useStale: ['updating'], backgroundUpdate: true, now: () => c.t };
    const gw = await h2Gateway(t, kind, chain(cache(options), balance(pool)));
    const session = h2Connect(t, gw.url);
    assert.equal((await h2Request(session, { ':path': '/m' })).text, 'v1');
    c.t += 1500;
    const stale = await h2Request(session, { ':path': '/m' });
    assert.equal(stale.headers['x-cache-status'], 'STALE');
    assert.equal(stale.text, 'v1');
    await until(() => up.seen.length === 2, 5000, 'the background update upstream');
    assert.equal(up.seen[1]!.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(up.seen[1]!.headers['x-forwarded-host'], `127.0.0.1:${gw.port}`);
    await until(() => pool.stats().servers.every((s) => s.active === 0), 5000, 'the update to end');
    const after = await h2Request(session, { ':path': '/m' });
    assert.equal(after.headers['x-cache-status'], 'HIT');
    assert.equal(after.text, 'v2');
  });

  // ---- rewrite() ----

  test(`${kind}: rewrite() redirects are built from :authority and the connection's scheme`, T, async (t) => {
    const rules: RewriteRule[] = [
      { rewrite: '^/old/(.*)$', replacement: '/new/$1', flag: 'redirect' },
      { location: '= /moved', rules: [{ return: 301, url: '/elsewhere' }] },
      { location: '= /host', rules: [{ return: 200, text: 'host=$host http_host=$http_host scheme=$scheme' }] },
    ];
    const gw = await h2Gateway(t, kind, chain(careless, rewrite(rules)));
    const session = h2Connect(t, gw.url);
    const r = await h2Request(session, { ':path': '/old/x?y=1', ':authority': 'App.example:8443' });
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, `${scheme}://App.example:8443/new/x?y=1`);
    assert.deepEqual(connectionHeaders(r.headers), []);
    const moved = await h2Request(session, { ':path': '/moved' });
    assert.equal(moved.status, 301);
    assert.equal(moved.headers.location, `${scheme}://127.0.0.1:${gw.port}/elsewhere`);
    const host = await h2Request(session, { ':path': '/host', ':authority': 'App.example:8443', ':scheme': scheme === 'https' ? 'http' : 'https' });
    assert.equal(host.status, 200);
    assert.equal(host.text, `host=app.example http_host=App.example:8443 scheme=${scheme}`);
    assert.deepEqual(connectionHeaders(host.headers), []);
  });

  test(`${kind}: rewrite() server blocks are chosen by :authority; return 444 resets only that stream`, T, async (t) => {
    const rules: RewriteRule[] = [
      { server: 'a.example', rules: [{ return: 200, text: 'server a' }] },
      { server: 'b.example', rules: [{ return: 444 }] },
    ];
    const gw = await h2Gateway(t, kind, chain(rewrite(rules)));
    const session = h2Connect(t, gw.url);
    const a = await h2Request(session, { ':path': '/', ':authority': 'a.example' });
    assert.equal(a.status, 200);
    assert.equal(a.text, 'server a');
    // As nginx over HTTP/2: RST_STREAM INTERNAL_ERROR, no answer, and the connection stays.
    await assert.rejects(h2Request(session, { ':path': '/', ':authority': 'b.example' }), /NGHTTP2_INTERNAL_ERROR/);
    const again = await h2Request(session, { ':path': '/', ':authority': 'a.example' });
    assert.equal(again.text, 'server a');
  });

  // ---- sticky() ----

  test(`${kind}: sticky() cookie mode sets its cookie to an HTTP/2 client and honours it`, T, async (t) => {
    const a = await upstream(t, 'a');
    const b = await upstream(t, 'b');
    const c = await upstream(t, 'c');
    const pool = poolOf(t, { a, b, c });
    const gw = await h2Gateway(t, kind, chain(sticky(pool, { cookie: { path: '/' } }), balance(pool)));
    const session = h2Connect(t, gw.url);
    const first = await h2Request(session, { ':path': '/' });
    assert.equal(first.status, 200);
    const setCookie = first.headers['set-cookie'];
    assert.ok(Array.isArray(setCookie) && setCookie.length === 1, `one Set-Cookie: ${String(setCookie)}`);
    assert.match(setCookie[0]!, /^srv_id=[0-9a-f]{32}; path=\/$/);
    const cookie = setCookie[0]!.split(';')[0]!;
    const bodies: string[] = [];
    for (let i = 0; i < 6; i++) {
      // HTTP/2 clients may split cookies into several fields (RFC 9113 §8.2.3).
      const r = await h2Request(session, { ':path': '/', cookie: ['other=1', cookie] });
      bodies.push(r.text);
    }
    assert.deepEqual(bodies, Array(6).fill(first.text));
    assert.equal(await sticky(pool, { cookie: true }).sessions(first.text), 0);
  });

  // ---- monitor() ----

  test(`${kind}: monitor() API, metrics and dashboard served to an HTTP/2 client, with allowedHosts read from :authority`, T, async (t) => {
    const a = await upstream(t, 'a');
    const pool = poolOf(t, { a }, { name: 'backend' });
    const m = monitor({ pools: [pool], prefix: '/status', allowedHosts: ['gw.example'] });
    t.after(() => m.close());
    const gw = await h2Gateway(t, kind, chain(careless, m, balance(pool)));
    const session = h2Connect(t, gw.url);
    const api = await h2Request(session, { ':path': '/status/api/9/http/upstreams' });
    assert.equal(api.status, 200);
    assert.equal(api.headers['content-type'], 'application/json');
    assert.deepEqual(connectionHeaders(api.headers), []);
    const body = JSON.parse(api.text) as Record<string, { peers: Array<{ id: unknown; server: string }> }>;
    assert.equal(body.backend!.peers.length, 1);
    const named = await h2Request(session, { ':path': '/status/api/9/http/upstreams', ':authority': 'gw.example:8443' });
    assert.equal(named.status, 200);
    const rebound = await h2Request(session, { ':path': '/status/api/9/http/upstreams', ':authority': 'evil.example' });
    assert.equal(rebound.status, 403);
    assert.match(rebound.text, /HostNotAllowed/);
    assert.match(rebound.text, /evil\.example/);
    const html = await h2Request(session, { ':path': '/status/dashboard/' });
    assert.equal(html.status, 200);
    assert.match(String(html.headers['content-type']), /^text\/html/);
    assert.match(html.text, /<html/i);
    const redirect = await h2Request(session, { ':path': '/status/dashboard' });
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.location, 'dashboard/');
    const metrics = await h2Request(session, { ':path': '/status/metrics' });
    assert.equal(metrics.status, 200);
    // The gateway still proxies on the same session.
    const proxied = await h2Request(session, { ':path': '/app' });
    assert.equal(proxied.text, 'a');
  });

  test(`${kind}: monitor() answers a write body over maxBodySize 413 to an HTTP/2 client and ends only that stream`, T, async (t) => {
    const a = await upstream(t, 'a');
    const pool = poolOf(t, { a }, { name: 'backend' });
    const m = monitor({ pools: [pool], prefix: '/status', write: () => true, maxBodySize: 64 });
    t.after(() => m.close());
    const gw = await h2Gateway(t, kind, chain(m, balance(pool)));
    const streams: http2.ServerHttp2Stream[] = [];
    gw.server.on('stream', (s: http2.ServerHttp2Stream) => streams.push(s));
    const session = h2Connect(t, gw.url);
    const path = '/status/api/9/http/upstreams/backend/servers/a';
    const big = JSON.stringify({ route: 'r', pad: 'x'.repeat(500) });
    const declared = await h2Request(
      session,
      { ':path': path, ':method': 'PATCH', 'content-type': 'application/json', 'content-length': String(big.length) },
      big,
    );
    assert.equal(declared.status, 413);
    assert.match(declared.text, /BodyReadError/);
    // Streamed without a length, and longer than a flow-control window: the answer comes, the upload stops.
    const chunks = Array.from({ length: 64 }, () => 'x'.repeat(16 * 1024));
    const streamed = await h2Request(session, { ':path': path, ':method': 'PATCH', 'content-type': 'application/json' }, ['{"route":"r","pad":"', ...chunks]);
    assert.equal(streamed.status, 413);
    // The gateway reset that stream (NO_ERROR) rather than leave the client's upload hanging.
    await until(() => streams.length === 2 && streams[1]!.closed, 5000, 'the stream to be closed');
    assert.equal(streams[1]!.rstCode, http2.constants.NGHTTP2_NO_ERROR);
    assert.equal(pool.get('a')!.route, '');
    const ok = await h2Request(session, { ':path': path, ':method': 'PATCH', 'content-type': 'application/json' }, JSON.stringify({ route: 'r' }));
    assert.equal(ok.status, 200);
    assert.equal(pool.get('a')!.route, 'r');
  });
}

test('h2c: $host of a request without :authority is its Host header, else the local address', T, async (t) => {
  const gw = await h2Gateway(t, 'h2c', chain(rewrite([{ return: 200, text: '$host' }])));
  const session = h2Connect(t, gw.url);
  // node's client sends no :authority when a Host header is given.
  const r = await h2Request(session, { ':path': '/', host: 'Named.example:81' });
  assert.equal(r.text, 'named.example');
});
