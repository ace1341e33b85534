// The pool's protocol with balance(), sticky(), healthCheck() and the proxy engine (select, finish,
// selection, healthMark...) is not public: it is not in the published declarations, and a pool
// has no such members a user could call by name (and corrupt its counters with).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { createPool } from '../../src/pool/index.ts';
import { internals } from '../../src/pool/internal.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Every member the pool's internals have, and the names they had as public members before. */
const INTERNAL_NAMES = [
  'selection',
  'select',
  'wait',
  'finish',
  'header',
  'transferred',
  'agentFor',
  'maxTries',
  'queueing',
  'tls',
  'peers',
  'healthPeers',
  'healthCheckId',
  'healthProbe',
  'healthMark',
  'now',
];

/** The public members of UpstreamPool (what the README documents), besides EventEmitter's. */
const PUBLIC_MEMBERS = [
  'name',
  'method',
  'servers',
  'get',
  'add',
  'remove',
  'update',
  'stats',
  'resetStats',
  'streamStats',
  'resetStreamStats',
  'close',
  'ready',
];

/** The declaration tsc builds for src/pool/index.ts with the project's options (what `npm run build` puts in dist/). */
function emittedDeclaration(): string {
  const parsed = ts.getParsedCommandLineOfConfigFile(
    `${ROOT}tsconfig.json`,
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => {
        throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      },
    },
  );
  assert.ok(parsed !== undefined);
  const program = ts.createProgram([`${ROOT}src/pool/index.ts`], {
    ...parsed.options,
    declaration: true,
    emitDeclarationOnly: true,
    sourceMap: false,
    declarationMap: false,
    noEmit: false,
  });
  let text: string | undefined;
  // Written to memory only: nothing lands in dist/.
  program.emit(undefined, (fileName, data) => {
    if (fileName.replace(/\\/g, '/').endsWith('/pool/index.d.ts')) text = data;
  });
  assert.ok(text !== undefined, 'tsc emitted pool/index.d.ts');
  return text;
}

/** The body of `declare class UpstreamPool … { … }` in a declaration file. */
function classBody(dts: string): string {
  const start = dts.indexOf('export declare class UpstreamPool');
  assert.ok(start !== -1, 'the declaration has the class');
  const open = dts.indexOf('{', start);
  let depth = 0;
  for (let i = open; i < dts.length; i++) {
    if (dts[i] === '{') depth++;
    else if (dts[i] === '}' && --depth === 0) return dts.slice(open + 1, i);
  }
  throw new Error('unbalanced class body');
}

/** The member names declared directly in a class body (nested object types skipped). */
function memberNames(body: string): string[] {
  const names: string[] = [];
  let depth = 0;
  for (const line of body.split('\n')) {
    if (depth === 0) {
      const m = /^\s*(?:(?:readonly|get|set|static|private|protected)\s+)*(#?[A-Za-z_$][\w$]*|\[[^\]]+\])\s*[?(:<]/.exec(line);
      if (m !== null) names.push(m[1]!);
    }
    for (const ch of line) {
      if (ch === '{') depth++;
      else if (ch === '}') depth--;
    }
  }
  return names;
}

function assertNoInternals(dts: string, where: string): void {
  const members = memberNames(classBody(dts));
  for (const name of INTERNAL_NAMES) assert.ok(!members.includes(name), `${where}: UpstreamPool declares no "${name}" (members: ${members.join(', ')})`);
  for (const name of members)
    assert.ok(['#private', 'constructor', ...PUBLIC_MEMBERS].includes(name), `${where}: "${name}" is a public member the README documents`);
  assert.doesNotMatch(dts, /\bPeer\b|\bSelection\b|AttemptTimings|internal\.ts|kPool/, `${where}: no internal type or module is referenced`);
}

test('the declaration of UpstreamPool (dist/pool/index.d.ts) has only the documented members: no select, finish, selection, healthMark…', () => {
  assertNoInternals(emittedDeclaration(), 'tsc output');
});

test('dist/pool/index.d.ts, when built from the current sources, has no internal members either', (t) => {
  const dist = `${ROOT}dist/pool/index.d.ts`;
  let built: number;
  try {
    built = statSync(dist).mtimeMs;
  } catch {
    t.skip('dist/ is not built (npm run build)');
    return;
  }
  const newest = Math.max(
    ...readdirSync(`${ROOT}src/pool`, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts'))
      .map((f) => statSync(`${ROOT}src/pool/${f}`).mtimeMs),
  );
  if (built < newest) {
    t.skip('dist/ is older than src/pool (npm run build; npm test builds first)');
    return;
  }
  assertNoInternals(String(ts.sys.readFile(dist)), 'dist/pool/index.d.ts');
});

test('a pool has no internal member by name: Object.keys, property access and `in` find none', (t) => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:19801' }, { url: 'http://127.0.0.1:19802' }], queue: { size: 1 } });
  t.after(() => pool.close());
  const keys = Object.keys(pool);
  const props = Object.getOwnPropertyNames(pool);
  for (const name of INTERNAL_NAMES) {
    assert.ok(!keys.includes(name) && !props.includes(name), `no own "${name}"`);
    assert.equal((pool as unknown as Record<string, unknown>)[name], undefined, `pool.${name} is undefined`);
    assert.ok(!(name in pool), `"${name}" in pool is false`);
  }
  // The internals are there for the package's own modules, under a symbol no public type names.
  assert.equal(typeof internals(pool).select, 'function');
  assert.equal(internals(pool).queueing, true);
  const key = Object.getOwnPropertySymbols(pool).find((s) => s.description === 'switchyard.pool');
  assert.ok(key !== undefined && Object.getOwnPropertyDescriptor(pool, key)?.enumerable === false, 'non-enumerable');
});

test('byte counts go through the pool: what an attempt moved shows in stats() sent and received', (t) => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:19803' }] });
  t.after(() => pool.close());
  const inner = internals(pool);
  const peer = inner.select(inner.selection(undefined, undefined))!;
  inner.transferred(peer, 120, 4000);
  inner.finish(peer, 'ok', { header: 1, response: 2, inflightDone: false }, 200);
  assert.deepEqual([pool.stats().servers[0]!.sent, pool.stats().servers[0]!.received], [120, 4000]);
  pool.resetStats();
  assert.deepEqual([pool.stats().servers[0]!.sent, pool.stats().servers[0]!.received], [0, 0]);
});
