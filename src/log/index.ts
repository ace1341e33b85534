/**
 * accessLog(): nginx's `access_log` and `log_format` as a middleware, one line per request when its
 * answer ends; requestId(): nginx's `$request_id`, with an incoming id trusted on request.
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type { Middleware, Next } from '../core/chain.ts';
import type { Duration } from '../core/duration.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { exchange, type Exchange } from '../core/exchange.ts';
import { onConnectionClose } from '../core/connection.ts';
import { isHttp2Response, responseFinished } from '../core/http2.ts';
import { durationOption, enumOption, functionOption, integerOption, nearest, objectOption, stringListOption } from '../core/options.ts';
import {
  connectionRequests,
  isKnownVariable,
  knownVariableNames,
  type ResponseFacts,
  responseFacts,
  setResponseFacts,
  splitTemplate,
  variable,
} from '../core/variables.ts';
import { escapeDefault, escapeJson } from './escape.ts';
import { StreamSink } from './sink.ts';

export { requestId, DEFAULT_REQUEST_ID_HEADER } from './request-id.ts';
export type { RequestIdOptions, RequestIdTrust } from './request-id.ts';

/** nginx's predefined `combined` format (its default `log_format`). */
export const COMBINED_FORMAT = '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"';

/** The default `format` of {@link accessLog}: nginx's `combined`. */
export const DEFAULT_ACCESS_LOG_FORMAT = 'combined';
/** The default `escape` of {@link accessLog}, nginx's. */
export const DEFAULT_ACCESS_LOG_ESCAPE: AccessLogEscape = 'default';
/** The default `buffer` of {@link accessLog}: lines are written once this many bytes wait (nginx `buffer=64k`), else on the next turn of the event loop. */
export const DEFAULT_ACCESS_LOG_BUFFER = 64 * 1024;
/**
 * The default `flush` of {@link accessLog}: a line waits at most 100 ms for its batch. (nginx without
 * `buffer=` writes each line with its own write(2); a write to a file is a thread-pool job in Node,
 * and one per request costs more than the rest of the log together.)
 */
export const DEFAULT_ACCESS_LOG_FLUSH: Duration = '100ms';
/** The default `maxPending` of {@link accessLog}: bytes of lines held while a stream does not drain; lines past it are dropped and counted. */
export const DEFAULT_ACCESS_LOG_MAX_PENDING = 16 * 1024 * 1024;

/**
 * How variable values are escaped in a line (nginx `log_format ... escape=`): `default` writes `"`,
 * `\`, bytes below 0x20 and from 0x7F up as `\xHH`, and `-` for an empty value; `json` escapes as in
 * a JSON string (`\"`, `\\`, `\n`, `\u001F`), an empty value is empty; `none` writes values as they are.
 */
export type AccessLogEscape = 'default' | 'json' | 'none';

/** Where a failure of the access log came from (see {@link AccessLogOptions.onError}). */
export type AccessLogErrorSource = 'format' | 'if' | 'to' | 'stream';

/** What a `format` function, an `if` condition's caller and `to` see of a finished request. */
export interface AccessLogContext {
  /** The client's request. */
  readonly req: IncomingMessage;
  /** The response. */
  readonly res: ServerResponse;
  /** The request's exchange record (`upstreamAddr`, `upstreamStatus`, the upstream times, `cacheStatus`, `requestId`). */
  readonly ex: Exchange;
  /** The status logged: the response's, 499 when the client went away before the response header (nginx). */
  readonly status: number;
  /** True when the client went away before the whole answer was sent. */
  readonly aborted: boolean;
  /** Seconds from the request's first sight to the end of its answer, with millisecond precision (nginx `$request_time`). */
  readonly requestTime: number;
  /** Bytes sent to the client, header included (nginx `$bytes_sent`). */
  readonly bytesSent: number;
  /** Bytes of the response body sent to the client (nginx `$body_bytes_sent`). */
  readonly bodyBytesSent: number;
  /**
   * Any nginx variable by name, without `$` (`variable('upstream_response_time')`), as a string
   * (`''` when it has no value).
   */
  variable(name: string): string;
}

/** A `format` function: returns what is logged for a request (an object for a JSON logger). */
export type AccessLogFormatter = (ctx: AccessLogContext) => unknown;

/**
 * Where lines go: a writable stream (a file from `fs.createWriteStream`, `process.stdout`), written
 * in batches; or a function called with each line (a string without its newline) or, with a
 * `format` function, with what it returned.
 */
export type AccessLogDestination = Writable | NodeJS.WritableStream | ((entry: unknown) => void);

/** Options of {@link accessLog}. */
export interface AccessLogOptions {
  /**
   * The line (nginx `log_format`): a string of nginx variables (`'$remote_addr "$request" $status
   * $request_time'`), `'combined'` for nginx's predefined format, or a function returning what to
   * log (an object for pino or winston; `to` then gets it as it is, a stream gets it as JSON).
   * A variable switchyard does not know is refused when the factory is called, as nginx refuses it
   * at startup; list names rewrite()'s `set` gives in `variables`.
   * @default 'combined'
   */
  format?: string | AccessLogFormatter | undefined;
  /** How variable values are escaped (nginx `log_format ... escape=`). Applies to string formats. @default 'default' */
  escape?: AccessLogEscape | undefined;
  /** Where lines go (nginx `access_log path`). @default process.stdout */
  to?: AccessLogDestination | undefined;
  /**
   * Log the request only when this returns true (nginx `access_log ... if=`), called once the answer
   * is over (the status is known). A condition that throws skips the line and counts an error.
   * @default every request
   */
  if?: ((req: IncomingMessage, res: ServerResponse, ex: Exchange) => boolean) | undefined;
  /** The share of requests logged, from 0 to 1, chosen at random per request (after `if`). @default 1 */
  sample?: number | undefined;
  /**
   * Bytes of lines collected before they are written to a stream (nginx `buffer=`); fewer are
   * written after `flush`. 0 writes each line at once (still one batch at a time, without blocking).
   * @default 65536
   */
  buffer?: number | undefined;
  /**
   * The longest a line waits for its batch to be written to a stream (nginx `flush=`): ms or an nginx
   * duration (`'1s'`). 0 writes on the next turn of the event loop (one write per turn at most, and
   * one at a time: lines that come while the stream writes go in the next batch).
   * @default '100ms'
   */
  flush?: Duration | undefined;
  /**
   * The bound, in bytes, of lines held while the stream has not taken the previous batch (its write
   * callback has not come: a slow disk, a stalled pipe): past it lines are dropped and counted in
   * `stats().dropped`, so a stalled destination never grows memory without bound nor blocks the
   * event loop. Lines wait as UTF-8 bytes outside the JavaScript heap; a stalled log holds at most
   * this, one batch being allocated, and the one batch the stream has.
   * @default 16777216 (16 MiB)
   */
  maxPending?: number | undefined;
  /** Names of variables rewrite()'s `set` gives (without `$`), accepted in `format`. @default [] */
  variables?: readonly string[] | undefined;
  /**
   * Called when a `format` function, `if`, a `to` function or the stream fails: the failure is
   * counted in `stats().errors`, the request is never affected. A stream that fails is not written
   * to again (its later lines are dropped and counted).
   * @default none (counted only)
   */
  onError?: ((error: unknown, source: AccessLogErrorSource) => void) | undefined;
}

/** Counters of an access log ({@link AccessLogMiddleware.stats}). */
export interface AccessLogStats {
  /** Lines made (requests logged after `if` and `sample`). */
  readonly logged: number;
  /** Lines handed to the destination (a stream's `write()` or the `to` function). */
  readonly written: number;
  /** Lines dropped: past `maxPending` while a stream did not drain, after a stream failed, or after close(). */
  readonly dropped: number;
  /** Failures: formats, conditions, `to` functions, stream errors. */
  readonly errors: number;
  /** Bytes of lines waiting to be written. */
  readonly pending: number;
}

/** Options of {@link AccessLogMiddleware.close}. */
export interface AccessLogCloseOptions {
  /** The longest close() waits for a stream to take what waits and finish. @default '1s' */
  timeout?: Duration | undefined;
}

/** The middleware {@link accessLog} returns, with its counters and a way to flush and close it. */
export interface AccessLogMiddleware extends Middleware {
  /** A snapshot of the counters. */
  stats(): AccessLogStats;
  /** Writes the lines collected so far; resolves once a stream took them (drained). Never rejects. */
  flush(): Promise<void>;
  /**
   * Flushes, stops logging (later requests are not logged), and ends the stream (not
   * `process.stdout` or `process.stderr`); resolves once the stream finished, or after `timeout`
   * (default 1 s) when it does not drain: the lines still waiting are then dropped (counted in
   * `dropped`) and the stream is destroyed (not stdout or stderr). Never rejects.
   */
  close(options?: AccessLogCloseOptions): Promise<void>;
}

const KNOWN_OPTIONS = ['format', 'escape', 'to', 'if', 'sample', 'buffer', 'flush', 'maxPending', 'variables', 'onError'] as const;
const ESCAPES: readonly AccessLogEscape[] = ['default', 'json', 'none'];
/** Variables nginx gives as empty rather than not found: an empty value stays empty under `escape=default`. */
const FOUND_EMPTY = new Set(['is_args', 'https']);
/** Variables whose values are decoded text (Unicode characters), not the request's latin1 bytes. */
const DECODED = new Set(['uri', 'document_uri']);
/** Variables whose values never hold a character an escape would change (digits, hex, times, addresses): not escaped. */
const PLAIN = new Set([
  'status',
  'bytes_sent',
  'body_bytes_sent',
  'request_length',
  'request_time',
  'msec',
  'time_local',
  'time_iso8601',
  'connection',
  'connection_requests',
  'pid',
  'remote_port',
  'server_port',
  'upstream_connect_time',
  'upstream_header_time',
  'upstream_response_time',
  'upstream_status',
]);

type Getter = (ex: Exchange) => string;
type Line = (ex: Exchange) => string;
/** A piece of a compiled format: literal text, or a variable's getter and what its value goes through. */
type Part = string | readonly [get: Getter, filter: ((value: string) => string) | undefined];

const dash = (value: string): string => (value === '' ? '-' : value);
const escapeOrDash = (value: string): string => (value === '' ? '-' : escapeDefault(value));
const escapeDecodedOrDash = (value: string): string => (value === '' ? '-' : escapeDefault(value, true));

/**
 * One function that concatenates the parts, made with `new Function` so that each getter is called
 * from a call site of its own (which V8 can inline) rather than from one loop over all of them. Only
 * literal text, as JSON string literals, and parameter names go into its source; the getters and
 * filters are passed in as arguments. Where code generation is not allowed (`node
 * --disallow-code-generation-from-strings`), a loop over the parts does the same.
 */
function joinParts(parts: readonly Part[]): Line {
  const params: string[] = [];
  const values: unknown[] = [];
  const terms: string[] = [];
  for (const part of parts) {
    if (typeof part === 'string') {
      if (part !== '') terms.push(JSON.stringify(part));
      continue;
    }
    const [get, filter] = part;
    const g = `g${values.length}`;
    params.push(g);
    values.push(get);
    if (filter === undefined) terms.push(`${g}(ex)`);
    else {
      const f = `f${values.length}`;
      params.push(f);
      values.push(filter);
      terms.push(`${f}(${g}(ex))`);
    }
  }
  const body = `return function line(ex) { return ${terms.length === 0 ? '""' : `"" + ${terms.join(' + ')}`}; };`;
  try {
    return new Function(...params, body)(...values) as Line;
  } catch {
    return (ex) => {
      let out = '';
      for (const part of parts) {
        if (typeof part === 'string') out += part;
        else out += part[1] === undefined ? part[0](ex) : part[1](part[0](ex));
      }
      return out;
    };
  }
}

/** A string format compiled once: literal text and escaped getters. */
function compileFormat(format: string, escape: AccessLogEscape, extra: readonly string[]): { line: Line; names: Set<string> } {
  const names = new Set<string>();
  const parts: Part[] = [];
  for (const part of splitTemplate(format)) {
    if (typeof part === 'string') {
      parts.push(part);
      continue;
    }
    const name = part.name;
    if (!isKnownVariable(name) && !extra.includes(name)) {
      const near = nearest(name, [...knownVariableNames(), ...extra]);
      const hint = near === undefined ? '(list names rewrite() sets in "variables")' : `(did you mean "$${near}"?)`;
      throw new InvalidOptionError('format', 'nginx variables switchyard knows', format, `unknown variable "$${name}" in "format" ${hint}`);
    }
    names.add(name.toLowerCase());
    const get = variable(name);
    if (escape === 'none' || (escape === 'json' && PLAIN.has(name))) parts.push([get, undefined]);
    else if (escape === 'json') parts.push([get, escapeJson]);
    else if (FOUND_EMPTY.has(name)) parts.push([get, escapeDefault]);
    else if (DECODED.has(name)) parts.push([get, escapeDecodedOrDash]);
    else if (PLAIN.has(name)) parts.push([get, dash]);
    else parts.push([get, escapeOrDash]);
  }
  const line = joinParts(parts);
  return { line, names };
}

/** Marks on a client connection: its byte counters when the previous answer on it was logged. */
interface SocketMarks {
  written: number;
  read: number;
}

/** The marks of each client connection (kept apart from the socket, whose shape stays Node's). */
const marksOf = new WeakMap<object, SocketMarks>();

/**
 * What the log reads of a request's answer, measured once when it ends (shared by every access log
 * on the request). HTTP/1.x bytes come from the connection's counters since the previous answer on
 * it; HTTP/2 has no per-stream counters: the body is the Content-Length sent (0 without one).
 */
function factsOf(req: IncomingMessage, res: ServerResponse, ex: Exchange, aborted: boolean): ResponseFacts {
  const known = responseFacts(ex);
  if (known !== undefined) return known;
  const headersSent = res.headersSent;
  const status = aborted && !headersSent ? 499 : headersSent ? res.statusCode : 0;
  let bytesSent = 0;
  let bodyBytesSent = 0;
  let requestLength = 0;
  let header: string | undefined;
  let getHeader: ResponseFacts['getHeader'];
  if (isHttp2Response(res)) {
    getHeader = (name) => res.getHeader(name);
    const length = Number(res.getHeader('content-length') ?? 0);
    bodyBytesSent = headersSent && Number.isFinite(length) ? length : 0;
    bytesSent = bodyBytesSent;
    requestLength = Number(req.headers['content-length'] ?? 0) || 0;
  } else {
    const raw = (res as ServerResponse & { _header?: unknown })._header;
    header = typeof raw === 'string' ? raw : undefined;
    if (header === undefined) getHeader = (name) => res.getHeader(name);
    const socket = req.socket as typeof req.socket | null;
    if (socket != null) {
      let marks = marksOf.get(socket);
      if (marks === undefined) {
        marks = { written: 0, read: 0 };
        marksOf.set(socket, marks);
      }
      const written = socket.bytesWritten ?? 0;
      const read = socket.bytesRead ?? 0;
      bytesSent = Math.max(0, written - marks.written);
      requestLength = Math.max(0, read - marks.read);
      marks.written = written;
      marks.read = read;
    }
    bodyBytesSent = Math.max(0, bytesSent - (header?.length ?? 0));
  }
  const facts: ResponseFacts = {
    status,
    time: Date.now(),
    end: performance.now(),
    bytesSent,
    bodyBytesSent,
    requestLength,
    header,
    getHeader,
  };
  setResponseFacts(ex, facts);
  return facts;
}

/** {@link AccessLogContext} of one finished request. */
class Context implements AccessLogContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly ex: Exchange;
  readonly status: number;
  readonly aborted: boolean;
  readonly requestTime: number;
  readonly bytesSent: number;
  readonly bodyBytesSent: number;
  readonly #getters: Map<string, Getter>;

  constructor(req: IncomingMessage, res: ServerResponse, ex: Exchange, facts: ResponseFacts, aborted: boolean, getters: Map<string, Getter>) {
    this.req = req;
    this.res = res;
    this.ex = ex;
    this.status = facts.status;
    this.aborted = aborted;
    this.requestTime = Math.floor(Math.max(0, facts.end - ex.start)) / 1000;
    this.bytesSent = facts.bytesSent;
    this.bodyBytesSent = facts.bodyBytesSent;
    this.#getters = getters;
  }

  variable(name: string): string {
    let get = this.#getters.get(name);
    if (get === undefined) {
      get = variable(name);
      this.#getters.set(name, get);
    }
    return get(this.ex);
  }
}

/**
 * nginx's `access_log` with its `log_format`: a middleware that writes one line per request when
 * the answer ends, or when the client goes away first (status 499 when no response header was sent,
 * as nginx logs it). Put it first, so it sees every request and its time
 * from the start. Lines go to a stream in batches (never blocking the event loop; bounded while the
 * stream does not drain) or to a function; a failing format, condition or destination is counted
 * and never touches the response.
 * @example
 * ```ts
 * import { createWriteStream } from 'node:fs';
 * import express from 'express';
 * import { accessLog, balance, createPool } from 'switchyard-proxy';
 *
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }] });
 * const log = accessLog({
 *   format: '$remote_addr [$time_local] "$request" $status $body_bytes_sent $request_time "$upstream_addr" $upstream_response_time $request_id',
 *   to: createWriteStream('access.log', { flags: 'a' }),
 * });
 * const app = express();
 * app.use(log, balance(pool));
 * process.on('SIGTERM', () => void log.close());
 * ```
 */
export function accessLog(options: AccessLogOptions = {}): AccessLogMiddleware {
  const o = objectOption(options, '', KNOWN_OPTIONS, 'an options object', true) as AccessLogOptions;
  const escape = enumOption(o.escape, 'escape', ESCAPES, DEFAULT_ACCESS_LOG_ESCAPE);
  const extra = stringListOption(o.variables, 'variables', [], 'an array of variable names', (name, path) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new InvalidOptionError(path, 'a variable name without $', name);
  });
  const format = o.format ?? DEFAULT_ACCESS_LOG_FORMAT;
  let line: Line | undefined;
  let formatter: AccessLogFormatter | undefined;
  let names = new Set<string>();
  if (typeof format === 'function') formatter = format as AccessLogFormatter;
  else if (typeof format === 'string') ({ line, names } = compileFormat(format === 'combined' ? COMBINED_FORMAT : format, escape, extra));
  else throw new InvalidOptionError('format', 'a string of nginx variables, "combined" or a function', format);
  const condition = functionOption<(req: IncomingMessage, res: ServerResponse, ex: Exchange) => boolean>(o.if, 'if', 'a function (req, res, ex) => boolean');
  const sample = o.sample ?? 1;
  if (typeof sample !== 'number' || !(sample >= 0 && sample <= 1)) throw new InvalidOptionError('sample', 'a number from 0 to 1', o.sample);
  const buffer = integerOption(o.buffer, 'buffer', DEFAULT_ACCESS_LOG_BUFFER);
  const flush = durationOption(o.flush, 'flush', DEFAULT_ACCESS_LOG_FLUSH);
  const maxPending = integerOption(o.maxPending, 'maxPending', DEFAULT_ACCESS_LOG_MAX_PENDING, { min: 1 });
  const onError = functionOption<(error: unknown, source: AccessLogErrorSource) => void>(o.onError, 'onError', 'a function (error, source) => void');
  const to = o.to ?? process.stdout;
  const counters = { logged: 0, written: 0, dropped: 0, errors: 0 };
  const fail = (error: unknown, source: AccessLogErrorSource): void => {
    counters.errors++;
    try {
      onError?.(error, source);
    } catch {
      // A failing error handler must not reach the request either.
    }
  };
  let send: (entry: unknown) => void;
  let sink: StreamSink | undefined;
  if (typeof to === 'function') {
    const fn = to as (entry: unknown) => void;
    send = (entry) => {
      try {
        fn(entry);
        counters.written++;
      } catch (err) {
        fail(err, 'to');
      }
    };
  } else if (isWritable(to)) {
    const stream = to;
    sink = new StreamSink(stream, buffer, flush, maxPending, counters, (err) => fail(err, 'stream'));
    const s = sink;
    send = (entry) => {
      let text: string;
      if (typeof entry === 'string') text = entry;
      else {
        try {
          text = JSON.stringify(entry) ?? '';
        } catch (err) {
          fail(err, 'format');
          return;
        }
      }
      s.push(text);
    };
  } else {
    throw new InvalidOptionError('to', 'a writable stream or a function', to);
  }
  const getters = new Map<string, Getter>();
  const countRequests = formatter !== undefined || names.has('connection_requests') || names.has('connection');
  let closed = false;

  const finish = (req: IncomingMessage, res: ServerResponse, ex: Exchange): void => {
    if (closed) return;
    const aborted = !responseFinished(res);
    const facts = factsOf(req, res, ex, aborted);
    try {
      if (condition !== undefined && !condition(req, res, ex)) return;
    } catch (err) {
      fail(err, 'if');
      return;
    }
    if (sample < 1 && Math.random() >= sample) return;
    let entry: unknown;
    try {
      entry = line !== undefined ? line(ex) : formatter!(new Context(req, res, ex, facts, aborted, getters));
    } catch (err) {
      fail(err, 'format');
      return;
    }
    counters.logged++;
    send(entry);
  };

  // One listener per request, the same function for every request: 'close' comes once the answer
  // was handed over (after 'finish') or when the connection closed first.
  const onClose = function (this: ServerResponse): void {
    const req = this.req;
    if (QUEUED_RESPONSE_NEVER_CLOSES) untrack(this);
    finish(req, this, exchange(req));
  };

  // Node before 24 emits no 'close' on a pipelined response still queued behind another when the
  // connection closes: the connection's own 'close' logs those (499), once.
  const unwatch = new WeakMap<ServerResponse, () => void>();
  const track = (req: IncomingMessage, res: ServerResponse): void => {
    const socket = req.socket as Socket | null;
    if (req.httpVersionMajor !== 1 || socket === null) return;
    unwatch.set(
      res,
      onConnectionClose(socket, () => {
        res.off('close', onClose);
        finish(res.req, res, exchange(res.req));
      }),
    );
  };
  const untrack = (res: ServerResponse): void => {
    unwatch.get(res)?.();
  };

  const handler = function accessLog(req: IncomingMessage, res: ServerResponse, next: Next): void {
    // The exchange record made now: $request_time counts from here.
    exchange(req);
    if (countRequests) connectionRequests(req);
    res.on('close', onClose);
    if (QUEUED_RESPONSE_NEVER_CLOSES) track(req, res);
    next();
  };
  return Object.assign(handler, {
    stats: (): AccessLogStats => ({ ...counters, pending: sink?.pending ?? 0 }),
    flush: async (): Promise<void> => {
      await sink?.flush();
    },
    close: async (options?: AccessLogCloseOptions): Promise<void> => {
      let timeout = DEFAULT_CLOSE_TIMEOUT;
      try {
        timeout = durationOption(options?.timeout, 'timeout', DEFAULT_CLOSE_TIMEOUT);
      } catch {
        // close() never rejects: a bad timeout is the default one.
      }
      closed = true;
      await sink?.close(to !== process.stdout && to !== process.stderr, timeout);
    },
  });
}

/** How long close() waits for a stream that does not drain: 1 s. */
const DEFAULT_CLOSE_TIMEOUT = 1000;

/** Node before 24 emits no 'close' on a pipelined response still queued when its connection closes. */
const QUEUED_RESPONSE_NEVER_CLOSES = Number(process.versions.node.split('.')[0]) < 24;

function isWritable(value: unknown): value is Writable {
  return value !== null && typeof value === 'object' && typeof (value as Writable).write === 'function' && typeof (value as Writable).on === 'function';
}
