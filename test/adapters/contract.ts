// The adapter contract: what balance() does behind every framework switchyard supports, run against
// each of them (Express, the Fastify plugin, the Koa adapter, node:http with chain()) as the store
// contract runs against every store. Each adapter's test file supplies a small factory that builds
// a listening app with balance(pool) mounted, the framework's body parser when asked, its own error
// handling, and a middleware setting response headers in the framework's way; what only one
// framework does stays in that framework's file.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import type { BalanceOptions, Middleware, UpstreamPool } from '../../src/index.ts';
import { abortAfterFirstChunk, deadPort, fetchText, poolOf, until, type Reply } from '../helpers.ts';
import { backend, echo, JSON_TEXT, JSON_VALUE, MiB, streamThrough, wsEcho } from './common.ts';

/** What an adapter's factory is asked to build. */
export interface AppOptions {
  /** The pool balance() is built over (closed by the contract). */
  pool: UpstreamPool;
  balance?: BalanceOptions | undefined;
  /** Install the framework's body parser (JSON at least) in front of the proxy. @default false */
  bodyParser?: boolean | undefined;
  /**
   * Install the app's own error handling, answering `{ handledBy, code, statusCode, name }` as JSON
   * with the error's status. When false, the framework's default error handling answers.
   * @default true
   */
  errorHandler?: boolean | undefined;
  /** Response headers a middleware in front of the proxy sets, the framework's way (as cors does). */
  presetHeaders?: Record<string, string> | undefined;
}

/** A listening app built by an adapter's factory. */
export interface AdapterApp {
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** `ws://127.0.0.1:<port>`. */
  ws: string;
  /** Where the proxy is mounted: requests go to `${url}${prefix}/...` (`''` for the root). */
  prefix: string;
  /**
   * What the framework reported while proxying (Fastify log records at warn level and above, the
   * errors a Koa app emitted): empty whenever a request went well.
   */
  problems(): unknown[];
}

export interface Adapter {
  /** The framework's name, as the tests are titled. */
  name: string;
  /** The `handledBy` the app's own error handling answers with. */
  handledBy: string;
  /** Builds and starts the app; everything it opens is closed in `t.after`. */
  start(t: TestContext, options: AppOptions): Promise<AdapterApp>;
  /** Checks what the framework's default error handling made of a refused connection, beyond its 502. */
  defaultError?(reply: Reply, app: AdapterApp): void;
}

/** A connect-style middleware setting `headers` on the response, for the Express and node:http factories. */
export function setHeaders(headers: Record<string, string>): Middleware {
  return function setHeaders(_req, res, next) {
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    next();
  };
}

const T = { timeout: 30_000 };
const JSON_HEADERS = { 'content-type': 'application/json' };

/** Registers the contract's tests for `adapter`. */
export function adapterContract(adapter: Adapter): void {
  describe(`adapter contract: ${adapter.name}`, () => {
    const refused = async (): Promise<string> => `http://127.0.0.1:${await deadPort()}`;

    test('GET is balanced round robin over the upstreams, with the full request target and the response headers intact', T, async (t) => {
      const a = await backend(t, 'a');
      const b = await backend(t, 'b');
      const app = await adapter.start(t, { pool: poolOf(t, [a.url, b.url]) });
      const names: string[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await fetchText(`${app.url}${app.prefix}/items?page=${i}`);
        assert.equal(r.status, 200);
        assert.equal(r.headers['content-type'], 'application/json');
        names.push(r.headers['x-upstream'] as string);
        assert.equal(echo(r.body).method, 'GET');
        assert.equal(echo(r.body).url, `${app.prefix}/items?page=${i}`);
      }
      assert.deepEqual(names, ['a', 'b', 'a', 'b']);
      const targets = [0, 1, 2, 3].map((i) => `${app.prefix}/items?page=${i}`);
      assert.deepEqual([...a.seen, ...b.seen].map((s) => s.url).sort(), targets);
      assert.deepEqual(app.problems(), []);
    });

    test("headers a middleware set before the proxy (as cors does) reach the proxied response; the upstream's win", T, async (t) => {
      const a = await backend(t, 'a');
      const app = await adapter.start(t, {
        pool: poolOf(t, [a.url]),
        presetHeaders: { 'access-control-allow-origin': '*', 'x-upstream': 'set by middleware' },
      });
      const r = await fetchText(`${app.url}${app.prefix}/x`, { headers: { origin: 'http://example.test' } });
      assert.equal(r.status, 200);
      assert.equal(r.headers['access-control-allow-origin'], '*');
      assert.equal(r.headers['x-upstream'], 'a');
      assert.equal(r.headers['content-type'], 'application/json');
      assert.deepEqual(app.problems(), []);
    });

    for (const bodyParser of [false, true]) {
      const mode = bodyParser ? 'with a body parser' : 'without a body parser';

      test(
        `POST JSON ${mode} reaches the upstream with a correct length; a chunked PUT ${bodyParser ? 'is re-sent with a length' : 'stays chunked'}; a GET has no body`,
        T,
        async (t) => {
          const a = await backend(t, 'a');
          const app = await adapter.start(t, { pool: poolOf(t, [a.url]), bodyParser });
          const r = await fetchText(`${app.url}${app.prefix}/users`, { method: 'POST', headers: JSON_HEADERS, body: JSON_TEXT });
          assert.equal(r.status, 200);
          const seen = a.seen[0]!;
          assert.equal(seen.method, 'POST');
          assert.deepEqual(JSON.parse(seen.body), JSON_VALUE);
          if (!bodyParser) assert.equal(seen.body, JSON_TEXT, 'the exact bytes');
          assert.equal(seen.headers['content-length'], String(Buffer.byteLength(seen.body)));
          assert.equal(seen.headers['content-type'], 'application/json');
          assert.equal(seen.headers['transfer-encoding'], undefined);

          const chunked = await fetchText(`${app.url}${app.prefix}/users`, {
            method: 'PUT',
            headers: { ...JSON_HEADERS, 'transfer-encoding': 'chunked' },
            body: JSON_TEXT,
          });
          assert.equal(chunked.status, 200);
          const put = a.seen[1]!;
          assert.deepEqual(JSON.parse(put.body), JSON_VALUE);
          if (bodyParser) {
            assert.equal(put.headers['content-length'], String(Buffer.byteLength(put.body)));
            assert.equal(put.headers['transfer-encoding'], undefined);
          } else {
            assert.equal(put.body, JSON_TEXT);
            assert.equal(put.headers['transfer-encoding'], 'chunked');
          }

          // A GET after the parser (Koa's sets ctx.request.body = {}) still has no body upstream.
          assert.equal((await fetchText(`${app.url}${app.prefix}/get`)).status, 200);
          assert.equal(a.seen[2]!.body, '');
          assert.equal(a.seen[2]!.headers['content-length'], undefined);
          assert.deepEqual(app.problems(), []);
        },
      );

      test(`a 16 MiB body streams both ways intact, ${mode}`, T, async (t) => {
        const a = await backend(t, 'a');
        const app = await adapter.start(t, { pool: poolOf(t, [a.url]), bodyParser });
        const r = await streamThrough(`${app.url}${app.prefix}/stream`, 16 * MiB);
        assert.equal(r.status, 200);
        assert.equal(r.headers['x-upstream'], 'a');
        assert.equal(r.bytes, 16 * MiB);
        assert.equal(r.received, r.sent);
        assert.deepEqual(a.streamed, [{ url: `${app.prefix}/stream`, bytes: 16 * MiB, sha256: r.sent }]);
        assert.deepEqual(app.problems(), []);
      });

      test(`a refused connection moves a POST on to the next server, body and all, ${mode}`, T, async (t) => {
        const a = await backend(t, 'a');
        // A fresh round robin pool starts with its first server: the dead one.
        const pool = poolOf(t, [await refused(), a.url]);
        const app = await adapter.start(t, { pool, bodyParser });
        const r = await fetchText(`${app.url}${app.prefix}/orders`, { method: 'POST', headers: JSON_HEADERS, body: JSON_TEXT });
        assert.equal(r.status, 200);
        assert.equal(r.headers['x-upstream'], 'a');
        assert.equal(a.seen.length, 1);
        assert.deepEqual(JSON.parse(a.seen[0]!.body), JSON_VALUE);
        if (!bodyParser) assert.equal(a.seen[0]!.body, JSON_TEXT);
        assert.deepEqual(
          pool.stats().servers.map((s) => [s.requests, s.fails]),
          [
            [1, 1],
            [1, 0],
          ],
          'one failed attempt on the dead server, then one on a',
        );
        assert.deepEqual(app.problems(), []);
      });

      test(`no server available reaches the framework's error handling as 503 SWY_ERR_NO_SERVER, ${mode}`, T, async (t) => {
        const a = await backend(t, 'a');
        const app = await adapter.start(t, { pool: poolOf(t, [a.url], { each: { down: true } }), bodyParser });
        for (const init of [{}, { method: 'POST', headers: JSON_HEADERS, body: '{"a":1}' }]) {
          const r = await fetchText(`${app.url}${app.prefix}/x`, init);
          assert.equal(r.status, 503);
          assert.deepEqual(JSON.parse(r.body), { handledBy: adapter.handledBy, code: 'SWY_ERR_NO_SERVER', statusCode: 503, name: 'NoServerAvailableError' });
        }
        assert.equal(a.seen.length, 0);
      });
    }

    test('WebSocket upgrades are proxied and balanced over the upstreams', T, async (t) => {
      const a = await backend(t, 'a');
      const b = await backend(t, 'b');
      const app = await adapter.start(t, { pool: poolOf(t, [a.url, b.url]) });
      assert.deepEqual(await wsEcho(`${app.ws}${app.prefix}/ws?room=1`, ['hello', 'again']), ['a:hello', 'a:again']);
      assert.deepEqual(await wsEcho(`${app.ws}${app.prefix}/ws?room=2`, ['hi']), ['b:hi']);
      assert.deepEqual(a.sockets, [`${app.prefix}/ws?room=1`]);
      assert.deepEqual(b.sockets, [`${app.prefix}/ws?room=2`]);
      assert.deepEqual(app.problems(), []);
    });

    test("connection refused reaches the framework's error handling as 502 SWY_ERR_BAD_GATEWAY", T, async (t) => {
      const app = await adapter.start(t, { pool: poolOf(t, [await refused()]) });
      const r = await fetchText(`${app.url}${app.prefix}/x`);
      assert.equal(r.status, 502);
      assert.deepEqual(JSON.parse(r.body), { handledBy: adapter.handledBy, code: 'SWY_ERR_BAD_GATEWAY', statusCode: 502, name: 'BadGatewayError' });
    });

    test("a header timeout reaches the framework's error handling as 504 SWY_ERR_GATEWAY_TIMEOUT", T, async (t) => {
      const a = await backend(t, 'a');
      const app = await adapter.start(t, { pool: poolOf(t, [a.url]), balance: { headerTimeout: 200 } });
      const started = performance.now();
      const r = await fetchText(`${app.url}${app.prefix}/hang`);
      const elapsed = performance.now() - started;
      assert.equal(r.status, 504);
      assert.deepEqual(JSON.parse(r.body), { handledBy: adapter.handledBy, code: 'SWY_ERR_GATEWAY_TIMEOUT', statusCode: 504, name: 'GatewayTimeoutError' });
      assert.ok(elapsed >= 190 && elapsed < 3000, `answered after ${elapsed} ms`);
    });

    test("the framework's default error handling answers the error's status", T, async (t) => {
      const app = await adapter.start(t, { pool: poolOf(t, [await refused()]), errorHandler: false });
      const r = await fetchText(`${app.url}${app.prefix}/x`);
      assert.equal(r.status, 502);
      adapter.defaultError?.(r, app);
    });

    test('a client that goes away mid-response aborts the upstream request and frees the server', T, async (t) => {
      const a = await backend(t, 'a');
      const pool = poolOf(t, [a.url]);
      const app = await adapter.start(t, { pool });
      await abortAfterFirstChunk(`${app.url}${app.prefix}/drip`);
      await until(() => a.dripsClosed() === 1, 5000, 'the upstream response to be closed');
      await until(() => pool.stats().servers.every((s) => s.active === 0), 5000, 'no request in flight on the server');
      // The server is free and the app still answers.
      const r = await fetchText(`${app.url}${app.prefix}/after`);
      assert.equal(r.status, 200);
      assert.equal(echo(r.body).url, `${app.prefix}/after`);
      assert.deepEqual(app.problems(), []);
    });
  });
}
