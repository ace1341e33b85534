// cache() in front of balance() inside Express, Fastify and Koa: MISS then HIT with one
// upstream request, and an upstream failure (502) answered STALE through each
// framework's own error handling.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { TestContext } from 'node:test';
import express, { type ErrorRequestHandler } from 'express';
import Fastify from 'fastify';
import Koa from 'koa';
import { balance, cache, createPool, type CacheOptions, type UpstreamPool } from '../../src/index.ts';
import { switchyard } from '../../src/adapters/fastify.ts';
import { koa } from '../../src/adapters/koa.ts';
import { clock, fetchText, listen, upstream, type Upstream } from '../helpers.ts';
import { logCapture } from '../adapters/common.ts';

const T = { timeout: 10_000 };

const status = (r: { headers: IncomingMessage['headers'] }): string | undefined => r.headers['x-cache-status'] as string | undefined;

type Build = (t: TestContext, pool: UpstreamPool, opts: CacheOptions) => Promise<{ url: string; handled: () => number; loud?: () => unknown[] }>;

/** Express: app.use(cache(...), balance(pool)) under /api, with an error middleware. */
const viaExpress: Build = async (t, pool, opts) => {
  let handled = 0;
  const app = express();
  app.set('env', 'test');
  app.use('/api', cache(opts), balance(pool));
  const onError: ErrorRequestHandler = (err, _req, res, _next) => {
    handled++;
    res.status(err.statusCode ?? 500).json({ handledBy: 'express', code: err.code });
  };
  app.use(onError);
  const g = await listen(t, createServer(app));
  return { url: `${g.url}/api`, handled: () => handled };
};

/** Fastify: the switchyard plugin with use: [cache(...), balance(pool)] under /api, with an error handler. */
const viaFastify: Build = async (t, _pool, opts) => {
  let handled = 0;
  const log = logCapture();
  const app = Fastify({ logger: { level: 'warn', stream: log.stream } });
  t.after(() => app.close());
  app.setErrorHandler((err: Error & { code?: string; statusCode?: number }, _request, reply) => {
    handled++;
    void reply.code(err.statusCode ?? 500).send({ handledBy: 'fastify', code: err.code });
  });
  await app.register(switchyard, { prefix: '/api', use: [cache(opts), balance(_pool)] });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/api`, handled: () => handled, loud: () => log.records.filter((r) => r.level >= 40) };
};

/** Koa: a try/catch middleware, then koa(cache(...), balance(pool)). */
const viaKoa: Build = async (t, pool, opts) => {
  let handled = 0;
  const app = new Koa();
  app.on('error', () => undefined);
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      handled++;
      const e = err as { code?: string; statusCode?: number };
      ctx.status = e.statusCode ?? 500;
      ctx.body = { handledBy: 'koa', code: e.code };
    }
  });
  app.use(koa(cache(opts), balance(pool)));
  const g = await listen(t, createServer(app.callback()));
  return { url: `${g.url}/api`, handled: () => handled };
};

async function origin(t: TestContext): Promise<Upstream> {
  let n = 0;
  return upstream(t, 'origin', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'origin' });
    res.end(`origin ${++n}`);
  });
}

for (const [name, build] of [
  ['Express', viaExpress],
  ['Fastify', viaFastify],
  ['Koa', viaKoa],
] as const) {
  test(`${name}: cache() in front of balance() → MISS then HIT, one upstream request`, T, async (t) => {
    const up = await origin(t);
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const gw = await build(t, pool, { valid: '1m' });
    const a = await fetchText(`${gw.url}/item?x=1`);
    assert.equal(a.status, 200);
    assert.equal(status(a), 'MISS');
    assert.equal(a.body, 'origin 1');
    const b = await fetchText(`${gw.url}/item?x=1`);
    assert.equal(b.status, 200);
    assert.equal(status(b), 'HIT');
    assert.equal(b.body, 'origin 1');
    assert.equal(b.headers['content-type'], 'text/plain');
    assert.equal(b.headers['x-upstream'], 'origin');
    assert.equal(up.seen.length, 1);
    assert.equal(up.seen[0]!.url, '/api/item?x=1');
  });

  test(`${name}: a 502 after expiry is served STALE via useStale ['error'] through the framework's error handling`, T, async (t) => {
    const c = clock(Date.UTC(2026, 0, 1));
    const up = await origin(t);
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const gw = await build(t, pool, { valid: '1m', useStale: ['error'], now: c.now });
    assert.equal(status(await fetchText(`${gw.url}/s`)), 'MISS');
    c.advance(120_000);
    await up.close();
    for (let i = 0; i < 2; i++) {
      const r = await fetchText(`${gw.url}/s`);
      assert.equal(r.status, 200);
      assert.equal(status(r), 'STALE');
      assert.equal(r.body, 'origin 1');
      assert.equal(r.headers['content-type'], 'text/plain');
    }
    assert.equal(gw.handled(), 2, "the error went through the framework's error handler");
    if (gw.loud !== undefined) assert.deepEqual(gw.loud(), [], 'the framework logs no warning about the response the cache answered');
    // Control: a key never cached gets the framework's error answer.
    const miss = await fetchText(`${gw.url}/never`);
    assert.equal(miss.status, 502);
    assert.match(miss.body, /handledBy/);
  });
}
