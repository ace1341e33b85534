// monitor({ limits }): NGINX Plus's /api/9/http/limit_reqs/{zone} and /api/9/http/limit_conns/{zone}
// (read, and reset with DELETE), the Prometheus counters, and with sync the totals over instances
// and a reset that reaches every instance.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { test, type TestContext } from 'node:test';
import { chromium } from 'playwright-core';
import { chain, InvalidOptionError, limitConnections, limitRequests, monitor } from '../../src/index.ts';
import { SyncHandle } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { fetchText, listen, until } from '../helpers.ts';
import { call, getJson } from './support.ts';

/** A gateway: the monitor at /status, then limitConnections() and limitRequests() (1r/s per client) in front of 'ok'. */
async function gateway(t: TestContext, handle?: SyncHandle, instance = 'gw') {
  const req = limitRequests({ key: '$remote_addr', rate: '1r/m', name: 'per_ip', ...(handle === undefined ? {} : { sync: handle }) });
  const conn = limitConnections({
    limits: [
      { key: '$remote_addr', max: 10, name: 'conn_ip' },
      { key: '$http_x_user', max: 1, name: 'conn_user' },
    ],
  });
  const mon = monitor({ pools: [], limits: [req, conn], prefix: '/status', write: () => true, ...(handle === undefined ? {} : { sync: handle }) });
  t.after(() => mon.close());
  const server = createServer(chain(mon, conn, req, (_req, res) => res.end(instance)));
  const g = await listen(t, server);
  return { url: g.url, api: `${g.url}/status/api/9`, metrics: `${g.url}/status/metrics`, req, conn };
}

test('limit_reqs and limit_conns as NGINX Plus shows them; DELETE resets; /metrics counts them', async (t) => {
  const gw = await gateway(t);
  for (let i = 0; i < 5; i++) await fetchText(`${gw.url}/`);
  assert.deepEqual(await getJson(`${gw.api}/http/limit_reqs`), {
    per_ip: { passed: 1, delayed: 0, rejected: 4, delayed_dry_run: 0, rejected_dry_run: 0 },
  });
  assert.deepEqual(await getJson(`${gw.api}/http/limit_reqs/per_ip`), { passed: 1, delayed: 0, rejected: 4, delayed_dry_run: 0, rejected_dry_run: 0 });
  assert.deepEqual(await getJson(`${gw.api}/http/limit_conns`), {
    conn_ip: { passed: 5, rejected: 0, rejected_dry_run: 0 },
    conn_user: { passed: 0, rejected: 0, rejected_dry_run: 0 },
  });
  assert.deepEqual((await getJson<string[]>(`${gw.api}/http`)).slice(-2), ['limit_reqs', 'limit_conns']);
  const missing = await call(`${gw.api}/http/limit_reqs/nope`);
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, 'LimitReqNotFound');
  assert.equal((await call(`${gw.api}/http/limit_conns/nope`)).body.error.code, 'LimitConnNotFound');

  const metrics = (await fetchText(gw.metrics)).body;
  assert.match(metrics, /^# TYPE switchyard_limit_requests_total counter$/m);
  assert.match(metrics, /^switchyard_limit_requests_total\{zone="per_ip",status="rejected"\} 4$/m);
  assert.match(metrics, /^switchyard_limit_requests_total\{zone="per_ip",status="delayed_dry_run"\} 0$/m);
  assert.match(metrics, /^switchyard_limit_connections_total\{zone="conn_ip",status="passed"\} 5$/m);

  assert.equal((await call(`${gw.api}/http/limit_reqs/per_ip`, { method: 'DELETE' })).status, 204);
  assert.deepEqual(await getJson(`${gw.api}/http/limit_reqs/per_ip`), { passed: 0, delayed: 0, rejected: 0, delayed_dry_run: 0, rejected_dry_run: 0 });
  assert.equal((await call(`${gw.api}/http/limit_conns/conn_ip`, { method: 'DELETE' })).status, 204);
  assert.equal(gw.conn.stats().conn_ip?.passed, 0);
});

test('the limits option takes limit middlewares only', () => {
  assert.throws(
    () => monitor({ pools: [], limits: [(() => {}) as never] }),
    (e: unknown) => e instanceof InvalidOptionError && e.option === 'limits[0]',
  );
  assert.throws(
    () => monitor({ pools: [], limits: {} as never }),
    (e: unknown) => e instanceof InvalidOptionError && e.option === 'limits',
  );
});

test('with sync: the totals over the instances, each instance in /metrics, and a reset everywhere', async (t) => {
  const hub = new MemoryHub();
  const gws = [];
  for (const name of ['gw0', 'gw1']) {
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 't', instance: name, statsInterval: 50 });
    t.after(() => handle.close());
    gws.push(await gateway(t, handle, name));
  }
  const [a, b] = gws as [Awaited<ReturnType<typeof gateway>>, Awaited<ReturnType<typeof gateway>>];
  // One shared 1r/m zone: one request passes in all.
  for (let i = 0; i < 3; i++) {
    await fetchText(`${a.url}/`);
    await fetchText(`${b.url}/`);
  }
  const want = { passed: 1, delayed: 0, rejected: 5, delayed_dry_run: 0, rejected_dry_run: 0 };
  await until(async () => JSON.stringify(await getJson(`${b.api}/http/limit_reqs/per_ip`)) === JSON.stringify(want), 5000, 'the totals on gw1');
  await until(async () => JSON.stringify(await getJson(`${a.api}/http/limit_reqs/per_ip`)) === JSON.stringify(want), 5000, 'the totals on gw0');
  await until(async () => (await getJson(`${a.api}/http/limit_conns/conn_ip`)).passed === 6, 5000, 'limit_conns totals');
  const metrics = (await fetchText(a.metrics)).body;
  assert.match(metrics, /^switchyard_limit_requests_total\{zone="per_ip",status="rejected",instance="gw[01]"\} [23]$/m);
  const instances = await getJson(`${a.api}/switchyard/instances`);
  assert.equal(instances.gw0.limit_reqs.per_ip.rejected + instances.gw1.limit_reqs.per_ip.rejected, 5);

  assert.equal((await call(`${a.api}/http/limit_reqs/per_ip`, { method: 'DELETE' })).status, 204);
  await until(() => a.req.stats().per_ip?.rejected === 0 && b.req.stats().per_ip?.rejected === 0, 5000, 'the reset on both instances');
  await until(async () => (await getJson(`${b.api}/http/limit_reqs/per_ip`)).rejected === 0, 5000, 'the totals after the reset');
});

const CHROMIUM = '/usr/bin/chromium';
const BROWSER_SKIP: string | false =
  !existsSync(CHROMIUM) && !process.env.CI && !process.env.REQUIRE_BROWSER ? `${CHROMIUM} not found (set CI or REQUIRE_BROWSER to make this a failure)` : false;

test('the dashboard shows each zone with its counters, and no Limits panel without limits', { timeout: 30_000, skip: BROWSER_SKIP }, async (t) => {
  const gw = await gateway(t);
  for (let i = 0; i < 3; i++) await fetchText(`${gw.url}/`);
  const bare = monitor({ pools: [], prefix: '/bare' });
  t.after(() => bare.close());
  const plain = await listen(t, createServer(chain(bare)));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(msg.text());
  });
  await page.goto(`${gw.url}/status/dashboard/`);
  const row = page.locator('#limits tr[data-zone="per_ip"][data-kind="requests"]');
  await row.waitFor({ timeout: 5000 });
  assert.deepEqual(await row.locator('td').allTextContents(), ['per_ip', 'requests', '1', '0', '2', '0']);
  assert.equal(await page.locator('#limits tr[data-zone="conn_user"][data-kind="connections"]').count(), 1);
  await page.goto(`${plain.url}/bare/dashboard/`);
  await page.locator('#status.status:not(.error)').filter({ hasText: 'updated' }).waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#limits-section').isHidden(), true, 'no limits: no panel');
  assert.deepEqual(errors, []);
});
