// Leases of issue 14 over the in-memory transport, on a manual clock: one holder at a time,
// renewal, loss on a failed or late renewal, takeover after expiry, release on stop, no timer left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { Lease, type LeaseClock } from '../../src/sync/lease.ts';
import { MemoryHub, type Transport } from '../../src/sync/transport.ts';

const TTL = 300;

/** A clock whose time moves only when told; `advance` fires the timers due, letting the transport's answers arrive between them. */
class ManualClock implements LeaseClock {
  time = 0;
  #timers = new Map<number, { at: number; fn: () => void }>();
  #next = 0;
  now(): number {
    return this.time;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.set(id, { at: this.time + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  get pending(): number {
    return this.#timers.size;
  }
  /** Moves time on by `ms`, 10 ms at a time; after each step, `check` runs. */
  async advance(ms: number, check: () => void = () => {}): Promise<void> {
    const end = this.time + ms;
    while (this.time < end) {
      this.time = Math.min(end, this.time + 10);
      for (const [id, t] of [...this.#timers].sort(([, x], [, y]) => x.at - y.at)) {
        if (t.at > this.time) continue;
        this.#timers.delete(id);
        t.fn();
      }
      await new Promise((resolve) => setImmediate(resolve));
      check();
    }
  }
}

function setup() {
  const clock = new ManualClock();
  const hub = new MemoryHub(clock);
  const make = (holder: string, transport: Transport = hub.connect()) => {
    const changes: boolean[] = [];
    const lease = new Lease({ transport, key: 'probe:s1', holder, ttl: TTL, clock, onChange: (held) => changes.push(held) });
    return { lease, changes };
  };
  return { clock, hub, make };
}

/** Two leases on one key: a started first (and holding), then b. */
async function contenders() {
  const { clock, make } = setup();
  const a = make('a');
  const b = make('b');
  a.lease.start();
  await clock.advance(10);
  b.lease.start();
  return { clock, a, b };
}

test('one holder at a time: the first takes the key and keeps it renewed, the other waits', async () => {
  const { clock, a, b } = await contenders();
  const exclusive = () => assert.ok(!(a.lease.held && b.lease.held), 'two holders at once');
  await clock.advance(TTL * 5, exclusive);
  assert.equal(a.lease.held, true, 'renewed past several TTLs');
  assert.equal(b.lease.held, false);
  assert.deepEqual(a.changes, [true]);
  assert.deepEqual(b.changes, []);
  await a.lease.stop();
  await b.lease.stop();
  assert.equal(clock.pending, 0, 'no timer left');
});

test('takeover: a holder that dies is replaced after its hold expires, not before', async () => {
  const { clock, make, hub } = setup();
  const deadTransport = hub.connect();
  const a = make('a', deadTransport);
  const b = make('b');
  a.lease.start();
  await clock.advance(10);
  b.lease.start();
  await clock.advance(TTL);
  assert.equal(a.lease.held, true);
  // The holder's process dies: it renews no more (its timers stop, nothing is released).
  deadTransport.disconnect();
  const died = clock.time;
  let tookOver: number | undefined;
  await clock.advance(TTL * 3, () => {
    if (tookOver === undefined && b.lease.held) tookOver = clock.time;
  });
  assert.ok(tookOver !== undefined, 'b took the key');
  assert.ok(tookOver - died <= TTL + TTL / 3 + 20, `took over ${tookOver - died} ms after the death, within TTL + TTL/3`);
  assert.deepEqual(a.changes, [true, false], 'a knows it lost the key (its renewal failed)');
  assert.deepEqual(b.changes, [true]);
  await a.lease.stop();
  await b.lease.stop();
  assert.equal(clock.pending, 0);
});

test('stop() releases the key: the other takes it at its next attempt', async () => {
  const { clock, a, b } = await contenders();
  await clock.advance(TTL);
  await a.lease.stop();
  assert.equal(a.lease.held, false);
  assert.deepEqual(a.changes, [true, false]);
  await clock.advance(TTL / 3 + 20);
  assert.equal(b.lease.held, true, 'taken without waiting for the TTL');
  await b.lease.stop();
  assert.equal(clock.pending, 0);
});

test('a lease is lost when a renewal fails, and taken again when the engine returns', async () => {
  const { clock, make, hub } = setup();
  const a = make('a');
  a.lease.start();
  await clock.advance(10);
  assert.equal(a.lease.held, true);
  hub.down();
  await clock.advance(TTL / 3 + 10);
  assert.equal(a.lease.held, false, 'lost at the first failed renewal');
  hub.up();
  await clock.advance(TTL / 3 + 10);
  assert.equal(a.lease.held, true);
  assert.deepEqual(a.changes, [true, false, true]);
  await a.lease.stop();
  assert.equal(clock.pending, 0);
});

test('a renewal that never answers ends the hold at the TTL', async () => {
  const { clock, make, hub } = setup();
  const inner = hub.connect();
  let hang = false;
  const transport: Transport = {
    get connected() {
      return inner.connected;
    },
    onConnection: (listener) => inner.onConnection(listener),
    version: (scope, floor) => inner.version(scope, floor),
    put: (scope, entry) => inner.put(scope, entry),
    subscribe: (scope, handler) => inner.subscribe(scope, handler),
    snapshot: (scope) => inner.snapshot(scope),
    acquire: (key, holder, ttl) => inner.acquire(key, holder, ttl),
    renew: (key, holder, ttl) => (hang ? new Promise<boolean>(() => {}) : inner.renew(key, holder, ttl)),
    release: (key, holder) => inner.release(key, holder),
    broadcast: (channel, message) => inner.broadcast(channel, message),
    listen: (channel, handler) => inner.listen(channel, handler),
    increment: (key, by, ttl) => inner.increment(key, by, ttl),
    remove: (key) => inner.remove(key),
    buckets: (scope, checks) => inner.buckets(scope, checks),
    gauges: (scope, holder, checks, op, ttl) => inner.gauges(scope, holder, checks, op, ttl),
  };
  const a = make('a', transport);
  a.lease.start();
  await clock.advance(TTL);
  assert.equal(a.lease.held, true);
  hang = true;
  const from = clock.time;
  let lost: number | undefined;
  await clock.advance(TTL * 2, () => {
    if (lost === undefined && !a.lease.held) lost = clock.time;
  });
  assert.ok(lost !== undefined && lost - from <= TTL, `held ${lost === undefined ? 'forever' : lost - from} ms after the last renewal answered`);
  assert.deepEqual(a.changes, [true, false]);
  await a.lease.stop();
  assert.equal(clock.pending, 0);
});

test('the TTL is validated', () => {
  const transport = new MemoryHub().connect();
  for (const ttl of [0, -5, 'soon', Number.NaN]) {
    assert.throws(
      () => new Lease({ transport, key: 'k', ttl: ttl as number }),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'ttl',
      String(ttl),
    );
  }
  assert.equal(new Lease({ transport, key: 'k' }).ttl, 3000, 'the default');
});

test('on the real clock, a lease is taken and given back, and leaves no timer behind', async () => {
  const hub = new MemoryHub();
  const lease = new Lease({ transport: hub.connect(), key: 'k', ttl: 60 });
  lease.start();
  const deadline = Date.now() + 5000;
  while (!lease.held && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(lease.held, true);
  await lease.stop();
  assert.equal(lease.held, false);
  const other = new Lease({ transport: hub.connect(), key: 'k', ttl: 60 });
  other.start();
  while (!other.held && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(other.held, true, 'the released key was free');
  await other.stop();
});
