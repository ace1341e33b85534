// OpenTelemetry's standard Node instrumentations (what Sentry, Datadog and others build on) with
// switchyard's upstream requests (issue 12, issue 15). The gateway's server spans come from the HTTP
// instrumentation; the upstream calls, which go through undici, from the undici instrumentation
// (undici's diagnostics channels), which adds `traceparent` to the request. Issue 12's bug (headers
// handed to the http instrumentation as a flat list came out as fields named `0`, `1`, ... and no
// Host) is guarded the same way: Host, duplicates and trace context must reach the upstream. The
// HTTP instrumentation patches node:http for the whole process, so each test runs
// test/proxy/otel.fixture.ts in a child `node` with the real SDK (in-memory span exporter)
// registered before http is loaded.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { runNode } from '../support/child.ts';

const FIXTURE = fileURLToPath(new URL('./otel.fixture.ts', import.meta.url));
/** Longest a child may run: far more than it needs on a loaded machine; past it, it is killed and the test fails. */
const LIMIT_MS = 60_000;

interface Span {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId?: string | undefined;
  port?: number | undefined;
  path?: string | undefined;
}
interface Result {
  gatewayPort: number;
  upstreamPort: number;
  deadPort: number;
  statuses: number[];
  received: Array<{ url: string; rawHeaders: string[] }>;
  spans: Span[];
}

const SERVER = 1;
const CLIENT = 2;

async function runFixture(t: TestContext, mode: 'esm' | 'require' | 'late'): Promise<Result> {
  const r = await runNode(t, [FIXTURE, mode], { limitMs: LIMIT_MS });
  assert.equal(r.killed, false, `the fixture did not end within ${LIMIT_MS} ms; stderr: ${r.stderr}`);
  assert.equal(r.code, 0, `the fixture failed; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout) as Result;
}

/** Values of `name` (case-insensitive) in a raw header list, one per field line. */
function lines(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) out.push(raw[i + 1]!);
  return out;
}

function check(r: Result): void {
  assert.deepEqual(r.statuses, [200, 200], 'every request proxied with a 200 (a 400 means the upstream got no Host)');
  assert.equal(r.received.length, 2);
  const plain = r.received.find((x) => x.url === '/plain');
  assert.ok(plain !== undefined, 'the upstream got /plain');
  const raw = plain.rawHeaders;

  // Host is the upstream's, and no field is named after an array index.
  assert.deepEqual(lines(raw, 'host'), [`127.0.0.1:${r.upstreamPort}`]);
  for (let i = 0; i < raw.length; i += 2) assert.doesNotMatch(raw[i]!, /^\d+$/, `a header named ${raw[i]}`);

  // Duplicates stay duplicates, in order: the client's repeated Set-Cookie lines, a middleware's
  // array value, and a repeated field node joined arrives as node joined it.
  assert.deepEqual(lines(raw, 'set-cookie'), ['a=1', 'b=2']);
  assert.deepEqual(lines(raw, 'x-group'), ['admins', 'ops']);
  assert.deepEqual(lines(raw, 'x-joined'), ['one, two']);
  assert.deepEqual(lines(raw, 'x-forwarded-host'), ['gateway.test']);

  // W3C trace context reaches the upstream, naming the client span of the upstream call...
  const traceparent = lines(raw, 'traceparent');
  assert.equal(traceparent.length, 1, 'one traceparent');
  const [, traceId, parentId] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/.exec(traceparent[0]!) ?? [];
  assert.ok(traceId !== undefined && parentId !== undefined, `a W3C traceparent: ${traceparent[0]}`);

  // ...which is a child of the gateway's server span for the incoming request: one trace.
  const server = r.spans.find((s) => s.kind === SERVER && s.parentSpanId === undefined && s.path === '/plain');
  assert.ok(server !== undefined, `a root server span for /plain: ${JSON.stringify(r.spans)}`);
  const client = r.spans.find((s) => s.kind === CLIENT && s.spanId === parentId);
  assert.ok(client !== undefined, `the client span named by traceparent: ${JSON.stringify(r.spans)}`);
  assert.equal(client.traceId, server.traceId, "the upstream call is in the incoming request's trace");
  assert.equal(client.traceId, traceId);
  assert.equal(client.parentSpanId, server.spanId, "the upstream call is a child of the incoming request's span");
  assert.equal(client.port, r.upstreamPort);

  // A retried request: one client span per attempt (the refused one too), both children of its server span.
  const retryServer = r.spans.find((s) => s.kind === SERVER && s.parentSpanId === undefined && s.path === '/retry');
  assert.ok(retryServer !== undefined, `a root server span for /retry: ${JSON.stringify(r.spans)}`);
  const attempts = r.spans.filter((s) => s.kind === CLIENT && s.parentSpanId === retryServer.spanId);
  assert.deepEqual(attempts.map((s) => s.port).sort(), [r.deadPort, r.upstreamPort].sort());
  for (const a of attempts) assert.equal(a.traceId, retryServer.traceId);
}

test('OpenTelemetry http and undici instrumentations, ESM loader hook: upstream gets Host, traceparent and its duplicate headers; the upstream call is a child span of the request', async (t) => {
  check(await runFixture(t, 'esm'));
});

test("OpenTelemetry http instrumentation patching node:http on require, and undici's instrumentation: upstream gets Host, traceparent and its duplicate headers; the upstream call is a child span of the request", async (t) => {
  check(await runFixture(t, 'require'));
});

test('OpenTelemetry instrumentations registered after switchyard was loaded still see its upstream requests', async (t) => {
  check(await runFixture(t, 'late'));
});
