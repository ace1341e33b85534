// The exchange's per-attempt times (nginx $upstream_connect_time, $upstream_header_time,
// $upstream_response_time), written by balance() one entry per attempt, in step with
// $upstream_addr and $upstream_status, across retries and the stale keep-alive retry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { balance, chain, createPool, exchange, type Exchange, type RequestHookContext } from '../../src/index.ts';
import { deadPort, fetchText, gateway, listen, until, upstream } from '../helpers.ts';

/** A gateway that keeps each request's exchange. */
async function recording(t: import('node:test').TestContext, mw: ReturnType<typeof balance>): Promise<{ url: string; seen: Exchange[] }> {
  const seen: Exchange[] = [];
  const gw = await gateway(
    t,
    chain((req, _res, next) => {
      seen.push(exchange(req));
      next();
    }, mw),
  );
  return { url: gw.url, seen };
}

function aligned(ex: Exchange): void {
  const n = ex.upstreamAddr.length;
  assert.equal(ex.upstreamStatus.length, n, 'status');
  assert.equal(ex.upstreamConnectTime.length, n, 'connect');
  assert.equal(ex.upstreamHeaderTime.length, n, 'header');
  assert.equal(ex.upstreamResponseTime.length, n, 'response');
}

test('one attempt: connect, header and response times in order; a kept-alive connection connects in 0', async (t) => {
  const up = await upstream(t, 'a', (_req, res) => {
    res.write('x');
    setTimeout(() => res.end('y'), 20);
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await recording(t, balance(pool));
  await fetchText(gw.url);
  await fetchText(gw.url);
  const [first, second] = gw.seen as [Exchange, Exchange];
  aligned(first);
  assert.equal(first.upstreamAddr.length, 1);
  const [c, h, r] = [first.upstreamConnectTime[0]!, first.upstreamHeaderTime[0]!, first.upstreamResponseTime[0]!];
  assert.ok(c > 0 && c <= h && h <= r, `${c} ${h} ${r}`);
  assert.ok(r - h >= 5, `the response time runs to the last byte, 20 ms after the first: ${h} ${r}`);
  aligned(second);
  assert.equal(second.upstreamConnectTime[0], 0, 'reused connection');
  assert.ok(second.upstreamHeaderTime[0]! > 0);
});

test('a retry after http_502 and after a refused connection: one entry per attempt, aligned with $upstream_addr and $upstream_status', async (t) => {
  const bad = await upstream(t, 'bad', (_req, res) => {
    res.statusCode = 502;
    res.end('bad');
  });
  const good = await upstream(t, 'good');
  const dead = await deadPort();
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${dead}` }, { url: bad.url }, { url: good.url }], method: 'round-robin' });
  t.after(() => pool.close());
  const gw = await recording(t, balance(pool, { nextUpstream: ['error', 'http_502'] }));
  const r = await fetchText(gw.url);
  assert.equal(r.body, 'good');
  const ex = gw.seen[0]!;
  aligned(ex);
  assert.deepEqual(ex.upstreamStatus, [502, 502, 200]);
  assert.equal(ex.upstreamAddr.length, 3);
  assert.equal(ex.upstreamHeaderTime[0], -1, 'the refused connection had no header');
  assert.equal(ex.upstreamConnectTime[0], -1, 'nor a connection');
  assert.ok(ex.upstreamResponseTime[0]! >= 0);
  assert.ok(ex.upstreamHeaderTime[1]! > 0 && ex.upstreamHeaderTime[2]! > 0);
  assert.ok(ex.upstreamConnectTime[1]! > 0 && ex.upstreamConnectTime[2]! > 0);
});

test('no server available: the pool name, its status and empty times, aligned', async (t) => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1', down: true }] });
  t.after(() => pool.close());
  const gw = await recording(t, balance(pool));
  assert.equal((await fetchText(gw.url)).status, 503);
  const ex = gw.seen[0]!;
  aligned(ex);
  assert.deepEqual(ex.upstreamConnectTime, [-1]);
  assert.deepEqual(ex.upstreamHeaderTime, [-1]);
});

test('the stale keep-alive retry keeps the arrays aligned (the dropped try is not an entry) and calls onRequest again', async (t) => {
  const perSocket = new WeakMap<Socket, number>();
  const up = await upstream(t, 'a', (req: IncomingMessage, res: ServerResponse) => {
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, n);
    // The second request on a connection: the server closes it without an answer (a stale kept-alive connection).
    if (n === 2) {
      req.socket.destroy();
      return;
    }
    res.end('a');
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const attempts: number[] = [];
  const gw = await recording(
    t,
    balance(pool, {
      onRequest(ctx: RequestHookContext) {
        attempts.push(ctx.attempt);
      },
    }),
  );
  assert.equal((await fetchText(gw.url)).status, 200);
  assert.equal((await fetchText(gw.url)).status, 200);
  const ex = gw.seen[1]!;
  aligned(ex);
  assert.equal(ex.upstreamAddr.length, 1);
  assert.deepEqual(ex.upstreamStatus, [200]);
  assert.ok(ex.upstreamConnectTime[0]! > 0, 'answered on a new connection');
  assert.deepEqual(attempts, [1, 1, 2], 'the hook ran for the stale try and the retry');
});

test('an upgrade records its times too: connect and header at the answer, the response time when the tunnel closes; aligned', async (t) => {
  const server = createServer((_req, res) => res.end());
  server.on('upgrade', (_req, socket: Duplex) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: test\r\nconnection: upgrade\r\n\r\n');
    setTimeout(() => socket.end(), 20);
  });
  const up = await listen(t, server);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const proxy = balance(pool);
  const seen: Exchange[] = [];
  const gwServer = createServer(chain(proxy));
  gwServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    seen.push(exchange(req));
    proxy.upgrade(req, socket, head);
  });
  const gw = await listen(t, gwServer);
  await new Promise<void>((resolve, reject) => {
    const req = request(gw.url, { agent: false, headers: { connection: 'upgrade', upgrade: 'test' } });
    req.on('upgrade', (_res, socket) => {
      socket.resume();
      socket.on('close', () => resolve());
    });
    req.on('error', reject);
    req.end();
  });
  const ex = seen[0]!;
  await until(() => ex.upstreamResponseTime.length === 1);
  aligned(ex);
  assert.deepEqual(ex.upstreamStatus, [101]);
  const [c, h, r] = [ex.upstreamConnectTime[0]!, ex.upstreamHeaderTime[0]!, ex.upstreamResponseTime[0]!];
  assert.ok(c > 0 && c <= h && h <= r, `${c} ${h} ${r}`);
});
