// switchyard's proxy benchmark: requests per second and p99 latency of
// switchyard (node:http, Express, Fastify, Koa) against a bare Node proxy, a
// bare undici proxy, its peers (http-proxy-3, http-proxy-middleware,
// @fastify/http-proxy) and nginx, on loopback, on this machine, in one run.
// See bench/README.md.
//
//   node bench/run.ts [--duration 10] [--warmup 3] [--connections 50] [--targets a,b]
//                     [--tool auto|wrk|autocannon] [--threads 1] [--rounds 1] [--pin auto|on|off]
//                     [--keepalive n] [--busy-retries 2] [--paired] [--cpu-prof] [--out file]
//   node bench/run.ts --select ...   runs the server-selection micro-benchmark (bench/select.ts)
//   node bench/run.ts --sync ...     runs what sync costs: CPU per request on vs off, p99 through a Redis outage (bench/sync.ts)
//   node bench/run.ts --memory ...   runs peak RSS for large bodies and throughput at 5,000 connections (bench/memory.ts)
//   node bench/run.ts --help
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { availableParallelism } from 'node:os';
import { createServer } from 'node:net';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadGenerator, type LoadGenerator, type LoadResult, type Tool } from './lib/load.ts';
import { machine, versionOf } from './lib/machine.ts';
import { int, markdown, median } from './lib/report.ts';
import { extractRevision, type Revision } from './lib/revision.ts';
import { nginxVersion, startNginx } from './lib/nginx.ts';
import { cpuSeconds, hasCommand, machineBusySeconds, selfAndReapedSeconds, spawnPinned, stop, waitMessage } from './lib/proc.ts';

const here = dirname(fileURLToPath(import.meta.url));

interface Target {
  name: string;
  label: string;
  /** With --compare: the bench/target.ts target this one runs, on `src` (another revision's sources). */
  of?: string;
  src?: string;
}

const BASELINE = 'node-baseline';
const TARGETS: Target[] = [
  { name: BASELINE, label: 'bare Node proxy (http.request pipe, keep-alive agent)' },
  { name: 'undici-baseline', label: 'bare undici proxy (node:http + undici Pool dispatch)' },
  { name: 'switchyard-node', label: 'switchyard, node:http `chain(balance(pool))`' },
  { name: 'switchyard-express', label: 'switchyard, Express `app.use(balance(pool))`' },
  { name: 'switchyard-fastify', label: 'switchyard, Fastify plugin' },
  { name: 'switchyard-koa', label: 'switchyard, Koa `app.use(koa(balance(pool)))`' },
  { name: 'http-proxy-3', label: 'http-proxy-3 `proxy.web()` on node:http' },
  { name: 'hpm-express', label: 'http-proxy-middleware on Express' },
  { name: 'fastify-http-proxy', label: '@fastify/http-proxy' },
  { name: 'nginx', label: 'nginx, 1 worker, upstream keepalive' },
];

/**
 * With --paired, these targets are also run side by side with their closest
 * peer instead of the bare Node proxy (the issue's targets compare them directly).
 */
const PEER_PAIRS: Array<[target: string, peer: string]> = [['switchyard-fastify', 'fastify-http-proxy']];

// ---- options -------------------------------------------------------------

const USAGE = `usage: node bench/run.ts [options]          (npm run bench -- [options])
  --duration <s>      measured seconds per target          env BENCH_DURATION     default 10
  --warmup <s>        warm-up seconds per target           env BENCH_WARMUP       default 3
  --connections <n>   concurrent keep-alive connections    env BENCH_CONNECTIONS  default 50
  --targets <a,b>     targets to run (default all):        env BENCH_TARGETS
                      ${TARGETS.map((t) => t.name).join(', ')}
  --tool <t>          auto (wrk if installed), wrk, autocannon  env BENCH_TOOL     default auto
  --threads <n>       wrk threads                          env BENCH_THREADS      default 1
  --rounds <n>        repeat all targets, report medians   env BENCH_ROUNDS       default 1
  --pin <p>           auto|on|off: pin the proxy to its own CPU with taskset   env BENCH_PIN  default auto
  --keepalive <n>     idle upstream connections a proxy keeps (Node agents'
                      maxFreeSockets, nginx keepalive)     env BENCH_KEEPALIVE    default max(32, connections)
  --busy-retries <n>  measure a target again (up to n times) when other processes used more
                      than 10% of the machine meanwhile; the quietest sample is kept
                                                           env BENCH_BUSY_RETRIES default 2
  --paired            also run each target side by side with the bare Node proxy, both on
                      the proxy CPU, and compare CPU per request (robust on noisy machines);
                      and switchyard-fastify side by side with @fastify/http-proxy
                                                           env BENCH_PAIRED=1
  --cpu-prof          profile each Node target's measured seconds into bench/results/profiles/
                      (the profiler slows the target; summarize with node bench/profile.ts <file>)
  --compare <rev>     also run every switchyard target on the sources of git revision <rev>
                      (extracted to a temporary directory), in the same rounds: old and new
                      figures measured under the same load     env BENCH_COMPARE
  --out <file>        markdown report                      default bench/results/latest.md
  --select            run the server-selection micro-benchmark instead (bench/select.ts)
  --sync              run what sync costs instead (bench/sync.ts): CPU per request with sync on
                      vs off, p99 through a Redis outage
  --memory            run the memory and connections benchmark instead (bench/memory.ts): peak
                      RSS through a 1 GB download and a 200 MB upload, req/s at 5,000 connections`;

interface Options {
  duration: number;
  warmup: number;
  connections: number;
  targets: Target[];
  tool: Tool | 'auto';
  threads: number;
  rounds: number;
  pin: 'auto' | 'on' | 'off';
  keepalive: number;
  cpuProf: boolean;
  paired: boolean;
  busyRetries: number;
  compare: string | undefined;
  out: string;
}

function numberOption(name: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value.replace(/s$/, ''));
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min}, got "${value}"`);
  return n;
}

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      targets: { type: 'string' },
      tool: { type: 'string' },
      threads: { type: 'string' },
      rounds: { type: 'string' },
      pin: { type: 'string' },
      keepalive: { type: 'string' },
      'cpu-prof': { type: 'boolean' },
      paired: { type: 'boolean' },
      'busy-retries': { type: 'string' },
      compare: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }
  const env = process.env;
  const names = (values.targets ?? env.BENCH_TARGETS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const n of names) if (!TARGETS.some((t) => t.name === n)) throw new Error(`unknown target "${n}"; targets: ${TARGETS.map((t) => t.name).join(', ')}`);
  const tool = values.tool ?? env.BENCH_TOOL ?? 'auto';
  if (tool !== 'auto' && tool !== 'wrk' && tool !== 'autocannon') throw new Error(`--tool must be auto, wrk or autocannon, got "${tool}"`);
  const pin = values.pin ?? env.BENCH_PIN ?? 'auto';
  if (pin !== 'auto' && pin !== 'on' && pin !== 'off') throw new Error(`--pin must be auto, on or off, got "${pin}"`);
  const connections = Math.floor(numberOption('connections', values.connections ?? env.BENCH_CONNECTIONS, 50, 1));
  return {
    duration: numberOption('duration', values.duration ?? env.BENCH_DURATION, 10, 1),
    warmup: numberOption('warmup', values.warmup ?? env.BENCH_WARMUP, 3, 0),
    connections,
    keepalive: Math.floor(numberOption('keepalive', values.keepalive ?? env.BENCH_KEEPALIVE, Math.max(32, connections), 1)),
    targets: names.length === 0 ? TARGETS : TARGETS.filter((t) => names.includes(t.name)),
    tool,
    threads: Math.floor(numberOption('threads', values.threads ?? env.BENCH_THREADS, 1, 1)),
    rounds: Math.floor(numberOption('rounds', values.rounds ?? env.BENCH_ROUNDS, 1, 1)),
    pin,
    cpuProf: values['cpu-prof'] === true,
    paired: values.paired === true || env.BENCH_PAIRED === '1',
    busyRetries: Math.floor(numberOption('busy-retries', values['busy-retries'] ?? env.BENCH_BUSY_RETRIES, 2, 0)),
    compare: (values.compare ?? env.BENCH_COMPARE) || undefined,
    out: resolve(values.out ?? resolve(here, 'results', 'latest.md')),
  };
}

// ---- another revision ----------------------------------------------------

/** Extracts revision `rev` and adds a twin of every switchyard target that runs on it, right after the target. */
function compareWith(rev: string, o: Options): Revision {
  const r = extractRevision(rev);
  o.targets = o.targets.flatMap((t) =>
    t.name.startsWith('switchyard-') ? [t, { name: `${t.name}@${r.short}`, label: `${t.label} at ${r.short}`, of: t.name, src: r.src }] : [t],
  );
  return r;
}

// ---- CPU placement -------------------------------------------------------

interface Placement {
  /** CPU list for the proxy under test, the upstream and the load generator (undefined: unpinned). */
  proxy: string | undefined;
  upstream: string | undefined;
  load: string | undefined;
  description: string;
}

function placement(pin: Options['pin']): Placement {
  const n = availableParallelism();
  const can = n >= 2 && process.platform === 'linux' && hasCommand('taskset', ['-V']);
  if (pin === 'on' && !can) throw new Error('--pin on needs Linux, taskset and at least 2 CPUs');
  if (pin === 'off' || !can)
    return { proxy: undefined, upstream: undefined, load: undefined, description: 'not pinned: the OS schedules all processes on all CPUs' };
  if (n === 2) return { proxy: '1', upstream: '0', load: '0', description: 'proxy on CPU 1; upstream and load generator share CPU 0 (taskset)' };
  return {
    proxy: '1',
    upstream: '2',
    load: n >= 4 ? '0,3' : '0',
    description: `proxy on CPU 1, upstream on CPU 2, load generator on CPU ${n >= 4 ? '0,3' : '0'} (taskset)`,
  };
}

// ---- processes -----------------------------------------------------------

const live = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

async function stopAll(): Promise<void> {
  await Promise.all([...live].map((c) => stop(c)));
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void stopAll().then(() => process.exit(130));
  });
}

function forkPinned(cpus: string | undefined, script: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  return track(spawnPinned(cpus, process.execPath, [script, ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...env } }));
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolvePort(port));
    });
  });
}

/** One GET on a fresh connection: the status and body length. */
function probe(url: string): Promise<{ status: number; bytes: number }> {
  return new Promise((resolveProbe, reject) => {
    const req = get(url, { agent: false, timeout: 2000 }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => resolveProbe({ status: res.statusCode ?? 0, bytes }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('probe timed out')));
    req.on('error', reject);
  });
}

/** Waits until the target answers 200 with the upstream's 1 KiB body. */
async function verify(url: string, bodyBytes: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 15_000;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited (${child.signalCode ?? child.exitCode}) while starting`);
    try {
      const r = await probe(url);
      if (r.status === 200 && r.bytes === bodyBytes) return;
      last = `answered ${r.status} with ${r.bytes} bytes`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`not proxying correctly: ${last}`);
}

interface UpstreamStats {
  type: 'stats';
  connections: number;
  requests: number;
}

/** Sends a command to a target process and waits for its `done` reply. */
async function command(child: ChildProcess, msg: { type: string; file?: string }): Promise<void> {
  const reply = waitMessage(child, 'done', 30_000);
  child.send(msg);
  await reply;
}

async function upstreamStats(upstream: ChildProcess): Promise<UpstreamStats> {
  const reply = waitMessage<UpstreamStats>(upstream, 'stats', 5000);
  upstream.send({ type: 'stats' });
  return reply;
}

/** Share of the machine's CPU busy over `ms` while the benchmark runs nothing. */
async function backgroundLoad(ms: number): Promise<number | undefined> {
  const a = machineBusySeconds();
  const s0 = selfAndReapedSeconds();
  await new Promise((r) => setTimeout(r, ms));
  const b = machineBusySeconds();
  const s1 = selfAndReapedSeconds();
  if (a === undefined || b === undefined || s0 === undefined || s1 === undefined) return undefined;
  return Math.max(0, b - a - (s1 - s0)) / ((ms / 1000) * availableParallelism());
}

// ---- measuring -----------------------------------------------------------

interface Sample extends LoadResult {
  /** Proxy CPU time per request in µs (user + system, all threads and processes). */
  cpuPerRequest: number | undefined;
  /** Connections the upstream accepted during the measured period. */
  upstreamConnections: number;
  upstreamRequests: number;
  /** Share of the machine's CPU used by other processes during the measured seconds. */
  background: number | undefined;
  /** The .cpuprofile written with --cpu-prof. */
  profile: string | undefined;
  /** The round it was measured in (1-based). */
  round: number;
}

async function startTarget(t: Target, upstreamUrl: string, place: Placement, o: Options): Promise<{ child: ChildProcess; port: number; cleanup: () => void }> {
  if (t.name === 'nginx') {
    const port = await freePort();
    const { child, cleanup } = startNginx(place.proxy, port, new URL(upstreamUrl), o.keepalive);
    track(child);
    return { child, port, cleanup };
  }
  const env: Record<string, string> = { BENCH_KEEPALIVE: String(o.keepalive) };
  if (t.src !== undefined) env.BENCH_SRC = t.src;
  const child = forkPinned(place.proxy, resolve(here, 'target.ts'), [t.of ?? t.name, upstreamUrl], env);
  const { port } = await waitMessage<{ type: 'ready'; port: number }>(child, 'ready', 20_000);
  return { child, port, cleanup: () => {} };
}

async function measure(
  t: Target,
  o: Options,
  gen: LoadGenerator,
  upstream: ChildProcess,
  upstreamUrl: string,
  place: Placement,
  round: number,
): Promise<Sample> {
  const { child, port, cleanup } = await startTarget(t, upstreamUrl, place, o);
  try {
    const url = `http://127.0.0.1:${port}/`;
    await verify(url, BODY_BYTES, child);
    const load = { url, connections: o.connections, threads: o.threads, cpus: place.load };
    if (o.warmup > 0) await gen.run({ ...load, duration: o.warmup });
    await upstreamStats(upstream);
    const profiling = o.cpuProf && t.name !== 'nginx';
    if (profiling) await command(child, { type: 'profile-start' });
    const before = {
      proxy: cpuSeconds(child.pid),
      upstream: cpuSeconds(upstream.pid),
      self: selfAndReapedSeconds(),
      all: machineBusySeconds(),
      at: performance.now(),
    };
    const result = await gen.run({ ...load, duration: o.duration });
    const after = {
      proxy: cpuSeconds(child.pid),
      upstream: cpuSeconds(upstream.pid),
      self: selfAndReapedSeconds(),
      all: machineBusySeconds(),
      at: performance.now(),
    };
    let profile: string | undefined;
    if (profiling) {
      profile = resolve(dirname(o.out), 'profiles', `${t.name}.cpuprofile`);
      await command(child, { type: 'profile-stop', file: profile });
    }
    const up = await upstreamStats(upstream);
    const delta = (k: keyof typeof before): number | undefined => (before[k] === undefined || after[k] === undefined ? undefined : after[k] - before[k]);
    const proxyCpu = delta('proxy');
    const cpuPerRequest = proxyCpu === undefined || result.requests === 0 ? undefined : (proxyCpu / result.requests) * 1e6;
    // Whatever else ran on the machine meanwhile: all busy CPU time minus the proxy, the upstream, the load generator and this runner.
    const parts = [delta('all'), proxyCpu, delta('upstream'), delta('self')];
    const background = parts.some((x) => x === undefined)
      ? undefined
      : Math.max(0, parts[0]! - parts[1]! - parts[2]! - parts[3]!) / (((after.at - before.at) / 1000) * availableParallelism());
    return { ...result, cpuPerRequest, background, upstreamConnections: up.connections, upstreamRequests: up.requests, profile, round };
  } finally {
    await stop(child);
    cleanup();
  }
}

interface Pair {
  /** CPU µs per request of the target and of the bare Node proxy over the same seconds. */
  cpu: number;
  baseCpu: number;
  rps: number;
  baseRps: number;
  errors: number;
}

/**
 * Runs the target and the bare Node proxy (or `against`) at the same time, on the same CPU(s),
 * each under half the connections, and compares their CPU time per request. A
 * machine whose speed drifts (a shared VM) slows both alike, so the ratio holds.
 */
async function measurePaired(
  t: Target,
  o: Options,
  gen: LoadGenerator,
  upstreamUrl: string,
  place: Placement,
  against: Target = TARGETS.find((x) => x.name === BASELINE)!,
): Promise<Pair> {
  const started: Array<{ child: ChildProcess; port: number; cleanup: () => void }> = [];
  try {
    started.push(await startTarget(against, upstreamUrl, place, o));
    started.push(await startTarget(t, upstreamUrl, place, o));
    const [base, target] = started as [(typeof started)[0], (typeof started)[0]];
    const loads = [base, target].map((p) => ({
      url: `http://127.0.0.1:${p.port}/`,
      connections: Math.max(1, Math.ceil(o.connections / 2)),
      threads: o.threads,
      cpus: place.load,
    }));
    for (const [i, p] of [base, target].entries()) await verify(loads[i]!.url, BODY_BYTES, p.child);
    if (o.warmup > 0) await Promise.all(loads.map((l) => gen.run({ ...l, duration: o.warmup })));
    const c0 = [cpuSeconds(base.child.pid), cpuSeconds(target.child.pid)];
    const [rb, rt] = (await Promise.all(loads.map((l) => gen.run({ ...l, duration: o.duration })))) as [LoadResult, LoadResult];
    const c1 = [cpuSeconds(base.child.pid), cpuSeconds(target.child.pid)];
    if (c0.some((c) => c === undefined) || c1.some((c) => c === undefined)) throw new Error('CPU time is not readable here (/proc)');
    return {
      baseCpu: ((c1[0]! - c0[0]!) / rb.requests) * 1e6,
      cpu: ((c1[1]! - c0[1]!) / rt.requests) * 1e6,
      baseRps: rb.rps,
      rps: rt.rps,
      errors: rb.errors + rt.errors,
    };
  } finally {
    for (const p of started) {
      await stop(p.child);
      p.cleanup();
    }
  }
}

// ---- report --------------------------------------------------------------

interface Row {
  target: Target;
  samples: Sample[];
  pairs: Pair[];
  /** Side by side with its peer (PEER_PAIRS), `baseCpu` being the peer's. */
  peerPairs: Pair[];
  peer?: Target;
  error?: string;
  pairError?: string;
  peerError?: string;
}

/**
 * The median over rounds of a target's figure divided by the baseline's of the
 * same round: a machine that drifts between rounds moves both.
 */
function roundRatio(r: Row, base: Row | undefined, pick: (s: Sample) => number): string {
  if (base === undefined) return '–';
  const ratios: number[] = [];
  for (const s of r.samples) {
    const b = base.samples.find((x) => x.round === s.round);
    if (b !== undefined && pick(b) > 0) ratios.push(pick(s) / pick(b));
  }
  return ratios.length === 0 ? '–' : `${median(ratios).toFixed(2)}x`;
}

function table(rows: Row[], rounds: number): string[][] {
  const base = rows.find((r) => r.target.name === BASELINE && r.samples.length > 0);
  const head = ['Target', 'Req/s', 'vs bare Node', 'p99 ms', 'p99 vs bare Node', 'p50 ms', 'Proxy CPU µs/req', 'Errors', 'New upstream conns', 'Other load'];
  if (rounds > 1) head.splice(2, 0, 'Req/s spread');
  const out = [head];
  for (const r of rows) {
    if (r.samples.length === 0) {
      const cells = [r.target.label, r.error ?? 'not run', ...Array<string>(head.length - 2).fill('')];
      out.push(cells);
      continue;
    }
    const rps = median(r.samples.map((s) => s.rps));
    const p99 = median(r.samples.map((s) => s.p99));
    const p50 = median(r.samples.map((s) => s.p50));
    const cpus = r.samples.map((s) => s.cpuPerRequest).filter((c): c is number => c !== undefined);
    const errors = r.samples.reduce((a, s) => a + s.errors, 0);
    const conns = r.samples.reduce((a, s) => a + s.upstreamConnections, 0);
    const bg = r.samples.map((s) => s.background).filter((b): b is number => b !== undefined);
    const cells = [
      r.target.label,
      int.format(rps),
      roundRatio(r, base, (x) => x.rps),
      p99.toFixed(2),
      roundRatio(r, base, (x) => x.p99),
      p50.toFixed(2),
      cpus.length === 0 ? '–' : median(cpus).toFixed(1),
      int.format(errors),
      int.format(conns),
      bg.length === 0 ? '–' : `${(Math.max(...bg) * 100).toFixed(0)}%`,
    ];
    if (rounds > 1) {
      const all = r.samples.map((s) => s.rps);
      cells.splice(2, 0, `±${(((Math.max(...all) - Math.min(...all)) / 2 / rps) * 100).toFixed(1)}%`);
    }
    if (r.error !== undefined) cells[0] += ` (${r.error})`;
    out.push(cells);
  }
  return out;
}

/** "median (min–max)" of target/base CPU ratios, with the pair of the median round. */
function pairSummary(pairs: Pair[]): { ratio: number; mid: Pair; range: string } {
  // The round with the median ratio, so that a row's figures belong together.
  const sorted = [...pairs].sort((a, b) => a.cpu / a.baseCpu - b.cpu / b.baseCpu);
  const ratio = median(pairs.map((p) => p.cpu / p.baseCpu));
  const range = pairs.length > 1 ? ` (${(sorted[0]!.cpu / sorted[0]!.baseCpu).toFixed(2)}–${(sorted.at(-1)!.cpu / sorted.at(-1)!.baseCpu).toFixed(2)})` : '';
  return { ratio, mid: sorted[(sorted.length - 1) >> 1]!, range };
}

function pairedTable(rows: Row[]): string[][] {
  // The bare undici proxy's median ratio to the bare Node proxy: each target's ratio divided by it
  // reads as "CPU vs the bare undici proxy" (a ratio of two pairs' medians, so less tight than either).
  const undici = rows.find((r) => r.target.name === 'undici-baseline' && r.pairs.length > 0);
  const undiciRatio = undici === undefined ? undefined : pairSummary(undici.pairs).ratio;
  const head = ['Target', 'CPU µs/req', 'Bare Node CPU µs/req, same seconds', 'CPU vs bare Node', 'Throughput vs bare Node (same CPU)', 'Errors'];
  if (undiciRatio !== undefined) head.splice(4, 0, 'CPU vs bare undici (derived)');
  const out = [head];
  for (const r of rows) {
    if (r.target.name === BASELINE) continue;
    if (r.pairs.length === 0) {
      out.push([r.target.label, r.pairError ?? r.error ?? 'not run', ...Array<string>(head.length - 2).fill('')]);
      continue;
    }
    const { ratio, mid, range } = pairSummary(r.pairs);
    const cells = [
      r.target.label,
      mid.cpu.toFixed(1),
      mid.baseCpu.toFixed(1),
      `${ratio.toFixed(2)}x${range}`,
      `${(1 / ratio).toFixed(2)}x`,
      int.format(r.pairs.reduce((a, p) => a + p.errors, 0)),
    ];
    if (undiciRatio !== undefined) cells.splice(4, 0, `${(ratio / undiciRatio).toFixed(2)}x`);
    out.push(cells);
  }
  return out;
}

/** Targets run side by side with their closest peer (PEER_PAIRS); undefined when none was. */
function peerTable(rows: Row[]): string[][] | undefined {
  const out = [['Target', 'Peer', 'CPU µs/req', 'Peer CPU µs/req, same seconds', 'CPU vs peer', 'Throughput vs peer (same CPU)', 'Errors']];
  for (const r of rows) {
    if (r.peer === undefined) continue;
    if (r.peerPairs.length === 0) {
      out.push([r.target.label, r.peer.label, r.peerError ?? r.error ?? 'not run', '', '', '', '']);
      continue;
    }
    const { ratio, mid, range } = pairSummary(r.peerPairs);
    out.push([
      r.target.label,
      r.peer.label,
      mid.cpu.toFixed(1),
      mid.baseCpu.toFixed(1),
      `${ratio.toFixed(2)}x${range}`,
      `${(1 / ratio).toFixed(2)}x`,
      int.format(r.peerPairs.reduce((a, p) => a + p.errors, 0)),
    ]);
  }
  return out.length > 1 ? out : undefined;
}

// ---- main ----------------------------------------------------------------

const BODY_BYTES = 1024;
/** Share of the machine used by other processes above which a sample is measured again. */
const BUSY = 0.1;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  for (const [flag, file] of [
    ['--select', 'select.ts'],
    ['--sync', 'sync.ts'],
    ['--memory', 'memory.ts'],
  ] as const) {
    if (!argv.includes(flag)) continue;
    const child = spawn(process.execPath, [resolve(here, file), ...argv.filter((a) => a !== flag)], { stdio: 'inherit' });
    child.once('exit', (code) => process.exit(code ?? 1));
    return;
  }
  const o = options(argv);
  const compared = o.compare === undefined ? undefined : compareWith(o.compare, o);
  const gen = loadGenerator(o.tool);
  if (gen === undefined) throw new Error(o.tool === 'wrk' ? 'wrk is not installed' : 'neither wrk nor autocannon can run');
  const place = placement(o.pin);
  const nginx = nginxVersion();

  const software: Array<[string, string]> = [
    ['Load generator', gen.tool === 'wrk' ? `wrk ${gen.version} (${o.threads} thread${o.threads === 1 ? '' : 's'})` : `autocannon ${gen.version}`],
    [
      'Peers',
      ['undici', 'express', 'fastify', 'koa', 'http-proxy-3', 'http-proxy-middleware', '@fastify/http-proxy'].map((p) => `${p} ${versionOf(p)}`).join(', ') +
        `, nginx ${nginx ?? 'not installed'}`,
    ],
    ...(compared === undefined ? [] : [['Compared with', `switchyard at ${compared.short} (git), its targets marked @${compared.short}`] as [string, string]]),
    ['CPU placement', place.description],
    [
      'Load',
      `${o.connections} keep-alive connections, GET / answered with ${BODY_BYTES} bytes, ${o.warmup} s warm-up then ${o.duration} s measured per target, ` +
        `${o.keepalive} idle upstream connections kept` +
        (o.rounds > 1 ? `, ${o.rounds} rounds (medians)` : '') +
        (o.paired ? ', plus each target side by side with the bare Node proxy' : ''),
    ],
  ];
  const desc = machine(software);
  console.log('switchyard proxy benchmark');
  for (const [k, v] of desc) console.log(`  ${`${k}:`.padEnd(16)} ${v}`);
  const idle = await backgroundLoad(1000);
  if (idle !== undefined && idle > 0.1)
    console.log(`  warning: other processes are using ${(idle * 100).toFixed(0)}% of the machine's CPU; figures will be noisy`);
  const perTarget = o.warmup + o.duration + 2;
  const peerOf = (target: Target): Target | undefined => {
    const name = PEER_PAIRS.find(([t, p]) => t === (target.of ?? target.name) && o.targets.some((x) => x.name === p))?.[1];
    return TARGETS.find((x) => x.name === name);
  };
  const peerRuns = o.targets.filter((t) => peerOf(t) !== undefined).length;
  const runs = o.targets.length + (o.paired ? o.targets.filter((t) => t.name !== BASELINE).length + peerRuns : 0);
  console.log(`  about ${Math.ceil((runs * o.rounds * perTarget) / 60)} min\n`);

  const upstream = forkPinned(place.upstream, resolve(here, 'upstream.ts'), []);
  const upstreamUrl = `http://127.0.0.1:${(await waitMessage<{ type: 'ready'; port: number }>(upstream, 'ready', 10_000)).port}`;

  const rows: Row[] = o.targets.map((target) => {
    const peer = peerOf(target);
    return peer === undefined ? { target, samples: [], pairs: [], peerPairs: [] } : { target, samples: [], pairs: [], peerPairs: [], peer };
  });
  try {
    for (let round = 1; round <= o.rounds; round++) {
      for (const row of rows) {
        const t = row.target;
        if (t.name === 'nginx' && nginx === undefined) {
          row.error = 'skipped: nginx is not installed';
          continue;
        }
        process.stdout.write(`${o.rounds > 1 ? `[${round}/${o.rounds}] ` : ''}${t.name.padEnd(20)} `);
        try {
          let s = await measure(t, o, gen, upstream, upstreamUrl, place, round);
          for (let retry = 0; retry < o.busyRetries && (s.background ?? 0) > BUSY; retry++) {
            process.stdout.write(`(other load ${((s.background ?? 0) * 100).toFixed(0)}%, again) `);
            const again = await measure(t, o, gen, upstream, upstreamUrl, place, round);
            if ((again.background ?? 0) < (s.background ?? 0)) s = again;
          }
          row.samples.push(s);
          console.log(
            `${int.format(s.rps).padStart(8)} req/s  p99 ${s.p99.toFixed(2)} ms  cpu ${s.cpuPerRequest?.toFixed(1) ?? '–'} µs/req  errors ${s.errors}  upstream ${s.upstreamRequests} req / ${s.upstreamConnections} new conns  other load ${s.background === undefined ? '–' : `${(s.background * 100).toFixed(0)}%`}`,
          );
          if (s.profile !== undefined) console.log(`${' '.repeat(21)}profile: ${relative(process.cwd(), s.profile)}`);
        } catch (err) {
          row.error = `failed: ${(err as Error).message.split('\n')[0]}`;
          console.log(row.error);
        }
      }
      if (!o.paired) continue;
      for (const row of rows) {
        const t = row.target;
        if (t.name === BASELINE || (t.name === 'nginx' && nginx === undefined)) continue;
        process.stdout.write(`${o.rounds > 1 ? `[${round}/${o.rounds}] ` : ''}${`${t.name} + bare`.padEnd(20)} `);
        try {
          const p = await measurePaired(t, o, gen, upstreamUrl, place);
          row.pairs.push(p);
          console.log(
            `cpu ${p.cpu.toFixed(1)} µs/req vs bare ${p.baseCpu.toFixed(1)} µs/req (${(p.cpu / p.baseCpu).toFixed(2)}x)  req/s ${int.format(p.rps)} vs ${int.format(p.baseRps)}  errors ${p.errors}`,
          );
        } catch (err) {
          row.pairError = `failed: ${(err as Error).message.split('\n')[0]}`;
          console.log(row.pairError);
        }
        if (row.peer === undefined) continue;
        process.stdout.write(`${o.rounds > 1 ? `[${round}/${o.rounds}] ` : ''}${`${t.name} + ${row.peer.name}`.padEnd(20)} `);
        try {
          const p = await measurePaired(t, o, gen, upstreamUrl, place, row.peer);
          row.peerPairs.push(p);
          console.log(
            `cpu ${p.cpu.toFixed(1)} µs/req vs ${row.peer.name} ${p.baseCpu.toFixed(1)} µs/req (${(p.cpu / p.baseCpu).toFixed(2)}x)  req/s ${int.format(p.rps)} vs ${int.format(p.baseRps)}  errors ${p.errors}`,
          );
        } catch (err) {
          row.peerError = `failed: ${(err as Error).message.split('\n')[0]}`;
          console.log(row.peerError);
        }
      }
    }
  } finally {
    await stop(upstream);
  }

  const cells = table(rows, o.rounds);
  const md = markdown(cells);
  console.log(`\n${md}\n`);
  const pairedMd = o.paired ? markdown(pairedTable(rows)) : undefined;
  if (pairedMd !== undefined) console.log(`Side by side with the bare Node proxy, on the same CPU at the same time:\n\n${pairedMd}\n`);
  const peers = o.paired ? peerTable(rows) : undefined;
  const peerMd = peers === undefined ? undefined : markdown(peers, 2);
  if (peerMd !== undefined) console.log(`Side by side with its closest peer, on the same CPU at the same time:\n\n${peerMd}\n`);
  const report = [
    '# switchyard proxy benchmark',
    '',
    `Run ${new Date().toISOString()} with \`${['node bench/run.ts', ...argv].join(' ')}\`.`,
    '',
    markdown([['Machine', ''], ...desc.map(([k, v]) => [k, v])], 2),
    '',
    md,
    '',
    "Ratios are to the bare Node proxy measured in the same round (the median of the rounds' ratios): above 1x is more requests per second, or a higher p99 latency.",
    '"Proxy CPU µs/req" is the CPU time (user + system, all threads) the proxy process used per request.',
    '"New upstream conns" counts connections the upstream accepted during the measured seconds (0: all reused).',
    '"Other load" is the largest share of the machine\'s CPU that processes outside the benchmark used while a target was measured; above a few percent, the figures are disturbed: run again on a quiet machine.',
    '',
    ...(pairedMd === undefined
      ? []
      : [
          '## Side by side with the bare Node proxy',
          '',
          'Each target ran at the same time as the bare Node proxy, both on the proxy CPU, each under half the connections; the ratio of their CPU time per request does not depend on how fast the machine was at that moment. With several rounds, the CPU figures are those of the round with the median ratio, and the ratio shows its range. "Throughput vs bare Node" is the inverse ratio: the share of the baseline\'s requests per second the target would serve on the same CPU.',
          '',
          pairedMd,
          '',
          ...(undefined === rows.find((r) => r.target.name === 'undici-baseline' && r.pairs.length > 0)
            ? []
            : [
                '"CPU vs bare undici (derived)" divides a target\'s ratio by the bare undici proxy\'s ratio to the bare Node proxy: two pairs measured at different moments, so it is less tight than the measured ratios.',
                '',
              ]),
        ]),
    ...(peerMd === undefined
      ? []
      : [
          '## Side by side with its closest peer',
          '',
          'The same method, with the peer in place of the bare Node proxy: both at the same time on the proxy CPU, each under half the connections.',
          '',
          peerMd,
          '',
        ]),
  ].join('\n');
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(o.out, report);
  console.log(`report written to ${relative(process.cwd(), o.out) || o.out}`);
}

main().catch(async (err: unknown) => {
  console.error((err as Error).message ?? err);
  await stopAll();
  process.exit(1);
});
