// Load generators: wrk (preferred, lighter on CPU) or autocannon, each run as
// its own process, with their output reduced to the same few figures.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { versionOf } from './machine.ts';
import { hasCommand, run } from './proc.ts';

/** What one load run measured. */
export interface LoadResult {
  /** Completed requests per second over the run. */
  rps: number;
  /** 99th percentile latency in ms. */
  p99: number;
  /** Median latency in ms. */
  p50: number;
  /** Requests completed. */
  requests: number;
  /** Non-2xx/3xx responses plus socket errors and timeouts. */
  errors: number;
}

export interface LoadSettings {
  url: string;
  connections: number;
  /** Seconds. */
  duration: number;
  /** wrk threads. */
  threads: number;
  /** CPU list for taskset, or undefined to leave the generator unpinned. */
  cpus: string | undefined;
  /** Request headers to send with every request. */
  headers?: Record<string, string>;
}

export type Tool = 'wrk' | 'autocannon';

/** A load generator bound to a tool. */
export interface LoadGenerator {
  tool: Tool;
  version: string;
  run(settings: LoadSettings): Promise<LoadResult>;
}

const require = createRequire(import.meta.url);

/** wrk when installed (unless `prefer` says otherwise), else autocannon; undefined when neither can run. */
export function loadGenerator(prefer: Tool | 'auto'): LoadGenerator | undefined {
  const wrk = prefer !== 'autocannon' && hasCommand('wrk', ['-v']);
  if (wrk) return { tool: 'wrk', version: wrkVersion(), run: runWrk };
  if (prefer === 'wrk') return undefined;
  let bin: string;
  try {
    bin = require.resolve('autocannon/autocannon.js');
  } catch {
    return undefined;
  }
  return { tool: 'autocannon', version: versionOf('autocannon'), run: (s) => runAutocannon(bin, s) };
}

function wrkVersion(): string {
  // `wrk -v` prints "wrk 4.1.0 [epoll] ..." and exits with 1.
  const r = spawnSync('wrk', ['-v'], { encoding: 'utf8', timeout: 5000 });
  const m = /wrk\s+(\S+)/.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`);
  return m?.[1] ?? 'unknown';
}

/** wrk prints durations such as `812.00us`, `1.25ms`, `2.00s`, `1.00m`. */
export function wrkMillis(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (m === null) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

/** Reduces wrk's `--latency` report to a {@link LoadResult}. */
export function parseWrk(out: string): LoadResult {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p50 = wrkMillis(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const p99 = wrkMillis(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '');
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  let errors = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  if (socket !== null) errors += Number(socket[1]) + Number(socket[2]) + Number(socket[3]) + Number(socket[4]);
  if (!Number.isFinite(rps) || !Number.isFinite(p99)) throw new Error(`could not read wrk's report:\n${out}`);
  return { rps, p50, p99, requests, errors };
}

async function runWrk(s: LoadSettings): Promise<LoadResult> {
  const args = ['-t', String(s.threads), '-c', String(s.connections), '-d', `${s.duration}s`, '--timeout', '5s', '--latency'];
  for (const [name, value] of Object.entries(s.headers ?? {})) args.push('-H', `${name}: ${value}`);
  args.push(s.url);
  const r = await run(s.cpus, 'wrk', args, (s.duration + 30) * 1000);
  if (r.code !== 0) throw new Error(`wrk exited with ${r.code}: ${r.stderr || r.stdout}`);
  return parseWrk(r.stdout);
}

interface AutocannonJson {
  requests: { total: number; average: number };
  latency: { p50: number; p99: number };
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
}

async function runAutocannon(bin: string, s: LoadSettings): Promise<LoadResult> {
  const args = [bin, '-c', String(s.connections), '-d', String(s.duration), '-t', '5', '-j'];
  for (const [name, value] of Object.entries(s.headers ?? {})) args.push('-H', `${name}=${value}`);
  args.push(s.url);
  const r = await run(s.cpus, process.execPath, args, (s.duration + 30) * 1000);
  if (r.code !== 0) throw new Error(`autocannon exited with ${r.code}: ${r.stderr}`);
  const j = JSON.parse(r.stdout) as AutocannonJson;
  return {
    rps: j.requests.total / j.duration,
    p50: j.latency.p50,
    p99: j.latency.p99,
    requests: j.requests.total,
    errors: j.errors + j.timeouts + j.non2xx,
  };
}
