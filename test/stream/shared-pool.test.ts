// One pool serving HTTP (balance()) and TCP (streamBalance()) at once: one round robin over both
// kinds of traffic, one `active` count, statistics kept apart (stats() for HTTP, streamStats() for
// streams).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { balance } from '../../src/balance/index.ts';
import { chain } from '../../src/core/chain.ts';
import { createPool } from '../../src/pool/index.ts';
import { streamBalance } from '../../src/stream/index.ts';
import { fetchText, gateway, upstream, until } from '../helpers.ts';
import { exchangeBytes, gatewayOf } from './support.ts';

test('one pool, HTTP and TCP: the choices alternate across both, the statistics stay apart', async (t) => {
  const [a, b] = [await upstream(t, 'a'), await upstream(t, 'b')];
  const pool = createPool({
    name: 'both',
    servers: [
      { url: a.url, id: 'a' },
      { url: b.url, id: 'b' },
    ],
  });
  t.after(() => pool.close());
  const http = await gateway(t, chain(balance(pool)));
  const tcp = await gatewayOf(t, streamBalance(pool));
  const raw = (): Promise<string> => exchangeBytes(tcp.port, 'GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const order: string[] = [];
  for (let i = 0; i < 3; i++) {
    order.push((await fetchText(`${http.url}/web`)).body);
    order.push(/\r\n\r\n(.*)$/s.exec(await raw())![1]!);
  }
  // one round robin: HTTP, TCP, HTTP, ... take turns on a, b, a, ...
  assert.deepEqual(order, ['a', 'b', 'a', 'b', 'a', 'b']);
  await until(() => pool.streamStats().servers.every((s) => s.active === 0));
  assert.deepEqual(
    pool.stats().servers.map((s) => [s.id, s.requests]),
    [
      ['a', 3],
      ['b', 0],
    ],
  );
  assert.deepEqual(
    pool.streamStats().servers.map((s) => [s.id, s.connections, s.sent > 0, s.received > 0]),
    [
      ['a', 0, false, false],
      ['b', 3, true, true],
    ],
  );
});
