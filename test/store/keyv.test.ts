// What src/store/keyv.ts assumes of Keyv and @keyv/redis, checked against the real packages: a new
// Keyv or @keyv/redis that changes how keys are laid out fails here, not in a purge or a listing.
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { Keyv } from 'keyv';
import type KeyvRedis from '@keyv/redis';
import { deleteByPrefix, isKeyv, isStoreAdapter, redisConnection, storageKey } from '../../src/store/keyv.ts';
import { CacheStore, createMemoryStore } from '../../src/store/index.ts';
import { redisAvailability, redisStore, type RedisAdmin } from '../redis.ts';
import { entry } from './support.ts';

/** The keys a Keyv really hands its store: a Map store that records them. */
async function writtenKey(keyv: Keyv, map: Map<unknown, unknown>, key: string): Promise<string> {
  map.clear();
  await keyv.set(key, 'v');
  const keys = [...map.keys()];
  assert.equal(keys.length, 1);
  return String(keys[0]);
}

describe('storageKey(): the key Keyv stores a key under', () => {
  const cases: Array<[string, () => Keyv]> = [
    ['a namespace', () => new Keyv({ namespace: 'ns' })],
    ['the default namespace', () => new Keyv()],
    ['an empty namespace', () => new Keyv({ namespace: '' })],
    ['useKeyPrefix: false', () => new Keyv({ namespace: 'ns', useKeyPrefix: false })],
    [
      'a namespace set after creation',
      () => {
        const k = new Keyv();
        k.namespace = 'later';
        return k;
      },
    ],
  ];
  for (const [what, make] of cases) {
    it(`agrees with the keys Keyv writes, with ${what}`, async () => {
      const keyv = make();
      const map = keyv.store as Map<unknown, unknown>;
      assert.ok(map instanceof Map);
      for (const key of ['k', 'GET:/a', 'https://x.example/a?b=1', '', 'ns:already', 'later:already', 'keyv:x']) {
        assert.equal(storageKey(keyv, key), await writtenKey(keyv, map, key), `key ${JSON.stringify(key)}`);
      }
    });
  }

  it('CacheStore keeps the memory store under the same keys as Keyv would', async () => {
    const memory = createMemoryStore();
    const cache = new CacheStore({ store: memory, namespace: 'ns' });
    await cache.set('GET:/a', entry(), 60_000);
    await cache.setText('s:1', 'sid', 60_000);
    assert.deepEqual(memory.keys(), [storageKey(cache.keyv, 'GET:/a'), storageKey(cache.keyv, 's:1')]);
    assert.equal(cache.keyPrefix, storageKey(cache.keyv, ''));
  });
});

describe('recognizing stores', () => {
  it('a Keyv instance, a storage adapter, a Map; not a CacheStore or a plain object', () => {
    assert.equal(isKeyv(new Keyv()), true);
    assert.equal(isKeyv(createMemoryStore()), false);
    assert.equal(isStoreAdapter(createMemoryStore()), true);
    assert.equal(isStoreAdapter(new Map()), true);
    assert.equal(isStoreAdapter(new CacheStore()), false, 'no clear(): a CacheStore is not an adapter');
    assert.equal(isStoreAdapter({ get() {} }), false);
    assert.equal(redisConnection(createMemoryStore()), undefined);
  });

  it('deleteByPrefix on a Map store through Keyv removes exactly the prefixed keys of its namespace', async () => {
    const map = new Map<unknown, unknown>();
    const keyv = new Keyv({ store: map, namespace: 'a' });
    const other = new Keyv({ store: map, namespace: 'b' });
    for (const k of ['p/1', 'p/2', 'q/1']) await keyv.set(k, 1);
    await other.set('p/1', 1);
    assert.equal(await deleteByPrefix(keyv, 'p/'), 2);
    assert.deepEqual([...map.keys()].sort(), ['a:q/1', 'b:p/1']);
  });
});

const redisSkip = redisAvailability().shared;

describe('@keyv/redis: what the purge and the connection check read', () => {
  it('its client tells its connection; keys sit under createKeyPrefix(storageKey(...)), which SCAN finds', async (t) => {
    const skip = redisSkip();
    if (skip !== false) return t.skip(skip);
    const namespace = `swy-keyv-test-${randomUUID()}`;
    const adapter = redisStore();
    const cache = new CacheStore({ store: adapter, namespace });
    t.after(async () => {
      await cache.deletePrefix('');
      await cache.disconnect();
    });
    assert.ok(await cache.set('GET:/a', entry(), 60_000));
    const connection = redisConnection(adapter);
    assert.ok(connection !== undefined, 'the adapter exposes its client');
    assert.equal(connection.isOpen, true);
    assert.equal(connection.isReady, true);
    const admin = (await (adapter as KeyvRedis<unknown>).getClient()) as unknown as RedisAdmin;
    const stored = adapter.createKeyPrefix(storageKey(cache.keyv, 'GET:/a'), adapter.namespace);
    assert.notEqual(await admin.get(stored), null, `Redis holds ${stored}`);
    assert.equal(await cache.deletePrefix('GET:'), 1);
    assert.equal(await admin.get(stored), null);
  });
});
