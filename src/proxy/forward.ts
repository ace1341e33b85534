import { IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Duration } from '../core/duration.ts';
import { durationOption } from '../core/options.ts';
import type { ClientSlot, Connection, Route, SlotAware, WriteErrorOwner } from '../pool/connections.ts';
import type { Peer } from '../pool/peer.ts';
import type { RequestBody } from './body.ts';
import { trailerFields } from './headers.ts';

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

/**
 * Longest wait for a response after a write to the upstream failed (the server
 * reset the connection while the body was being sent). Whatever it sent before
 * the reset is already on this machine, so the wait ends at once in practice.
 */
const WRITE_ERROR_GRACE = 1000;

/**
 * Bytes of response body an HTTP/2 attempt lets the client's connection buffer before it pauses
 * the upstream stream. undici drops what a paused HTTP/2 stream still buffers when the trailers
 * arrive (the trailing HEADERS frame is not flow-controlled, so it can overtake the DATA the pause
 * held back): an HTTP/2 response is paused only when a client falls this far behind, and never one
 * that is expected to end with trailers (gRPC, or one announcing them in a `Trailer` header).
 */
const HTTP2_BUFFER = 1024 * 1024;

class TimeoutError extends Error {
  readonly code: string;
  constructor(what: string) {
    super(`upstream timed out while ${what}`);
    this.code = 'ETIMEDOUT';
  }
}

// An attempt's phases, in order.
/** Dispatched: waiting for a connection (undici's queue, connecting). */
const CONNECTING = 0;
/** Writing the request (header, body). */
const SENDING = 1;
/** The request is written: waiting for the response header. */
const WAITING = 2;
/** The response header came: balance() decides what to do with it (the body waits). */
const RESPONSE = 3;
/** The response body goes to the client. */
const RELAYING = 4;
/** The response is dropped (a status balance() retries on): the rest of it is read off the connection. */
const DISCARDING = 5;
/** Over. */
const DONE = 6;

/**
 * Who an attempt reports to (balance()'s request): each method is called once per attempt, from
 * undici's callbacks or a timer, so what it starts next (another attempt) it starts a moment later.
 * @internal
 */
export interface AttemptListener {
  /** The attempt failed before a usable response (`failure`, `cause`; `refused` when undici refused the request as built). */
  attemptFailed(attempt: Attempt): void;
  /**
   * The response header came (`status`): the listener relays it ({@link Attempt.relay}) or drops it
   * ({@link Attempt.discard}) before it returns, so that the body is read straight on.
   */
  attemptResponded(attempt: Attempt): void;
  /** A relayed response is over: `complete` when all of it went to the client. */
  relayEnded(attempt: Attempt, complete: boolean): void;
}

/**
 * One attempt of a request to one server, sent through the server's undici dispatcher as a
 * Dispatcher handler (onConnect, onHeaders, onData, onComplete, onError). It waits for a
 * connection before undici reads the client's body (so a refused connection leaves the body
 * intact for the next server), times itself with one timer (connect, idle while sending, the
 * header, idle while reading), tells its {@link AttemptListener} of the response header or a
 * failure, and then relays the body to the client ({@link Attempt.relay}) or drops it
 * ({@link Attempt.discard}).
 * @internal
 */
export class Attempt implements SlotAware, WriteErrorOwner {
  /** The client of the pool's dispatcher it was given to (set by that client). */
  slot: ClientSlot | undefined = undefined;
  readonly peer: Peer;
  /** When it started (performance.now()). */
  readonly started = performance.now();
  /** Why it failed, once it did before a usable response. */
  failure: AttemptFailure | undefined = undefined;
  cause: Error | undefined = undefined;
  /** The request was refused by undici as built (an invalid header a middleware set): not the server's doing. */
  refused = false;
  /** Something of the request went out on a connection. */
  sent = false;
  /** It went out on a kept-alive connection that carried a request before. */
  reused = false;
  status = 0;
  /** Milliseconds from the start to the response header. */
  headerTime = 0;
  /**
   * Milliseconds from the start until the request had its connection (nginx `$upstream_connect_time`):
   * 0 on a kept-alive connection that carried a request before, -1 while it has none.
   */
  connectTime = -1;
  /** The response ended whole (set when relayed or dropped to the end). */
  complete = false;

  readonly #timeouts: AttemptTimeouts;
  readonly #body: RequestBody;
  readonly #http2: boolean;
  readonly #listener: AttemptListener;
  #phase = CONNECTING;
  #timer: NodeJS.Timeout | undefined;
  #armed = 0;
  #abort: ((err?: Error) => void) | undefined;
  #resume: (() => void) | undefined;
  #requestSent = false;
  #writeError: Error | undefined;
  #rawHeaders: Buffer[] | string[] = [];
  #headerStrings: string[] | undefined;
  #message: IncomingMessage | undefined;
  /** Body chunks and the end that came before balance() decided (with a listener that defers its decision). */
  #pending: Buffer[] | undefined;
  #ended = false;
  /** An HTTP/2 response expected to end with trailers: never paused (see HTTP2_BUFFER). */
  #trailing = false;
  #trailers: Buffer[] | Record<string, string | string[]> | undefined;
  #broken: Error | undefined;
  // relaying
  #res: ServerResponse | undefined;
  #onDrain: (() => void) | undefined;
  // bytes: from the connection's counters when known, else counted here
  #conn: Connection | undefined;
  #read0 = 0;
  #written0 = 0;
  #sentBytes = 0;
  #receivedBytes = 0;
  #bytesFinal = false;

  constructor(peer: Peer, body: RequestBody, timeouts: AttemptTimeouts, http2: boolean, listener: AttemptListener) {
    this.peer = peer;
    this.#body = body;
    this.#timeouts = timeouts;
    this.#http2 = http2;
    this.#listener = listener;
  }

  /** Dispatches the request on `route`; the listener hears of the response header or the failure (maybe before this returns). */
  start(route: Route, method: string, path: string, headers: string[]): void {
    const body = this.#body.source(route.http2);
    // undici writes chunked framing itself and refuses it in the list: it is the list's last pair.
    let list = this.#body.chunked ? headers.slice(0, headers.length - 2) : headers;
    // As nginx's grpc_pass: an HTTP/2 upstream is told the gateway takes trailers (gRPC needs them).
    if (route.http2) list = [...list, 'te', 'trailers'];
    if (!route.tracked || route.http2) this.#sentBytes = headerBytes(method, path, list);
    // `servername` is undici's Request option (not in its published DispatchOptions type).
    const options = {
      origin: route.origin,
      path,
      method: method as Dispatcher.HttpMethod,
      headers: list,
      body: body as unknown as Readable | Buffer | null,
      // undici's own retry rule; balance() has its own (nginx's). Set, it lets an HTTP/2 connection carry a POST beside others.
      idempotent: true,
      // Keep the connection whatever the method and body (undici would close it after a HEAD or a
      // GET with a body); without keep-alive, the pool's dispatcher says `Connection: close` anyway.
      reset: false,
      headersTimeout: 0,
      bodyTimeout: 0,
      servername: route.servername,
    } as Dispatcher.DispatchOptions;
    this.#arm(this.#timeouts.connect);
    route.dispatcher.dispatch(options, this as unknown as Dispatcher.DispatchHandler);
  }

  // ---- the Dispatcher handler (undici's callbacks) ----

  onConnect(abort: (err?: Error) => void): void {
    if (this.#phase !== CONNECTING) {
      // Given up while it waited for a connection (timeout, client gone): the request is not sent.
      abort(this.cause);
      return;
    }
    this.#abort = abort;
    this.sent = true;
    this.#phase = SENDING;
    const conn = this.slot?.connection;
    if (conn !== undefined && !conn.multiplexed && !conn.socket.destroyed) {
      this.#conn = conn;
      this.reused = conn.take(this);
      this.#read0 = conn.socket.bytesRead;
      this.#written0 = conn.socket.bytesWritten;
    }
    this.connectTime = this.reused ? 0 : performance.now() - this.started;
    this.#arm(this.#timeouts.idle);
  }

  onBodySent(): void {
    if (this.#phase === SENDING && this.#writeError === undefined) this.#timer?.refresh();
  }

  onRequestSent(): void {
    this.#requestSent = true;
    if (this.#phase !== SENDING || this.#writeError !== undefined) return;
    // As nginx's proxy_read_timeout, the wait for the header starts once the request is sent: a
    // long upload is limited by the idle timeout, not by it.
    this.#phase = WAITING;
    this.#arm(this.#headerWait());
  }

  onHeaders(status: number, rawHeaders: Buffer[] | string[], resume: () => void, _statusText?: string): boolean {
    if (this.#phase > WAITING) {
      this.#abort?.(this.cause);
      return false;
    }
    if (status < 100 || status > 999) {
      // nginx: an invalid status line is an invalid header.
      this.#fail('invalid_header', new Error(`upstream sent an invalid status ${status}`));
      return false;
    }
    // An interim response (103 Early Hints, 102): the final one follows.
    if (status < 200) return true;
    if (!this.#http2 && unknownTransferCoding(rawHeaders)) {
      // nginx (1.23+): a Transfer-Encoding other than chunked is an invalid header; the body's end cannot be known.
      this.#fail('invalid_header', invalidResponseError('upstream sent an unknown Transfer-Encoding'));
      return false;
    }
    this.status = status;
    this.#rawHeaders = rawHeaders;
    this.#resume = resume;
    if (this.#http2) this.#trailing = expectsTrailers(rawHeaders);
    this.headerTime = performance.now() - this.started;
    if (this.#conn === undefined) this.#receivedBytes += headerBytes('', '', rawHeaders);
    this.#phase = RESPONSE;
    this.#arm(this.#timeouts.idle);
    this.#listener.attemptResponded(this);
    switch (this.#phase) {
      case RELAYING:
      case DISCARDING:
        return true;
      case RESPONSE:
        // Not decided yet: the body waits (an HTTP/2 stream is never paused, see HTTP2_BUFFER).
        return this.#http2;
      default:
        return false;
    }
  }

  onData(chunk: Buffer): boolean {
    if (this.#conn === undefined) this.#receivedBytes += chunk.length;
    switch (this.#phase) {
      case RELAYING: {
        this.#timer?.refresh();
        const res = this.#res!;
        if (res.write(chunk)) return true;
        if (this.#http2 && (this.#trailing || res.writableLength < HTTP2_BUFFER)) return true;
        res.once('drain', (this.#onDrain ??= () => this.#drained()));
        return false;
      }
      case RESPONSE:
        (this.#pending ??= []).push(chunk);
        return this.#http2;
      case DISCARDING:
        this.#timer?.refresh();
        return true;
      default:
        return true;
    }
  }

  onComplete(trailers: Buffer[] | string[] | Record<string, string | string[]> | null): void {
    this.#trailers = trailers === null ? undefined : (trailers as Buffer[] | Record<string, string | string[]>);
    if (this.#phase === RESPONSE) this.#ended = true;
    else this.#end(true);
  }

  onError(err: Error & { code?: string }): void {
    switch (this.#phase) {
      case CONNECTING:
      case SENDING:
      case WAITING:
        if (err.code === 'UND_ERR_INVALID_ARG' && !this.sent) this.refused = true;
        // After a failed write the read side ends with a reset or "other side closed": the write error is the cause.
        this.#fail(invalidResponse(err) ? 'invalid_header' : 'error', this.#writeError ?? err);
        break;
      case RESPONSE:
        this.#broken = err;
        break;
      default:
        this.#end(false);
    }
  }

  /** A write on its connection failed (see connections.ts): the body stops, and the answer the server sent before the reset gets a moment to arrive. */
  onWriteError(err: Error): void {
    if (this.#writeError !== undefined) return;
    this.#writeError = err;
    this.#body.detach();
    if (this.#phase !== SENDING && this.#phase !== WAITING) return;
    this.#arm(this.#timeouts.header > 0 ? Math.min(this.#timeouts.header, WRITE_ERROR_GRACE) : WRITE_ERROR_GRACE);
  }

  // ---- what balance() does with it ----

  /** The response broke off (the upstream failed or a timeout fired) before balance() relayed it. */
  get broken(): boolean {
    return this.#broken !== undefined;
  }

  /** The response header as the server wrote it: `[name, value, ...]`, Buffers (HTTP/1.1, HTTP/2) or strings. */
  rawHeaderList(): readonly (Buffer | string)[] {
    return this.#headerStrings ?? this.#rawHeaders;
  }

  /** The response header as `[name, value, ...]` strings, as the server wrote them. */
  rawHeaders(): string[] {
    if (this.#headerStrings === undefined) {
      const raw = this.#rawHeaders;
      const out = new Array<string>(raw.length);
      for (let i = 0; i < raw.length; i++) {
        const v = raw[i]!;
        out[i] = typeof v === 'string' ? v : v.toString('latin1');
      }
      this.#headerStrings = out;
    }
    return this.#headerStrings;
  }

  /**
   * The response header as an IncomingMessage (`statusCode`, `headers`, `rawHeaders`), for the
   * response hooks and the `upstream:header` channel. Its body is relayed by balance(), not read
   * through it: as a stream it is empty.
   */
  message(): IncomingMessage {
    if (this.#message === undefined) {
      const m = new IncomingMessage(null as never);
      m.statusCode = this.status;
      m.httpVersionMajor = this.#http2 ? 2 : 1;
      m.httpVersionMinor = this.#http2 ? 0 : 1;
      m.httpVersion = this.#http2 ? '2.0' : '1.1';
      const raw = this.rawHeaders();
      (m as IncomingMessage & { _addHeaderLines(headers: string[], n: number): void })._addHeaderLines(raw, raw.length);
      m.push(null);
      this.#message = m;
    }
    return this.#message;
  }

  /**
   * Streams the response body to `res` (whose head balance() wrote), the trailers with it when
   * `res` can carry them; the listener's relayEnded() comes once, with true when the whole response
   * was passed on, false when it broke off (the upstream failed or timed out: `res` is destroyed,
   * the client sees a cut connection) or {@link cancel} stopped it.
   */
  relay(res: ServerResponse): void {
    if (this.#phase !== RESPONSE) return this.#listener.relayEnded(this, false);
    this.#res = res;
    this.#phase = RELAYING;
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending !== undefined) for (const chunk of pending) res.write(chunk);
    if (this.#broken !== undefined) this.#end(false);
    else if (this.#ended) this.#end(true);
    else this.#resume?.();
  }

  /**
   * Drops the response (balance() moves on to the next server): its body is read off the connection
   * so that it can carry the next request, unless the request was cut short by the answer (it cannot
   * then be reused).
   */
  discard(): void {
    if (this.#phase !== RESPONSE) return;
    this.#pending = undefined;
    this.#body.detach();
    if (!this.#requestSent || this.#broken !== undefined) {
      this.#phase = DONE;
      this.#clearTimer();
      this.#abort?.(new Error('response discarded'));
      this.#release(false);
      return;
    }
    this.#phase = DISCARDING;
    if (this.#ended) this.#end(true);
    else this.#resume?.();
  }

  /** The client went away: the upstream request is aborted and its connection closed (the server stops working on it). */
  cancel(): void {
    const err = new Error('client closed the request');
    if (this.#phase <= WAITING) {
      this.#fail('error', err);
      return;
    }
    if (this.#phase === DONE || this.#phase === DISCARDING) return;
    const relaying = this.#phase === RELAYING;
    this.#phase = DONE;
    this.#clearTimer();
    this.#abort?.(err);
    this.#release(false);
    if (relaying) this.#listener.relayEnded(this, false);
  }

  /**
   * Request bytes it sent to the server: the connection's counter when it is the attempt's alone
   * (its earlier traffic excluded), else the header's size and the body bytes handed to undici.
   */
  bytesSent(): number {
    if (this.#bytesFinal) return this.#sentBytes;
    if (this.#conn === undefined) return this.#sentBytes + (this.sent ? this.#body.sentBytes : 0);
    return Math.max(0, this.#conn.socket.bytesWritten - this.#written0);
  }

  /** Response bytes it received from the server. */
  bytesReceived(): number {
    if (this.#conn === undefined || this.#bytesFinal) return this.#receivedBytes;
    return Math.max(0, this.#conn.socket.bytesRead - this.#read0);
  }

  // ---- inside ----

  /** The wait for the header: headerTimeout, and idleTimeout too (whichever ends first). */
  #headerWait(): number {
    const { header, idle } = this.#timeouts;
    return header > 0 && idle > 0 ? Math.min(header, idle) : Math.max(header, idle);
  }

  #arm(ms: number): void {
    if (ms <= 0) {
      this.#clearTimer();
      return;
    }
    if (this.#timer !== undefined && this.#armed === ms) {
      this.#timer.refresh();
      return;
    }
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(onTimeout, ms, this);
    this.#timer.unref();
    this.#armed = ms;
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armed = 0;
  }

  /** The timer fired. @internal */
  timedOut(): void {
    this.#timer = undefined;
    this.#armed = 0;
    switch (this.#phase) {
      case CONNECTING:
        this.#fail('timeout', new TimeoutError('connecting'));
        break;
      case SENDING:
      case WAITING:
        if (this.#writeError !== undefined) this.#fail('error', this.#writeError);
        else
          this.#fail(
            'timeout',
            new TimeoutError(this.#phase === WAITING && this.#headerWait() === this.#timeouts.header ? 'reading the response header' : 'waiting for data'),
          );
        break;
      case RESPONSE:
        this.#broken ??= new TimeoutError('waiting for data');
        this.#abort?.(this.#broken);
        break;
      default:
        this.#end(false, new TimeoutError('waiting for data'));
    }
  }

  /** Fails the attempt before a response: tells the listener. */
  #fail(failure: AttemptFailure, cause: Error): void {
    const phase = this.#phase;
    if (phase > WAITING) return;
    this.#phase = DONE;
    this.#clearTimer();
    this.failure = failure;
    this.cause = cause;
    this.#body.detach();
    if (this.#abort !== undefined) this.#abort(cause);
    // A connect that hangs is ended, not left to the operating system's timeout.
    else if (failure === 'timeout') this.slot?.connecting?.destroy(cause);
    this.#release(false);
    this.#listener.attemptFailed(this);
  }

  #drained(): void {
    if (this.#phase !== RELAYING) return;
    this.#timer?.refresh();
    this.#resume?.();
  }

  /**
   * The response is over (relayed or dropped): whole, or broken off (`abort`: the upstream request
   * is aborted with it, its connection closed). A relayed one ends the client's response too: with
   * the trailers when whole, destroyed when not (headers are gone: the client can only learn of it
   * by a cut connection). Nothing in the other phases.
   */
  #end(complete: boolean, abort?: Error): void {
    const phase = this.#phase;
    if (phase !== RELAYING && phase !== DISCARDING) return;
    this.#phase = DONE;
    this.#clearTimer();
    if (abort !== undefined) this.#abort?.(abort);
    this.complete = complete;
    this.#release(complete);
    if (phase !== RELAYING) return;
    const res = this.#res!;
    if (this.#onDrain !== undefined) res.off('drain', this.#onDrain);
    // The attempt is recorded (statistics, passive health, upstream:end) before the client's
    // response ends: whoever reads the pool once the client has its answer sees it counted.
    this.#listener.relayEnded(this, complete);
    if (!complete) {
      res.destroy();
      return;
    }
    const trailers = this.#trailers === undefined ? undefined : trailerFields(this.#trailers);
    if (trailers !== undefined && typeof res.addTrailers === 'function') addTrailers(res, trailers);
    res.end();
  }

  /** The connection is no longer this attempt's; its byte counts are final. */
  #release(reusable: boolean): void {
    if (this.#bytesFinal) return;
    this.#sentBytes = this.bytesSent();
    this.#receivedBytes = this.bytesReceived();
    this.#bytesFinal = true;
    this.#conn?.release(this, reusable && this.#requestSent && this.#writeError === undefined);
  }
}

/**
 * True when the upstream's answer was not HTTP (nginx `invalid_header`): a parser error, or a header
 * too large. undici's parser errors come without the `HPE_*` code node's carry (the reason llhttp
 * gave is in the message): they are labelled `HPE_INVALID_RESPONSE`, so that `cause.code` tells a
 * response that could not be parsed, as with node.
 */
function invalidResponse(err: Error & { code?: string }): boolean {
  if (err.code === 'UND_ERR_HEADERS_OVERFLOW' || err.code?.startsWith('HPE_') === true) return true;
  if (err.name !== 'HTTPParserError') return false;
  err.code = 'HPE_INVALID_RESPONSE';
  return true;
}

/** An invalid response's error, labelled as undici's parser errors are (`cause.code` `HPE_INVALID_RESPONSE`). */
function invalidResponseError(message: string): Error {
  return Object.assign(new Error(message), { code: 'HPE_INVALID_RESPONSE' });
}

/** True when an HTTP/1 response has a Transfer-Encoding other than exactly `chunked` (nginx refuses it since 1.23). */
function unknownTransferCoding(raw: readonly (Buffer | string)[]): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length !== 17 || name.toString().toLowerCase() !== 'transfer-encoding') continue;
    if (raw[i + 1]!.toString().trim().toLowerCase() !== 'chunked') return true;
  }
  return false;
}

/** True for a response announcing trailers: a `Trailer` header, or gRPC's content type (gRPC ends every response with them). */
function expectsTrailers(raw: readonly (Buffer | string)[]): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString().toLowerCase();
    if (name === 'trailer') return true;
    if (name === 'content-type' && raw[i + 1]!.toString().toLowerCase().startsWith('application/grpc')) return true;
  }
  return false;
}

function onTimeout(attempt: Attempt): void {
  attempt.timedOut();
}

/** Adds the upstream's trailers to `res`; a field node refuses (or a response that cannot carry them) is left out. */
function addTrailers(res: ServerResponse, trailers: OutgoingHttpHeaders): void {
  try {
    res.addTrailers(trailers);
  } catch {
    // A trailer node will not send: the body went out whole, the answer stands without it.
  }
}

/** About the bytes a header block takes on the wire: for attempts whose connection's counters are not theirs. */
function headerBytes(method: string, path: string, list: readonly (string | Buffer)[]): number {
  let n = method.length + path.length + 12;
  for (let i = 0; i < list.length; i += 2) n += list[i]!.length + list[i + 1]!.length + 4;
  return n + 2;
}
