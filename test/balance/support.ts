// Shared by the balance() and proxy engine tests: a gateway that records each
// request's exchange record and error, raw-socket clients, and small waits.
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { balance, chain, exchange, respondWithError, type BalanceOptions, type UpstreamPool } from '../../src/index.ts';
import { listen } from '../helpers.ts';

/** What the gateway saw of one request once its response was done. */
export interface Seen {
  method: string;
  url: string;
  /** nginx `$upstream_addr`. */
  addr: string[];
  /** nginx `$upstream_status`. */
  status: number[];
  /** The status the client got (or 0 when the connection was cut). */
  code: number;
  /** The error balance() handed to next(), if any. */
  error: unknown;
  /** nginx `$remote_addr` after trusted-proxy resolution. */
  client: string;
}

export interface Gateway {
  url: string;
  port: number;
  server: Server;
  /** One entry per finished request, in the order they finished. */
  log: Seen[];
  /** Resolves when `n` requests have finished. */
  settled(n: number): Promise<void>;
}

/**
 * A gateway on port 0: `chain(recorder, balance(pool, options))` with a final
 * handler that keeps the error and answers with the default minimal response.
 */
export async function gatewayFor(t: TestContext, pool: UpstreamPool, options: BalanceOptions = {}): Promise<Gateway> {
  const mw = balance(pool, options);
  const log: Seen[] = [];
  const waiters: Array<() => void> = [];
  const errors = new WeakMap<IncomingMessage, unknown>();
  const recorder = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    res.once('close', () => {
      const ex = exchange(req);
      log.push({
        method: req.method ?? '',
        url: req.url ?? '',
        addr: [...ex.upstreamAddr],
        status: [...ex.upstreamStatus],
        code: res.writableFinished ? res.statusCode : 0,
        error: errors.get(req),
        client: ex.clientAddress,
      });
      for (const w of waiters.splice(0)) w();
    });
    next();
  };
  const listener = chain(recorder, mw, {
    final: (err, req, res) => {
      errors.set(req, err);
      respondWithError(err, req, res);
    },
  });
  const server = createServer(listener);
  server.on('upgrade', mw.upgrade);
  const up = await listen(t, server);
  const settled = async (n: number): Promise<void> => {
    while (log.length < n) await new Promise<void>((resolve) => waiters.push(resolve));
  };
  return { url: up.url, port: up.port, server, log, settled };
}

export interface RawReply {
  status: number;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: Buffer;
}

/**
 * A response read to the end, or the error that cut it: `{ error }` when the
 * connection broke before or during the body.
 */
export function tryFetch(
  url: string,
  init: { method?: string; headers?: Record<string, string> | string[]; body?: string | Buffer; path?: string } = {},
): Promise<RawReply | { error: Error; status?: number | undefined; received?: number | undefined }> {
  return new Promise((resolve) => {
    let status: number | undefined;
    let received = 0;
    const options = {
      method: init.method ?? 'GET',
      headers: init.headers as Record<string, string>,
      agent: false,
      ...(init.path === undefined ? {} : { path: init.path }),
    };
    const req = request(url, options, (res) => {
      status = res.statusCode;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        received += c.length;
        chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }));
      res.on('error', (error) => resolve({ error, status, received }));
      res.on('aborted', () => resolve({ error: new Error('aborted'), status, received }));
    });
    req.on('error', (error) => resolve({ error, status, received }));
    req.end(init.body);
  });
}

/** Asserts a reply is a complete response and returns it. */
export function complete(r: Awaited<ReturnType<typeof tryFetch>>): RawReply {
  if ('error' in r) throw new Error(`expected a complete response, got ${r.error.message}`);
  return r;
}

/**
 * A raw TCP client: writes bytes as given, collects everything the server
 * sends, and splits it into HTTP/1.1 responses framed by Content-Length or
 * chunked encoding.
 */
export class RawClient {
  readonly socket: Socket;
  #buf = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  closed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (c: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, c]);
      for (const w of this.#waiters.splice(0)) w();
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.#waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
  }

  static async open(t: TestContext, port: number): Promise<RawClient> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const c = new RawClient(socket);
    t.after(() => socket.destroy());
    return c;
  }

  write(text: string | Buffer): void {
    this.socket.write(text);
  }

  /** Reads the next complete response. Rejects if the connection closes first. */
  async response(): Promise<{ status: number; headers: Map<string, string>; body: string }> {
    for (;;) {
      const parsed = parseResponse(this.#buf);
      if (parsed !== undefined) {
        this.#buf = this.#buf.subarray(parsed.length);
        return parsed.response;
      }
      if (this.closed) throw new Error(`connection closed; unparsed: ${JSON.stringify(this.#buf.toString('latin1').slice(0, 200))}`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** Resolves when the server closed the connection. */
  async closedByPeer(): Promise<void> {
    while (!this.closed) await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }
}

function parseResponse(buf: Buffer): { length: number; response: { status: number; headers: Map<string, string>; body: string } } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return undefined;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(lines[0]!.split(' ')[1]);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  let pos = end + 4;
  if (headers.get('transfer-encoding')?.toLowerCase() === 'chunked') {
    const parts: Buffer[] = [];
    for (;;) {
      const eol = buf.indexOf('\r\n', pos);
      if (eol === -1) return undefined;
      const size = parseInt(buf.subarray(pos, eol).toString('latin1'), 16);
      if (size === 0) {
        const fin = buf.indexOf('\r\n\r\n', eol);
        if (fin === -1) return undefined;
        return { length: fin + 4, response: { status, headers, body: Buffer.concat(parts).toString() } };
      }
      if (buf.length < eol + 2 + size + 2) return undefined;
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      pos = eol + 2 + size + 2;
    }
  }
  const len = Number(headers.get('content-length') ?? 0);
  if (buf.length < pos + len) return undefined;
  return { length: pos + len, response: { status, headers, body: buf.subarray(pos, pos + len).toString() } };
}

/**
 * A raw TCP upstream: `onConnection` gets each socket as it is accepted and
 * writes whatever bytes it wants. Closed in `t.after`.
 */
export async function rawUpstream(
  t: TestContext,
  onConnection: (socket: Socket, data: Buffer[]) => void,
): Promise<{ url: string; port: number; connections: number }> {
  const sockets = new Set<Socket>();
  const state = { url: '', port: 0, connections: 0 };
  const server = createNetServer((socket) => {
    state.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const data: Buffer[] = [];
    socket.on('data', (c: Buffer) => data.push(c));
    onConnection(socket, data);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  state.url = `http://127.0.0.1:${state.port}`;
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return state;
}

// The shared wait, re-exported for the tests that take it from here (test/proxy, test/cache/flow).
export { until } from '../helpers.ts';

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Per-test limit: a proxy that hangs is a failure, reported as such instead of
 * blocking the run.
 */
export const TEST_TIMEOUT = 5000;
