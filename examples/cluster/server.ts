// switchyard as a node:cluster gateway: a primary that starts three demo upstreams and forks
// workers, every worker a gateway on the same port with the pool shared through Redis, so a change
// sent to any worker's monitor API (a drain, a weight) reaches all of them. Run it with
// `node examples/cluster/server.ts` (after `npm run build`, with Redis at REDIS_URL).
//   PORT           the gateway's port, shared by the workers (default 3010; 0 picks a free one)
//   WORKERS        how many workers (default 2)
//   UPSTREAM_PORT  the first demo upstream's port, the others follow (default 3011; 0: free ports)
//   REDIS_URL      the shared Redis (default redis://127.0.0.1:6379)
//   NAMESPACE      the key prefix in Redis (default switchyard-cluster-example)
//   ADMIN_TOKEN    the bearer token the monitor's writes need (default: a random one, printed)
import cluster, { type Worker } from 'node:cluster';
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { balance, chain, createPool, type Middleware, monitor, sync } from 'switchyard-proxy';

const PORT = Number(process.env.PORT ?? 3010);
const WORKERS = Number(process.env.WORKERS ?? 2);
const UPSTREAM_PORT = Number(process.env.UPSTREAM_PORT ?? 3011);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const NAMESPACE = process.env.NAMESPACE ?? 'switchyard-cluster-example';

if (cluster.isPrimary) await primary();
else await worker();

/** The primary: demo upstreams, the workers (a worker that dies is replaced), a clean stop. */
async function primary(): Promise<void> {
  const token = process.env.ADMIN_TOKEN || randomUUID();
  const names = ['alpha', 'beta', 'gamma'];
  const upstreams = await Promise.all(names.map((name, i) => startUpstream(name, UPSTREAM_PORT === 0 ? 0 : UPSTREAM_PORT + i)));
  const env = { UPSTREAMS: JSON.stringify(upstreams.map((u) => ({ id: u.name, url: u.url }))), ADMIN_TOKEN: token };
  let stopping = false;
  const listening = new Set<Worker>();
  let announced = false;
  cluster.on('listening', (w, address) => {
    listening.add(w);
    if (listening.size !== WORKERS || announced) return;
    announced = true;
    const url = `http://127.0.0.1:${address.port}`;
    console.log(`switchyard cluster example listening on ${url} (${WORKERS} workers, Redis ${REDIS_URL}, namespace ${NAMESPACE})`);
    console.log(`upstreams: ${upstreams.map((u) => `${u.name} ${u.url}`).join(', ')}`);
    console.log(`admin token: ${token}`);
    console.log(`try: curl -si ${url}/hello   (x-worker: which worker answered; the body: which upstream)`);
    console.log(
      `     curl -s -X PATCH -H 'authorization: Bearer ${token}' -H 'content-type: application/json' -d '{"drain":true}' ${url}/status/api/9/http/upstreams/demo/servers/beta`,
    );
  });
  cluster.on('exit', (w, code, signal) => {
    listening.delete(w);
    if (stopping) return;
    console.log(`worker ${w.id} exited (${signal ?? code}); starting another`);
    cluster.fork(env);
  });
  for (let i = 0; i < WORKERS; i++) cluster.fork(env);

  // Ctrl-C reaches every process of the group; SIGTERM only this one: either way the workers are
  // told to stop, and the upstreams close once they are all gone.
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    console.log('stopping');
    const workers = Object.values(cluster.workers ?? {}).filter((w) => w !== undefined);
    const closeUpstreams = (): void => {
      for (const u of upstreams) {
        u.server.close();
        u.server.closeAllConnections();
      }
    };
    let left = workers.length;
    if (left === 0) closeUpstreams();
    for (const w of workers) {
      w.once('exit', () => {
        if (--left === 0) closeUpstreams();
      });
      w.process.kill('SIGTERM');
    }
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** A worker: one gateway on the shared port, its pool synced through Redis, the monitor at /status. */
async function worker(): Promise<void> {
  const servers = JSON.parse(process.env.UPSTREAMS ?? '[]') as Array<{ id: string; url: string }>;
  const id = String(cluster.worker?.id);
  const shared = sync({ redis: REDIS_URL, namespace: NAMESPACE });
  shared.on('disconnect', () => console.log(`worker ${id}: Redis lost, carrying on with what it knows`));
  shared.on('connect', () => console.log(`worker ${id}: connected to Redis`));
  await shared.ready;
  const pool = createPool({ name: 'demo', servers, sync: shared });
  const server = createServer();
  const expected = Buffer.from(`Bearer ${process.env.ADMIN_TOKEN ?? ''}`);
  const status = monitor({
    pools: [pool],
    prefix: '/status',
    server,
    // Writes need the token; reads (the API, /status/metrics, /status/dashboard/) are open.
    write: (req) => {
      const given = Buffer.from(req.headers.authorization ?? '');
      return given.length === expected.length && timingSafeEqual(given, expected);
    },
  });
  // Which worker answered, on every response.
  const tag: Middleware = (_req, res, next) => {
    res.setHeader('x-worker', `${id} pid ${process.pid}`);
    next();
  };
  server.on('request', chain(tag, status, balance(pool)));
  server.listen(PORT, '127.0.0.1');

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    server.close();
    server.closeAllConnections();
    status.close();
    pool.close();
    // Leaves the cluster once the handle is closed: the worker's process then ends by itself.
    void shared.close().finally(() => cluster.worker?.disconnect());
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** A demo application server: answers which upstream it is. */
async function startUpstream(name: string, port: number): Promise<{ name: string; url: string; server: Server }> {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify({ upstream: name, url: req.url })}\n`);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { name, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}
