// PCRE syntax in rewrite(), fromNginx and server names: translated where JavaScript can match the
// same strings, refused (at load, with the line or the rule) where it cannot. Expected matches are
// PCRE2's (pcre2pattern(3)) with nginx's options: no UTF unless (*UTF8), default (ASCII) tables.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fromNginx, rewrite } from '../../src/index.ts';
import { compileRegex } from '../../src/rewrite/conditions.ts';
import { REGEXP_MODIFIERS } from '../../src/rewrite/pcre.ts';
import { rewriteGateway } from './support.ts';

/** [pattern, caseless, subjects it matches, subjects it does not]. */
const MATCHES: Array<[string, boolean, string[], string[]]> = [
  ['^/\\Q.*+?[a]{1}\\E$', false, ['/.*+?[a]{1}'], ['/xa', '/.*+?a']],
  ['^/\\Qa.b', false, ['/a.b'], ['/axb']],
  ['^[\\Q]^-\\E]+$', false, [']^-', '-'], ['a']],
  ['^/a\\Q\\E+$', false, ['/aaa'], ['/']],
  ['(?i)^/ADMIN', false, ['/admin', '/Admin/x'], ['/adm']],
  ['(?-i)^/ADMIN', true, ['/ADMIN'], ['/admin']],
  ['(?s)^/a.b$', false, ['/a\nb'], []],
  ['^/a.b$', false, ['/a\rb', '/axb'], ['/a\nb']],
  ['^/a$', false, ['/a', '/a\n'], ['/a\n\n', '/a\r']],
  ['(?m)^b$', false, ['a\nb\nc', 'b'], ['a\rb', 'ab']],
  ['^/a(?i)b|c', false, ['/aB', 'C', '/ab'], ['/AB']],
  ['^/(a(?i)b|c)d$', false, ['/aBd', '/Cd'], ['/aBD', '/ABd']],
  ['^/a(?-i)b(?i)c$', true, ['/AbC', '/abc'], ['/aBc']],
  // An option set in a group carries on into its later alternatives, not past the group.
  ['^/(a(?s).|.)(.)$', false, ['/a\nx', '/\nx'], ['/x\n']],
  ['^/(?i:ab)C', false, ['/ABC', '/abC'], ['/abc']],
  ['^/(?s:.)', false, ['/\n'], []],
  ['^/\\p{L}+$', false, ['/héllo', '/ΑΒΓ'], ['/a1', '/']],
  ['^/\\pL\\P{L}$', false, ['/a1'], ['/ab']],
  ['^/\\p{Greek}+$', false, ['/αβγ'], ['/abc']],
  ['^/\\p{L&}$', false, ['/a', '/Z'], ['/1']],
  ['^/\\p{^Lu}$', false, ['/a'], ['/A']],
  ['(*UTF8)^/.$', false, ['/é', '/😀'], ['/ab']],
  ['^/(?P<id>\\d+)/(?P=id)$', false, ['/12/12'], ['/12/13']],
  ["^/(?'id'\\d+)/\\k{id}/\\k'id'/\\g{id}$", false, ['/1/1/1/1'], ['/1/1/1/2']],
  ['^/(\\d)\\g1\\g{1}$', false, ['/777'], ['/778']],
  ['^/a(?#comment)b$', false, ['/ab'], ['/a']],
  ['\\A/a\\z', false, ['/a'], ['/a\n', 'x/a']],
  ['\\G/a\\Z', false, ['/a', '/a\n'], ['/a\n\n']],
  ['^/a\\hb\\vc\\Rd$', false, ['/a b\nc\r\nd', '/a\tb\rc\nd'], ['/ab\nc\nd']],
  ['^/\\H\\V\\N$', false, ['/xyz'], ['/ yz', '/x\nz', '/xy\n']],
  ['^/[\\h\\v]+$', false, ['/ \t\n'], ['/x']],
  ['^/\\s\\S$', false, ['/ x', '/\tx'], ['/\u00a0x', '/  ']],
  ['^/[\\s]$', false, ['/ '], ['/\u00a0']],
  ['^/[\\S]$', false, ['/\u00a0', '/x'], ['/ ']],
  ['^/[\\s\\S]+$', false, ['/a b\n\u00a0'], []],
  ['^/\\x{41}\\x42\\x4\\o{103}\\103$', false, ['/AB\u0004CC'], []],
  ['^/\\x{1F600}$', false, ['/😀'], []],
  ['^/\\e\\a\\cA\\c[$', false, ['/\u001b\u0007\u0001\u001b'], []],
  ['^/\\0\\01\\012$', false, ['/\0\u0001\n'], []],
  ['^/[\\1\\12]$', false, ['/\u0001', '/\n'], ['/1']],
  ['^/[[:alpha:][:digit:]_-]+$', false, ['/ab1_-'], ['/a.b']],
  ['^/[^[:space:]]+$', false, ['/ab'], ['/a b']],
  ['^/[[:upper:]]$', true, ['/a', '/A'], ['/1']],
  ['^/[]a]+$', false, ['/]a]'], ['/b']],
  ['^/[^]a]$', false, ['/b'], ['/]', '/a']],
  ['^/a{2}b{1,}c{1,2}$', false, ['/aabcc'], ['/abc']],
  ['^/a{x}}]$', false, ['/a{x}}]'], []],
  ['^/a\\-b\\_c\\@d\\/e$', false, ['/a-b_c@d/e'], []],
  ['^/\\p{L}\\-\\_$', false, ['/é-_'], []],
  ['^/a*?b+?$', false, ['/aab'], []],
];

/** A change of case sensitivity after the start of the pattern: JavaScript's modifier groups, which Node 22 lacks. */
const MID_CASE = /.(\(\?-?i\)|\(\?-?i:)/;

for (const [pattern, caseless, yes, no] of MATCHES) {
  test(`PCRE ${pattern}${caseless ? ' (caseless)' : ''} matches as in nginx`, () => {
    if (!REGEXP_MODIFIERS && MID_CASE.test(pattern)) {
      // refused at load, never read as something else
      assert.throws(() => compileRegex(pattern, caseless, 'regex'), /modifier groups: Node 24/);
      return;
    }
    const re = compileRegex(pattern, caseless, 'regex');
    for (const s of yes) assert.ok(re.test(s), `${JSON.stringify(s)} should match ${re}`);
    for (const s of no) assert.ok(!re.test(s), `${JSON.stringify(s)} should not match ${re}`);
  });
}

/** Patterns refused, with what the message names. */
const REFUSED: Array<[string, RegExp]> = [
  ['^/a++', /possessive/],
  ['^/a*+', /possessive/],
  ['^/a?+', /possessive/],
  ['^/a{2}+', /possessive/],
  ['^/(?>a+)b', /atomic group/],
  ['^/(?|(a)|(b))', /branch reset/],
  ['^/(a|(?R))', /recursion/],
  ['^/(a)(?1)', /recursion/],
  ['^/(?<n>a)(?&n)', /recursion/],
  ['^/(?(1)a|b)', /conditional/],
  ['^/(?C1)a', /callout/],
  ['(?J)^/(?<a>x)|(?<a>y)', /option "J"/],
  ['(?x)^/ a', /option "x"/],
  ['(?U)^/a', /option "U"/],
  ['^/(?x:a)', /option "x"/],
  ['(*UCP)^/\\w', /verb/],
  ['^/(*SKIP)a', /verb/],
  ['^/a\\Kb', /reset the match start/],
  ['^/\\X', /grapheme/],
  ['^/\\C', /code unit/],
  ['^/\\g{-1}', /relative references/],
  ['^/\\u0041', /escape "\\u"/],
  ['^/\\L', /escape "\\L"/],
  ['^/\\i', /escape "\\i"/],
  ['^/[\\A]', /inside a character class/],
  ['^/[\\R]', /inside a character class/],
  ['^/[\\H]', /inside a character class/],
  ['^/[\\8]', /inside a character class/],
  ['^/\\p{Xan}', /property "Xan"/],
  ['^/\\p', /property/],
  ['^/a{,3}', /PCRE2 10\.43/],
  ['^/[[:alpha:]', /closing the character class/],
  ['^/[[:foo:]]', /POSIX class "\[:foo:\]"/],
  ['^/[[:^alpha:]]', /negated POSIX class/],
  ['^/\\N{U+41}', /\\N\{/],
  ['^/a\\', /end of the pattern/],
  ['^/\\cé', /printable ASCII/],
];

for (const [pattern, message] of REFUSED) {
  test(`PCRE ${pattern} is refused when the rules load`, () => {
    assert.throws(
      () => rewrite([{ return: 200 }, { rewrite: pattern, replacement: '/x' }]),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'SWY_ERR_INVALID_OPTION');
        assert.match(err.message, /"rules\[1\]\.rewrite"/);
        assert.match(err.message, message);
        return true;
      },
    );
  });
}

test('PCRE that JavaScript lacks is refused in server_name, location, rewrite and if, with the line', () => {
  const cases: Array<[string, number, RegExp]> = [
    ['server {\n  server_name ~^(?<sub>\\w++)\\.example$;\n}', 2, /"server_name".*possessive/],
    ['location / {\n}\nlocation ~ ^/(?>a) {\n}', 3, /"location".*atomic group/],
    ['\n\nrewrite ^/a(*ACCEPT)b /c;', 3, /"rewrite".*verb/],
    ['if ($http_x ~ "\\Ka") {\n  return 403;\n}', 1, /"if".*reset the match start/],
  ];
  for (const [text, line, message] of cases) {
    assert.throws(
      () => fromNginx(text),
      (err: Error & { code?: string; option?: string }) => {
        assert.equal(err.code, 'SWY_ERR_INVALID_OPTION');
        assert.match(err.message, new RegExp(`nginx:${line}`));
        assert.match(err.message, message);
        return true;
      },
      text,
    );
  }
  assert.throws(() => rewrite([{ server: '~^(?>a)$', rules: [] }]), /rules\[0\]\.server\[0\].*atomic group/);
  assert.throws(() => rewrite([{ location: '~* ^/\\p{Xan}', rules: [] }]), /rules\[0\]\.location.*property "Xan"/);
  assert.throws(() => rewrite([{ if: '$uri ~ a++', then: [] }]), /rules\[0\]\.if.*possessive/);
});

test('translated PCRE works through fromNginx end to end', async (t) => {
  const gw = await rewriteGateway(
    t,
    fromNginx(`
      server {
        server_name "~(?i)^(?<sub>[[:alpha:]]+)\\.example$";
        location ~ "^/\\Q$(x)\\E/(?<w>\\p{L}+)$" { rewrite ^ /letters/$w/$sub break; }
        location ~* "(?-i)^/Case$" { return 200 "exact case"; }
        if ($http_x_name ~ "(?i)^\\QA.B\\E$") { return 200 "header"; }
      }
    `),
  );
  assert.equal((await gw.echo('/$(x)/%C3%A9t%C3%A9', { host: 'WWW.example' })).uri, '/letters/été/www');
  assert.equal((await gw.get('/Case', { host: 'a.example' })).body, 'exact case');
  assert.equal((await gw.echo('/case', { host: 'a.example' })).uri, '/case');
  assert.equal((await gw.get('/', { host: 'a.example', 'x-name': 'a.b' })).body, 'header');
  assert.equal((await gw.echo('/', { host: 'a.example', 'x-name': 'axb' })).uri, '/');
});
