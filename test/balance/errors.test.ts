// Typed errors handed to next(err), the default minimal response, option validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import express from 'express';
import {
  BadGatewayError,
  BadRequestError,
  balance,
  chain,
  createPool,
  exchange,
  GatewayTimeoutError,
  InvalidOptionError,
  NoServerAvailableError,
  respondWithError,
  SwitchyardError,
  type BalanceOptions,
} from '../../src/index.ts';
import { deadPort, fetchText, listen, upstream } from '../helpers.ts';
import { complete, gatewayFor, tryFetch, TEST_TIMEOUT } from './support.ts';

test('express: each failure reaches the error handler once, typed, with code, statusCode and cause', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await deadPort();
  const hang = await upstream(t, 'hang', () => undefined);
  const dead = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }] });
  const none = createPool({ servers: [{ url: `http://127.0.0.1:${port}`, down: true }] });
  const slow = createPool({ servers: [{ url: hang.url }] });
  t.after(() => {
    dead.close();
    none.close();
    slow.close();
  });
  const seen: unknown[] = [];
  const app = express();
  app.use('/dead', balance(dead));
  app.use('/none', balance(none));
  app.use('/slow', balance(slow, { headerTimeout: 50 }));
  app.use((err: SwitchyardError, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    seen.push(err);
    res.status(err.statusCode).json({ name: err.name, code: err.code, status: err.status, expose: err.expose });
  });
  const gw = await listen(t, createServer(app));

  const cases: Array<[string, new (...args: never[]) => SwitchyardError, string, number]> = [
    ['/dead/x', BadGatewayError, 'SWY_ERR_BAD_GATEWAY', 502],
    ['/none/x', NoServerAvailableError, 'SWY_ERR_NO_SERVER', 503],
    ['/slow/x', GatewayTimeoutError, 'SWY_ERR_GATEWAY_TIMEOUT', 504],
    ['/dead/%zz', BadRequestError, 'SWY_ERR_BAD_REQUEST', 400],
  ];
  for (const [path, Type, code, status] of cases) {
    const before = seen.length;
    const r = await fetchText(gw.url + path);
    assert.equal(r.status, status, path);
    assert.deepEqual(JSON.parse(r.body), { name: Type.name, code, status, expose: true });
    assert.equal(seen.length, before + 1, 'next(err) is called exactly once');
    const err = seen[before]!;
    assert.ok(err instanceof Type);
    assert.ok(err instanceof SwitchyardError);
    assert.ok(err instanceof Error);
  }
  assert.equal(((seen[0] as Error).cause as { code: string }).code, 'ECONNREFUSED');
  assert.equal(((seen[2] as Error).cause as { code: string }).code, 'ETIMEDOUT');
});

test('chain() with no error handler: 502, 503 and 504 get the minimal default response', { timeout: TEST_TIMEOUT }, async (t) => {
  const port = await deadPort();
  const hang = await upstream(t, 'hang', () => undefined);
  const pools = [
    createPool({ servers: [{ url: `http://127.0.0.1:${port}` }] }),
    createPool({ servers: [{ url: `http://127.0.0.1:${port}`, down: true }] }),
    createPool({ servers: [{ url: hang.url }] }),
  ];
  t.after(() => pools.forEach((p) => p.close()));
  const expected: Array<[number, string]> = [
    [502, '502 Bad Gateway\n'],
    [503, '503 Service Unavailable\n'],
    [504, '504 Gateway Timeout\n'],
  ];
  for (const [i, pool] of pools.entries()) {
    const gw = await listen(t, createServer(chain(balance(pool, { headerTimeout: 50 }))));
    const r = complete(await tryFetch(gw.url));
    assert.equal(r.status, expected[i]![0]);
    assert.equal(r.body.toString(), expected[i]![1]);
    assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(r.headers['content-length'], String(expected[i]![1].length));
  }
});

test('a middleware after balance() is never called: balance() answers or fails, it does not pass on', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await upstream(t, 'ok');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  let after = 0;
  const gw = await listen(
    t,
    createServer(
      chain(balance(pool), () => {
        after++;
      }),
    ),
  );
  assert.equal((await fetchText(gw.url)).body, 'ok');
  assert.equal(after, 0);
});

test('options are validated when balance() is called, naming the option', { timeout: TEST_TIMEOUT }, () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:9' }] });
  try {
    const bad: Array<[unknown, string]> = [
      [{ tries: -1 }, 'tries'],
      [{ tries: 1.5 }, 'tries'],
      [{ nextUpstream: ['error', 'http_418'] }, 'nextUpstream[1]'],
      [{ nextUpstream: ['off', 'error'] }, 'nextUpstream'],
      [{ nextUpstream: 'error' }, 'nextUpstream'],
      [{ noServerStatus: 500 }, 'noServerStatus'],
      [{ retryBodyLimit: -1 }, 'retryBodyLimit'],
      [{ headerTimeout: 'soon' }, 'headerTimeout'],
      [{ connectTimeout: -5 }, 'connectTimeout'],
      [{ nextUpstreamTimeout: '1x' }, 'nextUpstreamTimeout'],
      [{ host: '' }, 'host'],
      [{ host: 'a\r\nb' }, 'host'],
      [{ trustProxy: ['not-an-ip'] }, 'trustProxy[0]'],
      [{ xForwarded: 'yes' }, 'xForwarded'],
      [{ retries: 3 }, 'retries'],
    ];
    for (const [options, option] of bad) {
      assert.throws(
        () => balance(pool, options as BalanceOptions),
        (err: unknown) => err instanceof InvalidOptionError && err instanceof TypeError && err.option === option && err.code === 'SWY_ERR_INVALID_OPTION',
        JSON.stringify(options),
      );
    }
    assert.throws(
      () => balance({} as never),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'pool',
    );
    const frozen = Object.freeze({ nextUpstream: Object.freeze(['error', 'http_502'] as const), tries: 0 });
    assert.doesNotThrow(() => balance(pool, frozen as BalanceOptions), "the caller's options are only read");
  } finally {
    pool.close();
  }
});

test('an exception on the request path (a throwing hash key function) reaches next(err), never the process', { timeout: TEST_TIMEOUT }, async (t) => {
  const a = await upstream(t, 'a');
  const b = await upstream(t, 'b');
  let throwing = true;
  const pool = createPool({
    method: {
      name: 'hash',
      key: () => {
        if (throwing) throw new Error('key function failed');
        return 'k';
      },
    },
    servers: [{ url: a.url }, { url: b.url }],
  });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url);
  assert.equal(r.status, 500);
  await gw.settled(1);
  assert.equal((gw.log[0]!.error as Error).message, 'key function failed');
  throwing = false;
  assert.equal((await fetchText(gw.url)).status, 200);
  for (const s of pool.stats().servers) assert.equal(s.active, 0);
});

test('an upstream status outside 100-999 is an invalid response: 502, and a failure', { timeout: TEST_TIMEOUT }, async (t) => {
  const { createServer: netServer } = await import('node:net');
  const bad = netServer((s) => s.once('data', () => s.end('HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n')));
  await new Promise<void>((resolve) => bad.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => bad.close(() => resolve())));
  const port = (bad.address() as import('node:net').AddressInfo).port;
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = await fetchText(gw.url);
  assert.equal(r.status, 502);
  assert.equal(pool.stats().servers[0]!.active, 0);
});

test('a response hook that throws (a sticky learn create function, say) reaches next(err); the attempt ends and frees its server', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await upstream(t, 'a');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  let throwing = true;
  const errors: unknown[] = [];
  const hook = (req: import('node:http').IncomingMessage, _res: import('node:http').ServerResponse, next: (err?: unknown) => void): void => {
    (exchange(req).responseHooks ??= []).push(() => {
      if (throwing) throw new Error('hook failed');
    });
    next();
  };
  const gw = await listen(
    t,
    createServer(
      chain(hook, balance(pool), {
        final: (err, req, res) => {
          errors.push(err);
          respondWithError(err, req, res);
        },
      }),
    ),
  );
  const r = await fetchText(gw.url);
  assert.equal(r.status, 500);
  assert.equal((errors[0] as Error).message, 'hook failed');
  assert.equal(pool.stats().servers[0]!.active, 0);
  throwing = false;
  assert.equal((await fetchText(gw.url)).body, 'a');
});
