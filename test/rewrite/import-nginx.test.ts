import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import { chain } from '../../src/core/chain.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { exchange } from '../../src/core/exchange.ts';
import { rewrite, type RewriteRule } from '../../src/rewrite/index.ts';
import { fromNginx } from '../../src/rewrite/nginx.ts';
import { fetchText, gateway } from '../helpers.ts';

function echo(req: IncomingMessage, res: ServerResponse): void {
  const ex = exchange(req);
  res.end(JSON.stringify({ uri: ex.uri, args: ex.args }));
}

async function serve(t: TestContext, rules: RewriteRule[]): Promise<string> {
  return (await gateway(t, chain(rewrite(rules), echo))).url;
}

describe('fromNginx: parsing', () => {
  const cases: Array<{ name: string; text: string; rules: RewriteRule[] }> = [
    {
      name: 'the blog rules, with a comment',
      text: `
        # media and audio
        rewrite ^(/download/.*)/media/(\\w+)\\.?.*$ $1/mp3/$2.mp3 last;
        rewrite ^(/download/.*)/audio/(\\w+)\\.?.*$ $1/mp3/$2.ra  last;
        return  403;`,
      rules: [
        { rewrite: '^(/download/.*)/media/(\\w+)\\.?.*$', replacement: '$1/mp3/$2.mp3', flag: 'last' },
        { rewrite: '^(/download/.*)/audio/(\\w+)\\.?.*$', replacement: '$1/mp3/$2.ra', flag: 'last' },
        { return: 403 },
      ],
    },
    {
      name: 'flags',
      text: 'rewrite ^/a /b; rewrite ^/c /d break; rewrite ^/e /f redirect; rewrite ^/g /h permanent;',
      rules: [
        { rewrite: '^/a', replacement: '/b' },
        { rewrite: '^/c', replacement: '/d', flag: 'break' },
        { rewrite: '^/e', replacement: '/f', flag: 'redirect' },
        { rewrite: '^/g', replacement: '/h', flag: 'permanent' },
      ],
    },
    {
      name: 'a quoted regex with braces, multi-line',
      text: 'rewrite\n  "^/x/([0-9]{3})$"\n  /y/$1?\n  last;',
      rules: [{ rewrite: '^/x/([0-9]{3})$', replacement: '/y/$1?', flag: 'last' }],
    },
    {
      name: 'quotes and escapes',
      text: `return 200 "say \\"hi\\";\\n"; return 200 'it\\'s'; set $a "b c"; set $b \${host}x;`,
      rules: [
        { return: 200, text: 'say "hi";\n' },
        { return: 200, text: "it's" },
        { set: '$a', value: 'b c' },
        { set: '$b', value: '${host}x' },
      ],
    },
    {
      name: 'return forms',
      text: 'return 301 https://$host$request_uri; return https://example.com/; return 302 /rel; return 404 "gone"; return 444;',
      rules: [
        { return: 301, url: 'https://$host$request_uri' },
        { return: 302, url: 'https://example.com/' },
        { return: 302, url: '/rel' },
        { return: 404, text: 'gone' },
        { return: 444 },
      ],
    },
    {
      name: 'if conditions',
      text: 'if ($http_x_debug) { break; } if ($request_method = POST) { return 405; } if ( $arg_a != "" ) { set $x 1; } if ($http_host ~* "^www\\.(.+)$") { return 301 https://$1$request_uri; } if ($uri !~ \\.php$) { return 404; } if ($http_user_agent ~ "Foo Bar") { return 403; } if ($a !~* b) { return 400; }',
      rules: [
        { if: { var: '$http_x_debug' }, then: [{ break: true }] },
        { if: { var: '$request_method', op: '=', value: 'POST' }, then: [{ return: 405 }] },
        { if: { var: '$arg_a', op: '!=', value: '' }, then: [{ set: '$x', value: '1' }] },
        { if: { var: '$http_host', op: '~*', value: '^www\\.(.+)$' }, then: [{ return: 301, url: 'https://$1$request_uri' }] },
        { if: { var: '$uri', op: '!~', value: '\\.php$' }, then: [{ return: 404 }] },
        { if: { var: '$http_user_agent', op: '~', value: 'Foo Bar' }, then: [{ return: 403 }] },
        { if: { var: '$a', op: '!~*', value: 'b' }, then: [{ return: 400 }] },
      ],
    },
    {
      name: 'locations with every modifier',
      text: 'location = / { return 200 root; } location ^~ /img/ { break; } location ~ \\.php$ { rewrite ^ /index.php last; } location ~* \\.(gif|jpg)$ { return 403; } location /api/ { if ($arg_v = 1) { rewrite ^/api/(.*) /v1/$1 break; } }',
      rules: [
        { location: '= /', rules: [{ return: 200, text: 'root' }] },
        { location: '^~ /img/', rules: [{ break: true }] },
        { location: '~ \\.php$', rules: [{ rewrite: '^', replacement: '/index.php', flag: 'last' }] },
        { location: '~* \\.(gif|jpg)$', rules: [{ return: 403 }] },
        { location: '/api/', rules: [{ if: { var: '$arg_v', op: '=', value: '1' }, then: [{ rewrite: '^/api/(.*)', replacement: '/v1/$1', flag: 'break' }] }] },
      ],
    },
    {
      name: 'one server block',
      text: 'server {\n  server_name example.org;\n  return 301 http://www.example.org$request_uri;\n}',
      rules: [{ server: ['example.org'], rules: [{ return: 301, url: 'http://www.example.org$request_uri' }] }],
    },
    {
      name: 'server with a location',
      text: 'server { server_name a b; server_name c; set $x 1; location /p { return 204; } }',
      rules: [
        {
          server: ['a', 'b', 'c'],
          rules: [
            { set: '$x', value: '1' },
            { location: '/p', rules: [{ return: 204 }] },
          ],
        },
      ],
    },
    {
      name: 'an ignored directive is skipped with its block',
      text: 'server { listen 80; server_name a; location / { proxy_pass http://u; limit_except GET { deny all; } return 204; } }',
      rules: [{ server: ['a'], rules: [{ location: '/', rules: [{ return: 204 }] }] }],
    },
    { name: 'empty text', text: '  # nothing\n', rules: [] },
  ];
  const ignore = ['listen', 'proxy_pass', 'limit_except'];
  for (const c of cases) {
    it(c.name, () => {
      const rules = fromNginx(c.text, { ignore });
      assert.deepEqual(rules, c.rules);
      assert.equal(typeof rewrite(rules), 'function');
    });
  }

  it('orders several servers the way nginx picks them', () => {
    const rules = fromNginx(
      'server { server_name ~^(?<sub>.+)\\.example\\.net$ *.example.org; return 200 a; } server { server_name .example.org mail.*; return 200 b; } server { server_name *.www.example.org www.example.org; return 200 c; }',
    );
    const a = [{ return: 200, text: 'a' }];
    const b = [{ return: 200, text: 'b' }];
    const c = [{ return: 200, text: 'c' }];
    assert.deepEqual(rules, [
      { server: ['example.org'], rules: b },
      { server: ['www.example.org'], rules: c },
      { server: ['*.www.example.org'], rules: c },
      { server: ['*.example.org'], rules: a },
      { server: ['*.example.org'], rules: b },
      { server: ['mail.*'], rules: b },
      { server: ['~^(?<sub>.+)\\.example\\.net$'], rules: a },
    ]);
  });
});

describe('fromNginx: errors name the line', () => {
  const cases: Array<{ text: string; line: number; message: RegExp }> = [
    { text: 'rewrite ^/a /b;\nproxy_pass http://u;', line: 2, message: /"proxy_pass" is not supported/ },
    { text: 'server {\n  listen 80;\n  server_name a;\n}', line: 2, message: /"listen" is not supported/ },
    { text: '\n\nrewrite ^/a{2} /b;', line: 3, message: /"rewrite".*takes no block/ },
    { text: 'rewrite "(" /b;', line: 1, message: /valid regular expression in "rewrite"/ },
    { text: 'rewrite ^/a /b last', line: 1, message: /";" or "\{" ending the "rewrite"/ },
    { text: 'rewrite ^/a /b final;', line: 1, message: /last, break, redirect or permanent/ },
    { text: 'rewrite ^/a;', line: 1, message: /2 to 3 arguments for "rewrite"/ },
    { text: 'location / {\n  return 204;\n', line: 1, message: /"\}" closing the block/ },
    { text: 'return 204;\n}', line: 2, message: /unexpected "\}"/ },
    { text: "\nset $a 'unterminated;", line: 2, message: /closing '/ },
    { text: 'set a b;', line: 1, message: /variable such as \$name/ },
    { text: 'location / {\n if ($a) {\n  if ($b) { break; }\n }\n}', line: 3, message: /"if" inside "if"/ },
    { text: 'if (-f $request_filename) { break; }', line: 1, message: /file checks are not supported/ },
    { text: 'if ($a == b) { break; }', line: 1, message: /one of = != ~/ },
    { text: 'if ($a ~ "(") { break; }', line: 1, message: /valid regular expression in "if"/ },
    { text: 'if (a) { break; }', line: 1, message: /variable such as \$http_host/ },
    { text: 'if ($a { break; }', line: 1, message: /"\)" closing/ },
    { text: 'if ($a);', line: 1, message: /block after "if/ },
    { text: 'return nope;', line: 1, message: /status code, or a URL/ },
    { text: 'return 1000;', line: 1, message: /100 to 999/ },
    { text: 'location /a/ {\n  location /b { break; }\n}', line: 2, message: /location "\/b" is outside location "\/a\/"/ },
    { text: 'location = /e {\n  location /e/x { break; }\n}', line: 2, message: /cannot be inside the exact location "\/e"/ },
    { text: 'location /a {}\nlocation ^~ /a {}', line: 2, message: /duplicate location "\/a"/ },
    { text: 'location /a/ {\n  location = /a/b {}\n  location = /a/b {}\n}', line: 3, message: /duplicate location "\/a\/b"/ },
    { text: 'location /a {}\nlocation ^~ /a {}', line: 2, message: /duplicate location "\/a"/ },
    { text: 'location /a/ {\n  location = /a/b {}\n  location = /a/b {}\n}', line: 3, message: /duplicate location "\/a\/b"/ },
    { text: 'location ~ ^/x {\n  location /x { break; }\n}', line: 2, message: /location "\/x" is outside location "\^\/x"/ },
    { text: 'location / {\n if ($a) {\n  location /b { break; }\n }\n}', line: 3, message: /no "location" inside "if"/ },
    { text: 'location @named { break; }', line: 1, message: /named locations/ },
    { text: 'location ~ { break; }', line: 1, message: /a path after the location modifier/ },
    { text: 'location !! /a { break; }', line: 1, message: /location modifier/ },
    { text: 'server {\n return 204;\n}', line: 1, message: /server_name/ },
    { text: 'server { server_name a; }\nreturn 204;', line: 2, message: /only server blocks/ },
    { text: 'server { server_name a; server { server_name b; } }', line: 1, message: /no "server" block inside/ },
    { text: 'server_name a;', line: 1, message: /only directly in a server block/ },
    { text: 'server { server_name a*b; }', line: 1, message: /"\*" only as/ },
    { text: 'break 1;', line: 1, message: /0 arguments for "break"/ },
    { text: 'return "a"x;', line: 1, message: /after a quoted string/ },
  ];
  for (const c of cases) {
    it(`${JSON.stringify(c.text)} -> line ${c.line}`, () => {
      assert.throws(
        () => fromNginx(c.text),
        (err: unknown) => {
          assert.ok(err instanceof InvalidOptionError);
          assert.equal(err.option, `nginx:${c.line}`);
          assert.match(err.message, c.message);
          assert.match(err.message, new RegExp(`\\(line ${c.line}\\)$`));
          return true;
        },
      );
    });
  }

  it('rejects bad options', () => {
    assert.throws(() => fromNginx('break;', { ignore: 'listen' as unknown as string[] }), InvalidOptionError);
    assert.throws(() => fromNginx('break;', { other: 1 } as never), InvalidOptionError);
    assert.throws(() => fromNginx(42 as unknown as string), InvalidOptionError);
  });
});

describe('fromNginx: end to end through rewrite()', () => {
  it('the download rules map media and audio, and answer 403 otherwise', async (t) => {
    const url = await serve(
      t,
      fromNginx(`
      rewrite ^(/download/.*)/media/(\\w+)\\.?.*$ $1/mp3/$2.mp3 last;
      rewrite ^(/download/.*)/audio/(\\w+)\\.?.*$ $1/mp3/$2.ra  last;
      return  403;
    `),
    );
    for (const [path, uri] of [
      ['/download/cdn-west/media/file1', '/download/cdn-west/mp3/file1.mp3'],
      ['/download/cdn-west/media/file1.flv', '/download/cdn-west/mp3/file1.mp3'],
      ['/download/cdn-west/audio/file1.wav', '/download/cdn-west/mp3/file1.ra'],
    ] as const) {
      const r = await fetchText(url + path);
      assert.equal(r.status, 200, path);
      assert.deepEqual(JSON.parse(r.body), { uri, args: '' }, path);
    }
    assert.equal((await fetchText(`${url}/download/cdn-west/video/file1`)).status, 403);
    assert.equal((await fetchText(`${url}/other`)).status, 403);
  });

  it('the server block redirects example.org to www and leaves www alone', async (t) => {
    const url = await serve(t, fromNginx('server {\n  server_name example.org;\n  return 301 http://www.example.org$request_uri;\n}'));
    const r = await fetchText(`${url}/a?b=1`, { headers: { host: 'example.org' } });
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, 'http://www.example.org/a?b=1');
    const www = await fetchText(`${url}/a?b=1`, { headers: { host: 'www.example.org' } });
    assert.equal(www.status, 200);
    assert.deepEqual(JSON.parse(www.body), { uri: '/a', args: 'b=1' });
  });

  it('several servers: the exact name wins over an earlier wildcard, as in nginx', async (t) => {
    const url = await serve(
      t,
      fromNginx('server { server_name *.example.org; return 200 wildcard; } server { server_name www.example.org; return 200 exact; }'),
    );
    assert.equal((await fetchText(`${url}/`, { headers: { host: 'www.example.org' } })).body, 'exact');
    assert.equal((await fetchText(`${url}/`, { headers: { host: 'a.example.org' } })).body, 'wildcard');
  });

  it('if, set and a location work together', async (t) => {
    const url = await serve(
      t,
      fromNginx(`
      if ($http_x_version = "2") { set $v v2; }
      location /api/ {
        rewrite ^/api/(.*)$ /internal/$v/$1?from=api last;
      }
      location /internal/ { break; }
    `),
    );
    const r = await fetchText(`${url}/api/users?id=7`, { headers: { 'x-version': '2' } });
    assert.deepEqual(JSON.parse(r.body), { uri: '/internal/v2/users', args: 'from=api&id=7' });
  });
});
