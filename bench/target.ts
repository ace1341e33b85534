// One proxy under test, in its own process: `node bench/target.ts <name> <upstream url>`.
// Listens on 127.0.0.1 (a free port), forwards every request to the upstream,
// and reports its port to run.ts over IPC. Each target imports only what it needs.
import { Agent, createServer, request, ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** Idle upstream connections each proxy may keep (agent maxFreeSockets, set by run.ts). */
const KEEPALIVE = Number(process.env.BENCH_KEEPALIVE ?? 32);

/** A target starts its proxy and resolves with the listening port. */
type Start = (upstream: string) => Promise<number>;

/** The listen backlog (bench/memory.ts raises it for thousands of client connections opened at once). */
const BACKLOG = Number(process.env.BENCH_BACKLOG ?? 511);

function listen(server: Server): Promise<number> {
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 121_000;
  return new Promise((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: BACKLOG }, () => resolve((server.address() as AddressInfo).port)));
}

/**
 * switchyard's sources: this tree's, or those of another revision that run.ts --compare extracted
 * (BENCH_SRC, a directory holding index.ts), so that two revisions are measured in one run.
 */
const SRC = process.env.BENCH_SRC === undefined ? new URL('../src/', import.meta.url) : pathToFileURL(`${resolve(process.env.BENCH_SRC)}/`);
/** BENCH_SRC_JS=1: BENCH_SRC holds the sources compiled to JavaScript (bench/memory.ts --compiled). */
const JS = process.env.BENCH_SRC_JS === '1';
const fromSrc = <T>(file: string): Promise<T> => import(new URL(JS ? file.replace(/\.ts$/, '.js') : file, SRC).href) as Promise<T>;
const switchyardIndex = (): Promise<typeof import('../src/index.ts')> => fromSrc('index.ts');

async function switchyardPool(upstream: string) {
  const { createPool, balance } = await switchyardIndex();
  const pool = createPool({ servers: [{ url: upstream }], agent: { maxFreeSockets: KEEPALIVE } });
  return balance(pool);
}

/** Request headers undici refuses (hop-by-hop, or framing it sets itself). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'expect', 'te', 'trailer']);

/**
 * One forwarded request of the bare undici proxy: undici's own handler
 * interface (onConnect/onHeaders/onData/onComplete/onError, what its client
 * calls without a wrapper), writing to the client's response with backpressure.
 */
class UndiciForward {
  res: ServerResponse;
  abort: ((err?: Error) => void) | undefined = undefined;
  resume: (() => void) | undefined = undefined;

  constructor(res: ServerResponse) {
    this.res = res;
    res.once('close', () => {
      if (!res.writableFinished) this.abort?.(new Error('client went away'));
    });
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort;
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    if (status < 200) return true;
    this.resume = resume;
    const headers: string[] = new Array(raw.length);
    for (let i = 0; i < raw.length; i++) headers[i] = raw[i]!.toString('latin1');
    this.res.writeHead(status, headers);
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true;
    this.res.once('drain', () => this.resume?.());
    return false;
  }

  onComplete(): void {
    this.res.end();
  }

  onError(): void {
    if (this.res.headersSent) this.res.destroy();
    else this.res.writeHead(502).end();
  }
}

export const TARGETS: Record<string, Start> = {
  /** switchyard on plain node:http: chain(balance(pool)). */
  async 'switchyard-node'(upstream) {
    const { chain } = await switchyardIndex();
    return listen(createServer(chain(await switchyardPool(upstream))));
  },

  /** switchyard as Express middleware. */
  async 'switchyard-express'(upstream) {
    const { default: express } = await import('express');
    const app = express();
    app.use(await switchyardPool(upstream));
    return listen(createServer(app));
  },

  /** switchyard through its Fastify plugin. */
  async 'switchyard-fastify'(upstream) {
    const { default: Fastify } = await import('fastify');
    const { switchyard } = await fromSrc<typeof import('../src/adapters/fastify.ts')>('adapters/fastify.ts');
    const app = Fastify({ logger: false });
    await app.register(switchyard, { use: [await switchyardPool(upstream)] });
    await app.listen({ host: '127.0.0.1', port: 0 });
    app.server.keepAliveTimeout = 120_000;
    return (app.server.address() as AddressInfo).port;
  },

  /**
   * The baseline: the least a Node proxy can do. http.request with a keep-alive
   * agent, headers passed through untouched, bodies piped both ways, no
   * header filtering, no balancing, no retries.
   */
  async 'node-baseline'(upstream) {
    const u = new URL(upstream);
    const agent = new Agent({ keepAlive: true, maxFreeSockets: KEEPALIVE });
    const server = createServer((req, res) => {
      const up = request(
        { hostname: u.hostname, port: u.port, method: req.method, path: req.url, headers: req.headers, agent },
        (response: IncomingMessage) => {
          res.writeHead(response.statusCode ?? 502, response.headers);
          response.pipe(res);
        },
      );
      up.on('error', () => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      req.pipe(up);
    });
    return listen(server);
  },

  /**
   * A control for bench/memory.ts: the bare Node proxy in a process that also imported switchyard
   * (its package entry, as `import { createPool, balance } from 'switchyard-proxy'` does) and a
   * pool and balance() it never uses. What it costs over the bare proxy is the loaded code's, not
   * the proxying's.
   */
  async 'node-baseline-loaded'(upstream) {
    const unused = await switchyardPool(upstream);
    process.once('exit', () => unused.pool.close());
    return TARGETS['node-baseline']!(upstream);
  },

  /** switchyard on Koa 3: `app.use(koa(balance(pool)))`. */
  async 'switchyard-koa'(upstream) {
    const { default: Koa } = await import('koa');
    const { koa } = await fromSrc<typeof import('../src/adapters/koa.ts')>('adapters/koa.ts');
    const app = new Koa();
    app.use(koa(await switchyardPool(upstream)));
    return listen(createServer(app.callback()));
  },

  /**
   * The bare undici proxy, "the limit for Node": a node:http server whose
   * handler dispatches each request through an undici `Pool` (keep-alive, at
   * most BENCH_KEEPALIVE connections, the idle connections the Node agents
   * keep) with a handler object on the Dispatcher API, headers passed through minus the hop-by-hop ones undici
   * refuses, bodies streamed both ways with backpressure. No header filtering,
   * no balancing, no retries, no timeouts beyond undici's defaults.
   */
  async 'undici-baseline'(upstream) {
    const { Pool } = await import('undici');
    const pool = new Pool(upstream, { connections: KEEPALIVE, pipelining: 1, keepAliveTimeout: 120_000, keepAliveMaxTimeout: 120_000 });
    const origin = new URL(upstream).origin;
    const server = createServer((req, res) => {
      const raw = req.rawHeaders;
      const headers: string[] = [];
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i]!;
        if (!HOP_BY_HOP.has(name.toLowerCase())) headers.push(name, raw[i + 1]!);
      }
      const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
      pool.dispatch({ origin, path: req.url ?? '/', method: req.method ?? 'GET', headers, body: hasBody ? req : null }, new UndiciForward(res));
    });
    return listen(server);
  },

  /** http-proxy-3 on its own: a node:http server calling `proxy.web(req, res)`, with a keep-alive agent. */
  async 'http-proxy-3'(upstream) {
    const { createProxyServer } = await import('http-proxy-3');
    const proxy = createProxyServer({ target: upstream, agent: new Agent({ keepAlive: true, maxFreeSockets: KEEPALIVE }) });
    proxy.on('error', (_err, _req, res) => {
      if (res instanceof ServerResponse) {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      } else res.destroy();
    });
    return listen(createServer((req, res) => void proxy.web(req, res)));
  },

  /** http-proxy-middleware (httpxy) on Express, with a keep-alive agent (its default is none). */
  async 'hpm-express'(upstream) {
    const { default: express } = await import('express');
    const { createProxyMiddleware } = await import('http-proxy-middleware');
    const app = express();
    app.use(createProxyMiddleware({ target: upstream, agent: new Agent({ keepAlive: true, maxFreeSockets: KEEPALIVE }) }));
    return listen(createServer(app));
  },

  /** @fastify/http-proxy (reply-from over undici's keep-alive pool, its default). */
  async 'fastify-http-proxy'(upstream) {
    const { default: Fastify } = await import('fastify');
    const { default: proxy } = await import('@fastify/http-proxy');
    const app = Fastify({ logger: false });
    await app.register(proxy, { upstream });
    await app.listen({ host: '127.0.0.1', port: 0 });
    app.server.keepAliveTimeout = 120_000;
    return (app.server.address() as AddressInfo).port;
  },
};

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [name, upstream] = process.argv.slice(2);
  const start = name === undefined ? undefined : TARGETS[name];
  if (start === undefined || upstream === undefined) {
    console.error(`usage: node bench/target.ts <${Object.keys(TARGETS).join('|')}> <upstream url>`);
    process.exit(2);
  }
  const port = await start(upstream);
  process.send?.({ type: 'ready', port });
  process.on('message', (msg: { type?: string; file?: string }) => {
    if (msg?.type === 'profile-start' || msg?.type === 'profile-stop') {
      void profile(msg.type, msg.file).then(() => process.send?.({ type: 'done' }));
    }
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

let session: Session | undefined;

/** Starts V8's sampling profiler, or stops it and writes the .cpuprofile file (run.ts --cpu-prof). */
async function profile(action: 'profile-start' | 'profile-stop', file: string | undefined): Promise<void> {
  if (action === 'profile-start') {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
    return;
  }
  if (session === undefined || file === undefined) return;
  const { profile: data } = await session.post('Profiler.stop');
  session.disconnect();
  session = undefined;
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify(data));
}
