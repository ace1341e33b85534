// What the rate and connection limits (issue 18) cost on the proxy path, and how much memory a zone
// of 1,000,000 keys holds.
//
// CPU per request (default), paired as bench/overhead.ts: two gateways in front of the same
// upstream, `chain(balance(pool))` and `chain(<limit>, balance(pool))`, run at the same moment,
// pinned together on the proxy CPU (taskset; CPU 1, the upstream and the load generator on CPU 0 on a
// 2-core machine), each driven by its own wrk (or autocannon) with half the connections; the figure
// is each gateway's CPU time per request (/proc) and their ratio per round, with both gateways'
// latency. Subjects (--subject):
//   local  limitRequests({ key: '$remote_addr', rate: '1000000r/s', burst: 1000, nodelay: true }):
//          a limit every request goes through and none hits (target: within 3% of no limit)
//   conn   limitConnections({ key: '$remote_addr', max: 100000 }), never hit
//   redis  the same limitRequests() with sync on a private redis-server: one Redis round trip per
//          request (its CPU and its latency are what this measures)
//   conn-redis  limitConnections() with sync: one round trip before the request, one after it
//   aa     two copies of chain(balance(pool)): the ratio the method reports for no difference
//
// --memory: one zone (RequestZone, the table limitRequests() keeps) filled with 1,000,000 distinct
// IPv4 keys, the heap and array buffers measured before and after (with --expose-gc, in a child).
//
//   node bench/limit.ts [--subject local|conn|redis|aa] [--duration 5] [--rounds 5] [--warmup 3]
//                       [--connections 50] [--tool auto|wrk|autocannon] [--pin auto|on|off]
//   node bench/limit.ts --memory [--keys 1000000]
import type { ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type LoadResult, loadGenerator } from './lib/load.ts';
import { machine } from './lib/machine.ts';
import { cpuSeconds, pairedPlacement, runMain, spawnPinned, stop, waitMessage } from './lib/proc.ts';
import { median } from './lib/report.ts';
import { deadPort as freePort } from '../test/helpers.ts';
import { startRedis, stopRedis } from '../test/redis.ts';

const self = fileURLToPath(import.meta.url);
const here = dirname(self);
const PATH = '/api/items/42?x=1';
type Subject = 'local' | 'conn' | 'redis' | 'conn-redis' | 'aa';
const SUBJECTS: readonly Subject[] = ['local', 'conn', 'redis', 'conn-redis', 'aa'];
const LABELS: Record<Subject | 'none', string> = {
  none: 'chain(balance(pool))',
  local: 'chain(limitRequests(local, never hit), balance(pool))',
  conn: 'chain(limitConnections(never hit), balance(pool))',
  redis: 'chain(limitRequests(sync: Redis, never hit), balance(pool))',
  'conn-redis': 'chain(limitConnections(sync: Redis, never hit), balance(pool))',
  aa: 'chain(balance(pool)), a second copy',
};

/** A gateway process: `chain(balance(pool))`, with the subject's limit in front unless `subject` is none or aa. */
async function gatewayMain(subject: Subject | 'none', upstream: string, redisUrl: string): Promise<void> {
  const { balance, chain, createPool, limitConnections, limitRequests, sync } = await import('../src/index.ts');
  const pool = createPool({ servers: [{ url: upstream }], agent: { maxFreeSockets: 64 } });
  const never = { key: '$remote_addr', rate: '1000000r/s', burst: 1000, nodelay: true, name: 'bench' } as const;
  let listener;
  if (subject === 'local') listener = chain(limitRequests(never), balance(pool));
  else if (subject === 'conn') listener = chain(limitConnections({ key: '$remote_addr', max: 100_000 }), balance(pool));
  else if (subject === 'redis' || subject === 'conn-redis') {
    const shared = sync({ redis: redisUrl, namespace: `bench-limit-${process.pid}` });
    await shared.ready;
    const limit =
      subject === 'redis' ? limitRequests({ ...never, sync: shared }) : limitConnections({ key: '$remote_addr', max: 100_000, name: 'bench', sync: shared });
    limit.on('fallback', (err) => console.error(`${subject} fell back to local limits: ${err.message}`));
    listener = chain(limit, balance(pool));
  } else listener = chain(balance(pool));
  const server = createServer(listener);
  server.keepAliveTimeout = 120_000;
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port }));
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

async function start(cpus: string | undefined, args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawnPinned(cpus, process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  live.add(child);
  const { port } = await waitMessage<{ type: string; port: number }>(child, 'ready', 15_000);
  return { child, port };
}

const live = new Set<ChildProcess>();

async function paired(o: { subject: Subject; duration: number; rounds: number; warmup: number; connections: number; tool: string; pin: string }) {
  const gen = loadGenerator(o.tool as 'auto');
  if (gen === undefined) throw new Error('neither wrk nor autocannon can run');
  const place = pairedPlacement(o.pin, 'both gateways');
  const half = Math.ceil(o.connections / 2);
  let redis: ChildProcess | undefined;
  let redisUrl = '';
  if (o.subject === 'redis' || o.subject === 'conn-redis') {
    const port = await freePort();
    redis = await startRedis(port);
    live.add(redis);
    redisUrl = `redis://127.0.0.1:${port}`;
  }
  try {
    const up = await start(place.other, [resolve(here, 'upstream.ts')]);
    const upstream = `http://127.0.0.1:${up.port}`;
    const kinds = ['none', o.subject] as const;
    const gws = await Promise.all(
      kinds.map((k) => start(place.proxy, [self, '--gateway', k === 'none' || o.subject === 'aa' ? 'none' : k, upstream, redisUrl])),
    );
    const load = (i: number, duration: number) =>
      gen.run({ url: `http://127.0.0.1:${gws[i]!.port}${PATH}`, connections: half, duration, threads: 1, cpus: place.other });
    if (o.warmup > 0) await Promise.all([load(0, o.warmup), load(1, o.warmup)]);
    const rounds: Array<{ cpu: [number, number]; res: [LoadResult, LoadResult] }> = [];
    for (let r = 0; r < o.rounds; r++) {
      const c0 = gws.map((g) => cpuSeconds(g.child.pid));
      const res = (await Promise.all([load(0, o.duration), load(1, o.duration)])) as [LoadResult, LoadResult];
      const c1 = gws.map((g) => cpuSeconds(g.child.pid));
      if ([...c0, ...c1].some((c) => c === undefined)) throw new Error('CPU time is not readable here (/proc)');
      const cpu = [0, 1].map((i) => ((c1[i]! - c0[i]!) / res[i]!.requests) * 1e6) as [number, number];
      rounds.push({ cpu, res });
      console.log(
        `[${r + 1}/${o.rounds}] none ${cpu[0].toFixed(1)} µs/req ${res[0].rps.toFixed(0)} req/s p50 ${res[0].p50.toFixed(2)} ms   ${o.subject} ${cpu[1].toFixed(1)} µs/req ${res[1].rps.toFixed(0)} req/s p50 ${res[1].p50.toFixed(2)} ms   ratio ${(cpu[1] / cpu[0]).toFixed(3)}`,
      );
    }
    const ratios = rounds.map((x) => x.cpu[1] / x.cpu[0]);
    const errors = rounds.reduce((n, x) => n + x.res[0].errors + x.res[1].errors, 0);
    for (const [k, v] of machine()) console.log(`${k}: ${v}`);
    console.log(`mode: paired CPU per request; ${place.description}`);
    console.log(`tool: ${gen.tool} ${gen.version}, ${half}+${half} connections, ${o.rounds} rounds x ${o.duration}s (warm-up ${o.warmup}s), path ${PATH}`);
    for (const i of [0, 1] as const) {
      const label = i === 0 ? LABELS.none : LABELS[o.subject];
      console.log(
        `${label}: ${median(rounds.map((x) => x.cpu[i])).toFixed(1)} CPU µs/req, ${median(rounds.map((x) => x.res[i].rps)).toFixed(0)} req/s, p50 ${median(rounds.map((x) => x.res[i].p50)).toFixed(2)} ms, p99 ${median(rounds.map((x) => x.res[i].p99)).toFixed(2)} ms (medians)`,
      );
    }
    console.log(
      `ratio ${o.subject}/none (CPU per request): ${median(ratios).toFixed(3)} (range ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)}); errors ${errors}`,
    );
  } finally {
    await Promise.all([...live].filter((c) => c !== redis).map((c) => stop(c)));
    if (redis !== undefined) await stopRedis(redis);
  }
}

/** In a child with --expose-gc: the memory one zone holds with `keys` distinct keys. */
async function memoryMain(keys: number): Promise<void> {
  const { RequestZone } = await import('../src/limit/zone.ts');
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with --expose-gc');
  const used = (): number => {
    gc();
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const before = used();
  const zone = new RequestZone('bench', 10_000, keys);
  for (let i = 0; i < keys; i++) zone.lookup(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, 0, 10_000, true);
  const after = used();
  if (zone.size !== keys) throw new Error(`the zone holds ${zone.size} keys, not ${keys}`);
  const bytes = after - before;
  console.log(`keys: ${keys.toLocaleString('en-US')} distinct IPv4 addresses (7 to 15 characters)`);
  console.log(`memory: ${(bytes / 1024 / 1024).toFixed(1)} MiB (heap + array buffers after GC), ${(bytes / keys).toFixed(0)} bytes per key`);
  console.log(`node ${process.version}`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      subject: { type: 'string', default: 'local' },
      duration: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '3' },
      connections: { type: 'string', default: '50' },
      tool: { type: 'string', default: 'auto' },
      pin: { type: 'string', default: 'auto' },
      memory: { type: 'boolean', default: false },
      keys: { type: 'string', default: '1000000' },
    },
  });
  if (values.memory) {
    const out = spawnSync(process.execPath, ['--expose-gc', self, '--memory-child', values.keys], { stdio: 'inherit' });
    if (out.status !== 0) throw new Error('the memory measurement failed');
    return;
  }
  if (!SUBJECTS.includes(values.subject as Subject)) throw new Error(`--subject must be one of ${SUBJECTS.join(', ')}`);
  await paired({
    subject: values.subject as Subject,
    duration: Number(values.duration),
    rounds: Number(values.rounds),
    warmup: Number(values.warmup),
    connections: Number(values.connections),
    tool: values.tool,
    pin: values.pin,
  });
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === self) {
  const g = process.argv.indexOf('--gateway');
  const m = process.argv.indexOf('--memory-child');
  if (g !== -1) await gatewayMain(process.argv[g + 1] as Subject, process.argv[g + 2]!, process.argv[g + 3] ?? '');
  else if (m !== -1) await memoryMain(Number(process.argv[m + 1]));
  else await runMain(main, live);
}
