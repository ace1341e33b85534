// The benchmark's upstream: a plain node:http server answering every request
// with the same 1 KiB body. Runs in its own process, started by run.ts, which
// learns the port over IPC and asks for connection counts between targets.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const size = Number(process.env.BENCH_BODY_BYTES ?? 1024);
const body = Buffer.alloc(size, 'x');
let connections = 0;
let requests = 0;

const server = createServer((req, res) => {
  requests++;
  // A request body, if any, is read and dropped before answering.
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': size });
    res.end(body);
  });
});
server.on('connection', () => {
  connections++;
});
// Longer than any pause in a run, so a proxy never reuses a connection the upstream is closing.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  process.send?.({ type: 'ready', port });
});

process.on('message', (msg: { type?: string }) => {
  if (msg?.type === 'stats') {
    process.send?.({ type: 'stats', connections, requests });
    connections = 0;
    requests = 0;
  }
});
// The parent going away ends this process too.
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
