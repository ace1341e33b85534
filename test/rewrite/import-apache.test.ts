import assert from 'node:assert/strict';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { chain } from '../../src/core/chain.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { exchange } from '../../src/core/exchange.ts';
import { fromApache, type FromApacheOptions } from '../../src/rewrite/apache.ts';
import { rewrite } from '../../src/rewrite/index.ts';
import { fetchText, gateway, type Upstream } from '../helpers.ts';

function echo(req: IncomingMessage, res: ServerResponse): void {
  const ex = exchange(req);
  res.end(JSON.stringify({ uri: ex.uri, args: ex.args }));
}

/** One server; each case installs its own rewrite() chain before its requests. */
let server: Upstream;
let current: RequestListener = (_req, res) => res.end();
before(async () => {
  server = await gateway(undefined, (req, res) => current(req, res));
});
after(() => server.close());

interface Expect {
  status?: number | undefined;
  location?: string | undefined;
  uri?: string | undefined;
  args?: string | undefined;
}

async function check(text: string, options: FromApacheOptions | undefined, requests: Array<[string, Expect, Record<string, string>?]>): Promise<void> {
  current = chain(rewrite(fromApache(text, options)), echo);
  for (const [path, want, headers] of requests) {
    const r = await fetchText(server.url + path, { headers: { host: 'example.org', ...headers } });
    const what = `${path} ${JSON.stringify(headers ?? {})}`;
    assert.equal(r.status, want.status ?? 200, what);
    if (want.location !== undefined) assert.equal(r.headers.location, want.location, what);
    if (want.uri !== undefined) assert.deepEqual(JSON.parse(r.body), { uri: want.uri, args: want.args ?? '' }, what);
  }
}

describe('fromApache: the example.org pair', () => {
  const verbatim = 'RewriteCond %{HTTP_HOST} example.org\nRewriteRule (.*) http://www.example.org$1';
  it('verbatim: example.org is redirected (302, query kept)', () =>
    check(verbatim, undefined, [['/a?b=1', { status: 302, location: 'http://www.example.org/a?b=1' }]]));
  it('verbatim: www.example.org also matches the unanchored condition, but the URL names its own host, so Apache reduces it to a path: left alone', () =>
    check(verbatim, undefined, [['/a?b=1', { uri: '/a', args: 'b=1' }, { host: 'www.example.org' }]]));
  it('verbatim: what the unanchored condition really does (other port, lookalike host) is redirect', () =>
    check(verbatim, undefined, [
      ['/a?b=1', { status: 302, location: 'http://www.example.org/a?b=1' }, { host: 'www.example.org:8080' }],
      ['/a', { status: 302, location: 'http://www.example.org/a' }, { host: 'notexample.org' }],
      ['/a', { uri: '/a' }, { host: 'example.com' }],
    ]));
  it('anchored form with R=301: only example.org is redirected', () =>
    check('RewriteEngine On\nRewriteCond %{HTTP_HOST} ^example\\.org$ [NC]\nRewriteRule ^(.*)$ http://www.example.org$1 [R=301,L]', undefined, [
      ['/a?b=1', { status: 301, location: 'http://www.example.org/a?b=1' }],
      ['/a?b=1', { status: 301, location: 'http://www.example.org/a?b=1' }, { host: 'EXAMPLE.org' }],
      ['/a?b=1', { uri: '/a', args: 'b=1' }, { host: 'www.example.org' }],
      ['/a', { uri: '/a' }, { host: 'notexample.org' }],
    ]));
});

describe('fromApache: rules', () => {
  const cases: Array<{ name: string; text: string; options?: FromApacheOptions; requests: Array<[string, Expect, Record<string, string>?]> }> = [
    { name: 'without L the next rule sees the result', text: 'RewriteRule ^/a$ /b\nRewriteRule ^/b$ /c', requests: [['/a', { uri: '/c' }]] },
    {
      name: 'L stops',
      text: 'RewriteRule ^/a$ /b [L]\nRewriteRule ^/b$ /c',
      requests: [
        ['/a', { uri: '/b' }],
        ['/b', { uri: '/c' }],
      ],
    },
    {
      name: 'back-references',
      text: 'RewriteRule ^/u/([a-z]+)/([0-9]+)$ /user.php/$2/$1 [L]',
      requests: [
        ['/u/ann/7', { uri: '/user.php/7/ann' }],
        ['/u/Ann/7', { uri: '/u/Ann/7' }],
      ],
    },
    { name: 'NC on the rule', text: 'RewriteRule ^/old$ /new [NC,L]', requests: [['/OLD', { uri: '/new' }]] },
    {
      name: 'PCRE \\Q…\\E and (?i) translated',
      text: 'RewriteRule (?i)^/\\Q.old\\E$ /new [L]',
      requests: [
        ['/.OLD', { uri: '/new' }],
        ['/xold', { uri: '/xold' }],
      ],
    },
    { name: 'query kept without ?', text: 'RewriteRule ^/a$ /b', requests: [['/a?x=1', { uri: '/b', args: 'x=1' }]] },
    {
      name: 'query replaced with ?new',
      text: 'RewriteRule ^/a$ /b?y=2',
      requests: [
        ['/a?x=1', { uri: '/b', args: 'y=2' }],
        ['/a', { uri: '/b', args: 'y=2' }],
      ],
    },
    { name: 'query dropped with a trailing ?', text: 'RewriteRule ^/a$ /b?', requests: [['/a?x=1', { uri: '/b', args: '' }]] },
    {
      name: 'QSA appends the original query',
      text: 'RewriteRule ^/a$ /b?y=2 [QSA]',
      requests: [
        ['/a?x=1', { uri: '/b', args: 'y=2&x=1' }],
        ['/a', { uri: '/b', args: 'y=2' }],
      ],
    },
    { name: 'QSA with a trailing ? keeps the query', text: 'RewriteRule ^/a$ /b? [QSA]', requests: [['/a?x=1', { uri: '/b', args: 'x=1' }]] },
    { name: 'QSD drops the query', text: 'RewriteRule ^/a$ /b [QSD]', requests: [['/a?x=1', { uri: '/b', args: '' }]] },
    { name: 'redirect keeps the query', text: 'RewriteRule ^/a$ /b [R]', requests: [['/a?x=1', { status: 302, location: `http://example.org/b?x=1` }]] },
    {
      name: 'redirect codes',
      text: 'RewriteRule ^/a /b [R=301]\nRewriteRule ^/c /d [R=307,L]\nRewriteRule ^/e /f [R=permanent]\nRewriteRule ^/g /h [redirect=seeother]',
      requests: [
        ['/a', { status: 301, location: 'http://example.org/b' }],
        ['/c', { status: 307 }],
        ['/e', { status: 301 }],
        ['/g', { status: 303, location: 'http://example.org/h' }],
      ],
    },
    {
      name: 'redirect escapes unless NE',
      text: 'RewriteRule ^/a(.*)$ /b$1#top [R]\nRewriteRule ^/c$ /d#top [R,NE]',
      requests: [
        ['/a%20x', { status: 302, location: 'http://example.org/b%20x%23top' }],
        ['/c', { status: 302, location: 'http://example.org/d#top' }],
      ],
    },
    {
      name: 'an absolute URL to another host redirects even without R',
      text: 'RewriteRule ^/go$ https://other.example/x?y=1',
      requests: [['/go?z=2', { status: 302, location: 'https://other.example/x?y=1' }]],
    },
    {
      name: 'F and G',
      text: 'RewriteRule \\.bak$ - [F]\nRewriteRule ^/old - [G]',
      requests: [
        ['/x.bak', { status: 403 }],
        ['/old/a', { status: 410 }],
        ['/ok', { uri: '/ok' }],
      ],
    },
    {
      name: '- with L stops without a change',
      text: 'RewriteRule ^/static/ - [L]\nRewriteRule ^(.*)$ /index.php$1',
      requests: [
        ['/static/a?v=1', { uri: '/static/a', args: 'v=1' }],
        ['/p', { uri: '/index.php/p' }],
      ],
    },
    {
      name: 'a negated pattern',
      text: 'RewriteRule !^/api/ /app [L]',
      requests: [
        ['/x', { uri: '/app' }],
        ['/api/x', { uri: '/api/x' }],
      ],
    },
    {
      name: 'conditions are ANDed',
      text: 'RewriteCond %{REQUEST_METHOD} =POST\nRewriteCond %{QUERY_STRING} (^|&)debug=1\nRewriteRule ^ /debug [L]',
      requests: [['/a?debug=1', { uri: '/a', args: 'debug=1' }]],
    },
    {
      name: 'OR chains conditions, the rest are ANDed',
      text: 'RewriteCond %{HTTP:X-A} =1 [OR]\nRewriteCond %{HTTP:X-B} =1\nRewriteCond %{HTTPS} off\nRewriteRule ^/$ /hit [L]',
      requests: [
        ['/', { uri: '/hit' }, { 'x-a': '1' }],
        ['/', { uri: '/hit' }, { 'x-b': '1' }],
        ['/', { uri: '/' }],
        ['/', { uri: '/' }, { 'x-c': '1' }],
      ],
    },
    {
      name: 'negated conditions and NC',
      text: 'RewriteCond %{HTTP_HOST} !^www\\. [NC]\nRewriteRule ^(.*)$ http://www.%{HTTP_HOST}$1 [R=301,L]',
      requests: [
        ['/p', { status: 301, location: 'http://www.example.org/p' }],
        ['/p', { uri: '/p' }, { host: 'WWW.example.org' }],
      ],
    },
    {
      name: '%N from the last matched condition',
      text: 'RewriteCond %{HTTP_HOST} ^([a-z]+)\\.example\\.org$\nRewriteCond %{QUERY_STRING} ^id=([0-9]+)$\nRewriteRule ^/item$ /items/%1 [L]',
      requests: [
        ['/item?id=42', { uri: '/items/42', args: 'id=42' }, { host: 'shop.example.org' }],
        ['/item?id=x', { uri: '/item', args: 'id=x' }, { host: 'shop.example.org' }],
      ],
    },
    {
      name: '$N in a TestString',
      text: 'RewriteCond $1 !^(index\\.php|robots\\.txt)\nRewriteRule ^/(.*)$ /index.php/$1 [L]',
      requests: [
        ['/robots.txt', { uri: '/robots.txt' }],
        ['/a/b', { uri: '/index.php/a/b' }],
      ],
    },
    {
      name: 'REQUEST_URI and THE_REQUEST',
      text: 'RewriteCond %{THE_REQUEST} \\s/+index\\.php[\\s?]\nRewriteRule ^ %{REQUEST_URI}x [L]',
      requests: [
        ['/index.php?a=1', { uri: '/index.phpx', args: 'a=1' }],
        ['/other', { uri: '/other' }],
      ],
    },
    { name: 'RewriteEngine Off disables everything', text: 'RewriteEngine On\nRewriteRule ^ /x\nRewriteEngine Off', requests: [['/a', { uri: '/a' }]] },
    {
      name: '<IfModule mod_rewrite.c>, comments, continuation lines',
      text: '<IfModule mod_rewrite.c>\n  # comment\n  RewriteEngine on\n  RewriteRule ^/a$ \\\n    /b [L]\n</IfModule>',
      requests: [['/a', { uri: '/b' }]],
    },
    { name: 'ignored directives', text: 'Options +FollowSymLinks\nRewriteRule ^/a$ /b', options: { ignore: ['options'] }, requests: [['/a', { uri: '/b' }]] },
    {
      name: 'quoted arguments',
      text: 'RewriteCond %{HTTP_USER_AGENT} "Some Bot"\nRewriteRule ^ - [F]',
      requests: [
        ['/', { status: 403 }, { 'user-agent': 'x Some Bot/1' }],
        ['/', { uri: '/' }],
      ],
    },
    {
      name: 'the HTTP_* variables read their headers (any case)',
      text: 'RewriteRule ^/v$ /%{HTTP_HOST}/%{HTTP_USER_AGENT}/%{HTTP_REFERER}/%{HTTP_COOKIE}/%{HTTP_ACCEPT}/%{http_forwarded} [L]',
      requests: [['/v', { uri: '/example.org/ua/ref/c/acc/fwd' }, { 'user-agent': 'ua', referer: 'ref', cookie: 'c', accept: 'acc', forwarded: 'fwd' }]],
    },
    {
      name: 'directory context: no leading slash, relative substitutions get the base',
      text: 'RewriteRule ^old/(.*)$ new/$1 [L]',
      options: { context: 'directory' },
      requests: [
        ['/old/a?q=1', { uri: '/new/a', args: 'q=1' }],
        ['/x/old/a', { uri: '/x/old/a' }],
      ],
    },
    {
      name: 'directory context: RewriteBase',
      text: 'RewriteBase /app\nRewriteRule ^a$ b [L]\nRewriteRule ^c$ /d [R=301]',
      options: { context: 'directory' },
      requests: [
        ['/a', { uri: '/app/b' }],
        ['/c', { status: 301, location: 'http://example.org/d' }],
      ],
    },
    {
      name: 'directory context: a changed URI runs the rules again (front controller)',
      text: 'RewriteCond %{REQUEST_URI} !^/index\\.php\nRewriteRule ^(.*)$ index.php?route=$1 [L,QSA]',
      options: { context: 'directory' },
      requests: [['/a/b?x=1', { uri: '/index.php', args: 'route=a/b&x=1' }]],
    },
    {
      name: 'directory context: a rule that keeps changing the URI ends in 500',
      text: 'RewriteRule ^(.*)$ x$1',
      options: { context: 'directory' },
      requests: [['/a', { status: 500 }]],
    },
  ];
  for (const c of cases) it(c.name, () => check(c.text, c.options, c.requests));
});

describe('fromApache: errors name the line', () => {
  const cases: Array<{ text: string; line: number; message: RegExp; options?: FromApacheOptions }> = [
    { text: 'RewriteEngine On\nOptions +FollowSymLinks', line: 2, message: /"Options" is not supported/ },
    { text: 'RewriteEngine maybe', line: 1, message: /On or Off/ },
    { text: 'RewriteRule ^/a /b [L,P]', line: 1, message: /supported flags.*"P"/ },
    { text: '\nRewriteRule ^/a /b [R=404]', line: 2, message: /R=3xx/ },
    { text: 'RewriteRule ^/a /b L', line: 1, message: /flags in brackets/ },
    { text: 'RewriteRule ^/a', line: 1, message: /Pattern Substitution/ },
    { text: 'RewriteRule ( /b', line: 1, message: /valid regular expression/ },
    { text: 'RewriteEngine On\nRewriteRule ^/(?>a) /b', line: 2, message: /valid regular expression.*atomic group/ },
    { text: 'RewriteCond %{HTTP_HOST} ^a++$\nRewriteRule ^ /b', line: 1, message: /valid regular expression.*possessive/ },
    { text: 'RewriteRule ^/a b', line: 1, message: /starting with "\/"/ },
    { text: 'RewriteRule ^/a - [R]', line: 1, message: /other than "-"/ },
    { text: 'RewriteRule ^/a /b [QSA,QSD]', line: 1, message: /QSA or QSD/ },
    { text: 'RewriteRule ^/a /b [F,R]', line: 1, message: /F or R/ },
    { text: 'RewriteRule ^/a /b [L=1]', line: 1, message: /L flag without a value/ },
    { text: 'RewriteRule ^/a ${map:x}', line: 1, message: /RewriteMap/ },
    { text: 'RewriteCond %{REQUEST_FILENAME} !-f\nRewriteRule ^ /index.php', line: 1, message: /file tests are not supported/ },
    { text: 'RewriteCond %{SERVER_ADMIN} x\nRewriteRule ^ /i', line: 1, message: /supported variable.*SERVER_ADMIN/ },
    {
      text: 'RewriteRule ^ /%{HTTP_X_TOKEN}',
      line: 1,
      message:
        /supported variable \(HTTP_HOST, HTTP_USER_AGENT, HTTP_REFERER, HTTP_COOKIE, HTTP_ACCEPT, HTTP_FORWARDED, HTTP:Header, REQUEST_URI, .*HTTP_X_TOKEN/,
    },
    { text: 'RewriteCond %{HTTP_HOST} x [NC,L]', line: 1, message: /supported flags/ },
    { text: 'RewriteCond %{HTTP_HOST} x\n\n', line: 1, message: /RewriteRule after RewriteCond/ },
    { text: 'RewriteCond %{HTTP_HOST x\nRewriteRule ^ /i', line: 1, message: /"\}" closing/ },
    { text: 'RewriteCond "%{HTTP_HOST} x', line: 1, message: /closing "/ },
    { text: 'RewriteBase /x', line: 1, message: /context: "directory"/ },
    { text: '<Directory /var/www>\nRewriteRule ^ /x\n</Directory>', line: 1, message: /<IfModule mod_rewrite.c>/ },
    { text: '<IfModule mod_rewrite.c>\nRewriteRule ^/a /b', line: 2, message: /<\/IfModule>/ },
    { text: '</IfModule>', line: 1, message: /opened <IfModule>/ },
  ];
  for (const c of cases) {
    it(`${JSON.stringify(c.text)} -> line ${c.line}`, () => {
      assert.throws(
        () => fromApache(c.text, c.options),
        (err: unknown) => {
          assert.ok(err instanceof InvalidOptionError);
          assert.equal(err.option, `apache:${c.line}`);
          assert.match(err.message, c.message);
          assert.match(err.message, new RegExp(`\\(line ${c.line}\\)$`));
          return true;
        },
      );
    });
  }

  it('rejects bad options', () => {
    assert.throws(() => fromApache('', { context: 'vhost' as never }), InvalidOptionError);
    assert.throws(() => fromApache('', { base: '/' } as never), InvalidOptionError);
    assert.throws(() => fromApache(null as unknown as string), InvalidOptionError);
  });
});
