// connectTimeout, headerTimeout and idleTimeout on real sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createPool, GatewayTimeoutError } from '../../src/index.ts';
import { blackholePort, fetchText, upstream } from '../helpers.ts';
import { delay, gatewayFor, tryFetch, until, TEST_TIMEOUT } from './support.ts';

test('connectTimeout: a connect that hangs gives 504 GatewayTimeoutError and counts as a failure', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await blackholePort(t);
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { connectTimeout: 100 });
  const started = performance.now();
  const r = await fetchText(gw.url);
  const took = performance.now() - started;
  assert.equal(r.status, 504);
  assert.ok(took >= 90 && took < 900, `took ${took} ms`);
  await gw.settled(1);
  const err = gw.log[0]!.error as GatewayTimeoutError;
  assert.ok(err instanceof GatewayTimeoutError);
  assert.equal(err.code, 'SWY_ERR_GATEWAY_TIMEOUT');
  assert.equal(err.statusCode, 504);
  assert.match(String((err.cause as Error).message), /connecting/);
  assert.equal(pool.stats().servers[0]!.active, 0);
});

test('connectTimeout: a hanging connect moves on to the next server (timeout is retried by default), also for POST', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await blackholePort(t);
  const ok = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }, { url: ok.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { connectTimeout: 100 });
  const r = await fetchText(gw.url, { method: 'POST', body: 'not sent before the connect' });
  assert.equal(r.status, 200);
  assert.equal(ok.seen[0]!.body, 'not sent before the connect');
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.status, [504, 200]);
  const s = pool.stats().servers[0]!;
  assert.equal(s.fails, 1);
  assert.equal(s.state, 'unavail');
  assert.equal(s.active, 0);
});

test('headerTimeout: no response header in time gives 504', { timeout: TEST_TIMEOUT }, async (t) => {
  const hang = await upstream(t, 'hang', () => undefined);
  const pool = createPool({ servers: [{ url: hang.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { headerTimeout: 100, idleTimeout: '10s' });
  const started = performance.now();
  const r = await fetchText(gw.url);
  assert.equal(r.status, 504);
  assert.ok(performance.now() - started >= 90);
  await gw.settled(1);
  assert.ok(gw.log[0]!.error instanceof GatewayTimeoutError);
  assert.match(String(((gw.log[0]!.error as Error).cause as Error).message), /response header/);
  assert.equal(pool.stats().servers[0]!.active, 0);
});

test('headerTimeout runs from the end of the request: a slow upload longer than it still succeeds', { timeout: TEST_TIMEOUT }, async (t) => {
  const echo = await upstream(t, 'echo', (_req, res, body) => res.end(`got ${body.length}`));
  const pool = createPool({ servers: [{ url: echo.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { headerTimeout: 150, idleTimeout: 1000 });
  const reply = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(gw.url, { method: 'PUT', agent: false, headers: { 'content-length': '6' } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    let sent = 0;
    const tick = setInterval(() => {
      req.write('x');
      if (++sent === 6) {
        clearInterval(tick);
        req.end();
      }
    }, 50); // 300 ms of upload, never idle for 1 s
  });
  assert.equal(reply.status, 200);
  assert.equal(reply.body, 'got 6');
});

test('idleTimeout before the header: a silent upstream gives 504 even with a long headerTimeout', { timeout: TEST_TIMEOUT }, async (t) => {
  const hang = await upstream(t, 'hang', () => undefined);
  const pool = createPool({ servers: [{ url: hang.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { headerTimeout: '10s', idleTimeout: 100 });
  const started = performance.now();
  const r = await fetchText(gw.url);
  assert.equal(r.status, 504);
  assert.ok(performance.now() - started < 1000, 'the idle timeout, not the header timeout, ended it');
  await gw.settled(1);
  assert.ok(gw.log[0]!.error instanceof GatewayTimeoutError);
});

test('idleTimeout after the header: the client connection is cut, the upstream request is closed', { timeout: TEST_TIMEOUT }, async (t) => {
  let upstreamClosed = false;
  const stall = await upstream(t, 'stall', (req, res) => {
    res.writeHead(200, { 'content-length': '100' });
    res.write('first part');
    req.socket.once('close', () => (upstreamClosed = true));
  });
  const pool = createPool({ servers: [{ url: stall.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { idleTimeout: 100 });
  const r = await tryFetch(gw.url);
  assert.ok('error' in r, 'the response must not complete');
  assert.equal(r.status, 200);
  assert.equal(r.received, 'first part'.length);
  await until(() => upstreamClosed, 2000, 'the upstream connection to close');
  await until(() => pool.stats().servers[0]!.active === 0, 2000, 'active to return to 0');
});

test('headerTimeout does not limit the body: a slow but steady body is delivered whole', { timeout: TEST_TIMEOUT }, async (t) => {
  const slow = await upstream(t, 'slow', async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < 5; i++) {
      res.write(`${i}`);
      await delay(50);
    }
    res.end();
  });
  const pool = createPool({ servers: [{ url: slow.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { headerTimeout: 100, idleTimeout: 200 });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 200);
  assert.equal(r.body, '01234');
});
