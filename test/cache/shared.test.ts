// cache() with a real Redis: one cache shared by two gateway instances, and a store that goes
// away, stalls or holds garbage never breaking a response.
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import KeyvRedis from '@keyv/redis';
import { balance, cache, chain, createPool, type CacheMiddleware, type CacheStoreError } from '../../src/index.ts';
import { deadPort as freePort, fetchText, gateway, upstream } from '../helpers.ts';
import { redisAvailability, REDIS_URL, startRedis, stopRedis, type RedisAdmin } from '../redis.ts';

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
    const a = cache({ store: new KeyvRedis(REDIS_URL), namespace: `${RUN}-shared`, storeTimeout: '5s' });
    const b = cache({ store: new KeyvRedis(REDIS_URL), namespace: `${RUN}-shared`, storeTimeout: '5s' });
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
    const a = cache({ store: new KeyvRedis(REDIS_URL), namespace: `${RUN}-vary`, storeTimeout: '5s' });
    const b = cache({ store: new KeyvRedis(REDIS_URL), namespace: `${RUN}-vary`, storeTimeout: '5s' });
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
    const mw = cache({ store: new KeyvRedis(`redis://127.0.0.1:${port}`), namespace: RUN, storeTimeout: 300 });
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
    const store = new KeyvRedis(`redis://127.0.0.1:${port}`);
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
    const store = new KeyvRedis(REDIS_URL);
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
