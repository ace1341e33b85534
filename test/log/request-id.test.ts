// requestId(): an id per request ($request_id), an incoming one kept only when trusted and valid,
// sent back on request; the same id in the access log, in templates and in rewrite()'s set.
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { test } from 'node:test';
import express from 'express';
import { chain } from '../../src/core/chain.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { exchange } from '../../src/core/exchange.ts';
import { compileTemplate } from '../../src/core/variables.ts';
import { accessLog, requestId } from '../../src/log/index.ts';
import { rewrite } from '../../src/rewrite/index.ts';
import { fetchText, gateway, listen } from '../helpers.ts';
import { createServer } from 'node:http';

const HEX32 = /^[0-9a-f]{32}$/;

/** A gateway with requestId(options) and an access log of `$request_id`, answering with the id a template computes. */
async function idGateway(t: import('node:test').TestContext, options: Parameters<typeof requestId>[0]) {
  const lines: unknown[] = [];
  const template = compileTemplate('$request_id', 'test');
  const gw = await gateway(
    t,
    chain(requestId(options), accessLog({ format: '$request_id', to: (l) => lines.push(l) }), (req: IncomingMessage, res: ServerResponse) =>
      res.end(template(exchange(req))),
    ),
  );
  return { gw, lines };
}

test('without trust an incoming X-Request-Id is ignored: a fresh id, the same in templates, the log and the response', async (t) => {
  const { gw, lines } = await idGateway(t, { respond: true });
  const reply = await fetchText(gw.url, { headers: { 'x-request-id': 'client-chosen' } });
  assert.match(reply.body, HEX32);
  assert.equal(reply.headers['x-request-id'], reply.body);
  await fetchText(gw.url);
  assert.equal(lines[0], reply.body);
  assert.notEqual(lines[1], lines[0]);
});

test('trust: true keeps a valid incoming id (1-200 of [A-Za-z0-9._:-]); an invalid one is replaced', async (t) => {
  const { gw } = await idGateway(t, { trust: true, respond: 'X-Trace' });
  const cases: Array<[string, boolean]> = [
    ['abc-123_x.y:z', true],
    ['a'.repeat(200), true],
    ['a'.repeat(201), false],
    ['has space', false],
    ['quote"d', false],
    ['ü', false],
  ];
  for (const [incoming, kept] of cases) {
    const reply = await fetchText(gw.url, { headers: { 'x-request-id': Buffer.from(incoming, 'utf8').toString('latin1') } });
    if (kept) assert.equal(reply.body, incoming);
    else assert.match(reply.body, HEX32, incoming);
    assert.equal(reply.headers['x-trace'], reply.body);
  }
  const none = await fetchText(gw.url);
  assert.match(none.body, HEX32);
});

test('trust as a function: only the requests it accepts keep their id (a custom header name)', async (t) => {
  const { gw } = await idGateway(t, { header: 'X-Correlation-Id', trust: (req) => req.headers['x-from-lb'] === '1' });
  const trusted = await fetchText(gw.url, { headers: { 'x-correlation-id': 'lb-42', 'x-from-lb': '1' } });
  assert.equal(trusted.body, 'lb-42');
  assert.equal(trusted.headers['x-correlation-id'], undefined, 'respond is off by default');
  const untrusted = await fetchText(gw.url, { headers: { 'x-correlation-id': 'lb-42' } });
  assert.match(untrusted.body, HEX32);
  const otherHeader = await fetchText(gw.url, { headers: { 'x-request-id': 'lb-42', 'x-from-lb': '1' } });
  assert.match(otherHeader.body, HEX32);
});

test('a trust function that throws sends its error to next(): the chain answers 500, nothing crashes', async (t) => {
  const { gw } = await idGateway(t, {
    trust: () => {
      throw new Error('trust check failed');
    },
  });
  const reply = await fetchText(gw.url, { headers: { 'x-request-id': 'abc' } });
  assert.equal(reply.status, 500);
  const untouched = await fetchText(gw.url);
  assert.match(untouched.body, HEX32, 'no incoming id: the function is not asked');
});

test("rewrite()'s set sees the same $request_id; Express with respond", async (t) => {
  const gw = await gateway(
    t,
    chain(requestId({ respond: true }), rewrite([{ set: '$rid', value: 'id=$request_id' }]), (req: IncomingMessage, res: ServerResponse) =>
      res.end(exchange(req).vars.get('rid')),
    ),
  );
  const reply = await fetchText(gw.url);
  assert.equal(reply.body, `id=${reply.headers['x-request-id']}`);
  const app = express();
  app.use(requestId({ respond: true, trust: true }));
  app.get('/', (req, res) => {
    res.send(exchange(req).requestId);
  });
  const ex = await listen(t, createServer(app));
  const r = await fetchText(ex.url, { headers: { 'x-request-id': 'from-client' } });
  assert.equal(r.body, 'from-client');
  assert.equal(r.headers['x-request-id'], 'from-client');
});

test('requestId() options are validated', () => {
  const refused = (options: unknown, option: string) =>
    assert.throws(
      () => requestId(options as never),
      (err: unknown) => err instanceof InvalidOptionError && err.option === option,
    );
  refused({ header: 'bad header' }, 'header');
  refused({ trust: 'yes' }, 'trust');
  refused({ respond: 'a b' }, 'respond');
  refused({ respond: 1 }, 'respond');
  refused({ trusted: true }, 'trusted');
});
