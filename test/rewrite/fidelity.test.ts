// Issue 16, rewrite: what a differential run against nginx found. Expected values are nginx's
// (nginx-tests rewrite_unescape.t, http_location.t, and nginx's sources where marked).
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';
import { test } from 'node:test';
import { createServer } from 'node:http';
import { balance, chain, createPool, fromNginx, rewrite, type RewriteOptions, type RewriteRule } from '../../src/index.ts';
import { fetchText, listen, upstream } from '../helpers.ts';
import { unescapeRedirect } from '../../src/rewrite/index.ts';
import { rewriteGateway } from './support.ts';

/** Sends `raw` on a fresh connection and returns everything the gateway wrote until it closed. */
function rawExchange(port: number, raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection(port, '127.0.0.1');
    let data = '';
    s.setTimeout(5000, () => s.destroy(new Error('no answer in 5 s')));
    s.on('data', (c) => (data += c.toString('latin1')));
    s.on('close', () => resolve(data));
    s.on('error', reject);
    s.write(raw);
  });
}

/** The header block of a raw response, as lowercased `name: value` lines. */
function headerLines(raw: string): string[] {
  return raw
    .split('\r\n\r\n')[0]!
    .split('\r\n')
    .slice(1)
    .map((l) => l.toLowerCase());
}

async function locationOf(t: import('node:test').TestContext, rules: RewriteRule[], path: string, options?: RewriteOptions): Promise<string | undefined> {
  const gw = await rewriteGateway(t, rules, options);
  const r = await gw.get(path);
  return r.headers.location;
}

// ---- return 204 / 304: no body headers ----

for (const status of [204, 304]) {
  test(`return ${status} sends no Content-Length, Content-Type or body, even with a text`, async (t) => {
    const gw = await rewriteGateway(t, [{ location: '/text', rules: [{ return: status, text: 'ignored' }] }, { return: status }]);
    for (const path of ['/', '/text']) {
      const raw = await rawExchange(gw.port, `GET ${path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
      assert.match(raw, new RegExp(`^HTTP/1\\.1 ${status} `));
      const lines = headerLines(raw);
      assert.equal(
        lines.find((l) => l.startsWith('content-length:') || l.startsWith('content-type:') || l.startsWith('transfer-encoding:')),
        undefined,
        raw,
      );
      assert.equal(raw.split('\r\n\r\n')[1], '', 'no body');
    }
  });
}

// ---- absolute redirects without Host ----

test('an HTTP/1.0 request without Host is redirected to the server address with its listening port', async (t) => {
  const gw = await rewriteGateway(t, [
    { rewrite: '^/old/(.*)$', replacement: '/new/$1', flag: 'redirect' },
    { return: 301, url: '/moved' },
  ]);
  const raw = await rawExchange(gw.port, 'GET /old/a HTTP/1.0\r\n\r\n');
  assert.match(raw, /^HTTP\/1\.1 302 /);
  assert.ok(headerLines(raw).includes(`location: http://127.0.0.1:${gw.port}/new/a`), raw);
  const ret = await rawExchange(gw.port, 'GET /x HTTP/1.0\r\n\r\n');
  assert.ok(headerLines(ret).includes(`location: http://127.0.0.1:${gw.port}/moved`), ret);
});

// ---- named captures of a regex location ----

test('named captures of a regex location stay available to the rewrites inside it', async (t) => {
  const gw = await rewriteGateway(
    t,
    fromNginx(`
      location ~ ^/user/(?<uid>\\d+)$ { rewrite ^ /users/$uid break; }
      location ~ ^/both/(?<a>\\w+)/(?<b>\\w+)$ { rewrite ^/both/(?<b>\\w)\\w*/ /x/$a/$b/$1 break; }
      location ~ ^/set/(?<v>\\w+)$ { set $v before; rewrite ^/set/(?<v>\\w+)$ /s/$v break; }
      location ~ ^/if/(?<n>\\d+)$ { if ($arg_q ~ ^(?<q>\\w+)$) { rewrite ^ /if/$n/$q break; } }
    `),
  );
  assert.equal((await gw.echo('/user/42')).uri, '/users/42');
  // A later match replaces the names it has and keeps the others; numbered captures are the last match's (a named group is numbered too, as in PCRE).
  assert.equal((await gw.echo('/both/one/two')).uri, '/x/one/o/o');
  // A match replaces a `set` of the same name.
  assert.equal((await gw.echo('/set/val')).uri, '/s/val');
  assert.equal((await gw.echo('/if/7?q=z')).uri, '/if/7/z');
  // In a redirect they are escaped as captures are.
  const redirect = await locationOf(t, [{ location: '~ ^/r/(?<p>.+)$', rules: [{ rewrite: '^', replacement: '/to/$p', flag: 'redirect' }] }], '/r/a%3Fb');
  assert.match(redirect ?? '', /\/to\/a%3Fb$/);
});

export { fromNginx, locationOf };

// ---- a redirect to a URL carried in an argument (rewrite_unescape.t) ----

test('a redirect whose replacement is an escaped URL from an argument goes to that URL', async (t) => {
  const rules = fromNginx(
    'location /t1 { rewrite ^ $arg_r? redirect; }\nlocation /t7 { rewrite ^ /go/$arg_p redirect; }\nlocation /t8 { rewrite ^ $args? permanent; }',
  );
  assert.equal(await locationOf(t, rules, '/t1?r=http%3A%2F%2Fexample.com%2F%3Ffrom'), 'http://example.com/?from');
  // CR LF stay escaped: no header splitting.
  assert.equal(await locationOf(t, rules, '/t1?r=http%3A%2F%2Fexample.com%0D%0Asplit'), 'http://example.com%0D%0Asplit');
  // After the first `?`, nothing more is unescaped (nginx; rewrite_unescape.t would like `from=blah`).
  assert.equal(await locationOf(t, rules, '/t1?r=http%3A%2F%2Fexample.com%2F%3Ffrom%3Dblah'), 'http://example.com/?from%3Dblah');
  assert.equal(await locationOf(t, rules, '/t1?r=https://example.com/a'), 'https://example.com/a');
  assert.match((await locationOf(t, rules, '/t7?p=a%2Fb%20c')) ?? '', /^http:\/\/127\.0\.0\.1:\d+\/go\/a\/b%20c\?p=a%2Fb%20c$/);
  assert.equal(await locationOf(t, rules, '/t8?https%3A%2F%2Fexample.org%2Fx'), 'https://example.org/x');
});

test('unescapeRedirect follows NGX_UNESCAPE_REDIRECT', () => {
  // Printable ASCII after `%` is unescaped; `%`, space and controls are not; the first `?` ends it; invalid escapes are kept.
  const inputs = ['a%2Fb%2fc', '%25%20%0a%7F%7e%26', 'a?b%2F', 'a%3fb%2F', '%zz%4'];
  assert.deepEqual(inputs.map(unescapeRedirect), ['a/b/c', '%25%20%0a%7F~&', 'a?b%2F', 'a?b%2F', '%zz%4']);
});

// ---- nested locations (ngx_http_core_find_location) ----

test('nested locations are chosen as nginx chooses them', async (t) => {
  const gw = await rewriteGateway(
    t,
    fromNginx(`
      location /a/ {
        return 200 "a";
        location /a/b/ { return 200 "ab"; }
        location ~ \\.x$ { return 200 "a-regex"; }
        location = /a/exact { return 200 "a-exact"; }
      }
      location ~ \\.x$ { return 200 "top-regex"; }
      location ^~ /n/ {
        location ~ \\.x$ { return 200 "n-regex"; }
        return 200 "n";
      }
      location /p/ {
        location ^~ /p/q/ { return 200 "pq"; }
        location ~ \\.y$ { return 200 "p-y"; }
      }
      location ~ \\.y$ { return 200 "top-y"; }
      location ~ ^/r/(?<id>\\w+) {
        location ~ \\.z$ { return 200 "r-z $id"; }
        return 200 "r $id";
      }
      location /l/ {
        location /l/m/ { rewrite ^/l/m/(.*)$ /a/b/$1 last; }
        rewrite ^ /never;
      }
    `),
  );
  const cases: Array<[string, string]> = [
    ['/a/', 'a'],
    ['/a/b/c', 'ab'],
    // The deepest prefix, then the regexes of its parent before the top level's.
    ['/a/b/c.x', 'a-regex'],
    ['/a/q.x', 'a-regex'],
    ['/a/exact', 'a-exact'],
    ['/z.x', 'top-regex'],
    // `^~` keeps the top-level regexes out, not the location's own.
    ['/n/k.x', 'n-regex'],
    ['/n/k', 'n'],
    // A nested `^~` skips its parent's regexes only: the top level's still run (nginx's noregex is per level).
    ['/p/q/w.y', 'top-y'],
    ['/p/q/w', 'pq'],
    ['/p/w.y', 'p-y'],
    // Regex in regex; the outer match's named captures stay.
    ['/r/abc.z', 'r-z abc'],
    ['/r/abc', 'r abc'],
    // A nested location's rules run instead of its parent's; `last` searches again from the top.
    ['/l/m/w', 'ab'],
  ];
  for (const [path, body] of cases) {
    const r = await gw.get(path);
    assert.equal(`${r.status} ${r.body}`, `200 ${body}`, path);
  }
  assert.equal((await gw.echo('/p/z')).uri, '/p/z');
});

// ---- set on built-in variables ----

test('set $args replaces the arguments: $args, $arg_NAME and the request sent upstream', async (t) => {
  const rules = fromNginx(`
    location /s { set $args "x=1&y=$arg_y"; if ($arg_x = 1) { return 200 "x=$arg_x args=$args"; } }
    location /p { set $ARGS "q=new"; }
  `);
  const gw = await rewriteGateway(t, rules);
  assert.equal((await gw.get('/s?y=2&x=9')).body, 'x=1 args=x=1&y=2');
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const proxy = await listen(t, createServer(chain(rewrite(rules), balance(pool))));
  const r = await fetchText(`${proxy.url}/p/a?old=1`);
  assert.equal(r.status, 200);
  assert.equal(up.seen.at(-1)?.url, '/p/a?q=new');
});

test('set refuses the built-in variables nginx refuses, with the line or the rule', () => {
  for (const name of ['$uri', '$host', '$Request_Uri', '$http_host', '$query_string', '$upstream_addr']) {
    assert.throws(() => rewrite([{ set: name, value: 'x' }]), /"rules\[0\]\.set".*nginx refuses it as "the duplicate variable"/, name);
  }
  assert.throws(() => fromNginx('location / {\n  set $scheme https;\n}'), /nginx:2.*"\$scheme" is built in/);
  for (const name of ['$http_foo', '$arg_x', '$cookie_y', '$args', '$limit_rate', '$route']) rewrite([{ set: name, value: 'x' }]);
});

// ---- $arg_NAME, $cookie_NAME and set on prefixed variables (src/core/variables.ts) ----

test('$arg_NAME and $cookie_NAME match names case-insensitively, the first in the request winning', async (t) => {
  const gw = await rewriteGateway(
    t,
    fromNginx(`
      location /a { return 200 "$arg_foo|$arg_FOO|$arg_bar|$arg_none"; }
      location /c { return 200 "$cookie_sid|$cookie_SID|$cookie_none"; }
      location /if { if ($arg_foo = bar) { return 200 "yes"; } }
    `),
  );
  assert.equal((await gw.get('/a?FOO=1&foo=2&Bar=3')).body, '1|1|3|');
  assert.equal((await gw.get('/c', { cookie: 'x=0; SID=abc; sid=def' })).body, 'abc|abc|');
  assert.equal((await gw.get('/if?FOO=bar')).body, 'yes');
});

test('set gives $http_NAME, $arg_NAME and $cookie_NAME a value read instead of the request’s, where it ran', async (t) => {
  const gw = await rewriteGateway(
    t,
    fromNginx(`
      location /t1 { set $http_x_foo "over"; set $arg_a "A"; set $cookie_c "C"; return 200 "$http_x_foo|$arg_a|$cookie_c"; }
      location /t2 { return 200 "$http_x_foo|$arg_a|$cookie_c"; }
      location /other { set $http_x_foo "never"; }
    `),
  );
  const headers = { 'x-foo': 'orig', cookie: 'c=2' };
  assert.equal((await gw.get('/t1?a=1', headers)).body, 'over|A|C');
  assert.equal((await gw.get('/t2?a=1', headers)).body, 'orig|1|2');
});
