// healthCheck() for pools streamBalance() serves: TCP connect-only, TCP send/expect (Redis PING ->
// +PONG), UDP send/expect and UDP without expect (ICMP unreachable), on real sockets.
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect } from 'node:net';
import { test } from 'node:test';
import { healthCheck, type HealthCheckOptions, type ProbeResult } from '../../src/health/index.ts';
import { createPool, type UpstreamPool } from '../../src/pool/index.ts';
import { streamBalance } from '../../src/stream/index.ts';
import { deadPort, until } from '../helpers.ts';
import { gatewayOf, named, names, tally, tcpServer } from './support.ts';

/** A check with real timers (a long interval: the tests drive probes with check()), stopped when the test ends. */
function checked(
  t: Parameters<typeof named>[0],
  pool: UpstreamPool,
  options: HealthCheckOptions,
): { results: ProbeResult[]; check: () => Promise<void>; ready: Promise<void> } {
  const hc = healthCheck(pool, { interval: '1h', timeout: '300ms', ...options });
  t.after(() => hc.stop());
  const results: ProbeResult[] = [];
  hc.on('probe', (r) => results.push(r));
  return { results, check: () => hc.check(), ready: hc.ready };
}

test("type 'tcp': a server that refuses connections is unhealthy and gets no stream connections", async (t) => {
  const a = await named(t, 'a');
  const port = await deadPort();
  const pool = createPool({
    servers: [
      { url: a.url, id: 'a' },
      { url: `http://127.0.0.1:${port}`, id: 'dead', maxFails: 0 },
    ],
  });
  t.after(() => pool.close());
  const hc = checked(t, pool, { type: 'tcp' });
  await hc.ready;
  assert.deepEqual(hc.results.map((r) => [r.id, r.passed, r.reason]).sort(), [
    ['a', true, undefined],
    ['dead', false, 'ECONNREFUSED'],
  ]);
  assert.deepEqual(
    pool.streamStats().servers.map((s) => [s.id, s.state, s.healthChecks.checks]),
    [
      ['a', 'up', 1],
      ['dead', 'unhealthy', 1],
    ],
  );
  const g = await gatewayOf(t, streamBalance(pool));
  assert.deepEqual(tally(await names(g.port, 6)), { a: 6 });
  assert.equal(pool.streamStats().servers[1]!.connections, 0);
});

test("type 'tcp' with send and expect: Redis answers PING with +PONG; a wrong expectation fails", async (t) => {
  const redis = new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const url = `http://${redis.hostname}:${redis.port || 6379}`;
  const up = await new Promise<boolean>((resolve) => {
    const pool = createPool({ servers: [{ url }] });
    const hc = healthCheck(pool, { type: 'tcp', timeout: '500ms', interval: '1h' });
    hc.once('probe', (r) => {
      hc.stop();
      pool.close();
      resolve(r.passed);
    });
  });
  if (!up) {
    t.skip(`no Redis at ${redis.host}`);
    return;
  }
  for (const [expect, passed] of [
    ['+PONG', true],
    [/^\+PONG\r\n$/, true],
    ['-ERR', false],
  ] as const) {
    const pool = createPool({ servers: [{ url }] });
    t.after(() => pool.close());
    const hc = checked(t, pool, { type: 'tcp', send: 'PING\r\n', expect });
    await hc.ready;
    assert.equal(hc.results[0]!.passed, passed, String(expect));
    if (!passed) assert.equal(hc.results[0]!.reason, 'unexpected answer');
  }
});

test("type 'tcp': a server that closes without answering, or answers too late, fails an expectation", async (t) => {
  const closer = await tcpServer(t, (s) => {
    s.resume();
    s.end();
  });
  const silent = await tcpServer(t, (s) => s.resume());
  const pool = createPool({
    servers: [
      { url: closer.url, id: 'closer' },
      { url: silent.url, id: 'silent' },
    ],
  });
  t.after(() => pool.close());
  const hc = checked(t, pool, { type: 'tcp', send: 'hello', expect: 'hi' });
  await hc.ready;
  assert.deepEqual(hc.results.map((r) => [r.id, r.passed, r.reason]).sort(), [
    ['closer', false, 'closed without an answer'],
    ['silent', false, 'timeout'],
  ]);
  await until(() => silent.open.size === 0 && closer.open.size === 0, 2000, 'the probes closed their connections');
});

test("type 'udp': send and expect against a DNS-shaped server; without expect a closed port fails (ICMP unreachable) and a silent one passes", async (t) => {
  const dns = createSocket('udp4');
  dns.bind(0, '127.0.0.1');
  await once(dns, 'listening');
  t.after(() => dns.close());
  dns.on('message', (m, r) => dns.send(Buffer.concat([Buffer.from('ANSWER:'), m]), r.port, r.address));
  const silent = createSocket('udp4');
  silent.bind(0, '127.0.0.1');
  await once(silent, 'listening');
  t.after(() => silent.close());
  const gone = createSocket('udp4');
  gone.bind(0, '127.0.0.1');
  await once(gone, 'listening');
  const gonePort = gone.address().port;
  gone.close();
  const pool = createPool({
    servers: [
      { url: `http://127.0.0.1:${dns.address().port}`, id: 'dns' },
      { url: `http://127.0.0.1:${silent.address().port}`, id: 'silent' },
      { url: `http://127.0.0.1:${gonePort}`, id: 'gone' },
    ],
  });
  t.after(() => pool.close());
  const withExpect = checked(t, pool, { type: 'udp', send: 'query', expect: /^ANSWER:query$/, name: 'expect' });
  await withExpect.ready;
  assert.deepEqual(withExpect.results.map((r) => [r.id, r.passed]).sort(), [
    ['dns', true],
    ['gone', false],
    ['silent', false],
  ]);
  withExpect.results.length = 0;
  const pool2 = createPool({ servers: pool.servers.map((s) => ({ url: s.url, id: s.id })) });
  t.after(() => pool2.close());
  const plain = checked(t, pool2, { type: 'udp' });
  await plain.ready;
  assert.deepEqual(plain.results.map((r) => [r.id, r.passed, r.reason]).sort(), [
    ['dns', true, undefined],
    ['gone', false, 'ECONNREFUSED'],
    ['silent', true, undefined],
  ]);
});

test('stream probe options are validated', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  try {
    for (const [options, path] of [
      [{ type: 'smtp' }, 'type'],
      [{ send: 'x' }, 'send'],
      [{ expect: 'x' }, 'expect'],
      [{ type: 'tcp', send: 5 }, 'send'],
      [{ type: 'tcp', expect: 5 }, 'expect'],
    ] as const) {
      assert.throws(
        () => healthCheck(pool, options as never).stop(),
        (err: { option?: string }) => err.option === path,
        JSON.stringify(options),
      );
    }
  } finally {
    pool.close();
  }
});

test('sessionDrop: a server a health check finds unhealthy loses its stream sessions', async (t) => {
  let healthy = true;
  const s = await tcpServer(t, (socket) => {
    socket.on('data', (d: Buffer) => {
      if (d.toString() === 'PING\n') socket.end(healthy ? 'PONG\n' : 'SICK\n');
    });
    socket.write('hello\n');
  });
  const pool = createPool({ servers: [{ url: s.url, id: 's' }] });
  t.after(() => pool.close());
  const hc = checked(t, pool, { type: 'tcp', send: 'PING\n', expect: /PONG/ });
  await hc.ready;
  const g = await gatewayOf(t, streamBalance(pool, { sessionDrop: true }));
  const c = connect({ port: g.port, host: '127.0.0.1' });
  c.on('error', () => undefined);
  await once(c, 'data');
  healthy = false;
  await hc.check();
  assert.equal(pool.streamStats().servers[0]!.state, 'unhealthy');
  await until(() => c.destroyed, 2000, 'the session dropped');
});
