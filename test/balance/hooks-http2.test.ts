// The hooks and setHeaders for HTTP/2 clients (h2c and TLS): the response a hook changed, answered
// itself or read carries no connection-specific header and the right length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { balance, chain, createPool } from '../../src/index.ts';
import { upstream } from '../helpers.ts';
import { connectionHeaders, h2Connect, h2Gateway, h2Request, KINDS } from '../http2/support.ts';

for (const kind of KINDS) {
  test(`${kind}: setHeaders, onResponse changing headers, answering itself and reading the body, to an HTTP/2 client`, async (t) => {
    const up = await upstream(t, 'a', (req, res) => {
      res.setHeader('x-powered-by', 'php');
      res.setHeader('connection', 'keep-alive');
      res.write(`${req.headers['x-tenant'] ?? '-'}:`);
      res.end('body');
    });
    const pool = createPool({ servers: [{ url: up.url }] });
    t.after(() => pool.close());
    const gw = await h2Gateway(
      t,
      kind,
      chain(
        balance(pool, {
          setHeaders: { 'X-Tenant': '$http_x_tenant' },
          async onResponse(ctx) {
            ctx.headers.delete('x-powered-by');
            if (ctx.req.url === '/mine') ctx.respond(203, { 'x-mine': '1' }, 'mine');
            if (ctx.req.url === '/read') {
              const body = await ctx.readBody({ limit: 100 });
              ctx.respond(200, ctx.headers, body.toString().toUpperCase());
            }
          },
        }),
      ),
    );
    const session = h2Connect(t, gw.url);
    const plain = await h2Request(session, { ':path': '/', 'x-tenant': 'acme' });
    assert.equal(plain.status, 200);
    assert.equal(plain.text, 'acme:body');
    assert.equal(plain.headers['x-powered-by'], undefined);
    assert.deepEqual(connectionHeaders(plain.headers), []);
    const mine = await h2Request(session, { ':path': '/mine' });
    assert.equal(mine.status, 203);
    assert.equal(mine.text, 'mine');
    assert.equal(mine.headers['content-length'], '4');
    const read = await h2Request(session, { ':path': '/read', 'x-tenant': 'b' });
    assert.equal(read.text, 'B:BODY');
    assert.equal(read.headers['content-length'], '6');
    assert.deepEqual(connectionHeaders(read.headers), []);
  });
}
