// Test helpers shared by every folder of test/: real servers on port 0 closed by the test's `after`
// hook, one-request clients, a pool closed with the test (poolOf), a bounded wait (until) and a fake
// clock (clock). Use these rather than a local copy; a folder's support.ts holds only what is its own.
import { createServer, request, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { Worker } from 'node:worker_threads';
import { createPool, type PoolOptions, type ServerOptions, type UpstreamPool } from '../src/index.ts';

export interface Upstream {
  url: string;
  port: number;
  server: Server;
  /** Requests this upstream received, in order. */
  seen: Array<{ method: string; url: string; headers: IncomingMessage['headers']; body: string }>;
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

/** Starts an upstream that records requests and answers with `handler` (default: 200 with its name). */
export async function upstream(t: TestContext | undefined, name: string, handler?: Handler): Promise<Upstream> {
  const seen: Upstream['seen'] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (handler !== undefined) return handler(req, res, body);
      res.setHeader('x-upstream', name);
      res.end(name);
    });
  });
  return listen(t, server, seen) as Promise<Upstream>;
}

export async function listen(t: TestContext | undefined, server: Server, seen: Upstream['seen'] = []): Promise<Upstream> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t?.after(close);
  return { url: `http://127.0.0.1:${port}`, port, server, seen, close };
}

/** Starts a gateway server with a request listener. */
export async function gateway(t: TestContext | undefined, listener: RequestListener): Promise<Upstream> {
  return listen(t, createServer(listener));
}

export interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

/** One HTTP request on a fresh connection. */
export function fetchText(
  url: string,
  init: { method?: string | undefined; headers?: Record<string, string> | undefined; body?: string | Buffer | undefined } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? 'GET', headers: init.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

/** A port with nothing listening on it (connection refused). */
export async function deadPort(): Promise<number> {
  // Drawn below the kernel's ephemeral range (32768 and up on Linux): no `listen(0)` of a test
  // running in parallel can take the port afterwards, and no outgoing connection gets it as its own
  // source port (which would connect a socket to itself). Checked free by binding it once.
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const s = createServer();
    const free = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!free) continue;
    await new Promise<void>((resolve) => s.close(() => resolve()));
    return port;
  }
}

/** Runs `n` sequential GETs and returns the bodies. */
export async function sequence(url: string, n: number, headers?: Record<string, string>): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push((await fetchText(url, { headers })).body);
  return out;
}

/** Requests `url` and closes the connection as soon as the first body chunk arrives (a client gone mid-response). */
export function abortAfterFirstChunk(url: string, timeoutMs = 3000): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => undefined);
    req.on('close', () => resolve());
    req.end();
    setTimeout(() => reject(new Error(`no first chunk within ${timeoutMs} ms`)), timeoutMs).unref();
  });
}

/**
 * Keeps the event loop alive while test `t` runs, for at most `ms`. A test that awaits what only an
 * unref'd timer of the library settles (a store operation timing out, a breaker probe) needs it: the
 * library's timers are unref'd so that they never keep a user's process alive, and Node 22's test
 * runner cancels a test whose promise is still pending once nothing ref'd is left in the event loop.
 * The hold is a bounded timer, so a test that really hangs still ends.
 */
export function holdEventLoop(t: TestContext, ms = 30_000): void {
  const hold = setTimeout(() => undefined, ms);
  t.after(() => clearTimeout(hold));
}

/** Whether something accepts TCP connections at host:port (within 500 ms). */
export function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.setTimeout(500);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Waits until `cond` holds (it may be async), checking every `every` ms, and throws an error naming
 * `what` once `ms` have passed without it. Resolves `true`, so `assert.ok(await until(...))` reads
 * as well as `await until(...)`. The checks keep the event loop alive: a test waiting here is never
 * cancelled by the runner for want of anything to do.
 */
export async function until(cond: () => boolean | Promise<boolean>, ms = 5000, what = 'condition', every = 10): Promise<true> {
  const end = performance.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise<void>((resolve) => setTimeout(resolve, every));
  }
}

/** A fake clock for the `now` options (pool, cache, store): time moves only with `advance`. */
export interface Clock {
  /** The current time, in ms. */
  t: number;
  now: () => number;
  advance(ms: number): void;
}

/** A {@link Clock} starting at `start` (by default far from 0, as a real clock is). */
export function clock(start = 1_700_000_000_000): Clock {
  const c: Clock = {
    t: start,
    now: () => c.t,
    advance(ms) {
      c.t += ms;
    },
  };
  return c;
}

/**
 * The servers of {@link poolOf}: URLs or server options, in order; or ids mapped to a URL or to
 * anything with a `url` (an {@link Upstream}, an adapter test's backend), which become server ids.
 */
export type PoolServers = ReadonlyArray<string | ServerOptions> | Readonly<Record<string, string | { readonly url: string }>>;

/** Options of {@link poolOf}: the pool's own, and settings added to its servers. */
export interface PoolOfOptions extends Omit<PoolOptions, 'servers'> {
  /** Settings added to every server (`{ down: true }`). */
  each?: Partial<ServerOptions> | undefined;
  /** Settings added to the server with this id (`{ b: { backup: true } }`). */
  extra?: Readonly<Record<string, Partial<ServerOptions>>> | undefined;
}

/**
 * A pool over `servers`, closed when the test ends.
 * @example poolOf(t, [a.url, b.url]); poolOf(t, { a, b }, { method: 'least-conn', extra: { b: { weight: 2 } } })
 */
export function poolOf(t: TestContext, servers: PoolServers, options: PoolOfOptions = {}): UpstreamPool {
  const { each, extra, ...poolOptions } = options;
  const listed: ServerOptions[] = Array.isArray(servers)
    ? (servers as ReadonlyArray<string | ServerOptions>).map((s) => (typeof s === 'string' ? { url: s } : { ...s }))
    : Object.entries(servers as Record<string, string | { url: string }>).map(([id, s]) => ({ id, url: typeof s === 'string' ? s : s.url }));
  const pool = createPool({
    ...poolOptions,
    servers: listed.map((s) => ({ ...each, ...s, ...(s.id === undefined ? undefined : extra?.[s.id]) })),
  });
  t.after(() => pool.close());
  return pool;
}

/**
 * A loopback port whose connects hang: a worker thread listens with a backlog
 * of 1 and then blocks its event loop, so nothing is ever accepted. Two
 * connections fill the kernel's accept queue; the kernel drops the SYNs of
 * the next ones, which stay "connecting" as with an unreachable host.
 */
export async function blackholePort(t: TestContext): Promise<number> {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const server = require('node:net').createServer();
     server.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
       parentPort.postMessage(server.address().port);
       Atomics.wait(workerData, 0, 0);
       server.close();
     });`,
    { eval: true, workerData: flag },
  );
  const port = await new Promise<number>((resolve) => worker.once('message', resolve));
  const fillers: Socket[] = [];
  for (let i = 0; i < 2; i++) {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    fillers.push(s);
    await new Promise<void>((resolve) => s.once('connect', resolve));
  }
  t.after(async () => {
    for (const s of fillers) s.destroy();
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
    await new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  });
  return port;
}
