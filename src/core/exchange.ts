import type { IncomingMessage } from 'node:http';
import { TLSSocket } from 'node:tls';
import { BadRequestError, MethodNotAllowedError, type SwitchyardError } from './errors.ts';
import { validHost } from './host.ts';

/** A server as the exchange record shows it after selection. */
export interface ExchangeServer {
  /** The server's id in its pool. */
  readonly id: string;
  /** `host:port` of the server, as nginx's `$upstream_addr` shows it. */
  readonly name: string;
  /** The server's session id for sticky(): its `route`, else the hex MD5 of `name` (nginx's SID). */
  readonly sid: string;
}

/** A client connection's addresses and ports, as they were read from its socket. */
export interface ConnectionFacts {
  /** The client's address. */
  readonly remoteAddress: string | undefined;
  /** The client's port. */
  readonly remotePort: number | undefined;
  /** The client address's family, `'IPv4'` or `'IPv6'`. */
  readonly remoteFamily: string | undefined;
  /** The address the connection came in on. */
  readonly localAddress: string | undefined;
  /** The port the connection came in on. */
  readonly localPort: number | undefined;
}

/**
 * Called by balance() with the upstream response about to be relayed and a list (flat name/value
 * pairs) the hook may add headers to (sticky() adds its cookie); they are sent after the upstream's.
 */
export type ResponseHook = (ex: Exchange, response: IncomingMessage, headers: string[]) => void;

/**
 * Everything switchyard knows about one request, shared by every middleware
 * in the request's way: the URI the upstream will get, the client address,
 * the servers tried and what they answered, the cache status. One record per
 * request, reached with {@link exchange}; `req.url` is never patched.
 */
export interface Exchange {
  /** The request this record belongs to. */
  readonly req: IncomingMessage;
  /** When the gateway first saw the request (`performance.now()` ms). */
  readonly start: number;
  /**
   * The request target as the client sent it (nginx `$request_uri`), in origin form and without a
   * fragment: a `#` ends the target (nginx keeps it in `$request_uri`, but its `$uri` and `$args` end
   * there), so what is matched, keyed and sent upstream is the same.
   */
  readonly requestUri: string;
  /** The path (no query), percent-decoded and normalized as nginx's `$uri`; rewrite() changes it. */
  uri: string;
  /** The query string without `?` (nginx `$args`); rewrite() changes it. */
  args: string;
  /** True once rewrite() changed `uri` or `args`: the upstream then gets them re-encoded. */
  uriChanged: boolean;
  /**
   * `http` or `https`, as the client reached the gateway: `https` on a TLS connection, whatever the
   * protocol on it (HTTP/1.x or HTTP/2), else `http`; a trusted proxy's X-Forwarded-Proto when
   * balance() or cache() is configured to trust it. An HTTP/2 client's `:scheme` pseudo-header is
   * not believed: on a cleartext (h2c) connection it could claim `https` (nginx's `$scheme` is the
   * connection's too).
   */
  scheme: string;
  /** The client's address (nginx `$remote_addr`), after trusted-proxy resolution when balance() is configured for it. */
  clientAddress: string;
  /** Variables set by rewrite()'s `set`, read by templates as `$name`. */
  readonly vars: Map<string, string>;
  /** Regex captures of the last matching rewrite rule or condition (`$1`..`$9`, and named groups in `named`). */
  captures: Captures | undefined;
  /**
   * False when the path could not be normalized (bad escape, NUL, `..` above the root, a `..;` or `.;`
   * segment), or when the request is refused whatever its path ({@link Exchange.refusal}): such
   * requests are never proxied, cached or rewritten (400, or the refusal's status).
   */
  uriValid: boolean;
  /**
   * Why the request is refused before anything handles it, as nginx refuses it while reading the
   * request: an invalid host in the Host header, in `:authority` or in an absolute-form target, or two
   * Host headers (400, `SWY_ERR_BAD_REQUEST`); the TRACE method (405, {@link MethodNotAllowedError}).
   * `undefined` for a request that may go on.
   */
  readonly refusal: SwitchyardError | undefined;
  /** A body already parsed by the framework (Fastify, Koa), to re-send upstream. */
  parsedBody: unknown;
  /** Each server tried, in order (nginx `$upstream_addr`). */
  readonly upstreamAddr: string[];
  /** Each attempt's status (nginx `$upstream_status`; 502 or 504 for failed attempts). */
  readonly upstreamStatus: number[];
  /**
   * Each attempt's time to its connection, in ms with three decimals' precision as measured (nginx
   * `$upstream_connect_time`): 0 for a kept-alive connection; -1 for an attempt that never connected.
   * Written by balance() from the same `performance.now()` readings the pool's statistics take.
   */
  readonly upstreamConnectTime: number[];
  /** Each attempt's time to its response header, in ms (nginx `$upstream_header_time`); -1 when none came. */
  readonly upstreamHeaderTime: number[];
  /** Each attempt's time to the end of its response (or its failure), in ms (nginx `$upstream_response_time`). */
  readonly upstreamResponseTime: number[];
  /**
   * The request's id (nginx `$request_id`): 32 lowercase hex characters made on first use, or an
   * incoming id that requestId() was told to trust.
   */
  requestId: string | undefined;
  /** The server that produced the response, once one did. */
  server: ExchangeServer | undefined;
  /** Why balance() gave up without a response (`error` also covers "no server available"). */
  upstreamFailure: 'error' | 'timeout' | 'invalid_header' | undefined;
  /**
   * True when the client already has its answer and the rest of the chain only feeds a cache
   * (cache()'s background update): balance() then ignores the client's connection closing.
   */
  detached: boolean;
  /**
   * The client's connection as it was while its answer was going, for a request that goes on after
   * that answer (cache()'s background update), when the request's own socket is closed or carries
   * the client's next request: balance() takes the client's address from it.
   */
  clientConnection: ConnectionFacts | undefined;
  /** Cache status of the request (`HIT`, `MISS`, ...), set by cache(). */
  cacheStatus: string | undefined;
  /** A sticky hint: the session id (`sid`) of the server a session is bound to, set by sticky(). */
  hint: string | undefined;
  /**
   * Set by sticky() when it handled the request: its mode, and in `learn` mode the session's id (the
   * lookup's value the request came with, or the one the server created), nginx's `$sticky_sessid`.
   */
  sticky:
    | {
        /** The mode sticky() runs in. */
        readonly mode: 'cookie' | 'route' | 'learn';
        /** `learn` mode: the session's id (nginx's `$sticky_sessid`); undefined in the other modes and before one is known. */
        sessid: string | undefined;
      }
    | undefined;
  /** Hooks run by balance() before it relays an upstream response. */
  responseHooks: ResponseHook[] | undefined;
  /**
   * Headers the hooks added to the relayed response (flat name/value pairs), which the upstream did
   * not send: cache() judges and stores the upstream's headers only, as nginx does.
   */
  addedHeaders: string[] | undefined;
  /**
   * The host a trusted proxy's X-Forwarded-Host named (with its port, as sent), once a middleware that
   * trusts the proxy resolved the request (cache() with `trustProxy`); `$host` then reads it.
   */
  forwardedHost: string | undefined;
  /**
   * The request headers balance() sent upstream on its last attempt (flat name/value pairs, lowercase
   * names): what the upstream was told, which cache() checks its key and Vary variants against.
   */
  upstreamRequestHeaders: string[] | undefined;
  /**
   * The method balance() sends upstream when it is not the client's, set by a middleware before it
   * (cache() fetches a HEAD as GET, nginx `proxy_cache_convert_head`). `req.method` keeps the
   * client's, for every middleware and handler.
   */
  upstreamMethod: string | undefined;
  /**
   * Changes to the request headers balance() sends upstream, set by a middleware before it: a
   * lowercase name mapped to `null` is not sent, mapped to a string is sent with that value instead
   * of the request's (cache() takes off the client's conditional and range headers, and adds its
   * revalidation validators). `req.headers` keeps what the client sent, for every middleware and handler.
   */
  upstreamHeaderChanges: Map<string, string | null> | undefined;
  /** Parsed `Cookie` header, lazily filled by the variables facility. */
  cookies: Map<string, string> | undefined;
  /** Parsed query arguments, lazily filled by the variables facility. */
  argMap: Map<string, string> | undefined;
  /** What limitRequests() and limitConnections() decided; `undefined` until one of them applied a limit. */
  limitStatus:
    | {
        /** nginx's `$limit_req_status`: `PASSED`, `DELAYED`, `REJECTED`, `DELAYED_DRY_RUN` or `REJECTED_DRY_RUN`. */
        req?: string | undefined;
        /** nginx's `$limit_conn_status`: `PASSED`, `REJECTED` or `REJECTED_DRY_RUN`. */
        conn?: string | undefined;
      }
    | undefined;
}

/** Regex captures: `$0`…`$9` by index, named groups in `named`. */
export type Captures = ReadonlyArray<string | undefined> & {
  /** The named groups' values by name, when the regex has named groups. */
  readonly named?: Readonly<Record<string, string | undefined>> | undefined;
};

const kExchange = Symbol.for('switchyard.exchange');

/**
 * Slots of an exchange record that the library's parts fill later: declared when the record is made,
 * so that filling them does not change the object's shape per request.
 * @internal
 */
export const kResponseFacts = Symbol('switchyard.responseFacts');
/** @internal See {@link kResponseFacts}: the upstream response balance() relayed. */
export const kRelayedResponse = Symbol('switchyard.relayedResponse');

/** @internal The upstream response balance() relayed, as `$upstream_http_NAME` reads it. */
export interface RelayedResponse {
  /** The response's status and header as a message (made on first call). */
  message(): IncomingMessage;
}

/** @internal An exchange record with its slots (see {@link kResponseFacts}). */
export type ExchangeSlots = Exchange & { [kResponseFacts]: unknown; [kRelayedResponse]: RelayedResponse | undefined };

/** @internal Records the upstream response balance() relays for the request. */
export function setRelayedResponse(ex: Exchange, response: RelayedResponse): void {
  (ex as ExchangeSlots)[kRelayedResponse] = response;
}

/** @internal The upstream response balance() relayed for the request, if it relayed one. */
export function relayedResponse(ex: Exchange): RelayedResponse | undefined {
  return (ex as ExchangeSlots)[kRelayedResponse];
}

type WithExchange = IncomingMessage & { [kExchange]?: Exchange };

/**
 * Returns the request's exchange record, creating it on first use.
 * @example
 * ```ts
 * app.use((req, res, next) => {
 *   res.on('finish', () => console.log(exchange(req).upstreamAddr.join(', ')));
 *   next();
 * });
 * ```
 */
export function exchange(req: IncomingMessage): Exchange {
  const holder = req as WithExchange;
  let ex = holder[kExchange];
  if (ex === undefined) {
    ex = createExchange(req);
    holder[kExchange] = ex;
  }
  return ex;
}

// The cache status of a request a cache answered before anything needed its exchange record (a
// HIT on the fast path): the record, when someone asks for it, starts with that status. A property
// on the request, as the record itself, costs less than a WeakMap entry per request.
const kEarlyCacheStatus = Symbol.for('switchyard.cacheStatus');

/** @internal Records a cache status for a request that has no exchange record yet. */
export function setEarlyCacheStatus(req: IncomingMessage, status: string): void {
  const holder = req as WithExchange & { [kEarlyCacheStatus]?: string };
  const ex = holder[kExchange];
  if (ex !== undefined) ex.cacheStatus = status;
  else holder[kEarlyCacheStatus] = status;
}

/**
 * The host the request is for, as the client named it (with its port, as sent): HTTP/2's
 * `:authority` pseudo-header when there is one (node's `req.authority` prefers it too); for HTTP/1.x
 * the host of an absolute-form target (`GET http://target.test/p`: RFC 9112 §3.2.2 has it win over
 * the Host header, as nginx does); else the Host header (HTTP/1.x, or an HTTP/2 client that sent Host
 * instead); `undefined` when there is none. Everything that reads the request's host goes through
 * here: `$host` and `$http_host`, cache keys and their Host check, the Host, X-Forwarded-Host and
 * Forwarded `host=` sent upstream, redirects, rewrite's server names, monitor()'s `allowedHosts`.
 * An HTTP/2 request's own Host header, when it names another host than `:authority`, is ignored
 * (and never forwarded). Whether the host is valid is {@link requestRefusal}'s business.
 * @internal
 */
export function requestHost(req: IncomingMessage): string | undefined {
  const headers = req.headers;
  if (req.httpVersionMajor === 2) {
    const authority = headers[':authority'];
    if (typeof authority === 'string' && authority !== '') return authority;
  } else {
    const target = targetAuthority(req);
    if (target !== undefined) return target;
  }
  const host = headers.host;
  return typeof host === 'string' ? host : undefined;
}

/** A request target in absolute form (`scheme://authority...`): its authority is the first group. */
const ABSOLUTE_FORM = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i;

/**
 * The authority of an HTTP/1.x request's absolute-form target (`target.test:8080` of
 * `http://target.test:8080/p`, `''` of `http:///p`), `undefined` for any other form. Express keeps
 * the target's scheme and host in `req.url` when it strips a mount path; `originalUrl` is read first.
 */
function targetAuthority(req: IncomingMessage): string | undefined {
  const original = (req as IncomingMessage & { originalUrl?: unknown }).originalUrl;
  const target = typeof original === 'string' ? original : req.url;
  // An origin-form target (`/p`), the common case, costs one comparison.
  if (target === undefined || target.charCodeAt(0) === 47 /* / */) return undefined;
  return ABSOLUTE_FORM.exec(target)?.[1];
}

/**
 * Why nginx would refuse the request while reading it, before any location or proxying, or
 * `undefined`: the TRACE method is 405 (RFC 9110 §9.3.8: a gateway that forwards it invites
 * cross-site tracing; nginx sends no Allow); two Host headers, or a host that is not a valid
 * `host[:port]` ({@link validHost}: `a.test/b`, `..`, `.`, an empty Host, a port above 65535), in the
 * Host header, in `:authority` or in an absolute-form target, are 400 (RFC 9112 §3.2). chain() (and
 * through it the Fastify plugin and the Koa adapter) answers these before its first middleware;
 * the exchange record keeps the verdict ({@link Exchange.refusal}) for the middleware that run
 * without chain() (Express). Cheap enough for every request: one method comparison, a cached verdict
 * per host, one pass over the raw header names.
 * @internal
 */
export function requestRefusal(req: IncomingMessage): SwitchyardError | undefined {
  if (req.method === 'TRACE') return new MethodNotAllowedError('TRACE is not allowed');
  const host = req.headers.host;
  if (req.httpVersionMajor === 2) {
    const authority = req.headers[':authority'];
    if (typeof authority === 'string' && authority !== '') return validHost(authority) ? undefined : invalidHost();
    return validHost(host) ? undefined : invalidHost();
  }
  // The Host header is checked even when an absolute-form target names the host, as nginx does.
  if (!validHost(host) || !validHost(targetAuthority(req))) return invalidHost();
  // node keeps the first of two Host headers in req.headers; the raw list has both.
  const raw = req.rawHeaders;
  if (raw === undefined) return undefined;
  let seen = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') {
      if (seen) return new BadRequestError('Repeated Host header');
      seen = true;
    }
  }
  return undefined;
}

function invalidHost(): BadRequestError {
  return new BadRequestError('Invalid host');
}

/** @internal True when the request already has its exchange record (something such as rewrite() used it). */
export function hasExchange(req: IncomingMessage): boolean {
  return (req as WithExchange)[kExchange] !== undefined;
}

function createExchange(req: IncomingMessage): ExchangeSlots {
  // Express strips its mount path from req.url and keeps the target in originalUrl.
  const original = (req as IncomingMessage & { originalUrl?: unknown }).originalUrl;
  const requestUri = originForm(withoutFragment(typeof original === 'string' ? original : (req.url ?? '/')));
  const q = requestUri.indexOf('?');
  const rawPath = q === -1 ? requestUri : requestUri.slice(0, q);
  const normalized = normalizePath(rawPath);
  const refusal = requestRefusal(req);
  return {
    req,
    start: performance.now(),
    requestUri,
    uri: normalized ?? rawPath,
    uriValid: refusal === undefined && (normalized !== undefined || requestUri === '*'),
    refusal,
    args: q === -1 ? '' : requestUri.slice(q + 1),
    uriChanged: false,
    scheme: req.socket instanceof TLSSocket && req.socket.encrypted ? 'https' : 'http',
    clientAddress: req.socket?.remoteAddress ?? '',
    vars: new Map(),
    captures: undefined,
    parsedBody: undefined,
    upstreamAddr: [],
    upstreamStatus: [],
    upstreamConnectTime: [],
    upstreamHeaderTime: [],
    upstreamResponseTime: [],
    requestId: undefined,
    server: undefined,
    upstreamFailure: undefined,
    detached: false,
    clientConnection: undefined,
    cacheStatus: (req as IncomingMessage & { [kEarlyCacheStatus]?: string })[kEarlyCacheStatus],
    hint: undefined,
    sticky: undefined,
    responseHooks: undefined,
    addedHeaders: undefined,
    forwardedHost: undefined,
    upstreamRequestHeaders: undefined,
    upstreamMethod: undefined,
    upstreamHeaderChanges: undefined,
    cookies: undefined,
    argMap: undefined,
    limitStatus: undefined,
    [kResponseFacts]: undefined,
    [kRelayedResponse]: undefined,
  };
}

/**
 * Cuts a request target at its first `#`: a fragment is never part of what a server acts on. A client
 * that sends one (`/admin#x`, `/a?b=1#c`) gets the target without it, as nginx's `$uri` and `$args`
 * do, so rules match, caches key and upstreams receive the same path.
 */
function withoutFragment(target: string): string {
  const hash = target.indexOf('#');
  return hash === -1 ? target : target.slice(0, hash);
}

/**
 * Reduces a request target to origin form (`/path?query`): an absolute-form
 * target (`http://host/path`) keeps only its path and query, so a client cannot
 * steer the upstream request to another authority.
 */
export function originForm(target: string): string {
  if (target.startsWith('/')) return target;
  if (target === '*') return '*';
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(target);
  if (m !== null) {
    const rest = target.slice(m[0].length);
    return rest === '' || rest.startsWith('?') ? `/${rest}` : rest;
  }
  return `/${target}`;
}

/**
 * nginx's URI normalization: percent-decode, merge slashes, resolve `.` and `..`.
 * Returns undefined when the path is not acceptable (bad escape, NUL, `..` above
 * the root), which nginx answers with 400. A segment that is `.` or `..` followed by
 * a `;` path parameter (`..;`, `..;x`, `.;x`, decoded) is refused too: Tomcat and
 * Jetty read it as `..` or `.`, so `/app/..;/admin` would reach `/admin` behind a
 * rule meant for `/app/` (nginx passes it on as a plain name).
 */
export function normalizePath(path: string): string | undefined {
  let decoded: string;
  try {
    decoded = path.includes('%') ? decodeURIComponent(path) : path;
  } catch {
    return undefined;
  }
  if (decoded.includes('\0')) return undefined;
  // A backslash is a separator to some servers (and to nginx on Windows): treat it as one,
  // so `..%5c` cannot climb out of a prefix on an upstream that reads it that way.
  if (decoded.includes('\\')) decoded = decoded.replaceAll('\\', '/');
  if (!decoded.startsWith('/')) decoded = `/${decoded}`;
  if (!/\/\/|\/\.(?:\/|\.|;|$)/.test(decoded)) return decoded;
  const out: string[] = [];
  const segments = decoded.split('/');
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i]!;
    const last = i === segments.length - 1;
    if (seg === '' && !last) continue;
    if (seg.startsWith('.;') || seg.startsWith('..;')) return undefined;
    if (seg === '.') {
      if (last) out.push('');
      continue;
    }
    if (seg === '..') {
      if (out.length === 0) return undefined;
      out.pop();
      if (last) out.push('');
      continue;
    }
    out.push(seg);
  }
  return `/${out.join('/')}`;
}

/** Re-encodes a decoded path for the upstream request line (keeps `/`, escapes the rest as needed). */
export function encodePath(path: string): string {
  return encodeURI(path).replace(/[?#]/g, (c) => (c === '?' ? '%3F' : '%23'));
}

/** The path and query the upstream request carries: the client's target unless rewrite() changed it. */
export function upstreamTarget(ex: Exchange): string {
  if (!ex.uriChanged) return ex.requestUri;
  return ex.args === '' ? encodePath(ex.uri) : `${encodePath(ex.uri)}?${ex.args}`;
}
