// What an access log to a file and balance()'s setHeaders (three headers) cost on the proxy path
// (issue 17's target: at most 1.10x the CPU per request of balance() alone), as bench/overhead.ts
// measures a middleware: both gateways at the same moment, pinned together on the proxy CPU (CPU 1;
// the upstream and the load generator on CPU 0 of a 2-core machine), each driven by its own wrk (or
// autocannon) with half the connections; the figure is each gateway's CPU time per request (process
// CPU time from /proc / requests served) and their ratio per round.
//
//   baseline  chain(balance(pool))
//   subject   chain(accessLog({ to: createWriteStream(<temp file>) }), balance(pool, { setHeaders }))
//             setHeaders: X-Request-Id: $request_id, X-Real-IP: $remote_addr, X-Tenant: $http_x_tenant;
//             the log line is nginx's combined format unless --format says otherwise
//
//   node bench/log.ts [--duration 5] [--rounds 5] [--warmup 3] [--connections 50] [--tool auto|wrk|autocannon]
//                     [--pin auto|on|off] [--no-set-headers] [--format '<nginx log_format>'] [--flush <ms>]
//                     [--to file|null]   (null: the log goes to a stream that discards it: what the file writes cost)
//                     [--aa]   (A/A: the subject is a second chain(balance(pool)), the method's own bias)
//                     [--no-log]   (the subject is chain(balance(pool, { setHeaders })): setHeaders alone)
//                     [--spin <µs>]   (calibration: the subject is chain(<a middleware that busy-waits µs>, balance(pool)),
//                                      what a known extra cost per request shows as in this ratio)
import type { ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadGenerator, type LoadResult } from './lib/load.ts';
import { machine } from './lib/machine.ts';
import { cpuSeconds, pairedPlacement, runMain, spawnPinned, stop, waitMessage } from './lib/proc.ts';

const here = dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);
const PATH = '/api/items/42?x=1';
const SET_HEADERS = { 'X-Request-Id': '$request_id', 'X-Real-IP': '$remote_addr', 'X-Tenant': '$http_x_tenant' };

type Kind = 'baseline' | 'subject';

/** A gateway process: `baseline`, or `subject` with its log file, setHeaders on or off and the format. */
async function gateway(kind: Kind, upstream: string, file: string, setHeaders: boolean, format: string, flush: number | undefined): Promise<void> {
  const { accessLog, balance, chain, createPool } = await import('../src/index.ts');
  const pool = createPool({ servers: [{ url: upstream }], agent: { maxFreeSockets: 64 } });
  let listener;
  if (kind === 'baseline' || format === '') listener = chain(balance(pool));
  else if (format.startsWith('spin:')) {
    const ms = Number(format.slice(5)) / 1000;
    const spin = (_req: unknown, _res: unknown, next: () => void): void => {
      const until = performance.now() + ms;
      while (performance.now() < until);
      next();
    };
    listener = chain(spin, balance(pool));
  } else {
    const proxy = balance(pool, setHeaders ? { setHeaders: SET_HEADERS } : {});
    if (format === '-') listener = chain(proxy);
    else {
      const to = file === 'null' ? new Writable({ write: (_chunk, _encoding, done) => done() }) : createWriteStream(file, { flags: 'a' });
      const log = accessLog({ format, to, flush });
      listener = chain(log, proxy);
      process.on('SIGTERM', () => void log.close().then(() => process.exit(0)));
    }
  }
  const server = createServer(listener);
  server.keepAliveTimeout = 120_000;
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port }));
  process.on('disconnect', () => process.exit(0));
  if (kind === 'baseline' || format === '' || format === '-' || format.startsWith('spin:')) process.on('SIGTERM', () => process.exit(0));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const live = new Set<ChildProcess>();

async function start(file: string, args: string[], cpus: string | undefined): Promise<{ child: ChildProcess; port: number }> {
  const child = spawnPinned(cpus, process.execPath, [file, ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  live.add(child);
  const { port } = await waitMessage<{ type: string; port: number }>(child, 'ready', 15_000);
  return { child, port };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '3' },
      connections: { type: 'string', default: '50' },
      tool: { type: 'string', default: 'auto' },
      pin: { type: 'string', default: 'auto' },
      'no-set-headers': { type: 'boolean', default: false },
      format: { type: 'string', default: 'combined' },
      flush: { type: 'string' },
      aa: { type: 'boolean', default: false },
      spin: { type: 'string' },
      'no-log': { type: 'boolean', default: false },
      to: { type: 'string', default: 'file' },
    },
  });
  const duration = Number(values.duration);
  const rounds = Number(values.rounds);
  const warmup = Number(values.warmup);
  const connections = Number(values.connections);
  if (!(duration > 0 && duration <= 60 && rounds >= 1 && rounds <= 30 && warmup >= 0 && warmup <= 30 && connections >= 2)) {
    throw new Error('bad --duration (1..60), --rounds (1..30), --warmup (0..30) or --connections (>= 2)');
  }
  const gen = loadGenerator(values.tool as 'auto' | 'wrk' | 'autocannon');
  if (gen === undefined) throw new Error('neither wrk nor autocannon can run');
  const setHeaders = !values['no-set-headers'];
  const place = pairedPlacement(values.pin, 'both gateways');
  const dir = mkdtempSync(join(tmpdir(), 'swy-bench-log-'));
  if (values.to !== 'file' && values.to !== 'null') throw new Error('bad --to (file or null)');
  const file = values.to === 'null' ? 'null' : join(dir, 'access.log');
  try {
    const up = await start(resolve(here, 'upstream.ts'), [], place.other);
    const upstream = `http://127.0.0.1:${up.port}`;
    const gw: Record<Kind, { child: ChildProcess; port: number }> = {
      baseline: await start(self, ['--gateway', 'baseline', upstream, file, '0', values.format, ''], place.proxy),
      subject: await start(
        self,
        [
          '--gateway',
          'subject',
          upstream,
          file,
          setHeaders ? '1' : '0',
          values.aa ? '' : values.spin !== undefined ? `spin:${Number(values.spin)}` : values['no-log'] ? '-' : values.format,
          values.flush ?? '',
        ],
        place.proxy,
      ),
    };
    const kinds: Kind[] = ['baseline', 'subject'];
    const half = Math.ceil(connections / 2);
    const load = (k: Kind, seconds: number): Promise<LoadResult> =>
      gen.run({
        url: `http://127.0.0.1:${gw[k].port}${PATH}`,
        connections: half,
        duration: seconds,
        threads: 1,
        cpus: place.other,
        headers: { 'x-tenant': 'acme' },
      });
    if (warmup > 0) await Promise.all(kinds.map((k) => load(k, warmup)));
    const label = values.aa
      ? 'A/A copy'
      : values.spin !== undefined
        ? `spin ${values.spin} µs`
        : values['no-log']
          ? 'setHeaders'
          : setHeaders
            ? 'log+setHeaders'
            : 'log';
    const ratios: number[] = [];
    const cpu: Record<Kind, number[]> = { baseline: [], subject: [] };
    let errors = 0;
    for (let r = 0; r < rounds; r++) {
      const c0 = kinds.map((k) => cpuSeconds(gw[k].child.pid));
      const results = await Promise.all(kinds.map((k) => load(k, duration)));
      const c1 = kinds.map((k) => cpuSeconds(gw[k].child.pid));
      if ([...c0, ...c1].some((c) => c === undefined)) throw new Error('CPU time is not readable here (/proc)');
      kinds.forEach((k, i) => {
        if (results[i]!.requests === 0) throw new Error(`the ${k} gateway served no requests`);
        cpu[k].push(((c1[i]! - c0[i]!) / results[i]!.requests) * 1e6);
        errors += results[i]!.errors;
      });
      ratios.push(cpu.subject[r]! / cpu.baseline[r]!);
      console.log(
        `[${r + 1}/${rounds}] balance() ${cpu.baseline[r]!.toFixed(1)} µs/req ${results[0]!.rps.toFixed(0)} req/s   ${label} ${cpu.subject[r]!.toFixed(1)} µs/req ${results[1]!.rps.toFixed(0)} req/s   ratio ${ratios[r]!.toFixed(3)}`,
      );
    }
    await stop(gw.subject.child);
    live.delete(gw.subject.child);
    for (const [k, v] of machine()) console.log(`${k}: ${v}`);
    console.log(`mode: paired CPU per request; ${place.description}`);
    console.log(`tool: ${gen.tool} ${gen.version}, ${half}+${half} connections, ${rounds} rounds x ${duration}s each (warm-up ${warmup}s), path ${PATH}`);
    console.log(`baseline: chain(balance(pool))   ${median(cpu.baseline).toFixed(1)} CPU µs/req (median)`);
    if (values.aa) console.log(`subject:  chain(balance(pool)), a second copy (A/A)   ${median(cpu.subject).toFixed(1)} CPU µs/req (median)`);
    else if (values.spin !== undefined)
      console.log(`subject:  chain(<busy-wait ${values.spin} µs>, balance(pool)) (calibration)   ${median(cpu.subject).toFixed(1)} CPU µs/req (median)`);
    else if (values['no-log']) console.log(`subject:  chain(balance(pool, { setHeaders: 3 headers }))   ${median(cpu.subject).toFixed(1)} CPU µs/req (median)`);
    else
      console.log(
        `subject:  chain(accessLog(file, ${JSON.stringify(values.format)}${values.flush === undefined ? '' : `, flush ${values.flush} ms`}), balance(pool${setHeaders ? ', { setHeaders: 3 headers }' : ''}))   ${median(cpu.subject).toFixed(1)} CPU µs/req (median); ${file === 'null' ? 'log to a discarding stream' : `log file ${statSync(file).size} bytes`}`,
      );
    const ratio = median(ratios);
    console.log(
      `ratio subject/baseline (CPU per request): ${ratio.toFixed(3)} (range ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)}); target <= 1.10; errors ${errors}`,
    );
  } finally {
    await Promise.all([...live].map((c) => stop(c)));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === self) {
  const i = process.argv.indexOf('--gateway');
  if (i !== -1) {
    const [kind, upstream, file, setHeaders, format, flush] = process.argv.slice(i + 1);
    await gateway(kind as Kind, upstream!, file!, setHeaders === '1', format!, flush === '' || flush === undefined ? undefined : Number(flush));
  } else await runMain(main, live);
}
