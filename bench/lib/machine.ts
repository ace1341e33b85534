// The machine and software a benchmark ran on, for the report.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, release, totalmem, type } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = fileURLToPath(new URL('.', import.meta.url));

/** Label/value pairs describing the host, Node and the packages compared. */
export function machine(extra: Array<[string, string]> = []): Array<[string, string]> {
  const cpu = cpus()[0];
  const out: Array<[string, string]> = [
    ['CPU', `${cpu?.model.trim() ?? 'unknown'}${cpu?.speed ? ` (${cpu.speed} MHz)` : ''}`],
    ['Cores', `${availableParallelism()} logical`],
    ['Memory', `${Math.round(totalmem() / 2 ** 30)} GiB`],
    ['OS', `${type()} ${release()}${osName()}`],
    ['Node', process.version],
    ['switchyard', `${packageVersion('../../package.json')}${gitRevision()}`],
  ];
  return [...out, ...extra];
}

/** The version of an installed package, or `-` when it is missing. */
export function versionOf(name: string): string {
  // Read the file directly: some packages' `exports` maps hide package.json.
  for (const dir of require.resolve.paths(name) ?? []) {
    const file = join(dir, name, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  }
  return '-';
}

function packageVersion(path: string): string {
  try {
    return (require(path) as { version: string }).version;
  } catch {
    return '-';
  }
}

function gitRevision(): string {
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      encoding: 'utf8',
      cwd: here,
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 5000,
    }).trim();
    const dirty =
      execFileSync('git', ['status', '--porcelain', '--', 'src'], {
        encoding: 'utf8',
        cwd: here,
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 5000,
      }).trim() !== '';
    return ` (git ${rev}${dirty ? ', src modified' : ''})`;
  } catch {
    return '';
  }
}

function osName(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'));
    return m === null ? '' : `, ${m[1]}`;
  } catch {
    return '';
  }
}
