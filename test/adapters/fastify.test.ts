// Fastify end-to-end: a listening Fastify app with the switchyard plugin under
// /api, in front of real upstream servers; Fastify's log is captured and must
// stay free of warnings and errors while proxying.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TestContext } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { balance, createPool, type BalanceOptions, type Middleware, type Next, type UpstreamPool } from '../../src/index.ts';
import { switchyard, type SwitchyardPluginOptions } from '../../src/adapters/fastify.ts';
import { deadPort, fetchText } from '../helpers.ts';
import { H2C, send, upgradeStatus } from '../proxy/upgrade-support.ts';
import { backend, echo, JSON_TEXT, JSON_VALUE, logCapture, MiB, sleep, streamThrough, wsEcho, wsRefused } from './common.ts';

interface AppOptions extends Partial<Omit<SwitchyardPluginOptions, 'use'>> {
  use?: Middleware | Middleware[];
  balance?: BalanceOptions;
  /** Install the error handler that reports what it saw. @default true */
  errorHandler?: boolean;
  /** Called with the app before the plugin is registered (hooks, handlers, routes). */
  setup?: (app: FastifyInstance) => void;
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

test('GET under the prefix is balanced round robin; Fastify hooks see the proxied exchange', async (t) => {
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
  const names: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await fetchText(`${gw.url}/api/items?page=${i}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    names.push(r.headers['x-upstream'] as string);
  }
  assert.deepEqual(names, ['a', 'b', 'a', 'b']);
  // Fastify does not strip its prefix: the upstream gets the full target.
  assert.deepEqual([...a.seen, ...b.seen].map((s) => s.url).sort(), ['/api/items?page=0', '/api/items?page=1', '/api/items?page=2', '/api/items?page=3']);
  // The bare prefix is proxied too.
  assert.equal(echo((await fetchText(`${gw.url}/api`)).body).url, '/api');
  assert.deepEqual(seenByHooks.slice(0, 2), ['onRequest /api/items?page=0', 'onResponse /api/items?page=0 200']);
  const completed = gw.logs.filter((r) => r.msg === 'request completed');
  assert.equal(completed.length, 5);
  assert.deepEqual(gw.loud(), []);
});

test('headers set on the reply by Fastify hooks (as @fastify/cors does) reach proxied responses', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), {
    setup: (app) => {
      app.addHook('onRequest', async (_request, reply) => {
        void reply.header('access-control-allow-origin', '*');
        void reply.header('x-upstream', 'set by a hook');
      });
    },
  });
  const r = await fetchText(`${gw.url}/api/x`, { headers: { origin: 'http://example.test' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers['access-control-allow-origin'], '*');
  // A header the upstream sends wins over the hook's, as writeHead() does for Express and Koa.
  assert.equal(r.headers['x-upstream'], 'a');
  assert.equal(r.headers['content-type'], 'application/json');
  // And on Fastify's own answers (errors, not found) as before.
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

test('POST JSON with parseBody: true is parsed by Fastify and re-sent upstream with a correct length', async (t) => {
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
  assert.deepEqual(bodies, [JSON_VALUE]); // Fastify parsed it before the proxy ran
  const seen = a.seen[0]!;
  assert.deepEqual(JSON.parse(seen.body), JSON_VALUE);
  assert.equal(seen.headers['content-length'], String(Buffer.byteLength(seen.body)));
  assert.equal(seen.headers['content-type'], 'application/json');
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
  assert.deepEqual(a.seen.map((s) => s.body), values);
});

test('parseBody: true still streams content types Fastify does not parse', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { parseBody: true });
  const r = await streamThrough(`${gw.url}/api/stream`, 8 * MiB);
  assert.equal(r.status, 200);
  assert.equal(r.received, r.sent);
  assert.deepEqual(a.streamed, [{ url: '/api/stream', bytes: 8 * MiB, sha256: r.sent }]);
  assert.deepEqual(gw.loud(), []);
});

test('POST JSON without parsing (parseBody: false) streams the exact bytes upstream', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }));
  const r = await fetchText(`${gw.url}/api/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON_TEXT });
  assert.equal(r.status, 200);
  assert.equal(a.seen[0]!.body, JSON_TEXT);
  assert.equal(a.seen[0]!.headers['content-length'], String(Buffer.byteLength(JSON_TEXT)));
  assert.deepEqual(gw.loud(), []);
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
  assert.deepEqual(a.seen.map((s) => [s.headers['content-type'], s.body]), cases.map(([h, b]) => [h['content-type'], b]));
  assert.deepEqual(gw.loud(), []);
});

test('a 16 MiB body streams both ways intact', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }));
  const r = await streamThrough(`${gw.url}/api/stream`, 16 * MiB);
  assert.equal(r.status, 200);
  assert.equal(r.bytes, 16 * MiB);
  assert.equal(r.received, r.sent);
  assert.deepEqual(a.streamed, [{ url: '/api/stream', bytes: 16 * MiB, sha256: r.sent }]);
  assert.deepEqual(gw.loud(), []);
});

test('WebSocket upgrades under the prefix are proxied by the plugin, others left to other listeners', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), {
    setup: (app) => {
      // Another upgrade listener (as @fastify/websocket would be) that owns everything outside /api.
      app.server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
        if (!/^\/api(\/|\?|$)/.test(req.url ?? '')) socket.end('HTTP/1.1 418 I\'m a teapot\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
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

test('requests the chain does not answer go to Fastify\'s not-found handler, after async hooks too', async (t) => {
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

test('Fastify\'s default not-found handler answers 404 for requests the chain hands on', async (t) => {
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
  assert.deepEqual(a.seen.map((s) => s.method), ['GET']);
});

test('connection refused reaches setErrorHandler as 502 SWY_ERR_BAD_GATEWAY', async (t) => {
  const gw = await app(t, createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }] }));
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.status, 502);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'fastify', code: 'SWY_ERR_BAD_GATEWAY', statusCode: 502, name: 'BadGatewayError' });
});

test('no server available reaches setErrorHandler as 503 SWY_ERR_NO_SERVER', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url, down: true }] }));
  const r = await fetchText(`${gw.url}/api/x`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(r.status, 503);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'fastify', code: 'SWY_ERR_NO_SERVER', statusCode: 503, name: 'NoServerAvailableError' });
  assert.equal(a.seen.length, 0);
});

test('a header timeout reaches setErrorHandler as 504 SWY_ERR_GATEWAY_TIMEOUT', async (t) => {
  const a = await backend(t, 'a');
  const gw = await app(t, createPool({ servers: [{ url: a.url }] }), { balance: { headerTimeout: 200 } });
  const started = performance.now();
  const r = await fetchText(`${gw.url}/api/hang`);
  const elapsed = performance.now() - started;
  assert.equal(r.status, 504);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'fastify', code: 'SWY_ERR_GATEWAY_TIMEOUT', statusCode: 504, name: 'GatewayTimeoutError' });
  assert.ok(elapsed >= 190 && elapsed < 3000, `answered after ${elapsed} ms`);
});

test("Fastify's default error handler answers the error's status and code", async (t) => {
  const gw = await app(t, createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }] }), { errorHandler: false });
  const r = await fetchText(`${gw.url}/api/x`);
  assert.equal(r.status, 502);
  assert.equal(JSON.parse(r.body).code, 'SWY_ERR_BAD_GATEWAY');
});
