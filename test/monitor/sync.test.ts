// monitor() over the instances of a gateway (issue 14), on the in-memory engine: three instances,
// each a pool with sync, a cache and balance() in front of the same two real upstreams, and its own
// monitor. The API, the dashboard's reads and /metrics answer the same from every instance (totals
// over the live instances, an `instances` breakdown, per-instance series labelled `instance`), a
// counter never goes back between scrapes served by different instances, a reset reaches every
// instance, and an instance that stops publishing leaves the totals within 5 s.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test, type TestContext } from 'node:test';
import { balance, cache, chain, createPool, InvalidOptionError, monitor, type CacheMiddleware, type UpstreamPool } from '../../src/index.ts';
import { mergeServer } from '../../src/monitor/cluster.ts';
import type { ServerStats } from '../../src/pool/peer.ts';
import { SyncHandle } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { listen, until, upstream } from '../helpers.ts';
import { call, getJson, traffic } from './support.ts';

interface Instance {
  name: string;
  handle: SyncHandle;
  pool: UpstreamPool;
  cache: CacheMiddleware;
  /** The gateway's base url. */
  url: string;
  /** The monitor with sync (the pool's handle), mounted at /status. */
  api: string;
  metrics: string;
  /** A monitor of this process alone (`sync: false`), mounted at /local. */
  localMetrics: string;
  localApi: string;
}

/**
 * `n` instances `gw0`, `gw1`… on one engine, in front of the upstreams `a` and `b` (answers to
 * `/cached…` are cacheable): each `chain(monitor(/local, sync: false), monitor(/status), cache, balance)`.
 */
async function cluster(t: TestContext, n: number, statsInterval: number | string = 50): Promise<{ hub: MemoryHub; gws: Instance[] }> {
  const answer = (name: string) => (req: { url?: string | undefined }, res: import('node:http').ServerResponse) => {
    if (req.url?.startsWith('/cached') === true) res.setHeader('cache-control', 'max-age=60');
    res.end(name);
  };
  const a = await upstream(t, 'a', answer('a'));
  const b = await upstream(t, 'b', answer('b'));
  const hub = new MemoryHub();
  const gws: Instance[] = [];
  for (let i = 0; i < n; i++) {
    const name = `gw${i}`;
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 't', instance: name, statsInterval });
    t.after(() => handle.close());
    const pool = createPool({
      name: 'backend',
      servers: [
        { id: 'a', url: a.url },
        { id: 'b', url: b.url },
      ],
      sync: handle,
    });
    t.after(() => pool.close());
    const c = cache({ name: 'edge' });
    t.after(() => c.close());
    const server = createServer();
    const local = monitor({ pools: [pool], caches: [c], prefix: '/local', sync: false });
    const mon = monitor({ pools: [pool], caches: [c], prefix: '/status', server, write: () => true });
    t.after(() => {
      local.close();
      mon.close();
    });
    server.on('request', chain(local, mon, c, balance(pool)));
    const g = await listen(t, server);
    gws.push({
      name,
      handle,
      pool,
      cache: c,
      url: g.url,
      api: `${g.url}/status/api/9`,
      metrics: `${g.url}/status/metrics`,
      localApi: `${g.url}/local/api/9`,
      localMetrics: `${g.url}/local/metrics`,
    });
  }
  return { hub, gws };
}

/** The requests of every peer of `backend` as an instance's API answers them. */
async function requests(api: string): Promise<number> {
  const u = await getJson(`${api}/http/upstreams/backend`);
  return (u.peers as Array<{ requests: number }>).reduce((n, p) => n + p.requests, 0);
}

/** The counters of the peers (what must be equal from every instance). */
async function counters(api: string): Promise<string> {
  const u = await getJson(`${api}/http/upstreams/backend`);
  return JSON.stringify(
    (u.peers as Array<Record<string, unknown>>).map((p) => [p.id, p.state, p.requests, p.responses, p.sent, p.received, p.fails, p.response_time_hist]),
  );
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (the format itself is checked by metrics.test.ts). */
function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** `name`'s samples by their labels (`instance id` for the server series). */
async function series(url: string, name: string): Promise<Map<string, number>> {
  const text = (await call(url)).text;
  const out = new Map<string, number>();
  for (const s of samples(text)) if (s.name === name) out.set(JSON.stringify(s.labels), s.value);
  return out;
}

const total = (m: Map<string, number>): number => [...m.values()].reduce((n, v) => n + v, 0);

test('the API answers with the same totals over the live instances from every instance, with an instances breakdown', async (t) => {
  const { gws } = await cluster(t, 3);
  const [g0, g1, g2] = gws as [Instance, Instance, Instance];
  await traffic(g0.url, 5);
  await traffic(g1.url, 3);
  await traffic(g2.url, 4, '/cached');
  // Each instance alone saw its own share.
  assert.equal(await requests(g0.localApi), 5);
  assert.equal(await requests(g1.localApi), 3);

  const apis = gws.map((g) => g.api);
  // 5 + 3 attempts, and on gw2 one miss then three hits.
  await until(async () => (await Promise.all(apis.map(requests))).every((n) => n === 9), 3000, 'every instance to count 9 attempts');
  await until(async () => new Set(await Promise.all(apis.map(counters))).size === 1, 3000, 'the same counters from every instance');
  // The hits on gw2 never reach the pool: wait for a report that has the last of them too.
  const hits = async (api: string): Promise<number> => (await getJson(`${api}/http/caches/edge`)).hit.responses as number;
  await until(async () => (await Promise.all(apis.map(hits))).every((n) => n === 3), 3000, 'every instance to count the 3 hits');
  for (const api of apis) {
    const u = await getJson(`${api}/http/upstreams/backend`);
    assert.deepEqual(
      u.peers.map((p: { id: string }) => p.id),
      ['a', 'b'],
    );
    assert.equal(u.peers[0].responses['2xx'] + u.peers[1].responses['2xx'], 9);
    assert.equal((u.peers[0].responses.codes['200'] ?? 0) + (u.peers[1].responses.codes['200'] ?? 0), 9);
    assert.equal(u.peers[0].response_time_hist.count + u.peers[1].response_time_hist.count, 9);
    assert.equal(u.zone, 'backend');
    // The cache: every attempt was a miss (what / answers is not cacheable), the rest hits on gw2.
    const c = await getJson(`${api}/http/caches/edge`);
    assert.equal(c.miss.responses, 9);
    assert.equal(c.hit.responses, 3);
    const sy = await getJson(`${api}/switchyard`);
    assert.equal(sy.instances, 3);
  }
  assert.equal((await getJson(`${g0.api}/switchyard`)).instance, 'gw0');

  const all = await getJson(`${g1.api}/switchyard/instances`);
  assert.deepEqual(Object.keys(all), ['gw0', 'gw1', 'gw2']);
  assert.equal(all.gw1.self, true);
  assert.equal(all.gw0.self, false);
  assert.equal(all.gw0.pid, process.pid);
  assert.equal(typeof all.gw0.host, 'string');
  assert.ok(all.gw0.age >= 0 && all.gw0.age < 3000, `gw0's last report age: ${all.gw0.age}`);
  const own = (i: { upstreams: { backend: { peers: Array<{ requests: number }> } } }) => i.upstreams.backend.peers.reduce((n, p) => n + p.requests, 0);
  assert.deepEqual([own(all.gw0), own(all.gw1), own(all.gw2)], [5, 3, 1]);
  assert.equal(all.gw2.caches.edge.hit.responses, 3);
  assert.ok(all.gw0.requests.total >= 5, 'the gateway counters of gw0 are there');
  const one = await getJson(`${g2.api}/switchyard/instances/gw0`);
  assert.equal(own(one), 5);
  assert.equal((await call(`${g2.api}/switchyard/instances/nope`)).body.error.code, 'InstanceNotFound');
  // The gateways' own request counters add up too: at least the 12 proxied requests and the API calls.
  const r = await getJson(`${g0.api}/http/requests`);
  assert.ok(r.total >= 12, `client requests over the instances: ${r.total}`);
});

test('/metrics from any instance gives every instance series labelled instance, the same, and never lets a counter go down', async (t) => {
  const { gws } = await cluster(t, 3);
  const [g0, g1, g2] = gws as [Instance, Instance, Instance];
  const NAME = 'switchyard_upstream_server_requests_total';
  // Traffic while the scrapes go round the instances: no series may ever read lower than before.
  let stop = false;
  let sent = 0;
  const load = (async () => {
    while (!stop) {
      await call(`${gws[sent % 3]!.url}/`);
      sent++;
    }
  })();
  const seen = new Map<string, number>();
  const decreases: string[] = [];
  for (let i = 0; i < 60; i++) {
    const g = gws[i % 3]!;
    for (const [key, value] of await series(g.metrics, NAME)) {
      const before = seen.get(key) ?? 0;
      if (value < before) decreases.push(`${key}: ${before} then ${value} from ${g.name}`);
      seen.set(key, value);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  stop = true;
  await load;
  assert.deepEqual(decreases, [], 'no counter went down between scrapes served by different instances');
  assert.ok(sent > 20, `traffic ran during the scrapes (${sent} requests)`);

  // Once quiet: every instance answers with the same series, one set per instance, summing to what was sent.
  await until(async () => total(await series(g0.metrics, NAME)) === sent, 3000, `the series of gw0 to sum to ${sent}`);
  const reads = await Promise.all(gws.map((g) => series(g.metrics, NAME)));
  assert.deepEqual(reads[1], reads[0]);
  assert.deepEqual(reads[2], reads[0]);
  const byInstance: Record<string, number> = {};
  for (const [key, value] of reads[0]!) {
    const labels = JSON.parse(key) as Record<string, string>;
    assert.deepEqual(Object.keys(labels).sort(), ['id', 'instance', 'server', 'upstream']);
    byInstance[labels.instance!] = (byInstance[labels.instance!] ?? 0) + value;
  }
  assert.deepEqual(Object.keys(byInstance).sort(), ['gw0', 'gw1', 'gw2']);
  assert.deepEqual(
    [byInstance.gw0, byInstance.gw1, byInstance.gw2],
    [0, 1, 2].map((i) => Math.floor(sent / 3) + (i < sent % 3 ? 1 : 0)),
  );
  const live = samples((await call(g1.metrics)).text).find((s) => s.name === 'switchyard_instances');
  assert.equal(live?.value, 3);
  const accepted = await series(g2.metrics, 'switchyard_http_requests_total');
  assert.deepEqual(
    [...accepted.keys()].map((k) => JSON.parse(k).instance),
    ['gw0', 'gw1', 'gw2'],
  );
  // The per-process monitor labels nothing: what this process counted.
  const local = await series(g0.localMetrics, NAME);
  assert.ok([...local.keys()].every((k) => JSON.parse(k).instance === undefined));
  assert.equal(total(local), byInstance.gw0);
});

test('an instance that stops publishing leaves the totals, /metrics and instances within 5 s', async (t) => {
  // The default statistics interval (1 s): an instance is dropped after three without a report.
  const { gws } = await cluster(t, 3, '1s');
  const [g0, g1, g2] = gws as [Instance, Instance, Instance];
  await traffic(g0.url, 2);
  await traffic(g1.url, 3);
  await traffic(g2.url, 4);
  await until(async () => (await requests(g0.api)) === 9 && (await requests(g1.api)) === 9, 4000, 'the totals at 9 on gw0 and gw1');
  await g2.handle.close();
  const closed = performance.now();
  await until(async () => (await requests(g0.api)) === 5 && (await requests(g1.api)) === 5, 5000, 'gw2 out of the totals of gw0 and gw1 within 5 s');
  const left = performance.now() - closed;
  t.diagnostic(`gw2 left the totals ${Math.round(left)} ms after it stopped publishing (interval 1 s)`);
  assert.deepEqual(Object.keys(await getJson(`${g0.api}/switchyard/instances`)), ['gw0', 'gw1']);
  assert.equal((await getJson(`${g1.api}/switchyard`)).instances, 2);
  const metrics = await series(g1.metrics, 'switchyard_upstream_server_requests_total');
  assert.ok(
    [...metrics.keys()].every((k) => JSON.parse(k).instance !== 'gw2'),
    'no series of gw2',
  );
  assert.equal(total(metrics), 5);
  // The instance that stopped publishing answers for itself alone.
  assert.equal(await requests(g2.api), 4);
});

test('while the engine is away every instance answers for itself, read on the spot; the totals come back with it', async (t) => {
  const { hub, gws } = await cluster(t, 2);
  const [g0, g1] = gws as [Instance, Instance];
  await traffic(g0.url, 4);
  await traffic(g1.url, 2);
  await until(async () => (await requests(g0.api)) === 6 && (await requests(g1.api)) === 6, 3000, 'the totals at 6');
  hub.down();
  await traffic(g0.url, 1);
  // At once, not after three intervals: the other's last report is not mixed with figures of now.
  assert.equal(await requests(g0.api), 5);
  assert.equal(await requests(g1.api), 2);
  assert.deepEqual(Object.keys(await getJson(`${g1.api}/switchyard/instances`)), ['gw1']);
  const metrics = await series(g0.metrics, 'switchyard_upstream_server_requests_total');
  assert.deepEqual(new Set([...metrics.keys()].map((k) => JSON.parse(k).instance)), new Set(['gw0']));
  assert.equal(total(metrics), 5);
  hub.up();
  await until(async () => (await requests(g0.api)) === 7 && (await requests(g1.api)) === 7, 3000, 'the totals back at 7');
});

test('DELETE of an upstream, a cache and the gateway counters resets them on every instance', async (t) => {
  const { gws } = await cluster(t, 3);
  const [g0, g1, g2] = gws as [Instance, Instance, Instance];
  await traffic(g0.url, 2);
  await traffic(g1.url, 2, '/cached');
  await traffic(g2.url, 2);
  await until(async () => (await requests(g2.api)) === 5, 3000, 'the totals at 5');
  assert.equal((await call(`${g0.api}/http/upstreams/backend`, { method: 'DELETE' })).status, 204);
  assert.equal((await call(`${g0.api}/http/caches/edge`, { method: 'DELETE' })).status, 204);
  assert.equal((await call(`${g0.api}/http/requests`, { method: 'DELETE' })).status, 204);
  await until(() => gws.every((g) => g.pool.stats().servers.every((s) => s.requests === 0)), 2000, 'every pool reset');
  await until(() => g1.cache.stats().hit.responses === 0, 2000, 'the cache of gw1 reset');
  for (const g of gws) await until(async () => (await requests(g.api)) === 0, 2000, `the totals of ${g.name} at 0`);
  const r = await getJson(`${g2.api}/http/requests`);
  assert.ok(r.total < 10, `client requests counted again from 0 on every instance: ${r.total}`);
  // The servers, the pool and its configuration are untouched.
  assert.deepEqual(
    g1.pool.servers.map((s) => s.id),
    ['a', 'b'],
  );
});

test('a report that is not what an instance publishes is read as zeros, never as the figures', async (t) => {
  const { hub, gws } = await cluster(t, 2);
  const [g0, g1] = gws as [Instance, Instance];
  await traffic(g0.url, 3);
  await until(async () => (await requests(g1.api)) === 3, 3000, 'the totals at 3');
  const rogue = hub.connect();
  const hostile = {
    instance: 'rogue',
    host: 'x'.repeat(10_000),
    pid: 1,
    sections: {
      'pool:backend': {
        servers: [
          { id: 'a', requests: 'lots', sent: -5, responses: { '2xx': Infinity, codes: { '<b>': 9, 200: 1 } }, responseTimeHist: { buckets: { evil: 4 } } },
          null,
        ],
      },
      'cache:edge': { hit: { responses: 'x' } },
      monitor: [],
    },
  };
  const publish = setInterval(() => void rogue.broadcast('stats', JSON.stringify(hostile)).catch(() => {}), 20);
  t.after(() => clearInterval(publish));
  await until(async () => Object.keys(await getJson(`${g1.api}/switchyard/instances`)).includes('rogue'), 2000, 'the rogue report heard');
  const u = await getJson(`${g1.api}/http/upstreams/backend`);
  const a = u.peers.find((p: { id: string }) => p.id === 'a');
  assert.equal(u.peers[0].requests + u.peers[1].requests, 3);
  assert.equal(Object.keys(a.responses.codes).includes('<b>'), false);
  assert.ok(Number.isFinite(a.responses['2xx']));
  assert.equal(a.response_time_hist.buckets.evil, undefined);
  const rogueJson = (await getJson(`${g1.api}/switchyard/instances`)).rogue;
  assert.equal(rogueJson.host.length, 255);
  assert.equal(rogueJson.requests, undefined);
  assert.equal((await call(g1.metrics)).status, 200);
});

test('monitor({ sync }) takes a handle or false; without it, the handle of a pool', async (t) => {
  const hub = new MemoryHub();
  const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 't', instance: 'only' });
  t.after(() => handle.close());
  const pool = createPool({ name: 'p', servers: [{ url: 'http://127.0.0.1:1' }] });
  t.after(() => pool.close());
  assert.throws(
    () => monitor({ pools: [pool], sync: 'redis://x' as never }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'sync',
  );
  assert.throws(
    () => monitor({ pools: [pool], sync: {} as never }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'sync',
  );
  const server = createServer(chain(monitor({ pools: [pool], sync: handle, prefix: '/s' }), monitor({ pools: [pool], prefix: '/l' })));
  const g = await listen(t, server);
  assert.equal((await getJson(`${g.url}/s/api/9/switchyard`)).instance, 'only');
  assert.equal((await getJson(`${g.url}/l/api/9/switchyard`)).instances, undefined, 'no handle: this process alone');
  const alone = await getJson(`${g.url}/l/api/9/switchyard/instances`);
  assert.equal(Object.values(alone).length, 1);
  assert.equal((Object.values(alone)[0] as { self: boolean }).self, true);
});

test('merging a server over instances: sums, the largest for shared events, request-weighted times, the latest selection', () => {
  const base: ServerStats = {
    id: 'a',
    server: 'http://127.0.0.1:1',
    name: '127.0.0.1:1',
    backup: false,
    weight: 1,
    state: 'up',
    active: 0,
    maxConns: 0,
    maxFails: 1,
    failTimeout: 10_000,
    route: '',
    requests: 0,
    responses: { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0, codes: {}, total: 0 },
    sent: 0,
    received: 0,
    fails: 0,
    unavail: 0,
    downtime: 0,
    downstart: undefined,
    selected: undefined,
    headerTime: 0,
    responseTime: 0,
    healthChecks: { checks: 0, fails: 0, unhealthy: 0, lastPassed: undefined },
    responseTimeHist: { count: 0, sum: 0, buckets: { 5: 0, inf: 0 } },
  };
  const one: ServerStats = {
    ...base,
    active: 1,
    requests: 10,
    responses: { ...base.responses, '2xx': 9, '5xx': 1, codes: { 200: 9, 502: 1 }, total: 10 },
    sent: 100,
    received: 1000,
    fails: 1,
    unavail: 1,
    downtime: 3000,
    selected: '2026-01-01T00:00:01.000Z',
    headerTime: 10,
    responseTime: 20,
    healthChecks: { checks: 5, fails: 1, unhealthy: 1, lastPassed: true },
    responseTimeHist: { count: 10, sum: 200, buckets: { 5: 2, inf: 1 } },
  };
  const two: ServerStats = {
    ...base,
    active: 2,
    requests: 30,
    responses: { ...base.responses, '2xx': 30, codes: { 200: 30 }, total: 30 },
    sent: 300,
    received: 3000,
    unavail: 1,
    downtime: 2000,
    selected: '2026-01-01T00:00:02.000Z',
    headerTime: 30,
    responseTime: 40,
    healthChecks: { checks: 0, fails: 0, unhealthy: 1, lastPassed: undefined },
    responseTimeHist: { count: 30, sum: 1200, buckets: { 5: 3, inf: 0 } },
  };
  const m = mergeServer({ ...base, weight: 7, state: 'draining' }, [one, two]);
  assert.equal(m.weight, 7, "this instance's configuration");
  assert.equal(m.state, 'draining');
  assert.equal(m.active, 3);
  assert.equal(m.requests, 40);
  assert.deepEqual(m.responses, { '1xx': 0, '2xx': 39, '3xx': 0, '4xx': 0, '5xx': 1, codes: { 200: 39, 502: 1 }, total: 40 });
  assert.equal(m.sent, 400);
  assert.equal(m.received, 4000);
  assert.equal(m.fails, 1);
  assert.equal(m.unavail, 1, 'a server made unavailable is seen so by every instance: counted once');
  assert.equal(m.downtime, 3000);
  assert.equal(m.selected, '2026-01-01T00:00:02.000Z');
  assert.equal(m.headerTime, 25, '(10 × 10 + 30 × 30) / 40');
  assert.equal(m.responseTime, 35);
  assert.deepEqual(m.healthChecks, { checks: 5, fails: 1, unhealthy: 1, lastPassed: true });
  assert.equal(m.responseTimeHist.count, 40);
  assert.equal(m.responseTimeHist.sum, 1400);
  assert.equal(m.responseTimeHist.buckets['5'], 5);
  assert.equal(m.responseTimeHist.buckets.inf, 1);
});
