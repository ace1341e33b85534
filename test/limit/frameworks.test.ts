// limitRequests() and limitConnections() in front of balance() behind every framework: Express (with
// and without express.json()), the Fastify plugin (which parses JSON) and the Koa adapter. A delayed
// request still reaches the upstream with its body; a rejection is answered by the framework's own
// error handling with the limit's status.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import express, { type ErrorRequestHandler } from 'express';
import Fastify from 'fastify';
import Koa from 'koa';
import { balance, limitConnections, limitRequests, type Middleware, type UpstreamPool } from '../../src/index.ts';
import { switchyard } from '../../src/adapters/fastify.ts';
import { koa } from '../../src/adapters/koa.ts';
import { fetchText, listen, poolOf, until, upstream } from '../helpers.ts';
import { ManualClock } from './support.ts';

type Framework = 'express' | 'express+json' | 'fastify' | 'koa';
const FRAMEWORKS: readonly Framework[] = ['express', 'express+json', 'fastify', 'koa'];

/** A listening app of `kind` running `use` then balance(pool) for every path; its errors answered `{ handledBy, code }`. */
async function app(t: TestContext, kind: Framework, use: Middleware[], pool: UpstreamPool): Promise<string> {
  const proxy = balance(pool);
  if (kind === 'fastify') {
    const f = Fastify();
    t.after(() => f.close());
    f.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _request, reply) => {
      void reply.code(err.statusCode ?? 500).send({ handledBy: 'fastify', code: err.code });
    });
    await f.register(switchyard, { use: [...use, proxy] });
    return f.listen({ port: 0, host: '127.0.0.1' });
  }
  if (kind === 'koa') {
    const k = new Koa();
    k.use(async (ctx, next) => {
      try {
        await next();
      } catch (err) {
        const e = err as { status?: number; code?: string };
        ctx.status = e.status ?? 500;
        ctx.body = { handledBy: 'koa', code: e.code };
      }
    });
    k.use(koa(...use, proxy));
    return (await listen(t, createServer(k.callback()))).url;
  }
  const e = express();
  e.set('env', 'test');
  if (kind === 'express+json') e.use(express.json());
  e.use(...use, proxy);
  const onError: ErrorRequestHandler = (err, _req, res, _next) => {
    res.status(err.statusCode ?? 500).json({ handledBy: 'express', code: err.code });
  };
  e.use(onError);
  return (await listen(t, createServer(e))).url;
}

const post = (url: string, body: unknown) =>
  fetchText(`${url}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

for (const kind of FRAMEWORKS) {
  test(`${kind}: a delayed request keeps its body; a rejected one gets the limit's status from the framework`, async (t) => {
    const bodies: string[] = [];
    const up = await upstream(t, 'up', (_req, res, body) => {
      bodies.push(body);
      res.end('ok');
    });
    const clock = new ManualClock();
    const limit = limitRequests({ key: '$remote_addr', rate: '1r/s', burst: 1, status: 429, clock });
    const url = await app(t, kind, [limit], poolOf(t, [up.url]));
    assert.equal((await post(url, { n: 1 })).status, 200);
    const delayed = post(url, { n: 2 });
    await until(() => limit.waiting === 1, 5000, 'the second request delayed');
    const rejected = await post(url, { n: 3 });
    assert.equal(rejected.status, 429);
    assert.deepEqual(JSON.parse(rejected.body), { handledBy: kind.replace('+json', ''), code: 'SWY_ERR_RATE_LIMITED' });
    clock.advance(1000);
    const r = await delayed;
    assert.equal(r.status, 200);
    assert.deepEqual(
      bodies.map((b) => JSON.parse(b)),
      [{ n: 1 }, { n: 2 }],
    );
  });

  test(`${kind}: limitConnections counts a request until its response ends`, async (t) => {
    const held: Array<() => void> = [];
    const up = await upstream(t, 'up', (req, res) => {
      if (req.url === '/slow') held.push(() => res.end('slow'));
      else res.end('ok');
    });
    const conns = limitConnections({ key: '$remote_addr', max: 1, status: 429 });
    const url = await app(t, kind, [conns], poolOf(t, [up.url]));
    const slow = fetchText(`${url}/slow`);
    await until(() => held.length === 1, 5000, 'the slow request at the upstream');
    const second = await fetchText(`${url}/fast`);
    assert.equal(second.status, 429);
    assert.equal(JSON.parse(second.body).code, 'SWY_ERR_CONNECTION_LIMITED');
    held.shift()?.();
    assert.equal((await slow).status, 200);
    await until(() => conns.active() === 0, 5000, 'the count released');
    assert.equal((await fetchText(`${url}/fast`)).status, 200);
  });
}
