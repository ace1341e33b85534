// Run by test/core/diagnostics.test.ts in a child `node` process, with or without
// NODE_DEBUG=switchyard: a success, a refused connection retried on the next server, a request
// with no server, and run-time pool changes. Prints only the statuses on stdout; whatever the
// debug printer writes goes to stderr.
import { createServer, request } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { balance, chain, createPool, respondWithError, type UpstreamPool } from '../../src/index.ts';

const upstream = createServer((req, res) => {
  req.resume();
  res.end('ok');
});
await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
const live = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;

const probe = createNetServer();
await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
const dead = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
await new Promise<void>((resolve) => probe.close(() => resolve()));

const pools: Record<string, UpstreamPool> = {
  ok: createPool({ name: 'dbg', servers: [{ url: live, id: 'live' }] }),
  retry: createPool({
    name: 'retry',
    servers: [
      { url: dead, id: 'dead' },
      { url: live, id: 'live' },
    ],
  }),
  none: createPool({ name: 'none', servers: [{ url: live, id: 'off', down: true }] }),
};
const handlers = Object.fromEntries(Object.entries(pools).map(([path, pool]) => [path, balance(pool)]));
const gateway = createServer(
  chain((req, res, next) => handlers[(req.url ?? '/').slice(1)]!(req, res, next), { final: (err, req, res) => respondWithError(err, req, res) }),
);
await new Promise<void>((resolve) => gateway.listen(0, '127.0.0.1', resolve));
const port = (gateway.address() as AddressInfo).port;

function get(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

const statuses = [await get('/ok'), await get('/retry'), await get('/none')];
pools.ok!.add({ url: live, id: 'extra' });
pools.ok!.update('extra', { drain: true });
pools.ok!.remove('extra');
process.stdout.write(`statuses ${statuses.join(' ')}\n`);

for (const pool of Object.values(pools)) pool.close();
gateway.closeAllConnections();
upstream.closeAllConnections();
await Promise.all([new Promise((resolve) => gateway.close(resolve)), new Promise((resolve) => upstream.close(resolve))]);
