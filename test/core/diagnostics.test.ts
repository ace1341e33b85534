// diagnostics_channel (issue 12): what a tracer or a logger gets on each channel for real proxied
// requests (success, a failed attempt retried, a failure not retried, a status moved on to the next
// server, no server at all), run-time pool changes, and NODE_DEBUG=switchyard as one subscriber of
// those channels, in a child process (Node reads NODE_DEBUG when it starts).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { fileURLToPath } from 'node:url';
import {
  DIAGNOSTICS_CHANNELS,
  NoServerAvailableError,
  type PoolChangeMessage,
  type PoolStateMessage,
  type RequestStartMessage,
  type UpstreamAttemptMessage,
  type UpstreamEndMessage,
  type UpstreamErrorMessage,
  type UpstreamHeaderMessage,
} from '../../src/index.ts';
import { complete, gatewayFor, tryFetch, TEST_TIMEOUT } from '../balance/support.ts';
import { deadPort, poolOf, upstream } from '../helpers.ts';
import { runNode, type ChildOutcome } from '../support/child.ts';

interface Seen {
  start: RequestStartMessage[];
  attempt: UpstreamAttemptMessage[];
  header: UpstreamHeaderMessage[];
  end: UpstreamEndMessage[];
  error: UpstreamErrorMessage[];
  state: PoolStateMessage[];
  change: PoolChangeMessage[];
  /** Every message of the pool, in order, as `channel-suffix` names. */
  order: string[];
}

/** Subscribes to every request and pool channel for the pool named `pool` until the test ends. */
function listen(t: TestContext, pool: string): Seen {
  const seen: Seen = { start: [], attempt: [], header: [], end: [], error: [], state: [], change: [], order: [] };
  const subscriptions: Array<[string, keyof Omit<Seen, 'order'>]> = [
    ['switchyard:request:start', 'start'],
    ['switchyard:upstream:attempt', 'attempt'],
    ['switchyard:upstream:header', 'header'],
    ['switchyard:upstream:end', 'end'],
    ['switchyard:upstream:error', 'error'],
    ['switchyard:pool:state', 'state'],
    ['switchyard:pool:change', 'change'],
  ];
  for (const [name, key] of subscriptions) {
    const onMessage = (m: unknown): void => {
      if ((m as { pool: string }).pool !== pool) return;
      (seen[key] as unknown[]).push(m);
      seen.order.push(key);
    };
    subscribe(name, onMessage);
    t.after(() => unsubscribe(name, onMessage));
  }
  return seen;
}

test('every channel is declared once, under the switchyard: prefix', () => {
  assert.deepEqual([...DIAGNOSTICS_CHANNELS].sort(), [
    'switchyard:cache:status',
    'switchyard:pool:change',
    'switchyard:pool:state',
    'switchyard:request:start',
    'switchyard:store:error',
    'switchyard:upstream:attempt',
    'switchyard:upstream:end',
    'switchyard:upstream:error',
    'switchyard:upstream:header',
  ]);
});

test('a proxied request publishes request:start, upstream:attempt, upstream:header and upstream:end with its exchange, server and timings', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await upstream(t, 'one');
  const pool = poolOf(t, { one: up }, { name: 'dc-ok' });
  const gw = await gatewayFor(t, pool);
  const seen = listen(t, 'dc-ok');
  const r = complete(await tryFetch(`${gw.url}/items/7?x=1`, { headers: { 'x-request-id': 'r1' } }));
  assert.equal(r.status, 200);
  await gw.settled(1);

  assert.deepEqual(seen.order, ['start', 'attempt', 'header', 'end']);
  const [start] = seen.start;
  assert.equal(start!.req.headers['x-request-id'], 'r1');
  assert.equal(start!.ex.requestUri, '/items/7?x=1');
  const [attempt] = seen.attempt;
  assert.equal(attempt!.ex, start!.ex, 'one exchange record for the whole request');
  assert.deepEqual(attempt!.server, { id: 'one', name: `127.0.0.1:${up.port}` });
  assert.equal(attempt!.attempt, 1);
  assert.equal(attempt!.method, 'GET');
  assert.equal(attempt!.path, '/items/7?x=1');
  assert.ok(attempt!.headers.includes('x-request-id'), 'the headers about to be sent');
  const [header] = seen.header;
  assert.equal(header!.ex, start!.ex);
  assert.equal(header!.status, 200);
  assert.equal(header!.attempt, 1);
  assert.ok(header!.headerTime >= 0);
  assert.equal(header!.response.headers['x-upstream'], 'one');
  const [end] = seen.end;
  assert.equal(end!.outcome, 'complete');
  assert.equal(end!.status, 200);
  assert.deepEqual(end!.server, attempt!.server);
  assert.ok(end!.bytesSent > 0 && end!.bytesReceived > 0, `bytes ${end!.bytesSent}/${end!.bytesReceived}`);
  assert.ok(end!.responseTime >= header!.headerTime);
  assert.deepEqual(seen.error, []);
});

test("a refused connection retried on the next server: upstream:error with retry, then the second attempt; the failed server's state change", {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const up = await upstream(t, 'live');
  const dead = await deadPort();
  const pool = poolOf(t, { dead: `http://127.0.0.1:${dead}`, live: up }, { name: 'dc-retry' });
  const gw = await gatewayFor(t, pool);
  const seen = listen(t, 'dc-retry');
  assert.equal(complete(await tryFetch(`${gw.url}/r`)).status, 200);
  await gw.settled(1);

  assert.deepEqual(seen.order, ['start', 'attempt', 'state', 'error', 'attempt', 'header', 'end']);
  assert.deepEqual(
    seen.attempt.map((a) => [a.attempt, a.server.id]),
    [
      [1, 'dead'],
      [2, 'live'],
    ],
  );
  const [error] = seen.error;
  assert.equal(error!.failure, 'error');
  assert.equal(error!.server?.id, 'dead');
  assert.equal(error!.attempt, 1);
  assert.equal(error!.retry, true);
  assert.equal((error!.error as NodeJS.ErrnoException).code, 'ECONNREFUSED');
  assert.deepEqual(seen.state, [{ pool: 'dc-retry', id: 'dead', server: `http://127.0.0.1:${dead}`, from: 'up', to: 'unavail' }]);
  assert.equal(seen.end[0]!.attempt, 2);
  assert.equal(seen.end[0]!.server.id, 'live');
});

test('a failure that is not retried: upstream:error with retry false; then "no live upstreams" (no_server) once the only server is down', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const dead = await deadPort();
  const pool = poolOf(t, { dead: `http://127.0.0.1:${dead}` }, { name: 'dc-fail' });
  const gw = await gatewayFor(t, pool);
  const seen = listen(t, 'dc-fail');
  assert.equal(complete(await tryFetch(`${gw.url}/a`)).status, 502);
  await gw.settled(1);
  assert.deepEqual(
    seen.error.map((e) => [e.failure, e.server?.id, e.attempt, e.retry]),
    [['error', 'dead', 1, false]],
  );

  // With its only server down, the next request finds no server at all.
  pool.update('dead', { down: true });
  assert.equal(complete(await tryFetch(`${gw.url}/b`)).status, 503);
  await gw.settled(2);
  assert.equal(seen.error.length, 2);
  const last = seen.error[1]!;
  assert.equal(last.failure, 'no_server');
  assert.equal(last.server, undefined);
  assert.equal(last.attempt, 1);
  assert.equal(last.retry, false);
  assert.equal(last.ex.requestUri, '/b');
  assert.ok(last.error instanceof NoServerAvailableError);
  assert.deepEqual(seen.order.slice(-2), ['start', 'error'], 'no attempt was made');
});

test('a status moved on to the next server (nextUpstream http_502): upstream:end with outcome "next", then the next attempt', {
  timeout: TEST_TIMEOUT,
}, async (t) => {
  const bad = await upstream(t, 'bad', (_req, res) => {
    res.statusCode = 502;
    res.end('bad');
  });
  const good = await upstream(t, 'good');
  const pool = poolOf(t, { bad, good }, { name: 'dc-next' });
  const gw = await gatewayFor(t, pool, { nextUpstream: ['error', 'timeout', 'http_502'] });
  const seen = listen(t, 'dc-next');
  assert.equal(complete(await tryFetch(`${gw.url}/n`)).status, 200);
  await gw.settled(1);
  assert.deepEqual(
    seen.end.map((e) => [e.attempt, e.server.id, e.status, e.outcome]),
    [
      [1, 'bad', 502, 'next'],
      [2, 'good', 200, 'complete'],
    ],
  );
  assert.deepEqual(
    seen.header.map((h) => h.status),
    [502, 200],
  );
});

test("a subscriber of upstream:attempt may add request headers (a tracer's traceparent)", { timeout: TEST_TIMEOUT }, async (t) => {
  const up = await upstream(t, 'one');
  const pool = poolOf(t, [up.url], { name: 'dc-inject' });
  const gw = await gatewayFor(t, pool);
  const onAttempt = (m: unknown): void => {
    const a = m as UpstreamAttemptMessage;
    if (a.pool === 'dc-inject') a.headers.push('traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  };
  subscribe('switchyard:upstream:attempt', onAttempt);
  t.after(() => unsubscribe('switchyard:upstream:attempt', onAttempt));
  assert.equal(complete(await tryFetch(`${gw.url}/t`)).status, 200);
  assert.equal(up.seen[0]!.headers.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
});

test('pool:change for servers added, updated and removed at run time', (t) => {
  const pool = poolOf(t, { a: 'http://127.0.0.1:1' }, { name: 'dc-pool' });
  const seen = listen(t, 'dc-pool');
  pool.add({ url: 'http://127.0.0.1:2', id: 'b' });
  pool.update('b', { weight: 3 });
  pool.remove('b');
  assert.deepEqual(seen.change, [
    { pool: 'dc-pool', action: 'add', id: 'b', server: 'http://127.0.0.1:2', changes: undefined },
    { pool: 'dc-pool', action: 'update', id: 'b', server: 'http://127.0.0.1:2', changes: { weight: 3 } },
    { pool: 'dc-pool', action: 'remove', id: 'b', server: 'http://127.0.0.1:2', changes: undefined },
  ]);
});

// NODE_DEBUG=switchyard, in a child: Node decides at start-up whether a debuglog section is on.
const FIXTURE = fileURLToPath(new URL('./debuglog.fixture.ts', import.meta.url));
const LIMIT_MS = 30_000;

async function runDebugFixture(t: TestContext, nodeDebug: string | undefined): Promise<ChildOutcome> {
  const env = { ...process.env };
  if (nodeDebug === undefined) delete env.NODE_DEBUG;
  else env.NODE_DEBUG = nodeDebug;
  const r = await runNode(t, [FIXTURE], { env, limitMs: LIMIT_MS });
  assert.equal(r.killed, false, `the fixture did not end within ${LIMIT_MS} ms; stderr: ${r.stderr}`);
  return r;
}

test('NODE_DEBUG=switchyard prints a line to stderr for each event of a success, a retried failure and a request with no server', {
  timeout: 2 * LIMIT_MS,
}, async (t) => {
  const r = await runDebugFixture(t, 'switchyard');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'statuses 200 200 503\n');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  for (const l of lines) assert.match(l, /^SWITCHYARD \d+: /, "every line is debuglog's");
  const text = lines.map((l) => l.replace(/^SWITCHYARD \d+: /, '')).join('\n');
  // Success.
  assert.match(text, /^pool dbg: GET \/ok from 127\.0\.0\.1$/m);
  assert.match(text, /^pool dbg: GET \/ok attempt 1: GET \/ok to live \(127\.0\.0\.1:\d+\)$/m);
  assert.match(text, /^pool dbg: GET \/ok attempt 1: live answered 200 in [\d.]+ms$/m);
  assert.match(text, /^pool dbg: GET \/ok attempt 1: live 200 complete, \d+ bytes sent, \d+ received, [\d.]+ms$/m);
  // A refused connection, retried.
  assert.match(text, /^pool retry: GET \/retry attempt 1: error on dead: connect ECONNREFUSED [\d.:]+, trying the next server$/m);
  assert.match(text, /^pool retry: server dead up -> unavail$/m);
  assert.match(text, /^pool retry: GET \/retry attempt 2: live 200 complete/m);
  // No server.
  assert.match(text, /^pool none: GET \/none: no live upstreams \(.+\)$/m);
  // Run-time changes.
  assert.match(text, /^pool dbg: add extra$/m);
  assert.match(text, /^pool dbg: update extra \{"drain":true\}$/m);
  assert.match(text, /^pool dbg: server extra up -> draining$/m);
  assert.match(text, /^pool dbg: remove extra$/m);
});

test('without NODE_DEBUG nothing is printed', { timeout: 2 * LIMIT_MS }, async (t) => {
  const r = await runDebugFixture(t, undefined);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'statuses 200 200 503\n');
  assert.equal(r.stderr, '');
});
