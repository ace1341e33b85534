// Cache-HIT throughput of cache(): how close switchyard answering from its cache
// comes to a bare node:http server answering from a Map, on loopback, in one run.
//
//   map-baseline              node:http, every request answered from a Map of URL -> {headers, 1 KiB body}
//   switchyard-cache-memory   createServer(chain(cache({ valid: '1h' }), balance(pool))), default memory store
//   switchyard-cache-redis    the same with store: new KeyvRedis(REDIS_URL), its own namespace
//                             (skipped when Redis is unreachable; purged and closed at the end)
//   map-after-miss            (only when named in --targets) the memory target's process with its
//                             HITs answered from a Map as map-baseline answers: each URL's first
//                             request goes through chain(cache(), balance(pool)); the floor of the
//                             memory target, what a process that has proxied pays without cache()
//
// The targets and the upstream run in their own processes and live for the whole run.
// The cache is warmed first (one request per URL), each target is checked to answer
// HIT, and the upstream counts the requests it gets during the measured seconds
// (0 means every request was a HIT). The load cycles over 16 distinct URLs.
//
// Sequential rounds (default): every target in turn, interleaved, under all the
// connections: req/s, p99, target CPU µs/req. Paired (default on, --no-paired to
// skip): memory+baseline and redis+memory (with map-after-miss also
// map-after-miss+baseline and memory+map-after-miss) run at the same moment on the
// same CPU, each under half the connections; the ratio of their CPU time per
// request holds on a machine whose speed drifts (as bench/run.ts --paired).
//
//   node bench/cache.ts [--duration 5] [--rounds 5] [--warmup 2] [--connections 50]
//                       [--targets a,b] [--tool auto|wrk|autocannon] [--pin auto|on|off]
//                       [--no-paired] [--urls 16] [--out bench/results/cache.md]
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, get, type IncomingHttpHeaders } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadGenerator, parseWrk, type LoadResult } from './lib/load.ts';
import { machine, versionOf } from './lib/machine.ts';
import { int, markdown, median } from './lib/report.ts';
import { extractRevision } from './lib/revision.ts';
import { cpuSeconds, hasCommand, run, runMain, spawnPinned, stop, waitMessage } from './lib/proc.ts';

const here = dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);

const BODY_BYTES = 1024;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

type Kind = 'map-baseline' | 'switchyard-cache-memory' | 'switchyard-cache-redis' | 'map-after-miss' | typeof COMPARED;
const KINDS: Kind[] = ['map-baseline', 'switchyard-cache-memory', 'switchyard-cache-redis', 'map-after-miss'];
/** Targets run unless --targets names others (map-after-miss is asked for by name). */
const DEFAULT_KINDS: Kind[] = ['map-baseline', 'switchyard-cache-memory', 'switchyard-cache-redis'];
/** With --compare <rev>: the memory-store target on that revision's sources (B'), not a --targets name. */
const COMPARED = 'switchyard-cache-memory@rev';
const LABEL: Record<Kind, string> = {
  'map-baseline': 'node:http answering from a Map (no framework)',
  'switchyard-cache-memory': "switchyard chain(cache({ valid: '1h' }), balance(pool)), memory store",
  'switchyard-cache-redis': 'switchyard cache() with @keyv/redis store',
  'map-after-miss': 'the memory-store target answering its HITs from a Map instead of cache() (its floor)',
  [COMPARED]: 'the same at another revision',
};

function paths(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `/cache/item/${i}?v=1`);
}

// ---- target processes ----------------------------------------------------

interface TargetMessage {
  type: string;
  [k: string]: unknown;
}

async function target(kind: Kind, upstream: string, urls: number): Promise<void> {
  let server;
  let cleanup: () => Promise<unknown> = async () => undefined;
  let cleaned: Promise<unknown> | undefined;
  if (kind === 'map-baseline') {
    const body = Buffer.alloc(BODY_BYTES, 'x');
    const map = new Map<string, { headers: Record<string, string | number>; body: Buffer }>();
    for (const p of paths(urls)) map.set(p, { headers: { 'content-type': 'text/plain', 'content-length': body.length }, body });
    server = createServer((req, res) => {
      const e = map.get(req.url ?? '');
      if (e === undefined) {
        res.writeHead(404, { 'content-length': 0 });
        res.end();
        return;
      }
      res.writeHead(200, e.headers);
      res.end(e.body);
    });
  } else {
    // map-after-miss: switchyard-cache-memory's process, each URL's first request through
    // chain(cache(), balance(pool)) (a MISS), every later one answered as map-baseline answers:
    // what a HIT costs in a process that proxies, without cache()'s HIT path.
    // switchyard's sources: this tree's, or (COMPARED) those of the revision --compare extracted.
    const src = process.env.BENCH_SRC === undefined ? new URL('../src/', import.meta.url) : pathToFileURL(`${resolve(process.env.BENCH_SRC)}/`);
    const { balance, cache, chain, createPool } = (await import(new URL('index.ts', src).href)) as typeof import('../src/index.ts');
    const pool = createPool({ servers: [{ url: upstream }], agent: { maxFreeSockets: 64 } });
    let mw;
    if (kind === 'switchyard-cache-redis') {
      const { default: KeyvRedis } = await import('@keyv/redis');
      // As the README recommends: node-redis's offline queue off.
      mw = cache({ valid: '1h', store: new KeyvRedis({ url: REDIS_URL, disableOfflineQueue: true }), namespace: `bench-${process.pid}` });
    } else {
      mw = cache({ valid: '1h' });
    }
    let storeErrors = 0;
    mw.store.on('storeError', () => storeErrors++);
    const m = mw;
    cleanup = () =>
      (cleaned ??= (async () => {
        const purged = await m.purge('*');
        await m.close();
        return { purged, storeErrors, stats: m.stats() };
      })());
    process.on('message', (msg: TargetMessage) => {
      if (msg?.type === 'stats') process.send?.({ type: 'stats', storeErrors, hit: m.stats().hit.responses, miss: m.stats().miss.responses });
    });
    const stack = chain(mw, balance(pool));
    if (kind === 'map-after-miss') {
      const body = Buffer.alloc(BODY_BYTES, 'x');
      const headers = { 'content-type': 'text/plain', 'content-length': body.length, 'x-cache-status': 'HIT' };
      const seen = new Set<string>();
      server = createServer((req, res) => {
        const url = req.url ?? '';
        if (!seen.has(url)) {
          seen.add(url);
          stack(req, res);
          return;
        }
        res.writeHead(200, headers);
        res.end(body);
      });
    } else {
      server = createServer(stack);
    }
  }
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 121_000;
  process.on('message', (msg: TargetMessage) => {
    if (msg?.type === 'cleanup') {
      void cleanup().then(
        (r) => process.send?.({ type: 'cleaned', result: r }),
        (err: Error) => process.send?.({ type: 'cleaned', result: { error: err.message } }),
      );
    }
  });
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port }));
  // Stopped without the runner's cleanup (Ctrl-C): still purge a shared store's namespace.
  let exiting = false;
  const exit = (): void => {
    if (exiting) return;
    exiting = true;
    const t = setTimeout(() => process.exit(0), 3000);
    void cleanup().finally(() => {
      clearTimeout(t);
      process.exit(0);
    });
  };
  process.on('disconnect', exit);
  process.on('SIGTERM', exit);
}

// ---- load over several URLs ------------------------------------------------

/** autocannon through its API (the CLI takes one URL), in its own process; prints a LoadResult as JSON. */
async function autocannonChild(settings: string): Promise<void> {
  const s = JSON.parse(settings) as { base: string; paths: string[]; connections: number; duration: number };
  const { default: autocannon } = (await import('autocannon' as string)) as { default: (o: object) => Promise<AutocannonResult> };
  const r = await autocannon({
    url: s.base,
    connections: s.connections,
    duration: s.duration,
    timeout: 5,
    requests: s.paths.map((path) => ({ method: 'GET', path })),
  });
  const out: LoadResult = {
    rps: r.requests.total / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    requests: r.requests.total,
    errors: r.errors + r.timeouts + r.non2xx,
  };
  process.stdout.write(JSON.stringify(out));
}

interface AutocannonResult {
  requests: { total: number };
  latency: { p50: number; p99: number };
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
}

interface Load {
  tool: 'wrk' | 'autocannon';
  version: string;
  run(port: number, connections: number, duration: number): Promise<LoadResult>;
  dispose(): void;
}

function multiUrlLoad(prefer: 'auto' | 'wrk' | 'autocannon', urlPaths: string[], cpus: string | undefined): Load | undefined {
  const gen = loadGenerator(prefer);
  if (gen === undefined) return undefined;
  if (gen.tool === 'wrk') {
    // A Lua script cycling over the paths, one per request.
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-cache-bench-'));
    const script = join(dir, 'paths.lua');
    writeFileSync(
      script,
      `local paths = { ${urlPaths.map((p) => JSON.stringify(p)).join(', ')} }\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(nil, paths[i])\nend\n`,
    );
    return {
      tool: 'wrk',
      version: gen.version,
      async run(port, connections, duration) {
        const args = ['-t', '1', '-c', String(connections), '-d', `${duration}s`, '--timeout', '5s', '--latency', '-s', script, `http://127.0.0.1:${port}/`];
        const r = await run(cpus, 'wrk', args, (duration + 30) * 1000);
        if (r.code !== 0) throw new Error(`wrk exited with ${r.code}: ${r.stderr || r.stdout}`);
        return parseWrk(r.stdout);
      },
      dispose: () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  return {
    tool: 'autocannon',
    version: gen.version,
    async run(port, connections, duration) {
      const settings = JSON.stringify({ base: `http://127.0.0.1:${port}`, paths: urlPaths, connections, duration });
      const r = await run(cpus, process.execPath, [self, '--autocannon', settings], (duration + 30) * 1000);
      if (r.code !== 0) throw new Error(`autocannon exited with ${r.code}: ${r.stderr}`);
      return JSON.parse(r.stdout) as LoadResult;
    },
    dispose: () => {},
  };
}

// ---- runner helpers --------------------------------------------------------

function placement(pin: string): { proxy: string | undefined; upstream: string | undefined; load: string | undefined; description: string } {
  const n = availableParallelism();
  const can = n >= 2 && process.platform === 'linux' && hasCommand('taskset', ['-V']);
  if (pin === 'on' && !can) throw new Error('--pin on needs Linux, taskset and at least 2 CPUs');
  if (pin === 'off' || !can)
    return { proxy: undefined, upstream: undefined, load: undefined, description: 'not pinned: the OS schedules all processes on all CPUs' };
  if (n === 2)
    return { proxy: '1', upstream: '0', load: '0', description: 'targets on CPU 1; upstream and load generator share CPU 0 (taskset); redis-server unpinned' };
  return {
    proxy: '1',
    upstream: '2',
    load: n >= 4 ? '0,3' : '0',
    description: `targets on CPU 1, upstream on CPU 2, load generator on CPU ${n >= 4 ? '0,3' : '0'} (taskset); redis-server unpinned`,
  };
}

const live = new Set<ChildProcess>();

function start(cpus: string | undefined, file: string, args: string[], env: Record<string, string> = {}): Promise<{ child: ChildProcess; port: number }> {
  const child = spawnPinned(cpus, process.execPath, [file, ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...env } });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return waitMessage<{ type: string; port: number }>(child, 'ready', 20_000).then(({ port }) => ({ child, port }));
}

async function ask<T extends { type: string }>(child: ChildProcess, msg: object, reply: string, ms = 10_000): Promise<T> {
  const p = waitMessage<T>(child, reply, ms);
  child.send(msg);
  return p;
}

/** Requests the upstream got since the last call (upstream.ts resets its counters on each read). */
async function upstreamRequests(up: ChildProcess): Promise<number> {
  return (await ask<{ type: string; requests: number }>(up, { type: 'stats' }, 'stats')).requests;
}

function probe(url: string): Promise<{ status: number; bytes: number; headers: IncomingHttpHeaders }> {
  return new Promise((res, rej) => {
    const req = get(url, { agent: false, timeout: 3000 }, (r) => {
      let bytes = 0;
      r.on('data', (c: Buffer) => (bytes += c.length));
      r.on('end', () => res({ status: r.statusCode ?? 0, bytes, headers: r.headers }));
      r.on('error', rej);
    });
    req.on('timeout', () => req.destroy(new Error('probe timed out')));
    req.on('error', rej);
  });
}

/** True when a TCP connection to Redis answers PING (with no auth in the URL) or at least connects. */
function redisReachable(url: string): Promise<string | undefined> {
  return new Promise((res) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      res(`REDIS_URL is not a URL: ${url}`);
      return;
    }
    const sock = connect({ host: u.hostname || '127.0.0.1', port: Number(u.port || 6379) });
    const timer = setTimeout(() => done(`no answer from ${u.host} within 2 s`), 2000);
    let buf = '';
    const done = (err: string | undefined): void => {
      clearTimeout(timer);
      sock.destroy();
      res(err);
    };
    sock.on('connect', () => (u.password !== '' ? done(undefined) : sock.write('PING\r\n')));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG') || buf.startsWith('-NOAUTH') ? undefined : `unexpected answer: ${buf.trim()}`);
    });
    sock.on('error', (err) => done(`${u.host}: ${err.message}`));
  });
}

/** "median (min–max)" of per-round ratios. */
function ratioCell(xs: number[]): string {
  if (xs.length === 0) return '–';
  return `${median(xs).toFixed(3)}${xs.length > 1 ? ` (${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)})` : ''}`;
}

// ---- main ------------------------------------------------------------------

interface Sample extends LoadResult {
  round: number;
  cpu: number | undefined;
  upstream: number;
}

interface Pair {
  a: Kind;
  b: Kind;
  cpuA: number;
  cpuB: number;
  rpsA: number;
  rpsB: number;
  errors: number;
  upstream: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    allowNegative: true,
    options: {
      duration: { type: 'string', default: process.env.BENCH_DURATION ?? '5' },
      rounds: { type: 'string', default: process.env.BENCH_ROUNDS ?? '5' },
      warmup: { type: 'string', default: process.env.BENCH_WARMUP ?? '2' },
      connections: { type: 'string', default: process.env.BENCH_CONNECTIONS ?? '50' },
      targets: { type: 'string', default: process.env.BENCH_TARGETS ?? DEFAULT_KINDS.join(',') },
      tool: { type: 'string', default: process.env.BENCH_TOOL ?? 'auto' },
      pin: { type: 'string', default: process.env.BENCH_PIN ?? 'auto' },
      paired: { type: 'boolean', default: process.env.BENCH_PAIRED !== '0' },
      urls: { type: 'string', default: '16' },
      compare: { type: 'string', default: process.env.BENCH_COMPARE },
      out: { type: 'string', default: resolve(here, 'results', 'cache.md') },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    console.log(
      'usage: node bench/cache.ts [--duration 5] [--rounds 5] [--warmup 2] [--connections 50] [--targets a,b]\n' +
        '                           [--tool auto|wrk|autocannon] [--pin auto|on|off] [--no-paired] [--urls 16] [--compare <rev>] [--out file]\n' +
        '--compare <rev>: also run the memory-store target on the sources of git revision <rev>, paired with the Map as well\n' +
        `targets: ${KINDS.join(', ')}; REDIS_URL (default ${'redis://127.0.0.1:6379'}) for the Redis target`,
    );
    return;
  }
  const o = {
    duration: Number(values.duration),
    rounds: Number(values.rounds),
    warmup: Number(values.warmup),
    connections: Number(values.connections),
    urls: Number(values.urls),
  };
  if (
    !(
      o.duration >= 1 &&
      o.duration <= 60 &&
      Number.isInteger(o.rounds) &&
      o.rounds >= 1 &&
      o.rounds <= 20 &&
      o.warmup >= 0 &&
      o.warmup <= 30 &&
      o.connections >= 2 &&
      o.urls >= 1 &&
      o.urls <= 1000
    )
  ) {
    throw new Error('bad --duration (1..60), --rounds (1..20), --warmup (0..30), --connections (>= 2) or --urls (1..1000)');
  }
  const tool = values.tool;
  if (tool !== 'auto' && tool !== 'wrk' && tool !== 'autocannon') throw new Error(`--tool must be auto, wrk or autocannon, got "${tool}"`);
  if (values.pin !== 'auto' && values.pin !== 'on' && values.pin !== 'off') throw new Error(`--pin must be auto, on or off, got "${values.pin}"`);
  const wanted = values.targets
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const w of wanted) if (!KINDS.includes(w as Kind)) throw new Error(`unknown target "${w}"; targets: ${KINDS.join(', ')}`);
  const place = placement(values.pin);
  const urlPaths = paths(o.urls);
  const load = multiUrlLoad(tool, urlPaths, place.load);
  if (load === undefined) throw new Error(tool === 'wrk' ? 'wrk is not installed' : 'neither wrk nor autocannon can run');

  const skipped = new Map<Kind, string>();
  let kinds = KINDS.filter((k) => wanted.includes(k));
  const compared = values.compare === undefined || values.compare === '' ? undefined : extractRevision(values.compare);
  if (compared !== undefined) {
    if (!kinds.includes('switchyard-cache-memory')) throw new Error('--compare needs the switchyard-cache-memory target');
    LABEL[COMPARED] = `${LABEL['switchyard-cache-memory']}, at ${compared.short}`;
    kinds.splice(kinds.indexOf('switchyard-cache-memory') + 1, 0, COMPARED);
  }
  if (kinds.includes('switchyard-cache-redis')) {
    const why = await redisReachable(REDIS_URL);
    if (why !== undefined) skipped.set('switchyard-cache-redis', `skipped: Redis unreachable at ${REDIS_URL} (${why}); set REDIS_URL`);
  }

  const desc = machine([
    ['Load generator', `${load.tool} ${load.version}${load.tool === 'wrk' ? ' (1 thread, Lua script over the URLs)' : ' (API, cycling over the URLs)'}`],
    ['Packages', `keyv ${versionOf('keyv')}, @keyv/redis ${versionOf('@keyv/redis')}, Redis ${REDIS_URL}`],
    ...(compared === undefined ? [] : [['Compared with', `switchyard at ${compared.short} (git): ${COMPARED}`] as [string, string]]),
    ['CPU placement', place.description],
    [
      'Load',
      `${o.connections} keep-alive connections over ${o.urls} URLs (1 KiB bodies), ${o.warmup} s warm-up then ${o.duration} s measured, ${o.rounds} rounds` +
        (values.paired ? ', plus paired rounds (half the connections each)' : ''),
    ],
  ]);
  console.log('switchyard cache-HIT benchmark');
  for (const [k, v] of desc) console.log(`  ${`${k}:`.padEnd(16)} ${v}`);
  for (const [k, why] of skipped) console.log(`  ${k}: ${why}`);
  kinds = kinds.filter((k) => !skipped.has(k));

  const samples = new Map<Kind, Sample[]>(kinds.map((k) => [k, []]));
  const pairs: Pair[] = [];
  const notes: string[] = [];
  const procs = new Map<Kind, { child: ChildProcess; port: number }>();
  let upstream: { child: ChildProcess; port: number } | undefined;
  try {
    upstream = await start(place.upstream, resolve(here, 'upstream.ts'), []);
    const upstreamUrl = `http://127.0.0.1:${upstream.port}`;
    for (const k of kinds) {
      const env: Record<string, string> = k === COMPARED && compared !== undefined ? { BENCH_SRC: compared.src } : {};
      procs.set(k, await start(place.proxy, self, ['--target', k, upstreamUrl, String(o.urls)], env));
    }

    // Warm every cache (one request per URL), then check that a second pass is all HITs.
    await upstreamRequests(upstream.child);
    for (const k of kinds) {
      const { port, child } = procs.get(k)!;
      const statuses = new Map<string, number>();
      for (const pass of [1, 2]) {
        for (const p of urlPaths) {
          const r = await probe(`http://127.0.0.1:${port}${p}`);
          if (r.status !== 200 || r.bytes !== BODY_BYTES) throw new Error(`${k}: ${p} answered ${r.status} with ${r.bytes} bytes`);
          if (pass === 2) {
            const s = String(r.headers['x-cache-status'] ?? '(none)');
            statuses.set(s, (statuses.get(s) ?? 0) + 1);
          }
        }
      }
      const fetched = await upstreamRequests(upstream.child);
      const summary = [...statuses].map(([s, n]) => `${s} x${n}`).join(', ');
      if (k !== 'map-baseline' && (statuses.get('HIT') ?? 0) !== urlPaths.length) {
        const why = `skipped: after warming, not every request was a HIT (${summary}; upstream got ${fetched})`;
        if (k === 'switchyard-cache-redis') {
          skipped.set(k, why);
          console.log(`  ${k}: ${why}`);
          await ask(child, { type: 'cleanup' }, 'cleaned').catch(() => undefined);
          await stop(child);
          continue;
        }
        throw new Error(`${k}: ${why}`);
      }
      const note = `${k}: warmed ${urlPaths.length} URLs (upstream got ${fetched} requests); second pass x-cache-status: ${summary}`;
      notes.push(note);
      console.log(`  ${note}`);
    }
    kinds = kinds.filter((k) => !skipped.has(k));
    for (const k of kinds) if (o.warmup > 0) await load.run(procs.get(k)!.port, o.connections, o.warmup);
    console.log();

    for (let round = 1; round <= o.rounds; round++) {
      // Rotate the order each round so drift does not always favour the same target.
      const order = kinds.map((_, i) => kinds[(i + round - 1) % kinds.length]!);
      for (const k of order) {
        const { child, port } = procs.get(k)!;
        await upstreamRequests(upstream.child);
        const c0 = cpuSeconds(child.pid);
        const r = await load.run(port, o.connections, o.duration);
        const c1 = cpuSeconds(child.pid);
        const up = await upstreamRequests(upstream.child);
        const s: Sample = {
          ...r,
          round,
          cpu: c0 === undefined || c1 === undefined || r.requests === 0 ? undefined : ((c1 - c0) / r.requests) * 1e6,
          upstream: up,
        };
        samples.get(k)!.push(s);
        console.log(
          `[${round}/${o.rounds}] ${k.padEnd(24)} ${int.format(s.rps).padStart(7)} req/s  p99 ${s.p99.toFixed(2)} ms  cpu ${s.cpu?.toFixed(1) ?? '–'} µs/req  errors ${s.errors}  upstream requests ${up}`,
        );
      }
      if (!values.paired) continue;
      const pairList: Array<[Kind, Kind]> = [];
      if (kinds.includes('map-baseline') && kinds.includes('switchyard-cache-memory')) pairList.push(['map-baseline', 'switchyard-cache-memory']);
      if (kinds.includes('map-baseline') && kinds.includes(COMPARED)) pairList.push(['map-baseline', COMPARED]);
      if (kinds.includes('map-baseline') && kinds.includes('map-after-miss')) pairList.push(['map-baseline', 'map-after-miss']);
      if (kinds.includes('map-after-miss') && kinds.includes('switchyard-cache-memory')) pairList.push(['map-after-miss', 'switchyard-cache-memory']);
      if (kinds.includes('switchyard-cache-memory') && kinds.includes('switchyard-cache-redis'))
        pairList.push(['switchyard-cache-memory', 'switchyard-cache-redis']);
      for (const [a, b] of pairList) {
        const half = Math.ceil(o.connections / 2);
        const pa = procs.get(a)!;
        const pb = procs.get(b)!;
        await upstreamRequests(upstream.child);
        const c0 = [cpuSeconds(pa.child.pid), cpuSeconds(pb.child.pid)];
        const [ra, rb] = await Promise.all([load.run(pa.port, half, o.duration), load.run(pb.port, half, o.duration)]);
        const c1 = [cpuSeconds(pa.child.pid), cpuSeconds(pb.child.pid)];
        const up = await upstreamRequests(upstream.child);
        if ([...c0, ...c1].some((c) => c === undefined)) throw new Error('CPU time is not readable here (/proc)');
        if (ra.requests === 0 || rb.requests === 0) throw new Error('a target served no requests');
        const p: Pair = {
          a,
          b,
          cpuA: ((c1[0]! - c0[0]!) / ra.requests) * 1e6,
          cpuB: ((c1[1]! - c0[1]!) / rb.requests) * 1e6,
          rpsA: ra.rps,
          rpsB: rb.rps,
          errors: ra.errors + rb.errors,
          upstream: up,
        };
        pairs.push(p);
        console.log(
          `[${round}/${o.rounds}] paired ${`${b} + ${a}`}: cpu ${p.cpuB.toFixed(1)} vs ${p.cpuA.toFixed(1)} µs/req (${(p.cpuB / p.cpuA).toFixed(3)}x)  req/s ${int.format(p.rpsB)} vs ${int.format(p.rpsA)}  errors ${p.errors}  upstream requests ${up}`,
        );
      }
    }
  } finally {
    const redis = procs.get('switchyard-cache-redis');
    if (redis !== undefined && redis.child.exitCode === null && redis.child.signalCode === null) {
      try {
        const { result } = await ask<{ type: string; result: { purged?: number; storeErrors?: number; error?: string } }>(
          redis.child,
          { type: 'cleanup' },
          'cleaned',
          15_000,
        );
        const note =
          result.error !== undefined
            ? `Redis cleanup failed: ${result.error}`
            : `Redis namespace purged (${result.purged} keys) and client closed; store errors during the run: ${result.storeErrors}`;
        notes.push(note);
        console.log(note);
      } catch (err) {
        console.log(`Redis cleanup: ${(err as Error).message}`);
      }
    }
    for (const k of procs.keys()) {
      const c = procs.get(k)!.child;
      if (k !== 'switchyard-cache-redis') await ask(c, { type: 'cleanup' }, 'cleaned', 5000).catch(() => undefined);
    }
    await Promise.all([...live].map((c) => stop(c)));
    load.dispose();
  }

  // ---- report ----
  const byRound = (k: Kind, round: number): Sample | undefined => samples.get(k)?.find((s) => s.round === round);
  const roundRatios = (num: Kind, den: Kind): number[] => {
    const out: number[] = [];
    for (const s of samples.get(num) ?? []) {
      const d = byRound(den, s.round);
      if (d !== undefined && d.rps > 0) out.push(s.rps / d.rps);
    }
    return out;
  };
  const head = ['Target', 'Req/s (median)', 'Req/s range', 'p99 ms', 'CPU µs/req', 'Errors', 'Upstream requests while measured'];
  const rows: string[][] = [head];
  const shown: Kind[] = [...KINDS, COMPARED];
  for (const k of shown.filter((x) => wanted.includes(x) || (x === COMPARED && compared !== undefined))) {
    const ss = samples.get(k) ?? [];
    if (ss.length === 0) {
      rows.push([LABEL[k], skipped.get(k) ?? 'not run', '', '', '', '', '']);
      continue;
    }
    const rps = ss.map((s) => s.rps);
    const cpus = ss.map((s) => s.cpu).filter((c): c is number => c !== undefined);
    rows.push([
      `${k}: ${LABEL[k]}`,
      int.format(median(rps)),
      `${int.format(Math.min(...rps))}–${int.format(Math.max(...rps))}`,
      median(ss.map((s) => s.p99)).toFixed(2),
      cpus.length === 0 ? '–' : median(cpus).toFixed(1),
      int.format(ss.reduce((a, s) => a + s.errors, 0)),
      k === 'map-baseline' ? 'n/a' : int.format(ss.reduce((a, s) => a + s.upstream, 0)),
    ]);
  }
  const ratioRows: string[][] = [
    [
      'Ratio',
      'Req/s, same round: median (range)',
      'Paired: CPU per request, median (range)',
      'Paired: throughput on the same CPU, median (range)',
      'Paired CPU µs/req (median-ratio round)',
    ],
  ];
  for (const [num, den, label, target] of [
    ['switchyard-cache-memory', 'map-baseline', 'B/A memory cache vs Map', ' (target: CPU <= 1.05)'],
    [COMPARED, 'map-baseline', `B'/A memory cache at ${compared?.short} vs Map`, ''],
    ['map-after-miss', 'map-baseline', 'F/A Map answers after MISSes through cache() vs Map (the floor)', ''],
    ['switchyard-cache-memory', 'map-after-miss', "B/F memory cache vs its floor (cache()'s HIT path alone)", ''],
    ['switchyard-cache-redis', 'switchyard-cache-memory', 'C/B Redis cache vs memory cache', ''],
  ] as Array<[Kind, Kind, string, string]>) {
    const rr = roundRatios(num, den);
    const pp = pairs.filter((p) => p.a === den && p.b === num);
    const through = pp.map((p) => p.cpuA / p.cpuB);
    const cpu = pp.map((p) => p.cpuB / p.cpuA);
    const mid = [...pp].sort((x, y) => x.cpuA / x.cpuB - y.cpuA / y.cpuB)[(pp.length - 1) >> 1];
    if (rr.length === 0 && pp.length === 0) continue;
    ratioRows.push([
      `${label}${target}`,
      ratioCell(rr),
      ratioCell(cpu),
      ratioCell(through),
      mid === undefined ? '–' : `${mid.cpuB.toFixed(1)} vs ${mid.cpuA.toFixed(1)}`,
    ]);
  }
  const pairUpstream = pairs.reduce((a, p) => a + p.upstream, 0);
  const pairErrors = pairs.reduce((a, p) => a + p.errors, 0);
  const md = markdown(rows);
  const ratioMd = markdown(ratioRows);
  console.log(`\n${md}\n\n${ratioMd}\n`);
  if (pairs.length > 0) console.log(`paired rounds: errors ${pairErrors}, upstream requests ${pairUpstream}`);
  const report = [
    '# switchyard cache-HIT benchmark',
    '',
    `Run ${new Date().toISOString()} with \`${['node bench/cache.ts', ...process.argv.slice(2)].join(' ')}\`.`,
    '',
    markdown([['Machine', ''], ...desc.map(([k, v]) => [k, v])], 2),
    '',
    md,
    '',
    ratioMd,
    '',
    'Req/s ratios are the median (and range) of each round\'s ratio. "Paired" ran both targets at the same moment on the same CPU, each under half the connections: "CPU per request" is the ratio of their CPU time per request (the numerator\'s over the denominator\'s; lower is better), "throughput on the same CPU" its inverse, the share of the denominator\'s throughput the numerator reaches on the same CPU.',
    '"Upstream requests while measured" is 0 when every measured request was a cache HIT.',
    ...(pairs.length > 0 ? [`Paired rounds: errors ${pairErrors}, upstream requests ${pairUpstream}.`] : []),
    '',
    ...notes.map((n) => `- ${n}`),
    '',
  ].join('\n');
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, report);
  console.log(`report written to ${relative(process.cwd(), values.out) || values.out}`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === self) {
  const t = process.argv.indexOf('--target');
  const a = process.argv.indexOf('--autocannon');
  if (t !== -1) await target(process.argv[t + 1] as Kind, process.argv[t + 2]!, Number(process.argv[t + 3]));
  else if (a !== -1) await autocannonChild(process.argv[a + 1]!);
  else {
    await runMain(main, live);
  }
}
