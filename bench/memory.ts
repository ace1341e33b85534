// Memory with body size, and throughput with thousands of client connections, of a
// gateway against the bare Node proxy (and the bare undici proxy), on loopback.
// See bench/README.md ("What memory.ts measures").
//
// Transfers: each case runs in a fresh gateway process (bench/target.ts, pinned on the
// proxy CPU); a client process downloads 1 GiB from, or uploads 200 MiB to, an upstream
// in its own process through the gateway; the gateway's peak RSS is the kernel's
// high-water mark (VmHWM in /proc/<pid>/status) at the end, next to its RSS before.
// The "slow" cases make the receiving side pause (the client while downloading, the
// upstream while receiving an upload), so a gateway that ignores backpressure buffers.
//
// Connections: two processes of the same gateway run side by side on the proxy CPU,
// one under 50 keep-alive connections, the other under 5,000 (wrk), and the figure is
// the ratio of their CPU time per request over the same seconds, per round.
//
//   node bench/memory.ts [--rounds 2] [--targets node-baseline,switchyard-node,undici-baseline]
//                        [--download 1GiB] [--upload 200MiB] [--no-slow]
//                        [--connections 5000] [--base-connections 50] [--conn-rounds 3]
//                        [--duration 8] [--warmup 5] [--only memory|connections]
//                        [--pin auto|on|off] [--out bench/results/memory.md]
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, get, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type LoadResult, parseWrk } from './lib/load.ts';
import { machine, versionOf } from './lib/machine.ts';
import { int, markdown, median } from './lib/report.ts';
import { type Compiled, compileSources } from './lib/revision.ts';
import { cpuSeconds, hasCommand, machineBusySeconds, pairedPlacement, run, runMain, spawnPinned, stop, waitMessage } from './lib/proc.ts';

const here = dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);
const MiB = 2 ** 20;
const CHUNK = 64 * 1024;
const SMALL = 1024;

const TARGETS: Record<string, string> = {
  'node-baseline': 'bare Node proxy (http.request pipe)',
  'switchyard-node': 'switchyard, node:http `chain(balance(pool))`',
  'undici-baseline': 'bare undici proxy (undici Pool dispatch)',
  'node-baseline-loaded': 'bare Node proxy, switchyard imported and unused (control)',
};
/** Run only when named in --targets: the bare proxy with switchyard's code loaded, to tell what the code costs from what the proxying does. */
const CONTROL = 'node-baseline-loaded';
const BASELINE = 'node-baseline';

// ---- the upstream (child process) ------------------------------------------------------------

/**
 * GET /download/<bytes>: that many bytes (content-length), written as fast as the connection
 * takes them. POST /upload[?stall=<bytes>,<ms>]: reads the body (pausing <ms> after every
 * <bytes> when asked) and answers with the count. Anything else: 200 with 1 KiB.
 */
function upstreamMain(): void {
  const chunk = Buffer.alloc(CHUNK, 'y');
  const small = Buffer.alloc(SMALL, 'x');
  let connections = 0;
  // Requests by path (/few, /many: the two gateways of the connections test).
  let paths: Record<string, number> = {};
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    paths[url] = (paths[url] ?? 0) + 1;
    if (req.method === 'GET' && url.startsWith('/download/')) {
      const total = Number(url.slice('/download/'.length));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
      writeBytes(res, total, chunk);
      return;
    }
    if (req.method === 'POST' && url.startsWith('/upload')) {
      const stall = /[?&]stall=(\d+),(\d+)/.exec(url);
      const bytes = countPausing(req, stall === null ? 0 : Number(stall[1]), stall === null ? 0 : Number(stall[2]));
      req.on('end', () => {
        const body = JSON.stringify({ bytes: bytes() });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': SMALL });
      res.end(small);
    });
  });
  server.on('connection', () => connections++);
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 121_000;
  server.listen({ port: 0, host: '127.0.0.1', backlog: Number(process.env.BENCH_BACKLOG ?? 511) }, () => {
    process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port });
  });
  process.on('message', (msg: { type?: string }) => {
    if (msg?.type !== 'stats') return;
    const byPath: Record<string, number> = {};
    for (const [p, n] of Object.entries(paths)) byPath[p.slice(1)] = n;
    process.send?.({ type: 'stats', connections, paths: byPath });
    connections = 0;
    paths = {};
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

// ---- the transfer client (child process) -----------------------------------------------------

interface Transfer {
  status: number;
  /** Bytes received (download) or acknowledged by the upstream (upload). */
  bytes: number;
  ms: number;
}

/** `--client download|upload <url> <bytes> <stallEvery> <stallMs>`: one transfer, its result as JSON on stdout. */
function clientMain(kind: string, url: string, total: number, every: number, ms: number): void {
  const t0 = performance.now();
  const done = (t: Omit<Transfer, 'ms'>): void => {
    process.stdout.write(JSON.stringify({ ...t, ms: performance.now() - t0 }));
    process.exit(0);
  };
  const fail = (err: Error): never => {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  };
  if (kind === 'download') {
    get(url, { agent: false }, (res) => {
      const bytes = countPausing(res, every, ms);
      res.on('end', () => done({ status: res.statusCode ?? 0, bytes: bytes() }));
      res.on('error', fail);
    }).on('error', fail);
    return;
  }
  const chunk = Buffer.alloc(CHUNK, 'z');
  const req = request(url, { method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': total } }, (res) => {
    let body = '';
    res.setEncoding('utf8').on('data', (d: string) => (body += d));
    res.on('end', () => {
      let bytes = -1;
      try {
        bytes = (JSON.parse(body) as { bytes: number }).bytes;
      } catch {}
      done({ status: res.statusCode ?? 0, bytes });
    });
  });
  req.on('error', fail);
  writeBytes(req, total, chunk);
}

/** Reads `from` to its end, pausing it for `ms` after every `every` bytes (0: never); returns the byte count so far. */
function countPausing(from: Readable, every: number, ms: number): () => number {
  let bytes = 0;
  let next = every > 0 ? every : Infinity;
  from.on('data', (c: Buffer) => {
    bytes += c.length;
    if (bytes < next) return;
    next += every;
    from.pause();
    setTimeout(() => from.resume(), ms);
  });
  return () => bytes;
}

/** Writes `total` bytes of `chunk` repeated to `out`, waiting for 'drain' whenever it asks, then ends it. */
function writeBytes(out: Writable, total: number, chunk: Buffer): void {
  let left = total;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(chunk.length, left);
      left -= n;
      if (!out.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void out.once('drain', pump);
    }
    out.end();
  };
  pump();
}

// ---- helpers ---------------------------------------------------------------------------------

const live = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** `sh -c 'ulimit -n N && exec "$@"'` around a command when this process's soft limit is below `need` descriptors. */
function withFiles(fds: Fds, cmd: string, args: string[]): [string, string[]] {
  if (fds.raiseTo === undefined) return [cmd, args];
  return ['sh', ['-c', `ulimit -n ${fds.raiseTo} && exec "$@"`, 'sh', cmd, ...args]];
}

interface Fds {
  soft: number;
  hard: number;
  /** The soft limit children are started with, when this process's is too low. */
  raiseTo: number | undefined;
  /** Why the connections test cannot run, if it cannot. */
  problem: string | undefined;
}

/** Open-file limits (`ulimit -n`), and whether `need` descriptors per process can be had. */
function fileLimits(need: number): Fds {
  const read = (flag: string): number => {
    const r = spawnSync('sh', ['-c', `ulimit ${flag}`], { encoding: 'utf8', timeout: 5000 });
    const v = r.stdout.trim();
    return v === 'unlimited' ? Infinity : Number(v);
  };
  const soft = read('-Sn');
  const hard = read('-Hn');
  if (!Number.isFinite(soft) || soft >= need) return { soft, hard, raiseTo: undefined, problem: undefined };
  if (hard >= need) return { soft, hard, raiseTo: need, problem: undefined };
  return { soft, hard, raiseTo: undefined, problem: `ulimit -n is ${soft} (hard ${hard}); ${need} descriptors per process are needed` };
}

function spawnNode(cpus: string | undefined, fds: Fds, args: string[], env: Record<string, string>): ChildProcess {
  const [cmd, argv] = withFiles(fds, process.execPath, args);
  return track(spawnPinned(cpus, cmd, argv, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...env } }));
}

/** VmRSS and VmHWM (peak) of a process in bytes, from /proc. */
function memory(pid: number | undefined): { rss: number; peak: number } | undefined {
  if (pid === undefined) return undefined;
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1]) * 1024;
    return { rss: kb('VmRSS'), peak: kb('VmHWM') };
  } catch {
    return undefined;
  }
}

const mib = (b: number): string => (b / MiB).toFixed(1);

/** "median (min–max)" of ratios. */
function ratioCell(xs: number[]): string {
  if (xs.length === 0) return '–';
  const m = `${median(xs).toFixed(2)}x`;
  return xs.length === 1 ? m : `${m} (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})`;
}

/** Sizes such as `1GiB`, `200MiB`, `512KiB`, `1e9`. */
function bytesOption(name: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*(KiB|MiB|GiB|KB|MB|GB|)$/i.exec(v.trim());
  const unit: Record<string, number> = { '': 1, kib: 1024, mib: MiB, gib: 2 ** 30, kb: 1e3, mb: 1e6, gb: 1e9 };
  const n = m === null ? NaN : Math.round(Number(m[1]) * unit[m[2]!.toLowerCase()]!);
  if (!Number.isFinite(n) || n < 1) throw new Error(`--${name} must be a size such as 1GiB or 200MiB, got "${v}"`);
  return n;
}

// ---- options ---------------------------------------------------------------------------------

interface Options {
  rounds: number;
  targets: string[];
  download: number;
  upload: number;
  slow: boolean;
  connections: number;
  baseConnections: number;
  connRounds: number;
  duration: number;
  warmup: number;
  only: 'memory' | 'connections' | undefined;
  pin: string;
  out: string;
  /** Also run switchyard-node on this tree's sources compiled to JavaScript (`switchyard-node@js`). */
  compiled: boolean;
}

/** The twin of switchyard-node that runs the compiled sources (--compiled). */
const COMPILED = 'switchyard-node@js';
const COMPILED_LABEL = 'switchyard, node:http, compiled to JavaScript (as installed)';

const USAGE = `usage: node bench/memory.ts [options]          (npm run bench -- --memory [options])
  --rounds <n>            transfer rounds (fresh gateway per case and round)    default 2
  --targets <a,b>         ${Object.keys(TARGETS).join(', ')} (default all but ${CONTROL}; ${BASELINE} is always run)
  --download <size>       download through the gateway                          default 1GiB
  --upload <size>         upload through the gateway                            default 200MiB
  --no-slow               skip the cases where the receiving side pauses (backpressure)
  --connections <n>       client connections of the connections test            default 5000
  --base-connections <n>  the reference it is compared with                     default 50
  --conn-rounds <n>       rounds of the connections test                        default 3
  --duration <s>          measured seconds per connections run                  default 8
  --warmup <s>            warm-up seconds before each connections run           default 5
  --only <part>           memory | connections
  --compiled              also run switchyard-node on this tree's sources compiled with tsc (as an
                          installed package runs them: Node strips no types), row switchyard-node@js
  --pin <p>               auto|on|off: the gateway on a CPU of its own (taskset) default auto
  --out <file>            markdown report                                       default bench/results/memory.md`;

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: 'string', default: '2' },
      targets: { type: 'string' },
      download: { type: 'string', default: '1GiB' },
      upload: { type: 'string', default: '200MiB' },
      'no-slow': { type: 'boolean' },
      connections: { type: 'string', default: '5000' },
      'base-connections': { type: 'string', default: '50' },
      'conn-rounds': { type: 'string', default: '3' },
      duration: { type: 'string', default: '8' },
      warmup: { type: 'string', default: '5' },
      only: { type: 'string' },
      compiled: { type: 'boolean' },
      pin: { type: 'string', default: process.env.BENCH_PIN ?? 'auto' },
      out: { type: 'string', default: resolve(here, 'results', 'memory.md') },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }
  const integer = (name: string, v: string, min: number, max: number): number => {
    const n = Number(v.replace(/s$/, ''));
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}, got "${v}"`);
    return n;
  };
  const names = (values.targets ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const n of names) if (TARGETS[n] === undefined) throw new Error(`unknown target "${n}"; targets: ${Object.keys(TARGETS).join(', ')}`);
  const only = values.only;
  if (only !== undefined && only !== 'memory' && only !== 'connections') throw new Error(`--only must be memory or connections, got "${only}"`);
  if (!['auto', 'on', 'off'].includes(values.pin)) throw new Error(`--pin must be auto, on or off, got "${values.pin}"`);
  return {
    rounds: integer('rounds', values.rounds, 1, 20),
    targets: Object.keys(TARGETS).filter((t) => t === BASELINE || (names.length === 0 && t !== CONTROL) || names.includes(t)),
    download: bytesOption('download', values.download),
    upload: bytesOption('upload', values.upload),
    slow: values['no-slow'] !== true,
    connections: integer('connections', values.connections, 1, 100_000),
    baseConnections: integer('base-connections', values['base-connections'], 1, 100_000),
    connRounds: integer('conn-rounds', values['conn-rounds'], 1, 20),
    duration: integer('duration', values.duration, 1, 120),
    warmup: integer('warmup', values.warmup, 0, 60),
    only,
    pin: values.pin,
    out: resolve(values.out),
    compiled: values.compiled === true,
  };
}

// ---- gateways --------------------------------------------------------------------------------

interface Gateway {
  child: ChildProcess;
  url: string;
}

async function startGateway(name: string, upstream: string, cpus: string | undefined, fds: Fds, env: Record<string, string> = {}): Promise<Gateway> {
  const child = spawnNode(cpus, fds, [resolve(here, 'target.ts'), name, upstream], env);
  const { port } = await waitMessage<{ type: 'ready'; port: number }>(child, 'ready', 20_000);
  const url = `http://127.0.0.1:${port}`;
  // It proxies: GET / comes back as 200 with the upstream's 1 KiB.
  const r = await new Promise<{ status: number; bytes: number }>((ok, ko) => {
    get(`${url}/`, { agent: false, timeout: 5000 }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => ok({ status: res.statusCode ?? 0, bytes }));
    })
      .on('timeout', function (this: { destroy(e: Error): void }) {
        this.destroy(new Error('timed out'));
      })
      .on('error', ko);
  });
  if (r.status !== 200 || r.bytes !== SMALL) throw new Error(`${name} answered ${r.status} with ${r.bytes} bytes`);
  return { child, url };
}

// ---- transfers -------------------------------------------------------------------------------

interface Case {
  name: string;
  kind: 'download' | 'upload';
  bytes: number;
  /** Pause `ms` after every `every` bytes on the receiving side (0: never). */
  every: number;
  ms: number;
}

interface TransferSample {
  round: number;
  idle: number;
  peak: number;
  ms: number;
}

const TRANSFER_LIMIT_MS = 300_000;

async function transfer(
  c: Case,
  target: string,
  upstream: string,
  place: ReturnType<typeof pairedPlacement>,
  fds: Fds,
  round: number,
  compiled: Compiled | undefined,
): Promise<TransferSample> {
  const g =
    target === COMPILED && compiled !== undefined
      ? await startGateway('switchyard-node', upstream, place.proxy, fds, { BENCH_SRC: compiled.src, BENCH_SRC_JS: '1' })
      : await startGateway(target, upstream, place.proxy, fds);
  try {
    await sleep(300);
    const idle = memory(g.child.pid);
    if (idle === undefined) throw new Error('/proc is not readable here');
    const url = c.kind === 'download' ? `${g.url}/download/${c.bytes}` : `${g.url}/upload${c.every > 0 ? `?stall=${c.every},${c.ms}` : ''}`;
    const clientStall = c.kind === 'download' ? c.every : 0;
    const r = await run(place.other, process.execPath, [self, '--client', c.kind, url, String(c.bytes), String(clientStall), String(c.ms)], TRANSFER_LIMIT_MS);
    if (r.code !== 0) throw new Error(`client failed: ${r.stderr.trim() || r.code}`);
    const t = JSON.parse(r.stdout) as Transfer;
    if (t.status !== 200 || t.bytes !== c.bytes) throw new Error(`transfer answered ${t.status} with ${t.bytes} of ${c.bytes} bytes`);
    const end = memory(g.child.pid);
    if (end === undefined) throw new Error('the gateway went away');
    return { round, idle: idle.rss, peak: end.peak, ms: t.ms };
  } finally {
    await stop(g.child);
  }
}

// ---- connections -----------------------------------------------------------------------------

interface ConnSide {
  connections: number;
  /** Requests per second the upstream received from this gateway over the measured seconds. */
  rps: number;
  /** CPU µs per request over the measured seconds. */
  cpu: number;
  /** wrk's report over its whole run (warm-up included); several wrk processes merged. */
  load: LoadResult;
  /** VmHWM at the end. */
  peak: number;
}

interface ConnSample {
  round: number;
  few: ConnSide;
  many: ConnSide;
  /** Connections the upstream accepted during the measured seconds, both gateways. */
  newUpstream: number;
  /** Share of the machine's CPU used by other processes than the benchmark's over the measured seconds. */
  other: number | undefined;
}

/** Connections per wrk process in the connections test, and the delay between their starts. */
const RAMP_STEP = 500;
const RAMP_MS = 250;

/** Several wrk runs as one: requests and errors added, the slowest p50 and p99. */
function merge(rs: LoadResult[]): LoadResult {
  return {
    rps: rs.reduce((a, r) => a + r.rps, 0),
    requests: rs.reduce((a, r) => a + r.requests, 0),
    errors: rs.reduce((a, r) => a + r.errors, 0),
    p50: Math.max(...rs.map((r) => r.p50)),
    p99: Math.max(...rs.map((r) => r.p99)),
  };
}

async function wrk(cpus: string | undefined, fds: Fds, url: string, connections: number, duration: number): Promise<LoadResult> {
  const [cmd, args] = withFiles(fds, 'wrk', ['-t', '1', '-c', String(connections), '-d', `${duration}s`, '--timeout', '10s', '--latency', url]);
  const r = await run(cpus, cmd, args, (duration + 60) * 1000);
  if (r.code !== 0) throw new Error(`wrk exited with ${r.code}: ${r.stderr || r.stdout}`);
  return parseWrk(r.stdout);
}

/**
 * `n` connections on `url` for `seconds`: above RAMP_STEP connections, several wrk processes of
 * RAMP_STEP connections each, started RAMP_MS apart (thousands of connections opened in the same
 * millisecond overflow the accept queues, and the dropped ones come back after 1 s, 3 s, 7 s...).
 */
function ramp(place: ReturnType<typeof pairedPlacement>, fds: Fds, url: string, n: number, seconds: number): Promise<LoadResult> {
  const steps = Math.ceil(n / RAMP_STEP);
  return Promise.all(
    Array.from({ length: steps }, async (_, i) => {
      await sleep(i * RAMP_MS);
      return wrk(place.other, fds, url, Math.floor(n / steps) + (i < n % steps ? 1 : 0), seconds);
    }),
  ).then(merge);
}

async function counts(upstream: ChildProcess): Promise<{ connections: number; paths: Record<string, number> }> {
  const reply = waitMessage<{ type: 'stats'; connections: number; paths: Record<string, number> }>(upstream, 'stats', 5000);
  upstream.send({ type: 'stats' });
  return reply;
}

/**
 * Two processes of the same gateway side by side on the proxy CPU, one under `few` connections,
 * the other under `many`, over the same seconds: a machine whose speed drifts slows both alike, so
 * the ratio of their CPU time per request holds (as run.ts --paired). The upstream counts each
 * one's requests by path (/few, /many).
 */
async function connectionsRound(
  target: string,
  o: Options,
  upstream: ChildProcess,
  upstreamUrl: string,
  place: ReturnType<typeof pairedPlacement>,
  fds: Fds,
  round: number,
): Promise<ConnSample> {
  const few = o.baseConnections;
  const many = o.connections;
  // As run.ts: a gateway keeps as many idle upstream connections as there are client connections.
  const env = { BENCH_KEEPALIVE: String(many), BENCH_BACKLOG: String(many) };
  const gs: Gateway[] = [];
  try {
    gs.push(await startGateway(target, upstreamUrl, place.proxy, fds, env));
    gs.push(await startGateway(target, upstreamUrl, place.proxy, fds, env));
    const [gf, gm] = gs as [Gateway, Gateway];
    // The connections open during the warm-up and stay open through the measured seconds; each
    // wrk runs one second longer than the window needs (wrk counts whole seconds).
    const seconds = o.warmup + o.duration + 1;
    const running = Promise.all([ramp(place, fds, `${gf.url}/few`, few, seconds), ramp(place, fds, `${gm.url}/many`, many, seconds)]);
    await sleep(o.warmup * 1000);
    await counts(upstream);
    // This runner's process tree (itself, the gateways, the upstream, the wrk processes) against the whole machine.
    const before = [cpuSeconds(gf.child.pid), cpuSeconds(gm.child.pid), cpuSeconds(process.pid), machineBusySeconds()];
    const t0 = performance.now();
    await sleep(o.duration * 1000);
    const after = [cpuSeconds(gf.child.pid), cpuSeconds(gm.child.pid), cpuSeconds(process.pid), machineBusySeconds()];
    const secs = (performance.now() - t0) / 1000;
    const up = await counts(upstream);
    const [lf, lm] = await running;
    const d = before.map((b, i) => (b === undefined || after[i] === undefined ? undefined : after[i] - b));
    if (d[0] === undefined || d[1] === undefined) throw new Error('CPU time is not readable here (/proc)');
    const rf = up.paths.few ?? 0;
    const rm = up.paths.many ?? 0;
    if (rf === 0 || rm === 0) throw new Error(`a gateway served no requests (${rf} at ${few}, ${rm} at ${many} connections)`);
    const side = (n: number, requests: number, cpu: number, load: LoadResult, g: Gateway): ConnSide => ({
      connections: n,
      rps: requests / secs,
      cpu: (cpu / requests) * 1e6,
      load,
      peak: memory(g.child.pid)?.peak ?? 0,
    });
    const sample: ConnSample = {
      round,
      few: side(few, rf, d[0], lf, gf),
      many: side(many, rm, d[1], lm, gm),
      newUpstream: up.connections,
      other: d[2] === undefined || d[3] === undefined ? undefined : Math.max(0, d[3] - d[2]) / (secs * availableParallelism()),
    };
    const line = (c: ConnSide): string =>
      `${String(c.connections).padStart(5)} conns ${int.format(c.rps).padStart(6)} req/s ${c.cpu.toFixed(1).padStart(6)} µs/req p99 ${c.load.p99.toFixed(0)} ms err ${c.load.errors}`;
    console.log(
      `  [${round}] ${target.padEnd(16)} ${line(sample.few)} | ${line(sample.many)} | CPU ${(sample.many.cpu / sample.few.cpu).toFixed(2)}x  ` +
        `new upstream conns ${up.connections}  other load ${sample.other === undefined ? '–' : `${(sample.other * 100).toFixed(0)}%`}`,
    );
    return sample;
  } finally {
    for (const g of gs) await stop(g.child);
  }
}

// ---- main ------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = options(process.argv.slice(2));
  const place = pairedPlacement(o.pin, 'the gateway');
  // A gateway holds a client and an upstream connection per client connection, plus its own files.
  const need = o.only === 'memory' ? 1024 : 2 * o.connections + 1024;
  const fds = fileLimits(need);
  const hasWrk = hasCommand('wrk', ['-v']);
  const notes: string[] = [];
  const desc = machine([
    ['Peers', ['undici'].map((p) => `${p} ${versionOf(p)}`).join(', ')],
    ['CPU placement', place.description],
    [
      'Open files',
      `ulimit -n ${fds.soft} (hard ${fds.hard})${fds.raiseTo === undefined ? '' : `; children raised to ${fds.raiseTo} through sh -c 'ulimit -n'`}${fds.problem === undefined ? '' : `; ${fds.problem}`}`,
    ],
    ['Somaxconn', readFileSafe('/proc/sys/net/core/somaxconn') ?? '–'],
  ]);
  console.log('switchyard memory and connections benchmark');
  for (const [k, v] of desc) console.log(`  ${`${k}:`.padEnd(16)} ${v}`);
  const upstream = spawnNode(place.other, fds, [self, '--upstream'], { BENCH_BACKLOG: String(Math.max(511, o.connections)) });
  const upstreamUrl = `http://127.0.0.1:${(await waitMessage<{ type: 'ready'; port: number }>(upstream, 'ready', 10_000)).port}`;
  const sections: string[] = [];
  try {
    if (o.only !== 'connections') sections.push(await memoryPart(o, upstreamUrl, place, fds));
    if (o.only !== 'memory') {
      if (!hasWrk)
        notes.push('Connections test skipped: it needs wrk (apt-get install -y wrk); autocannon in one Node process cannot drive thousands of connections.');
      else if (fds.problem !== undefined) notes.push(`Connections test skipped: ${fds.problem}.`);
      else sections.push(await connectionsPart(o, upstream, upstreamUrl, place, fds));
    }
  } finally {
    await stop(upstream);
  }
  for (const n of notes) console.log(n);
  const report = [
    '# switchyard memory and connections benchmark',
    '',
    `Run ${new Date().toISOString()} with \`${['node bench/memory.ts', ...process.argv.slice(2)].join(' ')}\`.`,
    '',
    markdown([['Machine', ''], ...desc.map(([k, v]) => [k, v])], 2),
    '',
    ...sections,
    ...notes.map((n) => `- ${n}`),
    '',
  ].join('\n');
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(o.out, report);
  console.log(`report written to ${relative(process.cwd(), o.out) || o.out}`);
}

function readFileSafe(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

async function memoryPart(o: Options, upstreamUrl: string, place: ReturnType<typeof pairedPlacement>, fds: Fds): Promise<string> {
  const size = (b: number): string => (b >= 2 ** 30 && b % 2 ** 30 === 0 ? `${b / 2 ** 30} GiB` : b % MiB === 0 ? `${b / MiB} MiB` : `${b} bytes`);
  const cases: Case[] = [
    { name: `download ${size(o.download)}`, kind: 'download', bytes: o.download, every: 0, ms: 0 },
    { name: `upload ${size(o.upload)}`, kind: 'upload', bytes: o.upload, every: 0, ms: 0 },
  ];
  if (o.slow) {
    // The receiver stops for 100 ms after every 1/16 of the body: 16 pauses, during which the sender keeps going.
    cases.push({ name: `download ${size(o.download)}, client pauses`, kind: 'download', bytes: o.download, every: Math.ceil(o.download / 16), ms: 100 });
    cases.push({ name: `upload ${size(o.upload)}, upstream pauses`, kind: 'upload', bytes: o.upload, every: Math.ceil(o.upload / 16), ms: 100 });
  }
  let compiled: Compiled | undefined;
  const targets = [...o.targets];
  if (o.compiled) {
    compiled = compileSources();
    targets.splice(targets.indexOf('switchyard-node') + 1 || targets.length, 0, COMPILED);
  }
  const label = (t: string): string => (t === COMPILED ? COMPILED_LABEL : TARGETS[t]!);
  console.log(`\nmemory: ${cases.length} cases × ${targets.length} gateways × ${o.rounds} rounds, a fresh gateway each`);
  const samples = new Map<string, TransferSample[]>();
  const errors = new Map<string, string>();
  for (let round = 1; round <= o.rounds; round++) {
    for (const c of cases) {
      for (const t of targets) {
        const key = `${c.name}\0${t}`;
        try {
          const s = await transfer(c, t, upstreamUrl, place, fds, round, compiled);
          samples.set(key, [...(samples.get(key) ?? []), s]);
          console.log(
            `  [${round}] ${c.name.padEnd(32)} ${t.padEnd(16)} idle ${mib(s.idle).padStart(6)} MiB  peak ${mib(s.peak).padStart(6)} MiB  ${(s.ms / 1000).toFixed(1)} s  ${int.format(c.bytes / MiB / (s.ms / 1000))} MiB/s`,
          );
        } catch (err) {
          errors.set(key, `failed: ${(err as Error).message.split('\n')[0]}`);
          console.log(`  [${round}] ${c.name.padEnd(32)} ${t.padEnd(16)} ${errors.get(key)}`);
        }
      }
    }
  }
  const rows = [['Transfer', 'Gateway', 'RSS before, MiB', 'Peak RSS, MiB', 'Growth, MiB', 'Peak vs bare Node', 'Growth vs bare Node', 'MiB/s']];
  for (const c of cases) {
    const base = samples.get(`${c.name}\0${BASELINE}`) ?? [];
    for (const t of targets) {
      const key = `${c.name}\0${t}`;
      const ss = samples.get(key) ?? [];
      if (ss.length === 0) {
        rows.push([c.name, label(t), errors.get(key) ?? 'not run', '', '', '', '', '']);
        continue;
      }
      const sameRound = (f: (s: TransferSample) => number): number[] =>
        ss.flatMap((s) => {
          const b = base.find((x) => x.round === s.round);
          return b === undefined || f(b) <= 0 ? [] : [f(s) / f(b)];
        });
      rows.push([
        c.name,
        label(t),
        mib(median(ss.map((s) => s.idle))),
        mib(median(ss.map((s) => s.peak))),
        mib(median(ss.map((s) => s.peak - s.idle))),
        t === BASELINE ? '1.00x' : ratioCell(sameRound((s) => s.peak)),
        t === BASELINE ? '1.00x' : ratioCell(sameRound((s) => s.peak - s.idle)),
        int.format(median(ss.map((s) => c.bytes / MiB / (s.ms / 1000)))),
      ]);
    }
  }
  compiled?.remove();
  const md = markdown(rows, 2);
  console.log(`\n${md}\n`);
  return [
    '## Peak RSS through large bodies',
    '',
    `Each transfer through a fresh gateway process (pinned as in run.ts), the client and the upstream in their own processes; ${o.rounds} round${o.rounds === 1 ? '' : 's'}, medians. ` +
      '"RSS before" is the gateway\'s RSS once it answered its first request; "Peak RSS" its kernel high-water mark (VmHWM) after the transfer; "Growth" the difference. ' +
      'Ratios are to the bare Node proxy in the same round, median (range). In the "pauses" cases the receiving side stops for 100 ms after every sixteenth of the body while the sender goes on, so a gateway that ignored backpressure would buffer.' +
      (o.compiled
        ? ' The "compiled to JavaScript" row runs the same gateway on this tree\'s sources compiled by tsc, as an installed package runs them: Node then strips the types of no switchyard file (the bare proxies\' own bench/target.ts is TypeScript for every row).'
        : ''),
    '',
    md,
    '',
  ].join('\n');
}

async function connectionsPart(o: Options, upstream: ChildProcess, upstreamUrl: string, place: ReturnType<typeof pairedPlacement>, fds: Fds): Promise<string> {
  const lo = o.baseConnections;
  const hi = o.connections;
  console.log(
    `\nconnections: ${o.targets.length} gateways × ${o.connRounds} rounds, two processes of each side by side under ${lo} and ${hi} connections (${o.warmup} s warm-up + ${o.duration} s)`,
  );
  const samples = new Map<string, ConnSample[]>();
  const errors = new Map<string, string>();
  for (let round = 1; round <= o.connRounds; round++) {
    for (const t of o.targets) {
      try {
        samples.set(t, [...(samples.get(t) ?? []), await connectionsRound(t, o, upstream, upstreamUrl, place, fds, round)]);
      } catch (err) {
        errors.set(t, `failed: ${(err as Error).message.split('\n')[0]}`);
        console.log(`  [${round}] ${t.padEnd(16)} ${errors.get(t)}`);
      }
    }
  }
  const head = [
    'Gateway',
    `CPU µs/req at ${hi} vs at ${lo}`,
    `CPU µs/req at ${lo}`,
    `CPU µs/req at ${hi}`,
    `Req/s at ${lo}`,
    `Req/s at ${hi}`,
    `p99 ms at ${lo}`,
    `p99 ms at ${hi}`,
    `Errors at ${hi}`,
    `Peak RSS at ${lo}, MiB`,
    `Peak RSS at ${hi}, MiB`,
    'New upstream conns',
    'Other load',
  ];
  const rows = [head];
  for (const t of o.targets) {
    const ss = samples.get(t) ?? [];
    if (ss.length === 0) {
      rows.push([TARGETS[t]!, errors.get(t) ?? 'not run', ...Array<string>(head.length - 2).fill('')]);
      continue;
    }
    const m = (f: (s: ConnSample) => number): number => median(ss.map(f));
    const other = ss.map((s) => s.other).filter((x): x is number => x !== undefined);
    rows.push([
      TARGETS[t]!,
      ratioCell(ss.map((s) => s.many.cpu / s.few.cpu)),
      m((s) => s.few.cpu).toFixed(1),
      m((s) => s.many.cpu).toFixed(1),
      int.format(m((s) => s.few.rps)),
      int.format(m((s) => s.many.rps)),
      m((s) => s.few.load.p99).toFixed(0),
      m((s) => s.many.load.p99).toFixed(0),
      int.format(ss.reduce((x, s) => x + s.many.load.errors, 0)),
      mib(m((s) => s.few.peak)),
      mib(m((s) => s.many.peak)),
      int.format(ss.reduce((x, s) => x + s.newUpstream, 0)),
      other.length === 0 ? '–' : `${(Math.min(...other) * 100).toFixed(0)}–${(Math.max(...other) * 100).toFixed(0)}%`,
    ]);
  }
  const md = markdown(rows);
  console.log(`\n${md}\n`);
  return [
    `## CPU per request at ${hi} keep-alive connections`,
    '',
    `Two processes of the same gateway side by side on the proxy CPU (each keeping up to ${hi} idle upstream connections), one loaded by wrk with ${lo} keep-alive connections, ` +
      `the other with ${hi} (${RAMP_STEP} more every ${RAMP_MS} ms, one wrk process each, 10 s timeout): ${o.warmup} s of warm-up while the connections open, then ${o.duration} s measured ` +
      `on the same connections; ${o.connRounds} round${o.connRounds === 1 ? '' : 's'}, medians. A drift of the machine slows both processes alike, so the ratio of their CPU time per request ` +
      `(median and range of the rounds) says whether ${hi} connections cost more per request than ${lo}: 1.00x is throughput held. ` +
      'Req/s and CPU per request count the requests the upstream received from each over the measured seconds; each process had about half the CPU, so compare within a row. ' +
      `p99 (the slowest wrk process) and errors (non-2xx answers, socket errors, wrk timeouts) cover the whole runs, warm-up included; in a closed loop at saturation the latency is mostly queueing ` +
      `(connections ÷ req/s), so the p99 at ${hi} says that no connection starved, not what a user would wait. ` +
      '"New upstream conns": connections the upstream accepted during the measured seconds. "Other load": the share of the machine\'s CPU used by processes outside the benchmark while measured.',
    '',
    md,
    '',
  ].join('\n');
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === self) {
  const argv = process.argv.slice(2);
  if (argv[0] === '--upstream') upstreamMain();
  else if (argv[0] === '--client') clientMain(argv[1]!, argv[2]!, Number(argv[3]), Number(argv[4]), Number(argv[5]));
  else {
    await runMain(main, live);
  }
}
