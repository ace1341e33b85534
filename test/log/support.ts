// What the access log tests share: a gateway whose log lines are collected, and a raw HTTP/1.1
// client that sends bytes a regular client would not (hostile header values).
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { TestContext } from 'node:test';
import { chain, type Middleware } from '../../src/core/chain.ts';
import { accessLog, type AccessLogMiddleware, type AccessLogOptions } from '../../src/log/index.ts';
import { gateway, type Upstream, until } from '../helpers.ts';

/** A gateway running `chain(accessLog(options), ...rest)` whose lines (or objects) land in `lines`. */
export async function loggedGateway(
  t: TestContext,
  options: AccessLogOptions,
  ...rest: Middleware[]
): Promise<{ gw: Upstream; lines: unknown[]; log: AccessLogMiddleware }> {
  const lines: unknown[] = [];
  const log = accessLog({ to: (entry) => lines.push(entry), ...options });
  const handler: Middleware = (_req: IncomingMessage, res: ServerResponse) => res.end('hello');
  const gw = await gateway(t, chain(log, ...(rest.length === 0 ? [handler] : rest)) as RequestListener);
  return { gw, lines, log };
}

/** Sends `head` (the request line and header fields, without the blank line) and resolves the raw answer once the server closes. */
export function rawRequest(port: number, head: Buffer | string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(Buffer.concat([typeof head === 'string' ? Buffer.from(head, 'latin1') : head, Buffer.from('\r\nConnection: close\r\n\r\n')]));
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

/** Waits until `lines` has `n` entries. */
export function lineCount(lines: unknown[], n: number): Promise<true> {
  return until(() => lines.length >= n, 5000, `${n} log lines`);
}
