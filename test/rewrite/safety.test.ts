// rewrite() safety: Location headers carry no request-borne controls; encoded dot
// segments, slashes and backslashes cannot move a rewritten path out of the rule's
// prefix as the upstream sees it; path-to-regexp rules stay fast on long inputs.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { balance, createPool, rewrite, type RewriteRule } from '../../src/index.ts';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { chain, exchange, respondWithError } from '../../src/index.ts';
import { RawClient } from '../balance/support.ts';
import { listen, upstream } from '../helpers.ts';
import { rewriteGateway } from './support.ts';

// ---- Location headers ----

const REDIRECTS: Array<{ name: string; rule: RewriteRule }> = [
  { name: 'rewrite redirect', rule: { rewrite: '^/r/([\\s\\S]*)$', replacement: '/n/$1', flag: 'redirect' } },
  { name: 'rewrite to an absolute URL', rule: { rewrite: '^/r/([\\s\\S]*)$', replacement: 'https://example.com/$1' } },
  { name: 'named capture', rule: { rewrite: '^/r/(?<rest>[\\s\\S]*)$', replacement: 'https://example.com/$rest' } },
  { name: 'return with $uri', rule: { return: 301, url: 'https://example.com$uri' } },
  { name: 'return with a capture from if', rule: { if: '$uri ~ ^/r/([\\s\\S]*)$', then: [{ return: 302, url: '/n/$1' }] } },
  { name: 'path-to-regexp redirect', rule: { from: '/r/*rest', to: 'https://example.com/*rest' } },
];
const NASTY = [
  { path: '/r/a%0d%0aSet-Cookie:%20x=1', bad: /\r|\n|Set-Cookie: x=1/ },
  { path: '/r/a%0aX-Injected:%201', bad: /\n/ },
  { path: '/r/%00%01%1b%7f', bad: /[\u0000-\u001f\u007f]/ },
  { path: '/r/%E2%82%AC%20%22q%22', bad: /[^\x21-\x7e]/ },
];

for (const r of REDIRECTS) {
  test(`Location carries no controls from the request: ${r.name}`, async (t) => {
    const gw = await rewriteGateway(t, [r.rule]);
    for (const n of NASTY) {
      const c = await RawClient.open(t, gw.port);
      c.write(`GET ${n.path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n`);
      const res = await c.response();
      // %00 is refused before any rule (400); everything else is a redirect.
      if (n.path.includes('%00')) {
        assert.equal(res.status, 400);
        continue;
      }
      assert.ok(res.status >= 301 && res.status <= 302, `${n.path}: ${res.status}`);
      const location = res.headers.get('location') ?? '';
      assert.doesNotMatch(location, n.bad, `${n.path}: ${JSON.stringify(location)}`);
      assert.equal(res.headers.get('x-injected'), undefined);
      assert.equal(res.headers.get('set-cookie'), undefined);
      // The capture is percent-encoded, not dropped.
      if (n.path.includes('%0d%0a')) assert.match(location, /a%0D%0ASet-Cookie:%20x=1$/i);
      if (n.path.includes('%E2')) assert.match(location, /%E2%82%AC%20(?:%22|")q(?:%22|")$/);
    }
  });
}

test('a Host header with odd characters is not copied into a relative redirect: the request is 400 (nginx)', async (t) => {
  const gw = await rewriteGateway(t, [{ return: 301, url: '/elsewhere' }]);
  const c = await RawClient.open(t, gw.port);
  c.write('GET / HTTP/1.1\r\nHost: evil.test/x?\r\nConnection: close\r\n\r\n');
  const res = await c.response();
  assert.equal(res.status, 400);
  assert.equal(res.headers.get('location'), undefined);
});

// ---- traversal out of a prefix ----

/** A gateway `rewrite(rules)` + balance(pool) with a recording upstream; a raw client sends the target as is. */
async function proxied(t: TestContext, rules: RewriteRule[]) {
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await listen(t, createServer(chain(rewrite(rules), balance(pool), { final: (err, req, res) => respondWithError(err, req, res) })));
  const send = async (target: string, headers = ''): Promise<{ status: number; upstream: string | undefined }> => {
    const before = up.seen.length;
    const c = await RawClient.open(t, gw.port);
    c.write(`GET ${target} HTTP/1.1\r\nHost: gw.test\r\n${headers}Connection: close\r\n\r\n`);
    const res = await c.response();
    return { status: res.status, upstream: up.seen.length > before ? up.seen[up.seen.length - 1]!.url : undefined };
  };
  return { send, up };
}

/** What an upstream that decodes once, reads `\\` as `/` and resolves dot segments makes of a target. */
function resolvedOnce(target: string): string {
  const path = decodeURIComponent(target.split('?')[0]!).replaceAll('\\', '/');
  const out: string[] = [];
  for (const seg of path.split('/').slice(1)) {
    if (seg === '..') out.pop();
    else if (seg !== '.' && seg !== '') out.push(seg);
  }
  return `/${out.join('/')}`;
}

const TRAVERSALS = [
  '/pub/%2e%2e/secret',
  '/pub/%2E%2E/%2E%2E/secret',
  '/pub/..%2fsecret',
  '/pub/..%2f..%2fsecret',
  '/pub/..%5csecret',
  '/pub/..%5c..%5csecret',
  '/pub/a/..%2f..%2f..%2fsecret',
  '/pub/%252e%252e/secret',
  '/pub/%252e%252e%252fsecret',
  '/pub/%25252e%25252e/secret',
  '/pub/.%2e/secret',
  '/pub//..//secret',
  '/pub/a%2f%2e%2e%2f%2e%2e%2fsecret',
];

for (const [kind, rules] of Object.entries({
  regex: [{ rewrite: '^/pub/(.*)$', replacement: '/files/public/$1', flag: 'break' }] as RewriteRule[],
  'path-to-regexp': [{ from: '/pub/*rest', to: '/files/public/*rest', flag: 'break' }] as RewriteRule[],
  'regex capture mid-segment': [{ rewrite: '^/pub/x-(.*)$', replacement: '/files/public/$1', flag: 'break' }] as RewriteRule[],
})) {
  test(`${kind}: encoded dots, slashes and backslashes stay inside the prefix`, async (t) => {
    const { send } = await proxied(t, rules);
    const targets =
      kind === 'regex capture mid-segment'
        ? ['/pub/x-..', '/pub/x-../secret', '/pub/x-%2e%2e/secret', '/pub/x-..%2fsecret', '/pub/x-..%5c..%5csecret', '/pub/x-.%2e']
        : TRAVERSALS;
    for (const target of targets) {
      const r = await send(target);
      if (r.upstream === undefined) {
        // Refused before the upstream: `..` above the root, or a rewrite that would climb.
        assert.ok(r.status === 400 || r.status === 404, `${target}: ${r.status}`);
        continue;
      }
      const seen = resolvedOnce(r.upstream);
      if (kind !== 'regex capture mid-segment' && !target.startsWith('/pub/')) continue;
      // A path that normalizes outside /pub/ is not rewritten; one that is rewritten stays in /files/public/.
      if (r.upstream.startsWith('/files/')) assert.ok(seen.startsWith('/files/public/'), `${target} -> ${r.upstream} -> ${seen}`);
      else assert.ok(!seen.startsWith('/files/'), `${target} -> ${r.upstream}`);
    }
  });
}

test('.. above the root is 400 with no upstream hit', async (t) => {
  const { send, up } = await proxied(t, [{ rewrite: '^/(.*)$', replacement: '/files/$1', flag: 'break' }]);
  for (const target of ['/%2e%2e/etc/passwd', '/..%2fetc', '/a/../../etc', '/..%5c..%5cetc', '/%2e%2e%2f%2e%2e%2fetc']) {
    const r = await send(target);
    assert.equal(r.status, 400, target);
  }
  assert.equal(up.seen.length, 0);
});

test('double encoding reaches the upstream still encoded (never decoded twice)', async (t) => {
  const { send } = await proxied(t, [{ rewrite: '^/pub/(.*)$', replacement: '/files/public/$1', flag: 'break' }]);
  const r = await send('/pub/%252e%252e/secret');
  assert.equal(r.upstream, '/files/public/%252e%252e/secret');
  const p = await send('/pub/a%252fb');
  assert.equal(p.upstream, '/files/public/a%252fb');
});

test('a capture that would form a .. segment is refused (400), not sent', async (t) => {
  const { send, up } = await proxied(t, [{ rewrite: '^/x-(.*)$', replacement: '/base/$1', flag: 'break' }]);
  // nginx 1.22 sends `/base/../secret` upstream here; switchyard answers 400.
  const r = await send('/x-../secret');
  assert.equal(r.status, 400);
  assert.equal(up.seen.length, 0);
});

test('a decoded ? or # in the path does not become a query or fragment upstream', async (t) => {
  const { send } = await proxied(t, [{ rewrite: '^/q/(.*)$', replacement: '/s/$1', flag: 'break' }]);
  const r = await send('/q/a%3Fb%23c?d=1');
  // nginx 1.22 sends /s/a%3Fb... with args d=1.
  assert.equal(r.upstream, '/s/a%3Fb%23c?d=1');
});

// ---- linear time ----

test('path-to-regexp rules finish on a 100k-character path', async (_t) => {
  const rules: RewriteRule[] = [
    { from: '/a/:x-:y-:z', to: '/b/:x' },
    { from: '/a/*rest/end', to: '/b/*rest' },
    { from: '/a{/:x}{/:y}/z', to: '/c' },
  ];
  // Past Node's header size limit, so the middleware is called directly.
  const mw = rewrite(rules);
  const long = `/a/${'-'.repeat(100_000)}`;
  const slashes = `/a/${'x/'.repeat(50_000)}`;
  for (const path of [long, slashes]) {
    const req = { url: path, method: 'GET', headers: { host: 'x' }, socket: {} } as unknown as IncomingMessage;
    let called = 0;
    mw(req, {} as ServerResponse, (err) => {
      assert.equal(err, undefined);
      called++;
    });
    assert.equal(called, 1);
    assert.ok(exchange(req).uri.length > 3);
  }
});

// ---- regressions found in review ----

test('a capture cannot add query arguments or a fragment: it is percent-encoded in the args', async (t) => {
  const { send, up } = await proxied(t, [{ rewrite: '^/s/(.*)$', replacement: '/search?q=$1', flag: 'last' }]);
  for (const [target, q] of [
    ['/s/a%26admin%3Dtrue', 'a%26admin%3Dtrue'],
    ['/s/a%23b', 'a%23b'],
    ['/s/a%20b', 'a%20b'],
  ] as const) {
    const r = await send(target);
    assert.equal(r.status, 200, target);
    assert.equal(r.upstream, `/search?q=${q}`, target);
  }
  assert.equal(new URL(`http://x${up.seen.at(-1)!.url}`).searchParams.get('admin'), null);
});

test('a redirect to //host or /\\host stays on this site (no open redirect)', async (t) => {
  const absolute = await rewriteGateway(t, [{ rewrite: '^/foo(.*)$', replacement: '/$1', flag: 'redirect' }]);
  const a = await absolute.get('/foo/evil.com/x', { host: 'gw.example' });
  assert.equal(a.status, 302);
  assert.equal(a.headers.location, 'http://gw.example//evil.com/x');
  const relative = await rewriteGateway(t, [{ rewrite: '^/foo(.*)$', replacement: '/$1', flag: 'redirect' }], { absoluteRedirect: false });
  assert.equal((await relative.get('/foo/evil.com/x')).headers.location, '/evil.com/x');
  assert.equal((await relative.get('/foo%5Cevil.com/x')).headers.location?.startsWith('//'), false);
});

// ---- hostile request targets (issue 11) ----

test('a fragment in the target cannot slip past an exact or a regex location: the upstream never sees it', { timeout: 30_000 }, async (t) => {
  const { send, up } = await proxied(t, [
    { location: '= /admin', rules: [{ return: 403 }] },
    { location: '~ \\.php$', rules: [{ return: 403 }] },
  ]);
  // nginx's `$uri` ends at `#` too: these are `/admin` and `/x.php` to it.
  for (const target of ['/admin#x', '/admin?a=1#x', '/x.php#y', '/x.php#/../ok', '/admin#', 'http://gw.test/admin#x']) {
    const r = await send(target);
    assert.equal(r.status, 403, target);
    assert.equal(r.upstream, undefined, target);
  }
  const ok = await send('/ok?a=1#/admin');
  assert.equal(ok.status, 200);
  assert.equal(ok.upstream, '/ok?a=1', 'the upstream gets the target without its fragment');
  assert.equal(up.seen.length, 1);
});

test('the exchange record ends $request_uri, $uri and $args at #', { timeout: 30_000 }, async (t) => {
  const gw = await rewriteGateway(t, [{ set: '$ru', value: '$request_uri' }]);
  const echo = async (target: string) => {
    const c = await RawClient.open(t, gw.port);
    c.write(`GET ${target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n`);
    const res = await c.response();
    assert.equal(res.status, 200, target);
    return JSON.parse(res.body) as { uri: string; args: string; vars: Record<string, string> };
  };
  for (const [target, uri, args, requestUri] of [
    ['/a?b=1#frag', '/a', 'b=1', '/a?b=1'],
    ['/a#f?b=1', '/a', '', '/a'],
    ['/a?b#c?d', '/a', 'b', '/a?b'],
    ['/p%23q#r', '/p#q', '', '/p%23q'],
  ] as const) {
    const e = await echo(target);
    assert.deepEqual([e.uri, e.args, e.vars.ru], [uri, args, requestUri], target);
  }
});

test('a ..; or .; path parameter segment is refused (400): Tomcat and Jetty read it as .. or .', { timeout: 30_000 }, async (t) => {
  // Only /app/ is served; everything else is refused at the gateway.
  const { send, up } = await proxied(t, [
    { location: '/app/', rules: [] },
    { location: '/', rules: [{ return: 403 }] },
  ]);
  for (const target of [
    '/app/..;/admin',
    '/app/..;x/admin',
    '/app/%2e%2e;/admin',
    '/app/..%3b/admin',
    '/app/.;/..;/admin',
    '/app/.;x/a',
    '/..;/',
    '/..;foo/',
    '/app/..;',
  ]) {
    const r = await send(target);
    assert.equal(r.status, 400, target);
    assert.equal(r.upstream, undefined, target);
  }
  // Path parameters on ordinary segments, and names that only start with dots, go through.
  for (const target of ['/app/a;b/c', '/app/...;x', '/app/.well-known;x/y']) {
    const r = await send(target);
    assert.equal(r.status, 200, target);
    assert.equal(r.upstream, target);
  }
  assert.equal(up.seen.length, 3);
});

test('$uri and header variables in rewritten arguments are percent-encoded: the upstream gets a valid target', { timeout: 30_000 }, async (t) => {
  const { send, up } = await proxied(t, [
    { location: '/h/', rules: [{ rewrite: '^', replacement: '/x?ua=$http_x_v&n=1', flag: 'break' }] },
    {
      location: '/s/',
      rules: [
        { set: '$v', value: '$uri' },
        { rewrite: '^', replacement: '/x?v=$v', flag: 'break' },
      ],
    },
    { location: '/', rules: [{ rewrite: '^', replacement: '/x?u=$uri', flag: 'break' }] },
  ]);
  const query = (): URLSearchParams => new URL(`http://x${up.seen.at(-1)!.url}`).searchParams;
  // nginx 1.22 sends `GET /x?u=/a b` here, which its own upstream answers 400.
  const spaced = await send('/a%20b');
  assert.equal(spaced.status, 200);
  assert.equal(spaced.upstream, '/x?u=%2Fa%20b');
  assert.equal(query().get('u'), '/a b');
  // A decoded & or # in the path stays inside the argument.
  const amp = await send('/a%26admin%3D1%23c');
  assert.equal(amp.status, 200);
  assert.equal(query().get('u'), '/a&admin=1#c');
  assert.equal(query().get('admin'), null);
  const utf8 = await send('/%E2%82%AC');
  assert.equal(utf8.status, 200);
  assert.equal(utf8.upstream, '/x?u=%2F%E2%82%AC');
  // A set variable keeps its escapes, and what a request line cannot hold is encoded.
  const set = await send('/s/a%20b%25');
  assert.equal(set.status, 200);
  assert.equal(set.upstream, '/x?v=/s/a%20b%25');
  // A header value with spaces, an ampersand and a #.
  const header = await send('/h/a', 'X-V: Mozilla/5.0 (X11) a&n=2#x\r\n');
  assert.equal(header.status, 200);
  assert.equal(header.upstream, '/x?ua=Mozilla%2F5.0%20(X11)%20a%26n%3D2%23x&n=1');
  assert.equal(query().get('ua'), 'Mozilla/5.0 (X11) a&n=2#x');
  assert.deepEqual(query().getAll('n'), ['1']);
});
