// Keeps the runnable examples working: each one is started as users start it
// (`node examples/<framework>/server.ts`, importing the package by name from the
// built dist/), answers through its gateway, and stops cleanly on SIGTERM.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { fetchText, until } from '../helpers.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

interface Started {
  child: ChildProcess;
  url: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts an example with PORT=0 (and `env`) and waits for its "listening on <url>" line. */
async function start(t: TestContext, name: string, env: Record<string, string> = {}): Promise<Started> {
  assert.ok(existsSync(`${root}dist/index.js`), 'dist/ is missing: build the package first (npm run build; npm test does it)');
  const child = spawn(process.execPath, [`examples/${name}/server.ts`], {
    cwd: root,
    env: { ...process.env, PORT: '0', NODE_OPTIONS: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening on" line within 15 s; stdout: ${stdout}\nstderr: ${stderr}`)), 15_000);
    const check = (): void => {
      const m = /listening on (http:\/\/[\w.:[\]]+)/.exec(stdout);
      if (m === null) return;
      clearTimeout(timer);
      child.stdout!.off('data', check);
      resolve(m[1]!);
    };
    child.stdout!.on('data', check);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the example exited (${code ?? signal}) before listening; stderr: ${stderr}`));
    });
  });
  return { child, url, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Sends SIGTERM and waits for the example to exit, at most `ms`: one that does not has something left open. */
async function stop(ex: Started, ms = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  ex.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(resolve, ms, 'timeout');
  });
  const ended = await Promise.race([ex.exited, timeout]);
  clearTimeout(timer);
  assert.notEqual(ended, 'timeout', `the example did not end by itself within ${ms / 1000} s of SIGTERM: something stays open`);
  return ended as { code: number | null; signal: NodeJS.Signals | null };
}

/** Opens a WebSocket, collects `count` messages (sending `send` after the first), closes it. */
async function wsMessages(url: string, send: string, count: number): Promise<string[]> {
  const ws = new WebSocket(url);
  const messages: string[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${messages.length} of ${count} messages`)), 5000);
      ws.on('message', (data) => {
        messages.push(String(data));
        if (messages.length === 1) ws.send(send);
        if (messages.length === count) {
          clearTimeout(timer);
          resolve();
        }
      });
      ws.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    return messages;
  } finally {
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    ws.close();
    await closed;
  }
}

/**
 * What every example shows: balancing with retries, a parsed JSON body re-sent, a WebSocket route, a
 * clean stop; `more` checks what one example shows besides, before it is stopped.
 */
async function exercise(t: TestContext, name: string, more?: (ex: Started) => Promise<void>): Promise<void> {
  const ex = await start(t, name);

  // gamma answers 503 to every other request it gets: the retries hide it, every answer is a 200.
  const upstreams = new Set<string>();
  for (let i = 0; i < 9; i++) {
    const r = await fetchText(`${ex.url}/api/hello?i=${i}`);
    assert.equal(r.status, 200, r.body);
    const body = JSON.parse(r.body) as { upstream: string; url: string };
    assert.equal(body.url, `/api/hello?i=${i}`);
    upstreams.add(body.upstream);
  }
  assert.deepEqual([...upstreams].sort(), ['alpha', 'beta', 'gamma']);

  const post = await fetchText(`${ex.url}/api/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{ "hello" : "world" }' });
  assert.equal(post.status, 200);
  assert.deepEqual(JSON.parse((JSON.parse(post.body) as { body: string }).body), { hello: 'world' });

  // /static is cached: the first request fills the cache, the second is answered from it.
  const miss = await fetchText(`${ex.url}/static/logo.svg`);
  const hit = await fetchText(`${ex.url}/static/logo.svg`);
  assert.equal(miss.status, 200);
  assert.equal(miss.headers['x-cache-status'], 'MISS');
  assert.equal(hit.headers['x-cache-status'], 'HIT');
  assert.equal(hit.body, miss.body);

  // /app is sticky: the cookie of the first answer keeps the next ones on the same server.
  const page = await fetchText(`${ex.url}/app/cart`);
  const cookie = String(page.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
  assert.match(cookie, /^srv_id=[0-9a-f]{32}$/);
  const owner = (JSON.parse(page.body) as { upstream: string }).upstream;
  for (let i = 0; i < 4; i++) {
    const again = await fetchText(`${ex.url}/app/cart`, { headers: { cookie } });
    assert.equal((JSON.parse(again.body) as { upstream: string }).upstream, owner);
  }

  const home = await fetchText(`${ex.url}/`);
  assert.equal(home.status, 200);
  assert.match(home.body, new RegExp(`switchyard ${name} example`));

  // One room, one server: two connections to the same room meet the same upstream.
  const ws = ex.url.replace('http:', 'ws:');
  const first = await wsMessages(`${ws}/chat?room=lobby`, 'hi', 2);
  const second = await wsMessages(`${ws}/chat?room=lobby`, 'again', 2);
  const server = first[0]!.split(':')[0]!;
  assert.deepEqual(first, [`${server}: welcome to /chat?room=lobby`, `${server}: hi`]);
  assert.deepEqual(second, [`${server}: welcome to /chat?room=lobby`, `${server}: again`]);

  await more?.(ex);
  assert.deepEqual(await stop(ex), { code: 0, signal: null });
  assert.equal(ex.stderr(), '');
}

test('examples/express: balances with retries, re-sends parsed JSON, proxies WebSockets, stops on SIGTERM', async (t) => {
  await exercise(t, 'express', async (ex) => {
    // requestId(): the id in the answer is the one sent upstream (setHeaders) and the one logged.
    const r = await fetchText(`${ex.url}/api/logged?n=1`, { headers: { 'user-agent': 'examples-test' } });
    assert.equal(r.status, 200);
    const id = String(r.headers['x-request-id'] ?? '');
    assert.match(id, /^[0-9a-f]{32}$/);
    const body = JSON.parse(r.body) as { upstream: string; requestId: string };
    assert.equal(body.requestId, id, 'setHeaders sent $request_id upstream');
    // onResponse: the upstream's X-Powered-By removed, the answering server named.
    assert.equal(r.headers['x-powered-by'], undefined);
    assert.equal(r.headers['x-upstream'], body.upstream);
    // shapeResponse(): security headers on proxied answers and on Express's own, X-Powered-By cleared.
    const home = await fetchText(`${ex.url}/`);
    for (const res of [r, home]) {
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.equal(res.headers['x-frame-options'], 'DENY');
      assert.equal(res.headers['x-powered-by'], undefined);
    }
    // accessLog(): the combined format plus the id, the upstream and the time, on stdout.
    const line = new RegExp(
      `^127\\.0\\.0\\.1 - - \\[\\d{2}/\\w{3}/\\d{4}:\\d{2}:\\d{2}:\\d{2} [+-]\\d{4}\\] "GET /api/logged\\?n=1 HTTP/1\\.1" 200 \\d+ "-" "examples-test" ${id} 127\\.0\\.0\\.1:\\d+ \\d+\\.\\d{3}$`,
      'm',
    );
    await until(() => line.test(ex.stdout()), 5000, `the access log line of request ${id}`);
  });
});

test('examples/fastify: balances with retries, re-sends parsed JSON, proxies WebSockets, stops on SIGTERM', async (t) => {
  await exercise(t, 'fastify');
});

test('examples/koa: balances with retries, re-sends parsed JSON, proxies WebSockets, stops on SIGTERM', async (t) => {
  await exercise(t, 'koa');
});

test('the demo gateway (npm start) balances, rewrites, reports stats and stops cleanly', async (t) => {
  const demo = await start(t, 'demo');
  const servers = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const r = await fetchText(`${demo.url}/v1/users`);
    assert.equal(r.status, 200);
    const body = JSON.parse(r.body) as { server: string; url: string };
    assert.equal(body.url, '/api/users', 'rewritten before it is proxied');
    servers.add(body.server);
  }
  assert.ok(servers.size >= 2, `requests spread over the servers: ${[...servers].join(', ')}`);
  const moved = await fetchText(`${demo.url}/old/a/b`);
  assert.equal(moved.status, 301);
  assert.match(moved.headers.location ?? '', /\/new\/a\/b$/);
  const stats = JSON.parse((await fetchText(`${demo.url}/switchyard/stats`)).body) as { servers: Array<{ id: string; requests: number }> };
  assert.deepEqual(
    stats.servers.map((s) => s.id),
    ['blue', 'green', 'red'],
  );
  assert.ok(stats.servers.reduce((n, s) => n + s.requests, 0) >= 6);
  // The monitor: the dashboard, the NGINX Plus-shaped API and Prometheus metrics.
  const page = await fetchText(`${demo.url}/switchyard/dashboard/`);
  assert.equal(page.status, 200);
  assert.match(page.body, /switchyard dashboard/);
  const api = JSON.parse((await fetchText(`${demo.url}/switchyard/api/9/http/upstreams/demo`)).body) as { peers: Array<{ id: string; state: string }> };
  assert.deepEqual(
    api.peers.map((p) => p.id),
    ['blue', 'green', 'red'],
  );
  const metrics = await fetchText(`${demo.url}/switchyard/metrics`);
  assert.match(metrics.headers['content-type'] ?? '', /^text\/plain; version=0\.0\.4/);
  assert.match(metrics.body, /switchyard_upstream_server_requests_total\{upstream="demo",server="127\.0\.0\.1:\d+",id="blue"\} \d+/);
  // Changes are allowed from this machine: drain green through the API, and it is draining.
  const drained = await fetchText(`${demo.url}/switchyard/api/9/http/upstreams/demo/servers/green`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/json' },
    body: '{"drain":true}',
  });
  assert.equal(drained.status, 200);
  assert.equal((JSON.parse(drained.body) as { drain: boolean }).drain, true);
  // ...but not from a page that rebound its own name to this machine (DNS rebinding): 403.
  const rebound = await fetchText(`${demo.url}/switchyard/api/9/http/upstreams/demo/servers/blue`, {
    method: 'PATCH',
    headers: { host: 'attacker.example', 'content-type': 'application/json' },
    body: '{"down":true}',
  });
  assert.equal(rebound.status, 403);
  assert.equal((JSON.parse((await fetchText(`${demo.url}/switchyard/api/9/http/upstreams/demo/servers/blue`)).body) as { down: boolean }).down, false);
  // /api/limited: 5r/s with a burst of 5, nodelay: of 20 requests at once, the first six pass and
  // the rest (but the few the rate lets through meanwhile) are answered 429; the monitor counts them.
  const limited = await Promise.all(Array.from({ length: 20 }, () => fetchText(`${demo.url}/api/limited`)));
  const passed = limited.filter((r) => r.status === 200).length;
  const rejected = limited.filter((r) => r.status === 429).length;
  assert.equal(passed + rejected, 20, `200 or 429 only: ${limited.map((r) => r.status).join(' ')}`);
  assert.ok(passed >= 6 && rejected >= 1, `${passed} passed, ${rejected} rejected`);
  const zone = JSON.parse((await fetchText(`${demo.url}/switchyard/api/9/http/limit_reqs/limited`)).body) as { passed: number; rejected: number };
  assert.deepEqual([zone.passed, zone.rejected], [passed, rejected]);
  // The access log: combined lines on stdout, the 429s among them, none for the monitor's paths.
  await until(() => (demo.stdout().match(/"GET \/api\/limited HTTP\/1\.1" 429 /g) ?? []).length === rejected, 5000, 'the 429s logged');
  assert.match(demo.stdout(), /^\S+ - - \[[^\]]+\] "GET \/v1\/users HTTP\/1\.1" 200 \d+ "-" "[^"]*"$/m);
  assert.doesNotMatch(demo.stdout(), /"(GET|PATCH) \/switchyard\//);
  const { code } = await stop(demo);
  assert.equal(code, 0);
  assert.equal(demo.stderr(), '');
});

test('the demo microcaches /slow: 200 concurrent clients for 3 s reach its upstream about once a second', async (t) => {
  // Thousands of requests: without their access log lines (ACCESS_LOG=off, as the demo prints).
  const demo = await start(t, 'demo', { ACCESS_LOG: 'off' });
  const { Agent, request } = await import('node:http');
  const agent = new Agent({ keepAlive: true, maxSockets: 200 });
  t.after(() => agent.destroy());
  const get = (): Promise<{ status: number; cache: string; generated: number }> =>
    new Promise((resolve, reject) => {
      const req = request(`${demo.url}/slow`, { agent }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            cache: String(res.headers['x-cache-status']),
            generated: (JSON.parse(body) as { generated: number }).generated,
          }),
        );
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
  const statuses = new Map<string, number>();
  let responses = 0;
  let highest = 0;
  const deadline = performance.now() + 3000;
  const client = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const r = await get();
      assert.equal(r.status, 200);
      responses++;
      highest = Math.max(highest, r.generated);
      statuses.set(r.cache, (statuses.get(r.cache) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: 200 }, client));
  t.diagnostic(`upstream builds: ${highest}, responses: ${responses}, statuses: ${JSON.stringify([...statuses])}`);
  // The page was built once to fill the cache and then about once per second of the run.
  assert.ok(highest >= 2 && highest <= 5, `the slow upstream built the page ${highest} times for ${responses} responses (${JSON.stringify([...statuses])})`);
  assert.ok(responses >= 400, `${responses} responses in 3 s`);
  assert.equal(statuses.get('MISS'), 1, 'one request filled the cache, the lock held the others');
  assert.ok((statuses.get('HIT') ?? 0) > responses / 2);
  const stats = JSON.parse((await fetchText(`${demo.url}/switchyard/cache`)).body) as { hit: { responses: number }; miss: { responses: number } };
  assert.equal(stats.miss.responses, 1);
  assert.ok(stats.hit.responses > 0);
  assert.doesNotMatch(demo.stdout(), /"GET \/slow HTTP/, 'ACCESS_LOG=off turns the access log off');
  agent.destroy();
  const { code } = await stop(demo);
  assert.equal(code, 0);
  assert.equal(demo.stderr(), '');
});

test('the demo on a busy port says so and how to pick another, without a stack trace, and exits 1', async (t) => {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, resolve));
  t.after(() => blocker.close());
  const port = (blocker.address() as AddressInfo).port;
  const child = spawn(process.execPath, ['examples/demo/server.ts'], {
    cwd: root,
    env: { ...process.env, PORT: String(port), NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdout.resume();
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the demo did not exit within 15 s; stderr: ${stderr}`)), 15_000);
    child.once('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  assert.equal(code, 1);
  assert.equal(stderr.trim(), `switchyard demo: port ${port} is already in use. Pick another one: PORT=9000 npm start`);
});

test('the demo\'s index names every path its "Try" list uses', async (t) => {
  const demo = await start(t, 'demo');
  const index = (await fetchText(`${demo.url}/`)).body;
  const [listing, tries] = index.split('\nTry:\n') as [string, string];
  assert.ok(tries !== undefined, 'the index has a Try list');
  const tried = [...tries.matchAll(/localhost:\d+(\/[^\s'";]*)/g)].map((m) => m[1]!);
  assert.ok(tried.length >= 8, `the Try list uses the demo's paths: ${tried.join(' ')}`);
  for (const path of tried) {
    const named = path.replace(/\/(blue|green|red)$/, '/:id');
    assert.ok(listing.includes(` ${named}`), `the index names ${named}`);
  }
  await stop(demo);
});
