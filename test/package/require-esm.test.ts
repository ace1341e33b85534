// The package as users load it: by name, through package.json `exports`, from
// the built dist/ (npm test builds it first). CommonJS users get the ES modules
// through Node's require(esm); ESM users import them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/require.cjs', import.meta.url));

function assertBuilt(): void {
  for (const file of ['dist/index.js', 'dist/adapters/fastify.js', 'dist/adapters/koa.js']) {
    assert.ok(existsSync(root + file), `${file} is missing: build the package first (npm run build; npm test does it)`);
  }
}

interface Report {
  types: Record<string, string>;
  resolvedTo: string;
  fastifyResolvedTo: string;
  name: string;
  frameworks: string[] | null;
  hookSawDependencies: boolean;
  sameInstance: boolean;
  body: string;
}

test('CommonJS require("switchyard-proxy"), "switchyard-proxy/fastify" and "switchyard-proxy/koa" load dist/ through require(esm)', async (t) => {
  assertBuilt();
  const { stdout, stderr } = await run(process.execPath, [fixture], { cwd: root, timeout: 20_000 });
  assert.equal(stderr, '', 'nothing on stderr: no warning, no error');
  const report = JSON.parse(stdout) as Report;
  assert.deepEqual(report.types, {
    createPool: 'function',
    balance: 'function',
    chain: 'function',
    SwitchyardError: 'function',
    'fastify.switchyard': 'function',
    'koa.koa': 'function',
  });
  assert.equal(report.name, 'switchyard-proxy');
  assert.equal(report.resolvedTo, `${root}dist/index.js`);
  assert.equal(report.fastifyResolvedTo, `${root}dist/adapters/fastify.js`);
  assert.equal(report.sameInstance, true, 'require() and import() share one instance of the package');
  // Loaded from CommonJS, the package really proxies.
  assert.equal(report.body, '200 upstream saw GET /from/cjs?x=1');
  if (report.frameworks === null) {
    t.diagnostic('module.registerHooks is not available on this Node: framework loading not checked');
  } else {
    assert.equal(report.hookSawDependencies, true);
    assert.deepEqual(report.frameworks, [], 'loading the package and both adapters loads no framework');
  }
});

test('ESM import("switchyard-proxy") by name gives the named exports from dist/', async () => {
  assertBuilt();
  const main = await import('switchyard-proxy');
  for (const name of [
    'createPool',
    'balance',
    'chain',
    'upgrade',
    'exchange',
    'parseDuration',
    'SwitchyardError',
    'BadGatewayError',
    'GatewayTimeoutError',
    'NoServerAvailableError',
  ]) {
    assert.equal(typeof (main as Record<string, unknown>)[name], 'function', name);
  }
  assert.equal('default' in main, false, 'named exports only');
  const { switchyard } = await import('switchyard-proxy/fastify');
  const { koa } = await import('switchyard-proxy/koa');
  assert.equal(typeof switchyard, 'function');
  assert.equal(typeof koa, 'function');
  assert.equal(import.meta.resolve('switchyard-proxy'), new URL('../../dist/index.js', import.meta.url).href);
  // The built package works on its own: a pool and its middleware from dist/.
  const pool = main.createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  try {
    assert.equal(typeof main.balance(pool).upgrade, 'function');
  } finally {
    pool.close();
  }
});
