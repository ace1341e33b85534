// The bounded memory store: LRU eviction by entries and by the memory entries take, nginx's
// inactive, TTLs on an injected clock, and its use as a plain keyv store.
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Keyv } from 'keyv';
import { CacheStore, createMemoryStore, ENTRY_OVERHEAD, estimateSize, UNKNOWN_VALUE_SIZE } from '../../src/store/index.ts';
import { entry } from './support.ts';

const execFileAsync = promisify(execFile);

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
    assert.equal(
      estimateSize(() => 1),
      UNKNOWN_VALUE_SIZE,
    );
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
  for (const [kind, count] of [
    ['small', 20_000],
    ['large', 2000],
    ['session', 20_000],
  ] as const) {
    it(`counts what ${kind} entries take in memory (heap and Buffers), within 25%`, async () => {
      const probe = fileURLToPath(new URL('./heap-probe.ts', import.meta.url));
      const { stdout } = await execFileAsync(process.execPath, ['--expose-gc', probe, kind, String(count)], { timeout: 60_000 });
      const { measured, counted } = JSON.parse(stdout) as { measured: number; counted: number };
      const ratio = counted / measured;
      assert.ok(
        ratio > 0.75 && ratio < 1.25,
        `${kind}: counted ${counted.toFixed(0)} bytes per entry, measured ${measured.toFixed(0)} (ratio ${ratio.toFixed(2)})`,
      );
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
