// switchyard in a Fastify app: three local upstream servers and a gateway in
// front of them. Run it with `node examples/fastify/server.ts` (after
// `npm run build`); PORT changes the gateway's port (0 picks a free one).
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import Fastify from 'fastify';
import { WebSocketServer } from 'ws';
import { balance, cache, createPool, sticky, SwitchyardError } from 'switchyard-proxy';
import { switchyard } from 'switchyard-proxy/fastify';

const PORT = Number(process.env.PORT ?? 3001);

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

// Web pool for stateful pages: alpha and beta, with session persistence by cookie.
const web = createPool({ name: 'web', servers: upstreams.slice(0, 2).map((u) => ({ url: u.url, id: u.name })) });
// Static content cached for ten minutes (nginx proxy_cache_valid 10m); X-Cache-Status tells MISS from HIT.
const assets = cache({ name: 'assets', valid: '10m' });

const app = Fastify();
// switchyard errors carry a stable code and the status to answer (502, 503, 504).
app.setErrorHandler((err, _request, reply) => {
  if (err instanceof SwitchyardError) return reply.code(err.statusCode).send({ error: err.code, message: err.message });
  return reply.send(err);
});
app.get(
  '/',
  async () => `switchyard fastify example
  GET|POST /api/...     balanced over ${upstreams.map((u) => u.name).join(', ')} (least-conn, retries on 502/503)
  ws://.../chat?room=x  WebSocket, one room per server (consistent hash of $arg_room)
  GET /static/...       cached for 10 minutes (X-Cache-Status: MISS, then HIT)
  GET /app/...          sticky sessions over alpha and beta (srv_id cookie)
`,
);

// Retries: a failed connection, a timeout, a 502 or a 503 moves the request on to the next server.
// parseBody: Fastify parses JSON and text (re-sent upstream); other bodies stream through.
await app.register(switchyard, {
  prefix: '/api',
  use: [balance(api, { nextUpstream: ['error', 'timeout', 'http_502', 'http_503'], tries: 3, headerTimeout: '5s' })],
  parseBody: true,
});
await app.register(switchyard, {
  prefix: '/static',
  use: [assets, balance(api, { nextUpstream: ['error', 'timeout', 'http_502', 'http_503'], tries: 3 })],
  methods: ['GET', 'HEAD'],
  websocket: false,
});
// One user, one server: the srv_id cookie names the server that answered (nginx sticky cookie).
await app.register(switchyard, {
  prefix: '/app',
  use: [sticky(web, { cookie: { name: 'srv_id', path: '/', httpOnly: true, sameSite: 'lax' } }), balance(web)],
  websocket: false,
});
// The plugin proxies WebSocket upgrades under its prefix through the balance() middleware in `use`.
await app.register(switchyard, { prefix: '/chat', use: [balance(chat)], methods: ['GET'] });

// Upgrades for other paths get a 404; proxied ones are remembered so shutdown can cut them.
const upgraded = new Set<Duplex>();
app.server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
  if (/^\/(api|chat)(\/|\?|$)/.test(req.url ?? '')) {
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
  } else {
    socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
  }
});

const address = await app.listen({ port: PORT, host: '127.0.0.1' });
const { port } = app.server.address() as AddressInfo;
console.log(`switchyard fastify example listening on ${address}`);
console.log(`upstreams: ${upstreams.map((u) => `${u.name} ${u.url}`).join(', ')}`);
console.log(`try: curl -s http://127.0.0.1:${port}/api/hello`);
console.log(`     curl -s -H 'content-type: application/json' -d '{"hello":"world"}' http://127.0.0.1:${port}/api/echo`);

// Clean shutdown: stop accepting, close every connection and upstream, then let the process end.
async function stop(): Promise<void> {
  console.log('stopping');
  for (const socket of upgraded) socket.destroy();
  await app.close();
  for (const u of upstreams) {
    for (const ws of u.wss.clients) ws.terminate();
    u.wss.close();
    u.server.close();
    u.server.closeAllConnections();
  }
  api.close();
  chat.close();
  web.close();
  await assets.close();
}
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
