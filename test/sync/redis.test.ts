// What RedisTransport does beyond the transport contract (transport-contract.test.ts): its options,
// its connections (the first attempt, a node-redis client the user built, RESP3), and how it reads
// what it finds in Redis, which it treats as hostile.
import { strict as assert } from 'node:assert';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient, createCluster, createSentinel } from '@redis/client';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { RedisTransport, type RedisTransportOptions } from '../../src/sync/redis.ts';
import type { VersionedEntry } from '../../src/sync/transport.ts';
import { privateRedis, redisAvailability, settlesWithin, until, type PrivateRedis, type RedisAdmin } from '../redis.ts';

const entry = (key: string, version: number, origin = 'a', value = '{}'): VersionedEntry => ({ key, version, origin, value });

/** A node-redis client as a user builds one: no offline queue, quick reconnection, errors listened to. */
function userClient(url: string, extra: { RESP?: 3 } = {}) {
  const client = createClient({
    url,
    disableOfflineQueue: true,
    socket: { connectTimeout: 500, reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 200) },
    ...extra,
  });
  client.on('error', () => {});
  return client;
}

/** How many connections of the server are subscribed to something. */
async function subscribers(admin: RedisAdmin): Promise<number> {
  const list = await admin.sendCommand(['CLIENT', 'LIST', 'TYPE', 'pubsub']);
  return String(list)
    .split('\n')
    .filter((line) => line.trim() !== '').length;
}

const redis = redisAvailability();

/** A test on a private redis-server of its own, skipped when this machine has no redis-server. */
function itOnRedis(title: string, fn: (t: TestContext, server: PrivateRedis) => Promise<void>): void {
  it(title, async (t) => {
    const skip = redis.private();
    if (skip !== false) return t.skip(skip);
    await fn(t, await privateRedis(t));
  });
}

/** A transport of namespace `ns` on `server`, connected, closed when the test ends. */
async function connected(t: TestContext, server: PrivateRedis): Promise<RedisTransport> {
  const transport = new RedisTransport({ url: server.url, namespace: 'ns', timeout: 500 });
  t.after(() => transport.close());
  await transport.connect();
  await until(() => transport.connected, 5000, 'connected');
  return transport;
}

describe('RedisTransport options', () => {
  it('rejects bad options at construction with InvalidOptionError', () => {
    const bad = (options: unknown, message?: RegExp): void => {
      assert.throws(
        () => new RedisTransport(options as RedisTransportOptions),
        (err: unknown) => {
          assert.ok(err instanceof InvalidOptionError, String(err));
          if (message !== undefined) assert.match(err.message, message);
          return true;
        },
      );
    };
    bad({ url: 'http://x' });
    bad({ url: 'redis://127.0.0.1:1', timeout: 0 });
    bad({ url: 'redis://127.0.0.1:1', namespace: '' });
    bad({ url: 'redis://127.0.0.1:1', tiemout: 5 }, /did you mean "timeout"/);
    bad(undefined);
    bad({}, /"url"/);
    bad({ namespace: 'gw' }, /"url"/);
    const client = userClient('redis://127.0.0.1:1');
    bad({ url: 'redis://127.0.0.1:1', client }, /either "url" or "client"/);
    bad({ client, maxReconnectDelay: 100 }, /maxReconnectDelay/);
    bad({ client, namespace: '' });
    bad({ client: {} }, /createClient/);
    bad({ client: 'redis://127.0.0.1:1' }, /createClient/);
    // Cluster and Sentinel clients are accepted (redis-cluster.test.ts runs them), with the same rules
    bad({ client: createCluster({ rootNodes: [{ url: 'redis://127.0.0.1:1' }] }), maxReconnectDelay: 100 }, /maxReconnectDelay/);
    bad({ client: createSentinel({ name: 'm', sentinelRootNodes: [{ host: '127.0.0.1', port: 1 }] }), namespace: '' });
    assert.equal(client.isOpen, false, 'a refused client is left alone');
  });
});

describe('RedisTransport connections', () => {
  itOnRedis('connect() settles after a first failed attempt, and the transport connects by itself once Redis is there', async (t, server) => {
    await server.stop();
    const transport = new RedisTransport({ url: server.url, timeout: 500, maxReconnectDelay: 100 });
    t.after(() => transport.close());
    const seen: boolean[] = [];
    transport.onConnection((up) => seen.push(up));
    assert.equal(await settlesWithin(transport.connect(), 2000), true, 'connect() settles while Redis is away');
    assert.equal(transport.connected, false);
    await assert.rejects(transport.version('s', 0), /disconnected/);
    await server.start();
    await until(() => transport.connected, 10_000, 'connected once Redis is there');
    assert.deepEqual(seen, [true]);
    assert.equal(await transport.version('s', 0), 1);
  });

  itOnRedis('close() settles a connect() still waiting for a first attempt, its own or that of a client the user is opening', async (t, server) => {
    server.pause(); // the TCP connections open, the handshakes are never answered
    const client = userClient(server.url);
    t.after(() => client.destroy());
    client.connect().catch(() => {});
    for (const transport of [new RedisTransport({ url: server.url, timeout: 60_000 }), new RedisTransport({ client, timeout: 60_000 })]) {
      const connecting = transport.connect();
      await sleep(50);
      transport.close();
      assert.equal(await settlesWithin(connecting, 1000), true);
      assert.equal(transport.connected, false);
    }
    assert.equal(client.isOpen, true, 'the user client is still theirs');
  });

  itOnRedis('drops what arrives on the subscriber connection while the commands connection is down, as a missed message', async (t, server) => {
    const admin = await server.admin();
    const transport = new RedisTransport({ url: server.url, namespace: 'ns', timeout: 500, maxReconnectDelay: 100 });
    t.after(() => transport.close());
    const heard: string[] = [];
    const got: VersionedEntry[] = [];
    transport.listen('ch', (m) => heard.push(m));
    transport.subscribe('s', (x) => got.push(x));
    await transport.connect();
    await until(async () => (await subscribers(admin)) === 1, 5000, 'subscribed');
    // the commands connection is killed and cannot come back (this admin and the subscriber fill maxclients)
    await admin.sendCommand(['CONFIG', 'SET', 'maxclients', '2']);
    t.after(() => admin.sendCommand(['CONFIG', 'SET', 'maxclients', '10000']).catch(() => {}));
    await admin.sendCommand(['CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes']);
    await until(() => !transport.connected, 5000, 'disconnected');
    await admin.sendCommand(['PUBLISH', 'ns:broadcast:ch', 'while down']);
    await admin.sendCommand(['PUBLISH', 'ns:channel:s', '{"key":"k","version":1,"origin":"a","value":"{}"}']);
    await sleep(100);
    assert.equal(await subscribers(admin), 1, 'the subscriber connection stayed up');
    assert.deepEqual([heard, got], [[], []]);
    await admin.sendCommand(['CONFIG', 'SET', 'maxclients', '10000']);
    await until(() => transport.connected, 10_000, 'reconnected');
    await admin.sendCommand(['PUBLISH', 'ns:broadcast:ch', 'back']);
    await until(() => heard.length === 1, 5000, 'the next message');
    assert.deepEqual(heard, ['back']);
  });

  itOnRedis(
    'uses an open client the user built as it is; close() leaves it open with its listeners as they were, and closes the duplicate it subscribed on',
    async (t, server) => {
      const admin = await server.admin();
      const client = userClient(server.url);
      t.after(() => client.destroy());
      await client.connect();
      const events = ['ready', 'end', 'reconnecting', 'error'];
      const listeners = events.map((event) => client.listenerCount(event));
      const transport = new RedisTransport({ client, namespace: 'ns', timeout: 500 });
      t.after(() => transport.close());
      const heard: string[] = [];
      transport.listen('ch', (m) => heard.push(m));
      await transport.connect();
      assert.equal(transport.connected, true);
      await until(async () => (await subscribers(admin)) === 1, 5000, 'the duplicate subscribed');
      await transport.broadcast('ch', 'hello');
      await until(() => heard.length === 1, 5000, 'the broadcast');
      assert.equal(await admin.get('ns:version:s'), null);
      assert.equal(await transport.version('s', 0), 1, 'commands go through the client');
      assert.equal(await client.get('ns:version:s'), '1');
      transport.close();
      assert.equal(transport.connected, false);
      await assert.rejects(transport.version('s', 0), /disconnected/);
      assert.equal(client.isReady, true, 'the user client stays open');
      assert.equal(await client.ping(), 'PONG');
      assert.deepEqual(
        events.map((event) => client.listenerCount(event)),
        listeners,
        'the transport took its listeners off the client',
      );
      await until(async () => (await subscribers(admin)) === 0, 5000, 'the duplicate closed');
    },
  );

  itOnRedis('connects a client the user built that is not open yet, follows its connection state, and does not close it', async (t, server) => {
    const client = userClient(server.url);
    t.after(() => client.destroy());
    const transport = new RedisTransport({ client, timeout: 500 });
    t.after(() => transport.close());
    const seen: boolean[] = [];
    transport.onConnection((up) => seen.push(up));
    await transport.connect();
    assert.equal(client.isReady, true, 'connect() opened it');
    assert.equal(transport.connected, true);
    // the user closes their client: the transport is disconnected; they open it again: connected
    client.destroy();
    assert.equal(transport.connected, false);
    await assert.rejects(transport.increment('c', 1, 1000), /disconnected/);
    await client.connect();
    await until(() => transport.connected, 5000, 'connected again');
    assert.deepEqual(seen, [true, false, true]);
    assert.equal(await transport.increment('c', 1, 1000), 1);
    transport.close();
    assert.equal(client.isReady, true);
  });

  itOnRedis('works on a RESP3 client (maps, push messages)', async (t, server) => {
    const client = userClient(server.url, { RESP: 3 });
    t.after(() => client.destroy());
    const transport = new RedisTransport({ client, timeout: 500 });
    t.after(() => transport.close());
    const got: VersionedEntry[] = [];
    const heard: string[] = [];
    transport.subscribe('s', (x) => got.push(x));
    transport.listen('s', (m) => heard.push(m));
    await transport.connect();
    await sleep(100);
    assert.equal(await transport.put('s', entry('a', 1)), true);
    assert.equal(await transport.put('s', entry('b', 2)), true);
    const snapshot = await transport.snapshot('s');
    assert.deepEqual(
      [...snapshot].sort((x, y) => x.key.localeCompare(y.key)),
      [entry('a', 1), entry('b', 2)],
    );
    await transport.broadcast('s', 'm');
    await until(() => got.length === 2 && heard.length === 1, 5000, 'deliveries');
    assert.deepEqual(heard, ['m']);
    assert.equal(await transport.increment('c', 3, 1000), 3);
    assert.equal(await transport.acquire('l', 'A', 1000), true);
  });
});

describe('RedisTransport reads Redis as hostile', () => {
  itOnRedis('ignores malformed stored records and published messages', async (t, server) => {
    const transport = await connected(t, server);
    await until(() => transport.connected, 5000, 'connected');
    const admin = await server.admin();
    const got: VersionedEntry[] = [];
    transport.subscribe('s', (x) => got.push(x));
    await sleep(100);
    await admin.sendCommand([
      'HSET',
      'ns:scope:s',
      'bad1',
      'not json',
      'bad2',
      '{"version":"7","origin":"a","value":"{}"}',
      'bad3',
      'null',
      'good',
      '{"version":3,"origin":"a","value":"{}"}',
    ]);
    await admin.sendCommand(['SET', 'ns:version:s', 'garbage']);
    assert.deepEqual(await transport.snapshot('s'), [entry('good', 3)]);
    assert.equal(await transport.version('s', 0), 1, 'a non-numeric counter counts as 0');
    assert.equal(await transport.put('s', entry('bad1', 1)), true, 'a malformed record is overwritten');
    for (const message of ['{', '[]', '{"key":1,"version":1,"origin":"a","value":"{}"}', '{"key":"k","version":-1,"origin":"a","value":"{}"}']) {
      await admin.sendCommand(['PUBLISH', 'ns:channel:s', message]);
    }
    await admin.sendCommand(['PUBLISH', 'ns:channel:s', '{"key":"ok","version":9,"origin":"a","value":"{}"}']);
    await until(() => got.some((x) => x.key === 'ok'), 5000, 'the good message');
    assert.deepEqual(
      got.map((x) => x.key),
      ['bad1', 'ok'],
    );
  });

  itOnRedis('takes a key of the wrong type, or a counter that is not one of its own, for garbage: replaced, never thrown', async (t, server) => {
    const transport = await connected(t, server);
    const admin = await server.admin();
    const pttl = async (key: string): Promise<number> => Number(await admin.sendCommand(['PTTL', key]));
    await admin.sendCommand(['SET', 'ns:counter:text', 'not a number']);
    await admin.sendCommand(['HSET', 'ns:counter:hash', 'f', 'v']);
    await admin.sendCommand(['SET', 'ns:counter:forever', '5']); // no expiry: not made by increment
    await admin.sendCommand(['SET', 'ns:counter:huge', '99999999999999999999']);
    await admin.sendCommand(['SET', 'ns:counter:float', '2.5']);
    for (const key of ['text', 'hash', 'forever', 'huge', 'float']) {
      assert.equal(await transport.increment(key, 2, 60_000), 2, key);
      const left = await pttl(`ns:counter:${key}`);
      assert.ok(left > 50_000 && left <= 60_000, `${key} expires: ${left}`);
      assert.equal(await transport.increment(key, 1, 1000), 3, key);
      assert.ok((await pttl(`ns:counter:${key}`)) > 50_000, `${key}: not shortened by a later increment`);
    }
    await admin.sendCommand(['SET', 'ns:scope:w', 'a string']);
    assert.deepEqual(await transport.snapshot('w'), []);
    assert.equal(await transport.put('w', entry('k', 1)), true);
    assert.deepEqual(await transport.snapshot('w'), [entry('k', 1)]);
    await admin.sendCommand(['HSET', 'ns:version:h', 'f', 'v']);
    assert.equal(await transport.version('h', 0), 1);
    await admin.sendCommand(['HSET', 'ns:lease:h', 'f', 'v']);
    assert.equal(await transport.renew('h', 'A', 1000), false);
    await transport.release('h', 'A');
    assert.equal(await transport.acquire('h', 'A', 1000), false, 'held by garbage until it is removed');
  });

  itOnRedis('routes publications by their exact channel: broadcast channels to listeners, scope channels to subscribers', async (t, server) => {
    const transport = await connected(t, server);
    const admin = await server.admin();
    const got: VersionedEntry[] = [];
    const heard: string[] = [];
    transport.subscribe('x', (e) => got.push(e));
    transport.listen('x', (m) => heard.push(m));
    await sleep(100);
    const record = '{"key":"k","version":1,"origin":"a","value":"{}"}';
    await admin.sendCommand(['PUBLISH', 'ns:broadcast:x', record]);
    await admin.sendCommand(['PUBLISH', 'ns:channel:x', 'plain']);
    await admin.sendCommand(['PUBLISH', 'ns:broadcast:channel:x', record]);
    await admin.sendCommand(['PUBLISH', 'ns:channel:broadcast:x', record]);
    await admin.sendCommand(['PUBLISH', 'ns:channel:x', record]);
    await until(() => got.length === 1 && heard.length === 1, 5000, 'deliveries');
    await sleep(50);
    assert.deepEqual(heard, [record], 'the listener heard the broadcast, as it was sent');
    assert.deepEqual(got, [entry('k', 1)], 'the subscriber got the record published on the scope channel only');
  });
});
