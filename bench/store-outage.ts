// Latency of a gateway whose shared stores go down: chain(cache(), sticky(pool, { learn }), balance(pool))
// with both stores in memory, then on a private Redis, then with that Redis killed.
//
//   memory      cache() and sticky learn on their default in-memory stores
//   redis-up    both on @keyv/redis, a private redis-server on a free loopback port
//   redis-down  the same gateway after that redis-server was killed (SIGKILL)
//
// Every request carries a learned session cookie (a lookup in the session store) and is not
// cacheable (the upstream sends no caching headers), so each one reads both stores and goes
// upstream: the figures compare what the stores cost per request, and what an outage adds.
// The target: p99 with Redis down within 2x the p99 with the stores in memory.
//
// Each round runs the three phases in that order, with a new gateway and a new redis-server; the
// report gives each phase's median over the rounds (this machine's noise is large).
//
//   node bench/store-outage.ts [--rounds 3] [--duration 5] [--connections 50] [--tool auto|wrk|autocannon]
//                              [--store-timeout 1s] [--plain-client] [--out file.md]
//
// --plain-client creates the Redis stores as `new KeyvRedis(url)` (node-redis's offline queue
// on) instead of the recommended `new KeyvRedis({ url, disableOfflineQueue: true })`.
// Needs redis-server on PATH. Everything runs on loopback and is stopped at the end.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadGenerator, type LoadResult, type Tool } from './lib/load.ts';
import { machine, versionOf } from './lib/machine.ts';
import { hasCommand, stop, waitMessage } from './lib/proc.ts';
// The tests' loopback helpers: a free port, and a private redis-server started and killed.
import { deadPort as freePort } from '../test/helpers.ts';
import { startRedis, stopRedis as killRedis } from '../test/redis.ts';

const self = fileURLToPath(import.meta.url);
const BODY = Buffer.alloc(1024, 'x');
const SESSION = 'bench-session';

// ---- upstream process --------------------------------------------------------

function upstreamMain(): void {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const headers: Record<string, string | number> = { 'content-type': 'text/plain', 'content-length': BODY.length };
      // /login starts the session every other request then presents.
      if (req.url?.startsWith('/login')) headers['set-cookie'] = `sid=${SESSION}; Path=/`;
      res.writeHead(200, headers);
      res.end(BODY);
    });
  });
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 121_000;
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port }));
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

// ---- helpers -------------------------------------------------------------------

function get(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

// ---- gateway -------------------------------------------------------------------

interface Gateway {
  url: string;
  stores: Array<{ breakerState: string; on(event: 'storeDown' | 'storeUp', fn: () => void): unknown }>;
  storeErrors: () => number;
  close(): Promise<void>;
}

async function startGateway(upstream: string, redisUrl: string | undefined, storeTimeout: string, plainClient: boolean): Promise<Gateway> {
  const { balance, cache, chain, createPool, sticky } = await import('../src/index.ts');
  const pool = createPool({ servers: [{ url: upstream }], agent: { maxFreeSockets: 64 } });
  let stores: { cache?: unknown; learn?: unknown } = {};
  if (redisUrl !== undefined) {
    const { default: KeyvRedis } = await import('@keyv/redis');
    const client = () => (plainClient ? new KeyvRedis(redisUrl) : new KeyvRedis({ url: redisUrl, disableOfflineQueue: true }));
    stores = { cache: client(), learn: client() };
  }
  const c = cache({ storeTimeout, ...(stores.cache !== undefined ? { store: stores.cache as never, namespace: `bench-${process.pid}` } : {}) });
  const st = sticky(pool, {
    learn: {
      create: { cookie: 'sid' },
      lookup: { cookie: 'sid' },
      storeTimeout,
      ...(stores.learn !== undefined ? { store: stores.learn as never, namespace: `bench-sticky-${process.pid}` } : {}),
    },
  });
  let errors = 0;
  c.store.on('storeError', () => errors++);
  st.store!.on('storeError', () => errors++);
  const server: Server = createServer(chain(c, st, balance(pool)));
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 121_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    stores: [c.store, st.store!],
    storeErrors: () => errors,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all([c.close(), st.close()]);
      pool.close();
    },
  };
}

// ---- main ----------------------------------------------------------------------

interface Phase {
  name: string;
  result: LoadResult;
  storeErrors: number;
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      duration: { type: 'string', default: '5' },
      connections: { type: 'string', default: '50' },
      tool: { type: 'string', default: 'auto' },
      'store-timeout': { type: 'string', default: '1s' },
      'plain-client': { type: 'boolean', default: false },
      out: { type: 'string' },
    },
  });
  const duration = Number(values.duration);
  const connections = Number(values.connections);
  const rounds = Number(values.rounds);
  if (!(duration > 0 && duration <= 60) || !(connections > 0 && connections <= 1000) || !(Number.isInteger(rounds) && rounds >= 1 && rounds <= 20)) {
    throw new Error('--duration 1..60, --connections 1..1000, --rounds 1..20');
  }
  if (!hasCommand('redis-server')) throw new Error('redis-server is not on PATH');
  const generator = loadGenerator(values.tool as Tool | 'auto');
  if (generator === undefined) throw new Error(`no load generator (${values.tool})`);

  const up = spawn(process.execPath, [self, '--upstream'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const children: ChildProcess[] = [up];
  const gateways: Gateway[] = [];
  const phases: Phase[] = [];
  const tripTimes: number[] = [];
  try {
    const { port: upPort } = await waitMessage<{ type: string; port: number }>(up, 'ready', 10_000);
    const upstream = `http://127.0.0.1:${upPort}`;
    const load = async (gw: Gateway, name: string): Promise<void> => {
      const before = gw.storeErrors();
      const result = await generator.run({ url: `${gw.url}/page`, connections, duration, threads: 1, cpus: undefined, headers: { cookie: `sid=${SESSION}` } });
      phases.push({ name, result, storeErrors: gw.storeErrors() - before });
      process.stderr.write(
        `${name}: ${Math.round(result.rps)} req/s, p50 ${result.p50.toFixed(2)} ms, p99 ${result.p99.toFixed(2)} ms, errors ${result.errors}\n`,
      );
    };
    const learn = async (gw: Gateway): Promise<void> => {
      if ((await get(`${gw.url}/login`)) !== 200) throw new Error('login failed');
      for (let i = 0; i < 200; i++) await get(`${gw.url}/page`, { cookie: `sid=${SESSION}` });
    };

    for (let round = 1; round <= rounds; round++) {
      process.stderr.write(`round ${round}/${rounds}\n`);
      const memory = await startGateway(upstream, undefined, values['store-timeout'], false);
      gateways.push(memory);
      await learn(memory);
      await load(memory, 'memory');
      await memory.close();

      const redisPort = await freePort();
      const redis = await startRedis(redisPort);
      children.push(redis);
      const shared = await startGateway(upstream, `redis://127.0.0.1:${redisPort}`, values['store-timeout'], values['plain-client']);
      gateways.push(shared);
      await learn(shared);
      await load(shared, 'redis-up');

      let downs = 0;
      for (const s of shared.stores) s.on('storeDown', () => downs++);
      await killRedis(redis);
      // The first requests find the stores failing; the breakers open on their own as well.
      const killedAt = Date.now();
      while (downs < shared.stores.length && Date.now() - killedAt < 5000) await get(`${shared.url}/page`, { cookie: `sid=${SESSION}` });
      tripTimes.push(downs === shared.stores.length ? Date.now() - killedAt : Number.NaN);
      await load(shared, 'redis-down');
      await shared.close();
    }

    const names = ['memory', 'redis-up', 'redis-down'];
    const of = (name: string): Phase[] => phases.filter((p) => p.name === name);
    const p99 = (name: string): number => median(of(name).map((p) => p.result.p99));
    const base = p99('memory');
    const tripped = tripTimes.every((ms) => Number.isFinite(ms))
      ? `both breakers open ${tripTimes.join(', ')} ms after the kill`
      : `breakers NOT open within 5 s in some rounds (${tripTimes.join(', ')})`;
    const lines = [
      '# Store outage: p99 of cache() + sticky learn + balance()',
      '',
      `${rounds} rounds, ${connections} connections, ${duration} s per phase, ${generator.tool} ${generator.version}, storeTimeout ${values['store-timeout']}, ` +
        (values['plain-client'] ? 'new KeyvRedis(url)' : 'new KeyvRedis({ url, disableOfflineQueue: true })') +
        `; ${tripped}. Medians over the rounds (each round's p99 in brackets).`,
      '',
      '| Phase | req/s | p50 ms | p99 ms | p99 vs memory | errors | storeError events |',
      '| --- | --: | --: | --: | --: | --: | --: |',
      ...names.map((name) => {
        const ps = of(name);
        const sum = (f: (p: Phase) => number): number => ps.reduce((n, p) => n + f(p), 0);
        return `| ${name} | ${Math.round(median(ps.map((p) => p.result.rps)))} | ${median(ps.map((p) => p.result.p50)).toFixed(2)} | ${p99(name).toFixed(2)} (${ps.map((p) => p.result.p99.toFixed(1)).join(', ')}) | ${(p99(name) / base).toFixed(2)}x | ${sum((p) => p.result.errors)} | ${sum((p) => p.storeErrors)} |`;
      }),
      '',
      ...machine([['Packages', `keyv ${versionOf('keyv')}, @keyv/redis ${versionOf('@keyv/redis')}`]]).map(([k, v]) => `- ${k}: ${v}`),
    ];
    const report = `${lines.join('\n')}\n`;
    process.stdout.write(report);
    if (values.out !== undefined) writeFileSync(values.out, report);
    process.stdout.write(
      `\np99 ratio redis-down / memory: ${(p99('redis-down') / base).toFixed(2)}x (target: within 2x); redis-up / memory: ${(p99('redis-up') / base).toFixed(2)}x\n`,
    );
  } finally {
    for (const gw of gateways) await gw.close().catch(() => undefined);
    for (const child of children) await stop(child, 2000);
  }
}

if (process.argv.includes('--upstream')) upstreamMain();
else
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  });
