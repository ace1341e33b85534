// What nginx decides while reading a request, before any location or proxying (issue 16): an
// absolute-form target's host wins over the Host header (RFC 9112 §3.2.2); a repeated Host, or a
// host that is not a valid host[:port], is 400 (RFC 9112 §3.2, ngx_http_validate_host as of nginx
// 1.29.4, whose cases in nginx-tests' http_host.t the table below follows); TRACE is 405. chain()
// (so node:http, HTTP/2, the Fastify plugin and the Koa adapter) answers them before any middleware;
// for middleware mounted without chain() (Express) the exchange record keeps the verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import express from 'express';
import { balance, chain, createPool, exchange, rewrite } from '../../src/index.ts';
import { requestHost, requestRefusal } from '../../src/core/exchange.ts';
import { hostOf, validHost } from '../../src/core/http.ts';
import { listen, upstream } from '../helpers.ts';
import { RawClient } from '../balance/support.ts';
import { h2Connect, h2Gateway, h2Request } from '../http2/support.ts';
import type { TestContext } from 'node:test';

test('validHost follows nginx 1.29.4+: names, ports, IP literals, trailing dots (http_host.t)', () => {
  const ok = [
    'l',
    'L',
    'a.test:',
    '10.0.0.1:',
    'www.a-b.c02.test',
    'a-b.c02.test:8080',
    'www.a-b.c02.test.',
    'a-b.test.:88',
    'AbC-d93.0.34ZhGt-s.nk.Ru',
    '10.0.0.1:987',
    '10.0.0.1:65535',
    '10.0.0.1:0080',
    '[abcd::ef98:0:7654:321]',
    '[abcd::ef98:0:7654:321]:80',
    '[::ffff:12.30.67.89]:4321',
    'a_b.test',
    '.leading.test',
    "a~b!c$d&e'f(g)h*i+j,k;l=m%20.test",
  ];
  const bad = [
    '',
    '.',
    '..',
    '..a.test',
    'a..b',
    'a.test..',
    'a.test.:1.2',
    'a.test/b',
    'a.test\\:552',
    'a test',
    'a\tb',
    'user@a.test',
    '10.0.0.1:65536',
    '10.0.0.1:98777',
    '10.0.0.1:9000:80',
    'a.test:x',
    '[abcd::ef98:0:7654:321].',
    '[abcd::ef98:0:7654:321].:98',
    '[ab..cd::1]',
    'extra[abcd::1]:98',
    '[abcd::1',
    '[abcd::1/]',
    '[::1]x',
    '[a%20::1]',
  ];
  for (const h of ok) assert.equal(validHost(h), true, `accepted: ${h}`);
  for (const h of bad) assert.equal(validHost(h), false, `refused: ${JSON.stringify(h)}`);
});

/** A request as node:http's parser would hand it over, for the pure functions. */
function fake(url: string, rawHeaders: string[], extra: Partial<IncomingMessage> = {}): IncomingMessage {
  const headers: Record<string, string> = {};
  for (let i = 0; i < rawHeaders.length; i += 2) headers[rawHeaders[i]!.toLowerCase()] ??= rawHeaders[i + 1]!;
  return { method: 'GET', url, headers, rawHeaders, httpVersionMajor: 1, httpVersionMinor: 1, socket: {}, ...extra } as unknown as IncomingMessage;
}

test("an absolute-form target's host is the request's host (RFC 9112 §3.2.2), with its port; $host is its name", () => {
  const req = fake('http://Target.TEST.:8080/p?q=1', ['Host', 'header.test']);
  assert.equal(requestHost(req), 'Target.TEST.:8080');
  assert.equal(hostOf(req), 'target.test');
  assert.equal(exchange(req).requestUri, '/p?q=1');
  assert.equal(requestHost(fake('/p', ['Host', 'header.test'])), 'header.test');
  assert.equal(requestHost(fake('*', ['Host', 'header.test'], { method: 'OPTIONS' })), 'header.test');
  // Express keeps the scheme and host in req.url when it strips a mount path; originalUrl is read first.
  assert.equal(requestHost(fake('http://target.test/p', ['Host', 'header.test'], { originalUrl: 'http://target.test/api/p' } as never)), 'target.test');
});

test('requestRefusal: TRACE 405, a bad or repeated Host 400, a bad absolute-form host 400; the exchange keeps it', () => {
  const cases: Array<[IncomingMessage, number | undefined]> = [
    [fake('/', ['Host', 'a.test']), undefined],
    [fake('/', ['Host', 'a.test'], { method: 'TRACE' }), 405],
    [fake('/', ['Host', 'a.test', 'host', 'b.test']), 400],
    [fake('/', ['Host', 'a.test', 'HOST', 'a.test']), 400],
    [fake('/', ['Host', 'a.test/b']), 400],
    [fake('/', ['Host', '']), 400],
    [fake('/', ['Host', 'a.test:70000']), 400],
    [fake('http://a..b/p', ['Host', 'a.test']), 400],
    [fake('http:///p', ['Host', 'a.test']), 400],
    [fake('http://target.test/p', ['Host', 'a..b']), 400],
    [fake('http://target.test/p', ['Host', 'header.test']), undefined],
    // HTTP/1.0 without Host: nothing to refuse.
    [fake('/', [], { httpVersionMinor: 0 }), undefined],
  ];
  for (const [req, status] of cases) {
    const label = `${req.method} ${req.url} ${JSON.stringify(req.rawHeaders)}`;
    assert.equal(requestRefusal(req)?.statusCode, status, label);
    const ex = exchange(req);
    assert.equal(ex.refusal?.statusCode, status, label);
    if (status !== undefined) assert.equal(ex.uriValid, false, `${label}: never proxied, cached or rewritten`);
  }
  assert.equal(requestRefusal(fake('/', ['Host', 'a.test'], { method: 'TRACE' }))?.code, 'SWY_ERR_METHOD_NOT_ALLOWED');
  assert.equal(requestRefusal(fake('/', ['Host', 'a', 'Host', 'b']))?.code, 'SWY_ERR_BAD_REQUEST');
});

/** A chain() gateway: rewrite(rules) then balance() to a recording upstream, with the given balance options. */
async function gatewayTo(t: TestContext, rules: Parameters<typeof rewrite>[0], options: Parameters<typeof balance>[1] = {}) {
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await listen(t, createServer(chain(rewrite(rules), balance(pool, options))));
  const send = async (head: string) => {
    const c = await RawClient.open(t, gw.port);
    c.write(`${head}\r\nConnection: close\r\n\r\n`);
    return c.response();
  };
  return { up, gw, send };
}

test('an absolute-form target picks the server block, builds redirects, and is the Host, X-Forwarded-Host and Forwarded host= upstream', async (t) => {
  const { up, send } = await gatewayTo(
    t,
    [
      { server: 'target.test', rules: [{ location: '/go', rules: [{ return: 302, url: '/gone' }] }] },
      { server: 'header.test', rules: [{ return: 200, text: 'header block' }] },
    ],
    { host: 'client', xForwarded: true, forwarded: true },
  );
  const redirect = await send('GET http://target.test:8080/go HTTP/1.1\r\nHost: header.test');
  assert.equal(redirect.status, 302);
  assert.equal(redirect.headers.get('location'), 'http://target.test:8080/gone');
  const proxied = await send('GET http://target.test/p HTTP/1.1\r\nHost: header.test');
  assert.equal(proxied.status, 200);
  const seen = up.seen.at(-1)!;
  assert.equal(seen.url, '/p');
  assert.equal(seen.headers.host, 'target.test');
  assert.equal(seen.headers['x-forwarded-host'], 'target.test');
  assert.match(String(seen.headers.forwarded), /;host=target\.test;/);
  const byHeader = await send('GET /p HTTP/1.1\r\nHost: header.test');
  assert.equal(byHeader.body, 'header block');
});

test('chain() answers TRACE 405 without Allow, and a bad or repeated Host 400, before anything is proxied', async (t) => {
  const { up, send } = await gatewayTo(t, [], { host: 'client' });
  const heads: Array<[string, number]> = [
    ['TRACE /t HTTP/1.1\r\nHost: a.test', 405],
    ['GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test', 400],
    ['GET / HTTP/1.1\r\nHost: a.test/b', 400],
    ['GET / HTTP/1.1\r\nHost: ..examp-LE.com', 400],
    ['GET / HTTP/1.1\r\nHost: .', 400],
    ['GET / HTTP/1.1\r\nHost: ', 400],
    ['GET / HTTP/1.1\r\nHost: a.test:99999', 400],
    ['GET http://a..b/p HTTP/1.1\r\nHost: a.test', 400],
  ];
  for (const [head, status] of heads) {
    const r = await send(head);
    assert.equal(r.status, status, head);
    assert.equal(r.headers.get('allow'), undefined, head);
  }
  assert.equal(up.seen.length, 0, 'nothing reached the upstream');
  // The hosts nginx accepts still go through: a trailing dot, uppercase, an underscore, an empty port.
  for (const host of ['A_b.TEST.', 'a.test:', '[::1]:8080']) {
    const r = await send(`GET / HTTP/1.1\r\nHost: ${host}`);
    assert.equal(r.status, 200, host);
  }
  assert.equal(up.seen.length, 3);
});

test("node's parser answers Transfer-Encoding: identity with 400 before switchyard sees it; gzip, chunked is 501", async (t) => {
  const { up, gw, send } = await gatewayTo(t, []);
  const identity = await send('POST /te HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc');
  assert.equal(identity.status, 400);
  const c = await RawClient.open(t, gw.port);
  c.write('POST /te HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
  assert.equal((await c.response()).status, 501);
  assert.equal(up.seen.length, 0);
});

test('HTTP/2: an invalid :authority is 400 and TRACE is 405, through chain()', async (t) => {
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await h2Gateway(t, 'h2c', chain(balance(pool)));
  const session = h2Connect(t, gw.url);
  assert.equal((await h2Request(session, { ':authority': 'a..b' })).status, 400);
  assert.equal((await h2Request(session, { ':method': 'TRACE', ':path': '/t' })).status, 405);
  assert.equal((await h2Request(session, { ':authority': 'Good.test' })).status, 200);
  assert.equal(up.seen.length, 1);
});

test('Express (balance() without chain()): a bad Host and TRACE are refused, never proxied; an absolute-form host goes upstream', async (t) => {
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const app = express();
  app.set('env', 'test');
  app.use('/api', balance(pool, { host: 'client' }));
  const gw = await listen(t, createServer(app));
  const send = async (head: string) => {
    const c = await RawClient.open(t, gw.port);
    c.write(`${head}\r\nConnection: close\r\n\r\n`);
    return c.response();
  };
  const bad = await send('GET /api/x HTTP/1.1\r\nHost: a.test\r\nHost: b.test');
  assert.equal(bad.status, 400);
  // balance() answers with the exchange's refusal (405), not its own 400 for a refused request.
  const trace = await send('TRACE /api/x HTTP/1.1\r\nHost: a.test');
  assert.equal(trace.status, 405);
  assert.equal(up.seen.length, 0);
  const absolute = await send('GET http://target.test/api/x HTTP/1.1\r\nHost: header.test');
  assert.equal(absolute.status, 200);
  assert.equal(up.seen.at(-1)!.headers.host, 'target.test');
  // (The mount path stays in what goes upstream, as for an origin-form target: Express's originalUrl.)
  assert.equal(up.seen.at(-1)!.url, '/api/x');
});
