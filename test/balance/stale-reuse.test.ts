// The stale keep-alive retry (issue 16): a request whose reused connection turns out closed goes to
// the same server again on another connection, without counting a failure, but a server whose
// reused connections fail this way more than 3 times within its failTimeout has the next one counted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { createPool } from '../../src/index.ts';
import { fetchText, upstream } from '../helpers.ts';
import { gatewayFor, TEST_TIMEOUT } from './support.ts';

test('a server that drops every third request on a reused connection: retried on itself, then taken out after the fourth drop', {
  timeout: TEST_TIMEOUT * 2,
}, async (t) => {
  const dropped: string[] = [];
  const servedByA: string[] = [];
  const perSocket = new WeakMap<Socket, number>();
  let n = 0;
  const a = await upstream(t, 'a', (req: IncomingMessage, res: ServerResponse) => {
    n++;
    const onSocket = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, onSocket);
    if (n % 3 === 0 && onSocket > 1) {
      dropped.push(req.url ?? '');
      req.socket.destroy();
      return;
    }
    servedByA.push(req.url ?? '');
    res.end('a');
  });
  const b = await upstream(t, 'b');
  const pool = createPool({ servers: [{ url: a.url, maxFails: 1, failTimeout: '30s' }, { url: b.url }] });
  t.after(() => pool.close());
  const gw = await gatewayFor(t, pool);
  for (let i = 0; i < 30; i++) {
    const r = await fetchText(`${gw.url}/r${i}`);
    assert.equal(r.status, 200, `/r${i}`);
  }
  assert.equal(dropped.length, 4, `drops: ${dropped.join(' ')}`);
  // The first three went to the same server again (not to b), and were not counted.
  for (const path of dropped.slice(0, 3)) assert.ok(servedByA.includes(path), `${path} retried on a`);
  // The fourth counted as a failure: b answered it, and a (max_fails 1) is out for its failTimeout.
  const fourth = dropped[3]!;
  assert.ok(!servedByA.includes(fourth), `${fourth} not retried on a`);
  assert.ok(b.seen.some((r) => r.url === fourth));
  const last = Number(fourth.slice(2));
  assert.ok(
    servedByA.every((p) => Number(p.slice(2)) < last),
    'a gets nothing after it is counted down',
  );
  const [sa] = pool.stats().servers;
  assert.equal(sa!.fails, 1);
});
