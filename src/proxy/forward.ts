import http, { type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, type RequestOptions } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Cancellation } from '../core/cancel.ts';
import type { Duration } from '../core/duration.ts';
import { durationOption } from '../core/options.ts';
import type { Peer } from '../pool/peer.ts';
import type { PoolInternals } from '../pool/internal.ts';
import type { RequestBody } from './body.ts';

/** Timeouts of one attempt, in ms (0 disables one). @internal */
export interface AttemptTimeouts {
  connect: number;
  header: number;
  idle: number;
}

/** Default connect timeout (nginx `proxy_connect_timeout 60s`). */
export const DEFAULT_CONNECT_TIMEOUT = '60s';
/** Default time allowed for the response header (nginx `proxy_read_timeout 60s`). */
export const DEFAULT_HEADER_TIMEOUT = '60s';
/** Default idle time between two reads or writes (nginx `proxy_read_timeout` / `proxy_send_timeout` 60s). */
export const DEFAULT_IDLE_TIMEOUT = '60s';

/** The timeout options balance() and upgrade() share, as they are named there. @internal */
export const TIMEOUT_OPTIONS = ['connectTimeout', 'headerTimeout', 'idleTimeout'] as const;

/** Validates the timeout options (InvalidOptionError naming the option); absent ones take nginx's 60 s. @internal */
export function attemptTimeouts(options: {
  connectTimeout?: Duration | undefined;
  headerTimeout?: Duration | undefined;
  idleTimeout?: Duration | undefined;
}): AttemptTimeouts {
  return {
    connect: durationOption(options.connectTimeout, 'connectTimeout', DEFAULT_CONNECT_TIMEOUT),
    header: durationOption(options.headerTimeout, 'headerTimeout', DEFAULT_HEADER_TIMEOUT),
    idle: durationOption(options.idleTimeout, 'idleTimeout', DEFAULT_IDLE_TIMEOUT),
  };
}

/** How an attempt ended before a response could be used. @internal */
export type AttemptFailure = 'error' | 'timeout' | 'invalid_header';

/** Bytes an attempt moved on its connection so far (a kept-alive socket's earlier traffic excluded). @internal */
export interface AttemptBytes {
  sent(): number;
  received(): number;
}

/** The outcome of one upstream attempt. @internal */
export type AttemptResult =
  | { kind: 'response'; request: ClientRequest; response: IncomingMessage; headerTime: number; bytes: AttemptBytes }
  | { kind: 'failure'; failure: AttemptFailure; cause: Error; sent: boolean; reused: boolean; bytes: AttemptBytes };

/**
 * Longest wait for a response after a write to the upstream failed (the server
 * reset the connection while the body was being sent). Whatever it sent before
 * the reset is already on this machine, so the wait ends at once in practice.
 */
const WRITE_ERROR_GRACE = 1000;

const kOnWriteError = Symbol('switchyard.onWriteError');

/** An upstream socket whose write errors go to the attempt that owns it. */
interface GuardedSocket extends Socket {
  [kOnWriteError]?: ((err: Error) => void) | undefined;
}

/**
 * Node destroys a socket on its first failed write, discarding what the server
 * sent before it reset the connection: an upload refused early (413, 401 with
 * `Connection: close`, then a reset) would lose its answer. While an attempt owns
 * the socket, a failed write is reported to the attempt instead, so the read
 * side stays open and the response already received is parsed as usual; the
 * reset then ends the read side too. Installed once per socket (keep-alive
 * sockets carry it from one attempt to the next).
 */
function guardWrites(socket: GuardedSocket): void {
  if (kOnWriteError in socket) return;
  socket[kOnWriteError] = undefined;
  type Callback = (err?: Error | null) => void;
  const guard =
    (cb: Callback): Callback =>
    (err) => {
      const handler = socket[kOnWriteError];
      if (err == null || handler === undefined) return cb(err);
      handler(err);
      cb();
    };
  const write = socket._write;
  socket._write = function (chunk, encoding, cb) {
    write.call(this, chunk, encoding, guard(cb));
  };
  const writev = socket._writev;
  if (writev !== undefined) {
    socket._writev = function (chunks, cb) {
      writev.call(this, chunks, guard(cb));
    };
  }
}

class TimeoutError extends Error {
  readonly code: string;
  constructor(what: string) {
    super(`upstream timed out while ${what}`);
    this.code = 'ETIMEDOUT';
  }
}

/**
 * Sends one attempt of the request to `peer`: waits for a connection before
 * reading the client's body (so a refused connection leaves the body intact for
 * the next server), then waits for the response header under the timeouts.
 * @internal
 */
export function attempt(
  inner: PoolInternals,
  peer: Peer,
  method: string,
  path: string,
  headers: string[],
  body: RequestBody,
  timeouts: AttemptTimeouts,
  clientGone: Cancellation,
): Promise<AttemptResult> {
  return new Promise((resolve) => {
    const started = performance.now();
    const t = peer.target;
    let settled = false;
    let sent = false;
    let reused = false;
    let timer: NodeJS.Timeout | undefined;
    let conn: Socket | undefined;
    let read0 = 0;
    let written0 = 0;
    const bytes: AttemptBytes = {
      sent: () => (conn === undefined ? 0 : Math.max(0, conn.bytesWritten - written0)),
      received: () => (conn === undefined ? 0 : Math.max(0, conn.bytesRead - read0)),
    };
    // Looked up on the module at each call, not bound at import: a tracer that wraps
    // http.request (OpenTelemetry, Sentry, Datadog) after switchyard was loaded is still used.
    const send = t.protocol === 'https:' ? https.request : http.request;
    const req = send({
      protocol: t.protocol,
      hostname: t.hostname,
      port: t.port,
      method,
      path,
      headers: headerObject(headers),
      agent: inner.agentFor(peer),
      setHost: false,
      ...(t.protocol === 'https:' ? { servername: isIpLiteral(t.hostname) ? undefined : t.hostname } : {}),
    } as RequestOptions);

    const clearTimer = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    };
    const fail = (failure: AttemptFailure, cause: Error): void => {
      if (settled) return;
      settled = true;
      clearTimer();
      clientGone.off(onAbort);
      body.detach();
      req.destroy();
      resolve({ kind: 'failure', failure, cause, sent, reused, bytes });
    };
    const arm = (ms: number, what: string): void => {
      clearTimer();
      if (ms > 0) timer = setTimeout(() => fail('timeout', new TimeoutError(what)), ms);
    };
    const onAbort = (): void => fail('error', new Error('client closed the request'));
    clientGone.onAbort(onAbort);

    const start = (): void => {
      if (settled) return;
      sent = true;
      clearTimer();
      // As nginx's proxy_read_timeout, the wait for the header starts once the
      // request is sent: a long upload is limited by the idle timeout, not by it.
      req.once('finish', () => {
        if (!settled && writeError === undefined) arm(timeouts.header, 'reading the response header');
      });
      body.attach(req);
    };
    // A write that failed: the body stops (the request never ends, so its
    // connection is never reused) and the attempt waits briefly for the answer
    // the server sent before resetting; without one it is a failure.
    let writeError: Error | undefined;
    const onWriteError = (err: Error): void => {
      if (writeError !== undefined) return;
      writeError = err;
      req.shouldKeepAlive = false;
      body.detach();
      if (settled) return;
      clearTimer();
      timer = setTimeout(() => fail('error', err), timeouts.header > 0 ? Math.min(timeouts.header, WRITE_ERROR_GRACE) : WRITE_ERROR_GRACE);
    };
    req.on('socket', (socket: GuardedSocket) => {
      conn = socket;
      guardWrites(socket);
      socket[kOnWriteError] = onWriteError;
      req.once('close', () => {
        if (socket[kOnWriteError] === onWriteError) socket[kOnWriteError] = undefined;
      });
      read0 = socket.bytesRead;
      written0 = socket.bytesWritten;
      reused = req.reusedSocket;
      if (timeouts.idle > 0) req.setTimeout(timeouts.idle);
      if (socket.connecting) {
        arm(timeouts.connect, 'connecting');
        socket.once('connect', start);
      } else {
        start();
      }
    });
    req.on('timeout', () => fail('timeout', new TimeoutError('waiting for data')));
    req.on('error', (err: Error & { code?: string }) => {
      const code = err.code ?? '';
      // After a failed write the read side ends with a reset or "socket hang up": the write error is the cause.
      fail(code.startsWith('HPE_') ? 'invalid_header' : 'error', writeError ?? err);
    });
    req.on('response', (response: IncomingMessage) => {
      if (settled) {
        response.resume();
        return;
      }
      const status = response.statusCode ?? 0;
      if (status < 100 || status > 999) {
        // nginx: an invalid status line is an invalid header.
        response.resume();
        fail('invalid_header', new Error(`upstream sent an invalid status ${status}`));
        return;
      }
      settled = true;
      clearTimer();
      clientGone.off(onAbort);
      resolve({ kind: 'response', request: req, response, headerTime: performance.now() - started, bytes });
    });
  });
}

/**
 * The upstream request headers as an object for `http.request`, a name sent
 * several times as an array of its values in order (node writes one field line
 * per value; Cookie values it joins with "; ", as RFC 6265 wants one Cookie
 * line). Instrumentation that wraps `http.request` reads and adds headers on
 * `options.headers` as an object: a flat `[name, value, ...]` list would be
 * copied into fields named `0`, `1`, ... and lose Host. Names are lowercase
 * (see upstreamRequestHeaders), so each one is a single key. A plain object
 * (a prototype-less one is twice as slow to fill), so own keys are tested with
 * `Object.hasOwn` (a header named `constructor` is not Object's) and
 * `__proto__` is defined rather than assigned.
 */
function headerObject(list: readonly string[]): OutgoingHttpHeaders {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!;
    const value = list[i + 1]!;
    if (!Object.hasOwn(out, name)) {
      if (name === '__proto__') Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
      else out[name] = value;
      continue;
    }
    const prior = out[name]!;
    if (typeof prior === 'string') out[name] = [prior, value];
    else prior.push(value);
  }
  return out;
}

function isIpLiteral(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}
