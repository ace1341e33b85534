// Fastify with `http2: true` (h2c, and with `https` for TLS with allowHTTP1) and Koa on a node:http2
// server (issue 12): the switchyard plugin and adapter in front of HTTP/1.1 upstreams, with HTTP/2
// clients. rewrite, cache, sticky, balance and monitor behave as over HTTP/1.1; the framework's log
// stays clean; a reply header a hook set that HTTP/2 forbids is left out rather than crash the answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import Fastify from 'fastify';
import Koa from 'koa';
import { balance, cache, monitor, rewrite, sticky, type UpstreamPool } from '../../src/index.ts';
import { switchyard } from '../../src/adapters/fastify.ts';
import { koa } from '../../src/adapters/koa.ts';
import { poolOf, until, upstream, type Upstream } from '../helpers.ts';
import { logCapture } from '../adapters/common.ts';
import {
  cancelAfterFirstChunk,
  connectionHeaders,
  h2Connect,
  h2Gateway,
  h2Request,
  KINDS,
  pseudoHeaders,
  testCerts,
  tickingUpstream,
  type H2Kind,
} from './support.ts';

const T = { timeout: 20_000 };

interface Stack {
  ups: Record<string, Upstream>;
  pool: UpstreamPool;
}

/** Three upstreams answering their name (cacheable under /c/), and a pool of them with ids a, b, c. */
async function stack(t: TestContext): Promise<Stack> {
  const ups: Record<string, Upstream> = {};
  for (const name of ['a', 'b', 'c']) {
    ups[name] = await upstream(t, name, (req, res, body) => {
      if (req.url?.includes('/c/')) res.setHeader('cache-control', 'max-age=60');
      res.setHeader('x-upstream', name);
      res.end(req.method === 'POST' ? `${name}:${body.length}` : name);
    });
  }
  return { ups, pool: poolOf(t, ups, { name: 'backend' }) };
}

// forceCloseConnections: Node 22's http2 server.close() waits for open sessions (Node 24 closes
// them), so without it app.close() waits for Fastify's http2SessionTimeout (72 s) on Node 22.
function h2cFastify(stream: { write(line: string): void }) {
  return Fastify({ http2: true, forceCloseConnections: true, logger: { level: 'info', stream } });
}

/** Fastify with `http2: true`: TLS with allowHTTP1 (typed as the h2c one: only its server differs), or h2c. */
type H2Fastify = ReturnType<typeof h2cFastify>;

async function fastifyApp(t: TestContext, kind: H2Kind, pool: UpstreamPool): Promise<{ app: H2Fastify; url: string; loud(): unknown[] }> {
  const log = logCapture();
  const app: H2Fastify =
    kind === 'secure'
      ? (Fastify({
          http2: true,
          forceCloseConnections: true,
          https: { allowHTTP1: true, ...testCerts().server },
          logger: { level: 'info', stream: log.stream },
        }) as unknown as H2Fastify)
      : h2cFastify(log.stream);
  t.after(() => app.close());
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _request, reply) => {
    void reply.code(err.statusCode ?? 500).send({ handledBy: 'fastify', code: err.code });
  });
  // A hook setting a reply header HTTP/2 forbids (lent to the proxied response by the plugin).
  app.addHook('onRequest', async (request, reply) => {
    if (request.url.includes('careless')) reply.header('keep-alive', 'timeout=5');
  });
  const m = monitor({ pools: [pool], prefix: '/api/status' });
  await app.register(switchyard, {
    prefix: '/api',
    use: [
      m,
      rewrite([{ rewrite: '^/api/old/(.*)$', replacement: '/api/new/$1', flag: 'redirect' }]),
      cache(),
      sticky(pool, { cookie: { path: '/' } }),
      balance(pool),
    ],
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as { port: number };
  return { app, url: `${kind === 'secure' ? 'https' : 'http'}://127.0.0.1:${port}`, loud: () => log.records.filter((r) => r.level >= 40) };
}

for (const kind of KINDS) {
  const scheme = kind === 'secure' ? 'https' : 'http';

  test(`Fastify http2 (${kind}): rewrite, cache, sticky, balance and monitor serve an HTTP/2 client`, T, async (t) => {
    const { ups, pool } = await stack(t);
    const f = await fastifyApp(t, kind, pool);
    const session = h2Connect(t, f.url);

    const first = await h2Request(session, { ':path': '/api/x?q=1' });
    assert.equal(first.status, 200);
    const server = first.text;
    const seen = ups[server]!.seen.at(-1)!;
    assert.equal(seen.url, '/api/x?q=1');
    assert.deepEqual(pseudoHeaders(seen.headers), []);
    assert.equal(seen.headers['x-forwarded-host'], new URL(f.url).host);
    assert.equal(seen.headers['x-forwarded-proto'], scheme);

    // sticky: the cookie is set, and honoured
    const setCookie = first.headers['set-cookie'];
    assert.ok(Array.isArray(setCookie) && setCookie.length === 1);
    const cookie = setCookie[0]!.split(';')[0]!;
    for (let i = 0; i < 4; i++) assert.equal((await h2Request(session, { ':path': '/api/y', cookie })).text, server);

    // cache: MISS then HIT
    const miss = await h2Request(session, { ':path': '/api/c/1', cookie });
    assert.equal(miss.headers['x-cache-status'], 'MISS');
    const hit = await h2Request(session, { ':path': '/api/c/1', cookie });
    assert.equal(hit.headers['x-cache-status'], 'HIT');
    assert.equal(hit.text, miss.text);

    // rewrite: a redirect built from :authority
    const moved = await h2Request(session, { ':path': '/api/old/z', ':authority': 'app.example' });
    assert.equal(moved.status, 302);
    assert.equal(moved.headers.location, `${scheme}://app.example/api/new/z`);

    // monitor API
    const api = await h2Request(session, { ':path': '/api/status/api/9/http/upstreams' });
    assert.equal(api.status, 200);
    assert.deepEqual(Object.keys(JSON.parse(api.text) as object), ['backend']);

    // a hook's Keep-Alive is not sent to an HTTP/2 client, and does not break the answer
    const careless = await h2Request(session, { ':path': '/api/careless', cookie });
    assert.equal(careless.status, 200);
    assert.deepEqual(connectionHeaders(careless.headers), []);

    for (const r of [first, miss, hit, moved, api, careless]) assert.deepEqual(connectionHeaders(r.headers), []);
    assert.deepEqual(f.loud(), []);
  });

  test(`Fastify http2 (${kind}): upstream 500 relayed, 503 with no server, a streamed upload`, T, async (t) => {
    const up = await upstream(t, 'u', (req, res, body) => {
      if (req.url === '/api/fail') {
        res.statusCode = 500;
        return res.end('broken');
      }
      res.end(`${req.headers['transfer-encoding'] ?? req.headers['content-length']}:${body.length}`);
    });
    const pool = poolOf(t, { u: up.url }, { name: 'backend' });
    const f = await fastifyApp(t, kind, pool);
    const session = h2Connect(t, f.url);
    const broken = await h2Request(session, { ':path': '/api/fail' });
    assert.equal(broken.status, 500);
    assert.equal(broken.text, 'broken');
    const upload = await h2Request(session, { ':path': '/api/up', ':method': 'POST', 'content-type': 'application/octet-stream' }, [
      'a'.repeat(1000),
      'b'.repeat(1000),
      'c'.repeat(1000),
    ]);
    assert.equal(upload.status, 200);
    assert.equal(upload.text, 'chunked:3000');
    pool.update('u', { down: true });
    const none = await h2Request(session, { ':path': '/api/x' });
    assert.equal(none.status, 503);
    assert.equal((JSON.parse(none.text) as { handledBy: string }).handledBy, 'fastify');
    assert.deepEqual(f.loud(), []);
  });

  test(`Fastify http2 (${kind}): a client that resets its stream mid-response aborts the upstream request`, T, async (t) => {
    const up = await tickingUpstream(t);
    const pool = poolOf(t, { u: up.url }, { name: 'backend' });
    const f = await fastifyApp(t, kind, pool);
    const session = h2Connect(t, f.url);
    await cancelAfterFirstChunk(session, '/api/stream');
    await until(() => up.closed() === 1, 5000, 'the upstream request to be aborted');
    await until(() => pool.stats().servers.every((s) => s.active === 0), 5000, 'active to return to 0');
    assert.deepEqual(f.loud(), []);
  });
}

test('Koa on node:http2 (h2c): koa(cache(), balance()) serves an HTTP/2 client; errors reach Koa', T, async (t) => {
  const { ups, pool } = await stack(t);
  const app = new Koa();
  const errors: unknown[] = [];
  app.on('error', (err) => errors.push(err));
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      ctx.status = (err as { statusCode?: number }).statusCode ?? 500;
      ctx.body = 'koa caught it';
    }
  });
  app.use(koa(cache(), balance(pool)));
  const gw = await h2Gateway(t, 'h2c', app.callback());
  const session = h2Connect(t, gw.url);
  const miss = await h2Request(session, { ':path': '/c/k' });
  assert.equal(miss.status, 200);
  assert.equal(miss.headers['x-cache-status'], 'MISS');
  assert.deepEqual(pseudoHeaders(ups[miss.text]!.seen.at(-1)!.headers), []);
  const hit = await h2Request(session, { ':path': '/c/k' });
  assert.equal(hit.headers['x-cache-status'], 'HIT');
  for (const id of ['a', 'b', 'c']) pool.update(id, { down: true });
  const none = await h2Request(session, { ':path': '/x' });
  assert.equal(none.status, 503);
  assert.equal(none.text, 'koa caught it');
  assert.deepEqual(errors, []);
});
