// node:http end-to-end: `createServer(chain(...))` in front of real upstream servers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { TestContext } from 'node:test';
import { balance, chain, createPool, type BalanceOptions, type ChainOptions, type Middleware, type UpstreamPool } from '../../src/index.ts';
import { deadPort, fetchText, listen } from '../helpers.ts';
import { backend, echo, JSON_TEXT, JSON_VALUE, MiB, streamThrough, wsEcho } from './common.ts';

/** A minimal JSON body parser, as a connect-style middleware would be: reads the stream, sets req.body. */
const jsonBody: Middleware = (req, _res, next) => {
  if (!String(req.headers['content-type'] ?? '').startsWith('application/json')) return next();
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    try {
      (req as IncomingMessage & { body?: unknown }).body = JSON.parse(Buffer.concat(chunks).toString());
      next();
    } catch (err) {
      next(Object.assign(err as Error, { statusCode: 400 }));
    }
  });
};

interface GatewayOptions {
  before?: Middleware[];
  balance?: BalanceOptions;
  chain?: ChainOptions;
}

/** A listening node:http gateway: `createServer(chain(...before, balance(pool)))`, upgrades wired. */
async function gateway(t: TestContext, pool: UpstreamPool, options: GatewayOptions = {}): Promise<{ url: string; ws: string }> {
  t.after(() => pool.close());
  const proxy = balance(pool, options.balance);
  const server = createServer(options.chain === undefined ? chain(...(options.before ?? []), proxy) : chain(...(options.before ?? []), proxy, options.chain));
  server.on('upgrade', proxy.upgrade);
  const gw = await listen(t, server);
  return { url: gw.url, ws: gw.url.replace('http:', 'ws:') };
}

/** chain()'s `final`: the node:http app's own error handling. */
const final: ChainOptions = {
  final(err: unknown, _req: IncomingMessage, res: ServerResponse) {
    const e = err as { code?: string; statusCode?: number; name?: string } | undefined;
    const payload = JSON.stringify({ handledBy: 'final', code: e?.code, statusCode: e?.statusCode, name: e?.name });
    res.writeHead(e?.statusCode ?? 404, { 'content-type': 'application/json' });
    res.end(payload);
  },
};

test('GET is balanced round robin over the upstreams, with query and response headers intact', async (t) => {
  const a = await backend(t, 'a');
  const b = await backend(t, 'b');
  const gw = await gateway(t, createPool({ servers: [{ url: a.url }, { url: b.url }] }));
  const names: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await fetchText(`${gw.url}/items?page=${i}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    names.push(r.headers['x-upstream'] as string);
    assert.equal(echo(r.body).url, `/items?page=${i}`);
  }
  assert.deepEqual(names, ['a', 'b', 'a', 'b']);
});

test('POST JSON after a body parser middleware is re-sent from req.body with a correct length', async (t) => {
  const a = await backend(t, 'a');
  const gw = await gateway(t, createPool({ servers: [{ url: a.url }] }), { before: [jsonBody] });
  const r = await fetchText(`${gw.url}/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON_TEXT });
  assert.equal(r.status, 200);
  const seen = a.seen[0]!;
  assert.deepEqual(JSON.parse(seen.body), JSON_VALUE);
  assert.equal(seen.headers['content-length'], String(Buffer.byteLength(seen.body)));
  assert.equal(seen.headers['content-type'], 'application/json');
});

test('POST JSON without a body parser streams the exact bytes upstream, chunked stays chunked', async (t) => {
  const a = await backend(t, 'a');
  const gw = await gateway(t, createPool({ servers: [{ url: a.url }] }));
  const r = await fetchText(`${gw.url}/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON_TEXT });
  assert.equal(r.status, 200);
  assert.equal(a.seen[0]!.body, JSON_TEXT);
  assert.equal(a.seen[0]!.headers['content-length'], String(Buffer.byteLength(JSON_TEXT)));
  const chunked = await fetchText(`${gw.url}/users`, { method: 'PUT', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, body: JSON_TEXT });
  assert.equal(chunked.status, 200);
  assert.equal(a.seen[1]!.body, JSON_TEXT);
  assert.equal(a.seen[1]!.headers['transfer-encoding'], 'chunked');
});

test('a 16 MiB body streams both ways intact', async (t) => {
  const a = await backend(t, 'a');
  const gw = await gateway(t, createPool({ servers: [{ url: a.url }] }), { before: [jsonBody] });
  const r = await streamThrough(`${gw.url}/stream`, 16 * MiB);
  assert.equal(r.status, 200);
  assert.equal(r.bytes, 16 * MiB);
  assert.equal(r.received, r.sent);
  assert.deepEqual(a.streamed, [{ url: '/stream', bytes: 16 * MiB, sha256: r.sent }]);
});

test('WebSocket echo through server.on("upgrade", mw.upgrade)', async (t) => {
  const a = await backend(t, 'a');
  const b = await backend(t, 'b');
  const gw = await gateway(t, createPool({ servers: [{ url: a.url }, { url: b.url }] }));
  assert.deepEqual(await wsEcho(`${gw.ws}/ws?room=1`, ['hello', 'again']), ['a:hello', 'a:again']);
  assert.deepEqual(await wsEcho(`${gw.ws}/ws?room=2`, ['hi']), ['b:hi']);
  assert.deepEqual(a.sockets, ['/ws?room=1']);
  assert.deepEqual(b.sockets, ['/ws?room=2']);
});

test('connection refused reaches chain()\'s final handler as 502 SWY_ERR_BAD_GATEWAY', async (t) => {
  const gw = await gateway(t, createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }] }), { chain: final });
  const r = await fetchText(`${gw.url}/x`);
  assert.equal(r.status, 502);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'final', code: 'SWY_ERR_BAD_GATEWAY', statusCode: 502, name: 'BadGatewayError' });
});

test('no server available reaches chain()\'s final handler as 503 SWY_ERR_NO_SERVER', async (t) => {
  const a = await backend(t, 'a');
  const gw = await gateway(t, createPool({ servers: [{ url: a.url, down: true }] }), { chain: final });
  const r = await fetchText(`${gw.url}/x`);
  assert.equal(r.status, 503);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'final', code: 'SWY_ERR_NO_SERVER', statusCode: 503, name: 'NoServerAvailableError' });
  assert.equal(a.seen.length, 0);
});

test('a header timeout reaches chain()\'s final handler as 504 SWY_ERR_GATEWAY_TIMEOUT', async (t) => {
  const a = await backend(t, 'a');
  const gw = await gateway(t, createPool({ servers: [{ url: a.url }] }), { chain: final, balance: { headerTimeout: 200 } });
  const started = performance.now();
  const r = await fetchText(`${gw.url}/hang`);
  const elapsed = performance.now() - started;
  assert.equal(r.status, 504);
  assert.deepEqual(JSON.parse(r.body), { handledBy: 'final', code: 'SWY_ERR_GATEWAY_TIMEOUT', statusCode: 504, name: 'GatewayTimeoutError' });
  assert.ok(elapsed >= 190 && elapsed < 3000, `answered after ${elapsed} ms`);
});

test('without final, chain() answers the status as plain text, without internals', async (t) => {
  const gw = await gateway(t, createPool({ servers: [{ url: `http://127.0.0.1:${await deadPort()}` }] }));
  const r = await fetchText(`${gw.url}/x`);
  assert.equal(r.status, 502);
  assert.equal(r.body, '502 Bad Gateway\n');
});
