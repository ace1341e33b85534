import type { IncomingMessage } from 'node:http';
import { requestHost, type Exchange } from '../core/exchange.ts';
import { TOKEN } from '../core/http.ts';
import { booleanOption, stringOption } from '../core/options.ts';
import { compileTrust, forwardedAddress, plainAddress, type TrustProxy, type TrustTest } from './trust.ts';

/** Hop-by-hop headers (RFC 9110 §7.6.1 and the legacy ones), never forwarded in either direction. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Request headers the gateway sets itself: framing, Host, Expect (answered by
 * the gateway), and the forwarding headers it writes anew (from a trusted
 * proxy's values when there is one).
 */
const REQUEST_OWN = new Set(['host', 'content-length', 'expect', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded']);

/** Forwarding headers other than the `X-Forwarded-*` family (see {@link isForwardingHeader}). */
const FORWARDING = new Set(['forwarded', 'x-forwarded', 'x-real-ip', 'x-client-ip', 'true-client-ip', 'front-end-https', 'x-url-scheme']);

/**
 * True for a header by which a proxy tells its upstream about the client's
 * connection (address, scheme, host, port, path prefix): `Forwarded`, every
 * `X-Forwarded-*` header (`-For`, `-Proto`, `-Host`, `-Port`, `-Prefix`, `-Ssl`,
 * `-Server`, `-Scheme`, `-Uri`, ...) and `X-Forwarded`, `X-Real-IP`,
 * `X-Client-IP`, `True-Client-IP`, `Front-End-Https`, `X-Url-Scheme`. balance()
 * forwards them only from a trusted proxy. `name` is lowercase.
 * @internal
 */
export function isForwardingHeader(name: string): boolean {
  return name.startsWith('x-forwarded-') || FORWARDING.has(name);
}

/**
 * The address of the peer that sent `ex`'s request: its socket's, or, for a request that goes on
 * after the client got its answer (cache()'s background update), the one its connection had.
 */
function peerAddress(ex: Exchange): string {
  return ex.clientConnection?.remoteAddress ?? ex.req.socket?.remoteAddress ?? '';
}

/** Names listed in a Connection header, lowercased. */
function connectionTokens(raw: readonly string[]): Set<string> | undefined {
  let tokens: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 10 && raw[i]!.toLowerCase() === 'connection') {
      for (const t of raw[i + 1]!.split(',')) {
        const name = t.trim().toLowerCase();
        if (name !== '') (tokens ??= new Set()).add(name);
      }
    }
  }
  return tokens;
}

/** Forwarding settings compiled by balance(). @internal */
export interface ForwardingPolicy {
  trust: TrustTest;
  xForwarded: boolean;
  forwarded: boolean;
  /** 'upstream' (nginx `$proxy_host`), 'client' (the request's Host) or a fixed value. */
  host: string;
  /**
   * Forward the client's headers whose names contain `_` (nginx `underscores_in_headers on`);
   * absent or false, they are dropped (nginx's default). balance()'s `underscoresInHeaders`.
   */
  underscores?: boolean | undefined;
}

/** The forwarding options balance() and upgrade() share, as they are named there. @internal */
export const FORWARDING_OPTIONS = ['trustProxy', 'xForwarded', 'forwarded', 'host'] as const;

/** The forwarding options as a factory takes them. @internal */
export interface ForwardingOptions {
  trustProxy?: TrustProxy | undefined;
  xForwarded?: boolean | undefined;
  forwarded?: boolean | undefined;
  host?: string | undefined;
}

/** Validates and compiles the forwarding options (InvalidOptionError naming the option). @internal */
export function forwardingPolicy(options: ForwardingOptions): ForwardingPolicy {
  return {
    trust: compileTrust(options.trustProxy, 'trustProxy'),
    xForwarded: booleanOption(options.xForwarded, 'xForwarded', true),
    forwarded: booleanOption(options.forwarded, 'forwarded', true),
    host: stringOption(options.host, 'host', 'upstream', { pattern: /^[^\r\n\0]+$/, expected: '"upstream", "client" or a host value' }),
  };
}

/**
 * Resolves the client address and scheme from trusted proxies (nginx realip with
 * `real_ip_recursive on`): walking X-Forwarded-For from the right, trusted hops
 * are skipped; the first untrusted address is the client. An entry that is not
 * an IP address (optionally with a port, see {@link forwardedAddress}) stops the
 * walk: the client is then the last valid address seen. Returns whether the
 * peer is a trusted proxy (pass it on to {@link upstreamRequestHeaders}).
 * @internal
 */
export function resolveClient(ex: Exchange, trust: TrustTest): boolean {
  const req = ex.req;
  const peer = peerAddress(ex);
  if (!trust(peer)) {
    ex.clientAddress = plainAddress(peer);
    return false;
  }
  const chain = listHeader(req, 'x-forwarded-for');
  let client = plainAddress(peer);
  for (let i = chain.length - 1; i >= 0; i--) {
    const address = forwardedAddress(chain[i]!);
    // As nginx's realip: an entry that is not an address ends the walk, and the
    // client is the last valid address seen (a trusted proxy's).
    if (address === undefined) break;
    client = address;
    if (!trust(address)) break;
  }
  ex.clientAddress = client;
  // The rightmost value is the one the nearest (trusted) proxy added.
  const proto = listHeader(req, 'x-forwarded-proto').at(-1)?.toLowerCase();
  if (proto === 'http' || proto === 'https') ex.scheme = proto;
  return true;
}

/**
 * True when `req.headers[name]` is still what the client sent: node keeps a
 * repeated field's first value or joins them with ", " ("; " for Cookie). Any
 * other value was set or replaced by a middleware. `name` is lowercase.
 */
function sentByClient(req: IncomingMessage, name: string): boolean {
  const sent: string[] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === name.length && raw[i]!.toLowerCase() === name) sent.push(raw[i + 1]!);
  if (sent.length === 0) return false;
  const value = req.headers[name];
  if (value === undefined) return true;
  if (Array.isArray(value)) return value.length === sent.length && value.every((v, i) => v === sent[i]);
  const text = String(value);
  return text === sent[0] || text === sent.join(', ') || text === sent.join('; ');
}

function listHeader(req: IncomingMessage, name: string): string[] {
  const v = req.headers[name];
  if (v === undefined) return [];
  const text = Array.isArray(v) ? v.join(',') : v;
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** The last host forwardedNode() quoted, and its form: requests mostly come for one host. */
let lastNode = '';
let lastNodeForm = '';

function forwardedNode(value: string): string {
  if (value === lastNode) return lastNodeForm;
  lastNode = value;
  lastNodeForm = TOKEN.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`;
  return lastNodeForm;
}

/**
 * Builds the upstream request headers as a flat `[name, value, ...]` list: the
 * request's headers minus hop-by-hop ones (and those the client named in
 * Connection) and, unless the peer is a trusted proxy, minus the client's
 * forwarding headers ({@link isForwardingHeader}), with the exchange's
 * `upstreamHeaderChanges` applied (removed, or replaced and sent after the
 * request's own), minus the client's headers whose names contain `_` unless
 * `policy.underscores`; plus Host, X-Forwarded-*, Forwarded and framing set by the gateway
 * (framing last). A Cookie header given as several values goes as one line (RFC 6265 §5.4).
 * `trusted`: whether the peer is a trusted proxy, as {@link resolveClient} found it.
 * @internal
 */
export function upstreamRequestHeaders(
  ex: Exchange,
  policy: ForwardingPolicy,
  authority: string,
  framing: readonly string[],
  auth: string | undefined,
  trusted: boolean = policy.trust(peerAddress(ex)),
): string[] {
  const req = ex.req;
  // From req.headers rather than rawHeaders, so headers a middleware set or
  // removed before balance() (an auth layer's X-User, say) are what goes upstream.
  const headers = req.headers;
  const connection = headers.connection;
  let drop = connection === undefined ? undefined : connectionTokens(['connection', connection]);
  if (drop !== undefined) {
    // The client's Connection header may only remove headers as the client sent them,
    // never one a middleware added or replaced (a client could otherwise strip an auth layer's header).
    for (const name of drop) if (!sentByClient(req, name)) drop.delete(name);
    if (drop.size === 0) drop = undefined;
  }
  const changes = ex.upstreamHeaderChanges;
  const out: string[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    // HTTP/2 pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) are the request line's and Host's parts.
    if (lower.charCodeAt(0) === 58 /* ':' */ || HOP_BY_HOP.has(lower) || REQUEST_OWN.has(lower) || drop?.has(lower)) continue;
    if (changes?.has(lower)) continue;
    // A forwarding header from an untrusted client is dropped; one a middleware set is kept.
    if (!trusted && isForwardingHeader(lower) && sentByClient(req, lower)) continue;
    // As nginx's `underscores_in_headers off`: `X_User` is not sent where a CGI-style upstream would
    // read it as `X-User` (a middleware's own such header goes on).
    if (policy.underscores !== true && lower.includes('_') && sentByClient(req, lower)) continue;
    if (auth !== undefined && lower === 'authorization') continue;
    if (!Array.isArray(value)) out.push(lower, String(value));
    else if (lower === 'cookie') out.push(lower, value.join('; '));
    else for (const v of value) out.push(lower, v);
  }
  // A middleware's own values: neither the client's Connection header nor the trust rules apply.
  if (changes !== undefined) for (const [name, value] of changes) if (value !== null && !HOP_BY_HOP.has(name) && !REQUEST_OWN.has(name)) out.push(name, value);
  const clientHost = requestHost(req) ?? '';
  const host = policy.host === 'upstream' ? authority : policy.host === 'client' ? clientHost || authority : policy.host;
  out.push('host', host);
  const peer = plainAddress(peerAddress(ex));
  if (policy.xForwarded) {
    const prior = trusted ? listHeader(req, 'x-forwarded-for') : [];
    prior.push(peer);
    out.push('x-forwarded-for', prior.join(', '));
    out.push('x-forwarded-proto', ex.scheme);
    const fwdHost = trusted ? listHeader(req, 'x-forwarded-host').at(-1) : undefined;
    if (fwdHost !== undefined || clientHost !== '') out.push('x-forwarded-host', fwdHost ?? clientHost);
  }
  if (policy.forwarded) {
    const prior = trusted && typeof req.headers.forwarded === 'string' ? `${req.headers.forwarded}, ` : '';
    const forNode = peer.includes(':') ? `"[${peer}]"` : peer;
    let element = `for=${forNode}`;
    if (clientHost !== '') element += `;host=${forwardedNode(clientHost)}`;
    element += `;proto=${ex.scheme}`;
    out.push('forwarded', prior + element);
  }
  if (auth !== undefined) out.push('authorization', `Basic ${Buffer.from(auth).toString('base64')}`);
  for (const f of framing) out.push(f);
  return out;
}

/**
 * Response headers nginx's proxy module hides from the client by default (`proxy_hide_header`):
 * instructions to the proxy, not to the client. nginx also hides the upstream's Date and Server to
 * send its own; switchyard passes those on.
 */
export const DEFAULT_HIDDEN_HEADERS: readonly string[] = Object.freeze([
  'x-accel-expires',
  'x-accel-redirect',
  'x-accel-limit-rate',
  'x-accel-buffering',
  'x-accel-charset',
  'x-pad',
]);

/** What balance() does to the upstream's response headers on their way to the client. @internal */
export interface ResponsePolicy {
  /** Lowercase names never passed on (nginx `proxy_hide_header`, less `proxy_pass_header`). */
  readonly hidden: ReadonlySet<string>;
  /** Location and Refresh go through {@link RedirectRewriter} (nginx `proxy_redirect`). */
  readonly redirects: boolean;
  /**
   * The lengths of the names that need a look (hop-by-hop, hidden, Location and Refresh): a name of
   * another length is passed on without lowercasing it.
   */
  readonly lengths: ReadonlySet<number>;
}

/** Rewrites a Location or Refresh value (nginx `proxy_redirect`). @internal */
export interface RedirectRewriter {
  /** The value as the client gets it: `value`, or a rewritten one. `refresh`: the value is a Refresh header's. */
  rewriteRedirect(value: string, refresh: boolean): string;
}

/**
 * The response policy for `hide` (names hidden besides the defaults), `pass` (default ones let
 * through) and `redirects` (Location and Refresh rewritten). @internal
 */
export function responsePolicy(hide: readonly string[], pass: readonly string[], redirects: boolean): ResponsePolicy {
  const hidden = new Set(DEFAULT_HIDDEN_HEADERS);
  for (const name of pass) hidden.delete(name.toLowerCase());
  for (const name of hide) hidden.add(name.toLowerCase());
  const lengths = new Set([...HOP_BY_HOP, ...hidden].map((n) => n.length));
  if (redirects) lengths.add(8).add(7);
  return { hidden, redirects, lengths };
}

/** nginx's defaults: X-Accel-* and X-Pad hidden, redirects rewritten. @internal */
export const DEFAULT_RESPONSE_POLICY: ResponsePolicy = responsePolicy([], [], true);

/**
 * Filters the upstream response headers for the client: drops hop-by-hop
 * headers and those the response's Connection header names (but keeps Upgrade
 * on a 426, which must carry it: RFC 9110 §15.5.22), drops the hidden ones
 * (`policy`), and has `rewriter` rewrite Location and Refresh when the policy
 * says so. Takes the list as undici gives it (Buffers) or as strings; returns a
 * flat string list for `writeHead`, names as the server wrote them.
 * @internal
 */
export function clientResponseHeaders(
  raw: readonly (Buffer | string)[],
  status = 200,
  policy: ResponsePolicy = DEFAULT_RESPONSE_POLICY,
  rewriter?: RedirectRewriter,
): string[] {
  let drop: Set<string> | undefined;
  const out: string[] = [];
  const lengths = policy.lengths;
  for (let i = 0; i < raw.length; i += 2) {
    const name = text(raw[i]!);
    if (lengths.has(name.length)) {
      const lower = name.toLowerCase();
      if (HOP_BY_HOP.has(lower)) {
        if (lower === 'connection') drop = connectionOptions(text(raw[i + 1]!), drop);
        if (!(status === 426 && lower === 'upgrade')) continue;
      } else if (policy.hidden.has(lower)) {
        continue;
      } else if (rewriter !== undefined && policy.redirects && (lower === 'location' || lower === 'refresh')) {
        out.push(name, rewriter.rewriteRedirect(text(raw[i + 1]!), lower === 'refresh'));
        continue;
      }
    }
    out.push(name, text(raw[i + 1]!));
  }
  if (drop === undefined) return out;
  const kept: string[] = [];
  for (let i = 0; i < out.length; i += 2) if (!drop.has(out[i]!.toLowerCase())) kept.push(out[i]!, out[i + 1]!);
  return kept;
}

/**
 * Adds the names a response's Connection header lists to `drop`, less the hop-by-hop ones (dropped
 * anyway): the usual `Connection: keep-alive` then leaves nothing to filter a second time.
 */
function connectionOptions(value: string, drop: Set<string> | undefined): Set<string> | undefined {
  // The common single token, without splitting.
  if (value.length === 10 && value.toLowerCase() === 'keep-alive') return drop;
  for (const t of value.split(',')) {
    const name = t.trim().toLowerCase();
    if (!HOP_BY_HOP.has(name)) (drop ??= new Set()).add(name);
  }
  return drop;
}

function text(v: Buffer | string): string {
  return typeof v === 'string' ? v : v.toString('latin1');
}

/** Fields a trailer section may not carry on to the client: framing, routing and the hop-by-hop ones. */
const NOT_TRAILERS = new Set([...HOP_BY_HOP, 'content-length', 'host', 'content-type', 'content-encoding', 'content-range', 'set-cookie']);

/**
 * The upstream response's trailer fields (HTTP/1.1's `[name, value, ...]` list or HTTP/2's object)
 * for `res.addTrailers()`, without those a trailer may not carry; undefined when none is left.
 * @internal
 */
export function trailerFields(
  trailers: readonly (Buffer | string)[] | Readonly<Record<string, string | string[]>>,
): Record<string, string | string[]> | undefined {
  let out: Record<string, string | string[]> | undefined;
  const add = (name: string, value: string | string[]): void => {
    const lower = name.toLowerCase();
    if (lower.charCodeAt(0) === 58 /* ':' */ || NOT_TRAILERS.has(lower)) return;
    out ??= {};
    const prior = Object.hasOwn(out, lower) ? out[lower] : undefined;
    const next = prior === undefined ? value : ([] as string[]).concat(prior, value);
    Object.defineProperty(out, lower, { value: next, enumerable: true, writable: true, configurable: true });
  };
  if (Array.isArray(trailers)) {
    const list = trailers as readonly (Buffer | string)[];
    for (let i = 0; i + 1 < list.length; i += 2) add(text(list[i]!), text(list[i + 1]!));
  } else {
    for (const [name, value] of Object.entries(trailers)) if (value !== undefined) add(name, value);
  }
  return out;
}
