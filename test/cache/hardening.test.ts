// cache() against the ways a cache goes wrong in the field: a Host that forges another URL's key,
// headers of one user replayed to another, a purge undone by a fill in flight, middleware wrappers
// skipped, a background update cutting the client's next request, sticky cookies blocking caching.
import { strict as assert } from 'node:assert';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { balance, cache, chain, createPool, sticky } from '../../src/index.ts';
import { fetchText, gateway, listen, upstream } from '../helpers.ts';
import { keepAliveClient } from './support.ts';

type Next = (err?: unknown) => void;

async function proxied(t: Parameters<typeof upstream>[0], handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const up = await upstream(t, 'origin', (req, res) => handler(req, res));
  const pool = createPool({ servers: [{ url: up.url }] });
  t?.after(() => pool.close());
  return { up, pool };
}

test('a Host that is not a host name (victim.com/admin) is not cached: it cannot plant a page under another URL', async (t) => {
  const { up, pool } = await proxied(t, (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' });
    res.end(`page ${req.url}`);
  });
  const gw = await gateway(t, chain(cache(), balance(pool)));
  const attack = await fetchText(`${gw.url}/secret-page`, { headers: { host: 'victim.com/admin' } });
  assert.equal(attack.headers['x-cache-status'], undefined, 'not looked up, not stored');
  const victim = await fetchText(`${gw.url}/admin/secret-page`, { headers: { host: 'victim.com' } });
  assert.equal(victim.headers['x-cache-status'], 'MISS');
  assert.equal(victim.body, 'page /admin/secret-page');
  // refused before anything is looked up (400, as nginx's host validation)
  for (const host of ['a..b', 'a\\b', 'a b', 'a/b:80']) {
    const r = await fetchText(`${gw.url}/x`, { headers: { host } });
    assert.equal(r.status, 400, host);
    assert.equal(r.headers['x-cache-status'], undefined, host);
  }
  // a leading dot is a host nginx 1.29.4 accepts
  for (const host of ['example.com', 'EXAMPLE.com:8080', '127.0.0.1', '[::1]:80', 'example.com.', '.a']) {
    const r = await fetchText(`${gw.url}/ok`, { headers: { host } });
    assert.ok(r.headers['x-cache-status'] !== undefined, host);
  }
  assert.ok(up.seen.length >= 2);
});

test('headers set before cache() (a request id) are neither stored nor replayed to the next user', async (t) => {
  const { pool } = await proxied(t, (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'x-from': 'upstream' });
    res.end('fresh');
  });
  const perRequest = (req: IncomingMessage, res: ServerResponse, next: Next): void => {
    res.setHeader('x-request-id', String(req.headers['x-id'] ?? 'none'));
    next();
  };
  const gw = await gateway(t, chain(perRequest, cache(), balance(pool)));
  const alice = await fetchText(`${gw.url}/b`, { headers: { 'x-id': 'alice-123' } });
  const bob = await fetchText(`${gw.url}/b`, { headers: { 'x-id': 'bob-456' } });
  assert.deepEqual([alice.headers['x-cache-status'], alice.headers['x-request-id']], ['MISS', 'alice-123']);
  assert.deepEqual([bob.headers['x-cache-status'], bob.headers['x-request-id'], bob.headers['x-from']], ['HIT', 'bob-456', 'upstream']);
});

test('a purge while a fill is in flight sticks: the response fetched before it is not stored after it', async (t) => {
  let version = 1;
  const { pool } = await proxied(t, (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' });
    res.write(`v${version}-part1 `);
    setTimeout(() => res.end('part2'), 200);
  });
  const mw = cache({ key: '$uri' });
  const gw = await gateway(t, chain(mw, balance(pool)));
  const first = fetchText(`${gw.url}/slow`);
  await sleep(80);
  await mw.purge('/slow');
  version = 2;
  assert.equal((await first).body, 'v1-part1 part2');
  await sleep(20);
  const after = await fetchText(`${gw.url}/slow`);
  assert.deepEqual([after.headers['x-cache-status'], after.body], ['MISS', 'v2-part1 part2']);
});

test('a writeHead wrapper installed before cache() (on-headers, response-time) still runs on a MISS', async (t) => {
  const timing = (_req: IncomingMessage, res: ServerResponse, next: Next): void => {
    const original = res.writeHead;
    res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
      if (!res.hasHeader('x-response-time')) res.setHeader('x-response-time', '1ms');
      return (original as (...a: unknown[]) => ServerResponse).apply(this, args);
    } as typeof res.writeHead;
    next();
  };
  const handler = (_req: IncomingMessage, res: ServerResponse): void => {
    res.setHeader('cache-control', 'max-age=60');
    res.end('hello');
  };
  const gw = await gateway(t, chain(timing, cache(), handler));
  const miss = await fetchText(`${gw.url}/w`);
  assert.deepEqual([miss.headers['x-cache-status'], miss.headers['x-response-time']], ['MISS', '1ms']);
  const hit = await fetchText(`${gw.url}/w`);
  assert.deepEqual([hit.headers['x-cache-status'], hit.headers['x-response-time']], ['HIT', '1ms']);
});

test("a background update whose handler fails after its headers does not cut the client's next request on the same connection", async (t) => {
  let calls = 0;
  const app = express();
  app.use(cache({ valid: '200ms', useStale: ['updating'], backgroundUpdate: true }));
  app.get('/x', (_req, res, next) => {
    calls++;
    if (calls === 1) {
      res.send('v1');
      return;
    }
    // A streaming handler that breaks after its headers went out: Express then destroys req.socket.
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('partial');
    setTimeout(() => next(new Error('stream broke')), 50);
  });
  app.get('/slow', (_req, res) => {
    setTimeout(() => res.send('slow ok'), 300);
  });
  app.use((_err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    if (!res.headersSent) res.status(500).end();
  });
  const up = await listen(t, (await import('node:http')).createServer(app));
  const { get, sockets } = keepAliveClient(t, up.url);
  assert.equal(await get('/x'), '200 MISS v1');
  await sleep(250);
  assert.equal(await get('/x'), '200 STALE v1');
  assert.equal(await get('/slow'), '200 MISS slow ok');
  assert.equal(sockets.size, 1, 'one keep-alive connection all along');
});

test("sticky()'s cookie does not stop caching: the cache judges the upstream's headers, and never stores the cookie", async (t) => {
  const { up, pool } = await proxied(t, (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' });
    res.end('page');
  });
  const gw = await gateway(t, chain(cache(), sticky(pool, { cookie: true }), balance(pool)));
  const miss = await fetchText(`${gw.url}/s`);
  assert.equal(miss.headers['x-cache-status'], 'MISS');
  assert.match(String(miss.headers['set-cookie']), /^srv_id=/);
  const hit = await fetchText(`${gw.url}/s`);
  assert.equal(hit.headers['x-cache-status'], 'HIT');
  assert.equal(hit.headers['set-cookie'], undefined);
  assert.equal(up.seen.length, 1);
});

test('a HIT answered without an exchange record still reports its status to exchange(req) and $upstream_cache_status', async (t) => {
  const { pool } = await proxied(t, (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' });
    res.end('page');
  });
  const { exchange, compileTemplate } = await import('../../src/index.ts');
  const status = compileTemplate('$upstream_cache_status', 'log');
  const logged: string[] = [];
  // A logger that reads the record only once the response is done, as access logs do.
  const logger = (req: IncomingMessage, res: ServerResponse, next: Next): void => {
    res.once('finish', () => logged.push(`${exchange(req).cacheStatus}/${status(exchange(req))}`));
    next();
  };
  const gw = await gateway(t, chain(logger, cache(), balance(pool)));
  await fetchText(`${gw.url}/l`);
  await fetchText(`${gw.url}/l`);
  await sleep(20);
  assert.deepEqual(logged, ['MISS/MISS', 'HIT/HIT']);
});
