// balance()'s onRequest and onResponse hooks on real sockets: what they see and change, responses they
// take over (the upstream's connection kept or closed, its status in the pool's statistics), the body
// they read with a limit, and hooks that throw, reject or break the rules (errors, never crashes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import express, { type ErrorRequestHandler } from 'express';
import {
  balance,
  chain,
  createPool,
  HookError,
  ReturnStatusError,
  type BalanceOptions,
  type RequestHookContext,
  type ResponseHookContext,
  type UpstreamPool,
} from '../../src/index.ts';
import { fetchText, gateway, listen, until, upstream, type Upstream } from '../helpers.ts';

/** A node:http gateway over `pool` whose errors are answered `<status> <code>` and kept in `errors`. */
async function front(t: import('node:test').TestContext, pool: UpstreamPool, options: BalanceOptions): Promise<{ url: string; errors: Error[] }> {
  const errors: Error[] = [];
  const gw = await gateway(
    t,
    chain(balance(pool, options), {
      final: (err, _req, res) => {
        errors.push(err as Error);
        const e = err as { statusCode?: number; code?: string };
        res.statusCode = e.statusCode ?? 500;
        res.end(String(e.code));
      },
    }),
  );
  return { url: gw.url, errors };
}

function poolOver(t: import('node:test').TestContext, ...ups: Upstream[]): UpstreamPool {
  const pool = createPool({ servers: ups.map((u, i) => ({ url: u.url, id: `s${i}` })) });
  t.after(() => pool.close());
  return pool;
}

/** Counts the connections a server accepts and how many are open. */
function connections(server: import('node:http').Server): { accepted: number; open: number } {
  const c = { accepted: 0, open: 0 };
  server.on('connection', (s: Socket) => {
    c.accepted++;
    c.open++;
    s.on('close', () => c.open--);
  });
  return c;
}

// ---- onRequest ----

test('onRequest sees the server, the attempt and the method, and changes the path and headers the upstream gets', async (t) => {
  const up = await upstream(t, 'a');
  const pool = poolOver(t, up);
  const seen: RequestHookContext[] = [];
  const gw = await front(t, pool, {
    setHeaders: { 'X-Set': 'by-setHeaders' },
    onRequest(ctx) {
      seen.push(ctx);
      assert.equal(ctx.headers.get('X-SET'), 'by-setHeaders', 'setHeaders is applied before the hook');
      ctx.headers.set('X-From-Hook', `attempt ${ctx.attempt}`);
      ctx.headers.append('x-list', 'one').append('x-list', 'two');
      ctx.headers.delete('x-secret');
      ctx.path = `/v2${ctx.path}`;
    },
  });
  const r = await fetchText(`${gw.url}/items?id=1`, { method: 'POST', body: 'payload', headers: { 'x-secret': 's3cret' } });
  assert.equal(r.status, 200);
  const got = up.seen[0]!;
  assert.equal(got.url, '/v2/items?id=1');
  assert.equal(got.headers['x-from-hook'], 'attempt 1');
  assert.equal(got.headers['x-list'], 'one, two');
  assert.equal(got.headers['x-secret'], undefined);
  assert.equal(got.body, 'payload');
  const ctx = seen[0]!;
  assert.equal(ctx.attempt, 1);
  assert.equal(ctx.method, 'POST');
  assert.deepEqual({ ...ctx.server }, { id: 's0', name: `127.0.0.1:${up.port}`, url: up.url });
  assert.equal(ctx.headers.get('content-length'), '7', 'framing is shown');
  assert.throws(() => ctx.headers.set('content-length', '1'), HookError);
});

test('onRequest runs once per attempt: the retry on the next server is attempt 2', async (t) => {
  const bad = await upstream(t, 'bad', (_req, res) => {
    res.statusCode = 502;
    res.end();
  });
  const good = await upstream(t, 'good');
  const pool = poolOver(t, bad, good);
  const attempts: string[] = [];
  const gw = await front(t, pool, {
    nextUpstream: ['error', 'http_502'],
    onRequest(ctx) {
      attempts.push(`${ctx.attempt}:${ctx.server.id}`);
      ctx.headers.set('x-attempt', String(ctx.attempt));
    },
  });
  assert.equal((await fetchText(gw.url)).body, 'good');
  assert.deepEqual(attempts, ['1:s0', '2:s1']);
  assert.equal(bad.seen[0]!.headers['x-attempt'], '1');
  assert.equal(good.seen[0]!.headers['x-attempt'], '2');
});

test('an async onRequest is awaited before the request is sent', async (t) => {
  const up = await upstream(t, 'a');
  const pool = poolOver(t, up);
  const gw = await front(t, pool, {
    async onRequest(ctx) {
      await sleep(20);
      ctx.headers.set('x-token', 'fetched');
    },
  });
  assert.equal((await fetchText(gw.url)).status, 200);
  assert.equal(up.seen[0]!.headers['x-token'], 'fetched');
});

test('onRequest that throws, rejects or breaks framing fails the request with a 500 HookError; a thrown SwitchyardError keeps its status; the server is freed and not failed', async (t) => {
  const up = await upstream(t, 'a');
  const pool = poolOver(t, up);
  const gw = await front(t, pool, {
    async onRequest(ctx) {
      const mode = ctx.req.url!.slice(1);
      if (mode === 'throw') throw new Error('boom');
      if (mode === 'reject') return Promise.reject(new TypeError('later'));
      if (mode === 'length') ctx.headers.set('Content-Length', '0');
      if (mode === 'te') ctx.headers.delete('transfer-encoding');
      if (mode === 'value') ctx.headers.set('x-a', 'a\r\nb');
      if (mode === 'name') ctx.headers.set('x a', 'b');
      if (mode === 'path') ctx.path = '/a b';
      if (mode === 'deny') throw new ReturnStatusError(403);
    },
  });
  // The sync throw, before any await: a function that is not async.
  const sync = await front(t, pool, {
    onRequest() {
      throw 'a string';
    },
  });
  for (const mode of ['throw', 'reject', 'length', 'te', 'value', 'name', 'path']) {
    const r = await fetchText(`${gw.url}/${mode}`);
    assert.equal(r.status, 500, mode);
    assert.equal(r.body, 'SWY_ERR_HOOK', mode);
  }
  assert.equal(gw.errors[0]!.message, 'onRequest hook failed: boom');
  assert.equal((gw.errors[0]!.cause as Error).message, 'boom');
  assert.ok(gw.errors[2]!.message.includes('Content-Length'), gw.errors[2]!.message);
  const deny = await fetchText(`${gw.url}/deny`);
  assert.equal(deny.status, 403);
  assert.equal(deny.body, 'SWY_ERR_RETURN');
  const s = await fetchText(sync.url);
  assert.equal(s.status, 500);
  assert.equal(sync.errors[0]!.message, 'onRequest hook failed: a string');
  assert.equal(up.seen.length, 0, 'nothing reached the upstream');
  const stats = pool.stats().servers[0]!;
  assert.equal(stats.active, 0);
  assert.equal(stats.fails, 0);
  assert.equal((await fetchText(`${gw.url}/fine`)).status, 200, 'the gateway goes on');
});

test('a client that leaves while an async onRequest runs: the request is not sent, the server is freed', async (t) => {
  const up = await upstream(t, 'a');
  const pool = poolOver(t, up);
  let release: () => void = () => undefined;
  let entered = false;
  const gw = await front(t, pool, {
    onRequest: () =>
      new Promise<void>((resolve) => {
        entered = true;
        release = resolve;
      }),
  });
  const { request } = await import('node:http');
  const req = request(gw.url, { agent: false });
  req.on('error', () => undefined);
  req.end();
  await until(() => entered);
  req.destroy();
  await sleep(50);
  release();
  await sleep(50);
  assert.equal(up.seen.length, 0);
  assert.equal(pool.stats().servers[0]!.active, 0);
});

// ---- onResponse ----

test('onResponse changes the status and headers; Set-Cookie stays separate entries; the body streams as it came', async (t) => {
  const up = await upstream(t, 'a', (_req, res) => {
    res.setHeader('server', 'internal/1.0');
    res.setHeader('x-powered-by', 'php');
    res.setHeader('set-cookie', ['a=1', 'b=2']);
    res.statusCode = 201;
    res.write('chunk1-');
    setTimeout(() => res.end('chunk2'), 10);
  });
  const pool = poolOver(t, up);
  let cookies: string[] = [];
  const gw = await front(t, pool, {
    onResponse(ctx) {
      assert.equal(ctx.status, 201);
      cookies = ctx.headers.getAll('set-cookie');
      ctx.status = 202;
      ctx.headers.delete('x-powered-by');
      ctx.headers.set('Server', 'gateway');
      ctx.headers.set('access-control-allow-origin', '*');
      ctx.headers.append('set-cookie', 'c=3');
    },
  });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 202);
  assert.equal(r.body, 'chunk1-chunk2');
  assert.deepEqual(cookies, ['a=1', 'b=2']);
  assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2', 'c=3']);
  assert.equal(r.headers.server, 'gateway');
  assert.equal(r.headers['x-powered-by'], undefined);
  assert.equal(r.headers['access-control-allow-origin'], '*');
  assert.equal(r.headers['transfer-encoding'], 'chunked');
});

test('onResponse takes the response over: a small upstream body is read off and the connection reused; the pool records the upstream status', async (t) => {
  const up = await upstream(t, 'a', (req, res) => {
    res.statusCode = req.url === '/fail' ? 503 : 200;
    res.setHeader('content-type', 'text/plain');
    res.end('upstream body');
  });
  const conns = connections(up.server);
  const pool = poolOver(t, up);
  const gw = await front(t, pool, {
    onResponse(ctx) {
      if (ctx.status === 503) ctx.respond(200, { 'content-type': 'text/html', 'x-maintenance': ['a', 'b'] }, '<p>back soon</p>');
    },
  });
  const r = await fetchText(`${gw.url}/fail`);
  assert.equal(r.status, 200);
  assert.equal(r.body, '<p>back soon</p>');
  assert.equal(r.headers['content-length'], String('<p>back soon</p>'.length));
  assert.equal(r.headers['x-maintenance'], 'a, b');
  const again = await fetchText(`${gw.url}/ok`);
  assert.equal(again.body, 'upstream body');
  assert.equal(conns.accepted, 1, 'the upstream connection was kept and reused');
  const s = pool.stats().servers[0]!;
  assert.equal(s.responses.codes['503'], 1, 'the pool counts the upstream status, not the hook answer');
  assert.equal(s.responses.codes['200'], 1);
  assert.equal(s.active, 0);
});

test('onResponse taking over a long or endless upstream body closes that connection (no socket left hanging)', async (t) => {
  let carrier: Socket | undefined;
  const up = await upstream(t, 'a', (req, res) => {
    carrier = req.socket;
    res.write('x'.repeat(1000));
    // Never ends: the gateway must close it.
  });
  const pool = poolOver(t, up);
  const gw = await front(t, pool, {
    onResponse(ctx) {
      ctx.respond(418, undefined, 'short');
    },
  });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 418);
  assert.equal(r.body, 'short');
  // The connection that carried the response is closed (undici may open a fresh idle one after an abort: not this one).
  await until(() => carrier?.destroyed === true, 3000, 'the upstream connection that carried the response closed');
  assert.equal(pool.stats().servers[0]!.active, 0);
});

test('onResponse readBody: the hook rewrites the body; or the original goes out with the buffered body and a Content-Length; over the limit is a 502', async (t) => {
  const up = await upstream(t, 'a', (req, res) => {
    res.setHeader('content-type', 'application/json');
    // Chunked, no Content-Length.
    res.write('{"user":"ann",');
    res.end(req.url === '/big' ? `"pad":"${'x'.repeat(5000)}"}` : '"secret":"s"}');
  });
  const conns = connections(up.server);
  const pool = poolOver(t, up);
  const gw = await front(t, pool, {
    async onResponse(ctx) {
      if (ctx.req.url === '/keep') {
        const body = await ctx.readBody({ limit: 1024 });
        ctx.headers.set('x-body-bytes', String(body.length));
        return;
      }
      const json = JSON.parse((await ctx.readBody({ limit: 1024 })).toString()) as Record<string, unknown>;
      delete json.secret;
      ctx.respond(ctx.status, ctx.headers, JSON.stringify(json));
    },
  });
  const r = await fetchText(`${gw.url}/filter`);
  assert.equal(r.status, 200);
  assert.equal(r.body, '{"user":"ann"}');
  assert.equal(r.headers['content-length'], '14');
  assert.equal(r.headers['transfer-encoding'], undefined);
  const kept = await fetchText(`${gw.url}/keep`);
  assert.equal(kept.body, '{"user":"ann","secret":"s"}');
  assert.equal(kept.headers['content-length'], String(kept.body.length));
  assert.equal(kept.headers['x-body-bytes'], String(kept.body.length));
  assert.equal(conns.accepted, 1, 'a body read whole leaves the connection reusable');
  const big = await fetchText(`${gw.url}/big`);
  assert.equal(big.status, 502);
  assert.equal(big.body, 'SWY_ERR_BAD_GATEWAY');
  assert.match(gw.errors[0]!.message, /limit of 1024 bytes/);
  await until(() => pool.stats().servers[0]!.active === 0);
  assert.equal(pool.stats().servers[0]!.fails, 0);
});

test('onResponse that throws, rejects or sets a framing header answers 500 before anything is sent; the server is freed; the process survives', async (t) => {
  const up = await upstream(t, 'a');
  const pool = poolOver(t, up);
  const gw = await front(t, pool, {
    onResponse(ctx) {
      const mode = ctx.req.url!.slice(1);
      if (mode === 'throw') throw new Error('bad hook');
      if (mode === 'reject') return Promise.reject(new Error('bad async hook'));
      if (mode === 'length') ctx.headers.set('content-length', '3');
      if (mode === 'status') ctx.status = 99;
      if (mode === 'late')
        return (async () => {
          await sleep(5);
          throw new RangeError('late');
        })();
      return undefined;
    },
  });
  for (const mode of ['throw', 'reject', 'length', 'status', 'late']) {
    const r = await fetchText(`${gw.url}/${mode}`);
    assert.equal(r.status, 500, mode);
    assert.equal(r.body, 'SWY_ERR_HOOK', mode);
  }
  assert.equal(gw.errors[0]!.message, 'onResponse hook failed: bad hook');
  assert.ok(gw.errors.every((e) => e instanceof HookError));
  await until(() => pool.stats().servers[0]!.active === 0);
  assert.equal(pool.stats().servers[0]!.fails, 0);
  assert.equal((await fetchText(`${gw.url}/fine`)).body, 'a');
});

test('respond() while a readBody() is still under way: the read is dropped (no unhandled rejection), the connection closed, the server freed', async (t) => {
  let carrier: Socket | undefined;
  const up = await upstream(t, 'a', (req, res) => {
    carrier = req.socket;
    res.write('part');
    // Never ends.
  });
  const pool = poolOver(t, up);
  const rejections: unknown[] = [];
  const onRejection = (err: unknown): void => {
    rejections.push(err);
  };
  process.on('unhandledRejection', onRejection);
  t.after(() => process.off('unhandledRejection', onRejection));
  const gw = await front(t, pool, {
    onResponse(ctx) {
      void ctx.readBody({ limit: 1024 });
      ctx.respond(200, {}, 'mine');
    },
  });
  const r = await fetchText(gw.url);
  assert.equal(r.body, 'mine');
  await until(() => carrier?.destroyed === true, 3000, 'the upstream connection closed');
  await until(() => pool.stats().servers[0]!.active === 0);
  await sleep(20);
  assert.deepEqual(rejections, []);
});

test('a client that leaves while an async onResponse runs: nothing is sent, the upstream connection is closed, the server freed', async (t) => {
  let carrier: Socket | undefined;
  const up = await upstream(t, 'a', (req, res) => {
    carrier = req.socket;
    res.write('part');
  });
  const pool = poolOver(t, up);
  let entered = false;
  let release: () => void = () => undefined;
  const gw = await front(t, pool, {
    onResponse: () =>
      new Promise<void>((resolve) => {
        entered = true;
        release = resolve;
      }),
  });
  const { request } = await import('node:http');
  const req = request(gw.url, { agent: false });
  req.on('error', () => undefined);
  req.end();
  await until(() => entered);
  req.destroy();
  await until(() => carrier?.destroyed === true, 3000, 'the upstream connection closed');
  release();
  await until(() => pool.stats().servers[0]!.active === 0);
  assert.equal(gw.errors.length, 0);
  assert.equal(pool.stats().servers[0]!.fails, 0);
});

test('an async onResponse that outlasts idleTimeout: a clean 504, nothing half-sent', async (t) => {
  const up = await upstream(t, 'a');
  const pool = poolOver(t, up);
  const gw = await front(t, pool, {
    idleTimeout: '50ms',
    async onResponse() {
      await sleep(200);
    },
  });
  const r = await fetchText(gw.url);
  assert.equal(r.status, 504);
  assert.equal(r.body, 'SWY_ERR_GATEWAY_TIMEOUT');
  assert.equal(pool.stats().servers[0]!.active, 0);
});

test("onRequest and onResponse through Express: a header set upstream, one removed and one added downstream, errors to Express's error middleware", async (t) => {
  const up = await upstream(t, 'a', (_req, res) => {
    res.setHeader('x-powered-by', 'upstream');
    res.end('hello');
  });
  const pool = poolOver(t, up);
  const app = express();
  app.set('env', 'test');
  app.disable('x-powered-by');
  app.use(
    '/api',
    balance(pool, {
      async onRequest(ctx) {
        await sleep(1);
        ctx.headers.set('x-user', 'from-hook');
      },
      onResponse(ctx) {
        if (ctx.req.url === '/boom') throw new Error('no');
        ctx.headers.delete('X-Powered-By');
        ctx.headers.set('X-Frame-Options', 'DENY');
      },
    }),
  );
  const onError: ErrorRequestHandler = (err, _req, res, _next) => {
    res.status(err.statusCode ?? 500).json({ code: err.code });
  };
  app.use(onError);
  const gw = await listen(t, createServer(app));
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.body, 'hello');
  assert.equal(r.headers['x-powered-by'], undefined);
  assert.equal(r.headers['x-frame-options'], 'DENY');
  assert.equal(up.seen[0]!.headers['x-user'], 'from-hook');
  const boom = await fetchText(`${gw.url}/api/boom`);
  assert.equal(boom.status, 500);
  assert.deepEqual(JSON.parse(boom.body), { code: 'SWY_ERR_HOOK' });
});

test('the hooks are validated when balance() is called', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  try {
    assert.throws(() => balance(pool, { onRequest: 'x' as never }), { option: 'onRequest' });
    assert.throws(() => balance(pool, { onResponse: {} as never }), { option: 'onResponse' });
  } finally {
    pool.close();
  }
});

// Type-level use: the contexts are exported.
export type HookTypes = [RequestHookContext, ResponseHookContext, IncomingMessage];
