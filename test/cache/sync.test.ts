// cache() across instances (issue 14), over the in-memory engine: several cache() instances, each
// with its own memory store and its own sync handle, in front of one real upstream that counts its
// requests. lock / updating / background updates: one fill per key in the cluster; minUses: one
// shared count; purge: reaches every memory store and wins against fills that began before it;
// the engine away: every instance alone at once, nothing waits.
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { test, type TestContext } from 'node:test';
import { balance, CacheStore, cache, chain, type CacheMiddleware, type CacheOptions, InvalidOptionError } from '../../src/index.ts';
import { SyncHandle, syncInternals } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { clock, fetchText, gateway, poolOf, until, upstream, type Reply, type Upstream } from '../helpers.ts';

/** Every instance answers for this host, so every instance computes the same keys. */
const HOST = 'hot.example';
const headers = { host: HOST };

/** An upstream that counts its requests and holds every answer until `open()` (open from the start unless `gated`). */
async function counting(t: TestContext, answer: (n: number, req: IncomingMessage, res: ServerResponse) => void = ok) {
  let gate: Promise<void> = Promise.resolve();
  let open = (): void => {};
  const up: Upstream = await upstream(t, 'origin', (req, res) => {
    const n = up.seen.length;
    void gate.then(() => answer(n, req, res));
  });
  return {
    up,
    fills: (): number => up.seen.length,
    /** From now on answers wait for `open()`. */
    hold(): void {
      gate = new Promise((resolve) => (open = resolve));
    },
    open: (): void => open(),
  };
}

function ok(n: number, _req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
  res.end(`fill #${n}`);
}

interface Instance {
  url: string;
  cache: CacheMiddleware;
  handle: SyncHandle;
  /** Requests that reached this instance's cache. */
  arrived: () => number;
}

/** `n` gateways, each a cache() with its own memory store (and its own sync handle on `hub`, unless `hub` is undefined) before balance(). */
async function instances(t: TestContext, hub: MemoryHub | undefined, n: number, upstreamUrl: string, options: CacheOptions): Promise<Instance[]> {
  const out: Instance[] = [];
  for (let i = 0; i < n; i++) {
    const handle = new SyncHandle({ transport: (hub ?? new MemoryHub()).connect(), owned: false, namespace: 't', instance: `i${i}` });
    const c = cache({ name: 'pages', ...options, ...(hub === undefined ? {} : { sync: handle }) });
    t.after(async () => {
      await c.close();
      await handle.close();
    });
    let arrived = 0;
    const count = (_req: IncomingMessage, _res: ServerResponse, next: (err?: unknown) => void): void => {
      arrived++;
      next();
    };
    const gw = await gateway(t, chain(count, c, balance(poolOf(t, [upstreamUrl]))));
    out.push({ url: gw.url, cache: c, handle, arrived: () => arrived });
  }
  return out;
}

const get = (i: Instance, path: string): Promise<Reply> => fetchText(`${i.url}${path}`, { headers });
const status = (r: Reply): string => `${r.headers['x-cache-status']} ${r.body}`;
const tick = (ms = 20): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A request for `path` on `a` upstream (held) and one on `b` waiting for it: their replies to come. */
async function waitingOnAnother(origin: Awaited<ReturnType<typeof counting>>, a: Instance, b: Instance, path: string) {
  origin.hold();
  const first = get(a, path);
  await until(() => origin.fills() === 1, 2000, 'the fill on a upstream');
  const second = get(b, path);
  await until(() => b.arrived() === 1, 2000, 'the request on b at its cache');
  await tick();
  assert.equal(origin.fills(), 1, 'b waits for the fill on a');
  return { first, second };
}

/**
 * `perInstance` concurrent requests for one hot key on each instance while the upstream holds its
 * answer until every request has reached its cache; resolves the upstream's fills and the replies.
 */
async function hotKey(t: TestContext, hub: MemoryHub | undefined, n: number, perInstance: number, options: CacheOptions, down = false) {
  const origin = await counting(t);
  const gws = await instances(t, hub, n, origin.up.url, { valid: '1m', lock: true, ...options });
  if (down) hub?.down();
  origin.hold();
  const replies = gws.flatMap((g) => Array.from({ length: perInstance }, () => get(g, '/hot')));
  await until(() => gws.every((g) => g.arrived() === perInstance) && origin.fills() >= 1, 5000, 'every request at its cache');
  // The locks are asked for in the engine within microtasks: let them all be answered first.
  await tick();
  origin.open();
  const answered = await Promise.all(replies);
  return { fills: origin.fills(), replies: answered };
}

test('lock across instances: 4 instances × 10 concurrent requests for one hot key → 1 upstream fill, served everywhere', async (t) => {
  const { fills, replies } = await hotKey(t, new MemoryHub(), 4, 10, {});
  assert.equal(fills, 1);
  assert.ok(
    replies.every((r) => r.status === 200 && r.body === 'fill #1'),
    replies.map(status).join(', '),
  );
  assert.equal(replies.filter((r) => r.headers['x-cache-status'] === 'MISS').length, 1);
  t.diagnostic(`fills per hot key, 4 instances × 10 requests, sync on: ${fills}`);
});

test('without sync the same load fills once per instance (the lock is per process)', async (t) => {
  const { fills, replies } = await hotKey(t, undefined, 4, 10, {});
  assert.equal(fills, 4);
  assert.ok(replies.every((r) => r.status === 200));
  t.diagnostic(`fills per hot key, 4 instances × 10 requests, sync off: ${fills}`);
});

test('a shared store (not in memory): one fill for the hot key, read from the store by the instances that waited; a fill in flight when another instance purges is not stored', async (t) => {
  const store = new CacheStore({ store: new Map() });
  const { fills, replies } = await hotKey(t, new MemoryHub(), 3, 5, { store });
  assert.equal(fills, 1);
  assert.ok(
    replies.every((r) => r.status === 200 && r.body === 'fill #1'),
    replies.map(status).join(', '),
  );
  const origin = await counting(t);
  const [a, b] = await instances(t, new MemoryHub(), 2, origin.up.url, { valid: '1m', store });
  origin.hold();
  const slow = get(b!, '/shared-slow');
  await until(() => origin.fills() === 1, 2000, 'the fill upstream');
  await a!.cache.purge(`http://${HOST}/shared-slow`);
  origin.open();
  assert.equal(status(await slow), 'MISS fill #1');
  await tick(50);
  assert.equal(await store.get(`http://${HOST}/shared-slow`), undefined);
});

test('a fill that ends without storing gives the lock back: a waiting instance goes upstream at once, not after lockTimeout', async (t) => {
  const origin = await counting(t, (n, _req, res) => {
    res.writeHead(200, { 'cache-control': n === 1 ? 'no-store' : 'max-age=60' });
    res.end(`fill #${n}`);
  });
  const [a, b] = await instances(t, new MemoryHub(), 2, origin.up.url, { valid: '1m', lock: true, lockTimeout: '5s', lockAge: '5s' });
  const { first, second } = await waitingOnAnother(origin, a!, b!, '/uncacheable');
  const opened = performance.now();
  origin.open();
  assert.equal((await first).body, 'fill #1');
  const r = await second;
  assert.equal(status(r), 'MISS fill #2');
  assert.ok(performance.now() - opened < 2000, 'b went upstream when a gave the lock back');
});

test('updating and background updates across instances: one update per key in the cluster, the others answer UPDATING', async (t) => {
  const c = clock();
  const origin = await counting(t);
  const options: CacheOptions = { valid: '1s', lock: true, useStale: ['updating'], backgroundUpdate: true, now: c.now };
  const gws = await instances(t, new MemoryHub(), 3, origin.up.url, options);
  assert.equal(status(await get(gws[0]!, '/news')), 'MISS fill #1');
  // The entry reaches the other instances' memory stores.
  await until(async () => (await get(gws[2]!, '/news')).headers['x-cache-status'] === 'HIT', 2000, 'the entry on the third instance');
  assert.equal(status(await get(gws[1]!, '/news')), 'HIT fill #1');
  // The upstream's max-age=60 beats `valid`.
  c.advance(61_000);
  origin.hold();
  const first = await get(gws[0]!, '/news');
  assert.equal(status(first), 'STALE fill #1');
  await until(() => origin.fills() === 2, 2000, 'the background update upstream');
  const others = await Promise.all([get(gws[1]!, '/news'), get(gws[2]!, '/news'), get(gws[0]!, '/news')]);
  assert.deepEqual(others.map(status), ['UPDATING fill #1', 'UPDATING fill #1', 'UPDATING fill #1']);
  origin.open();
  await until(async () => (await get(gws[1]!, '/news')).body === 'fill #2', 2000, 'the update on the second instance');
  assert.equal(status(await get(gws[2]!, '/news')), 'HIT fill #2');
  assert.equal(origin.fills(), 2);
});

test('minUses counts across instances: 3 instances seeing one request each → stored on the third', async (t) => {
  const origin = await counting(t);
  const [a, b, c] = await instances(t, new MemoryHub(), 3, origin.up.url, { valid: '1m', minUses: 3 });
  assert.equal(status(await get(a!, '/popular')), 'MISS fill #1');
  assert.equal(status(await get(b!, '/popular')), 'MISS fill #2');
  assert.equal(status(await get(c!, '/popular')), 'MISS fill #3');
  await until(() => c!.cache.stats().miss.responsesWritten === 1, 2000, 'the third response stored');
  assert.equal(a!.cache.stats().miss.responsesWritten + b!.cache.stats().miss.responsesWritten, 0);
  await until(async () => (await get(a!, '/popular')).headers['x-cache-status'] === 'HIT', 2000, 'a HIT on the first instance');
  assert.equal(status(await get(c!, '/popular')), 'HIT fill #3');
  assert.equal(origin.fills(), 3);
});

test('a purge on one instance reaches the others: their memory stores stop serving the entry', async (t) => {
  const origin = await counting(t);
  const [a, b] = await instances(t, new MemoryHub(), 2, origin.up.url, { valid: '1m' });
  assert.equal(status(await get(b!, '/page')), 'MISS fill #1');
  await until(async () => (await get(a!, '/page')).headers['x-cache-status'] === 'HIT', 2000, 'the entry on a');
  assert.equal(status(await get(b!, '/page')), 'HIT fill #1');
  assert.equal(await a!.cache.purge(`http://${HOST}/page`), 1);
  await until(() => b!.cache.store.getSync(`http://${HOST}/page`) === undefined, 2000, 'the entry gone from b');
  assert.equal(status(await get(b!, '/page')), 'MISS fill #2');
  // A prefix purge too.
  await until(async () => (await get(a!, '/page')).headers['x-cache-status'] === 'HIT', 2000, 'the new entry on a');
  await b!.cache.purge(`http://${HOST}/pa*`);
  await until(() => a!.cache.store.getSync(`http://${HOST}/page`) === undefined, 2000, 'the entry gone from a');
});

test('a fill in flight on one instance when another purges is not stored, there or anywhere', async (t) => {
  const origin = await counting(t);
  const [a, b] = await instances(t, new MemoryHub(), 2, origin.up.url, { valid: '1m' });
  origin.hold();
  const slow = get(b!, '/slow');
  await until(() => origin.fills() === 1, 2000, 'the fill upstream');
  await a!.cache.purge(`http://${HOST}/slow`);
  origin.open();
  assert.equal(status(await slow), 'MISS fill #1');
  await tick(50);
  assert.equal(b!.cache.stats().miss.responsesWritten, 0);
  assert.equal(status(await get(b!, '/slow')), 'MISS fill #2');
  // Without a purge the same fill is stored (what the test above depends on).
  await until(() => b!.cache.stats().miss.responsesWritten === 1, 2000, 'the second fill stored');
  assert.equal(status(await get(b!, '/slow')), 'HIT fill #2');
});

test('a fill stored before its instance heard of a purge is not taken by instances that heard the purge first', async (t) => {
  const hub = new MemoryHub();
  const origin = await counting(t);
  const [a, b, c] = await instances(t, hub, 3, origin.up.url, { valid: '1m' });
  origin.hold();
  const slow = get(b!, '/race');
  await until(() => origin.fills() === 1, 2000, 'the fill upstream');
  // The purge's message is late: b stores its fill before it hears of it, and its fill's message comes after the purge's.
  hub.hold();
  await a!.cache.purge(`http://${HOST}/race`);
  origin.open();
  assert.equal(status(await slow), 'MISS fill #1');
  await until(() => b!.cache.stats().miss.responsesWritten === 1, 2000, 'b stored its fill');
  await tick();
  hub.release();
  await tick();
  for (const g of [a!, b!, c!]) assert.equal(g.cache.store.getSync(`http://${HOST}/race`), undefined);
});

test('the engine down: every instance locks for itself at once, nothing waits for it', async (t) => {
  const started = performance.now();
  const { fills, replies } = await hotKey(t, new MemoryHub(), 3, 5, { lockTimeout: '5s' }, true);
  assert.equal(fills, 3);
  assert.ok(replies.every((r) => r.status === 200));
  assert.ok(performance.now() - started < 4000, 'no request waited for the lock timeout');
});

test('the engine lost while an instance waits for a fill elsewhere: it goes upstream itself at once', async (t) => {
  const hub = new MemoryHub();
  const origin = await counting(t);
  const [a, b] = await instances(t, hub, 2, origin.up.url, { valid: '1m', lock: true, lockTimeout: '5s', lockAge: '5s' });
  const { first, second } = await waitingOnAnother(origin, a!, b!, '/x');
  hub.down();
  await until(() => origin.fills() === 2, 1000, 'b upstream on its own');
  origin.open();
  assert.equal((await first).status, 200);
  assert.equal((await second).status, 200);
});

test('cache statistics are on the board as cache:<name>', async (t) => {
  const origin = await counting(t);
  const [a] = await instances(t, new MemoryHub(), 1, origin.up.url, { valid: '1m' });
  await get(a!, '/s');
  await get(a!, '/s');
  const report = syncInternals(a!.handle).board.reports().get('i0');
  assert.deepEqual(report?.sections['cache:pages'], a!.cache.stats());
  assert.equal(a!.cache.stats().hit.responses, 1);
  await a!.cache.close();
  assert.equal(syncInternals(a!.handle).board.reports().get('i0')?.sections['cache:pages'], undefined);
});

test('sync takes a handle from sync(); a misspelled key is refused naming it', () => {
  assert.throws(
    () => cache({ sync: { redis: 'redis://127.0.0.1:6379' } as never }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'sync',
  );
  const handle = new SyncHandle({ transport: new MemoryHub().connect(), owned: false, namespace: 't' });
  assert.throws(() => cache({ snyc: handle } as never), /sync/);
  const c = cache({ sync: handle });
  void c.close();
  void handle.close();
});
