// A background update (nginx proxy_cache_background_update) runs the rest of the chain after the
// client got its STALE answer. What the chain writes goes to a stand-in response (DetachedResponse):
// the client's response object gets no property redefined, and the client's connection is never touched.
import { strict as assert } from 'node:assert';
import type { ServerResponse } from 'node:http';
import { test, type TestContext } from 'node:test';
import express from 'express';
import { balance, cache, chain, createPool, type Middleware } from '../../src/index.ts';
import { fetchText, gateway, listen, upstream } from '../helpers.ts';
import { keepAliveClient } from './support.ts';
import { until } from '../redis.ts';

/** The response state node keeps: a background update must leave it as node left it. */
const STATE = ['headersSent', 'writableEnded', 'writableFinished', 'finished', 'destroyed'] as const;

function accessorsOf(res: ServerResponse): string[] {
  return STATE.filter((name) => typeof Object.getOwnPropertyDescriptor(res, name)?.get === 'function');
}

test("a background update through balance() redefines nothing on the client's response, and the update is stored", async (t: TestContext) => {
  let clock = 1_000_000;
  let version = 0;
  const up = await upstream(t, 'up', (_req, res) => {
    version++;
    res.writeHead(200, { 'cache-control': 'max-age=1', 'content-type': 'text/plain' });
    res.end(`v${version}`);
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const responses: ServerResponse[] = [];
  const keep: Middleware = (_req, res, next) => {
    responses.push(res);
    next();
  };
  const gw = await gateway(t, chain(keep, cache({ useStale: ['updating'], backgroundUpdate: true, now: () => clock }), balance(pool)));
  assert.equal((await fetchText(`${gw.url}/p`)).body, 'v1');
  clock += 5000;
  const stale = await fetchText(`${gw.url}/p`);
  assert.deepEqual([stale.headers['x-cache-status'], stale.body], ['STALE', 'v1']);
  assert.ok(await until(() => up.seen.length === 2, 5000), 'the background update reached the upstream');
  assert.ok(await until(() => pool.stats().servers.every((s) => s.active === 0), 5000), 'the update is over');
  const fresh = await fetchText(`${gw.url}/p`);
  assert.deepEqual([fresh.headers['x-cache-status'], fresh.body], ['HIT', 'v2']);
  const updated = responses[1]!;
  assert.deepEqual(accessorsOf(updated), [], "no accessor defined on the client's response");
  assert.equal(updated.headersSent, true, 'it still says what happened: the client got its answer');
  assert.equal(updated.writableEnded, true);
});

test("Express's own error handling in a failing background update leaves the client's keep-alive connection alone", async (t: TestContext) => {
  let calls = 0;
  let failed = 0;
  const app = express();
  app.set('env', 'test'); // Express prints errors it handles outside tests
  app.use(cache({ valid: '200ms', useStale: ['updating'], backgroundUpdate: true }));
  app.get('/x', (_req, res, next) => {
    calls++;
    if (calls === 1) {
      res.send('v1');
      return;
    }
    // Headers out, then an error: Express's final handler destroys req.socket.
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('partial');
    failed++;
    next(new Error('stream broke'));
  });
  app.get('/after', (_req, res) => {
    res.send('after ok');
  });
  const up = await listen(t, (await import('node:http')).createServer(app));
  const { get, sockets } = keepAliveClient(t, up.url);
  assert.equal(await get('/x'), '200 MISS v1');
  await new Promise((resolve) => setTimeout(resolve, 250));
  assert.equal(await get('/x'), '200 STALE v1');
  assert.ok(await until(() => failed === 1, 5000), 'the background update ran and failed');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(await get('/after'), '200 MISS after ok');
  assert.equal(sockets.size, 1, 'one keep-alive connection all along');
  // The failed update let go of the key at once: the next stale request updates again.
  assert.equal(await get('/x'), '200 STALE v1');
  assert.ok(await until(() => calls === 3, 5000), 'a new background update');
});

test("a background update's handler may call the socket's connection methods: each does nothing and returns the stand-in socket", async (t: TestContext) => {
  let clock = 1_000_000;
  let calls = 0;
  const chained: boolean[] = [];
  const handler: Middleware = (req, res) => {
    calls++;
    if (calls === 2) {
      // What servers and frameworks do to a connection; on the client's it would pause, end or re-time it.
      const socket = req.socket;
      const steps = [
        () => socket.setTimeout(1),
        () => socket.setNoDelay(true),
        () => socket.setKeepAlive(true, 1000),
        () => socket.ref(),
        () => socket.unref(),
        () => socket.pause(),
        () => socket.resume(),
        () => socket.pause(),
        () => socket.end(),
      ];
      for (const step of steps) chained.push(step() === socket);
    }
    res.writeHead(200, { 'cache-control': 'max-age=1', 'content-type': 'text/plain' });
    res.end(`v${calls}`);
  };
  const gw = await gateway(t, chain(cache({ useStale: ['updating'], backgroundUpdate: true, now: () => clock }), handler));
  const { get, sockets } = keepAliveClient(t, gw.url);
  assert.equal(await get('/s'), '200 MISS v1');
  clock += 5000;
  assert.equal(await get('/s'), '200 STALE v1');
  assert.ok(await until(() => calls === 2, 5000), 'the background update ran');
  assert.deepEqual(chained, [true, true, true, true, true, true, true, true, true], 'every call returned the socket');
  // The client's connection was neither paused nor ended: it carries the next requests, which see the update.
  assert.ok(await until(async () => (await get('/s')) === '200 HIT v2', 5000), 'the update is stored');
  assert.equal(sockets.size, 1, 'one keep-alive connection all along');
});
