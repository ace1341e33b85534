import { randomFillSync } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { hostname } from 'node:os';
import { type Exchange, type ExchangeSlots, kResponseFacts, relayedResponse, requestHost } from './exchange.ts';
import { InvalidOptionError } from './errors.ts';
import { hostName, hostOf } from './http.ts';

/** A compiled template: evaluates nginx variables against a request's exchange record. */
export type Template = (ex: Exchange) => string;

type Getter = (ex: Exchange) => string;

const VAR = /\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*|[0-9]))/g;

/**
 * Compiles a string with nginx variables (`$uri`, `${host}`, `$arg_id`,
 * `$http_x_user`, `$cookie_sid`, `$1`) once; the result evaluates it per request.
 * Unknown names read variables set by rewrite()'s `set`, and are empty when unset.
 * `filter`, when given, wraps each variable's getter, given the variable's name (without `$`):
 * rewrite() uses it to percent-encode decoded values put into query arguments.
 * @example
 * ```ts
 * const key = compileTemplate('$scheme$host$request_uri', 'key');
 * key(exchange(req)); // 'http://example.com/a?b=1' without the separators
 * ```
 */
export function compileTemplate(text: string, option: string, filter?: (name: string, get: Template) => Template): Template {
  if (typeof text !== 'string') throw new InvalidOptionError(option, 'a string with nginx variables', text);
  const parts = splitTemplate(text).map((p) => (typeof p === 'string' ? p : filter === undefined ? variable(p.name) : filter(p.name, variable(p.name))));
  if (parts.length === 0) return () => '';
  if (parts.length === 1) {
    const only = parts[0]!;
    return typeof only === 'string' ? () => only : only;
  }
  return (ex) => {
    let out = '';
    for (const p of parts) out += typeof p === 'string' ? p : p(ex);
    return out;
  };
}

/** A variable's place in a template split by {@link splitTemplate}: its name without `$` or braces. @internal */
export interface TemplateVariable {
  /** The variable's name (`remote_addr` of `$remote_addr` and `${remote_addr}`, `1` of `$1`). */
  readonly name: string;
}

/** A template's literal text and variables, in order (`'$a-${b}'` is `[{ name: 'a' }, '-', { name: 'b' }]`). @internal */
export function splitTemplate(text: string): Array<string | TemplateVariable> {
  const parts: Array<string | TemplateVariable> = [];
  let last = 0;
  VAR.lastIndex = 0;
  for (let m = VAR.exec(text); m !== null; m = VAR.exec(text)) {
    if (m.index > last) parts.push(text.slice(last, m.index));
    parts.push({ name: (m[1] ?? m[2])! });
    last = VAR.lastIndex;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

/** True when the template contains at least one variable. */
export function hasVariables(text: string): boolean {
  VAR.lastIndex = 0;
  return VAR.test(text);
}

/** Returns the getter of one nginx variable by name (without `$`). */
export function variable(name: string): Getter {
  if (/^[0-9]$/.test(name)) {
    const i = Number(name);
    return (ex) => ex.captures?.[i] ?? '';
  }
  const fixed = FIXED[name];
  if (fixed !== undefined) return fixed;
  const lower = name.toLowerCase();
  // A value rewrite()'s `set` gave `$http_NAME`, `$arg_NAME` or `$cookie_NAME` is read instead of the
  // request's (nginx); most requests have none, and skip the lookup.
  if (lower.startsWith('http_')) {
    const header = lower.slice(5).replace(/_/g, '-');
    return (ex) => (ex.vars.size === 0 ? undefined : ex.vars.get(name)) ?? headerValue(ex, header);
  }
  // Argument and cookie names match case-insensitively, the first in the request winning (nginx).
  if (lower.startsWith('arg_')) {
    const arg = lower.slice(4);
    return (ex) => (ex.vars.size === 0 ? undefined : ex.vars.get(name)) ?? caseless(args(ex), arg);
  }
  if (lower.startsWith('cookie_')) {
    const cookie = lower.slice(7);
    return (ex) => (ex.vars.size === 0 ? undefined : ex.vars.get(name)) ?? caseless(cookies(ex), cookie);
  }
  if (lower.startsWith('sent_http_')) {
    const header = lower.slice(10).replace(/_/g, '-');
    return (ex) => sentHeader(ex, header);
  }
  if (lower.startsWith('upstream_http_')) {
    const header = lower.slice(14).replace(/_/g, '-');
    return (ex) => joinHeader(relayedResponse(ex)?.message().headers[header], header);
  }
  return (ex) => ex.vars.get(name) ?? ex.captures?.named?.[name] ?? '';
}

/** The value of the first name in `map` (in the request's order) equal to `lower` in any case, or ''. */
function caseless(map: Map<string, string>, lower: string): string {
  const exact = map.get(lower);
  if (exact !== undefined && map.size === 1) return exact;
  for (const [key, value] of map) if (key.length === lower.length && key.toLowerCase() === lower) return value;
  return '';
}

/**
 * The prefixes of nginx's variable families: `$http_NAME` (request header), `$arg_NAME`,
 * `$cookie_NAME`, `$sent_http_NAME` (response header, at log time), `$upstream_http_NAME` (the
 * relayed upstream response's header, at log time). @internal
 */
export const VARIABLE_FAMILIES: readonly string[] = Object.freeze(['http_', 'arg_', 'cookie_', 'sent_http_', 'upstream_http_']);

/**
 * True when `name` (without `$`) is a variable switchyard knows: one of its fixed names, a family's
 * (`http_x_tenant`), or a capture (`1`). A name rewrite()'s `set` gives is known only at run time.
 * @internal
 */
export function isKnownVariable(name: string): boolean {
  if (/^[0-9]$/.test(name) || Object.hasOwn(FIXED, name)) return true;
  const lower = name.toLowerCase();
  return VARIABLE_FAMILIES.some((prefix) => lower.length > prefix.length && lower.startsWith(prefix));
}

/** The names of the fixed variables (`uri`, `status`, ...), for messages that list them. @internal */
export function knownVariableNames(): string[] {
  return Object.keys(FIXED);
}

function headerValue(ex: Exchange, header: string): string {
  // `$http_host` of an HTTP/2 request is its `:authority`, as nginx makes a Host header of it.
  if (header === 'host') return requestHost(ex.req) ?? '';
  return joinHeader(ex.req.headers[header], header);
}

/** A header's value as nginx's variables give it: several fields joined with `, ` (`; ` for Cookie). */
function joinHeader(v: string | number | readonly string[] | undefined, header: string): string {
  if (v === undefined) return '';
  if (typeof v === 'number') return String(v);
  if (typeof v !== 'string') return v.join(header === 'cookie' ? '; ' : ', ');
  return v;
}

/**
 * `$host`: a trusted proxy's X-Forwarded-Host when one was resolved (cache()'s `trustProxy`), else
 * the request's ({@link hostOf}: lowercase, no port, no trailing dot), else the local address (nginx:
 * the server's name).
 */
function host(ex: Exchange): string {
  if (ex.forwardedHost !== undefined) return hostName(ex.forwardedHost);
  return hostOf(ex.req) || (ex.req.socket?.localAddress ?? '');
}

const FIXED: Record<string, Getter> = {
  uri: (ex) => ex.uri,
  document_uri: (ex) => ex.uri,
  request_uri: (ex) => ex.requestUri,
  args: (ex) => ex.args,
  query_string: (ex) => ex.args,
  is_args: (ex) => (ex.args === '' ? '' : '?'),
  host,
  scheme: (ex) => ex.scheme,
  https: (ex) => (ex.scheme === 'https' ? 'on' : ''),
  remote_addr: (ex) => ex.clientAddress,
  binary_remote_addr: (ex) => ex.clientAddress,
  remote_port: (ex) => String(ex.req.socket?.remotePort ?? ''),
  server_addr: (ex) => ex.req.socket?.localAddress ?? '',
  server_port: (ex) => String(ex.req.socket?.localPort ?? ''),
  request_method: (ex) => ex.req.method ?? '',
  server_protocol: (ex) => `HTTP/${ex.req.httpVersion}`,
  content_type: (ex) => headerValue(ex, 'content-type'),
  content_length: (ex) => headerValue(ex, 'content-length'),
  upstream_addr: (ex) => ex.upstreamAddr.join(', '),
  upstream_status: (ex) => ex.upstreamStatus.join(', '),
  upstream_cache_status: (ex) => ex.cacheStatus ?? '',
  limit_req_status: (ex) => ex.limitStatus?.req ?? '',
  limit_conn_status: (ex) => ex.limitStatus?.conn ?? '',
  upstream_connect_time: (ex) => attemptTimes(ex.upstreamConnectTime),
  upstream_header_time: (ex) => attemptTimes(ex.upstreamHeaderTime),
  upstream_response_time: (ex) => attemptTimes(ex.upstreamResponseTime),
  request_id: requestId,
  sticky_sid: (ex) => (ex.sticky === undefined ? '' : (ex.server?.sid ?? '')),
  sticky_sessid: (ex) => ex.sticky?.sessid ?? '',
  request: requestLine,
  remote_user: remoteUser,
  time_local: (ex) => clockStrings(wallClock(ex)).local,
  time_iso8601: (ex) => clockStrings(wallClock(ex)).iso,
  msec: (ex) => seconds(wallClock(ex)),
  request_time: (ex) => seconds(Math.max(0, (responseFacts(ex)?.end ?? performance.now()) - ex.start)),
  status: (ex) => {
    const status = responseFacts(ex)?.status ?? 0;
    return status < 10 ? `00${status}` : status < 100 ? `0${status}` : String(status);
  },
  bytes_sent: (ex) => String(responseFacts(ex)?.bytesSent ?? 0),
  body_bytes_sent: (ex) => String(responseFacts(ex)?.bodyBytesSent ?? 0),
  request_length: (ex) => String(responseFacts(ex)?.requestLength ?? 0),
  connection: (ex) => String(connectionState(ex.req).serial),
  connection_requests: (ex) => String(connectionRequests(ex.req)),
  pid: () => String(process.pid),
  hostname: () => (machine.name ??= hostname()),
};

/** `$hostname`, read once. */
const machine: { name?: string } = {};

// ---- Variables read at log time ($status, $bytes_sent, $sent_http_NAME, ...) ----

/**
 * What is known of a request's answer once it is over, recorded on the exchange by accessLog() for
 * the variables that read it (`$status`, `$bytes_sent`, `$body_bytes_sent`, `$request_length`,
 * `$request_time`, `$sent_http_NAME`, and the times of `$time_local`, `$time_iso8601` and `$msec`,
 * which are the log line's). Without it those read as nginx's would
 * before an answer: status `000`, zero bytes, the current time.
 * @internal
 */
export interface ResponseFacts {
  /** The status logged: the response's, `499` when the client went away before the response header, 0 when none was sent. */
  status: number;
  /** `Date.now()` when the answer ended (the log line's time). */
  time: number;
  /** `performance.now()` when the answer ended. */
  end: number;
  /** Bytes sent to the client for this answer, header included (nginx `$bytes_sent`). */
  bytesSent: number;
  /** Bytes sent after the response header (nginx `$body_bytes_sent`). */
  bodyBytesSent: number;
  /** Bytes of the request: request line, header and body (nginx `$request_length`). */
  requestLength: number;
  /** The response header as sent (`res._header` for HTTP/1.x), read by `$sent_http_NAME`. */
  header: string | undefined;
  /** The response header as set (`res.getHeader()`), for HTTP/2 and when `header` is unknown. */
  getHeader: ((name: string) => string | number | readonly string[] | undefined) | undefined;
}

/** Records what is known of the request's answer (accessLog(), at the answer's end). @internal */
export function setResponseFacts(ex: Exchange, facts: ResponseFacts): void {
  (ex as ExchangeSlots)[kResponseFacts] = facts;
}

/** What accessLog() recorded of the request's answer, if it did. @internal */
export function responseFacts(ex: Exchange): ResponseFacts | undefined {
  return (ex as ExchangeSlots)[kResponseFacts] as ResponseFacts | undefined;
}

/** `$sent_http_NAME`: the response header as sent (the HTTP/1.x header text), else as set. */
function sentHeader(ex: Exchange, lower: string): string {
  const facts = responseFacts(ex);
  if (facts === undefined) return '';
  if (facts.header !== undefined) return headerFromText(facts.header, lower);
  return joinHeader(facts.getHeader?.(lower), lower);
}

/** A field's value in an HTTP/1.x response header's text (`HTTP/1.1 200 OK\r\nName: v\r\n...`), several joined. */
function headerFromText(text: string, lower: string): string {
  let out: string | undefined;
  let at = text.indexOf('\r\n');
  while (at !== -1) {
    const start = at + 2;
    const end = text.indexOf('\r\n', start);
    if (end === -1 || end === start) break;
    const colon = text.indexOf(':', start);
    if (colon !== -1 && colon < end && colon - start === lower.length && text.slice(start, colon).toLowerCase() === lower) {
      const value = text.slice(colon + 1, end).trim();
      out = out === undefined ? value : `${out}${lower === 'cookie' ? '; ' : ', '}${value}`;
    }
    at = end;
  }
  return out ?? '';
}

/** nginx's `%T.%03M`: whole milliseconds (truncated) as seconds with three decimals. */
function seconds(ms: number): string {
  const whole = Math.floor(ms);
  const rest = whole % 1000;
  return `${(whole - rest) / 1000}.${rest < 10 ? `00${rest}` : rest < 100 ? `0${rest}` : rest}`;
}

/** `$upstream_*_time`: each attempt's time in seconds, joined with `, `; `-` for an attempt that has none. */
function attemptTimes(times: readonly number[]): string {
  if (times.length === 0) return '';
  if (times.length === 1) return times[0]! < 0 ? '-' : seconds(times[0]!);
  let out = '';
  for (let i = 0; i < times.length; i++) out += (i === 0 ? '' : ', ') + (times[i]! < 0 ? '-' : seconds(times[i]!));
  return out;
}

/** The wall-clock time a variable shows: the log line's, else now. */
function wallClock(ex: Exchange): number {
  return responseFacts(ex)?.time ?? Date.now();
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function two(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `$time_local` and `$time_iso8601` of one second, made once per second (as nginx caches its times). */
interface ClockStrings {
  second: number;
  local: string;
  iso: string;
}

let clock: ClockStrings = { second: Number.NaN, local: '', iso: '' };

/** `06/Dec/2026:22:10:00 +0000` and `2026-12-06T22:10:00+00:00` in the local time zone, as nginx writes them. */
function clockStrings(ms: number): ClockStrings {
  const second = Math.floor(ms / 1000);
  if (second === clock.second) return clock;
  const d = new Date(second * 1000);
  const offset = -d.getTimezoneOffset();
  const zone = Math.abs(offset);
  const sign = offset < 0 ? '-' : '+';
  const hh = two(Math.floor(zone / 60));
  const mm = two(zone % 60);
  const time = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  const year = d.getFullYear();
  clock = {
    second,
    local: `${two(d.getDate())}/${MONTHS[d.getMonth()]}/${year}:${time} ${sign}${hh}${mm}`,
    iso: `${year}-${two(d.getMonth() + 1)}-${two(d.getDate())}T${time}${sign}${hh}:${mm}`,
  };
  return clock;
}

/** `$request`: the request line as the client sent it (method, target, protocol). */
function requestLine(ex: Exchange): string {
  const req = ex.req;
  const original = (req as IncomingMessage & { originalUrl?: unknown }).originalUrl;
  const target = typeof original === 'string' ? original : (req.url ?? '');
  return `${req.method ?? ''} ${target} HTTP/${req.httpVersion}`;
}

/** `$remote_user`: the user name of a Basic Authorization header, else ''. */
function remoteUser(ex: Exchange): string {
  const auth = ex.req.headers.authorization;
  if (typeof auth !== 'string' || auth.length < 7 || auth.slice(0, 6).toLowerCase() !== 'basic ') return '';
  const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('latin1');
  const colon = decoded.indexOf(':');
  return colon <= 0 ? '' : decoded.slice(0, colon);
}

// ---- $request_id ----

/**
 * Random bytes drawn in blocks, 16 per id: one randomFillSync call and one hex encoding per 256 ids
 * (an id is a slice of the block's hex text, not an encoding call of its own).
 */
const ids = { pool: Buffer.allocUnsafe(4096), hex: '', next: 4096 };

/** 32 lowercase hex characters of fresh random bytes (nginx's `$request_id`). @internal */
export function newRequestId(): string {
  if (ids.next + 16 > ids.pool.length) {
    randomFillSync(ids.pool);
    ids.hex = ids.pool.toString('hex');
    ids.next = 0;
  }
  const at = ids.next * 2;
  ids.next += 16;
  return ids.hex.slice(at, at + 32);
}

/** `$request_id`: the request's id, made on first use. */
function requestId(ex: Exchange): string {
  if (ex.requestId === undefined) ex.requestId = newRequestId();
  return ex.requestId;
}

// ---- $connection and $connection_requests ----

interface ConnectionState {
  /** The connection's serial number (nginx `$connection`), from 1 in this process. */
  readonly serial: number;
  /** Requests of the connection counted so far. */
  requests: number;
}

const kConnection = Symbol('switchyard.connection');
const kConnectionRequest = Symbol('switchyard.connectionRequest');
const serials = { last: 0 };

/**
 * The connection's state, kept on its socket (for HTTP/2, on the session: every stream shares it),
 * and on the request once read: an HTTP/2 stream that ended no longer reaches its session.
 */
function connectionState(req: IncomingMessage): ConnectionState {
  const own = req as IncomingMessage & { [kConnection]?: ConnectionState };
  const known = own[kConnection];
  if (known !== undefined) return known;
  let holder: (object & { [kConnection]?: ConnectionState }) | undefined;
  if (req.httpVersionMajor === 2) holder = (req as IncomingMessage & { stream?: { session?: object } }).stream?.session;
  else holder = req.socket ?? undefined;
  let state = holder?.[kConnection];
  if (state === undefined) {
    state = { serial: ++serials.last, requests: 0 };
    if (holder !== undefined) holder[kConnection] = state;
  }
  own[kConnection] = state;
  return state;
}

/**
 * `$connection_requests`: the request's number on its connection, counted when first read for a
 * request (accessLog() reads it for every request it sees when its format names it).
 * @internal
 */
export function connectionRequests(req: IncomingMessage): number {
  const holder = req as IncomingMessage & { [kConnectionRequest]?: number };
  let n = holder[kConnectionRequest];
  if (n === undefined) {
    n = ++connectionState(req).requests;
    holder[kConnectionRequest] = n;
  }
  return n;
}

/** The request's query arguments, parsed once (first value of each name wins, as nginx's `$arg_`). */
export function args(ex: Exchange): Map<string, string> {
  if (ex.argMap !== undefined) return ex.argMap;
  const map = new Map<string, string>();
  if (ex.args !== '') {
    for (const pair of ex.args.split('&')) {
      // nginx's ngx_http_arg() wants `=` after the name: `?flag&flag=on` gives `$arg_flag` "on".
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      if (!map.has(name)) map.set(name, pair.slice(eq + 1));
    }
  }
  ex.argMap = map;
  return map;
}

/** The request's cookies, parsed once (first occurrence of a name wins, as nginx's `$cookie_`). */
export function cookies(ex: Exchange): Map<string, string> {
  if (ex.cookies !== undefined) return ex.cookies;
  const map = new Map<string, string>();
  const header = headerValue(ex, 'cookie');
  let start = 0;
  while (start < header.length) {
    let end = header.indexOf(';', start);
    if (end === -1) end = header.length;
    const eq = header.indexOf('=', start);
    if (eq !== -1 && eq < end) {
      const name = header.slice(start, eq).trim();
      if (name !== '' && !map.has(name)) map.set(name, header.slice(eq + 1, end).trim());
    }
    start = end + 1;
  }
  ex.cookies = map;
  return map;
}
