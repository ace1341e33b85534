// The rewrite module: rewrite, return, if, set, location and server blocks, redirects. The same
// nginx text is nginx's configuration and fromNginx()'s input. Drawn from nginx-tests rewrite.t,
// rewrite_if.t, rewrite_set.t, rewrite_unescape.t, http_location.t, http_server_name.t,
// http_absolute_redirect.t and issue 16's items.
import { type Case, type Config, req, type Step } from '../harness.ts';

/** Host with the gateway's port, so that nginx's listen port and the Host agree. */
const HOST = 'test.example:{port}';
const get = (target: string, headers: Record<string, string> = {}, body = false): Step => ({ request: req(`GET ${target}`, headers, undefined, HOST), body });

const rw = (id: string, from: string, rewrite: string, steps: Step[], config: Omit<Config, 'rewrite'> = {}): Case => ({
  id,
  from,
  config: { rewrite, ...config },
  steps,
});

export const REWRITE_CASES: Case[] = [
  rw('rewrite-last', 'rewrite.t', 'rewrite ^/old/(.*)$ /new/$1 last;', [get('/old/a/b')]),
  rw('rewrite-break-in-location', 'rewrite.t', 'location /a/ { rewrite ^/a/(.*)$ /b/$1 break; }', [get('/a/x?q=1')]),
  rw('rewrite-args-appended', 'rewrite.t', 'rewrite ^/x$ /y;', [get('/x?a=1')]),
  rw('rewrite-args-added', 'rewrite.t', 'rewrite ^/x$ /y?b=2;', [get('/x?a=1')]),
  rw('rewrite-args-suppressed', 'rewrite.t', 'rewrite ^/x$ /y?b=2?;', [get('/x?a=1')]),
  rw('rewrite-redirect-relative', 'rewrite.t', 'rewrite ^/r$ /target redirect;', [get('/r?k=v')]),
  rw('rewrite-permanent-absolute', 'rewrite.t', 'rewrite ^/p$ http://other.example/q permanent;', [get('/p?x=1')]),
  rw('rewrite-scheme-variable', 'rewrite.t', 'rewrite ^/s$ $scheme://other.example/s redirect;', [get('/s')]),
  rw('rewrite-capture-two', 'rewrite.t', 'rewrite ^/(\\w+)/(\\w+)$ /$2/$1 break;', [get('/one/two')]),
  rw('rewrite-no-match', 'rewrite.t', 'rewrite ^/nomatch$ /other break;', [get('/keep?x=1')]),
  rw('rewrite-cycle', 'rewrite.t: rewrite or internal redirection cycle', 'location /loop { rewrite ^ /loop last; }', [get('/loop')]),
  rw('rewrite-last-into-location', 'rewrite.t', 'location /a { rewrite ^/a(.*)$ /b$1 last; }\nlocation /b { rewrite ^/b(.*)$ /c$1 break; }', [get('/a/x')]),
  rw('rewrite-empty-result', 'rewrite.t', 'rewrite ^/e(.*)$ $1 break;', [get('/e')]),
  rw('rewrite-uri-variable', 'rewrite.t', 'rewrite ^ /u?was=$uri break;', [get('/a%20b')]),
  rw('rewrite-request-uri', 'rewrite.t', 'rewrite ^ /r?orig=$request_uri? break;', [get('/x?y=1')]),
  rw('rewrite-unescape-path', 'rewrite_unescape.t', 'rewrite ^/u/(.*)$ /v/$1 break;', [get('/u/%41b%20c')]),
  rw('rewrite-unescape-redirect', 'rewrite_unescape.t', 'rewrite ^/u/(.*)$ /v/$1 redirect;', [get('/u/a%20b')]),
  rw('rewrite-capture-args-encoded', 'issue 16 decide: captures put into arguments are percent-encoded', 'rewrite ^/c/(.*)$ /d?v=$1 break;', [
    get('/c/a%26b%3Dc'),
  ]),
  rw('rewrite-capture-path-question', 'issue 16 decide: captures put into paths (%3F)', 'rewrite ^/e/(.*)$ /f/$1 break;', [get('/e/a%3Fb')]),
  rw('rewrite-capture-path-brackets', 'issue 16 decide: captures put into paths (%5B%5D)', 'rewrite ^/e/(.*)$ /f/$1 break;', [get('/e/%5B%5D')]),
  rw('rewrite-capture-redirect-encoded', "issue 16 decide: what a redirect's Location gets", 'rewrite ^/g/(.*)$ /h/$1 redirect;', [get('/g/a%3Fb%20c')]),
  // return
  rw('return-301-url', 'rewrite.t', 'return 301 https://www.example.org$request_uri;', [get('/p?q=1')]),
  rw('return-302-relative', 'http_absolute_redirect.t', 'return 302 /login;', [get('/x')]),
  rw('return-302-relative-host-without-port', 'issue 16 decide: redirect host and port come from the Host header', 'return 302 /login;', [
    { request: req('GET /x') },
  ]),
  rw('return-302-absolute-off', 'http_absolute_redirect.t', 'return 302 /login;', [get('/x')], { absoluteRedirect: false }),
  rw('return-302-double-slash-absolute-off', 'issue 16 decide: absolute_redirect off collapses //evil.example/x', 'return 302 //evil.example/x;', [get('/x')], {
    absoluteRedirect: false,
  }),
  rw('return-200-text', 'rewrite.t', 'return 200 "hello $arg_name";', [{ ...get('/t?name=you', {}, true), headers: ['content-type'] }]),
  rw('return-403', 'rewrite.t', 'return 403;', [get('/f')]),
  rw('return-404', 'rewrite.t', 'location /missing { return 404; }', [get('/missing')]),
  rw('return-410-text', 'rewrite.t', 'return 410 "gone";', [get('/g', {}, true)]),
  rw('return-204', 'issue 16: return 204 sends no Content-Length', 'return 204;', [{ ...get('/n'), headers: ['content-length', 'content-type'] }]),
  rw('return-444', 'rewrite.t', 'return 444;', [get('/close')]),
  rw('return-url-only', 'rewrite.t: return URL', 'return http://example.com/only;', [get('/u')]),
  rw('return-in-location-args', 'rewrite.t', 'location /loc { return 302 /dest?$args; }', [get('/loc?a=1&b=2')]),
  rw('return-host-variable', 'rewrite.t', 'return 301 https://$host$request_uri;', [{ request: req('GET /p?q=1', {}, undefined, 'Test.Example:{port}') }]),
  rw('return-variables', 'rewrite.t', 'return 200 "$request_method $scheme $is_args$args $uri $request_uri $remote_addr";', [get('/a%20b?x=1', {}, true)]),
  rw('return-host-variables', 'http_host.t', 'return 200 "$host|$http_host";', [{ request: req('GET /', {}, undefined, 'Test.Example:{port}'), body: true }]),
  rw('break-directive', 'rewrite.t', 'location /b/ { break; return 403; }', [get('/b/x')]),
  rw('location-root-exact', 'http_location.t', 'location = / { return 200 "root"; }', [get('/', {}, true), get('/x')]),
  rw('location-regex-case', 'http_location.t', 'location ~ ^/ABC$ { return 200 "upper"; }', [get('/ABC', {}, true), get('/abc')]),
  // if
  rw('if-method', 'rewrite_if.t', 'if ($request_method = POST) { return 405; }', [{ request: req('POST /p', {}, 'x', HOST) }]),
  rw('if-header-present', 'rewrite_if.t', 'if ($http_x_debug) { rewrite ^ /debug break; }', [get('/p', { 'X-Debug': '1' })]),
  rw('if-header-absent', 'rewrite_if.t', 'if ($http_x_debug) { rewrite ^ /debug break; }', [get('/p')]),
  rw('if-regex-icase', 'rewrite_if.t', 'if ($http_user_agent ~* (bot|crawler)) { return 403; }', [get('/p', { 'User-Agent': 'SuperBOT/1' })]),
  rw('if-regex-capture', 'rewrite_if.t', 'if ($uri ~ ^/i/(\\d+)$) { rewrite ^ /item?id=$1? break; }', [get('/i/17')]),
  rw('if-not-match', 'rewrite_if.t', 'if ($uri !~ ^/ok) { return 403; }', [get('/ok/1'), get('/no')]),
  rw('if-arg-equals', 'rewrite_if.t', 'if ($arg_a = 1) { return 200 "one"; }', [get('/p?a=1', {}, true)]),
  rw('if-arg-name-case', 'issue 16: $arg_NAME matches names case-insensitively', 'if ($arg_foo = bar) { return 200 "yes"; }', [get('/p?FOO=bar', {}, true)]),
  rw('arg-without-equals', 'ngx_http_arg(): a name without = is passed over for a later one', 'return 200 "[$arg_flag][$arg_empty][$arg_x]";', [
    get('/p?flag&flag=on&empty=&x', {}, true),
  ]),
  rw('if-cookie-name-case', 'issue 16: $cookie_NAME matches names case-insensitively', 'if ($cookie_sid = abc) { return 200 "yes"; }', [
    get('/p', { Cookie: 'SID=abc' }, true),
  ]),
  rw('if-cookie', 'rewrite_if.t', 'if ($cookie_sid = abc) { return 200 "yes"; }', [get('/p', { Cookie: 'x=1; sid=abc' }, true)]),
  // set
  rw('set-variable', 'rewrite_set.t', 'set $target /new; rewrite ^ $target break;', [get('/old')]),
  rw('set-in-text', 'rewrite_set.t', 'set $who world; return 200 "hi $who";', [get('/', {}, true)]),
  rw('set-args', 'issue 16: set $args changes what goes upstream', 'set $args "x=1";', [get('/p?y=2')]),
  rw('set-http-header-variable', 'issue 16: set can override $http_NAME', 'set $http_x_foo "over"; return 200 "$http_x_foo";', [
    get('/p', { 'X-Foo': 'orig' }, true),
  ]),
  // captures and redirects of issue 16
  rw('location-named-capture', 'issue 16: named captures of a regex location', 'location ~ ^/user/(?<uid>\\d+)$ { rewrite ^ /users/$uid break; }', [
    get('/user/42'),
  ]),
  rw('rewrite-named-capture', 'rewrite.t', 'rewrite ^/n/(?<name>\\w+)$ /names/$name break;', [get('/n/joe')]),
  rw('rewrite-variable-scheme-redirect', 'issue 16: a replacement of variables starting with a scheme redirects', 'rewrite ^/out$ $arg_r? redirect;', [
    get('/out?r=http://example.com/?from'),
  ]),
  rw('return-http10-no-host-port', 'issue 16: HTTP/1.0 without Host keeps the port in absolute redirects', 'return 302 /x;', [
    { request: 'GET /p HTTP/1.0\r\n\r\n' },
  ]),
  // locations
  rw('location-exact-and-prefix', 'http_location.t', 'location = /exact { return 200 "exact"; }\nlocation /exact { return 200 "prefix"; }', [
    get('/exact', {}, true),
    get('/exactly', {}, true),
  ]),
  rw('location-caret-tilde', 'http_location.t', 'location ^~ /static/ { return 200 "static"; }\nlocation ~ \\.png$ { return 200 "png"; }', [
    get('/static/a.png', {}, true),
    get('/img/a.png', {}, true),
  ]),
  rw('location-regex-order', 'http_location.t', 'location ~ /a { return 200 "first"; }\nlocation ~ /a/b { return 200 "second"; }', [get('/a/b', {}, true)]),
  rw('location-regex-icase', 'http_location.t', 'location ~* \\.PHP$ { return 403; }', [get('/x.php'), get('/x.phpx')]),
  rw('location-longest-prefix', 'http_location.t', 'location /a/ { return 200 "a"; }\nlocation /a/b/ { return 200 "ab"; }', [get('/a/b/c', {}, true)]),
  rw('location-regex-over-prefix', 'http_location.t', 'location /doc/ { return 200 "prefix"; }\nlocation ~ \\.txt$ { return 200 "regex"; }', [
    get('/doc/a.txt', {}, true),
  ]),
  rw('location-quoted-space', 'http_location.t', 'location = "/a b" { return 200 "space"; }', [get('/a%20b', {}, true)]),
  rw('location-dot-segments', 'http_uri.t', 'location /private/ { return 403; }', [get('/public/../private/x')]),
  rw('location-encoded-slash', 'http_uri.t', 'location = /a/b { return 200 "ab"; }', [get('/a%2Fb', {}, true)]),
  rw('location-merged-slashes', 'http_uri.t', 'location = /a/b { return 200 "ab"; }', [get('//a///b', {}, true)]),
  rw('location-pcre-quote', 'issue 16: \\Q…\\E translated or refused', 'location ~ ^/\\Qa.b\\E$ { return 200 "q"; }', [get('/a.b', {}, true), get('/axb')]),
  rw('location-pcre-property', 'issue 16: \\p{…} translated or refused', 'location ~ "^/\\p{Lu}+$" { return 200 "upper"; }', [
    get('/ABC', {}, true),
    get('/abc'),
  ]),
  rw('rewrite-pcre-quote', 'issue 16: \\Q…\\E in rewrite', 'rewrite "^/\\Qa+b\\E$" /plus break;', [get('/a+b'), get('/aab')]),
  rw('if-pcre-property', 'issue 16: \\p{…} in if', 'if ($uri ~ "^/\\p{Lu}+$") { return 200 "upper"; }', [get('/ABC', {}, true), get('/abc')]),
  rw('server-name-pcre-quote', 'issue 16: \\Q…\\E in server_name', 'server { server_name "~^\\Qa.b\\E\\.test$"; return 200 "q"; }', [
    { request: req('GET /', {}, undefined, 'a.b.test'), body: true },
  ]),
  rw('location-nested', 'issue 16: nested locations in fromNginx', 'location /api/ {\n  location /api/v1/ { return 200 "v1"; }\n  return 200 "api";\n}', [
    get('/api/v1/x', {}, true),
    get('/api/x', {}, true),
  ]),
  // servers
  rw('server-name-exact', 'http_server_name.t', 'server { server_name a.test; return 200 "a"; }\nserver { server_name b.test; return 200 "b"; }', [
    { request: req('GET /', {}, undefined, 'b.test'), body: true },
    { request: req('GET /', {}, undefined, 'B.TEST'), body: true },
    { request: req('GET /', {}, undefined, 'b.test.'), body: true },
  ]),
  rw(
    'server-name-wildcard',
    'http_server_name.t',
    'server { server_name *.example.org; return 200 "wild"; }\nserver { server_name www.example.org; return 200 "exact"; }',
    [
      { request: req('GET /', {}, undefined, 'www.example.org'), body: true },
      { request: req('GET /', {}, undefined, 'foo.example.org'), body: true },
    ],
  ),
  rw('server-name-regex', 'http_server_name.t', 'server { server_name ~^(?<sub>\\w+)\\.re\\.test$; return 200 "$sub"; }', [
    { request: req('GET /', {}, undefined, 'abc.re.test'), body: true },
  ]),
  rw('server-name-default', 'http_server_name.t', 'server { server_name a.test; return 200 "a"; }\nserver { server_name b.test; return 200 "b"; }', [
    { request: req('GET /', {}, undefined, 'c.test'), body: true },
  ]),
  rw(
    'absolute-form-picks-server',
    'issue 16: an absolute-form target picks the server block',
    'server { server_name a.test; return 200 "a"; }\nserver { server_name b.test; return 200 "b"; }',
    [{ request: req('GET http://b.test/p', {}, undefined, 'a.test'), body: true }],
  ),
  rw('absolute-form-redirect', 'issue 16: an absolute-form target builds redirects', 'return 302 /x;', [
    { request: req('GET http://target.test:{port}/p', {}, undefined, 'header.test:{port}') },
  ]),
];

/** proxy_redirect default: a Location or Refresh naming the upstream's own address. */
const own = (r: { headers: Array<[string, string]> }) => r.headers.find(([n]) => n.toLowerCase() === 'host')?.[1] ?? '';

export const REDIRECT_CASES: Case[] = [
  {
    id: 'redirect-default-own-address',
    from: 'proxy_redirect.t: implicit default (issue 16)',
    upstream: (r) => ({ status: 302, headers: [['Location', `http://${own(r)}/elsewhere?a=1`]] }),
    steps: [{ request: req('GET /go', {}, undefined, HOST) }],
  },
  {
    id: 'redirect-default-refresh',
    from: 'proxy_redirect.t: refresh (issue 16)',
    upstream: (r) => ({ status: 200, headers: [['Refresh', `7; url=http://${own(r)}/next`]], body: 'wait' }),
    steps: [{ request: req('GET /go', {}, undefined, HOST), headers: ['refresh'] }],
  },
  {
    id: 'redirect-default-named-pool',
    from: 'proxy_redirect.t: default with an upstream block (issue 16)',
    config: { pool: 'named' },
    upstream: (r) => ({ status: 301, headers: [['Location', `http://${own(r)}/moved`]] }),
    steps: [{ request: req('GET /go', {}, undefined, HOST) }],
  },
  {
    id: 'redirect-relative-from-upstream',
    from: 'http_absolute_redirect.t',
    upstream: { status: 302, headers: [['Location', '/rel?x=1']] },
    steps: [{ request: req('GET /go', {}, undefined, HOST) }],
  },
  {
    id: 'redirect-upstream-root',
    from: 'proxy_redirect.t',
    upstream: (r) => ({ status: 302, headers: [['Location', `http://${own(r)}/`]] }),
    steps: [{ request: req('GET /go', {}, undefined, HOST) }],
  },
  {
    id: 'redirect-other-scheme-own-address',
    from: 'proxy_redirect.t (only the proxied URL is replaced)',
    upstream: (r) => ({ status: 302, headers: [['Location', `https://${own(r)}/secure`]] }),
    steps: [{ request: req('GET /go', {}, undefined, HOST) }],
  },
  {
    id: 'named-pool-host',
    from: 'issue 16 decide: a named pool sends $proxy_host',
    config: { pool: 'named' },
    steps: [{ request: req('GET /h') }],
  },
];

/** Host headers (http_host.t), proxied. */
const host = (id: string, from: string, request: string, config: Config = {}): Case => ({ id, from, config, steps: [{ request }] });
/** A Host that nginx 1.29.4 and later refuse (ngx_http_validate_host), and older ones take. */
const refusedSince1294 = (c: Case): Case => ({ ...c, current: { since: '1.29.4', source: 'http_host.t: 400 since 1.29.4', status: 400, refused: true } });
const raw = (lines: string[]) => `${lines.join('\r\n')}\r\nConnection: close\r\n\r\n`;

export const HOST_CASES: Case[] = [
  host('host-duplicate', 'issue 16: two Host headers get 400', raw(['GET / HTTP/1.1', 'Host: a.test', 'Host: b.test'])),
  host('host-with-path', 'issue 16: a Host that is not host[:port] gets 400', req('GET /', {}, undefined, 'a.test/b')),
  host('host-double-dot', 'http_host.t', req('GET /', {}, undefined, '..examp-LE.com')),
  host('host-dot', 'http_host.t', req('GET /', {}, undefined, '.')),
  host('host-empty', 'http_host.t', req('GET /', {}, undefined, '')),
  host('host-missing-http11', 'http_host.t', raw(['GET / HTTP/1.1'])),
  refusedSince1294(host('host-two-ports', 'http_host.t', req('GET /', {}, undefined, '123.40.56.78:9000:80'))),
  refusedSince1294(host('host-backslash', 'http_host.t', req('GET /', {}, undefined, 'example.com\\:552'))),
  refusedSince1294(host('host-port-too-long', 'http_host.t', req('GET /', {}, undefined, '123.49.0.78:98777'))),
  host('host-ipv6', 'http_host.t', req('GET /', {}, undefined, '[::1]'), { host: 'client' }),
  host('host-trailing-dot', 'http_host.t', req('GET /', {}, undefined, 'www.example.org.'), { host: 'client' }),
  host('host-uppercase', 'http_host.t', req('GET /', {}, undefined, 'WWW.Example.ORG'), { host: 'client' }),
  host('host-absolute-form', 'issue 16: the absolute-form target is $host and goes upstream', req('GET http://target.test/p', {}, undefined, 'header.test'), {
    host: 'client',
  }),
  host('host-empty-port', 'http_host.t', req('GET /', {}, undefined, 'a.test:')),
  host('host-underscore', 'http_host.t', req('GET /', {}, undefined, 'a_b.test')),
  host('host-absolute-form-https', 'http_host.t', req('GET https://target.test/p', {}, undefined, 'header.test')),
  host('host-absolute-form-bad', 'http_host.t', req('GET http://a..b/p', {}, undefined, 'a.test')),
  host('host-absolute-form-default', 'http_host.t', req('GET http://target.test/p?q=1', {}, undefined, 'header.test')),
];
