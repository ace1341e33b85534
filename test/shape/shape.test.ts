// shapeResponse() behind node:http chain(): nginx's add_header (statuses, always, empty values,
// Last-Modified and ETag replaced), headers-more's more_set_headers and more_clear_headers, the hook,
// on balance()'s relayed answers, on local handlers that never call writeHead, over HTTP/2; a hook
// that throws or breaks framing answers 500 (or its own error's status) and never crashes; options
// validated when the factory is called.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { balance, cache, chain, exchange, InvalidOptionError, ReturnStatusError, type Middleware } from '../../src/index.ts';
import { HookError } from '../../src/core/errors.ts';
import { shapeResponse, type ShapeResponseOptions } from '../../src/shape/index.ts';
import { fetchText, gateway, poolOf, upstream } from '../helpers.ts';
import { h2Connect, h2Gateway, h2Request, KINDS } from '../http2/support.ts';

const T = { timeout: 15_000 };

/** An upstream that answers `/status/<code>` with that code, and headers to shape. */
async function origin(t: TestContext) {
  return upstream(t, 'origin', (req, res) => {
    const code = Number(/\/status\/(\d+)/.exec(req.url ?? '')?.[1] ?? 200);
    if (req.url?.startsWith('/big')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('x'.repeat(1_000_000));
      return;
    }
    res.writeHead(code, {
      'content-type': 'text/plain',
      'x-powered-by': 'Express',
      'x-debug-a': '1',
      'X-Debug-B': '2',
      server: 'upstream/1.0',
      etag: '"up"',
      'last-modified': 'Mon, 01 Jan 2024 00:00:00 GMT',
      'set-cookie': ['a=1', 'b=2'],
    });
    res.end(code === 304 || code === 204 ? undefined : `origin ${code}`);
  });
}

async function proxied(t: TestContext, options: ShapeResponseOptions) {
  const up = await origin(t);
  const pool = poolOf(t, [up.url]);
  const gw = await gateway(t, chain(shapeResponse(options), balance(pool)));
  return { up, url: gw.url };
}

test('add (nginx add_header): appended for the statuses nginx adds to, unless always; an empty value adds nothing', T, async (t) => {
  const { url } = await proxied(t, {
    add: { 'X-Upstream-Status': '$upstream_status', 'X-Empty': '$http_x_nothing', Link: ['</a.css>; rel=preload', '</b.js>; rel=preload'] },
  });
  for (const code of [200, 201, 204, 206, 301, 302, 303, 304, 307, 308]) {
    const r = await fetchText(`${url}/status/${code}`);
    assert.equal(r.status, code);
    assert.equal(r.headers['x-upstream-status'], String(code), `added on ${code}`);
    assert.equal(r.headers.link, '</a.css>; rel=preload, </b.js>; rel=preload');
    assert.equal(r.headers['x-empty'], undefined);
  }
  for (const code of [202, 404, 500, 503]) {
    const r = await fetchText(`${url}/status/${code}`);
    assert.equal(r.status, code);
    assert.equal(r.headers['x-upstream-status'], undefined, `not added on ${code}`);
  }
  const always = await proxied(t, { add: { 'X-Upstream-Status': '$upstream_status' }, always: true });
  assert.equal((await fetchText(`${always.url}/status/404`)).headers['x-upstream-status'], '404');
  // The upstream's own headers are kept, the added one comes after them.
  const r = await fetchText(`${url}/status/200`);
  assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2']);
  assert.equal(r.body, 'origin 200');
});

test("add of Last-Modified and ETag replaces the response's own (nginx); an empty value removes it", T, async (t) => {
  const { url } = await proxied(t, { add: { ETag: '"gw"', 'Last-Modified': '$http_x_none' } });
  const r = await fetchText(`${url}/status/200`);
  assert.equal(r.headers.etag, '"gw"');
  assert.equal(r.headers['last-modified'], undefined);
  // Any other header is added next to the response's own.
  const other = await proxied(t, { add: { 'Cache-Control': 'public' } });
  const c = await fetchText(`${other.url}/status/200`);
  assert.equal(c.headers['cache-control'], 'public');
});

test('set and remove (headers-more): every status, names in any case, wildcards; set to "" removes', T, async (t) => {
  const { url } = await proxied(t, {
    set: { Server: 'gateway', 'X-Frame-Options': 'DENY', 'Content-Type': '$http_x_type' },
    remove: ['x-powered-by', 'X-DEBUG-*', 'Set-Cookie'],
  });
  for (const code of [200, 404, 502]) {
    const r = await fetchText(`${url}/status/${code}`);
    assert.equal(r.status, code);
    assert.equal(r.headers.server, 'gateway');
    assert.equal(r.headers['x-frame-options'], 'DENY');
    assert.equal(r.headers['x-powered-by'], undefined);
    assert.equal(r.headers['x-debug-a'], undefined);
    assert.equal(r.headers['x-debug-b'], undefined);
    assert.equal(r.headers['set-cookie'], undefined);
    assert.equal(r.headers['content-type'], undefined, 'set to an empty value removes');
  }
  const typed = await fetchText(`${url}/status/200`, { headers: { 'x-type': 'text/html' } });
  assert.equal(typed.headers['content-type'], 'text/html');
  assert.equal(typed.body, 'origin 200');
});

test('a value that holds CR, LF or another control once substituted is dropped', T, async (t) => {
  const inject: Middleware = (req, _res, next) => {
    // A rewrite() `set` can hold anything, a decoded argument for one.
    (req as IncomingMessage & { headers: Record<string, string> }).headers['x-safe'] = 'fine';
    next();
  };
  const up = await origin(t);
  const pool = poolOf(t, [up.url]);
  const shape = shapeResponse({ add: { 'X-Arg': '$arg_v', 'X-Safe': '$http_x_safe' }, set: { 'X-Set': '$arg_v' } });
  const gw = await gateway(t, chain(inject, shape, balance(pool)));
  const r = await fetchText(`${gw.url}/status/200?v=a%0d%0aSet-Cookie:%20admin=1`);
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-arg'], 'a%0d%0aSet-Cookie:%20admin=1', '$arg_ is not decoded: nothing to drop');
  assert.equal(r.headers['x-safe'], 'fine');
  const decoding: Middleware = (req, _res, next) => {
    exchange(req).vars.set('decoded', decodeURIComponent('a%0d%0aSet-Cookie:%20admin=1'));
    next();
  };
  const gw2 = await gateway(t, chain(decoding, shapeResponse({ add: { 'X-Decoded': '$decoded', 'X-Ok': 'ok' }, set: { Server: '$decoded' } }), balance(pool)));
  const d = await fetchText(`${gw2.url}/status/200`);
  assert.equal(d.status, 200);
  assert.equal(d.headers['x-decoded'], undefined);
  assert.equal(d.headers['set-cookie']?.includes('admin=1'), false);
  assert.equal(d.headers.server, 'upstream/1.0', 'a dropped set leaves the header as it was');
  assert.equal(d.headers['x-ok'], 'ok');
});

/** A chain() answering locally, in the ways Node lets a handler write a response. */
async function local(t: TestContext, options: ShapeResponseOptions) {
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    res.setHeader('X-Handler', 'local');
    if (req.url === '/end') res.end('hello');
    else if (req.url === '/empty') res.end();
    else if (req.url === '/write') {
      res.write('a');
      res.end('b');
    } else if (req.url === '/flush') {
      res.flushHeaders();
      res.end('late');
    } else if (req.url === '/explicit') {
      res.writeHead(201, 'Made', { 'x-explicit': 'yes', 'X-Handler': 'replaced' });
      res.end('made');
    } else if (req.url === '/status') {
      res.statusCode = 404;
      res.end('nope');
    } else res.end(Buffer.from('buffer'));
  };
  return gateway(
    t,
    chain(shapeResponse(options), (req, res) => handler(req, res)),
  );
}

test('responses that never call writeHead (end, write, flushHeaders) are shaped, with the Content-Length Node would send', T, async (t) => {
  const gw = await local(t, { add: { 'X-Added': 'yes' }, set: { 'X-Set': 'yes' } });
  const table: Array<[string, number, string, string | undefined]> = [
    ['/end', 200, 'hello', '5'],
    ['/empty', 200, '', '0'],
    ['/buffer', 200, 'buffer', '6'],
    ['/write', 200, 'ab', undefined],
    ['/flush', 200, 'late', undefined],
    ['/explicit', 201, 'made', undefined],
    ['/status', 404, 'nope', '4'],
  ];
  for (const [path, status, body, length] of table) {
    const r = await fetchText(`${gw.url}${path}`);
    assert.equal(r.status, status, path);
    assert.equal(r.body, body, path);
    assert.equal(r.headers['content-length'], length, `${path} content-length`);
    if (length === undefined) assert.equal(r.headers['transfer-encoding'], 'chunked', path);
    assert.equal(r.headers['x-added'], status === 404 ? undefined : 'yes', path);
    assert.equal(r.headers['x-set'], 'yes', path);
  }
  const explicit = await fetchText(`${gw.url}/explicit`);
  assert.equal(explicit.headers['x-explicit'], 'yes');
  assert.equal(explicit.headers['x-handler'], 'replaced', "writeHead's headers replace setHeader()'s");
  // HEAD: no body, no Content-Length made up.
  const head = await fetchText(`${gw.url}/end`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers['x-added'], 'yes');
});

test('the hook: status and headers to read and change, after remove, set and add; getHeader() answers after the head', T, async (t) => {
  const seen: Array<[string, string]>[] = [];
  let after: unknown;
  const up = await origin(t);
  const pool = poolOf(t, [up.url]);
  const shape = shapeResponse({
    remove: ['x-debug-*'],
    set: { Server: 'gateway' },
    add: { 'X-Added': '1' },
    hook(ctx) {
      seen.push([...ctx.headers.entries()]);
      assert.equal(ctx.headers.get('SERVER'), 'gateway');
      assert.equal(ctx.headers.get('set-cookie'), 'a=1, b=2');
      assert.deepEqual(ctx.headers.getAll('Set-Cookie'), ['a=1', 'b=2']);
      assert.equal(ctx.headers.has('x-debug-a'), false);
      assert.equal(ctx.ex.upstreamStatus.at(-1), ctx.status);
      if (ctx.status === 404) {
        ctx.status = 410;
        ctx.headers.set('Cache-Control', 'no-store');
      }
      ctx.headers.append('Set-Cookie', 'c=3');
      ctx.headers.delete('x-powered-by');
      ctx.headers.set('X-Multi', ['1', '2']);
      ctx.res.once('finish', () => {
        after = ctx.res.getHeader('x-multi');
      });
    },
  });
  const gw = await gateway(t, chain(shape, balance(pool)));
  const r = await fetchText(`${gw.url}/status/200`);
  assert.equal(r.status, 200);
  assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2', 'c=3']);
  assert.equal(r.headers['x-powered-by'], undefined);
  assert.equal(r.headers['x-multi'], '1, 2');
  assert.equal(r.headers['x-added'], '1');
  assert.equal(r.body, 'origin 200');
  assert.deepEqual(after, ['1', '2'], 'the shaped head is on the response for code that reads it later');
  const gone = await fetchText(`${gw.url}/status/404`);
  assert.equal(gone.status, 410);
  assert.equal(gone.headers['cache-control'], 'no-store');
  assert.equal(gone.body, 'origin 404');
  // entries(): every value on its own, names as written, the added header last.
  const names = seen[0]!.map(([n]) => n.toLowerCase());
  assert.equal(names.filter((n) => n === 'set-cookie').length, 2);
  assert.equal(names.at(-1), 'x-added');
});

test('a reason phrase goes with its status: kept, unless the hook changed the status', T, async (t) => {
  const gw = await gateway(
    t,
    chain(
      shapeResponse({
        hook(ctx) {
          if (ctx.req.url === '/gone') ctx.status = 410;
        },
      }),
      (_req, res) => {
        res.writeHead(201, 'Made', { 'content-type': 'text/plain' });
        res.end('made');
      },
    ),
  );
  const reason = (path: string) =>
    new Promise<string>((resolve, reject) => {
      request(`${gw.url}${path}`, { agent: false }, (res) => {
        res.resume();
        resolve(`${res.statusCode} ${res.statusMessage}`);
      })
        .on('error', reject)
        .end();
    });
  assert.equal(await reason('/made'), '201 Made');
  assert.equal(await reason('/gone'), '410 Gone');
});

test(
  "a hook that answers through ctx.res itself: its answer stands, the writer's is dropped; one that throws after writing the head closes the response",
  T,
  async (t) => {
    const shape = shapeResponse({
      hook(ctx) {
        if (ctx.req.url?.includes('answer')) {
          ctx.res.writeHead(418, { 'content-type': 'text/plain' });
          ctx.res.end('teapot');
        } else if (ctx.req.url?.includes('half')) {
          ctx.res.writeHead(200, { 'content-type': 'text/plain' });
          throw new Error('after the head');
        }
      },
    });
    // The writer answers from a timer: nothing up its stack would catch what the shaping threw.
    const gw = await gateway(
      t,
      chain(shape, (_req, res) => {
        setImmediate(() => {
          res.write('written ');
          res.end('later');
        });
      }),
    );
    const client = oneConnection(t);
    const answered = await client.get(`${gw.url}/answer`);
    assert.equal(answered.status, 418);
    assert.equal(answered.body, 'teapot');
    assert.equal((await client.get(`${gw.url}/plain`)).body, 'written later', 'the connection is sound');
    assert.equal(client.sockets.size, 1);
    await assert.rejects(fetchText(`${gw.url}/half`), 'a response begun then failed is cut off, as chain() does');
    assert.equal((await fetchText(`${gw.url}/plain`)).body, 'written later', 'the gateway goes on');
  },
);

/** A keep-alive client on one connection: a hook failure must leave the connection sound for the next request. */
function oneConnection(t: TestContext) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const sockets = new Set<unknown>();
  return {
    sockets,
    get: (url: string, method = 'GET') =>
      new Promise<{ status: number; body: string; headers: IncomingMessage['headers'] }>((resolve, reject) => {
        const req = request(url, { agent, method }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        });
        req.on('socket', (s) => sockets.add(s));
        req.on('error', reject);
        req.end();
      }),
  };
}

test("a hook that throws: 500 through the default error answer, the writer's body dropped, the connection sound, onError told", T, async (t) => {
  const errors: unknown[] = [];
  const up = await origin(t);
  const pool = poolOf(t, [up.url]);
  const shape = shapeResponse({
    hook(ctx) {
      const mode = /mode=(\w+)/.exec(ctx.req.url ?? '')?.[1];
      if (mode === 'throw') throw new Error('boom');
      if (mode === 'string') throw 'not an error';
      if (mode === 'forbid') throw new ReturnStatusError(403);
      if (mode === 'length') ctx.headers.set('Content-Length', '1');
      if (mode === 'te') ctx.headers.delete('transfer-encoding');
      if (mode === 'crlf') ctx.headers.set('X-Bad', 'a\r\nb');
      if (mode === 'name') ctx.headers.append('Bad Name', 'x');
      if (mode === 'status') ctx.status = 99;
    },
    onError(err) {
      errors.push(err);
      throw new Error('a listener failing changes nothing');
    },
  });
  const localHandler: Middleware = (req, res, next) => {
    if (req.url?.startsWith('/local')) {
      res.setHeader('Set-Cookie', 'local=1');
      res.end('local body that is dropped');
    } else next();
  };
  const gw = await gateway(t, chain(shape, localHandler, balance(pool)));
  const client = oneConnection(t);
  const cases: Array<[string, number]> = [
    ['throw', 500],
    ['string', 500],
    ['forbid', 403],
    ['length', 500],
    ['te', 500],
    ['crlf', 500],
    ['name', 500],
    ['status', 500],
  ];
  for (const [mode, status] of cases) {
    for (const path of [`/big?mode=${mode}`, `/status/200?mode=${mode}`, `/local?mode=${mode}`]) {
      const r = await client.get(`${gw.url}${path}`);
      assert.equal(r.status, status, path);
      assert.equal(r.body, status === 403 ? '403 Forbidden\n' : '500 Internal Server Error\n', path);
      assert.equal(r.headers['set-cookie'], undefined, `${path}: the failed response's headers are not sent`);
      // The same connection answers the next request whole.
      const ok = await client.get(`${gw.url}/status/200`);
      assert.equal(ok.status, 200);
      assert.equal(ok.body, 'origin 200');
    }
  }
  assert.equal(client.sockets.size, 1, 'one connection throughout');
  const head = await client.get(`${gw.url}/status/200?mode=throw`, 'HEAD');
  assert.equal(head.status, 500);
  assert.equal(head.body, '');
  assert.equal(errors.length, cases.length * 3 + 1);
  const first = errors[0] as HookError;
  assert.ok(first instanceof HookError);
  assert.equal(first.code, 'SWY_ERR_HOOK');
  assert.equal((first.cause as Error).message, 'boom');
  assert.ok(errors[6] instanceof ReturnStatusError, "the hook's own SwitchyardError is passed on as it is");
  for (const e of errors.slice(9)) assert.ok(e instanceof HookError || e instanceof ReturnStatusError);
});

for (const kind of KINDS) {
  test(`HTTP/2 (${kind}): shaped heads through the compatibility response (cache() HITs, implicit heads too); a failing hook answers 500`, T, async (t) => {
    const up = await origin(t);
    const pool = poolOf(t, [up.url]);
    const shape = shapeResponse({
      add: { 'X-Added': 'yes' },
      remove: ['x-powered-by'],
      hook(ctx) {
        if (ctx.req.url?.includes('throw')) throw new Error('boom');
      },
    });
    const localHandler: Middleware = (req, res, next) => {
      if (req.url?.startsWith('/local')) {
        if (req.url.includes('empty')) res.end();
        else res.end('local');
      } else next();
    };
    const gw = await h2Gateway(t, kind, chain(shape, cache({ valid: '1m' }), localHandler, balance(pool)));
    const session = h2Connect(t, gw.url);
    const proxiedReply = await h2Request(session, { ':path': '/status/200' });
    assert.equal(proxiedReply.status, 200);
    assert.equal(proxiedReply.headers['x-added'], 'yes');
    assert.equal(proxiedReply.headers['x-powered-by'], undefined);
    assert.equal(proxiedReply.text, 'origin 200');
    // (A response without Set-Cookie, which cache() stores.)
    for (const cacheStatus of ['MISS', 'HIT']) {
      const r = await h2Request(session, { ':path': '/big-cached' });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-cache-status'], cacheStatus);
      assert.equal(r.headers['x-added'], 'yes', cacheStatus);
      assert.equal(r.body.length, 1_000_000);
    }
    for (const path of ['/local', '/local-empty']) {
      const r = await h2Request(session, { ':path': path });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-added'], 'yes');
    }
    for (const path of ['/big?throw', '/local?throw', '/local-empty?throw']) {
      const r = await h2Request(session, { ':path': path });
      assert.equal(r.status, 500, path);
      assert.equal(r.text, '500 Internal Server Error\n', path);
    }
    // The session goes on.
    assert.equal((await h2Request(session, { ':path': '/status/200' })).status, 200);
  });
}

test('options: validated when the factory is called, each mistake naming its path', () => {
  const bad: Array<[unknown, string]> = [
    [{ add: { 'Content-Length': '1' } }, 'add.Content-Length'],
    [{ set: { 'transfer-encoding': 'chunked' } }, 'set.transfer-encoding'],
    [{ remove: ['Connection'] }, 'remove[0]'],
    [{ remove: ['Content-*'] }, 'remove[0]'],
    [{ remove: ['*'] }, 'remove[0]'],
    [{ remove: 'x-a' }, 'remove'],
    [{ add: { 'Bad Name': 'x' } }, 'add.Bad Name'],
    [{ add: { 'X-A': 1 } }, 'add.X-A'],
    [{ add: { 'X-A': [] } }, 'add.X-A'],
    [{ add: { 'X-A': ['ok', 2] } }, 'add.X-A[1]'],
    [{ set: { 'X-A': ['a'] } }, 'set.X-A'],
    [{ add: { 'X-A': 'a\r\nb' } }, 'add.X-A'],
    [{ always: 'yes' }, 'always'],
    [{ hook: 'no' }, 'hook'],
    [{ onError: 1 }, 'onError'],
    [{ ad: {} }, 'ad'],
    [[], 'options'],
  ];
  for (const [options, option] of bad) {
    assert.throws(
      () => shapeResponse(options as ShapeResponseOptions),
      (e: unknown) => e instanceof InvalidOptionError && e.option === option,
      JSON.stringify(options),
    );
  }
  assert.equal(typeof shapeResponse(), 'function');
  assert.equal(shapeResponse({}).name, 'shapeResponse');
});
