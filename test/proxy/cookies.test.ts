// nginx's proxy_cookie_domain, proxy_cookie_path and proxy_cookie_flags (src/proxy/cookies.ts) as
// pure functions: the expected values are nginx's (nginx-tests proxy_cookie.t and
// proxy_cookie_flags.t, and ngx_http_proxy_rewrite_cookie's splitting and joining), then validation,
// then hostile Set-Cookie values from an upstream (a seeded fast-check run).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import fc from 'fast-check';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { exchange } from '../../src/core/exchange.ts';
import { cookieRules, rewriteSetCookie, type CookieOptions, type CookieRules } from '../../src/proxy/cookies.ts';

function fakeRequest(headers: Record<string, string> = { host: 'localhost' }): IncomingMessage {
  return {
    url: '/',
    method: 'GET',
    headers,
    httpVersion: '1.1',
    socket: { remoteAddress: '10.1.2.3', remotePort: 5555, localAddress: '127.0.0.1', localPort: 80 },
  } as unknown as IncomingMessage;
}

function rules(options: CookieOptions): CookieRules {
  const r = cookieRules(options);
  assert.ok(r !== undefined);
  return r;
}

// proxy_cookie.t's configuration, $server_name read as $host (localhost).
const NGINX_COOKIE = rules({
  cookieDomain: [
    { from: 'www.example.org', to: '.example.com' },
    { from: '.$host.com', to: 'en.$host.org' },
    { from: /^(.+)\.com$/, to: '$1.org' },
  ],
  cookiePath: [
    { from: '/path/', to: '/new/' },
    { from: '/$host/', to: '/new/$host/' },
    { from: /^\/regex\/(.+)$/, to: '/$1' },
    { from: /^\/caseless\/(.+)$/i, to: '/$1' },
  ],
});

test('proxy_cookie_domain and proxy_cookie_path: the cases of nginx-tests proxy_cookie.t', () => {
  const ex = exchange(fakeRequest());
  const table: Array<[string, string]> = [
    ['v=path=domain=; Domain=www.Example.org', 'v=path=domain=; Domain=example.com'],
    ['v=path=domain=; Domain=.LocalHost.com', 'v=path=domain=; Domain=.en.localhost.org'],
    ['v=path=domain=; Domain=www.example.COM', 'v=path=domain=; Domain=www.example.org'],
    ['v=path=domain=; Path=/path/test.html', 'v=path=domain=; Path=/new/test.html'],
    ['v=path=domain=; Path=/localhost/test.html', 'v=path=domain=; Path=/new/localhost/test.html'],
    ['v=path=domain=; Path=/regex/test.html', 'v=path=domain=; Path=/test.html'],
    ['v=path=domain=; Path=/CASEless/test.html', 'v=path=domain=; Path=/test.html'],
    ['v=path=domain=; Domain=www.example.org; Path=/path/test.html', 'v=path=domain=; Domain=example.com; Path=/new/test.html'],
  ];
  for (const [input, output] of table) assert.equal(rewriteSetCookie(NGINX_COOKIE, input, ex), output, input);
});

test('domains: a string matches the whole value in any case, leading dots aside; the cookie keeps its dot', () => {
  const ex = exchange(fakeRequest());
  const r = rules({ cookieDomain: [{ from: 'Backend.Internal', to: 'example.com' }] });
  const table: Array<[string, string]> = [
    ['a=1; domain=backend.internal', 'a=1; domain=example.com'],
    ['a=1; Domain=.BACKEND.internal', 'a=1; Domain=.example.com'],
    // Not a suffix match, not a prefix match.
    ['a=1; Domain=api.backend.internal', 'a=1; Domain=api.backend.internal'],
    ['a=1; Domain=backend.internal.evil', 'a=1; Domain=backend.internal.evil'],
    // Every Domain attribute is rewritten, attribute names in any case.
    ['a=1; DOMAIN=backend.internal; domain=backend.internal', 'a=1; DOMAIN=example.com; domain=example.com'],
    // A Domain without a value is left alone (and the value, nothing having changed, is as it came).
    ['a=1;domain;path=/', 'a=1;domain;path=/'],
  ];
  for (const [input, output] of table) assert.equal(rewriteSetCookie(r, input, ex), output, input);
});

test('domains: a RegExp matches in any case (nginx ~ in proxy_cookie_domain) and replaces the whole value', () => {
  const ex = exchange(fakeRequest({ host: 'Shop.Example.com:8443' }));
  const r = rules({
    cookieDomain: [
      { from: /internal/, to: '$host' },
      { from: /^(?<sub>[a-z]+)\.corp$/, to: '$sub.example.org' },
    ],
  });
  assert.equal(rewriteSetCookie(r, 'a=1; Domain=api.INTERNAL.lan', ex), 'a=1; Domain=shop.example.com');
  assert.equal(rewriteSetCookie(r, 'a=1; Domain=HR.corp', ex), 'a=1; Domain=HR.example.org');
  // A global RegExp carries no lastIndex from one cookie to the next.
  const g = rules({ cookieDomain: [{ from: /x/g, to: 'y' }] });
  for (let i = 0; i < 3; i++) assert.equal(rewriteSetCookie(g, 'a=1; Domain=x', ex), 'a=1; Domain=y');
});

test('paths: a string is a case-sensitive prefix; a RegExp as its flags say; first matching rule wins', () => {
  const ex = exchange(fakeRequest());
  const r = rules({
    cookiePath: [
      { from: '/app/', to: '/' },
      { from: '/', to: '/gateway/' },
      { from: /^\/never/, to: '/unreached' },
    ],
  });
  const table: Array<[string, string]> = [
    ['a=1; Path=/app/x', 'a=1; Path=/x'],
    ['a=1; Path=/APP/x', 'a=1; Path=/gateway/APP/x'],
    ['a=1; Path=/never', 'a=1; Path=/gateway/never'],
    ['a=1; Path=relative', 'a=1; Path=relative'],
  ];
  for (const [input, output] of table) assert.equal(rewriteSetCookie(r, input, ex), output, input);
  const sensitive = rules({ cookiePath: [{ from: /^\/caseless\/(.+)$/, to: '/$1' }] });
  assert.equal(rewriteSetCookie(sensitive, 'a=1; Path=/CASEless/t', ex), 'a=1; Path=/CASEless/t');
});

test('a value nothing applies to is passed on byte for byte; one a rule changed is joined as nginx joins it', () => {
  const ex = exchange(fakeRequest());
  const r = rules({ cookiePath: [{ from: '/a', to: '/b' }] });
  const odd = 'a = 1 ;;Path =  /x  ;  Secure;';
  assert.equal(rewriteSetCookie(r, odd, ex), odd);
  // Spaces around names and values dropped, empty parts kept as nginx keeps them.
  assert.equal(rewriteSetCookie(r, 'a = 1 ;;Path =  /a/x  ;  Secure;', ex), 'a=1; ; Path=/b/x; Secure; ');
  // Tabs are not spaces to nginx.
  assert.equal(rewriteSetCookie(r, 'a=1;\tPath=/a', ex), 'a=1;\tPath=/a');
  // No name=value first: nginx leaves the header alone.
  assert.equal(rewriteSetCookie(r, 'garbage; Path=/a', ex), 'garbage; Path=/a');
  assert.equal(rewriteSetCookie(r, '', ex), '');
});

// proxy_cookie_flags.t's configuration ($arg_complex aside: names are not templates here).
const NGINX_FLAGS = rules({
  cookieFlags: [
    { cookie: 'a', flags: ['secure', 'httponly', 'samesite=none'] },
    { cookie: 'b', flags: ['secure', 'httponly', 'samesite=lax'] },
    { cookie: 'c', flags: ['secure', 'httponly', 'samesite=strict'] },
    { cookie: 'd', flags: ['nosecure', 'nohttponly', 'nosamesite'] },
    { cookie: /BAR/, flags: ['httponly'] },
  ],
});

test('proxy_cookie_flags: the cases of nginx-tests proxy_cookie_flags.t', () => {
  const ex = exchange(fakeRequest());
  const base = '=path=domain=; Domain=example.org';
  const table: Array<[string, string]> = [
    [`a${base}`, `a${base}; Secure; HttpOnly; SameSite=None`],
    [`b${base}`, `b${base}; Secure; HttpOnly; SameSite=Lax`],
    [`c${base}`, `c${base}; Secure; HttpOnly; SameSite=Strict`],
    [`a${base};Secure;HttpOnly;SameSite=Lax`, `a${base}; Secure; HttpOnly; SameSite=None`],
    [`b${base};Secure;HttpOnly;SameSite=None`, `b${base}; Secure; HttpOnly; SameSite=Lax`],
    [`c${base};Secure;HttpOnly;SameSite=None`, `c${base}; Secure; HttpOnly; SameSite=Strict`],
    [`d${base};secure;httponly;samesite=lax`, `d${base}`],
    [`nx${base};samesite=none`, `nx${base};samesite=none`],
    [`foobarbaz${base}`, `foobarbaz${base}; HttpOnly`],
  ];
  for (const [input, output] of table) assert.equal(rewriteSetCookie(NGINX_FLAGS, input, ex), output, input);
});

test('proxy_cookie_flags: names in any case, first matching rule wins, flags kept where they are', () => {
  const ex = exchange(fakeRequest());
  const r = rules({
    cookieFlags: [
      { cookie: 'SID', flags: ['samesite=strict'] },
      { cookie: 'sid', flags: ['secure'] },
      { cookie: /^tmp_/, flags: ['nosecure', 'samesite=lax'] },
    ],
  });
  // The first rule wins: no Secure from the second. A SameSite already Strict keeps its spelling.
  assert.equal(rewriteSetCookie(r, 'sid=1; samesite=strict; Path=/', ex), 'sid=1; samesite=strict; Path=/');
  assert.equal(rewriteSetCookie(r, 'Sid=1; SameSite=Lax; Path=/', ex), 'Sid=1; SameSite=Strict; Path=/');
  assert.equal(rewriteSetCookie(r, 'TMP_x=1; SECURE; samesite', ex), 'TMP_x=1; SameSite=Lax');
  assert.equal(rewriteSetCookie(r, 'other=1; Secure', ex), 'other=1; Secure');
});

test('domain, path and flags together on one cookie', () => {
  const ex = exchange(fakeRequest());
  const r = rules({
    cookieDomain: [{ from: 'backend', to: 'example.com' }],
    cookiePath: [{ from: '/', to: '/api/' }],
    cookieFlags: [{ cookie: /./, flags: ['secure', 'httponly'] }],
  });
  assert.equal(rewriteSetCookie(r, 'sid=abc; Domain=backend; Path=/; Max-Age=60', ex), 'sid=abc; Domain=example.com; Path=/api/; Max-Age=60; Secure; HttpOnly');
});

test('options: false, absent and [] are off; each mistake is an InvalidOptionError naming its path', () => {
  assert.equal(cookieRules({}), undefined);
  assert.equal(cookieRules({ cookieDomain: false, cookiePath: [], cookieFlags: undefined }), undefined);
  const bad: Array<[unknown, string, RegExp?]> = [
    [{ cookieDomain: true }, 'cookieDomain'],
    [{ cookieDomain: [null] }, 'cookieDomain[0]'],
    [{ cookieDomain: [{ from: '', to: 'x' }] }, 'cookieDomain[0].from'],
    [{ cookieDomain: [{ from: '.', to: 'x' }] }, 'cookieDomain[0].from'],
    [
      {
        cookieDomain: [
          { from: 'a', to: 'b' },
          { from: 3, to: 'b' },
        ],
      },
      'cookieDomain[1].from',
    ],
    [{ cookieDomain: [{ from: 'a' }] }, 'cookieDomain[0].to'],
    [{ cookieDomain: [{ from: 'a', to: 'b\r\nX-Evil: 1' }] }, 'cookieDomain[0].to'],
    [{ cookieDomain: [{ from: 'a', to: 'b', form: 'c' }] }, 'cookieDomain[0].form', /did you mean "cookieDomain\[0\]\.from"/],
    [{ cookiePath: 'off' }, 'cookiePath'],
    [{ cookiePath: [{ from: /x/, to: null }] }, 'cookiePath[0].to'],
    [{ cookieFlags: [{ cookie: 'a', flags: [] }] }, 'cookieFlags[0].flags'],
    [{ cookieFlags: [{ cookie: 'a', flags: 'secure' }] }, 'cookieFlags[0].flags'],
    [{ cookieFlags: [{ cookie: 'a', flags: ['secure', 'samesite=sometimes'] }] }, 'cookieFlags[0].flags[1]', /unknown cookie flag "samesite=sometimes"/],
    [{ cookieFlags: [{ cookie: '', flags: ['secure'] }] }, 'cookieFlags[0].cookie'],
    [{ cookieFlags: [{ name: 'a', flags: ['secure'] }] }, 'cookieFlags[0].name'],
  ];
  for (const [options, option, message] of bad) {
    assert.throws(
      () => cookieRules(options as CookieOptions),
      (e: unknown) => e instanceof InvalidOptionError && e.option === option && (message === undefined || message.test(e.message)),
      JSON.stringify(options),
    );
  }
  // nginx reads flags in any case.
  assert.ok(cookieRules({ cookieFlags: [{ cookie: 'a', flags: ['SameSite=Lax' as 'samesite=lax'] }] }));
});

test("options: the caller's objects are not written, and a later change to them changes nothing", () => {
  const ex = exchange(fakeRequest());
  const options = { cookiePath: [{ from: '/a', to: '/b' }] };
  const frozen = JSON.stringify(options);
  const r = rules(options);
  assert.equal(JSON.stringify(options), frozen);
  options.cookiePath[0]!.to = '/changed';
  assert.equal(rewriteSetCookie(r, 'x=1; path=/a', ex), 'x=1; path=/b');
  assert.ok(Object.isFrozen(r));
});

test('a rewrite that would put a control character into the header is dropped for the value as it came', () => {
  // A capture of the cookie's own bytes, a variable from the request: neither may smuggle CR/LF/NUL.
  const ex = exchange(fakeRequest({ host: 'localhost', 'x-to': 'evil' }));
  ex.vars.set('crlf', 'a\r\nSet-Cookie: admin=1');
  ex.vars.set('wide', '\u20ac');
  const r = rules({ cookieDomain: [{ from: 'x', to: '$crlf' }], cookiePath: [{ from: /^(.*)$/, to: '$1$wide' }] });
  assert.equal(rewriteSetCookie(r, 'a=1; Domain=x', ex), 'a=1; Domain=x');
  // A character Node cannot write in a header (above \xff) too.
  assert.equal(rewriteSetCookie(r, 'a=1; Path=/p', ex), 'a=1; Path=/p');
});

test('hostile Set-Cookie values: never a throw, never CR/LF, work linear in the value', () => {
  const ex = exchange(fakeRequest());
  const all = rules({
    cookieDomain: [
      { from: 'backend', to: '.example.com' },
      { from: /^(.+)\.lan$/, to: '$1.example.com' },
    ],
    cookiePath: [{ from: '/', to: '/api/' }],
    cookieFlags: [
      { cookie: 'sid', flags: ['secure', 'httponly', 'samesite=lax'] },
      { cookie: /^t/, flags: ['nosecure', 'nohttponly', 'nosamesite'] },
    ],
  });
  const names = fc.constantFrom('domain', 'Domain', 'PATH', 'path', 'secure', 'HttpOnly', 'samesite', 'SameSite', 'max-age', 'x', '');
  const values = fc.oneof(
    fc.constantFrom('backend', '.backend', 'a.lan', '/', '/x', 'Lax', 'strict', '', '=', ' = '),
    fc.string({ maxLength: 12 }),
    fc.string({ unit: 'binary', maxLength: 8 }),
  );
  const attribute = fc
    .tuple(fc.constantFrom('', ' ', '  ', '\t'), names, fc.option(values), fc.constantFrom('', ' '))
    .map(([pad, name, value, tail]) => `${pad}${name}${value === null ? '' : `=${value}`}${tail}`);
  const cookie = fc
    .tuple(fc.constantFrom('sid', 'SID', 'tmp', 'other', '', 'no-equals'), fc.boolean(), fc.array(attribute, { maxLength: 12 }))
    .map(([name, eq, attrs]) => [eq ? `${name}=v` : name, ...attrs].join(';'));
  fc.assert(
    fc.property(cookie, (value) => {
      const out = rewriteSetCookie(all, value, ex);
      assert.equal(typeof out, 'string');
      if (/[\r\n\0]/.test(out)) assert.equal(out, value, 'a control character only when it came from the upstream');
      // Idempotent where nginx's result is: a second pass changes nothing more than the first did.
      return true;
    }),
    { seed: 17, numRuns: 3000 },
  );
  // Very long values and very many attributes: one pass each (no backtracking in the splitting).
  const many = `sid=1${'; Path=/'.repeat(50_000)}`;
  const out = rewriteSetCookie(all, many, ex);
  assert.equal(out.split('; Path=/api/').length, 50_001);
  const long = `sid=${'a'.repeat(1_000_000)}; ${' '.repeat(100_000)}=${' '.repeat(100_000)}`;
  assert.ok(rewriteSetCookie(all, long, ex).endsWith('; Secure; HttpOnly; SameSite=Lax'));
  assert.equal(rewriteSetCookie(all, ';'.repeat(100_000), ex), ';'.repeat(100_000));
  // Many parts and one '=' at the very end: each part is searched for '=' within itself only.
  const late = `sid=1${';'.repeat(200_000)}x=`;
  assert.ok(rewriteSetCookie(all, late, ex).endsWith('; x=; Secure; HttpOnly; SameSite=Lax'));
});
