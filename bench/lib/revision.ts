// Another git revision's sources, so that a benchmark measures it and the working tree in one run
// (old and new figures under the same load): `--compare <rev>` of run.ts and cache.ts.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');

/** An extracted revision: its short hash, its `src/` directory (for BENCH_SRC) and how to remove it. */
export interface Revision {
  short: string;
  src: string;
  remove: () => void;
}

/**
 * Extracts `src/` and package.json of git revision `rev` into a temporary directory with a link to
 * this tree's node_modules. The directory is removed when this process exits (or by `remove()`).
 */
export function extractRevision(rev: string): Revision {
  const git = spawnSync('git', ['rev-parse', '--short', `${rev}^{commit}`], { cwd: root, encoding: 'utf8', timeout: 10_000 });
  const short = git.stdout?.trim();
  if (git.status !== 0 || !short) throw new Error(`--compare: "${rev}" is not a git revision here (${git.stderr?.trim() || git.error?.message})`);
  const dir = mkdtempSync(join(tmpdir(), `switchyard-${short}-`));
  const remove = (): void => rmSync(dir, { recursive: true, force: true });
  // Synchronous, so it also runs on the way out after a signal or a failure.
  process.once('exit', remove);
  const tar = spawnSync('sh', ['-c', 'git archive "$1" src package.json | tar -x -C "$2"', 'sh', short, dir], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  if (tar.status !== 0) {
    remove();
    throw new Error(`--compare: could not extract ${short}: ${tar.stderr?.trim()}`);
  }
  symlinkSync(resolve(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return { short, src: join(dir, 'src'), remove };
}

/** This tree's sources compiled to JavaScript (what the published package runs): the directory for BENCH_SRC, and how to remove it. */
export interface Compiled {
  src: string;
  remove: () => void;
}

/**
 * Compiles this tree's `src/` with `tsc` (tsconfig.json, no declarations or source maps) into a
 * temporary directory with a package.json and a link to node_modules, so that a gateway can run the
 * JavaScript an installed package runs instead of the TypeScript sources (Node strips the types of
 * every .ts file it loads, which costs memory). The directory is removed when this process exits.
 */
export function compileSources(): Compiled {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-js-'));
  const remove = (): void => rmSync(dir, { recursive: true, force: true });
  process.once('exit', remove);
  const src = join(dir, 'src');
  const tsc = spawnSync(
    process.execPath,
    [resolve(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json', '--outDir', src, '--declaration', 'false', '--sourceMap', 'false'],
    { cwd: root, encoding: 'utf8', timeout: 180_000 },
  );
  if (tsc.status !== 0) {
    remove();
    throw new Error(`--compiled: tsc failed: ${(tsc.stdout + tsc.stderr).trim().split('\n').slice(0, 5).join('\n')}`);
  }
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
  symlinkSync(resolve(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return { src, remove };
}
