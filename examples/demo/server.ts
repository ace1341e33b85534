// The switchyard demo: three local application servers and a gateway in front
// of them, on the embedded defaults. `npm start` runs it; PORT changes the port.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { accessLog, balance, cache, chain, createPool, exchange, healthCheck, limitRequests, monitor, rewrite } from 'switchyard-proxy';

const PORT = Number(process.env.PORT ?? 8080);

// Three demo upstreams: "blue" is fast, "green" is slower, "red" fails one request in three.
async function demoUpstream(name: string, behave: (req: IncomingMessage, res: ServerResponse, n: number) => void) {
  let n = 0;
  const server = createServer((req, res) => behave(req, res, ++n));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { name, server, url: `http://127.0.0.1:${port}` };
}

const reply = (name: string) => (req: IncomingMessage, res: ServerResponse) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ server: name, method: req.method, url: req.url, forwardedFor: req.headers['x-forwarded-for'] ?? null }) + '\n');
};

const upstreams = await Promise.all([
  demoUpstream('blue', reply('blue')),
  demoUpstream('green', (req, res) => setTimeout(() => reply('green')(req, res), 50)),
  demoUpstream('red', (req, res, n) => {
    if (req.url !== '/health' && n % 3 === 0) {
      res.statusCode = 502;
      res.end('red is having a bad moment\n');
    } else reply('red')(req, res);
  }),
]);

// A deliberately slow dynamic page (300 ms to build), the textbook case for microcaching.
let reports = 0;
const slow = await demoUpstream('report', (_req, res) => {
  const n = ++reports;
  setTimeout(() => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ server: 'report', generated: n, at: new Date().toISOString() }) + '\n');
  }, 300);
});
upstreams.push(slow);

const pool = createPool({
  name: 'demo',
  servers: [
    { url: upstreams[0].url, id: 'blue', weight: 3 },
    { url: upstreams[1].url, id: 'green', weight: 2 },
    { url: upstreams[2].url, id: 'red', maxFails: 2, failTimeout: '5s' },
  ],
});
pool.on('state', (c) => console.log(`[pool] ${c.id}: ${c.from} -> ${c.to}`));

// Active health checks (NGINX Plus health_check): each server's /health every 2 s.
const health = healthCheck(pool, { uri: '/health', interval: '2s', fails: 2, passes: 1 });

const proxy = balance(pool, { nextUpstream: ['error', 'timeout', 'http_502'] });

// nginx microcaching on /slow: cached for one second; one request refreshes it in the background
// while everyone else gets the current copy, so the slow page is built about once a second
// however many clients ask for it.
const reportPool = createPool({ name: 'reports', servers: [{ url: slow.url, id: 'report' }] });
const microcache = cache({ name: 'micro', valid: '1s', lock: true, useStale: ['updating'], backgroundUpdate: true });
const reportProxy = balance(reportPool);
const slowRoute = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
  const uri = exchange(req).uri;
  if (uri !== '/slow' && !uri.startsWith('/slow/')) return next();
  microcache(req, res, (err?: unknown) => (err === undefined ? reportProxy(req, res, next) : next(err)));
};

// nginx limit_req on /api/limited: 5 requests a second per client address, a burst of 5 answered
// at once (nodelay), 429 Too Many Requests past it (nginx answers 503 unless limit_req_status says).
const limiter = limitRequests({ key: '$remote_addr', rate: '5r/s', burst: 5, nodelay: true, status: 429, name: 'limited' });
const limitedRoute = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
  const uri = exchange(req).uri;
  if (uri !== '/api/limited' && !uri.startsWith('/api/limited/')) return next();
  limiter(req, res, next);
};

// An access log in nginx's combined format on stdout (nginx access_log ... combined), but for the
// monitor's own pages and API, which the dashboard polls every second. ACCESS_LOG=off turns it off.
const logging = process.env.ACCESS_LOG !== 'off';
const access = accessLog({ format: 'combined', to: process.stdout, if: (req) => logging && !(req.url ?? '').startsWith('/switchyard/') });

// nginx-style rewriting in front of the proxy: the upstream gets the rewritten URI.
const rules = rewrite([
  { rewrite: '^/v1/(.*)$', replacement: '/api/$1', flag: 'break' },
  { from: '/old/*path', to: '/new/*path', flag: 'permanent' },
  { if: '$request_method = TRACE', then: [{ return: 405 }] },
]);

const INDEX = `switchyard demo gateway

  GET /hello             (any path) balanced over blue (weight 3), green (2), red (1) with nginx's smooth weighted round robin;
                         red answers 502 one time in three and the request moves on to the next server
  GET /v1/users          rewritten to /api/users before it is proxied (see "url" in the answer)
  GET /old/a/b           301 redirect to /new/a/b
  GET /slow              a 300 ms page, microcached for 1 s (X-Cache-Status: MISS, HIT, STALE, UPDATING):
                         built about once a second however many clients ask
  GET /api/limited       rate limited (nginx limit_req): 5 requests a second per client with a burst of 5,
                         then 429 Too Many Requests
  GET /switchyard/stats  live per-server statistics (state, active, requests, responses, fails)
  GET /switchyard/cache  the microcache's counters (hit, stale, updating, miss, ...)
  GET /switchyard/dashboard/          the live dashboard (drain, down and up buttons from this machine)
  GET /switchyard/api/9/http/upstreams  NGINX Plus-shaped API; /switchyard/metrics for Prometheus
  PATCH /switchyard/api/9/http/upstreams/demo/servers/:id   change a server at run time
                         ({"drain":true}, {"down":true}, {"down":false,"drain":false}), from this machine

Try:
  open http://localhost:${PORT}/switchyard/dashboard/ in a browser, then:
  for i in $(seq 12); do curl -s localhost:${PORT}/hello; done
  curl -s localhost:${PORT}/v1/users
  curl -si localhost:${PORT}/old/a/b
  curl -si localhost:${PORT}/slow
  for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' localhost:${PORT}/api/limited; done
  curl -s localhost:${PORT}/switchyard/stats
  curl -s localhost:${PORT}/switchyard/cache
  curl -s localhost:${PORT}/switchyard/api/9/http/upstreams
  curl -s localhost:${PORT}/switchyard/metrics
  curl -s -X PATCH -H 'content-type: application/json' -d '{"down":true}' localhost:${PORT}/switchyard/api/9/http/upstreams/demo/servers/blue

TCP and UDP balancing (nginx's stream module, streamBalance()) has its own example:
  npm run build && node examples/tcp/server.ts
`;

const admin = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
  const url = req.url ?? '/';
  if (url === '/' && req.method === 'GET') {
    res.setHeader('content-type', 'text/plain; charset=utf-8');
    res.end(INDEX);
    return;
  }
  if (url === '/switchyard/stats' && req.method === 'GET') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(pool.stats(), null, 2) + '\n');
    return;
  }
  if (url === '/switchyard/cache' && req.method === 'GET') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(microcache.stats(), null, 2) + '\n');
    return;
  }
  next();
};

// Live monitoring: NGINX Plus-shaped JSON API, Prometheus metrics and the dashboard under /switchyard/.
// Changes (drain, down, up, add, remove) are allowed from this machine, to requests whose Host is
// localhost or an IP address (allowedHosts): the client's address alone is not enough, since a page
// on another site can rebind its own name to 127.0.0.1 and send requests from your browser (DNS
// rebinding). Those carry the other site's name in Host, and monitor() refuses them (403). A gateway
// reached by name lists that name in allowedHosts, and checks a credential in `write`.
const gateway = createServer();
const loopback = (address: string | undefined): boolean => address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
const status = monitor({
  pools: [pool, reportPool],
  caches: [microcache],
  limits: [limiter],
  healthChecks: [health],
  prefix: '/switchyard',
  server: gateway,
  allowedHosts: [], // IP addresses and localhost only (always allowed)
  write: (req) => loopback(req.socket.remoteAddress),
});
gateway.on('request', chain(access, admin, status, limitedRoute, rules, slowRoute, proxy));
gateway.on('upgrade', proxy.upgrade);
// A port already taken is the usual first-run problem: say so, and how to pick another.
gateway.once('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EADDRINUSE' || err.code === 'EACCES') {
    const why = err.code === 'EADDRINUSE' ? 'is already in use' : 'needs privileges this process does not have';
    console.error(`switchyard demo: port ${PORT} ${why}. Pick another one: PORT=9000 npm start`);
  } else {
    console.error(`switchyard demo: cannot listen on port ${PORT}: ${err.message}`);
  }
  stop();
  process.exitCode = 1;
});
gateway.listen(PORT, () => {
  const { port } = gateway.address() as AddressInfo;
  console.log(`switchyard demo gateway listening on http://localhost:${port}`);
  console.log(`upstreams: ${upstreams.map((u) => `${u.name} ${u.url}`).join(', ')}`);
  console.log(INDEX.replaceAll(`localhost:${PORT}`, `localhost:${port}`));
  if (logging) console.log('access log (nginx combined format) follows; ACCESS_LOG=off npm start for none');
});

function stop(): void {
  if (gateway.listening) gateway.close();
  gateway.closeAllConnections();
  for (const u of upstreams) {
    u.server.close();
    u.server.closeAllConnections();
  }
  health.stop();
  status.close();
  pool.close();
  reportPool.close();
  void microcache.close();
  void access.close();
}
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
