// The cache: what is stored, HIT/MISS/EXPIRED, HEAD, conditionals and ranges, revalidation.
// Drawn from nginx-tests proxy_cache.t, proxy_cache_control.t, proxy_cache_convert_head.t,
// proxy_cache_range.t, proxy_cache_revalidate.t, proxy_cache_use_stale.t, proxy_cache_valid.t,
// proxy_cache_vary.t, proxy_cache_chunked.t and issue 16's items.
import { type Behaviour, type CacheConfig, type Case, type Reply, req, type Step } from '../harness.ts';

const TEXT: Array<[string, string]> = [['Content-Type', 'text/plain']];
const body = (n: number) => `body ${n}`;
/** Answers 200 with `headers`, a body that tells which request it was. */
const answering =
  (headers: Array<[string, string]>, status = 200): Behaviour =>
  (_r, n) => ({ status, headers: [...TEXT, ...headers], body: body(n) });

const GET = (target: string, headers: Record<string, string> = {}, compare: string[] = []): Step => ({
  request: req(`GET ${target}`, headers),
  headers: compare,
});
const HEAD = (target: string, compare: string[] = []): Step => ({ request: req(`HEAD ${target}`), headers: compare });

/** Fresh for a second with an ETag; a request with If-None-Match gets 304 fresh for a minute (with `on304` headers). */
const revalidating =
  (headers: Array<[string, string]>, on304: Array<[string, string]> = headers): Behaviour =>
  (r, n): Reply => {
    const validators: Array<[string, string]> = [
      ['Cache-Control', 'max-age=1'],
      ['ETag', '"a"'],
    ];
    return n > 0 && r.headers.some(([k]) => k.toLowerCase() === 'if-none-match')
      ? { status: 304, headers: [['Cache-Control', 'max-age=60'], ['ETag', '"a"'], ...on304] }
      : { headers: [...TEXT, ...validators, ...headers], body: 'first' };
  };

const cached = (id: string, from: string, cache: CacheConfig, upstream: Behaviour, steps: Step[]): Case => ({
  id,
  from,
  config: { cache },
  upstream,
  steps,
});

const VALID = { valid: { '200': '1m' } };
/** Two requests to one URL. */
const twice = (headers: Record<string, string> = {}, compare: string[] = []) => [GET('/c', headers, compare), GET('/c', headers, compare)];

export const CACHE_CASES: Case[] = [
  cached('cache-miss-hit', 'proxy_cache.t', VALID, answering([]), twice({}, ['content-type', 'content-length'])),
  cached('cache-max-age', 'proxy_cache_control.t', {}, answering([['Cache-Control', 'max-age=60']]), twice()),
  cached('cache-s-maxage', 'proxy_cache_control.t', {}, answering([['Cache-Control', 's-maxage=60, max-age=0']]), twice()),
  cached('cache-max-age-zero', 'proxy_cache_control.t', VALID, answering([['Cache-Control', 'max-age=0']]), twice()),
  cached('cache-no-store', 'proxy_cache_control.t', VALID, answering([['Cache-Control', 'no-store']]), twice()),
  cached('cache-no-cache', 'proxy_cache_control.t', VALID, answering([['Cache-Control', 'no-cache']]), twice()),
  cached('cache-private', 'proxy_cache_control.t', VALID, answering([['Cache-Control', 'private']]), twice()),
  cached('cache-expires', 'proxy_cache_control.t', {}, answering([['Expires', 'Thu, 31 Dec 2099 23:59:59 GMT']]), twice()),
  cached('cache-expires-past', 'proxy_cache_control.t', VALID, answering([['Expires', 'Thu, 01 Jan 1970 00:00:01 GMT']]), twice()),
  cached('cache-x-accel-expires-zero', 'proxy_cache_control.t', VALID, answering([['X-Accel-Expires', '0']]), twice()),
  cached(
    'cache-x-accel-expires-over-cache-control',
    'proxy_cache_control.t',
    {},
    answering([
      ['X-Accel-Expires', '60'],
      ['Cache-Control', 'no-store'],
    ]),
    twice(),
  ),
  cached(
    'cache-x-accel-expires-past',
    'issue 16 decide: X-Accel-Expires: @past is MISS (nginx EXPIRED)',
    VALID,
    answering([['X-Accel-Expires', '@1']]),
    twice(),
  ),
  cached('cache-set-cookie', 'proxy_cache.t', VALID, answering([['Set-Cookie', 'a=1']]), twice({}, ['set-cookie'])),
  cached('cache-vary-star', 'proxy_cache_vary.t', VALID, answering([['Vary', '*']]), twice()),
  cached('cache-vary-header', 'proxy_cache_vary.t', VALID, answering([['Vary', 'Accept-Encoding']]), [
    GET('/c', { 'Accept-Encoding': 'gzip' }),
    GET('/c', { 'Accept-Encoding': 'gzip' }),
    GET('/c', { 'Accept-Encoding': 'br' }),
  ]),
  cached('cache-valid-404', 'proxy_cache_valid.t', { valid: { '404': '1m' } }, answering([], 404), twice()),
  cached('cache-valid-unlisted-status', 'proxy_cache_valid.t', VALID, answering([], 404), twice()),
  cached('cache-valid-any', 'proxy_cache_valid.t', { valid: { any: '1m' } }, answering([], 500), twice()),
  cached('cache-query-key', 'proxy_cache.t', VALID, answering([]), [GET('/k?a=1'), GET('/k?a=2'), GET('/k?a=1')]),
  cached('cache-post-not-cached', 'proxy_cache.t: proxy_cache_methods GET HEAD', VALID, answering([]), [
    { request: req('POST /c', {}, 'x') },
    { request: req('POST /c', {}, 'x') },
  ]),
  cached('cache-bypass', 'proxy_cache_bypass.t', { ...VALID, bypass: '$http_x_bypass' }, answering([]), [
    GET('/b'),
    GET('/b', { 'X-Bypass': '1' }),
    GET('/b'),
    GET('/b', { 'X-Bypass': '0' }),
  ]),
  cached('cache-no-cache-variable', 'proxy_cache_bypass.t: proxy_no_cache', { ...VALID, noCache: '$http_x_nostore' }, answering([]), [
    GET('/n', { 'X-NoStore': 'yes' }),
    GET('/n'),
    GET('/n'),
  ]),
  cached('cache-min-uses', 'proxy_cache.t: proxy_cache_min_uses', { ...VALID, minUses: 2 }, answering([]), [GET('/u'), GET('/u'), GET('/u')]),
  cached('cache-key-template', 'proxy_cache_variables.t', { ...VALID, key: '$uri' }, answering([]), [GET('/k?a=1'), GET('/k?a=2')]),
  cached('cache-get-then-head', 'proxy_cache.t', VALID, answering([]), [GET('/gh'), HEAD('/gh', ['content-length'])]),
  cached('cache-x-accel-expires-future', 'proxy_cache_control.t', {}, answering([['X-Accel-Expires', '@4102444800']]), twice({}, ['x-accel-expires'])),
  cached(
    'cache-max-age-over-expires',
    'proxy_cache_control.t',
    VALID,
    answering([
      ['Cache-Control', 'max-age=0'],
      ['Expires', 'Thu, 31 Dec 2099 23:59:59 GMT'],
    ]),
    twice(),
  ),
  cached('cache-head-convert', 'proxy_cache_convert_head.t', VALID, answering([]), [HEAD('/c', ['content-length']), GET('/c')]),
  cached('cache-head-no-convert', 'issue 16: with convertHead off, HEAD is stored and served', { ...VALID, convertHead: false }, answering([]), [
    HEAD('/c', ['content-length']),
    HEAD('/c', ['content-length']),
  ]),
  cached('cache-head-no-convert-then-get', 'proxy_cache_convert_head.t (the key has no method)', { ...VALID, convertHead: false }, answering([]), [
    HEAD('/hg'),
    GET('/hg', {}, ['content-length']),
  ]),
  cached(
    'cache-304-from-cache',
    'issue 16: a 304 from the cache carries no representation headers',
    VALID,
    answering([
      ['ETag', '"v1"'],
      ['Content-Language', 'en'],
    ]),
    [GET('/e'), GET('/e', { 'If-None-Match': '"v1"' }, ['content-type', 'content-length', 'content-language', 'etag'])],
  ),
  cached('cache-304-if-modified-since', 'proxy_cache.t', VALID, answering([['Last-Modified', 'Mon, 02 Jan 2006 15:04:05 GMT']]), [
    GET('/m'),
    GET('/m', { 'If-Modified-Since': 'Mon, 02 Jan 2006 15:04:05 GMT' }, ['last-modified', 'content-type', 'content-length']),
  ]),
  cached('cache-conditional-on-miss', 'README: on a MISS the conditional request gets the full response', VALID, answering([['ETag', '"v1"']]), [
    GET('/e', { 'If-None-Match': '"v1"' }),
  ]),
  cached('cache-range-on-miss', 'README: on a MISS a range request gets the full response', VALID, answering([['Accept-Ranges', 'bytes']]), [
    GET('/r', { Range: 'bytes=0-1' }, ['content-range']),
  ]),
  cached(
    'cache-range-hit-accept-ranges',
    'proxy_cache_range.t (issue 16 decide: Accept-Ranges kept on a 206)',
    VALID,
    answering([['Accept-Ranges', 'bytes']]),
    [GET('/r'), GET('/r', { Range: 'bytes=0-1' }, ['content-range', 'accept-ranges'])],
  ),
  cached('cache-range-hit-no-accept-ranges', 'issue 16 decide: Range on a HIT without Accept-Ranges', VALID, answering([]), [
    GET('/r'),
    GET('/r', { Range: 'bytes=0-1' }, ['content-range']),
  ]),
  cached('cache-range-multiple', 'README: multiple byte ranges get the whole body', VALID, answering([['Accept-Ranges', 'bytes']]), [
    GET('/r'),
    GET('/r', { Range: 'bytes=0-0,2-3' }),
  ]),
  cached(
    'cache-chunked-hit',
    'proxy_cache_chunked.t (issue 16 decide: Content-Length on a HIT)',
    VALID,
    (): Reply => ({ raw: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n' }),
    [GET('/ch', {}, ['content-length']), GET('/ch', {}, ['content-length'])],
  ),
  cached('cache-host-key', 'issue 16 decide: the client Host is in the default key', VALID, answering([]), [
    { request: req('GET /v', {}, undefined, 'a.test') },
    { request: req('GET /v', {}, undefined, 'b.test') },
  ]),
  cached('cache-authorization', 'README: nginx stores responses to requests with Authorization', VALID, answering([]), twice({ Authorization: 'Basic eDp5' })),
  cached(
    'cache-stale-if-error',
    'issue 16 decide: stale-if-error serves STALE on an upstream 500',
    {},
    (_r, n): Reply =>
      n === 0 ? { headers: [...TEXT, ['Cache-Control', 'max-age=1, stale-if-error=60']], body: 'fresh' } : { status: 500, headers: TEXT, body: 'error' },
    [GET('/s'), { ...GET('/s'), delay: 2100 }],
  ),
  cached('cache-revalidate-304', 'proxy_cache_revalidate.t', { revalidate: true }, revalidating([]), [GET('/rv'), { ...GET('/rv'), delay: 2100 }]),
  cached(
    'cache-revalidate-merge',
    'issue 16 decide: a 304 revalidation merges its headers into the stored entry',
    { revalidate: true },
    revalidating([['X-V', '1']], [['X-V', '2']]),
    [GET('/rv'), { ...GET('/rv', {}, ['x-v']), delay: 2100 }, GET('/rv', {}, ['x-v'])],
  ),
];
