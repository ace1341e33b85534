// The fail-open wrapper: a store that throws, rejects, hangs or returns garbage gives misses and
// events, never an error; a store that keeps failing is skipped by the circuit breaker and probed
// in the background.
import { strict as assert } from 'node:assert';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { randomUUID } from 'node:crypto';
import { describe, it, before, after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KeyvStoreAdapter } from 'keyv';
import KeyvRedis from '@keyv/redis';
import { CacheStore, CacheStoreError, createMemoryStore } from '../../src/store/index.ts';
import { deadPort, holdEventLoop } from '../helpers.ts';
import { collect, entry } from './support.ts';

const RUN = `swy-test-${randomUUID()}`;

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
  return {
    store: store as unknown as KeyvStoreAdapter,
    setMode: (m: Mode) => {
      mode = m;
    },
    calls,
  };
}

describe('fail open', () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
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
      assert.deepEqual(
        errors.map((e) => [e.operation, e.reason]),
        [
          ['get', 'error'],
          ['set', 'error'],
          ['delete', 'error'],
        ],
      );
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
    assert.deepEqual(
      errors.map((e) => [e.operation, e.reason]),
      [
        ['get', 'timeout'],
        ['set', 'timeout'],
        ['delete', 'timeout'],
      ],
    );
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

  it("failures are published on the switchyard:store:error diagnostics channel, with the store's namespace", async () => {
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
    cache.on('storeError', () => {
      throw new Error('listener bug');
    });
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
    assert.ok(
      gaps.every((g) => g >= 100 + 40 - 5),
      `gaps ${gaps.map(Math.round).join(', ')}`,
    );
    // At most the probe's timeout and maxProbeDelay (plus its jitter), with room for a busy machine.
    assert.ok(
      gaps.every((g) => g <= 100 + 160 * 1.1 + 1000),
      `bounded backoff: gaps ${gaps.map(Math.round).join(', ')}`,
    );
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
