// Issue 15 (memory): a gateway that never uses Redis, or never sees a WebSocket upgrade, does not load
// `@redis/client`, `@keyv/redis` or `http-proxy-3` (4-7 MiB of idle RSS for @redis/client alone).
// A child `node` process imports src/index.ts, builds a gateway with every middleware on memory
// stores, proxies requests through it, and reports which of those packages it loaded: by the modules'
// resolved URLs (module.registerHooks sees every import and require) and by require.cache's keys. The
// same child with `sync({ redis })` (and sticky's shared Redis store) or an upgrade must report them:
// that shows the detection sees what it looks for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { RESP_TYPES, SimpleError } from '@redis/client';
import { RESP } from '../../src/sync/redis.ts';
import { isErrorReply } from '../../src/sync/redis-clients.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

const PACKAGES = ['@redis/client', '@keyv/redis', 'http-proxy-3'] as const;

/** The child: `mode` is `memory` (no Redis, no upgrade), `redis` (sync and sticky's shared store on Redis) or `upgrade`. */
const CHILD = `
import { registerHooks, createRequire } from 'node:module';
import { createServer, request } from 'node:http';
import { once } from 'node:events';
const seen = new Set();
registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    seen.add(r.url);
    return r;
  },
});
const [mode, redisUrl] = process.argv.slice(1);
const sw = await import(${JSON.stringify(new URL('../../src/index.ts', import.meta.url).href)});
const upstream = createServer((req, res) => res.end('upstream saw ' + req.url));
upstream.on('upgrade', (req, socket) => {
  socket.end('HTTP/1.1 101 Switching Protocols\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n\\r\\n');
});
upstream.listen(0, '127.0.0.1');
await once(upstream, 'listening');
const shared = mode === 'redis' ? sw.sync({ redis: redisUrl, namespace: 'switchyard-lazy-' + process.pid }) : undefined;
if (shared) await shared.ready;
const pool = sw.createPool({ name: 'app', servers: [{ url: 'http://127.0.0.1:' + upstream.address().port }], sync: shared });
await pool.ready;
const hc = sw.healthCheck(pool, { uri: '/health', interval: '1s' });
await hc.ready;
const micro = sw.cache({ name: 'micro', valid: '1s', store: sw.createMemoryStore() });
const st = sw.sticky(pool, { learn: { create: { cookie: 'sid' }, lookup: { cookie: 'sid' } } });
const status = sw.monitor({ pools: [pool], caches: [micro], healthChecks: [hc], prefix: '/status', sync: false });
const b = sw.balance(pool);
const gateway = createServer(sw.chain(status, micro, st, b));
gateway.on('upgrade', b.upgrade);
gateway.listen(0, '127.0.0.1');
await once(gateway, 'listening');
const base = 'http://127.0.0.1:' + gateway.address().port;
const bodies = [];
for (const path of ['/a', '/a', '/status/api/9/http/upstreams']) {
  const r = await fetch(base + path);
  bodies.push(r.status + ' ' + (path.startsWith('/status') ? '' : await r.text()));
}
if (mode === 'upgrade') {
  const req = request(base + '/ws', { headers: { connection: 'Upgrade', upgrade: 'websocket' } });
  req.end();
  const [res, socket] = await once(req, 'upgrade');
  bodies.push(res.statusCode + ' upgraded');
  socket.destroy();
}
const require = createRequire(import.meta.url);
const loaded = {};
for (const name of ${JSON.stringify(PACKAGES)}) {
  const dir = '/node_modules/' + name + '/';
  loaded[name] = {
    hooks: [...seen].some((url) => url.includes(dir)),
    requireCache: Object.keys(require.cache).some((file) => file.includes(dir)),
  };
}
hc.stop();
st.close();
await micro.close?.();
pool.close();
await shared?.close();
gateway.close();
gateway.closeAllConnections();
upstream.close();
upstream.closeAllConnections();
process.stdout.write(JSON.stringify({ bodies, loaded }));
`;

interface Report {
  bodies: string[];
  loaded: Record<(typeof PACKAGES)[number], { hooks: boolean; requireCache: boolean }>;
}

async function child(mode: 'memory' | 'redis' | 'upgrade'): Promise<Report> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', CHILD, mode, REDIS_URL], { cwd: root, timeout: 30_000 });
  return JSON.parse(stdout) as Report;
}

const both = (yes: boolean) => ({ hooks: yes, requireCache: yes });

test('a gateway on memory stores, with cache, sticky, healthCheck and monitor, loads neither @redis/client, @keyv/redis nor http-proxy-3', async () => {
  const report = await child('memory');
  assert.deepEqual(report.bodies, ['200 upstream saw /a', '200 upstream saw /a', '200 ']);
  assert.deepEqual(report.loaded, { '@redis/client': both(false), '@keyv/redis': both(false), 'http-proxy-3': both(false) });
});

test('the detection sees them: sync({ redis }) loads @redis/client, sticky on its shared Redis store @keyv/redis', async () => {
  const report = await child('redis');
  assert.deepEqual(report.bodies, ['200 upstream saw /a', '200 upstream saw /a', '200 ']);
  assert.deepEqual(report.loaded, { '@redis/client': both(true), '@keyv/redis': both(true), 'http-proxy-3': both(false) });
});

test('the detection sees them: the first upgrade loads http-proxy-3', async () => {
  const report = await child('upgrade');
  assert.deepEqual(report.bodies, ['200 upstream saw /a', '200 upstream saw /a', '200 ', '101 upgraded']);
  assert.deepEqual(report.loaded, { '@redis/client': both(false), '@keyv/redis': both(false), 'http-proxy-3': both(true) });
});

test("the RESP type bytes the Redis transport maps are @redis/client's RESP_TYPES", () => {
  assert.deepEqual(RESP, {
    BLOB_STRING: RESP_TYPES.BLOB_STRING,
    SIMPLE_STRING: RESP_TYPES.SIMPLE_STRING,
    NUMBER: RESP_TYPES.NUMBER,
    MAP: RESP_TYPES.MAP,
  });
});

test("an ErrorReply is told by its class's name, from any copy of @redis/client", () => {
  assert.equal(isErrorReply(new SimpleError('WRONGTYPE x')), true);
  // What another copy of @redis/client would throw: a class of its own, with the same names.
  class ErrorReply extends Error {}
  class BlobError extends ErrorReply {}
  assert.equal(isErrorReply(new BlobError('ERR x')), true);
  assert.equal(isErrorReply(new Error('ERR x')), false);
  assert.equal(isErrorReply({ message: 'ERR x', constructor: ErrorReply }), false);
  assert.equal(isErrorReply(undefined), false);
});
