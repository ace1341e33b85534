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
import { PassThrough, type Duplex } from 'node:stream';
import {
  accessLog,
  balance,
  cache,
  chain,
  createPool,
  limitConnections,
  limitRequests,
  requestId,
  respondWithError,
  rewrite,
  shapeResponse,
  sticky,
  SwitchyardError,
  type BalanceMiddleware,
  type Middleware,
  type UpstreamPool,
} from '../../src/index.ts';

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

/** The parts of one raw request, as the generators give them. */
interface Parts {
  method: string;
  target: string;
  version: string;
  host: Header[];
  upgrade: Header[];
  extra: Header[];
  framing: string;
  body: string;
  eol: string;
  end: boolean;
}

const halfClose = fc.oneof({ arbitrary: fc.constant(false), weight: 9 }, { arbitrary: fc.constant(true), weight: 1 });

const rawRequest: fc.Arbitrary<Sent> = fc
  .record({ method, target, version, host, upgrade, extra, framing, body, eol: lineEnd, end: halfClose })
  .map((r) => toSent(r));

/** One request's bytes from its parts. */
function toSent(r: Parts): Sent {
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
}

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

interface Built {
  pool: UpstreamPool;
  middleware: Middleware[];
  proxy: ReturnType<typeof balance>;
  st: ReturnType<typeof sticky>;
}

/** A pool over two real upstreams and the middleware in front of it: rewrite(), cache(), sticky(), balance(). */
async function parts(t: TestContext): Promise<Built> {
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

/** An Express app with `middleware` and an error handler answering switchyard's errors, in a node:http server. */
async function expressServer(middleware: Middleware[]): Promise<Server> {
  const { default: express } = await import('express');
  const app = express();
  app.use(...middleware);
  app.use((err: unknown, req: IncomingMessage, res: ServerResponse, _next: unknown) => respondWithError(err, req, res));
  return createServer(app);
}

/** Closes idle keep-alive connections soon after their answer, so that each exchange ends once its connection closes. */
function closingIdle(server: Server): Server {
  return Object.assign(server, { keepAliveTimeout: 50, keepAliveTimeoutBuffer: 0 });
}

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
    const p = await parts(t);
    const server = await expressServer(p.middleware);
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
function plainStatus(port: number, path: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close', ...headers } }, (res) => {
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

interface Result {
  outcome: 'answered' | 'closed' | 'hung';
  /** What the client received (only exchangeAll() keeps it). */
  received: string;
}

/**
 * Throws batches of `requests` at the gateway, `send` sending each on its own connection, and checks
 * the properties: no crash, every connection answered or closed, `check(batch, results)` (throws),
 * the gateway still proxying after each batch, every server slot free at the end.
 */
async function fuzzGateway(
  t: TestContext,
  name: string,
  gw: Gateway,
  requests: fc.Arbitrary<Sent>,
  maxLength: number,
  send: (port: number, sent: Sent) => Promise<Result>,
  check: (batch: Sent[], results: Result[]) => void | Promise<void> = () => undefined,
): Promise<void> {
  current = t;
  t.after(() => (current = undefined));
  assert.equal(await plainStatus(gw.port, gw.alive), 200, 'the gateway proxies before the fuzzing');
  let count = 0;
  let closed = 0;
  // A failure can leave state behind (a slot held) that makes every later batch fail, the shrunk
  // ones too: the first failing batch is reported as well, as it was.
  let first: string | undefined;
  const property = fc.asyncProperty(fc.array(requests, { minLength: 1, maxLength, size: 'max' }), async (batch) => {
    try {
      await oneBatch(batch);
    } catch (err) {
      first ??= `${(err as Error).message}\nthe batch:\n${batch.map((s) => s.text).join('\n')}`;
      throw err;
    }
  });
  const oneBatch = async (batch: Sent[]): Promise<void> => {
    const results = await Promise.all(batch.map((sent) => send(gw.port, sent)));
    count += batch.length;
    closed += results.filter((r) => r.outcome === 'closed').length;
    const crash = crashes.shift();
    if (crash !== undefined) throw new Error(`the process would have crashed: ${(crash as Error)?.stack ?? String(crash)}`);
    const hung = batch.filter((_, i) => results[i]!.outcome === 'hung');
    if (hung.length > 0)
      throw new Error(
        `left hanging within ${BOUND_MS} ms of the client's FIN (unanswered, or with exchangeAll() not closed):\n${hung.map((s) => s.text).join('\n')}`,
      );
    await check(batch, results);
    // Every server slot the batch took is given back once its connections are gone.
    if (!(await settled(() => gw.pool.stats().servers.every((s) => s.active === 0), 1000)))
      throw new Error(`server slots still held after the batch: ${JSON.stringify(gw.pool.stats().servers.map((s) => s.active))}`);
    const status = await plainStatus(gw.port, gw.alive);
    if (status !== 200) throw new Error(`a plain request after the batch got ${status}`);
  };
  try {
    await fc.assert(property, { seed: SEED, numRuns: RUNS });
  } catch (err) {
    // fast-check's report has the counterexample and the seed and path; say how to replay it.
    throw new Error(`fuzz failed for ${name}: replay with FUZZ_SEED=${SEED} FUZZ_RUNS=${RUNS}\n${(err as Error).message}\nThe first failure: ${first}`, {
      cause: err,
    });
  }
  const idle = await settled(() => gw.pool.stats().servers.every((s) => s.active === 0), BOUND_MS);
  assert.ok(idle, `server slots still held after the fuzzing: ${JSON.stringify(gw.pool.stats().servers.map((s) => s.active))}`);
  assert.deepEqual(crashes.splice(0), []);
  t.diagnostic(`${count} requests (seed ${SEED}, ${RUNS} runs), ${closed} closed unanswered; first lines of the answers: ${JSON.stringify([...tally])}`);
  tally.clear();
}

for (const [name, build] of Object.entries(gateways)) {
  test(`fuzz: ${name}`, { timeout: 60_000 + RUNS * 2 * BOUND_MS }, async (t) => {
    await fuzzGateway(t, name, await build(t), rawRequest, 24, async (port, sent) => ({ outcome: await exchange(port, sent), received: '' }));
  });
}

// ---------------------------------------------------------------------------------------------
// The request path (issues 17 and 18): requestId(), accessLog() to a stream and to functions,
// limitConnections() and limitRequests() with hostile keys, shapeResponse() (add, set, remove, a
// hook), and balance() over a pool selector with setHeaders of client-controlled variables, an
// onRequest and an onResponse hook, and the cookie options, in front of upstreams that answer with
// hostile heads (huge, many Set-Cookie, bad values, raw malformed ones). On top of the properties
// above: nothing the client sends makes a header line of its own in what the upstream or the client
// receive (values hold percent-encoded CR/LF, and characters whose low byte is CR or LF, to reach
// decoded variables and hooks), the access log's lines stay one per request, and the process's
// handles are back to where they were once every gateway is closed.

/** A header line the fuzzing tries to smuggle in: it must never start a line of a head. */
const INJECTED = /[\r\n]x-injected\s*:/i;

/** Client-controlled text for paths, arguments, cookies: percent-encoded CR/LF, wide characters whose low byte is CR/LF, quotes. */
const smuggled = fc.constantFrom(
  'v',
  '',
  '%0d%0aX-Injected:%201',
  '%0aX-Injected:1',
  '%0dX-Injected:1',
  '%e5%98%8a%e5%98%8dX-Injected:1',
  '%c4%8a%c4%8dX-Injected:1',
  '%0d%0a%0d%0aHTTP/1.1%20200',
  '%00',
  '%ff%fe',
  '%22%5c%27',
  '$1',
  '$request_id',
  '%24http_host',
  '%',
  '%zz',
  '\u00e9',
  'a'.repeat(2000),
);
/** What the upstream answers (`ans=`), the hooks do (`hook=`), the pool selector picks (`pool=`), the hostile limit key is (`k=`). */
const answer = fc.constantFrom(
  'plain',
  'plain',
  'plain',
  'cookies',
  'badcookie',
  'huge',
  'huger',
  'many',
  'latin',
  'raw-cr',
  'raw-fold',
  'raw-name',
  'raw-999',
  'raw-103',
  'raw-204',
  'raw-cut',
  'raw-badchunk',
  'raw-twolengths',
  'raw-cl-te',
  'big',
  'slow',
);
const hook = fc.constantFrom(
  '',
  '',
  'req-throw',
  'req-crlf',
  'req-decoded',
  'req-path',
  'req-framing',
  'req-async',
  'req-reject',
  'req-host',
  'res-throw',
  'res-respond',
  'res-read',
  'res-read-small',
  'res-status',
  'res-crlf',
  'res-cookie',
  'res-async',
  'shape-throw',
  'shape-status',
  'shape-set',
  'shape-framing',
  'log-throw',
);
const poolChoice = fc.constantFrom('', '', 'a', 'b', 'nope', 'undefined', 'throw', 'object');
const limitKey = fc.constantFrom('', '', '', 'k1', 'k2', 'long', 'throw', 'object', '%0d%0a');
const pathTarget = fc
  .record({
    prefix: fc.constantFrom('/', '/c/', '/old/', '/r/', '/api/'),
    segments: fc.array(smuggled, { maxLength: 2 }),
    ans: answer,
    hook,
    pool: poolChoice,
    k: limitKey,
    x: smuggled,
  })
  .map((q) => `${q.prefix}${q.segments.join('/')}?ans=${q.ans}&hook=${q.hook}&pool=${q.pool}&k=${q.k}&x=${q.x}`);
const pathHeaders = fc.array(
  fc.oneof(
    {
      arbitrary: fc.tuple(fc.constant('X-Key'), fc.constantFrom('k1', 'k1', 'k2', 'k3', '', 'a'.repeat(300), '\u00ff\u00fe', 'k%0d%0aX-Injected:1')),
      weight: 4,
    },
    fc.tuple(
      fc.constant('Cookie'),
      smuggled.map((v) => `k=${v}; srv_id=a`),
    ),
    fc.tuple(
      fc.constant('X-Request-Id'),
      fc.constantFrom('abc', '', 'a'.repeat(201), 'bad id', '\u00e9', 'x\ty', 'x%0d%0aX-Injected:1', '0123456789abcdef0123456789abcdef'),
    ),
    fc.tuple(fc.constant('X-Trusted'), fc.constant('1')),
    fc.tuple(fc.constant('User-Agent'), fc.constantFrom('"\\\u00ff\u0080x', 'curl/8', '\t', 'a'.repeat(3000))),
    fc.tuple(fc.constant('Referer'), fc.constantFrom('"; X-Injected: 1', '\\"')),
    fc.tuple(fc.constant('X-Tenant'), fc.constantFrom('t1', '\u00e5\u0098\u008a\u00e5\u0098\u008dX-Injected: 1', '\u00ff', '')),
    fc.tuple(fc.constant('Connection'), fc.constantFrom('close', 'keep-alive')),
  ),
  { maxLength: 4 },
);
/** Requests that mostly reach the middleware (a valid head), hostile in their target, query, cookies and headers. */
const pathRequest: fc.Arbitrary<Sent> = fc
  .record({
    method: fc.constantFrom('GET', 'GET', 'GET', 'POST', 'HEAD', 'PUT', 'DELETE'),
    target: mostly(pathTarget, target),
    version: fc.oneof({ arbitrary: fc.constant('HTTP/1.1'), weight: 9 }, { arbitrary: fc.constant('HTTP/1.0'), weight: 1 }),
    host: fc.oneof({ arbitrary: fc.constant<Header[]>([['Host', 'gw']]), weight: 9 }, { arbitrary: host, weight: 1 }),
    upgrade: fc.oneof({ arbitrary: fc.constant<Header[]>([]), weight: 7 }, { arbitrary: upgrade, weight: 3 }),
    extra: fc.tuple(pathHeaders, fc.oneof({ arbitrary: fc.constant<Header[]>([]), weight: 4 }, { arbitrary: extra, weight: 1 })).map(([a, b]) => [...a, ...b]),
    framing: fc.oneof({ arbitrary: fc.constantFrom('none', 'none', 'length', 'chunked'), weight: 9 }, { arbitrary: framing, weight: 1 }),
    body,
    eol: fc.constant(CRLF),
    end: halfClose,
  })
  .map((r) => toSent(r));
/** Mostly one request per connection, sometimes two pipelined (the second sent before the first is answered). */
const pathConnection: fc.Arbitrary<Sent> = fc.oneof(
  { arbitrary: pathRequest, weight: 4 },
  {
    arbitrary: fc.tuple(pathRequest, pathRequest).map(([a, b]) => ({
      bytes: Buffer.concat([a.bytes, b.bytes]),
      end: a.end || b.end,
      text: `${a.text} + ${b.text}`,
    })),
    weight: 1,
  },
);

/** The query argument `name` of a request, decoded as an application would (`URLSearchParams`). */
function arg(req: IncomingMessage, name: string): string {
  const url = req.url ?? '';
  const q = url.indexOf('?');
  try {
    return new URLSearchParams(q < 0 ? '' : url.slice(q + 1)).get(name) ?? '';
  } catch {
    return '';
  }
}

const HOSTILE_COOKIES = [
  '',
  '=',
  ';;;',
  'a=b; Domain=',
  'a=b; Domain=..',
  'a=b; Domain=.',
  'a=b; Path',
  'a=b; path=/%0d%0aX-Injected:1',
  'a=b; Domain=\u00e9\u00ff.internal',
  `a=b;${' x'.repeat(4000)}`,
  'a=b; samesite=; secure=1; HttpOnly=0; samesite=none; samesite=lax',
  '$1=$2; Domain=$host; Path=$uri',
  'sid=1; Domain=app.internal; Path=/app/',
  'sid=1; DOMAIN=APP.INTERNAL; PATH=/APP/x',
  'k; Domain=app.internal',
  `long=${'v'.repeat(6000)}; Domain=app.internal; Path=/app/`,
  '\u0080\u00ff=\u00ff; Path=/app/\u00ff',
  'a=b; Domain="app.internal"',
  `${'n'.repeat(300)}=1; Path=/app/`,
];

/** Raw upstream answers, written on the socket as they are (then the socket is ended). */
const RAW: Record<string, string> = {
  'raw-cr': 'HTTP/1.1 200 OK\r\nX-A: a\rX-Injected: 1\r\nContent-Length: 2\r\n\r\nok',
  'raw-fold': 'HTTP/1.1 200 OK\r\nX-A: a\r\n X-Injected: 1\r\nContent-Length: 2\r\n\r\nok',
  'raw-name': 'HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 2\r\n\r\nok',
  'raw-999': 'HTTP/1.1 999 Nope\r\nContent-Length: 2\r\n\r\nok',
  'raw-103':
    'HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nSet-Cookie: sid=1; Domain=app.internal\r\nContent-Length: 2\r\n\r\nok',
  'raw-204': 'HTTP/1.1 204 No Content\r\nSet-Cookie: sid=1; Path=/app/\r\nContent-Length: 5\r\n\r\nbody!',
  'raw-cut': 'HTTP/1.1 200 OK\r\nSet-Cookie: sid=1; Path=/app/\r\nContent-Length: 50\r\n\r\nshort',
  'raw-badchunk': 'HTTP/1.1 200 OK\r\nSet-Cookie: sid=1; Path=/app/\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n',
  'raw-twolengths': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!',
  'raw-cl-te': 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
};

/** Upstream heads the fuzzing saw with a smuggled header line, and what each upstream received, for failure messages. */
const smuggledUpstream: string[] = [];

/** An upstream answering hostile heads chosen by the request's `ans=` argument; its raw input is searched for smuggled lines. */
async function hostileUpstream(t: TestContext, name: string): Promise<string> {
  const server = createServer({ maxHeaderSize: 64 * 1024 }, (req, res) => {
    req.resume();
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    req.on('end', () => {
      const ans = arg(req, 'ans');
      if (ans in RAW) {
        req.socket.end(RAW[ans]!, 'latin1');
        return;
      }
      // 'big': a 1 MB body, more than onResponse's readBody() limits take.
      const text = ans === 'big' ? 'b'.repeat(1 << 20) : `${name} ${req.method} ${req.url}`;
      const headers: [string, string][] = [
        ['Content-Type', 'text/plain'],
        ['X-Powered-By', 'upstream'],
        ['Server', 'upstream'],
        ['X-H-1', 'debug'],
        ['X-Echo', String(req.headers['x-tenant'] ?? '')],
      ];
      if ((req.url ?? '').startsWith('/c/')) headers.push(['Cache-Control', 'max-age=60']);
      if (ans === 'cookies')
        for (let i = 0; i < 300; i++) headers.push(['Set-Cookie', `c${i}=${i}; Domain=app.internal; Path=/app/${i}; ${i % 2 ? 'Secure' : 'HttpOnly'}`]);
      if (ans === 'badcookie') for (const c of HOSTILE_COOKIES) headers.push(['Set-Cookie', c]);
      if (ans === 'huge') headers.push(['X-Huge', 'h'.repeat(12_000)]);
      if (ans === 'huger') headers.push(['X-Huge', 'h'.repeat(80_000)]);
      if (ans === 'many') for (let i = 0; i < 400; i++) headers.push([`X-H-${i}`, String(i)]);
      if (ans === 'latin')
        headers.push(['X-Latin', '\u00e9\u00ff\u0080'], ['Location', '/x%0d%0aX-Injected:%201'], ['Set-Cookie', 'a=\u00ff; Domain=\u00e9.internal']);
      const send = (): void => {
        res.writeHead(200, [...headers.flat(), 'Content-Length', String(Buffer.byteLength(text))]);
        res.end(text);
      };
      if (ans === 'slow') setTimeout(send, 30);
      else send();
    });
  });
  // Upgrades: a 101 with hostile fields (then an echo), or one of the raw answers.
  server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => undefined);
    const ans = arg(req, 'ans');
    if (ans in RAW) {
      socket.end(RAW[ans]!, 'latin1');
      return;
    }
    const fields = [
      'HTTP/1.1 101 Switching Protocols',
      'Connection: Upgrade',
      `Upgrade: ${req.headers.upgrade}`,
      'Set-Cookie: sid=1; Domain=app.internal; Path=/app/',
      `X-Echo: ${String(req.headers['x-tenant'] ?? '')}`,
      ...(ans === 'badcookie' ? HOSTILE_COOKIES.map((c) => `Set-Cookie: ${c}`) : []),
      ...(ans === 'huge' ? [`X-Huge: ${'h'.repeat(12_000)}`] : []),
    ];
    socket.write(`${fields.join('\r\n')}\r\n\r\n`, 'latin1');
    socket.pipe(socket);
  });
  server.on('connection', (socket: Socket) => {
    socket.on('data', (d: Buffer) => {
      const s = d.toString('latin1');
      if (INJECTED.test(s)) smuggledUpstream.push(s.slice(0, 2000));
    });
  });
  return serve(t, server);
}

/** Lines and entries the access logs were given, checked when the gateway's run is over. */
interface Logs {
  lines: () => string[];
  entries: unknown[];
  jsonLines: string[];
  close: () => Promise<void>;
  written: () => number;
  /** Failures of the `if`, `to` and format functions that throw on purpose. */
  errors: () => number;
}

interface PathGateway extends Gateway {
  logs: Logs;
  /** Places limitConnections() holds (requests it counts as in progress). */
  held: () => number;
  /** The rate limits' counters, by zone (a diagnostic of what the run reached). */
  limits: () => unknown;
}

/** The request-path middleware, before rewrite(), cache(), sticky() and balance(selector, hooks, cookies). */
async function pathParts(
  t: TestContext,
): Promise<{ middleware: Middleware[]; proxy: BalanceMiddleware<undefined>; logs: Logs; pool: UpstreamPool; limits: () => unknown; held: () => number }> {
  const urls = [await hostileUpstream(t, 'a'), await hostileUpstream(t, 'b')];
  const poolA = createPool({ name: 'a', servers: urls.map((url, i) => ({ url, id: 'ab'[i]!, route: 'ab'[i]!, maxFails: 0 })) });
  const poolB = createPool({ name: 'b', servers: urls.map((url, i) => ({ url, id: `b${i}`, maxFails: 0 })) });
  t.after(() => poolA.close());
  t.after(() => poolB.close());
  const select = (req: IncomingMessage): UpstreamPool | string | undefined => {
    const p = arg(req, 'pool');
    if (p === 'b') return 'b';
    if (p === 'nope') return 'nope';
    if (p === 'undefined') return undefined;
    if (p === 'throw') throw new Error('selector failed');
    if (p === 'object') return {} as UpstreamPool;
    return poolA;
  };
  const wait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
  const proxy = balance(select, {
    pools: [poolA, poolB],
    headerTimeout: '3s',
    idleTimeout: '3s',
    connectTimeout: '2s',
    setHeaders: {
      'X-Request-Id': '$request_id',
      'X-Uri': '$uri',
      'X-Arg': '$arg_x',
      'X-Cookie': '$cookie_k',
      'X-Tenant': '$http_x_tenant',
      'X-Both': '$http_user_agent $arg_x $uri',
      'Accept-Encoding': '',
    },
    cookieDomain: [
      { from: 'app.internal', to: '$host' },
      { from: /^(.+)\.internal$/, to: '$1.$arg_x' },
    ],
    cookiePath: [
      { from: '/app/', to: '/$arg_x/' },
      { from: /^\/(.*)$/i, to: '/$1$uri' },
    ],
    cookieFlags: [
      { cookie: 'sid', flags: ['secure', 'httponly', 'samesite=lax'] },
      { cookie: /^c\d+$/, flags: ['nosecure', 'nohttponly', 'samesite=strict'] },
      { cookie: /./, flags: ['nosamesite'] },
    ],
    async onRequest(ctx) {
      const h = arg(ctx.req, 'hook');
      ctx.headers.set('X-Attempt', String(ctx.attempt));
      const tenant = ctx.headers.get('x-tenant');
      if (tenant !== undefined) ctx.headers.set('X-Tenant-Seen', tenant);
      if (h === 'req-throw') throw new Error('onRequest failed');
      if (h === 'req-crlf') ctx.headers.set('X-Bad', 'a\r\nX-Injected: 1');
      if (h === 'req-decoded') ctx.headers.append('X-Decoded', arg(ctx.req, 'x'));
      if (h === 'req-path') ctx.path = arg(ctx.req, 'x');
      if (h === 'req-framing') ctx.headers.set('Content-Length', '5');
      if (h === 'req-host') ctx.headers.delete('host');
      if (h === 'req-async') await wait(5);
      if (h === 'req-reject') await Promise.reject(new SwitchyardError('SWY_ERR_TEST', 429, 'refused by the hook'));
    },
    async onResponse(ctx) {
      const h = arg(ctx.req, 'hook');
      ctx.headers.delete('x-powered-by');
      ctx.headers.set('X-Upstream-Cookies', String(ctx.headers.getAll('set-cookie').length));
      if (h === 'res-throw') throw new Error('onResponse failed');
      if (h === 'res-respond') ctx.respond(203, { 'X-Taken': 'yes', 'Set-Cookie': ctx.headers.getAll('set-cookie') }, 'taken over');
      if (h === 'res-read') ctx.respond(200, ctx.headers, await ctx.readBody({ limit: 1000 }));
      if (h === 'res-read-small') await ctx.readBody({ limit: 1 });
      if (h === 'res-status') ctx.status = Number(arg(ctx.req, 'x'));
      if (h === 'res-crlf') ctx.headers.set('X-Bad', arg(ctx.req, 'x'));
      if (h === 'res-cookie') for (const c of ctx.headers.getAll('set-cookie')) ctx.headers.append('Set-Cookie', `${c}; ${arg(ctx.req, 'x')}`);
      if (h === 'res-async') {
        await wait(5);
        ctx.respond(200, undefined, 'late');
      }
    },
  });
  const shape = shapeResponse({
    add: { 'X-Uri': '$uri', 'X-Arg': '$arg_x', 'X-Echo': '$upstream_http_x_echo', 'X-Rid': '$request_id', 'X-Req': '$request' },
    always: true,
    set: { Server: 'gw', 'X-Cookie': '$cookie_k' },
    remove: ['X-Powered-By', 'X-H-*'],
    hook(ctx) {
      const h = arg(ctx.req, 'hook');
      ctx.headers.set('X-Shaped', String(ctx.status));
      if (h === 'shape-throw') throw new Error('shape hook failed');
      if (h === 'shape-status') ctx.status = 1000;
      if (h === 'shape-set') ctx.headers.set('X-S', arg(ctx.req, 'x'));
      if (h === 'shape-framing') ctx.headers.set('Transfer-Encoding', 'chunked');
    },
  });
  // The access logs: a stream with nginx's default escaping, functions with json and none, and a format function.
  const streamed = new PassThrough();
  let text = '';
  streamed.setEncoding('latin1').on('data', (s: string) => (text += s));
  const format =
    '$request_id "$request" $status $uri "$arg_x" "$cookie_k" "$http_user_agent" "$http_referer" "$upstream_http_x_echo" $limit_req_status $limit_conn_status $upstream_addr $upstream_status';
  const logStream = accessLog({ to: streamed, format, flush: 0 });
  const jsonLines: string[] = [];
  const logJson = accessLog({
    to: (line) => jsonLines.push(line as string),
    escape: 'json',
    format: `{"id":"$request_id","uri":"$uri","x":"$arg_x","ua":"$http_user_agent","echo":"$upstream_http_x_echo"}`,
  });
  // An `if`, a `to` and a format function that throw for `hook=log-throw`, and a sample.
  const logNone = accessLog({
    to: (line) => {
      if ((line as string).includes('log-throw')) throw new Error('to failed');
    },
    escape: 'none',
    format,
    if: (req) => {
      if (arg(req, 'hook') === 'log-throw' && arg(req, 'x') === 'v') throw new Error('if failed');
      return true;
    },
    sample: 0.5,
  });
  const entries: unknown[] = [];
  const logFn = accessLog({
    to: (entry) => entries.push(entry),
    format: (ctx) => {
      if (arg(ctx.req, 'hook') === 'log-throw') throw new Error('format failed');
      return {
        id: ctx.ex.requestId,
        uri: ctx.variable('uri'),
        x: ctx.variable('arg_x'),
        status: ctx.status,
        aborted: ctx.aborted,
        bytes: ctx.bytesSent,
      };
    },
  });
  const logs: Logs = {
    lines: () => text.split('\n').slice(0, -1),
    entries,
    jsonLines,
    written: () => logStream.stats().written,
    errors: () => logFn.stats().errors + logNone.stats().errors,
    close: async () => {
      await Promise.all([logStream.close(), logJson.close(), logNone.close(), logFn.close()]);
    },
  };
  t.after(() => logs.close());
  const ids = requestId({ trust: (req) => req.headers['x-trusted'] === '1', respond: true });
  const conns = limitConnections({ key: '$http_x_key', max: 2, status: 429 });
  const hostileKey = (req: IncomingMessage): string => {
    const k = arg(req, 'k');
    if (k === 'long') return 'k'.repeat(70_000);
    if (k === 'throw') throw new Error('key failed');
    if (k === 'object') return { toString: () => 'o' } as unknown as string;
    return k;
  };
  const rates = limitRequests({
    limits: [
      { key: '$http_x_key', rate: '5r/s', burst: 2, nodelay: true, name: 'per_key' },
      { key: hostileKey, rate: '5r/s', burst: 3, delay: 1, name: 'hostile', maxKeys: 4 },
      { key: '$cookie_k$arg_x', rate: '50r/s', burst: 20, nodelay: true, name: 'cookie', maxKeys: 8 },
    ],
    status: 429,
  });
  const p = await parts(t);
  // parts() gives rewrite, cache, sticky and a balance() of its own pool: keep its rewrite and cache, sticky on pool a.
  const [rules, cached] = p.middleware;
  const st = sticky(poolA, { cookie: true });
  t.after(() => st.close());
  return {
    middleware: [ids, logStream, logJson, logNone, logFn, conns, rates, shape, rules!, cached!, st, proxy],
    proxy,
    logs,
    pool: poolA,
    limits: () => ({ ...rates.stats(), ...conns.stats() }),
    held: () => conns.active(),
  };
}

const pathGateways: Record<string, (t: TestContext) => Promise<PathGateway>> = {
  'node:http, chain(requestId, accessLog x4, limitConnections, limitRequests, shapeResponse, rewrite, cache, sticky, balance(selector, hooks, cookies))':
    async (t) => {
      const p = await pathParts(t);
      const server = closingIdle(createServer(chain(...p.middleware)));
      server.on('upgrade', p.proxy.upgrade);
      return { port: portOf(await serve(t, server)), alive: '/alive', pool: p.pool, logs: p.logs, limits: p.limits, held: p.held };
    },
  'Express, app.use(the same)': async (t) => {
    const p = await pathParts(t);
    const server = closingIdle(await expressServer(p.middleware));
    server.on('upgrade', p.proxy.upgrade);
    return { port: portOf(await serve(t, server)), alive: '/alive', pool: p.pool, logs: p.logs, limits: p.limits, held: p.held };
  },
};

/**
 * Like exchange(), and stricter: keeps reading until the connection closes, to search everything the
 * client received for a smuggled header line; a connection the gateway does not close within
 * BOUND_MS of the client's FIN is `hung` even when it answered (a response stuck mid-body).
 */
function exchangeAll(port: number, sent: Sent): Promise<Result> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    let answered = false;
    let grace: NodeJS.Timeout | undefined;
    let bound: NodeJS.Timeout | undefined;
    const done = (outcome: 'answered' | 'closed' | 'hung'): void => {
      clearTimeout(grace);
      clearTimeout(bound);
      socket.destroy();
      resolve({ outcome, received });
    };
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      if (!answered) {
        const line = d.toString('latin1').split('\r\n', 1)[0]!.slice(0, 12);
        tally.set(line, (tally.get(line) ?? 0) + 1);
      }
      answered = true;
      if (received.length < 1_000_000) received += d.toString('latin1');
    });
    socket.once('close', () => done(answered ? 'answered' : 'closed'));
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

/** The client and the upstreams saw no smuggled header line. */
function noSmuggledLines(batch: Sent[], results: Result[]): void {
  const toClient = batch.filter((_, i) => INJECTED.test(results[i]!.received));
  if (toClient.length > 0)
    throw new Error(
      `a smuggled header line reached the client:\n${toClient.map((s) => `${s.text}\n  -> ${JSON.stringify(results[batch.indexOf(s)]!.received.slice(0, 600))}`).join('\n')}`,
    );
  const toUpstream = smuggledUpstream.splice(0);
  if (toUpstream.length > 0)
    throw new Error(`a smuggled header line reached an upstream:\n${toUpstream.map((s) => JSON.stringify(s.slice(0, 600))).join('\n')}`);
}

for (const [name, build] of Object.entries(pathGateways)) {
  test(`fuzz the request path: ${name}`, { timeout: 60_000 + RUNS * 2 * BOUND_MS }, async (t) => {
    const gw = await build(t);
    await fuzzGateway(t, name, gw, pathConnection, 16, exchangeAll, async (batch, results) => {
      noSmuggledLines(batch, results);
      // limitConnections() gives back the place of every request once its connection is gone (on
      // Node 22 too, whose queued pipelined responses never close: test/fuzz/regressions.test.ts).
      if (!(await settled(() => gw.held() === 0, 1000))) throw new Error(`limitConnections() still counts ${gw.held()} requests in progress after the batch`);
    });
    // limitConnections() gave back every place: once the rate limits' buckets drained, two requests
    // at once with each key the fuzzing used (max 2) both pass.
    await new Promise<void>((resolve) => setTimeout(resolve, 1000));
    for (const key of ['k1', 'k2', 'k3']) {
      const statuses = await Promise.all([0, 1].map(() => plainStatus(gw.port, '/?ans=slow', { 'x-key': key })));
      assert.deepEqual(statuses, [200, 200], `limitConnections() still holds a place of key ${key} after the fuzzing`);
    }
    // The access logs: one line per request logged, printable ASCII with nginx's default escaping,
    // no line break inside a JSON-escaped line, and every line starting with its request's id.
    await gw.logs.close();
    const lines = gw.logs.lines();
    assert.equal(lines.length, gw.logs.written(), 'one line per request written to the stream');
    assert.ok(lines.length > 0 && gw.logs.entries.length > 0 && gw.logs.jsonLines.length > 0, 'every access log logged');
    for (const line of lines) assert.match(line, /^[A-Za-z0-9._:-]{1,200} "[\x20-\x7e]*$/, 'a line of the default-escaped log');
    for (const line of gw.logs.jsonLines) assert.doesNotMatch(line, /[\r\n\0]/, 'a JSON-escaped line');
    t.diagnostic(`limits: ${JSON.stringify(gw.limits())}`);
    t.diagnostic(`access logs: ${lines.length} lines, ${gw.logs.entries.length} entries, ${gw.logs.errors()} failures of if/to/format counted`);
    for (const line of gw.logs.jsonLines)
      assert.doesNotThrow(() => JSON.parse(line.replace(/[\x80-\xff]/g, '?')), `a JSON-escaped line parses: ${line.slice(0, 300)}`);
  });
}

// Every gateway above closed its servers, pools, caches, logs and limits in its test's `after`: the
// process holds no more sockets, servers or timers than before the first one started.
const baseline = resourceCounts();

function resourceCounts(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return counts;
}

test("the process's handles are back to their baseline once every gateway is closed", async () => {
  const over = (): string[] => {
    const now = resourceCounts();
    // This test's own timeout timer and the settled() poll are Timeouts of the runner and the check.
    const allowance: Record<string, number> = { Timeout: 2 };
    return [...now]
      .filter(([kind, n]) => n > (baseline.get(kind) ?? 0) + (allowance[kind] ?? 0))
      .map(([kind, n]) => `${kind}: ${n} (baseline ${baseline.get(kind) ?? 0})`);
  };
  await settled(() => over().length === 0, BOUND_MS);
  assert.deepEqual(over(), [], `handles left after the fuzzing: ${JSON.stringify([...resourceCounts()])}`);
});
