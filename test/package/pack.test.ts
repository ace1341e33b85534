// The package as npm publishes it: `npm pack` makes the tarball, a fresh project
// in a temporary folder gets it in node_modules/switchyard-proxy (its dependencies
// linked from this repository's node_modules, so no registry is needed), and
// both an ES module and a CommonJS file import it by its published name and
// proxy a request through it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));

// Starts an upstream, proxies one request through the package, prints what came back.
const program = (load: string): string => `
${load}
const http = require_('node:http');
const upstream = http.createServer((req, res) => res.end('upstream saw ' + req.url));
upstream.listen(0, '127.0.0.1', () => {
  const pool = sy.createPool({ servers: [{ url: 'http://127.0.0.1:' + upstream.address().port }] });
  const gateway = http.createServer(sy.chain(sy.balance(pool)));
  gateway.listen(0, '127.0.0.1', () => {
    http.get({ host: '127.0.0.1', port: gateway.address().port, path: '/packed?x=1', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        console.log(JSON.stringify({ status: res.statusCode, body, fastify: typeof fastify.switchyard, koa: typeof koa.koa }));
        gateway.close();
        upstream.close();
        pool.close();
      });
    });
  });
});
`;

test('npm pack gives a tarball that a fresh project installs and loads as "switchyard-proxy" (ESM and CommonJS)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-pack-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  // --ignore-scripts: npm test has just built dist/; the tarball is what `files` lists.
  const { stdout } = await run(npm, ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], { cwd: root, timeout: 60_000 });
  const [info] = JSON.parse(stdout) as [{ name: string; filename: string; files: { path: string }[] }];
  assert.equal(info.name, 'switchyard-proxy');
  const paths = info.files.map((f) => f.path);
  for (const needed of ['package.json', 'README.md', 'LICENSE', 'dist/index.js', 'dist/index.d.ts', 'dist/adapters/fastify.js', 'dist/adapters/koa.js']) {
    assert.ok(paths.includes(needed), `the tarball has ${needed}`);
  }
  assert.ok(!paths.some((p) => p.startsWith('test/') || p.startsWith('node_modules/')), 'no tests or node_modules in the tarball');

  const project = join(dir, 'app');
  const modules = join(project, 'node_modules');
  const pkgDir = join(modules, 'switchyard-proxy');
  mkdirSync(pkgDir, { recursive: true });
  await run('tar', ['-xzf', join(dir, info.filename), '-C', pkgDir, '--strip-components=1'], { timeout: 30_000 });
  // The dependencies (and theirs) come from this repository's installed tree.
  for (const name of readdirSync(join(root, 'node_modules'))) {
    if (name.startsWith('.')) continue;
    symlinkSync(join(root, 'node_modules', name), join(modules, name), 'junction');
  }
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', private: true }));
  writeFileSync(
    join(project, 'esm.mjs'),
    program(`import * as sy from 'switchyard-proxy';
import * as fastify from 'switchyard-proxy/fastify';
import * as koa from 'switchyard-proxy/koa';
import { createRequire } from 'node:module';
const require_ = createRequire(import.meta.url);`),
  );
  writeFileSync(
    join(project, 'cjs.cjs'),
    program(`const require_ = require;
const sy = require('switchyard-proxy');
const fastify = require('switchyard-proxy/fastify');
const koa = require('switchyard-proxy/koa');`),
  );
  for (const file of ['esm.mjs', 'cjs.cjs']) {
    const out = await run(process.execPath, [file], { cwd: project, timeout: 20_000 });
    assert.equal(out.stderr, '', `${file}: nothing on stderr`);
    assert.deepEqual(JSON.parse(out.stdout), { status: 200, body: 'upstream saw /packed?x=1', fastify: 'function', koa: 'function' }, file);
  }
});
