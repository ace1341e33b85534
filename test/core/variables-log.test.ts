// The variables added for access logs (src/core/variables.ts), each in nginx's exact format:
// $time_local, $time_iso8601 and $msec (local time zone), $request_time and the $upstream_*_time
// lists (seconds with three decimals, `-` for an attempt without one), $status (three digits),
// $request, $remote_user, $request_id (32 lowercase hex, once per request), $sent_http_NAME and
// $upstream_http_NAME from what the access log and balance() record. Requests are real ones, read by a server.
import assert from 'node:assert/strict';
import { IncomingMessage, type ServerResponse } from 'node:http';
import { test } from 'node:test';
import { exchange, setRelayedResponse, type Exchange } from '../../src/core/exchange.ts';
import { compileTemplate, isKnownVariable, newRequestId, type ResponseFacts, setResponseFacts } from '../../src/core/variables.ts';
import { fetchText, gateway } from '../helpers.ts';

/** The exchange record of one real request to a gateway, with the request's headers and target. */
async function exchangeOf(t: import('node:test').TestContext, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Exchange> {
  let ex: Exchange | undefined;
  const gw = await gateway(t, (req: IncomingMessage, res: ServerResponse) => {
    ex = exchange(req);
    res.end();
  });
  await fetchText(`${gw.url}${path}`, { headers, method });
  return ex!;
}

function facts(overrides: Partial<ResponseFacts>): ResponseFacts {
  return {
    status: 200,
    time: 0,
    end: 0,
    bytesSent: 0,
    bodyBytesSent: 0,
    requestLength: 0,
    header: undefined,
    getHeader: undefined,
    ...overrides,
  };
}

const render = (template: string, ex: Exchange) => compileTemplate(template, 'test')(ex);

test('$time_local, $time_iso8601 and $msec as nginx writes them, in the local time zone', async (t) => {
  const ex = await exchangeOf(t, '/');
  const saved = process.env.TZ;
  t.after(() => {
    if (saved === undefined) delete process.env.TZ;
    else process.env.TZ = saved;
  });
  const cases: Array<[string, number, string, string, string]> = [
    ['UTC', 1_701_234_567_123, '29/Nov/2023:05:09:27 +0000', '2023-11-29T05:09:27+00:00', '1701234567.123'],
    ['Asia/Kolkata', 1_701_234_568_123, '29/Nov/2023:10:39:28 +0530', '2023-11-29T10:39:28+05:30', '1701234568.123'],
    ['America/New_York', 1_704_067_199_005, '31/Dec/2023:18:59:59 -0500', '2023-12-31T18:59:59-05:00', '1704067199.005'],
    ['UTC', 1_704_067_200_000, '01/Jan/2024:00:00:00 +0000', '2024-01-01T00:00:00+00:00', '1704067200.000'],
  ];
  for (const [zone, time, local, iso, msec] of cases) {
    process.env.TZ = zone;
    setResponseFacts(ex, facts({ time }));
    assert.equal(render('$time_local|$time_iso8601|$msec', ex), `${local}|${iso}|${msec}`, zone);
  }
});

test('$request_time and $upstream_*_time: whole milliseconds as seconds with three decimals; - for an attempt without one; joined with ", "', async (t) => {
  const ex = await exchangeOf(t, '/');
  setResponseFacts(ex, facts({ end: ex.start + 1234.9 }));
  assert.equal(render('$request_time', ex), '1.234');
  setResponseFacts(ex, facts({ end: ex.start + 7.2 }));
  assert.equal(render('$request_time', ex), '0.007');
  assert.equal(render('[$upstream_response_time]', ex), '[]', 'no attempt: empty (the log writes -)');
  (ex.upstreamConnectTime as number[]).push(-1, 0, 3.999);
  (ex.upstreamHeaderTime as number[]).push(-1, 12.5, 1000);
  (ex.upstreamResponseTime as number[]).push(30001.7, 15, 62_000.25);
  assert.equal(render('$upstream_connect_time', ex), '-, 0.000, 0.003');
  assert.equal(render('$upstream_header_time', ex), '-, 0.012, 1.000');
  assert.equal(render('$upstream_response_time', ex), '30.001, 0.015, 62.000');
});

test('$status is three digits (000 before a response, 499 for a client gone), $bytes_sent, $body_bytes_sent, $request_length', async (t) => {
  const ex = await exchangeOf(t, '/');
  assert.equal(render('$status $bytes_sent $body_bytes_sent $request_length', ex), '000 0 0 0');
  setResponseFacts(ex, facts({ status: 499 }));
  assert.equal(render('$status', ex), '499');
  setResponseFacts(ex, facts({ status: 9, bytesSent: 120, bodyBytesSent: 20, requestLength: 77 }));
  assert.equal(render('$status $bytes_sent $body_bytes_sent $request_length', ex), '009 120 20 77');
});

test('$request is the request line as sent, $remote_user the Basic user name', async (t) => {
  const ex = await exchangeOf(t, '/a//b%20c?x=1&y', { authorization: `Basic ${Buffer.from('bob:pa:ss').toString('base64')}` }, 'DELETE');
  assert.equal(render('$request', ex), 'DELETE /a//b%20c?x=1&y HTTP/1.1');
  assert.equal(render('$remote_user', ex), 'bob');
  for (const [header, user] of [
    ['Bearer abc', ''],
    [`basic ${Buffer.from('Ann:x').toString('base64')}`, 'Ann'],
    [`Basic ${Buffer.from('nocolon').toString('base64')}`, ''],
    [`Basic ${Buffer.from(':empty').toString('base64')}`, ''],
  ] as const) {
    const e = await exchangeOf(t, '/', { authorization: header });
    assert.equal(render('$remote_user', e), user, header);
  }
});

test('$request_id: 32 lowercase hex characters, made once per request and kept in ex.requestId; fresh for every request', async (t) => {
  const ex = await exchangeOf(t, '/');
  assert.equal(ex.requestId, undefined);
  const id = render('$request_id', ex);
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.equal(ex.requestId, id);
  assert.equal(render('${request_id}', ex), id);
  const many = new Set(Array.from({ length: 1000 }, () => newRequestId()));
  assert.equal(many.size, 1000);
  for (const one of many) assert.match(one, /^[0-9a-f]{32}$/);
  ex.requestId = 'trusted-id';
  assert.equal(render('$request_id', ex), 'trusted-id');
});

test('$sent_http_NAME reads the response header as sent (several fields joined), $upstream_http_NAME the relayed upstream header', async (t) => {
  const ex = await exchangeOf(t, '/');
  assert.equal(render('[$sent_http_x_a]', ex), '[]');
  const header = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nx-a: 2\r\nX-AB: no\r\nSet-Cookie: a=1\r\n\r\n';
  setResponseFacts(ex, facts({ header }));
  assert.equal(render('[$upstream_http_server]', ex), '[]');
  const upstream = new IncomingMessage(null as never);
  upstream.headers = { server: 'up/1', 'x-multi': ['a', 'b'] as unknown as string };
  setRelayedResponse(ex, { message: () => upstream });
  assert.equal(render('$sent_http_content_type|$sent_http_x_a|$sent_http_set_cookie|[$sent_http_missing]', ex), 'text/plain|1, 2|a=1|[]');
  assert.equal(render('$upstream_http_server|$upstream_http_x_multi|[$upstream_http_none]', ex), 'up/1|a, b|[]');
  setResponseFacts(ex, facts({ getHeader: (name) => (name === 'x-set' ? ['p', 'q'] : name === 'content-length' ? 5 : undefined) }));
  assert.equal(render('$sent_http_x_set|$sent_http_content_length', ex), 'p, q|5');
});

test('which names the variables facility knows: fixed names, the open families, captures', () => {
  for (const name of [
    'status',
    'request_id',
    'time_local',
    'upstream_connect_time',
    'http_x_y',
    'arg_a',
    'cookie_c',
    'sent_http_etag',
    'upstream_http_server',
    '1',
  ]) {
    assert.ok(isKnownVariable(name), name);
  }
  for (const name of ['remote_adr', 'http_', 'tenant', 'sent_http_']) assert.ok(!isKnownVariable(name), name);
});
