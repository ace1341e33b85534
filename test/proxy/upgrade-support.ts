// Shared by the upgrade tests (balance().upgrade, sticky's wrapUpgrade, the Fastify plugin, the fuzz
// test, the wss test): raw upgrade requests, keep-alive requests carrying an h2c upgrade, WebSocket clients.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { request, type Agent } from 'node:http';
import type { TestContext } from 'node:test';
import { WebSocket } from 'ws';
import type { UpstreamErrorMessage } from '../../src/core/diagnostics.ts';
import { RawClient } from '../balance/support.ts';

/** The headers of an HTTP/1.1 request offering an upgrade to h2c (RFC 7540 §3.2). */
export const H2C: Readonly<Record<string, string>> = Object.freeze({
  connection: 'Upgrade, HTTP2-Settings',
  upgrade: 'h2c',
  'http2-settings': 'AAMAAABkAAQAAP__',
});

/**
 * Sends a WebSocket-style upgrade request for `target` on a fresh connection and closes it once
 * answered; resolves with the status, or 0 when the connection was closed unanswered (3 s at most).
 */
export async function upgradeStatus(t: TestContext, port: number, target: string, extraHeaders = ''): Promise<number> {
  const c = await RawClient.open(t, port);
  c.write(
    `GET ${target} HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extraHeaders}\r\n`,
  );
  const timer = setTimeout(() => c.socket.destroy(), 3000);
  try {
    return (await c.response()).status;
  } catch {
    return 0;
  } finally {
    clearTimeout(timer);
    c.socket.destroy();
  }
}

/** A request through `agent` (keep-alive): its status, its body, and whether it reused a connection. */
export function send(
  port: number,
  agent: Agent,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent, method: body === undefined ? 'GET' : 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.setTimeout(3000, () => req.destroy(new Error(`no answer to ${path}`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Opens a WebSocket, sends each message, returns the replies, and closes it. */
export async function exchangeMessages(url: string, messages: Array<string | Buffer>, headers?: Record<string, string>): Promise<Array<string | Buffer>> {
  const ws = new WebSocket(url, { headers });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
  const replies: Array<string | Buffer> = [];
  for (const m of messages) {
    const reply = new Promise<string | Buffer>((resolve) => ws.once('message', (data, binary) => resolve(binary ? (data as Buffer) : String(data))));
    ws.send(m);
    replies.push(await reply);
  }
  ws.close();
  await new Promise<void>((resolve) => ws.once('close', () => resolve()));
  return replies;
}

/** Resolves with the HTTP status an upgrade was refused with (0 when the socket was cut). */
export function refusedUpgrade(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => reject(new Error('the upgrade unexpectedly succeeded')));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', () => resolve({ status: 0, body: '' }));
  });
}

/** The messages published on switchyard:upstream:error while the test runs. */
export function upstreamErrors(t: TestContext): UpstreamErrorMessage[] {
  const messages: UpstreamErrorMessage[] = [];
  const onMessage = (m: unknown): void => {
    messages.push(m as UpstreamErrorMessage);
  };
  subscribe('switchyard:upstream:error', onMessage);
  t.after(() => unsubscribe('switchyard:upstream:error', onMessage));
  return messages;
}
