// The fail-open store over a @keyv/redis client, by the state of the client's connection: a client
// still making its first connection (a gateway just started) is waited for, within the store's
// timeout; a client known to be down (it was connected, or its first connection failed) is not,
// and nothing is sent to it while it reconnects.
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { describe, it, type TestContext } from 'node:test';
import { CacheStore, type CacheStoreError, type CacheStoreOptions } from '../../src/store/index.ts';
import { redisConnection } from '../../src/store/keyv.ts';
import { deadPort, holdEventLoop } from '../helpers.ts';
import { privateRedis, redisAvailability, redisStore, settlesWithin, until } from '../redis.ts';
import { collect } from './support.ts';

const RUN = `swy-connection-${randomUUID()}`;
const redis = redisAvailability();

/** A store over a new `@keyv/redis` client for `url` (offline queue off), disconnected when the test ends. */
function storeFor(
  t: TestContext,
  url: string,
  options: Omit<CacheStoreOptions, 'store'>,
): { store: CacheStore; errors: CacheStoreError[]; client: { isOpen: boolean; isReady: boolean } } {
  const adapter = redisStore(url);
  const store = new CacheStore({ store: adapter, namespace: `${RUN}-${randomUUID()}`, ...options });
  t.after(() => store.disconnect());
  const client = redisConnection(adapter);
  assert.ok(client !== undefined, 'the adapter exposes its client');
  return { store, errors: collect(store), client };
}

/** How long `promise` takes to settle, in ms, and what it resolved. */
async function timed<T>(promise: Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await promise;
  return { value, ms: performance.now() - started };
}

/**
 * A store over a private Redis that is frozen (it takes the connection but answers nothing) before
 * the store's first operation, `opener` (its result), opens the client's connection: the client
 * stays connecting until `redis.resume()`.
 */
async function connectingStore(t: TestContext, options: Omit<CacheStoreOptions, 'store'>) {
  holdEventLoop(t);
  const r = await privateRedis(t);
  r.pause();
  const opened = storeFor(t, r.url, options);
  const opener = opened.store.setText('opener', 'one', 60_000);
  assert.ok(await until(() => opened.client.isOpen, 3000), 'the first operation opens the connection');
  assert.equal(opened.client.isReady, false, 'not ready while Redis is frozen');
  return { ...opened, redis: r, opener };
}

describe("a Redis client's first connection", () => {
  it("operations issued while a new client is still connecting wait for the connection and reach Redis (a gateway's first sessions are not lost)", async (t) => {
    const skip = redis.private();
    if (skip) return t.skip(skip);
    const { store, errors, redis: r, opener: first } = await connectingStore(t, { timeout: '5s' });
    const second = store.setText('second', 'two', 60_000);
    const read = store.getText('nothing-here');
    assert.equal(await settlesWithin(second, 200), false, 'the second write waits for the connection instead of failing at once');

    r.resume();
    assert.equal(await first, true, 'the first write is stored');
    assert.equal(await second, true, 'the write issued while connecting is stored');
    assert.equal(await read, undefined);
    assert.deepEqual(
      errors.map((e) => e.message),
      [],
      'no failure reported',
    );
    assert.equal(store.breakerState, 'closed');
    assert.deepEqual((await store.texts()).sort(), ['one', 'two']);
  });

  it('the wait lasts at most the store timeout; afterwards, until the client is ready, operations fail at once', async (t) => {
    const skip = redis.private();
    if (skip) return t.skip(skip);
    const { store, errors, client, redis: r } = await connectingStore(t, { timeout: 600, breaker: false });
    const waited = await timed(store.setText('waits', 'x', 60_000));
    assert.equal(waited.value, false);
    assert.ok(waited.ms >= 500, `waited for the connection, up to the timeout (${Math.round(waited.ms)} ms)`);
    assert.ok(waited.ms < 4000, `no longer than the timeout, give or take a busy machine (${Math.round(waited.ms)} ms)`);
    assert.ok(
      errors.some((e) => e.operation === 'set' && e.reason === 'timeout'),
      'reported as a timeout',
    );

    // A first connection slower than the timeout is a store known to be down.
    const skipped = await timed(store.setText('skipped', 'x', 60_000));
    assert.equal(skipped.value, false);
    assert.ok(skipped.ms < 300, `failed at once (${Math.round(skipped.ms)} ms, timeout 600)`);
    assert.match(errors.at(-1)!.message, /not connected/);

    r.resume();
    assert.ok(await until(() => client.isReady, 5000), 'the client connects once Redis answers');
    assert.equal(await store.setText('after', 'x', 60_000), true, 'used again once connected');
  });

  it('a first connection that is refused ends the wait at once', async (t) => {
    holdEventLoop(t);
    const port = await deadPort();
    const { store, errors, client } = storeFor(t, `redis://127.0.0.1:${port}`, { timeout: '3s', breaker: false });
    void store.setText('opener', 'x', 60_000);
    assert.ok(await until(() => client.isOpen, 3000), 'the first operation opens the connection');
    const refused = await timed(store.setText('refused', 'x', 60_000));
    assert.equal(refused.value, false);
    assert.ok(refused.ms < 1500, `failed once the connection was refused, not after the 3 s timeout (${Math.round(refused.ms)} ms)`);
    assert.ok(errors.length > 0, 'reported');
  });
});

describe('a Redis client that was connected and lost its connection', () => {
  it('is a store known to be down: operations fail at once while it reconnects (nothing waits for the timeout or in its queue), and reach Redis again once it is back', async (t) => {
    const skip = redis.private();
    if (skip) return t.skip(skip);
    holdEventLoop(t);
    const r = await privateRedis(t);
    const { store, errors, client } = storeFor(t, r.url, { timeout: '5s', breaker: false });
    assert.equal(await store.setText('before', 'x', 60_000), true);
    assert.equal(client.isReady, true);

    await r.stop();
    assert.ok(await until(() => !client.isReady, 3000), 'the client notices');
    const ops: Array<() => Promise<unknown>> = [() => store.setText('during', 'x', 60_000), () => store.getText('before'), () => store.texts()];
    for (const op of ops) {
      const { value, ms } = await timed(op());
      assert.ok(value === false || value === undefined || (Array.isArray(value) && value.length === 0), `a failure answer (${String(value)})`);
      assert.ok(ms < 1000, `at once, not after the 5 s timeout (${Math.round(ms)} ms)`);
    }
    assert.ok(
      errors.some((e) => /not connected/.test(e.message)),
      'reported as not connected',
    );

    await r.start();
    assert.ok(await until(() => client.isReady, 10_000), 'the client reconnects');
    assert.equal(await store.setText('after', 'x', 60_000), true);
    // The restarted Redis started empty: the write made while it was down was not replayed.
    assert.deepEqual(await store.texts(), ['x']);
    assert.equal(await store.getText('during'), undefined);
  });
});
