import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import {
  BadGatewayError,
  balance,
  chain,
  compileTemplate,
  ConnectionLimitedError,
  createPool,
  exchange,
  GatewayTimeoutError,
  HookError,
  InvalidOptionError,
  NoServerAvailableError,
  parseDuration,
  RateLimitedError,
  respondWithError,
  SwitchyardError,
  UnknownPoolError,
} from '../../src/index.ts';
import { normalizePath, originForm } from '../../src/core/exchange.ts';
import { RawClient } from '../balance/support.ts';
import { fetchText, gateway, upstream } from '../helpers.ts';

test('durations: numbers are ms, strings take nginx units and combine, bare numbers are seconds', () => {
  const table: Array<[number | string, number]> = [
    [250, 250],
    ['500ms', 500],
    ['10s', 10_000],
    ['1m30s', 90_000],
    ['1h', 3_600_000],
    ['2d', 172_800_000],
    ['10', 10_000],
    ['0', 0],
    ['1.5s', 1500],
  ];
  for (const [input, ms] of table) assert.equal(parseDuration(input, 'x'), ms, String(input));
  for (const bad of [-1, Number.NaN, Infinity, '', '10 parsecs', 's', '1s2', '-5s']) {
    assert.throws(
      () => parseDuration(bad, 'failTimeout'),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'failTimeout' && e.code === 'SWY_ERR_INVALID_OPTION',
      String(bad),
    );
  }
});

test('URI normalization follows nginx: decode, merge slashes, resolve dot segments, refuse escapes above the root', () => {
  const table: Array<[string, string | undefined]> = [
    ['/a/b', '/a/b'],
    ['/a//b', '/a/b'],
    ['/a/./b', '/a/b'],
    ['/a/b/../c', '/a/c'],
    ['/a/b/..', '/a/'],
    ['/a/%41', '/a/A'],
    ['/%2e%2e/x', undefined],
    ['/../x', undefined],
    ['/%zz', undefined],
    ['/a%00b', undefined],
    ['/a/.', '/a/'],
    // `..;` and `.;` are `..` and `.` to Tomcat and Jetty: refused.
    ['/a/..;/b', undefined],
    ['/a/..;x/b', undefined],
    ['/..;/', undefined],
    ['/a/%2e%2e%3b/b', undefined],
    ['/a/.;x/b', undefined],
    ['/a/.;', undefined],
    ['/a;b/c', '/a;b/c'],
    ['/a/...;/b', '/a/...;/b'],
  ];
  for (const [input, out] of table) assert.equal(normalizePath(input), out, input);
});

test('absolute-form targets keep only path and query', () => {
  assert.equal(originForm('http://evil.example/x?y=1'), '/x?y=1');
  assert.equal(originForm('http://evil.example'), '/');
  assert.equal(originForm('http://evil.example?q'), '/?q');
  assert.equal(originForm('/p'), '/p');
  assert.equal(originForm('*'), '*');
});

function fakeRequest(url: string, headers: Record<string, string>): IncomingMessage {
  return {
    url,
    method: 'GET',
    headers,
    httpVersion: '1.1',
    socket: { remoteAddress: '10.1.2.3', remotePort: 5555, localAddress: '127.0.0.1', localPort: 80 },
  } as unknown as IncomingMessage;
}

test('nginx variables: the shared template facility', () => {
  const req = fakeRequest('/p/a%20b?x=1&y=two&x=3&flag&flag=on&empty=', {
    host: 'Example.COM:8080',
    cookie: 'sid=abc; theme=dark; sid=zzz',
    'x-user-id': '42',
  });
  const ex = exchange(req);
  const table: Array<[string, string]> = [
    ['$uri', '/p/a b'],
    ['$request_uri', '/p/a%20b?x=1&y=two&x=3&flag&flag=on&empty='],
    ['$args', 'x=1&y=two&x=3&flag&flag=on&empty='],
    ['$is_args', '?'],
    ['$arg_x', '1'],
    ['$arg_y', 'two'],
    ['$arg_none', ''],
    // nginx's ngx_http_arg() wants `=` after the name: a bare `flag` is passed over for the next one
    ['$arg_flag', 'on'],
    ['$arg_empty', ''],
    ['$host', 'example.com'],
    ['$scheme', 'http'],
    ['$remote_addr', '10.1.2.3'],
    ['$http_x_user_id', '42'],
    ['$cookie_sid', 'abc'],
    ['$cookie_theme', 'dark'],
    ['$request_method', 'GET'],
    ['${host}x', 'example.comx'],
    ['$scheme://$host$request_uri', 'http://example.com/p/a%20b?x=1&y=two&x=3&flag&flag=on&empty='],
    ['plain text', 'plain text'],
    ['$unset_var', ''],
  ];
  for (const [template, out] of table) assert.equal(compileTemplate(template, 'key')(ex), out, template);
  ex.vars.set('route', 'b');
  assert.equal(compileTemplate('r=$route', 'key')(ex), 'r=b');
  ex.captures = ['/p/x', 'x'];
  assert.equal(compileTemplate('/new/$1', 'key')(ex), '/new/x');
  assert.equal(exchange(req), ex, 'one record per request');
});

test('errors carry a stable code, an HTTP status and the cause', () => {
  const cause = new Error('ECONNREFUSED');
  const table: Array<[SwitchyardError, string, number]> = [
    [new BadGatewayError('x', { cause }), 'SWY_ERR_BAD_GATEWAY', 502],
    [new GatewayTimeoutError('x', { cause }), 'SWY_ERR_GATEWAY_TIMEOUT', 504],
    [new NoServerAvailableError('app', 503, { cause }), 'SWY_ERR_NO_SERVER', 503],
    [new RateLimitedError('per_ip', 429, { cause }), 'SWY_ERR_RATE_LIMITED', 429],
    [new ConnectionLimitedError('per_ip', 503, { cause }), 'SWY_ERR_CONNECTION_LIMITED', 503],
    [new HookError('x', { cause }), 'SWY_ERR_HOOK', 500],
    [new UnknownPoolError('x', { cause }), 'SWY_ERR_UNKNOWN_POOL', 502],
  ];
  for (const [err, code, status] of table) {
    assert.ok(err instanceof SwitchyardError);
    assert.equal(err.code, code);
    assert.equal(err.statusCode, status);
    assert.equal(err.status, status);
    assert.equal(err.cause, cause);
  }
  assert.ok(new InvalidOptionError('a.b', 'x') instanceof TypeError);
});

test('chain() runs middleware in order, hands errors to the default response, 404s when nothing answers', async (t) => {
  const order: string[] = [];
  const gw = await gateway(
    t,
    chain(
      (req, _res, next) => {
        order.push('first');
        if (req.url === '/boom') next(new GatewayTimeoutError());
        else if (req.url === '/throw') throw new Error('thrown');
        else next();
      },
      (req, res, next) => {
        order.push('second');
        if (req.url === '/ok') res.end('ok');
        else next();
      },
    ),
  );
  assert.equal((await fetchText(`${gw.url}/ok`)).body, 'ok');
  assert.deepEqual(order, ['first', 'second']);
  const timeout = await fetchText(`${gw.url}/boom`);
  assert.equal(timeout.status, 504);
  assert.equal(timeout.body, '504 Gateway Timeout\n');
  assert.equal((await fetchText(`${gw.url}/throw`)).status, 500);
  assert.equal((await fetchText(`${gw.url}/none`)).status, 404);
});

test('chain() takes a final handler and nests as a middleware', async (t) => {
  const seen: unknown[] = [];
  const inner = chain((_req, _res, next) => next());
  const server = createServer(
    chain(inner, (_req, _res, next) => next(new BadGatewayError('nope')), {
      final: (err, _req, res) => {
        seen.push(err);
        res.statusCode = 599;
        res.end('custom');
      },
    }),
  );
  const { listen } = await import('../helpers.ts');
  const gw = await listen(t, server);
  const r = await fetchText(gw.url);
  assert.equal(r.status, 599);
  assert.equal(r.body, 'custom');
  assert.ok(seen[0] instanceof BadGatewayError);
  assert.throws(() => chain(42 as never), InvalidOptionError);
});

test('the exchange keeps the original target when a framework strips a mount path (Express originalUrl)', () => {
  const req = fakeRequest('/x?y=1', {});
  (req as IncomingMessage & { originalUrl: string }).originalUrl = '/api/x?y=1';
  const ex = exchange(req);
  assert.equal(ex.requestUri, '/api/x?y=1');
  assert.equal(ex.uri, '/api/x');
});

test('balance() sends the target upstream without its fragment', { timeout: 30_000 }, async (t) => {
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gateway(t, chain(balance(pool), { final: (err, req, res) => respondWithError(err, req, res) }));
  for (const [target, seen] of [
    ['/p?q=1#frag', '/p?q=1'],
    ['/p#x?y=1', '/p'],
    ['/p#', '/p'],
    ['/a%20b#c', '/a%20b'],
    ['http://other.example/p#x', '/p'],
  ] as const) {
    const c = await RawClient.open(t, gw.port);
    c.write(`GET ${target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n`);
    const res = await c.response();
    assert.equal(res.status, 200, target);
    assert.equal(up.seen.at(-1)!.url, seen, target);
  }
  assert.equal(up.seen.length, 5);
});
