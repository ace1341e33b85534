// The transport contract: what the sync logic relies on from any Transport, as a runner each engine's
// test file calls with a way to make clients of that engine and to take the engine down and up
// (transport-contract.test.ts: memory and a standalone Redis; redis-cluster.test.ts: Redis Cluster and
// Sentinel). `relay` puts a TCP relay between one client and a server, so one instance alone can lose
// the engine while the others keep it.
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { createServer, connect, type Socket } from 'node:net';
import { describe, it, before, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Transport, VersionedEntry } from '../../src/sync/transport.ts';
import { settlesWithin, until } from '../redis.ts';

export interface Engine {
  /** A new connected client of the engine. */
  client(): Promise<Transport>;
  /** The engine goes away; `how` is a crash (killed) or a freeze (SIGSTOP, Redis only). */
  down(how: 'kill' | 'freeze'): Promise<void>;
  /** The engine returns (empty after a kill, as a restarted Redis without persistence). */
  up(): Promise<void>;
  /** Whether `down('freeze')` keeps connections up (so operations reject by timeout, not at once). */
  freezeKeepsConnections: boolean;
  /** `client` alone loses the engine (the other clients keep it), until {@link Engine.mend}. */
  cut(client: Transport): Promise<void>;
  mend(client: Transport): Promise<void>;
  /** Waits for subscriptions just made to reach the engine (a SUBSCRIBE round trip on Redis). */
  settle(): Promise<void>;
}

export const entry = (key: string, version: number, origin = 'a', value = '{}'): VersionedEntry => ({ key, version, origin, value });
const byKey = (entries: VersionedEntry[]): VersionedEntry[] => [...entries].sort((x, y) => x.key.localeCompare(y.key));

export function transportContract(name: string, create: (t: TestContext) => Promise<Engine>, skip: () => string | false): void {
  describe(`transport contract: ${name}`, () => {
    const opts = { skip: false as string | false };
    before(() => {
      opts.skip = skip();
    });
    const test = (title: string, fn: (e: Engine, scope: string) => Promise<void>): void => {
      it(title, async (t) => {
        if (opts.skip !== false) return t.skip(opts.skip);
        await fn(await create(t), `scope-${randomUUID()}`);
      });
    };

    test('versions rise per scope and always exceed the floor', async (e, scope) => {
      const a = await e.client();
      const v1 = await a.version(scope, 0);
      const v2 = await a.version(scope, 0);
      assert.ok(v2 > v1 && v1 >= 1);
      assert.equal(await a.version(scope, 100), 101);
      assert.equal(await a.version(scope, 5), 102);
      assert.equal(await a.version(`${scope}-other`, 0), 1);
    });

    test('put stores and publishes to every subscriber; an older or equal version is refused', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const got: VersionedEntry[] = [];
      const stop = b.subscribe(scope, (x) => got.push(x));
      const mine: VersionedEntry[] = [];
      a.subscribe(scope, (x) => mine.push(x));
      await e.settle();
      assert.equal(await a.put(scope, entry('s1', 5, 'a', '{"w":1}')), true);
      await until(() => got.length === 1 && mine.length === 1, 5000, 'delivery');
      assert.deepEqual(got[0], entry('s1', 5, 'a', '{"w":1}'));
      assert.equal(await a.put(scope, entry('s1', 4, 'b', '{"w":2}')), false);
      assert.equal(await a.put(scope, entry('s1', 5, 'b', '{"w":3}')), false);
      assert.deepEqual(await b.snapshot(scope), [entry('s1', 5, 'a', '{"w":1}')]);
      stop();
      assert.equal(await a.put(scope, entry('s1', 6)), true);
      await until(() => mine.length === 2, 5000, 'own echo');
      await sleep(50);
      assert.equal(got.length, 1, 'an unsubscribed handler hears nothing');
    });

    test('ordering via versions: whatever order puts arrive in, the highest version is what stays', async (e, scope) => {
      const a = await e.client();
      const versions = [await a.version(scope, 0), await a.version(scope, 0), await a.version(scope, 0)];
      for (const v of [versions[2], versions[0], versions[1]] as number[]) await a.put(scope, entry('k', v, String(v)));
      assert.deepEqual(await a.snapshot(scope), [entry('k', versions[2] as number, String(versions[2]))]);
    });

    test('snapshot returns every entry, and after the engine returns the client reconnects by itself, its subscriptions and listeners too', async (e, scope) => {
      const a = await e.client();
      const seen: boolean[] = [];
      a.onConnection((up) => seen.push(up));
      // a subscription and a listener made before the outage
      const got: VersionedEntry[] = [];
      a.subscribe(scope, (x) => got.push(x));
      const heard: string[] = [];
      a.listen(`ch-${scope}`, (m) => heard.push(m));
      await e.settle();
      await a.put(scope, entry('x', 1));
      await a.put(scope, entry('y', 2, 'b', '{"removed":true}'));
      assert.deepEqual(byKey(await a.snapshot(scope)), [entry('x', 1), entry('y', 2, 'b', '{"removed":true}')]);
      await e.down('kill');
      await until(() => !a.connected, 5000, 'disconnect seen');
      await assert.rejects(a.snapshot(scope));
      await e.up();
      await until(() => a.connected, 10_000, 'reconnect');
      assert.deepEqual(seen.slice(0, 2), [false, true]);
      assert.deepEqual(await a.snapshot(scope), [], 'the engine came back empty');
      got.length = 0;
      await a.put(scope, entry('z', 3));
      assert.deepEqual(await a.snapshot(scope), [entry('z', 3)]);
      // the subscription and the listener made before the outage still deliver
      await until(() => got.length === 1, 5000, 'delivery after reconnect');
      assert.deepEqual(got, [entry('z', 3)]);
      await a.broadcast(`ch-${scope}`, 'after');
      await until(() => heard.length === 1, 5000, 'broadcast after reconnect');
      assert.deepEqual(heard, ['after']);
    });

    test('lease exclusivity, renewal by the holder only, release, and takeover after expiry', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const key = `lease-${scope}`;
      assert.equal(await a.acquire(key, 'A', 300), true);
      assert.equal(await a.acquire(key, 'A', 300), true, 'the holder may acquire again');
      assert.equal(await b.acquire(key, 'B', 300), false);
      assert.equal(await b.renew(key, 'B', 300), false);
      assert.equal(await a.renew(key, 'A', 300), true);
      await b.release(key, 'B'); // not B's: nothing happens
      assert.equal(await b.acquire(key, 'B', 300), false);
      await a.release(key, 'A');
      assert.equal(await b.acquire(key, 'B', 300), true);
      // B stops renewing: A takes over once the 300 ms have passed, not before
      assert.equal(await a.acquire(key, 'A', 300), false);
      await until(async () => a.acquire(key, 'A', 300), 5000, 'takeover', 50);
      assert.equal(await b.renew(key, 'B', 300), false, 'the old holder cannot renew');
    });

    test('every operation rejects while the engine is killed, and nothing is replayed after', async (e, scope) => {
      const a = await e.client();
      await e.down('kill');
      await until(() => !a.connected, 5000, 'disconnect seen');
      const ops: Array<() => Promise<unknown>> = [
        () => a.version(scope, 0),
        () => a.put(scope, entry('k', 1)),
        () => a.snapshot(scope),
        () => a.acquire('l', 'A', 300),
        () => a.renew('l', 'A', 300),
        () => a.release('l', 'A'),
        () => a.broadcast(scope, 'lost'),
        () => a.increment(`c-${scope}`, 1, 60_000),
        () => a.remove(`c-${scope}`),
      ];
      for (const op of ops) {
        const p = op();
        assert.equal(await settlesWithin(p, 200), true, 'rejects at once');
        await assert.rejects(p);
      }
      await e.up();
      await until(() => a.connected, 10_000, 'reconnect');
      assert.deepEqual(await a.snapshot(scope), [], 'the put made while down was not replayed');
      assert.equal(await a.increment(`c-${scope}`, 1, 60_000), 1, 'nor the increment');
    });

    test('every operation rejects while the engine is frozen, and works again once it thaws', async (e, scope) => {
      const a = await e.client();
      await e.down('freeze');
      const ops: Array<() => Promise<unknown>> = [
        () => a.version(scope, 0),
        () => a.put(scope, entry('k', 1)),
        () => a.snapshot(scope),
        () => a.acquire('l', 'A', 300),
        () => a.broadcast(scope, 'lost'),
        () => a.increment(`c-${scope}`, 1, 60_000),
        () => a.remove(`c-${scope}`),
      ];
      const results = ops.map((op) => op());
      for (const p of results) {
        assert.equal(await settlesWithin(p, 5000), true, 'rejects, bounded by the command timeout');
        await assert.rejects(p);
      }
      await e.up();
      await until(() => a.connected, 10_000, 'reconnect');
      await until(
        async () =>
          a.version(scope, 0).then(
            () => true,
            () => false,
          ),
        10_000,
        'commands work again',
        100,
      );
    });

    test('broadcast reaches every listener of the channel, the sender included, in order; a stopped listener hears nothing', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const channel = `ch-${scope}`;
      const heardA: string[] = [];
      const heardB: string[] = [];
      const heardB2: string[] = [];
      const other: string[] = [];
      a.listen(channel, (m) => heardA.push(m));
      const stop = b.listen(channel, (m) => heardB.push(m));
      b.listen(channel, (m) => heardB2.push(m));
      a.listen(`${channel}-other`, (m) => other.push(m));
      await e.settle();
      assert.equal(await a.broadcast(channel, 'one'), undefined);
      await until(() => heardA.length === 1 && heardB.length === 1 && heardB2.length === 1, 5000, 'delivery to every listener');
      assert.deepEqual([heardA, heardB, heardB2], [['one'], ['one'], ['one']]);
      stop();
      for (let i = 0; i < 10; i++) await b.broadcast(channel, `m${i}`);
      const sent = Array.from({ length: 10 }, (_, i) => `m${i}`);
      await until(() => heardA.length === 11 && heardB2.length === 11, 5000, 'delivery of ten more');
      assert.deepEqual(heardA, ['one', ...sent], 'in the order sent');
      assert.deepEqual(heardB2, ['one', ...sent]);
      await sleep(50);
      assert.deepEqual(heardB, ['one'], 'a stopped listener hears nothing');
      assert.deepEqual(other, [], 'another channel hears nothing');
      // nothing is stored: a listener that starts now hears only what follows
      const late: string[] = [];
      b.listen(channel, (m) => late.push(m));
      await e.settle();
      await a.broadcast(channel, 'later');
      await until(() => late.length === 1, 5000, 'the late listener');
      assert.deepEqual(late, ['later']);
    });

    test('a channel and a scope of the same name are apart: a put reaches no listener, a broadcast no subscriber', async (e, scope) => {
      const a = await e.client();
      const entries: VersionedEntry[] = [];
      const messages: string[] = [];
      a.subscribe(scope, (x) => entries.push(x));
      a.listen(scope, (m) => messages.push(m));
      await e.settle();
      await a.broadcast(scope, JSON.stringify({ key: 'k', version: 9, origin: 'a', value: '{}' }));
      await a.put(scope, entry('k', 1));
      await until(() => entries.length === 1 && messages.length === 1, 5000, 'both deliveries');
      await sleep(50);
      assert.deepEqual(entries, [entry('k', 1)]);
      assert.deepEqual(messages, ['{"key":"k","version":9,"origin":"a","value":"{}"}']);
      assert.deepEqual(await a.snapshot(scope), [entry('k', 1)], 'the broadcast stored nothing');
    });

    test('a client cut off from the engine misses the broadcasts sent meanwhile, and hears again once back', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const channel = `ch-${scope}`;
      const heardA: string[] = [];
      const heardB: string[] = [];
      a.listen(channel, (m) => heardA.push(m));
      b.listen(channel, (m) => heardB.push(m));
      await e.settle();
      await e.cut(a);
      await until(() => !a.connected, 5000, 'a disconnected');
      const own = a.broadcast(channel, 'from a');
      assert.equal(await settlesWithin(own, 200), true, 'rejects at once');
      await assert.rejects(own);
      await b.broadcast(channel, 'missed');
      await until(() => heardB.includes('missed'), 5000, 'b hears it');
      await e.mend(a);
      await until(() => a.connected, 10_000, 'a reconnects');
      let n = 0;
      await until(
        async () => {
          await b.broadcast(channel, `after ${++n}`);
          await sleep(20);
          return heardA.length > 0;
        },
        10_000,
        'a hears again',
        50,
      );
      assert.ok(
        heardA.every((m) => m.startsWith('after ')),
        `a heard only what was sent once it was back: ${heardA.join(', ')}`,
      );
      assert.ok(!heardB.includes('from a'));
    });

    test('increment resolves with the new value; remove deletes the counter; bad arguments reject', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const key = `counter-${scope}`;
      assert.equal(await a.increment(key, 1, 60_000), 1);
      assert.equal(await b.increment(key, 2, 60_000), 3);
      assert.equal(await a.increment(key, -1, 60_000), 2);
      assert.equal(await b.increment(key, 0, 60_000), 2);
      assert.equal(await a.increment(`${key}-other`, 5, 60_000), 5, 'counters are apart');
      assert.equal(await a.increment(scope, 7, 60_000), 7, 'and apart from the versions of a scope of the same name');
      assert.equal(await a.version(scope, 0), 1);
      await a.remove(key);
      assert.equal(await b.increment(key, 1, 60_000), 1, 'a removed counter starts again');
      await a.remove(`never-${scope}`);
      for (const [by, ttl] of [
        [1.5, 1000],
        [Number.NaN, 1000],
        [2 ** 53, 1000],
        [1, 0],
        [1, -5],
        [1, Number.POSITIVE_INFINITY],
        [1, Number.NaN],
      ] as const) {
        await assert.rejects(a.increment(key, by, ttl), RangeError, `increment(${by}, ${ttl})`);
      }
      assert.equal(await a.increment(key, 0, 60_000), 1, 'a rejected increment changed nothing');
    });

    test('buckets: nginx limit_req arithmetic across clients, atomically over several buckets; a rejection stores nothing', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      // 16 milli-requests per second (nginx's 1r/m): nothing drains within the test's few ms.
      const k = { key: 'z:k', rate: 16, burst: 2000 };
      assert.deepEqual(await a.buckets(scope, [k]), [0, 0], 'a new bucket starts at 0');
      assert.deepEqual(await b.buckets(scope, [k]), [0, 1000]);
      assert.deepEqual(await a.buckets(scope, [k]), [0, 2000]);
      assert.deepEqual(await b.buckets(scope, [k]), [1, 3000], 'over the burst: the first bucket rejects');
      assert.deepEqual(await a.buckets(scope, [k]), [1, 3000], 'and its excess was not stored');
      const other = { key: 'y:k', rate: 16, burst: 0 };
      assert.deepEqual(await a.buckets(scope, [other, k]), [2, 3000], 'the second rejects: the first stores nothing either');
      assert.deepEqual(await a.buckets(scope, [other]), [0, 0]);
      assert.deepEqual(await a.buckets(`${scope}-2`, [k]), [0, 0], 'scopes are apart');
      // 1000 r/s: an excess of 0 is drained, and the bucket forgotten, within 2 ms.
      const fast = { key: 'x:k', rate: 1_000_000, burst: 0 };
      assert.deepEqual(await a.buckets(scope, [fast]), [0, 0]);
      await sleep(20);
      assert.deepEqual(await b.buckets(scope, [fast]), [0, 0]);
      for (const bad of [[], [{ key: 'k', rate: 0, burst: 0 }], [{ key: 'k', rate: 1.5, burst: 0 }], [{ key: 'k', rate: 1, burst: -1 }]])
        await assert.rejects(a.buckets(scope, bad), RangeError, JSON.stringify(bad));
    });

    test('gauges: requests in progress per holder, added atomically over several keys up to their max, taken back, set, expiring', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const k = { key: 'z:k', value: 2 };
      assert.deepEqual(await a.gauges(scope, 'A', [k], 'add', 60_000), [0, 1]);
      assert.deepEqual(await b.gauges(scope, 'B', [k], 'add', 60_000), [0, 2], 'holders add up');
      assert.deepEqual(await a.gauges(scope, 'A', [k], 'add', 60_000), [1, 2], 'at its max: refused, nothing changed');
      const other = { key: 'y:k', value: 5 };
      assert.deepEqual(await a.gauges(scope, 'A', [other, k], 'add', 60_000), [2, 2], 'the second refuses: the first is not added either');
      assert.deepEqual(await a.gauges(scope, 'A', [{ key: 'y:k', value: 0 }], 'set', 60_000), [0, 0]);
      assert.deepEqual(await b.gauges(scope, 'B', [k], 'sub', 60_000), [0, 1]);
      assert.deepEqual(await b.gauges(scope, 'B', [k], 'sub', 60_000), [0, 1], 'a holder never goes below 0');
      assert.deepEqual(await a.gauges(scope, 'A', [{ key: 'z:k', value: 3 }], 'set', 60_000), [0, 3], "set: the holder's count");
      assert.deepEqual(await b.gauges(scope, 'B', [{ key: 'z:k', value: 1 }], 'set', 300), [0, 4]);
      await sleep(400);
      assert.deepEqual(await a.gauges(scope, 'A', [{ key: 'z:k', value: 3 }], 'set', 60_000), [0, 3], "B's share expired");
      assert.deepEqual(await a.gauges(`${scope}-2`, 'A', [k], 'add', 60_000), [0, 1], 'scopes are apart');
      for (const [checks, op, ttl] of [
        [[], 'add', 1000],
        [[{ key: 'k', value: -1 }], 'add', 1000],
        [[{ key: 'k', value: 1 }], 'nope', 1000],
        [[{ key: 'k', value: 1 }], 'add', 0],
      ] as const)
        await assert.rejects(a.gauges(scope, 'A', checks as never, op as never, ttl), RangeError, JSON.stringify([checks, op, ttl]));
    });

    test('a counter expires its ttl after its creation, and later increments do not extend it', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const key = `counter-${scope}`;
      const created = performance.now();
      assert.equal(await a.increment(key, 1, 400), 1);
      assert.equal(await b.increment(key, 1, 60_000), 2, 'a later increment: its ttl is not applied');
      assert.equal(await a.increment(key, 1, 60_000), 3);
      await until(async () => (await b.increment(key, 0, 60_000)) === 0, 5000, 'the counter expired', 50);
      assert.ok(performance.now() - created >= 350, 'not before its ttl');
      assert.equal(await a.increment(key, 4, 60_000), 4, 'the counter made again by the probe');
    });

    test('concurrent increments from two clients add up exactly, each value handed out once', async (e, scope) => {
      const a = await e.client();
      const b = await e.client();
      const key = `counter-${scope}`;
      const values = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).increment(key, 1, 60_000)));
      assert.deepEqual(
        [...values].sort((x, y) => x - y),
        Array.from({ length: 200 }, (_, i) => i + 1),
      );
      assert.equal(await a.increment(key, 0, 60_000), 200);
    });
  });
}

/** A TCP relay to a local port that can be cut (every connection through it dropped, new ones refused) and mended. */
export interface Relay {
  port: number;
  cut(): void;
  mend(): void;
}

export async function relay(t: TestContext, target: number): Promise<Relay> {
  let open = true;
  const sockets = new Set<Socket>();
  const server = createServer((down) => {
    if (!open) return down.destroy();
    const up = connect(target, '127.0.0.1');
    const end = (): void => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    sockets.add(down).add(up);
    for (const socket of [down, up]) socket.on('error', end).on('close', end);
    down.pipe(up).pipe(down);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cut = (): void => {
    open = false;
    for (const socket of sockets) socket.destroy();
  };
  t.after(() => {
    cut();
    server.close();
  });
  return {
    port: (server.address() as { port: number }).port,
    cut,
    mend() {
      open = true;
    },
  };
}

/** What a Redis engine can do to its servers: kill and restart them, freeze and thaw them. */
export interface Outages {
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** An engine's `down` and `up` on servers that can be killed (restarted empty) or frozen (thawed). */
export function outages(servers: Outages): Pick<Engine, 'down' | 'up'> {
  let frozen = false;
  return {
    async down(how) {
      if (how === 'freeze') {
        frozen = true;
        servers.pause();
      } else await servers.stop();
    },
    async up() {
      if (frozen) {
        frozen = false;
        servers.resume();
      } else await servers.start();
    },
  };
}
