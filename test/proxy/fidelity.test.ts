// nginx fidelity of the forwarding engine (issue 16): proxy_redirect, proxy_hide_header and
// proxy_pass_header, Upgrade on a 426, underscores in request header names, bodiless requests.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { balance, cache, chain, createPool, InvalidOptionError, type BalanceOptions } from '../../src/index.ts';
import { fetchText, gateway, listen, upstream, type Upstream } from '../helpers.ts';
import { gatewayFor, rawUpstream, RawClient, TEST_TIMEOUT } from '../balance/support.ts';

type T = TestContext;

/** An upstream answering every request with `status` and `headers`, which may name its own address (`{self}`). */
async function answering(t: T, status: number, headers: Record<string, string>, prefix = ''): Promise<{ up: Upstream; url: string }> {
  let self = '';
  const up = await upstream(t, 'a', (_req: IncomingMessage, res: ServerResponse) => {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(headers)) out[k] = v.replaceAll('{self}', self);
    res.writeHead(status, out);
    res.end('x');
  });
  self = up.url + prefix;
  return { up, url: self };
}

async function through(t: T, url: string, options: BalanceOptions = {}, path = '/go', headers: Record<string, string> = {}) {
  const pool = createPool({ servers: [{ url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool, options);
  return fetchText(`${gw.url}${path}`, { headers: { host: 'front.example:8443', ...headers } });
}

test('proxy_redirect default: a Location naming the server rewritten to the request scheme and host', { timeout: TEST_TIMEOUT }, async (t) => {
  const { url } = await answering(t, 302, { location: '{self}/elsewhere?a=1' });
  const r = await through(t, url);
  assert.equal(r.status, 302);
  assert.equal(r.headers.location, 'http://front.example:8443/elsewhere?a=1');
});

test('proxy_redirect default: the server root, and its url path prefix', { timeout: TEST_TIMEOUT }, async (t) => {
  const root = await answering(t, 301, { location: '{self}/' });
  assert.equal((await through(t, root.url)).headers.location, 'http://front.example:8443/');
  const prefixed = await answering(t, 302, { location: '{self}/next' }, '/v1');
  // The server's url is http://…/v1: its /v1/next is the client's /next.
  assert.equal((await through(t, prefixed.url)).headers.location, 'http://front.example:8443/next');
});

test('proxy_redirect default: Refresh url= rewritten as nginx does (to a path); other URLs left alone', { timeout: TEST_TIMEOUT }, async (t) => {
  const { url } = await answering(t, 200, { refresh: '7; URL={self}/next', location: 'https://{self}/x' });
  const r = await through(t, url);
  assert.equal(r.headers.refresh, '7; URL=/next');
  // Another scheme than the server's url: not the proxied URL, unchanged.
  assert.match(String(r.headers.location), /^https:\/\/http:\/\/127\.0\.0\.1:\d+\/x$/);
  const other = await answering(t, 302, { location: 'http://other.example/x' });
  assert.equal((await through(t, other.url)).headers.location, 'http://other.example/x');
  const relative = await answering(t, 302, { location: '/rel' });
  assert.equal((await through(t, relative.url)).headers.location, '/rel');
});

test('redirect: false leaves Location alone; rules with strings, RegExps and variables', { timeout: TEST_TIMEOUT }, async (t) => {
  const { url } = await answering(t, 302, { location: '{self}/elsewhere' });
  assert.equal((await through(t, url, { redirect: false })).headers.location, `${url}/elsewhere`);
  const r = await through(t, url, { redirect: [{ from: `${url}/`, to: '$scheme://$http_host/app/' }] });
  assert.equal(r.headers.location, 'http://front.example:8443/app/elsewhere');
  const re = await through(t, url, { redirect: [{ from: /^http:\/\/[^/]+\/(?<rest>.*)$/, to: 'https://public.example/$1?r=$rest' }] });
  assert.equal(re.headers.location, 'https://public.example/elsewhere?r=elsewhere');
  // The first rule that applies wins; 'default' may be one of them.
  const listed = await through(t, url, { redirect: [{ from: 'http://nowhere/', to: '/x/' }, 'default'] });
  assert.equal(listed.headers.location, 'http://front.example:8443/elsewhere');
  assert.throws(() => balance(createPool({ servers: [{ url }] }), { redirect: 'on' as never }), InvalidOptionError);
  assert.throws(() => balance(createPool({ servers: [{ url }] }), { redirect: [{ from: '', to: '/' }] }), InvalidOptionError);
});

test("X-Accel-* and X-Pad never reach the client; hideHeaders and passHeaders as nginx's proxy_hide_header / proxy_pass_header", {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const { url } = await answering(t, 200, {
    'x-accel-expires': '0',
    'X-Accel-Redirect': '/internal',
    'x-accel-limit-rate': '1000',
    'x-accel-buffering': 'no',
    'x-accel-charset': 'utf-8',
    'x-pad': 'avoid browser bug',
    'x-accel-custom': 'kept',
    'x-secret': 's',
    server: 'up/1',
  });
  const r = await through(t, url);
  for (const name of ['x-accel-expires', 'x-accel-redirect', 'x-accel-limit-rate', 'x-accel-buffering', 'x-accel-charset', 'x-pad']) {
    assert.equal(r.headers[name], undefined, `${name} is hidden`);
  }
  assert.equal(r.headers['x-accel-custom'], 'kept');
  assert.equal(r.headers.server, 'up/1');
  const o = await through(t, url, { hideHeaders: ['X-Secret'], passHeaders: ['X-Accel-Buffering'] });
  assert.equal(o.headers['x-secret'], undefined);
  assert.equal(o.headers['x-accel-buffering'], 'no');
  assert.equal(o.headers['x-accel-expires'], undefined);
  assert.throws(() => balance(createPool({ servers: [{ url }] }), { hideHeaders: ['bad name'] }), InvalidOptionError);
});

test('cache() in front still reads X-Accel-Expires from the upstream (HIT on the second request)', { timeout: TEST_TIMEOUT }, async (t) => {
  const { up, url } = await answering(t, 200, { 'x-accel-expires': '60', 'x-pad': 'p' });
  const pool = createPool({ servers: [{ url }] });
  const mw = cache({ statusHeader: 'X-Cache-Status' });
  t.after(async () => {
    await mw.close();
    pool.close();
  });
  const gw = await gateway(t, chain(mw, balance(pool)));
  const a = await fetchText(`${gw.url}/c`);
  const b = await fetchText(`${gw.url}/c`);
  assert.equal(a.headers['x-cache-status'], 'MISS');
  assert.equal(b.headers['x-cache-status'], 'HIT');
  assert.equal(up.seen.length, 1);
  assert.equal(a.headers['x-pad'], undefined);
});

test('Upgrade on a 426 reaches the client (RFC 9110 §15.5.22); on a 200 it is removed', { timeout: TEST_TIMEOUT }, async (t) => {
  const r426 = await answering(t, 426, { upgrade: 'TLS/1.2, HTTP/1.1', connection: 'Upgrade' });
  const a = await through(t, r426.url);
  assert.equal(a.status, 426);
  assert.equal(a.headers.upgrade, 'TLS/1.2, HTTP/1.1');
  // nginx sends its own Connection, not the upstream's `upgrade`.
  assert.notEqual(String(a.headers.connection).toLowerCase(), 'upgrade');
  const r200 = await answering(t, 200, { upgrade: 'TLS/1.2', connection: 'Upgrade' });
  assert.equal((await through(t, r200.url)).headers.upgrade, undefined);
});

test('request headers with underscores are not forwarded unless underscoresInHeaders (nginx underscores_in_headers)', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await upstream(t, 'u');
  const headers = { x_user: 'admin', 'x-user': 'guest' };
  await through(t, up.url, {}, '/h', headers);
  assert.equal(up.seen[0]!.headers.x_user, undefined);
  assert.equal(up.seen[0]!.headers['x-user'], 'guest');
  await through(t, up.url, { underscoresInHeaders: true }, '/h', headers);
  assert.equal(up.seen[1]!.headers.x_user, 'admin');
  // A middleware's own header with an underscore goes on.
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gateway(
    t,
    chain((req: IncomingMessage, _res: ServerResponse, next: () => void) => {
      req.headers.x_auth = 'mw';
      next();
    }, balance(pool)),
  );
  await fetchText(`${gw.url}/m`);
  assert.equal(up.seen[2]!.headers.x_auth, 'mw');
});

test('a request without a body goes without one, whatever its method: no Transfer-Encoding, no Content-Length', { timeout: TEST_TIMEOUT }, async (t) => {
  const got: string[] = [];
  const raw = await rawUpstream(t, (s) => {
    let buf = '';
    s.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      let end = buf.indexOf('\r\n\r\n');
      while (end !== -1) {
        got.push(buf.slice(0, end));
        buf = buf.slice(end + 4);
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        end = buf.indexOf('\r\n\r\n');
      }
    });
  });
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${raw.port}` }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  for (const method of ['MKCOL', 'LOCK', 'UNLOCK', 'COPY', 'MOVE', 'PURGE', 'DELETE', 'OPTIONS', 'GET']) {
    const c = await RawClient.open(t, gw.port);
    c.write(`${method} /dav/x HTTP/1.1\r\nHost: a.test\r\n\r\n`);
    assert.equal((await c.response()).status, 200, method);
  }
  assert.equal(got.length, 9);
  for (const head of got) {
    assert.doesNotMatch(head, /^transfer-encoding:/im, head.split('\r\n')[0]);
    assert.doesNotMatch(head, /^content-length:/im, head.split('\r\n')[0]);
  }
});

test('balance() without chain() (Express): TRACE is refused with the exchange refusal, 405, never proxied', { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await upstream(t, 'u');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const mw = balance(pool);

  const server = createServer((req, res) =>
    mw(req, res, (err?: unknown) => {
      res.statusCode = (err as { statusCode?: number } | undefined)?.statusCode ?? 500;
      res.end();
    }),
  );
  const gw = await listen(t, server);
  const c = await RawClient.open(t, gw.port);
  c.write('TRACE /t HTTP/1.1\r\nHost: a.test\r\n\r\n');
  assert.equal((await c.response()).status, 405);
  assert.equal(up.seen.length, 0);
});
