// Shared by the upgrade tests (balance().upgrade, sticky's wrapUpgrade, the Fastify plugin, the fuzz
// test): raw upgrade requests and keep-alive requests carrying an h2c upgrade.
import { request, type Agent } from 'node:http';
import type { TestContext } from 'node:test';
import { RawClient } from '../balance/support.ts';

/** The headers of an HTTP/1.1 request offering an upgrade to h2c (RFC 7540 §3.2). */
export const H2C: Readonly<Record<string, string>> = Object.freeze({ connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': 'AAMAAABkAAQAAP__' });

/**
 * Sends a WebSocket-style upgrade request for `target` on a fresh connection and closes it once
 * answered; resolves with the status, or 0 when the connection was closed unanswered (3 s at most).
 */
export async function upgradeStatus(t: TestContext, port: number, target: string, extraHeaders = ''): Promise<number> {
  const c = await RawClient.open(t, port);
  c.write(`GET ${target} HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extraHeaders}\r\n`);
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
export function send(port: number, agent: Agent, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string; reused: boolean }> {
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
