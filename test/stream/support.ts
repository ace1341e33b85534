// Real TCP servers and clients on loopback for the stream tests.
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import type { StreamHandler } from '../../src/stream/index.ts';

/** A TCP server on 127.0.0.1 port 0, closed (with every connection) when the test ends. */
export interface TcpServer {
  readonly server: Server;
  readonly port: number;
  /** `http://127.0.0.1:port`: the url a pool server is given. */
  readonly url: string;
  /** Connections accepted so far. */
  accepted: number;
  /** Connections open now. */
  readonly open: Set<Socket>;
}

export async function tcpServer(t: TestContext, onConnection: (socket: Socket) => void, options: { allowHalfOpen?: boolean } = {}): Promise<TcpServer> {
  const server = createServer({ allowHalfOpen: options.allowHalfOpen ?? false });
  const s: TcpServer = { server, port: 0, url: '', accepted: 0, open: new Set() };
  server.on('connection', (socket) => {
    s.accepted++;
    s.open.add(socket);
    socket.on('close', () => s.open.delete(socket));
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  Object.assign(s, { port, url: `http://127.0.0.1:${port}` });
  t.after(async () => {
    for (const c of s.open) c.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return s;
}

/** A server that writes `name` and closes (nginx's stream tests' backends). */
export function named(t: TestContext, name: string): Promise<TcpServer> {
  return tcpServer(t, (socket) => socket.end(name));
}

/** An echo server (what comes in goes back; the FIN too). */
export function echo(t: TestContext): Promise<TcpServer> {
  return tcpServer(t, (socket) => socket.pipe(socket));
}

/** The gateway: a net server with `handler` on 127.0.0.1 port 0, closed when the test ends. */
export async function gatewayOf(t: TestContext, handler: StreamHandler): Promise<TcpServer> {
  const g = await tcpServer(t, handler, { allowHalfOpen: true });
  t.after(() => handler.close());
  return g;
}

/** Connects, sends `data` (then FIN when `end`), and reads everything until the server closes. */
export function exchangeBytes(port: number, data: string | Buffer = '', end = true): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    // the server's FIN: this side is done too
    socket.on('end', () => socket.end());
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.on('connect', () => {
      if (data.length > 0) socket.write(data);
      if (end) socket.end();
    });
  });
}

/** `n` connections one after the other, each reading what the server says: the names in order. */
export async function names(port: number, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await exchangeBytes(port));
  return out;
}

/** Counts of each name. */
export function tally(list: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of list) out[n] = (out[n] ?? 0) + 1;
  return out;
}
