// The transport contract: what the sync logic relies on from any Transport, run on the in-memory
// engine and on RedisTransport against a private redis-server (so outages can be real ones).
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { describe, it, before, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { RedisTransport } from '../../src/sync/redis.ts';
import { MemoryHub, type Transport, type VersionedEntry } from '../../src/sync/transport.ts';
import { privateRedis, redisAvailability, settlesWithin, until } from '../redis.ts';

interface Engine {
  /** A new connected client of the engine. */
  client(): Promise<Transport>;
  /** The engine goes away; `how` is a crash (killed) or a freeze (SIGSTOP, Redis only). */
  down(how: 'kill' | 'freeze'): Promise<void>;
  /** The engine returns (empty after a kill, as a restarted Redis without persistence). */
  up(): Promise<void>;
  /** Whether `down('freeze')` keeps connections up (so operations reject by timeout, not at once). */
  freezeKeepsConnections: boolean;
}

const entry = (key: string, version: number, origin = 'a', value = '{}'): VersionedEntry => ({ key, version, origin, value });
const byKey = (entries: VersionedEntry[]): VersionedEntry[] => [...entries].sort((x, y) => x.key.localeCompare(y.key));

function transportContract(name: string, create: (t: TestContext) => Promise<Engine>, skip: () => string | false): void {
  describe(`transport contract: ${name}`, () => {
    const opts = { skip: false as string | false };
    before(() => {
      opts.skip = skip();
    });
    const test = (title: string, fn: (e: Engine, scope: string) => Promise<void>): void => {
      it(title, async (t) => {
        if (opts.skip !== false) return t.skip(opts.skip);
        await fn(await create(t), `scope-${randomUUID()}`);
      });
    };

    test('versions rise per scope and always exceed the floor', async (e, scope) => {
      const a = await e.client();
      const v1 = await a.version(scope, 0);
      const v2 = await a.version(scope, 0);
      assert.ok(v2 > v1 && v1 >= 1);
      assert.equal(await a.version(scope, 100), 101);
      assert.equal(await a.version(scope, 5), 102);
      assert.equal(await a.version(`${scope}-other`, 0), 1);
    });

    test('put stores and publishes to every subscriber; an older or equal version is refused', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const got: VersionedEntry[] = [];
      const stop = b.subscribe(scope, (x) => got.push(x));
      const mine: VersionedEntry[] = [];
      a.subscribe(scope, (x) => mine.push(x));
      if (name !== 'memory') await sleep(100); // the SUBSCRIBE round trip
      assert.equal(await a.put(scope, entry('s1', 5, 'a', '{"w":1}')), true);
      await until(() => got.length === 1 && mine.length === 1, 5000, 'delivery');
      assert.deepEqual(got[0], entry('s1', 5, 'a', '{"w":1}'));
      assert.equal(await a.put(scope, entry('s1', 4, 'b', '{"w":2}')), false);
      assert.equal(await a.put(scope, entry('s1', 5, 'b', '{"w":3}')), false);
      assert.deepEqual(await b.snapshot(scope), [entry('s1', 5, 'a', '{"w":1}')]);
      stop();
      assert.equal(await a.put(scope, entry('s1', 6)), true);
      await until(() => mine.length === 2, 5000, 'own echo');
      await sleep(50);
      assert.equal(got.length, 1, 'an unsubscribed handler hears nothing');
    });

    test('ordering via versions: whatever order puts arrive in, the highest version is what stays', async (e, scope) => {
      const a = await e.client();
      const versions = [await a.version(scope, 0), await a.version(scope, 0), await a.version(scope, 0)];
      for (const v of [versions[2], versions[0], versions[1]] as number[]) await a.put(scope, entry('k', v, String(v)));
      assert.deepEqual(await a.snapshot(scope), [entry('k', versions[2] as number, String(versions[2]))]);
    });

    test('snapshot returns every entry, and after the engine returns the client reconnects by itself', async (e, scope) => {
      const a = await e.client();
      const seen: boolean[] = [];
      a.onConnection((up) => seen.push(up));
      await a.put(scope, entry('x', 1));
      await a.put(scope, entry('y', 2, 'b', '{"removed":true}'));
      assert.deepEqual(byKey(await a.snapshot(scope)), [entry('x', 1), entry('y', 2, 'b', '{"removed":true}')]);
      await e.down('kill');
      await until(() => !a.connected, 5000, 'disconnect seen');
      await assert.rejects(a.snapshot(scope));
      await e.up();
      await until(() => a.connected, 10_000, 'reconnect');
      assert.deepEqual(seen.slice(0, 2), [false, true]);
      assert.deepEqual(await a.snapshot(scope), [], 'the engine came back empty');
      await a.put(scope, entry('z', 3));
      assert.deepEqual(await a.snapshot(scope), [entry('z', 3)]);
      // subscriptions made before the outage still deliver
      const got: VersionedEntry[] = [];
      a.subscribe(scope, (x) => got.push(x));
      if (name !== 'memory') await sleep(100);
      await a.put(scope, entry('z', 4));
      await until(() => got.length === 1, 5000, 'delivery after reconnect');
    });

    test('lease exclusivity, renewal by the holder only, release, and takeover after expiry', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const key = `lease-${scope}`;
      assert.equal(await a.acquire(key, 'A', 300), true);
      assert.equal(await a.acquire(key, 'A', 300), true, 'the holder may acquire again');
      assert.equal(await b.acquire(key, 'B', 300), false);
      assert.equal(await b.renew(key, 'B', 300), false);
      assert.equal(await a.renew(key, 'A', 300), true);
      await b.release(key, 'B'); // not B's: nothing happens
      assert.equal(await b.acquire(key, 'B', 300), false);
      await a.release(key, 'A');
      assert.equal(await b.acquire(key, 'B', 300), true);
      // B stops renewing: A takes over once the 300 ms have passed, not before
      assert.equal(await a.acquire(key, 'A', 300), false);
      await until(async () => a.acquire(key, 'A', 300), 5000, 'takeover', 50);
      assert.equal(await b.renew(key, 'B', 300), false, 'the old holder cannot renew');
    });

    test('every operation rejects while the engine is killed, and nothing is replayed after', async (e, scope) => {
      const a = await e.client();
      await e.down('kill');
      await until(() => !a.connected, 5000, 'disconnect seen');
      const ops: Array<() => Promise<unknown>> = [
        () => a.version(scope, 0),
        () => a.put(scope, entry('k', 1)),
        () => a.snapshot(scope),
        () => a.acquire('l', 'A', 300),
        () => a.renew('l', 'A', 300),
        () => a.release('l', 'A'),
      ];
      for (const op of ops) {
        const p = op();
        assert.equal(await settlesWithin(p, 200), true, 'rejects at once');
        await assert.rejects(p);
      }
      await e.up();
      await until(() => a.connected, 10_000, 'reconnect');
      assert.deepEqual(await a.snapshot(scope), [], 'the put made while down was not replayed');
    });

    test('every operation rejects while the engine is frozen, and works again once it thaws', async (e, scope) => {
      const a = await e.client();
      await e.down('freeze');
      const ops: Array<() => Promise<unknown>> = [
        () => a.version(scope, 0),
        () => a.put(scope, entry('k', 1)),
        () => a.snapshot(scope),
        () => a.acquire('l', 'A', 300),
      ];
      const results = ops.map((op) => op());
      for (const p of results) {
        assert.equal(await settlesWithin(p, 5000), true, 'rejects, bounded by the command timeout');
        await assert.rejects(p);
      }
      await e.up();
      await until(() => a.connected, 10_000, 'reconnect');
      await until(
        async () =>
          a.version(scope, 0).then(
            () => true,
            () => false,
          ),
        10_000,
        'commands work again',
        100,
      );
    });
  });
}

transportContract(
  'memory',
  async () => {
    const hub = new MemoryHub();
    return {
      client: async () => hub.connect(),
      down: async () => hub.down(),
      up: async () => hub.up({ keepData: false }),
      freezeKeepsConnections: false,
    };
  },
  () => false,
);

const redis = redisAvailability();
transportContract(
  'redis (private server)',
  async (t) => {
    const server = await privateRedis(t);
    let frozen = false;
    const namespace = `test-${randomUUID()}`;
    return {
      async client() {
        const transport = new RedisTransport({ url: server.url, namespace, timeout: 500, maxReconnectDelay: 200 });
        t.after(() => transport.close());
        await transport.connect();
        await until(() => transport.connected, 5000, 'connected');
        return transport;
      },
      async down(how) {
        if (how === 'freeze') {
          frozen = true;
          server.pause();
        } else await server.stop();
      },
      async up() {
        if (frozen) {
          frozen = false;
          server.resume();
        } else await server.start();
      },
      freezeKeepsConnections: true,
    };
  },
  redis.private,
);

describe('RedisTransport options', () => {
  it('rejects bad options at construction with InvalidOptionError', () => {
    assert.throws(() => new RedisTransport({ url: 'http://x' }), InvalidOptionError);
    assert.throws(() => new RedisTransport({ url: 'redis://127.0.0.1:1', timeout: 0 }), InvalidOptionError);
    assert.throws(() => new RedisTransport({ url: 'redis://127.0.0.1:1', namespace: '' }), InvalidOptionError);
  });
});

describe('RedisTransport reads Redis as hostile', () => {
  it('ignores malformed stored records and published messages', async (t) => {
    const skip = redis.private();
    if (skip !== false) return t.skip(skip);
    const server = await privateRedis(t);
    const transport = new RedisTransport({ url: server.url, namespace: 'ns', timeout: 500 });
    t.after(() => transport.close());
    await transport.connect();
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
});
