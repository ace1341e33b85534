// accessLog() on real sockets (node:http chain() and Express): nginx's combined line, escaping of
// hostile bytes as nginx's escape=default/json/none, the function form with a JSON logger, a file
// destination, a stalled stream (bounded, the event loop free), 499 for a client gone, if= and
// sampling, failures that never reach the response, and the options' validation.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import express from 'express';
import pino from 'pino';
import { chain } from '../../src/core/chain.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';
import { accessLog, COMBINED_FORMAT, type AccessLogContext } from '../../src/log/index.ts';
import { fetchText, gateway, listen, until } from '../helpers.ts';
import { lineCount, loggedGateway, rawRequest } from './support.ts';

const TIME_LOCAL = /^\d{2}\/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}$/;

test('the default format is nginx combined: address, Basic user, local time, request line, status, body bytes, referer, user agent', async (t) => {
  const { gw, lines } = await loggedGateway(t, {});
  const reply = await fetchText(`${gw.url}/a/b?c=1&d=2`, {
    headers: { authorization: `Basic ${Buffer.from('alice:secret').toString('base64')}`, referer: 'http://ref.test/x', 'user-agent': 'curl/8.0' },
  });
  assert.equal(reply.body, 'hello');
  await lineCount(lines, 1);
  const m = /^(\S+) - (\S+) \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)"$/.exec(lines[0] as string);
  assert.ok(m, `combined line: ${String(lines[0])}`);
  assert.equal(m[1], '127.0.0.1');
  assert.equal(m[2], 'alice');
  assert.match(m[3]!, TIME_LOCAL);
  assert.equal(m[4], 'GET /a/b?c=1&d=2 HTTP/1.1');
  assert.equal(m[5], '200');
  assert.equal(m[6], '5');
  assert.equal(m[7], 'http://ref.test/x');
  assert.equal(m[8], 'curl/8.0');
  // Absent values are '-' (nginx: not found), as with no Authorization and no Referer.
  await fetchText(`${gw.url}/`, { headers: { 'user-agent': 'x' } });
  await lineCount(lines, 2);
  assert.match(lines[1] as string, /^127\.0\.0\.1 - - \[.+\] "GET \/ HTTP\/1\.1" 200 5 "-" "x"$/);
  assert.equal(COMBINED_FORMAT, '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"');
});

test('escape=default writes ", \\, control bytes and bytes from 0x7F up as \\xHH; json and none as nginx', async (t) => {
  const format = '"$http_user_agent" "$http_referer" "$request"';
  const seen: Record<string, string> = {};
  for (const escape of ['default', 'json', 'none'] as const) {
    const lines: unknown[] = [];
    const log = accessLog({ format, escape, to: (l) => lines.push(l) });
    // The lenient parser lets a DEL and a control byte through, as nginx's reader does.
    const server = createServer(
      { insecureHTTPParser: true },
      chain(log, (_req: IncomingMessage, res: ServerResponse) => res.end('ok')),
    );
    const gw = await listen(t, server);
    const head = Buffer.concat([
      Buffer.from('GET /p?q="\\ HTTP/1.1\r\nHost: a.test\r\nUser-Agent: a"b\\c\td'),
      Buffer.from([0x7f, 0xe9, 0xc3, 0xa9, 0x01]),
      Buffer.from('\r\nReferer: </script>\u001b[31m', 'latin1'),
    ]);
    const answer = await rawRequest(gw.port, head);
    assert.match(answer, /^HTTP\/1\.1 200/);
    await lineCount(lines, 1);
    seen[escape] = lines[0] as string;
  }
  assert.equal(seen.default, '"a\\x22b\\x5Cc\\x09d\\x7F\\xE9\\xC3\\xA9\\x01" "</script>\\x1B[31m" "GET /p?q=\\x22\\x5C HTTP/1.1"');
  assert.equal(seen.json, '"a\\"b\\\\c\\td\u007f\u00e9\u00c3\u00a9\\u0001" "</script>\\u001B[31m" "GET /p?q=\\"\\\\ HTTP/1.1"');
  assert.equal(seen.none, '"a"b\\c\td\u007f\u00e9\u00c3\u00a9\u0001" "</script>\u001b[31m" "GET /p?q="\\ HTTP/1.1"');
});

test('escape=default on a decoded $uri writes the UTF-8 bytes of each character from U+0080 up, as nginx', async (t) => {
  const { gw, lines } = await loggedGateway(t, { format: '$uri $request_uri' });
  await fetchText(`${gw.url}/caf%C3%A9/%E2%82%AC%22`);
  await lineCount(lines, 1);
  assert.equal(lines[0], '/caf\\xC3\\xA9/\\xE2\\x82\\xAC\\x22 /caf%C3%A9/%E2%82%AC%22');
});

test('escape=json: empty values are empty (nginx writes nothing for a value not found), default writes -', async (t) => {
  const { gw, lines } = await loggedGateway(t, { format: '{"ref":"$http_referer","user":"$remote_user","args":"$is_args"}', escape: 'json' });
  await fetchText(`${gw.url}/x`);
  await lineCount(lines, 1);
  assert.deepEqual(JSON.parse(lines[0] as string), { ref: '', user: '', args: '' });
  const d = await loggedGateway(t, { format: '$http_referer|$is_args|$https|$upstream_addr' });
  await fetchText(`${d.gw.url}/x`);
  await lineCount(d.lines, 1);
  assert.equal(d.lines[0], '-|||-');
});

test('a format function gives a JSON logger (pino) an object with the nginx variables it asks for', async (t) => {
  const out: string[] = [];
  const logger = pino(
    { base: null, timestamp: false },
    new Writable({
      write(chunk, _enc, cb) {
        out.push(String(chunk));
        cb();
      },
    }),
  );
  const log = accessLog({
    format: (ctx: AccessLogContext) => ({
      method: ctx.req.method,
      uri: ctx.ex.requestUri,
      status: ctx.status,
      bytes: ctx.bodyBytesSent,
      ms: ctx.requestTime,
      id: ctx.variable('request_id'),
      ua: ctx.variable('http_user_agent'),
    }),
    to: (entry) => logger.info(entry as object, 'request'),
  });
  const gw = await gateway(
    t,
    chain(log, (_req: IncomingMessage, res: ServerResponse) => res.end('four')),
  );
  await fetchText(`${gw.url}/obj?x=1`, { headers: { 'user-agent': 'pino-test' } });
  await until(() => out.length === 1);
  const record = JSON.parse(out[0]!);
  assert.equal(record.msg, 'request');
  assert.equal(record.method, 'GET');
  assert.equal(record.uri, '/obj?x=1');
  assert.equal(record.status, 200);
  assert.equal(record.bytes, 4);
  assert.equal(typeof record.ms, 'number');
  assert.match(record.id, /^[0-9a-f]{32}$/);
  assert.equal(record.ua, 'pino-test');
  // The same function with a stream destination: one JSON object per line.
  const file: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      file.push(String(chunk));
      cb();
    },
  });
  const log2 = accessLog({ format: (ctx) => ({ s: ctx.status, a: ctx.aborted }), to: stream });
  const gw2 = await gateway(
    t,
    chain(log2, (_req: IncomingMessage, res: ServerResponse) => res.end()),
  );
  await fetchText(gw2.url);
  await fetchText(gw2.url);
  await log2.flush();
  assert.equal(file.join(''), '{"s":200,"a":false}\n{"s":200,"a":false}\n');
});

test('a file destination (fs.createWriteStream) gets every line, in batches (buffer=, flush=); close() flushes and ends it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'swy-log-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'access.log');
  const stream = createWriteStream(path, { flags: 'a' });
  const writes: number[] = [];
  const write = stream.write.bind(stream);
  stream.write = ((chunk: string, ...rest: never[]) => {
    writes.push(chunk.length);
    return write(chunk, ...rest);
  }) as typeof stream.write;
  const log = accessLog({ format: '$request_uri $status', to: stream, flush: '10s' });
  const gw = await gateway(
    t,
    chain(log, (_req: IncomingMessage, res: ServerResponse) => res.end('x')),
  );
  // 20 requests: their lines wait for flush= (or close()), then are written together.
  await Promise.all(Array.from({ length: 20 }, (_, i) => fetchText(`${gw.url}/r${i}`)));
  assert.equal(writes.length, 0);
  assert.ok(log.stats().pending > 0);
  await log.close();
  assert.ok(stream.writableFinished, 'close() ended the stream');
  const text = await readFile(path, 'utf8');
  const lines = text.trim().split('\n').sort();
  assert.equal(lines.length, 20);
  assert.deepEqual(lines, Array.from({ length: 20 }, (_, i) => `/r${i} 200`).sort());
  assert.deepEqual(writes, [text.length], 'one write');
  assert.deepEqual(log.stats(), { logged: 20, written: 20, dropped: 0, errors: 0, pending: 0 });
  // After close() requests are not logged.
  await fetchText(`${gw.url}/late`);
  assert.equal(log.stats().logged, 20);
});

test('lines that come while a batch is with the stream wait for buffer= or flush= when it takes it, not written at once (one write per few requests)', async (t) => {
  const writes: number[] = [];
  const callbacks: Array<() => void> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      writes.push(chunk.length);
      callbacks.push(cb); // the test says when the stream took the batch
    },
  });
  // Lines of 8 bytes ('/aN 200\n'); a batch is written at 30 bytes, flush= never comes in the test.
  const log = accessLog({ format: '$request_uri $status', to: stream, buffer: 30, flush: '10s' });
  const gw = await gateway(
    t,
    chain(log, (_req: IncomingMessage, res: ServerResponse) => res.end('x')),
  );
  const send = async (from: number, n: number): Promise<void> => {
    for (let i = from; i < from + n; i++) await fetchText(`${gw.url}/a${i}`);
    await until(() => log.stats().logged === from + n);
  };
  await send(0, 4);
  assert.deepEqual(writes, [32], '32 bytes reach buffer=: written');
  await send(4, 1);
  callbacks.shift()!();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(writes, [32], 'the stream took the batch: the one line that came meanwhile waits');
  assert.equal(log.stats().pending, 8);
  await send(5, 3);
  assert.deepEqual(writes, [32, 32], 'buffer= reached again: written');
  await send(8, 1);
  const flushed = log.flush();
  callbacks.shift()!();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(writes, [32, 32, 8], 'flush() while a batch is with the stream: written when it comes back');
  callbacks.shift()!();
  await flushed;
  assert.deepEqual(log.stats(), { logged: 9, written: 9, dropped: 0, errors: 0, pending: 0 });
  stream.destroy();
});

test('a stalled stream never blocks the event loop: lines wait up to maxPending, then are dropped and counted', async (t) => {
  let accepted = 0;
  const stalled = new Writable({
    highWaterMark: 1024,
    write(chunk, _enc, _cb) {
      accepted += chunk.length; // never calls back: the destination is stuck
    },
  });
  const log = accessLog({ format: '$request_uri $status $request_time $http_user_agent', to: stalled, buffer: 0, maxPending: 4096 });
  const gw = await gateway(
    t,
    chain(log, (_req: IncomingMessage, res: ServerResponse) => res.end('ok')),
  );
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  t.after(() => clearInterval(timer));
  for (let round = 0; round < 10; round++) {
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, i) => fetchText(`${gw.url}/stall/${round}/${i}`, { headers: { 'user-agent': 'x'.repeat(100) } })),
    );
    assert.ok(replies.every((r) => r.status === 200 && r.body === 'ok'));
  }
  await until(() => log.stats().logged === 200);
  const stats = log.stats();
  assert.ok(ticks > 0, 'timers ran while the stream was stalled');
  assert.ok(stats.dropped > 0, `some lines dropped: ${JSON.stringify(stats)}`);
  assert.ok(stats.pending <= 4096, `pending within maxPending: ${stats.pending}`);
  // Memory held: what the stream took in its one accepted write, its buffer, and maxPending.
  assert.ok(accepted < 4096 + 200, `the stream's first write only: ${accepted}`);
  assert.ok(stalled.writableLength < 4096 + 1024 + 200, `stream buffer bounded: ${stalled.writableLength}`);
  assert.ok(stats.written >= 1 && stats.written + stats.dropped < stats.logged, `the rest waits: ${JSON.stringify(stats)}`);
  stalled.destroy();
});

test('a client gone before the response header is logged with status 499; gone mid-body keeps the status', async (t) => {
  let hanging = false;
  const { gw, lines } = await loggedGateway(t, { format: '$request_uri $status $body_bytes_sent' }, (req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/hang') {
      hanging = true; // never answers
      return;
    }
    res.writeHead(200, { 'content-length': '100000' });
    res.write('x'.repeat(1000));
  });
  const client = request(`${gw.url}/hang`, { agent: false });
  client.on('error', () => undefined);
  client.end();
  await until(() => hanging);
  client.destroy();
  await lineCount(lines, 1);
  assert.equal(lines[0], '/hang 499 0');
  const mid = request(`${gw.url}/mid`, { agent: false }, (res) => res.once('data', () => mid.destroy()));
  mid.on('error', () => undefined);
  mid.end();
  await lineCount(lines, 2);
  assert.match(lines[1] as string, /^\/mid 200 \d+$/);
  assert.ok(Number((lines[1] as string).split(' ')[2]) >= 1000);
});

test('if= logs only what the condition accepts (read after the answer: the status is known); sample 0 and 1', async (t) => {
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    res.statusCode = req.url === '/missing' ? 404 : 200;
    res.end();
  };
  const errorsOnly = await loggedGateway(t, { format: '$status $request_uri', if: (_req, res) => res.statusCode >= 400 }, handler);
  await fetchText(`${errorsOnly.gw.url}/fine`);
  await fetchText(`${errorsOnly.gw.url}/missing`);
  await fetchText(`${errorsOnly.gw.url}/fine`);
  await lineCount(errorsOnly.lines, 1);
  await errorsOnly.log.flush();
  assert.deepEqual(errorsOnly.lines, ['404 /missing']);
  const none = await loggedGateway(t, { format: '$status', sample: 0 }, handler);
  const all = await loggedGateway(t, { format: '$status', sample: 1 }, handler);
  const half = await loggedGateway(t, { format: '$status', sample: 0.5 }, handler);
  for (let i = 0; i < 100; i++) await Promise.all([fetchText(none.gw.url), fetchText(all.gw.url), fetchText(half.gw.url)]);
  await lineCount(all.lines, 100);
  assert.equal(none.lines.length, 0);
  // 100 draws at 1/2: outside 20..80 has a probability below 1e-9.
  assert.ok(half.lines.length > 20 && half.lines.length < 80, `sampled ${half.lines.length} of 100`);
});

test('a throwing format, condition, destination or a failing stream never reaches the response nor crashes; counted and reported', async (t) => {
  const reported: string[] = [];
  const onError = (_err: unknown, source: string) => reported.push(source);
  const ok = (_req: IncomingMessage, res: ServerResponse) => res.end('fine');
  const badFormat = await loggedGateway(
    t,
    {
      format: () => {
        throw new Error('format');
      },
      onError,
    },
    ok,
  );
  const badIf = await loggedGateway(
    t,
    {
      if: () => {
        throw new Error('if');
      },
      onError,
    },
    ok,
  );
  const badTo = accessLog({
    to: () => {
      throw new Error('to');
    },
    onError: (err, source) => {
      onError(err, source);
      throw new Error('the error handler throws too');
    },
  });
  const gwTo = await gateway(t, chain(badTo, ok));
  const dir = await mkdtemp(join(tmpdir(), 'swy-log-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const broken = createWriteStream(join(dir, 'no', 'such', 'dir', 'access.log'));
  const badStream = accessLog({ to: broken, onError });
  const gwStream = await gateway(t, chain(badStream, ok));
  for (const url of [badFormat.gw.url, badIf.gw.url, gwTo.url, gwStream.url]) {
    const reply = await fetchText(url);
    assert.equal(reply.status, 200);
    assert.equal(reply.body, 'fine');
  }
  await until(() => reported.length === 4);
  await fetchText(gwStream.url);
  await badStream.flush();
  assert.deepEqual(reported.sort(), ['format', 'if', 'stream', 'to']);
  assert.equal(badFormat.log.stats().errors, 1);
  assert.equal(badIf.log.stats().errors, 1);
  assert.equal(badTo.stats().errors, 1);
  const s = badStream.stats();
  assert.equal(s.errors, 1);
  assert.equal(s.logged, 2);
  assert.ok(s.dropped >= 1, `the line after the failure is dropped: ${JSON.stringify(s)}`);
  await badStream.close();
});

test('Express: accessLog() in app.use() logs the request line Express saw (mount paths included) and the status', async (t) => {
  const lines: unknown[] = [];
  const app = express();
  app.use(accessLog({ format: '"$request" $status $body_bytes_sent $sent_http_content_type', to: (l) => lines.push(l) }));
  const api = express.Router();
  api.get('/items/:id', (req, res) => {
    res.status(201).json({ id: req.params.id });
  });
  app.use('/api', api);
  const gw = await listen(t, createServer(app));
  const reply = await fetchText(`${gw.url}/api/items/7?x=1`);
  assert.equal(reply.status, 201);
  await lineCount(lines, 1);
  assert.equal(lines[0], `"GET /api/items/7?x=1 HTTP/1.1" 201 ${Buffer.byteLength(reply.body)} application/json; charset=utf-8`);
});

test('options are validated when the factory is called, naming the option; unknown variables are refused as nginx refuses them', () => {
  const refused = (options: unknown, option: string, message?: RegExp) =>
    assert.throws(
      () => accessLog(options as never),
      (err: unknown) => err instanceof InvalidOptionError && err.option === option && (message === undefined || message.test(err.message)),
    );
  refused({ format: '$remote_adr $status' }, 'format', /unknown variable "\$remote_adr".*did you mean "\$remote_addr"/);
  refused({ format: '$tenant' }, 'format', /unknown variable "\$tenant"/);
  refused({ format: 42 }, 'format');
  refused({ escape: 'xml' }, 'escape');
  refused({ sample: 1.5 }, 'sample');
  refused({ sample: Number.NaN }, 'sample');
  refused({ buffer: -1 }, 'buffer');
  refused({ maxPending: 0 }, 'maxPending');
  refused({ flush: 'soon' }, 'flush');
  refused({ to: 'access.log' }, 'to');
  refused({ if: true }, 'if');
  refused({ onError: 'log' }, 'onError');
  refused({ variables: ['$tenant'] }, 'variables[0]');
  refused({ fromat: 'combined' }, 'fromat', /did you mean "format"/);
  // Open families, captures, and names listed as rewrite()'s set are accepted.
  accessLog({ format: '$http_x_a $arg_id $cookie_sid $sent_http_etag $upstream_http_server $1 ${tenant}', variables: ['tenant'], to: () => undefined });
});

test('on a kept-alive connection each line counts its own answer: $bytes_sent and $request_length per request', async (t) => {
  const { gw, lines } = await loggedGateway(
    t,
    { format: '$bytes_sent $body_bytes_sent $request_length $connection_requests' },
    (req: IncomingMessage, res: ServerResponse) => {
      res.setHeader('content-length', req.url === '/one' ? '3' : '10');
      res.end(req.url === '/one' ? 'one' : 'second-one');
    },
  );
  const first = 'GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n';
  const second = 'GET /two HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n';
  const received = await new Promise<string>((resolve, reject) => {
    let data = '';
    let sent = false;
    const socket = connect(gw.port, '127.0.0.1', () => socket.write(first));
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
      // The first answer is whole (its body ends the data): the second request goes on the same connection.
      if (!sent && data.endsWith('\r\n\r\none')) {
        sent = true;
        socket.write(second);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(data));
  });
  await lineCount(lines, 2);
  const split = received.indexOf('HTTP/1.1', 1);
  const answers = [received.slice(0, split), received.slice(split)];
  const bodies = [3, 10];
  lines.forEach((line, i) => {
    const [bytes, body, length, n] = (line as string).split(' ').map(Number);
    assert.equal(bytes, answers[i]!.length, `answer ${i + 1}`);
    assert.equal(body, bodies[i]);
    assert.equal(length, [first, second][i]!.length);
    assert.equal(n, i + 1);
  });
});

test('where code generation from strings is not allowed, a string format is compiled without it and writes the same line', async (t) => {
  // The format is compiled into one function with `new Function`; under
  // --disallow-code-generation-from-strings that throws, and a loop over the parts takes its place.
  const format = '$remote_addr "$request" $status $body_bytes_sent "$http_user_agent" "$http_referer" [$is_args] $uri';
  const index = new URL('../../src/index.ts', import.meta.url).href;
  const script = `
    import { createServer, request } from 'node:http';
    const { accessLog, chain } = await import(${JSON.stringify(index)});
    let generated = true;
    try { new Function('return 1'); } catch { generated = false; }
    const lines = [];
    const server = createServer(chain(accessLog({ format: ${JSON.stringify(format)}, to: (l) => lines.push(l) }), (req, res) => res.end('hello')));
    server.listen(0, '127.0.0.1', () => {
      const r = request({ port: server.address().port, path: '/a%20b/c?x=1', headers: { 'user-agent': 'ua "q" \\xe9' } }, (res) => {
        res.resume();
        res.on('end', () => setTimeout(() => { console.log(JSON.stringify({ generated, lines })); server.close(); }, 20));
      });
      r.end();
    });`;
  const run = (flags: string[]): Promise<{ generated: boolean; lines: string[] }> =>
    new Promise((resolve, reject) => {
      execFile(process.execPath, [...flags, '--input-type=module', '-e', script], { timeout: 20_000 }, (err, stdout) => {
        if (err) reject(err);
        else resolve(JSON.parse(stdout));
      });
    });
  const [plain, refused] = await Promise.all([run([]), run(['--disallow-code-generation-from-strings'])]);
  assert.equal(plain.generated, true);
  assert.equal(refused.generated, false);
  assert.deepEqual(plain.lines, ['127.0.0.1 "GET /a%20b/c?x=1 HTTP/1.1" 200 5 "ua \\x22q\\x22 \\xE9" "-" [?] /a b/c']);
  assert.deepEqual(refused.lines, plain.lines);
  t.diagnostic(refused.lines[0]!);
});
