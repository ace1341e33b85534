// cache() and sticky()'s learn mode take the same store forms, through one function (resolveStore):
// a keyv storage adapter, a Keyv instance, or switchyard's own (createMemoryStore, CacheStore), in
// memory and on Redis. Each form, for each factory, on real sockets.
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import { Keyv } from 'keyv';
import { balance, cache, CacheStore, chain, createMemoryStore, createPool, sticky, type StoreOption } from '../../src/index.ts';
import { fetchText, gateway, upstream } from '../helpers.ts';
import { redisAvailability, redisStore } from '../redis.ts';

interface Form {
  name: string;
  redis: boolean;
  make(namespace: string): StoreOption | undefined;
}

const FORMS: Form[] = [
  { name: 'no store (the bounded memory store)', redis: false, make: () => undefined },
  { name: 'createMemoryStore() as the adapter', redis: false, make: () => createMemoryStore() },
  { name: 'a Keyv instance over createMemoryStore()', redis: false, make: (namespace) => new Keyv({ store: createMemoryStore(), namespace }) },
  { name: 'a CacheStore (memory)', redis: false, make: (namespace) => new CacheStore({ namespace }) },
  { name: '@keyv/redis as the adapter', redis: true, make: () => redisStore() },
  { name: 'a Keyv instance over @keyv/redis', redis: true, make: (namespace) => new Keyv({ store: redisStore(), namespace }) },
  { name: 'a CacheStore over @keyv/redis', redis: true, make: (namespace) => new CacheStore({ store: redisStore(), namespace }) },
];

const redisSkip = redisAvailability().shared;
const RUN = `swy-forms-${randomUUID()}`;

/** Skips a Redis form when Redis is not there (a failure with REQUIRE_REDIS=1, see test/redis.ts). */
function skipped(t: TestContext, form: Form): boolean {
  const reason = form.redis ? redisSkip() : false;
  if (reason !== false) t.skip(reason);
  return reason !== false;
}

describe('cache(): every store form', () => {
  for (const form of FORMS) {
    it(`${form.name}: MISS, then HIT from the store, one upstream request`, async (t) => {
      if (skipped(t, form)) return;
      const up = await upstream(t, 'up', (_req, res) => {
        res.writeHead(200, { 'cache-control': 'max-age=60' });
        res.end('page');
      });
      const pool = createPool({ servers: [{ url: up.url }] });
      t.after(() => pool.close());
      const namespace = `${RUN}-${randomUUID().slice(0, 8)}`;
      const given = form.make(namespace);
      const mw = cache({ store: given, namespace });
      t.after(async () => {
        await mw.store.deletePrefix('');
        await mw.close();
      });
      if (given instanceof CacheStore) assert.equal(mw.store, given, 'a CacheStore is used as it is');
      const gw = await gateway(t, chain(mw, balance(pool)));
      const first = await fetchText(`${gw.url}/x`);
      assert.deepEqual([first.status, first.headers['x-cache-status'], first.body], [200, 'MISS', 'page']);
      // The entry is written once the response is over: give a remote store a moment.
      let second = await fetchText(`${gw.url}/x`);
      for (let i = 0; i < 20 && second.headers['x-cache-status'] !== 'HIT'; i++) {
        await new Promise((resolve) => setTimeout(resolve, 25));
        second = await fetchText(`${gw.url}/x`);
      }
      assert.deepEqual([second.status, second.headers['x-cache-status'], second.body], [200, 'HIT', 'page']);
      assert.equal(up.seen.length, 1);
    });
  }

  it('anything else is refused when cache() is called, naming the option', () => {
    assert.throws(() => cache({ store: {} as never }), { code: 'SWY_ERR_INVALID_OPTION', option: 'store' });
    assert.throws(() => cache({ store: { get() {} } as never }), { option: 'store' });
  });
});

/** An upstream named `name` that starts a session `sid=<value>` when asked with `?set=<value>`. */
function sessionHandler(name: string) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const set = new URL(req.url ?? '/', 'http://x').searchParams.get('set');
    if (set !== null) res.setHeader('set-cookie', `sid=${set}; Path=/`);
    res.end(name);
  };
}

describe("sticky()'s learn mode: every store form", () => {
  for (const form of FORMS) {
    it(`${form.name}: a session learned from a response is followed, and counted`, async (t) => {
      if (skipped(t, form)) return;
      const a = await upstream(t, 'a', sessionHandler('a'));
      const b = await upstream(t, 'b', sessionHandler('b'));
      const pool = createPool({
        servers: [
          { id: 'a', url: a.url },
          { id: 'b', url: b.url },
        ],
      });
      t.after(() => pool.close());
      const namespace = `${RUN}-${randomUUID().slice(0, 8)}`;
      const given = form.make(namespace);
      const st = sticky(pool, { learn: { create: { cookie: 'sid' }, lookup: { cookie: 'sid' }, store: given, namespace } });
      t.after(async () => {
        await st.store!.deletePrefix('');
        await st.close();
      });
      if (given instanceof CacheStore) assert.equal(st.store, given, 'a CacheStore is used as it is');
      const gw = await gateway(t, chain(st, balance(pool)));
      const login = await fetchText(`${gw.url}/login?set=s-${form.redis ? 'r' : 'm'}`);
      const server = login.body;
      assert.ok(server === 'a' || server === 'b');
      const cookie = { cookie: `sid=s-${form.redis ? 'r' : 'm'}` };
      // A remote store is written once the response is over: wait until the session is known.
      for (let i = 0; i < 20 && (await st.sessions(server)) === 0; i++) await new Promise((resolve) => setTimeout(resolve, 25));
      assert.equal(await st.sessions(server), 1);
      const bodies: string[] = [];
      for (let i = 0; i < 6; i++) bodies.push((await fetchText(`${gw.url}/page`, { headers: cookie })).body);
      assert.deepEqual(bodies, Array(6).fill(server), 'every request with the session goes to the server that created it');
    });
  }

  it('anything else is refused when sticky() is called, naming the option', () => {
    const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
    try {
      assert.throws(() => sticky(pool, { learn: { create: { cookie: 'sid' }, lookup: { cookie: 'sid' }, store: {} as never } }), {
        code: 'SWY_ERR_INVALID_OPTION',
        option: 'learn.store',
      });
    } finally {
      pool.close();
    }
  });
});
