// Stream pools with `sync` share configuration and passive health as HTTP pools do (issue 14 and
// 19), over the in-memory engine: a connect failure seen through one instance's streamBalance()
// makes the server unavailable on the others; a server added on one instance takes connections on
// another.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPool, type UpstreamPool } from '../../src/pool/index.ts';
import { streamBalance } from '../../src/stream/index.ts';
import { SyncHandle } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { deadPort, until } from '../helpers.ts';
import { gatewayOf, named, names, tally } from './support.ts';

test('sync: a stream connect failure on one instance makes the server unavailable on every instance; a server added on one serves on another', async (t) => {
  const hub = new MemoryHub();
  const dead = await deadPort();
  const good = await named(t, 'good');
  const pools: UpstreamPool[] = [];
  for (let i = 0; i < 2; i++) {
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 'stream', instance: `i${i}` });
    t.after(() => handle.close());
    const pool = createPool({
      name: 'tcp',
      sync: handle,
      servers: [
        { id: 'dead', url: `http://127.0.0.1:${dead}`, maxFails: 1, failTimeout: '30s' },
        { id: 'good', url: good.url },
      ],
    });
    t.after(() => pool.close());
    pools.push(pool);
  }
  const [a, b] = pools as [UpstreamPool, UpstreamPool];
  await Promise.all([a.ready, b.ready]);
  const ga = await gatewayOf(t, streamBalance(a));
  const gb = await gatewayOf(t, streamBalance(b));
  // instance a meets the refused server once (then the good one serves)
  assert.deepEqual(tally(await names(ga.port, 2)), { good: 2 });
  assert.equal(a.streamStats().servers[0]!.fails, 1);
  await until(() => b.streamStats().servers[0]!.state === 'unavail', 2000, 'the failure shared with b');
  // b never tries it
  assert.deepEqual(tally(await names(gb.port, 4)), { good: 4 });
  assert.equal(b.streamStats().servers[0]!.connections, 0);
  // configuration: a server added through b takes connections through a
  const extra = await named(t, 'extra');
  b.add({ id: 'extra', url: extra.url });
  await until(() => a.get('extra') !== undefined, 2000, 'the new server on a');
  assert.deepEqual(tally(await names(ga.port, 4)), { good: 2, extra: 2 });
});
