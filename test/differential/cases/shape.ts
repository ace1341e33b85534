// Response shaping: balance()'s cookie options against nginx's proxy_cookie_domain, proxy_cookie_path
// and proxy_cookie_flags, and shapeResponse()'s `add`/`always` against add_header. Drawn from
// nginx-tests proxy_cookie.t, proxy_cookie_flags.t and headers.t, with seeded "attribute soup":
// Set-Cookie values made of odd attributes (repeated, empty, spaced, in any case) from a fixed seed,
// the same on every run.
import type { CookieOptions } from '../../../src/index.ts';
import { type Behaviour, type Case, type Reply, req, type Step } from '../harness.ts';

const TEXT: Array<[string, string]> = [['Content-Type', 'text/plain']];

/** The query arguments of a recorded target. */
const args = (target: string) => new URLSearchParams(target.slice(target.indexOf('?') + 1 || target.length));

/** GET `target`, comparing the Set-Cookie lines (joined in order). */
const cookieStep = (target: string, host = 'test.example'): Step => ({ request: req(`GET ${target}`, {}, undefined, host), headers: ['set-cookie'] });

// ---------------------------------------------------------------- nginx-tests

/** proxy_cookie.t's rules, `$server_name` (localhost there) read as `$host` with Host: localhost. */
const PROXY_COOKIE_T: CookieOptions = {
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
};

/** proxy_cookie.t's upstream: `v=path=domain=`, with `; Domain=` and `; Path=` from the arguments. */
const domainAndPath: Behaviour = (r): Reply => {
  const a = args(r.target);
  const domain = a.get('domain');
  const path = a.get('path');
  return { headers: [...TEXT, ['Set-Cookie', `v=path=domain=${domain ? `; Domain=${domain}` : ''}${path ? `; Path=${path}` : ''}`]], body: 'OK' };
};

/** proxy_cookie_flags.t's rules (its `$arg_complex` name and variable flags aside: switchyard's names and flags are fixed). */
const PROXY_COOKIE_FLAGS_T: CookieOptions = {
  cookieFlags: [
    { cookie: 'a', flags: ['secure', 'httponly', 'samesite=none'] },
    { cookie: 'b', flags: ['secure', 'httponly', 'samesite=lax'] },
    { cookie: 'c', flags: ['secure', 'httponly', 'samesite=strict'] },
    { cookie: 'd', flags: ['nosecure', 'nohttponly', 'nosamesite'] },
    { cookie: /BAR/, flags: ['httponly'] },
  ],
};

/** proxy_cookie_flags.t's upstream: `$arg_v=path=domain=; Domain=example.org$arg_f`. */
const namedWithFlags: Behaviour = (r): Reply => {
  const a = args(r.target);
  return { headers: [...TEXT, ['Set-Cookie', `${a.get('v') ?? ''}=path=domain=; Domain=example.org${a.get('f') ?? ''}`]], body: 'OK' };
};

// ---------------------------------------------------------------- all three, and attribute soup

/** Domain, path and flags rules together: strings with variables, RegExps with groups, names and patterns. */
const MIXED: CookieOptions = {
  cookieDomain: [
    { from: 'backend.internal', to: '$host' },
    { from: /^(\w+)\.corp\.lan$/, to: '$1.example.com' },
  ],
  cookiePath: [
    { from: '/app/', to: '/api/' },
    { from: /^\/APP\/(.*)$/i, to: '/v2/$1' },
  ],
  cookieFlags: [
    { cookie: 'sid', flags: ['secure', 'httponly', 'samesite=lax'] },
    { cookie: /^tmp_/, flags: ['nosecure', 'nosamesite'] },
  ],
};

/** Hand-picked values: repeated and conflicting attributes, empty parts, spaces around `=`, a trailing dot. */
const PICKED = [
  'sid=abc; Domain=.Backend.Internal; Path=/app/; SameSite=None',
  'sid=1; samesite=lax; samesite=none',
  'sid=1; secure; Secure',
  'tmp_x=1; secure; samesite=strict; SameSite=Lax',
  'a=1;;Path=/app/;',
  'a = 1 ; Path = /app/x ;',
  'a=1; Domain=backend.internal.; path=/app',
  'b=2; Domain=hr.corp.lan; Path=/APP/x',
  'noeq; Domain=backend.internal',
  'SID=2; HttpOnly; Domain=BACKEND.INTERNAL',
];

/** A xorshift32 stream of numbers in [0, 1) from `seed`: the same values on every run. */
function seeded(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const SOUP_NAMES = ['domain', 'Domain', 'PATH', 'path', 'secure', 'HttpOnly', 'samesite', 'SameSite', 'max-age', 'x', ''];
const SOUP_VALUES = ['backend.internal', '.Backend.Internal', 'hr.corp.lan', 'a.corp.lan', '/', '/app/', '/app/x', '/APP/', 'Lax', 'strict', 'NONE', '', '='];
const SOUP_COOKIES = ['sid', 'SID', 'tmp_a', 'TMP_b', 'other', '', 'noeq'];
const SOUP_CHARS = 'abz=./ ';

/**
 * `count` Set-Cookie values of attribute soup from `seed`: a cookie (maybe without `=`) and up to
 * seven attributes, each a name from a list (or none), maybe `=` and a value (a listed one or a few
 * random characters), with spaces around; values that begin or end with a space are left out (a
 * header's value is trimmed on the way).
 */
export function attributeSoup(seed: number, count: number): string[] {
  const rand = seeded(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const randomValue = () => Array.from({ length: Math.floor(rand() * 7) }, () => pick([...SOUP_CHARS])).join('');
  const attribute = () => {
    const value = rand() < 0.3 ? '' : `${pick(['', ' '])}=${rand() < 0.6 ? pick(SOUP_VALUES) : randomValue()}`;
    return `${pick(['', ' ', '  '])}${pick(SOUP_NAMES)}${value}${pick(['', ' '])}`;
  };
  const out: string[] = [];
  while (out.length < count) {
    const name = pick(SOUP_COOKIES);
    const v = [rand() < 0.8 ? `${name}=v` : name, ...Array.from({ length: Math.floor(rand() * 8) }, attribute)].join(';');
    if (v.trim() === v && v !== '') out.push(v);
  }
  return out;
}

/** The soup's values, `perStep` a response: `/soup/k` answers the k-th batch as Set-Cookie lines. */
const soupUpstream =
  (values: readonly string[], perStep: number): Behaviour =>
  (r): Reply => {
    const k = Number(r.target.slice('/soup/'.length));
    const lines = values.slice(k * perStep, (k + 1) * perStep).map((v): [string, string] => ['Set-Cookie', v]);
    return { headers: [...TEXT, ...lines], body: 'ok' };
  };

const SOUP_STEPS = 5;
const SOUP_PER_STEP = 12;

const soup = (id: string, seed: number, cookies: CookieOptions): Case => ({
  id,
  from: `attribute soup, seed ${seed}: ${SOUP_STEPS * SOUP_PER_STEP} Set-Cookie values`,
  config: { cookies },
  upstream: soupUpstream(attributeSoup(seed, SOUP_STEPS * SOUP_PER_STEP), SOUP_PER_STEP),
  steps: Array.from({ length: SOUP_STEPS }, (_, k) => cookieStep(`/soup/${k}`, 'shop.example.com')),
});

// ---------------------------------------------------------------- add_header

/** Answers with the status the path names (`/404`) and headers add_header replaces or adds to. */
const statusFromPath =
  (headers: Array<[string, string]>): Behaviour =>
  (r): Reply => ({ status: Number(/^\/(\d{3})/.exec(r.target)?.[1] ?? 200), headers: [...TEXT, ...headers], body: 'from upstream' });

const UPSTREAM_VALIDATORS: Array<[string, string]> = [
  ['ETag', '"up"'],
  ['Last-Modified', 'Mon, 01 Jan 2024 00:00:00 GMT'],
  ['Cache-Control', 'private'],
  ['Link', '<a>'],
];

/** The statuses add_header is (200…308) and is not (202, 203, 305, 4xx, 5xx) added to without `always`. */
const STATUSES = [200, 201, 202, 203, 204, 206, 301, 302, 303, 304, 305, 307, 308, 400, 404, 410, 500, 502, 503];

const ADDED = ['x-a', 'x-empty', 'etag', 'last-modified', 'cache-control', 'link', 'x-always'];

export const SHAPE_CASES: Case[] = [
  {
    id: 'cookie-domain-path',
    from: 'proxy_cookie.t',
    config: { cookies: PROXY_COOKIE_T },
    upstream: domainAndPath,
    steps: [
      '/?domain=www.Example.org',
      '/?domain=.LocalHost.com',
      '/?domain=www.example.COM',
      '/?path=/path/test.html',
      '/?path=/localhost/test.html',
      '/?path=/regex/test.html',
      '/?path=/CASEless/test.html',
      '/?domain=www.example.org&path=/path/test.html',
      '/?domain=other.example.net&path=/elsewhere/',
    ].map((t) => cookieStep(t, 'localhost')),
  },
  {
    id: 'cookie-flags',
    from: 'proxy_cookie_flags.t',
    config: { cookies: PROXY_COOKIE_FLAGS_T },
    upstream: namedWithFlags,
    steps: [
      '/?v=a',
      '/?v=b',
      '/?v=c',
      '/?v=a&f=;Secure;HttpOnly;SameSite=Lax',
      '/?v=b&f=;Secure;HttpOnly;SameSite=None',
      '/?v=c&f=;Secure;HttpOnly;SameSite=None',
      '/?v=d&f=;secure;httponly;samesite=lax',
      '/?v=nx&f=;samesite=none',
      '/?v=foobarbaz',
      '/?v=A&f=;SECURE',
    ].map((t) => cookieStep(t)),
  },
  {
    id: 'cookie-mixed-picked',
    from: 'proxy_cookie.t and proxy_cookie_flags.t: all three directives, on 200, 302 and 404',
    config: { cookies: MIXED },
    upstream: (r): Reply => {
      const status = r.target === '/moved' ? 302 : r.target === '/missing' ? 404 : 200;
      const lines = PICKED.map((v): [string, string] => ['Set-Cookie', v]);
      return { status, headers: [...TEXT, ...(status === 302 ? [['Location', 'https://elsewhere.example/x'] as [string, string]] : []), ...lines], body: 'ok' };
    },
    steps: ['/', '/moved', '/missing'].map((t) => cookieStep(t, 'shop.example.com')),
  },
  {
    id: 'cookie-not-on-added-header',
    from: 'proxy_cookie.t: rules apply to the upstream\u2019s Set-Cookie, not to add_header\u2019s',
    config: { cookies: MIXED, shape: [{ add: { 'Set-Cookie': 'sid=gw; Domain=backend.internal; Path=/app/' } }] },
    upstream: { headers: [...TEXT, ['Set-Cookie', 'sid=up; Domain=backend.internal; Path=/app/']], body: 'ok' },
    steps: [cookieStep('/', 'shop.example.com')],
  },
  soup('cookie-soup-domain-path', 7, { cookieDomain: MIXED.cookieDomain, cookiePath: MIXED.cookiePath }),
  soup('cookie-soup-flags', 11, { cookieFlags: MIXED.cookieFlags }),
  soup('cookie-soup-mixed', 4, MIXED),
  {
    id: 'add-header-headers-t',
    from: 'headers.t: add_header, add_header always, ETag set then emptied',
    config: { shape: [{ add: { 'X-URI': '$uri' } }, { add: { 'X-Always': '$uri', ETag: ['foo', ''] }, always: true }] },
    upstream: statusFromPath([['ETag', '"up"']]),
    steps: ['/t1', '/404/nx'].map((t): Step => ({ request: req(`GET ${t}`), headers: ['x-uri', 'x-always', 'etag'] })),
  },
  {
    id: 'add-header-statuses',
    from: 'headers.t: which statuses add_header adds to, Last-Modified and ETag replaced, others added',
    config: {
      shape: [
        { add: { 'X-A': '1', 'X-Empty': '$http_x_none', ETag: '"gw"', 'Last-Modified': '', 'Cache-Control': 'public', Link: '<b>' } },
        { add: { 'X-Always': 'yes' }, always: true },
      ],
    },
    upstream: statusFromPath(UPSTREAM_VALIDATORS),
    steps: STATUSES.map((code): Step => ({ request: req(`GET /${code}`), headers: ADDED })),
  },
  {
    id: 'add-header-repeated-variables',
    from: 'headers.t: one name added twice after the upstream\u2019s own, variables in values',
    config: {
      shape: [
        { add: { 'X-M': ['a', 'b'], 'X-Req': '$request_method $uri?$args', 'X-Up': '$upstream_status', 'X-Host': '$host' } },
        { add: { 'X-M': 'c' }, always: true },
      ],
    },
    upstream: { headers: [...TEXT, ['X-M', 'up']], body: 'ok' },
    steps: [req('GET /v?q=1'), req('HEAD /v?z'), req('GET /v', {}, undefined, 'Other.Example')].map(
      (request): Step => ({
        request,
        headers: ['x-m', 'x-req', 'x-up', 'x-host'],
      }),
    ),
  },
  {
    id: 'add-header-own-answers',
    from: 'headers.t: add_header on the answers of return, with and without always',
    config: {
      rewrite: 'location /r { return 302 https://elsewhere.example/x; } location /nf { return 404; } location /ok { return 200 fine; }',
      shape: [{ add: { 'X-A': 'a' } }, { add: { 'X-B': '$uri' }, always: true }],
    },
    steps: ['/r', '/nf', '/ok', '/through'].map((t): Step => ({ request: req(`GET ${t}`), headers: ['x-a', 'x-b'] })),
  },
  {
    id: 'add-header-cache',
    from: 'headers.t with proxy_cache.t: add_header on a MISS and on a HIT',
    config: { cache: { valid: { '200': '1m' } }, shape: [{ add: { 'X-Cached': '$upstream_cache_status', 'X-A': 'a' } }] },
    upstream: (_r, n): Reply => ({ headers: TEXT, body: `body ${n}` }),
    steps: [0, 1].map((): Step => ({ request: req('GET /c'), headers: ['x-cached', 'x-a'] })),
  },
];
