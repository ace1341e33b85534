// sticky() route mode (reference 4.3, nginx TST upstream_sticky_route.t): the first non-empty source
// names the server by route (or MD5 SID); unknown or empty → the balancer; no cookie is issued.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { createPool, exchange, InvalidOptionError, sticky, type RouteSource, type ServerOptions } from '../../src/index.ts';
import { poolOf, type Upstream } from '../helpers.ts';
import { named, setCookies, stickyGateway, type StickyGateway } from './support.ts';

const SOURCES: RouteSource[] = [{ cookie: 'route' }, { query: 'route' }];

async function routed(
  t: TestContext,
  route: RouteSource | RouteSource[] = SOURCES,
  routes: Record<string, string> = { a: 'a', b: 'b', c: 'c' },
): Promise<{ ups: Record<string, Upstream>; gw: StickyGateway }> {
  const ups = await named(t, Object.keys(routes));
  const extra: Record<string, Partial<ServerOptions>> = {};
  for (const [id, r] of Object.entries(routes)) if (r !== '') extra[id] = { route: r };
  const pool = poolOf(t, ups, { extra });
  const gw = await stickyGateway(t, pool, { route });
  return { ups, gw };
}

async function bodies(gw: StickyGateway, n: number, path = '/', headers: Record<string, string> = {}): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await gw.get(path, headers);
    assert.equal(r.status, 200);
    assert.deepEqual(setCookies(r), [], 'route mode issues no cookie');
    out.push(r.body);
  }
  return out;
}

test('new requests are balanced round robin (a b c a)', async (t) => {
  const { gw } = await routed(t);
  assert.deepEqual(await bodies(gw, 4), ['a', 'b', 'c', 'a']);
});

const CASES: Array<[string, string, Record<string, string>, string[]]> = [
  ['Cookie route=b → b', '/', { cookie: 'route=b' }, ['b', 'b', 'b', 'b']],
  ['?route=c → c', '/?route=c', {}, ['c', 'c', 'c', 'c']],
  ['unknown route → balancer in RR order', '/?route=zzz', { cookie: 'route=nope' }, ['a', 'b', 'c', 'a']],
  ['cookie a + arg c → a (first source wins)', '/?route=c', { cookie: 'route=a' }, ['a', 'a', 'a']],
  ['empty cookie + arg c → c (first non-empty)', '/?route=c', { cookie: 'route=' }, ['c', 'c', 'c']],
  ['route is case-sensitive: B → balancer', '/', { cookie: 'route=B' }, ['a', 'b', 'c']],
  ['other cookies around it', '/', { cookie: 'x=1; route=c; y=2' }, ['c', 'c']],
];
for (const [name, path, headers, expected] of CASES) {
  test(name, async (t) => {
    const { gw } = await routed(t);
    assert.deepEqual(await bodies(gw, expected.length, path, headers), expected);
  });
}

test("template source '$cookie_route' and a template combining variables", async (t) => {
  const { gw } = await routed(t, '$cookie_route');
  assert.deepEqual(await bodies(gw, 3, '/', { cookie: 'route=c' }), ['c', 'c', 'c']);
  const second = await routed(t, ['$cookie_route', '$arg_r']);
  assert.deepEqual(await bodies(second.gw, 2, '/?r=b'), ['b', 'b']);
});

test('function source (gets req and exchange)', async (t) => {
  const calls: string[] = [];
  const fn: RouteSource = (req, ex) => {
    calls.push(req.url ?? '');
    assert.equal(ex, exchange(req));
    const m = /^\/svc\/(\w+)/.exec(req.url ?? '');
    return m?.[1];
  };
  const { gw } = await routed(t, fn);
  assert.deepEqual(await bodies(gw, 3, '/other'), ['a', 'b', 'c'], 'undefined → balanced');
  assert.deepEqual(await bodies(gw, 3, '/svc/b/x'), ['b', 'b', 'b']);
  assert.ok(calls.length >= 6);
});

test('header source', async (t) => {
  const { gw } = await routed(t, { header: 'X-Route' });
  assert.deepEqual(await bodies(gw, 3, '/', { 'x-route': 'c' }), ['c', 'c', 'c']);
  assert.deepEqual(await bodies(gw, 2, '/', { 'x-route': 'a' }), ['a', 'a']);
});

test('pattern: JSESSIONID=abc.node2 → the server with route node2; no match → balanced', async (t) => {
  const { gw } = await routed(t, { cookie: 'JSESSIONID', pattern: /\.(?<route>\w+)$/ }, { n1: 'node1', n2: 'node2', n3: 'node3' });
  assert.deepEqual(await bodies(gw, 3, '/', { cookie: 'JSESSIONID=abcnode2' }), ['n1', 'n2', 'n3'], 'no match → RR');
  assert.deepEqual(await bodies(gw, 3, '/', { cookie: 'JSESSIONID=abc.node2' }), ['n2', 'n2', 'n2']);
  const other = await routed(t, { cookie: 'JSESSIONID', pattern: /\.(?<route>\w+)$/ }, { n1: 'node1', n2: 'node2', n3: 'node3' });
  assert.deepEqual(await bodies(other.gw, 3, '/', { cookie: 'JSESSIONID=abc.node9' }), ['n1', 'n2', 'n3'], 'unknown route → RR');
});

test('a pattern without a named group "route" → InvalidOptionError at sticky() time', (t) => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  t.after(() => pool.close());
  assert.throws(
    () => sticky(pool, { route: { cookie: 'JSESSIONID', pattern: /\.(\w+)$/ } }),
    (e: unknown) => e instanceof InvalidOptionError && e.option === 'route.pattern',
  );
  assert.throws(
    () => sticky(pool, { route: [{ query: 'r' }, { header: 'x', pattern: /(?<id>\w+)/ }] }),
    (e: unknown) => e instanceof InvalidOptionError && e.option === 'route[1].pattern',
  );
  assert.throws(
    () => sticky(pool, { route: [] }),
    (e: unknown) => e instanceof InvalidOptionError && e.option === 'route',
  );
  assert.throws(
    () => sticky(pool, { route: { cookie: '' } as RouteSource }),
    (e: unknown) => e instanceof InvalidOptionError && e.option === 'route',
  );
});

test('servers without route get the MD5 SID; that value selects them', async (t) => {
  const ups = await named(t, ['a', 'b', 'c']);
  const pool = poolOf(t, ups);
  const gw = await stickyGateway(t, pool, { route: SOURCES });
  const sid = createHash('md5').update(`127.0.0.1:${ups.b!.port}`).digest('hex');
  assert.equal(pool.get('b')!.sid, sid);
  assert.deepEqual(await bodies(gw, 3, `/?route=${sid}`), ['b', 'b', 'b']);
  assert.deepEqual(await bodies(gw, 2, '/', { cookie: `route=${pool.get('c')!.sid}` }), ['c', 'c']);
});

test('long routes (32 characters) work', async (t) => {
  const long = (ch: string): string => ch.repeat(31) + '9';
  const { gw } = await routed(t, SOURCES, { a: long('a'), b: long('b'), c: long('c') });
  assert.deepEqual(await bodies(gw, 3, '/', { cookie: `route=${long('c')}` }), ['c', 'c', 'c']);
  assert.deepEqual(await bodies(gw, 2, `/?route=${long('b')}`), ['b', 'b']);
});
