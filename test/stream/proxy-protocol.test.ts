// The PROXY protocol: the header streamBalance() sends servers (nginx `proxy_protocol on`) and the
// one it accepts from trusted clients (nginx `listen ... proxy_protocol`, `set_real_ip_from`).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { createPool } from '../../src/pool/index.ts';
import { streamBalance, type StreamSession } from '../../src/stream/index.ts';
import { parseProxyHeader, proxyHeader } from '../../src/stream/proxy-protocol.ts';
import { until } from '../helpers.ts';
import { exchangeBytes, gatewayOf, tcpServer } from './support.ts';

/** A server that records the first bytes of each connection and answers "ok". */
async function recorder(t: Parameters<typeof tcpServer>[0]): Promise<{ url: string; seen: Buffer[] }> {
  const seen: Buffer[] = [];
  const s = await tcpServer(
    t,
    (socket: Socket) => {
      const chunks: Buffer[] = [];
      socket.on('data', (d: Buffer) => chunks.push(d));
      socket.on('end', () => {
        seen.push(Buffer.concat(chunks));
        socket.end('ok');
      });
    },
    { allowHalfOpen: true },
  );
  return { url: s.url, seen };
}

test('proxyProtocol v1: the server gets "PROXY TCP4 client gateway cport gport" then the client bytes', async (t) => {
  const r = await recorder(t);
  const pool = createPool({ servers: [{ url: r.url }] });
  t.after(() => pool.close());
  const g = await gatewayOf(t, streamBalance(pool, { proxyProtocol: 'v1' }));
  assert.equal(await exchangeBytes(g.port, 'PING\r\n'), 'ok');
  const text = r.seen[0]!.toString('latin1');
  const m = /^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 (\d+) (\d+)\r\nPING\r\n$/.exec(text);
  assert.ok(m !== null, JSON.stringify(text));
  assert.equal(Number(m[2]), g.port);
});

test('proxyProtocol v2: the binary header (signature, PROXY command, TCP over IPv4, addresses, ports) then the bytes', async (t) => {
  const r = await recorder(t);
  const pool = createPool({ servers: [{ url: r.url }] });
  t.after(() => pool.close());
  const g = await gatewayOf(t, streamBalance(pool, { proxyProtocol: 'v2' }));
  assert.equal(await exchangeBytes(g.port, 'hello'), 'ok');
  const data = r.seen[0]!;
  assert.deepEqual([...data.subarray(0, 12)], [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  assert.equal(data[12], 0x21);
  assert.equal(data[13], 0x11);
  assert.equal(data.readUInt16BE(14), 12);
  assert.deepEqual([...data.subarray(16, 24)], [127, 0, 0, 1, 127, 0, 0, 1]);
  assert.equal(data.readUInt16BE(26), g.port);
  assert.equal(data.subarray(28).toString(), 'hello');
  const parsed = parseProxyHeader(data);
  assert.equal(parsed.state, 'done');
});

test('acceptProxyProtocol: a trusted client header sets the client address (hash keys, the header sent on); an untrusted one is data', async (t) => {
  const r = await recorder(t);
  const pool = createPool({ servers: [{ url: r.url }] });
  t.after(() => pool.close());
  const handler = streamBalance(pool, { acceptProxyProtocol: 'loopback', proxyProtocol: 'v1' });
  const sessions: StreamSession[] = [];
  handler.on('session', (s) => sessions.push(s));
  const g = await gatewayOf(t, handler);
  // the header in two pieces, then data
  const c = connect({ port: g.port, host: '127.0.0.1', allowHalfOpen: true });
  let got = '';
  c.on('data', (d: Buffer) => (got += d));
  await once(c, 'connect');
  c.write('PROXY TCP4 203.0.113.7 198.51.');
  await new Promise((resolve) => setTimeout(resolve, 20));
  c.end('100.1 51234 443\r\nafter header');
  await once(c, 'close');
  assert.equal(got, 'ok');
  assert.equal(r.seen[0]!.toString('latin1'), 'PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\nafter header');
  await until(() => sessions.length === 1);
  assert.equal(sessions[0]!.remoteAddress, '203.0.113.7');
  assert.equal(sessions[0]!.remotePort, 51234);
  // v2 from the client, IPv6 addresses
  const v2 = proxyHeader('v2', { sourceAddress: '2001:db8::1', sourcePort: 4000, destinationAddress: '2001:db8::2', destinationPort: 53 });
  assert.equal(await exchangeBytes(g.port, Buffer.concat([v2, Buffer.from('x')])), 'ok');
  assert.equal(r.seen[1]!.toString('latin1'), 'PROXY TCP6 2001:db8::1 2001:db8::2 4000 53\r\nx');
  // not trusted: the bytes are the client's data
  const untrusting = streamBalance(pool, { acceptProxyProtocol: ['10.0.0.0/8'] });
  const g2 = await gatewayOf(t, untrusting);
  assert.equal(await exchangeBytes(g2.port, 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n'), 'ok');
  assert.equal(r.seen[2]!.toString('latin1'), 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n');
});

test('acceptProxyProtocol: a trusted client without a valid header is closed, 400, discarded; no server is chosen', async (t) => {
  const r = await recorder(t);
  const pool = createPool({ servers: [{ url: r.url }] });
  t.after(() => pool.close());
  const handler = streamBalance(pool, { acceptProxyProtocol: true, proxyProtocolTimeout: '200ms' });
  const errors: string[] = [];
  handler.on('error', (err, s) => errors.push(`${err.code} ${s.status}`));
  const g = await gatewayOf(t, handler);
  assert.equal(await exchangeBytes(g.port, 'GET / HTTP/1.1\r\n\r\n'), '');
  // a header that never ends: the timeout closes it
  assert.equal(await exchangeBytes(g.port, 'PROXY TCP4 1.2.3.4', false), '');
  await until(() => errors.length === 2);
  assert.deepEqual(errors, ['SWY_ERR_BAD_REQUEST 400', 'SWY_ERR_BAD_REQUEST 400']);
  assert.equal(handler.stats().discarded, 2);
  assert.equal(handler.stats().sessions.total, 0);
  assert.equal(pool.streamStats().servers[0]!.connections, 0);
});

test('the header codec: v1 and v2 round trips, UNKNOWN and LOCAL, refusals', () => {
  const a = { sourceAddress: '::ffff:10.1.2.3', sourcePort: 1, destinationAddress: '10.9.9.9', destinationPort: 65535 };
  assert.equal(proxyHeader('v1', a).toString(), 'PROXY TCP4 10.1.2.3 10.9.9.9 1 65535\r\n');
  assert.equal(proxyHeader('v1', { ...a, destinationAddress: '::1' }).toString(), 'PROXY UNKNOWN\r\n');
  for (const version of ['v1', 'v2'] as const) {
    for (const addrs of [a, { sourceAddress: '::1', sourcePort: 80, destinationAddress: 'fe80::1:2', destinationPort: 8080 }]) {
      const parsed = parseProxyHeader(Buffer.concat([proxyHeader(version, addrs), Buffer.from('rest')]));
      assert.equal(parsed.state, 'done');
      if (parsed.state !== 'done') continue;
      assert.deepEqual(parsed.addresses, { ...addrs, sourceAddress: addrs.sourceAddress.replace('::ffff:', '') });
    }
  }
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { state: 'done', length: 15, addresses: undefined });
  assert.equal(parseProxyHeader(Buffer.from('PROX')).state, 'more');
  assert.equal(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4')).state, 'more');
  assert.equal(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n')).state, 'invalid');
  assert.equal(parseProxyHeader(Buffer.from('PROXY TCP4 ::1 5.6.7.8 1 1\r\n')).state, 'invalid');
  assert.equal(parseProxyHeader(Buffer.from(`PROXY ${'x'.repeat(120)}`)).state, 'invalid');
  assert.equal(parseProxyHeader(Buffer.from('GET /')).state, 'invalid');
  const local = Buffer.from(proxyHeader('v2', a));
  local[12] = 0x20; // LOCAL command
  assert.deepEqual(parseProxyHeader(local), { state: 'done', length: 28, addresses: undefined });
  const udp = proxyHeader('v2', a, 'udp');
  assert.equal(udp[13], 0x12);
});

test("acceptProxyProtocol: hash keys read the header's client address ($remote_addr), not the connection's", async (t) => {
  const [a, b, c] = [await tcpServer(t, (s) => s.end('a')), await tcpServer(t, (s) => s.end('b')), await tcpServer(t, (s) => s.end('c'))];
  const pool = createPool({ method: { name: 'hash', key: '$remote_addr' }, servers: [{ url: a.url }, { url: b.url }, { url: c.url }] });
  t.after(() => pool.close());
  const g = await gatewayOf(t, streamBalance(pool, { acceptProxyProtocol: 'loopback' }));
  const from = async (address: string): Promise<string> => exchangeBytes(g.port, `PROXY TCP4 ${address} 127.0.0.1 1000 ${g.port}\r\n`);
  // one address, one server, every time
  const first = await from('203.0.113.1');
  for (let i = 0; i < 4; i++) assert.equal(await from('203.0.113.1'), first);
  // other addresses spread over the servers
  const seen = new Set<string>();
  for (let i = 1; i <= 30; i++) seen.add(await from(`198.51.100.${i}`));
  assert.ok(seen.size > 1, [...seen].join(','));
});
