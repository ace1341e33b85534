// monitor() and healthCheck() against what goes wrong in the field: a body parser before the API,
// error codes that must say what happened, durations that would keep a server out for good, a
// listener that throws in the middle of the checks.
import { strict as assert } from 'node:assert';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { createPool, healthCheck, InvalidOptionError, monitor } from '../../src/index.ts';
import { RawClient } from '../balance/support.ts';
import { listen, upstream } from '../helpers.ts';
import { call, startMonitorGateway } from './support.ts';

test('writes work behind a body parser that already read the request (express.json())', async (t) => {
  const pool = createPool({
    name: 'app',
    servers: [
      { url: 'http://127.0.0.1:9', id: 'a' },
      { url: 'http://127.0.0.1:10', id: 'b' },
    ],
  });
  t.after(() => pool.close());
  const app = express();
  app.use(express.json());
  app.use('/status', monitor({ pools: [pool], write: () => true }));
  const gw = await listen(t, createServer(app));
  const r = await call(`${gw.url}/status/api/9/http/upstreams/app/servers/a`, { method: 'PATCH', json: { drain: true } });
  assert.equal(r.status, 200);
  assert.equal(pool.get('a')!.drain, true);
  // Parsed to something that is not an object: refused at once, not left hanging.
  const text = express();
  text.use(express.text({ type: '*/*' }));
  text.use('/status', monitor({ pools: [pool], write: () => true }));
  const gw2 = await listen(t, createServer(text));
  const bad = await call(`${gw2.url}/status/api/9/http/upstreams/app/servers/b`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/json' },
    body: '{"drain":true}',
  });
  assert.equal(bad.status, 400);
  assert.equal(pool.get('b')!.drain, false);
});

test('error codes say what happened: a duplicate id is 409, an invalid id or removing the last server 400', async (t) => {
  const g = await startMonitorGateway(t, { write: () => true });
  const servers = `${g.api}/http/upstreams/backend/servers`;
  const dup = await call(servers, { method: 'POST', json: { server: '127.0.0.1:9', id: 'a' } });
  assert.deepEqual([dup.status, dup.body.error.code], [409, 'EntryExists']);
  const empty = await call(servers, { method: 'POST', json: { server: '127.0.0.1:9', id: '' } });
  assert.deepEqual([empty.status, empty.body.error.code], [400, 'UpstreamBadServerId']);
  assert.equal((await call(`${servers}/b`, { method: 'DELETE' })).status, 200);
  const last = await call(`${servers}/a`, { method: 'DELETE' });
  assert.equal(last.status, 400);
  assert.notEqual(last.body.error.code, 'EntryExists');
  assert.ok(g.pool.get('a'));
});

test('fail_timeout and slow_start: whole milliseconds or nginx durations, at most a day', async (t) => {
  const g = await startMonitorGateway(t, { write: () => true });
  const a = `${g.api}/http/upstreams/backend/servers/a`;
  for (const [body, code] of [
    [{ fail_timeout: 1e300 }, 'UpstreamConfFormatError'],
    [{ fail_timeout: 1.5 }, 'UpstreamConfFormatError'],
    [{ fail_timeout: -1 }, 'UpstreamConfFormatError'],
    [{ fail_timeout: '1000d' }, 'UpstreamBadFailTimeout'],
    [{ fail_timeout: 'soon' }, 'UpstreamBadFailTimeout'],
    [{ slow_start: '2d' }, 'UpstreamBadSlowStart'],
  ] as const) {
    const r = await call(a, { method: 'PATCH', json: body });
    assert.deepEqual([r.status, r.body.error.code], [400, code], JSON.stringify(body));
  }
  assert.equal(g.pool.get('a')!.failTimeout, 10_000);
  const ok = await call(a, { method: 'PATCH', json: { fail_timeout: '30s', slow_start: 5000 } });
  assert.deepEqual([ok.status, ok.body.fail_timeout, ok.body.slow_start], [200, '30s', '5s']);
});

test('a health check listener that throws does not stop the checks (and the process does not crash)', async (t) => {
  let healthy = true;
  const up = await upstream(t, 'a', (_req, res) => {
    res.statusCode = healthy ? 200 : 500;
    res.end();
  });
  const other = await upstream(t, 'b');
  const pool = createPool({
    servers: [
      { url: up.url, id: 'a' },
      { url: other.url, id: 'b' },
    ],
  });
  t.after(() => pool.close());
  const hc = healthCheck(pool, { interval: '50ms' });
  t.after(() => hc.stop());
  const errors: unknown[] = [];
  hc.on('error', (err) => errors.push(err));
  let thrown = 0;
  hc.on('unhealthy', () => {
    thrown++;
    throw new Error('listener bug');
  });
  await hc.ready;
  healthy = false;
  await sleep(200);
  const probesAfter = up.seen.length;
  healthy = true;
  await sleep(300);
  assert.equal(thrown, 1);
  assert.equal(errors.length, 1);
  assert.ok(up.seen.length >= probesAfter + 3, `probing goes on (${probesAfter} then ${up.seen.length})`);
  assert.equal(pool.stats().servers[0]!.state, 'up', 'and the server came back');
});

// ---- DNS rebinding (issue 11) ----

test('DNS rebinding: a request with a Host the operator did not allow can neither write nor read (403)', { timeout: 30_000 }, async (t) => {
  // Writes allowed by client address, as a loopback-only predicate would: the rebound page's
  // requests come from the operator's own browser, on loopback, with the attacker's name in Host.
  const g = await startMonitorGateway(t, { write: (req) => req.socket.remoteAddress === '127.0.0.1' });
  const servers = `${g.api}/http/upstreams/backend/servers`;
  const evil = { host: 'attacker.example' };
  const refused = [
    await call(servers, { method: 'POST', headers: evil, json: { server: '127.0.0.1:9', id: 'evil' } }),
    await call(`${servers}/a`, { method: 'PATCH', headers: { host: `attacker.example:${g.port}` }, json: { down: true } }),
    await call(`${servers}/b`, { method: 'DELETE', headers: evil }),
    await call(`${g.api}/http/upstreams/backend`, { method: 'DELETE', headers: evil }),
    await call(servers, { headers: evil }),
    await call(g.dashboard, { headers: evil }),
    await call(g.metrics, { headers: evil }),
    await call(servers, { headers: { host: '127.0.0.1.attacker.example' } }),
    await call(servers, { headers: { host: 'localhost.attacker.example' } }),
  ];
  for (const r of refused) {
    assert.equal(r.status, 403, r.text);
    assert.equal(r.body.error.code, 'HostNotAllowed');
    assert.equal(r.body.error.status, 403);
    assert.equal(typeof r.body.request_id, 'string');
    assert.equal(r.body.href, 'https://nginx.org/en/docs/http/ngx_http_api_module.html');
  }
  assert.deepEqual(
    g.pool.servers.map((s) => [s.id, s.down]),
    [
      ['a', false],
      ['b', false],
    ],
    'nothing changed',
  );
  // IP literals and localhost, with any port, are the operator's own.
  for (const host of [`127.0.0.1:${g.port}`, '127.0.0.1', `localhost:${g.port}`, 'LOCALHOST', `[::1]:${g.port}`]) {
    const r = await call(`${servers}/a`, { method: 'PATCH', headers: { host }, json: { weight: 2 } });
    assert.equal(r.status, 200, `${host}: ${r.text}`);
  }
  const added = await call(servers, { method: 'POST', headers: { host: `localhost:${g.port}` }, json: { server: '127.0.0.1:9', id: 'c' } });
  assert.equal(added.status, 201);
  const removed = await call(`${servers}/c`, { method: 'DELETE', headers: { host: `127.0.0.1:${g.port}` } });
  assert.equal(removed.status, 200);
  assert.equal((await call(g.dashboard, { headers: { host: `localhost:${g.port}` } })).status, 200);
});

test('allowedHosts: the names listed (and under a .domain) are allowed, others are not', { timeout: 30_000 }, async (t) => {
  const g = await startMonitorGateway(t, { write: () => true, monitor: { allowedHosts: ['Gateway.Internal', '.ops.example'] } });
  const a = `${g.api}/http/upstreams/backend/servers/a`;
  for (const host of ['gateway.internal', `gateway.internal:${g.port}`, 'ops.example', `dash.ops.example:${g.port}`, `127.0.0.1:${g.port}`]) {
    const r = await call(a, { method: 'PATCH', headers: { host }, json: { weight: 3 } });
    assert.equal(r.status, 200, `${host}: ${r.text}`);
  }
  for (const host of ['attacker.example', 'gateway.internal.attacker.example', 'evilops.example', 'internal']) {
    const r = await call(a, { method: 'PATCH', headers: { host }, json: { weight: 4 } });
    assert.equal(r.status, 403, `${JSON.stringify(host)}: ${r.text}`);
  }
  // not hosts at all: refused (400) before monitor() runs, as nginx refuses them
  for (const host of ['gateway.internal:80:80', '[::1', 'gateway.internal:port']) {
    const r = await call(a, { method: 'PATCH', headers: { host }, json: { weight: 4 } });
    assert.equal(r.status, 400, `${JSON.stringify(host)}: ${r.text}`);
  }
  // HTTP/1.0 without a Host header: refused as well (no name to check).
  const c = await RawClient.open(t, g.port);
  c.write('DELETE /status/api/9/http/upstreams/backend/servers/b HTTP/1.0\r\n\r\n');
  assert.equal((await c.response()).status, 403);
  assert.equal(g.pool.get('a')!.weight, 3);
  assert.ok(g.pool.get('b'));
  const open = await startMonitorGateway(t, { write: () => true, monitor: { allowedHosts: true } });
  const any = await call(`${open.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', headers: { host: 'anything.example' }, json: { weight: 5 } });
  assert.equal(any.status, 200);
});

test('allowedHosts is validated when monitor() is called', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:9' }] });
  pool.close();
  for (const [value, option] of [
    ['gateway.internal', 'allowedHosts'],
    [['gateway.internal:8080'], 'allowedHosts[0]'],
    [['ok.example', ''], 'allowedHosts[1]'],
    [[42], 'allowedHosts[0]'],
    [['*'], 'allowedHosts[0]'],
    [['http://gateway.internal'], 'allowedHosts[0]'],
    [false, 'allowedHosts'],
  ] as const) {
    assert.throws(
      () => monitor({ pools: [pool], allowedHosts: value as never }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === option,
      JSON.stringify(value),
    );
  }
});
