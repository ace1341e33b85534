import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, it, before, after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Keyv, type KeyvStoreAdapter } from 'keyv';
import KeyvRedis from '@keyv/redis';
import {
  CacheStore,
  CacheStoreError,
  createMemoryStore,
  ENTRY_OVERHEAD,
  estimateSize,
  UNKNOWN_VALUE_SIZE,
  type CacheEntry,
} from '../../src/cache/store.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { deadPort, holdEventLoop } from '../helpers.ts';
import { redisAvailability, redisStore } from '../redis.ts';


const execFileAsync = promisify(execFile);

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
  const cache = new CacheStore({ store: redisStore(), namespace, timeout: 5000 });
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
  const keyv = new Keyv({ store: redisStore(), namespace, throwOnErrors: true });
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
    const a = new CacheStore({ store: redisStore(), namespace: `${RUN}-a` });
    const b = new CacheStore({ store: redisStore(), namespace: `${RUN}-b` });
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

  it('evicts by bytes (overhead + key + value) and refuses a value larger than maxBytes', async () => {
    const cost = (key: string, value: unknown): number => ENTRY_OVERHEAD + estimateSize(key) + estimateSize(value);
    const a = cost('a', Buffer.alloc(39));
    const b = cost('b', 'x'.repeat(39));
    const c = cost('c', Buffer.alloc(29));
    const store = createMemoryStore({ maxBytes: a + c + 10 });
    await store.set('a', Buffer.alloc(39));
    await store.set('b', 'x'.repeat(39));
    assert.equal(store.bytes, a + b);
    await store.get('a');
    await store.set('c', Buffer.alloc(29)); // over maxBytes: b (LRU) goes
    assert.deepEqual(store.keys(), ['a', 'c']);
    assert.equal(store.bytes, a + c);
    assert.equal(await store.set('huge', Buffer.alloc(a + c)), false);
    assert.equal(await store.get('huge'), undefined);
    assert.equal(store.bytes, a + c);
    await store.set('a', 'é'); // overwrite
    assert.equal(store.bytes, cost('a', 'é') + c);
    await store.delete('a');
    await store.clear();
    assert.equal(store.bytes, 0);
  });

  it('estimates sizes as documented: heap bytes of strings, objects, arrays, numbers, plus Buffer bytes', () => {
    assert.equal(estimateSize('hello'), 24, 'a 16-byte header and 5 one-byte characters, in 8-byte words');
    assert.equal(estimateSize('héllo'), 24, 'Latin-1 characters take one byte');
    assert.equal(estimateSize('日本語'), 24, 'three two-byte characters');
    assert.equal(estimateSize('x'.repeat(17)), 40);
    assert.equal(estimateSize(Buffer.alloc(10)), 220, 'a Buffer with its own ArrayBuffer');
    assert.equal(estimateSize(new Uint16Array(4)), 218);
    assert.equal(estimateSize(Buffer.from('0123456789')), 110, 'a slice of the pool: the view and its bytes');
    assert.equal(estimateSize({ a: 1 }), 32, 'one field holding a small integer');
    assert.equal(estimateSize({ a: 1.5 }), 48, 'a boxed number');
    assert.equal(estimateSize(['ab', 'ab']), 48 + 16 + 24 + 24);
    const shared = 'x'.repeat(100);
    const cyclic: Record<string, unknown> = { shared, again: shared };
    cyclic.self = cyclic;
    assert.equal(estimateSize(cyclic), 24 + 3 * 8 + 2 * 120, 'an object counted once (a string is counted where it is held)');
    assert.equal(estimateSize(() => 1), UNKNOWN_VALUE_SIZE);
    assert.equal(estimateSize(null), 0);
  });

  it('bounds a CacheStore by the estimated memory of entries', async () => {
    const memory = createMemoryStore({ maxBytes: 64 * 1024 });
    const cache = new CacheStore({ store: memory });
    for (let i = 0; i < 10; i++) await cache.set(`k${i}`, entry(Buffer.alloc(10_000)), 60_000);
    assert.ok(memory.bytes <= 64 * 1024, `bytes ${memory.bytes}`);
    assert.ok(memory.size < 10);
    assert.equal(await cache.get('k0'), undefined);
    assert.ok(await cache.get('k9'));
  });

  // maxBytes used to count keys and values by their serialized length: small entries took about
  // 3.5 times what was counted. The store's count must now be the memory measured, within 25%.
  for (const [kind, count] of [['small', 20_000], ['large', 2000], ['session', 20_000]] as const) {
    it(`counts what ${kind} entries take in memory (heap and Buffers), within 25%`, async () => {
      const probe = fileURLToPath(new URL('./heap-probe.ts', import.meta.url));
      const { stdout } = await execFileAsync(process.execPath, ['--expose-gc', probe, kind, String(count)], { timeout: 60_000 });
      const { measured, counted } = JSON.parse(stdout) as { measured: number; counted: number };
      const ratio = counted / measured;
      assert.ok(ratio > 0.75 && ratio < 1.25, `${kind}: counted ${counted.toFixed(0)} bytes per entry, measured ${measured.toFixed(0)} (ratio ${ratio.toFixed(2)})`);
    });
  }

  it('holds a body in memory of its own, not a view keeping a pool slab alive', async () => {
    const cache = new CacheStore();
    const pooled = Buffer.from('small body'); // a view of Node's shared pool
    assert.notEqual(pooled.buffer.byteLength, pooled.byteLength);
    await cache.set('k', entry(pooled), 60_000);
    const held = cache.getSync('k')!.body;
    assert.equal(held.toString(), 'small body');
    assert.equal(held.buffer.byteLength, held.byteLength);
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
  /** When each operation reached the store. */
  const calls: number[] = [];
  const failure = (op: string): unknown => {
    calls.push(performance.now());
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
  return { store: store as unknown as KeyvStoreAdapter, setMode: (m: Mode) => { mode = m; }, calls };
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
      // Without the breaker, every operation goes to the store (see 'circuit breaker' below).
      const cache = new CacheStore({ store, timeout: 200, breaker: false });
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

  it('a store that hangs times out as a miss, without keeping the process alive', async (t) => {
    holdEventLoop(t); // only the store's unref'd timeout settles the operations
    const { store, setMode } = flakyStore();
    const cache = new CacheStore({ store, timeout: '50ms', breaker: false });
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

  it('with no storeError listener nothing throws or crashes', async (t) => {
    holdEventLoop(t); // the hanging operations are settled by the store's unref'd timeout
    const { store, setMode } = flakyStore();
    const cache = new CacheStore({ store, timeout: 20, breaker: false });
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

  it('failures are published on the switchyard:store:error diagnostics channel, with the store\'s namespace', async () => {
    const { store, setMode } = flakyStore();
    const cache = new CacheStore({ store, namespace: 'diag', breaker: false });
    const messages: Array<{ store: string; operation: string; error: CacheStoreError }> = [];
    const listener = (m: unknown): void => {
      messages.push(m as (typeof messages)[number]);
    };
    subscribe('switchyard:store:error', listener);
    try {
      setMode('reject');
      assert.equal(await cache.get('k'), undefined);
    } finally {
      unsubscribe('switchyard:store:error', listener);
    }
    assert.equal(messages.length, 1);
    assert.equal(messages[0]!.store, 'diag');
    assert.equal(messages[0]!.operation, 'get');
    assert.ok(messages[0]!.error instanceof CacheStoreError);
  });

  it('a throwing storeError listener does not break the cache', async () => {
    const { store, setMode } = flakyStore();
    const cache = new CacheStore({ store });
    cache.on('storeError', () => { throw new Error('listener bug'); });
    setMode('reject');
    assert.equal(await cache.get('k'), undefined);
  });

  it('an unreachable Redis: misses and events, then the breaker skips it at once, and disconnect leaves no client running', async (t) => {
    const port = await deadPort();
    const cache = new CacheStore({ store: new KeyvRedis(`redis://127.0.0.1:${port}`), namespace: RUN, timeout: 200 });
    t.after(() => cache.disconnect());
    const errors = collect(cache);
    const down = new Promise<CacheStoreError>((resolve) => cache.once('storeDown', resolve));
    assert.equal(await cache.get('k'), undefined);
    assert.equal(await cache.set('k', entry(), 1000), false);
    const tripped = await Promise.race([down, sleep(5000).then(() => undefined)]);
    assert.ok(tripped instanceof CacheStoreError, 'storeDown once the failures add up');
    assert.equal(cache.breakerState === 'open' || cache.breakerState === 'half-open', true);
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      assert.equal(await cache.get('k'), undefined);
      assert.equal(await cache.set('k', entry(), 1000), false);
      assert.equal(await cache.delete('k'), false);
      assert.equal(await cache.deletePrefix(''), 0);
    }
    // 80 operations, each of which would have waited the 200 ms timeout.
    assert.ok(performance.now() - started < 1000, `skipped at once (${Math.round(performance.now() - started)} ms)`);
    assert.ok(errors.length > 0);
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

// ---------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------

/** Resolves with the event's arguments, or rejects after `ms`. */
function nextEvent<T extends unknown[]>(emitter: CacheStore, event: 'storeDown' | 'storeUp', ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    const on = (...args: unknown[]): void => {
      clearTimeout(timer);
      resolve(args as T);
    };
    emitter.once(event, on);
  });
}

describe('circuit breaker', () => {
  it('a store that keeps timing out is skipped at once after `failures` failures: no wait, no call, one storeDown', async (t) => {
    holdEventLoop(t); // the hanging operations are settled by the store's unref'd timeout
    const { store, setMode, calls } = flakyStore();
    const cache = new CacheStore({ store, timeout: 300, breaker: { failures: 2, probeDelay: '1h' } });
    disconnectAfter(cache);
    const errors = collect(cache);
    const downs: CacheStoreError[] = [];
    cache.on('storeDown', (err) => downs.push(err));
    setMode('hang');
    assert.equal(await cache.get('a'), undefined);
    assert.equal(cache.breakerState, 'closed');
    assert.equal(await cache.get('b'), undefined);
    assert.equal(cache.breakerState, 'open');
    assert.equal(downs.length, 1);
    assert.equal(downs[0]!.reason, 'timeout');
    const before = calls.length;
    const reported = errors.length;
    const started = performance.now();
    for (let i = 0; i < 50; i++) {
      assert.equal(await cache.get(`k${i}`), undefined);
      assert.equal(await cache.set(`k${i}`, entry(), 1000), false);
    }
    // 100 operations that would each have waited 300 ms.
    assert.ok(performance.now() - started < 2000, `${Math.round(performance.now() - started)} ms`);
    assert.equal(calls.length, before, 'nothing reaches a store marked down');
    assert.equal(errors.length, reported, 'skipped operations are not reported one by one');
    assert.equal(downs.length, 1);
  });

  it('a success resets the count: failures must come in a row', async () => {
    const { store, setMode } = flakyStore();
    const cache = new CacheStore({ store, breaker: { failures: 3 } });
    disconnectAfter(cache);
    for (let i = 0; i < 5; i++) {
      setMode('reject');
      await cache.get('k');
      await cache.get('k');
      setMode('ok');
      await cache.get('k');
    }
    assert.equal(cache.breakerState, 'closed');
  });

  it('probes one at a time in the background, waiting twice as long after each failed probe, and closes on the first success', async (t) => {
    holdEventLoop(t); // the store's timeout and the probe timers are unref'd
    const { store, setMode, calls } = flakyStore();
    const cache = new CacheStore({ store, timeout: 100, breaker: { failures: 1, probeDelay: 40, maxProbeDelay: 160 } });
    disconnectAfter(cache);
    setMode('hang');
    await cache.get('k');
    assert.equal(cache.breakerState, 'open');
    const opened = calls.length;
    await sleep(1200);
    const probes = calls.slice(opened);
    assert.ok(probes.length >= 2 && probes.length <= 8, `${probes.length} probes`);
    // Each probe waits for the previous one (a hanging probe times out after 100 ms) and then the delay.
    const gaps = probes.slice(1).map((at, i) => at - probes[i]!);
    assert.ok(gaps.every((g) => g >= 100 + 40 - 5), `gaps ${gaps.map(Math.round).join(', ')}`);
    // At most the probe's timeout and maxProbeDelay (plus its jitter), with room for a busy machine.
    assert.ok(gaps.every((g) => g <= 100 + 160 * 1.1 + 1000), `bounded backoff: gaps ${gaps.map(Math.round).join(', ')}`);
    setMode('ok');
    await nextEvent(cache, 'storeUp', 3000);
    assert.equal(cache.breakerState, 'closed');
    assert.equal(await cache.set('k', entry('back'), 1000), true);
    assert.equal((await cache.get('k'))?.body.toString(), 'back');
  });

  it('errors the store reports on its own count too (a Redis client failing to reconnect), and a throwing listener breaks nothing', async () => {
    const { store } = flakyStore();
    const cache = new CacheStore({ store, breaker: { failures: 2, probeDelay: '1h' } });
    disconnectAfter(cache);
    cache.on('storeError', () => {
      throw new Error('listener bug');
    });
    cache.on('storeDown', () => {
      throw new Error('listener bug');
    });
    const down = nextEvent(cache, 'storeDown', 2000);
    cache.keyv.emit('error', new Error('connect ECONNREFUSED'));
    cache.keyv.emit('error', new Error('connect ECONNREFUSED'));
    await down;
    assert.equal(cache.breakerState, 'open');
  });

  it('breaker: false sends every operation to the store', async () => {
    const { store, setMode, calls } = flakyStore();
    const cache = new CacheStore({ store, breaker: false });
    setMode('reject');
    for (let i = 0; i < 10; i++) await cache.get('k');
    assert.equal(calls.length, 10);
    assert.equal(cache.breakerState, 'closed');
  });

  it('disconnect stops the probes', async () => {
    const { store, setMode, calls } = flakyStore();
    const cache = new CacheStore({ store, breaker: { failures: 1, probeDelay: 20, maxProbeDelay: 20 } });
    setMode('reject');
    await cache.get('k');
    await sleep(100);
    assert.ok(calls.length > 1, 'probing');
    await cache.disconnect();
    const n = calls.length;
    await sleep(150);
    assert.equal(calls.length, n);
  });

  it('validates its options', () => {
    assert.throws(() => new CacheStore({ breaker: { failures: 0 } }), { option: 'breaker.failures' });
    assert.throws(() => new CacheStore({ breaker: { probeDelay: 0 } }), { option: 'breaker.probeDelay' });
    assert.throws(() => new CacheStore({ breaker: { probeDelay: '5s', maxProbeDelay: '1s' } }), { option: 'breaker.maxProbeDelay' });
    assert.throws(() => new CacheStore({ breaker: 'off' as never }), { option: 'breaker' });
    const big = new CacheStore({ breaker: { probeDelay: '30s' } });
    assert.equal(big.breakerState, 'closed');
  });
});

/** Disconnects a store when the current test ends (probe timers are unref'd, but tidy anyway). */
function disconnectAfter(cache: CacheStore): void {
  after(() => cache.disconnect());
}
