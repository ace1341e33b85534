// The monitor() dashboard in a real browser: Debian's chromium driven by playwright-core, in front
// of a real gateway (monitor + cache + balance over three upstreams on port 0) with a trickle of
// traffic so the rates move. Checks that the page loads cleanly under its CSP, follows pool changes,
// drives PATCHes when writes are allowed and offers none when they are not.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import os from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { balance, cache, chain, createPool, monitor, streamBalance, type CacheMiddleware, type UpstreamPool } from '../../src/index.ts';
import { SyncHandle } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { fetchText, listen, until, upstream } from '../helpers.ts';
import { echo, exchangeBytes, gatewayOf } from '../stream/support.ts';

const CHROMIUM = '/usr/bin/chromium';
const HAVE_BROWSER = existsSync(CHROMIUM);
const REQUIRED = Boolean(process.env.CI) || Boolean(process.env.REQUIRE_BROWSER);
const SKIP: string | false =
  !HAVE_BROWSER && !REQUIRED ? `${CHROMIUM} not found: install Debian's chromium (set CI or REQUIRE_BROWSER to make this a failure)` : false;
const T = { timeout: 30_000, skip: SKIP };
const IDS = ['a', 'b', 'c'] as const;

interface Gw {
  url: string;
  pool: UpstreamPool;
  cache: CacheMiddleware;
}

/**
 * Three upstreams, a pool `backend` (ids a, b, c), a cache `edge`, and
 * `chain(monitor({ prefix: '/status', server, write }), cache, balance(pool))` on port 0, with a
 * request every 50 ms (alternately cached and not) until the test ends.
 */
async function gateway(t: TestContext, write?: () => boolean): Promise<Gw> {
  const ups = await Promise.all(
    IDS.map((id) =>
      upstream(t, id, (req, res) => {
        if (req.url?.startsWith('/cached') === true) res.setHeader('cache-control', 'max-age=60');
        res.setHeader('content-type', 'text/plain');
        res.end(`hello from ${id}\n`);
      }),
    ),
  );
  const pool = createPool({ name: 'backend', servers: ups.map((u, i) => ({ url: u.url, id: IDS[i] })) });
  t.after(() => pool.close());
  const c = cache({ name: 'edge' });
  t.after(() => c.close());
  const server = createServer();
  const mon = monitor({ pools: [pool], caches: [c], prefix: '/status', server, ...(write === undefined ? {} : { write }) });
  t.after(() => mon.close());
  server.on('request', chain(mon, c, balance(pool)));
  const g = await listen(t, server);

  let n = 0;
  let stopped = false;
  const tick = setInterval(() => {
    if (stopped) return;
    n++;
    fetchText(`${g.url}${n % 2 === 0 ? '/cached' : `/live/${n}`}`).catch(() => undefined);
  }, 50);
  // Registered after listen(): t.after hooks run in reverse order, so traffic stops before the gateway closes.
  t.after(() => {
    stopped = true;
    clearInterval(tick);
  });
  return { url: g.url, pool, cache: c };
}

interface Problems {
  /** Everything that went wrong in the page, one line each. */
  list: string[];
}

/** Launches chromium (closed in t.after) and opens a page that records every error it sees. */
async function browserPage(t: TestContext): Promise<{ page: Page; problems: Problems }> {
  assert.ok(HAVE_BROWSER, `${CHROMIUM} is missing but CI / REQUIRE_BROWSER asks for the browser tests`);
  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  t.after(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems: Problems = { list: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') problems.list.push(`console.${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.list.push(`pageerror: ${err.message}`));
  page.on('requestfailed', (req) => problems.list.push(`requestfailed: ${req.method()} ${req.url()}: ${req.failure()?.errorText ?? '?'}`));
  page.on('response', (res) => {
    if (res.status() >= 400) problems.list.push(`response ${res.status()}: ${res.request().method()} ${res.url()}`);
  });
  // CSP violations also reach the console, but record them from the page too.
  // (A string: this project's typecheck has no DOM library.)
  await page.addInitScript(`document.addEventListener('securitypolicyviolation', function (e) {
    console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI);
  });`);
  return { page, problems };
}

const isCsp = (line: string): boolean => line.includes('Content Security Policy') || line.includes('CSP violation');

/** The problems, each once. */
function unique(lines: readonly string[]): string[] {
  return [...new Set(lines)];
}

/**
 * The problems other than CSP violations, each once: the first test owns the "no CSP violation"
 * check, so one CSP bug fails one test and the others still report on their own behaviour.
 */
function nonCsp(problems: Problems): string[] {
  return unique(problems.list.filter((line) => !isCsp(line)));
}

/** The little of the DOM that {@link refreshes} reads. */
interface StatusDocument {
  getElementById(id: string): { textContent: string | null; classList: { contains(name: string): boolean } } | null;
}

/** Waits for `n` more successful refreshes of the page (its status line changes to "updated …"). */
async function refreshes(page: Page, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const before = await page.locator('#status').textContent();
    // A function, not a string: the page's CSP forbids eval. `document` reached through globalThis:
    // this project's typecheck has no DOM library.
    await page.waitForFunction(
      (prev: string | null) => {
        const s = (globalThis as unknown as { document: StatusDocument }).document.getElementById('status');
        return s !== null && s.textContent !== prev && (s.textContent ?? '').startsWith('updated') && !s.classList.contains('error');
      },
      before,
      { timeout: 2500, polling: 50 },
    );
    // The status line shows seconds: make sure the next one is a different refresh.
    await delay(1000);
  }
}

async function stateOf(page: Page, id: string): Promise<string | null> {
  return page.locator(`table[data-upstream="backend"] tr[data-server="${id}"] [data-state]`).getAttribute('data-state', { timeout: 2500 });
}

test('the dashboard loads under its CSP with no errors and lists the servers and the cache', T, async (t) => {
  const gw = await gateway(t);
  const { page, problems } = await browserPage(t);

  const res = await page.goto(`${gw.url}/status/dashboard`, { waitUntil: 'load' });
  assert.ok(res, 'no response for the dashboard');
  assert.equal(res.status(), 200);
  assert.equal(page.url(), `${gw.url}/status/dashboard/`, 'the slash-less address redirects to the directory form');
  const redirect = await res.request().redirectedFrom()?.response();
  assert.equal(redirect?.status(), 301);
  const csp = res.headers()['content-security-policy'];
  assert.ok(csp, 'the page has a content-security-policy header');
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /default-src 'none'/);

  await refreshes(page, 3);

  const rows = page.locator('table[data-upstream="backend"] tbody tr[data-server]');
  assert.equal(await rows.count(), 3, 'one row per server');
  assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-server'))), [...IDS]);
  for (const id of IDS) assert.equal(await stateOf(page, id), 'up', `server ${id} is up`);
  assert.equal(await page.locator('#caches tr[data-cache="edge"]').count(), 1, 'the caches table shows the cache');
  assert.equal(await page.locator('#streams-section').isHidden(), true, 'no streams: no Streams panel');
  assert.match((await page.locator('#summary').textContent()) ?? '', /^version \d+\.\d+\.\d+, up \d+ s, \d+ requests, read-only$/);
  // The trickle of traffic shows as a non-zero rate in the chart legend.
  const legend = (await page.locator('#legend').textContent()) ?? '';
  const rate = Number(/backend: ([\d.]+) req\/s/.exec(legend)?.[1] ?? NaN);
  assert.ok(rate > 0, `the legend shows a non-zero rate: "${legend}"`);
  assert.ok(gw.cache.stats().hit.responses > 0, 'the cache served hits');
  assert.deepEqual(nonCsp(problems), [], 'no console errors, failed requests or error responses over 3 refreshes');
  assert.deepEqual(unique(problems.list.filter(isCsp)), [], 'no CSP violations: the page works under its own content-security-policy');
});

test('a server taken down through the pool shows as down within one refresh', T, async (t) => {
  const gw = await gateway(t);
  const { page, problems } = await browserPage(t);
  await page.goto(`${gw.url}/status/dashboard/`);
  await page.locator('tr[data-server="b"] [data-state="up"]').waitFor({ timeout: 2500 });

  gw.pool.update('b', { down: true });
  await page.locator('table[data-upstream="backend"] tr[data-server="b"] [data-state="down"]').waitFor({ timeout: 2500 });
  assert.equal(await stateOf(page, 'a'), 'up');
  assert.equal(await stateOf(page, 'c'), 'up');
  assert.deepEqual(nonCsp(problems), []);
});

test('with writes allowed, the drain and up buttons change the server', T, async (t) => {
  const gw = await gateway(t, () => true);
  const { page, problems } = await browserPage(t);
  await page.goto(`${gw.url}/status/dashboard/`);
  await page.locator('tr[data-server="a"] [data-state="up"]').waitFor({ timeout: 2500 });
  assert.match((await page.locator('#summary').textContent()) ?? '', /changes allowed$/);

  await page.locator('button[data-action="drain"][data-server="a"]').click({ timeout: 2500 });
  await until(() => gw.pool.get('a')!.drain, 2500, 'pool.get("a").drain');
  await page.locator('table[data-upstream="backend"] tr[data-server="a"] [data-state="draining"]').waitFor({ timeout: 2500 });
  assert.equal(gw.pool.get('a')!.down, false);
  assert.equal(gw.pool.get('b')!.drain, false, 'only a is drained');
  assert.equal(await page.locator('button[data-action="drain"][data-server="a"]').count(), 0, 'a draining server offers no drain button');

  await page.locator('button[data-action="up"][data-server="a"]').click({ timeout: 2500 });
  await until(() => !gw.pool.get('a')!.drain, 2500, 'pool.get("a").drain to be false again');
  assert.equal(gw.pool.get('a')!.down, false);
  await page.locator('table[data-upstream="backend"] tr[data-server="a"] [data-state="up"]').waitFor({ timeout: 2500 });
  assert.equal(await page.locator('#status').getAttribute('class'), 'status', 'no "change failed" status');
  assert.deepEqual(nonCsp(problems), []);
});

test('with writes refused (the default), the page offers no buttons and a PATCH gets 405', T, async (t) => {
  const gw = await gateway(t);
  const { page, problems } = await browserPage(t);
  await page.goto(`${gw.url}/status/dashboard/`);
  await page.locator('tr[data-server="c"] [data-state="up"]').waitFor({ timeout: 2500 });
  await refreshes(page, 1);

  assert.equal(await page.locator('button[data-action]').count(), 0, 'no drain/down/up buttons');
  assert.equal(await page.locator('button').count(), 0, 'no buttons at all');
  assert.match((await page.locator('#summary').textContent()) ?? '', /read-only$/);
  assert.deepEqual(nonCsp(problems), []);

  const answer = await page.evaluate(async () => {
    const r = await fetch('../api/9/http/upstreams/backend/servers/a', {
      method: 'PATCH',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ drain: true }),
    });
    return { status: r.status, body: (await r.json()) as { error?: { code?: string } } };
  });
  assert.equal(answer.status, 405);
  assert.equal(answer.body.error?.code, 'MethodDisabled');
  assert.equal(gw.pool.get('a')!.drain, false, 'the server is unchanged');
  // The refused PATCH is the only error the page saw (Chromium also logs it to the console).
  const others = nonCsp(problems).filter((p) => !p.includes('405'));
  assert.deepEqual(others, []);
  assert.ok(
    problems.list.some((p) => p.startsWith('response 405: PATCH')),
    `the 405 was seen: ${problems.list.join('; ')}`,
  );
});

test('a screenshot of the live dashboard is written to the temp dir', T, async (t) => {
  const gw = await gateway(t, () => true);
  const { page, problems } = await browserPage(t);
  const file = path.join(os.tmpdir(), 'switchyard-dashboard.png');
  rmSync(file, { force: true });
  await page.goto(`${gw.url}/status/dashboard/`);
  await page.locator('tr[data-server="a"] [data-state="up"]').waitFor({ timeout: 2500 });
  gw.pool.update('c', { drain: true });
  await refreshes(page, 2);
  await page.locator('tr[data-server="c"] [data-state="draining"]').waitFor({ timeout: 2500 });
  await page.screenshot({ path: file, fullPage: true });

  assert.ok(existsSync(file), `${file} exists`);
  const size = statSync(file).size;
  assert.ok(size > 10 * 1024, `the screenshot is larger than 10 KB (${size} bytes)`);
  assert.deepEqual([...readFileSync(file).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG signature');
  assert.deepEqual(nonCsp(problems), []);
});

test('with sync, the page shows the totals over the instances, their number and a row per instance', T, async (t) => {
  const hub = new MemoryHub();
  const up = await upstream(t, 'a');
  const urls: string[] = [];
  const pools: UpstreamPool[] = [];
  for (const name of ['gw0', 'gw1']) {
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 't', instance: name, statsInterval: 100 });
    t.after(() => handle.close());
    const pool = createPool({ name: 'backend', servers: [{ id: 'a', url: up.url }], sync: handle });
    t.after(() => pool.close());
    pools.push(pool);
    const server = createServer();
    const mon = monitor({ pools: [pool], prefix: '/status', server });
    t.after(() => mon.close());
    server.on('request', chain(mon, balance(pool)));
    urls.push((await listen(t, server)).url);
  }
  for (let i = 0; i < 3; i++) await fetchText(`${urls[0]}/x`);
  for (let i = 0; i < 2; i++) await fetchText(`${urls[1]}/x`);
  const { page, problems } = await browserPage(t);
  await page.goto(`${urls[1]}/status/dashboard/`);
  const cell = page.locator('table[data-upstream="backend"] tr[data-server="a"] td:nth-child(6)');
  await until(async () => (await cell.textContent({ timeout: 2500 })) === '5', 5000, 'the requests of a over both instances (5)');
  assert.match((await page.locator('#summary').textContent()) ?? '', /, 2 instances, read-only$/);
  assert.equal(await page.locator('#instances tr[data-instance]').count(), 2);
  assert.equal(await page.locator('#instances tr[data-instance="gw0"] td:nth-child(6)').textContent(), '3');
  assert.match((await page.locator('#instances tr[data-instance="gw1"] td:first-child').textContent()) ?? '', /this one/);
  assert.equal(pools[1]!.stats().servers[0]!.requests, 2, 'the instance serving the page counted only its own');
  assert.deepEqual(nonCsp(problems), []);
});

test('the Streams panel shows the zone and the stream upstream servers with the figures of real TCP traffic', T, async (t) => {
  const servers = [await echo(t), await echo(t)];
  const pool = createPool({ name: 'tcp_backend', servers: servers.map((s, i) => ({ url: s.url, id: `e${i}` })) });
  t.after(() => pool.close());
  const handler = streamBalance(pool, { zone: 'tcp_front' });
  const { port } = await gatewayOf(t, handler);
  const mon = monitor({ pools: [], streams: [handler], prefix: '/status' });
  t.after(() => mon.close());
  const g = await listen(t, createServer(chain(mon)));
  // four sessions of 5 bytes each way, two per server (round robin)
  for (let i = 0; i < 4; i++) assert.equal(await exchangeBytes(port, 'ping!'), 'ping!');
  await until(() => handler.stats().processing === 0, 2500, 'the sessions to end');

  const { page, problems } = await browserPage(t);
  await page.goto(`${g.url}/status/dashboard/`);
  const zone = page.locator('#stream-zones tr[data-zone="tcp_front"]');
  await zone.waitFor({ timeout: 2500 });
  assert.equal(await page.locator('#streams-section').isVisible(), true);
  assert.deepEqual(await zone.locator('td').allTextContents(), ['tcp_front', '0', '4', '4 / 0 / 0', '4', '0', '20 B', '20 B']);
  const peers = page.locator('table[data-stream-upstream="tcp_backend"] tbody tr[data-server]');
  assert.equal(await peers.count(), 2);
  for (const id of ['e0', 'e1']) {
    const cells = await page.locator(`table[data-stream-upstream="tcp_backend"] tr[data-server="${id}"] td`).allTextContents();
    // Server, State, Active, Connections, Sent, Received, Connect ms, First byte ms, Response ms, Fails, Unavail
    assert.deepEqual([cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[9], cells[10]], [id, 'up', '0', '2', '10 B', '10 B', '0', '0']);
    for (const ms of cells.slice(6, 9)) assert.match(ms ?? '', /^\d+$/, `times in ms: ${cells.join(' | ')}`);
  }
  // refreshed like the other panels: more traffic shows without reloading
  await exchangeBytes(port, 'x'.repeat(2048));
  await until(async () => (await zone.locator('td').nth(2).textContent()) === '5', 2500, 'the fifth connection on the page');
  await until(async () => (await zone.locator('td').nth(6).textContent()) === '2.0 KiB', 2500, 'the bytes received on the page');
  assert.deepEqual(nonCsp(problems), []);
});

test('with sync, the Streams panel shows the totals over the instances and each instance its stream connections', T, async (t) => {
  const hub = new MemoryHub();
  const server = await echo(t);
  const gws: Array<{ url: string; port: number }> = [];
  for (const name of ['gw0', 'gw1']) {
    const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 't-stream', instance: name, statsInterval: 100 });
    t.after(() => handle.close());
    const pool = createPool({ name: 'tcp_backend', servers: [{ id: 'e0', url: server.url }], sync: handle });
    t.after(() => pool.close());
    const handler = streamBalance(pool, { zone: 'tcp_front' });
    const { port } = await gatewayOf(t, handler);
    const mon = monitor({ pools: [], streams: [handler], prefix: '/status' });
    t.after(() => mon.close());
    gws.push({ url: (await listen(t, createServer(chain(mon)))).url, port });
  }
  const [g0, g1] = gws as [(typeof gws)[0], (typeof gws)[0]];
  for (let i = 0; i < 3; i++) await exchangeBytes(g0.port, 'ping!');
  await exchangeBytes(g1.port, 'ping!');
  const { page, problems } = await browserPage(t);
  await page.goto(`${g1.url}/status/dashboard/`);
  const zone = page.locator('#stream-zones tr[data-zone="tcp_front"]');
  await until(async () => (await zone.locator('td').nth(2).textContent({ timeout: 2500 })) === '4', 5000, 'the zone connections over both instances (4)');
  assert.equal(await zone.locator('td').nth(6).textContent(), '20 B');
  const peer = page.locator('table[data-stream-upstream="tcp_backend"] tr[data-server="e0"] td');
  await until(async () => (await peer.nth(3).textContent()) === '4', 5000, 'the server connections over both instances (4)');
  assert.equal(await page.locator('#instances tr[data-instance="gw0"] td:nth-child(7)').textContent({ timeout: 2500 }), '3');
  assert.equal(await page.locator('#instances tr[data-instance="gw1"] td:nth-child(7)').textContent({ timeout: 2500 }), '1');
  assert.deepEqual(nonCsp(problems), []);
});
