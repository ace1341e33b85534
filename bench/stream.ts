// The stream proxy's cost: a large transfer each way (download and upload, 1 GiB by default) and
// short connections per second through streamBalance(), next to a bare `net` pipe (socket.pipe both
// ways, no balancing) and nginx's stream proxy (when nginx and its stream module are installed), in
// one run, as ratios to the bare pipe. Each proxy runs in a process of its own (nginx: one worker);
// the upstream and the clients run in this process. CPU seconds of the proxy process are read from
// /proc. Everything listens on 127.0.0.1 and every step is bounded in time.
//
//   node bench/stream.ts [--size 1024] [--duration 5] [--concurrency 50] [--targets net-pipe,switchyard,nginx] [--rounds 1]
//   npm run bench -- --stream [same options]
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { machine } from './lib/machine.ts';
import { nginxVersion } from './lib/nginx.ts';
import { cpuSeconds, runMain, spawnPinned, stop, waitMessage } from './lib/proc.ts';
import { int, markdown, median } from './lib/report.ts';

const TARGETS = ['net-pipe', 'switchyard', 'nginx'] as const;
type Target = (typeof TARGETS)[number];

const { values } = parseArgs({
  options: {
    size: { type: 'string' },
    duration: { type: 'string' },
    concurrency: { type: 'string' },
    targets: { type: 'string' },
    rounds: { type: 'string' },
    serve: { type: 'string' },
    upstream: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});

// ---- a proxy process: `--serve net-pipe|switchyard --upstream PORT` ----
if (values.serve !== undefined) {
  const upstreamPort = Number(values.upstream);
  let server: Server;
  if (values.serve === 'switchyard') {
    // the two modules it uses, not the whole package index
    const { createPool } = await import('../src/pool/index.ts');
    const { streamBalance } = await import('../src/stream/index.ts');
    const pool = createPool({ name: 'bench', servers: [{ url: `http://127.0.0.1:${upstreamPort}` }] });
    server = createServer({ allowHalfOpen: true }, streamBalance(pool));
  } else {
    // the bare pipe: what any Node TCP proxy does at least
    server = createServer({ allowHalfOpen: true }, (client) => {
      const up = connect({ port: upstreamPort, host: '127.0.0.1', allowHalfOpen: true });
      client.on('error', () => up.destroy());
      up.on('error', () => client.destroy());
      client.pipe(up).pipe(client);
    });
  }
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port }));
  process.once('SIGTERM', () => process.exit(0));
} else {
  await runMain(main, new Set());
}

async function main(): Promise<void> {
  if (values.help === true) {
    console.log(`usage: node bench/stream.ts [options]      (npm run bench -- --stream [options])
  --size <MiB>          bytes moved each way per transfer             default 1024
  --duration <s>        seconds of short connections per target       default 5
  --concurrency <n>     short connections in flight at once           default 50
  --targets <a,b>       ${TARGETS.join(', ')}
  --rounds <n>          repeat every target, interleaved; medians     default 1`);
    return;
  }
  const size = Number(values.size ?? 1024) * 2 ** 20;
  const duration = Number(values.duration ?? 5) * 1000;
  const concurrency = Number(values.concurrency ?? 50);
  const rounds = Number(values.rounds ?? 1);
  const targets = (values.targets ?? TARGETS.join(',')).split(',').map((s) => s.trim()) as Target[];
  for (const t of targets) if (!TARGETS.includes(t)) throw new Error(`unknown target ${t}`);

  const upstream = await startUpstream(size);
  const results = new Map<Target, { down: number[]; up: number[]; cps: number[]; cpuPerGiB: number[]; cpuPerKConn: number[] }>();
  const notes: string[] = [];
  const nginx = nginxVersion();
  const streamModule = ['/usr/lib/nginx/modules/ngx_stream_module.so', '/usr/share/nginx/modules/ngx_stream_module.so'].find((f) => existsSync(f));
  try {
    for (let round = 0; round < rounds; round++) {
      for (const target of targets) {
        if (target === 'nginx' && (nginx === undefined || streamModule === undefined)) {
          if (round === 0)
            notes.push(nginx === undefined ? 'nginx: skipped (not installed)' : 'nginx: skipped (no stream module: apt-get install libnginx-mod-stream)');
          continue;
        }
        const proxy = target === 'nginx' ? await startNginxStream(upstream.port, streamModule!) : await startNode(target, upstream.port);
        try {
          const r = results.get(target) ?? { down: [], up: [], cps: [], cpuPerGiB: [], cpuPerKConn: [] };
          results.set(target, r);
          // warm-up, discarded: the JIT, the first connections
          await transfer(proxy.port, 'D', Math.min(size, 32 * 2 ** 20));
          await shortConnections(proxy.port, 500, concurrency);
          const cpu0 = cpuSeconds(proxy.pid);
          const t0 = performance.now();
          await transfer(proxy.port, 'D', size);
          const t1 = performance.now();
          await transfer(proxy.port, 'U', size);
          const t2 = performance.now();
          const cpu1 = cpuSeconds(proxy.pid);
          const conns = await shortConnections(proxy.port, duration, concurrency);
          const cpu2 = cpuSeconds(proxy.pid);
          r.down.push(size / 2 ** 20 / ((t1 - t0) / 1000));
          r.up.push(size / 2 ** 20 / ((t2 - t1) / 1000));
          r.cps.push(conns / (duration / 1000));
          if (cpu0 !== undefined && cpu1 !== undefined && cpu2 !== undefined) {
            r.cpuPerGiB.push((cpu1 - cpu0) / ((2 * size) / 2 ** 30));
            r.cpuPerKConn.push(((cpu2 - cpu1) / conns) * 1e6);
          }
          console.error(
            `round ${round + 1} ${target}: down ${r.down.at(-1)!.toFixed(0)} MiB/s, up ${r.up.at(-1)!.toFixed(0)} MiB/s, ${int.format(r.cps.at(-1)!)} conn/s`,
          );
        } finally {
          await proxy.stop();
        }
      }
    }
  } finally {
    upstream.server.close();
    for (const s of upstream.open) s.destroy();
  }
  const base = results.get('net-pipe');
  const ratio = (v: number, b: number[] | undefined): string => (b === undefined || b.length === 0 ? '' : ` (${(v / median(b)).toFixed(2)}x)`);
  const rows: string[][] = [['Target', 'Download MiB/s', 'Upload MiB/s', 'Connections/s', 'CPU s per GiB', 'CPU ms per 1k conns']];
  for (const [target, r] of results) {
    rows.push([
      target === 'nginx' ? `nginx ${nginx} stream` : target,
      `${int.format(median(r.down))}${ratio(median(r.down), base?.down)}`,
      `${int.format(median(r.up))}${ratio(median(r.up), base?.up)}`,
      `${int.format(median(r.cps))}${ratio(median(r.cps), base?.cps)}`,
      r.cpuPerGiB.length === 0 ? '-' : `${median(r.cpuPerGiB).toFixed(2)}${ratio(median(r.cpuPerGiB), base?.cpuPerGiB)}`,
      r.cpuPerKConn.length === 0 ? '-' : `${median(r.cpuPerKConn).toFixed(0)}${ratio(median(r.cpuPerKConn), base?.cpuPerKConn)}`,
    ]);
  }
  const described = machine([
    ['Transfer', `${size / 2 ** 20} MiB each way, one connection`],
    ['Short connections', `${duration / 1000} s, ${concurrency} in flight, 1 byte each way`],
    ['Rounds', String(rounds)],
  ]);
  console.log(`# streamBalance() next to a bare net pipe and nginx's stream proxy\n`);
  console.log(markdown([['', ''], ...described]));
  console.log(`\nRatios are to the bare net pipe (higher is better for rates, lower for CPU).\n`);
  console.log(markdown(rows));
  for (const n of notes) console.log(`\n${n}`);
}

/**
 * The upstream: a connection's first byte says what it wants. `D<n>\n`: n bytes are written to it;
 * `U`: it sends `size` bytes, then "ok" comes back; `C`: one byte back, then the connection ends.
 */
async function startUpstream(size: number): Promise<{ server: Server; port: number; open: Set<Socket> }> {
  const open = new Set<Socket>();
  const block = Buffer.alloc(256 * 1024, 120);
  const server = createServer({ allowHalfOpen: true }, (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => undefined);
    s.once('data', (first: Buffer) => {
      const kind = String.fromCharCode(first[0]!);
      if (kind === 'C') {
        s.end('y');
        return;
      }
      if (kind === 'U') {
        let got = first.length - 1;
        s.on('data', (d: Buffer) => (got += d.length));
        s.on('end', () => s.end(got === size ? 'ok' : `short ${got}`));
        return;
      }
      // `D<bytes>\n`: that many bytes are written
      let head = first.toString('latin1');
      const go = (): void => {
        const want = Number(head.slice(1, head.indexOf('\n')));
        let sent = 0;
        const pump = (): void => {
          while (sent < want) {
            const n = Math.min(block.length, want - sent);
            sent += n;
            if (!s.write(n === block.length ? block : block.subarray(0, n))) {
              s.once('drain', pump);
              return;
            }
          }
          s.end();
        };
        pump();
      };
      if (head.includes('\n')) go();
      else
        s.on('data', (d: Buffer) => {
          head += d.toString('latin1');
          if (head.includes('\n') && head.indexOf('\n') === head.length - 1) go();
        });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, open };
}

/** One transfer through `port`: `D` reads `size` bytes, `U` sends them; bounded to 5 minutes. */
function transfer(port: number, kind: 'D' | 'U', size: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`transfer ${kind} did not end within 5 minutes`));
    }, 300_000);
    let got = 0;
    let answer = '';
    c.on('data', (d: Buffer) => {
      got += d.length;
      if (kind === 'U') answer += d.toString();
    });
    c.on('error', reject);
    c.on('end', () => c.end());
    c.on('close', () => {
      clearTimeout(timer);
      if (kind === 'D' && got !== size) reject(new Error(`download got ${got} of ${size} bytes`));
      else if (kind === 'U' && answer !== 'ok') reject(new Error(`upload: the upstream said ${JSON.stringify(answer)}`));
      else resolve();
    });
    c.on('connect', () => {
      if (kind === 'D') {
        c.end(`D${size}\n`);
        return;
      }
      c.write('U');
      const block = Buffer.alloc(256 * 1024, 121);
      let sent = 0;
      const pump = (): void => {
        while (sent < size) {
          const n = Math.min(block.length, size - sent);
          sent += n;
          if (!c.write(n === block.length ? block : block.subarray(0, n))) {
            c.once('drain', pump);
            return;
          }
        }
        c.end();
      };
      pump();
    });
  });
}

/** Short connections (one byte each way) for `ms`, `concurrency` at once: how many completed. */
async function shortConnections(port: number, ms: number, concurrency: number): Promise<number> {
  const end = performance.now() + ms;
  let done = 0;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const c = connect({ port, host: '127.0.0.1' });
      c.on('error', () => resolve());
      c.on('data', () => undefined);
      c.on('close', () => resolve());
      c.on('end', () => {
        done++;
      });
      c.on('connect', () => c.write('C'));
    });
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) await one();
    }),
  );
  return done;
}

interface Proxy {
  port: number;
  pid: number | undefined;
  stop(): Promise<void>;
}

async function startNode(target: 'net-pipe' | 'switchyard', upstreamPort: number): Promise<Proxy> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--serve', target, '--upstream', String(upstreamPort)], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const { port } = await waitMessage<{ type: string; port: number }>(child, 'ready', 15_000);
  return { port, pid: child.pid, stop: () => stop(child) };
}

async function startNginxStream(upstreamPort: number, module: string): Promise<Proxy> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-nginx-stream-'));
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  writeFileSync(
    join(dir, 'nginx.conf'),
    `load_module ${module};
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
stream {
  upstream backend { server 127.0.0.1:${upstreamPort}; }
  server {
    listen 127.0.0.1:${port};
    proxy_pass backend;
    proxy_half_close on;
  }
}
`,
  );
  const child = spawnPinned(undefined, 'nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const end = performance.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const c = connect({ port, host: '127.0.0.1' }, () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (up) break;
    if (performance.now() > end || child.exitCode !== null) throw new Error('nginx did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    pid: child.pid,
    stop: async () => {
      await stop(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
