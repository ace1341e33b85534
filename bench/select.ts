// Micro-benchmark of server selection: the cost of choosing a server with each
// balancing method for pools of 3, 100, 1,000 and 10,000 servers. One operation is what
// balance() does around a request's first attempt, through the pool's internals:
// selection(), select(), and finish() of a successful response. No sockets.
// Each case runs in a fresh process, so the JIT sees one method, as in an app
// with one pool (cases run in one process slow each other down by making the
// shared code polymorphic). The tables give microseconds per operation, and how many times the
// cost at 3 servers it is at 1,000 (issue 15: round robin, least-conn and least-time within 5x).
//
//   node bench/select.ts [--time 300] [--repeat 3] [--sizes 3,100,1000,10000] [--methods round-robin,hash] [--inflight 0,50]
//   npm run bench -- --select [same options]
import { execFileSync } from 'node:child_process';
import type { IncomingMessage } from 'node:http';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Exchange } from '../src/core/exchange.ts';
import { createPool, type MethodOption } from '../src/index.ts';
import { internals } from '../src/pool/internal.ts';
import type { Peer } from '../src/pool/peer.ts';
import { machine } from './lib/machine.ts';

const METHODS: Array<[string, MethodOption]> = [
  ['round-robin', 'round-robin'],
  ['least-conn', 'least-conn'],
  ['least-time', 'least-time'],
  ['hash', { name: 'hash', key: (req) => req.url ?? '' }],
  ['hash consistent', { name: 'hash', key: (req) => req.url ?? '', consistent: true }],
  ['ip-hash', 'ip-hash'],
  ['random', 'random'],
  ['random-two', 'random-two'],
];

const { values } = parseArgs({
  options: {
    time: { type: 'string' },
    sizes: { type: 'string' },
    methods: { type: 'string' },
    inflight: { type: 'string' },
    case: { type: 'string' },
    repeat: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help === true) {
  console.log(`usage: node bench/select.ts [options]      (npm run bench -- --select [options])
  --time <ms>         measuring time per case and process           default 300
  --repeat <n>        processes per case; the fastest is reported   default 3
  --sizes <a,b>       pool sizes                                     default 3,100,1000,10000
  --methods <a,b>     methods (${METHODS.map(([n]) => n.replace(' ', '-')).join(', ')})
  --inflight <a,b>    requests kept in flight while selecting        default 0,50`);
  process.exit(0);
}
const list = (text: string | undefined, fallback: string): string[] =>
  (text ?? fallback)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
const time = Number(values.time ?? 300);
const repeat = Number(values.repeat ?? 3);
const sizes = list(values.sizes, '3,100,1000,10000').map(Number);
const inflights = list(values.inflight, '0,50').map(Number);
const wanted = list(values.methods, METHODS.map(([n]) => n.replace(' ', '-')).join(','));
const methods = METHODS.filter(([n]) => wanted.includes(n.replace(' ', '-')));
if (!(time > 0) || !(repeat >= 1) || sizes.some((n) => !(n >= 1)) || inflights.some((n) => !(n >= 0)) || methods.length === 0) {
  console.error('bad options; see --help');
  process.exit(2);
}

// Request-like inputs, cycled: hash keys differ by URL; ip-hash uses the first
// three octets of IPv4 (nginx), so they vary those.
const KEYS = 4096;
const reqs = Array.from({ length: KEYS }, (_, i) => ({ url: `/items/${i}?page=${i % 7}`, headers: {}, socket: {} }) as unknown as IncomingMessage);
const exs = Array.from({ length: KEYS }, (_, i) => ({ clientAddress: `10.${(i >> 8) & 255}.${i & 255}.${i % 250}` }) as unknown as Exchange);
const DONE = { header: 1, response: 1, inflightDone: false };
let sink = 0;

/** CPU time of this thread, in ns. */
function cpuNs(): number {
  const u = process.threadCpuUsage();
  return (u.user + u.system) * 1000;
}

/** Nanoseconds of CPU time per operation for one method, pool size and in-flight window. */
function measure(method: MethodOption, servers: number, inflight: number): number {
  const pool = createPool({
    method,
    servers: Array.from({ length: servers }, (_, i) => ({ url: `http://10.0.${i >> 8}.${i & 255}:8080` })),
  });
  const inner = internals(pool);
  const window: Array<Peer | undefined> = new Array(Math.max(1, inflight)).fill(undefined);
  let i = 0;
  const run = (n: number): void => {
    for (let k = 0; k < n; k++) {
      const j = i++ & (KEYS - 1);
      if (inflight > 0) {
        // The oldest request in flight ends, then a new one is placed.
        const slot = i % inflight;
        const old = window[slot];
        if (old !== undefined) inner.finish(old, 'ok', DONE, 200);
        const peer = inner.select(inner.selection(reqs[j], exs[j]))!;
        sink += peer.target.port;
        window[slot] = peer;
      } else {
        const peer = inner.select(inner.selection(reqs[j], exs[j]))!;
        sink += peer.target.port;
        inner.finish(peer, 'ok', DONE, 200);
      }
    }
  };
  // Warm up until every server has been chosen a few times: a server's first choices pay one-off
  // costs (its statistics objects take their first response code, its fields their first values)
  // that an application pays once, and a pool of 10,000 servers takes a while to go round. Then
  // measure: CPU time of this thread over the whole window, per operation (time the process spends
  // waiting for a core on a busy machine is not the method's; the thread's CPU clock moves in steps
  // of up to a few ms on Linux, too coarse to time small batches one by one).
  const warmStart = performance.now();
  const warmEnd = warmStart + Math.min(200, time / 2);
  for (let ops = 0; performance.now() < warmEnd || (ops < 4 * servers && performance.now() < warmStart + 5000); ops += 256) run(256);
  const end = performance.now() + time;
  const start = cpuNs();
  let ops = 0;
  for (; performance.now() < end; ops += 256) run(256);
  const ns = (cpuNs() - start) / ops;
  for (const p of window) if (p !== undefined) inner.finish(p, 'ok', DONE, 200);
  pool.close();
  return ns;
}

// A child process measures one case: --case <method>,<servers>,<inflight>.
if (values.case !== undefined) {
  const [name, servers, inflight] = values.case.split(',');
  const method = METHODS.find(([n]) => n.replace(' ', '-') === name)?.[1];
  if (method === undefined) throw new Error(`unknown method ${name}`);
  process.stdout.write(JSON.stringify({ ns: measure(method, Number(servers), Number(inflight)), sink: sink % 2 }));
  process.exit(0);
}

/** The fastest of `repeat` processes: interference from other work only ever adds time. */
function runCase(name: string, servers: number, inflight: number): number {
  let best = Infinity;
  for (let i = 0; i < repeat; i++) best = Math.min(best, runOnce(name, servers, inflight));
  return best;
}

function runOnce(name: string, servers: number, inflight: number): number {
  const out = execFileSync(
    process.execPath,
    [fileURLToPath(import.meta.url), '--time', String(time), '--case', `${name.replace(' ', '-')},${servers},${inflight}`],
    {
      encoding: 'utf8',
      timeout: 60_000 + time * 10,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  return (JSON.parse(out) as { ns: number }).ns;
}

/** Microseconds per operation, three significant digits. */
function cell(ns: number): string {
  const us = ns / 1000;
  return `${us < 10 ? us.toFixed(2) : us < 100 ? us.toFixed(1) : us.toFixed(0)} µs`;
}

function markdown(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(rows[0]!), rule, ...rows.slice(1).map(line)].join('\n');
}

console.log('switchyard server-selection micro-benchmark');
for (const [k, v] of machine()) console.log(`  ${`${k}:`.padEnd(12)} ${v}`);
console.log(
  `  one operation = pool.selection() + pool.select() + pool.finish(), in µs of CPU time over ${time} ms after a warm-up in which every server is chosen, fastest of ${repeat} processes per case\n`,
);

// the growth the issue bounds: cost at 1,000 servers over cost at 3
const ratio = sizes.includes(3) && sizes.includes(1000);
for (const inflight of inflights) {
  const rows = [['Method', ...sizes.map((n) => `${n.toLocaleString('en-US')} server${n === 1 ? '' : 's'}`), ...(ratio ? ['1,000 / 3'] : [])]];
  for (const [name] of methods) {
    const row = [name];
    const ns = new Map<number, number>();
    for (const n of sizes) {
      ns.set(n, runCase(name, n, inflight));
      row.push(cell(ns.get(n)!));
    }
    if (ratio) row.push(`${(ns.get(1000)! / ns.get(3)!).toFixed(1)}x`);
    rows.push(row);
  }
  console.log(inflight === 0 ? 'Each request finishes before the next is placed:' : `${inflight} requests in flight (each operation finishes the oldest):`);
  console.log(`${markdown(rows)}\n`);
}
