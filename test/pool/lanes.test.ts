// The lanes (src/pool/methods/lanes.ts) make round robin, least-conn and least-time choose without a
// pass over every server. They must choose exactly as the pass does (nginx's algorithm, kept in
// round-robin.ts as the reference): random histories of requests, retries, requests held open,
// failures, probes, sticky hints, health marks, slow start, run-time changes and time going by are
// replayed on two pools alike, one with the lanes and one with the passes, and every choice and
// every effective weight must match.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createPool, type MethodOption, type ServerOptions, type ServerUpdate, type UpstreamPool } from '../../src/pool/index.ts';
import { internals } from '../../src/pool/internal.ts';
import { reference } from '../../src/pool/methods/round-robin.ts';
import type { AttemptOutcome, Peer } from '../../src/pool/peer.ts';
import type { Selection } from '../../src/pool/methods/types.ts';
import { Cancellation } from '../../src/core/cancel.ts';
import { SyncHandle } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { clock, until, type Clock } from '../helpers.ts';
import { lettered, seeded, selection } from './support.ts';

interface Options {
  servers: number;
  /** Most weight a server gets (1 for equal weights). */
  weight: number;
  slowStart: boolean;
  backups: boolean;
  limits: boolean;
  steps: number;
  /** Some weights far beyond what current weights hold exactly (up to 2^53 - 1, the most accepted). */
  huge?: boolean;
  /** The pools have a wait queue: requests that find no server may wait for one, or give up waiting. */
  queue?: boolean;
}

/** Weights of the `huge` histories: the most accepted, others past exact sums, one just past a lane's. */
const HUGE = [Number.MAX_SAFE_INTEGER, 2 ** 52, 2 ** 40 + 1, 2 ** 31, 65537];

/** A pair of pools, lanes and reference, driven alike. */
class Twins {
  readonly lanes: UpstreamPool;
  readonly scan: UpstreamPool;
  readonly c: Clock;
  /** Requests in flight, with their header's time once it arrived. */
  readonly held: Array<{ lanes: Peer; scan: Peer; header?: number; inflightDone?: boolean }> = [];
  readonly log: string[] = [];
  /** Requests waiting in both pools' queues, to be given up at random. */
  readonly waiting = new Set<[Cancellation, Cancellation]>();
  /** A queued request given different servers (found when the waits settle). */
  failure: Error | undefined;
  next = 0;

  constructor(method: MethodOption, servers: ServerOptions[], c: Clock, queue = false) {
    this.c = c;
    const q = queue ? { size: 3 } : undefined;
    this.lanes = createPool({ name: 'lanes', method, servers, now: c.now, queue: q });
    reference.scan = true;
    try {
      this.scan = createPool({ name: 'scan', method, servers, now: c.now, queue: q });
    } finally {
      reference.scan = false;
    }
  }

  close(): void {
    this.lanes.close();
    this.scan.close();
  }

  /** One request: attempts until one is kept or ends well, or no server is left. */
  request(r: () => number, hint: string | undefined): void {
    const a = selection(this.lanes);
    const b = selection(this.scan);
    if (hint !== undefined) {
      a.ex!.hint = hint;
      b.ex!.hint = hint;
    }
    const tries = internals(this.lanes).maxTries();
    for (let i = 0; i < tries; i++) {
      const pa = this.select(a, b);
      if (pa === undefined) {
        if (internals(this.lanes).queueing && r() < 0.6) this.wait(a, b);
        return;
      }
      const pb = this.pick(this.scan, pa.id);
      const x = r();
      if (x < 0.3) {
        this.held.push({ lanes: pa, scan: pb });
        return;
      }
      if (x < 0.4) {
        // its header arrives now, its end later (other requests are chosen meanwhile)
        this.held.push({ lanes: pa, scan: pb, ...this.header(pa, pb, Math.floor(r() * 300)) });
        return;
      }
      const outcome: AttemptOutcome = x < 0.75 ? 'ok' : x < 0.92 ? 'failed' : 'next';
      this.finish(pa, pb, outcome, r);
      if (outcome === 'ok' || r() < 0.3) return;
    }
  }

  /**
   * Both requests wait in their pool's queue; a server freed (a request ending, an update, a
   * health mark) is given to the first waiting, chosen at once (same() compares every server's
   * conns after each step); the choices are compared when the waits settle.
   */
  wait(a: Selection, b: Selection): void {
    const pair: [Cancellation, Cancellation] = [new Cancellation(), new Cancellation()];
    this.waiting.add(pair);
    this.log.push('wait');
    void Promise.all([internals(this.lanes).wait(a, pair[0]), internals(this.scan).wait(b, pair[1])]).then(([pa, pb]) => {
      this.waiting.delete(pair);
      if (pa?.id !== pb?.id) this.failure ??= new Error(`queued request: lanes ${pa?.id}, scan ${pb?.id}\n${this.log.slice(-30).join('\n')}`);
      else if (pa !== undefined && pb !== undefined) this.held.push({ lanes: pa, scan: pb });
    });
  }

  /** One waiting request gives up (its client went away). */
  giveUp(r: () => number): void {
    const pairs = [...this.waiting];
    const pair = pairs[Math.floor(r() * pairs.length)];
    if (pair === undefined) return;
    pair[0].abort();
    pair[1].abort();
    this.log.push('give up');
  }

  select(a: Selection, b: Selection): Peer | undefined {
    const pa = internals(this.lanes).select(a);
    const pb = internals(this.scan).select(b);
    this.log.push(`select ${pa?.id ?? '-'}`);
    assert.equal(pa?.id, pb?.id, `choice ${this.log.length}: lanes ${pa?.id}, scan ${pb?.id}\n${this.log.slice(-30).join('\n')}`);
    return pa;
  }

  pick(pool: UpstreamPool, id: string): Peer {
    return internals(pool)
      .peers()
      .find((p) => p.id === id)!;
  }

  header(pa: Peer, pb: Peer, header: number): { header: number; inflightDone: boolean } {
    const da = internals(this.lanes).header(pa, header);
    const db = internals(this.scan).header(pb, header);
    assert.equal(da, db);
    this.log.push(`header ${pa.id} ${header}`);
    return { header, inflightDone: da };
  }

  /** Ends an attempt; its header arrives first unless `header` says when it did. */
  finish(pa: Peer, pb: Peer, outcome: AttemptOutcome, r: () => number, arrived?: { header?: number; inflightDone?: boolean }): void {
    const timings = { header: -1, response: 0, inflightDone: false };
    if (arrived?.header !== undefined) {
      timings.header = arrived.header;
      timings.inflightDone = arrived.inflightDone ?? false;
    } else if (r() >= 0.3) {
      // whole and fractional milliseconds (performance.now() gives the latter)
      Object.assign(timings, this.header(pa, pb, r() < 0.5 ? Math.floor(r() * 300) : r() * 300));
    }
    timings.response = Math.max(timings.header, 0) + Math.floor(r() * 200);
    internals(this.lanes).finish(pa, outcome, { ...timings }, 200);
    internals(this.scan).finish(pb, outcome, { ...timings }, 200);
    this.log.push(`finish ${pa.id} ${outcome}`);
  }

  /** Both pools' servers are in the same state (what the lanes leave to nginx's arithmetic). */
  same(): void {
    if (this.failure !== undefined) throw this.failure;
    const la = internals(this.lanes).peers();
    const lb = internals(this.scan).peers();
    assert.deepEqual(
      la.map((p) => [p.id, p.effectiveWeight, p.conns, p.fails]),
      lb.map((p) => [p.id, p.effectiveWeight, p.conns, p.fails]),
    );
  }

  both(fn: (pool: UpstreamPool) => void): void {
    fn(this.lanes);
    fn(this.scan);
  }
}

async function history(method: MethodOption, seed: number, o: Options): Promise<void> {
  const r = seeded(seed);
  const c = clock(1_700_000_000_000 + Math.floor(r() * 1000));
  const int = (n: number): number => Math.floor(r() * n);
  const server = (i: number): ServerOptions => {
    const s: ServerOptions = { url: `http://10.0.${i >> 8}.${i & 255}:8080`, id: `s${i}` };
    if (o.weight > 1) s.weight = 1 + int(o.weight);
    if (o.huge === true && r() < 0.4) s.weight = HUGE[int(HUGE.length)]!;
    if (o.limits && (o.queue === true || r() < 0.3)) s.maxConns = 1 + int(3);
    if (r() < 0.5) s.maxFails = int(4);
    if (r() < 0.5) s.failTimeout = `${1 + int(5)}s`;
    if (o.backups && r() < 0.2) s.backup = true;
    if (o.slowStart && r() < 0.5) s.slowStart = `${1 + int(4)}s`;
    if (r() < 0.05) s.down = true;
    return s;
  };
  const servers = Array.from({ length: o.servers }, (_, i) => server(i));
  if (servers.every((s) => s.backup === true)) servers[0]!.backup = false;
  const twins = new Twins(method, servers, c, o.queue);
  let added = o.servers;
  let checkId = 0;
  const checks = new Map<string, number>();
  try {
    for (let step = 0; step < o.steps; step++) {
      const x = r();
      const ids = twins.lanes.servers.map((s) => s.id);
      const id = ids[int(ids.length)]!;
      if (x < 0.55) {
        const info = twins.lanes.get(id)!;
        twins.request(r, method === 'round-robin' && r() < 0.15 ? info.sid : undefined);
      } else if (x < 0.7) {
        const i = int(twins.held.length);
        const h = twins.held.splice(i, 1)[0];
        if (h !== undefined) twins.finish(h.lanes, h.scan, r() < 0.8 ? 'ok' : 'failed', r, h);
      } else if (x < 0.85) {
        // now and then the clock steps back (a system clock set back): time-bound states may return
        const y = r();
        const ms = y < 0.03 ? -int(3000) : y < 0.8 ? int(400) : 1000 + int(12_000);
        c.advance(ms);
        twins.log.push(`advance ${ms}`);
      } else if (x < 0.91) {
        const change: ServerUpdate = {};
        const y = r();
        if (y < 0.3) change.weight = o.huge === true && r() < 0.4 ? HUGE[int(HUGE.length)]! : 1 + int(Math.max(o.weight, 3));
        else if (y < 0.45) change.down = r() < 0.5;
        else if (y < 0.6) change.drain = r() < 0.5;
        else if (y < 0.75) change.maxConns = o.limits ? int(3) : 0;
        else if (y < 0.85) change.maxFails = int(3);
        else if (o.slowStart) change.slowStart = `${int(3)}s`;
        const before = twins.lanes.get(id)!.weight;
        twins.both((p) => p.update(id, change));
        twins.log.push(`update ${id} ${JSON.stringify(change)}`);
        if (change.weight !== undefined && change.weight !== before && r() < 0.3) {
          // and back before the next choice: the round restarts all the same
          twins.both((p) => p.update(id, { weight: before }));
          twins.log.push(`update ${id} {"weight":${before}}`);
        }
        // a request bound to the server just changed looks at its state before any choice
        if (method === 'round-robin' && r() < 0.3) twins.request(r, twins.lanes.get(id)!.sid);
      } else if (x < 0.96) {
        // an active health check holds a server out, or lets it back (slow start follows)
        let check = checks.get(id);
        const failing = check === undefined;
        if (check === undefined) {
          check = ++checkId;
          checks.set(id, check);
        } else {
          checks.delete(id);
        }
        const mark = check;
        const pending = failing && r() < 0.3;
        twins.both((p) => internals(p).healthMark(twins.pick(p, id), mark, failing && !pending, pending));
        twins.log.push(`health ${id} ${failing ? (pending ? 'pending' : 'failing') : 'passing'}`);
      } else if (x < 0.98) {
        const s = server(added++);
        twins.both((p) => p.add(s));
        twins.log.push(`add ${s.id}`);
      } else if (ids.length > 2) {
        twins.both((p) => p.remove(id));
        checks.delete(id);
        twins.log.push(`remove ${id}`);
      }
      if (o.queue === true) {
        if (r() < 0.05) twins.giveUp(r);
        // the waits that were served settle (their requests are then held like the others)
        await new Promise((resolve) => setImmediate(resolve));
      }
      twins.same();
    }
  } finally {
    twins.close();
  }
}

const METHODS: Array<[string, MethodOption]> = [
  ['round-robin', 'round-robin'],
  ['least-conn', 'least-conn'],
  ['least-time header', 'least-time'],
  ['least-time last-byte inflight', { name: 'least-time', measure: 'last-byte', inflight: true }],
  ['least-time header inflight', { name: 'least-time', measure: 'header', inflight: true }],
];

const SHAPES: Array<[string, Options]> = [
  ['equal weights', { servers: 8, weight: 1, slowStart: false, backups: false, limits: false, steps: 1500 }],
  ['weights 1-5, backups, maxConns', { servers: 10, weight: 5, slowStart: false, backups: true, limits: true, steps: 1500 }],
  ['weights 1-5, slow start, backups, maxConns', { servers: 10, weight: 5, slowStart: true, backups: true, limits: true, steps: 1500 }],
  ['60 servers, weights 1-3, slow start', { servers: 60, weight: 3, slowStart: true, backups: true, limits: true, steps: 2000 }],
  ['weights 1-5, maxConns 1-3, a wait queue', { servers: 8, weight: 5, slowStart: true, backups: true, limits: true, steps: 1500, queue: true }],
  ['weights up to 2^53 - 1', { servers: 12, weight: 3, slowStart: false, backups: false, limits: false, steps: 1500, huge: true }],
  ['weights up to 2^53 - 1, slow start, backups, maxConns', { servers: 12, weight: 3, slowStart: true, backups: true, limits: true, steps: 1500, huge: true }],
];

for (const [name, method] of METHODS) {
  for (const [shape, options] of SHAPES) {
    test(`lanes choose as nginx's pass over every server: ${name}, ${shape} (random histories)`, async () => {
      for (let seed = 1; seed <= 6; seed++) await history(method, seed * 7919 + options.servers, options);
    });
  }
}

test('round robin over 1,000 servers of weight 1 in lanes is a rotation, as the pass over them', (t) => {
  const servers = Array.from({ length: 1000 }, (_, i) => ({ url: `http://10.0.${i >> 8}.${i & 255}:8080`, id: `s${i}` }));
  const p = createPool({ servers });
  t.after(() => p.close());
  for (let i = 0; i < 2500; i++) {
    const peer = internals(p).select(selection(p))!;
    assert.equal(peer.id, `s${i % 1000}`);
    internals(p).finish(peer, 'ok', { header: 1, response: 1, inflightDone: false }, 200);
  }
});

test('lanes learn of failures other instances shared (no hook of the method sees them): choices as the pass', async (t) => {
  // three instances of one pool on the in-memory engine: i0 sees server a fail; i1 (lanes) and
  // i2 (passes) only hear of it, and must then choose alike, without a
  const hub = new MemoryHub();
  const servers = ['a', 'b', 'c'].map((id, i) => ({ id, url: `http://127.0.0.1:${19801 + i}`, maxFails: 2, failTimeout: '30s' }));
  const make = (i: number): UpstreamPool => {
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 'lanes', instance: `i${i}` });
    const pool = createPool({ name: 'api', servers, sync: handle });
    t.after(() => {
      pool.close();
      handle.close();
    });
    return pool;
  };
  const [i0, i1] = [make(0), make(1)];
  reference.scan = true;
  let i2: UpstreamPool;
  try {
    i2 = make(2);
  } finally {
    reference.scan = false;
  }
  const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));
  await settle();
  // the lanes place their servers at the first choice: make one on both before the news
  assert.equal(pickSequence([i1, i2], 4), 'abca');
  for (let failures = 0; failures < 2; ) {
    const peer = internals(i0).select(selection(i0))!;
    const failed = peer.id === 'a';
    internals(i0).finish(peer, failed ? 'failed' : 'ok', { header: -1, response: 1, inflightDone: false }, undefined);
    if (failed) failures++;
    await settle();
  }
  await until(() => i1.stats().servers[0]!.state === 'unavail' && i2.stats().servers[0]!.state === 'unavail');
  const seq = pickSequence([i1, i2], 12);
  assert.doesNotMatch(seq, /a/);
});

/** `n` first choices on each pool, finished at once; the pools must agree on each. */
function pickSequence(pools: UpstreamPool[], n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) {
    const ids = pools.map((p) => {
      const peer = internals(p).select(selection(p))!;
      internals(p).finish(peer, 'ok', { header: 1, response: 1, inflightDone: false }, 200);
      return peer.id;
    });
    assert.ok(
      ids.every((id) => id === ids[0]),
      `choice ${i}: ${ids.join(' / ')}`,
    );
    out += ids[0];
  }
  return out;
}

/** Round robin on a pair of pools, lanes and passes, with servers a (3), b (2), c (1). */
function weighted(t: TestContext): Twins {
  const servers = lettered(19821, [{ weight: 3 }, { weight: 2 }, { weight: 1 }]);
  const twins = new Twins('round-robin', servers, clock());
  t.after(() => twins.close());
  return twins;
}

test('a weight changed and changed back before the next choice still restarts the round, as with the pass', (t) => {
  const twins = weighted(t);
  twins.request(() => 0.5, undefined); // a is chosen and pays the total: its current weight is -3
  twins.both((p) => {
    p.update('a', { weight: 5 });
    p.update('a', { weight: 3 });
  });
  for (let i = 0; i < 12; i++) twins.request(() => 0.5, undefined);
});

test('a sticky request bound to a server whose weight just changed is weighed as by the pass', (t) => {
  const twins = weighted(t);
  twins.request(() => 0.5, undefined);
  twins.both((p) => p.update('a', { weight: 4 }));
  twins.request(() => 0.5, twins.lanes.get('a')!.sid);
  for (let i = 0; i < 12; i++) twins.request(() => 0.5, undefined);
});

test('weights up to 2^53 - 1 (sums no longer exact): least-conn and round robin choose as the pass, requests held open at random', (t) => {
  for (const method of ['round-robin', 'least-conn'] as const) {
    for (const seed of [13, 25, 27]) {
      const r = seeded(seed);
      const servers = Array.from({ length: 12 }, (_, i) => ({
        url: `http://127.0.0.1:${19831 + i}`,
        id: `s${i}`,
        weight: r() < 0.4 ? [Number.MAX_SAFE_INTEGER, 2 ** 52, 2 ** 40 + 1, 65537, 3][Math.floor(r() * 5)]! : 1 + Math.floor(r() * 3),
      }));
      const twins = new Twins(method, servers, clock());
      t.after(() => twins.close());
      const held: Array<[Peer, Peer]> = [];
      const end = ([pa, pb]: [Peer, Peer]): void => twins.finish(pa, pb, 'ok', () => 0.5, { header: 1 });
      for (let i = 0; i < 3000; i++) {
        const pa = twins.select(selection(twins.lanes), selection(twins.scan))!;
        const pair: [Peer, Peer] = [pa, twins.pick(twins.scan, pa.id)];
        if (r() < 0.5) held.push(pair);
        else end(pair);
        if (held.length > 0 && r() < 0.5) end(held.splice(Math.floor(r() * held.length), 1)[0]!);
      }
    }
  }
});

test('long uptime: past the lanes rebasing their passes (every 65,536), with the heaviest weight a lane holds, choices stay the pass', (t) => {
  for (const method of ['round-robin', 'least-conn'] as const) {
    const servers = lettered(19851, [{ weight: 65536 }, { weight: 3 }, { weight: 1 }, { weight: 65535 }, { weight: 2, slowStart: '5s' }]);
    const c = clock();
    const twins = new Twins(method, servers, c);
    t.after(() => twins.close());
    const r = seeded(5);
    for (let i = 0; i < 150_000; i++) {
      const pa = twins.select(selection(twins.lanes), selection(twins.scan))!;
      const pb = twins.pick(twins.scan, pa.id);
      // now and then e fails (and ramps up again with slow start), time goes by
      twins.finish(pa, pb, pa.id === 'e' && r() < 0.01 ? 'failed' : 'ok', () => 0.5, { header: 1 });
      if (i % 1000 === 0) c.advance(700);
      if (twins.log.length > 100) twins.log.splice(0, 50);
    }
  }
});
