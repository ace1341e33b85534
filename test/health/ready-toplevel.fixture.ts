// A standalone ES module, run by ready.test.ts in a child process: `await hc.ready` at its top level,
// with nothing else keeping the process alive (the upstream is unref'd), must wait for the first
// probe instead of ending the process with "unsettled top-level await". With the argument `leave`
// it leaves the check running afterwards: the process must still end by itself.
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createPool, healthCheck } from '../../src/index.ts';

const leave = process.argv[2] === 'leave';
const server = createServer((_req, res) => res.end('ok'));
server.listen(0, '127.0.0.1');
await once(server, 'listening');
server.unref();
const pool = createPool({ servers: [{ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, id: 'a' }] });
const hc = healthCheck(pool, { interval: leave ? '100ms' : '1h' });
await hc.ready;
process.stdout.write(`ready ${pool.stats().servers[0]!.state}\n`);
if (!leave) {
  hc.stop();
  pool.close();
  server.close();
}
