// The import rule of ARCHITECTURE.md, checked on every file of src/: a folder imports only from
// itself and from the layers below it; folders of one layer do not import each other, except that
// the factories may import each other's types (`import type`, erased at run time); src/index.ts and
// src/adapters may import anything. Package imports: node: builtins and the package's dependencies
// everywhere, a framework (a peer dependency) only in its own adapter.
//
// On failure the test prints each offending `file → import` with the rule it breaks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SRC = join(ROOT, 'src');

/**
 * The layer table, bottom first. A folder of src/ is in exactly one layer; a new folder gets a row
 * here (and in ARCHITECTURE.md) before it gets code. `index` is src/index.ts.
 */
const LAYERS: ReadonlyArray<{ name: string; folders: readonly string[] }> = [
  { name: 'core', folders: ['core'] },
  { name: 'sync', folders: ['sync'] },
  { name: 'state', folders: ['store', 'pool'] },
  { name: 'proxy', folders: ['proxy'] },
  { name: 'factories', folders: ['rewrite', 'cache', 'sticky', 'balance', 'health', 'monitor', 'shape', 'log', 'limit', 'stream'] },
  { name: 'entry points', folders: ['adapters', 'index'] },
];

/** Layers whose folders may import any folder (the public surface is assembled there). */
const FREE = new Set(['entry points']);
/** Layers whose folders may import each other's types, and only types. */
const TYPES_ACROSS = new Set(['factories']);

/**
 * Imports that break the rule today, each with why it is tolerated for now. The test fails when
 * one of them disappears (delete its line then) and when a new one appears (fix the import, do not
 * add a line here without a reason the lead agreed to).
 */
const KNOWN: ReadonlyArray<{ from: string; to: string; why: string }> = [];

/** One import of one file, as the parser found it. */
interface ImportRef {
  /** The importing file, relative to the repository (`src/cache/index.ts`). */
  file: string;
  /** The specifier as written. */
  specifier: string;
  /** The imported file relative to the repository, for relative specifiers. */
  target: string | undefined;
  /** Erased at run time: `import type`, `export type ... from`, or an `import('...')` type. */
  typeOnly: boolean;
  line: number;
}

/** Every import, re-export, dynamic import and import type of a TypeScript source. */
function importsOf(file: string, text: string): ImportRef[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: ImportRef[] = [];
  const add = (node: ts.Node, literal: ts.Expression | undefined, typeOnly: boolean): void => {
    if (literal === undefined || !ts.isStringLiteralLike(literal)) return;
    const specifier = literal.text;
    const target = specifier.startsWith('.')
      ? relative(ROOT, resolve(dirname(join(ROOT, file)), specifier))
          .split('\\')
          .join('/')
      : undefined;
    found.push({ file, specifier, target, typeOnly, line: source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1 });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) add(node, node.moduleSpecifier, node.importClause?.isTypeOnly === true);
    else if (ts.isExportDeclaration(node)) add(node, node.moduleSpecifier, node.isTypeOnly);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference))
      add(node, node.moduleReference.expression, node.isTypeOnly);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) add(node, node.argument.literal, true);
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) add(node, node.arguments[0], false);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** The folder of src/ a repository path belongs to: `cache` for src/cache/key.ts, `index` for src/index.ts. */
function folderOf(path: string): string | undefined {
  const parts = path.split('/');
  if (parts[0] !== 'src' || parts.length < 2) return undefined;
  if (parts.length === 2) return parts[1]!.replace(/\.ts$/, '');
  return parts[1];
}

function layerOf(folder: string): number {
  return LAYERS.findIndex((l) => l.folders.includes(folder));
}

/** Why `ref` breaks the layer rule, or undefined when it keeps it. Package imports are not judged here. */
function layerViolation(ref: ImportRef): string | undefined {
  if (ref.target === undefined) return undefined;
  const from = folderOf(ref.file);
  const to = folderOf(ref.target);
  if (from === undefined) return undefined;
  if (to === undefined) return `src/ imports outside src/ (${ref.target})`;
  if (from === to) return undefined;
  const a = layerOf(from);
  const b = layerOf(to);
  if (a === -1) return `${from}/ is in no layer of the table`;
  if (b === -1) return `${to}/ is in no layer of the table`;
  const layer = LAYERS[a]!;
  if (FREE.has(layer.name)) return undefined;
  if (b < a) return undefined;
  if (b > a) return `${from}/ (layer ${layer.name}) may not import ${to}/ (layer ${LAYERS[b]!.name}), a layer above it`;
  if (ref.typeOnly && TYPES_ACROSS.has(layer.name)) return undefined;
  return TYPES_ACROSS.has(layer.name)
    ? `${from} may import only types from ${to} (a factory beside it): use \`import type\``
    : `${from} may not import ${to}: both are in the ${layer.name} layer`;
}

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
};
const BUILTINS = new Set(builtinModules.filter((m) => !m.startsWith('_')));

function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

/** Why a package import breaks the rule, or undefined when it keeps it. */
function packageViolation(ref: ImportRef): string | undefined {
  if (ref.target !== undefined) return undefined;
  const s = ref.specifier;
  if (s.startsWith('node:')) return BUILTINS.has(s.slice(5)) ? undefined : `${s} is not a Node builtin`;
  if (BUILTINS.has(packageName(s))) return `write Node builtins with the node: prefix (${s})`;
  const name = packageName(s);
  if (Object.hasOwn(pkg.dependencies ?? {}, name)) return undefined;
  if (Object.hasOwn(pkg.peerDependencies ?? {}, name)) {
    return ref.file === `src/adapters/${name}.ts` ? undefined : `the framework ${name} is imported only by its adapter, src/adapters/${name}.ts`;
  }
  return `${name} is not a dependency in package.json`;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [path] : [];
  });
}

let parsed: ImportRef[] | undefined;

/** Every import of every file of src/, parsed once per run. */
function allImports(): ImportRef[] {
  parsed ??= sourceFiles(SRC).flatMap((path) => {
    const file = relative(ROOT, path).split('\\').join('/');
    return importsOf(file, readFileSync(path, 'utf8'));
  });
  return parsed;
}

const isKnown = (ref: ImportRef): boolean => KNOWN.some((k) => k.from === ref.file && k.to === ref.target);
const describeRef = (ref: ImportRef, why: string): string => `  ${ref.file}:${ref.line} → '${ref.specifier}'${ref.typeOnly ? ' (type only)' : ''}: ${why}`;

test('every import in src/ follows the layer table of ARCHITECTURE.md', () => {
  const refs = allImports();
  assert.ok(refs.length > 100, `the parser found ${refs.length} imports: it is not reading src/`);
  const bad = refs.flatMap((ref) => {
    const why = layerViolation(ref);
    return why === undefined || isKnown(ref) ? [] : [describeRef(ref, why)];
  });
  assert.equal(bad.length, 0, `${bad.length} import(s) break the layer rule (see ARCHITECTURE.md, "Which folder may import which"):\n${bad.join('\n')}`);
});

test('the known exceptions are still there (remove a line of KNOWN once its import is fixed)', () => {
  const refs = allImports();
  for (const k of KNOWN) {
    const still = refs.some((ref) => ref.file === k.from && ref.target === k.to && layerViolation(ref) !== undefined);
    assert.ok(still, `${k.from} → ${k.to} no longer breaks the rule: delete it from KNOWN in test/architecture/imports.test.ts`);
  }
});

test('src/ imports only Node builtins (node:), its dependencies, and a framework only in its adapter', () => {
  const bad = allImports().flatMap((ref) => {
    const why = packageViolation(ref);
    return why === undefined ? [] : [describeRef(ref, why)];
  });
  assert.equal(bad.length, 0, `${bad.length} package import(s) break the rule:\n${bad.join('\n')}`);
});

test('every folder of src/ has its row in the layer table', () => {
  const folders = readdirSync(SRC, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
  const missing = folders.filter((f) => layerOf(f) === -1);
  assert.deepEqual(missing, [], `src/${missing.join('/, src/')}/ must be placed in LAYERS (test/architecture/imports.test.ts) and in ARCHITECTURE.md`);
  const listed = LAYERS.flatMap((l) => l.folders).filter((f) => f !== 'index');
  assert.equal(new Set(listed).size, listed.length, 'a folder is in two layers');
});

test('the checker bites: canary imports are judged as the rule says', () => {
  const judge = (file: string, text: string): Array<string | undefined> => importsOf(file, text).map((ref) => layerViolation(ref) ?? packageViolation(ref));
  const broken = (file: string, text: string): void => {
    const verdicts = judge(file, text);
    assert.equal(verdicts.length, 1, `${file}: one import parsed from ${text}`);
    assert.ok(verdicts[0] !== undefined, `${file}: ${text} should break the rule`);
  };
  const kept = (file: string, text: string): void => {
    const verdicts = judge(file, text);
    assert.equal(verdicts.length, 1, `${file}: one import parsed from ${text}`);
    assert.equal(verdicts[0], undefined, `${file}: ${text} should keep the rule`);
  };
  // Upwards, at every level, in every syntax the parser reads.
  broken('src/core/exchange.ts', "import { UpstreamPool } from '../pool/index.ts';");
  broken('src/core/exchange.ts', "import type { ServerState } from '../pool/peer.ts';");
  broken('src/pool/index.ts', "import { upgrade } from '../proxy/upgrade.ts';");
  broken('src/pool/methods/hash.ts', "export { cache } from '../../cache/index.ts';");
  broken('src/proxy/forward.ts', "const m = await import('../balance/index.ts');");
  broken('src/proxy/forward.ts', "type B = import('../balance/index.ts').BalanceOptions;");
  broken('src/store/memory.ts', "import { sticky } from '../sticky/index.ts';");
  broken('src/health/index.ts', "import { switchyard } from '../adapters/fastify.ts';");
  broken('src/rewrite/index.ts', "import '../index.ts';");
  // Sideways: store and pool; factories importing values of each other.
  broken('src/pool/index.ts', "import { createMemoryStore } from '../store/index.ts';");
  broken('src/store/index.ts', "import type { Peer } from '../pool/peer.ts';");
  broken('src/cache/index.ts', "import { kSticky } from '../sticky/index.ts';");
  broken('src/monitor/index.ts', "import { type HealthCheck } from '../health/index.ts';"); // loaded at run time under verbatimModuleSyntax
  // Outside src/, and packages.
  broken('src/core/chain.ts', "import { upstream } from '../../test/helpers.ts';");
  broken('src/cache/index.ts', "import express from 'express';");
  broken('src/adapters/koa.ts', "import Fastify from 'fastify';");
  broken('src/core/http.ts', "import { readFile } from 'fs';");
  broken('src/core/http.ts', "import leftpad from 'left-pad';");
  // What the rule allows.
  kept('src/cache/options.ts', "import type { NextUpstreamCondition } from '../balance/index.ts';");
  kept('src/monitor/index.ts', "export type { HealthCheck } from '../health/index.ts';");
  kept('src/balance/index.ts', "import { attempt } from '../proxy/forward.ts';");
  kept('src/proxy/upgrade.ts', "import { UpstreamPool } from '../pool/index.ts';");
  kept('src/sticky/index.ts', "import { resolveStore } from '../store/index.ts';");
  kept('src/pool/methods/hash.ts', "import { compileTemplate } from '../../core/variables.ts';");
  kept('src/pool/methods/hash.ts', "import type { Peer } from '../peer.ts';");
  kept('src/adapters/fastify.ts', "import { kBalance } from '../balance/index.ts';");
  kept('src/adapters/fastify.ts', "import type { FastifyInstance } from 'fastify';");
  kept('src/index.ts', "export { cache } from './cache/index.ts';");
  kept('src/proxy/upgrade.ts', "import { createProxyServer } from 'http-proxy-3';");
  kept('src/core/http2.ts', "import http2 from 'node:http2';");
});
