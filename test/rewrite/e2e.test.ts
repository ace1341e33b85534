// rewrite() end to end in Express, Fastify and Koa, in front of balance(pool) with a
// real upstream: the upstream gets the rewritten path and args, the framework's
// req.url is left alone, and redirects and returns are answered by the gateway.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import { test, type TestContext } from 'node:test';
import express from 'express';
import Fastify from 'fastify';
import Koa from 'koa';
import { balance, createPool, rewrite, type Middleware, type RewriteRule } from '../../src/index.ts';
import { switchyard } from '../../src/adapters/fastify.ts';
import { koa } from '../../src/adapters/koa.ts';
import { fetchText, listen, upstream, type Upstream } from '../helpers.ts';

const RULES: RewriteRule[] = [
  { from: '/api/old/:id', to: '/api/new/:id', flag: 'break' },
  { rewrite: '^/api/args/(.*)$', replacement: '/api/final/$1?v=2', flag: 'break' },
  { rewrite: '^/api/drop/(.*)$', replacement: '/api/dropped/$1?', flag: 'break' },
  { rewrite: '^/api/moved/(.*)$', replacement: '/api/new/$1', flag: 'permanent' },
  { location: '= /api/ping', rules: [{ return: 200, text: 'pong $arg_n' }] },
  { location: '/api/private/', rules: [{ return: 403 }] },
  { location: '/api/away', rules: [{ return: 302, url: 'https://example.com$uri' }] },
];

interface Setup {
  url: string;
  up: Upstream;
  /** req.url as the middleware after rewrite() saw it. */
  urls: string[];
}

type Framework = (t: TestContext, use: Middleware[]) => Promise<string>;

const FRAMEWORKS: Record<string, Framework> = {
  async express(t, use) {
    const app = express();
    for (const m of use) app.use(m);
    app.use((err: { statusCode?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(err.statusCode ?? 500).send(`express error ${err.statusCode}`);
    });
    return (await listen(t, createServer(app))).url;
  },
  async fastify(t, use) {
    const app = Fastify({ logger: false });
    t.after(() => app.close());
    app.setErrorHandler((err: Error & { statusCode?: number }, _request, reply) => {
      void reply.code(err.statusCode ?? 500).send(`fastify error ${err.statusCode}`);
    });
    await app.register(switchyard, { prefix: '/api', use });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  },
  async koa(t, use) {
    const app = new Koa();
    app.silent = true;
    app.use(koa(...use));
    return (await listen(t, createServer(app.callback()))).url;
  },
};

async function setup(t: TestContext, framework: Framework): Promise<Setup> {
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const urls: string[] = [];
  const spy: Middleware = (req: IncomingMessage, _res, next) => {
    urls.push(req.url ?? '');
    next();
  };
  const url = await framework(t, [rewrite(RULES), spy, balance(pool)]);
  return { url, up, urls };
}

for (const [name, framework] of Object.entries(FRAMEWORKS)) {
  test(`${name}: the upstream gets the rewritten path; req.url is untouched`, async (t) => {
    const s = await setup(t, framework);
    const r = await fetchText(`${s.url}/api/old/42?x=1`);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'up');
    assert.deepEqual(
      s.up.seen.map((x) => x.url),
      ['/api/new/42?x=1'],
    );
    assert.deepEqual(s.urls, ['/api/old/42?x=1']);
  });

  test(`${name}: new args go first, then the client's`, async (t) => {
    const s = await setup(t, framework);
    await fetchText(`${s.url}/api/args/a%20b?q=1`);
    await fetchText(`${s.url}/api/drop/c?q=1`);
    assert.deepEqual(
      s.up.seen.map((x) => x.url),
      ['/api/final/a%20b?v=2&q=1', '/api/dropped/c'],
    );
  });

  test(`${name}: unmatched requests pass through as sent`, async (t) => {
    const s = await setup(t, framework);
    await fetchText(`${s.url}/api/other/%41?z`);
    assert.deepEqual(
      s.up.seen.map((x) => x.url),
      ['/api/other/%41?z'],
    );
  });

  test(`${name}: a redirect is answered by the gateway, no upstream hit`, async (t) => {
    const s = await setup(t, framework);
    const host = new URL(s.url).host;
    const r = await fetchText(`${s.url}/api/moved/7?x=1`);
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, `http://${host}/api/new/7?x=1`);
    const away = await fetchText(`${s.url}/api/away`);
    assert.equal(away.status, 302);
    assert.equal(away.headers.location, 'https://example.com/api/away');
    assert.equal(s.up.seen.length, 0);
    assert.equal(s.urls.length, 0);
  });

  test(`${name}: return text is answered by the gateway, no upstream hit`, async (t) => {
    const s = await setup(t, framework);
    const r = await fetchText(`${s.url}/api/ping?n=3`);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'pong 3');
    assert.equal(s.up.seen.length, 0);
  });

  test(`${name}: return 403 reaches the framework's error handling`, async (t) => {
    const s = await setup(t, framework);
    const r = await fetchText(`${s.url}/api/private/x`);
    assert.equal(r.status, 403);
    assert.equal(s.up.seen.length, 0);
  });
}
