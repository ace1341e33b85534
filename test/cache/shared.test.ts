// cache() with a real Redis: one cache shared by two gateway instances, and a store that goes
// away, stalls or holds garbage never breaking a response.
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { after, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import KeyvRedis from '@keyv/redis';
import { balance, cache, chain, createPool, sticky, type CacheMiddleware, type CacheStoreError } from '../../src/index.ts';
import { deadPort as freePort, fetchText, gateway, upstream } from '../helpers.ts';
import { privateRedis, redisAvailability, redisStore, settlesWithin, startRedis, stopRedis, until, type RedisAdmin } from '../redis.ts';

const RUN = `swy-test-${randomUUID()}`;

const redis = redisAvailability();
const skipShared = redis.shared;
const skipPrivate = redis.private;

/** A gateway in front of its own upstream, sharing a cache store through `store`. */
async function instance(t: Parameters<typeof upstream>[0], mw: CacheMiddleware, label: string) {
  let hits = 0;
  const up = await upstream(t, label, (_req, res) => {
    hits++;
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
    res.end(`from ${label} #${hits}`);
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t?.after(() => pool.close());
  const gw = await gateway(t, chain(mw, balance(pool)));
  return { url: gw.url, hits: () => hits };
}

describe('a cache shared through Redis', () => {
  const caches: CacheMiddleware[] = [];
  after(async () => {
    for (const c of caches) {
      await c.purge('*');
      await c.close();
    }
  });

  it('two gateway instances: one fills, the other hits, and a purge on one is seen by both', async (t) => {
    const skip = skipShared();
    if (skip) return t.skip(skip);
    const a = cache({ store: redisStore(), namespace: `${RUN}-shared`, storeTimeout: '5s' });
    const b = cache({ store: redisStore(), namespace: `${RUN}-shared`, storeTimeout: '5s' });
    caches.push(a, b);
    const one = await instance(t, a, 'one');
    const two = await instance(t, b, 'two');
    // Both gateways answer for the same host name, so they compute the same key.
    const headers = { host: 'shared.example' };
    const first = await fetchText(`${one.url}/page?x=1`, { headers });
    assert.equal(first.headers['x-cache-status'], 'MISS');
    assert.equal(first.body, 'from one #1');
    const second = await fetchText(`${two.url}/page?x=1`, { headers });
    assert.equal(second.headers['x-cache-status'], 'HIT');
    assert.equal(second.body, 'from one #1');
    assert.equal(second.headers['content-type'], 'text/plain');
    assert.equal(two.hits(), 0);
    assert.equal(b.stats().hit.responses, 1);

    assert.ok((await b.purge('http://shared.example/page?x=1')) >= 1);
    const third = await fetchText(`${one.url}/page?x=1`, { headers });
    assert.equal(third.headers['x-cache-status'], 'MISS');
    assert.equal(third.body, 'from one #2');
  });

  it('Vary variants and binary bodies survive the round trip through Redis', async (t) => {
    const skip = skipShared();
    if (skip) return t.skip(skip);
    const a = cache({ store: redisStore(), namespace: `${RUN}-vary`, storeTimeout: '5s' });
    const b = cache({ store: redisStore(), namespace: `${RUN}-vary`, storeTimeout: '5s' });
    caches.push(a, b);
    const body = Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256));
    let hits = 0;
    const up = await upstream(t, 'bin', (req, res) => {
      hits++;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'max-age=60', vary: 'X-Lang' });
      res.end(Buffer.concat([Buffer.from(String(req.headers['x-lang'] ?? '-')), body]));
    });
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const ga = await gateway(t, chain(a, balance(pool)));
    const gb = await gateway(t, chain(b, balance(pool)));
    const get = (url: string, lang: string) =>
      new Promise<{ status: string | undefined; body: Buffer }>((resolve, reject) => {
        import('node:http').then(({ request }) => {
          const req = request(`${url}/bin`, { headers: { host: 'bin.example', 'x-lang': lang }, agent: false }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve({ status: res.headers['x-cache-status'] as string | undefined, body: Buffer.concat(chunks) }));
          });
          req.on('error', reject);
          req.end();
        }, reject);
      });
    assert.equal((await get(ga.url, 'en')).status, 'MISS');
    assert.equal((await get(ga.url, 'fr')).status, 'MISS');
    const en = await get(gb.url, 'en');
    const fr = await get(gb.url, 'fr');
    assert.equal(en.status, 'HIT');
    assert.equal(fr.status, 'HIT');
    assert.deepEqual(en.body, Buffer.concat([Buffer.from('en'), body]));
    assert.deepEqual(fr.body, Buffer.concat([Buffer.from('fr'), body]));
    assert.equal(hits, 2);
  });
});

describe('a Redis store that fails', () => {
  it('goes away: responses keep coming from upstream, errors are events, and caching resumes when it is back', async (t) => {
    const skip = skipPrivate();
    if (skip) return t.skip(skip);
    const port = await freePort();
    let redis = await startRedis(port);
    t.after(() => stopRedis(redis));
    const mw = cache({ store: redisStore(`redis://127.0.0.1:${port}`), namespace: RUN, storeTimeout: 300 });
    t.after(() => mw.close());
    const errors: CacheStoreError[] = [];
    mw.store.on('storeError', (err) => errors.push(err));
    const gw = await instance(t, mw, 'fo');

    assert.equal((await fetchText(`${gw.url}/a`)).headers['x-cache-status'], 'MISS');
    assert.equal((await fetchText(`${gw.url}/a`)).headers['x-cache-status'], 'HIT');

    await stopRedis(redis);
    for (let i = 0; i < 3; i++) {
      const r = await fetchText(`${gw.url}/a`);
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-cache-status'], 'MISS');
      assert.match(r.body, /^from fo #\d+$/);
    }
    assert.ok(errors.length > 0, 'the outage is reported as storeError events');
    assert.ok(errors.every((e) => e.code === 'SWY_ERR_CACHE_STORE'));
    const hitsDuringOutage = gw.hits();
    assert.equal(hitsDuringOutage, 4);

    redis = await startRedis(port);
    // The client reconnects on its own; the cache needs nothing from us.
    let status: string | undefined;
    for (let i = 0; i < 100 && status !== 'HIT'; i++) {
      status = (await fetchText(`${gw.url}/a`)).headers['x-cache-status'] as string | undefined;
      if (status !== 'HIT') await sleep(100);
    }
    assert.equal(status, 'HIT');
  });

  it('stalls: a store slower than storeTimeout is skipped, the response comes from upstream', async (t) => {
    const skip = skipPrivate();
    if (skip) return t.skip(skip);
    const port = await freePort();
    const redis = await startRedis(port);
    t.after(() => stopRedis(redis));
    const store = redisStore(`redis://127.0.0.1:${port}`);
    const mw = cache({ store, namespace: RUN, storeTimeout: 200 });
    t.after(() => mw.close());
    const errors: CacheStoreError[] = [];
    mw.store.on('storeError', (err) => errors.push(err));
    const gw = await instance(t, mw, 'slow');
    assert.equal((await fetchText(`${gw.url}/s`)).headers['x-cache-status'], 'MISS');
    assert.equal((await fetchText(`${gw.url}/s`)).headers['x-cache-status'], 'HIT');

    const admin = (await new KeyvRedis(`redis://127.0.0.1:${port}`).getClient()) as unknown as RedisAdmin;
    await admin.sendCommand(['CLIENT', 'PAUSE', '1500', 'ALL']);
    const started = performance.now();
    const r = await fetchText(`${gw.url}/s`);
    const took = performance.now() - started;
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-cache-status'], 'MISS');
    assert.ok(took < 1200, `answered in ${Math.round(took)} ms while the store was paused for 1500 ms`);
    assert.ok(errors.some((e) => e.reason === 'timeout' && e.operation === 'get'));
    await sleep(1600);
    await admin.quit();
  });

  it('holds garbage: an entry that is not one is a miss and an event, and gets replaced', async (t) => {
    const skip = skipShared();
    if (skip) return t.skip(skip);
    const namespace = `${RUN}-garbage`;
    const store = redisStore();
    const mw = cache({ store, namespace, storeTimeout: '5s' });
    t.after(async () => {
      await mw.purge('*');
      await mw.close();
    });
    const errors: CacheStoreError[] = [];
    mw.store.on('storeError', (err) => errors.push(err));
    const gw = await instance(t, mw, 'gb');
    assert.equal((await fetchText(`${gw.url}/g`)).headers['x-cache-status'], 'MISS');

    const client = (await store.getClient()) as unknown as RedisAdmin;
    const keys: string[] = [];
    for await (const key of client.scanIterator({ MATCH: `*${namespace}*`, COUNT: 100 })) keys.push(...(Array.isArray(key) ? key : [key]));
    assert.equal(keys.length, 1);
    for (const garbage of ['{"value":{"v":1,"status":"x"}}', 'not json at all', '{"value":{"v":1,"status":200,"headers":["a"],"body":"!!"}}']) {
      await client.set(keys[0]!, garbage);
      const r = await fetchText(`${gw.url}/g`);
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-cache-status'], 'MISS');
      assert.match(r.body, /^from gb #\d+$/);
    }
    assert.ok(errors.length >= 3, `three garbage reads reported (${errors.map((e) => e.reason).join(', ')})`);
    // Each MISS stored a good entry over the garbage: the next request is a HIT.
    assert.equal((await fetchText(`${gw.url}/g`)).headers['x-cache-status'], 'HIT');
  });
});

describe('a Redis store that is down (cache() and sticky learn on it)', () => {
  /** A gateway chain(cache, sticky learn, balance) with both stores on `redisUrl`. */
  async function outageGateway(t: TestContext, redisUrl: string, extra: { storeTimeout: string | number; storeBreaker?: false }) {
    const up = await upstream(t, 'up', (req, res) => {
      const headers: Record<string, string | string[]> = { 'content-type': 'text/plain', 'cache-control': 'max-age=60' };
      // Every response of /login starts a session.
      if (req.url?.startsWith('/login')) headers['set-cookie'] = `sid=${new URL(req.url, 'http://x').searchParams.get('s')}; Path=/`;
      res.writeHead(200, headers);
      res.end('up');
    });
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    // KeyvRedis as most users create it: node-redis's offline queue is on.
    const c = cache({ store: new KeyvRedis(redisUrl), namespace: `${RUN}-c`, ...extra });
    const st = sticky(pool, {
      learn: { create: { cookie: 'sid' }, lookup: { cookie: 'sid' }, store: new KeyvRedis(redisUrl), namespace: `${RUN}-s`, ...extra },
    });
    t.after(() => c.close());
    t.after(() => st.close());
    const gw = await gateway(t, chain(c, st, balance(pool)));
    return { url: gw.url, stores: [c.store, st.store!] };
  }
  const status = async (url: string): Promise<unknown> => (await fetchText(url)).headers['x-cache-status'];

  it('requests are not held up by storeTimeout: 50 requests take far less than 50 × 2 s, and both stores come back', async (t) => {
    const skip = skipPrivate();
    if (skip) return t.skip(skip);
    const redis = await privateRedis(t);
    const gw = await outageGateway(t, redis.url, { storeTimeout: '2s' });
    const downs = gw.stores.map(() => 0);
    const ups = gw.stores.map(() => 0);
    gw.stores.forEach((s, i) => {
      s.on('storeDown', () => downs[i]!++);
      s.on('storeUp', () => ups[i]!++);
    });
    assert.equal(await status(`${gw.url}/page`), 'MISS');
    assert.ok(await until(async () => (await status(`${gw.url}/page`)) === 'HIT', 3000));

    await redis.stop();
    const started = performance.now();
    let done = 0;
    // Bounded even without a breaker: stop once the budget is spent.
    while (done < 50 && performance.now() - started < 5000) {
      const r = await fetchText(`${gw.url}/page?n=${done % 5}`, { headers: { cookie: 'sid=s1' } });
      assert.equal(r.status, 200);
      done++;
    }
    const took = performance.now() - started;
    assert.equal(done, 50, `${done} requests in ${Math.round(took)} ms with Redis down (storeTimeout 2s)`);
    assert.ok(await until(() => downs.every((n) => n === 1), 3000), `storeDown from both stores (${downs.join(', ')})`);

    await redis.start();
    assert.ok(await until(() => ups.every((n) => n === 1), 15_000), `storeUp from both stores (${ups.join(', ')})`);
    assert.equal(await status(`${gw.url}/again`), 'MISS');
    assert.ok(await until(async () => (await status(`${gw.url}/again`)) === 'HIT', 3000), 'caching resumes');
  });

  it('writes made while it is down do not appear once it is back (no offline queue replay), even without the breaker', async (t) => {
    const skip = skipPrivate();
    if (skip) return t.skip(skip);
    const redis = await privateRedis(t);
    const gw = await outageGateway(t, redis.url, { storeTimeout: 300, storeBreaker: false });
    // Both clients connected (the second request passes the cache on another URL to reach sticky()).
    await fetchText(`${gw.url}/warm`);
    await fetchText(`${gw.url}/warm-session`, { headers: { cookie: 'sid=none' } });
    const clients = gw.stores.map((s) => (s.keyv.store as KeyvRedis<unknown>).client as { isReady: boolean });
    assert.ok(await until(() => clients.every((c) => c.isReady), 3000), `connected: ${clients.map((c) => c.isReady).join(', ')}`);

    await redis.stop();
    assert.ok(await until(() => clients.every((c) => !c.isReady), 3000), 'the clients notice');
    for (let i = 0; i < 5; i++) assert.equal((await fetchText(`${gw.url}/login?s=during-${i}`)).status, 200);
    // Let every write of those responses be attempted (and time out, had it waited).
    await sleep(600);

    await redis.start();
    assert.ok(await until(() => clients.every((c) => c.isReady), 10_000), 'the clients reconnect');
    await sleep(300);
    // The restarted Redis started empty: any key in it was written during the outage and replayed.
    const admin = await redis.admin();
    const keys: string[] = [];
    for await (const key of admin.scanIterator({ MATCH: '*', COUNT: 100 })) keys.push(...(Array.isArray(key) ? key : [key]));
    assert.deepEqual(keys, []);
  });

  it('stalls (frozen, connections up): after a few timeouts it is skipped, and used again once it answers', async (t) => {
    const skip = skipPrivate();
    if (skip) return t.skip(skip);
    const redis = await privateRedis(t);
    const mw = cache({ store: redisStore(redis.url), namespace: `${RUN}-stall`, storeTimeout: 300, storeBreaker: { probeDelay: 100 } });
    t.after(() => mw.close());
    const gw = await instance(t, mw, 'stall');
    assert.equal(await status(`${gw.url}/s`), 'MISS');

    redis.pause();
    const started = performance.now();
    for (let i = 0; i < 30; i++) assert.equal((await fetchText(`${gw.url}/s`)).status, 200);
    const took = performance.now() - started;
    // Without the breaker: 30 × 300 ms at least.
    assert.ok(took < 4000, `30 requests in ${Math.round(took)} ms with the store frozen`);
    assert.notEqual(mw.store.breakerState, 'closed');

    redis.resume();
    assert.ok(await until(() => mw.store.breakerState === 'closed', 10_000), 'a probe closes the breaker');
    assert.ok(await until(async () => (await status(`${gw.url}/s`)) === 'HIT', 3000), 'caching resumes');
  });
});

describe('cache.close() with Redis unreachable', () => {
  it('settles when nothing listens on the port, with a request waiting for the connection', async (t) => {
    const port = await freePort();
    const mw = cache({ store: new KeyvRedis(`redis://127.0.0.1:${port}`), namespace: RUN, storeTimeout: '5s' });
    const gw = await instance(t, mw, 'dead');
    const pending = fetchText(`${gw.url}/d`);
    await sleep(100);
    const started = performance.now();
    assert.ok(await settlesWithin(mw.close(), 3000), 'close() settled');
    assert.ok(performance.now() - started < 3000, `closed in ${Math.round(performance.now() - started)} ms`);
    assert.equal(((mw.store.keyv.store as KeyvRedis<unknown>).client as { isOpen: boolean }).isOpen, false);
    // The request goes upstream all the same.
    assert.equal((await pending).status, 200);
  });

  it('settles within a second when Redis does not answer, and lets go of its connection', async (t) => {
    const skip = skipPrivate();
    if (skip) return t.skip(skip);
    const redis = await privateRedis(t);
    const mw = cache({ store: new KeyvRedis(redis.url), namespace: RUN, storeTimeout: '5s' });
    assert.equal(await mw.store.get('connect'), undefined);
    redis.pause();
    void mw.store.get('in flight');
    await sleep(50);
    const started = performance.now();
    assert.ok(await settlesWithin(mw.close(), 3000), 'close() settled');
    assert.ok(performance.now() - started < 3000, `closed in ${Math.round(performance.now() - started)} ms (storeTimeout 5s)`);
    redis.resume();
    // Redis, answering again, sees no connection but the admin's.
    const admin = await redis.admin();
    const connected = async (): Promise<number> =>
      String(await admin.sendCommand(['CLIENT', 'LIST']))
        .trim()
        .split('\n').length;
    assert.ok(await until(async () => (await connected()) === 1, 3000), `${await connected()} connections`);
  });
});
