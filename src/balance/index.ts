import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duration } from '../core/duration.ts';
import {
  BadGatewayError,
  BadRequestError,
  GatewayTimeoutError,
  InvalidOptionError,
  NoServerAvailableError,
  UnknownPoolError,
  type SwitchyardError,
} from '../core/errors.ts';
import { booleanOption, durationOption, enumOption, functionOption, integerOption, objectOption, stringListOption } from '../core/options.ts';
import { Cancellation } from '../core/cancel.ts';
import { channels, type UpstreamEndOutcome, type UpstreamErrorFailure, type UpstreamServerRef } from '../core/diagnostics.ts';
import { onConnectionClose } from '../core/connection.ts';
import { exchange, setRelayedResponse, upstreamTarget, type Exchange } from '../core/exchange.ts';
import { responseFinished, writeHead } from '../core/http2.ts';
import type { Middleware, Next } from '../core/chain.ts';
import { poolOption, UpstreamPool } from '../pool/index.ts';
import { internals, type PoolInternals } from '../pool/internal.ts';
import type { AttemptTimings, Selection } from '../pool/methods/types.ts';
import type { Peer } from '../pool/peer.ts';
import { requestBody, type RequestBody } from '../proxy/body.ts';
import type { Route } from '../pool/connections.ts';
import { Attempt, attemptTimeouts, TIMEOUT_OPTIONS, type AttemptFailure, type AttemptListener, type AttemptTimeouts } from '../proxy/forward.ts';
import {
  clientResponseHeaders,
  FORWARDING_OPTIONS,
  forwardingPolicy,
  resolveClient,
  responsePolicy,
  upstreamRequestHeaders,
  type ForwardingPolicy,
  type RedirectRewriter,
  type ResponsePolicy,
} from '../proxy/headers.ts';
import { cookieRules, rewriteSetCookie, type CookieOptions, type CookieRules } from '../proxy/cookies.ts';
import {
  applySetHeaders,
  compileSetHeaders,
  HookHeaders,
  hookFailure,
  isThenable,
  RequestContext,
  ResponseContext,
  type HookServer,
  type OnRequestHook,
  type OnResponseHook,
  type SetHeaders,
  type Takeover,
} from '../proxy/hooks.ts';
import { redirectRules, rewriteRedirect, type RedirectOption, type Redirects } from '../proxy/redirect.ts';
import type { TrustProxy } from '../proxy/trust.ts';
import { upgradeHandler, type ProxyUpgradeHandler } from '../proxy/upgrade.ts';
import { UPSTREAM_FAILURE_CONDITIONS } from '../core/http.ts';

/** Conditions under which a request moves on to the next server (nginx `proxy_next_upstream`). */
export type NextUpstreamCondition =
  | 'error'
  | 'timeout'
  | 'invalid_header'
  | 'http_500'
  | 'http_502'
  | 'http_503'
  | 'http_504'
  | 'http_403'
  | 'http_404'
  | 'http_429'
  | 'non_idempotent'
  | 'off';

/** Default next-upstream conditions (nginx `proxy_next_upstream error timeout`). */
export const DEFAULT_NEXT_UPSTREAM: readonly NextUpstreamCondition[] = Object.freeze(['error', 'timeout']);
export { DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT } from '../proxy/forward.ts';
/** Default bytes of a streamed request body kept to replay it on the next server: 64 KiB. */
export const DEFAULT_RETRY_BODY_LIMIT = 64 * 1024;
/** Default status when no server can take a request: 503. */
export const DEFAULT_NO_SERVER_STATUS = 503;

/** Options of {@link balance}. */
export interface BalanceOptions {
  /**
   * When to try the next server (nginx `proxy_next_upstream`): `error`, `timeout`,
   * `invalid_header`, `http_500`, `http_502`, `http_503`, `http_504`, `http_403`,
   * `http_404`, `http_429`, `non_idempotent` (re-send POST, PATCH and LOCK requests
   * that already reached a server), or `off`.
   * @default ['error', 'timeout']
   */
  nextUpstream?: readonly NextUpstreamCondition[] | undefined;
  /** Attempts per request including the first; 0 is no limit but the number of servers (nginx `proxy_next_upstream_tries`). @default 0 */
  tries?: number | undefined;
  /** Time budget for retries from the first attempt; 0 is none (nginx `proxy_next_upstream_timeout`). @default 0 */
  nextUpstreamTimeout?: Duration | undefined;
  /** Time to establish a connection (nginx `proxy_connect_timeout`). A timeout answers 504. @default '60s' */
  connectTimeout?: Duration | undefined;
  /** Time from the end of the request (its last body byte) to the response header (nginx `proxy_read_timeout`). A timeout answers 504. @default '60s' */
  headerTimeout?: Duration | undefined;
  /** Longest silence while sending the request or reading the response (nginx `proxy_read_timeout`). @default '60s' */
  idleTimeout?: Duration | undefined;
  /**
   * Proxies whose forwarding headers (`Forwarded`, `X-Forwarded-*`, `X-Real-IP` and the like) are
   * believed and passed upstream; from any other peer they are removed.
   * @default false
   */
  trustProxy?: TrustProxy | undefined;
  /** Set X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host upstream. @default true */
  xForwarded?: boolean | undefined;
  /** Set the RFC 7239 Forwarded header upstream. @default true */
  forwarded?: boolean | undefined;
  /**
   * Host header sent upstream: `'upstream'` (the server's host:port, nginx's `$proxy_host`), `'client'`
   * (the request's), or a fixed value.
   * @default 'upstream'
   */
  host?: 'upstream' | 'client' | (string & {}) | undefined;
  /** Bytes of a streamed request body kept so it can be replayed to the next server. @default 65536 */
  retryBodyLimit?: number | undefined;
  /** Status when no server can take the request at all (nginx answers 502). @default 503 */
  noServerStatus?: 502 | 503 | undefined;
  /**
   * Rewriting of the upstream's Location and Refresh headers (nginx `proxy_redirect`): `'default'`
   * replaces the server's own URL (its url with its path prefix) by the request's scheme and host;
   * `false` leaves them alone; a list of `{ from, to }` rules (a `from` string is a prefix, a RegExp
   * matches the whole URL; `to` may use nginx variables and, after a RegExp, `$1`…) is tried in order.
   * @default 'default'
   */
  redirect?: RedirectOption | undefined;
  /** Response headers hidden from the client besides nginx's defaults (X-Accel-*, X-Pad) (nginx `proxy_hide_header`). @default [] */
  hideHeaders?: readonly string[] | undefined;
  /** Headers hidden by default that are passed on all the same (nginx `proxy_pass_header`). @default [] */
  passHeaders?: readonly string[] | undefined;
  /** Forward the client's headers whose names contain `_` (nginx `underscores_in_headers on`). @default false */
  underscoresInHeaders?: boolean | undefined;
  /**
   * Request headers set on every attempt (nginx `proxy_set_header`), after the forwarding headers and
   * `host`, so they can replace those too: each value is a string with nginx variables, compiled once
   * (`{ 'X-Real-IP': '$remote_addr', 'X-Tenant': '$http_x_tenant', 'Accept-Encoding': '' }`). A value
   * that comes out empty removes the header (nginx sends no empty header), one that comes out with a
   * CR, LF or other control character is not sent. Framing and hop-by-hop names (Content-Length,
   * Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer) are refused. Upgrades (WebSocket)
   * get them too.
   * @default {}
   */
  setHeaders?: Readonly<Record<string, string>> | undefined;
  /**
   * Called once per attempt before the request is sent to the chosen server, with the server, the
   * attempt number, the method, a changeable path and the headers (see {@link RequestHookContext}).
   * A returned Promise is awaited. A throw or rejection fails the request: a {@link HookError} (500),
   * or the thrown SwitchyardError with its status. Not called for upgrades.
   * @default undefined
   */
  onRequest?: OnRequestHook | undefined;
  /**
   * Called once with the upstream's status and headers before anything is sent to the client (after
   * hidden headers are removed and redirects and cookies rewritten, after sticky()'s cookie is added):
   * it may change the status and headers, answer itself with `ctx.respond()`, or read the body with
   * `ctx.readBody({ limit })` (see {@link ResponseHookContext}). The body otherwise streams untouched.
   * A returned Promise is awaited. A throw or rejection fails the request: a {@link HookError} (500),
   * or the thrown SwitchyardError with its status.
   * @default undefined
   */
  onResponse?: OnResponseHook | undefined;
  /**
   * The pools a pool selector (`balance((req, ex) => name, { pools })`) names by their `name`; names
   * must be unique. Only with a selector.
   * @default []
   */
  pools?: readonly UpstreamPool[] | undefined;
  /** Rewrites of the Domain attribute of upstream Set-Cookie headers (nginx `proxy_cookie_domain`). @default false */
  cookieDomain?: CookieOptions['cookieDomain'];
  /** Rewrites of the Path attribute of upstream Set-Cookie headers (nginx `proxy_cookie_path`). @default false */
  cookiePath?: CookieOptions['cookiePath'];
  /** Flags added to or removed from upstream Set-Cookie headers by cookie name (nginx `proxy_cookie_flags`). @default false */
  cookieFlags?: CookieOptions['cookieFlags'];
}

/**
 * Chooses the pool of a request (nginx's `map` into `proxy_pass http://$upstream`): an
 * {@link UpstreamPool}, or the name of one of balance()'s `pools`. Anything else, or a throw, fails
 * the request with an {@link UnknownPoolError} (502).
 */
export type PoolSelector = (req: IncomingMessage, ex: Exchange) => UpstreamPool | string | undefined;

/**
 * The middleware balance() returns; it also carries a WebSocket handler for the same pool (or the
 * same pool selector). `Pool` is `UpstreamPool` for balance(pool), `undefined` for balance(selector).
 */
export interface BalanceMiddleware<Pool extends UpstreamPool | undefined = UpstreamPool> extends Middleware {
  /** Proxies upgrade requests to the same pool (chosen by the same selector): `server.on('upgrade', mw.upgrade)`. */
  readonly upgrade: ProxyUpgradeHandler;
  /** The pool this middleware balances over; undefined when a selector chooses it per request. */
  readonly pool: Pool;
}

/**
 * The brand of balance()'s middleware: its WebSocket upgrade handler, under a symbol only this
 * package knows, so the Fastify plugin finds the balancer by what it is, not by a property name
 * another function may carry too. @internal
 */
export const kBalance: unique symbol = Symbol('switchyard.balance');

const CONDITIONS: readonly NextUpstreamCondition[] = [...UPSTREAM_FAILURE_CONDITIONS, 'non_idempotent', 'off'];
const STATUS_CONDITIONS = new Map<number, NextUpstreamCondition>([
  [500, 'http_500'],
  [502, 'http_502'],
  [503, 'http_503'],
  [504, 'http_504'],
  [403, 'http_403'],
  [404, 'http_404'],
  [429, 'http_429'],
]);
const NON_IDEMPOTENT = new Set(['POST', 'LOCK', 'PATCH']);
/** The keys of {@link BalanceOptions}. */
const BALANCE_OPTIONS = [
  'nextUpstream',
  'tries',
  'nextUpstreamTimeout',
  ...TIMEOUT_OPTIONS,
  ...FORWARDING_OPTIONS,
  'retryBodyLimit',
  'noServerStatus',
  'redirect',
  'hideHeaders',
  'passHeaders',
  'underscoresInHeaders',
  'setHeaders',
  'onRequest',
  'onResponse',
  'pools',
  'cookieDomain',
  'cookiePath',
  'cookieFlags',
] as const satisfies ReadonlyArray<keyof BalanceOptions>;

interface Resolved {
  next: ReadonlySet<NextUpstreamCondition>;
  tries: number;
  budget: number;
  timeouts: AttemptTimeouts;
  policy: ForwardingPolicy;
  replayLimit: number;
  noServerStatus: number;
  /** What the client gets of the response's headers. */
  response: ResponsePolicy;
  /** The same, with X-Accel-Expires left for a cache() in front that reads it. */
  cachedResponse: ResponsePolicy;
  redirects: Redirects | undefined;
  setHeaders: SetHeaders | undefined;
  onRequest: OnRequestHook | undefined;
  onResponse: OnResponseHook | undefined;
  cookies: CookieRules | undefined;
}

function resolve(options: BalanceOptions): Resolved {
  objectOption(options, '', BALANCE_OPTIONS);
  const list = stringListOption(
    options.nextUpstream,
    'nextUpstream',
    DEFAULT_NEXT_UPSTREAM,
    'an array of conditions such as ["error", "timeout", "http_502"]',
    (c, path) => {
      enumOption(c, path, CONDITIONS, 'off');
    },
  ) as readonly NextUpstreamCondition[];
  if (list.includes('off') && list.length > 1) throw new InvalidOptionError('nextUpstream', '"off" alone', list);
  const names = (value: unknown, path: string): readonly string[] =>
    stringListOption(value, path, [], 'an array of header names', (name, at) => {
      if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) throw new InvalidOptionError(at, 'a header name', name);
    });
  const hide = names(options.hideHeaders, 'hideHeaders');
  const pass = names(options.passHeaders, 'passHeaders');
  const redirects = redirectRules(options.redirect);
  const policy = { ...forwardingPolicy(options), underscores: booleanOption(options.underscoresInHeaders, 'underscoresInHeaders', false) };
  const { cookieDomain, cookiePath, cookieFlags } = options;
  return Object.freeze({
    next: new Set(list.includes('off') ? [] : list),
    tries: integerOption(options.tries, 'tries', 0),
    budget: durationOption(options.nextUpstreamTimeout, 'nextUpstreamTimeout', 0),
    timeouts: attemptTimeouts(options),
    policy,
    replayLimit: integerOption(options.retryBodyLimit, 'retryBodyLimit', DEFAULT_RETRY_BODY_LIMIT),
    noServerStatus: enumOption(options.noServerStatus, 'noServerStatus', [502, 503], DEFAULT_NO_SERVER_STATUS),
    response: responsePolicy(hide, pass, redirects !== undefined),
    cachedResponse: responsePolicy(hide, [...pass, 'x-accel-expires'], redirects !== undefined),
    redirects,
    setHeaders: compileSetHeaders(options.setHeaders),
    onRequest: functionOption<OnRequestHook>(options.onRequest, 'onRequest', 'a function (ctx) => void | Promise<void>'),
    onResponse: functionOption<OnResponseHook>(options.onResponse, 'onResponse', 'a function (ctx) => void | Promise<void>'),
    cookies: cookieRules({ cookieDomain, cookiePath, cookieFlags }),
  });
}

/** Validates `pools` (only with a selector): the pools by name. */
function poolsByName(value: unknown, dynamic: boolean): ReadonlyMap<string, UpstreamPool> {
  const byName = new Map<string, UpstreamPool>();
  if (value === undefined) return byName;
  if (!dynamic)
    throw new InvalidOptionError('pools', 'no pools with a single pool (they are for a pool selector: balance((req, ex) => name, { pools }))', value);
  if (!Array.isArray(value)) throw new InvalidOptionError('pools', 'an array of pools from createPool()', value);
  value.forEach((p: unknown, i) => {
    const pool = poolOption(p, `pools[${i}]`);
    if (byName.has(pool.name)) throw new InvalidOptionError(`pools[${i}]`, `pools with unique names ("${pool.name}" is there twice)`, pool.name);
    byName.set(pool.name, pool);
  });
  return byName;
}

/** What a pool selector returned, for an error message (cut short). */
function described(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (value === null || value === undefined || typeof value === 'number' || typeof value === 'boolean') return String(value);
  return typeof value === 'object' ? `an object (${(value as object).constructor?.name ?? 'null prototype'})` : typeof value;
}

/** The pool `select` chooses for the request; an UnknownPoolError when it names none. */
function choosePool(select: PoolSelector, byName: ReadonlyMap<string, UpstreamPool>, req: IncomingMessage, ex: Exchange): UpstreamPool {
  let chosen: unknown;
  try {
    chosen = select(req, ex);
  } catch (err) {
    throw new UnknownPoolError(`Pool selector threw: ${err instanceof Error ? err.message.slice(0, 120) : described(err)}`, { cause: err });
  }
  if (chosen instanceof UpstreamPool) return chosen;
  if (typeof chosen === 'string') {
    const pool = byName.get(chosen);
    if (pool !== undefined) return pool;
    throw new UnknownPoolError(`Pool selector returned ${described(chosen)}, which names none of balance()'s pools`);
  }
  throw new UnknownPoolError(`Pool selector returned ${described(chosen)}: expected an UpstreamPool or the name of one of balance()'s pools`);
}

function failureError(failure: AttemptFailure, cause: Error, pool: string): SwitchyardError {
  if (failure === 'timeout') return new GatewayTimeoutError(`Upstream timed out (pool "${pool}")`, { cause });
  return new BadGatewayError(`Upstream ${failure === 'invalid_header' ? 'sent an invalid response' : 'failed'} (pool "${pool}")`, { cause });
}

/**
 * balance() over a pool chosen per request (nginx's `map` into `proxy_pass http://$upstream`):
 * `select` returns an {@link UpstreamPool} or the name of one of `options.pools`; anything else is an
 * {@link UnknownPoolError} (502). The options (timeouts, headers, hooks) apply whatever the pool.
 * @example
 * ```ts
 * import { balance, createPool } from 'switchyard-proxy';
 *
 * const blue = createPool({ name: 'blue', servers: [{ url: 'http://127.0.0.1:3001' }] });
 * const green = createPool({ name: 'green', servers: [{ url: 'http://127.0.0.1:3002' }] });
 * const proxy = balance((req) => (req.headers['x-tenant'] === 'acme' ? 'green' : 'blue'), { pools: [blue, green] });
 * ```
 */
export function balance(select: PoolSelector, options?: BalanceOptions): BalanceMiddleware<undefined>;
// The single pool's form last: `ReturnType<typeof balance>` is its middleware.
/**
 * The load balancer and proxy: picks a server of `pool` with the pool's method,
 * forwards the request to it, moves on to the next server on failures as
 * nginx's `proxy_next_upstream` does, records the outcome for passive health,
 * and streams the response back. Errors go to `next(err)` with a status
 * (502, 503, 504).
 * @example
 * ```ts
 * import express from 'express';
 * import { createPool, balance } from 'switchyard-proxy';
 *
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }, { url: 'http://127.0.0.1:3002' }] });
 * const app = express();
 * app.use('/api', balance(pool, { nextUpstream: ['error', 'timeout', 'http_502'] }));
 * app.listen(8080);
 * ```
 */
export function balance(pool: UpstreamPool, options?: BalanceOptions): BalanceMiddleware<UpstreamPool>;
export function balance(target: UpstreamPool | PoolSelector, options: BalanceOptions = {}): BalanceMiddleware<UpstreamPool | undefined> {
  const select = typeof target === 'function' && !(target instanceof UpstreamPool) ? (target as PoolSelector) : undefined;
  const fixed = select === undefined ? poolOption(target) : undefined;
  const o = resolve(options);
  const byName = poolsByName(options.pools, select !== undefined);
  const fixedInner = fixed === undefined ? undefined : internals(fixed);
  const handler = function balance(req: IncomingMessage, res: ServerResponse, next: Next): void {
    const ex = exchange(req);
    const trusted = resolveClient(ex, o.policy.trust);
    let pool = fixed;
    let inner = fixedInner;
    if (pool === undefined || inner === undefined) {
      try {
        pool = choosePool(select!, byName, req, ex);
        inner = internals(pool);
      } catch (err) {
        next(err as Error);
        return;
      }
    }
    if (channels.requestStart.hasSubscribers) channels.requestStart.publish({ req, ex, pool: pool.name });
    if (!ex.uriValid) {
      next(ex.refusal ?? new BadRequestError('Malformed request target'));
      return;
    }
    let body: RequestBody;
    try {
      body = requestBody(ex, o.replayLimit);
    } catch (err) {
      next(err as Error);
      return;
    }
    new Forwarding(pool, inner, o, ex, res, body, next, trusted).start();
  };
  const setHeaders = o.setHeaders;
  const ws = upgradeHandler(
    fixed ?? ((req, ex) => choosePool(select!, byName, req, ex)),
    {
      trustProxy: options.trustProxy,
      xForwarded: o.policy.xForwarded,
      forwarded: o.policy.forwarded,
      host: o.policy.host,
      connectTimeout: o.timeouts.connect,
      headerTimeout: o.timeouts.header,
      idleTimeout: o.timeouts.idle,
      underscoresInHeaders: o.policy.underscores,
    },
    setHeaders === undefined ? undefined : (headers, ex) => applySetHeaders(headers, 0, setHeaders, ex),
  );
  Object.defineProperty(handler, kBalance, { value: ws });
  return Object.assign(handler, { upgrade: ws, pool: fixed });
}

/**
 * One request's way through balance(): the attempts (nginx's `proxy_next_upstream` loop), then the
 * relay of the answer. One instance per request holds what the attempts share; each attempt reports
 * back to it ({@link AttemptListener}), and it decides at once what comes next, so that a response
 * is relayed as its header is parsed.
 */

const ignoreClose = (): void => undefined;

class Forwarding implements AttemptListener, RedirectRewriter {
  readonly pool: UpstreamPool;
  readonly inner: PoolInternals;
  readonly o: Resolved;
  readonly ex: Exchange;
  readonly res: ServerResponse;
  readonly body: RequestBody;
  readonly next: Next;
  /** The peer is a trusted proxy (resolved once, in balance()). */
  readonly trusted: boolean;
  /** A middleware before balance() may send another method than the client's (cache(): HEAD as GET). */
  readonly method: string;
  readonly sel: Selection;
  readonly gone = new Cancellation();
  /** The attempt in flight. */
  current: Attempt | undefined;
  /** Attempts left (nginx `proxy_next_upstream_tries`, and the servers there are). */
  tries = 0;
  /** When retries stop (nginx `proxy_next_upstream_timeout`), performance.now() time. */
  deadline = Infinity;
  /** Attempts made. */
  attempts = 0;
  /** A kept-alive connection the server had closed was retried once already. */
  reuseRetried = false;
  /** The attempt has a header only (`inflightDone` is the pool's answer to it, for finish()). */
  inflightDone = false;
  /** The server whose response is being passed on (for its Location and Refresh). */
  answering: Peer | undefined;
  /** The attempt whose end was recorded (relayed, dropped or failed in a hook): recorded once. */
  settled: Attempt | undefined;
  /** Fails a readBody() under way when its attempt ends short. */
  readFailed: (() => void) | undefined;
  readonly onClose = (): void => {
    if (responseFinished(this.res) || this.ex.detached) return;
    this.gone.abort();
    this.current?.cancel();
  };
  /** Stops the HTTP/1 connection's close from calling onClose (see onConnectionClose()). */
  #unwatchConnection: () => void = ignoreClose;

  /** The request is over for balance(): neither the response's close nor the connection's concern it any more. */
  #unwatch(): void {
    this.res.off('close', this.onClose);
    this.#unwatchConnection();
  }

  constructor(pool: UpstreamPool, inner: PoolInternals, o: Resolved, ex: Exchange, res: ServerResponse, body: RequestBody, next: Next, trusted: boolean) {
    this.pool = pool;
    this.inner = inner;
    this.o = o;
    this.ex = ex;
    this.res = res;
    this.body = body;
    this.next = next;
    this.trusted = trusted;
    this.method = ex.upstreamMethod ?? ex.req.method ?? 'GET';
    this.sel = inner.selection(ex.req, ex);
  }

  start(): void {
    // on, not once (no wrapper to make): it is taken off when the request is over.
    this.res.on('close', this.onClose);
    // Node 22 emits no 'close' on a pipelined response still queued behind another when the
    // connection closes: its attempt would go on, its upstream body stalled and its slot held.
    const socket = this.ex.req.httpVersionMajor === 1 ? (this.ex.req.socket as Socket | null) : null;
    if (socket?.destroyed === true) this.onClose();
    else if (socket !== null) this.#unwatchConnection = onConnectionClose(socket, this.onClose);
    let tries = this.inner.maxTries();
    if (this.o.tries > 0 && tries > this.o.tries) tries = this.o.tries;
    this.tries = tries;
    if (this.o.budget > 0) this.deadline = performance.now() + this.o.budget;
    this.#attemptNext();
  }

  #giveUp(err: Error): void {
    this.body.dispose();
    this.#unwatch();
    if (this.gone.aborted) return;
    if (this.res.headersSent) this.res.destroy(err);
    else this.next(err);
  }

  /**
   * Something threw on the request path (a user's hash key function or response hook, say): it goes
   * to the framework like any request error, never to the process.
   */
  #crash(err: unknown): void {
    this.current = undefined;
    this.body.dispose();
    this.#unwatch();
    if (this.res.headersSent || this.res.destroyed) this.res.destroy();
    else this.next(err ?? new Error('balance() failed'));
  }

  /** The next attempt, a moment later: called from an attempt's report, inside undici's callbacks. */
  #later(): void {
    queueMicrotask(() => this.#attemptNext());
  }

  #attemptNext(): void {
    try {
      if (this.gone.aborted) return this.#giveUp(new BadGatewayError('client closed the request'));
      const peer = this.inner.select(this.sel);
      // NGINX Plus `queue`: a request that finds no server free waits for one.
      if (peer === undefined && this.attempts === 0 && this.inner.queueing) {
        this.inner.wait(this.sel, this.gone).then(
          (p) => this.#attempt(p),
          (err: unknown) => this.#crash(err),
        );
        return;
      }
      this.#attempt(peer);
    } catch (err) {
      this.#crash(err);
    }
  }

  /** The stale keep-alive retry: `peer` again, still selected for this request. */
  #again(peer: Peer, timings: AttemptTimings): void {
    if (this.gone.aborted) {
      this.inner.finish(peer, 'ok', timings, undefined);
      return this.#giveUp(new BadGatewayError('client closed the request'));
    }
    this.#attempt(peer);
  }

  #attempt(peer: Peer | undefined): void {
    try {
      this.#send(peer);
    } catch (err) {
      this.#crash(err);
    }
  }

  #send(peer: Peer | undefined): void {
    const { pool, inner, o, ex, body } = this;
    if (peer === undefined) {
      // nginx logs the group name in $upstream_addr and 502 in $upstream_status for "no live upstreams".
      const err =
        this.attempts === 0 ? new NoServerAvailableError(pool.name, o.noServerStatus) : new BadGatewayError(`No live upstreams in pool "${pool.name}"`);
      ex.upstreamAddr.push(pool.name);
      ex.upstreamStatus.push(err.statusCode);
      ex.upstreamConnectTime.push(-1);
      ex.upstreamHeaderTime.push(-1);
      ex.upstreamResponseTime.push(0);
      ex.upstreamFailure = 'error';
      if (channels.upstreamError.hasSubscribers) publishError(ex, pool, undefined, this.attempts + 1, 'no_server', err, false);
      return this.#giveUp(err);
    }
    this.attempts++;
    const target = upstreamTarget(ex);
    const route = inner.agentFor(peer);
    // `OPTIONS *`: undici sends no asterisk-form, so it goes in absolute form with an empty path, its equivalent (RFC 9112 §3.2.4).
    const path = target !== '*' ? peer.target.prefix + target : peer.target.prefix === '' ? route.origin : peer.target.prefix;
    let headers = upstreamRequestHeaders(ex, o.policy, peer.target.authority, body.framing, peer.target.auth, this.trusted);
    if (o.setHeaders !== undefined) headers = applySetHeaders(headers, body.framing.length, o.setHeaders, ex);
    if (o.onRequest !== undefined) return this.#requestHook(o.onRequest, peer, route, path, headers);
    this.#dispatch(peer, route, path, headers);
  }

  #dispatch(peer: Peer, route: Route, path: string, headers: string[]): void {
    const { pool, o, ex, body, method } = this;
    ex.upstreamAddr.push(peer.name);
    // What the upstream is told: cache() checks its key against it before storing the answer.
    ex.upstreamRequestHeaders = headers;
    if (channels.upstreamAttempt.hasSubscribers)
      channels.upstreamAttempt.publish({ ex, pool: pool.name, server: serverRef(peer), attempt: this.attempts, method, path, headers });
    const a = new Attempt(peer, body, o.timeouts, route.http2, this);
    this.current = a;
    a.start(route, method, path, headers);
  }

  /** onRequest: the hook sees and changes the attempt's path and headers (not its framing, which stays last); awaited when it returns a Promise. */
  #requestHook(hook: OnRequestHook, peer: Peer, route: Route, path: string, headers: string[]): void {
    const framing = this.body.framing.length;
    const fixed = framing === 0 ? [] : headers.slice(headers.length - framing);
    const own = framing === 0 ? headers : headers.slice(0, headers.length - framing);
    const ctx = new RequestContext(this.ex, hookServer(peer), this.attempts, this.method, path, new HookHeaders(own, fixed));
    const send = (): void => {
      if (this.gone.aborted) {
        this.inner.finish(peer, 'ok', { header: -1, response: 0, inflightDone: false }, undefined);
        return this.#giveUp(new BadGatewayError('client closed the request'));
      }
      const list = ctx.headers.list();
      this.#dispatch(peer, route, ctx.path, framing === 0 ? list : list.concat(fixed));
    };
    let result: unknown;
    try {
      result = hook(ctx);
    } catch (err) {
      return this.#requestHookFailed(peer, err);
    }
    if (!isThenable(result)) return send();
    result.then(
      () => {
        try {
          send();
        } catch (err) {
          this.#crash(err);
        }
      },
      (err: unknown) => this.#requestHookFailed(peer, err),
    );
  }

  /** The request hook threw or rejected: the server is released (not a failure of its own), the request fails with the hook's error. */
  #requestHookFailed(peer: Peer, err: unknown): void {
    this.inner.finish(peer, 'ok', { header: -1, response: 0, inflightDone: false }, undefined);
    if (this.gone.aborted) return this.#giveUp(new BadGatewayError('client closed the request'));
    this.#crash(hookFailure(err, 'onRequest'));
  }

  attemptFailed(a: Attempt): void {
    const { pool, inner, o, ex, body, method } = this;
    const peer = a.peer;
    const failure = a.failure!;
    const cause = a.cause!;
    this.current = undefined;
    const timings = { header: -1, response: performance.now() - a.started, inflightDone: false };
    if (a.refused) {
      // Not the server's doing (undici refused the request as built: a header a middleware set): release it and fail the request.
      inner.finish(peer, 'ok', timings, undefined);
      if (channels.upstreamError.hasSubscribers) publishError(ex, pool, peer, this.attempts, 'error', cause, false);
      return this.#crash(cause);
    }
    this.tries--;
    count(inner, peer, a);
    if (this.gone.aborted) {
      inner.finish(peer, 'ok', timings, undefined);
      if (channels.upstreamError.hasSubscribers) publishError(ex, pool, peer, this.attempts, failure, cause, false);
      return this.#giveUp(cause);
    }
    // A kept-alive connection the server closed under us: a race, not the server's fault; the same
    // server again, once, on another connection (the closed one is gone), unless that would re-send
    // a POST, PATCH or LOCK (as nginx). Not counted as a failure, unless the server's reused
    // connections fail this way too often (staleTooOften).
    const resendable = !a.sent || (body.replayable && (!NON_IDEMPOTENT.has(method) || o.next.has('non_idempotent')));
    if (a.reused && failure === 'error' && !this.reuseRetried && resendable && !staleTooOften(peer, inner.now())) {
      this.reuseRetried = true;
      if (channels.upstreamError.hasSubscribers) publishError(ex, pool, peer, this.attempts, failure, cause, true);
      this.tries++;
      ex.upstreamAddr.pop();
      // The server stays selected (its `active` count, its place in the selection): one select(), one finish().
      queueMicrotask(() => this.#again(peer, timings));
      return;
    }
    inner.finish(peer, 'failed', timings, undefined);
    ex.upstreamStatus.push(failure === 'timeout' ? 504 : 502);
    ex.upstreamConnectTime.push(a.connectTime);
    ex.upstreamHeaderTime.push(-1);
    ex.upstreamResponseTime.push(timings.response);
    const retry = canRetry(o, failure, this.tries, this.deadline, method, a.sent, body);
    if (channels.upstreamError.hasSubscribers) publishError(ex, pool, peer, this.attempts, failure, cause, retry);
    if (retry) return this.#later();
    ex.upstreamFailure = failure;
    this.#giveUp(failureError(failure, cause, pool.name));
  }

  attemptResponded(a: Attempt): void {
    try {
      this.#responded(a);
    } catch (err) {
      // A response hook threw (sticky()'s, say): the attempt is over, the error is the request's as it is.
      this.#hookFailed(a, err, false);
    }
  }

  /**
   * A response hook (sticky()'s, onResponse, or what balance() did after it) threw or rejected: the
   * attempt is ended, recorded with the upstream's status, and the request fails with the error.
   */
  #hookFailed(a: Attempt, err: unknown, wrap = true): void {
    a.cancel();
    this.#settle(a, false);
    if (this.gone.aborted) return this.#giveUp(new BadGatewayError('client closed the request'));
    this.#crash(wrap ? hookFailure(err, 'onResponse') : err);
  }

  #responded(a: Attempt): void {
    const { pool, inner, o, ex, res, body, method } = this;
    const peer = a.peer;
    const status = a.status;
    this.tries--;
    const inflightDone = inner.header(peer, a.headerTime);
    this.inflightDone = inflightDone;
    if (channels.upstreamHeader.hasSubscribers)
      channels.upstreamHeader.publish({
        ex,
        pool: pool.name,
        server: serverRef(peer),
        attempt: this.attempts,
        status,
        headerTime: a.headerTime,
        response: a.message(),
      });
    const condition = STATUS_CONDITIONS.get(status);
    if (condition !== undefined && this.tries > 0 && canRetry(o, condition, this.tries, this.deadline, method, true, body)) {
      this.current = undefined;
      a.discard();
      count(inner, peer, a);
      const response = performance.now() - a.started;
      inner.finish(peer, status === 403 || status === 404 ? 'next' : 'failed', { header: a.headerTime, response, inflightDone }, status);
      if (channels.upstreamEnd.hasSubscribers) publishEnd(ex, pool, peer, this.attempts, status, 'next', a);
      ex.upstreamStatus.push(status);
      ex.upstreamConnectTime.push(a.connectTime);
      ex.upstreamHeaderTime.push(a.headerTime);
      ex.upstreamResponseTime.push(response);
      return this.#later();
    }
    ex.upstreamStatus.push(status);
    ex.upstreamConnectTime.push(a.connectTime);
    ex.upstreamHeaderTime.push(a.headerTime);
    ex.server = { id: peer.id, name: peer.name, sid: peer.sid };
    setRelayedResponse(ex, a);
    // Detached (a cache's background update): the client's connection is not this response's, and
    // its finished state is the client's answer's, not this response's (the cache's stand-in takes it).
    if (!ex.detached && (res.headersSent || res.destroyed)) {
      this.current = undefined;
      a.discard();
      this.relayEnded(a, false);
      return;
    }
    this.answering = peer;
    // cache() in front reads X-Accel-Expires from what balance() writes: it is left in for it to see.
    const headers = clientResponseHeaders(a.rawHeaderList(), status, ex.cacheStatus === undefined ? o.response : o.cachedResponse, this);
    if (o.cookies !== undefined) rewriteCookies(headers, o.cookies, ex);
    if (ex.responseHooks !== undefined) {
      const added: string[] = [];
      const message = a.message();
      for (const hook of ex.responseHooks) hook(ex, message, added);
      if (added.length > 0) {
        ex.addedHeaders = added;
        for (const h of added) headers.push(h);
      }
    }
    if (o.onResponse !== undefined) return this.#responseHook(o.onResponse, a, headers);
    // To an HTTP/2 client without the connection-specific fields it may not carry.
    writeHead(res, status, headers);
    a.relay(res);
  }

  /** onResponse: the hook sees the status and headers before anything is sent; awaited when it returns a Promise. */
  #responseHook(hook: OnResponseHook, a: Attempt, headers: string[]): void {
    const ctx = new ResponseContext(this.ex, hookServer(a.peer), a.status, new HookHeaders(headers), (limit) => this.#readBody(a, limit));
    let result: unknown;
    try {
      result = hook(ctx);
    } catch (err) {
      ctx.closed = true;
      return this.#hookFailed(a, err);
    }
    if (!isThenable(result)) return this.#afterResponseHook(a, ctx);
    result.then(
      () => {
        try {
          this.#afterResponseHook(a, ctx);
        } catch (err) {
          this.#hookFailed(a, err);
        }
      },
      (err: unknown) => {
        ctx.closed = true;
        this.#hookFailed(a, err);
      },
    );
  }

  /** The response hook is over: its answer, the body it read, or the upstream's response as the hook left it. */
  #afterResponseHook(a: Attempt, ctx: ResponseContext): void {
    ctx.closed = true;
    if (this.gone.aborted) {
      // The client left while the hook ran (its close cancelled the attempt).
      a.cancel();
      this.#settle(a, false);
      return this.#giveUp(new BadGatewayError('client closed the request'));
    }
    const takeover = ctx.takeover;
    if (takeover !== undefined) {
      if (ctx.reading === undefined) this.#dropResponse(a);
      else if (this.settled !== a) a.cancel();
      return this.#answer(takeover);
    }
    if (ctx.reading !== undefined) {
      // The hook read the body: the upstream's status and headers (as the hook left them) go out with it.
      ctx.reading.then(
        (body) => {
          try {
            const head = this.ex.req.method === 'HEAD';
            this.#answer({ status: ctx.status, headers: head ? ctx.headers.list() : withoutLength(ctx.headers.list()), body }, head);
          } catch (err) {
            this.#crash(err);
          }
        },
        (err: unknown) => this.#hookFailed(a, err),
      );
      return;
    }
    if (a.broken) {
      // A timeout fired (or the upstream failed) while an async hook ran: nothing was sent yet.
      a.cancel();
      this.#settle(a, false);
      this.#crash(new GatewayTimeoutError(`Upstream response broke off while the onResponse hook ran (pool "${this.pool.name}")`));
      return;
    }
    writeHead(this.res, ctx.status, ctx.headers.list());
    a.relay(this.res);
  }

  /**
   * A response the hook answered instead of the upstream's: the upstream's is read off its
   * connection when it is small (the connection is kept), else the connection is closed.
   */
  #dropResponse(a: Attempt): void {
    const length = contentLength(a.rawHeaderList());
    if (this.method === 'HEAD' || a.status === 204 || a.status === 304 || (length !== undefined && length <= DRAIN_LIMIT)) {
      a.discard();
      this.#settle(a, true);
    } else {
      a.cancel();
      this.#settle(a, false);
    }
  }

  /** Sends a response of the hook's (or the upstream's, with the body the hook read) with its Content-Length. */
  #answer(t: Takeover, keepLength = false): void {
    const res = this.res;
    this.#unwatch();
    this.body.dispose();
    if (res.headersSent || res.destroyed) return;
    const bodiless = t.status === 204 || t.status === 304;
    const headers = keepLength || bodiless ? t.headers : [...t.headers, 'content-length', String(t.body.length)];
    writeHead(res, t.status, headers);
    res.end(bodiless || t.body.length === 0 ? undefined : t.body);
  }

  /** ctx.readBody(): the upstream's body into memory, at most `limit` bytes (more fails with a 502 and closes the connection). */
  #readBody(a: Attempt, limit: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let reason: Error | undefined;
      const fail = (): void => {
        this.readFailed = undefined;
        reject(reason ?? new BadGatewayError(`Upstream response broke off while readBody() read it (pool "${this.pool.name}")`));
      };
      if (a.broken || this.settled === a) return fail();
      this.readFailed = fail;
      // What Attempt.relay() writes to: the chunks are kept, the end resolves.
      const sink = {
        writableLength: 0,
        write: (chunk: Buffer): boolean => {
          if (reason !== undefined) return false;
          size += chunk.length;
          if (size > limit) {
            reason = new BadGatewayError(`Upstream response body is larger than readBody()'s limit of ${limit} bytes (pool "${this.pool.name}")`);
            // Out of undici's onData: the attempt is ended (its connection closed), which fails the read.
            queueMicrotask(() => a.cancel());
            return false;
          }
          chunks.push(chunk);
          return true;
        },
        once: () => sink,
        off: () => sink,
        end: (): void => {
          this.readFailed = undefined;
          resolve(Buffer.concat(chunks, size));
        },
        destroy: fail,
      };
      a.relay(sink as unknown as ServerResponse);
    });
  }
  rewriteRedirect(value: string, refresh: boolean): string {
    return this.o.redirects === undefined ? value : rewriteRedirect(this.o.redirects, value, refresh, this.ex, this.answering!.target);
  }

  relayEnded(a: Attempt, complete: boolean): void {
    this.#settle(a, complete);
    if (!complete) this.readFailed?.();
  }

  /** Records the end of the attempt that answered, once: statistics, passive health (the upstream's status), its response time. */
  #settle(a: Attempt, complete: boolean): void {
    if (this.settled === a) return;
    this.settled = a;
    const { pool, inner, ex, body } = this;
    const peer = a.peer;
    this.current = undefined;
    this.#unwatch();
    body.dispose();
    count(inner, peer, a);
    const response = performance.now() - a.started;
    inner.finish(peer, 'ok', { header: a.headerTime, response, inflightDone: this.inflightDone }, a.status);
    ex.upstreamResponseTime.push(response);
    if (channels.upstreamEnd.hasSubscribers) publishEnd(ex, pool, peer, this.attempts, a.status, complete ? 'complete' : 'aborted', a);
  }
}

/**
 * How often a server's reused connections may turn out closed within its failTimeout before the
 * next one counts as a failure: nginx counts every one; balance() retries the server on another
 * connection, but a server that drops requests on kept-alive connections again and again is failing.
 */
const STALE_REUSE_LIMIT = 3;
const staleReuse = new WeakMap<Peer, { since: number; count: number }>();

/** Notes a stale kept-alive connection of `peer` at `now`: true when it is one too many (it counts). */
function staleTooOften(peer: Peer, now: number): boolean {
  let s = staleReuse.get(peer);
  if (s === undefined || now - s.since > peer.failTimeout) {
    s = { since: now, count: 0 };
    staleReuse.set(peer, s);
  }
  s.count++;
  return s.count > STALE_REUSE_LIMIT;
}

function serverRef(peer: Peer): UpstreamServerRef {
  return { id: peer.id, name: peer.name };
}

/** Bytes of an upstream body balance() reads off the connection to keep it when a hook answered instead; a longer one closes it. */
const DRAIN_LIMIT = 64 * 1024;

function hookServer(peer: Peer): HookServer {
  return { id: peer.id, name: peer.name, url: peer.url };
}

/** The response's Content-Length, when it has one that is a number. */
function contentLength(raw: readonly (Buffer | string)[]): number | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 14 && name.toString().toLowerCase() === 'content-length') {
      const n = Number(raw[i + 1]!.toString().trim());
      return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
    }
  }
  return undefined;
}

/** The pairs without Content-Length. */
function withoutLength(list: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < list.length; i += 2) if (list[i]!.toLowerCase() !== 'content-length') out.push(list[i]!, list[i + 1]!);
  return out;
}

/** Applies the cookie options (nginx `proxy_cookie_domain`, `proxy_cookie_path`, `proxy_cookie_flags`) to each Set-Cookie of the upstream's. */
function rewriteCookies(headers: string[], rules: CookieRules, ex: Exchange): void {
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (name.length === 10 && name.toLowerCase() === 'set-cookie') headers[i + 1] = rewriteSetCookie(rules, headers[i + 1]!, ex);
  }
}

function publishError(
  ex: Exchange,
  pool: UpstreamPool,
  peer: Peer | undefined,
  attempt: number,
  failure: UpstreamErrorFailure,
  error: Error,
  retry: boolean,
): void {
  channels.upstreamError.publish({ ex, pool: pool.name, server: peer === undefined ? undefined : serverRef(peer), attempt, failure, error, retry });
}

function publishEnd(ex: Exchange, pool: UpstreamPool, peer: Peer, attempt: number, status: number, outcome: UpstreamEndOutcome, a: Attempt): void {
  channels.upstreamEnd.publish({
    ex,
    pool: pool.name,
    server: serverRef(peer),
    attempt,
    status,
    outcome,
    bytesSent: a.bytesSent(),
    bytesReceived: a.bytesReceived(),
    responseTime: performance.now() - a.started,
  });
}

/** Adds an attempt's bytes to the server's `sent` and `received` counters. */
function count(inner: PoolInternals, peer: Peer, a: Attempt): void {
  inner.transferred(peer, a.bytesSent(), a.bytesReceived());
}

function canRetry(o: Resolved, condition: NextUpstreamCondition, tries: number, deadline: number, method: string, sent: boolean, body: RequestBody): boolean {
  if (tries <= 0 || !o.next.has(condition)) return false;
  if (performance.now() >= deadline) return false;
  if (sent && NON_IDEMPOTENT.has(method) && !o.next.has('non_idempotent')) return false;
  if (sent && !body.replayable) return false;
  return true;
}
