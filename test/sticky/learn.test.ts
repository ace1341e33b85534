// sticky() learn mode (nginx `sticky learn`): sessions learned from upstream responses, followed on
// lookup, expiring after an idle timeout, stored hashed, shared through Redis, and failing open.
// Reference: /work/shared/reference/nginx-semantics.md section 4.4 (TST upstream_sticky_learn.t).
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import KeyvRedis from '@keyv/redis';
import {
  balance,
  chain,
  type BalanceOptions,
  createPool,
  InvalidOptionError,
  sticky,
  type CacheStoreError,
  type StickyLearnOptions,
  type StickyMiddleware,
  type StickyOptions,
  type UpstreamPool,
} from '../../src/index.ts';
import { deadPort as freePort, fetchText, gateway, poolOf, until, upstream, type Upstream } from '../helpers.ts';
import { pauseRedis, redisAvailability, redisStore, REDIS_URL, resumeRedis, startRedis, stopRedis, type RedisAdmin } from '../redis.ts';

const RUN = `swy-sticky-learn-${randomUUID()}`;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/**
 * An upstream answering with its name. Query parameters drive it:
 * `set=V` → `Set-Cookie: sid=V`, `hdr=V` → `X-Session: V`, `status=N` → status N,
 * `on=NAME` → only the upstream called NAME sets the cookie/header, `deny=NAME` → NAME answers 403.
 */
function backendHandler(name: string) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const u = new URL(req.url ?? '/', 'http://x');
    const on = u.searchParams.get('on');
    const mine = on === null || on === name;
    const set = u.searchParams.get('set');
    const hdr = u.searchParams.get('hdr');
    if (mine && set !== null) res.setHeader('set-cookie', [`other=x; Path=/`, `sid=${set}; Path=/; HttpOnly`]);
    if (mine && hdr !== null) res.setHeader('x-session', hdr);
    res.statusCode = u.searchParams.get('deny') === name ? 403 : Number(u.searchParams.get('status') ?? 200);
    res.setHeader('x-upstream', name);
    res.end(name);
  };
}

/** The two upstreams, by server id. */
type Backends = Record<'backend1' | 'backend2', Upstream>;

async function backends(t: TestContext): Promise<Backends> {
  const backend1 = await upstream(t, 'backend1', backendHandler('backend1'));
  const backend2 = await upstream(t, 'backend2', backendHandler('backend2'));
  return { backend1, backend2 };
}

interface Gw {
  url: string;
  st: StickyMiddleware;
  pool: UpstreamPool;
}

async function gatewayFor(
  t: TestContext,
  b: Backends,
  learn: StickyLearnOptions,
  extra: Omit<StickyOptions, 'learn'> = {},
  balancing: BalanceOptions = {},
): Promise<Gw> {
  const pool = poolOf(t, b);
  const st = sticky(pool, { ...extra, learn });
  t.after(() => st.close());
  const gw = await gateway(t, chain(st, balance(pool, balancing)));
  return { url: gw.url, st, pool };
}

const COOKIE_LEARN: StickyLearnOptions = { create: { cookie: 'sid' }, lookup: { cookie: 'sid' } };

/** GET `path` with an optional `sid` cookie; resolves the body (the serving upstream's name). */
async function get(base: string, path: string, sid?: string): Promise<string> {
  const r = await fetchText(`${base}${path}`, sid === undefined ? {} : { headers: { cookie: `foo=bar; sid=${sid}` } });
  assert.equal(r.status, 200, `${path} answered ${r.status}: ${r.body}`);
  return r.body;
}

async function many(base: string, n: number, sid?: string, path = '/'): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await get(base, path, sid));
  return out;
}

/** Sends cookie-less logins until `server` serves one and sets `sid=value` (only `server` sets it). */
async function learnOn(base: string, server: string, value: string): Promise<void> {
  for (let i = 0; i < 4; i++) {
    if ((await get(base, `/login?set=${encodeURIComponent(value)}&on=${server}`)) === server) return;
  }
  throw new Error(`no request reached ${server}`);
}

/** Both servers serve some of these requests: none of them is bound. */
function assertBalanced(bodies: string[], what: string): void {
  assert.deepEqual(new Set(bodies), new Set(['backend1', 'backend2']), `${what}: both servers used (${bodies.join(' ')})`);
}

/** Strict alternation: only where no bound request has shifted the round-robin weights before. */
function assertAlternates(bodies: string[], what: string): void {
  for (let i = 1; i < bodies.length; i++) assert.notEqual(bodies[i], bodies[i - 1], `${what}: round robin alternates (${bodies.join(' ')})`);
  assert.deepEqual(new Set(bodies), new Set(['backend1', 'backend2']), `${what}: both servers used (${bodies.join(' ')})`);
}

// ---------------------------------------------------------------------------
// Redis helpers (the shared ones are in test/redis.ts)
// ---------------------------------------------------------------------------

/**
 * A separate node-redis client for inspecting Redis (the sticky stores' own clients are closed by
 * st.close()); when the test ends it deletes the namespace's keys, then disconnects.
 */
async function cleanNamespace(t: TestContext, namespace: string): Promise<RedisAdmin> {
  const adapter = new KeyvRedis<unknown>(REDIS_URL);
  const client = (await adapter.getClient()) as unknown as RedisAdmin;
  t.after(async () => {
    try {
      const keys = await keysOf(client, namespace);
      if (keys.length > 0) await client.del(keys);
    } finally {
      await adapter.disconnect();
    }
  });
  return client;
}

async function keysOf(admin: RedisAdmin, namespace: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of admin.scanIterator({ MATCH: `*${namespace}*`, COUNT: 100 })) keys.push(...(Array.isArray(key) ? key : [key]));
  return keys;
}

const redis = redisAvailability();
const skipShared = redis.shared;
const skipPrivate = redis.private;

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

describe('sticky learn: TST upstream_sticky_learn.t', () => {
  it('a session created by backend1 (Set-Cookie sid=value1) sends every request with sid=value1 to backend1', async (t) => {
    const b = await backends(t);
    const gw = await gatewayFor(t, b, COOKIE_LEARN);
    await learnOn(gw.url, 'backend1', 'value1');
    assert.deepEqual(await many(gw.url, 4, 'value1'), ['backend1', 'backend1', 'backend1', 'backend1']);
    // The value is case-sensitive: another case is another (unknown) session.
    assertBalanced(await many(gw.url, 4, 'VALUE1'), 'sid=VALUE1');
  });

  it('an unknown sid is balanced (round robin alternates)', async (t) => {
    const b = await backends(t);
    const gw = await gatewayFor(t, b, COOKIE_LEARN);
    await learnOn(gw.url, 'backend1', 'value1');
    assertAlternates(await many(gw.url, 4, 'unknown'), 'sid=unknown');
    assertAlternates(await many(gw.url, 4), 'no cookie');
  });

  it('a session created by a response header (create: { header: "x-session" }) is followed', async (t) => {
    const b = await backends(t);
    const gw = await gatewayFor(t, b, { create: { header: 'x-session' }, lookup: { header: 'x-session' } });
    const served = await get(gw.url, '/start?hdr=h-one');
    const other = served === 'backend1' ? 'backend2' : 'backend1';
    const bodies: string[] = [];
    for (let i = 0; i < 4; i++) bodies.push((await fetchText(`${gw.url}/`, { headers: { 'x-session': 'h-one' } })).body);
    assert.deepEqual(bodies, [served, served, served, served]);
    // A second session created on the other server sticks there.
    let second = '';
    for (let i = 0; i < 4 && second !== other; i++) second = await get(gw.url, `/start?hdr=h-two&on=${other}`);
    assert.equal(second, other);
    for (let i = 0; i < 4; i++) assert.equal((await fetchText(`${gw.url}/`, { headers: { 'x-session': 'h-two' } })).body, other);
  });

  it("client-initiated sessions (create from the request's cookie, nginx create=$cookie_sid) bind to the first server that served them", async (t) => {
    const b = await backends(t);
    const fromRequest = (_res: IncomingMessage, ex: { req: IncomingMessage }): string | undefined =>
      /(?:^|;\s*)sid=([^;]*)/.exec(ex.req.headers.cookie ?? '')?.[1];
    const gw = await gatewayFor(t, b, { create: fromRequest, lookup: { cookie: 'sid' } });
    const first = await get(gw.url, '/', 'client-a');
    const second = await get(gw.url, '/', 'client-b');
    assert.notEqual(first, second, 'two new clients are balanced');
    assert.deepEqual(await many(gw.url, 4, 'client-a'), [first, first, first, first]);
    assert.deepEqual(await many(gw.url, 4, 'client-b'), [second, second, second, second]);
  });
});

describe('sticky learn: what creates and moves a session', () => {
  for (const status of [500, 502, 503]) {
    it(`a Set-Cookie on a ${status} response creates no session`, async (t) => {
      const b = await backends(t);
      const gw = await gatewayFor(t, b, COOKIE_LEARN);
      for (let i = 0; i < 2; i++) {
        const r = await fetchText(`${gw.url}/login?set=bad&status=${status}`);
        assert.equal(r.status, status);
      }
      assert.deepEqual(await gw.st.store!.texts(), [], 'nothing stored');
      assertAlternates(await many(gw.url, 4, 'bad'), `sid set on a ${status}`);
    });
  }

  it('a Set-Cookie on a 4xx response (status < 500) does create the session', async (t) => {
    const b = await backends(t);
    const gw = await gatewayFor(t, b, COOKIE_LEARN);
    const r = await fetchText(`${gw.url}/login?set=four&status=404`);
    assert.equal(r.status, 404);
    assert.deepEqual(await many(gw.url, 4, 'four'), [r.body, r.body, r.body, r.body]);
  });

  it('a session moves when a response from another server creates it again', async (t) => {
    const b = await backends(t);
    const gw = await gatewayFor(t, b, COOKIE_LEARN);
    await learnOn(gw.url, 'backend1', 'moving');
    assert.deepEqual(await many(gw.url, 3, 'moving'), ['backend1', 'backend1', 'backend1']);
    await learnOn(gw.url, 'backend2', 'moving');
    assert.deepEqual(await many(gw.url, 4, 'moving'), ['backend2', 'backend2', 'backend2', 'backend2']);
    assert.equal(await gw.st.sessions('backend1'), 0);
    assert.equal(await gw.st.sessions('backend2'), 1);
  });

  it('proxy_next_upstream http_403: the session moves to the server that succeeded (TST)', async (t) => {
    const b = await backends(t);
    const gw = await gatewayFor(t, b, COOKIE_LEARN, {}, { nextUpstream: ['error', 'timeout', 'http_403'] });
    await learnOn(gw.url, 'backend1', 'pnu');
    assert.deepEqual(await many(gw.url, 2, 'pnu'), ['backend1', 'backend1']);
    // Bound to backend1, which answers 403: the request moves on to backend2, whose response sets sid=pnu.
    assert.equal(await get(gw.url, '/login?set=pnu&deny=backend1', 'pnu'), 'backend2');
    assert.deepEqual(await many(gw.url, 4, 'pnu'), ['backend2', 'backend2', 'backend2', 'backend2']);
  });

  it('a bound request whose response sets the session again to the same value keeps it there', async (t) => {
    const b = await backends(t);
    const gw = await gatewayFor(t, b, COOKIE_LEARN);
    await learnOn(gw.url, 'backend2', 'same');
    // Bound to backend2, whose response re-sets the cookie: still backend2.
    assert.equal(await get(gw.url, '/login?set=same', 'same'), 'backend2');
    assert.deepEqual(await many(gw.url, 3, 'same'), ['backend2', 'backend2', 'backend2']);
  });
});

describe('sticky learn: idle timeout (fake clock)', () => {
  it('a session used within the timeout keeps sticking; one idle for longer is forgotten', async (t) => {
    const b = await backends(t);
    let clock = 1_700_000_000_000;
    const gw = await gatewayFor(t, b, { ...COOKIE_LEARN, timeout: '3s' }, { now: () => clock });
    await learnOn(gw.url, 'backend2', 'busy');
    await learnOn(gw.url, 'backend1', 'idle');

    // 'busy' is used every 2 s, so it outlives its first 3 s many times over.
    for (let step = 0; step < 4; step++) {
      clock += 2000;
      assert.deepEqual(await many(gw.url, 2, 'busy'), ['backend2', 'backend2'], `busy after ${(step + 1) * 2} s`);
    }
    // 'idle' was last used 8 s ago: forgotten, its requests are balanced.
    assertBalanced(await many(gw.url, 4, 'idle'), 'idle session after 8 s');

    // 'busy' idle for 3.5 s: forgotten as well.
    clock += 3500;
    assertBalanced(await many(gw.url, 4, 'busy'), 'busy session after 3.5 s idle');
    assert.deepEqual(await gw.st.store!.texts(), []);
  });

  it('a session idle for less than the timeout is still followed (no refresh needed)', async (t) => {
    const b = await backends(t);
    let clock = 1_700_000_000_000;
    const gw = await gatewayFor(t, b, { ...COOKIE_LEARN, timeout: '3s' }, { now: () => clock });
    await learnOn(gw.url, 'backend1', 'quiet');
    clock += 2900;
    assert.equal(await get(gw.url, '/', 'quiet'), 'backend1');
    // Learned at 0, used (and refreshed) at 2.9 s: alive at 5.8 s, gone at 6.0 s.
    clock += 2900;
    assert.equal(await get(gw.url, '/', 'quiet'), 'backend1');
    clock += 3100;
    assertBalanced(await many(gw.url, 4, 'quiet'), 'quiet after 3.1 s idle');
  });
});

describe('sticky learn: session ids are stored hashed', () => {
  it('memory store: neither keys nor values contain the session id; values are server sids', async (t) => {
    const b = await backends(t);
    const gw = await gatewayFor(t, b, COOKIE_LEARN);
    const secret = 'Secret-Session-Token-4f9a1c';
    await learnOn(gw.url, 'backend1', secret);
    assert.equal(await get(gw.url, '/', secret), 'backend1');
    const texts = await gw.st.store!.texts();
    assert.deepEqual(texts, [gw.pool.get('backend1')!.sid]);
    const memory = gw.st.store!.memory;
    assert.ok(memory !== undefined, 'the default store is the memory store');
    const keys = memory.keys();
    assert.equal(keys.length, 1);
    for (const k of keys) {
      assert.ok(!k.includes(secret), `key ${k} does not hold the session id`);
      assert.ok(!String(await memory.get(k)).includes(secret));
    }
  });

  it('Redis: SCAN of the namespace shows no key or value containing the session id', async (t) => {
    const skip = skipShared();
    if (skip) return t.skip(skip);
    const namespace = `${RUN}-hashed`;
    const redis = await cleanNamespace(t, namespace);
    const b = await backends(t);
    const gw = await gatewayFor(t, b, { ...COOKIE_LEARN, store: redisStore(), namespace, storeTimeout: '5s' });
    const secret = 'Secret-Session-Token-77e0b2';
    await learnOn(gw.url, 'backend2', secret);
    assert.ok(await until(async () => (await keysOf(redis, namespace)).length === 1, 3000), 'one key stored');
    const keys = await keysOf(redis, namespace);
    for (const k of keys) {
      assert.ok(!k.includes(secret), `key ${k} does not hold the session id`);
      const v = await redis.get(k);
      assert.ok(v !== null && !v.includes(secret), `value ${v} does not hold the session id`);
      assert.ok(v.includes(gw.pool.get('backend2')!.sid), `value ${v} names the server`);
    }
    assert.deepEqual(await gw.st.store!.texts(), [gw.pool.get('backend2')!.sid]);
    assert.deepEqual(await many(gw.url, 3, secret), ['backend2', 'backend2', 'backend2']);
  });
});

describe('sticky learn: sessions(id)', () => {
  it('counts the learned sessions naming each server, and none after the timeout', async (t) => {
    const b = await backends(t);
    let clock = 1_700_000_000_000;
    const gw = await gatewayFor(t, b, { ...COOKIE_LEARN, timeout: '3s' }, { now: () => clock });
    for (const v of ['a1', 'a2', 'a3']) await learnOn(gw.url, 'backend1', v);
    await learnOn(gw.url, 'backend2', 'b1');
    assert.equal(await gw.st.sessions('backend1'), 3);
    assert.equal(await gw.st.sessions('backend2'), 1);
    await assert.rejects(gw.st.sessions('nope'), (err: Error & { code?: string }) => err.code === 'SWY_ERR_SERVER_NOT_FOUND');
    clock += 3500;
    assert.equal(await gw.st.sessions('backend1'), 0);
    assert.equal(await gw.st.sessions('backend2'), 0);
  });

  it('accepts a server url as well as its id (documented: "id (id, url or route)")', async (t) => {
    const b = await backends(t);
    const gw = await gatewayFor(t, b, COOKIE_LEARN);
    await learnOn(gw.url, 'backend1', 'by-url');
    assert.equal(await gw.st.sessions('backend1'), 1);
    assert.equal(await gw.st.sessions(gw.pool.get('backend1')!.url), 1);
  });
});

describe('sticky learn: a session store shared through Redis', () => {
  it('a session learned through gateway A is followed by gateway B', async (t) => {
    const skip = skipShared();
    if (skip) return t.skip(skip);
    const namespace = `${RUN}-shared`;
    await cleanNamespace(t, namespace);
    const b = await backends(t);
    const learn = (): StickyLearnOptions => ({ ...COOKIE_LEARN, store: redisStore(), namespace, storeTimeout: '5s' });
    const a = await gatewayFor(t, b, learn());
    const gb = await gatewayFor(t, b, learn());
    await learnOn(a.url, 'backend2', 'shared-1');
    await learnOn(a.url, 'backend1', 'shared-2');
    assert.ok(await until(async () => (await gb.st.sessions('backend2')) === 1 && (await gb.st.sessions('backend1')) === 1, 3000), 'B sees both sessions');
    assert.deepEqual(await many(gb.url, 4, 'shared-1'), ['backend2', 'backend2', 'backend2', 'backend2']);
    assert.deepEqual(await many(gb.url, 4, 'shared-2'), ['backend1', 'backend1', 'backend1', 'backend1']);
    // And the other way round: learned through B, followed by A.
    await learnOn(gb.url, 'backend2', 'shared-3');
    assert.ok(await until(async () => (await a.st.sessions('backend2')) === 2, 3000));
    assert.deepEqual(await many(a.url, 3, 'shared-3'), ['backend2', 'backend2', 'backend2']);
  });
});

describe('sticky learn: a gateway whose Redis client is still connecting', () => {
  it('sessions learned before its first connection is up are stored, not lost, and followed', async (t) => {
    const skip = skipPrivate();
    if (skip) return t.skip(skip);
    const port = await freePort();
    const redis = await startRedis(port);
    t.after(async () => {
      resumeRedis(redis);
      await stopRedis(redis);
    });
    const b = await backends(t);
    const gw = await gatewayFor(t, b, { ...COOKIE_LEARN, store: redisStore(`redis://127.0.0.1:${port}`), namespace: `${RUN}-connecting`, storeTimeout: '5s' });
    const errors: CacheStoreError[] = [];
    gw.st.store!.on('storeError', (err) => errors.push(err));
    // Frozen, Redis takes the connection but answers nothing: the client stays connecting while
    // the first two sessions are learned (the first write opens the connection).
    pauseRedis(redis);
    await learnOn(gw.url, 'backend2', 'early-1');
    await learnOn(gw.url, 'backend1', 'early-2');
    resumeRedis(redis);
    assert.ok(await until(async () => (await gw.st.sessions('backend2')) === 1 && (await gw.st.sessions('backend1')) === 1, 5000), 'both sessions stored');
    assert.deepEqual(await many(gw.url, 3, 'early-1'), ['backend2', 'backend2', 'backend2']);
    assert.deepEqual(await many(gw.url, 3, 'early-2'), ['backend1', 'backend1', 'backend1']);
    assert.deepEqual(
      errors.map((e) => e.message),
      [],
    );
  });
});

describe('sticky learn: a Redis store that goes away', () => {
  it('requests are balanced while it is down (storeError events, no hang), and sessions are learned again when it is back', async (t) => {
    const skip = skipPrivate();
    if (skip) return t.skip(skip);
    const port = await freePort();
    let redis = await startRedis(port);
    t.after(() => stopRedis(redis));
    const b = await backends(t);
    const gw = await gatewayFor(t, b, { ...COOKIE_LEARN, store: new KeyvRedis(`redis://127.0.0.1:${port}`), namespace: `${RUN}-outage`, storeTimeout: 300 });
    const errors: CacheStoreError[] = [];
    gw.st.store!.on('storeError', (err) => errors.push(err));

    await learnOn(gw.url, 'backend1', 'before');
    assert.ok(await until(async () => (await gw.st.sessions('backend1')) === 1, 3000));
    assert.deepEqual(await many(gw.url, 3, 'before'), ['backend1', 'backend1', 'backend1']);

    await stopRedis(redis);
    const bodies: string[] = [];
    for (let i = 0; i < 4; i++) {
      const started = performance.now();
      const r = await fetchText(`${gw.url}/`, { headers: { cookie: 'sid=before' } });
      const took = performance.now() - started;
      assert.equal(r.status, 200);
      assert.ok(took < 1500, `answered in ${Math.round(took)} ms with the store down (storeTimeout 300)`);
      bodies.push(r.body);
    }
    assertBalanced(bodies, 'session requests while Redis is down');
    // Learning while down does not break the response either.
    const login = await fetchText(`${gw.url}/login?set=during`);
    assert.equal(login.status, 200);
    assert.ok(await until(async () => errors.length > 0, 2000), 'the outage is reported as storeError events');
    assert.ok(errors.every((e) => e.code === 'SWY_ERR_CACHE_STORE'));

    redis = await startRedis(port);
    let followed = false;
    for (let i = 0; i < 100 && !followed; i++) {
      const value = `after-${i}`;
      await learnOn(gw.url, 'backend2', value);
      await sleep(50);
      const got = await many(gw.url, 3, value);
      followed = got.every((s) => s === 'backend2');
      if (!followed) await sleep(50);
    }
    assert.ok(followed, 'a new session is learned and followed once Redis is back');
  });
});

describe('sticky learn: options', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  after(() => pool.close());
  const option = (name: string) => (err: unknown) => err instanceof InvalidOptionError && err.option === name;
  const bad = (learn: unknown) => () => sticky(pool, { learn: learn as StickyLearnOptions });

  it('rejects a missing or empty create / lookup', () => {
    assert.throws(bad({ lookup: { cookie: 'sid' } }), option('learn.create'));
    assert.throws(bad({ create: [], lookup: { cookie: 'sid' } }), option('learn.create'));
    assert.throws(bad({ create: { cookie: 'sid' } }), option('learn.lookup'));
    assert.throws(bad({ create: { cookie: 'sid' }, lookup: [] }), option('learn.lookup'));
  });

  it('rejects a zero timeout and bad create sources', () => {
    assert.throws(bad({ ...COOKIE_LEARN, timeout: 0 }), option('learn.timeout'));
    assert.throws(bad({ create: { cookie: 'a b' }, lookup: { cookie: 'sid' } }), option('learn.create'));
    assert.throws(bad({ create: { header: 'bad header' }, lookup: { cookie: 'sid' } }), option('learn.create'));
    assert.throws(bad({ create: [{ cookie: 'sid' }, { nope: 1 }], lookup: { cookie: 'sid' } }), option('learn.create[1].nope'));
    assert.throws(bad({ create: [{ cookie: 'sid' }, 'sid'], lookup: { cookie: 'sid' } }), option('learn.create[1]'));
    assert.throws(bad({ create: { cookie: 'sid' }, lookup: { cookie: 5 } }), option('learn.lookup.cookie'));
    // A valid configuration is accepted.
    const ok = sticky(pool, { learn: { ...COOKIE_LEARN, timeout: '1s' } });
    assert.equal(typeof ok, 'function');
    assert.ok(ok.store !== undefined);
  });
});
