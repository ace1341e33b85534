// balance()'s redirect option (nginx proxy_redirect) with a RegExp `from` whose `to` mixes a capture
// ($1) and variables, through node:http and Express, and what onResponse sees of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import express from 'express';
import { balance, chain, createPool } from '../../src/index.ts';
import { fetchText, gateway, listen, upstream } from '../helpers.ts';

const RULES = [{ from: /^https?:\/\/[^/]+\/internal\/(.*)$/, to: '$scheme://$host/app/$1?from=$arg_src' }];

async function redirecting(t: import('node:test').TestContext) {
  const up = await upstream(t, 'a', (_req, res) => {
    res.statusCode = 302;
    res.setHeader('location', `http://127.0.0.1:${up.port}/internal/next/page`);
    res.end();
  });
  const pool = createPool({ servers: [{ url: up.url }] });
  t.after(() => pool.close());
  return pool;
}

test('redirect: a RegExp from, a to with $1 and variables, the rewritten Location is what onResponse sees (node:http)', async (t) => {
  const pool = await redirecting(t);
  let seen: string | undefined;
  const gw = await gateway(
    t,
    chain(
      balance(pool, {
        redirect: RULES,
        onResponse(ctx) {
          seen = ctx.headers.get('location');
        },
      }),
    ),
  );
  const r = await fetchText(`${gw.url}/go?src=mail`, { headers: { host: 'www.example.com' } });
  assert.equal(r.status, 302);
  assert.equal(r.headers.location, 'http://www.example.com/app/next/page?from=mail');
  assert.equal(seen, r.headers.location);
});

test('redirect: the same rule through Express', async (t) => {
  const pool = await redirecting(t);
  const app = express();
  app.use('/api', balance(pool, { redirect: RULES }));
  const gw = await listen(t, createServer(app));
  const r = await fetchText(`${gw.url}/api/go?src=ad`, { headers: { host: 'shop.example' } });
  assert.equal(r.headers.location, 'http://shop.example/app/next/page?from=ad');
});
