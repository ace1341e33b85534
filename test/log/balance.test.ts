// accessLog() and requestId() in front of balance(): the upstream variables across a retry (the
// times balance() measured once per attempt, not measured again), the bytes the client really
// received, the upstream's and the sent headers, and $request_id sent upstream by setHeaders.
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { test } from 'node:test';
import { balance } from '../../src/balance/index.ts';
import { chain } from '../../src/core/chain.ts';
import { accessLog, requestId } from '../../src/log/index.ts';
import { deadPort, fetchText, gateway, poolOf, upstream } from '../helpers.ts';
import { lineCount, rawRequest } from './support.ts';

test('across a retry: $upstream_addr, $upstream_status and the three upstream times per attempt, as balance() measured them', async (t) => {
  const up = await upstream(t, 'up', (_req: IncomingMessage, res: ServerResponse) => {
    setTimeout(() => {
      res.setHeader('x-upstream', 'live');
      res.end('body-of-live');
    }, 30);
  });
  const dead = `http://127.0.0.1:${await deadPort()}`;
  const pool = poolOf(t, [dead, up.url], { method: 'round-robin' });
  const lines: unknown[] = [];
  const format =
    '$upstream_addr|$upstream_status|$upstream_connect_time|$upstream_header_time|$upstream_response_time|$status|$upstream_http_x_upstream|$sent_http_x_upstream|$request_time';
  const contexts: Array<{ connect: number[]; header: number[]; response: number[]; upstreamHeader: string }> = [];
  const log = accessLog({ format, to: (l) => lines.push(l) });
  const copy = accessLog({
    format: (ctx) =>
      contexts.push({
        connect: [...ctx.ex.upstreamConnectTime],
        header: [...ctx.ex.upstreamHeaderTime],
        response: [...ctx.ex.upstreamResponseTime],
        upstreamHeader: ctx.variable('upstream_http_x_upstream'),
      }),
    to: () => undefined,
  });
  const gw = await gateway(t, chain(log, copy, balance(pool)));
  const reply = await fetchText(gw.url);
  assert.equal(reply.body, 'body-of-live');
  await lineCount(lines, 1);
  const [addr, status, connect, header, response, code, upHeader, sentHeader, requestTime] = (lines[0] as string).split('|');
  const deadName = dead.slice('http://'.length);
  const liveName = up.url.slice('http://'.length);
  assert.equal(addr, `${deadName}, ${liveName}`);
  assert.equal(status, '502, 200');
  assert.equal(code, '200');
  assert.equal(upHeader, 'live');
  assert.equal(sentHeader, 'live');
  // a format function reads the relayed upstream header as a string format does
  assert.equal(contexts[0]!.upstreamHeader, 'live');
  // The figures are the exchange's own, formatted as nginx does: seconds, three decimals, '-' for none.
  const { connect: c, header: h, response: r } = contexts[0]!;
  const fmt = (ms: number) => (ms < 0 ? '-' : (Math.floor(ms) / 1000).toFixed(3));
  assert.equal(connect, c.map(fmt).join(', '));
  assert.equal(header, h.map(fmt).join(', '));
  assert.equal(response, r.map(fmt).join(', '));
  assert.equal(c.length, 2);
  assert.match(connect!, /^-, \d+\.\d{3}$/, 'the refused attempt never connected');
  assert.match(header!, /^-, \d+\.\d{3}$/);
  assert.ok(h[1]! >= 25, `the live attempt's header came after the upstream's 30 ms: ${h[1]}`);
  assert.ok(Number(requestTime) >= Number(response!.split(', ')[1]), 'the request took at least its last attempt');
});

test('$bytes_sent and $body_bytes_sent are the bytes the client received; $request_length the bytes it sent', async (t) => {
  const up = await upstream(t, 'up', (_req: IncomingMessage, res: ServerResponse) => {
    res.write('chunk-one;');
    res.end('chunk-two');
  });
  const pool = poolOf(t, [up.url]);
  const lines: unknown[] = [];
  const gw = await gateway(t, chain(accessLog({ format: '$bytes_sent $body_bytes_sent $request_length', to: (l) => lines.push(l) }), balance(pool)));
  const head = 'POST /len HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5';
  const raw = await rawRequest(gw.port, `${head}`);
  const requestBytes = head.length + '\r\nConnection: close\r\n\r\n'.length;
  await lineCount(lines, 1);
  const [bytes, body, length] = (lines[0] as string).split(' ').map(Number);
  assert.equal(bytes, Buffer.byteLength(raw, 'latin1'));
  assert.equal(body, Buffer.byteLength(raw, 'latin1') - raw.indexOf('\r\n\r\n') - 4);
  // The body was announced but not sent before the server answered: the bytes read are the head's.
  assert.ok(length! >= requestBytes, `${length} >= ${requestBytes}`);
});

test("$request_id sent upstream with balance()'s setHeaders is the one the log and the response show", async (t) => {
  const up = await upstream(t, 'up');
  const pool = poolOf(t, [up.url]);
  const lines: unknown[] = [];
  const gw = await gateway(
    t,
    chain(
      requestId({ respond: true }),
      accessLog({ format: '$request_id', to: (l) => lines.push(l) }),
      balance(pool, { setHeaders: { 'X-Request-Id': '$request_id', 'X-Real-IP': '$remote_addr', 'X-Req': '$request' } }),
    ),
  );
  const reply = await fetchText(`${gw.url}/p?q=1`, { headers: { 'x-request-id': 'spoofed' } });
  await lineCount(lines, 1);
  const sent = up.seen[0]!.headers;
  assert.match(sent['x-request-id'] as string, /^[0-9a-f]{32}$/);
  assert.equal(sent['x-request-id'], reply.headers['x-request-id']);
  assert.equal(lines[0], sent['x-request-id']);
  assert.equal(sent['x-real-ip'], '127.0.0.1');
  assert.equal(sent['x-req'], 'GET /p?q=1 HTTP/1.1');
});
