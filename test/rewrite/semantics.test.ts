// rewrite() semantics, table-driven. Expected values are nginx's: the reference
// (nginx-semantics.md §7), nginx-tests (rewrite.t, rewrite_if.t, http_location.t,
// http_server_name.t) and runs of nginx 1.22 on loopback where marked "nginx 1.22".
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createConnection } from 'node:net';
import { rewrite, type RewriteOptions, type RewriteRule } from '../../src/index.ts';
import { rewriteGateway } from './support.ts';

interface Case {
  name: string;
  rules: RewriteRule[];
  options?: RewriteOptions | undefined;
  path: string;
  headers?: Record<string, string> | undefined;
  /** The rules handed on with this URI and args... */
  uri?: string | undefined;
  args?: string | undefined;
  /** ...or answered with this status (and Location / body). */
  status?: number | undefined;
  location?: string | undefined;
  body?: string | undefined;
  /** An error code handed to next(). */
  code?: string | undefined;
}

/** `{{host}}` in an expected Location stands for the gateway's `127.0.0.1:port`. */
async function check(t: import('node:test').TestContext, c: Case): Promise<void> {
  const gw = await rewriteGateway(t, c.rules, c.options);
  const host = `127.0.0.1:${gw.port}`;
  const r = await gw.get(c.path, c.headers);
  if (c.uri !== undefined || c.args !== undefined) {
    assert.equal(r.headers['x-echo'], '1', `${c.name}: expected the rules to hand on, got ${r.status} ${r.headers.location ?? ''} ${r.body}`);
    const echo = JSON.parse(r.body) as { uri: string; args: string };
    if (c.uri !== undefined) assert.equal(echo.uri, c.uri, `${c.name}: uri`);
    if (c.args !== undefined) assert.equal(echo.args, c.args, `${c.name}: args`);
    return;
  }
  assert.equal(r.status, c.status, `${c.name}: status (${r.body})`);
  if (c.location !== undefined) assert.equal(r.headers.location, c.location.replace('{{host}}', host), `${c.name}: location`);
  if (c.body !== undefined) assert.equal(r.body, c.body, `${c.name}: body`);
  if (c.code !== undefined) assert.equal(r.headers['x-error-code'], c.code, `${c.name}: error code`);
}

function table(title: string, cases: Case[]): void {
  for (const c of cases) test(`${title}: ${c.name}`, (t) => check(t, c));
}

table('flags', [
  {
    // nginx 1.22: two chained flagless rewrites, then return in the same location.
    name: 'flagless rewrites go on with the next rule',
    rules: [
      {
        location: '/flagless/',
        rules: [
          { rewrite: '^/flagless/(.*)$', replacement: '/f2/$1' },
          { rewrite: '^/f2/(.*)$', replacement: '/f3/$1' },
          { return: 200, text: 'fl uri=$uri' },
        ],
      },
    ],
    path: '/flagless/z',
    status: 200,
    body: 'fl uri=/f3/z',
  },
  {
    name: 'a flagless rewrite at the top level: later rules see the new URI',
    rules: [
      { rewrite: '^/a/(.*)$', replacement: '/b/$1' },
      { rewrite: '^/b/(.*)$', replacement: '/c/$1' },
    ],
    path: '/a/x',
    uri: '/c/x',
    args: '',
  },
  {
    name: 'last searches the locations again and runs the new location',
    rules: [
      { location: '/old/', rules: [{ rewrite: '^/old/(.*)$', replacement: '/new/$1', flag: 'last' }, { return: 410 }] },
      { location: '/new/', rules: [{ return: 200, text: 'new uri=$uri' }] },
    ],
    path: '/old/p',
    status: 200,
    body: 'new uri=/new/p',
  },
  {
    name: 'flagless in a location: the location search is repeated after the block',
    rules: [
      {
        location: '/old/',
        rules: [
          { rewrite: '^/old/(.*)$', replacement: '/new/$1' },
          { set: '$seen', value: 'old' },
        ],
      },
      { location: '/new/', rules: [{ return: 200, text: 'new uri=$uri seen=$seen' }] },
    ],
    path: '/old/p',
    status: 200,
    body: 'new uri=/new/p seen=old',
  },
  {
    // nginx 1.22: "/d/" with rewrite "^/d/(x{0,9})$" /d/$1x last: 10 changes answer 200.
    name: '10 URI changes are allowed',
    rules: [
      {
        location: '/d/',
        rules: [
          { rewrite: '^/d/(x{0,9})$', replacement: '/d/$1x', flag: 'last' },
          { return: 200, text: 'd uri=$uri' },
        ],
      },
    ],
    path: '/d/',
    status: 200,
    body: 'd uri=/d/xxxxxxxxxx',
  },
  {
    // nginx 1.22: the 11th change is "rewrite or internal redirection cycle" -> 500.
    name: 'the 11th URI change is a cycle: 500',
    rules: [
      {
        location: '/e/',
        rules: [
          { rewrite: '^/e/(x{0,10})$', replacement: '/e/$1x', flag: 'last' },
          { return: 200, text: 'e uri=$uri' },
        ],
      },
    ],
    path: '/e/',
    status: 500,
    code: 'SWY_ERR_REWRITE_CYCLE',
  },
  {
    name: 'a loop that never ends: 500',
    rules: [{ location: '/loop/', rules: [{ rewrite: '^/loop/(.*)$', replacement: '/loop/x$1', flag: 'last' }] }],
    path: '/loop/a',
    status: 500,
    code: 'SWY_ERR_REWRITE_CYCLE',
  },
  {
    // nginx 1.22: `location /same { rewrite ^ /same last; }` -> 500 (uri_changed is set by any match).
    name: 'rewrite to the same URI with last still cycles',
    rules: [{ location: '/same', rules: [{ rewrite: '^', replacement: '/same', flag: 'last' }] }],
    path: '/same',
    status: 500,
    code: 'SWY_ERR_REWRITE_CYCLE',
  },
  {
    // nginx 1.22: `location /argsonly { rewrite ^ /argsonly?z=1 last; }` -> 500.
    name: 'an args-only change with last cycles too',
    rules: [{ location: '/argsonly', rules: [{ rewrite: '^', replacement: '/argsonly?z=1', flag: 'last' }] }],
    path: '/argsonly',
    status: 500,
  },
  {
    name: 'break stops: later rules, including return, are skipped',
    rules: [
      { location: '/b/', rules: [{ rewrite: '^/b/(.*)$', replacement: '/other/$1', flag: 'break' }, { return: 403 }] },
      { location: '/other/', rules: [{ return: 410 }] },
    ],
    path: '/b/x?k=v',
    uri: '/other/x',
    args: 'k=v',
  },
  {
    name: 'the break rule stops the block',
    rules: [{ rewrite: '^/a$', replacement: '/b' }, { break: true }, { rewrite: '^/b$', replacement: '/c' }],
    path: '/a',
    uri: '/b',
  },
  {
    // nginx 1.22: server-level `rewrite ... break` ends the server rules only; the location runs.
    name: 'break among server-level rules still lets the location run',
    rules: [
      { rewrite: '^/sb/(.*)$', replacement: '/loc/$1', flag: 'break' },
      { location: '/loc/', rules: [{ return: 200, text: 'loc uri=$uri args=$args' }] },
    ],
    path: '/sb/a?q=1',
    status: 200,
    body: 'loc uri=/loc/a args=q=1',
  },
  {
    name: 'redirect: 302, made absolute',
    rules: [{ rewrite: '^/rel/(.*)$', replacement: '/new/$1', flag: 'redirect' }],
    path: '/rel/a?q=1',
    status: 302,
    location: 'http://{{host}}/new/a?q=1',
  },
  {
    name: 'permanent: 301',
    rules: [{ rewrite: '^/p/(.*)$', replacement: '/n/$1', flag: 'permanent' }],
    path: '/p/a',
    status: 301,
    location: 'http://{{host}}/n/a',
  },
  {
    name: 'http:// replacement: implicit 302',
    rules: [{ rewrite: '^/(.*)$', replacement: 'http://example.com/$1' }],
    path: '/x',
    status: 302,
    location: 'http://example.com/x',
  },
  {
    name: 'https:// replacement with last is still a 302',
    rules: [{ rewrite: '^/(.*)$', replacement: 'https://example.com/$1', flag: 'last' }],
    path: '/x',
    status: 302,
    location: 'https://example.com/x',
  },
  {
    name: 'https:// replacement with permanent: 301',
    rules: [{ rewrite: '^/(.*)$', replacement: 'https://example.com/$1', flag: 'permanent' }],
    path: '/x',
    status: 301,
    location: 'https://example.com/x',
  },
  {
    name: '$scheme replacement redirects',
    rules: [{ rewrite: '^/(.*)$', replacement: '$scheme://example.com/$1' }],
    path: '/x',
    status: 302,
    location: 'http://example.com/x',
  },
  {
    name: 'absoluteRedirect: false keeps the Location relative',
    rules: [{ rewrite: '^/rel/(.*)$', replacement: '/new/$1', flag: 'redirect' }],
    options: { absoluteRedirect: false },
    path: '/rel/a',
    status: 302,
    location: '/new/a',
  },
  {
    name: 'a relative redirect uses the Host header',
    rules: [{ rewrite: '^/(.*)$', replacement: '/n/$1', flag: 'redirect' }],
    path: '/a',
    headers: { host: 'Example.org:8080' },
    status: 302,
    location: 'http://Example.org:8080/n/a',
  },
]);

table('args', [
  // nginx-tests rewrite.t
  {
    name: 'no ? in the replacement: args kept (rewrite.t "/")',
    rules: [{ rewrite: '^', replacement: 'http://example.com/' }],
    path: '/?a=b',
    status: 302,
    location: 'http://example.com/?a=b',
  },
  {
    name: '?new: original appended after & (rewrite.t "/add")',
    rules: [{ rewrite: '^', replacement: 'http://example.com/?c=d' }],
    path: '/add?a=b',
    status: 302,
    location: 'http://example.com/?c=d&a=b',
  },
  {
    name: 'trailing ?: args dropped (rewrite.t "/no")',
    rules: [{ rewrite: '^', replacement: 'http://example.com/?c=d?' }],
    path: '/no?a=b',
    status: 302,
    location: 'http://example.com/?c=d',
  },
  // nginx 1.22
  {
    name: 'internal: ?x=1 then the original',
    rules: [{ rewrite: '^/args/(.*)$', replacement: '/final/$1?x=1', flag: 'last' }],
    path: '/args/a?q=1',
    uri: '/final/a',
    args: 'x=1&q=1',
  },
  {
    name: 'internal: trailing ? empties the args',
    rules: [{ rewrite: '^/args/(.*)$', replacement: '/final/$1?', flag: 'last' }],
    path: '/args/a?q=1',
    uri: '/final/a',
    args: '',
  },
  { name: 'internal: no ?, args kept', rules: [{ rewrite: '^/args/(.*)$', replacement: '/final/$1' }], path: '/args/a?q=1', uri: '/final/a', args: 'q=1' },
  {
    name: 'internal: ?x=1 without original args',
    rules: [{ rewrite: '^/args/(.*)$', replacement: '/final/$1?x=1' }],
    path: '/args/a',
    uri: '/final/a',
    args: 'x=1',
  },
  {
    // nginx 1.22: `rewrite ^ https://example.com$request_uri;` on /absrw/p?q=1.
    name: 'the $request_uri gotcha: args doubled',
    rules: [{ rewrite: '^', replacement: 'https://example.com$request_uri' }],
    path: '/absrw/p?q=1',
    status: 302,
    location: 'https://example.com/absrw/p?q=1?q=1',
  },
  {
    name: 'the $request_uri gotcha avoided with a trailing ?',
    rules: [{ rewrite: '^', replacement: 'https://example.com$request_uri?' }],
    path: '/absrw/p?q=1',
    status: 302,
    location: 'https://example.com/absrw/p?q=1',
  },
  {
    // nginx 1.22: /q/a%3Fb?c=1 through `rewrite ^/q/(.*)$ /s/$1 break` -> uri=/s/a?b args=c=1.
    name: 'a ? decoded from the path stays in the path',
    rules: [{ rewrite: '^/q/(.*)$', replacement: '/s/$1', flag: 'break' }],
    path: '/q/a%3Fb?c=1',
    uri: '/s/a?b',
    args: 'c=1',
  },
  {
    // rewrite.t ticket #162: /capture/%25?a=b with `rewrite ^(.*) $1?c=d` -> uri:/capture/% args:c=d&a=b.
    name: 'a % capture (rewrite.t #162)',
    rules: [{ rewrite: '^(.*)', replacement: '$1?c=d', flag: 'break' }],
    path: '/capture/%25?a=b',
    uri: '/capture/%',
    args: 'c=d&a=b',
  },
  {
    name: 'args changed by a rewrite are what $arg_ reads next',
    rules: [
      { rewrite: '^/a$', replacement: '/a?x=1?' },
      { if: '$arg_x', then: [{ return: 200, text: 'x=$arg_x' }] },
    ],
    path: '/a?x=0',
    status: 200,
    body: 'x=1',
  },
]);

table('return', [
  { name: 'return 200 text with variables', rules: [{ return: 200, text: 'uri=$uri args=$args' }], path: '/a/b?c=d', status: 200, body: 'uri=/a/b args=c=d' },
  {
    name: 'return 301 /elsewhere is made absolute (nginx 1.22)',
    rules: [{ return: 301, url: '/elsewhere' }],
    path: '/x',
    status: 301,
    location: 'http://{{host}}/elsewhere',
  },
  {
    name: 'return 302 URL with variables',
    rules: [{ return: 302, url: 'https://$host$request_uri' }],
    path: '/p?q=1',
    headers: { host: 'Example.org' },
    status: 302,
    location: 'https://example.org/p?q=1',
  },
  { name: 'return 307 keeps the code', rules: [{ return: 307, url: 'https://example.com/' }], path: '/', status: 307, location: 'https://example.com/' },
  { name: 'return 302 "text": Location text (rewrite.t)', rules: [{ return: 302, text: 'text' }], path: '/', status: 302, location: 'text' },
  { name: 'return 306 passes through (rewrite.t)', rules: [{ return: 306 }], path: '/', status: 306 },
  { name: 'return 403 goes to next(err) with status 403', rules: [{ return: 403 }], path: '/', status: 403, code: 'SWY_ERR_RETURN' },
  { name: 'return 404 text answers itself', rules: [{ return: 404, text: 'gone' }], path: '/', status: 404, body: 'gone' },
  { name: 'return 204: empty', rules: [{ return: 204 }], path: '/', status: 204, body: '' },
]);

test('return: a 403 reaches next() as an error with statusCode 403', async (t) => {
  const gw = await rewriteGateway(t, [{ return: 403 }]);
  await gw.get('/');
  assert.equal(gw.errors.length, 1);
  assert.equal((gw.errors[0] as { statusCode: number }).statusCode, 403);
});

test('return 444 closes the connection without a response', async (t) => {
  const gw = await rewriteGateway(t, [{ location: '/close', rules: [{ return: 444 }] }]);
  const received = await new Promise<string>((resolve, reject) => {
    const s = createConnection(gw.port, '127.0.0.1');
    let data = '';
    s.on('data', (c) => (data += c.toString()));
    s.on('close', () => resolve(data));
    s.on('error', reject);
    s.write('GET /close HTTP/1.1\r\nHost: x\r\n\r\n');
  });
  assert.equal(received, '');
});

table('if and set', [
  // rewrite_if.t: `?c=0` is false, `~*` is caseless.
  { name: '$arg_c with c=0 is false', rules: [{ if: '$arg_c', then: [{ return: 204 }] }], path: '/?c=0', uri: '/' },
  { name: '$arg_c with c=1 is true', rules: [{ if: '$arg_c', then: [{ return: 204 }] }], path: '/?c=1', status: 204 },
  { name: 'an empty variable is false', rules: [{ if: '$arg_c', then: [{ return: 204 }] }], path: '/?c=', uri: '/' },
  {
    name: '= compares',
    rules: [
      { if: '$request_method = POST', then: [{ return: 405 }] },
      { if: '$request_method = GET', then: [{ return: 200, text: 'get' }] },
    ],
    path: '/',
    status: 200,
    body: 'get',
  },
  { name: '!= compares', rules: [{ if: '$arg_a != x', then: [{ return: 200, text: 'not x' }] }], path: '/?a=y', status: 200, body: 'not x' },
  { name: '!= is false when equal', rules: [{ if: '$arg_a != x', then: [{ return: 200, text: 'not x' }] }], path: '/?a=x', uri: '/' },
  {
    name: '= with a quoted value: $arg_ is not decoded',
    rules: [{ if: '$arg_a = "a b"', then: [{ return: 200, text: 'yes' }] }],
    path: '/?a=a b'.replace(' ', '%20'),
    uri: '/',
  },
  {
    name: '~ is case-sensitive',
    rules: [{ if: '$http_user_agent ~ foo', then: [{ return: 200, text: 'yes' }] }],
    path: '/',
    headers: { 'user-agent': 'FooD' },
    uri: '/',
  },
  {
    name: '~* is caseless (rewrite_if.t FooD)',
    rules: [{ if: '$http_user_agent ~* foo', then: [{ return: 200, text: 'yes' }] }],
    path: '/',
    headers: { 'user-agent': 'FooD' },
    status: 200,
    body: 'yes',
  },
  { name: '!~ negates', rules: [{ if: '$uri !~ ^/api/', then: [{ return: 200, text: 'not api' }] }], path: '/web', status: 200, body: 'not api' },
  { name: '!~ is false on a match', rules: [{ if: '$uri !~ ^/api/', then: [{ return: 200, text: 'not api' }] }], path: '/api/x', uri: '/api/x' },
  { name: '!~* negates caselessly', rules: [{ if: '$uri !~* ^/API/', then: [{ return: 200, text: 'not api' }] }], path: '/api/x', uri: '/api/x' },
  {
    name: 'object form { var, op, value }',
    rules: [{ if: { var: '$arg_v', op: '~', value: '^[0-9]+$' }, then: [{ return: 200, text: 'num' }] }],
    path: '/?v=42',
    status: 200,
    body: 'num',
  },
  {
    name: 'function form',
    rules: [{ if: (req) => req.headers['x-flag'] === 'on', then: [{ return: 200, text: 'fn' }] }],
    path: '/',
    headers: { 'x-flag': 'on' },
    status: 200,
    body: 'fn',
  },
  {
    name: 'host form',
    rules: [{ if: { host: ['*.example.org'] }, then: [{ return: 200, text: 'sub' }] }],
    path: '/',
    headers: { host: 'a.example.org' },
    status: 200,
    body: 'sub',
  },
  {
    name: 'captures from an if regex feed a following rewrite',
    rules: [{ if: '$http_x_version ~ ^v([0-9]+)$', then: [{ rewrite: '^/api/(.*)$', replacement: '/api/v$1/$1' }] }],
    path: '/api/users',
    headers: { 'x-version': 'v2' },
    // The rewrite's own regex replaces the captures: nginx keeps only the last match's.
    uri: '/api/vusers/users',
  },
  {
    name: 'captures from an if regex feed a following return',
    rules: [{ if: '$http_x_version ~ ^v([0-9]+)$', then: [{ return: 200, text: 'version $1' }] }],
    path: '/',
    headers: { 'x-version': 'v7' },
    status: 200,
    body: 'version 7',
  },
  {
    name: 'captures from an if regex, kept through set, feed a rewrite',
    rules: [
      {
        if: '$http_x_version ~ ^v([0-9]+)$',
        then: [
          { set: '$ver', value: '$1' },
          { rewrite: '^/api/(.*)$', replacement: '/api/v$ver/$1' },
        ],
      },
    ],
    path: '/api/users',
    headers: { 'x-version': 'v2' },
    uri: '/api/v2/users',
  },
  {
    name: 'set then used in a rewrite',
    rules: [
      { set: '$prefix', value: '/$arg_tenant' },
      { rewrite: '^(.*)$', replacement: '$prefix$1' },
    ],
    path: '/x?tenant=acme',
    uri: '/acme/x',
    args: 'tenant=acme',
  },
  {
    name: 'set reads its own earlier value',
    rules: [
      { set: '$who', value: 'a' },
      { set: '$who', value: '${who}b' },
      { return: 200, text: '$who' },
    ],
    path: '/',
    status: 200,
    body: 'ab',
  },
  { name: 'break inside if stops the outer rules too', rules: [{ if: '$arg_stop', then: [{ break: true }] }, { return: 410 }], path: '/?stop=1', uri: '/' },
]);

table('named captures', [
  { name: '(?<name>) in a rewrite', rules: [{ rewrite: '^/u/(?<user>[^/]+)$', replacement: '/users/$user' }], path: '/u/ann', uri: '/users/ann' },
  {
    name: '(?P<name>) in a rewrite (PCRE syntax)',
    rules: [{ rewrite: '^/u/(?P<user>[^/]+)$', replacement: '/users/${user}/x' }],
    path: '/u/bob',
    uri: '/users/bob/x',
  },
  {
    name: 'named captures from a location regex',
    rules: [{ location: '~ ^/i/(?<id>\\d+)$', rules: [{ return: 200, text: 'id=$id' }] }],
    path: '/i/42',
    status: 200,
    body: 'id=42',
  },
  {
    name: 'named captures from an if',
    rules: [{ if: '$host ~ ^(?P<sub>[^.]+)\\.example\\.org$', then: [{ return: 200, text: 'sub=$sub' }] }],
    path: '/',
    headers: { host: 'shop.example.org' },
    status: 200,
    body: 'sub=shop',
  },
]);

// nginx-tests http_location.t: locations `= /`, `/`, `^~ /images/`, `~* \.gif$`, `~ ^/casefull/`... (first regex wins).
const LOCATIONS: RewriteRule[] = [
  { location: '= /', rules: [{ return: 200, text: 'exact' }] },
  { location: '/', rules: [{ return: 200, text: 'prefix /' }] },
  { location: '/longer/', rules: [{ return: 200, text: 'prefix /longer/' }] },
  { location: '/longer/still/', rules: [{ return: 200, text: 'prefix /longer/still/' }] },
  { location: '^~ /images/', rules: [{ return: 200, text: 'images' }] },
  { location: '^~ /images/deeper/plain', rules: [{ return: 200, text: 'wins only by length' }] },
  { location: '~* \\.gif$', rules: [{ return: 200, text: 'regex gif' }] },
  { location: '~ ^/casefull/', rules: [{ return: 200, text: 'regex casefull' }] },
  { location: '~ ^/longer/.*\\.php$', rules: [{ return: 200, text: 'regex php' }] },
];
table('locations', [
  { name: '/ -> = /', rules: LOCATIONS, path: '/', status: 200, body: 'exact' },
  { name: '/t.GIF -> caseless regex', rules: LOCATIONS, path: '/t.GIF', status: 200, body: 'regex gif' },
  { name: '/images/t.gif -> ^~ /images/ (regexes skipped)', rules: LOCATIONS, path: '/images/t.gif', status: 200, body: 'images' },
  { name: '/casefull/t.gif -> the first regex in order', rules: LOCATIONS, path: '/casefull/t.gif', status: 200, body: 'regex gif' },
  { name: '/casefull/t.jpg -> the second regex', rules: LOCATIONS, path: '/casefull/t.jpg', status: 200, body: 'regex casefull' },
  { name: '/CASEFULL/t.jpg -> ~ is case-sensitive: prefix /', rules: LOCATIONS, path: '/CASEFULL/t.jpg', status: 200, body: 'prefix /' },
  { name: 'the longest prefix wins', rules: LOCATIONS, path: '/longer/still/x', status: 200, body: 'prefix /longer/still/' },
  { name: 'a regex beats a plain prefix', rules: LOCATIONS, path: '/longer/still/x.php', status: 200, body: 'regex php' },
  { name: '= matches only exactly', rules: LOCATIONS, path: '/x', status: 200, body: 'prefix /' },
  { name: 'the longest ^~ prefix is used', rules: LOCATIONS, path: '/images/deeper/plain.gif', status: 200, body: 'wins only by length' },
  {
    name: 'a longer plain prefix under a ^~ one: regexes are tried',
    rules: [
      { location: '^~ /a/', rules: [{ return: 200, text: '^~ /a/' }] },
      { location: '/a/b/', rules: [{ return: 200, text: '/a/b/' }] },
      { location: '~ x$', rules: [{ return: 200, text: 'regex' }] },
    ],
    path: '/a/b/x',
    status: 200,
    body: 'regex',
  },
  {
    name: 'no location matches: the request passes untouched',
    rules: [{ location: '/only/', rules: [{ return: 403 }] }],
    path: '/other?a=1',
    uri: '/other',
    args: 'a=1',
  },
  { name: 'matching uses the normalized URI', rules: LOCATIONS, path: '/x/../images//t.gif', status: 200, body: 'images' },
]);

// nginx-tests http_server_name.t and the reference §7.6 (verified with nginx 1.22).
const SERVERS: RewriteRule[] = [
  { server: '~^(?<sub>[a-z]+)\\.example\\.net$', rules: [{ return: 200, text: 'regex sub=$sub' }] },
  { server: 'www.example.*', rules: [{ return: 200, text: 'trailing www.example.*' }] },
  { server: '*.example.org', rules: [{ return: 200, text: 'leading *.example.org' }] },
  { server: '*.deep.example.org', rules: [{ return: 200, text: 'leading *.deep.example.org' }] },
  { server: 'www.example.org', rules: [{ return: 200, text: 'exact www.example.org' }] },
  { server: '.example.com', rules: [{ return: 200, text: 'dot .example.com' }] },
  { server: '~^www\\.', rules: [{ return: 200, text: 'regex www' }] },
  { server: 'www.*', rules: [{ return: 200, text: 'trailing www.*' }] },
  { server: ['other.test', 'Mixed.Test'], rules: [{ return: 200, text: 'list' }] },
];
table('server blocks', [
  {
    name: 'exact beats an earlier leading wildcard',
    rules: SERVERS,
    path: '/',
    headers: { host: 'www.example.org' },
    status: 200,
    body: 'exact www.example.org',
  },
  { name: 'leading wildcard', rules: SERVERS, path: '/', headers: { host: 'a.example.org' }, status: 200, body: 'leading *.example.org' },
  { name: 'the longest leading wildcard', rules: SERVERS, path: '/', headers: { host: 'a.deep.example.org' }, status: 200, body: 'leading *.deep.example.org' },
  { name: 'trailing wildcard beats an earlier regex', rules: SERVERS, path: '/', headers: { host: 'www.example.com' }, status: 200, body: 'dot .example.com' },
  { name: 'the longest trailing wildcard', rules: SERVERS, path: '/', headers: { host: 'www.example.net' }, status: 200, body: 'trailing www.example.*' },
  { name: 'a shorter trailing wildcard beats a regex', rules: SERVERS, path: '/', headers: { host: 'www.other.net' }, status: 200, body: 'trailing www.*' },
  { name: 'regex with a named capture', rules: SERVERS, path: '/', headers: { host: 'foo.example.net' }, status: 200, body: 'regex sub=foo' },
  { name: '.example.com matches the bare name', rules: SERVERS, path: '/', headers: { host: 'example.com' }, status: 200, body: 'dot .example.com' },
  { name: '.example.com matches subdomains', rules: SERVERS, path: '/', headers: { host: 'a.b.example.com' }, status: 200, body: 'dot .example.com' },
  {
    name: 'names are caseless, port ignored',
    rules: SERVERS,
    path: '/',
    headers: { host: 'WWW.Example.ORG:8080' },
    status: 200,
    body: 'exact www.example.org',
  },
  { name: 'a trailing dot is ignored', rules: SERVERS, path: '/', headers: { host: 'www.example.org.' }, status: 200, body: 'exact www.example.org' },
  { name: 'a list of names, caseless', rules: SERVERS, path: '/', headers: { host: 'mixed.test' }, status: 200, body: 'list' },
  { name: 'no block matches: untouched', rules: SERVERS, path: '/x', headers: { host: 'unknown.test' }, uri: '/x' },
  {
    name: 'the first matching regex in block order',
    rules: [
      { server: '~^a', rules: [{ return: 200, text: 'first' }] },
      { server: '~^ab', rules: [{ return: 200, text: 'second' }] },
    ],
    path: '/',
    headers: { host: 'abc.test' },
    status: 200,
    body: 'first',
  },
  {
    name: 'exact in a later block beats .name in an earlier one',
    rules: [
      { server: '.example.com', rules: [{ return: 200, text: 'dot' }] },
      { server: 'example.com', rules: [{ return: 200, text: 'exact' }] },
    ],
    path: '/',
    headers: { host: 'example.com' },
    status: 200,
    body: 'exact',
  },
  {
    name: 'a server block has locations of its own',
    rules: [
      {
        server: 'api.test',
        rules: [
          { rewrite: '^/v1/(.*)$', replacement: '/$1', flag: 'last' },
          { location: '/users', rules: [{ return: 200, text: 'users $uri' }] },
        ],
      },
    ],
    path: '/v1/users/7',
    headers: { host: 'api.test' },
    status: 200,
    body: 'users /users/7',
  },
]);

table('path-to-regexp rules', [
  { name: '/old/:id -> /new/:id', rules: [{ from: '/old/:id', to: '/new/:id' }], path: '/old/42?x=1', uri: '/new/42', args: 'x=1' },
  { name: '/files/*path', rules: [{ from: '/files/*path', to: '/static/*path' }], path: '/files/a/b/c.txt', uri: '/static/a/b/c.txt' },
  { name: 'no match: untouched', rules: [{ from: '/old/:id', to: '/new/:id' }], path: '/older/42', uri: '/older/42' },
  { name: 'args in to: new then original', rules: [{ from: '/old/:id', to: '/new/:id?v=2' }], path: '/old/1?x=1', uri: '/new/1', args: 'v=2&x=1' },
  { name: 'trailing ? drops args', rules: [{ from: '/old/:id', to: '/new/:id?' }], path: '/old/1?x=1', uri: '/new/1', args: '' },
  { name: 'a decoded ? in a parameter stays in the path', rules: [{ from: '/old/:id', to: '/new/:id' }], path: '/old/a%3Fb?x=1', uri: '/new/a?b', args: 'x=1' },
  {
    name: 'redirect flag: 302 absolute',
    rules: [{ from: '/old/:id', to: '/new/:id', flag: 'redirect' }],
    path: '/old/7?x=1',
    status: 302,
    location: 'http://{{host}}/new/7?x=1',
  },
  {
    name: 'permanent flag: 301',
    rules: [{ from: '/old/:id', to: '/new/:id', flag: 'permanent' }],
    path: '/old/7',
    status: 301,
    location: 'http://{{host}}/new/7',
  },
  {
    name: 'an absolute to redirects',
    rules: [{ from: '/old/:id', to: 'https://example.com/new/:id' }],
    path: '/old/7',
    status: 302,
    location: 'https://example.com/new/7',
  },
  {
    name: 'a wildcard into a redirect',
    rules: [{ from: '/files/*path', to: 'https://cdn.example.com/*path', flag: 'permanent' }],
    path: '/files/a/b%20c.txt',
    status: 301,
    location: 'https://cdn.example.com/a/b%20c.txt',
  },
  {
    name: 'last with locations',
    rules: [
      { location: '/old/', rules: [{ from: '/old/:id', to: '/new/:id', flag: 'last' }] },
      { location: '/new/', rules: [{ return: 200, text: 'n $uri' }] },
    ],
    path: '/old/9',
    status: 200,
    body: 'n /new/9',
  },
]);

test('setUrl: true writes the rewritten target into req.url', async (t) => {
  const gw = await rewriteGateway(t, [{ rewrite: '^/a/(.*)$', replacement: '/b/$1?x=1' }], { setUrl: true });
  const e = await gw.echo('/a/q%3Fr%20s?y=2');
  assert.equal(e.url, '/b/q%3Fr%20s?x=1&y=2');
  assert.equal(e.uri, '/b/q?r s');
  assert.equal(e.uriChanged, true);
});

test('without setUrl, req.url is untouched', async (t) => {
  const gw = await rewriteGateway(t, [{ rewrite: '^/a/(.*)$', replacement: '/b/$1' }]);
  const e = await gw.echo('/a/x?y=2');
  assert.equal(e.url, '/a/x?y=2');
  assert.equal(e.uri, '/b/x');
});

test('no rule matched: uriChanged stays false', async (t) => {
  const gw = await rewriteGateway(t, [{ rewrite: '^/zzz$', replacement: '/b' }]);
  const e = await gw.echo('/a%20b?y=2');
  assert.equal(e.uriChanged, false);
});

test('a RegExp with the g flag matches on every request (no lastIndex state)', async (t) => {
  const gw = await rewriteGateway(t, [{ rewrite: /^\/g\/(.*)$/g, replacement: '/h/$1' }]);
  for (let i = 0; i < 3; i++) assert.equal((await gw.echo('/g/x')).uri, '/h/x');
});

test('a malformed path is answered 400 before any rule', async (t) => {
  const gw = await rewriteGateway(t, [{ return: 200, text: 'reached' }]);
  const r = await gw.get('/a/%zz');
  assert.equal(r.status, 400);
});

// ---- validation at factory time ----

const INVALID: Array<{ name: string; rules: unknown; options?: unknown; where: RegExp }> = [
  { name: 'rules not an array', rules: {}, where: /rules/ },
  { name: 'bad regex', rules: [{ rewrite: '(', replacement: '/x' }], where: /rules\[0\]\.rewrite/ },
  { name: 'bad regex deep in a location', rules: [{ location: '/a/', rules: [{ if: '$uri ~ ([', then: [] }] }], where: /rules\[0\]\.rules\[0\]\.if/ },
  { name: 'bad location regex', rules: [{ location: '~ (', rules: [] }], where: /rules\[0\]\.location/ },
  { name: 'bad flag', rules: [{ rewrite: '^', replacement: '/x', flag: 'lastt' }], where: /rules\[0\]\.flag/ },
  { name: 'empty replacement', rules: [{ rewrite: '^', replacement: '' }], where: /rules\[0\]\.replacement/ },
  { name: 'bad path-to-regexp pattern', rules: [{ from: '/a/:', to: '/b' }], where: /rules\[0\]\.from/ },
  { name: 'from without a leading slash', rules: [{ from: 'a/:id', to: '/b' }], where: /rules\[0\]\.from/ },
  { name: 'bad to pattern', rules: [{ from: '/a/:id', to: '/b/:' }], where: /rules\[0\]\.to/ },
  { name: 'unknown key', rules: [{ rewrite: '^', replacement: '/x', flags: 'last' }], where: /rules\[0\]\.flags/ },
  { name: 'unknown key in then', rules: [{ if: '$arg_a', then: [{ return: 200, body: 'x' }] }], where: /rules\[0\]\.then\[0\]\.body/ },
  { name: 'unknown rule', rules: [{ redirect: '/x' }], where: /rules\[0\]/ },
  { name: 'return with a url but not 3xx', rules: [{ return: 200, url: 'https://x/' }], where: /rules\[0\]\.url/ },
  { name: 'return code out of range', rules: [{ return: 42 }], where: /rules\[0\]\.return/ },
  { name: 'return with text and url', rules: [{ return: 301, text: 'a', url: '/b' }], where: /rules\[0\]/ },
  { name: 'set with a bad name', rules: [{ set: 'route', value: 'x' }], where: /rules\[0\]\.set/ },
  { name: 'break not true', rules: [{ break: 1 }], where: /rules\[0\]\.break/ },
  { name: 'bad condition text', rules: [{ if: 'uri ~ x', then: [] }], where: /rules\[0\]\.if/ },
  { name: 'bad condition operator', rules: [{ if: { var: '$uri', op: '=~', value: 'x' }, then: [] }], where: /rules\[0\]\.if\.op/ },
  {
    name: 'nested location outside its parent',
    rules: [{ location: '/a/', rules: [{ location: '/b/', rules: [] }] }],
    where: /rules\[0\]\.rules\[0\]\.location.*outside location "\/a\/"/,
  },
  {
    name: 'duplicate location',
    rules: [
      { location: '= /a', rules: [] },
      { location: '/a', rules: [] },
      { location: '= /a', rules: [] },
    ],
    where: /rules\[2\]\.location.*duplicate location "\/a"/,
  },
  {
    name: 'location in an exact location',
    rules: [{ location: '= /a', rules: [{ location: '~ a', rules: [] }] }],
    where: /rules\[0\]\.rules\[0\]\.location.*exact location/,
  },
  {
    name: 'location in an if',
    rules: [{ location: '/a', rules: [{ if: '$arg_a', then: [{ location: '/a/b', rules: [] }] }] }],
    where: /rules\[0\]\.rules\[0\]\.then\[0\]/,
  },
  { name: 'server in a location', rules: [{ location: '/a', rules: [{ server: 'a', rules: [] }] }], where: /rules\[0\]\.rules\[0\]/ },
  { name: 'server blocks mixed with rules', rules: [{ server: 'a', rules: [] }, { return: 403 }], where: /rules/ },
  { name: 'bad server regex', rules: [{ server: '~(', rules: [] }], where: /rules\[0\]\.server\[0\]/ },
  { name: 'wildcard in the middle of a server name', rules: [{ server: 'www.*.org', rules: [] }], where: /rules\[0\]\.server\[0\]/ },
  { name: 'unknown option', rules: [], options: { setURL: true }, where: /setURL/ },
];
for (const c of INVALID) {
  test(`validation: ${c.name}`, () => {
    assert.throws(
      () => rewrite(c.rules as RewriteRule[], c.options as RewriteOptions),
      (err: Error & { code?: string }) => {
        assert.ok(err instanceof TypeError, 'a TypeError');
        assert.match(err.message, c.where);
        return true;
      },
    );
  });
}

test('the factory does not write into the rules', () => {
  const rules: RewriteRule[] = [
    { rewrite: '^/a$', replacement: '/b?', flag: 'last' },
    { location: '/x', rules: [{ return: 403 }] },
  ];
  const copy = structuredClone(rules);
  rewrite(rules);
  assert.deepEqual(rules, copy);
});

test('the middleware is a named function', () => {
  assert.equal(rewrite([]).name, 'rewrite');
});
