// Cacheability and freshness (nginx proxy_cache_valid / proxy_ignore_headers and the
// X-Accel-Expires, Cache-Control, Expires, Set-Cookie, Vary rules). Expected values
// come from the reference's verified matrix (nginx-semantics.md 6.4) and the
// nginx-tests cases it cites (proxy_cache_valid.t, proxy_cache_control.t,
// proxy_cache_use_stale.t, proxy_cache_vary.t).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidOptionError } from '../../src/core/errors.ts';
import {
  compilePolicy,
  compileValid,
  DEFAULT_VALID_CODES,
  freshness,
  headerValues,
  parseHttpDate,
  validTtl,
  type CachePolicyOptions,
  type HeadersInput,
  type NotStoredReason,
  type TtlSource,
  type ValidOption,
} from '../../src/cache/policy.ts';

/** A fixed clock: 2026-01-01T00:00:00.250Z (a sub-second part on purpose). */
const NOW = Date.UTC(2026, 0, 1) + 250;
const date = (offsetSeconds: number): string => new Date(Math.floor(NOW / 1000) * 1000 + offsetSeconds * 1000).toUTCString();

describe('compileValid', () => {
  const cases: { name: string; valid: ValidOption; expect: Record<number, number | undefined> }[] = [
    {
      name: 'time alone covers 200, 301, 302 (matrix: valid 1m)',
      valid: '1m',
      expect: { 200: 60_000, 301: 60_000, 302: 60_000, 404: undefined, 500: undefined },
    },
    { name: 'number of ms alone', valid: 1500, expect: { 200: 1500, 204: undefined } },
    { name: 'object with any as fallback', valid: { 200: '10m', 404: '1m', any: '5s' }, expect: { 200: 600_000, 404: 60_000, 500: 5000, 301: 5000 } },
    { name: 'object: any written first still comes after codes', valid: { any: '5s', 200: '10m' }, expect: { 200: 600_000, 503: 5000 } },
    {
      name: 'object key with several codes',
      valid: { '301 302': '1h', '404,410': '1m' },
      expect: { 301: 3_600_000, 302: 3_600_000, 410: 60_000, 200: undefined },
    },
    {
      name: 'array: first matching entry wins',
      valid: [
        [[200, 301], '10m'],
        [200, '1s'],
        [404, '1m'],
      ],
      expect: { 200: 600_000, 301: 600_000, 404: 60_000, 302: undefined },
    },
    {
      name: 'array: any first wins over later codes (config order)',
      valid: [
        ['any', '10s'],
        [404, '1m'],
      ],
      expect: { 404: 10_000, 200: 10_000 },
    },
    {
      name: 'array: 0 excludes a code before any',
      valid: [
        [404, 0],
        ['any', '1m'],
      ],
      expect: { 404: 0, 200: 60_000 },
    },
    { name: 'valid any 10s (matrix: 404 cached)', valid: [['any', '10s']], expect: { 404: 10_000, 500: 10_000 } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const v = compileValid(c.valid);
      for (const [status, ttl] of Object.entries(c.expect)) assert.equal(validTtl(v, Number(status)), ttl, `status ${status}`);
      assert.ok(Object.isFrozen(v) && Object.isFrozen(v.rules));
    });
  }

  it('time alone uses the exported default codes', () => {
    assert.deepEqual(compileValid('1s').rules[0]!.codes, DEFAULT_VALID_CODES);
  });

  const invalid: { valid: unknown; option: string }[] = [
    { valid: '10 minutes', option: 'valid' },
    { valid: -1, option: 'valid' },
    { valid: true, option: 'valid' },
    { valid: null, option: 'valid' },
    { valid: [], option: 'valid' },
    { valid: {}, option: 'valid' },
    { valid: [[200]], option: 'valid[0]' },
    {
      valid: [
        [200, '1m'],
        ['all', '1m'],
      ],
      option: 'valid[1][0]',
    },
    { valid: [[[], '1m']], option: 'valid[0][0]' },
    { valid: [[[200, 99], '1m']], option: 'valid[0][0][1]' },
    { valid: [[600, '1m']], option: 'valid[0][0]' },
    { valid: [[200.5, '1m']], option: 'valid[0][0]' },
    { valid: [[200, 'soon']], option: 'valid[0][1]' },
    { valid: { 200: 'x' }, option: 'valid.200' },
    { valid: { ok: '1m' }, option: 'valid.ok' },
    { valid: { '200 abc': '1m' }, option: 'valid.200 abc' },
    { valid: { 200: '1m', '200 301': '1h' }, option: 'valid.200 301' },
  ];
  for (const c of invalid) {
    it(`rejects ${JSON.stringify(c.valid)} naming ${c.option}`, () => {
      assert.throws(
        () => compileValid(c.valid as ValidOption),
        (err: unknown) => {
          assert.ok(err instanceof InvalidOptionError);
          assert.equal(err.code, 'SWY_ERR_INVALID_OPTION');
          assert.equal(err.option, c.option);
          return true;
        },
      );
    });
  }
});

describe('compilePolicy', () => {
  it('validates ignoreHeaders and authorized, naming the option', () => {
    const bad: [CachePolicyOptions, string][] = [
      [{ ignoreHeaders: ['X-Accel-Redirect' as 'Vary'] }, 'ignoreHeaders[0]'],
      [{ ignoreHeaders: ['Vary', 3 as unknown as 'Vary'] }, 'ignoreHeaders[1]'],
      [{ ignoreHeaders: 'Vary' as unknown as ['Vary'] }, 'ignoreHeaders'],
      [{ authorized: 'yes' as unknown as boolean }, 'authorized'],
      [{ valid: { 200: '1x' } }, 'valid.200'],
    ];
    for (const [options, option] of bad) {
      assert.throws(
        () => compilePolicy(options),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      );
    }
  });

  it('is frozen, case-insensitive for header names, and leaves the caller object alone', () => {
    const options: CachePolicyOptions = { ignoreHeaders: ['set-cookie' as 'Set-Cookie', 'VARY' as 'Vary'] };
    const copy = structuredClone(options);
    const p = compilePolicy(options);
    assert.ok(Object.isFrozen(p));
    assert.deepEqual([...p.ignoreHeaders], ['set-cookie', 'vary']);
    assert.deepEqual(options, copy);
    assert.equal(p.authorized, false);
    assert.equal(p.valid, undefined);
  });
});

interface Case {
  name: string;
  status?: number | undefined;
  headers: HeadersInput;
  request?: HeadersInput | undefined;
  options?: CachePolicyOptions | undefined;
  /** Expected TTL in seconds, or the reason it is not stored. */
  expect: number | NotStoredReason;
  source?: TtlSource | undefined;
  swr?: number | undefined;
  sie?: number | undefined;
  vary?: string[] | undefined;
}

const V1M: CachePolicyOptions = { valid: '1m' };

const CASES: Case[] = [
  // 6.4 matrix
  { name: 'matrix: valid 200 1s', options: { valid: [[200, '1s']] }, headers: {}, expect: 1, source: 'valid' },
  { name: 'matrix: valid 1m (time only), 200', options: V1M, headers: {}, expect: 60, source: 'valid' },
  { name: 'matrix: valid 1m (time only), 404 not stored', status: 404, options: V1M, headers: {}, expect: 'no-ttl' },
  { name: 'matrix: valid 1m (time only), 302', status: 302, options: V1M, headers: {}, expect: 60 },
  { name: 'matrix: 500 with valid 1m not stored', status: 500, options: V1M, headers: {}, expect: 'no-ttl' },
  { name: 'matrix: valid any 10s, 404 stored', status: 404, options: { valid: [['any', '10s']] }, headers: {}, expect: 10 },
  { name: 'matrix: no valid, no headers: nothing stored', headers: {}, expect: 'no-ttl' },
  { name: 'matrix: no valid + Cache-Control max-age=60', headers: { 'cache-control': 'max-age=60' }, expect: 60, source: 'cache-control' },
  { name: 'matrix: X-Accel-Expires 60, no valid', headers: { 'x-accel-expires': '60' }, expect: 60, source: 'x-accel-expires' },
  { name: 'matrix: Expires in the past', options: V1M, headers: { expires: date(-10) }, expect: 'expires' },
  { name: 'matrix: Set-Cookie', options: V1M, headers: { 'set-cookie': ['a=1'] }, expect: 'set-cookie' },
  { name: 'matrix: CC private', options: V1M, headers: { 'cache-control': 'private' }, expect: 'cache-control-private' },
  { name: 'matrix: CC no-store', options: V1M, headers: { 'cache-control': 'no-store' }, expect: 'cache-control-private' },
  { name: 'matrix: CC max-age=0', options: V1M, headers: { 'cache-control': 'max-age=0' }, expect: 'cache-control-zero' },
  { name: 'matrix: Vary *', options: V1M, headers: { vary: '*' }, expect: 'vary-star' },
  { name: 'matrix: X-Accel-Expires 0', options: V1M, headers: { 'x-accel-expires': '0', 'cache-control': 'max-age=60' }, expect: 'x-accel-expires' },
  { name: 'matrix: CC public falls through to valid', options: V1M, headers: { 'cache-control': 'public' }, expect: 60, source: 'valid' },
  { name: 'matrix: Vary X-A', options: V1M, headers: { vary: 'X-A' }, expect: 60, vary: ['x-a'] },

  // proxy_cache_valid.t / proxy_cache_control.t
  { name: 'max-age overrides valid', options: V1M, headers: { 'cache-control': 'max-age=5' }, expect: 5, source: 'cache-control' },
  { name: 's-maxage over max-age (either order)', headers: { 'cache-control': 'max-age=5, s-maxage=7' }, expect: 7 },
  { name: 's-maxage=0 beats max-age', headers: { 'cache-control': 's-maxage=0, max-age=60' }, expect: 'cache-control-zero' },
  { name: 'no-cache, max-age=60 not stored', headers: { 'cache-control': 'no-cache, max-age=60' }, expect: 'cache-control-private' },
  { name: 'no-cache anywhere, with a field list', headers: { 'cache-control': 'max-age=60, no-cache="Set-Cookie, X-A"' }, expect: 'cache-control-private' },
  { name: 'directive names are case-insensitive', headers: { 'cache-control': 'Max-Age=60, PRIVATE' }, expect: 'cache-control-private' },
  { name: 'unparsable max-age not stored', options: V1M, headers: { 'cache-control': 'max-age=abc' }, expect: 'cache-control-invalid' },
  { name: 'empty max-age not stored', options: V1M, headers: { 'cache-control': 'max-age=' }, expect: 'cache-control-invalid' },
  { name: 'negative max-age not stored', options: V1M, headers: { 'cache-control': 'max-age=-1' }, expect: 'cache-control-invalid' },
  { name: 'several Cache-Control lines are one list', headers: { 'cache-control': ['public', 'max-age=30'] }, expect: 30 },
  { name: 'CC wins over Expires (Expires first)', headers: ['Expires', date(-10), 'Cache-Control', 'max-age=30'], expect: 30, source: 'cache-control' },
  { name: 'CC wins over Expires (CC first)', headers: ['Cache-Control', 'max-age=30', 'Expires', date(3600)], expect: 30, source: 'cache-control' },
  { name: 'X-Accel-Expires over CC (X-Accel first)', headers: ['X-Accel-Expires', '20', 'Cache-Control', 'max-age=30'], expect: 20, source: 'x-accel-expires' },
  { name: 'X-Accel-Expires over CC (CC first)', headers: ['Cache-Control', 'max-age=30', 'X-Accel-Expires', '20'], expect: 20, source: 'x-accel-expires' },
  { name: 'X-Accel-Expires over CC private/no-cache', headers: { 'cache-control': 'private, no-cache', 'x-accel-expires': '20' }, expect: 20 },
  { name: 'X-Accel-Expires over Expires in the past', headers: { expires: date(-10), 'x-accel-expires': '20' }, expect: 20 },
  { name: 'X-Accel-Expires over valid', options: V1M, headers: { 'x-accel-expires': '20' }, expect: 20 },
  { name: 'X-Accel-Expires: first of two lines wins (raw)', headers: ['X-Accel-Expires', '20', 'X-Accel-Expires', '0'], expect: 20 },
  { name: 'X-Accel-Expires: first wins when Node joined them', headers: { 'x-accel-expires': '0, 20' }, expect: 'x-accel-expires' },
  { name: 'X-Accel-Expires @T absolute', headers: { 'x-accel-expires': `@${Math.floor(NOW / 1000) + 100}` }, expect: 99.75 },
  // nginx stores it expired from the start: the next request is EXPIRED, not MISS.
  {
    name: 'X-Accel-Expires @T in the past is stored expired',
    options: V1M,
    headers: { 'x-accel-expires': `@${Math.floor(NOW / 1000) - 1}`, 'cache-control': 'max-age=60' },
    expect: 0,
    source: 'x-accel-expires',
  },
  { name: 'X-Accel-Expires @0 is ignored (nginx: no time set)', options: V1M, headers: { 'x-accel-expires': '@0' }, expect: 60, source: 'valid' },
  { name: 'X-Accel-Expires @0 leaves Cache-Control the TTL', headers: { 'x-accel-expires': '@0', 'cache-control': 'max-age=5' }, expect: 5 },
  { name: 'X-Accel-Expires not a number is ignored', options: V1M, headers: { 'x-accel-expires': 'soon' }, expect: 60, source: 'valid' },
  { name: 'X-Accel-Expires 0 beats valid any', options: { valid: [['any', '1m']] }, headers: { 'x-accel-expires': '0' }, expect: 'x-accel-expires' },
  { name: 'Expires in the future', headers: { expires: date(3600) }, expect: 3599.75, source: 'expires' },
  { name: 'Expires invalid', options: V1M, headers: { expires: '0' }, expect: 'expires' },
  { name: 'Expires now (second already started) is past', options: V1M, headers: { expires: date(0) }, expect: 'expires' },
  { name: 'Expires overrides valid', options: V1M, headers: { expires: date(10) }, expect: 9.75, source: 'expires' },
  { name: 'a header TTL applies to a status valid does not cover', status: 500, options: V1M, headers: { 'cache-control': 'max-age=5' }, expect: 5 },

  // stale windows (proxy_cache_use_stale.t)
  { name: 'stale-while-revalidate sets both windows', headers: { 'cache-control': 'max-age=5, stale-while-revalidate=10' }, expect: 5, swr: 10, sie: 10 },
  { name: 'stale-if-error sets the error window', headers: { 'cache-control': 'max-age=5, stale-if-error=20' }, expect: 5, swr: 0, sie: 20 },
  { name: 'both extensions', headers: { 'cache-control': 'stale-if-error=20, max-age=5, stale-while-revalidate=10' }, expect: 5, swr: 10, sie: 20 },
  {
    name: 'windows kept when X-Accel-Expires sets the TTL',
    headers: { 'x-accel-expires': '3', 'cache-control': 'max-age=5, stale-while-revalidate=10' },
    expect: 3,
    swr: 10,
    sie: 10,
  },
  { name: 'windows with a TTL from valid', options: V1M, headers: { 'cache-control': 'stale-if-error=7' }, expect: 60, sie: 7 },
  {
    name: 'unparsable stale-while-revalidate not stored',
    options: V1M,
    headers: { 'cache-control': 'stale-while-revalidate=x' },
    expect: 'cache-control-invalid',
  },

  // Vary (proxy_cache_vary.t)
  {
    name: 'Vary whitespace-normalized, order kept',
    options: V1M,
    headers: { vary: ' Accept-Encoding ,X-B,  x-a ' },
    expect: 60,
    vary: ['accept-encoding', 'x-b', 'x-a'],
  },
  { name: 'Vary lines joined (raw)', options: V1M, headers: ['Vary', 'X-A', 'Vary', 'X-B, X-C'], expect: 60, vary: ['x-a', 'x-b', 'x-c'] },
  { name: 'Vary lines joined (array)', options: V1M, headers: { vary: ['X-A', 'X-B'] }, expect: 60, vary: ['x-a', 'x-b'] },
  { name: 'Vary with * among names', options: V1M, headers: { vary: 'X-A, *' }, expect: 'vary-star' },
  { name: 'Vary of 128 bytes is kept', options: V1M, headers: { vary: 'x'.repeat(128) }, expect: 60, vary: ['x'.repeat(128)] },
  { name: 'Vary over 128 bytes not stored', options: V1M, headers: { vary: 'x'.repeat(129) }, expect: 'vary-too-long' },
  { name: 'empty Vary is no variants', options: V1M, headers: { vary: ' , ' }, expect: 60, vary: [] },

  // Set-Cookie and ignoreHeaders (proxy_ignore_headers)
  { name: 'Set-Cookie beats X-Accel-Expires', headers: { 'x-accel-expires': '60', 'set-cookie': 'a=1' }, expect: 'set-cookie' },
  { name: 'ignore Set-Cookie', options: { valid: '1m', ignoreHeaders: ['Set-Cookie'] }, headers: { 'set-cookie': ['a=1', 'b=2'] }, expect: 60 },
  {
    name: 'ignore X-Accel-Expires',
    options: { ignoreHeaders: ['X-Accel-Expires'] },
    headers: { 'x-accel-expires': '60', 'cache-control': 'max-age=5' },
    expect: 5,
    source: 'cache-control',
  },
  {
    name: 'ignore X-Accel-Expires: 0 no longer refuses',
    options: { valid: '1m', ignoreHeaders: ['X-Accel-Expires'] },
    headers: { 'x-accel-expires': '0' },
    expect: 60,
  },
  {
    name: 'ignore Cache-Control',
    options: { valid: '1m', ignoreHeaders: ['Cache-Control'] },
    headers: { 'cache-control': 'no-store, stale-if-error=9' },
    expect: 60,
    sie: 0,
  },
  {
    name: 'ignore Cache-Control falls to Expires',
    options: { ignoreHeaders: ['Cache-Control'] },
    headers: { 'cache-control': 'max-age=5', expires: date(10) },
    expect: 9.75,
    source: 'expires',
  },
  { name: 'ignore Expires', options: { valid: '1m', ignoreHeaders: ['Expires'] }, headers: { expires: date(-10) }, expect: 60 },
  { name: 'ignore Vary', options: { valid: '1m', ignoreHeaders: ['Vary'] }, headers: { vary: '*' }, expect: 60, vary: [] },
  {
    name: 'ignore Cache-Control and Expires: valid only',
    options: { ignoreHeaders: ['Cache-Control', 'Expires'] },
    headers: { 'cache-control': 'max-age=5', expires: date(10) },
    expect: 'no-ttl',
  },

  // Authorization (RFC 9111 §3.5; nginx does not check)
  { name: 'Authorization without public: not stored', options: V1M, request: { authorization: 'Bearer x' }, headers: {}, expect: 'authorization' },
  {
    name: 'Authorization with max-age only: not stored',
    request: { authorization: 'Bearer x' },
    headers: { 'cache-control': 'max-age=60' },
    expect: 'authorization',
  },
  { name: 'Authorization with public', options: V1M, request: { authorization: 'Bearer x' }, headers: { 'cache-control': 'public' }, expect: 60 },
  { name: 'Authorization with s-maxage', request: { authorization: 'Bearer x' }, headers: { 'cache-control': 's-maxage=30' }, expect: 30 },
  {
    name: 'Authorization with must-revalidate',
    request: { authorization: 'Bearer x' },
    headers: { 'cache-control': 'max-age=30, must-revalidate' },
    expect: 30,
  },
  { name: 'Authorization from raw request headers', options: V1M, request: ['Authorization', 'Basic eA=='], headers: {}, expect: 'authorization' },
  { name: 'authorized: true stores as nginx', options: { valid: '1m', authorized: true }, request: { authorization: 'Bearer x' }, headers: {}, expect: 60 },
  {
    name: 'Authorization with CC ignored: public unseen',
    options: { valid: '1m', ignoreHeaders: ['Cache-Control'] },
    request: { authorization: 'x' },
    headers: { 'cache-control': 'public' },
    expect: 'authorization',
  },
];

describe('freshness', () => {
  for (const c of CASES) {
    it(c.name, () => {
      const policy = compilePolicy(c.options);
      const f = freshness(c.status ?? 200, c.headers, { headers: c.request ?? {} }, policy, NOW);
      assert.ok(Object.isFrozen(f));
      if (typeof c.expect === 'string') {
        assert.equal(f.store, false, 'not stored');
        assert.equal(f.reason, c.expect);
        assert.equal(f.ttl, 0);
        assert.equal(f.expiresAt, NOW);
        assert.deepEqual([f.staleWhileRevalidate, f.staleIfError, f.vary], [0, 0, []]);
        return;
      }
      assert.equal(f.store, true, `stored (reason ${f.reason})`);
      assert.equal(f.reason, undefined);
      assert.equal(f.ttl, c.expect * 1000);
      assert.equal(f.expiresAt, NOW + c.expect * 1000);
      if (c.source !== undefined) assert.equal(f.source, c.source);
      assert.equal(f.staleWhileRevalidate, (c.swr ?? 0) * 1000);
      assert.equal(f.staleIfError, (c.sie ?? 0) * 1000);
      assert.deepEqual(f.vary, c.vary ?? []);
    });
  }

  it('accepts uncompiled options and defaults now to Date.now()', () => {
    const before = Date.now();
    const f = freshness(200, { 'cache-control': 'max-age=1' }, { headers: {} });
    assert.ok(f.expiresAt >= before + 1000 && f.expiresAt <= Date.now() + 1000);
    assert.equal(freshness(200, {}, { headers: {} }, { valid: '1m' }, 0).ttl, 60_000);
    assert.throws(() => freshness(200, {}, { headers: {} }, { valid: 'x' }, 0), InvalidOptionError);
  });

  it('expiry is to the millisecond, not nginx whole seconds', () => {
    // nginx: valid 200 1s stays fresh 1-2 s; here exactly 1 s after the store.
    const f = freshness(200, {}, { headers: {} }, compilePolicy({ valid: '1s' }), NOW);
    assert.equal(f.expiresAt - NOW, 1000);
    const micro = freshness(200, {}, { headers: {} }, compilePolicy({ valid: '500ms' }), NOW);
    assert.equal(micro.ttl, 500);
  });

  it('does not write into the caller headers', () => {
    const headers = { vary: ['X-A', 'X-B'], 'cache-control': 'max-age=5' };
    const copy = structuredClone(headers);
    freshness(200, headers, { headers: {} }, {}, NOW);
    assert.deepEqual(headers, copy);
  });
});

describe('headerValues', () => {
  it('reads objects and raw lists', () => {
    assert.deepEqual(headerValues({ vary: 'a' }, 'vary'), ['a']);
    assert.deepEqual(headerValues({ 'content-length': 5 } as HeadersInput, 'content-length'), ['5']);
    assert.deepEqual(headerValues({ 'set-cookie': ['a=1', 'b=2'] }, 'set-cookie'), ['a=1', 'b=2']);
    assert.deepEqual(headerValues({}, 'vary'), []);
    assert.deepEqual(headerValues(['Vary', 'a', 'Host', 'h', 'VARY', 'b'], 'vary'), ['a', 'b']);
  });
});

describe('parseHttpDate', () => {
  const cases: [string, number | undefined][] = [
    ['Sun, 06 Nov 1994 08:49:37 GMT', 784_111_777_000],
    ['Sunday, 06-Nov-94 08:49:37 GMT', 784_111_777_000],
    ['Sun Nov  6 08:49:37 1994', 784_111_777_000],
    ['  Sun, 06 Nov 1994 08:49:37 GMT ', 784_111_777_000],
    ['Thursday, 01-Jan-37 00:00:00 GMT', Date.UTC(2037, 0, 1)],
    ['Sun, 31 Feb 1994 08:49:37 GMT', undefined],
    ['Sun, 06 Foo 1994 08:49:37 GMT', undefined],
    ['Sun, 06 Nov 1994 24:00:00 GMT', undefined],
    ['Sun, 06 Nov 1994 08:49:37 PST', undefined],
    ['1994-11-06T08:49:37Z', undefined],
    ['0', undefined],
    ['-1', undefined],
    ['', undefined],
  ];
  for (const [text, ms] of cases) it(JSON.stringify(text), () => assert.equal(parseHttpDate(text), ms));
});
