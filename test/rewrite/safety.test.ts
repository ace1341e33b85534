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

test('a Host header with odd characters is not copied into a relative redirect', async (t) => {
  const gw = await rewriteGateway(t, [{ return: 301, url: '/elsewhere' }]);
  const c = await RawClient.open(t, gw.port);
  c.write('GET / HTTP/1.1\r\nHost: evil.test/x?\r\nConnection: close\r\n\r\n');
  const res = await c.response();
  assert.equal(res.status, 301);
  assert.match(res.headers.get('location') ?? '', /^http:\/\/127\.0\.0\.1\/elsewhere$/);
});

// ---- traversal out of a prefix ----

/** A gateway `rewrite(rules)` + balance(pool) with a recording upstream; a raw client sends the target as is. */
async function proxied(t: TestContext, rules: RewriteRule[]) {
  const up = await upstream(t, 'up');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await listen(t, createServer(chain(rewrite(rules), balance(pool), { final: (err, req, res) => respondWithError(err, req, res) })));
  const send = async (target: string): Promise<{ status: number; upstream: string | undefined }> => {
    const before = up.seen.length;
    const c = await RawClient.open(t, gw.port);
    c.write(`GET ${target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n`);
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
    const targets = kind === 'regex capture mid-segment' ? ['/pub/x-..', '/pub/x-../secret', '/pub/x-%2e%2e/secret', '/pub/x-..%2fsecret', '/pub/x-..%5c..%5csecret', '/pub/x-.%2e'] : TRAVERSALS;
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

test('path-to-regexp rules finish on a 100k-character path', async (t) => {
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
  for (const [target, q] of [['/s/a%26admin%3Dtrue', 'a%26admin%3Dtrue'], ['/s/a%23b', 'a%23b'], ['/s/a%20b', 'a%20b']] as const) {
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
