// balance()'s setHeaders (nginx proxy_set_header): templates compiled once, applied to every attempt
// after the forwarding headers, empty values removing the header, values a header cannot carry dropped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import express from 'express';
import { balance, chain, createPool, exchange, InvalidOptionError } from '../../src/index.ts';
import { fetchText, gateway, listen, upstream } from '../helpers.ts';

const SET = {
  'X-Real-IP': '$remote_addr',
  'X-Tenant': '$http_x_tenant',
  'Accept-Encoding': '',
  Host: 'internal.example',
  'X-Forwarded-For': '$remote_addr',
  'X-Arg': 'v=$arg_x',
  'X-Hostile': '$hostile',
} as const;

test('setHeaders through node:http: variables, an empty value removes, Host and X-Forwarded-For replaced, a value with CR/LF dropped', async (t) => {
  const up = await upstream(t, 'a');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gateway(
    t,
    chain(
      (req, _res, next) => {
        // A variable a middleware (rewrite()'s set, say) gave a value a header cannot carry.
        if (req.url?.includes('hostile') === true) exchange(req).vars.set('hostile', 'a\r\nX-Injected: 1');
        else exchange(req).vars.set('hostile', 'fine');
        next();
      },
      balance(pool, { setHeaders: SET }),
    ),
  );
  const r = await fetchText(`${gw.url}/p?x=a%0d%0aInjected:%201`, {
    headers: { 'x-tenant': 'acme', 'accept-encoding': 'gzip', 'x-forwarded-for': '6.6.6.6', 'x-real-ip': '6.6.6.6', 'x-after': 'kept-1', 'x-last': 'kept-2' },
  });
  assert.equal(r.status, 200);
  const h = up.seen[0]!.headers;
  // The client's other headers, before and after the replaced ones, go with their own values.
  assert.equal(h['x-after'], 'kept-1');
  assert.equal(h['x-last'], 'kept-2');
  assert.equal(h['x-real-ip'], '127.0.0.1');
  assert.equal(h['x-tenant'], 'acme');
  assert.equal(h['accept-encoding'], undefined, 'an empty value removes the header');
  assert.equal(h.host, 'internal.example', 'the Host set this way is the one sent');
  assert.equal(h['x-forwarded-for'], '127.0.0.1', 'replaces the forwarding policy');
  // $arg_ is the raw query: percent-escapes stay escapes, nothing is decoded into the header.
  assert.equal(h['x-arg'], 'v=a%0d%0aInjected:%201');
  assert.equal(h.injected, undefined);
  assert.equal(h['x-hostile'], 'fine');

  // A request without X-Tenant: $http_x_tenant is empty, so no X-Tenant header at all (nginx).
  const hostile = await fetchText(`${gw.url}/hostile`);
  assert.equal(hostile.status, 200, 'a value a header cannot carry is dropped, the request still goes');
  const h2 = up.seen[1]!.headers;
  assert.equal(h2['x-hostile'], undefined);
  assert.equal(h2['x-injected'], undefined);
  assert.equal('x-tenant' in h2, false);
});

test('setHeaders is applied on every attempt (a retry on the next server after http_502)', async (t) => {
  const bad = await upstream(t, 'bad', (_req, res) => {
    res.statusCode = 502;
    res.end('bad');
  });
  const good = await upstream(t, 'good');
  const pool = createPool({ servers: [{ url: bad.url }, { url: good.url }] });
  t.after(() => pool.close());
  const gw = await gateway(t, chain(balance(pool, { nextUpstream: ['error', 'http_502'], setHeaders: { 'X-Via': 'gw $request_method' } })));
  const r = await fetchText(gw.url);
  assert.equal(r.body, 'good');
  assert.equal(bad.seen[0]!.headers['x-via'], 'gw GET');
  assert.equal(good.seen[0]!.headers['x-via'], 'gw GET');
});

test("setHeaders with a request body: framing stays the gateway's, the body arrives whole", async (t) => {
  const up = await upstream(t, 'a');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const gw = await gateway(t, chain(balance(pool, { setHeaders: { 'X-Len': '$content_length' } })));
  const r = await fetchText(gw.url, { method: 'POST', body: 'hello world' });
  assert.equal(r.status, 200);
  assert.equal(up.seen[0]!.body, 'hello world');
  assert.equal(up.seen[0]!.headers['content-length'], '11');
  assert.equal(up.seen[0]!.headers['x-len'], '11');
});

test('setHeaders refuses framing and hop-by-hop names, invalid names, duplicates and bad values when balance() is called', () => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:1' }] });
  try {
    const refused = (setHeaders: unknown, option: string): void => {
      assert.throws(
        () => balance(pool, { setHeaders: setHeaders as Record<string, string> }),
        (e: unknown) => e instanceof InvalidOptionError && e.option === option,
        option,
      );
    };
    for (const name of ['Content-Length', 'transfer-encoding', 'Connection', 'Keep-Alive', 'Upgrade', 'TE', 'Trailer'])
      refused({ [name]: 'x' }, `setHeaders.${name}`);
    refused({ 'Bad Name': 'x' }, 'setHeaders.Bad Name');
    refused({ 'X-A': 'x', 'x-a': 'y' }, 'setHeaders.x-a');
    refused({ 'X-A': 1 }, 'setHeaders.X-A');
    refused({ 'X-A': 'a\nb' }, 'setHeaders.X-A');
    refused('X-A: 1', 'setHeaders');
    assert.doesNotThrow(() => balance(pool, { setHeaders: {} }));
  } finally {
    pool.close();
  }
});

test('setHeaders through Express', async (t) => {
  const up = await upstream(t, 'a');
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  const app = express();
  app.use('/api', balance(pool, { setHeaders: { 'X-Request-Path': '$uri', 'User-Agent': '' } }));
  const gw = await listen(t, createServer(app));
  const r = await fetchText(`${gw.url}/api/x/y`, { headers: { 'user-agent': 'curl/8' } });
  assert.equal(r.status, 200);
  assert.equal(up.seen[0]!.headers['x-request-path'], '/api/x/y');
  assert.equal(up.seen[0]!.headers['user-agent'], undefined);
});

test('the cookie options are accepted and their mistakes refused by balance(); the rewritten Set-Cookie is what onResponse sees, sticky-style added cookies are not rewritten', async (t) => {
  const up = await upstream(t, 'a', (_req, res) => {
    res.setHeader('set-cookie', ['sid=1; Domain=app.internal; Path=/app/x', 'theme=dark']);
    res.end('a');
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  assert.throws(
    () => balance(pool, { cookieDomain: 'x' as never }),
    (e: unknown) => e instanceof InvalidOptionError && e.option === 'cookieDomain',
  );
  assert.throws(
    () => balance(pool, { cookiePath: [{ from: '/a' }] as never }),
    (e: unknown) => e instanceof InvalidOptionError && e.option.startsWith('cookiePath[0]'),
  );
  assert.throws(
    () => balance(pool, { cookieFlags: [{ cookie: 'sid', flags: ['bogus'] }] as never }),
    (e: unknown) => e instanceof InvalidOptionError && e.option.startsWith('cookieFlags[0]'),
  );
  let seen: string[] = [];
  const gw = await gateway(
    t,
    chain(
      (req, _res, next) => {
        (exchange(req).responseHooks ??= []).push((_ex, _response, added) => added.push('set-cookie', 'route=r1; Path=/app/x'));
        next();
      },
      balance(pool, {
        cookieDomain: [{ from: 'app.internal', to: 'example.com' }],
        cookiePath: [{ from: '/app/', to: '/' }],
        cookieFlags: [{ cookie: 'sid', flags: ['secure', 'httponly'] }],
        onResponse(ctx) {
          seen = ctx.headers.getAll('set-cookie');
        },
      }),
    ),
  );
  const r = await fetchText(gw.url);
  assert.equal(r.status, 200);
  assert.equal(seen.length, 3);
  assert.match(seen[0]!, /^sid=1; Domain=example\.com; Path=\/x/i);
  assert.match(seen[0]!, /secure/i);
  assert.match(seen[0]!, /httponly/i);
  assert.equal(seen[1], 'theme=dark');
  assert.equal(seen[2], 'route=r1; Path=/app/x', "a cookie the gateway's own middleware adds is not the upstream's");
  assert.deepEqual(r.headers['set-cookie'], seen);
});
