// What the cluster-wide state (issue 14, `sync`) costs the proxy path, and what a Redis outage does
// to its latency, on loopback, in one run.
//
// Part 1, CPU per request, sync on vs off (paired, as bench/overhead.ts): two gateways,
// `chain(balance(pool))` for one pool in front of the same upstream, the second with
// `createPool({ ..., sync: sync({ redis }) })` on a private redis-server. Both run at the same moment,
// pinned together on the proxy CPU (taskset; CPU 1, with the upstream and the load generator on CPU 0
// on a 2-core machine), each driven by its own wrk (or autocannon) with half the connections; the
// figure is each gateway's CPU time per request (process CPU time from /proc / requests served) and
// their ratio per round. Two more instances of the pool (`--peers`, in one process off the proxy CPU)
// share its namespace, so the measured gateway also hears their statistics every second, as a
// three-instance cluster does. Target: sync on within 5% of sync off. `--aa` measures two gateways
// without sync instead: the ratio the method reports for no difference. `--idle-redis` gives the
// sync-off gateway two node-redis connections it never uses (a commands client, and a subscriber on a
// channel nobody publishes to), the connections the sync-on gateway holds: the ratio is then what
// sync's own work costs, apart from what node-redis's sockets in the process cost the proxy path
// (V8 turns some of node's stream and event call sites megamorphic once a fifth kind of stream goes
// through them; see the README).
//
// Part 2, p99 through an outage: a gateway with sync on and a control gateway without sync, both on
// the proxy CPU, loaded at the same moment with half the connections each (the control's p99 shows
// what the machine did in the same seconds), measured in four phases, each round with a fresh
// redis-server:
//   up       Redis answering
//   killed   after the redis-server was SIGKILLed (measured once the gateway noticed)
//   back     after it was started again, empty (measured once the gateway reconnected)
//   frozen   while it is stopped with SIGSTOP (connections open, every command times out); SIGCONT after
// Target: p99 while Redis is away within 2x the p99 while it answers (reported raw, and corrected by
// the control: (p99 / control p99) in the phase over the same in `up`).
//
//   node bench/sync.ts [--rounds 5] [--duration 5] [--warmup 3] [--connections 50] [--peers 2] [--aa | --idle-redis]
//                      [--outage-rounds 3] [--outage-duration 5] [--only cpu|outage]
//                      [--tool auto|wrk|autocannon] [--pin auto|on|off] [--out file.md]
//
// Needs redis-server on PATH. Everything runs on 127.0.0.1 and is stopped at the end.
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type LoadGenerator, type LoadResult, loadGenerator, type Tool } from './lib/load.ts';
import { machine, versionOf } from './lib/machine.ts';
import { cpuSeconds, hasCommand, pairedPlacement, spawnPinned, stop, waitMessage } from './lib/proc.ts';
// The tests' loopback helpers: a free port, and a private redis-server started, killed, frozen.
import { deadPort as freePort } from '../test/helpers.ts';
import { pauseRedis, resumeRedis, startRedis, stopRedis } from '../test/redis.ts';

const self = fileURLToPath(import.meta.url);
const here = dirname(self);
const PATH = '/api/items/42?x=1';

// ---- child processes -----------------------------------------------------------------------------

/**
 * A gateway: `chain(balance(pool))`, with sync on Redis when `kind` is `on`; without sync, but holding
 * two idle node-redis connections, when it is `idle-redis`. Tells the parent about Redis connection changes.
 */
async function gatewayMain(kind: string, upstream: string, redisUrl: string, namespace: string): Promise<void> {
  const { balance, chain, createPool, sync } = await import('../src/index.ts');
  const tell = (message: object): void => {
    if (process.connected) process.send?.(message);
  };
  if (kind === 'idle-redis') {
    // What the sync-on gateway's engine holds open (see RedisTransport), never used for anything.
    const { createClient } = await import('@redis/client');
    const commands = createClient({ url: redisUrl, disableOfflineQueue: true, socket: { connectTimeout: 1000 } });
    const subscriber = commands.duplicate();
    await Promise.all([commands.connect(), subscriber.connect()]);
    await subscriber.subscribe(`${namespace}:idle-redis`, () => undefined);
  }
  const shared = kind === 'on' ? sync({ redis: redisUrl, namespace }) : undefined;
  if (shared !== undefined) {
    shared.on('connect', () => tell({ type: 'connection', up: true }));
    shared.on('disconnect', () => tell({ type: 'connection', up: false }));
    await shared.ready;
  }
  const pool = createPool({ name: 'api', servers: [{ id: 'u', url: upstream }], agent: { maxFreeSockets: 64 }, ...(shared ? { sync: shared } : {}) });
  const server = createServer(chain(balance(pool)));
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 121_000;
  server.listen(0, '127.0.0.1', () => tell({ type: 'ready', port: (server.address() as AddressInfo).port, connected: shared?.connected ?? false }));
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

/** `n` more instances of the pool, in one process: they publish their statistics as a cluster's other gateways do. */
async function peersMain(n: number, upstream: string, redisUrl: string, namespace: string): Promise<void> {
  const { createPool, sync } = await import('../src/index.ts');
  for (let i = 0; i < n; i++) {
    const shared = sync({ redis: redisUrl, namespace });
    await shared.ready;
    createPool({ name: 'api', servers: [{ id: 'u', url: upstream }], sync: shared });
  }
  setInterval(() => undefined, 60_000);
  process.send?.({ type: 'ready', port: 0 });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

// ---- helpers -------------------------------------------------------------------------------------

interface Child {
  child: ChildProcess;
  port: number;
  /** Whether its sync handle is connected, as it last said. */
  connected: boolean;
}

async function start(cpus: string | undefined, args: string[]): Promise<Child> {
  const child = spawnPinned(cpus, process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const c: Child = { child, port: 0, connected: false };
  child.on('message', (m: { type?: string; up?: boolean }) => {
    if (m?.type === 'connection') c.connected = m.up === true;
  });
  const ready = await waitMessage<{ type: string; port: number; connected?: boolean }>(child, 'ready', 15_000);
  c.port = ready.port;
  c.connected ||= ready.connected === true;
  return c;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
  return performance.now() - t0;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Where the gateways, the upstream, the peers and the load generator run (undefined: unpinned), as bench/overhead.ts places them. */
function placement(pin: string): ReturnType<typeof pairedPlacement> {
  const place = pairedPlacement(pin, 'gateways');
  return place.proxy === undefined ? place : { ...place, description: `${place.description}; the peers with the upstream; redis-server not pinned` };
}

interface Options {
  rounds: number;
  duration: number;
  warmup: number;
  connections: number;
  peers: number;
  aa: boolean;
  idleRedis: boolean;
  outageRounds: number;
  outageDuration: number;
  only: 'cpu' | 'outage' | undefined;
  tool: Tool | 'auto';
  pin: string;
  out: string | undefined;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '5' },
      duration: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '3' },
      connections: { type: 'string', default: '50' },
      peers: { type: 'string', default: '2' },
      aa: { type: 'boolean', default: false },
      'idle-redis': { type: 'boolean', default: false },
      'outage-rounds': { type: 'string', default: '3' },
      'outage-duration': { type: 'string', default: '5' },
      only: { type: 'string' },
      tool: { type: 'string', default: 'auto' },
      pin: { type: 'string', default: 'auto' },
      out: { type: 'string' },
    },
  });
  const o: Options = {
    rounds: Number(values.rounds),
    duration: Number(values.duration),
    warmup: Number(values.warmup),
    connections: Number(values.connections),
    peers: Number(values.peers),
    aa: values.aa,
    idleRedis: values['idle-redis'],
    outageRounds: Number(values['outage-rounds']),
    outageDuration: Number(values['outage-duration']),
    only: values.only as Options['only'],
    tool: values.tool as Options['tool'],
    pin: values.pin,
    out: values.out,
  };
  const int = (n: number, min: number, max: number): boolean => Number.isInteger(n) && n >= min && n <= max;
  if (!int(o.rounds, 1, 20) || !int(o.outageRounds, 1, 20) || !int(o.peers, 0, 20) || !int(o.connections, 2, 1000))
    throw new Error('--rounds and --outage-rounds 1..20, --peers 0..20, --connections 2..1000');
  if (!(o.duration > 0 && o.duration <= 60 && o.outageDuration > 0 && o.outageDuration <= 60 && o.warmup >= 0 && o.warmup <= 30))
    throw new Error('--duration and --outage-duration 1..60 s, --warmup 0..30 s');
  if (o.only !== undefined && o.only !== 'cpu' && o.only !== 'outage') throw new Error(`--only must be cpu or outage, got "${o.only}"`);
  if (o.aa && o.idleRedis) throw new Error('--aa and --idle-redis do not go together');
  if (o.pin !== 'auto' && o.pin !== 'on' && o.pin !== 'off') throw new Error(`--pin must be auto, on or off, got "${o.pin}"`);
  return o;
}

// ---- part 1: CPU per request, sync on vs off -------------------------------------------------------

interface PairRound {
  cpu: { off: number; on: number };
  seconds: { off: number; on: number };
  requests: { off: number; on: number };
  rps: { off: number; on: number };
  errors: number;
}

async function cpuPart(
  o: Options,
  gen: LoadGenerator,
  place: ReturnType<typeof placement>,
  upstream: string,
  redisUrl: string,
  lines: string[],
): Promise<void> {
  const namespace = `bench-sync-${process.pid}`;
  const children: ChildProcess[] = [];
  try {
    if (o.peers > 0 && !o.aa) children.push((await start(place.other, [self, '--child-peers', String(o.peers), upstream, redisUrl, namespace])).child);
    const off = await start(place.proxy, [self, '--child-gateway', o.idleRedis ? 'idle-redis' : 'off', upstream, redisUrl, namespace]);
    const on = await start(place.proxy, [self, '--child-gateway', o.aa ? 'off' : 'on', upstream, redisUrl, namespace]);
    children.push(off.child, on.child);
    if (!o.aa && !on.connected) await until(() => on.connected, 10_000, 'the sync-on gateway connected to Redis');
    const half = Math.ceil(o.connections / 2);
    const load = (g: Child, duration: number): Promise<LoadResult> =>
      gen.run({ url: `http://127.0.0.1:${g.port}${PATH}`, connections: half, duration, threads: 1, cpus: place.other });
    if (o.warmup > 0) await Promise.all([load(off, o.warmup), load(on, o.warmup)]);
    const rounds: PairRound[] = [];
    const label = o.aa ? 'off (2nd)' : 'on';
    const offLabel = o.idleRedis ? 'off+idle redis' : 'off';
    for (let r = 0; r < o.rounds; r++) {
      const c0 = [cpuSeconds(off.child.pid), cpuSeconds(on.child.pid)];
      const [rOff, rOn] = await Promise.all([load(off, o.duration), load(on, o.duration)]);
      const c1 = [cpuSeconds(off.child.pid), cpuSeconds(on.child.pid)];
      if ([...c0, ...c1].some((c) => c === undefined)) throw new Error('CPU time is not readable here (/proc)');
      if (rOff.requests === 0 || rOn.requests === 0) throw new Error('a gateway served no requests');
      const sOff = (c1[0] as number) - (c0[0] as number);
      const sOn = (c1[1] as number) - (c0[1] as number);
      const round: PairRound = {
        cpu: { off: (sOff / rOff.requests) * 1e6, on: (sOn / rOn.requests) * 1e6 },
        seconds: { off: sOff, on: sOn },
        requests: { off: rOff.requests, on: rOn.requests },
        rps: { off: rOff.rps, on: rOn.rps },
        errors: rOff.errors + rOn.errors,
      };
      rounds.push(round);
      process.stderr.write(
        `[cpu ${r + 1}/${o.rounds}] ${offLabel} ${round.cpu.off.toFixed(1)} µs/req ${round.rps.off.toFixed(0)} req/s   ${label} ${round.cpu.on.toFixed(1)} µs/req ${round.rps.on.toFixed(0)} req/s   ratio ${(round.cpu.on / round.cpu.off).toFixed(3)}\n`,
      );
    }
    const ratios = rounds.map((x) => x.cpu.on / x.cpu.off);
    const ratio = median(ratios);
    const pooled = (k: 'off' | 'on'): number => (rounds.reduce((a, x) => a + x.seconds[k], 0) / rounds.reduce((a, x) => a + x.requests[k], 0)) * 1e6;
    lines.push(
      `## CPU per request: ${o.aa ? 'sync off vs sync off (A/A)' : o.idleRedis ? 'sync on vs sync off holding two idle node-redis connections' : 'sync on vs sync off'}`,
      '',
      `Paired: both gateways at once, each under ${half} connections; ${place.description}. ${o.rounds} rounds × ${o.duration} s after a ${o.warmup} s warm-up. ` +
        (o.aa ? '' : `Sync on: a private redis-server, ${o.peers} more instances of the pool in the namespace.`) +
        (o.idleRedis ? ' The sync-off gateway holds two node-redis connections to it (commands, and a subscriber on a quiet channel) it never uses.' : ''),
      '',
      `| Round | ${offLabel} µs/req | ${offLabel} req/s | ${label} µs/req | ${label} req/s | ratio |`,
      '| --: | --: | --: | --: | --: | --: |',
      ...rounds.map(
        (x, i) =>
          `| ${i + 1} | ${x.cpu.off.toFixed(1)} | ${x.rps.off.toFixed(0)} | ${x.cpu.on.toFixed(1)} | ${x.rps.on.toFixed(0)} | ${(x.cpu.on / x.cpu.off).toFixed(3)} |`,
      ),
      '',
      `Ratio ${label}/${offLabel} of CPU per request: median ${ratio.toFixed(3)} (range ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)}), ` +
        `${((ratio - 1) * 100).toFixed(1)}% ${ratio >= 1 ? 'more' : 'less'}; pooled over all rounds ${(pooled('on') / pooled('off')).toFixed(3)} ` +
        `(${pooled('off').toFixed(1)} vs ${pooled('on').toFixed(1)} µs/req). Errors: ${rounds.reduce((a, x) => a + x.errors, 0)}. ` +
        (o.idleRedis ? 'The target (at most 1.05) is for sync on vs a plain sync-off gateway.' : 'Target: at most 1.05.'),
      '',
    );
  } finally {
    await Promise.all(children.map((c) => stop(c)));
  }
}

// ---- part 2: p99 through an outage ----------------------------------------------------------------

const PHASES = ['up', 'killed', 'back', 'frozen'] as const;
type Phase = (typeof PHASES)[number];

/** One phase of one round: the gateway with sync on, and the control without, measured together. */
interface PhaseRun {
  on: LoadResult;
  control: LoadResult;
  /** The sync-on gateway's CPU time per request (µs). */
  cpu: number;
}

async function outagePart(o: Options, gen: LoadGenerator, place: ReturnType<typeof placement>, upstream: string, lines: string[]): Promise<void> {
  const runs: Record<Phase, PhaseRun[]> = { up: [], killed: [], back: [], frozen: [] };
  const noticed: number[] = [];
  const reconnected: number[] = [];
  const half = Math.ceil(o.connections / 2);
  for (let r = 0; r < o.outageRounds; r++) {
    const port = await freePort();
    let redis = await startRedis(port);
    const children: ChildProcess[] = [];
    try {
      const redisUrl = `redis://127.0.0.1:${port}`;
      const namespace = `bench-outage-${process.pid}-${r}`;
      const g = await start(place.proxy, [self, '--child-gateway', 'on', upstream, redisUrl, namespace]);
      children.push(g.child);
      const control = await start(place.proxy, [self, '--child-gateway', 'off', upstream, redisUrl, namespace]);
      children.push(control.child);
      if (!g.connected) await until(() => g.connected, 10_000, 'the gateway connected to Redis');
      const run = (c: Child, duration: number): Promise<LoadResult> =>
        gen.run({ url: `http://127.0.0.1:${c.port}${PATH}`, connections: half, duration, threads: 1, cpus: place.other });
      const load = async (phase: Phase): Promise<void> => {
        const c0 = cpuSeconds(g.child.pid);
        const [on, off] = await Promise.all([run(g, o.outageDuration), run(control, o.outageDuration)]);
        const c1 = cpuSeconds(g.child.pid);
        const cpu = c0 !== undefined && c1 !== undefined && on.requests > 0 ? ((c1 - c0) / on.requests) * 1e6 : Number.NaN;
        runs[phase].push({ on, control: off, cpu });
        process.stderr.write(
          `[outage ${r + 1}/${o.outageRounds}] ${phase.padEnd(6)} sync on: ${on.rps.toFixed(0)} req/s, p50 ${on.p50.toFixed(2)} ms, p99 ${on.p99.toFixed(2)} ms, ` +
            `${cpu.toFixed(1)} CPU µs/req, errors ${on.errors}; control: p99 ${off.p99.toFixed(2)} ms, errors ${off.errors}\n`,
        );
      };
      if (o.warmup > 0) await Promise.all([run(g, o.warmup), run(control, o.warmup)]);
      await load('up');
      await stopRedis(redis);
      noticed.push(await until(() => !g.connected, 5000, 'the gateway noticing the outage'));
      await load('killed');
      redis = await startRedis(port);
      reconnected.push(await until(() => g.connected, 10_000, 'the gateway reconnecting'));
      await load('back');
      pauseRedis(redis);
      await load('frozen');
      resumeRedis(redis);
    } finally {
      await Promise.all(children.map((c) => stop(c)));
      resumeRedis(redis);
      await stopRedis(redis);
    }
  }
  const med = (phase: Phase, f: (x: PhaseRun, round: number) => number): number => median(runs[phase].map(f));
  const p99 = (phase: Phase): number => med(phase, (x) => x.on.p99);
  /** The phase's p99 over the round's `up` p99, both corrected by the control's p99 of the same seconds. */
  const relative = (phase: Phase): number =>
    med(phase, (x, i) => x.on.p99 / x.control.p99 / ((runs.up[i] as PhaseRun).on.p99 / (runs.up[i] as PhaseRun).control.p99));
  lines.push(
    '## p99 through a Redis outage (sync on)',
    '',
    `${o.outageRounds} rounds (a fresh redis-server each) × 4 phases of ${o.outageDuration} s. The gateway with sync on and a control gateway without it ` +
      `run at the same moment, ${place.proxy === undefined ? 'not pinned' : `both on CPU ${place.proxy}`}, each under ${half} connections: the control's p99 ` +
      'shows what the machine did meanwhile. Medians over the rounds (each round in brackets). The gateway noticed the kill ' +
      `${noticed.map((x) => x.toFixed(0)).join(', ')} ms after it and reconnected ${reconnected.map((x) => x.toFixed(0)).join(', ')} ms after the restart (node-redis's backoff).`,
    '',
    '| Phase | req/s | p50 ms | p99 ms | p99 vs up | control p99 ms | p99 vs up, control-corrected | CPU µs/req | errors |',
    '| --- | --: | --: | --: | --: | --: | --: | --: | --: |',
    ...PHASES.map((phase) => {
      const rs = runs[phase];
      const errors = rs.reduce((a, x) => a + x.on.errors + x.control.errors, 0);
      return (
        `| ${phase} | ${med(phase, (x) => x.on.rps).toFixed(0)} | ${med(phase, (x) => x.on.p50).toFixed(2)} | ${p99(phase).toFixed(2)} (${rs.map((x) => x.on.p99.toFixed(1)).join(', ')}) ` +
        `| ${(p99(phase) / p99('up')).toFixed(2)}x | ${med(phase, (x) => x.control.p99).toFixed(2)} (${rs.map((x) => x.control.p99.toFixed(1)).join(', ')}) ` +
        `| ${relative(phase).toFixed(2)}x | ${med(phase, (x) => x.cpu).toFixed(1)} | ${errors} |`
      );
    }),
    '',
    `p99 ratios to up (control-corrected): killed ${relative('killed').toFixed(2)}x, back ${relative('back').toFixed(2)}x, frozen ${relative('frozen').toFixed(2)}x; ` +
      `raw: killed ${(p99('killed') / p99('up')).toFixed(2)}x, back ${(p99('back') / p99('up')).toFixed(2)}x, frozen ${(p99('frozen') / p99('up')).toFixed(2)}x (target: within 2x).`,
    '',
  );
}

// ---- main ----------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = options();
  if (!hasCommand('redis-server')) throw new Error('redis-server is not on PATH');
  const gen = loadGenerator(o.tool);
  if (gen === undefined) throw new Error(o.tool === 'wrk' ? 'wrk is not installed' : 'neither wrk nor autocannon can run');
  const place = placement(o.pin);
  const lines = ['# What sync costs: CPU per request, and p99 through a Redis outage', ''];
  const children: ChildProcess[] = [];
  let redis: ChildProcess | undefined;
  try {
    const up = await start(place.other, [resolve(here, 'upstream.ts')]);
    children.push(up.child);
    const upstream = `http://127.0.0.1:${up.port}`;
    if (o.only !== 'outage') {
      const port = await freePort();
      redis = await startRedis(port);
      await cpuPart(o, gen, place, upstream, `redis://127.0.0.1:${port}`, lines);
      await stopRedis(redis);
    }
    if (o.only !== 'cpu') await outagePart(o, gen, place, upstream, lines);
    lines.push(
      ...machine([
        ['Load generator', `${gen.tool} ${gen.version}`],
        ['Packages', `@redis/client ${versionOf('@redis/client')}`],
      ]).map(([k, v]) => `- ${k}: ${v}`),
    );
    const report = `${lines.join('\n')}\n`;
    process.stdout.write(report);
    if (o.out !== undefined) writeFileSync(o.out, report);
  } finally {
    await Promise.all(children.map((c) => stop(c)));
    if (redis !== undefined) await stopRedis(redis);
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === self) {
  const i = process.argv.indexOf('--child-gateway');
  const j = process.argv.indexOf('--child-peers');
  const [a, b, c, d] = process.argv.slice((i !== -1 ? i : j) + 1);
  if (i !== -1) await gatewayMain(a as string, b as string, c as string, d as string);
  else if (j !== -1) await peersMain(Number(a), b as string, c as string, d as string);
  else
    await main().catch((err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
      process.exitCode = 1;
    });
}
