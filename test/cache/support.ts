// Shared by the cache tests.
import { Agent, request } from 'node:http';
import type { TestContext } from 'node:test';

/**
 * A client on one keep-alive connection at most: `get(path)` resolves `"<status> <cache status> <body>"`
 * (or `"ERR <message>"`), and `sockets` holds every connection it used.
 */
export function keepAliveClient(t: TestContext, base: string): { get(path: string): Promise<string>; sockets: Set<unknown> } {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const sockets = new Set<unknown>();
  const get = (path: string): Promise<string> =>
    new Promise((resolve) => {
      const req = request(`${base}${path}`, { agent }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c));
        res.on('end', () => resolve(`${res.statusCode} ${String(res.headers['x-cache-status'])} ${body}`));
        res.on('error', (err) => resolve(`ERR ${err.message}`));
      });
      req.on('socket', (s) => sockets.add(s));
      req.on('error', (err) => resolve(`ERR ${err.message}`));
      req.end();
    });
  return { get, sockets };
}
