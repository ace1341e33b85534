// The literal-prefix shortcut must never change which rules match.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { literalPrefix } from '../../src/rewrite/index.ts';
import { rewrite, chain, exchange } from '../../src/index.ts';
import { fetchText, gateway } from '../helpers.ts';

test('literal prefixes of anchored regexes', () => {
  const table: Array<[RegExp, string]> = [
    [/^\/download\/(.*)$/, '/download/'],
    [/^\/a\.b\/x/, '/a.b/x'],
    [/^\/ab?c/, '/a'],
    [/^\/ab*c/, '/a'],
    [/^\/ab+c/, '/ab'],
    [/^\/a{2}/, '/'],
    [/^\/a\d+/, '/a'],
    [/^\/(a|b)/, ''],
    [/^\/a|^\/b/, ''],
    [/\/a/, ''],
    [/^\/a/i, ''],
    [/^\/a/m, ''],
    [/^[/]a/, ''],
    [/^\/a.b/, '/a'],
  ];
  for (const [re, prefix] of table) assert.equal(literalPrefix(re), prefix, String(re));
});

test('rules match exactly as their regex and pattern say, with the shortcut in place', async (t) => {
  const gw = await gateway(
    t,
    chain(
      rewrite([
        { rewrite: '^/a\\.b/(.*)$', replacement: '/dot/$1', flag: 'break' },
        { rewrite: '^/colou?r/(.*)$', replacement: '/color/$1', flag: 'break' },
        { from: '/Users/:id', to: '/people/:id', flag: 'break' },
      ]),
      (req, res) => res.end(exchange(req).uri),
    ),
  );
  const table: Array<[string, string]> = [
    ['/a.b/x', '/dot/x'],
    ['/aXb/x', '/aXb/x'],
    ['/color/1', '/color/1'],
    ['/colour/2', '/color/2'],
    ['/colr/3', '/colr/3'],
    ['/Users/7', '/people/7'],
    ['/users/7', '/users/7'],
  ];
  for (const [path, uri] of table) assert.equal((await fetchText(gw.url + path)).body, uri, path);
});
