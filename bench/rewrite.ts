// What rewrite() costs on the proxy path: `chain(rewrite(rules), balance(pool))`
// with 100 rules that do not match and a 101st that does, against
// `chain(balance(pool))`, on loopback, in one run. Gateways and the upstream run
// in separate processes; wrk (or autocannon) drives them in alternation for a
// bounded time; the figure is the ratio of requests per second.
//
//   node bench/rewrite.ts [--duration 5] [--rounds 3] [--connections 50] [--tool auto|wrk|autocannon]
import { fork, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadGenerator } from './lib/load.ts';
import { machine } from './lib/machine.ts';
import { stop, waitMessage } from './lib/proc.ts';

const here = dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);

/** 100 rules that never match the benchmark's path, then the one that does. */
export async function benchRules() {
  const { rewrite } = await import('../src/index.ts');
  type Rule = Parameters<typeof rewrite>[0][number];
  const rules: Rule[] = [];
  for (let i = 0; i < 100; i++) {
    rules.push(i % 2 === 0 ? { rewrite: `^/legacy${i}/(.*)$`, replacement: `/v${i}/$1`, flag: 'break' } : { from: `/old${i}/:id`, to: `/new${i}/:id`, flag: 'break' });
  }
  rules.push({ rewrite: '^/api/(.*)$', replacement: '/v2/$1', flag: 'break' });
  return rewrite(rules);
}

async function gateway(kind: string, upstream: string): Promise<void> {
  const { balance, chain, createPool } = await import('../src/index.ts');
  const pool = createPool({ servers: [{ url: upstream }], agent: { maxFreeSockets: 64 } });
  const listener = kind === 'rewrite' ? chain(await benchRules(), balance(pool)) : chain(balance(pool));
  const server = createServer(listener);
  server.keepAliveTimeout = 120_000;
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port }));
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

async function start(file: string, args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(file, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const { port } = await waitMessage<{ type: string; port: number }>(child, 'ready', 15_000);
  return { child, port };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '50' },
      tool: { type: 'string', default: 'auto' },
    },
  });
  const duration = Number(values.duration);
  const rounds = Number(values.rounds);
  const connections = Number(values.connections);
  if (!(duration > 0 && duration <= 60 && rounds >= 1 && rounds <= 10 && connections >= 1)) throw new Error('bad --duration (1..60), --rounds (1..10) or --connections');
  const gen = loadGenerator(values.tool as 'auto' | 'wrk' | 'autocannon');
  if (gen === undefined) throw new Error('neither wrk nor autocannon can run');

  const children: ChildProcess[] = [];
  try {
    const up = await start(resolve(here, 'upstream.ts'), []);
    children.push(up.child);
    const upstream = `http://127.0.0.1:${up.port}`;
    const none = await start(self, ['--gateway', 'none', upstream]);
    children.push(none.child);
    const rules = await start(self, ['--gateway', 'rewrite', upstream]);
    children.push(rules.child);
    const path = '/api/items/42?x=1';
    const targets = { none: `http://127.0.0.1:${none.port}${path}`, rewrite: `http://127.0.0.1:${rules.port}${path}` };
    const rps: Record<'none' | 'rewrite', number[]> = { none: [], rewrite: [] };
    const errors: Record<'none' | 'rewrite', number> = { none: 0, rewrite: 0 };
    // Warm-up, then alternate the order each round so drift hits both sides alike.
    for (const url of Object.values(targets)) await gen.run({ url, connections, duration: 1, threads: 1, cpus: undefined });
    for (let r = 0; r < rounds; r++) {
      const order: Array<'none' | 'rewrite'> = r % 2 === 0 ? ['none', 'rewrite'] : ['rewrite', 'none'];
      for (const k of order) {
        const res = await gen.run({ url: targets[k], connections, duration, threads: 1, cpus: undefined });
        rps[k].push(res.rps);
        errors[k] += res.errors;
      }
    }
    const a = median(rps.none);
    const b = median(rps.rewrite);
    const ratio = b / a;
    for (const [k, v] of machine()) console.log(`${k}: ${v}`);
    console.log(`tool: ${gen.tool} ${gen.version}, ${connections} connections, ${rounds} rounds x ${duration}s each, path ${path}`);
    console.log(`chain(balance(pool))                       ${a.toFixed(0)} req/s (rounds: ${rps.none.map((x) => x.toFixed(0)).join(', ')}; errors ${errors.none})`);
    console.log(`chain(rewrite(101 rules), balance(pool))   ${b.toFixed(0)} req/s (rounds: ${rps.rewrite.map((x) => x.toFixed(0)).join(', ')}; errors ${errors.rewrite})`);
    console.log(`ratio rewrite/none: ${ratio.toFixed(3)} (${((1 - ratio) * 100).toFixed(1)}% slower)`);
  } finally {
    await Promise.all(children.map((c) => stop(c)));
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === self) {
  const i = process.argv.indexOf('--gateway');
  if (i !== -1) await gateway(process.argv[i + 1]!, process.argv[i + 2]!);
  else await main();
}
