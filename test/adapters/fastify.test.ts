// Fastify end-to-end: a listening Fastify app with the switchyard plugin under /api, in front of real
// upstream servers; Fastify's log is captured and must stay free of warnings and errors while
// proxying. The adapter contract (contract.ts) runs against it; below it, what only Fastify does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TestContext } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { balance, createPool, type BalanceOptions, type Middleware, type Next, type UpstreamPool } from '../../src/index.ts';
import { switchyard, type SwitchyardPluginOptions } from '../../src/adapters/fastify.ts';
import { fetchText } from '../helpers.ts';
import { H2C, send, upgradeStatus } from '../proxy/upgrade-support.ts';
import { backend, echo, JSON_TEXT, JSON_VALUE, logCapture, sleep, wsEcho, wsRefused } from './common.ts';
import { adapterContract } from './contract.ts';

interface AppOptions extends Partial<Omit<SwitchyardPluginOptions, 'use'>> {
  use?: Middleware | Middleware[] | undefined;
  balance?: BalanceOptions | undefined;
  /** Install the error handler that reports what it saw. @default true */
  errorHandler?: boolean | undefined;
  /** Called with the app before the plugin is registered (hooks, handlers, routes). */
  setup?: ((app: FastifyInstance) => void) | undefined;
}

interface App {
  app: FastifyInstance;
  url: string;
  ws: string;
  logs: ReturnType<typeof logCapture>['records'];
  /** Log records at warn level or above. */
  loud(): Array<{ level: number; msg?: string }>;
}

/** A listening Fastify app: `register(switchyard, { prefix: '/api', use: [balance(pool)] })` plus a few own routes. */
async function app(t: TestContext, pool: UpstreamPool | undefined, options: AppOptions = {}): Promise<App> {
  if (pool !== undefined) t.after(() => pool.close());
  const log = logCapture();
  const app = Fastify({ logger: { level: 'trace', stream: log.stream } });
  t.after(() => app.close());
  const { balance: balanceOptions, errorHandler, setup, use, ...plugin } = options;
  if (errorHandler !== false) {
    app.setErrorHandler((err: Error & { code?: string; statusCode?: number }, _request, reply) => {
      void reply.code(err.statusCode ?? 500).send({ handledBy: 'fastify', code: err.code, statusCode: err.statusCode, name: err.name });
    });
  }
  app.get('/health', async () => ({ ok: true }));
  app.post('/own/json', async (request) => ({ parsed: request.body }));
  setup?.(app);
  await app.register(switchyard, { prefix: '/api', use: use ?? [balance(pool!, balanceOptions)], ...plugin });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as { port: number };
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}`,
    logs: log.records,
    loud: () => log.records.filter((r) => r.level >= 40),
  };
}

adapterContract({
  name: 'Fastify',
  handledBy: 'fastify',
  async start(t, { pool, balance: balanceOptions, bodyParser, errorHandler, presetHeaders }) {
    const gw = await app(t, pool, {
      balance: balanceOptions,
      errorHandler,
      parseBody: bodyParser === true,
      setup: (app) => {
        if (presetHeaders === undefined) return;
        app.addHook('onRequest', async (_request, reply) => {
          for (const [name, value] of Object.entries(presetHeaders)) void reply.header(name, value);
        });
      },
    });
    return { url: gw.url, ws: gw.ws, prefix: '/api', problems: gw.loud };
  },
  defaultError(reply) {
    assert.equal(JSON.parse(reply.body).code, 'SWY_ERR_BAD_GATEWAY');
  },
});

test('Fastify hooks see the proxied exchange; the bare prefix is proxied; one log line per request', async (t) => {
  const a = await backend(t, 'a');
  const b = await backend(t, 'b');
  const seenByHooks: string[] = [];
  const gw = await app(t, createPool({ servers: [{ url: a.url }, { url: b.url }] }), {
    setup: (app) => {
      app.addHook('onRequest', async (request) => {
        seenByHooks.push(`onRequest ${request.url}`);
      });
      app.addHook('onResponse', async (request, reply) => {
        seenByHooks.push(`onResponse ${request.url} ${reply.statusCode}`);
      });
    },
  });
  for (let i = 0; i < 4; i++) assert.equal((await fetchText(`${gw.url}/api/items?page=${i}`)).status, 200);
  // Fastify does not strip its prefix (the contract checks the full target); the bare prefix is proxied too.
  assert.equal(echo((await fetchText(`${gw.url}/api`)).body).url, '/api');
  assert.deepEqual(seenByHooks.slice(0, 2), ['onRequest /api/items?page=0', 'onResponse /api/items?page=0 200']);
  const completed = gw.logs.filter((r) => r.msg === 'request completed');
  assert.equal(completed.length, 5);
  assert.deepEqual(gw.loud(), []);
});

test("headers set on the reply by Fastify hooks (as @fastify/cors does) stay on Fastify's own answers too", async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), {
    setup: (app) => {
      app.addHook('onRequest', async (_request, reply) => {
        void reply.header('access-control-allow-origin', '*');
      });
    },
  });
  // Proxied responses carry them (the adapter contract checks it); Fastify's own answers (errors,
  // not found) as before.
  const missing = await fetchText(`${gw.url}/nowhere`);
  assert.equal(missing.headers['access-control-allow-origin'], '*');
  assert.deepEqual(gw.loud(), []);
});

test('routes outside the prefix keep working, with their own body parsing', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }));
  assert.deepEqual(JSON.parse((await fetchText(`${gw.url}/health`)).body), { ok: true });
  // The plugin (parseBody: false) removes content-type parsers only inside its own context.
  const own = await fetchText(`${gw.url}/own/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON_TEXT });
  assert.equal(own.status, 200);
  assert.deepEqual(JSON.parse(own.body), { parsed: JSON_VALUE });
  assert.equal((await fetchText(`${gw.url}/elsewhere`)).status, 404);
  assert.equal((await fetchText(`${gw.url}/apix`)).status, 404);
  assert.equal(a.seen.length, 0);
  assert.deepEqual(gw.loud(), []);
});

test('parseBody: true: Fastify parses the body before the proxy runs, and a text body is re-sent', async (t) => {
  const a = await backend(t, 'a');
  const bodies: unknown[] = [];
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), {
    parseBody: true,
    setup: (app) => {
      app.addHook('preHandler', async (request) => {
        bodies.push(request.body);
      });
    },
  });
  const r = await fetchText(`${gw.url}/api/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON_TEXT });
  assert.equal(r.status, 200);
  assert.deepEqual(bodies, [JSON_VALUE]); // Fastify parsed it before the proxy ran (the contract checks the re-sent body)
  const text = await fetchText(`${gw.url}/api/notes`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'a note' });
  assert.equal(text.status, 200);
  assert.equal(a.seen[1]!.body, 'a note');
  assert.deepEqual(gw.loud(), []);
});

test('parseBody: true re-sends every JSON value as JSON, primitives included', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { parseBody: true });
  const values = ['"hello"', '42', 'true', 'null', '[1,2]'];
  for (const text of values) {
    const r = await fetchText(`${gw.url}/api/v`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: text });
    assert.equal(r.status, 200, text);
  }
  assert.deepEqual(
    a.seen.map((s) => s.body),
    values,
  );
});

test('parseBody: false accepts any content type, or none, and streams it', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { parseBody: false });
  const cases: Array<[Record<string, string>, string]> = [
    [{ 'content-type': 'application/x-custom; v=2' }, 'custom bytes'],
    [{ 'content-type': 'multipart/form-data; boundary=x' }, '--x\r\ncontent-disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n'],
    [{ 'content-type': 'text/plain' }, 'not parsed'],
    [{}, 'no content type at all'],
  ];
  for (const [headers, body] of cases) {
    const r = await fetchText(`${gw.url}/api/upload`, { method: 'POST', headers, body });
    assert.equal(r.status, 200, `${JSON.stringify(headers)}: ${r.body}`);
  }
  assert.deepEqual(
    a.seen.map((s) => [s.headers['content-type'], s.body]),
    cases.map(([h, b]) => [h['content-type'], b]),
  );
  assert.deepEqual(gw.loud(), []);
});

test('WebSocket upgrades under the prefix are proxied by the plugin, others left to other listeners', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), {
    setup: (app) => {
      // Another upgrade listener (as @fastify/websocket would be) that owns everything outside /api.
      app.server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
        if (!/^\/api(\/|\?|$)/.test(req.url ?? '')) socket.end("HTTP/1.1 418 I'm a teapot\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
      });
    },
  });
  assert.deepEqual(await wsEcho(`${gw.ws}/api/ws?room=1`, ['hello', 'again']), ['a:hello', 'a:again']);
  assert.equal(await wsRefused(`${gw.ws}/other/ws`), 418);
  assert.equal(await wsRefused(`${gw.ws}/apiary`), 418);
  assert.deepEqual(a.sockets, ['/api/ws?room=1']);
  assert.deepEqual(gw.loud(), []);
});

test('an upgrade outside the prefix with no other upgrade listener is answered 404, not left open', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }));
  assert.equal(await wsRefused(`${gw.ws}/elsewhere`, 2000), 404);
  assert.deepEqual(a.sockets, []);
});

test('without a prefix, hostile upgrade targets are answered 400 and the process keeps running', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { prefix: '' });
  const port = Number(new URL(gw.url).port);
  for (const target of ['*', 'http://x:a/', 'http://[/', 'http://127.0.0.1:1[/ws', '/%zz']) {
    assert.equal(await upgradeStatus(t, port, target), 400, target);
  }
  assert.deepEqual(await wsEcho(`${gw.ws}/ws`, ['still up']), ['a:still up']);
  assert.deepEqual(a.sockets, ['/ws']);
});

test('Upgrade: h2c is answered as ordinary HTTP: under the prefix by the plugin, elsewhere by Fastify', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }));
  const port = Number(new URL(gw.url).port);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const proxied = await send(port, agent, '/api/h2c', { ...H2C, 'content-type': 'text/plain' }, 'body');
  assert.equal(proxied.status, 200);
  assert.equal(echo(proxied.body).body, 'body');
  assert.equal(echo(proxied.body).headers.upgrade, undefined);
  const own = await send(port, agent, '/health', H2C);
  assert.deepEqual([own.status, own.body, own.reused], [200, '{"ok":true}', true]);
  assert.deepEqual(a.sockets, []);
  assert.deepEqual(gw.loud(), []);
});

test('websocket: false leaves upgrades alone', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { websocket: false });
  // No upgrade listener: Node hands the request to Fastify as a plain request, and no WebSocket opens.
  await wsRefused(`${gw.ws}/api/ws`);
  assert.deepEqual(a.sockets, []);
});

test("requests the chain does not answer go to Fastify's not-found handler, after async hooks too", async (t) => {
  const a = await backend(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  const proxy = balance(pool);
  // Only /api/proxied/... is proxied; anything else under the prefix is handed on.
  const gate = function gate(req: IncomingMessage, res: ServerResponse, next: Next): void {
    if ((req.url ?? '').startsWith('/api/proxied')) proxy(req, res, next);
    else next();
  };
  const gw = await app(t, pool, {
    use: gate,
    setup: (app) => {
      app.addHook('preHandler', async () => {
        await sleep(20);
      });
      app.setNotFoundHandler((request, reply) => {
        void reply.code(404).send({ notFound: request.url });
      });
    },
  });
  const missing = await fetchText(`${gw.url}/api/other?x=1`);
  assert.equal(missing.status, 404);
  assert.deepEqual(JSON.parse(missing.body), { notFound: '/api/other?x=1' });
  const post = await fetchText(`${gw.url}/api/other`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' });
  assert.equal(post.status, 404);
  assert.equal((await fetchText(`${gw.url}/api/proxied/1`)).status, 200);
  assert.equal(a.seen.length, 1);
  await sleep(50); // a late second answer would log a warning here
  assert.deepEqual(gw.loud(), []);
});

test("Fastify's default not-found handler answers 404 for requests the chain hands on", async (t) => {
  const gw = await app(t, undefined, { use: (_req, _res, next) => next() });
  const r = await fetchText(`${gw.url}/api/nothing`);
  assert.equal(r.status, 404);
  assert.match(JSON.parse(r.body).message, /Route GET:\/api\/nothing not found/);
});

test('methods limits what the plugin answers', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { methods: ['GET', 'HEAD'] });
  assert.equal((await fetchText(`${gw.url}/api/x`)).status, 200);
  assert.equal((await fetchText(`${gw.url}/api/x`, { method: 'DELETE' })).status, 404);
  assert.deepEqual(
    a.seen.map((s) => s.method),
    ['GET'],
  );
});
