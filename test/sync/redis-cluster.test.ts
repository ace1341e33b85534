// RedisTransport on the node-redis clients users build for Redis Cluster (`createCluster()`) and
// Sentinel (`createSentinel()`), on real servers this file starts (fixtures/redis-topology.ts): a
// 3-master Redis Cluster and a master watched by one sentinel. The transport contract
// (transport-contract.ts) runs on each, every client reaching the servers through TCP relays of its
// own (so one instance alone can lose Redis); then what is particular to them: a scope's keys in one
// slot, a cluster with one master away counting as disconnected, the user's client left open and
// unsubscribed on close; and two sync() handles sharing a pool's configuration end to end.
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient, createCluster, createSentinel } from '@redis/client';
import { createPool, type SyncHandle, sync, type UpstreamPool } from '../../src/index.ts';
import { RedisTransport } from '../../src/sync/redis.ts';
import type { Transport } from '../../src/sync/transport.ts';
import { until } from '../redis.ts';
import { type SentinelTopology, startCluster, startSentinel, type Topology, topologySkip } from './fixtures/redis-topology.ts';
import { outages, type Relay, relay, transportContract } from './transport-contract.ts';

/** Reconnection as a user would set it for a test: quick, bounded. */
const socket = { connectTimeout: 500, reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 200) };

let skip: string | false = 'not started';
let cluster: Topology | undefined;
let sentinel: SentinelTopology | undefined;

before(async () => {
  skip = await topologySkip();
  if (skip !== false) return;
  [cluster, sentinel] = await Promise.all([startCluster(), startSentinel()]);
});
after(async () => {
  await Promise.all([cluster?.close(), sentinel?.topology.close()]);
});

/** A cluster client as a user builds one (no offline queue on its node connections), its nodes reached through `relays` when given. */
function clusterClient(t: TestContext, relays?: readonly Relay[]) {
  const ports = (cluster as Topology).ports;
  const via = (i: number): number => relays?.[i]?.port ?? (ports[i] as number);
  const client = createCluster({
    rootNodes: [{ socket: { host: '127.0.0.1', port: via(0) } }],
    defaults: { disableOfflineQueue: true, socket },
    nodeAddressMap: Object.fromEntries(ports.map((port, i) => [`127.0.0.1:${port}`, { host: '127.0.0.1', port: via(i) }])),
  });
  client.on('error', () => {});
  t.after(() => client.destroy());
  return client;
}

/** A sentinel client as a user builds one, the sentinel and the master reached through `relays` (`[master, sentinel]`) when given. */
function sentinelClient(t: TestContext, relays?: readonly [Relay, Relay]) {
  const s = sentinel as SentinelTopology;
  const client = createSentinel({
    name: s.name,
    sentinelRootNodes: [{ host: '127.0.0.1', port: relays?.[1].port ?? s.sentinel }],
    nodeAddressMap: { [`127.0.0.1:${s.master}`]: { host: '127.0.0.1', port: relays?.[0].port ?? s.master } },
    nodeClientOptions: { disableOfflineQueue: true, socket },
    sentinelClientOptions: { socket: { connectTimeout: 500 } },
  });
  client.on('error', () => {});
  t.after(() => client.destroy());
  return client;
}

/** A transport on `client`, connected, closed when the test ends. */
async function transportOn(t: TestContext, client: ConstructorParameters<typeof RedisTransport>[0]['client'], namespace: string): Promise<RedisTransport> {
  const transport = new RedisTransport({ client, namespace, timeout: 500 });
  t.after(() => transport.close());
  await transport.connect();
  await until(() => transport.connected, 10_000, 'connected');
  return transport;
}

for (const kind of ['cluster', 'sentinel'] as const) {
  transportContract(
    kind === 'cluster' ? 'Redis Cluster (3 masters, a createCluster() client)' : 'Redis Sentinel (a master and a sentinel, a createSentinel() client)',
    async (t) => {
      const topology = kind === 'cluster' ? (cluster as Topology) : (sentinel as SentinelTopology).topology;
      // The servers this engine takes down: every master of the cluster; the sentinel's master (the sentinel stays).
      const data = kind === 'cluster' ? topology.ports : [(sentinel as SentinelTopology).master];
      await topology.whole();
      const namespace = `test-${randomUUID()}`;
      const relays = new Map<Transport, Relay[]>();
      return {
        async client() {
          const own = await Promise.all(topology.ports.map((port) => relay(t, port)));
          const client = kind === 'cluster' ? clusterClient(t, own) : sentinelClient(t, own as [Relay, Relay]);
          const transport = await transportOn(t, client, namespace);
          // Cut only the relays to the data servers: a sentinel client cut from its sentinel waits for it (node-redis), which is not this test's point.
          relays.set(
            transport,
            own.filter((_, i) => data.includes(topology.ports[i] as number)),
          );
          return transport;
        },
        ...outages({ pause: () => topology.pause(data), resume: () => topology.resume(), stop: () => topology.stop(data), start: () => topology.start() }),
        freezeKeepsConnections: true,
        cut: async (client) => {
          for (const r of relays.get(client) ?? []) r.cut();
        },
        mend: async (client) => {
          for (const r of relays.get(client) ?? []) r.mend();
        },
        settle: () => sleep(100),
      };
    },
    () => skip,
  );
}

/** A short-lived plain connection to one server, for looking into it. */
async function plain<T>(port: number, fn: (client: { sendCommand(args: string[]): Promise<unknown> }) => Promise<T>): Promise<T> {
  const client = createClient({ socket: { host: '127.0.0.1', port, reconnectStrategy: false } });
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    client.destroy();
  }
}

/** The channels matching `pattern` that some connection subscribes, over the servers on `ports` (classic pub/sub: a cluster node lists only its own). */
async function channelsOf(ports: readonly number[], pattern: string): Promise<string[]> {
  const all: string[] = [];
  for (const port of ports) all.push(...((await plain(port, (c) => c.sendCommand(['PUBSUB', 'CHANNELS', pattern]))) as string[]));
  return all.sort();
}

/** PUBLISH through a plain connection (on a cluster, it reaches the subscribers of every node). */
function publish(port: number, channel: string, message: string): Promise<unknown> {
  return plain(port, (c) => c.sendCommand(['PUBLISH', channel, message]));
}

/** A test skipped with the reason when redis-server or redis-cli is missing. */
function itOnTopologies(title: string, fn: (t: TestContext) => Promise<void>): void {
  it(title, async (t) => {
    if (skip !== false) return t.skip(skip);
    await fn(t);
  });
}

describe('RedisTransport on a Redis Cluster', () => {
  itOnTopologies('a scope keeps its version counter and its records in one hash slot, and scopes spread over the masters', async (t) => {
    const client = clusterClient(t);
    const namespace = `test-${randomUUID()}`;
    const transport = await transportOn(t, client, namespace);
    const slots = new Set<number>();
    for (let i = 0; i < 12; i++) {
      const scope = `pool:api-${i}`;
      const version = await transport.version(scope, 0);
      assert.equal(await transport.put(scope, { key: 's', version, origin: 'a', value: '{}' }), true);
      const keys = [`${namespace}:version:{${scope}}`, `${namespace}:scope:{${scope}}`];
      const [a, b] = await Promise.all(keys.map(async (key) => Number(await client.sendCommand(key, true, ['CLUSTER', 'KEYSLOT', key]))));
      assert.equal(a, b, `${keys.join(' and ')} share a slot`);
      assert.equal(Number(await client.sendCommand(keys[1], true, ['EXISTS', ...keys])), 2, 'both written, by the master of that slot');
      slots.add(a as number);
    }
    const masters = new Set([...slots].map((slot) => client.getSlotMaster(slot).port));
    assert.ok(masters.size >= 2, `scopes on ${masters.size} master(s) of 3`);
  });

  itOnTopologies('one master away: the transport counts as disconnected and refuses at once; it connects again once the master is back', async (t) => {
    const topology = cluster as Topology;
    await topology.whole();
    const transport = await transportOn(t, clusterClient(t), `test-${randomUUID()}`);
    const seen: boolean[] = [];
    transport.onConnection((up) => seen.push(up));
    const victim = topology.ports[1] as number;
    await topology.stop([victim]);
    await until(() => !transport.connected, 5000, 'disconnected');
    const started = performance.now();
    await assert.rejects(transport.version('s', 0), /disconnected/);
    assert.ok(performance.now() - started < 200, 'at once');
    await topology.start();
    await until(() => transport.connected, 20_000, 'connected again');
    assert.deepEqual(seen.slice(0, 2), [false, true]);
    assert.ok((await transport.version('s', 0)) >= 1);
  });
});

describe('RedisTransport on a user-built Cluster or Sentinel client', () => {
  for (const kind of ['cluster', 'sentinel'] as const) {
    itOnTopologies(`${kind}: close() unsubscribes what the transport subscribed and leaves the user's client open`, async (t) => {
      await (kind === 'cluster' ? (cluster as Topology) : (sentinel as SentinelTopology).topology).whole();
      const client = kind === 'cluster' ? clusterClient(t) : sentinelClient(t);
      const namespace = `test-${randomUUID()}`;
      const transport = await transportOn(t, client, namespace);
      const heard: string[] = [];
      transport.listen('ch', (m) => heard.push(m));
      transport.subscribe('s', () => {});
      await sleep(100);
      await transport.broadcast('ch', 'one');
      await until(() => heard.length === 1, 5000, 'delivery');
      // the user's own subscription on the same client, untouched by the transport
      const mine: string[] = [];
      await client.subscribe('users-own', (m) => mine.push(m));
      const ports = kind === 'cluster' ? (cluster as Topology).ports : [(sentinel as SentinelTopology).master];
      const ours = await channelsOf(ports, `${namespace}:*`);
      const tag = (name: string): string => (kind === 'cluster' ? `{${name}}` : name);
      assert.deepEqual(
        ours.filter((c) => !c.includes(':probe:')),
        [`${namespace}:broadcast:${tag('ch')}`, `${namespace}:channel:${tag('s')}`],
      );
      assert.equal(ours.length, 3, `the transport's own probe channel too: ${ours.join(', ')}`);
      transport.close();
      assert.equal(transport.connected, false);
      await until(async () => (await channelsOf(ports, `${namespace}:*`)).length === 0, 5000, 'every channel of the transport unsubscribed');
      assert.equal(client.isOpen, true, "the user's client stays open");
      await publish(kind === 'cluster' ? ((cluster as Topology).ports[0] as number) : (sentinel as SentinelTopology).master, 'users-own', 'still');
      await until(() => mine.length === 1, 5000, "the user's subscription still delivers");
      await assert.rejects(transport.broadcast('ch', 'two'), /disconnected/);
    });
  }
});

describe('sync() on a Redis Cluster or Sentinel client', () => {
  for (const kind of ['cluster', 'sentinel'] as const) {
    itOnTopologies(`${kind}: two handles with pools of one name: an update, an add and a removal on one reach the other`, async (t) => {
      await (kind === 'cluster' ? (cluster as Topology) : (sentinel as SentinelTopology).topology).whole();
      const namespace = `test-${randomUUID()}`;
      const handles: SyncHandle[] = [];
      const pools: UpstreamPool[] = [];
      for (let i = 0; i < 2; i++) {
        const client = kind === 'cluster' ? clusterClient(t) : sentinelClient(t);
        const handle = sync({ redis: { client }, namespace, instance: `i${i}`, timeout: '500ms' });
        t.after(() => handle.close());
        handles.push(handle);
        const pool = createPool({
          name: 'api',
          servers: [
            { id: 'a', url: 'http://127.0.0.1:1' },
            { id: 'b', url: 'http://127.0.0.1:2' },
          ],
          sync: handle,
        });
        t.after(() => pool.close());
        pools.push(pool);
      }
      const [a, b] = pools as [UpstreamPool, UpstreamPool];
      await Promise.all(handles.map((h) => h.ready));
      await until(() => handles.every((h) => h.connected), 10_000, 'both handles connected');
      await Promise.all(pools.map((p) => p.ready));
      a.update('a', { drain: true, weight: 3 });
      await until(() => b.get('a')?.drain === true && b.get('a')?.weight === 3, 5000, 'the update on the other instance');
      b.add({ id: 'c', url: 'http://127.0.0.1:3', weight: 2 });
      b.remove('b');
      await until(() => a.get('c')?.weight === 2 && a.get('b') === undefined, 5000, 'the add and the removal on the first instance');
      assert.deepEqual(a.servers.map((s) => s.id).sort(), ['a', 'c']);
    });
  }
});
