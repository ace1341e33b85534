// Header handling of the forwarding engine: hop-by-hop, X-Forwarded-*, Forwarded,
// trusted proxies, Host, path prefixes, request targets, Set-Cookie.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { BadRequestError, balance, chain, createPool, exchange, type BalanceOptions, type Middleware } from '../../src/index.ts';
import { fetchText, gateway, upstream, type Upstream } from '../helpers.ts';
import { complete, gatewayFor, rawUpstream, RawClient, tryFetch, TEST_TIMEOUT } from '../balance/support.ts';

/** An upstream that answers with the request line and headers it got, as JSON. */
async function mirror(t: Parameters<typeof upstream>[0]): Promise<Upstream> {
  return upstream(t, 'mirror', (req: IncomingMessage, res: ServerResponse) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ url: req.url, headers: req.headers, raw: req.rawHeaders }));
  });
}

test('hop-by-hop request headers and those named in Connection are not forwarded', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write(
    'GET /h HTTP/1.1\r\n' +
      'Host: public.example\r\n' +
      'Connection: keep-alive, X-Drop-Me\r\n' +
      'X-Drop-Me: secret\r\n' +
      'Keep-Alive: timeout=5\r\n' +
      'Proxy-Connection: keep-alive\r\n' +
      'Proxy-Authorization: Basic Zm9vOmJhcg==\r\n' +
      'TE: trailers\r\n' +
      'Trailer: X-T\r\n' +
      'X-Keep: yes\r\n' +
      'X-Multi: 1\r\n' +
      'X-Multi: 2\r\n' +
      '\r\n',
  );
  const r = await c.response();
  assert.equal(r.status, 200);
  const seen = up.seen[0]!.headers;
  for (const name of ['x-drop-me', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer']) {
    assert.equal(seen[name], undefined, `${name} must not reach the upstream`);
  }
  assert.equal(seen['x-keep'], 'yes');
  assert.equal(seen['x-multi'], '1, 2');
  // The upstream connection is the gateway's own: keep-alive, whatever the client said.
  assert.equal(seen.connection, 'keep-alive');
});

test('hop-by-hop response headers and those named in Connection are not passed to the client', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = await rawUpstream(t, (s) => {
    s.once('data', () => {
      s.end(
        'HTTP/1.1 200 OK\r\n' +
          'Connection: close, X-Internal\r\n' +
          'X-Internal: secret\r\n' +
          'Keep-Alive: timeout=99\r\n' +
          'Proxy-Authenticate: Basic realm="x"\r\n' +
          'Proxy-Connection: close\r\n' +
          'Trailer: X-T\r\n' +
          'X-Public: ok\r\n' +
          'Transfer-Encoding: chunked\r\n' +
          '\r\n' +
          '5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n',
      );
    });
  });
  const pool = createPool({ servers: [{ url: raw.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = complete(await tryFetch(gw.url, { headers: { connection: 'close' } }));
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), 'hello world');
  assert.equal(r.headers['x-public'], 'ok');
  for (const name of ['x-internal', 'keep-alive', 'proxy-authenticate', 'proxy-connection', 'trailer']) {
    assert.equal(r.headers[name], undefined, `${name} must not reach the client`);
  }
  assert.equal(r.headers.connection, 'close'); // the gateway's own, for this client connection
});

test("X-Forwarded-For/-Proto/-Host and Forwarded are set; a client's own are replaced when it is not trusted", { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  for (const trustProxy of [undefined, false, ['10.0.0.0/8'], (a: string) => a === '192.0.2.1']) {
    const gw = await gatewayFor(t, pool, trustProxy === undefined ? {} : { trustProxy });
    const r = complete(
      await tryFetch(gw.url, {
        headers: {
          host: 'public.example:8080',
          'x-forwarded-for': '203.0.113.9',
          'x-forwarded-proto': 'https',
          'x-forwarded-host': 'evil.example',
          'x-forwarded-port': '1',
          forwarded: 'for=203.0.113.9;proto=https',
        },
      }),
    );
    const h = JSON.parse(r.body.toString()).headers as Record<string, string>;
    assert.equal(h['x-forwarded-for'], '127.0.0.1', `trustProxy ${String(trustProxy)}`);
    assert.equal(h['x-forwarded-proto'], 'http');
    assert.equal(h['x-forwarded-host'], 'public.example:8080');
    assert.equal(h['x-forwarded-port'], undefined);
    assert.equal(h.forwarded, 'for=127.0.0.1;host="public.example:8080";proto=http');
    await gw.settled(1);
  }
});

test("a trusted proxy's X-Forwarded-For is appended to, its proto and host believed, and the client address resolved", { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { trustProxy: 'loopback' });
  const r = complete(
    await tryFetch(gw.url, {
      headers: {
        host: 'public.example',
        'x-forwarded-for': '203.0.113.9, 127.0.0.2',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'www.example.com',
        forwarded: 'for=203.0.113.9;proto=https',
      },
    }),
  );
  const h = JSON.parse(r.body.toString()).headers as Record<string, string>;
  assert.equal(h['x-forwarded-for'], '203.0.113.9, 127.0.0.2, 127.0.0.1');
  assert.equal(h['x-forwarded-proto'], 'https');
  assert.equal(h['x-forwarded-host'], 'www.example.com');
  assert.equal(h.forwarded, 'for=203.0.113.9;proto=https, for=127.0.0.1;host=public.example;proto=https');
  await gw.settled(1);
  assert.equal(gw.log[0]!.client, '203.0.113.9', 'realip: the first untrusted address from the right');
});

test("xForwarded: false and forwarded: false send none of those headers, not even the client's", { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { xForwarded: false, forwarded: false });
  const r = complete(
    await tryFetch(gw.url, { headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'e', forwarded: 'for=x' } }),
  );
  const h = JSON.parse(r.body.toString()).headers as Record<string, string>;
  for (const name of ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded']) assert.equal(h[name], undefined, name);
});

test('host: "upstream" (default) sends the server\'s host:port, "client" the request\'s, a fixed value as given', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const cases: Array<[undefined | string, string]> = [
    [undefined, `127.0.0.1:${up.port}`],
    ['upstream', `127.0.0.1:${up.port}`],
    ['client', 'public.example'],
    ['api.internal:9000', 'api.internal:9000'],
  ];
  for (const [host, expected] of cases) {
    const gw = await gatewayFor(t, pool, host === undefined ? {} : { host });
    const r = complete(await tryFetch(gw.url, { headers: { host: 'public.example' } }));
    assert.equal(JSON.parse(r.body.toString()).headers.host, expected, `host: ${host}`);
  }
});

test('a server url path prefix is joined to the request path, query kept', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  for (const suffix of ['/base', '/base/']) {
    const pool = createPool({ servers: [{ url: `${up.url}${suffix}` }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool);
    const a = complete(await tryFetch(`${gw.url}/x/y?q=1&r=%20`));
    assert.equal(JSON.parse(a.body.toString()).url, '/base/x/y?q=1&r=%20');
    const b = complete(await tryFetch(`${gw.url}/`));
    assert.equal(JSON.parse(b.body.toString()).url, '/base/');
    const c = complete(await tryFetch(`${gw.url}/?only=query`));
    assert.equal(JSON.parse(c.body.toString()).url, '/base/?only=query');
  }
});

test("credentials in a server url become Basic authorization and replace the client's", { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: `http://user:p%40ss@127.0.0.1:${up.port}` }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = complete(await tryFetch(gw.url, { headers: { authorization: 'Bearer client' } }));
  const h = JSON.parse(r.body.toString()).headers as Record<string, string>;
  assert.equal(h.authorization, `Basic ${Buffer.from('user:p@ss').toString('base64')}`);
  assert.equal(h.host, `127.0.0.1:${up.port}`);
});

test('an absolute-form request target never changes the upstream authority', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write('GET http://evil.example/x?y=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n');
  const r = await c.response();
  assert.equal(r.status, 200);
  const got = JSON.parse(r.body);
  assert.equal(got.url, '/x?y=1');
  assert.equal(got.headers.host, `127.0.0.1:${up.port}`);
  c.write('GET http://evil.example HTTP/1.1\r\nHost: evil.example\r\n\r\n');
  const r2 = await c.response();
  assert.equal(JSON.parse(r2.body).url, '/');
  assert.equal(up.seen.length, 2);
});

test('several Set-Cookie headers from the upstream are all passed on, in order', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await upstream(t, 'cookies', (_req, res) => {
    res.setHeader('set-cookie', ['a=1', 'b=2; Path=/; HttpOnly', 'c=3; Max-Age=60']);
    res.end('ok');
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = complete(await tryFetch(gw.url));
  assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2; Path=/; HttpOnly', 'c=3; Max-Age=60']);
});

for (const path of ['/%zz', '/../x', '/a/../../x', '/%2e%2e/x', '/a%00b']) {
  test(`a malformed path ${path} is answered 400 BadRequestError without reaching an upstream`, { timeout: TEST_TIMEOUT }, async (t) => {
    const up = await mirror(t);
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const gw = await gatewayFor(t, pool);
    const r = complete(await tryFetch(gw.url, { path }));
    assert.equal(r.status, 400);
    await gw.settled(1);
    const err = gw.log[0]!.error as BadRequestError;
    assert.ok(err instanceof BadRequestError);
    assert.equal(err.code, 'SWY_ERR_BAD_REQUEST');
    assert.equal(err.statusCode, 400);
    assert.equal(up.seen.length, 0);
  });
}

test('a path with dot segments that stays under the root is forwarded as the client sent it', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const r = complete(await tryFetch(gw.url, { path: '/a/../b%20c' }));
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body.toString()).url, '/a/../b%20c');
});

test('IPv6 loopback: Host, $upstream_addr, X-Forwarded-For and Forwarded use bracketed addresses', { timeout: TEST_TIMEOUT }, async (t) => {
  const seen: IncomingMessage['headers'][] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers);
    res.end('v6');
  });
  await new Promise<void>((resolve) => server.listen(0, '::1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  const pool = createPool({ servers: [{ url: `http://[::1]:${port}` }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const gw6 = createServer((req, res) => gw.server.emit('request', req, res));
  await new Promise<void>((resolve) => gw6.listen(0, '::1', resolve));
  t.after(() => new Promise<void>((resolve) => gw6.close(() => resolve())));
  const r = complete(await tryFetch(`http://[::1]:${(gw6.address() as AddressInfo).port}/`, { headers: { connection: 'close' } }));
  assert.equal(r.body.toString(), 'v6');
  assert.equal(seen[0]!.host, `[::1]:${port}`);
  assert.equal(seen[0]!['x-forwarded-for'], '::1');
  assert.match(String(seen[0]!.forwarded), /^for="\[::1\]";host="\[::1\]:\d+";proto=http$/);
  await gw.settled(1);
  assert.deepEqual(gw.log[0]!.addr, [`[::1]:${port}`]);
});

/** A mirror upstream behind `chain(first, balance(pool, options))`; returns the gateway url. */
async function mirrorBehind(t: Parameters<typeof upstream>[0], first: Middleware, options: BalanceOptions = {}): Promise<string> {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t?.after(() => pool.close());
  return (await gateway(t, chain(first, balance(pool, options)))).url;
}

test('headers a middleware sets or removes on req.headers before balance() are what goes upstream', { timeout: TEST_TIMEOUT }, async (t) => {
  const url = await mirrorBehind(t, (req, _res, next) => {
    req.headers['x-user'] = 'ada';
    delete req.headers['x-secret'];
    next();
  });
  const r = await fetchText(url, { headers: { 'x-secret': 'token', 'x-keep': 'yes' } });
  const seen = JSON.parse(r.body) as { headers: Record<string, string> };
  assert.equal(seen.headers['x-user'], 'ada');
  assert.equal(seen.headers['x-secret'], undefined);
  assert.equal(seen.headers['x-keep'], 'yes');
});

test("a client's Connection header cannot strip a header a middleware added", { timeout: TEST_TIMEOUT }, async (t) => {
  const url = await mirrorBehind(t, (req, _res, next) => {
    req.headers['x-user-role'] = 'guest';
    next();
  });
  const r = await fetchText(url, { headers: { connection: 'close, x-user-role, x-drop', 'x-drop': '1' } });
  const seen = JSON.parse(r.body) as { headers: Record<string, string> };
  assert.equal(seen.headers['x-user-role'], 'guest');
  assert.equal(seen.headers['x-drop'], undefined, 'a header the client sent and named in Connection is still dropped');
});

test('trusted X-Forwarded-Proto and -Host: the value the nearest proxy added (rightmost) wins', { timeout: TEST_TIMEOUT }, async (t) => {
  let scheme = '';
  const url = await mirrorBehind(
    t,
    (req, res, next) => {
      res.once('finish', () => (scheme = exchange(req).scheme));
      next();
    },
    { trustProxy: 'loopback' },
  );
  const r = await fetchText(url, { headers: { 'x-forwarded-proto': 'https, http', 'x-forwarded-host': 'evil.example, real.example' } });
  const seen = JSON.parse(r.body) as { headers: Record<string, string> };
  assert.equal(seen.headers['x-forwarded-proto'], 'http');
  assert.equal(seen.headers['x-forwarded-host'], 'real.example');
  assert.equal(scheme, 'http');
});

/** Forwarding headers besides X-Forwarded-For/-Proto/-Host and Forwarded, as a client might send them. */
const OTHER_FORWARDING: Record<string, string> = {
  'x-forwarded-port': '443',
  'x-forwarded-prefix': '/admin',
  'x-forwarded-ssl': 'on',
  'x-forwarded-server': 'internal.example',
  'x-forwarded-scheme': 'https',
  'x-forwarded-uri': '/admin/secret',
  'x-forwarded-client-cert': 'Hash=abc',
  'x-forwarded': 'for=203.0.113.9',
  'x-real-ip': '10.0.0.1',
  'x-client-ip': '10.0.0.2',
  'true-client-ip': '10.0.0.3',
  'front-end-https': 'on',
  'x-url-scheme': 'https',
};

test('no forwarding header from an untrusted client reaches the upstream: the whole X-Forwarded-* family, X-Real-IP and the like', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  for (const options of [{}, { xForwarded: false, forwarded: false }] as BalanceOptions[]) {
    const gw = await gatewayFor(t, pool, options);
    const r = complete(await tryFetch(gw.url, { headers: { ...OTHER_FORWARDING, 'x-kept': 'yes' } }));
    const h = JSON.parse(r.body.toString()).headers as Record<string, string>;
    for (const name of Object.keys(OTHER_FORWARDING)) assert.equal(h[name], undefined, `${name} must not reach the upstream (${JSON.stringify(options)})`);
    assert.equal(h['x-kept'], 'yes');
  }
});

test("a trusted proxy's forwarding headers pass to the upstream", { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { trustProxy: 'loopback' });
  const r = complete(await tryFetch(gw.url, { headers: { ...OTHER_FORWARDING, 'x-forwarded-for': '203.0.113.9' } }));
  const h = JSON.parse(r.body.toString()).headers as Record<string, string>;
  for (const [name, value] of Object.entries(OTHER_FORWARDING)) assert.equal(h[name], value, name);
  assert.equal(h['x-forwarded-for'], '203.0.113.9, 127.0.0.1');
});

test('a forwarding header a middleware sets before balance() is kept, even when the untrusted client sent one too', { timeout: TEST_TIMEOUT }, async (t) => {
  const url = await mirrorBehind(t, (req, _res, next) => {
    req.headers['x-forwarded-prefix'] = '/api';
    req.headers['x-real-ip'] = exchange(req).clientAddress;
    next();
  });
  const r = await fetchText(url, { headers: { 'x-forwarded-prefix': '/admin', 'x-forwarded-ssl': 'on' } });
  const h = (JSON.parse(r.body) as { headers: Record<string, string> }).headers;
  assert.equal(h['x-forwarded-prefix'], '/api');
  assert.equal(h['x-real-ip'], '127.0.0.1');
  assert.equal(h['x-forwarded-ssl'], undefined, "the client's own is still dropped");
});

test("a client's Connection header cannot strip a header a middleware replaced, only one left as the client sent it", { timeout: TEST_TIMEOUT }, async (t) => {
  const url = await mirrorBehind(t, (req, _res, next) => {
    // An auth layer: the role is the server's verdict, whatever the client claimed.
    req.headers['x-user-role'] = 'guest';
    next();
  });
  const c = await RawClient.open(t, Number(new URL(url).port));
  c.write(
    'GET / HTTP/1.1\r\nHost: gw\r\n' +
      'X-User-Role: admin\r\n' +
      'X-Twice: 1\r\nX-Twice: 2\r\n' +
      'X-Once: 1\r\n' +
      'Connection: x-user-role, x-twice, x-once\r\n\r\n',
  );
  const r = await c.response();
  assert.equal(r.status, 200);
  const h = (JSON.parse(r.body) as { headers: Record<string, string> }).headers;
  assert.equal(h['x-user-role'], 'guest', "the middleware's value survives the client's Connection header");
  assert.equal(h['x-twice'], undefined, "a repeated header left as sent is the client's to drop");
  assert.equal(h['x-once'], undefined);
});

test("express: a header an auth middleware replaced survives the client's Connection header", { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const app = express();
  app.use((req, _res, next) => {
    req.headers['x-user-role'] = 'guest';
    next();
  });
  app.use(balance(pool));
  const gw = await gateway(t, app);
  const r = await fetchText(gw.url, { headers: { 'x-user-role': 'admin', connection: 'x-user-role' } });
  assert.equal((JSON.parse(r.body) as { headers: Record<string, string> }).headers['x-user-role'], 'guest');
});

test('trusted X-Forwarded-For: an entry that is not an IP address ends the walk (nginx realip); ports are allowed', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, { trustProxy: ['loopback', '192.0.2.0/24'] });
  const cases: Array<[string, string]> = [
    ['203.0.113.9, unknown, 127.0.0.2', '127.0.0.2'],
    ['203.0.113.9, 127.0.0.2, <script>', '127.0.0.1'],
    ['evil.example', '127.0.0.1'],
    ['203.0.113.9, _hidden, 192.0.2.1:8080', '192.0.2.1'],
    ['203.0.113.9, 1.2.3.4:99999, 127.0.0.2', '127.0.0.2'],
    ['203.0.113.9, 1.2.3.4:x', '127.0.0.1'],
    ['[2001:db8::1]:x', '127.0.0.1'],
    ['[2001:db8::1', '127.0.0.1'],
    ['[192.0.2.9]:80', '127.0.0.1'],
    ['198.51.100.7:8080', '198.51.100.7'],
    ['[2001:db8::1]:443, 127.0.0.2', '2001:db8::1'],
    ['[2001:db8::2]', '2001:db8::2'],
    ['::ffff:198.51.100.8', '198.51.100.8'],
    ['2001:db8::3', '2001:db8::3'],
    ['203.0.113.9, 127.0.0.2', '203.0.113.9'],
  ];
  for (const [i, [xff, client]] of cases.entries()) {
    complete(await tryFetch(gw.url, { headers: { 'x-forwarded-for': xff } }));
    await gw.settled(i + 1);
    assert.equal(gw.log[i]!.client, client, `X-Forwarded-For: ${xff}`);
  }
});

test('repeated request fields go upstream as separate lines in order (Cookie as one line), and fields named like Object members (constructor, toString, __proto__) are plain headers', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await mirror(t);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const url = (
    await gateway(
      t,
      chain((req, _res, next) => {
        req.headers['x-group'] = ['admins', 'ops'];
        (req.headers as Record<string, string | string[]>).cookie = ['a=1', 'b=2'];
        Object.defineProperty(req.headers, '__proto__', { value: 'p', enumerable: true, writable: true, configurable: true });
        next();
      }, balance(pool)),
    )
  ).url;
  const gw = new URL(url);
  const c = await RawClient.open(t, Number(gw.port));
  c.write(
    'GET /dup HTTP/1.1\r\n' +
      'Host: public.example\r\n' +
      'Set-Cookie: a=1\r\n' +
      'Constructor: c\r\n' +
      'Set-Cookie: b=2\r\n' +
      'toString: s\r\n' +
      'hasOwnProperty: h\r\n' +
      'Connection: close\r\n' +
      '\r\n',
  );
  const r = await c.response();
  assert.equal(r.status, 200);
  const raw = (JSON.parse(r.body) as { raw: string[] }).raw;
  const values = (name: string): string[] => {
    const out: string[] = [];
    for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) out.push(raw[i + 1]!);
    return out;
  };
  assert.deepEqual(values('set-cookie'), ['a=1', 'b=2']);
  assert.deepEqual(values('x-group'), ['admins', 'ops']);
  // RFC 6265 §5.4: one Cookie line.
  assert.deepEqual(values('cookie'), ['a=1; b=2']);
  assert.deepEqual(values('constructor'), ['c']);
  assert.deepEqual(values('tostring'), ['s']);
  assert.deepEqual(values('hasownproperty'), ['h']);
  assert.deepEqual(values('__proto__'), ['p']);
  assert.deepEqual(values('host'), [`127.0.0.1:${up.port}`]);
});

test('OPTIONS * reaches the upstream as OPTIONS for the server itself (absolute form with an empty path, RFC 9112 §3.2.4)', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await upstream(t, 'options', (req: IncomingMessage, res: ServerResponse) => res.end(JSON.stringify({ method: req.method, url: req.url })));
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  const c = await RawClient.open(t, gw.port);
  c.write('OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n');
  const r = await c.response();
  assert.equal(r.status, 200);
  const seen = JSON.parse(r.body) as { method: string; url: string };
  assert.equal(seen.method, 'OPTIONS');
  assert.equal(seen.url, `http://127.0.0.1:${up.port}`);
});
