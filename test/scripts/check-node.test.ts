// scripts/check-node.cjs (issue 12): `npm start`, `npm test` and `npm run bench` run the TypeScript
// sources directly, so on a Node without type stripping by default (before 22.18) they must say which
// Node they need instead of failing with ERR_UNKNOWN_FILE_EXTENSION on the first `.ts` file.
import { strict as assert } from 'node:assert';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runNode } from '../support/child.ts';

const script = fileURLToPath(new URL('../../scripts/check-node.cjs', import.meta.url));
const check = createRequire(import.meta.url)(script) as {
  stripsTypesByDefault(version: string): boolean;
  problem(version: string, typescript: unknown, script: string | undefined): string | undefined;
};

describe('check-node: the Node version the repository scripts need', () => {
  it('knows which Node versions run .ts files by default', () => {
    const cases: Array<[string, boolean]> = [
      ['18.20.4', false],
      ['20.19.0', false],
      ['22.2.0', false],
      ['22.12.0', false],
      ['22.17.1', false],
      ['22.18.0', true],
      ['22.23.5', true],
      ['v22.18.0', true],
      ['23.5.0', false],
      ['23.6.0', true],
      ['24.0.0', true],
      ['24.22.3', true],
      ['25.1.0', true],
      ['', false],
      ['garbage', false],
    ];
    for (const [version, expected] of cases) assert.equal(check.stripsTypesByDefault(version), expected, version);
  });

  it('says what npm test needs on Node 22.12, and that the package itself runs on 22.2', () => {
    const message = check.problem('22.12.0', false, 'test');
    assert.ok(message);
    assert.match(message, /^`npm test` needs Node\.js 22\.18 or later \(or 24\)/);
    assert.match(message, /runs the TypeScript sources directly/);
    assert.match(message, /This is Node\.js 22\.12\.0/);
    assert.match(message, /22\.2 and later/);
    assert.match(check.problem('22.17.0', undefined, 'bench') ?? '', /^`npm run bench`/);
    assert.equal(check.problem('22.18.0', 'strip', 'test'), undefined);
    assert.equal(check.problem('24.22.3', 'strip', 'start'), undefined);
  });

  it('passes silently on this Node', async (t) => {
    const out = await runNode(t, [script], { limitMs: 10_000 });
    assert.deepEqual([out.code, out.stdout, out.stderr], [0, '', '']);
  });

  it('fails with a clear message when type stripping is turned off', async (t) => {
    const out = await runNode(t, ['--no-experimental-strip-types', script], {
      env: { ...process.env, npm_lifecycle_event: 'start' },
      limitMs: 10_000,
    });
    assert.equal(out.code, 1);
    assert.equal(out.stdout, '');
    assert.match(out.stderr, /^switchyard: `npm start` needs Node\.js 22\.18 or later \(or 24\) with type stripping on/);
    assert.match(out.stderr, /Type stripping is turned off/);
  });

  it('runs first in npm start, npm test and npm run bench', async () => {
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
    for (const name of ['start', 'test', 'bench']) {
      assert.match(pkg.scripts[name] ?? '', /^node scripts\/check-node\.cjs && /, name);
    }
  });
});
