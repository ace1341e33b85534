// The Fastify plugin finds balance() and sticky() in `use` by their brands (module-private symbols),
// not by property names: another middleware that happens to carry an `upgrade` or `wrapUpgrade`
// property is neither taken for the balancer nor allowed to wrap its WebSocket upgrades.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TestContext } from 'node:test';
import Fastify from 'fastify';
import { balance, createPool, sticky, type Middleware, type Next } from '../../src/index.ts';
import { switchyard } from '../../src/adapters/fastify.ts';
import { backend, wsEcho } from './common.ts';

/** A listening Fastify app with the plugin under /api running `use`; its ws:// base url. */
async function app(t: TestContext, use: Middleware[]): Promise<string> {
  const fastify = Fastify();
  t.after(() => fastify.close());
  await fastify.register(switchyard, { prefix: '/api', use });
  await fastify.listen({ port: 0, host: '127.0.0.1' });
  const address = fastify.server.address();
  assert.ok(address !== null && typeof address === 'object');
  return `ws://127.0.0.1:${address.port}`;
}

/** A pass-through middleware carrying look-alike properties; records whether any was used. */
function impostor(props: Array<'upgrade' | 'wrapUpgrade'>): { mw: Middleware; used: string[] } {
  const used: string[] = [];
  const refuse =
    (what: string) =>
    (_req: IncomingMessage, socket: Duplex): void => {
      used.push(what);
      socket.end("HTTP/1.1 418 I'm a teapot\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    };
  const extra: Record<string, unknown> = {};
  if (props.includes('upgrade')) extra.upgrade = refuse('upgrade');
  if (props.includes('wrapUpgrade')) extra.wrapUpgrade = () => refuse('wrapUpgrade');
  const mw = Object.assign((_req: IncomingMessage, _res: ServerResponse, next: Next) => next(), extra);
  return { mw, used };
}

test('a middleware with an `upgrade` property before balance() is not taken for the balancer', async (t) => {
  const a = await backend(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  t.after(() => pool.close());
  const fake = impostor(['upgrade']);
  const ws = await app(t, [fake.mw, balance(pool)]);
  assert.deepEqual(await wsEcho(`${ws}/api/ws`, ['hi']), ['a:hi']);
  assert.deepEqual(fake.used, []);
  assert.deepEqual(a.sockets, ['/api/ws']);
});

test('a middleware with a `wrapUpgrade` property before balance() does not wrap its upgrades', async (t) => {
  const a = await backend(t, 'a');
  const pool = createPool({ servers: [{ url: a.url }] });
  t.after(() => pool.close());
  const fake = impostor(['wrapUpgrade', 'upgrade']);
  const ws = await app(t, [fake.mw, balance(pool)]);
  assert.deepEqual(await wsEcho(`${ws}/api/ws`, ['hi']), ['a:hi']);
  assert.deepEqual(fake.used, []);
});

test('sticky() before balance() still binds upgrades through the plugin (found by its brand)', async (t) => {
  const a = await backend(t, 'a');
  const b = await backend(t, 'b');
  const pool = createPool({
    servers: [
      { url: a.url, route: 'ra' },
      { url: b.url, route: 'rb' },
    ],
  });
  t.after(() => pool.close());
  const st = sticky(pool, { route: ['$arg_route'] });
  t.after(() => st.close());
  const ws = await app(t, [st, balance(pool)]);
  for (let i = 0; i < 4; i++) assert.deepEqual(await wsEcho(`${ws}/api/ws?route=rb`, [`m${i}`]), [`b:m${i}`]);
  assert.equal(a.sockets.length, 0);
});
