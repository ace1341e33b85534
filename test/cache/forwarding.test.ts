// cache() against hostile input (issue 11): what the cache keys must be what the upstream is told.
// A key built from another scheme or host than the upstream got (trusted X-Forwarded-Proto/-Host,
// a Host with a port), keys that collide, Vary on headers balance() rewrites, request bodies and
// trusted X-Forwarded-* headers each let one client's answer reach others. Real upstreams, real
// gateways (plain and TLS) on port 0.
import { strict as assert } from 'node:assert';
import { createServer, request, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import { createServer as createTlsServer, request as tlsRequest } from 'node:https';
import { test, type TestContext } from 'node:test';
import { balance, cache, chain, createPool, type BalanceOptions, type CacheMiddleware, type CacheOptions } from '../../src/index.ts';
import { listen, upstream, type Upstream } from '../helpers.ts';
import { TLS_CERT, TLS_KEY } from './tls-fixture.ts';

interface Site {
  url: string;
  tlsUrl: string;
  up: Upstream;
  mw: CacheMiddleware;
}

/** An upstream answering with `handler`, behind `cache(copts)` and `balance(pool, bopts)`, on plain HTTP and on TLS. */
async function site(
  t: TestContext,
  handler: (req: IncomingMessage, res: ServerResponse, body: string) => void,
  copts: CacheOptions = {},
  bopts: BalanceOptions = {},
): Promise<Site> {
  const up = await upstream(t, 'origin', handler);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const mw = cache(copts);
  const listener: RequestListener = chain(mw, balance(pool, bopts));
  const plain = await listen(t, createServer(listener));
  const tls = await listen(t, createTlsServer({ key: TLS_KEY, cert: TLS_CERT }, listener));
  return { url: plain.url, tlsUrl: tls.url.replace('http:', 'https:'), up, mw };
}

interface Got {
  status: number;
  cs: string | undefined;
  location: string | undefined;
  body: string;
}

/** One request on a fresh connection (TLS for https: URLs), from `localAddress` when given. */
function get(url: string, init: { method?: string; headers?: Record<string, string>; body?: string; localAddress?: string } = {}): Promise<Got> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith('https:') ? tlsRequest : request;
    // Node frames a GET's body only when told how: Content-Length unless the test chose chunked.
    const headers = { ...init.headers };
    if (init.body !== undefined && headers['transfer-encoding'] === undefined) headers['content-length'] = String(Buffer.byteLength(init.body));
    const req = send(url, { method: init.method ?? 'GET', headers, agent: false, rejectUnauthorized: false, localAddress: init.localAddress }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          cs: res.headers['x-cache-status'] as string | undefined,
          location: res.headers.location,
          body: Buffer.concat(chunks).toString(),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

const cached = { 'cache-control': 'max-age=60' };

/** Answers with what the upstream was told about the request's origin. */
function told(req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, cached);
  res.end(
    `proto=${String(req.headers['x-forwarded-proto'])} host=${String(req.headers['x-forwarded-host'])} prefix=${String(req.headers['x-forwarded-prefix'])}`,
  );
}

/** An application that sends http to https, as most do behind a TLS-terminating proxy. */
function httpsOnly(req: IncomingMessage, res: ServerResponse): void {
  if (req.headers['x-forwarded-proto'] !== 'https') {
    res.writeHead(301, { ...cached, location: `https://${String(req.headers['x-forwarded-host'])}${req.url}` });
    res.end();
    return;
  }
  res.writeHead(200, cached);
  res.end('secure page');
}

test('behind trustProxy, the 301 an http client got is not served to https clients (the key follows the trusted X-Forwarded-Proto)', async (t) => {
  const s = await site(t, httpsOnly, { trustProxy: 'loopback' }, { trustProxy: 'loopback' });
  const insecure = await get(`${s.url}/account`, { headers: { host: 'shop.example', 'x-forwarded-proto': 'http' } });
  assert.deepEqual([insecure.status, insecure.cs, insecure.location], [301, 'MISS', 'https://shop.example/account']);
  const secure = await get(`${s.url}/account`, { headers: { host: 'shop.example', 'x-forwarded-proto': 'https' } });
  assert.deepEqual([secure.status, secure.cs, secure.body], [200, 'MISS', 'secure page'], 'no redirect loop');
  // Each is cached under its own scheme.
  assert.equal((await get(`${s.url}/account`, { headers: { host: 'shop.example', 'x-forwarded-proto': 'https' } })).cs, 'HIT');
  assert.equal((await get(`${s.url}/account`, { headers: { host: 'shop.example', 'x-forwarded-proto': 'http' } })).status, 301);
  assert.equal(s.up.seen.length, 2);
  assert.equal(await s.mw.purge('https://shop.example/account'), 1);
});

test("behind a Host-rewriting trusted proxy, one tenant never gets another tenant's page (the key follows the trusted X-Forwarded-Host)", async (t) => {
  const s = await site(t, told, { trustProxy: 'loopback' }, { trustProxy: 'loopback' });
  const proxy = (tenant: string): Promise<Got> =>
    get(`${s.url}/home`, { headers: { host: 'internal.example', 'x-forwarded-host': tenant, 'x-forwarded-proto': 'https' } });
  const a = await proxy('a.example');
  const b = await proxy('b.example');
  assert.deepEqual([a.cs, a.body], ['MISS', 'proto=https host=a.example prefix=undefined']);
  assert.deepEqual([b.cs, b.body], ['MISS', 'proto=https host=b.example prefix=undefined']);
  const again = await proxy('a.example');
  assert.deepEqual([again.cs, again.body], ['HIT', a.body]);
});

test('$scheme and $host in a key template follow what cache({ trustProxy }) trusts', async (t) => {
  const s = await site(t, told, { trustProxy: 'loopback', key: '$scheme|$host|$uri' }, { trustProxy: 'loopback' });
  await get(`${s.url}/t`, { headers: { host: 'internal.example', 'x-forwarded-host': 'A.example:8443', 'x-forwarded-proto': 'https' } });
  assert.equal(await s.mw.purge('https|a.example|/t'), 1);
});

test('a key built from a trusted X-Forwarded-Host is not stored when balance() told the upstream another host', async (t) => {
  // cache() trusts the proxy, balance() does not: the upstream is told the Host, not the tenant.
  const s = await site(t, told, { trustProxy: 'loopback' });
  const first = await get(`${s.url}/p`, { headers: { host: 'internal.example', 'x-forwarded-host': 'a.example' } });
  assert.deepEqual([first.cs, first.body], ['MISS', 'proto=http host=internal.example prefix=undefined']);
  const second = await get(`${s.url}/p`, { headers: { host: 'internal.example', 'x-forwarded-host': 'a.example' } });
  assert.equal(second.cs, 'MISS', 'not stored under a.example');
});

test('a response the upstream made for a trusted X-Forwarded-Host is not stored when cache() does not trust the proxy', async (t) => {
  // balance() trusts the proxy, cache() does not: the key has the Host, the upstream the tenant.
  const s = await site(t, told, {}, { trustProxy: 'loopback' });
  const a = await get(`${s.url}/p`, { headers: { host: 'internal.example', 'x-forwarded-host': 'a.example' } });
  assert.deepEqual([a.cs, a.body], ['MISS', 'proto=http host=a.example prefix=undefined']);
  const b = await get(`${s.url}/p`, { headers: { host: 'internal.example', 'x-forwarded-host': 'b.example' } });
  assert.deepEqual([b.cs, b.body], ['MISS', 'proto=http host=b.example prefix=undefined']);
});

test('https + x.example and http + sx.example are different keys (scheme and host are not run together)', async (t) => {
  const s = await site(t, told);
  const secure = await get(`${s.tlsUrl}/p`, { headers: { host: 'x.example' } });
  assert.deepEqual([secure.cs, secure.body], ['MISS', 'proto=https host=x.example prefix=undefined']);
  const plain = await get(`${s.url}/p`, { headers: { host: 'sx.example' } });
  assert.deepEqual([plain.cs, plain.body], ['MISS', 'proto=http host=sx.example prefix=undefined']);
  // Both HIT paths (with and without an exchange record) find the same entries.
  assert.equal((await get(`${s.tlsUrl}/p`, { headers: { host: 'x.example' } })).body, secure.body);
  assert.equal((await get(`${s.url}/p`, { headers: { host: 'sx.example' } })).body, plain.body);
  assert.equal(s.up.seen.length, 2);
  assert.equal(await s.mw.purge('https://x.example/p'), 1);
  assert.equal(await s.mw.purge('http://sx.example/p'), 1);
});

test('a Host with a port is its own key: one request with Host site.example:6666 cannot plant its links for site.example', async (t) => {
  const s = await site(t, told);
  const attack = await get(`${s.url}/links`, { headers: { host: 'site.example:6666' } });
  assert.deepEqual([attack.cs, attack.body], ['MISS', 'proto=http host=site.example:6666 prefix=undefined']);
  const victim = await get(`${s.url}/links`, { headers: { host: 'site.example' } });
  assert.deepEqual([victim.cs, victim.body], ['MISS', 'proto=http host=site.example prefix=undefined']);
  // Case does not matter in a host name: one entry.
  const upper = await get(`${s.url}/links`, { headers: { host: 'SITE.example:6666' } });
  assert.equal(upper.cs, 'HIT');
  assert.equal(await s.mw.purge('http://site.example:6666/links'), 1);
});

test("Vary: X-Forwarded-Host keys variants by the host the upstream was told, not by the client's header", async (t) => {
  const s = await site(
    t,
    (req, res) => {
      res.writeHead(200, { ...cached, vary: 'X-Forwarded-Host' });
      res.end(`links to ${String(req.headers['x-forwarded-host'])}`);
    },
    { key: '$uri' },
  );
  // No X-Forwarded-Host from either client: the upstream was told each one's Host.
  const attack = await get(`${s.url}/v`, { headers: { host: 'evil.example' } });
  assert.deepEqual([attack.cs, attack.body], ['MISS', 'links to evil.example']);
  const victim = await get(`${s.url}/v`, { headers: { host: 'good.example' } });
  assert.deepEqual([victim.cs, victim.body], ['MISS', 'links to good.example']);
  // A client-sent X-Forwarded-Host is replaced upstream, so it selects nothing either.
  const forged = await get(`${s.url}/v`, { headers: { host: 'good.example', 'x-forwarded-host': 'evil.example' } });
  assert.deepEqual([forged.cs, forged.body], ['HIT', 'links to good.example']);
  assert.equal(s.up.seen.length, 2);
});

test("Vary: X-Forwarded-For keys variants by the address the upstream was told, so one client's page is not another's", async (t) => {
  const s = await site(t, (req, res) => {
    res.writeHead(200, { ...cached, vary: 'X-Forwarded-For' });
    res.end(`hello ${String(req.headers['x-forwarded-for'])}`);
  });
  const one = await get(`${s.url}/me`, { localAddress: '127.0.0.1' });
  assert.deepEqual([one.cs, one.body], ['MISS', 'hello 127.0.0.1']);
  const two = await get(`${s.url}/me`, { localAddress: '127.0.0.2' });
  assert.deepEqual([two.cs, two.body], ['MISS', 'hello 127.0.0.2']);
  // A forged X-Forwarded-For is replaced upstream: it is not what selects the variant.
  const forged = await get(`${s.url}/me`, { localAddress: '127.0.0.2', headers: { 'x-forwarded-for': '127.0.0.1' } });
  assert.deepEqual([forged.cs, forged.body], ['HIT', 'hello 127.0.0.2']);
});

test('a GET with a body (fat GET) bypasses the cache: its answer is not stored under the body-less key', async (t) => {
  const s = await site(t, (_req, res, body) => {
    res.writeHead(200, cached);
    res.end(`query=${body || 'none'}`);
  });
  const fat = await get(`${s.url}/search`, { headers: { 'content-type': 'text/plain' }, body: 'admin' });
  assert.deepEqual([fat.cs, fat.body], ['BYPASS', 'query=admin']);
  const chunked = await get(`${s.url}/search`, { headers: { 'transfer-encoding': 'chunked' }, body: 'admin' });
  assert.deepEqual([chunked.cs, chunked.body], ['BYPASS', 'query=admin']);
  const plain = await get(`${s.url}/search`);
  assert.deepEqual([plain.cs, plain.body], ['MISS', 'query=none']);
  // Nor does a body get a cached answer made for another.
  const again = await get(`${s.url}/search`, { body: 'other' });
  assert.deepEqual([again.cs, again.body], ['BYPASS', 'query=other']);
  assert.equal((await get(`${s.url}/search`, { headers: { 'content-length': '0' } })).cs, 'HIT');
});

test('cacheBodies: true caches requests with a body, for keys that account for it', async (t) => {
  const s = await site(
    t,
    (_req, res, body) => {
      res.writeHead(200, cached);
      res.end(`got ${body}`);
    },
    { cacheBodies: true, methods: ['POST'], key: (req) => `rpc:${String(req.headers['x-body-hash'])}` },
  );
  const first = await get(`${s.url}/rpc`, { method: 'POST', headers: { 'x-body-hash': '1' }, body: 'one' });
  const second = await get(`${s.url}/rpc`, { method: 'POST', headers: { 'x-body-hash': '1' }, body: 'one' });
  assert.deepEqual([first.cs, second.cs, second.body], ['MISS', 'HIT', 'got one']);
  // Without the option, a POST cacheable by `methods` still bypasses when it has a body.
  const off = await site(
    t,
    (_req, res, body) => {
      res.writeHead(200, cached);
      res.end(`got ${body}`);
    },
    { methods: ['POST'] },
  );
  assert.equal((await get(`${off.url}/rpc`, { method: 'POST', body: 'one' })).cs, 'BYPASS');
  assert.equal((await get(`${off.url}/rpc`, { method: 'POST', body: 'one' })).cs, 'BYPASS');
});

test('a response to a trusted X-Forwarded-Prefix is not shared with requests without it (it is keyed)', async (t) => {
  const s = await site(t, told, { trustProxy: 'loopback' }, { trustProxy: 'loopback' });
  const prefixed = await get(`${s.url}/p`, { headers: { host: 'a.example', 'x-forwarded-prefix': '/app' } });
  assert.deepEqual([prefixed.cs, prefixed.body], ['MISS', 'proto=http host=a.example prefix=/app']);
  const plain = await get(`${s.url}/p`, { headers: { host: 'a.example' } });
  assert.deepEqual([plain.cs, plain.body], ['MISS', 'proto=http host=a.example prefix=undefined']);
  const again = await get(`${s.url}/p`, { headers: { host: 'a.example', 'x-forwarded-prefix': '/app' } });
  assert.deepEqual([again.cs, again.body], ['HIT', prefixed.body]);
  // A trusted X-Forwarded-Server (an unkeyed header for untrusted clients) is keyed too, so stored.
  await get(`${s.url}/q`, { headers: { host: 'a.example', 'x-forwarded-server': 'edge-1' } });
  assert.equal((await get(`${s.url}/q`, { headers: { host: 'a.example', 'x-forwarded-server': 'edge-1' } })).cs, 'HIT');
  // purge(key) removes every forwarded variant of the key.
  assert.equal(await s.mw.purge('http://a.example/p'), 2);
});

test('an untrusted X-Forwarded-Prefix never reaches other clients through the cache', async (t) => {
  const s = await site(t, told);
  const forged = await get(`${s.url}/p`, { headers: { host: 'a.example', 'x-forwarded-prefix': '/evil' } });
  assert.equal(forged.cs, 'MISS');
  const plain = await get(`${s.url}/p`, { headers: { host: 'a.example' } });
  assert.doesNotMatch(plain.body, /evil/);
});

test('cache({ trustProxy }) is validated when the factory is called', () => {
  assert.throws(() => cache({ trustProxy: ['not-an-address'] }), { name: 'InvalidOptionError', message: /trustProxy\[0\]/ });
  assert.throws(() => cache({ cacheBodies: 'yes' as unknown as boolean }), { name: 'InvalidOptionError', message: /cacheBodies/ });
});

test('a forwarding header a middleware sets before cache() is keyed, so its responses are stored', async (t) => {
  const up = await upstream(t, 'origin', told);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const mount = (req: IncomingMessage, _res: ServerResponse, next: (err?: unknown) => void): void => {
    if (req.url?.startsWith('/api/') === true) req.headers['x-forwarded-prefix'] = '/api';
    next();
  };
  const gw = await listen(t, createServer(chain(mount, cache(), balance(pool))));
  const first = await get(`${gw.url}/api/p`, { headers: { host: 'a.example' } });
  const second = await get(`${gw.url}/api/p`, { headers: { host: 'a.example' } });
  assert.deepEqual([first.cs, second.cs, second.body], ['MISS', 'HIT', 'proto=http host=a.example prefix=/api']);
  // The client's own is dropped by balance(), and keys nothing.
  const forged = await get(`${gw.url}/p`, { headers: { host: 'a.example', 'x-forwarded-prefix': '/evil' } });
  assert.deepEqual([forged.cs, forged.body], ['MISS', 'proto=http host=a.example prefix=undefined']);
  assert.equal((await get(`${gw.url}/p`, { headers: { host: 'a.example' } })).cs, 'HIT');
});

test('an unkeyed forwarding header (X-Forwarded-Server) stops storing only when the upstream got it', async (t) => {
  // Through balance(), an untrusted client's is dropped: the answer did not depend on it.
  const s = await site(t, told);
  assert.equal((await get(`${s.url}/p`, { headers: { host: 'a.example', 'x-forwarded-server': 'evil' } })).cs, 'MISS');
  assert.equal((await get(`${s.url}/p`, { headers: { host: 'a.example' } })).cs, 'HIT');
  // A local handler sees it as sent: its answer is not stored.
  const local = await listen(
    t,
    createServer(
      chain(cache(), (req: IncomingMessage, res: ServerResponse) => {
        res.writeHead(200, cached);
        res.end(`server=${String(req.headers['x-forwarded-server'])}`);
      }),
    ),
  );
  const forged = await get(`${local.url}/p`, { headers: { 'x-forwarded-server': 'evil' } });
  const plain = await get(`${local.url}/p`);
  assert.deepEqual([forged.cs, plain.cs, plain.body], ['MISS', 'MISS', 'server=undefined']);
});

test('fast-path HITs step aside for a forwarding header a middleware sets on some requests only', async (t) => {
  const up = await upstream(t, 'origin', told);
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  // Sets X-Forwarded-Prefix on req.headers without touching the exchange record.
  const mount = (req: IncomingMessage, _res: ServerResponse, next: (err?: unknown) => void): void => {
    if (req.headers['x-mounted'] === '1') req.headers['x-forwarded-prefix'] = '/mounted';
    next();
  };
  const gw = await listen(t, createServer(chain(mount, cache(), balance(pool))));
  const plain = await get(`${gw.url}/p`, { headers: { host: 'a.example' } });
  const again = await get(`${gw.url}/p`, { headers: { host: 'a.example' } });
  assert.deepEqual([plain.cs, again.cs], ['MISS', 'HIT']);
  const mounted = await get(`${gw.url}/p`, { headers: { host: 'a.example', 'x-mounted': '1' } });
  assert.deepEqual([mounted.cs, mounted.body], ['MISS', 'proto=http host=a.example prefix=/mounted'], 'not the entry stored without the prefix');
  assert.equal((await get(`${gw.url}/p`, { headers: { host: 'a.example', 'x-mounted': '1' } })).cs, 'HIT');
  assert.equal((await get(`${gw.url}/p`, { headers: { host: 'a.example' } })).body, 'proto=http host=a.example prefix=undefined');
});
