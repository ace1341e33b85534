// Proxying: methods, bodies and their framing, request and response headers, upstream answers.
// Drawn from nginx-tests proxy.t, proxy_method.t, proxy_chunked.t, proxy_request_buffering*.t,
// proxy_connection_headers.t, proxy_duplicate_headers.t, proxy_xar.t, proxy_upgrade.t,
// proxy_early_hints.t, proxy_pass_request.t and issue 16's items.
import { type Case, type Reply, req } from '../harness.ts';

const ok = (body = 'ok', headers: Array<[string, string]> = []): Reply => ({
  status: 200,
  headers: [['Content-Type', 'text/plain'], ...headers],
  body,
});

/** A GET case whose upstream answers `reply`, comparing the named response headers. */
const answer = (id: string, from: string, reply: Reply, headers: string[], current?: Case['current']): Case => ({
  id,
  from,
  upstream: reply,
  steps: [{ request: req('GET /r'), headers }],
  ...(current === undefined ? {} : { current }),
});

/** An upstream response framed wrongly: 502 in current nginx (1.22 relayed it). */
const malformed = (id: string, what: string, raw: string): Case =>
  answer(id, `proxy_duplicate_headers.t: ${what}`, { raw }, [], { since: '1.23.0', source: 'proxy_duplicate_headers.t: 502 Bad Gateway', status: 502 });

const bodiless = (method: string): Case => ({
  id: `method-${method.toLowerCase()}-bodiless`,
  from: 'issue 16: bodiless requests sent chunked',
  steps: [{ request: req(`${method} /dav/x`) }],
});

export const PROXY_CASES: Case[] = [
  { id: 'get-simple', from: 'proxy.t', steps: [{ request: req('GET /'), headers: ['content-type', 'content-length'] }] },
  { id: 'get-query', from: 'proxy.t', steps: [{ request: req('GET /p/a.html?a=1&b=%20c') }] },
  { id: 'get-encoded-path', from: 'http_uri.t', steps: [{ request: req('GET /a%20b/%41%2Fc') }] },
  { id: 'get-dot-segments', from: 'http_uri.t', steps: [{ request: req('GET /a/./b/../c') }] },
  { id: 'get-double-slash', from: 'http_uri.t', steps: [{ request: req('GET //a//b') }] },
  { id: 'get-backslash-encoded-climb', from: 'issue 16: /..%5cx is 400', steps: [{ request: req('GET /..%5cx') }] },
  { id: 'get-climb-above-root', from: 'http_uri.t', steps: [{ request: req('GET /../x') }] },
  { id: 'get-http10', from: 'proxy.t', steps: [{ request: 'GET /ten HTTP/1.0\r\nHost: test.example\r\n\r\n' }] },
  { id: 'get-http10-no-host', from: 'http_host.t', steps: [{ request: 'GET /ten HTTP/1.0\r\n\r\n' }] },
  { id: 'head-simple', from: 'proxy.t', steps: [{ request: req('HEAD /h'), headers: ['content-length'] }] },
  { id: 'post-length', from: 'proxy_request_buffering.t', steps: [{ request: req('POST /form', { 'Content-Type': 'text/plain' }, 'hello=world') }] },
  {
    id: 'post-chunked',
    from: 'proxy_request_buffering_chunked.t',
    steps: [{ request: req('POST /c', { 'Transfer-Encoding': 'chunked' }, '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n') }],
  },
  { id: 'post-no-body', from: 'issue 16 decide: a POST without a body gets Content-Length: 0', steps: [{ request: req('POST /nobody') }] },
  { id: 'post-length-zero', from: 'proxy_request_buffering.t', steps: [{ request: req('POST /zero', { 'Content-Length': '0' }) }] },
  { id: 'get-length-zero', from: "issue 16 decide: a GET's Content-Length: 0 is dropped", steps: [{ request: req('GET /g', { 'Content-Length': '0' }) }] },
  { id: 'put-length', from: 'proxy_method.t', steps: [{ request: req('PUT /put', {}, 'data') }] },
  { id: 'patch-length', from: 'proxy_method.t', steps: [{ request: req('PATCH /patch', {}, '{"a":1}') }] },
  { id: 'delete-bodiless', from: 'proxy_method.t', steps: [{ request: req('DELETE /d') }] },
  { id: 'options-path', from: 'proxy_method.t', steps: [{ request: req('OPTIONS /o') }] },
  { id: 'options-asterisk', from: 'issue 16 decide: OPTIONS * is forwarded', steps: [{ request: req('OPTIONS *') }] },
  bodiless('MKCOL'),
  bodiless('LOCK'),
  bodiless('COPY'),
  bodiless('MOVE'),
  bodiless('PURGE'),
  bodiless('PROPFIND'),
  bodiless('UNLOCK'),
  { id: 'method-mkcol-length-zero', from: 'issue 16: bodiless requests', steps: [{ request: req('MKCOL /dav/y', { 'Content-Length': '0' }) }] },
  {
    id: 'delete-chunked-body',
    from: 'proxy_request_buffering_chunked.t',
    steps: [{ request: req('DELETE /d', { 'Transfer-Encoding': 'chunked' }, '2\r\nab\r\n0\r\n\r\n') }],
  },
  { id: 'method-propfind-body', from: 'proxy_method.t', steps: [{ request: req('PROPFIND /dav/', { Depth: '1' }, '<propfind/>') }] },
  { id: 'method-trace', from: 'issue 16: TRACE gets 405', steps: [{ request: req('TRACE /t') }] },
  {
    id: 'te-gzip-chunked',
    from: 'issue 16: a body in a coding other than chunked gets 501',
    steps: [{ request: req('POST /te', { 'Transfer-Encoding': 'gzip, chunked' }, '3\r\nabc\r\n0\r\n\r\n') }],
  },
  {
    id: 'te-identity',
    from: 'issue 16: a body in a coding other than chunked gets 501',
    steps: [{ request: req('POST /te', { 'Transfer-Encoding': 'identity', 'Content-Length': '3' }, 'abc') }],
  },
  {
    id: 'te-identity-unframed',
    from: 'issue 16: a body in a coding other than chunked gets 501 (no Content-Length, so Node hands it on)',
    steps: [{ request: req('POST /te', { 'Transfer-Encoding': 'identity' }, 'abc') }],
  },
  {
    id: 'te-and-length',
    from: 'proxy_duplicate_headers.t (request side)',
    steps: [{ request: req('POST /te', { 'Transfer-Encoding': 'chunked', 'Content-Length': '3' }, '3\r\nabc\r\n0\r\n\r\n') }],
  },
  {
    id: 'length-duplicate-differing',
    from: 'http_request.t',
    steps: [
      {
        request: req(
          'POST /cl',
          [
            ['Content-Length', '3'],
            ['Content-Length', '4'],
          ],
          'abcd',
        ),
      },
    ],
  },
  { id: 'expect-continue', from: 'proxy_request_buffering.t', steps: [{ request: req('POST /e', { Expect: '100-continue' }, 'body') }] },
  { id: 'get-fragment', from: 'http_uri.t', steps: [{ request: req('GET /a/b#frag') }] },
  { id: 'get-encoded-null', from: 'http_uri.t', steps: [{ request: req('GET /a%00b') }] },
  { id: 'method-lowercase', from: 'http_method.t', steps: [{ request: req('get /x') }] },
  { id: 'method-unknown', from: 'http_method.t', steps: [{ request: req('FOO /x') }] },
  { id: 'length-plus-sign', from: 'http_request.t', steps: [{ request: req('POST /x', { 'Content-Length': '+3' }, 'abc') }] },
  { id: 'get-absolute-form-same-host', from: 'http_host.t', steps: [{ request: req('GET http://test.example/abs?x=1') }] },
  // Request headers
  {
    id: 'req-header-obs-fold',
    from: 'http_header.t',
    steps: [
      {
        request: req('GET /h', [
          ['X-Fold', 'a'],
          [' b', ''],
        ]).replace('\r\n b: ', '\r\n b'),
      },
    ],
  },
  {
    id: 'req-header-space-before-colon',
    from: 'http_header.t',
    steps: [{ request: req('GET /h').replace('Connection: close', 'X-A : 1\r\nConnection: close') }],
  },
  { id: 'req-header-invalid-name', from: 'http_header.t: ignore_invalid_headers', steps: [{ request: req('GET /h', { 'X@A': '1' }) }] },
  {
    id: 'req-header-connection-listed',
    from: 'issue 16 decide: headers named in Connection are removed',
    steps: [
      {
        request: req('GET /h', [
          ['Connection', 'close, X-Hop'],
          ['X-Hop', '1'],
          ['X-End', '2'],
        ]),
      },
    ],
  },
  {
    id: 'req-header-proxy-connection',
    from: 'issue 16 decide: Proxy-Connection removed',
    steps: [{ request: req('GET /h', { 'Proxy-Connection': 'keep-alive' }) }],
  },
  {
    id: 'req-header-proxy-authorization',
    from: 'issue 16 decide: Proxy-Authorization removed',
    steps: [{ request: req('GET /h', { 'Proxy-Authorization': 'Basic eDp5' }) }],
  },
  { id: 'req-header-te-trailers', from: 'proxy.t', steps: [{ request: req('GET /h', { TE: 'trailers' }) }] },
  { id: 'req-header-trailer', from: 'issue 16 decide: Trailer removed', steps: [{ request: req('GET /h', { Trailer: 'X-Sum' }) }] },
  { id: 'req-header-keep-alive', from: 'proxy.t', steps: [{ request: req('GET /h', { 'Keep-Alive': 'timeout=5' }) }] },
  {
    id: 'req-header-upgrade-no-connection',
    from: 'proxy_upgrade.t',
    steps: [{ request: req('GET /h', { Upgrade: 'foo' }) }],
  },
  {
    id: 'req-header-duplicates',
    from: 'issue 16 decide: repeated request headers are folded',
    steps: [
      {
        request: req('GET /h', [
          ['X-Dup', 'a'],
          ['X-Dup', 'b'],
        ]),
      },
    ],
  },
  {
    id: 'req-header-cookies',
    from: 'issue 16 decide: cookies folded a=1; b=2',
    steps: [
      {
        request: req('GET /h', [
          ['Cookie', 'a=1'],
          ['Cookie', 'b=2'],
        ]),
      },
    ],
  },
  {
    id: 'req-header-user-agent-twice',
    from: "issue 16 decide: a second User-Agent is dropped by Node's parser",
    steps: [
      {
        request: req('GET /h', [
          ['User-Agent', 'one'],
          ['User-Agent', 'two'],
        ]),
      },
    ],
  },
  {
    id: 'req-header-underscore',
    from: 'issue 16 decide: underscores in header names are forwarded',
    steps: [{ request: req('GET /h', { X_User: 'admin', 'X-User': 'guest' }) }],
  },
  {
    id: 'req-header-order-case',
    from: 'issue 16 decide: header names lowercased, Host last',
    rawUpstream: true,
    steps: [
      {
        request: req('GET /h', [
          ['X-First', '1'],
          ['Accept', '*/*'],
          ['X-Last', '2'],
        ]),
      },
    ],
  },
  { id: 'req-header-empty-value', from: 'proxy.t', steps: [{ request: req('GET /h', { 'X-Empty': '' }) }] },
  {
    id: 'req-header-x-forwarded-from-client',
    from: 'README: X-Forwarded headers',
    steps: [{ request: req('GET /h', { 'X-Forwarded-For': '6.6.6.6', 'X-Real-IP': '6.6.6.6' }) }],
  },
  {
    id: 'req-x-forwarded-default',
    from: 'README: X-Forwarded headers are set by default',
    config: { xForwarded: true },
    ignoreUpstream: [],
    steps: [{ request: req('GET /h') }],
  },
  // Response headers
  answer('resp-x-accel-expires', 'issue 16: X-Accel-* hidden', ok('x', [['X-Accel-Expires', '0']]), ['x-accel-expires']),
  answer('resp-x-accel-buffering', 'issue 16: X-Accel-* hidden', ok('x', [['X-Accel-Buffering', 'no']]), ['x-accel-buffering']),
  answer('resp-x-accel-limit-rate', 'issue 16: X-Accel-* hidden', ok('x', [['X-Accel-Limit-Rate', '1000000']]), ['x-accel-limit-rate']),
  answer('resp-x-accel-charset', 'issue 16: X-Accel-* hidden', ok('x', [['X-Accel-Charset', 'utf-8']]), ['x-accel-charset']),
  answer('resp-x-pad', 'issue 16: X-Pad hidden', ok('x', [['X-Pad', 'avoid browser bug']]), ['x-pad']),
  {
    id: 'resp-x-accel-redirect',
    from: 'proxy_xar.t (issue 16: X-Accel-* hidden)',
    upstream: (_r, n) =>
      n === 0 ? { headers: [['X-Accel-Redirect', '/internal']], body: 'outer' } : { headers: [['Content-Type', 'text/plain']], body: 'internal' },
    steps: [{ request: req('GET /outer'), headers: ['x-accel-redirect'] }],
  },
  answer('resp-x-accel-other', 'proxy_xar.t (an X-Accel- name nginx does not know)', ok('x', [['X-Accel-Custom', 'v']]), ['x-accel-custom']),
  answer(
    'resp-server-date',
    'issue 16 decide: the upstream Server and Date pass',
    ok('x', [
      ['Server', 'upstream/1.0'],
      ['Date', 'Thu, 01 Jan 2015 00:00:00 GMT'],
    ]),
    ['server', 'date'],
  ),
  answer(
    'resp-upgrade-426',
    'proxy_connection_headers.t: upgrade in 426',
    {
      status: 426,
      headers: [
        ['Upgrade', 'TLS/1.2, HTTP/1.1'],
        ['Connection', 'Upgrade'],
        ['Content-Type', 'text/plain'],
      ],
      body: 'upgrade',
    },
    ['upgrade'],
  ),
  answer('resp-upgrade-200', 'proxy_connection_headers.t: upgrade in 200 (issue 16 decide)', ok('x', [['Upgrade', 'TLS/1.2']]), ['upgrade']),
  answer(
    'resp-connection-listed',
    'issue 16 decide: headers named in Connection',
    ok('x', [
      ['Connection', 'X-Hop'],
      ['X-Hop', '1'],
    ]),
    ['x-hop'],
  ),
  answer('resp-proxy-authenticate', 'issue 16 decide: Proxy-Authenticate removed', ok('x', [['Proxy-Authenticate', 'Basic realm="x"']]), [
    'proxy-authenticate',
  ]),
  answer('resp-trailer-header', 'issue 16 decide: Trailer removed', ok('x', [['Trailer', 'X-Sum']]), ['trailer']),
  answer('resp-keep-alive', 'proxy.t', ok('x', [['Keep-Alive', 'timeout=5']]), ['keep-alive']),
  answer(
    'resp-set-cookie-two',
    'proxy_cookie.t',
    ok('x', [
      ['Set-Cookie', 'a=1'],
      ['Set-Cookie', 'b=2'],
    ]),
    ['set-cookie'],
  ),
  answer(
    'resp-duplicate-expires',
    'proxy_duplicate_headers.t',
    ok('x', [
      ['Expires', 'foo'],
      ['Expires', 'bar'],
    ]),
    [],
  ),
  answer('resp-content-type-charset', 'proxy.t', { headers: [['Content-Type', 'text/html; charset=utf-8']], body: 'x' }, ['content-type']),
  answer('resp-404', 'proxy.t', { status: 404, headers: [['Content-Type', 'text/plain']], body: 'nope' }, []),
  answer('resp-500', 'proxy_next_upstream.t', { status: 500, headers: [['Content-Type', 'text/plain']], body: 'broken' }, []),
  answer('resp-204', 'proxy.t', { status: 204, headers: [['X-R', '1']] }, ['x-r', 'content-length']),
  answer(
    'resp-chunked',
    'proxy_chunked.t',
    { raw: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n' },
    [],
  ),
  answer('resp-close-delimited', 'proxy.t (HTTP/1.0 upstream)', { raw: 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close' }, []),
  malformed('resp-invalid-length', 'invalid length', 'HTTP/1.1 200 OK\r\nContent-Length: abc\r\nConnection: close\r\n\r\nabc'),
  malformed('resp-duplicate-length', 'duplicate length', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd'),
  malformed('resp-unknown-transfer-encoding', 'unknown transfer encoding', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: foo\r\nConnection: close\r\n\r\nabc'),
  malformed(
    'resp-length-and-chunked',
    'length and transfer encoding',
    'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
  ),
  answer('resp-garbage', 'issue 16 decide: upstream garbage', { raw: 'garbage, not HTTP\r\n\r\n' }, []),
  answer('resp-empty', 'proxy.t: upstream closes without answering', { raw: '' }, []),
  answer(
    'resp-early-hints',
    'proxy_early_hints.t (issue 16 decide: 103 dropped)',
    { raw: 'HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok' },
    ['link'],
    { since: '1.29.0', source: 'proxy_early_hints.t: early_hints off by default', status: 200, drop: ['link'], body: 'ok' },
  ),
  answer('resp-big-header', 'issue 16 decide: an upstream header larger than nginx buffers', ok('x', [['X-Big', 'b'.repeat(6000)]]), []),
  answer('resp-location-elsewhere', 'proxy_redirect.t (another host is left alone)', { status: 302, headers: [['Location', 'http://other.example/x']] }, []),
];
