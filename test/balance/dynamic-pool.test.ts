// balance((req, ex) => pool | name): the pool chosen per request (nginx's map into proxy_pass
// http://$upstream), an unknown result a 502 UnknownPoolError, the upgrade handler on the same selector.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import type { Duplex } from 'node:stream';
import express, { type ErrorRequestHandler } from 'express';
import { balance, chain, createPool, exchange, InvalidOptionError, UnknownPoolError, type UpstreamPool } from '../../src/index.ts';
import { fetchText, gateway, listen, upstream } from '../helpers.ts';

async function tenants(t: import('node:test').TestContext): Promise<{ blue: UpstreamPool; green: UpstreamPool; direct: UpstreamPool }> {
  const b = await upstream(t, 'blue');
  const g = await upstream(t, 'green');
  const d = await upstream(t, 'direct');
  const blue = createPool({ name: 'blue', servers: [{ url: b.url }] });
  const green = createPool({ name: 'green', servers: [{ url: g.url }] });
  const direct = createPool({ name: 'direct', servers: [{ url: d.url }] });
  t.after(() => {
    blue.close();
    green.close();
    direct.close();
  });
  return { blue, green, direct };
}

test('a selector routes two tenants to two pools by name, a pool object directly; an unknown name, undefined or a throw is a 502 SWY_ERR_UNKNOWN_POOL', async (t) => {
  const { blue, green, direct } = await tenants(t);
  const errors: Error[] = [];
  const proxy = balance(
    (req, ex) => {
      const tenant = req.headers['x-tenant'];
      if (tenant === 'throw') throw new Error('selector broke');
      if (tenant === 'direct') return direct;
      assert.equal(ex, exchange(req));
      return typeof tenant === 'string' && tenant !== '' ? tenant : undefined;
    },
    { pools: [blue, green] },
  );
  assert.equal(proxy.pool, undefined);
  const gw = await gateway(
    t,
    chain(proxy, {
      final: (err, _req, res) => {
        errors.push(err as Error);
        const e = err as { statusCode?: number; code?: string };
        res.statusCode = e.statusCode ?? 500;
        res.end(String(e.code));
      },
    }),
  );
  assert.equal((await fetchText(gw.url, { headers: { 'x-tenant': 'blue' } })).body, 'blue');
  assert.equal((await fetchText(gw.url, { headers: { 'x-tenant': 'green' } })).body, 'green');
  assert.equal((await fetchText(gw.url, { headers: { 'x-tenant': 'direct' } })).body, 'direct');
  for (const tenant of ['purple', '', 'throw']) {
    const r = await fetchText(gw.url, { headers: { 'x-tenant': tenant } });
    assert.equal(r.status, 502, tenant);
    assert.equal(r.body, 'SWY_ERR_UNKNOWN_POOL', tenant);
  }
  assert.ok(errors.every((e) => e instanceof UnknownPoolError));
  assert.equal(errors[0]!.message, `Pool selector returned "purple", which names none of balance()'s pools`);
  assert.match(errors[1]!.message, /returned undefined/);
  assert.equal((errors[2]!.cause as Error).message, 'selector broke');
  assert.equal(blue.stats().servers[0]!.requests, 1);
  assert.equal(green.stats().servers[0]!.requests, 1);
});

test('a long unknown name is cut short in the message', async (t) => {
  const { blue } = await tenants(t);
  const errors: Error[] = [];
  const gw = await gateway(
    t,
    chain(
      balance(() => 'x'.repeat(500), { pools: [blue] }),
      {
        final: (err, _req, res) => {
          errors.push(err as Error);
          res.statusCode = 502;
          res.end();
        },
      },
    ),
  );
  await fetchText(gw.url);
  assert.ok(errors[0]!.message.length < 150, errors[0]!.message);
});

test('pools are validated when balance() is called: pools only with a selector, unique names, pools only', () => {
  const a = createPool({ name: 'a', servers: [{ url: 'http://127.0.0.1:1' }] });
  const a2 = createPool({ name: 'a', servers: [{ url: 'http://127.0.0.1:2' }] });
  try {
    assert.throws(
      () => balance(a, { pools: [a] }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'pools',
    );
    assert.throws(
      () => balance(() => 'a', { pools: [a, a2] }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'pools[1]',
    );
    assert.throws(
      () => balance(() => 'a', { pools: [a, {} as UpstreamPool] }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'pools[1]',
    );
    assert.throws(
      () => balance(() => 'a', { pools: a as never }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'pools',
    );
    assert.throws(
      () => balance('a' as never),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'pool',
    );
    assert.doesNotThrow(() => balance(() => a));
  } finally {
    a.close();
    a2.close();
  }
});

test("the upgrade handler uses the same selector: each tenant's upgrade goes to its pool, an unknown one is refused 502", async (t) => {
  const tunnel = async (name: string) => {
    const server = createServer((_req, res) => res.end(name));
    server.on('upgrade', (_req, socket: Duplex) => {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: test\r\nconnection: upgrade\r\nx-pool: ${name}\r\n\r\n`);
      socket.end();
    });
    return listen(t, server);
  };
  const b = await tunnel('blue');
  const g = await tunnel('green');
  const blue = createPool({ name: 'blue', servers: [{ url: b.url }] });
  const green = createPool({ name: 'green', servers: [{ url: g.url }] });
  t.after(() => {
    blue.close();
    green.close();
  });
  const proxy = balance((req) => String(req.headers['x-tenant']), { pools: [blue, green], setHeaders: { 'X-Tenant-Seen': '$http_x_tenant' } });
  const server = createServer(chain(proxy));
  server.on('upgrade', proxy.upgrade);
  const gw = await listen(t, server);
  const upgradeTo = (tenant: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = request(gw.url, { agent: false, headers: { connection: 'upgrade', upgrade: 'test', 'x-tenant': tenant } });
      req.on('upgrade', (res, socket) => {
        socket.destroy();
        resolve(`101 ${String(res.headers['x-pool'])}`);
      });
      req.on('response', (res) => {
        res.resume();
        resolve(String(res.statusCode));
      });
      req.on('error', reject);
      req.end();
    });
  assert.equal(await upgradeTo('blue'), '101 blue');
  assert.equal(await upgradeTo('green'), '101 green');
  assert.equal(await upgradeTo('nope'), '502');
});

test('a selector through Express', async (t) => {
  const { blue, green } = await tenants(t);
  const app = express();
  app.set('env', 'test');
  app.use(
    '/api',
    balance((req) => (req.headers.host?.startsWith('green.') === true ? 'green' : 'blue'), { pools: [blue, green] }),
  );
  const onError: ErrorRequestHandler = (err, _req, res, _next) => {
    res.status(err.statusCode ?? 500).send(err.code);
  };
  app.use(onError);
  const gw = await listen(t, createServer(app));
  assert.equal((await fetchText(`${gw.url}/api/`, { headers: { host: 'green.example' } })).body, 'green');
  assert.equal((await fetchText(`${gw.url}/api/`, { headers: { host: 'www.example' } })).body, 'blue');
});
