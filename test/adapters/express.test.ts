// Express end-to-end: a listening Express app with balance() mounted under /api, in front of real
// upstream servers. The adapter contract (contract.ts) runs against it; below it, what only Express does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { balance, createPool, type BalanceMiddleware, type BalanceOptions, type UpstreamPool } from '../../src/index.ts';
import { fetchText, listen } from '../helpers.ts';
import { backend } from './common.ts';
import { adapterContract, setHeaders } from './contract.ts';
import type { TestContext } from 'node:test';

interface AppOptions {
  /** Middleware installed before the proxy, at the app's top level (body parsers). */
  before?: RequestHandler[] | undefined;
  /** Install the error middleware that reports what it saw. @default true */
  errorHandler?: boolean | undefined;
  balance?: BalanceOptions | undefined;
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

adapterContract({
  name: 'Express',
  handledBy: 'express',
  async start(t, { pool, balance: balanceOptions, bodyParser, errorHandler, presetHeaders }) {
    const before: RequestHandler[] = presetHeaders === undefined ? [] : [setHeaders(presetHeaders)];
    if (bodyParser === true) before.push(express.json());
    const gw = await app(t, pool, { before, errorHandler, balance: balanceOptions });
    return { url: gw.url, ws: gw.ws, prefix: '/api', problems: () => [] };
  },
});

test('routes of the app outside the mount are untouched', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }));
  assert.equal((await fetchText(`${gw.url}/local`)).body, 'express route');
  assert.equal(a.seen.length, 0);
});

test('the upstream gets the full request target, mount path included (nginx proxy_pass without a URI)', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { before: [express.json()] });
  await fetchText(`${gw.url}/api/v1/users?id=7`);
  await fetchText(`${gw.url}/api/v1/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.deepEqual(
    a.seen.map((s) => s.url),
    ['/api/v1/users?id=7', '/api/v1/users'],
  );
});

test('POST urlencoded after express.urlencoded() and text after express.text() are re-sent', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { before: [express.urlencoded({ extended: false }), express.text()] });
  const form = await fetchText(`${gw.url}/api/form`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'a=1&b=two+words&a=3',
  });
  assert.equal(form.status, 200);
  assert.deepEqual(
    [...new URLSearchParams(a.seen[0]!.body)],
    [
      ['a', '1'],
      ['a', '3'],
      ['b', 'two words'],
    ],
  );
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
