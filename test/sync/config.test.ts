// The configuration replica of issue 14 over the in-memory transport: ordering by
// transport-assigned versions, tombstones, own echoes, outages (with and without the engine's
// data) and concurrent changes converging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigReplica, type ServerFields } from '../../src/sync/config.ts';
import { MemoryHub, type MemoryTransport, type Transport, type VersionedEntry } from '../../src/sync/transport.ts';

const SCOPE = 'test:pool:api';

/** One simulated gateway instance: its transport, its replica, and the server list `apply` keeps (what a pool would hold). */
interface Instance {
  transport: MemoryTransport;
  replica: ConfigReplica;
  servers: Map<string, ServerFields>;
  applied: Array<[string, ServerFields | undefined]>;
}

async function instance(hub: MemoryHub, origin: string): Promise<Instance> {
  const transport = hub.connect();
  const servers = new Map<string, ServerFields>();
  const applied: Instance['applied'] = [];
  const replica = new ConfigReplica({
    transport,
    scope: SCOPE,
    origin,
    apply(key, fields) {
      applied.push([key, fields]);
      if (fields === undefined) servers.delete(key);
      else servers.set(key, fields);
    },
  });
  await replica.start();
  return { transport, replica, servers, applied };
}

/** Two instances sharing servers s1 and s2 (weight 1), settled. */
async function pair(): Promise<{ hub: MemoryHub; a: Instance; b: Instance }> {
  const hub = new MemoryHub();
  const a = await instance(hub, 'a');
  const b = await instance(hub, 'b');
  a.replica.local({ op: 'add', key: 's1', fields: { weight: 1 } });
  a.replica.local({ op: 'add', key: 's2', fields: { weight: 1 } });
  await settle(a, b);
  return { hub, a, b };
}

/** Lets every queued delivery and push run to the end. */
async function settle(...instances: Instance[]): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    await Promise.all(instances.map((n) => n.replica.settled()));
  }
}

const plain = (servers: Map<string, ServerFields>): Record<string, ServerFields> => Object.fromEntries([...servers].sort(([a], [b]) => a.localeCompare(b)));

const entry = (key: string, version: number, value: object, origin = 'other'): VersionedEntry => ({ key, version, origin, value: JSON.stringify(value) });
const up = (fields: ServerFields): object => ({ removed: false, fields });
const gone = { removed: true };

test('remote records apply by version, whatever order they arrive in; tombstones keep removed servers removed', async () => {
  const cases: Array<{ name: string; entries: VersionedEntry[]; want: Record<string, ServerFields> }> = [
    { name: 'in order', entries: [entry('a', 1, up({ weight: 1 })), entry('a', 2, up({ weight: 2 }))], want: { a: { weight: 2 } } },
    { name: 'newer first, older ignored', entries: [entry('a', 2, up({ weight: 2 })), entry('a', 1, up({ weight: 1 }))], want: { a: { weight: 2 } } },
    { name: 'same version twice', entries: [entry('a', 3, up({ weight: 3 })), entry('a', 3, up({ weight: 9 }))], want: { a: { weight: 3 } } },
    { name: 'remove, then a late add with a lower version', entries: [entry('a', 5, gone), entry('a', 4, up({ weight: 1 }))], want: {} },
    { name: 'tombstone first, never seen before', entries: [entry('b', 7, gone), entry('b', 2, up({ weight: 1 }))], want: {} },
    {
      name: 'a re-add after the removal',
      entries: [entry('a', 1, up({ weight: 1 })), entry('a', 2, gone), entry('a', 3, up({ weight: 4 }))],
      want: { a: { weight: 4 } },
    },
    { name: 'own echo ignored', entries: [entry('a', 1, up({ weight: 1 })), entry('a', 9, gone, 'me')], want: { a: { weight: 1 } } },
    {
      name: 'malformed values ignored',
      entries: [entry('a', 1, up({ weight: 1 })), { key: 'a', version: 2, origin: 'x', value: '{' }, entry('a', 3, { removed: 'maybe' })],
      want: { a: { weight: 1 } },
    },
  ];
  for (const c of cases) {
    const servers = new Map<string, ServerFields>();
    const replica = new ConfigReplica({
      transport: new MemoryHub().connect(),
      scope: SCOPE,
      origin: 'me',
      apply: (key, fields) => (fields === undefined ? servers.delete(key) : servers.set(key, fields)),
    });
    for (const e of c.entries) replica.remote(e);
    assert.deepEqual(plain(servers), c.want, c.name);
    assert.deepEqual(plain(replica.servers()), c.want, `${c.name}: servers()`);
  }
});

test('changes reach every instance, ordered by the transport, even when delivered in reverse', async () => {
  const hub = new MemoryHub();
  const a = await instance(hub, 'a');
  const b = await instance(hub, 'b');
  a.replica.local({ op: 'add', key: 's1', fields: { weight: 1, down: false } });
  await settle(a, b);
  assert.deepEqual(plain(b.servers), { s1: { weight: 1, down: false } });

  hub.hold();
  a.replica.local({ op: 'update', key: 's1', fields: { weight: 2 } });
  await settle(a);
  a.replica.local({ op: 'update', key: 's1', fields: { down: true } });
  await settle(a);
  hub.release((queue) => queue.reverse());
  await settle(a, b);
  assert.deepEqual(plain(b.servers), { s1: { weight: 2, down: true } });
  assert.deepEqual(plain(a.servers), plain(b.servers));
  a.replica.close();
  b.replica.close();
});

test('a local change is applied once, at once, and its echo is ignored', async () => {
  const hub = new MemoryHub();
  const a = await instance(hub, 'a');
  a.replica.local({ op: 'add', key: 's1', fields: { weight: 1 } });
  assert.deepEqual(a.applied, [['s1', { weight: 1 }]], 'applied before any round trip');
  await settle(a);
  assert.deepEqual(a.applied, [['s1', { weight: 1 }]], 'the echo changed nothing');
  assert.equal(a.replica.version, 1);
  a.replica.close();
});

test('concurrent changes on two instances converge to one state, the one the transport holds', async () => {
  const table: Array<{ name: string; a: Parameters<ConfigReplica['local']>[0]; b: Parameters<ConfigReplica['local']>[0] }> = [
    { name: 'two updates', a: { op: 'update', key: 's1', fields: { weight: 5 } }, b: { op: 'update', key: 's1', fields: { weight: 7 } } },
    { name: 'update and remove', a: { op: 'update', key: 's1', fields: { drain: true } }, b: { op: 'remove', key: 's1' } },
    { name: 'remove and re-add', a: { op: 'remove', key: 's1' }, b: { op: 'add', key: 's1', fields: { weight: 3 } } },
  ];
  for (const row of table) {
    const hub = new MemoryHub();
    const a = await instance(hub, 'a');
    const b = await instance(hub, 'b');
    a.replica.local({ op: 'add', key: 's1', fields: { weight: 1 } });
    await settle(a, b);
    a.replica.local(row.a);
    b.replica.local(row.b);
    await settle(a, b);
    const stored = new ConfigReplica({ transport: hub.connect(), scope: SCOPE, apply: () => {} });
    await stored.start();
    assert.deepEqual(plain(a.servers), plain(b.servers), row.name);
    assert.deepEqual(plain(a.servers), plain(stored.servers()), `${row.name}: the transport's state`);
    for (const r of [a.replica, b.replica, stored]) r.close();
  }
});

test('an instance that lost the transport keeps its local changes, pushes them on return, and they win over older versions', async () => {
  const { a, b } = await pair();

  a.transport.disconnect();
  b.replica.local({ op: 'update', key: 's1', fields: { weight: 5 } }); // stored while a is away
  b.replica.local({ op: 'remove', key: 's2' });
  a.replica.local({ op: 'update', key: 's1', fields: { weight: 9 } });
  a.replica.local({ op: 'add', key: 's3', fields: { weight: 2 } });
  await settle(a, b);
  assert.deepEqual(plain(a.servers), { s1: { weight: 9 }, s2: { weight: 1 }, s3: { weight: 2 } }, 'a serves on what it knows');
  assert.deepEqual(plain(b.servers), { s1: { weight: 5 } });

  a.transport.reconnect();
  await settle(a, b);
  const want = { s1: { weight: 9 }, s3: { weight: 2 } };
  assert.deepEqual(plain(a.servers), want, 'the removal made elsewhere reached a, its own changes stayed');
  assert.deepEqual(plain(b.servers), want);
  a.replica.close();
  b.replica.close();
});

test('nothing stale comes back: a returning instance takes the newer state, and removed servers stay removed', async () => {
  const { hub, a, b } = await pair();
  b.transport.disconnect();
  a.replica.local({ op: 'remove', key: 's1' });
  a.replica.local({ op: 'update', key: 's2', fields: { weight: 4 } });
  await settle(a, b);
  b.transport.reconnect();
  await settle(a, b);
  assert.deepEqual(plain(b.servers), { s2: { weight: 4 } });
  assert.deepEqual(plain(a.servers), { s2: { weight: 4 } });

  // A process that starts afresh comes back with the run-time state, not its static list.
  const c = await instance(hub, 'c');
  await settle(c);
  assert.deepEqual(plain(c.servers), { s2: { weight: 4 } });
  for (const n of [a, b, c]) n.replica.close();
});

test('an engine restarted empty gets the state back from the instances, and versions keep rising past what they know', async () => {
  const hub = new MemoryHub();
  const a = await instance(hub, 'a');
  const b = await instance(hub, 'b');
  a.replica.local({ op: 'add', key: 's1', fields: { weight: 1 } });
  a.replica.local({ op: 'remove', key: 's1' });
  b.replica.local({ op: 'add', key: 's2', fields: { weight: 2 } });
  await settle(a, b);
  const before = Math.max(a.replica.version, b.replica.version);

  hub.down();
  a.replica.local({ op: 'update', key: 's2', fields: { weight: 8 } });
  hub.up({ keepData: false });
  await settle(a, b);
  assert.deepEqual(plain(a.servers), { s2: { weight: 8 } });
  assert.deepEqual(plain(b.servers), { s2: { weight: 8 } }, 'the change made during the outage reached b');
  assert.ok(a.replica.version > before, 'the version counter was raised past the known versions');

  const c = await instance(hub, 'c');
  c.replica.remote(entry('s1', 1, up({ weight: 1 }))); // a late copy of the original add
  assert.deepEqual(plain(c.servers), { s2: { weight: 8 } }, "the tombstone was stored back, so s1 doesn't return");
  b.replica.local({ op: 'update', key: 's2', fields: { weight: 3 } });
  await settle(a, b, c);
  for (const n of [a, b, c]) assert.deepEqual(plain(n.servers), { s2: { weight: 3 } });
  for (const n of [a, b, c]) n.replica.close();
});

test('an outage in the middle of pushing loses nothing, whenever it starts and ends', async () => {
  const ticks = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) await Promise.resolve();
  };
  for (let start = 0; start < 6; start++) {
    for (let length = 0; length < 6; length++) {
      const hub = new MemoryHub();
      const a = await instance(hub, 'a');
      const b = await instance(hub, 'b');
      for (let i = 0; i < 3; i++) a.replica.local({ op: 'add', key: `s${i}`, fields: { weight: i + 1 } });
      await ticks(start);
      hub.down(); // while a push is under way
      await ticks(length);
      hub.up();
      await settle(a, b);
      const want = { s0: { weight: 1 }, s1: { weight: 2 }, s2: { weight: 3 } };
      assert.deepEqual(plain(a.servers), want, `down after ${start} ticks for ${length}`);
      assert.deepEqual(plain(b.servers), want, `down after ${start} ticks for ${length}`);
      a.replica.close();
      b.replica.close();
    }
  }
});

test('a push that fails while the transport stays connected (Redis frozen: commands time out) is tried again, with no new change or reconnection', async () => {
  const hub = new MemoryHub();
  const b = await instance(hub, 'b');
  const inner = hub.connect();
  let failing = 2;
  // The same engine, but its first two puts time out while the connection stays up.
  const flaky: Transport = {
    get connected() {
      return inner.connected;
    },
    onConnection: (listener) => inner.onConnection(listener),
    version: (scope, floor) => inner.version(scope, floor),
    put: async (scope, e) => {
      if (failing-- > 0) throw new Error('command timed out');
      return inner.put(scope, e);
    },
    subscribe: (scope, handler) => inner.subscribe(scope, handler),
    snapshot: (scope) => inner.snapshot(scope),
    acquire: (key, holder, ttl) => inner.acquire(key, holder, ttl),
    renew: (key, holder, ttl) => inner.renew(key, holder, ttl),
    release: (key, holder) => inner.release(key, holder),
    broadcast: (channel, message) => inner.broadcast(channel, message),
    listen: (channel, handler) => inner.listen(channel, handler),
    increment: (key, by, ttl) => inner.increment(key, by, ttl),
    remove: (key) => inner.remove(key),
    buckets: (scope, checks) => inner.buckets(scope, checks),
    gauges: (scope, holder, checks, op, ttl) => inner.gauges(scope, holder, checks, op, ttl),
  };
  const replica = new ConfigReplica({ transport: flaky, scope: SCOPE, origin: 'a', apply() {}, retryDelay: 20 });
  await replica.start();
  replica.local({ op: 'add', key: 's9', fields: { weight: 4 } });
  const end = Date.now() + 2000;
  while (!b.servers.has('s9') && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 10));
  replica.close();
  assert.deepEqual(b.servers.get('s9'), { weight: 4 }, 'the change reached the other instance after two failed pushes');
  assert.equal(failing, -1, 'the third push went through');
});
