// switchyard's stream proxy (nginx `stream { }`): TCP and UDP load balancing on a pool. The example
// starts two line-based echo services (alpha and beta, each on a TCP and a UDP port of its own) and
// a gateway in front of them, with an active TCP health check and the NGINX Plus API. Run it with
// `node examples/tcp/server.ts` (after `npm run build`); PORT changes the TCP gateway's port (0 picks
// a free one), the UDP gateway and the monitor take the next free ones. REDIS_URL, when Redis is
// reachable there, adds a third gateway balancing the RESP protocol to it.
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { createPool, healthCheck, monitor, streamBalance, type StreamHandler } from 'switchyard-proxy';

const PORT = Number(process.env.PORT ?? 6000);

interface Echo {
  name: string;
  tcp: Server;
  udp: DgramSocket;
  port: number;
  udpPort: number;
}

// A line echo service: every line comes back as "<name>: <line>"; "PING" answers "PONG".
async function startEcho(name: string): Promise<Echo> {
  const tcp = createServer((socket) => {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      buffered += text;
      for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl).replace(/\r$/, '');
        buffered = buffered.slice(nl + 1);
        socket.write(line === 'PING' ? 'PONG\n' : `${name}: ${line}\n`);
      }
    });
    socket.on('error', () => undefined);
  });
  tcp.listen(0, '127.0.0.1');
  await once(tcp, 'listening');
  const udp = createSocket('udp4');
  udp.on('message', (msg, r) => udp.send(`${name}: ${msg.toString().trim()}\n`, r.port, r.address));
  udp.bind(0, '127.0.0.1');
  await once(udp, 'listening');
  return { name, tcp, udp, port: (tcp.address() as AddressInfo).port, udpPort: udp.address().port };
}

const echoes = await Promise.all([startEcho('alpha'), startEcho('beta')]);

// TCP: least connections; a server that fails its health check gets no new connections.
const lines = createPool({
  name: 'lines',
  method: 'least-conn',
  servers: echoes.map((e) => ({ url: `http://127.0.0.1:${e.port}`, id: e.name, maxFails: 2, failTimeout: '5s' })),
});
const lineCheck = healthCheck(lines, { type: 'tcp', send: 'PING\n', expect: 'PONG', interval: '2s', timeout: '1s' });
const tcpProxy = streamBalance(lines, { zone: 'lines_tcp', connectTimeout: '2s', idleTimeout: '5m' });
tcpProxy.on('error', (err, session) => console.error(`tcp ${session.remoteAddress}: ${err.code} ${err.message}`));

// UDP: one answer per datagram ends the session (nginx proxy_responses 1), so datagrams alternate.
const datagrams = createPool({ name: 'datagrams', servers: echoes.map((e) => ({ url: `http://127.0.0.1:${e.udpPort}`, id: e.name })) });
const udpProxy = streamBalance(datagrams, { protocol: 'udp', zone: 'lines_udp', responses: 1, idleTimeout: '10s' });
const udpFront = createSocket('udp4');
udpProxy.attach(udpFront);

const gateway = createServer({ allowHalfOpen: true }, tcpProxy);
gateway.listen(PORT, '127.0.0.1');
await once(gateway, 'listening');
udpFront.bind(0, '127.0.0.1');
await once(udpFront, 'listening');

// RESP (Redis) through the gateway, when Redis answers at REDIS_URL.
const streams: StreamHandler[] = [tcpProxy, udpProxy];
const pools = [lines, datagrams];
let redisFront: Server | undefined;
const redisUrl = new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const redisUp = await new Promise<boolean>((resolve) => {
  const probe = connect({ host: redisUrl.hostname, port: Number(redisUrl.port || 6379) }, () => {
    probe.destroy();
    resolve(true);
  });
  probe.on('error', () => resolve(false));
});
if (redisUp) {
  const redis = createPool({ name: 'redis', servers: [{ url: `http://${redisUrl.hostname}:${redisUrl.port || 6379}` }] });
  const redisProxy = streamBalance(redis, { zone: 'redis_front' });
  redisFront = createServer({ allowHalfOpen: true }, redisProxy);
  redisFront.listen(0, '127.0.0.1');
  await once(redisFront, 'listening');
  streams.push(redisProxy);
  pools.push(redis);
}

// The NGINX Plus API: /api/9/stream/upstreams and /api/9/stream/server_zones.
const mon = monitor({ pools, streams, healthChecks: [lineCheck] });
const status = createHttpServer((req, res) => mon(req, res, () => res.writeHead(404).end('not found\n')));
status.listen(0, '127.0.0.1');
await once(status, 'listening');

const port = (gateway.address() as AddressInfo).port;
console.log(`switchyard tcp example listening on tcp://127.0.0.1:${port}`);
console.log(`  udp gateway on udp://127.0.0.1:${udpFront.address().port}`);
if (redisFront !== undefined) console.log(`  redis gateway on tcp://127.0.0.1:${(redisFront.address() as AddressInfo).port}`);
console.log(`  monitor on http://127.0.0.1:${(status.address() as AddressInfo).port}/api/9/stream/upstreams`);

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  lineCheck.stop();
  for (const s of streams) s.close();
  mon.close();
  gateway.close();
  redisFront?.close();
  status.close();
  udpFront.close();
  for (const e of echoes) {
    e.tcp.close();
    e.udp.close();
  }
  for (const p of pools) p.close();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
