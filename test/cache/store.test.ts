import { strict as assert } from 'node:assert';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, it, before, after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Keyv, type KeyvStoreAdapter } from 'keyv';
import KeyvRedis from '@keyv/redis';
import {
  CacheStore,
  CacheStoreError,
  createMemoryStore,
  estimateSize,
  type CacheEntry,
} from '../../src/cache/store.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { deadPort } from '../helpers.ts';
import { redisAvailability, REDIS_URL } from '../redis.ts';


function entry(body: Buffer | string = 'hello', extra: Partial<CacheEntry> = {}): CacheEntry {
  return {
    status: 200,
    headers: ['content-type', 'application/octet-stream', 'set-cookie', 'a=1', 'set-cookie', 'b=2'],
    body: Buffer.isBuffer(body) ? body : Buffer.from(body),
    storedAt: 1_700_000_000_000,
    ...extra,
  };
}

function collect(store: CacheStore): CacheStoreError[] {
  const errors: CacheStoreError[] = [];
  store.on('storeError', (err) => errors.push(err));
  return errors;
}

// ---------------------------------------------------------------------------
// The store contract: every store the cache supports must pass it.
// ---------------------------------------------------------------------------

interface ContractSubject {
  cache: CacheStore;
  /** Lets `ms` of store time pass (an injected clock, or real sleep for Redis). */
  advance(ms: number): Promise<void>;
  /** A TTL short enough for `advance` to pass it cheaply. */
  shortTtl: number;
  cleanup(): Promise<void>;
}

function storeContract(name: string, create: () => Promise<ContractSubject>, skip: () => string | false): void {
  describe(`store contract: ${name}`, () => {
    let s: ContractSubject;
    let errors: CacheStoreError[];
    const fresh = async (): Promise<void> => {
      s = await create();
      errors = collect(s.cache);
    };
    const opts = { skip: false as string | false };
    before(() => { opts.skip = skip(); });
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
  });
}

storeContract('memory (default)', async () => {
  let t = 1_000_000;
  const cache = new CacheStore({ memory: { now: () => t } });
  return { cache, shortTtl: 1000, advance: async (ms) => { t += ms; }, cleanup: () => cache.disconnect() };
}, () => false);

const redisSkip = redisAvailability().shared;
const RUN = `swy-test-${randomUUID()}`;

storeContract('redis (KeyvRedis adapter)', async () => {
  const namespace = `${RUN}-${randomUUID().slice(0, 8)}`;
  const cache = new CacheStore({ store: new KeyvRedis(REDIS_URL), namespace, timeout: 5000 });
  return {
    cache,
    shortTtl: 100,
    advance: (ms) => sleep(ms),
    cleanup: async () => {
      assert.ok((await cache.deletePrefix('')) >= 0);
      await cache.disconnect();
    },
  };
}, redisSkip);

storeContract('redis (user Keyv instance)', async () => {
  const namespace = `${RUN}-${randomUUID().slice(0, 8)}`;
  const keyv = new Keyv({ store: new KeyvRedis(REDIS_URL), namespace, throwOnErrors: true });
  const cache = new CacheStore({ store: keyv, timeout: 5000 });
  return {
    cache,
    shortTtl: 100,
    advance: (ms) => sleep(ms),
    cleanup: async () => {
      await cache.deletePrefix('');
      await cache.disconnect();
    },
  };
}, redisSkip);

describe('redis namespaces', () => {
  it('deletePrefix("") purges only its own namespace and leaves nothing behind', async (t) => {
    const skip = redisSkip();
    if (skip !== false) return t.skip(skip);
    const a = new CacheStore({ store: new KeyvRedis(REDIS_URL), namespace: `${RUN}-a` });
    const b = new CacheStore({ store: new KeyvRedis(REDIS_URL), namespace: `${RUN}-b` });
    t.after(async () => { await b.deletePrefix(''); await a.disconnect(); await b.disconnect(); });
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

// ---------------------------------------------------------------------------
// Memory store specifics
// ---------------------------------------------------------------------------

describe('createMemoryStore', () => {
  it('evicts the least recently used entry past maxEntries', async () => {
    const store = createMemoryStore({ maxEntries: 3 });
    await store.set('a', 'A');
    await store.set('b', 'B');
    await store.set('c', 'C');
    assert.equal(await store.get('a'), 'A'); // a is now the most recent
    await store.set('d', 'D');
    assert.equal(await store.get('b'), undefined);
    assert.deepEqual(store.keys(), ['c', 'a', 'd']);
    assert.equal(store.size, 3);
  });

  it('evicts by bytes (key + value) and refuses a value larger than maxBytes', async () => {
    const store = createMemoryStore({ maxBytes: 100 });
    await store.set('a', Buffer.alloc(39)); // 40 bytes
    await store.set('b', 'x'.repeat(39)); // 40 bytes
    assert.equal(store.bytes, 80);
    await store.get('a');
    await store.set('c', Buffer.alloc(29)); // 30 bytes: 110 > 100, b (LRU) goes
    assert.deepEqual(store.keys(), ['a', 'c']);
    assert.equal(store.bytes, 70);
    assert.equal(await store.set('huge', Buffer.alloc(200)), false);
    assert.equal(await store.get('huge'), undefined);
    assert.equal(store.bytes, 70);
    await store.set('a', 'é'); // overwrite: 1 + 2 bytes
    assert.equal(store.bytes, 33);
    await store.delete('a');
    await store.clear();
    assert.equal(store.bytes, 0);
  });

  it('estimates sizes as documented', () => {
    assert.equal(estimateSize('héllo'), 6);
    assert.equal(estimateSize(Buffer.alloc(10)), 10);
    assert.equal(estimateSize(new Uint16Array(4)), 8);
    assert.equal(estimateSize({ a: 1 }), 7);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assert.equal(estimateSize(cyclic), 1024);
    assert.equal(estimateSize(() => 1), 1024);
  });

  it('bounds a CacheStore by the serialized size of entries', async () => {
    const memory = createMemoryStore({ maxBytes: 64 * 1024 });
    const cache = new CacheStore({ store: memory });
    for (let i = 0; i < 10; i++) await cache.set(`k${i}`, entry(Buffer.alloc(10_000)), 60_000);
    assert.ok(memory.bytes <= 64 * 1024, `bytes ${memory.bytes}`);
    assert.ok(memory.size < 10);
    assert.equal(await cache.get('k0'), undefined);
    assert.ok(await cache.get('k9'));
  });

  it('drops entries not used for `inactive`, whatever their TTL (nginx inactive)', async () => {
    let t = 0;
    const store = createMemoryStore({ inactive: '10s', now: () => t });
    await store.set('read', 'R', 3_600_000);
    await store.set('idle', 'I', 3_600_000);
    await store.set('forever', 'F');
    t = 9_000;
    assert.equal(await store.get('read'), 'R'); // reading refreshes
    t = 10_000;
    assert.equal(await store.get('idle'), undefined);
    assert.deepEqual(store.keys(), ['read']);
    assert.equal(store.size, 1, 'inactive entries are dropped, not just hidden');
    t = 18_999;
    assert.equal(await store.get('read'), 'R');
    t = 40_000;
    await store.set('new', 'N');
    assert.equal(store.size, 1, 'a write drops the inactive entries at the cold end');
  });

  it("defaults inactive to nginx's 10m", async () => {
    let t = 0;
    const store = createMemoryStore({ now: () => t });
    await store.set('k', 'v');
    t = 599_999;
    assert.equal(await store.has('k'), true);
    t = 600_000;
    assert.equal(await store.has('k'), false);
  });

  it('expires by TTL with the injected clock', async () => {
    let t = 0;
    const store = createMemoryStore({ now: () => t });
    await store.set('k', 'v', 500);
    t = 499;
    assert.equal(await store.get('k'), 'v');
    t = 500;
    assert.equal(await store.get('k'), undefined);
    assert.equal(store.size, 0);
  });

  it('leaves no timers or handles behind', async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length;
    const store = createMemoryStore({ inactive: '1s' });
    const cache = new CacheStore({ store });
    await cache.set('k', entry(), 60_000);
    await cache.get('k');
    await cache.deletePrefix('');
    const afterOps = process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length;
    assert.ok(afterOps <= before, `timers before ${before}, after ${afterOps}`);
  });

  it('validates options', () => {
    assert.throws(() => createMemoryStore({ maxEntries: 0 }), { code: 'SWY_ERR_INVALID_OPTION', option: 'maxEntries' });
    assert.throws(() => createMemoryStore({ maxBytes: 1.5 }), { option: 'maxBytes' });
    assert.throws(() => createMemoryStore({ inactive: 'soon' }), { option: 'inactive' });
    assert.throws(() => createMemoryStore({ inactive: 0 }), { option: 'inactive' });
    assert.throws(() => new CacheStore({ timeout: 'x' }), { option: 'timeout' });
    assert.throws(() => new CacheStore({ store: {} as never }), { option: 'store' });
    const options = Object.freeze({ maxEntries: 5 });
    createMemoryStore(options); // does not write into a frozen caller object
  });

  it('works as a plain keyv store', async () => {
    let t = 0;
    const keyv = new Keyv({ store: createMemoryStore({ now: () => t }) });
    await keyv.set('a', { x: 1 }, 1000);
    assert.deepEqual(await keyv.get('a'), { x: 1 });
    t = 1000;
    assert.equal(await keyv.get('a'), undefined);
  });
});

// ---------------------------------------------------------------------------
// Fail open
// ---------------------------------------------------------------------------

type Mode = 'ok' | 'throw' | 'reject' | 'hang' | 'garbage-string' | 'garbage-shape' | 'garbage-base64';

/** A keyv storage adapter whose behaviour can be switched, over a real memory store. */
function flakyStore() {
  const inner = createMemoryStore();
  let mode: Mode = 'ok';
  const failure = (op: string): unknown => {
    if (mode === 'throw') throw new Error(`boom ${op}`);
    if (mode === 'reject') return Promise.reject(new Error(`rejected ${op}`));
    if (mode === 'hang') return new Promise(() => {});
    return undefined;
  };
  const store = {
    opts: {},
    namespace: undefined as string | undefined,
    get(key: string) {
      const f = failure('get');
      if (f !== undefined) return f;
      if (mode === 'garbage-string') return Promise.resolve('{not json');
      if (mode === 'garbage-shape') return Promise.resolve(JSON.stringify({ value: { v: 1, status: 'two hundred' } }));
      if (mode === 'garbage-base64') return Promise.resolve(JSON.stringify({ value: { v: 1, status: 200, headers: [], body: '!!!', storedAt: 1 } }));
      return inner.get(key);
    },
    set(key: string, value: unknown, ttl?: number) {
      return failure('set') ?? inner.set(key, value, ttl);
    },
    delete(key: string) {
      return failure('delete') ?? inner.delete(key);
    },
    clear() {
      return failure('clear') ?? inner.clear();
    },
    keys() {
      if (mode === 'throw') throw new Error('boom keys');
      return inner.keys();
    },
    on() {
      return store;
    },
  };
  return { store: store as unknown as KeyvStoreAdapter, setMode: (m: Mode) => { mode = m; } };
}

describe('fail open', () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => { unhandled.push(reason); };
  before(() => process.on('unhandledRejection', onUnhandled));
  after(() => {
    process.off('unhandledRejection', onUnhandled);
  });

  for (const mode of ['throw', 'reject'] as const) {
    it(`a store that ${mode}s gives misses and storeError events, then recovers`, async () => {
      const { store, setMode } = flakyStore();
      const cache = new CacheStore({ store, timeout: 200 });
      const errors = collect(cache);
      assert.equal(await cache.set('k', entry('before'), 60_000), true);
      setMode(mode);
      assert.equal(await cache.get('k'), undefined);
      assert.equal(await cache.set('k2', entry(), 60_000), false);
      assert.equal(await cache.delete('k'), false);
      await sleep(5); // let deferred keyv 'error' forwards run: they must not duplicate
      assert.deepEqual(errors.map((e) => [e.operation, e.reason]), [['get', 'error'], ['set', 'error'], ['delete', 'error']]);
      for (const e of errors) {
        assert.ok(e instanceof CacheStoreError);
        assert.equal(e.code, 'SWY_ERR_CACHE_STORE');
        assert.match(String((e.cause as Error).message), /boom|rejected/);
      }
      assert.equal(errors[0]!.key, 'k');
      setMode('ok');
      assert.equal((await cache.get('k'))?.body.toString(), 'before', 'recovers when the store is back');
      await cache.disconnect();
    });
  }

  it('a store that hangs times out as a miss, without keeping the process alive', async () => {
    const { store, setMode } = flakyStore();
    const cache = new CacheStore({ store, timeout: '50ms' });
    const errors = collect(cache);
    setMode('hang');
    const started = Date.now();
    assert.equal(await cache.get('k'), undefined);
    assert.equal(await cache.set('k', entry(), 1000), false);
    assert.equal(await cache.delete('k'), false);
    assert.ok(Date.now() - started < 1000);
    assert.deepEqual(errors.map((e) => [e.operation, e.reason]), [['get', 'timeout'], ['set', 'timeout'], ['delete', 'timeout']]);
    setMode('ok');
    assert.equal(await cache.set('k', entry('x'), 1000), true);
    assert.equal((await cache.get('k'))?.body.toString(), 'x');
  });

  for (const mode of ['garbage-string', 'garbage-shape', 'garbage-base64'] as const) {
    it(`a store returning garbage (${mode}) gives a miss and an event`, async () => {
      const { store, setMode } = flakyStore();
      const cache = new CacheStore({ store });
      const errors = collect(cache);
      await cache.set('k', entry(), 60_000);
      setMode(mode);
      assert.equal(await cache.get('k'), undefined);
      assert.equal(errors.length, 1);
      assert.equal(errors[0]!.operation, 'get');
      assert.equal(errors[0]!.reason, mode === 'garbage-string' ? 'error' : 'invalid');
    });
  }

  it('a failing deletePrefix resolves 0 with an event', async () => {
    const { store, setMode } = flakyStore();
    const cache = new CacheStore({ store });
    const errors = collect(cache);
    await cache.set('p/1', entry(), 60_000);
    setMode('throw');
    assert.equal(await cache.deletePrefix('p/'), 0);
    assert.equal(errors[0]?.operation, 'deletePrefix');
  });

  it('with no storeError listener nothing throws or crashes', async () => {
    const { store, setMode } = flakyStore();
    const cache = new CacheStore({ store, timeout: 20 });
    for (const mode of ['throw', 'reject', 'hang', 'garbage-shape'] as const) {
      setMode(mode);
      assert.equal(await cache.get('k'), undefined);
      assert.equal(await cache.set('k', entry(), 1000), mode === 'garbage-shape');
      await cache.delete('k');
      await cache.deletePrefix('');
    }
    assert.equal(cache.listenerCount('storeError'), 0);
    await sleep(5);
  });

  it('a throwing storeError listener does not break the cache', async () => {
    const { store, setMode } = flakyStore();
    const cache = new CacheStore({ store });
    cache.on('storeError', () => { throw new Error('listener bug'); });
    setMode('reject');
    assert.equal(await cache.get('k'), undefined);
  });

  it('an unreachable Redis gives misses and events, never a crash, and lets the process exit after disconnect', async () => {
    const port = await deadPort();
    const cache = new CacheStore({ store: new KeyvRedis(`redis://127.0.0.1:${port}`), namespace: RUN, timeout: 200 });
    const errors = collect(cache);
    assert.equal(await cache.get('k'), undefined);
    assert.equal(await cache.set('k', entry(), 1000), false);
    assert.equal(await cache.delete('k'), false);
    assert.equal(await cache.deletePrefix(''), 0);
    const ops = errors.filter((e) => e.operation !== 'store').map((e) => e.operation);
    assert.deepEqual(ops, ['get', 'set', 'delete', 'deletePrefix']);
    assert.ok(errors.every((e) => e instanceof CacheStoreError && e.code === 'SWY_ERR_CACHE_STORE'));
    await cache.disconnect();
    // The client's reconnect loop must be gone: no socket or retry timer of ours keeps the loop alive.
    await sleep(300);
    const client = (cache.keyv.store as KeyvRedis<unknown>).client as { isOpen: boolean };
    assert.equal(client.isOpen, false);
  });

  it('left no unhandled rejections', async () => {
    await sleep(20);
    assert.deepEqual(unhandled, []);
  });
});
