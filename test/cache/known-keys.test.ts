// The fast HIT path's keys made once (KnownKeys): the same store keys as the general path makes, per
// scheme and Host as sent, forgotten all at once when too many are held; and HITs through it.
import { strict as assert } from 'node:assert';
import type { IncomingMessage } from 'node:http';
import { test } from 'node:test';
import { balance, cache, chain, createPool } from '../../src/index.ts';
import { KnownKeys, MAX_KNOWN_KEYS } from '../../src/cache/key.ts';
import { resolveCacheOptions } from '../../src/cache/options.ts';
import { fetchText, gateway, upstream } from '../helpers.ts';

function request(url: string, headers: Record<string, string>, socket: Record<string, unknown> = {}, method = 'GET'): IncomingMessage {
  const rawHeaders = Object.entries(headers).flat();
  return {
    method,
    url,
    headers,
    rawHeaders,
    httpVersionMajor: 1,
    socket: { remoteAddress: '127.0.0.1', localAddress: '10.0.0.1', ...socket },
  } as unknown as IncomingMessage;
}

test('KnownKeys makes the default key once per scheme, Host and target, with the store prefix', () => {
  const settings = resolveCacheOptions({});
  const known = new KnownKeys('ns:');
  assert.equal(known.storeKey(settings, request('/a?x=1', { host: 'Example.COM:8080' })), 'ns:http://example.com:8080/a?x=1');
  assert.equal(known.storeKey(settings, request('/a?x=1', { host: 'Example.COM:8080' }, { encrypted: true })), 'ns:https://example.com:8080/a?x=1');
  // The same key again, from what is held.
  assert.equal(known.storeKey(settings, request('/a?x=1', { host: 'Example.COM:8080' })), 'ns:http://example.com:8080/a?x=1');
  assert.equal(known.size, 2);
  // Escaped as the general path escapes.
  assert.equal(known.storeKey(settings, request('/%41', { host: 'a.example' })), 'ns:http://a.example/%2541');
  // No Host: the local address, never held.
  assert.equal(known.storeKey(settings, request('/n', {})), 'ns:http://10.0.0.1/n');
  assert.equal(known.size, 3);
  // Not a host name: no key, nothing held.
  assert.equal(known.storeKey(settings, request('/x', { host: 'victim.com/admin' })), undefined);
  assert.equal(known.storeKey(settings, request('/x', { host: '' })), undefined);
  assert.equal(known.size, 3);
  // Requests the general path takes: a POST, a body, a forwarding fact, a target not in origin form.
  assert.equal(known.storeKey(settings, request('/a?x=1', { host: 'Example.COM:8080' }, {}, 'POST')), undefined);
  assert.equal(known.storeKey(settings, request('/a?x=1', { host: 'Example.COM:8080', 'content-length': '3' })), undefined);
  assert.equal(known.storeKey(settings, request('/a?x=1', { host: 'Example.COM:8080', 'x-forwarded-prefix': '/p' })), undefined);
  assert.equal(known.storeKey(settings, request('*', { host: 'Example.COM:8080' }, {}, 'GET')), undefined);
});

test('KnownKeys forgets every key once it holds MAX_KNOWN_KEYS, and keys right afterwards', () => {
  const settings = resolveCacheOptions({});
  const known = new KnownKeys('');
  for (let i = 0; i < MAX_KNOWN_KEYS; i++) known.storeKey(settings, request(`/p/${i}`, { host: 'h.example' }));
  assert.equal(known.size, MAX_KNOWN_KEYS);
  assert.equal(known.storeKey(settings, request('/next', { host: 'other.example' }, { encrypted: true })), 'https://other.example/next');
  assert.equal(known.size, 1);
  assert.equal(known.storeKey(settings, request('/p/1', { host: 'h.example' })), 'http://h.example/p/1');
  assert.equal(known.size, 2);
});

test('fast HITs per Host: the host named differently in case is one entry, another host another', async (t) => {
  let n = 0;
  const up = await upstream(t, 'origin', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' });
    res.end(`page ${++n}`);
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const mw = cache();
  const gw = await gateway(t, chain(mw, balance(pool)));
  const get = (host: string) => fetchText(`${gw.url}/page`, { headers: { host } });
  assert.equal((await get('a.example')).headers['x-cache-status'], 'MISS');
  const hit = await get('A.Example');
  assert.equal(hit.headers['x-cache-status'], 'HIT');
  assert.equal(hit.body, 'page 1');
  assert.equal(hit.headers['content-length'], String(Buffer.byteLength('page 1')));
  const other = await get('b.example');
  assert.equal(other.headers['x-cache-status'], 'MISS');
  assert.equal(other.body, 'page 2');
  assert.equal((await get('b.example')).body, 'page 2');
  assert.equal((await get('a.example')).body, 'page 1');
  // A purge reaches what the fast path answers.
  assert.equal(await mw.purge('http://a.example/page'), 1);
  const after = await get('a.example');
  assert.equal(after.headers['x-cache-status'], 'MISS');
  assert.equal(after.body, 'page 3');
  assert.deepEqual({ hit: mw.stats().hit.responses, miss: mw.stats().miss.responses }, { hit: 3, miss: 3 });
});

test('a request from a proxy cache() trusts keeps out of the fast path: its X-Forwarded-Proto is keyed', async (t) => {
  let n = 0;
  const up = await upstream(t, 'origin', (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' });
    res.end(`page ${++n}`);
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  assert.equal(new KnownKeys('').storeKey(resolveCacheOptions({ trustProxy: true }), request('/a', { host: 'h.example' })), undefined);
  assert.equal(new KnownKeys('').storeKey(resolveCacheOptions({ trustProxy: ['10.0.0.0/8'] }), request('/a', { host: 'h.example' })), 'http://h.example/a');
  const gw = await gateway(t, chain(cache({ trustProxy: 'loopback' }), balance(pool)));
  const plain = await fetchText(`${gw.url}/p`, { headers: { host: 'h.example' } });
  assert.equal(plain.headers['x-cache-status'], 'MISS');
  const tls = await fetchText(`${gw.url}/p`, { headers: { host: 'h.example', 'x-forwarded-proto': 'https' } });
  assert.equal(tls.headers['x-cache-status'], 'MISS', 'https://h.example/p is another key');
  assert.equal(tls.body, 'page 2');
  assert.equal((await fetchText(`${gw.url}/p`, { headers: { host: 'h.example' } })).body, 'page 1');
  assert.equal((await fetchText(`${gw.url}/p`, { headers: { host: 'h.example', 'x-forwarded-proto': 'https' } })).body, 'page 2');
});
