// streamBalance() over UDP with real dgram sockets on loopback: a DNS-shaped exchange through the
// gateway, sessions by client address and port, proxy_responses, proxy_requests, idle timeout.
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import type { TestContext } from 'node:test';
import { test } from 'node:test';
import { createPool } from '../../src/pool/index.ts';
import { streamBalance, type StreamBalanceOptions, type StreamHandler, type StreamSession } from '../../src/stream/index.ts';
import { until } from '../helpers.ts';

/** A bound UDP socket on 127.0.0.1, closed when the test ends. */
async function udpSocket(t: TestContext): Promise<Socket & { port: number }> {
  const s = createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  t.after(() => s.close());
  return Object.assign(s, { port: s.address().port });
}

/** A DNS query for `name`, type A, with id `id` (RFC 1035 §4.1). */
function dnsQuery(id: number, name: string): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')]));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // recursion desired
  header.writeUInt16BE(1, 4); // one question
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/**
 * A small DNS-shaped server: answers every query with its question and one A record whose address
 * ends in `octet`, so the client sees which server answered. `extra` answers more datagrams.
 */
async function dnsServer(t: TestContext, octet: number, extra = 0): Promise<{ port: number; url: string; queries: number; sources: Set<string> }> {
  const s = await udpSocket(t);
  const info = { port: s.port, url: `http://127.0.0.1:${s.port}`, queries: 0, sources: new Set<string>() };
  s.on('message', (q, rinfo) => {
    info.queries++;
    info.sources.add(`${rinfo.address}:${rinfo.port}`);
    const question = q.subarray(12);
    const header = Buffer.from(q.subarray(0, 12));
    header.writeUInt16BE(0x8180, 2); // response, recursion available, no error
    header.writeUInt16BE(1, 6); // one answer
    const answer = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, octet]);
    const reply = Buffer.concat([header, question, answer]);
    for (let i = 0; i <= extra; i++) s.send(reply, rinfo.port, rinfo.address);
  });
  return info;
}

/** The gateway: a handler attached to a bound dgram socket. */
async function udpGateway(
  t: TestContext,
  pool: ReturnType<typeof createPool>,
  options: StreamBalanceOptions,
): Promise<{ port: number; handler: StreamHandler; sessions: StreamSession[] }> {
  const handler = streamBalance(pool, { protocol: 'udp', ...options });
  const sessions: StreamSession[] = [];
  handler.on('session', (s) => sessions.push(s));
  const socket = await udpSocket(t);
  handler.attach(socket);
  t.after(() => handler.close());
  return { port: socket.port, handler, sessions };
}

/** Sends a query from `client` and waits for `n` answers (or `ms`). */
async function ask(client: Socket, port: number, query: Buffer, n = 1, ms = 2000): Promise<Buffer[]> {
  const answers: Buffer[] = [];
  const onMessage = (m: Buffer): void => {
    answers.push(m);
  };
  client.on('message', onMessage);
  client.send(query, port, '127.0.0.1');
  const end = performance.now() + ms;
  while (answers.length < n && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
  client.off('message', onMessage);
  return answers;
}

test('DNS over UDP through the gateway: responses 1 makes each query a session, round robin across two servers', async (t) => {
  const [a, b] = [await dnsServer(t, 1), await dnsServer(t, 2)];
  const pool = createPool({ name: 'dns', servers: [{ url: a.url }, { url: b.url }] });
  t.after(() => pool.close());
  const g = await udpGateway(t, pool, { responses: 1 });
  const client = await udpSocket(t);
  const octets: number[] = [];
  for (let id = 1; id <= 4; id++) {
    const [answer] = await ask(client, g.port, dnsQuery(id, 'example.test'));
    assert.ok(answer !== undefined, `an answer to query ${id}`);
    assert.equal(answer.readUInt16BE(0), id, 'the answer carries the query id');
    assert.equal(answer.readUInt16BE(2) & 0x8000, 0x8000, 'it is a response');
    octets.push(answer[answer.length - 1]!);
    await until(() => g.sessions.length === id);
  }
  assert.deepEqual(octets, [1, 2, 1, 2]);
  assert.deepEqual(
    g.sessions.map((s) => [s.status, s.upstreamAddr.length, s.bytesReceived > 0, s.bytesSent > 0]),
    Array(4).fill([200, 1, true, true]),
  );
  assert.deepEqual(g.handler.stats().sessions, { '2xx': 4, '4xx': 0, '5xx': 0, total: 4 });
  assert.equal(g.handler.stats().processing, 0);
  const stats = pool.streamStats().servers;
  assert.deepEqual(
    stats.map((s) => [s.connections, s.active]),
    [
      [2, 0],
      [2, 0],
    ],
  );
  assert.ok(stats.every((s) => s.sent > 0 && s.received > 0 && s.firstByteTime >= 0));
});

test('without responses, a client address and port is one session until idleTimeout: its datagrams go to one server', async (t) => {
  const [a, b] = [await dnsServer(t, 1), await dnsServer(t, 2)];
  const pool = createPool({ servers: [{ url: a.url }, { url: b.url }] });
  t.after(() => pool.close());
  const g = await udpGateway(t, pool, { idleTimeout: '300ms' });
  const c1 = await udpSocket(t);
  const c2 = await udpSocket(t);
  const from = async (c: Socket, id: number): Promise<number> => {
    const [answer] = await ask(c, g.port, dnsQuery(id, 'x.test'));
    return answer![answer!.length - 1]!;
  };
  const one = [await from(c1, 1), await from(c1, 2), await from(c1, 3)];
  const two = [await from(c2, 4), await from(c2, 5)];
  assert.deepEqual(one, [1, 1, 1]);
  assert.deepEqual(two, [2, 2]);
  // one upstream socket per session: each server saw one source
  assert.equal(a.sources.size, 1);
  assert.equal(b.sources.size, 1);
  assert.equal(g.handler.stats().processing, 2);
  await until(() => g.sessions.length === 2, 3000, 'the idle sessions ended');
  assert.equal(g.handler.stats().processing, 0);
  assert.deepEqual(
    pool.streamStats().servers.map((s) => s.active),
    [0, 0],
  );
});

test('requests 2 (nginx proxy_requests): every two datagrams the next one starts a new session', async (t) => {
  const [a, b] = [await dnsServer(t, 1), await dnsServer(t, 2)];
  const pool = createPool({ servers: [{ url: a.url }, { url: b.url }] });
  t.after(() => pool.close());
  const g = await udpGateway(t, pool, { requests: 2, responses: 1 });
  const client = await udpSocket(t);
  const octets: number[] = [];
  for (let id = 1; id <= 6; id++) {
    const [answer] = await ask(client, g.port, dnsQuery(id, 'x.test'));
    octets.push(answer![answer!.length - 1]!);
  }
  // responses 1 ends a session after each answer anyway; with requests 2 and responses unset, two per session:
  assert.deepEqual(octets, [1, 2, 1, 2, 1, 2]);
  const pairs = createPool({ servers: [{ url: a.url }, { url: b.url }] });
  t.after(() => pairs.close());
  const g2 = await udpGateway(t, pairs, { requests: 2, idleTimeout: '2s' });
  const c2 = await udpSocket(t);
  const got: number[] = [];
  for (let id = 1; id <= 6; id++) {
    const [answer] = await ask(c2, g2.port, dnsQuery(id, 'y.test'));
    got.push(answer![answer!.length - 1]!);
  }
  assert.deepEqual(got, [1, 1, 2, 2, 1, 1]);
});

test('responses 2: the session waits for both answers; responses 0: it ends once the datagram is sent', async (t) => {
  const twice = await dnsServer(t, 7, 1);
  const pool = createPool({ servers: [{ url: twice.url }] });
  t.after(() => pool.close());
  const g = await udpGateway(t, pool, { responses: 2 });
  const client = await udpSocket(t);
  const answers = await ask(client, g.port, dnsQuery(9, 'two.test'), 2);
  assert.equal(answers.length, 2);
  await until(() => g.sessions.length === 1);
  assert.equal(g.sessions[0]!.bytesSent, answers[0]!.length * 2);
  const fire = await udpGateway(t, pool, { responses: 0 });
  const c2 = await udpSocket(t);
  c2.send(dnsQuery(10, 'fire.test'), fire.port, '127.0.0.1');
  await until(() => fire.sessions.length === 1);
  assert.equal(fire.sessions[0]!.status, 200);
  assert.equal(fire.sessions[0]!.bytesSent, 0);
  await until(() => twice.queries === 2);
});

test('a server that is not listening (ICMP port unreachable): the session fails, 502, the server counts a failure', async (t) => {
  const gone = createSocket('udp4');
  gone.bind(0, '127.0.0.1');
  await once(gone, 'listening');
  const port = gone.address().port;
  gone.close();
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }] });
  t.after(() => pool.close());
  const g = await udpGateway(t, pool, { responses: 1, idleTimeout: '2s' });
  const errors: string[] = [];
  g.handler.on('error', (err) => errors.push(err.code));
  const client = await udpSocket(t);
  client.send(dnsQuery(1, 'x.test'), g.port, '127.0.0.1');
  // the first datagram draws the ICMP answer; the error surfaces on the session's socket
  await until(() => g.sessions.length === 1, 3000, 'the session failed');
  assert.equal(g.sessions[0]!.status, 502);
  assert.deepEqual(errors, ['SWY_ERR_BAD_GATEWAY']);
  assert.equal(pool.streamStats().servers[0]!.fails, 1);
});

test('a UDP handler is not a connection listener, a TCP one cannot attach', async (t) => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  t.after(() => pool.close());
  const udp = streamBalance(pool, { protocol: 'udp' });
  assert.throws(() => udp({} as never), { code: 'SWY_ERR_INVALID_OPTION' });
  const tcp = streamBalance(pool);
  const s = await udpSocket(t);
  assert.throws(() => tcp.attach(s), { code: 'SWY_ERR_INVALID_OPTION' });
});

test('proxyProtocol v2 over UDP: every datagram reaches the server behind a header naming the client', async (t) => {
  const server = await udpSocket(t);
  const seen: Buffer[] = [];
  server.on('message', (m, r) => {
    seen.push(m);
    server.send('ok', r.port, r.address);
  });
  const pool = createPool({ servers: [{ url: `http://127.0.0.1:${server.port}` }] });
  t.after(() => pool.close());
  const g = await udpGateway(t, pool, { proxyProtocol: 'v2', responses: 1 });
  const client = await udpSocket(t);
  const [answer] = await ask(client, g.port, Buffer.from('query'));
  assert.equal(answer?.toString(), 'ok');
  const d = seen[0]!;
  assert.equal(d[12], 0x21);
  assert.equal(d[13], 0x12, 'IPv4 over UDP');
  assert.deepEqual([...d.subarray(16, 24)], [127, 0, 0, 1, 127, 0, 0, 1]);
  assert.equal(d.readUInt16BE(24), client.port);
  assert.equal(d.readUInt16BE(26), g.port);
  assert.equal(d.subarray(28).toString(), 'query');
});

test('an unreachable server before any answer: the session moves to the next server with its datagrams (nginx next upstream for UDP)', async (t) => {
  const gone = createSocket('udp4');
  gone.bind(0, '127.0.0.1');
  await once(gone, 'listening');
  const port = gone.address().port;
  gone.close();
  const dns = await dnsServer(t, 9);
  const pool = createPool({
    servers: [
      { url: `http://127.0.0.1:${port}`, id: 'gone' },
      { url: dns.url, id: 'dns' },
    ],
  });
  t.after(() => pool.close());
  const g = await udpGateway(t, pool, { responses: 1, idleTimeout: '2s' });
  const client = await udpSocket(t);
  const [answer] = await ask(client, g.port, dnsQuery(77, 'retry.test'));
  assert.ok(answer !== undefined, 'the next server answered');
  assert.equal(answer.readUInt16BE(0), 77);
  assert.equal(answer[answer.length - 1], 9);
  await until(() => g.sessions.length === 1);
  assert.deepEqual(g.sessions[0]!.upstreamAddr, [`127.0.0.1:${port}`, `127.0.0.1:${dns.port}`]);
  assert.equal(g.sessions[0]!.upstreamConnectTime[0], -1);
  assert.equal(g.sessions[0]!.status, 200);
  assert.deepEqual(
    pool.streamStats().servers.map((s) => [s.id, s.fails, s.connections, s.active]),
    [
      ['gone', 1, 1, 0],
      ['dns', 0, 1, 0],
    ],
  );
  // nextUpstream false: the session fails with the first server
  const strict = createPool({ servers: [{ url: `http://127.0.0.1:${port}` }, { url: dns.url }] });
  t.after(() => strict.close());
  const g2 = await udpGateway(t, strict, { responses: 1, nextUpstream: false });
  const c2 = await udpSocket(t);
  c2.send(dnsQuery(78, 'x.test'), g2.port, '127.0.0.1');
  await until(() => g2.sessions.length === 1);
  assert.equal(g2.sessions[0]!.status, 502);
  assert.equal(dns.queries, 1);
});
