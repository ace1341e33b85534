// monitor() and healthCheck() against what goes wrong in the field: a body parser before the API,
// error codes that must say what happened, durations that would keep a server out for good, a
// listener that throws in the middle of the checks.
import { strict as assert } from 'node:assert';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { createPool, healthCheck, monitor } from '../../src/index.ts';
import { listen, upstream } from '../helpers.ts';
import { call, startMonitorGateway } from './support.ts';

test('writes work behind a body parser that already read the request (express.json())', async (t) => {
  const pool = createPool({ name: 'app', servers: [{ url: 'http://127.0.0.1:9', id: 'a' }, { url: 'http://127.0.0.1:10', id: 'b' }] });
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
  const bad = await call(`${gw2.url}/status/api/9/http/upstreams/app/servers/b`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: '{"drain":true}' });
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
  const pool = createPool({ servers: [{ url: up.url, id: 'a' }, { url: other.url, id: 'b' }] });
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
