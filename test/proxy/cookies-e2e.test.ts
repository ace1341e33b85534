// balance()'s cookieDomain, cookiePath and cookieFlags (nginx proxy_cookie_domain, proxy_cookie_path,
// proxy_cookie_flags) on real sockets: an upstream's Set-Cookie headers as the client gets them
// through node:http chain() and Express, variables in the replacement, values nothing applies to
// passed byte for byte, hostile values from the upstream answered without a crash, options refused
// when balance() is called.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import express from 'express';
import { balance, chain, createPool, InvalidOptionError, sticky, type BalanceOptions } from '../../src/index.ts';
import { fetchText, gateway, listen, poolOf, upstream } from '../helpers.ts';

const T = { timeout: 15_000 };

const OPTIONS: BalanceOptions = {
  cookieDomain: [
    { from: 'backend.internal', to: '$host' },
    { from: /^(\w+)\.corp\.lan$/, to: '$1.example.com' },
  ],
  cookiePath: [{ from: '/app/', to: '/api/' }],
  cookieFlags: [
    { cookie: 'sid', flags: ['secure', 'httponly', 'samesite=lax'] },
    { cookie: /^tmp_/, flags: ['nosecure', 'nosamesite'] },
  ],
};

/** Set-Cookie values an upstream may send, within Node's 16 KiB of response head. */
const HOSTILE = [
  `sid=${'a'.repeat(2_000)}${'; Path=/app/'.repeat(400)}`,
  ';;;;',
  'no-equals; Domain=backend.internal',
  '=; domain=; path=; samesite; secure=1',
  'sid=1;\tDomain=backend.internal',
  'SID=1; DOMAIN=BACKEND.INTERNAL; PATH=/app/',
];

/** An upstream answering `/hostile` with {@link HOSTILE}, anything else with ordinary Set-Cookie headers. */
async function origin(t: TestContext) {
  return upstream(t, 'origin', (req, res) => {
    const cookies: string[] =
      req.url === '/hostile'
        ? HOSTILE
        : [
            'sid=abc; Domain=.Backend.Internal; Path=/app/; SameSite=None',
            'tmp_x=1; Path=/app/x; Secure; SameSite=Strict',
            'pref=dark; Domain=hr.corp.lan; Path=/other',
            'plain=1;path=/;  Max-Age=60',
          ];
    res.writeHead(200, [['content-type', 'text/plain'], ...cookies.map((c) => ['set-cookie', c])].flat());
    res.end('ok');
  });
}

test('node:http chain(): Domain, Path and flags of each Set-Cookie rewritten as nginx does', T, async (t) => {
  const up = await origin(t);
  const gw = await gateway(t, chain(balance(poolOf(t, [up.url]), OPTIONS)));
  const r = await fetchText(`${gw.url}/cookies`, { headers: { host: 'Shop.Example.com:8080' } });
  assert.equal(r.status, 200);
  assert.deepEqual(r.headers['set-cookie'], [
    // The cookie keeps its leading dot; $host is the request's, lowercase and without its port.
    'sid=abc; Domain=.shop.example.com; Path=/api/; SameSite=Lax; Secure; HttpOnly',
    'tmp_x=1; Path=/api/x',
    'pref=dark; Domain=hr.example.com; Path=/other',
    // Nothing applies: as the upstream wrote it.
    'plain=1;path=/;  Max-Age=60',
  ]);
  assert.equal(r.body, 'ok');
});

test('Express: the same rewriting behind app.use(path, balance())', T, async (t) => {
  const up = await origin(t);
  const app = express();
  app.set('env', 'test');
  app.use('/api', balance(poolOf(t, [up.url]), OPTIONS));
  const gw = await listen(t, createServer(app));
  const r = await fetchText(`${gw.url}/api/cookies`, { headers: { host: 'shop.example.com' } });
  assert.equal(r.status, 200);
  assert.deepEqual(r.headers['set-cookie'], [
    'sid=abc; Domain=.shop.example.com; Path=/api/; SameSite=Lax; Secure; HttpOnly',
    'tmp_x=1; Path=/api/x',
    'pref=dark; Domain=hr.example.com; Path=/other',
    'plain=1;path=/;  Max-Age=60',
  ]);
});

test('hostile Set-Cookie values from an upstream: answered, rewritten where they parse, never a crash', T, async (t) => {
  const up = await origin(t);
  const gw = await gateway(t, chain(balance(poolOf(t, [up.url]), OPTIONS)));
  const r = await fetchText(`${gw.url}/hostile`, { headers: { host: 'shop.example.com' } });
  assert.equal(r.status, 200);
  const got = r.headers['set-cookie']!;
  assert.equal(got.length, HOSTILE.length);
  assert.equal(got[0]!.split('; Path=/api/').length, 401);
  assert.ok(got[0]!.endsWith('; Path=/api/; Secure; HttpOnly; SameSite=Lax'));
  assert.equal(got[1], ';;;;');
  assert.equal(got[2], 'no-equals; Domain=backend.internal', 'no name=value first: left alone, as nginx');
  assert.equal(got[3], '=; domain=; path=; samesite; secure=1');
  // A tab is not a space to nginx: "\tDomain" is no Domain attribute (the flags apply all the same).
  assert.equal(got[4], 'sid=1; \tDomain=backend.internal; Secure; HttpOnly; SameSite=Lax');
  // Cookie names and attribute names in any case.
  assert.equal(got[5], 'SID=1; DOMAIN=shop.example.com; PATH=/api/; Secure; HttpOnly; SameSite=Lax');
});

test('balance() refuses bad cookie options naming their path', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  const bad: Array<[BalanceOptions, string]> = [
    [{ cookieDomain: [{ from: '', to: 'x' }] }, 'cookieDomain[0].from'],
    [{ cookiePath: [{ from: '/', to: 'a\nb' }] }, 'cookiePath[0].to'],
    [{ cookieFlags: [{ cookie: 'a', flags: ['secure', 'bogus' as 'secure'] }] }, 'cookieFlags[0].flags[1]'],
  ];
  try {
    for (const [options, option] of bad) {
      assert.throws(
        () => balance(pool, options),
        (e: unknown) => e instanceof InvalidOptionError && e.option === option,
        option,
      );
    }
  } finally {
    pool.close();
  }
});

test("sticky()'s own cookie is not the upstream's: the cookie rules leave it alone (nginx rewrites the upstream's headers only)", T, async (t) => {
  const up = await origin(t);
  const pool = poolOf(t, [up.url]);
  const gw = await gateway(
    t,
    chain(
      sticky(pool, { cookie: { name: 'srv_id', path: '/app/', sameSite: 'none', secure: true } }),
      balance(pool, { cookiePath: [{ from: '/app/', to: '/api/' }], cookieFlags: [{ cookie: /./, flags: ['samesite=strict'] }] }),
    ),
  );
  const r = await fetchText(`${gw.url}/cookies`, { headers: { host: 'shop.example.com' } });
  assert.equal(r.status, 200);
  const cookies = r.headers['set-cookie']!;
  const own = cookies.find((c) => c.startsWith('srv_id='));
  assert.ok(own !== undefined);
  assert.match(own, /samesite=none/i);
  assert.match(own, /path=\/app\//i);
  assert.equal(cookies.find((c) => c.startsWith('sid='))?.includes('SameSite=Strict'), true, "the upstream's cookies are rewritten");
});
