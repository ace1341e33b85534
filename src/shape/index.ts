// shapeResponse(): nginx's `add_header` and the headers-more module's `more_set_headers` and
// `more_clear_headers`, and a hook for what directives cannot say, applied to whatever response goes
// through it: balance()'s relayed answers, cache() HITs, a framework's own routes and error pages.
// It takes the response's head once, when it is written (`writeHead`, or the implicit head of a first
// `write`/`end`, which Node's HTTP/1 and HTTP/2 compatibility responses both send through
// `this.writeHead`), by own properties on that one response, as cache()'s interception does.
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { statusOf, type Middleware, type Next } from '../core/chain.ts';
import { HookError, InvalidOptionError, SwitchyardError } from '../core/errors.ts';
import { exchange, type Exchange } from '../core/exchange.ts';
import { flattenHeaders, pushHeader, TOKEN } from '../core/http.ts';
import { booleanOption, functionOption, objectOption, optionPath } from '../core/options.ts';
import { compileTemplate, hasVariables, type Template } from '../core/variables.ts';
import { HookHeaders } from '../proxy/hooks.ts';

/**
 * The statuses nginx's `add_header` adds its headers to without `always`: 200, 201, 204, 206, 301,
 * 302, 303, 304, 307 and 308.
 */
export const ADD_HEADER_STATUSES: readonly number[] = Object.freeze([200, 201, 204, 206, 301, 302, 303, 304, 307, 308]);

/** shapeResponse()'s `always` when not given: `add` only for {@link ADD_HEADER_STATUSES}, as nginx. */
export const DEFAULT_SHAPE_ALWAYS = false;

/**
 * What {@link ShapeResponseOptions.hook} is called with.
 * @example
 * ```ts
 * shapeResponse({
 *   hook(ctx) {
 *     if (ctx.status === 404 && ctx.ex.upstreamAddr.length > 0) ctx.headers.set('Cache-Control', 'no-store');
 *     ctx.headers.delete('x-powered-by');
 *   },
 * });
 * ```
 */
export interface ShapeContext {
  /** The request. */
  readonly req: IncomingMessage;
  /**
   * The response; change its head through `status` and `headers`. A hook that answers through it
   * (`ctx.res.writeHead(…); ctx.res.end(…)`) has its answer stand, and what the writer writes after is
   * dropped.
   */
  readonly res: ServerResponse;
  /** The request's exchange record (upstream status and address, cache status, variables). */
  readonly ex: Exchange;
  /** The status that will be sent; settable, to an integer from 200 to 599. */
  status: number;
  /**
   * The headers that will be sent, after `remove`, `set` and `add`, as balance()'s hooks see theirs:
   * names in any case, a header sent twice as two values; framing and hop-by-hop headers, names that
   * are not tokens and values with CR, LF, NUL or another control are refused with a {@link HookError}.
   */
  readonly headers: HookHeaders;
}

/**
 * Told of the error a response is answered with instead of its own (a {@link HookError}, or the
 * {@link SwitchyardError} the hook threw), before that answer is written: to log it.
 * @example
 * ```ts
 * shapeResponse({ hook, onError: (err, req) => console.error('shaping failed for', req.url, err.cause ?? err) });
 * ```
 */
export type ShapeErrorListener = (err: SwitchyardError, req: IncomingMessage, res: ServerResponse) => void;

/**
 * Options of {@link shapeResponse}. Applied in this order: `remove`, `set`, `add`, `hook`.
 * @example
 * ```ts
 * const options: ShapeResponseOptions = { add: { 'X-Cache-Status': '$upstream_cache_status' }, remove: ['X-Powered-By'] };
 * ```
 */
export interface ShapeResponseOptions {
  /**
   * Headers added to the response (nginx `add_header`), after those it has: a value is an nginx
   * variable template (`$upstream_cache_status`, `$request_id`…), or a list of them for several lines;
   * a value that evaluates to `''` adds nothing. Only for the statuses nginx adds them to
   * ({@link ADD_HEADER_STATUSES}) unless `always`. As nginx, `Last-Modified` and `ETag` replace the
   * response's own (and `''` removes it). @default {}
   */
  add?: Readonly<Record<string, string | readonly string[]>> | undefined;
  /** Add `add`'s headers whatever the status (nginx `add_header ... always`). @default false */
  always?: boolean | undefined;
  /**
   * Headers set on every response whatever its status, replacing the response's own of that name
   * (headers-more's `more_set_headers`); a value that evaluates to `''` removes the header. @default {}
   */
  set?: Readonly<Record<string, string>> | undefined;
  /**
   * Headers removed from every response (headers-more's `more_clear_headers`): names in any case, a
   * trailing `*` for every name that starts with what is before it (`X-Debug-*`). @default []
   */
  remove?: readonly string[] | undefined;
  /**
   * Called once per response, synchronously, when its head is written, after `remove`, `set` and
   * `add`: it may change the status and the headers. If it throws, the response (its head not sent
   * yet) is answered with the error instead: a {@link SwitchyardError} it throws with that error's
   * status, anything else as a {@link HookError} (500) whose `cause` is what it threw; the body the
   * response's writer goes on writing is dropped. @default undefined
   */
  hook?: ((ctx: ShapeContext) => void) | undefined;
  /** Told of an error a response was answered with instead ({@link ShapeResponseOptions.hook}); what it throws is ignored. @default undefined */
  onError?: ShapeErrorListener | undefined;
}

/**
 * Framing and hop-by-hop headers (the ones balance()'s hooks may not change either): shaping them
 * would leave the body unreadable to the client, or speak for a connection that is not the gateway's.
 */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'proxy-connection']);

/** What Node refuses in a header value (its checkInvalidHeaderChar). */
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

/** add_header's headers that replace the response's own instead of adding (nginx's ngx_http_set_headers). */
const REPLACED_BY_ADD = new Set(['last-modified', 'etag']);

const KNOWN = ['add', 'always', 'set', 'remove', 'hook', 'onError'];

interface HeaderTemplate {
  readonly name: string;
  readonly lower: string;
  readonly values: readonly Template[];
}

/** Names `remove` takes off: exact lowercase names, and prefixes of `*` patterns. */
interface Removal {
  readonly names: ReadonlySet<string>;
  readonly prefixes: readonly string[];
}

interface Shape {
  readonly add: readonly HeaderTemplate[];
  readonly always: boolean;
  readonly set: readonly HeaderTemplate[];
  readonly remove: Removal;
  readonly hook: ((ctx: ShapeContext) => void) | undefined;
  readonly onError: ShapeErrorListener | undefined;
  /** Whether any template reads a variable (the exchange record is then made). */
  readonly variables: boolean;
}

/**
 * A middleware that shapes the head of every response that goes through it: nginx's `add_header`
 * (`add`, `always`), the headers-more module's `more_set_headers` (`set`) and `more_clear_headers`
 * (`remove`), and a `hook` for the rest. Put it before cache() and its headers go on MISSes and on
 * HITs alike, and are not stored; put it after cache() and what it does is stored with the entry (and
 * a HIT, answered before it, does not run it). Framing and hop-by-hop headers (Content-Length,
 * Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer, Proxy-Connection) and names that
 * are not HTTP tokens are refused with an InvalidOptionError; a value that holds CR, LF, NUL or
 * another control once its variables are substituted is dropped.
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { balance, cache, chain, createPool, shapeResponse } from 'switchyard-proxy';
 *
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }] });
 * const shape = shapeResponse({
 *   add: { 'X-Cache-Status': '$upstream_cache_status' },
 *   set: { Server: 'gateway' },
 *   remove: ['X-Powered-By', 'X-Debug-*'],
 *   hook(ctx) {
 *     if (ctx.status === 404) ctx.headers.set('Cache-Control', 'no-store');
 *   },
 * });
 * createServer(chain(shape, cache(), balance(pool))).listen(8080);
 * ```
 */
export function shapeResponse(options: ShapeResponseOptions = {}): Middleware {
  const o = objectOption(options, '', KNOWN, 'an object', true);
  let variables = false;
  const templates = (value: unknown, option: string, lists: boolean): HeaderTemplate[] => {
    if (value === undefined) return [];
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidOptionError(option, 'an object of header names to values', value);
    const record = value as Record<string, unknown>;
    return Object.keys(record).map((name) => {
      const path = optionPath(option, name);
      headerName(name, path);
      const raw = record[name];
      const texts = lists && Array.isArray(raw) ? (raw as unknown[]) : [raw];
      if (texts.length === 0) throw new InvalidOptionError(path, 'a string or a non-empty array of strings', raw);
      const values = texts.map((text, i) => {
        const at = texts === raw ? optionPath(path, i) : path;
        if (typeof text !== 'string')
          throw new InvalidOptionError(at, lists ? 'a string (nginx variables allowed) or an array of them' : 'a string (nginx variables allowed)', text);
        if (INVALID_VALUE.test(text)) throw new InvalidOptionError(at, 'a value without CR, LF, NUL or other controls', text);
        if (hasVariables(text)) variables = true;
        return compileTemplate(text, at);
      });
      return { name, lower: name.toLowerCase(), values };
    });
  };
  // add's and set's keys are header names, any token.
  const add = templates(o.add, 'add', true);
  const set = templates(o.set, 'set', false);
  const shape: Shape = Object.freeze({
    add: Object.freeze(add),
    always: booleanOption(o.always, 'always', DEFAULT_SHAPE_ALWAYS),
    set: Object.freeze(set),
    remove: removal(o.remove),
    hook: functionOption<(ctx: ShapeContext) => void>(o.hook, 'hook', 'a function (ctx) => void'),
    onError: functionOption<ShapeErrorListener>(o.onError, 'onError', 'a function (err, req, res) => void'),
    variables,
  });
  return function shapeResponse(req: IncomingMessage, res: ServerResponse, next: Next): void {
    if (!res.headersSent) new Shaping(shape, req, res).install();
    next();
  };
}

function headerName(name: string, path: string): void {
  if (!TOKEN.test(name)) throw new InvalidOptionError(path, 'a header name (an HTTP token)', name);
  if (FRAMING.has(name.toLowerCase()))
    throw new InvalidOptionError(
      path,
      'a header other than the framing and hop-by-hop ones (Content-Length, Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer, Proxy-Connection)',
      name,
    );
}

function removal(value: unknown): Removal {
  const names = new Set<string>();
  const prefixes: string[] = [];
  if (value === undefined) return { names, prefixes };
  if (!Array.isArray(value)) throw new InvalidOptionError('remove', 'an array of header names', value);
  value.forEach((entry: unknown, i) => {
    const path = optionPath('remove', i);
    if (typeof entry !== 'string') throw new InvalidOptionError(path, 'a header name', entry);
    const wildcard = entry.endsWith('*');
    const name = wildcard ? entry.slice(0, -1) : entry;
    if (wildcard && name === '') throw new InvalidOptionError(path, 'a header name, or a prefix of one before *', entry);
    if (wildcard) {
      if (!/^[!#$%&'+\-.^_`|~0-9A-Za-z]*$/.test(name)) throw new InvalidOptionError(path, 'a header name, or a prefix of one before *', entry);
      if ([...FRAMING].some((f) => f.startsWith(name.toLowerCase())))
        throw new InvalidOptionError(path, `a pattern that takes no framing or hop-by-hop header (${[...FRAMING].join(', ')})`, entry);
      prefixes.push(name.toLowerCase());
    } else {
      headerName(name, path);
      names.add(name.toLowerCase());
    }
  });
  return Object.freeze({ names, prefixes: Object.freeze(prefixes) });
}

type WriteHead = (...args: unknown[]) => ServerResponse;
type Write = (...args: unknown[]) => boolean;
type Callback = (err?: Error | null) => void;

/**
 * One response's shaping: the methods it wraps (as they were when it was installed, so a wrapper an
 * earlier middleware put there keeps working), and where the response is: not begun, begun (its head
 * shaped and passed on), or answered with an error (what its writer writes next is dropped).
 */
class Shaping {
  readonly #shape: Shape;
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  #writeHead: WriteHead | undefined;
  #write: Write | undefined;
  #end: WriteHead | undefined;
  // 'answering' while the error answer is written: node's HTTP/2 end() writes its body through this.write().
  #state: 'fresh' | 'begun' | 'answering' | 'failed' = 'fresh';

  constructor(shape: Shape, req: IncomingMessage, res: ServerResponse) {
    this.#shape = shape;
    this.#req = req;
    this.#res = res;
  }

  install(): void {
    const res = this.#res;
    const own = res as unknown as Record<string, unknown>;
    this.#writeHead = res.writeHead as unknown as WriteHead;
    this.#write = res.write as unknown as Write;
    this.#end = res.end as unknown as WriteHead;
    const self = this;
    own.writeHead = function writeHead(status: number, reasonOrHeaders?: unknown, maybeHeaders?: unknown): ServerResponse {
      return self.head(status, reasonOrHeaders, maybeHeaders);
    };
    own.write = function write(chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
      if (self.#state === 'fresh') self.head(res.statusCode);
      if (self.#state === 'failed') return dropped(encoding, cb);
      return self.#write!.call(res, chunk, encoding, cb);
    };
    own.end = function end(chunk?: unknown, encoding?: unknown, cb?: unknown): ServerResponse {
      // Node sends the Content-Length of a body given whole to end() without a head written: so does this.
      if (self.#state === 'fresh') self.head(res.statusCode, undefined, undefined, bodyLength(chunk, encoding));
      if (self.#state === 'failed') {
        dropped(chunk, typeof encoding === 'function' ? encoding : cb);
        return res;
      }
      return self.#end!.call(res, chunk, encoding, cb);
    };
  }

  /** The response's head: shaped the first time, passed on after that (Node says what a second one does). */
  head(status: number, reasonOrHeaders?: unknown, maybeHeaders?: unknown, implicitLength?: number): ServerResponse {
    const res = this.#res;
    if (this.#state === 'failed') return res;
    if (this.#state !== 'fresh') return this.#writeHead!.call(res, status, reasonOrHeaders, maybeHeaders);
    this.#state = 'begun';
    const reason = typeof reasonOrHeaders === 'string' ? reasonOrHeaders : undefined;
    const given = reason === undefined ? reasonOrHeaders : maybeHeaders;
    let list: HeaderList;
    let final = status;
    try {
      list = HeaderList.of(res, given);
      final = this.#apply(status, list);
    } catch (err) {
      this.#fail(err);
      return res;
    }
    // A hook that wrote through ctx.res itself: what it wrote stands; what the writer writes after an end is dropped.
    if (res.headersSent) {
      if (res.writableEnded) this.#state = 'failed';
      return res;
    }
    if (implicitLength !== undefined && bodyAllowed(this.#req, final) && !list.framed()) list.append('Content-Length', String(implicitLength));
    // The head goes out through setHeader(), so getHeader() after it still answers (loggers read it).
    try {
      list.store(res);
      // A reason phrase goes with the status it was written for, not with one the hook set.
      return reason === undefined || final !== status ? this.#writeHead!.call(res, final) : this.#writeHead!.call(res, final, reason);
    } catch (err) {
      if (res.headersSent) throw err;
      this.#fail(new HookError(`shapeResponse(): the shaped head could not be written: ${(err as Error)?.message}`, { cause: err }));
      return res;
    }
  }

  /** remove, set, add, hook; returns the status to send. */
  #apply(status: number, list: HeaderList): number {
    const shape = this.#shape;
    const { names, prefixes } = shape.remove;
    if (names.size > 0 || prefixes.length > 0) list.removeWhere((lower) => names.has(lower) || prefixes.some((p) => lower.startsWith(p)));
    const ex = shape.variables || shape.hook !== undefined ? exchange(this.#req) : undefined;
    for (const h of shape.set) {
      const value = h.values[0]!(ex!);
      if (value === '') list.delete(h.lower);
      else if (!INVALID_VALUE.test(value)) list.replace(h.name, h.lower, [value]);
    }
    if (shape.add.length > 0 && (shape.always || ADD_HEADER_STATUSES.includes(status))) {
      for (const h of shape.add) {
        for (const template of h.values) {
          const value = template(ex!);
          if (REPLACED_BY_ADD.has(h.lower)) {
            if (value === '') list.delete(h.lower);
            else if (!INVALID_VALUE.test(value)) list.replace(h.name, h.lower, [value]);
          } else if (value !== '' && !INVALID_VALUE.test(value)) {
            list.append(h.name, value);
          }
        }
      }
    }
    if (shape.hook === undefined) return status;
    const ctx = new Context(this.#req, this.#res, ex!, status, list);
    try {
      shape.hook(ctx);
    } catch (err) {
      if (err instanceof SwitchyardError) throw err;
      throw new HookError(`shapeResponse() hook threw: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
    return ctx.status;
  }

  /**
   * Answers the error instead, as chain()'s default answer does (its status, a short text), through
   * the methods this shaping wraps: a cache() after it does not see this answer as the response
   * it captures. The response's own headers are dropped.
   */
  #fail(err: unknown): void {
    this.#state = 'answering';
    const res = this.#res;
    const error = err instanceof SwitchyardError ? err : new HookError(`shapeResponse(): ${(err as Error)?.message ?? String(err)}`, { cause: err });
    try {
      this.#shape.onError?.(error, this.#req, res);
    } catch {
      // A listener's own failure changes nothing.
    }
    if (res.headersSent) {
      // As chain()'s default answer: a response already begun cannot become an error answer.
      this.#state = 'failed';
      res.destroy();
      return;
    }
    const status = statusOf(error);
    const text = `${status} ${STATUS_CODES[status] ?? 'Error'}\n`;
    for (const name of res.getHeaderNames()) res.removeHeader(name);
    this.#writeHead!.call(res, status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    try {
      this.#end!.call(res, this.#req.method === 'HEAD' ? undefined : text);
    } finally {
      this.#state = 'failed';
    }
  }
}

/** The length of the whole body end() was given, or 0 when none. */
function bodyLength(chunk: unknown, encoding: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  if (chunk instanceof Uint8Array) return chunk.byteLength;
  return 0;
}

/** Whether Node would frame a body for this response (not for HEAD, 1xx, 204 and 304). */
function bodyAllowed(req: IncomingMessage, status: number): boolean {
  return req.method !== 'HEAD' && status >= 200 && status !== 204 && status !== 304;
}

/** A write or end after the response was answered with an error: nothing written, the callback called. */
function dropped(...args: unknown[]): boolean {
  const cb = args.find((a) => typeof a === 'function');
  if (cb !== undefined) process.nextTick(cb as Callback);
  return true;
}

/** The hook's view: the status to send, and the header list. */
class Context implements ShapeContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly ex: Exchange;
  readonly headers: HookHeaders;
  #status: number;

  constructor(req: IncomingMessage, res: ServerResponse, ex: Exchange, status: number, list: HeaderList) {
    this.req = req;
    this.res = res;
    this.ex = ex;
    this.#status = status;
    // The hook changes list.flat in place.
    this.headers = new HookHeaders(list.flat);
  }

  get status(): number {
    return this.#status;
  }

  set status(value: number) {
    if (!Number.isInteger(value) || value < 200 || value > 599)
      throw new HookError(`shapeResponse() hook: status must be an integer from 200 to 599, got ${String(value).slice(0, 40)}`);
    this.#status = value;
  }
}

/**
 * A response's headers as they will be sent: a flat `[name, value, ...]` list, names as written.
 * Made from what setHeader() left on the response and writeHead()'s headers (which replace
 * setHeader()'s of the same name), and written back to the response with setHeader().
 */
class HeaderList {
  flat: string[];
  /** The lowercase names the response had when the list was made, to take off those it no longer has. */
  readonly #before: readonly string[];

  private constructor(flat: string[], before: readonly string[]) {
    this.flat = flat;
    this.#before = before;
  }

  static of(res: ServerResponse, given: unknown): HeaderList {
    const flat: string[] = [];
    const before = res.getHeaderNames();
    // node:http keeps the names as written (getRawHeaderNames, not in @types/node); HTTP/2 has lowercase ones.
    const rawNames = (res as { getRawHeaderNames?: () => string[] }).getRawHeaderNames;
    const raw = typeof rawNames === 'function' ? rawNames.call(res) : before;
    const explicit = flattenHeaders(given);
    const replaced = new Set<string>();
    for (let i = 0; i < explicit.length; i += 2) replaced.add(explicit[i]!.toLowerCase());
    for (const name of raw) {
      if (replaced.has(name.toLowerCase())) continue;
      pushHeader(flat, name, res.getHeader(name));
    }
    flat.push(...explicit);
    return new HeaderList(flat, before);
  }

  /** Whether the body's length is told: a Content-Length or a Transfer-Encoding. */
  framed(): boolean {
    const flat = this.flat;
    for (let i = 0; i < flat.length; i += 2) {
      const lower = flat[i]!.toLowerCase();
      if (lower === 'content-length' || lower === 'transfer-encoding') return true;
    }
    return false;
  }

  values(lower: string): string[] {
    const out: string[] = [];
    const flat = this.flat;
    for (let i = 0; i < flat.length; i += 2) if (flat[i]!.toLowerCase() === lower) out.push(flat[i + 1]!);
    return out;
  }

  removeWhere(drop: (lower: string) => boolean): void {
    const kept: string[] = [];
    const flat = this.flat;
    for (let i = 0; i < flat.length; i += 2) {
      const lower = flat[i]!.toLowerCase();
      if (FRAMING.has(lower) || !drop(lower)) kept.push(flat[i]!, flat[i + 1]!);
    }
    this.flat = kept;
  }

  delete(lower: string): void {
    this.removeWhere((n) => n === lower);
  }

  /** The header's values replaced, at the place of its first value (at the end when it had none). */
  replace(name: string, lower: string, values: readonly string[]): void {
    const out: string[] = [];
    const flat = this.flat;
    let placed = false;
    for (let i = 0; i < flat.length; i += 2) {
      if (flat[i]!.toLowerCase() !== lower) out.push(flat[i]!, flat[i + 1]!);
      else if (!placed) {
        for (const v of values) out.push(name, v);
        placed = true;
      }
    }
    if (!placed) for (const v of values) out.push(name, v);
    this.flat = out;
  }

  append(name: string, value: string): void {
    this.flat.push(name, value);
  }

  /** Puts the list on the response with setHeader(), a header sent several times as an array. */
  store(res: ServerResponse): void {
    const grouped = new Map<string, { name: string; values: string[] }>();
    const flat = this.flat;
    for (let i = 0; i < flat.length; i += 2) {
      const lower = flat[i]!.toLowerCase();
      const entry = grouped.get(lower);
      if (entry === undefined) grouped.set(lower, { name: flat[i]!, values: [flat[i + 1]!] });
      else entry.values.push(flat[i + 1]!);
    }
    for (const name of this.#before) if (!grouped.has(name)) res.removeHeader(name);
    for (const [lower, { name, values }] of grouped) {
      // Set again under the name as written (setHeader keeps the first spelling of a name it has).
      if (res.hasHeader(lower)) res.removeHeader(lower);
      res.setHeader(name, values.length === 1 ? values[0]! : values);
    }
  }
}
