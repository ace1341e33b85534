// sticky() cookie mode against real upstreams: nginx's exact Set-Cookie (reference 4.2), the SID
// (4.1), rebalancing of bad or refused cookies, signed cookies, validation, forged values.
import { strict as assert } from 'node:assert';
import { createHash, createHmac } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { createPool, InvalidOptionError, sticky, type StickyCookieOptions, type StickyOptions, type UpstreamPool } from '../../src/index.ts';
import { deadPort, poolOf, upstream, type Upstream } from '../helpers.ts';
import { cookieValue, named, setCookies, sidOf, stickyGateway, type StickyGateway } from './support.ts';

const NOW = Date.UTC(2026, 10, 27, 16, 9, 15);
const fixed = (): number => NOW;

async function abc(
  t: TestContext,
  cookie: StickyCookieOptions | true = true,
  extra: Partial<StickyOptions> = {},
): Promise<{ ups: Record<string, Upstream>; pool: UpstreamPool; gw: StickyGateway }> {
  const ups = await named(t, ['a', 'b', 'c']);
  const pool = poolOf(t, ups);
  const gw = await stickyGateway(t, pool, { cookie, now: fixed, ...extra });
  return { ups, pool, gw };
}

/** `n` requests with `cookie`: the servers that answered. */
async function bodies(gw: StickyGateway, n: number, headers: Record<string, string>, path = '/'): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push((await gw.get(path, headers)).body);
  return out;
}

test('Set-Cookie has nginx format and attribute order (all attributes, fixed clock)', async (t) => {
  const { pool, gw } = await abc(t, { expires: '1h', domain: '.example.com', httpOnly: true, secure: true, sameSite: 'lax', path: '/' });
  const r = await gw.get();
  assert.equal(r.status, 200);
  assert.deepEqual(setCookies(r), [
    `srv_id=${sidOf(pool, r.body)}; expires=Fri, 27-Nov-26 17:09:15 GMT; max-age=3600; domain=.example.com; httponly; secure; samesite=lax; path=/`,
  ]);
});

test("expires: 'max' gives nginx's fixed date and ten-year max-age", async (t) => {
  const { pool, gw } = await abc(t, { expires: 'max' });
  const r = await gw.get();
  assert.deepEqual(setCookies(r), [`srv_id=${sidOf(pool, r.body)}; expires=Thu, 31-Dec-37 23:55:55 GMT; max-age=315360000`]);
});

test('no expires: a session cookie (no expires, no max-age)', async (t) => {
  const { pool, gw } = await abc(t, true);
  const r = await gw.get();
  assert.deepEqual(setCookies(r), [`srv_id=${sidOf(pool, r.body)}`]);
});

const ALONE: Array<[string, StickyCookieOptions, string]> = [
  ['expires 90s', { expires: '90s' }, '; expires=Fri, 27-Nov-26 16:10:45 GMT; max-age=90'],
  ['expires 2d', { expires: '2d' }, '; expires=Sun, 29-Nov-26 16:09:15 GMT; max-age=172800'],
  ['domain', { domain: '.example.com' }, '; domain=.example.com'],
  ['domain without dot', { domain: 'example.org' }, '; domain=example.org'],
  ['httpOnly', { httpOnly: true }, '; httponly'],
  ['httpOnly false', { httpOnly: false }, ''],
  ['secure', { secure: true }, '; secure'],
  ['sameSite strict', { sameSite: 'strict' }, '; samesite=strict'],
  ['sameSite Lax (case-insensitive)', { sameSite: 'Lax' }, '; samesite=lax'],
  ['sameSite none with secure', { sameSite: 'none', secure: true }, '; secure; samesite=none'],
  ['path', { path: '/app' }, '; path=/app'],
];
for (const [name, opts, tail] of ALONE) {
  test(`attribute alone: ${name}`, async (t) => {
    const { pool, gw } = await abc(t, opts);
    const r = await gw.get();
    assert.deepEqual(setCookies(r), [`srv_id=${sidOf(pool, r.body)}${tail}`]);
  });
}

test('custom cookie name is used for both the lookup and Set-Cookie', async (t) => {
  const { pool, gw } = await abc(t, { name: 'route_id' });
  const r = await gw.get();
  assert.deepEqual(setCookies(r), [`route_id=${sidOf(pool, r.body)}`]);
  // the default name is not looked at
  const c = sidOf(pool, 'c');
  const viaDefault = await bodies(gw, 3, { cookie: `srv_id=${c}` });
  assert.notDeepEqual(viaDefault, ['c', 'c', 'c']);
  assert.deepEqual(await bodies(gw, 3, { cookie: `other=1; route_id=${c}` }), ['c', 'c', 'c']);
});

test("domain with variables: '.$host' takes the Host header (without port)", async (t) => {
  const { pool, gw } = await abc(t, { domain: '.$host' });
  const r = await gw.get('/', { host: 'Shop.Example.com:8080' });
  assert.deepEqual(setCookies(r), [`srv_id=${sidOf(pool, r.body)}; domain=.shop.example.com`]);
});

test('a Host that is not a host at all ("a b") is refused before sticky() sets anything', async (t) => {
  const { gw } = await abc(t, { domain: '.$host', httpOnly: true });
  const r = await gw.get('/', { host: 'a b' });
  assert.equal(r.status, 400);
  assert.deepEqual(setCookies(r), []);
});

// hosts nginx accepts that are not cookie domains
for (const host of ['bad_host.com', 'ex;ample.com']) {
  test(`domain evaluating to something invalid (Host ${JSON.stringify(host)}) is omitted`, async (t) => {
    const { pool, gw } = await abc(t, { domain: '.$host', httpOnly: true });
    const r = await gw.get('/', { host });
    assert.deepEqual(setCookies(r), [`srv_id=${sidOf(pool, r.body)}; httponly`]);
  });
}

test('domain evaluating empty is omitted', async (t) => {
  const { pool, gw } = await abc(t, { domain: '$arg_d', path: '/' });
  const r = await gw.get('/');
  assert.deepEqual(setCookies(r), [`srv_id=${sidOf(pool, r.body)}; path=/`]);
  const r2 = await gw.get('/?d=x.example.net');
  assert.deepEqual(setCookies(r2), [`srv_id=${sidOf(pool, r2.body)}; domain=x.example.net; path=/`]);
});

const SAMESITE: Array<[string, string]> = [
  ['', ''],
  ['?ss=', ''],
  ['?ss=lax', '; samesite=lax'],
  ['?ss=STRICT', '; samesite=strict'],
  ['?ss=none', '; samesite=none'],
  ['?ss=wrong', '; samesite=strict'],
];
for (const [query, tail] of SAMESITE) {
  test(`sameSite '$arg_ss' with ${JSON.stringify(query)} → ${JSON.stringify(tail)}`, async (t) => {
    const { pool, gw } = await abc(t, { sameSite: '$arg_ss' });
    const r = await gw.get(`/${query}`);
    assert.deepEqual(setCookies(r), [`srv_id=${sidOf(pool, r.body)}${tail}`]);
  });
}

test('SID is the lowercase hex MD5 of host:port (value verified against nginx); route= replaces it', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:18081' }, { url: 'http://127.0.0.1:18082', route: 'b' }] });
  try {
    assert.equal(pool.get('http://127.0.0.1:18081')?.sid, '7f3797d6a7e152c9ae2760fc816c6014');
    assert.equal(pool.get('http://127.0.0.1:18082')?.sid, 'b');
    assert.equal(createHash('md5').update('127.0.0.1:18082').digest('hex') !== 'b', true);
  } finally {
    pool.close();
  }
});

test('the cookie value is the route when servers have route=', async (t) => {
  const ups = await named(t, ['a', 'b']);
  const pool = poolOf(t, ups, { extra: { a: { route: 'ra' }, b: { route: 'rb' } } });
  const gw = await stickyGateway(t, pool, { cookie: true });
  const r1 = await gw.get();
  const r2 = await gw.get();
  assert.deepEqual([r1.body, cookieValue(r1), r2.body, cookieValue(r2)], ['a', 'ra', 'b', 'rb']);
  assert.deepEqual(await bodies(gw, 3, { cookie: 'srv_id=rb' }), ['b', 'b', 'b']);
});

test('every proxied response gets a Set-Cookie naming its server, bound or not; bound clients stay', async (t) => {
  const { pool, gw } = await abc(t);
  const seen: string[] = [];
  for (let i = 0; i < 6; i++) {
    const r = await gw.get();
    assert.equal(cookieValue(r), sidOf(pool, r.body));
    seen.push(r.body);
  }
  assert.deepEqual(seen, ['a', 'b', 'c', 'a', 'b', 'c']);
  for (const id of ['a', 'b', 'c']) {
    for (let i = 0; i < 4; i++) {
      const r = await gw.get('/', { cookie: `x=1; srv_id=${sidOf(pool, id)}; y=2` });
      assert.equal(r.body, id);
      assert.deepEqual(setCookies(r), [`srv_id=${sidOf(pool, id)}`]);
    }
  }
});

/** `n` requests with `cookie` are balanced (under RR they cannot all reach `bound`), each re-cookied. */
async function assertRebalanced(gw: StickyGateway, pool: UpstreamPool, cookie: string, bound: string, n = 4): Promise<void> {
  const got: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await gw.get('/', { cookie });
    assert.equal(r.status, 200);
    assert.equal(cookieValue(r), sidOf(pool, r.body), 'the new server gets its cookie');
    got.push(r.body);
  }
  assert.ok(
    got.some((b) => b !== bound),
    `balanced, not bound to ${bound}: ${got.join(' ')}`,
  );
}

const BAD: Array<[string, (sid: string) => string]> = [
  ['unknown value', () => 'srv_id=0123456789abcdef0123456789abcdef'],
  ['malformed (bad chars)', (sid) => `srv_id=${sid}\\"x`],
  ['malformed (quoted part)', (sid) => `srv_id="${sid}`],
  ['too long (> 256)', (sid) => `srv_id=${sid}${'x'.repeat(257 - sid.length)}`],
  ['uppercase variant', (sid) => `srv_id=${sid.toUpperCase()}`],
  ['empty', () => 'srv_id='],
];
for (const [name, make] of BAD) {
  test(`rebalanced with a new cookie: ${name}`, async (t) => {
    const { pool, gw, ups } = await abc(t);
    await assertRebalanced(gw, pool, make(sidOf(pool, 'c')), 'c');
    // RR unaffected: requests spread over all three
    const total = ups.a!.seen.length + ups.b!.seen.length + ups.c!.seen.length;
    assert.equal(total, 4);
  });
}

test('a 32-char route binds; a 300-char value is ignored', async (t) => {
  const ups = await named(t, ['a', 'b']);
  const pool = poolOf(t, ups, { extra: { b: { route: 'r'.repeat(32) } } });
  const gw = await stickyGateway(t, pool, { cookie: true });
  assert.deepEqual(await bodies(gw, 3, { cookie: `srv_id=${'r'.repeat(32)}` }), ['b', 'b', 'b']);
  await assertRebalanced(gw, pool, `srv_id=${'r'.repeat(300)}`, 'b');
});

test('a cookie naming a down server is rebalanced (pool.update down)', async (t) => {
  const { pool, gw, ups } = await abc(t);
  pool.update('c', { down: true });
  const cookie = `srv_id=${sidOf(pool, 'c')}`;
  await assertRebalanced(gw, pool, cookie, 'c');
  assert.equal(ups.c!.seen.length, 0);
  pool.update('c', { down: false });
  assert.deepEqual(await bodies(gw, 2, { cookie }), ['c', 'c']);
});

test('bound server answering 502 with nextUpstream http_502: moved, re-cookied, then unavailable (maxFails)', async (t) => {
  const ups: Record<string, Upstream> = {
    a: await upstream(t, 'a'),
    b: await upstream(t, 'b'),
    c: await upstream(t, 'c', (_req, res) => {
      res.statusCode = 502;
      res.end('c-broken');
    }),
  };
  const pool = poolOf(t, ups, { extra: { c: { maxFails: 1, failTimeout: '60s' } } });
  const gw = await stickyGateway(t, pool, { cookie: true }, { nextUpstream: ['error', 'timeout', 'http_502'] });
  const cookie = `srv_id=${sidOf(pool, 'c')}`;
  const first = await gw.get('/', { cookie });
  assert.equal(first.status, 200);
  assert.notEqual(first.body, 'c');
  assert.deepEqual(setCookies(first), [`srv_id=${sidOf(pool, first.body)}`]);
  assert.equal(ups.c!.seen.length, 1);
  await assertRebalanced(gw, pool, cookie, 'c');
  assert.equal(ups.c!.seen.length, 1, 'an unavailable bound server is not tried');
});

test('bound server on a dead port: next-upstream moves the request and the cookie names the new server', async (t) => {
  const ups = await named(t, ['a', 'b']);
  const dead = await deadPort();
  const pool = createPool({
    servers: [
      { id: 'a', url: ups.a!.url },
      { id: 'x', url: `http://127.0.0.1:${dead}` },
      { id: 'b', url: ups.b!.url },
    ],
  });
  t.after(() => pool.close());
  const gw = await stickyGateway(t, pool, { cookie: true }, { nextUpstream: ['error', 'timeout'] });
  const cookie = `srv_id=${sidOf(pool, 'x')}`;
  const r = await gw.get('/', { cookie });
  assert.equal(r.status, 200);
  assert.ok(r.body === 'a' || r.body === 'b');
  assert.deepEqual(setCookies(r), [`srv_id=${sidOf(pool, r.body)}`]);
  const stats = pool.stats().servers.find((s) => s.id === 'x')!;
  assert.equal(stats.fails, 1, 'the bound server was tried first');
  await assertRebalanced(gw, pool, cookie, 'x');
});

test('a cookie naming a full server (maxConns 1, one request held) is rebalanced', async (t) => {
  let release: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  const ups: Record<string, Upstream> = {
    a: await upstream(t, 'a'),
    b: await upstream(t, 'b'),
    c: await upstream(t, 'c', (req, res) => {
      if (req.url === '/hold') void held.then(() => res.end('c'));
      else res.end('c');
    }),
  };
  t.after(() => release());
  const pool = poolOf(t, ups, { extra: { c: { maxConns: 1 } } });
  const gw = await stickyGateway(t, pool, { cookie: true });
  const cookie = `srv_id=${sidOf(pool, 'c')}`;
  const hold = gw.get('/hold', { cookie });
  while (ups.c!.seen.length === 0) await new Promise((r) => setTimeout(r, 5));
  await assertRebalanced(gw, pool, cookie, 'c');
  release();
  const h = await hold;
  assert.equal(h.body, 'c');
  assert.deepEqual(setCookies(h), [cookie]);
  assert.deepEqual(await bodies(gw, 2, { cookie }), ['c', 'c'], 'bound again once it has room');
});

test('no server at all (all down): error status and no Set-Cookie', async (t) => {
  const { pool, gw } = await abc(t);
  for (const id of ['a', 'b', 'c']) pool.update(id, { down: true });
  for (const cookie of [undefined, `srv_id=${sidOf(pool, 'a')}`]) {
    const r = await gw.get('/', cookie === undefined ? {} : { cookie });
    assert.ok(r.status === 502 || r.status === 503, `status ${r.status}`);
    assert.deepEqual(setCookies(r), []);
  }
});

test('no server answers (all on dead ports): 502 and no Set-Cookie', async (t) => {
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }, { url: `http://127.0.0.1:${await deadPort()}` }] });
  t.after(() => pool.close());
  const gw = await stickyGateway(t, pool, { cookie: true });
  const r = await gw.get('/', { cookie: `srv_id=${pool.servers[0]!.sid}` });
  assert.equal(r.status, 502);
  assert.deepEqual(setCookies(r), []);
});

const SECRET = 'a-secret-of-more-than-16-bytes';
function signed(sid: string, secret: string): string {
  return `${sid}.${createHmac('sha256', secret).update(sid).digest('base64url').slice(0, 32)}`;
}

test('secret: the cookie is <sid>.<signature> and the same cookie sticks', async (t) => {
  const { pool, gw } = await abc(t, { secret: SECRET });
  const r = await gw.get();
  const v = cookieValue(r)!;
  assert.match(v, /^[0-9a-f]{32}\.[A-Za-z0-9_-]{32}$/);
  assert.equal(v.split('.')[0], sidOf(pool, r.body));
  assert.deepEqual(setCookies(r), [`srv_id=${v}`]);
  const target = r.body;
  for (let i = 0; i < 4; i++) {
    const again = await gw.get('/', { cookie: `srv_id=${v}` });
    assert.equal(again.body, target);
    assert.equal(cookieValue(again), v);
  }
});

test('secret: tampered signature, forged unsigned sid, or another secret → rebalanced with a new signed cookie', async (t) => {
  const { pool, gw } = await abc(t, { secret: SECRET });
  const sid = sidOf(pool, 'c');
  const good = signed(sid, SECRET);
  // sanity: the documented construction is what the gateway accepts
  assert.deepEqual(await bodies(gw, 2, { cookie: `srv_id=${good}` }), ['c', 'c']);
  const last = good.at(-1) === 'A' ? 'B' : 'A';
  const forged = [`${good.slice(0, -1)}${last}`, sid, signed(sid, 'another-secret-of-16+bytes'), `${sid}.`, `.${good.split('.')[1]}`, `${good}x`];
  for (const value of forged) {
    const got: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await gw.get('/', { cookie: `srv_id=${value}` });
      assert.equal(cookieValue(r), signed(sidOf(pool, r.body), SECRET), `new signed cookie for ${value}`);
      got.push(r.body);
    }
    assert.ok(
      got.some((b) => b !== 'c'),
      `${value} must not bind: ${got.join(' ')}`,
    );
  }
});

test('secret shorter than 16 bytes → InvalidOptionError cookie.secret', async (t) => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  t.after(() => pool.close());
  for (const secret of ['short', '', Buffer.alloc(15)]) {
    assert.throws(
      () => sticky(pool, { cookie: { secret } }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'cookie.secret',
    );
  }
  assert.doesNotThrow(() => sticky(pool, { cookie: { secret: Buffer.alloc(16, 1) } }));
});

const INVALID: Array<[string, unknown, string]> = [
  ['cookie.domain with space and ;', { cookie: { domain: 'bad domain;x' } }, 'cookie.domain'],
  ['cookie.path without slash', { cookie: { path: 'no-slash' } }, 'cookie.path'],
  ['cookie.path with ;', { cookie: { path: '/a;b' } }, 'cookie.path'],
  ['cookie.sameSite sometimes', { cookie: { sameSite: 'sometimes' } }, 'cookie.sameSite'],
  ['cookie.sameSite none without secure', { cookie: { sameSite: 'none' } }, 'cookie.sameSite'],
  ['cookie.name with space', { cookie: { name: 'a b' } }, 'cookie.name'],
  ['cookie.name empty', { cookie: { name: '' } }, 'cookie.name'],
  ['cookie.expires 0', { cookie: { expires: 0 } }, 'cookie.expires'],
  ['cookie.expires -1s', { cookie: { expires: '-1s' } }, 'cookie.expires'],
  ['two modes', { cookie: true, route: { cookie: 'route' } }, 'options'],
  ['no mode', {}, 'options'],
];
for (const [name, opts, option] of INVALID) {
  test(`sticky() rejects ${name}: InvalidOptionError naming "${option}"`, (t) => {
    const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
    t.after(() => pool.close());
    assert.throws(
      () => sticky(pool, opts as StickyOptions),
      (e: unknown) => e instanceof InvalidOptionError && e.option === option,
    );
  });
}

test('sticky() rejects a pool that is not an UpstreamPool', () => {
  for (const pool of [undefined, {}, { servers: [] }]) {
    assert.throws(
      () => sticky(pool as unknown as UpstreamPool, { cookie: true }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'pool',
    );
  }
});

test('a forged cookie can only select a server of the pool', async (t) => {
  const outsider = await upstream(t, 'outsider');
  const { ups, gw } = await abc(t);
  const forged = [
    '127.0.0.1:1',
    'http://evil',
    '../x',
    `127.0.0.1:${outsider.port}`,
    outsider.url,
    createHash('md5').update(`127.0.0.1:${outsider.port}`).digest('hex'),
    'http%3A%2F%2Fevil',
    '//evil.example/x',
  ];
  let n = 0;
  for (const value of forged) {
    const r = await gw.get('/', { cookie: `srv_id=${value}` });
    n++;
    assert.equal(r.status, 200);
    assert.ok(['a', 'b', 'c'].includes(r.body), r.body);
  }
  assert.equal(outsider.seen.length, 0);
  assert.equal(ups.a!.seen.length + ups.b!.seen.length + ups.c!.seen.length, n);
});
