// switchyard in an Express app: three local upstream servers and a gateway in
// front of them. Run it with `node examples/express/server.ts` (after
// `npm run build`); PORT changes the gateway's port (0 picks a free one).
import { createWriteStream } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import express, { type ErrorRequestHandler } from 'express';
import { WebSocketServer } from 'ws';
import { accessLog, balance, cache, createPool, requestId, shapeResponse, sticky, SwitchyardError } from 'switchyard-proxy';

const PORT = Number(process.env.PORT ?? 3000);

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
      // What an application framework often sends: the gateway's onResponse hook removes it.
      res.writeHead(200, { 'content-type': 'application/json', 'x-powered-by': `${name}-app` });
      const body = Buffer.concat(chunks).toString();
      res.end(`${JSON.stringify({ upstream: name, method: req.method, url: req.url, requestId: req.headers['x-request-id'], body })}\n`);
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

// Web pool for stateful pages: alpha and beta, with session persistence by cookie.
const web = createPool({ name: 'web', servers: upstreams.slice(0, 2).map((u) => ({ url: u.url, id: u.name })) });

// Retries: a failed connection, a timeout, a 502 or a 503 moves the request on to the next server.
// setHeaders (nginx proxy_set_header) sends the request's id upstream; onResponse sees the upstream's
// status and headers before anything goes to the client: here it hides what the upstream runs and
// says which server answered.
const proxy = balance(api, {
  nextUpstream: ['error', 'timeout', 'http_502', 'http_503'],
  tries: 3,
  headerTimeout: '5s',
  setHeaders: { 'X-Request-Id': '$request_id', 'X-Real-IP': '$remote_addr' },
  onResponse(ctx) {
    ctx.headers.delete('x-powered-by');
    ctx.headers.set('X-Upstream', ctx.server.id);
  },
});
const rooms = balance(chat);
// Static content cached for ten minutes (nginx proxy_cache_valid 10m); X-Cache-Status tells MISS from HIT.
const assets = cache({ name: 'assets', valid: '10m' });
// One user, one server: the srv_id cookie names the server that answered (nginx sticky cookie).
const sessions = sticky(web, { cookie: { name: 'srv_id', path: '/', httpOnly: true, sameSite: 'lax' } });

// Every request gets an id (nginx $request_id), sent back in X-Request-Id, upstream by setHeaders, and
// logged. The access log is nginx's combined format plus the id, the upstream and the time
// (log_format), to stdout, or appended to the file ACCESS_LOG names.
const ids = requestId({ respond: true });
const access = accessLog({
  format:
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_id $upstream_addr $request_time',
  to: process.env.ACCESS_LOG ? createWriteStream(process.env.ACCESS_LOG, { flags: 'a' }) : process.stdout,
});
// Security headers on every answer, proxied or not (nginx add_header ... always), and Express's own
// X-Powered-By cleared (headers-more's more_clear_headers).
const security = shapeResponse({
  add: { 'X-Content-Type-Options': 'nosniff', 'X-Frame-Options': 'DENY', 'Referrer-Policy': 'no-referrer' },
  always: true,
  remove: ['X-Powered-By'],
});

const app = express();
app.use(ids, access, security);
app.get('/', (_req, res) => {
  res.type('text/plain').send(`switchyard express example
  GET|POST /api/...     balanced over ${upstreams.map((u) => u.name).join(', ')} (least-conn, retries on 502/503)
  ws://.../chat?room=x  WebSocket, one room per server (consistent hash of $arg_room)
  GET /static/...       cached for 10 minutes (X-Cache-Status: MISS, then HIT)
  GET /app/...          sticky sessions over alpha and beta (srv_id cookie)
Every answer carries X-Request-Id and security headers; each request is logged (combined format + id).
`);
});
app.use('/static', assets, proxy);
app.use('/app', sessions, balance(web));
// Parsed JSON bodies are re-sent upstream; other bodies stream through untouched.
app.use(express.json());
app.use('/api', proxy);
// switchyard errors carry a stable code and the status to answer (502, 503, 504).
const onError: ErrorRequestHandler = (err, _req, res, next) => {
  if (!(err instanceof SwitchyardError)) return next(err);
  res.status(err.statusCode).json({ error: err.code, message: err.message });
};
app.use(onError);

const gateway = createServer(app);
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
  console.log(`switchyard express example listening on http://127.0.0.1:${port}`);
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
  void access.close();
}
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
