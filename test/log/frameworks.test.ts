// accessLog() and requestId() behind the Fastify plugin (`use`), the Koa adapter and HTTP/2 clients
// (node:http2's compatibility layer, TLS and h2c): one line per request with the status and the
// request line those frameworks saw, and a 499 for an HTTP/2 stream the client cancelled.
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { test } from 'node:test';
import Fastify from 'fastify';
import Koa from 'koa';
import { switchyard } from '../../src/adapters/fastify.ts';
import { koa } from '../../src/adapters/koa.ts';
import { chain } from '../../src/core/chain.ts';
import { accessLog, requestId } from '../../src/log/index.ts';
import { fetchText, listen } from '../helpers.ts';
import { h2Connect, h2Gateway, h2Request, KINDS } from '../http2/support.ts';
import { createServer } from 'node:http';
import { lineCount } from './support.ts';

const FORMAT = '"$request" $status $body_bytes_sent $request_id';
const answer = (_req: IncomingMessage, res: ServerResponse) => {
  res.setHeader('content-type', 'text/plain');
  res.end('plugin-body');
};

test('the Fastify plugin runs accessLog() and requestId() in `use`', async (t) => {
  const lines: unknown[] = [];
  const app = Fastify();
  t.after(() => app.close());
  await app.register(switchyard, { prefix: '/api', use: [requestId({ respond: true }), accessLog({ format: FORMAT, to: (l) => lines.push(l) }), answer] });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  assert.ok(address !== null && typeof address === 'object');
  const reply = await fetchText(`http://127.0.0.1:${address.port}/api/x?y=1`);
  assert.equal(reply.body, 'plugin-body');
  await lineCount(lines, 1);
  assert.equal(lines[0], `"GET /api/x?y=1 HTTP/1.1" 200 11 ${reply.headers['x-request-id']}`);
});

test('the Koa adapter runs accessLog() in koa(...)', async (t) => {
  const lines: unknown[] = [];
  const app = new Koa();
  app.use(koa(requestId({ respond: 'X-Id' }), accessLog({ format: FORMAT, to: (l) => lines.push(l) })));
  app.use((ctx) => {
    ctx.status = 202;
    ctx.body = 'koa-body';
  });
  const gw = await listen(t, createServer(app.callback()));
  const reply = await fetchText(`${gw.url}/k`);
  assert.equal(reply.status, 202);
  await lineCount(lines, 1);
  assert.equal(lines[0], `"GET /k HTTP/1.1" 202 8 ${reply.headers['x-id']}`);
});

for (const kind of KINDS) {
  test(`HTTP/2 (${kind}): one line per stream with the HTTP/2.0 request line; a cancelled stream is 499`, async (t) => {
    const lines: unknown[] = [];
    const log = accessLog({ format: '"$request" $status $body_bytes_sent $connection $connection_requests', to: (l) => lines.push(l) });
    const gw = await h2Gateway(
      t,
      kind,
      chain(log, (req: IncomingMessage, res: ServerResponse) => {
        if (req.url === '/hang') return;
        res.setHeader('content-length', '5');
        res.end('h2-ok');
      }),
    );
    const session = h2Connect(t, gw.url);
    const one = await h2Request(session, { ':path': '/a' });
    assert.equal(one.text, 'h2-ok');
    await h2Request(session, { ':path': '/b' });
    await lineCount(lines, 2);
    const [first, second] = lines as string[];
    assert.match(first!, /^"GET \/a HTTP\/2\.0" 200 5 (\d+) 1$/);
    const connection = /(\d+) 1$/.exec(first!)![1];
    assert.equal(second, `"GET /b HTTP/2.0" 200 5 ${connection} 2`);
    const stream = session.request({ ':path': '/hang' });
    stream.on('error', () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 50));
    stream.close();
    await lineCount(lines, 3);
    assert.match(lines[2] as string, /^"GET \/hang HTTP\/2\.0" 499 0 /);
  });
}
