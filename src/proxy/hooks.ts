// balance()'s per-request shaping: nginx's `proxy_set_header` (setHeaders), and the onRequest and
// onResponse hooks with the header list they read and change.
import type { IncomingMessage } from 'node:http';
import { HookError, InvalidOptionError, SwitchyardError } from '../core/errors.ts';
import type { Exchange } from '../core/exchange.ts';
import { TOKEN } from '../core/http.ts';
import { compileTemplate, type Template } from '../core/variables.ts';

/**
 * Header names that frame the message or belong to one connection: a hook may not set or remove
 * them (the gateway writes them), and `setHeaders` refuses them.
 */
const PROTECTED = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'proxy-connection']);

/** A character a header value may not carry (CR, LF, NUL and the other controls but tab), as Node and undici check. */
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

/** The server an attempt goes to, as the hooks see it. */
export interface HookServer {
  /** The server's id in its pool. */
  readonly id: string;
  /** `host:port`, as nginx's `$upstream_addr` shows it. */
  readonly name: string;
  /** The server's URL, as given to the pool. */
  readonly url: string;
}

/** Headers as an object: a name's value, or its values in order (several `Set-Cookie`, say). */
export type HookHeaderInit = Readonly<Record<string, string | readonly string[]>>;

/**
 * A message's header fields as a hook sees them: a list of name/value pairs in order, names
 * matched case-insensitively, a repeated field (Set-Cookie) kept as separate entries. Framing and
 * hop-by-hop fields (Content-Length, Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE,
 * Trailer, Proxy-Connection) can be read but not set, appended or deleted: that throws a
 * {@link HookError}, as does a name that is not a token or a value with CR, LF, NUL or another
 * control character.
 * @example
 * ```ts
 * onResponse(ctx) {
 *   ctx.headers.delete('x-powered-by');
 *   ctx.headers.set('access-control-allow-origin', '*');
 *   for (const cookie of ctx.headers.getAll('set-cookie')) console.log(cookie);
 * }
 * ```
 */
export class HookHeaders {
  /** The changeable pairs, `[name, value, ...]`. */
  readonly #list: string[];
  /** Pairs shown but never changed (a request's framing, which balance() writes last). */
  readonly #fixed: readonly string[];

  /** @internal */
  constructor(list: string[], fixed: readonly string[] = []) {
    this.#list = list;
    this.#fixed = fixed;
  }

  /** The field's values joined with `, ` (as the Fetch API's `get`), or undefined when absent. Use {@link getAll} for Set-Cookie. */
  get(name: string): string | undefined {
    const all = this.getAll(name);
    return all.length === 0 ? undefined : all.join(', ');
  }

  /** Each value of the field, in order (empty when absent). */
  getAll(name: string): string[] {
    const lower = name.toLowerCase();
    const out: string[] = [];
    for (const list of [this.#list, this.#fixed])
      for (let i = 0; i < list.length; i += 2) if (list[i]!.length === lower.length && list[i]!.toLowerCase() === lower) out.push(list[i + 1]!);
    return out;
  }

  /** True when the field is present. */
  has(name: string): boolean {
    return this.getAll(name).length > 0;
  }

  /** Replaces every value of the field with `value` (or with each of an array's values). */
  set(name: string, value: string | readonly string[]): this {
    const values = checked(name, value);
    this.#remove(name.toLowerCase());
    for (const v of values) this.#list.push(name, v);
    return this;
  }

  /** Adds a value (or each of an array's) after the field's others. */
  append(name: string, value: string | readonly string[]): this {
    for (const v of checked(name, value)) this.#list.push(name, v);
    return this;
  }

  /** Removes every value of the field; true when there was one. */
  delete(name: string): boolean {
    checkName(name);
    return this.#remove(name.toLowerCase());
  }

  /** Each `[name, value]` pair in order, names as they were written (a request's are lowercase). */
  *entries(): IterableIterator<[string, string]> {
    for (const list of [this.#list, this.#fixed]) for (let i = 0; i < list.length; i += 2) yield [list[i]!, list[i + 1]!];
  }

  /** The same as {@link entries}. */
  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }

  /** The changeable pairs as a flat list (the one the hook changed). @internal */
  list(): string[] {
    return this.#list;
  }

  #remove(lower: string): boolean {
    const list = this.#list;
    let kept = 0;
    for (let i = 0; i < list.length; i += 2) {
      if (list[i]!.length === lower.length && list[i]!.toLowerCase() === lower) continue;
      list[kept++] = list[i]!;
      list[kept++] = list[i + 1]!;
    }
    const removed = kept < list.length;
    list.length = kept;
    return removed;
  }
}

function checkName(name: unknown): void {
  if (typeof name !== 'string' || !TOKEN.test(name)) throw new HookError(`Invalid header name ${describe(name)}`);
  if (PROTECTED.has(name.toLowerCase())) throw new HookError(`A hook may not set or remove the ${name} header: the gateway writes it (framing, hop-by-hop)`);
}

function checked(name: unknown, value: unknown): readonly string[] {
  checkName(name);
  const values = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(values)) throw new HookError(`Invalid value for header ${String(name)}: expected a string or an array of strings`);
  for (const v of values as unknown[]) {
    if (typeof v !== 'string' || INVALID_VALUE.test(v)) throw new HookError(`Invalid value for header ${String(name)}: ${describe(v)}`);
  }
  return values as readonly string[];
}

/** A header object a hook gives respond(), as a flat list (validated as HookHeaders does). @internal */
export function headerList(init: HookHeaderInit | HookHeaders): string[] {
  const out: string[] = [];
  if (init instanceof HookHeaders) {
    for (const [name, value] of init.entries()) if (!PROTECTED.has(name.toLowerCase())) out.push(name, value);
    return out;
  }
  if (init === null || typeof init !== 'object') throw new HookError('respond(): headers must be an object or ctx.headers');
  for (const [name, value] of Object.entries(init)) for (const v of checked(name, value)) out.push(name, v);
  return out;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  return typeof value;
}

/** What an onRequest hook gets, once per attempt, before the request goes to the server. */
export interface RequestHookContext {
  /** The client's request. */
  readonly req: IncomingMessage;
  /** The request's exchange record. */
  readonly ex: Exchange;
  /** The server this attempt goes to. */
  readonly server: HookServer;
  /** The attempt, from 1 (a retry on the next server, or on a new connection after a stale kept-alive one, is another attempt). */
  readonly attempt: number;
  /** The method sent upstream. */
  readonly method: string;
  /** The path and query sent upstream (the server's path prefix included); may be changed. */
  path: string;
  /** The headers sent upstream (after the forwarding headers and `setHeaders`); Content-Length and Transfer-Encoding are shown, not changeable. */
  readonly headers: HookHeaders;
}

/**
 * balance()'s `onRequest`: called once per attempt before the request is sent, to read and change
 * its path and headers. A returned Promise is awaited (the request is not sent if the client left
 * meanwhile). A throw or rejection fails the request with a 500 {@link HookError} (a thrown
 * {@link SwitchyardError} keeps its own status).
 */
export type OnRequestHook = (ctx: RequestHookContext) => void | Promise<void>;

/** The request hook's context. @internal */
export class RequestContext implements RequestHookContext {
  readonly req: IncomingMessage;
  readonly ex: Exchange;
  readonly server: HookServer;
  readonly attempt: number;
  readonly method: string;
  readonly headers: HookHeaders;
  #path: string;

  constructor(ex: Exchange, server: HookServer, attempt: number, method: string, path: string, headers: HookHeaders) {
    this.req = ex.req;
    this.ex = ex;
    this.server = server;
    this.attempt = attempt;
    this.method = method;
    this.#path = path;
    this.headers = headers;
  }

  get path(): string {
    return this.#path;
  }

  set path(value: string) {
    // A request target: no whitespace or controls (undici would refuse it, a server could be confused).
    if (typeof value !== 'string' || value === '' || /[\s\0-\x1f\x7f]/.test(value)) throw new HookError(`Invalid upstream path ${describe(value)}`);
    this.#path = value;
  }
}

/** What an onResponse hook gets, once, with the upstream's status and headers, before anything goes to the client. */
export interface ResponseHookContext {
  /** The client's request. */
  readonly req: IncomingMessage;
  /** The request's exchange record. */
  readonly ex: Exchange;
  /** The server that answered. */
  readonly server: HookServer;
  /** The status the client gets: the upstream's, may be changed (200 to 599). */
  status: number;
  /** The headers the client gets (hop-by-hop and hidden ones already removed, redirects and cookies rewritten). */
  readonly headers: HookHeaders;
  /**
   * Answers the client with this response instead of the upstream's (whose body is then read off its
   * connection or the connection closed); Content-Length is set from `body`. `headers` default to
   * `ctx.headers` (less their Content-Length). The pool still records the upstream's status.
   */
  respond(status: number, headers?: HookHeaderInit | HookHeaders, body?: string | Uint8Array): void;
  /**
   * Reads the upstream's body into memory, at most `limit` bytes (more is a 502 {@link
   * SwitchyardError}, `SWY_ERR_BAD_GATEWAY`). Answer with respond() afterwards, or the upstream's
   * status and headers go to the client with this body and a Content-Length that matches it.
   */
  readBody(options: { readonly limit: number }): Promise<Buffer>;
}

/**
 * balance()'s `onResponse`: called once with the upstream's response header before anything is
 * sent to the client; it may change the status and headers, take the response over with
 * `ctx.respond()`, or read the body with `ctx.readBody()`. The body otherwise streams through
 * untouched. A returned Promise is awaited. A throw or rejection fails the request with a 500
 * {@link HookError} (a thrown {@link SwitchyardError} keeps its own status).
 */
export type OnResponseHook = (ctx: ResponseHookContext) => void | Promise<void>;

/** A response a hook answered with. @internal */
export interface Takeover {
  status: number;
  /** Validated pairs, without framing. */
  headers: string[];
  body: Buffer;
}

/** The response hook's context; balance() reads `takeover` and `body` once the hook is over. @internal */
export class ResponseContext implements ResponseHookContext {
  readonly req: IncomingMessage;
  readonly ex: Exchange;
  readonly server: HookServer;
  readonly headers: HookHeaders;
  takeover: Takeover | undefined = undefined;
  /** The body read by readBody(), once it was. */
  reading: Promise<Buffer> | undefined = undefined;
  /** The hook is over: respond() and readBody() refuse. */
  closed = false;
  #status: number;
  readonly #read: (limit: number) => Promise<Buffer>;

  constructor(ex: Exchange, server: HookServer, status: number, headers: HookHeaders, read: (limit: number) => Promise<Buffer>) {
    this.req = ex.req;
    this.ex = ex;
    this.server = server;
    this.#status = status;
    this.headers = headers;
    this.#read = read;
  }

  get status(): number {
    return this.#status;
  }

  set status(value: number) {
    this.#status = checkStatus(value);
  }

  respond(status: number, headers?: HookHeaderInit | HookHeaders, body?: string | Uint8Array): void {
    if (this.closed) throw new HookError('respond() was called after the onResponse hook was over');
    if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array))
      throw new HookError('respond(): the body must be a string or a Uint8Array');
    this.takeover = {
      status: checkStatus(status),
      headers: headerList(headers ?? this.headers),
      body: body === undefined ? Buffer.alloc(0) : typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength),
    };
  }

  readBody(options: { readonly limit: number }): Promise<Buffer> {
    if (this.closed) return Promise.reject(new HookError('readBody() was called after the onResponse hook was over'));
    const limit = (options as { limit?: unknown } | undefined)?.limit;
    if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 0)
      return Promise.reject(new HookError('readBody(): expected { limit } with a byte count (an integer, 0 or more)'));
    if (this.reading === undefined) {
      this.reading = this.#read(limit);
      // A read the hook did not wait for may fail after it returned: that is balance()'s to handle, not an unhandled rejection.
      this.reading.catch(() => undefined);
    }
    return this.reading;
  }
}

function checkStatus(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 200 || value > 599)
    throw new HookError(`Invalid response status ${typeof value === 'number' ? value : typeof value}: expected an integer from 200 to 599`);
  return value;
}

/** An error a hook threw or rejected with, as the request's: a SwitchyardError as it is, anything else in a HookError. @internal */
export function hookFailure(err: unknown, hook: 'onRequest' | 'onResponse'): SwitchyardError {
  if (err instanceof SwitchyardError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new HookError(`${hook} hook failed: ${message.length > 200 ? `${message.slice(0, 200)}…` : message}`, { cause: err });
}

/** True for a value with a `then` method (a hook's Promise). @internal */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function';
}

/** `setHeaders` compiled: lowercase names and their templates. @internal */
export interface SetHeaders {
  readonly names: ReadonlySet<string>;
  readonly rules: readonly (readonly [name: string, value: Template])[];
}

/**
 * Validates and compiles balance()'s `setHeaders` (nginx `proxy_set_header`): each value an nginx
 * variable template compiled once. Framing and hop-by-hop names are refused (InvalidOptionError
 * naming `setHeaders.<Name>`). Undefined when there is none. @internal
 */
export function compileSetHeaders(value: unknown, option = 'setHeaders'): SetHeaders | undefined {
  if (value === undefined) return undefined;
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new InvalidOptionError(option, 'an object of header names to nginx variable templates', value);
  const names = new Set<string>();
  const rules: Array<readonly [string, Template]> = [];
  for (const [name, template] of Object.entries(value as Record<string, unknown>)) {
    const path = `${option}.${name}`;
    if (!TOKEN.test(name)) throw new InvalidOptionError(path, 'a header name (a token)', name);
    const lower = name.toLowerCase();
    if (PROTECTED.has(lower)) throw new InvalidOptionError(path, 'a header other than the framing and hop-by-hop ones, which the gateway writes', name);
    if (names.has(lower)) throw new InvalidOptionError(path, 'one entry per header name (names are case-insensitive)', name);
    if (typeof template !== 'string' || INVALID_VALUE.test(template))
      throw new InvalidOptionError(path, 'a string with nginx variables, without CR, LF or other control characters', template);
    names.add(lower);
    rules.push([lower, compileTemplate(template, path)]);
  }
  return rules.length === 0 ? undefined : { names, rules };
}

/**
 * The upstream request's header list with `setHeaders` applied, in place (`list` is the attempt's
 * own, fresh from upstreamRequestHeaders(); no copy is made): the fields it names are removed,
 * then each is added with its value for this request, unless that is empty (nginx sends no header
 * with an empty value) or holds a character a header may not carry (the header is dropped: never a
 * broken request). The last `framing` entries of `list` stay last. Returns `list`. @internal
 */
export function applySetHeaders(list: string[], framing: number, set: SetHeaders, ex: Exchange): string[] {
  const end = list.length - framing;
  const tail = framing === 0 ? undefined : list.slice(end);
  let kept = 0;
  for (let i = 0; i < end; i += 2) {
    const name = list[i]!;
    if (set.names.has(name)) continue;
    if (kept !== i) {
      list[kept] = name;
      list[kept + 1] = list[i + 1]!;
    }
    kept += 2;
  }
  list.length = kept;
  for (const [name, template] of set.rules) {
    const v = template(ex);
    if (v !== '' && !INVALID_VALUE.test(v)) list.push(name, v);
  }
  if (tail !== undefined) for (const f of tail) list.push(f);
  return list;
}
