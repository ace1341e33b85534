// Seeded fuzzing of every entry point a client reaches (issue 11, hostile input): raw bytes over TCP,
// plain requests and upgrade requests mixed, thrown at gateways in front of real upstreams:
//   - node:http with chain(rewrite(), cache(), sticky(), balance()) and balance().upgrade,
//   - the same with st.wrapUpgrade(proxy.upgrade), and with shouldUpgradeCallback,
//   - Express with the same middleware,
//   - the Fastify plugin without a prefix and under one.
// Each property run sends a batch of requests at once. It holds when the process stays up (no
// uncaught exception or unhandled rejection), every connection gets an answer (its first bytes) or
// a close within a bounded wait, the gateway still proxies a plain request after the batch, and every
// server slot is free at the end.
//
//   FUZZ_RUNS=<n>   property runs (batches of up to 24 requests) per gateway (default 50, about 450 requests)
//   FUZZ_SEED=<n>   fast-check seed (default fixed); a failure prints the seed to replay it with
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import fc from 'fast-check';
import { WebSocketServer } from 'ws';
import { balance, cache, chain, createPool, respondWithError, rewrite, sticky, type Middleware, type UpstreamPool } from '../../src/index.ts';

const RUNS = positiveInteger(process.env.FUZZ_RUNS, 50);
const SEED = integer(process.env.FUZZ_SEED, 0x5eed11);
/** Time a connection gets to answer before the client half-closes it. */
const GRACE_MS = 300;
/** Time a connection then gets to answer or close: past it, the connection is left hanging (a failure). */
const BOUND_MS = 5000;

function positiveInteger(text: string | undefined, fallback: number): number {
  const n = Number(text);
  return text !== undefined && Number.isInteger(n) && n > 0 ? n : fallback;
}

function integer(text: string | undefined, fallback: number): number {
  const n = Number(text);
  return text !== undefined && text !== '' && Number.isInteger(n) ? n : fallback;
}

// The process must survive whatever a client sends: an exception nobody caught is a failure of the
// run in progress, reported with the seed, instead of the end of the test process.
const crashes: unknown[] = [];
/** The test in progress, told about a crash at once (node:test may fail it before the property does). */
let current: TestContext | undefined;
const onCrash = (err: unknown): void => {
  crashes.push(err);
  current?.diagnostic(`uncaught during the fuzzing; replay with FUZZ_SEED=${SEED} FUZZ_RUNS=${RUNS}: ${(err as Error)?.stack ?? String(err)}`);
};
process.on('uncaughtException', onCrash);
process.on('unhandledRejection', onCrash);
after(() => {
  process.off('uncaughtException', onCrash);
  process.off('unhandledRejection', onCrash);
});

// ---------------------------------------------------------------------------------------------
// Generators: one request as raw bytes (latin1, so every byte value can appear).

const CRLF = '\r\n';

/** Mostly `valid`, sometimes `hostile`: most requests differ from a valid one in one or two places. */
const mostly = <T>(valid: fc.Arbitrary<T>, hostile: fc.Arbitrary<T>): fc.Arbitrary<T> =>
  fc.oneof({ arbitrary: valid, weight: 4 }, { arbitrary: hostile, weight: 1 });

/** Replaces one character of `base` with `byte`. */
const oneByte = (bases: string[]): fc.Arbitrary<string> =>
  fc.tuple(fc.constantFrom(...bases), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([base, at, byte]) => {
    const i = at % base.length;
    return base.slice(0, i) + String.fromCharCode(byte) + base.slice(i + 1);
  });

const segment = fc.constantFrom(
  '',
  'a',
  'old',
  'r',
  'api',
  'c',
  'ws',
  '..',
  '.',
  '..;',
  '.;x',
  '%',
  '%zz',
  '%2e%2e',
  '%2f',
  '%00',
  '%5c',
  '%c3%a9',
  '#',
  '#x',
  '?',
  '?a=1&b',
  '?a=%zz',
  ';p',
  '@',
  ':',
  '[',
  ']',
  '\\',
  '\u00e9',
  '\u007f',
  '*',
  'a'.repeat(300),
);
const originForm = fc.array(segment, { maxLength: 6 }).map((parts) => `/${parts.join('/')}`);
const authority = fc.constantFrom('x', 'gw', 'x:a', '[', '[::1', '[::1]:80', 'x:99999', 'a@b', '', ':80', '127.0.0.1:1', '\u00e9', 'x:-1');
const absoluteForm = fc
  .tuple(fc.constantFrom('http://', 'https://', 'ws://', 'wss://', 'HTTP://', 'ftp://', 'http:/', 'http:', '//'), authority, originForm)
  .map(([scheme, host, path]) => scheme + host + path);
const target = mostly(
  fc.constantFrom('/', '/a', '/c/1', '/c/2?x=1', '/old/x', '/r/x?a=1', '/ws', '/api/ws', '/api/c/1', '/api/old/y', '/api', 'http://gw/api/ws'),
  fc.oneof(
    originForm,
    absoluteForm,
    fc.constantFrom('*', 'x', 'http://x:a/', 'http://[/', '/api/../..', '/api/..;/x', '/api#x', '/api/%'),
    oneByte(['http://gw/api/ws', '/api/ws?a=1', '/c/x', 'ws://gw:80/api/ws']),
  ),
);
const method = mostly(
  fc.constantFrom('GET', 'GET', 'GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS'),
  fc.constantFrom('PATCH', 'PRI', 'CONNECT', 'TRACE', 'PROPFIND', 'get', 'G\u0000T', ''),
);
const version = mostly(fc.constant('HTTP/1.1'), fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'HTTP/1', 'HTTP/0.9', 'http/1.1', ''));

type Header = [string, string];
const host = mostly(
  fc.constant<Header[]>([['Host', 'gw']]),
  fc.constantFrom<Header[]>(
    [],
    [
      ['Host', 'gw'],
      ['Host', 'other'],
    ],
    [['Host', '']],
    [['Host', 'a b']],
    [['Host', '[::1']],
    [['Host', '[::1]:8080']],
    [['Host', 'x:99999']],
    [['Host', '\u00e9.example']],
    [['Host', 'a/b']],
    [['Host', 'a@b']],
    [['Host', 'x'.repeat(300)]],
    [
      ['host', 'gw'],
      ['HOST', 'gw'],
    ],
  ),
);
const KEY: Header[] = [
  ['Sec-WebSocket-Version', '13'],
  ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
];
/** What the request asks to upgrade to, as a client would send it; then hostile mixes of Upgrade and Connection. */
const upgrade = mostly(
  fc.constantFrom<Header[]>(
    [],
    [],
    [['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ...KEY],
    [['Connection', 'keep-alive, Upgrade'], ['Upgrade', 'WebSocket'], ...KEY],
    [
      ['Connection', 'Upgrade, HTTP2-Settings'],
      ['Upgrade', 'h2c'],
      ['HTTP2-Settings', 'AAMAAABkAAQAAP__'],
    ],
    [
      ['Connection', 'Upgrade'],
      ['Upgrade', 'echo/1'],
    ],
  ),
  fc
    .tuple(
      fc.constantFrom('websocket', 'WebSocket', 'h2c', 'H2C', '', 'websocket, h2c', 'echo/1', ',', 'h2', 'websocket/13', 'x'.repeat(200)),
      fc.constantFrom(
        'Upgrade',
        'upgrade',
        'Upgrade, keep-alive',
        'keep-alive',
        'close',
        'Upgrade, HTTP2-Settings',
        'x-secret, Upgrade',
        'TE, Upgrade',
        '',
        'Upgrade, close',
        'host, Upgrade',
      ),
      fc.boolean(),
    )
    .map(([protocol, tokens, key]): Header[] => [['Connection', tokens], ['Upgrade', protocol], ...(key ? KEY : [])]),
);
const extra = fc.array(
  fc.constantFrom<Header>(
    ['Sec-WebSocket-Key', 'short'],
    ['Sec-WebSocket-Version', '8'],
    ['Upgrade', 'websocket'],
    ['Connection', 'close'],
    ['Cookie', 'srv_id=a'],
    ['Cookie', 'srv_id=zzz; srv_id=b'],
    ['Cookie', '\u00ff=\u0001'],
    ['X-Forwarded-For', '203.0.113.9, junk, ::1'],
    ['Forwarded', 'for="[::1'],
    ['Expect', '100-continue'],
    ['Expect', 'nonsense'],
    ['Range', 'bytes=0-1,-1'],
    ['If-None-Match', '*'],
    ['Cache-Control', 'no-cache'],
    ['X-Secret', '1'],
    ['TE', 'trailers'],
    ['Keep-Alive', 'timeout=1'],
    ['Trailer', 'x'],
    ['X-Big', 'a'.repeat(20_000)],
    ['X-Ctl', '\u0001'],
    ['X-Latin', '\u00e9\u00ff'],
    ['Bad Name', 'x'],
    ['X-Empty', ''],
  ),
  { maxLength: 2 },
);
/** How the body is framed, including contradictions and lies. */
const framing = mostly(
  fc.constantFrom('none', 'none', 'length', 'chunked'),
  fc.constantFrom(
    'length-short',
    'length-long',
    'chunked+length',
    'gzip-chunked',
    'chunked-gzip',
    'identity',
    'length-dup',
    'length-list',
    'length-negative',
    'length-junk',
    'length-huge',
    'chunked-bad',
    'chunked-unended',
    'none+body',
  ),
);
const body = fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a).toString('latin1'));
const lineEnd = fc.oneof({ arbitrary: fc.constant(CRLF), weight: 20 }, { arbitrary: fc.constant('\n'), weight: 1 });

interface Sent {
  bytes: Buffer;
  /** Half-close right after the request: the body is known to be cut short, or the client just does so. */
  end: boolean;
  /** A short description for failure messages. */
  text: string;
}

const rawRequest: fc.Arbitrary<Sent> = fc
  .record({
    method,
    target,
    version,
    host,
    upgrade,
    extra,
    framing,
    body,
    eol: lineEnd,
    end: fc.oneof({ arbitrary: fc.constant(false), weight: 9 }, { arbitrary: fc.constant(true), weight: 1 }),
  })
  .map((r) => {
    const headers: Header[] = [...r.host, ...r.upgrade, ...r.extra];
    let payload = '';
    const chunked = (text: string): string => (text === '' ? '' : `${text.length.toString(16)}${CRLF}${text}${CRLF}`) + `0${CRLF}${CRLF}`;
    switch (r.framing) {
      case 'length':
        headers.push(['Content-Length', String(r.body.length)]);
        payload = r.body;
        break;
      case 'length-short':
        headers.push(['Content-Length', String(r.body.length + 5)]);
        payload = r.body;
        break;
      case 'length-long':
        headers.push(['Content-Length', '0']);
        payload = r.body;
        break;
      case 'chunked':
        headers.push(['Transfer-Encoding', 'chunked']);
        payload = chunked(r.body);
        break;
      case 'chunked+length':
        headers.push(['Transfer-Encoding', 'chunked'], ['Content-Length', '3']);
        payload = chunked(r.body);
        break;
      case 'gzip-chunked':
        headers.push(['Transfer-Encoding', 'gzip, chunked']);
        payload = chunked(r.body);
        break;
      case 'chunked-gzip':
        headers.push(['Transfer-Encoding', 'chunked, gzip']);
        payload = chunked(r.body);
        break;
      case 'identity':
        headers.push(['Transfer-Encoding', 'identity'], ['Content-Length', String(r.body.length)]);
        payload = r.body;
        break;
      case 'length-dup':
        headers.push(['Content-Length', String(r.body.length)], ['Content-Length', String(r.body.length + 1)]);
        payload = r.body;
        break;
      case 'length-list':
        headers.push(['Content-Length', `${r.body.length}, ${r.body.length}`]);
        payload = r.body;
        break;
      case 'length-negative':
        headers.push(['Content-Length', '-1']);
        break;
      case 'length-junk':
        headers.push(['Content-Length', '1x']);
        break;
      case 'length-huge':
        headers.push(['Content-Length', '99999999999999999999999']);
        break;
      case 'chunked-bad':
        headers.push(['Transfer-Encoding', 'chunked']);
        payload = `zz${CRLF}${r.body}${CRLF}`;
        break;
      case 'chunked-unended':
        headers.push(['Transfer-Encoding', 'chunked']);
        payload = `${(r.body.length + 1).toString(16)}${CRLF}${r.body}`;
        break;
      case 'none+body':
        payload = r.body;
        break;
    }
    const head = `${r.method} ${r.target} ${r.version}${r.eol}${headers.map(([n, v]) => `${n}: ${v}${r.eol}`).join('')}${r.eol}`;
    const text = `${head.replace(/a{100,}/g, (m) => `a{${m.length}}`)}${payload.length > 0 ? `<${payload.length} body bytes>` : ''}`;
    const end = r.end || r.framing === 'length-short' || r.framing === 'chunked-unended';
    return { bytes: Buffer.from(head + payload, 'latin1'), end, text: JSON.stringify(`${text}${end ? ' <FIN>' : ''}`) };
  });

// ---------------------------------------------------------------------------------------------
// Real upstreams and the gateways under test.

/** An upstream answering every request (cacheable under /c/), echoing WebSocket messages and tunneling `echo` upgrades. */
async function upstream(t: TestContext, name: string): Promise<string> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const text = `${name} ${req.method} ${req.url}`;
      res.writeHead(200, {
        'content-type': 'text/plain',
        'content-length': Buffer.byteLength(text),
        ...((req.url ?? '').startsWith('/c/') ? { 'cache-control': 'max-age=60' } : {}),
      });
      res.end(text);
    });
    req.on('error', () => undefined);
  });
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => {
    ws.on('error', () => undefined); // garbage frames from the fuzzing: the upstream's problem, not the gateway's
    ws.on('message', (data) => ws.send(data));
  });
  server.on('upgrade', (req: IncomingMessage, socket, head) => {
    socket.on('error', () => undefined);
    if (/^echo/i.test(req.headers.upgrade ?? '')) {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${req.headers.upgrade}\r\n\r\n`);
      socket.pipe(socket);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  const url = await serve(t, server);
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });
  return url;
}

/** Listens on port 0 and closes the server (and every connection it accepted, upgraded ones too) in `t.after`. */
async function serve(t: TestContext, server: Server): Promise<string> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    for (const s of sockets) s.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

interface Parts {
  pool: UpstreamPool;
  middleware: Middleware[];
  proxy: ReturnType<typeof balance>;
  st: ReturnType<typeof sticky>;
}

/** A pool over two real upstreams and the middleware in front of it: rewrite(), cache(), sticky(), balance(). */
async function parts(t: TestContext): Promise<Parts> {
  const urls = [await upstream(t, 'a'), await upstream(t, 'b')];
  // maxFails 0: what the fuzzing makes an upstream refuse must not take it out of the pool for the
  // liveness check after each batch.
  const pool = createPool({ servers: urls.map((url, i) => ({ url, id: 'ab'[i]!, route: 'ab'[i]!, maxFails: 0 })) });
  t.after(() => pool.close());
  const rules = rewrite([
    { rewrite: '^/old/(.*)$', replacement: '/new/$1', flag: 'last' },
    { location: '/r/', rules: [{ return: 302, url: '/moved?$args' }] },
    { set: '$seen', value: '$arg_a$http_x_secret$cookie_srv_id' },
    { if: { var: '$http_x_secret', op: '=', value: '1' }, then: [{ return: 403, text: 'no' }] },
  ]);
  const cached = cache({});
  t.after(() => cached.close());
  const st = sticky(pool, { cookie: true });
  t.after(() => st.close());
  const proxy = balance(pool, { headerTimeout: '3s', idleTimeout: '3s', connectTimeout: '2s' });
  return { pool, middleware: [rules, cached, st, proxy], proxy, st };
}

interface Gateway {
  port: number;
  /** A plain request known to be proxied through the gateway, to check it is still alive. */
  alive: string;
  pool: UpstreamPool;
}

type Build = (t: TestContext) => Promise<Gateway>;

const portOf = (url: string): number => Number(new URL(url).port);

const gateways: Record<string, Build> = {
  'node:http, chain(rewrite, cache, sticky, balance), balance().upgrade': async (t) => {
    const p = await parts(t);
    const server = createServer(chain(...p.middleware));
    server.on('upgrade', p.proxy.upgrade);
    return { port: portOf(await serve(t, server)), alive: '/alive', pool: p.pool };
  },
  'node:http, chain(rewrite, cache, sticky, balance), st.wrapUpgrade(proxy.upgrade)': async (t) => {
    const p = await parts(t);
    const server = createServer(chain(...p.middleware));
    server.on('upgrade', p.st.wrapUpgrade(p.proxy.upgrade));
    return { port: portOf(await serve(t, server)), alive: '/alive', pool: p.pool };
  },
  'node:http with shouldUpgradeCallback: proxy.upgrade.shouldUpgrade': async (t) => {
    const p = await parts(t);
    const server = createServer({ shouldUpgradeCallback: p.proxy.upgrade.shouldUpgrade }, chain(...p.middleware));
    server.on('upgrade', p.st.wrapUpgrade(p.proxy.upgrade));
    return { port: portOf(await serve(t, server)), alive: '/alive', pool: p.pool };
  },
  'Express, app.use(rewrite, cache, sticky, balance), balance().upgrade': async (t) => {
    const { default: express } = await import('express');
    const p = await parts(t);
    const app = express();
    app.use(...p.middleware);
    app.use((err: unknown, req: IncomingMessage, res: ServerResponse, _next: unknown) => respondWithError(err, req, res));
    const server = createServer(app);
    server.on('upgrade', p.proxy.upgrade);
    return { port: portOf(await serve(t, server)), alive: '/alive', pool: p.pool };
  },
  'Fastify plugin without a prefix': async (t) => {
    const { default: Fastify } = await import('fastify');
    const { switchyard } = await import('../../src/adapters/fastify.ts');
    const p = await parts(t);
    const app = Fastify({ logger: false });
    t.after(() => app.close());
    await app.register(switchyard, { use: p.middleware });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return { port: (app.server.address() as AddressInfo).port, alive: '/alive', pool: p.pool };
  },
  'Fastify plugin under /api': async (t) => {
    const { default: Fastify } = await import('fastify');
    const { switchyard } = await import('../../src/adapters/fastify.ts');
    const p = await parts(t);
    const app = Fastify({ logger: false });
    t.after(() => app.close());
    app.get('/own', async () => 'own');
    await app.register(switchyard, { prefix: '/api', use: p.middleware });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return { port: (app.server.address() as AddressInfo).port, alive: '/api/alive', pool: p.pool };
  },
};

// ---------------------------------------------------------------------------------------------
// The client side.

/** How often each answer's first line was seen by the test in progress (a diagnostic of what the run reached). */
const tally = new Map<string, number>();

/**
 * Sends one raw request on a fresh connection. Resolves with how the gateway reacted: its first bytes
 * (`answered`) or a close (`closed`); the client half-closes after GRACE_MS without either, and the
 * connection that neither answers nor closes within BOUND_MS after that resolves `hung`.
 */
function exchange(port: number, sent: Sent): Promise<'answered' | 'closed' | 'hung'> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let grace: NodeJS.Timeout | undefined;
    let bound: NodeJS.Timeout | undefined;
    const done = (outcome: 'answered' | 'closed' | 'hung'): void => {
      clearTimeout(grace);
      clearTimeout(bound);
      socket.destroy();
      resolve(outcome);
    };
    socket.on('error', () => undefined);
    socket.once('data', (d: Buffer) => {
      const line = d.toString('latin1').split('\r\n', 1)[0]!.slice(0, 12);
      tally.set(line, (tally.get(line) ?? 0) + 1);
      done('answered');
    });
    socket.once('close', () => done('closed'));
    socket.once('connect', () => {
      if (sent.end) socket.end(sent.bytes);
      else socket.write(sent.bytes);
      grace = setTimeout(() => {
        socket.end();
        bound = setTimeout(() => done('hung'), BOUND_MS);
      }, GRACE_MS);
    });
  });
}

/** A plain GET through the gateway: its status, or 0 when it failed (bounded). */
function plainStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(0));
    });
    req.setTimeout(BOUND_MS, () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

async function settled(cond: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) return false;
    await new Promise<void>((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

for (const [name, build] of Object.entries(gateways)) {
  test(`fuzz: ${name}`, { timeout: 60_000 + RUNS * 2 * BOUND_MS }, async (t) => {
    current = t;
    t.after(() => (current = undefined));
    const gw = await build(t);
    assert.equal(await plainStatus(gw.port, gw.alive), 200, 'the gateway proxies before the fuzzing');
    let requests = 0;
    let closed = 0;
    const property = fc.asyncProperty(fc.array(rawRequest, { minLength: 1, maxLength: 24, size: 'max' }), async (batch) => {
      const outcomes = await Promise.all(batch.map((sent) => exchange(gw.port, sent)));
      requests += batch.length;
      closed += outcomes.filter((o) => o === 'closed').length;
      const crash = crashes.shift();
      if (crash !== undefined) throw new Error(`the process would have crashed: ${(crash as Error)?.stack ?? String(crash)}`);
      const hung = batch.filter((_, i) => outcomes[i] === 'hung');
      if (hung.length > 0) throw new Error(`neither answered nor closed within ${BOUND_MS} ms:\n${hung.map((s) => s.text).join('\n')}`);
      const status = await plainStatus(gw.port, gw.alive);
      if (status !== 200) throw new Error(`a plain request after the batch got ${status}`);
    });
    try {
      await fc.assert(property, { seed: SEED, numRuns: RUNS });
    } catch (err) {
      // fast-check's report has the counterexample and the seed and path; say how to replay it.
      throw new Error(`fuzz failed for ${name}: replay with FUZZ_SEED=${SEED} FUZZ_RUNS=${RUNS}\n${(err as Error).message}`, { cause: err });
    }
    const idle = await settled(() => gw.pool.stats().servers.every((s) => s.active === 0), BOUND_MS);
    assert.ok(idle, `server slots still held after the fuzzing: ${JSON.stringify(gw.pool.stats().servers.map((s) => s.active))}`);
    assert.deepEqual(crashes.splice(0), []);
    t.diagnostic(`${requests} requests (seed ${SEED}, ${RUNS} runs), ${closed} closed unanswered; first lines of the answers: ${JSON.stringify([...tally])}`);
    tally.clear();
  });
}
