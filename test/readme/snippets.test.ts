// The README tells the truth (issue 12): every ```ts / ```typescript / ```js block in README.md is
// type-checked under `strict` against the package as users install it (`switchyard-proxy`,
// resolved by name through package.json `exports` to the built dist/, which npm test builds
// first), with express, fastify, koa, ws and @keyv/redis from the repo's node_modules. One
// TypeScript program covers every snippet, so the file stays fast.
//
// Conventions, in an HTML comment on the line just before a code block (invisible on GitHub):
//   <!-- snippet: prelude=pool,app -->  the block is a fragment: declare what it uses (PRELUDES)
//   <!-- snippet: run -->               also run it under node: it must exit by itself with nothing
//                                       on stderr and print what its trailing `// ` comment lines
//                                       say (times such as `7.3 ms` are not compared); the
//                                       loopback ports it names are swapped for free ones
//   <!-- snippet: skip (reason) -->     not checked, and the reason is required
// Every code block names its language; blocks in other languages (sh, text) are not checked.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { deadPort } from '../helpers.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const readmePath = join(root, 'README.md');
/** Fewer checked snippets than this means the extraction broke (today there are more). */
const MIN_CHECKED = 12;
const CHECKED_LANGUAGES = new Map([
  ['ts', '.ts'],
  ['typescript', '.ts'],
  ['js', '.js'],
]);

/**
 * Declarations for fragments, by name. They declare values only (no imports), so a fragment's
 * own imports never clash with them.
 */
const PRELUDES: Record<string, string> = {
  pool: "declare const pool: import('switchyard-proxy').UpstreamPool;",
  proxy: "declare const proxy: import('switchyard-proxy').BalanceMiddleware;",
  app: "declare const app: import('express').Express;",
  sticky: "declare const st: import('switchyard-proxy').StickyMiddleware;",
  tls: 'declare const key: string;\ndeclare const cert: string;',
};

/** The type checker's settings: what a strict user project on Node has. */
const compilerOptions: ts.CompilerOptions = {
  strict: true,
  noEmit: true,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2023,
  lib: ['lib.es2023.d.ts'],
  types: ['node'],
  typeRoots: [join(root, 'node_modules/@types')],
  skipLibCheck: true,
  // Node runs .ts files by stripping types: what it cannot strip, a snippet must not use.
  verbatimModuleSyntax: true,
  erasableSyntaxOnly: true,
  allowJs: true,
  checkJs: true,
};

interface Block {
  /** 1-based line of the opening fence in README.md. */
  line: number;
  lang: string;
  code: string;
  directive: Directive;
}

interface Directive {
  skip?: string | undefined;
  preludes: string[];
  run: boolean;
}

function parseDirective(comment: string | undefined, line: number): Directive {
  const directive: Directive = { preludes: [], run: false };
  if (comment === undefined) return directive;
  const skip = /^skip\s*\((.*)\)$/.exec(comment);
  if (skip !== null) {
    assert.ok(skip[1]!.trim() !== '', `README.md:${line}: a skipped snippet needs a reason: <!-- snippet: skip (why) -->`);
    directive.skip = skip[1]!.trim();
    return directive;
  }
  for (const token of comment.split(/\s+/)) {
    if (token === 'run') directive.run = true;
    else if (token.startsWith('prelude=')) {
      for (const name of token.slice('prelude='.length).split(',')) {
        assert.ok(Object.hasOwn(PRELUDES, name), `README.md:${line}: unknown prelude "${name}" (known: ${Object.keys(PRELUDES).join(', ')})`);
        directive.preludes.push(name);
      }
    } else assert.fail(`README.md:${line}: unknown snippet directive "${token}" (prelude=a,b | run | skip (reason))`);
  }
  return directive;
}

/** Every fenced code block of a Markdown text, with the `<!-- snippet: … -->` comment before it. */
function extractBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)/.exec(lines[i]!);
    if (open === null) continue;
    const fence = open[1]!;
    const start = i;
    const body: string[] = [];
    const closes = (line: string): boolean => {
      const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(line);
      return close !== null && close[1]![0] === fence[0] && close[1]!.length >= fence.length;
    };
    for (i++; i < lines.length && !closes(lines[i]!); i++) body.push(lines[i]!);
    assert.ok(i < lines.length, `README.md:${start + 1}: code block never closed`);
    let before = start - 1;
    while (before >= 0 && lines[before]!.trim() === '') before--;
    const comment = before >= 0 ? /^<!--\s*snippet:\s*(.*?)\s*-->$/.exec(lines[before]!.trim())?.[1] : undefined;
    blocks.push({ line: start + 1, lang: open[2]!.toLowerCase(), code: body.join('\n'), directive: parseDirective(comment, start + 1) });
  }
  return blocks;
}

interface SnippetFile {
  path: string;
  block: Block;
  /** Lines of prelude written before the block's code. */
  offset: number;
}

function writeSnippet(dir: string, block: Block): SnippetFile {
  const prelude = block.directive.preludes.map((name) => PRELUDES[name]!).join('\n');
  const offset = prelude === '' ? 0 : prelude.split('\n').length;
  const path = join(dir, `readme-line-${block.line}${CHECKED_LANGUAGES.get(block.lang)!}`);
  // `export {}` makes every snippet a module of its own: their top-level names never meet.
  writeFileSync(path, `${prelude === '' ? '' : `${prelude}\n`}${block.code}\nexport {};\n`);
  return { path, block, offset };
}

/** A diagnostic as `README.md:LINE: TSnnnn message`, pointing into the README where it can. */
function locate(diagnostic: ts.Diagnostic, files: SnippetFile[]): string {
  const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
  if (diagnostic.file === undefined || diagnostic.start === undefined) return `TS${diagnostic.code}: ${message}`;
  const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
  const file = files.find((f) => f.path === diagnostic.file!.fileName);
  if (file === undefined) return `${diagnostic.file.fileName}:${line + 1}: TS${diagnostic.code}: ${message}`;
  const where =
    line < file.offset
      ? `README.md:${file.block.line} (prelude ${file.block.directive.preludes.join(',')})`
      : `README.md:${file.block.line + 1 + line - file.offset}`;
  return `${where}: TS${diagnostic.code}: ${message}\n    ${diagnostic.file.text.split('\n')[line]!.trim()}`;
}

function assertBuilt(): void {
  for (const file of ['dist/index.d.ts', 'dist/index.js', 'dist/adapters/fastify.d.ts', 'dist/adapters/koa.d.ts']) {
    assert.ok(existsSync(join(root, file)), `${file} is missing: build the package first (npm run build; npm test does it)`);
  }
}

/** A scratch folder inside the repo (git-ignored), so that every import resolves from its node_modules. */
function scratchDir(t: TestContext): string {
  const parent = join(root, '.snippets');
  mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(join(parent, 'run-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
    try {
      rmdirSync(parent); // only when empty: another run may be using it
    } catch {
      // not empty, or already gone
    }
  });
  return dir;
}

function typeCheck(paths: string[]): readonly ts.Diagnostic[] {
  const program = ts.createProgram(paths, compilerOptions);
  return ts.getPreEmitDiagnostics(program);
}

const blocks = extractBlocks(readFileSync(readmePath, 'utf8'));

test('code blocks and their snippet comments are read as the conventions say', () => {
  const read = (markdown: string) => extractBlocks(markdown).map((b) => ({ line: b.line, lang: b.lang, code: b.code, ...b.directive }));
  assert.deepEqual(read('text\n\n<!-- snippet: prelude=pool,app run -->\n\n````ts\na;\n```\n````\n\n~~~\nb\n~~~\n'), [
    { line: 5, lang: 'ts', code: 'a;\n```', preludes: ['pool', 'app'], run: true },
    { line: 10, lang: '', code: 'b', preludes: [], run: false },
  ]);
  assert.deepEqual(read('<!-- snippet: skip (needs a database) -->\n```TS\nc\n```'), [
    { line: 2, lang: 'ts', code: 'c', preludes: [], run: false, skip: 'needs a database' },
  ]);
  assert.deepEqual(read('<!-- snippet: skip (x) -->\nprose\n```ts\nd\n```')[0]!.skip, undefined, 'a comment applies to the block right after it only');
  assert.throws(() => read('<!-- snippet: skip () -->\n```ts\n```'), /needs a reason/);
  assert.throws(() => read('<!-- snippet: prelude=nope -->\n```ts\n```'), /unknown prelude "nope"/);
  assert.throws(() => read('<!-- snippet: runn -->\n```ts\n```'), /unknown snippet directive "runn"/);
  assert.throws(() => read('```ts\nnever closed'), /never closed/);
});

test('every code block in README.md names its language', () => {
  const unnamed = blocks.filter((b) => b.lang === '').map((b) => `README.md:${b.line}`);
  assert.deepEqual(unnamed, [], 'a code block without a language is neither checked nor highlighted: name it (ts, sh, text, ...)');
});

test('every TypeScript and JavaScript snippet in README.md type-checks under strict against the built package', (t) => {
  assertBuilt();
  const dir = scratchDir(t);
  const checked = blocks.filter((b) => CHECKED_LANGUAGES.has(b.lang) && b.directive.skip === undefined);
  const skipped = blocks.filter((b) => CHECKED_LANGUAGES.has(b.lang) && b.directive.skip !== undefined);
  const files = checked.map((b) => writeSnippet(dir, b));

  // Canaries in the same program prove the check has teeth: strict mode is on, the package
  // resolves by name to its types (an option it does not have is an error), and .js is checked.
  const canaries = [
    { name: 'implicit-any.ts', code: 'export const handler = (err, req) => [err, req];', expect: 7006 },
    {
      name: 'misspelt-option.ts',
      code: "import { createPool } from 'switchyard-proxy';\nexport const p = createPool({ servers: [], methd: 'least-conn' });",
      expect: 2561,
    },
    { name: 'misspelt-express.ts', code: "import express from 'express';\nexpress().lisen(0);\nexport {};", expect: 2551 },
    { name: 'js-checked.js', code: "import { createPool } from 'switchyard-proxy';\nexport const b = createPool({ servers: 'x' });", expect: 2322 },
  ];
  for (const c of canaries) writeFileSync(join(dir, c.name), `${c.code}\n`);

  const diagnostics = typeCheck([...files.map((f) => f.path), ...canaries.map((c) => join(dir, c.name))]);
  for (const c of canaries) {
    const codes = diagnostics.filter((d) => d.file?.fileName.endsWith(`/${c.name}`)).map((d) => d.code);
    assert.ok(
      codes.includes(c.expect),
      `canary ${c.name} should fail with TS${c.expect}, got ${codes.length === 0 ? 'no error' : codes.map((n) => `TS${n}`).join(', ')}: the snippet check is not checking`,
    );
  }
  const errors = diagnostics.filter((d) => !canaries.some((c) => d.file?.fileName.endsWith(`/${c.name}`)));
  if (errors.length > 0)
    assert.fail(`README snippets that do not type-check (fix the README, or the package):\n${errors.map((d) => locate(d, files)).join('\n')}`);

  t.diagnostic(
    `${checked.length} README snippets type-checked${skipped.length > 0 ? `, ${skipped.length} skipped: ${skipped.map((b) => `README.md:${b.line} (${b.directive.skip})`).join('; ')}` : ''}`,
  );
  assert.ok(checked.length >= MIN_CHECKED, `only ${checked.length} snippets found in README.md, expected at least ${MIN_CHECKED}: is the extraction broken?`);
});

const run = promisify(execFile);

const PORT = /(?<=(?:127\.0\.0\.1|localhost):|\.listen\()\d{2,5}\b/g;
const timesIgnored = (text: string): string => text.replace(/\d+(?:\.\d+)? ms\b/g, '<n> ms');

for (const block of blocks.filter((b) => b.directive.run)) {
  test(`README.md:${block.line}: the snippet runs as written and prints what its comments say`, async (t) => {
    assertBuilt();
    assert.ok(CHECKED_LANGUAGES.has(block.lang), `README.md:${block.line}: only ts/js snippets can run`);
    const dir = scratchDir(t);
    // Each loopback port the snippet names (listening or connecting) becomes a free one, so the
    // run never meets a server of someone else's; the same port stays the same everywhere.
    const ports = new Map<string, string>();
    for (const match of block.code.matchAll(PORT)) if (!ports.has(match[0])) ports.set(match[0], String(await deadPort()));
    const code = block.code.replace(PORT, (port) => ports.get(port)!);
    const file = writeSnippet(dir, { ...block, code });
    const env = { ...process.env };
    delete env.NODE_DEBUG;
    delete env.NODE_TEST_CONTEXT;
    delete env.NODE_OPTIONS;
    const { stdout, stderr } = await run(process.execPath, [file.path], { cwd: root, env, timeout: 30_000 });
    assert.equal(stderr, '', 'nothing on stderr');
    const lines = code.split('\n');
    let first = lines.length;
    while (first > 0 && lines[first - 1]!.startsWith('// ')) first--;
    const expected = lines.slice(first).map((l) => l.slice(3));
    if (expected.length > 0)
      assert.deepEqual(timesIgnored(stdout).trimEnd().split('\n'), expected.map(timesIgnored), "stdout is what the snippet's closing comments say");
  });
}
