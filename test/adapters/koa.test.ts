// Koa end-to-end: a listening Koa app with `koa(balance(pool))`, in front of
// real upstream servers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { TestContext } from 'node:test';
import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { balance, createPool, exchange, type BalanceMiddleware, type BalanceOptions, type Middleware, type Next, type UpstreamPool } from '../../src/index.ts';
import { koa } from '../../src/adapters/koa.ts';
import { deadPort, fetchText, listen } from '../helpers.ts';
import { backend, echo, JSON_TEXT, JSON_VALUE, MiB, streamThrough, wsEcho } from './common.ts';

interface AppOptions {
  /** Run @koa/bodyparser before the adapter. @default false */
  bodyParser?: boolean;
  /** Install the try/catch middleware that reports what it caught. @default true */
  catchErrors?: boolean;
  balance?: BalanceOptions;
  /** The switchyard middleware to adapt. @default [balance(pool)] */
  use?: Middleware[];
  /** Koa middleware before the adapter (after the body parser). */
  before?: Koa.Middleware[];
  /** Koa middleware after the adapter. */
  after?: Koa.Middleware[];
}

/** A listening Koa app: `app.use(koa(balance(pool)))`, WebSocket upgrades wired to the server. */
async function app(t: TestContext, pool: UpstreamPool | undefined, options: AppOptions = {}): Promise<{ app: Koa; url: string; ws: string; proxy: BalanceMiddleware | undefined; errors: unknown[] }> {
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

test('GET is balanced round robin over the upstreams, with query and response headers intact', async (t) => {
  const a = await backend(t, 'a');
  const b = await backend(t, 'b');
  const gw = await app(t, createPool({ servers: [{ url: a.url }, { url: b.url }] }));
  const names: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await fetchText(`${gw.url}/api/items?page=${i}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    names.push(r.headers['x-upstream'] as string);
    assert.equal(echo(r.body).url, `/api/items?page=${i}`);
  }
  assert.deepEqual(names, ['a', 'b', 'a', 'b']);
  assert.deepEqual(gw.errors, []);
});

test('headers set with ctx.set() before the adapter (as @koa/cors does) reach proxied responses; the upstream\'s win', async (t) => {
  const a = await backend(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  const logged: string[] = [];
  const gw = await app(t, pool, {
    before: [
      async (ctx, next) => {
        ctx.set('access-control-allow-origin', '*');
        ctx.set('x-upstream', 'set by koa');
        await next();
        // A logger upstream in the Koa stack sees the proxied response once it is done.
        logged.push(`${ctx.status} ${ctx.res.writableFinished}`);
      },
    ],
  });
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.status, 200);
  assert.equal(r.headers['access-control-allow-origin'], '*');
  assert.equal(r.headers['x-upstream'], 'a');
  assert.deepEqual(logged, ['200 true']);
});

test('POST JSON after @koa/bodyparser is re-sent upstream with a correct length', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { bodyParser: true });
  const r = await fetchText(`${gw.url}/api/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON_TEXT });
  assert.equal(r.status, 200);
  const seen = a.seen[0]!;
  assert.deepEqual(JSON.parse(seen.body), JSON_VALUE);
  assert.equal(seen.headers['content-length'], String(Buffer.byteLength(seen.body)));
  assert.equal(seen.headers['content-type'], 'application/json');
  const form = await fetchText(`${gw.url}/api/form`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=two+words' });
  assert.equal(form.status, 200);
  assert.deepEqual([...new URLSearchParams(a.seen[1]!.body)], [['a', '1'], ['b', 'two words']]);
  // A GET after the parser (which sets ctx.request.body = {}) still has no body upstream.
  assert.equal((await fetchText(`${gw.url}/api/get`)).status, 200);
  assert.equal(a.seen[2]!.body, '');
  assert.equal(a.seen[2]!.headers['content-length'], undefined);
});

test('POST JSON without a body parser streams the exact bytes upstream', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }));
  const r = await fetchText(`${gw.url}/api/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON_TEXT });
  assert.equal(r.status, 200);
  assert.equal(a.seen[0]!.body, JSON_TEXT);
  assert.equal(a.seen[0]!.headers['content-length'], String(Buffer.byteLength(JSON_TEXT)));
});

test('a 16 MiB body streams both ways intact, with @koa/bodyparser installed', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { bodyParser: true });
  const r = await streamThrough(`${gw.url}/api/stream`, 16 * MiB);
  assert.equal(r.status, 200);
  assert.equal(r.bytes, 16 * MiB);
  assert.equal(r.received, r.sent);
  assert.deepEqual(a.streamed, [{ url: '/api/stream', bytes: 16 * MiB, sha256: r.sent }]);
});

test('WebSocket echo through server.on("upgrade", mw.upgrade)', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }));
  assert.deepEqual(await wsEcho(`${gw.ws}/api/ws?room=1`, ['hello', 'again']), ['a:hello', 'a:again']);
  assert.deepEqual(a.sockets, ['/api/ws?room=1']);
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

test('a chain handing on to nothing ends in Koa\'s 404', async (t) => {
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

test('connection refused reaches a Koa try/catch as 502 SWY_ERR_BAD_GATEWAY', async (t) => {
  const gw = await app(t, createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }] }));
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.status, 502);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'koa', code: 'SWY_ERR_BAD_GATEWAY', statusCode: 502, name: 'BadGatewayError' });
});

test('no server available reaches a Koa try/catch as 503 SWY_ERR_NO_SERVER', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url, down: true }] }), { bodyParser: true });
  const r = await fetchText(`${gw.url}/api/x`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
  assert.equal(r.status, 503);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'koa', code: 'SWY_ERR_NO_SERVER', statusCode: 503, name: 'NoServerAvailableError' });
  assert.equal(a.seen.length, 0);
});

test('a header timeout reaches a Koa try/catch as 504 SWY_ERR_GATEWAY_TIMEOUT', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { balance: { headerTimeout: 200 } });
  const started = performance.now();
  const r = await fetchText(`${gw.url}/api/hang`);
  const elapsed = performance.now() - started;
  assert.equal(r.status, 504);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'koa', code: 'SWY_ERR_GATEWAY_TIMEOUT', statusCode: 504, name: 'GatewayTimeoutError' });
  assert.ok(elapsed >= 190 && elapsed < 3000, `answered after ${elapsed} ms`);
});

test("Koa's default error handling answers the error's status and emits it on the app", async (t) => {
  const gw = await app(t, createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }] }), { catchErrors: false });
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.status, 502);
  assert.equal(gw.errors.length, 1);
  assert.equal((gw.errors[0] as { code: string }).code, 'SWY_ERR_BAD_GATEWAY');
});
