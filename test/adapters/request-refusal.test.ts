// The Fastify plugin and the Koa adapter run the middleware through chain(), so what nginx refuses
// while reading a request is refused there too (issue 16): TRACE 405, a repeated or invalid Host
// 400, before anything is proxied (Fastify routes TRACE for it); an absolute-form target's host is the
// Host sent upstream.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import Fastify from 'fastify';
import Koa from 'koa';
import { balance, createPool } from '../../src/index.ts';
import { switchyard } from '../../src/adapters/fastify.ts';
import { koa } from '../../src/adapters/koa.ts';
import { listen, upstream } from '../helpers.ts';
import { RawClient } from '../balance/support.ts';

async function check(t: TestContext, port: number, seen: ReadonlyArray<{ url: string; headers: Record<string, unknown> }>): Promise<void> {
  const send = async (head: string) => {
    const c = await RawClient.open(t, port);
    c.write(`${head}\r\nConnection: close\r\n\r\n`);
    return c.response();
  };
  assert.equal((await send('TRACE /api/x HTTP/1.1\r\nHost: a.test')).status, 405);
  assert.equal((await send('GET /api/x HTTP/1.1\r\nHost: a.test\r\nHost: b.test')).status, 400);
  assert.equal((await send('GET /api/x HTTP/1.1\r\nHost: a.test/b')).status, 400);
  assert.equal((await send('GET http://a..b/api/x HTTP/1.1\r\nHost: a.test')).status, 400);
  assert.equal(seen.length, 0, 'nothing proxied');
  const absolute = await send('GET http://target.test/api/x HTTP/1.1\r\nHost: header.test');
  assert.equal(absolute.status, 200);
  assert.equal(seen.at(-1)?.headers.host, 'target.test');
}

test('Fastify plugin: TRACE 405, bad or repeated Host 400, absolute-form host upstream', async (t) => {
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const app = Fastify();
  t.after(() => app.close());
  await app.register(switchyard, { prefix: '/api', use: [balance(pool, { host: 'client' })] });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  assert.ok(address !== null && typeof address === 'object');
  await check(t, address.port, up.seen);
});

test('Koa adapter: TRACE 405, bad or repeated Host 400, absolute-form host upstream', async (t) => {
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const app = new Koa();
  app.silent = true;
  app.use(koa(balance(pool, { host: 'client' })));
  const gw = await listen(t, createServer(app.callback()));
  await check(t, gw.port, up.seen);
});
