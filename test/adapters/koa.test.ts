// Koa end-to-end: a listening Koa app with `koa(balance(pool))`, in front of real upstream servers.
// The adapter contract (contract.ts) runs against it; below it, what only Koa does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { TestContext } from 'node:test';
import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { balance, createPool, exchange, type BalanceMiddleware, type BalanceOptions, type Middleware, type Next, type UpstreamPool } from '../../src/index.ts';
import { koa } from '../../src/adapters/koa.ts';
import { fetchText, listen } from '../helpers.ts';
import { backend } from './common.ts';
import { adapterContract } from './contract.ts';

interface AppOptions {
  /** Run @koa/bodyparser before the adapter. @default false */
  bodyParser?: boolean | undefined;
  /** Install the try/catch middleware that reports what it caught. @default true */
  catchErrors?: boolean | undefined;
  balance?: BalanceOptions | undefined;
  /** The switchyard middleware to adapt. @default [balance(pool)] */
  use?: Middleware[] | undefined;
  /** Koa middleware before the adapter (after the body parser). */
  before?: Koa.Middleware[] | undefined;
  /** Koa middleware after the adapter. */
  after?: Koa.Middleware[] | undefined;
}

/** A listening Koa app: `app.use(koa(balance(pool)))`, WebSocket upgrades wired to the server. */
async function app(
  t: TestContext,
  pool: UpstreamPool | undefined,
  options: AppOptions = {},
): Promise<{ app: Koa; url: string; ws: string; proxy: BalanceMiddleware | undefined; errors: unknown[] }> {
  if (pool !== undefined) t.after(() => pool.close());
  const proxy = pool === undefined ? undefined : balance(pool, options.balance);
  const app = new Koa();
  const errors: unknown[] = [];
  app.on('error', (err) => errors.push(err)); // Koa's default listener would print to stderr
  if (options.catchErrors !== false) {
    app.use(async (ctx, next) => {
      try {
        await next();
      } catch (err) {
        const e = err as { code?: string; statusCode?: number; name?: string };
        ctx.status = e.statusCode ?? 500;
        ctx.body = { handledBy: 'koa', code: e.code, statusCode: e.statusCode, name: e.name };
      }
    });
  }
  if (options.bodyParser === true) app.use(bodyParser());
  for (const mw of options.before ?? []) app.use(mw);
  app.use(koa(...(options.use ?? [proxy!])));
  for (const mw of options.after ?? []) app.use(mw);
  const server = createServer(app.callback());
  if (proxy !== undefined) server.on('upgrade', proxy.upgrade);
  const gw = await listen(t, server);
  return { app, url: gw.url, ws: gw.url.replace('http:', 'ws:'), proxy, errors };
}

adapterContract({
  name: 'Koa',
  handledBy: 'koa',
  async start(t, { pool, balance: balanceOptions, bodyParser, errorHandler, presetHeaders }) {
    const before: Koa.Middleware[] = [];
    if (presetHeaders !== undefined) {
      before.push(async (ctx, next) => {
        ctx.set(presetHeaders);
        await next();
      });
    }
    const gw = await app(t, pool, { balance: balanceOptions, bodyParser, catchErrors: errorHandler, before });
    return { url: gw.url, ws: gw.ws, prefix: '/api', problems: () => gw.errors };
  },
  defaultError(_reply, app) {
    // Koa's default error handling emits the error on the app (the factory collects them).
    const errors = app.problems();
    assert.equal(errors.length, 1);
    assert.equal((errors[0] as { code: string }).code, 'SWY_ERR_BAD_GATEWAY');
  },
});

test('a Koa middleware before the adapter sees the proxied response once it is done', async (t) => {
  const a = await backend(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  const logged: string[] = [];
  const gw = await app(t, pool, {
    before: [
      async (ctx, next) => {
        await next();
        // A logger upstream in the Koa stack sees the proxied response once it is done.
        logged.push(`${ctx.status} ${ctx.res.writableFinished}`);
      },
    ],
  });
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.status, 200);
  assert.deepEqual(logged, ['200 true']);
});

test('a form after @koa/bodyparser is re-sent upstream', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { bodyParser: true });
  // JSON and a GET after the parser are in the adapter contract.
  const form = await fetchText(`${gw.url}/api/form`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'a=1&b=two+words',
  });
  assert.equal(form.status, 200);
  assert.deepEqual(
    [...new URLSearchParams(a.seen[0]!.body)],
    [
      ['a', '1'],
      ['b', 'two words'],
    ],
  );
  assert.equal(a.seen[0]!.headers['content-length'], String(Buffer.byteLength(a.seen[0]!.body)));
});

test('the Koa middleware after the adapter runs when switchyard hands on, and answers through Koa', async (t) => {
  const a = await backend(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  const proxy = balance(pool);
  const order: string[] = [];
  // A switchyard chain whose first middleware proxies only /api and hands everything else on.
  const gate = function gate(req: IncomingMessage, res: ServerResponse, next: Next): void {
    order.push(`gate ${req.url}`);
    if ((req.url ?? '').startsWith('/api/')) proxy(req, res, next);
    else next();
  };
  const gw = await app(t, pool, {
    use: [gate],
    after: [
      async (ctx) => {
        order.push(`koa ${ctx.url}`);
        ctx.set('x-koa', 'after');
        ctx.status = 201;
        ctx.body = { from: 'koa', path: ctx.path };
      },
    ],
  });
  const r = await fetchText(`${gw.url}/local/page`);
  assert.equal(r.status, 201);
  assert.equal(r.headers['x-koa'], 'after');
  assert.deepEqual(JSON.parse(r.body), { from: 'koa', path: '/local/page' });
  const p = await fetchText(`${gw.url}/api/x`);
  assert.equal(p.status, 200);
  assert.equal(p.headers['x-upstream'], 'a');
  assert.deepEqual(order, ['gate /local/page', 'koa /local/page', 'gate /api/x']);
  // Nothing after the adapter and nothing handed on: Koa's own 404.
  assert.equal(a.seen.length, 1);
});

test("a chain handing on to nothing ends in Koa's 404", async (t) => {
  const gw = await app(t, undefined, { use: [(_req, _res, next) => next()] });
  const r = await fetchText(`${gw.url}/nothing`);
  assert.equal(r.status, 404);
  assert.equal(r.body, 'Not Found');
});

test('middleware in one koa() run in order: a URI change before balance() reaches the upstream', async (t) => {
  const a = await backend(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  const prefix: Middleware = (req, _res, next) => {
    const ex = exchange(req);
    ex.uri = `/v2${ex.uri}`;
    ex.uriChanged = true;
    next();
  };
  const gw = await app(t, pool, { use: [prefix, balance(pool)] });
  assert.equal((await fetchText(`${gw.url}/api/x?q=1`)).status, 200);
  assert.equal(a.seen[0]!.url, '/v2/api/x?q=1');
});
