// Run by test/proxy/otel.test.ts in a child `node` process: OpenTelemetry's HTTP instrumentation
// patches node:http for the whole process (the gateway's server spans), so it is registered here
// before anything loads http; its undici instrumentation (switchyard's upstream calls go through
// undici) listens on undici's diagnostics channels, whenever undici is loaded.
// Usage: node otel.fixture.ts <esm|require|late>
//   esm      the setup OpenTelemetry documents for ES modules: the import-in-the-middle loader hook
//            (`@opentelemetry/instrumentation/hook.mjs`), then the SDK and the instrumentation
//   require  no loader hook: the instrumentation patches node:http when it is first required
//            (what an app that requires http before switchyard, or a CommonJS tracer, gets)
//   late     as require, but switchyard (and its import of node:http) is loaded before the tracer
// Starts an upstream and a switchyard gateway (from src/index.ts), sends requests with raw sockets
// (no client span of their own) and prints one JSON line: what the upstream received, the answers,
// and the finished spans.
import { register } from 'node:module';
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

const mode = process.argv[2] ?? 'esm';
if (mode === 'late') await import('../../src/index.ts');
if (mode === 'esm') register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);

const { NodeTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = await import('@opentelemetry/sdk-trace-node');
const { registerInstrumentations } = await import('@opentelemetry/instrumentation');
const { HttpInstrumentation } = await import('@opentelemetry/instrumentation-http');
const { UndiciInstrumentation } = await import('@opentelemetry/instrumentation-undici');

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
provider.register();
registerInstrumentations({ instrumentations: [new HttpInstrumentation(), new UndiciInstrumentation()] });
if (mode !== 'esm') createRequire(import.meta.url)('node:http');

const http = await import('node:http');
const net = await import('node:net');
const { balance, chain, createPool } = await import('../../src/index.ts');

interface Received {
  url: string;
  rawHeaders: string[];
}
const received: Received[] = [];
const upstream = http.createServer((req: IncomingMessage, res: ServerResponse) => {
  received.push({ url: req.url ?? '', rawHeaders: req.rawHeaders });
  req.resume();
  req.on('end', () => res.end('ok'));
});
await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
const upstreamPort = (upstream.address() as AddressInfo).port;

// A port with nothing behind it: the first server of the retry pool refuses the connection.
const probe = net.createServer();
await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
const deadPort = (probe.address() as AddressInfo).port;
await new Promise<void>((resolve) => probe.close(() => resolve()));

const pool = createPool({ servers: [{ url: `http://127.0.0.1:${upstreamPort}` }] });
const retryPool = createPool({ method: 'round-robin', servers: [{ url: `http://127.0.0.1:${deadPort}` }, { url: `http://127.0.0.1:${upstreamPort}` }] });
const direct = balance(pool);
const retrying = balance(retryPool);
// A middleware before balance() that sets a header to several values (an auth layer's groups, say).
const tag = (req: IncomingMessage, _res: ServerResponse, next: () => void): void => {
  req.headers['x-group'] = ['admins', 'ops'];
  next();
};
const gateway = http.createServer(
  chain(tag, (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) =>
    req.url?.startsWith('/retry') ? retrying(req, res, next) : direct(req, res, next),
  ),
);
await new Promise<void>((resolve) => gateway.listen(0, '127.0.0.1', resolve));
const gatewayPort = (gateway.address() as AddressInfo).port;

/** One request on a raw socket (duplicate header lines exactly as written); resolves with the status line's code. */
function send(path: string, extra: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket: Socket = net.connect(gatewayPort, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (s: string) => {
      text += s;
      if (text.includes('\r\n\r\n') && /\r\n\r\nok$/.test(text)) socket.end();
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)));
    socket.write(`GET ${path} HTTP/1.1\r\nHost: gateway.test\r\n${extra}Connection: close\r\n\r\n`);
  });
}

const statuses = [await send('/plain', 'Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Joined: one\r\nX-Joined: two\r\n'), await send('/retry', '')];

// The gateway's server spans end when their responses finish, which can be a moment after the
// client saw the last byte: wait for them, bounded.
const deadline = Date.now() + 10_000;
const serverSpans = (): number => exporter.getFinishedSpans().filter((s) => s.kind === 1).length;
while (serverSpans() < 4 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
await provider.forceFlush();

const spans = exporter.getFinishedSpans().map((s) => ({
  name: s.name,
  kind: s.kind,
  traceId: s.spanContext().traceId,
  spanId: s.spanContext().spanId,
  parentSpanId: s.parentSpanContext?.spanId,
  port: s.attributes['server.port'] ?? s.attributes['net.host.port'] ?? s.attributes['net.peer.port'],
  path: s.attributes['url.path'] ?? s.attributes['http.target'] ?? s.attributes['url.full'] ?? s.attributes['http.url'],
}));

process.stdout.write(`${JSON.stringify({ gatewayPort, upstreamPort, deadPort, statuses, received, spans })}\n`);

pool.close();
retryPool.close();
gateway.closeAllConnections();
upstream.closeAllConnections();
await Promise.all([new Promise((resolve) => gateway.close(resolve)), new Promise((resolve) => upstream.close(resolve))]);
await provider.shutdown();
