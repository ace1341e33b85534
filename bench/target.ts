// One proxy under test, in its own process: `node bench/target.ts <name> <upstream url>`.
// Listens on 127.0.0.1 (a free port), forwards every request to the upstream,
// and reports its port to run.ts over IPC. Each target imports only what it needs.
import { Agent, createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Idle upstream connections each proxy may keep (agent maxFreeSockets, set by run.ts). */
const KEEPALIVE = Number(process.env.BENCH_KEEPALIVE ?? 32);

/** A target starts its proxy and resolves with the listening port. */
type Start = (upstream: string) => Promise<number>;

function listen(server: Server): Promise<number> {
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 121_000;
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

async function switchyardPool(upstream: string) {
  const { createPool, balance } = await import('../src/index.ts');
  const pool = createPool({ servers: [{ url: upstream }], agent: { maxFreeSockets: KEEPALIVE } });
  return balance(pool);
}

export const TARGETS: Record<string, Start> = {
  /** switchyard on plain node:http: chain(balance(pool)). */
  async 'switchyard-node'(upstream) {
    const { chain } = await import('../src/index.ts');
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
    const { switchyard } = await import('../src/adapters/fastify.ts');
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
