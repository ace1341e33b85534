// healthCheck() with real traffic: upstreams on port 0 whose health endpoint can fail in every way
// NGINX Plus recognizes (status, header, body, hang past the timeout, refused connection) and pass
// again; a gateway createServer(chain(balance(pool))) must keep requests (sticky-bound ones too) off
// servers that are unhealthy or still `checking` (nginx-semantics.md section 5).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { balance, chain, healthCheck, sticky, type HealthCheck, type HealthCheckOptions, type ProbeResult, type UpstreamPool } from '../../src/index.ts';
import { fetchText, gateway, poolOf, type Reply } from '../helpers.ts';

type Mode = 'ok' | 'status' | 'header' | 'body' | 'hang' | 'refused';

interface Backend {
  name: string;
  url: string;
  port: number;
  /** Requests other than probes this backend answered. */
  hits: number;
  /** Probes it received. */
  probes: number;
  mode: Mode;
  /** While set, probes wait for it before being answered. */
  gate: Promise<void> | undefined;
  set(mode: Mode): Promise<void>;
}

const HEALTH = '/healthz';
/** What a healthy backend's health endpoint satisfies; each failure mode breaks exactly one part. */
const MATCH: HealthCheckOptions['match'] = { status: '200-399', headers: { 'X-Health': 'ok' }, body: /alive/ };

/** A backend answering traffic with its name, and probes of HEALTH according to its mode. */
async function backend(t: TestContext, name: string): Promise<Backend> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url !== HEALTH) {
        b.hits++;
        res.setHeader('x-upstream', name);
        res.end(name);
        return;
      }
      b.probes++;
      const answer = (): void => probeAnswer(b.mode, res);
      if (b.gate !== undefined) void b.gate.then(answer);
      else answer();
    });
  });
  let listening = false;
  const start = async (port: number): Promise<number> => {
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    listening = true;
    return (server.address() as { port: number }).port;
  };
  const stop = async (): Promise<void> => {
    if (!listening) return;
    listening = false;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  const port = await start(0);
  const b: Backend = {
    name,
    url: `http://127.0.0.1:${port}`,
    port,
    hits: 0,
    probes: 0,
    mode: 'ok',
    gate: undefined,
    async set(mode) {
      if (mode === 'refused' && b.mode !== 'refused') await stop();
      if (mode !== 'refused' && b.mode === 'refused') await start(port);
      b.mode = mode;
    },
  };
  t.after(stop);
  return b;
}

function probeAnswer(mode: Mode, res: ServerResponse): void {
  switch (mode) {
    case 'ok':
      res.setHeader('x-health', 'ok');
      res.end('alive');
      return;
    case 'status':
      res.statusCode = 500;
      res.setHeader('x-health', 'ok');
      res.end('alive');
      return;
    case 'header':
      res.end('alive');
      return;
    case 'body':
      res.setHeader('x-health', 'ok');
      res.end('dead');
      return;
    case 'hang':
      // Headers are sent, the body never ends: only the probe timeout can settle it.
      res.setHeader('x-health', 'ok');
      res.write('ali');
      return;
    case 'refused':
      res.destroy();
  }
}

async function backends(t: TestContext, names: readonly string[]): Promise<Record<string, Backend>> {
  const out: Record<string, Backend> = {};
  for (const n of names) out[n] = await backend(t, n);
  return out;
}

/** A check driven by `check()` (the interval is too long to fire during a test) unless options say otherwise. */
function checkOf(t: TestContext, pool: UpstreamPool, options: HealthCheckOptions = {}): HealthCheck {
  const hc = healthCheck(pool, { uri: HEALTH, interval: '1h', timeout: '300ms', match: MATCH, ...options });
  t.after(() => hc.stop());
  return hc;
}

async function plainGateway(t: TestContext, pool: UpstreamPool): Promise<string> {
  return (await gateway(t, chain(balance(pool)))).url;
}

interface Tally {
  /** Replies by body (the backend's name), or `status <n>` for replies that are not 200. */
  by: Record<string, number>;
  replies: Reply[];
}

async function tally(url: string, n: number, headers?: Record<string, string>): Promise<Tally> {
  const by: Record<string, number> = {};
  const replies: Reply[] = [];
  for (let i = 0; i < n; i++) {
    const r = await fetchText(url, { headers });
    replies.push(r);
    const k = r.status === 200 ? r.body : `status ${r.status}`;
    by[k] = (by[k] ?? 0) + 1;
  }
  return { by, replies };
}

const stateOf = (pool: UpstreamPool, id: string): string => pool.stats().servers.find((s) => s.id === id)!.state;

/** Resolves with the next event `name` of `hc` whose id (or result.id) is `id`, or rejects after `ms`. */
function next(hc: HealthCheck, name: 'healthy' | 'unhealthy' | 'probe', id: string, ms = 3000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      hc.off(name, on);
      reject(new Error(`no ${name} event for ${id} within ${ms} ms`));
    }, ms);
    const on = (arg: string | ProbeResult): void => {
      if ((typeof arg === 'string' ? arg : arg.id) !== id) return;
      clearTimeout(timer);
      hc.off(name, on);
      resolve();
    };
    hc.on(name, on);
  });
}

test('an unhealthy server gets no requests while the others share them, and gets them again once it passes (real 50 ms interval)', async (t) => {
  const bs = await backends(t, ['a', 'b', 'c']);
  const pool = poolOf(t, bs, { name: 'hc' });
  const hc = checkOf(t, pool, { interval: '50ms' });
  await hc.ready;
  const url = await plainGateway(t, pool);

  const before = await tally(url, 21);
  assert.deepEqual(before.by, { a: 7, b: 7, c: 7 }, 'all healthy: round robin over the three');

  const down = next(hc, 'unhealthy', 'b');
  await bs.b!.set('status');
  await down;
  assert.equal(stateOf(pool, 'b'), 'unhealthy');
  const hitsBefore = bs.b!.hits;
  const during = await tally(url, 20);
  assert.deepEqual(during.by, { a: 10, c: 10 }, 'b unhealthy: a and c share every request');
  assert.equal(bs.b!.hits, hitsBefore, 'b received no request (probes aside)');
  assert.ok(bs.b!.probes > 1, 'b is still probed while unhealthy');

  const up = next(hc, 'healthy', 'b');
  await bs.b!.set('ok');
  await up;
  assert.equal(stateOf(pool, 'b'), 'up');
  const after = await tally(url, 21);
  assert.ok((after.by.b ?? 0) >= 6, `b gets its share again: ${JSON.stringify(after.by)}`);
  assert.equal((after.by.a ?? 0) + (after.by.b ?? 0) + (after.by.c ?? 0), 21);
});

const KINDS: Array<{ mode: Exclude<Mode, 'ok'>; reason: RegExp }> = [
  { mode: 'status', reason: /500/ },
  { mode: 'header', reason: /x-health/i },
  { mode: 'body', reason: /body/i },
  { mode: 'hang', reason: /timeout/ },
  { mode: 'refused', reason: /ECONNREFUSED/ },
];

for (const { mode, reason } of KINDS) {
  test(`failure kind "${mode}" takes the server out of rotation, passing again brings it back`, async (t) => {
    const bs = await backends(t, ['a', 'b', 'c']);
    const pool = poolOf(t, bs, { name: 'hc' });
    const hc = checkOf(t, pool);
    const probes: ProbeResult[] = [];
    hc.on('probe', (r) => probes.push(r));
    await hc.ready;
    const url = await plainGateway(t, pool);
    assert.deepEqual((await tally(url, 3)).by, { a: 1, b: 1, c: 1 });

    await bs.b!.set(mode);
    await hc.check();
    const last = probes.filter((p) => p.id === 'b').at(-1)!;
    assert.equal(last.passed, false, `the ${mode} probe fails`);
    assert.equal(last.healthy, false);
    assert.match(last.reason ?? '', reason);
    assert.equal(stateOf(pool, 'b'), 'unhealthy');
    const hits = bs.b!.hits;
    const during = await tally(url, 20);
    assert.deepEqual(during.by, { a: 10, c: 10 }, `b (${mode}) gets nothing`);
    assert.equal(bs.b!.hits, hits);

    await bs.b!.set('ok');
    await hc.check();
    assert.equal(stateOf(pool, 'b'), 'up');
    const after = await tally(url, 21);
    assert.ok((after.by.b ?? 0) >= 6, `b back in rotation: ${JSON.stringify(after.by)}`);
  });
}

test('sticky-bound requests avoid an unhealthy server (rebalanced, new cookie) and reach it again after it recovers', async (t) => {
  const bs = await backends(t, ['a', 'b', 'c']);
  const pool = poolOf(t, bs, { name: 'hc' });
  const hc = checkOf(t, pool);
  await hc.ready;
  const mw = sticky(pool, { cookie: true });
  t.after(() => mw.close());
  const url = (await gateway(t, chain(mw, balance(pool)))).url;
  const sidB = pool.get('b')!.sid;
  const cookie = { cookie: `srv_id=${sidB}` };

  const bound = await tally(url, 5, cookie);
  assert.deepEqual(bound.by, { b: 5 }, 'healthy b: the cookie binds every request to it');

  await bs.b!.set('status');
  await hc.check();
  const hits = bs.b!.hits;
  const during = await tally(url, 10, cookie);
  assert.equal(bs.b!.hits, hits, 'no bound request reaches unhealthy b');
  assert.equal(during.by.b, undefined);
  assert.equal((during.by.a ?? 0) + (during.by.c ?? 0), 10, `rebalanced to a and c: ${JSON.stringify(during.by)}`);
  for (const r of during.replies) {
    const set = (r.headers['set-cookie'] ?? []).map((l) => l.split(';')[0]);
    assert.deepEqual(set, [`srv_id=${pool.get(r.body)!.sid}`], 'a new cookie names the server that answered');
  }

  await bs.b!.set('ok');
  await hc.check();
  const after = await tally(url, 5, cookie);
  assert.deepEqual(after.by, { b: 5 }, 'recovered b gets its bound requests again');
});

test('mandatory: a server added at run time is `checking` and gets nothing until its first probe passes', async (t) => {
  const bs = await backends(t, ['a', 'b', 'c']);
  const pool = poolOf(t, { a: bs.a!, b: bs.b! }, { name: 'hc' });
  const hc = checkOf(t, pool, { mandatory: true, timeout: '5s' });
  await hc.ready;
  const url = await plainGateway(t, pool);
  assert.deepEqual((await tally(url, 4)).by, { a: 2, b: 2 });

  let open!: () => void;
  bs.c!.gate = new Promise<void>((resolve) => (open = resolve));
  const passed = next(hc, 'healthy', 'c');
  pool.add({ id: 'c', url: bs.c!.url });
  assert.equal(stateOf(pool, 'c'), 'checking', 'checking at once');
  const during = await tally(url, 20);
  assert.deepEqual(during.by, { a: 10, b: 10 }, 'no request for c while its first probe runs');
  assert.equal(bs.c!.hits, 0);
  assert.equal(bs.c!.probes, 1, 'the first probe of c is running');
  assert.equal(stateOf(pool, 'c'), 'checking');

  bs.c!.gate = undefined;
  open();
  await passed;
  assert.equal(stateOf(pool, 'c'), 'up');
  const after = await tally(url, 21);
  assert.ok((after.by.c ?? 0) >= 6, `c in rotation after its first pass: ${JSON.stringify(after.by)}`);
});

test('mandatory: a server added at run time whose first probe fails never gets traffic', async (t) => {
  const bs = await backends(t, ['a', 'b', 'c']);
  const pool = poolOf(t, { a: bs.a!, b: bs.b! }, { name: 'hc' });
  const hc = checkOf(t, pool, { mandatory: true });
  await hc.ready;
  const url = await plainGateway(t, pool);

  await bs.c!.set('status');
  const probed = next(hc, 'probe', 'c');
  pool.add({ id: 'c', url: bs.c!.url });
  assert.equal(stateOf(pool, 'c'), 'checking');
  assert.deepEqual((await tally(url, 10)).by, { a: 5, b: 5 });
  await probed;
  assert.equal(stateOf(pool, 'c'), 'unhealthy');
  assert.deepEqual((await tally(url, 20)).by, { a: 10, b: 10 });
  await hc.check();
  assert.deepEqual((await tally(url, 20)).by, { a: 10, b: 10 });
  assert.equal(bs.c!.hits, 0, 'c never got a request');
});

test('every server unhealthy: balance() answers 503 (no server available)', async (t) => {
  const bs = await backends(t, ['a', 'b']);
  const pool = poolOf(t, bs, { name: 'hc' });
  const hc = checkOf(t, pool);
  await hc.ready;
  const url = await plainGateway(t, pool);
  await bs.a!.set('status');
  await bs.b!.set('body');
  await hc.check();
  assert.equal(stateOf(pool, 'a'), 'unhealthy');
  assert.equal(stateOf(pool, 'b'), 'unhealthy');
  const r = await tally(url, 4);
  assert.deepEqual(r.by, { 'status 503': 4 });
  assert.equal(bs.a!.hits + bs.b!.hits, 0);

  await bs.b!.set('ok');
  await hc.check();
  assert.deepEqual((await tally(url, 4)).by, { b: 4 }, 'b back: it takes everything');
});

test('a single-server pool whose only server is unhealthy answers 503 (not sent to it anyway)', async (t) => {
  const bs = await backends(t, ['a']);
  const pool = poolOf(t, bs, { name: 'hc' });
  const hc = checkOf(t, pool);
  await hc.ready;
  const url = await plainGateway(t, pool);
  assert.deepEqual((await tally(url, 2)).by, { a: 2 });
  await bs.a!.set('hang');
  await hc.check();
  assert.equal(stateOf(pool, 'a'), 'unhealthy');
  assert.deepEqual((await tally(url, 3)).by, { 'status 503': 3 });
  assert.equal(bs.a!.hits, 2);
  await bs.a!.set('ok');
  await hc.check();
  assert.deepEqual((await tally(url, 2)).by, { a: 2 });
});
