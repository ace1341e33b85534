// What a middleware in front of balance() costs on the proxy path, against
// `chain(balance(pool))`, on loopback, in one run. Gateways and the upstream run
// in separate processes. Subjects (--subject):
//   rewrite  chain(rewrite(rules), balance(pool)): 100 rules that do not match, a 101st that does
//   sticky   chain(sticky(pool, { cookie }), balance(pool)): every request carries the cookie of
//            one of three servers (routes a, b, c on the same upstream) and gets a Set-Cookie back;
//            the baseline balances over the same three servers
//   learn    chain(sticky(pool, { learn }), balance(pool)) with the in-memory session store: every
//            request looks its session up (one learned session bound to b)
//   aa       two copies of chain(balance(pool)): the ratio the method reports for no difference
//
// Default (paired): both gateways run at the same moment, pinned together on the
// proxy CPU (taskset; CPU 1, with the upstream and the load generator on CPU 0
// on a 2-core machine), each driven by its own wrk (or autocannon) with half the
// connections; the figure is each gateway's CPU time per request (process CPU
// time from /proc / requests served) and their ratio per round. Both sides see
// the same machine in the same seconds, so the ratio repeats within a few
// percent where req/s drifts 10-30% between rounds (as bench/run.ts --paired).
//
// --rps: the former measurement — the load generator drives the gateways in
// alternation, unpinned, and the figure is the ratio of requests per second.
//
//   node bench/overhead.ts [--subject rewrite|sticky|learn] [--duration 5] [--rounds 5] [--warmup 5]
//                          [--connections 50] [--tool auto|wrk|autocannon] [--pin auto|on|off] [--rps]
import { fork, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadGenerator, type LoadGenerator, type LoadResult } from './lib/load.ts';
import { machine } from './lib/machine.ts';
import { cpuSeconds, pairedPlacement, spawnPinned, stop, waitMessage } from './lib/proc.ts';

const here = dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);

/** 100 rules that never match the benchmark's path, then the one that does. */
export async function benchRules() {
  const { rewrite } = await import('../src/index.ts');
  type Rule = Parameters<typeof rewrite>[0][number];
  const rules: Rule[] = [];
  for (let i = 0; i < 100; i++) {
    rules.push(
      i % 2 === 0 ? { rewrite: `^/legacy${i}/(.*)$`, replacement: `/v${i}/$1`, flag: 'break' } : { from: `/old${i}/:id`, to: `/new${i}/:id`, flag: 'break' },
    );
  }
  rules.push({ rewrite: '^/api/(.*)$', replacement: '/v2/$1', flag: 'break' });
  return rewrite(rules);
}

type Subject = 'rewrite' | 'sticky' | 'learn' | 'aa';
const SUBJECTS: readonly Subject[] = ['rewrite', 'sticky', 'learn', 'aa'];
/** The session every sticky/learn request carries (learn: the session the upstream hands out is learned once, at warm-up). */
const STICKY_HEADERS: Record<Subject, Record<string, string> | undefined> = {
  rewrite: undefined,
  sticky: { cookie: 'srv_id=b' },
  learn: { cookie: 'sid=bench-session' },
  aa: undefined,
};

async function gateway(kind: string, subject: Subject, upstream: string): Promise<void> {
  const { balance, chain, createPool, sticky } = await import('../src/index.ts');
  const agent = { maxFreeSockets: 64 };
  // sticky and learn: three servers (routes a, b, c) on the one upstream, the baseline too.
  const pool =
    subject === 'rewrite' || subject === 'aa'
      ? createPool({ servers: [{ url: upstream }], agent })
      : createPool({ servers: ['a', 'b', 'c'].map((route) => ({ url: upstream, id: route, route })), agent });
  let listener;
  if (kind === 'none' || subject === 'aa') listener = chain(balance(pool));
  else if (subject === 'rewrite') listener = chain(await benchRules(), balance(pool));
  else if (subject === 'sticky') listener = chain(sticky(pool, { cookie: { expires: '1h', path: '/', httpOnly: true } }), balance(pool));
  else {
    // The first response creates the session (as nginx's client-initiated `create=$cookie_sid`);
    // every later request only looks it up.
    let created = false;
    const create = (): string | undefined => {
      if (created) return undefined;
      created = true;
      return 'bench-session';
    };
    listener = chain(sticky(pool, { learn: { create, lookup: { cookie: 'sid' } } }), balance(pool));
  }
  const server = createServer(listener);
  server.keepAliveTimeout = 120_000;
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port }));
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

async function start(file: string, args: string[], cpus?: string): Promise<{ child: ChildProcess; port: number }> {
  const child =
    cpus === undefined
      ? fork(file, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      : spawnPinned(cpus, process.execPath, [file, ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const { port } = await waitMessage<{ type: string; port: number }>(child, 'ready', 15_000);
  return { child, port };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

type Kind = 'none' | 'subject';
const SUBJECT_LABEL: Record<Subject, string> = {
  rewrite: 'chain(rewrite(101 rules), balance(pool))',
  sticky: 'chain(sticky(pool, { cookie }), balance(pool))',
  learn: 'chain(sticky(pool, { learn }), balance(pool))',
  aa: "chain(balance(pool)), a second copy (A/A: the method's own bias)",
};
let LABEL: Record<Kind, string> = { none: 'chain(balance(pool))', subject: SUBJECT_LABEL.rewrite };
const PATH = '/api/items/42?x=1';

/** Where the gateways, the upstream and the load generator run (undefined: unpinned). */
const placement = (pin: string) => pairedPlacement(pin, 'both gateways');

interface Options {
  duration: number;
  rounds: number;
  warmup: number;
  connections: number;
  tool: 'auto' | 'wrk' | 'autocannon';
  pin: string;
  rps: boolean;
  subject: Subject;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '5' },
      rounds: { type: 'string' },
      warmup: { type: 'string', default: '5' },
      connections: { type: 'string', default: '50' },
      tool: { type: 'string', default: 'auto' },
      pin: { type: 'string', default: 'auto' },
      rps: { type: 'boolean', default: false },
      paired: { type: 'boolean', default: false },
      subject: { type: 'string', default: 'rewrite' },
    },
  });
  if (!SUBJECTS.includes(values.subject as Subject)) throw new Error(`--subject must be one of ${SUBJECTS.join(', ')}, got "${values.subject}"`);
  const o: Options = {
    duration: Number(values.duration),
    rounds: Number(values.rounds ?? (values.rps ? '3' : '5')),
    warmup: Number(values.warmup),
    connections: Number(values.connections),
    tool: values.tool as Options['tool'],
    pin: values.pin,
    rps: values.rps,
    subject: values.subject as Subject,
  };
  LABEL = { none: 'chain(balance(pool))', subject: SUBJECT_LABEL[o.subject] };
  const width = Math.max(LABEL.none.length, LABEL.subject.length);
  LABEL = { none: LABEL.none.padEnd(width), subject: LABEL.subject.padEnd(width) };
  if (!(o.duration > 0 && o.duration <= 60 && o.rounds >= 1 && o.rounds <= 10 && o.warmup >= 0 && o.warmup <= 30 && o.connections >= 2)) {
    throw new Error('bad --duration (1..60), --rounds (1..10), --warmup (0..30) or --connections (>= 2)');
  }
  if (o.pin !== 'auto' && o.pin !== 'on' && o.pin !== 'off') throw new Error(`--pin must be auto, on or off, got "${o.pin}"`);
  if (o.rps && values.paired) throw new Error('--rps and --paired exclude each other');
  const gen = loadGenerator(o.tool);
  if (gen === undefined) throw new Error('neither wrk nor autocannon can run');
  if (o.rps) await measureRps(o, gen);
  else await measurePaired(o, gen);
}

/** Requests per second, the gateways driven in alternation (noisy on small VMs). */
async function measureRps(o: Options, gen: LoadGenerator): Promise<void> {
  const { duration, rounds, connections } = o;
  const children: ChildProcess[] = [];
  try {
    const up = await start(resolve(here, 'upstream.ts'), []);
    children.push(up.child);
    const upstream = `http://127.0.0.1:${up.port}`;
    const none = await start(self, ['--gateway', 'none', o.subject, upstream]);
    children.push(none.child);
    const subject = await start(self, ['--gateway', 'subject', o.subject, upstream]);
    children.push(subject.child);
    const targets = { none: `http://127.0.0.1:${none.port}${PATH}`, subject: `http://127.0.0.1:${subject.port}${PATH}` };
    const headers = STICKY_HEADERS[o.subject];
    const rps: Record<Kind, number[]> = { none: [], subject: [] };
    const errors: Record<Kind, number> = { none: 0, subject: 0 };
    // Warm-up, then alternate the order each round so drift hits both sides alike.
    for (const url of Object.values(targets)) await gen.run({ url, connections, duration: 1, threads: 1, cpus: undefined, ...(headers ? { headers } : {}) });
    for (let r = 0; r < rounds; r++) {
      const order: Kind[] = r % 2 === 0 ? ['none', 'subject'] : ['subject', 'none'];
      for (const k of order) {
        const res = await gen.run({ url: targets[k], connections, duration, threads: 1, cpus: undefined, ...(headers ? { headers } : {}) });
        rps[k].push(res.rps);
        errors[k] += res.errors;
      }
    }
    const a = median(rps.none);
    const b = median(rps.subject);
    const ratio = b / a;
    for (const [k, v] of machine()) console.log(`${k}: ${v}`);
    console.log(`tool: ${gen.tool} ${gen.version}, ${connections} connections, ${rounds} rounds x ${duration}s each, path ${PATH}`);
    console.log(`${LABEL.none}     ${a.toFixed(0)} req/s (rounds: ${rps.none.map((x) => x.toFixed(0)).join(', ')}; errors ${errors.none})`);
    console.log(`${LABEL.subject}     ${b.toFixed(0)} req/s (rounds: ${rps.subject.map((x) => x.toFixed(0)).join(', ')}; errors ${errors.subject})`);
    console.log(`ratio ${o.subject}/none: ${ratio.toFixed(3)} (${((1 - ratio) * 100).toFixed(1)}% slower)`);
  } finally {
    await Promise.all(children.map((c) => stop(c)));
  }
}

interface PairRound {
  cpu: Record<Kind, number>;
  /** CPU seconds and requests of the round, for the pooled ratio. */
  seconds: Record<Kind, number>;
  requests: Record<Kind, number>;
  rps: Record<Kind, number>;
  errors: number;
}

/**
 * CPU time per request of both gateways, measured in the same seconds on the
 * same CPU, each under half the connections (as bench/run.ts --paired).
 */
async function measurePaired(o: Options, gen: LoadGenerator): Promise<void> {
  const place = placement(o.pin);
  const half = Math.ceil(o.connections / 2);
  const children: ChildProcess[] = [];
  try {
    const up = await start(resolve(here, 'upstream.ts'), [], place.other);
    children.push(up.child);
    const upstream = `http://127.0.0.1:${up.port}`;
    const gw: Record<Kind, { child: ChildProcess; port: number }> = {
      none: await start(self, ['--gateway', 'none', o.subject, upstream], place.proxy),
      subject: await start(self, ['--gateway', 'subject', o.subject, upstream], place.proxy),
    };
    children.push(gw.none.child, gw.subject.child);
    const kinds: Kind[] = ['none', 'subject'];
    const headers = STICKY_HEADERS[o.subject];
    const load = (k: Kind, duration: number) =>
      gen.run({ url: `http://127.0.0.1:${gw[k].port}${PATH}`, connections: half, duration, threads: 1, cpus: place.other, ...(headers ? { headers } : {}) });
    if (o.warmup > 0) await Promise.all(kinds.map((k) => load(k, o.warmup)));
    const rounds: PairRound[] = [];
    for (let r = 0; r < o.rounds; r++) {
      const c0 = kinds.map((k) => cpuSeconds(gw[k].child.pid));
      const [rn, rr] = (await Promise.all(kinds.map((k) => load(k, o.duration)))) as [LoadResult, LoadResult];
      const c1 = kinds.map((k) => cpuSeconds(gw[k].child.pid));
      if ([...c0, ...c1].some((c) => c === undefined)) throw new Error('CPU time is not readable here (/proc)');
      if (rn.requests === 0 || rr.requests === 0) throw new Error('a gateway served no requests');
      const round: PairRound = {
        cpu: { none: ((c1[0]! - c0[0]!) / rn.requests) * 1e6, subject: ((c1[1]! - c0[1]!) / rr.requests) * 1e6 },
        seconds: { none: c1[0]! - c0[0]!, subject: c1[1]! - c0[1]! },
        requests: { none: rn.requests, subject: rr.requests },
        rps: { none: rn.rps, subject: rr.rps },
        errors: rn.errors + rr.errors,
      };
      rounds.push(round);
      console.log(
        `[${r + 1}/${o.rounds}] none ${round.cpu.none.toFixed(1)} µs/req ${round.rps.none.toFixed(0)} req/s   ${o.subject} ${round.cpu.subject.toFixed(1)} µs/req ${round.rps.subject.toFixed(0)} req/s   ratio ${(round.cpu.subject / round.cpu.none).toFixed(3)}`,
      );
    }
    const ratios = rounds.map((x) => x.cpu.subject / x.cpu.none);
    const ratio = median(ratios);
    const pooledCpu = (k: Kind): number => (rounds.reduce((a, x) => a + x.seconds[k], 0) / rounds.reduce((a, x) => a + x.requests[k], 0)) * 1e6;
    const pooled = pooledCpu('subject') / pooledCpu('none');
    // The round with the median ratio, so that the two CPU figures printed belong together.
    const mid = [...rounds].sort((x, y) => x.cpu.subject / x.cpu.none - y.cpu.subject / y.cpu.none)[(rounds.length - 1) >> 1]!;
    const fmt = (k: Kind): string =>
      `${LABEL[k]}   ${mid.cpu[k].toFixed(1)} CPU µs/req at ${mid.rps[k].toFixed(0)} req/s (median-ratio round; rounds: ${rounds.map((x) => x.cpu[k].toFixed(1)).join(', ')})`;
    for (const [k, v] of machine()) console.log(`${k}: ${v}`);
    console.log(`mode: paired CPU per request; ${place.description}`);
    console.log(`tool: ${gen.tool} ${gen.version}, ${half}+${half} connections, ${o.rounds} rounds x ${o.duration}s each (warm-up ${o.warmup}s), path ${PATH}`);
    console.log(fmt('none'));
    console.log(fmt('subject'));
    console.log(
      `ratio ${o.subject}/none (CPU per request): ${ratio.toFixed(3)} (range ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)}) => ${((ratio - 1) * 100).toFixed(1)}% more CPU per request, ${((1 - 1 / ratio) * 100).toFixed(1)}% lower CPU-bound throughput; errors ${rounds.reduce((a, x) => a + x.errors, 0)}`,
    );
    console.log(
      `pooled over all rounds (total CPU / total requests): none ${pooledCpu('none').toFixed(1)} µs/req, ${o.subject} ${pooledCpu('subject').toFixed(1)} µs/req, ratio ${pooled.toFixed(3)} (${((pooled - 1) * 100).toFixed(1)}% more CPU per request)`,
    );
  } finally {
    await Promise.all(children.map((c) => stop(c)));
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === self) {
  const i = process.argv.indexOf('--gateway');
  if (i !== -1) await gateway(process.argv[i + 1]!, process.argv[i + 2] as Subject, process.argv[i + 3]!);
  else await main();
}
