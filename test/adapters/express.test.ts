// Express end-to-end: a listening Express app with balance() mounted under /api,
// in front of real upstream servers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { balance, createPool, type BalanceMiddleware, type BalanceOptions, type UpstreamPool } from '../../src/index.ts';
import { deadPort, fetchText, listen } from '../helpers.ts';
import { backend, echo, JSON_TEXT, JSON_VALUE, MiB, streamThrough, wsEcho } from './common.ts';
import type { TestContext } from 'node:test';

interface AppOptions {
  /** Middleware installed before the proxy, at the app's top level (body parsers). */
  before?: RequestHandler[];
  /** Install the error middleware that reports what it saw. @default true */
  errorHandler?: boolean;
  balance?: BalanceOptions;
}

/** A listening Express app: `app.use('/api', balance(pool))`, WebSocket upgrades wired to the server. */
async function app(t: TestContext, pool: UpstreamPool, options: AppOptions = {}): Promise<{ url: string; ws: string; proxy: BalanceMiddleware }> {
  t.after(() => pool.close());
  const proxy = balance(pool, options.balance);
  const app = express();
  app.set('env', 'test'); // Express's default handler logs errors to stderr outside 'test'
  for (const mw of options.before ?? []) app.use(mw);
  app.use('/api', proxy);
  app.get('/local', (_req, res) => {
    res.send('express route');
  });
  if (options.errorHandler !== false) {
    const onError: ErrorRequestHandler = (err, _req, res, _next) => {
      res.status(err.statusCode ?? 500).json({ handledBy: 'express', code: err.code, statusCode: err.statusCode, name: err.name });
    };
    app.use(onError);
  }
  const server = createServer(app);
  server.on('upgrade', proxy.upgrade);
  const gw = await listen(t, server);
  return { url: gw.url, ws: gw.url.replace('http:', 'ws:'), proxy };
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
    assert.equal(echo(r.body).method, 'GET');
  }
  assert.deepEqual(names, ['a', 'b', 'a', 'b']);
  assert.deepEqual([...a.seen, ...b.seen].map((s) => s.url).sort(), ['/api/items?page=0', '/api/items?page=1', '/api/items?page=2', '/api/items?page=3']);
  // Routes of the app outside the mount are untouched.
  assert.equal((await fetchText(`${gw.url}/local`)).body, 'express route');
});

test('the upstream gets the full request target, mount path included (nginx proxy_pass without a URI)', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { before: [express.json()] });
  await fetchText(`${gw.url}/api/v1/users?id=7`);
  await fetchText(`${gw.url}/api/v1/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.deepEqual(a.seen.map((s) => s.url), ['/api/v1/users?id=7', '/api/v1/users']);
});

test('headers set by earlier middleware (as cors does) reach proxied responses; the upstream\'s win', async (t) => {
  const a = await backend(t, 'a');
  const cors: RequestHandler = (_req, res, next) => {
    res.setHeader('access-control-allow-origin', '*');
    res.setHeader('x-upstream', 'set by middleware');
    next();
  };
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { before: [cors] });
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.headers['access-control-allow-origin'], '*');
  assert.equal(r.headers['x-upstream'], 'a');
});

test('POST JSON after express.json() is re-sent upstream with a correct length', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { before: [express.json()] });
  const r = await fetchText(`${gw.url}/api/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON_TEXT });
  assert.equal(r.status, 200);
  const seen = a.seen[0]!;
  assert.equal(seen.method, 'POST');
  assert.deepEqual(JSON.parse(seen.body), JSON_VALUE);
  assert.equal(seen.headers['content-length'], String(Buffer.byteLength(seen.body)));
  assert.equal(seen.headers['content-type'], 'application/json');
  assert.equal(seen.headers['transfer-encoding'], undefined);
});

test('POST urlencoded after express.urlencoded() and text after express.text() are re-sent', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { before: [express.urlencoded({ extended: false }), express.text()] });
  const form = await fetchText(`${gw.url}/api/form`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=two+words&a=3' });
  assert.equal(form.status, 200);
  assert.deepEqual([...new URLSearchParams(a.seen[0]!.body)], [['a', '1'], ['a', '3'], ['b', 'two words']]);
  const text = await fetchText(`${gw.url}/api/text`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'plain text, kept as is' });
  assert.equal(text.status, 200);
  assert.equal(a.seen[1]!.body, 'plain text, kept as is');
  assert.equal(a.seen[1]!.headers['content-length'], '22');
});

test('a body consumed by a middleware that leaves no req.body fails fast with SWY_ERR_BODY_CONSUMED', async (t) => {
  const a = await backend(t, 'a');
  const swallow: RequestHandler = (req, _res, next) => {
    req.resume();
    req.on('end', () => next());
  };
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { before: [swallow] });
  const r = await fetchText(`${gw.url}/api/upload`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: 'bytes nobody kept' });
  assert.equal(r.status, 500);
  assert.equal(JSON.parse(r.body).code, 'SWY_ERR_BODY_CONSUMED');
  assert.equal(a.seen.length, 0);
});

test('POST JSON without a body parser streams the exact bytes upstream', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }));
  const r = await fetchText(`${gw.url}/api/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON_TEXT });
  assert.equal(r.status, 200);
  assert.equal(a.seen[0]!.body, JSON_TEXT);
  assert.equal(a.seen[0]!.headers['content-length'], String(Buffer.byteLength(JSON_TEXT)));
});

test('a 16 MiB body streams both ways intact, with express.json() installed', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { before: [express.json()] });
  const r = await streamThrough(`${gw.url}/api/stream`, 16 * MiB);
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-upstream'], 'a');
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

test('connection refused reaches the Express error middleware as 502 SWY_ERR_BAD_GATEWAY', async (t) => {
  const gw = await app(t, createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }] }));
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.status, 502);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'express', code: 'SWY_ERR_BAD_GATEWAY', statusCode: 502, name: 'BadGatewayError' });
});

test('no server available reaches the Express error middleware as 503 SWY_ERR_NO_SERVER', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url, down: true }] }));
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.status, 503);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'express', code: 'SWY_ERR_NO_SERVER', statusCode: 503, name: 'NoServerAvailableError' });
  assert.equal(a.seen.length, 0);
});

test('a header timeout reaches the Express error middleware as 504 SWY_ERR_GATEWAY_TIMEOUT', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { balance: { headerTimeout: 200 } });
  const started = performance.now();
  const r = await fetchText(`${gw.url}/api/hang`);
  const elapsed = performance.now() - started;
  assert.equal(r.status, 504);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'express', code: 'SWY_ERR_GATEWAY_TIMEOUT', statusCode: 504, name: 'GatewayTimeoutError' });
  assert.ok(elapsed >= 190 && elapsed < 3000, `answered after ${elapsed} ms`);
});

test("Express's default error handler answers the error's status", async (t) => {
  const gw = await app(t, createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }] }), { errorHandler: false });
  assert.equal((await fetchText(`${gw.url}/api/x`)).status, 502);
});
