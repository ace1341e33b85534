// The transport contract (transport-contract.ts) run on the in-memory engine, on RedisTransport
// against a private redis-server (so outages can be real ones), and on RedisTransport given a
// node-redis client the user built. Each Redis client reaches the server through its own TCP relay,
// so one instance alone can lose the engine while the others keep it.
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from '@redis/client';
import { RedisTransport } from '../../src/sync/redis.ts';
import { MemoryHub, type MemoryTransport, type Transport } from '../../src/sync/transport.ts';
import { clock } from '../helpers.ts';
import { privateRedis, redisAvailability, until } from '../redis.ts';
import { entry, outages, type Relay, relay, transportContract } from './transport-contract.ts';

transportContract(
  'memory',
  async () => {
    const hub = new MemoryHub();
    return {
      client: async () => hub.connect(),
      down: async () => hub.down(),
      up: async () => hub.up({ keepData: false }),
      freezeKeepsConnections: false,
      cut: async (client) => (client as MemoryTransport).disconnect(),
      mend: async (client) => (client as MemoryTransport).reconnect(),
      settle: async () => {},
    };
  },
  () => false,
);

/** A node-redis client as a user builds one: no offline queue, quick reconnection. */
const userClient = (url: string, extra: { RESP?: 3 } = {}) =>
  createClient({
    url,
    disableOfflineQueue: true,
    socket: { connectTimeout: 500, reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 200) },
    ...extra,
  });

const redis = redisAvailability();
for (const form of ['url', 'client'] as const) {
  transportContract(
    form === 'url' ? 'redis (private server)' : 'redis (private server, a client the user built)',
    async (t) => {
      const server = await privateRedis(t);
      const namespace = `test-${randomUUID()}`;
      const relays = new Map<Transport, Relay>();
      return {
        async client() {
          const r = await relay(t, server.port);
          const url = `redis://127.0.0.1:${r.port}`;
          let transport: RedisTransport;
          if (form === 'url') transport = new RedisTransport({ url, namespace, timeout: 500, maxReconnectDelay: 200 });
          else {
            const client = userClient(url);
            client.on('error', () => {});
            transport = new RedisTransport({ client, namespace, timeout: 500 });
            t.after(() => client.destroy());
          }
          t.after(() => transport.close());
          relays.set(transport, r);
          await transport.connect();
          await until(() => transport.connected, 5000, 'connected');
          return transport;
        },
        ...outages(server),
        freezeKeepsConnections: true,
        cut: async (client) => relays.get(client)?.cut(),
        mend: async (client) => relays.get(client)?.mend(),
        settle: () => sleep(100),
      };
    },
    redis.private,
  );
}

describe('MemoryHub', () => {
  it('measures counters on its clock: a counter lives ttl from its creation, whatever increments follow', async () => {
    const c = clock();
    const hub = new MemoryHub(c);
    const a = hub.connect();
    assert.equal(await a.increment('k', 2, 1000), 2);
    c.advance(999);
    assert.equal(await a.increment('k', 1, 60_000), 3);
    c.advance(1);
    assert.equal(await a.increment('k', 1, 1000), 1, 'expired at its ttl, made again');
    hub.down();
    hub.up({ keepData: false });
    assert.equal(await a.increment('k', 1, 1000), 1, 'an engine back empty has no counters');
  });

  it('holds broadcasts with published entries, releases them in the order asked, and drops them for a client disconnected by then', async () => {
    const hub = new MemoryHub();
    const a = hub.connect();
    const b = hub.connect();
    const heard: string[] = [];
    const heardB: string[] = [];
    const entries: string[] = [];
    a.listen('ch', (m) => heard.push(m));
    b.listen('ch', (m) => heardB.push(m));
    a.subscribe('s', (x) => entries.push(x.key));
    hub.hold();
    await a.broadcast('ch', 'one');
    await a.put('s', entry('k', 1));
    await a.broadcast('ch', 'two');
    await sleep(10);
    assert.deepEqual([heard, heardB, entries], [[], [], []], 'nothing delivered while held');
    b.disconnect();
    hub.release((queue) => queue.reverse());
    assert.deepEqual(heard, ['two', 'one']);
    assert.deepEqual(entries, ['k']);
    assert.deepEqual(heardB, [], 'b was disconnected when they arrived');
    b.reconnect();
    await a.broadcast('ch', 'three');
    await sleep(0);
    assert.deepEqual([heard, heardB], [['two', 'one', 'three'], ['three']]);
  });
});
