/**
 * The response a background update writes to (nginx `proxy_cache_background_update`): the client has
 * its STALE answer already, and what the rest of the chain writes only feeds the cache. A
 * {@link DetachedResponse} stands in for the client's response: its own header store and state, its
 * output sent to the capture's hooks, never to the client's connection.
 * @module
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage, OutgoingHttpHeader, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { ConnectionFacts } from '../core/exchange.ts';
import { flattenHeaders, pushHeader } from '../core/http.ts';
import { toBuffer, type InterceptHooks } from './intercept.ts';

type Callback = (err?: Error | null) => void;

/**
 * Reads the request's connection facts now: an HTTP/2 request's socket is out of reach once its
 * stream is closed, which is when a background update starts.
 */
export function connectionFacts(req: IncomingMessage): ConnectionFacts {
  const real = req.socket as Socket | undefined;
  return {
    remoteAddress: real?.remoteAddress,
    remotePort: real?.remotePort,
    remoteFamily: real?.remoteFamily,
    localAddress: real?.localAddress,
    localPort: real?.localPort,
  };
}

/**
 * Gives a class methods that do nothing: those named in `chaining` return the object they are called
 * on, those in `others` nothing.
 */
function doNothing(target: { prototype: object }, chaining: readonly string[], others: readonly string[] = []): void {
  const self = function (this: unknown): unknown {
    return this;
  };
  const nothing = (): void => {};
  for (const name of chaining) Object.defineProperty(target.prototype, name, { value: self, writable: true, configurable: true });
  for (const name of others) Object.defineProperty(target.prototype, name, { value: nothing, writable: true, configurable: true });
}

/**
 * A socket that is no one's connection, showing the client's addresses and ports as they were: what
 * a background update's request reads as its socket, so that nothing the handler does to it
 * (Express destroys `req.socket` on an error after the headers) reaches the client's connection,
 * which carries its next request by now. Reading and writing do nothing; destroying it destroys the
 * detached response (the handler gave up).
 */
class DetachedSocket extends EventEmitter implements ConnectionFacts {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly remoteFamily: string | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  readonly readable = false;
  readonly writable = false;
  destroyed = false;
  readonly #onDestroy: () => void;

  constructor(facts: ConnectionFacts, onDestroy: () => void) {
    super();
    this.#onDestroy = onDestroy;
    this.remoteAddress = facts.remoteAddress;
    this.remotePort = facts.remotePort;
    this.remoteFamily = facts.remoteFamily;
    this.localAddress = facts.localAddress;
    this.localPort = facts.localPort;
  }

  destroy(): this {
    if (!this.destroyed) {
      this.destroyed = true;
      this.#onDestroy();
    }
    return this;
  }
}

// A socket's methods that do nothing on a detached one but return it.
doNothing(DetachedSocket, ['end', 'setTimeout', 'setNoDelay', 'setKeepAlive', 'ref', 'unref', 'pause', 'resume']);

/** The response methods the rest of the chain may call, which a detached response takes over. */
const TAKEN_OVER = [
  'writeHead',
  'write',
  'end',
  'flushHeaders',
  'setHeader',
  'appendHeader',
  'getHeader',
  'getHeaders',
  'getHeaderNames',
  'hasHeader',
  'removeHeader',
  'destroy',
] as const;

/**
 * The stand-in for the client's response during a background update: a header store of its own,
 * `writeHead`/`write`/`end` that report to the capture's hooks, and the state of a response that is
 * being written (`headersSent`, `writableEnded`, `destroyed`), never the client's finished one.
 */
export class DetachedResponse extends EventEmitter {
  statusCode = 200;
  statusMessage = '';
  /** The request's stand-in socket. */
  readonly socket: DetachedSocket;
  readonly req: IncomingMessage;
  readonly #hooks: InterceptHooks;
  /** The status of a head written implicitly (by `write` or `end`). */
  readonly #status: () => number;
  readonly #headers = new Map<string, { name: string; value: OutgoingHttpHeader }>();
  #started = false;
  #ended = false;
  #destroyed = false;

  /** `status`: where the status of an implicit head is read (by default, this response's `statusCode`). */
  constructor(req: IncomingMessage, hooks: InterceptHooks, facts: ConnectionFacts, status?: () => number) {
    super();
    this.req = req;
    this.#hooks = hooks;
    this.socket = new DetachedSocket(facts, () => this.destroy());
    this.#status = status ?? (() => this.statusCode);
  }

  /**
   * Makes the rest of the chain, which only has the client's response object, write here: the
   * client's response gets this response's methods as its own (as compression middleware installs
   * its own `write` and `end`), and its request this response's socket where it can take one (an
   * HTTP/1.x request; an HTTP/2 request's socket is its closed stream's).
   * @example
   * ```ts
   * res.once('close', () => {
   *   DetachedResponse.attach(req, res, capture, connectionFacts(req));
   *   next();
   * });
   * ```
   */
  static attach(req: IncomingMessage, res: ServerResponse, hooks: InterceptHooks, facts: ConnectionFacts): DetachedResponse {
    // The handler sets `res.statusCode` on the response it holds: an implicit head reads it there.
    const standIn = new DetachedResponse(req, hooks, facts, () => res.statusCode);
    const own = res as unknown as Record<string, unknown>;
    for (const name of TAKEN_OVER) {
      const method = standIn[name] as (...args: unknown[]) => unknown;
      // Calls that return the response for chaining return the client's, which the handler holds.
      own[name] = (...args: unknown[]) => {
        const result = method.apply(standIn, args);
        return result === standIn ? res : result;
      };
    }
    Reflect.set(req, 'socket', standIn.socket);
    return standIn;
  }

  get headersSent(): boolean {
    return this.#started;
  }

  get writableEnded(): boolean {
    return this.#ended;
  }

  get writableFinished(): boolean {
    return this.#ended;
  }

  get finished(): boolean {
    return this.#ended;
  }

  get destroyed(): boolean {
    return this.#destroyed;
  }

  get writable(): boolean {
    return !this.#ended && !this.#destroyed;
  }

  setHeader(name: string, value: OutgoingHttpHeader): this {
    this.#headers.set(name.toLowerCase(), { name, value });
    return this;
  }

  appendHeader(name: string, value: OutgoingHttpHeader): this {
    const old = this.#headers.get(name.toLowerCase());
    const values = old === undefined ? [] : Array.isArray(old.value) ? old.value : [old.value];
    this.#headers.set(name.toLowerCase(), { name, value: [...values.map(String), ...(Array.isArray(value) ? value.map(String) : [String(value)])] });
    return this;
  }

  getHeader(name: string): OutgoingHttpHeader | undefined {
    return this.#headers.get(name.toLowerCase())?.value;
  }

  getHeaders(): OutgoingHttpHeaders {
    const out = Object.create(null) as OutgoingHttpHeaders;
    for (const [k, { value }] of this.#headers) out[k] = value;
    return out;
  }

  getHeaderNames(): string[] {
    return [...this.#headers.keys()];
  }

  hasHeader(name: string): boolean {
    return this.#headers.has(name.toLowerCase());
  }

  removeHeader(name: string): void {
    this.#headers.delete(name.toLowerCase());
  }

  /**
   * The response head: this response's headers, those given here replacing those of the same name,
   * go to the capture. Later calls do nothing.
   */
  writeHead(status: number, reasonOrHeaders?: unknown, maybeHeaders?: unknown): this {
    if (this.#started) return this;
    this.#started = true;
    const code = status;
    this.statusCode = code;
    const headers = typeof reasonOrHeaders === 'string' ? maybeHeaders : reasonOrHeaders;
    const all: string[] = [];
    const given = flattenHeaders(headers);
    const replaced = new Set<string>();
    for (let i = 0; i < given.length; i += 2) replaced.add(given[i]!.toLowerCase());
    for (const [k, { name, value }] of this.#headers) if (!replaced.has(k)) pushHeader(all, name, value);
    all.push(...given);
    this.#hooks.head(code, all);
    return this;
  }

  flushHeaders(): void {
    this.#begin();
  }

  write(chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
    const callback = typeof encoding === 'function' ? encoding : cb;
    this.#begin();
    this.#hooks.data(toBuffer(chunk, encoding));
    if (typeof callback === 'function') process.nextTick(callback as Callback);
    return true;
  }

  end(chunk?: unknown, encoding?: unknown, cb?: unknown): this {
    const callback = typeof chunk === 'function' ? chunk : typeof encoding === 'function' ? encoding : cb;
    if (this.#ended) {
      if (typeof callback === 'function') process.nextTick(callback as Callback);
      return this;
    }
    this.#begin();
    this.#ended = true;
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') this.#hooks.data(toBuffer(chunk, encoding));
    this.#hooks.end();
    process.nextTick(() => {
      this.emit('finish');
      this.emit('close');
      if (typeof callback === 'function') (callback as Callback)();
    });
    return this;
  }

  /** The handler gave up: what it wrote is incomplete, and is not stored. */
  destroy(): this {
    if (this.#destroyed) return this;
    this.#destroyed = true;
    this.#hooks.abort();
    process.nextTick(() => this.emit('close'));
    return this;
  }

  #begin(): void {
    if (!this.#started) this.writeHead(this.#status());
  }
}

// Node's response methods that matter to no one once detached.
doNothing(DetachedResponse, ['setTimeout'], ['cork', 'uncork', 'addTrailers']);
