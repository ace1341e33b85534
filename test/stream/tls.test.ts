// streamBalance() with TLS: terminated at the gateway (tls.createServer(handler)), and towards
// https:// servers with the pool's tls settings (nginx proxy_ssl on), on real sockets.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { type TestContext, test } from 'node:test';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { createPool } from '../../src/pool/index.ts';
import { type StreamHandler, streamBalance } from '../../src/stream/index.ts';
import { TLS_CERT, TLS_KEY } from '../cache/tls-fixture.ts';
import { until } from '../helpers.ts';
import { echo, exchangeBytes, gatewayOf, tcpServer } from './support.ts';

/** A TLS-terminating gateway (tls.createServer(handler)) in front of one plain server. */
async function tlsGateway(t: TestContext, url: string): Promise<{ handler: StreamHandler; port: number }> {
  const pool = createPool({ servers: [{ url }] });
  t.after(() => pool.close());
  const handler = streamBalance(pool);
  t.after(() => handler.close());
  const server = createTlsServer({ key: TLS_KEY, cert: TLS_CERT, allowHalfOpen: true }, handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { handler, port: (server.address() as AddressInfo).port };
}

test('TLS terminated at the gateway: tls.createServer(handler) pipes the decrypted bytes to a plain server', async (t) => {
  const e = await echo(t);
  const { port } = await tlsGateway(t, e.url);
  const got = await new Promise<string>((resolve, reject) => {
    const c = tlsConnect({ port, host: '127.0.0.1', ca: TLS_CERT, servername: 'localhost' }, () => c.end('over tls'));
    let text = '';
    c.on('data', (d: Buffer) => (text += d));
    c.on('error', reject);
    c.on('close', () => resolve(text));
  });
  assert.equal(got, 'over tls');
});

test('https:// servers are reached over TLS, verified with the pool tls settings', async (t) => {
  const secure = createTlsServer({ key: TLS_KEY, cert: TLS_CERT }, (s) => s.pipe(s));
  secure.listen(0, '127.0.0.1');
  await once(secure, 'listening');
  t.after(() => secure.close());
  const url = `https://127.0.0.1:${(secure.address() as AddressInfo).port}`;
  const trusted = createPool({ servers: [{ url }], tls: { ca: TLS_CERT } });
  t.after(() => trusted.close());
  const g = await gatewayOf(t, streamBalance(trusted));
  assert.equal(await exchangeBytes(g.port, 'to a TLS server'), 'to a TLS server');
  // without the CA the certificate is refused: a failed connect, nothing reaches the client
  const untrusting = createPool({ servers: [{ url }] });
  t.after(() => untrusting.close());
  const handler = streamBalance(untrusting);
  const codes: string[] = [];
  handler.on('error', (err) => codes.push(`${err.code} ${(err.cause as NodeJS.ErrnoException | undefined)?.code}`));
  const g2 = await gatewayOf(t, handler);
  assert.equal(await exchangeBytes(g2.port, 'x'), '');
  assert.deepEqual(codes, ['SWY_ERR_BAD_GATEWAY DEPTH_ZERO_SELF_SIGNED_CERT']);
});

test('a server reset reaches a TLS client as a closed connection (a TLS socket cannot be reset: it is destroyed), without an exception', async (t) => {
  const resetting = await tcpServer(t, (s) => s.once('data', () => s.resetAndDestroy()));
  const { handler, port } = await tlsGateway(t, resetting.url);
  const ended = await new Promise<string>((resolve) => {
    const c = tlsConnect({ port, host: '127.0.0.1', ca: TLS_CERT, servername: 'localhost' }, () => c.write('x'));
    c.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    c.on('close', () => resolve('closed'));
  });
  assert.ok(['closed', 'ECONNRESET'].includes(ended), ended);
  await until(() => handler.stats().processing === 0);
});
