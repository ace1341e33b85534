// switchyard in a Koa app: three local upstream servers and a gateway in front
// of them. Run it with `node examples/koa/server.ts` (after `npm run build`);
// PORT changes the gateway's port (0 picks a free one).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import Koa from 'koa';
import { bodyParser } from '@koa/bodyparser';
import { WebSocketServer } from 'ws';
import { balance, cache, chain, createPool, sticky, SwitchyardError, type Next } from 'switchyard-proxy';
import { koa } from 'switchyard-proxy/koa';

const PORT = Number(process.env.PORT ?? 3002);

interface LocalUpstream {
  name: string;
  url: string;
  server: Server;
  wss: WebSocketServer;
}

// An application server on a free loopback port: answers JSON saying who it is,
// echoes WebSocket messages. With `failEvery`, every n-th HTTP request gets a 503.
async function startUpstream(name: string, failEvery = 0): Promise<LocalUpstream> {
  let n = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (failEvery > 0 && ++n % failEvery === 0) {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end(`${name} is busy\n`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify({ upstream: name, method: req.method, url: req.url, body: Buffer.concat(chunks).toString() })}\n`);
    });
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    ws.send(`${name}: welcome to ${req.url}`);
    ws.on('message', (data) => ws.send(`${name}: ${String(data)}`));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { name, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, wss };
}

const upstreams = await Promise.all([startUpstream('alpha'), startUpstream('beta'), startUpstream('gamma', 2)]);

// HTTP API pool: least connections; gamma turns away every other request.
const api = createPool({
  name: 'api',
  method: 'least-conn',
  servers: upstreams.map((u) => ({ url: u.url, id: u.name, maxFails: 3, failTimeout: '5s' })),
});
// WebSocket pool: a consistent hash of the `room` query argument, so one room stays on one server.
const chat = createPool({
  name: 'chat',
  method: { name: 'hash', key: '$arg_room', consistent: true },
  servers: upstreams.map((u) => ({ url: u.url, id: u.name })),
});

// Retries: a failed connection, a timeout, a 502 or a 503 moves the request on to the next server.
const proxy = balance(api, { nextUpstream: ['error', 'timeout', 'http_502', 'http_503'], tries: 3, headerTimeout: '5s' });
const rooms = balance(chat);

// Web pool for stateful pages: alpha and beta, with session persistence by cookie.
const web = createPool({ name: 'web', servers: upstreams.slice(0, 2).map((u) => ({ url: u.url, id: u.name })) });
// Static content cached for ten minutes (nginx proxy_cache_valid 10m); X-Cache-Status tells MISS from HIT.
const assets = cache({ name: 'assets', valid: '10m' });
const cachedProxy = chain(assets, proxy);
// One user, one server: the srv_id cookie names the server that answered (nginx sticky cookie).
const stickyWeb = chain(sticky(web, { cookie: { name: 'srv_id', path: '/', httpOnly: true, sameSite: 'lax' } }), balance(web));

// Only /api, /static and /app go upstream; everything else is handed on to the Koa middleware below.
function apiOnly(req: IncomingMessage, res: ServerResponse, next: Next): void {
  const url = req.url ?? '';
  if (/^\/api(\/|\?|$)/.test(url)) proxy(req, res, next);
  else if (/^\/static(\/|\?|$)/.test(url)) cachedProxy(req, res, next);
  else if (/^\/app(\/|\?|$)/.test(url)) stickyWeb(req, res, next);
  else next();
}

const app = new Koa();
// switchyard errors carry a stable code and the status to answer (502, 503, 504).
app.use(async (ctx, next) => {
  try {
    await next();
  } catch (err) {
    if (!(err instanceof SwitchyardError)) throw err;
    ctx.status = err.statusCode;
    ctx.body = { error: err.code, message: err.message };
  }
});
// Parsed JSON and form bodies are re-sent upstream; other bodies stream through untouched.
app.use(bodyParser());
app.use(koa(apiOnly));
app.use(async (ctx) => {
  if (ctx.path !== '/') return;
  ctx.type = 'text/plain';
  ctx.body = `switchyard koa example
  GET|POST /api/...     balanced over ${upstreams.map((u) => u.name).join(', ')} (least-conn, retries on 502/503)
  ws://.../chat?room=x  WebSocket, one room per server (consistent hash of $arg_room)
  GET /static/...       cached for 10 minutes (X-Cache-Status: MISS, then HIT)
  GET /app/...          sticky sessions over alpha and beta (srv_id cookie)
`;
});

const gateway = createServer(app.callback());
const upgraded = new Set<Duplex>();
gateway.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
  if (!/^\/chat(\/|\?|$)/.test(req.url ?? '')) {
    socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  upgraded.add(socket);
  socket.once('close', () => upgraded.delete(socket));
  rooms.upgrade(req, socket, head);
});

gateway.listen(PORT, '127.0.0.1', () => {
  const { port } = gateway.address() as AddressInfo;
  console.log(`switchyard koa example listening on http://127.0.0.1:${port}`);
  console.log(`upstreams: ${upstreams.map((u) => `${u.name} ${u.url}`).join(', ')}`);
  console.log(`try: curl -s http://127.0.0.1:${port}/api/hello`);
  console.log(`     curl -s -H 'content-type: application/json' -d '{"hello":"world"}' http://127.0.0.1:${port}/api/echo`);
});

// Clean shutdown: stop accepting, close every connection and upstream, then let the process end.
function stop(): void {
  console.log('stopping');
  gateway.close();
  gateway.closeAllConnections();
  for (const socket of upgraded) socket.destroy();
  for (const u of upstreams) {
    for (const ws of u.wss.clients) ws.terminate();
    u.wss.close();
    u.server.close();
    u.server.closeAllConnections();
  }
  api.close();
  chat.close();
  web.close();
  void assets.close();
}
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
