// What the seeded fuzzing of test/fuzz/entry-points.test.ts found, each kept as its own test with
// the smallest reproducer (the fuzz run that found it is named).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { Writable, type Duplex } from 'node:stream';
import { accessLog, balance, chain, limitConnections, limitRequests, shapeResponse } from '../../src/index.ts';
import { fetchText, gateway, listen, poolOf, until } from '../helpers.ts';

const WEBSOCKET =
  'GET /chat HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';

// FUZZ_SEED=1 and FUZZ_SEED=3, FUZZ_RUNS=150 (`ans=raw-cut` on an upgrade): http-proxy-3 relays an
// upstream's refusal of an upgrade and closes the client's connection at the refusal's end only.
// A refusal cut short (Content-Length 50, 5 bytes, then the upstream's FIN) left the client's
// connection open for good (a client's FIN does not close it: Node's server sockets allow half-open
// connections) and the server's slot in the pool held (`active` stayed 1), until the process ended.
test('an upgrade refused with an answer the upstream cuts short: the client connection is closed and the slot given back', async (t) => {
  // Upgraded sockets are no longer their server's (closing it would wait for them): destroyed first.
  const upgraded = new Set<Duplex>();
  t.after(() => {
    for (const socket of upgraded) socket.destroy();
  });
  const up = createServer(() => undefined);
  up.on('upgrade', (_req, socket: Duplex) => {
    upgraded.add(socket);
    socket.on('error', () => undefined);
    socket.end('HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort');
  });
  const server = await listen(t, up);
  const pool = poolOf(t, [{ url: server.url, maxFails: 0 }]);
  const proxy = balance(pool);
  const gw = await gateway(t, chain(proxy));
  gw.server.on('upgrade', (req, socket: Duplex, head: Buffer) => {
    upgraded.add(socket);
    proxy.upgrade(req, socket, head);
  });
  const client = connect(gw.port, '127.0.0.1');
  t.after(() => client.destroy());
  let received = '';
  let closed = false;
  client.on('data', (d: Buffer) => (received += d.toString('latin1')));
  client.on('error', () => undefined);
  client.on('close', () => (closed = true));
  client.write(WEBSOCKET);
  await until(() => received.endsWith('short'), 5000, 'the refusal relayed');
  assert.match(received, /^HTTP\/1\.1 200 OK\r\n/);
  await until(() => closed, 5000, "the client's connection closed by the gateway");
  await until(() => pool.stats().servers[0]!.active === 0, 5000, "the server's slot given back");
});

// Found while building the fuzzed gateway (issue 18 asks for `$limit_req_status` "on the exchange
// and in templates"): exchange(req).limitStatus.req said PASSED or REJECTED, but templates gave ''
// (shapeResponse()'s `add`, balance()'s `setHeaders`) and accessLog() refused the variable as
// unknown. Fixed in src/core/variables.ts (6496045).
test('$limit_req_status and $limit_conn_status in templates: shapeResponse() adds them, accessLog() logs them', async (t) => {
  const lines: string[] = [];
  const log = accessLog({ format: '$status $limit_req_status $limit_conn_status', to: (line) => lines.push(line as string) });
  const limit = limitRequests({ key: '$remote_addr', rate: '1r/s', status: 429 });
  const conns = limitConnections({ key: '$remote_addr', max: 10 });
  const shape = shapeResponse({ add: { 'X-Limit': '$limit_req_status', 'X-Conn': '$limit_conn_status' }, always: true });
  const gw = await gateway(
    t,
    chain(log, shape, conns, limit, (_req, res) => {
      res.end('ok');
    }),
  );
  const first = await fetchText(gw.url);
  const second = await fetchText(gw.url);
  assert.deepEqual([first.status, second.status], [200, 429]);
  assert.deepEqual([first.headers['x-limit'], first.headers['x-conn'], second.headers['x-limit']], ['PASSED', 'PASSED', 'REJECTED']);
  await log.flush();
  assert.deepEqual(lines, ['200 PASSED PASSED', '429 REJECTED PASSED']);
});

// Found while adding a stalled destination to the fuzzed gateway: accessLog().close() on a stream
// that never takes its writes (a pipe whose reader is stuck, a socket that stopped) never resolves,
// so a shutdown that awaits it never ends; its TSDoc says it resolves once the stream finished and
// never rejects. A todo for the owner of src/log: close() bounded (say: the stream destroyed after
// a grace period, the lines held counted as dropped), then drop the todo.
test('accessLog().close() on a destination that never drains still resolves', { todo: 'owner of src/log', timeout: 10_000 }, async (t) => {
  const stalled = new Writable({ highWaterMark: 100, write: () => undefined });
  const log = accessLog({ to: stalled, maxPending: 2000, flush: 0 });
  const gw = await gateway(
    t,
    chain(log, (_req, res) => res.end('ok')),
  );
  for (let i = 0; i < 50; i++) await fetchText(`${gw.url}/x${i}?${'a'.repeat(100)}`);
  assert.ok(log.stats().dropped > 0, 'lines past maxPending dropped');
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<'pending'>((resolve) => {
    timer = setTimeout(resolve, 2000, 'pending');
  });
  const outcome = await Promise.race([log.close().then(() => 'closed' as const), bound]);
  clearTimeout(timer);
  stalled.destroy();
  assert.equal(outcome, 'closed', 'close() resolved within 2 s');
});
