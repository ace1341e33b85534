// The store contract: every store form cache() and sticky()'s learn mode accept, made into a
// CacheStore by resolveStore() as the factories do, must pass it: in memory and on Redis.
import { strict as assert } from 'node:assert';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, it, before } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Keyv } from 'keyv';
import type KeyvRedis from '@keyv/redis';
import { CacheStore, createMemoryStore, resolveStore, type StoreOption, type StoreSettings } from '../../src/store/index.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { redisAvailability, redisStore } from '../redis.ts';
import { collect, entry } from './support.ts';

interface ContractSubject {
  cache: CacheStore;
  /** Lets `ms` of store time pass (an injected clock, or real sleep for Redis). */
  advance(ms: number): Promise<void>;
  /** A TTL short enough for `advance` to pass it cheaply. */
  shortTtl: number;
  cleanup(): Promise<void>;
}

function settings(namespace: string, now?: () => number): StoreSettings {
  return { option: 'store', memory: undefined, now, namespace, timeout: 5000, breaker: undefined };
}

function storeContract(name: string, create: () => Promise<ContractSubject>, skip: () => string | false): void {
  describe(`store contract: ${name}`, () => {
    let s: ContractSubject;
    let errors: ReturnType<typeof collect>;
    const fresh = async (): Promise<void> => {
      s = await create();
      errors = collect(s.cache);
    };
    const opts = { skip: false as string | false };
    before(() => {
      opts.skip = skip();
    });
    const test = (title: string, fn: () => Promise<void>): void => {
      it(title, async (t) => {
        if (opts.skip !== false) return t.skip(opts.skip);
        await fresh();
        try {
          await fn();
          assert.deepEqual(errors, [], 'no store errors');
        } finally {
          await s.cleanup();
        }
      });
    };

    test('round-trips an entry with a binary body and flat headers', async () => {
      const body = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x3a, 0x62, 0x61, 0x73, 0x65]); // includes ":bas" bytes
      const e = entry(body, { status: 203, meta: { etag: '"x"', vary: ['accept'], n: 1 } });
      assert.equal(await s.cache.set('GET:/bin', e, 60_000), true);
      const got = await s.cache.get('GET:/bin');
      assert.ok(got);
      assert.ok(Buffer.isBuffer(got.body));
      assert.deepEqual(got.body, body);
      assert.equal(got.status, 203);
      assert.deepEqual(got.headers, e.headers);
      assert.equal(got.storedAt, e.storedAt);
      assert.deepEqual(got.meta, { etag: '"x"', vary: ['accept'], n: 1 });
    });

    test('a string body that looks like a keyv marker survives', async () => {
      await s.cache.set('k', entry(':base64:AAAA'), 60_000);
      assert.equal((await s.cache.get('k'))?.body.toString(), ':base64:AAAA');
    });

    test('misses an unknown key', async () => {
      assert.equal(await s.cache.get('nope'), undefined);
    });

    test('expires after the TTL', async () => {
      await s.cache.set('ttl', entry(), s.shortTtl);
      assert.ok(await s.cache.get('ttl'));
      await s.advance(s.shortTtl * 3);
      assert.equal(await s.cache.get('ttl'), undefined);
    });

    test('ttl 0 keeps the entry', async () => {
      await s.cache.set('forever', entry(), 0);
      await s.advance(s.shortTtl * 3);
      assert.ok(await s.cache.get('forever'));
    });

    test('delete removes one key', async () => {
      await s.cache.set('a', entry('a'), 60_000);
      await s.cache.set('b', entry('b'), 60_000);
      assert.equal(await s.cache.delete('a'), true);
      assert.equal(await s.cache.get('a'), undefined);
      assert.equal((await s.cache.get('b'))?.body.toString(), 'b');
    });

    test('deletePrefix removes exactly the keys with the prefix', async () => {
      for (const k of ['GET:/img/1', 'GET:/img/2', 'GET:/img*/x', 'GET:/imgx', 'GET:/other', 'HEAD:/img/1']) {
        await s.cache.set(k, entry(k), 60_000);
      }
      assert.equal(await s.cache.deletePrefix('GET:/img/'), 2);
      assert.equal(await s.cache.get('GET:/img/1'), undefined);
      assert.equal(await s.cache.get('GET:/img/2'), undefined);
      for (const k of ['GET:/img*/x', 'GET:/imgx', 'GET:/other', 'HEAD:/img/1']) {
        assert.equal((await s.cache.get(k))?.body.toString(), k, k);
      }
      // glob characters in the prefix are literal
      assert.equal(await s.cache.deletePrefix('GET:/img*'), 1);
      assert.equal((await s.cache.get('GET:/imgx'))?.body.toString(), 'GET:/imgx');
      assert.equal(await s.cache.deletePrefix('nothing-here'), 0);
    });

    test('overwrite replaces the entry', async () => {
      await s.cache.set('o', entry('one'), 60_000);
      await s.cache.set('o', entry('two', { status: 404 }), 60_000);
      const got = await s.cache.get('o');
      assert.equal(got?.body.toString(), 'two');
      assert.equal(got?.status, 404);
    });

    test('stores a large value (2 MiB)', async () => {
      const body = randomBytes(2 * 1024 * 1024);
      assert.equal(await s.cache.set('large', entry(body), 60_000), true);
      assert.deepEqual((await s.cache.get('large'))?.body, body);
    });

    test('rejects an invalid entry or TTL with InvalidOptionError', async () => {
      await assert.rejects(s.cache.set('x', { ...entry(), body: 'str' as unknown as Buffer }, 1000), InvalidOptionError);
      await assert.rejects(s.cache.set('x', { ...entry(), headers: ['odd'] }, 1000), { option: 'entry.headers' });
      await assert.rejects(s.cache.set('x', entry(), -1), { option: 'ttlMs' });
    });

    test('text values (sticky sessions): round trip, listing, and no mix-up with entries', async () => {
      assert.equal(await s.cache.setText('s:1', 'server-a', 60_000), true);
      assert.equal(await s.cache.setText('s:2', 'server-b', 60_000), true);
      await s.cache.set('GET:/page', entry('page'), 60_000);
      assert.equal(await s.cache.getText('s:1'), 'server-a');
      assert.equal(await s.cache.getText('nope'), undefined);
      assert.deepEqual((await s.cache.texts()).sort(), ['server-a', 'server-b']);
      await s.cache.setText('short', 'x', s.shortTtl);
      await s.advance(s.shortTtl * 3);
      assert.equal(await s.cache.getText('short'), undefined);
    });
  });
}

/** A subject in memory: the store form `make` builds, with a clock the test moves. */
function inMemory(make: (now: () => number) => StoreOption | undefined): () => Promise<ContractSubject> {
  return async () => {
    let t = 1_000_000;
    const now = (): number => t;
    const cache = resolveStore(make(now), settings(`contract-${randomUUID().slice(0, 8)}`, now));
    return {
      cache,
      shortTtl: 1000,
      advance: async (ms) => {
        t += ms;
      },
      cleanup: () => cache.disconnect(),
    };
  };
}

storeContract(
  'memory (no store given)',
  inMemory(() => undefined),
  () => false,
);
storeContract(
  'memory store (createMemoryStore as the adapter)',
  inMemory((now) => createMemoryStore({ now })),
  () => false,
);
storeContract(
  'a Keyv instance over the memory store',
  inMemory((now) => new Keyv({ store: createMemoryStore({ now }), namespace: 'user-keyv' })),
  () => false,
);
storeContract(
  'a CacheStore (memory)',
  inMemory((now) => new CacheStore({ memory: { now } })),
  () => false,
);

const redisSkip = redisAvailability().shared;
const RUN = `swy-test-${randomUUID()}`;

/** A subject on the shared Redis: the store form `make` builds in a namespace of its own, emptied afterwards. */
function onRedis(make: (namespace: string) => StoreOption): () => Promise<ContractSubject> {
  return async () => {
    const namespace = `${RUN}-${randomUUID().slice(0, 8)}`;
    const cache = resolveStore(make(namespace), settings(namespace));
    return {
      cache,
      shortTtl: 100,
      advance: (ms) => sleep(ms),
      cleanup: async () => {
        assert.ok((await cache.deletePrefix('')) >= 0);
        await cache.disconnect();
      },
    };
  };
}

storeContract(
  'redis (KeyvRedis adapter)',
  onRedis(() => redisStore()),
  redisSkip,
);
storeContract(
  'redis (user Keyv instance)',
  onRedis((namespace) => new Keyv({ store: redisStore(), namespace, throwOnErrors: true })),
  redisSkip,
);
storeContract(
  'redis (a CacheStore)',
  onRedis((namespace) => new CacheStore({ store: redisStore(), namespace, timeout: 5000 })),
  redisSkip,
);

describe('redis namespaces', () => {
  it('deletePrefix("") purges only its own namespace and leaves nothing behind', async (t) => {
    const skip = redisSkip();
    if (skip !== false) return t.skip(skip);
    const a = new CacheStore({ store: redisStore(), namespace: `${RUN}-a` });
    const b = new CacheStore({ store: redisStore(), namespace: `${RUN}-b` });
    t.after(async () => {
      await b.deletePrefix('');
      await a.disconnect();
      await b.disconnect();
    });
    await a.set('k', entry('a'), 60_000);
    await b.set('k', entry('b'), 60_000);
    assert.equal(await a.deletePrefix(''), 1);
    assert.equal(await a.get('k'), undefined);
    assert.equal((await b.get('k'))?.body.toString(), 'b');
    // nothing of namespace a is left in Redis
    const client = await (a.keyv.store as KeyvRedis<unknown>).getClient();
    const left = await client.scan('0', { MATCH: `${RUN}-a*`, COUNT: 1000 });
    assert.deepEqual(left.keys, []);
  });
});
