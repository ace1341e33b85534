// shapeResponse() inside Express, the Fastify plugin and the Koa adapter, in front of cache() and
// balance(): the MISS and the HIT shaped, the framework's own answers (an Express route, Fastify's
// not-found answer, a Koa middleware's body) shaped too, and a hook that throws answered 500 without
// the framework crashing or logging.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import Koa from 'koa';
import { bodyParser as koaBodyParser } from '@koa/bodyparser';
import { balance, cache, createPool, type Middleware, type UpstreamPool } from '../../src/index.ts';
import { switchyard } from '../../src/adapters/fastify.ts';
import { koa } from '../../src/adapters/koa.ts';
import { shapeResponse } from '../../src/shape/index.ts';
import { logCapture } from '../adapters/common.ts';
import { fetchText, listen, upstream } from '../helpers.ts';

const T = { timeout: 15_000 };

/** `/api/...` goes through shape, cache, balance; `/own` is the framework's own answer (after the shape). */
type Build = (t: TestContext, use: Middleware[]) => Promise<{ url: string; loud?: () => unknown[] }>;

const viaExpress: Build = async (t, [shape, ...rest]) => {
  const app = express();
  app.set('env', 'test');
  app.use(shape!);
  app.use('/api', ...rest);
  app.get('/own', (_req, res) => {
    res.send('express route');
  });
  const g = await listen(t, createServer(app));
  return { url: g.url };
};

const viaFastify: Build = async (t, use) => {
  const log = logCapture();
  const app = Fastify({ logger: { level: 'warn', stream: log.stream } });
  t.after(() => app.close());
  // The plugin's chain answers /api; anything else under its prefix it hands on is Fastify's not-found answer.
  await app.register(switchyard, {
    prefix: '/',
    use: [use[0]!, (req, res, next) => (req.url?.startsWith('/api') ? chainRest(use.slice(1), req, res, next) : next())],
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, loud: () => log.records.filter((r) => r.level >= 40) };
};

/** Runs `stack` as a chain would, for the Fastify case where part of the chain is conditional. */
function chainRest(stack: Middleware[], req: Parameters<Middleware>[0], res: Parameters<Middleware>[1], done: Parameters<Middleware>[2]): void {
  let i = 0;
  const next = (err?: unknown): void => {
    if (err !== undefined && err !== null) return done(err);
    const fn = stack[i++];
    if (fn === undefined) return done();
    fn(req, res, next);
  };
  next();
}

const viaKoa: Build = async (t, [shape, ...rest]) => {
  const app = new Koa();
  app.on('error', () => undefined);
  app.use(koa(shape!));
  app.use(async (ctx, next) => {
    if (ctx.path.startsWith('/api')) await koa(...rest)(ctx, next);
    else ctx.body = 'koa body';
  });
  const g = await listen(t, createServer(app.callback()));
  return { url: g.url };
};

async function pool(t: TestContext): Promise<UpstreamPool> {
  const up = await upstream(t, 'origin', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60', 'x-powered-by': 'origin' });
    res.end(`origin ${req.url}`);
  });
  const p = createPool({ servers: [{ url: up.url }] });
  t.after(() => p.close());
  return p;
}

for (const [name, build] of [
  ['Express', viaExpress],
  ['Fastify', viaFastify],
  ['Koa', viaKoa],
] as const) {
  test(`${name}: the MISS, the HIT and the framework's own answers are shaped`, T, async (t) => {
    const p = await pool(t);
    const shape = shapeResponse({
      add: { 'X-Cache': '$upstream_cache_status' },
      set: { 'X-Frame-Options': 'DENY' },
      remove: ['x-powered-by'],
      always: true,
    });
    const gw = await build(t, [shape, cache({ valid: '1m' }), balance(p)]);
    const miss = await fetchText(`${gw.url}/api/item`);
    assert.equal(miss.status, 200);
    assert.equal(miss.headers['x-cache'], 'MISS');
    assert.equal(miss.headers['x-frame-options'], 'DENY');
    assert.equal(miss.headers['x-powered-by'], undefined);
    assert.equal(miss.body, 'origin /api/item');
    const hit = await fetchText(`${gw.url}/api/item`);
    assert.equal(hit.headers['x-cache-status'], 'HIT');
    assert.equal(hit.headers['x-cache'], 'HIT');
    assert.equal(hit.headers['x-frame-options'], 'DENY');
    assert.equal(hit.headers['x-powered-by'], undefined);
    assert.equal(hit.body, 'origin /api/item');
    const own = await fetchText(`${gw.url}/own`);
    assert.equal(own.headers['x-frame-options'], 'DENY', `${name}'s own answer (${own.status})`);
    if (gw.loud !== undefined) assert.deepEqual(gw.loud(), []);
  });

  test(`${name}: a hook that throws answers 500, and the app goes on`, T, async (t) => {
    const p = await pool(t);
    const shape = shapeResponse({
      hook(ctx) {
        if (ctx.req.url?.includes('boom')) throw new Error('boom');
        ctx.headers.set('X-Hooked', 'yes');
      },
    });
    const gw = await build(t, [shape, cache({ valid: '1m' }), balance(p)]);
    for (const path of ['/api/boom', '/own?boom']) {
      const r = await fetchText(`${gw.url}${path}`);
      assert.equal(r.status, 500, path);
      assert.equal(r.body, '500 Internal Server Error\n', path);
    }
    const ok = await fetchText(`${gw.url}/api/fine`);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['x-hooked'], 'yes');
    if (gw.loud !== undefined) assert.deepEqual(gw.loud(), []);
  });
}

test('behind a body parser (express.json(), @koa/bodyparser): the parsed body is re-sent and the answer shaped', T, async (t) => {
  const up = await upstream(t, 'origin', (_req, res, body) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-powered-by': 'origin' });
    res.end(JSON.stringify({ got: body }));
  });
  const p = createPool({ servers: [{ url: up.url }] });
  t.after(() => p.close());
  const shape = (): Middleware => shapeResponse({ add: { 'X-Shaped': 'yes' }, remove: ['x-powered-by'] });
  const ex = express();
  ex.set('env', 'test');
  ex.use(express.json(), shape(), balance(p));
  const viaExpressApp = await listen(t, createServer(ex));
  const k = new Koa();
  k.use(koaBodyParser());
  k.use(koa(shape(), balance(p)));
  const viaKoaApp = await listen(t, createServer(k.callback()));
  for (const url of [viaExpressApp.url, viaKoaApp.url]) {
    const r = await fetchText(`${url}/post`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
    assert.equal(r.status, 200, url);
    assert.equal(r.headers['x-shaped'], 'yes');
    assert.equal(r.headers['x-powered-by'], undefined);
    assert.deepEqual(JSON.parse(JSON.parse(r.body).got), { a: 1 });
  }
});
