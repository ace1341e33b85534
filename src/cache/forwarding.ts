// What the upstream is told about where a request comes from, and what the cache keys of it.
// balance() tells the upstream a scheme and a host (X-Forwarded-Proto, X-Forwarded-Host, Forwarded)
// and passes on a trusted proxy's other forwarding headers (X-Forwarded-Prefix, -Port, ...). An entry
// may only be shared by requests for which the upstream was told the same things, so the key is
// built from those values, and a response to a request that was told otherwise is not stored.
import type { IncomingMessage } from 'node:http';
import { requestHost, type Exchange } from '../core/exchange.ts';
import { validHost } from '../core/http.ts';
import { http2HasBody } from '../core/http2.ts';
import { isForwardingHeader, resolveClient, upstreamRequestHeaders, type ForwardingPolicy } from '../proxy/headers.ts';
import type { TrustTest } from '../proxy/trust.ts';

/** What a request's key is built from: the origin the upstream is told, and a trusted proxy's other forwarding headers. */
export interface Origin {
  /** `http` or `https`: the connection's, or a trusted X-Forwarded-Proto (the exchange's `scheme`). */
  readonly scheme: string;
  /** The Host, or a trusted X-Forwarded-Host, lowercase and with its port; the local address when there is none. */
  readonly host: string;
  /** Whether the peer is a trusted proxy. */
  readonly trusted: boolean;
  /**
   * The other forwarding values the upstream will be told, keyed too, sorted by name: from a trusted
   * proxy, `host` (the Host header, when its X-Forwarded-Host names another), `forwarded` (its
   * Forwarded's `host=` and `proto=` parameters) and headers such as X-Forwarded-Prefix; from anyone,
   * such headers a middleware set (balance() keeps those). Usually empty.
   */
  readonly facts: ReadonlyArray<readonly [string, string]>;
}

const NO_FACTS: ReadonlyArray<readonly [string, string]> = Object.freeze([]);

// Forwarding headers (balance()'s isForwardingHeader) that carry the client's address: not keyed (an
// upstream that answers by client address says so with Vary), nor checked.
const ADDRESS_HEADERS = new Set(['x-forwarded-for', 'x-real-ip', 'x-client-ip', 'true-client-ip', 'x-forwarded']);

/** Forwarding headers keyed as facts: all but the client-address ones and those the origin has. */
function isFact(name: string): boolean {
  return isForwardingHeader(name) && !ADDRESS_HEADERS.has(name) && name !== 'x-forwarded-proto' && name !== 'x-forwarded-host';
}

/**
 * True when the request carries a forwarding header the key could depend on (one a middleware set, or
 * any from a trusted peer): the fast HIT path then steps aside for the general one, which keys it.
 */
export function mayHaveFacts(req: IncomingMessage): boolean {
  for (const name in req.headers) if (isFact(name)) return true;
  return false;
}

/** True when the client sent a header of that name (else a middleware set it). `name` is lowercase. */
function fromClient(req: IncomingMessage, name: string): boolean {
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === name.length && raw[i]!.toLowerCase() === name) return true;
  return false;
}

/** The host part of a key: the Host header lowercase with its port, else the local address. */
export function keyHost(host: string | undefined, req: IncomingMessage): string {
  if (host !== undefined && host !== '') return host.toLowerCase();
  const local = req.socket?.localAddress ?? '';
  return local.includes(':') ? `[${local}]` : local;
}

/**
 * The default key: `scheme://host` and the request target. A scheme has no `:` and a valid host no
 * `/`, so no two pairs give one key (`https` + `x.example` is not `http` + `sx.example`).
 */
export function originKey(scheme: string, host: string, target: string): string {
  return `${scheme}://${host}${target}`;
}

function lastOf(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  const text = Array.isArray(value) ? value.join(',') : value;
  let last: string | undefined;
  for (const part of text.split(',')) {
    const v = part.trim();
    if (v !== '') last = v;
  }
  return last;
}

const FORWARDED_PARAM = /(?:^|[;,])\s*(host|proto)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)/gi;

/** The `host=` and `proto=` parameters of a Forwarded value, in order, lowercase and unquoted. */
function forwardedParams(value: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const m of value.matchAll(FORWARDED_PARAM)) {
    let v = m[2]!;
    if (v.startsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    out.push([m[1]!.toLowerCase(), v.toLowerCase()]);
  }
  return out;
}

/**
 * Resolves what the key of `ex`'s request is built from. From a trusted peer, the scheme and client
 * address follow its X-Forwarded-Proto and X-Forwarded-For (as balance() resolves them, on the
 * exchange) and the host its X-Forwarded-Host (`ex.forwardedHost`, read by `$host`). Undefined when
 * a host is not a host name: such a request is not cached.
 */
export function resolveOrigin(ex: Exchange, trust: TrustTest): Origin | undefined {
  const req = ex.req;
  const received = requestHost(req);
  if (!validHost(received)) return undefined;
  const trusted = trust(req.socket?.remoteAddress ?? '');
  let host = received;
  let facts: Array<[string, string]> | undefined;
  if (trusted) {
    resolveClient(ex, trust);
    const named = lastOf(req.headers['x-forwarded-host']);
    if (named !== undefined) {
      if (!validHost(named)) return undefined;
      ex.forwardedHost = named;
      host = named;
      if (received !== undefined && received.toLowerCase() !== named.toLowerCase()) (facts ??= []).push(['host', received.toLowerCase()]);
    }
  }
  for (const name in req.headers) {
    const value = req.headers[name];
    if (value === undefined || !isFact(name)) continue;
    // From anyone else balance() drops the client's own (and sets Forwarded itself).
    if (!trusted && (name === 'forwarded' || fromClient(req, name))) continue;
    const text = Array.isArray(value) ? value.join(', ') : value;
    (facts ??= []).push(
      name === 'forwarded'
        ? [
            name,
            forwardedParams(text)
              .map(([k, v]) => `${k}=${v}`)
              .join(';'),
          ]
        : [name, text],
    );
  }
  facts?.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { scheme: ex.scheme, host: keyHost(host, req), trusted, facts: facts ?? NO_FACTS };
}

/** The store-key suffix for an origin's facts ('' when none): the cache's own, so it cannot be forged through a user's key. */
export function factsSuffix(origin: Origin): string {
  return origin.facts.length === 0 ? '' : `\nF:${JSON.stringify(origin.facts)}`;
}

/**
 * True unless balance() told the upstream another scheme, host or forwarding value than `origin`
 * has: X-Forwarded-Proto and X-Forwarded-Host must be its scheme and host, Forwarded's `proto=` and
 * `host=` among those keyed, and every other forwarding header but the client-address ones keyed
 * with its value. True when nothing was recorded (a handler other than balance() answered).
 */
export function toldAsKeyed(ex: Exchange, origin: Origin): boolean {
  const sent = ex.upstreamRequestHeaders;
  if (sent === undefined) return true;
  let others: Map<string, string> | undefined;
  for (let i = 0; i < sent.length; i += 2) {
    const name = sent[i]!.toLowerCase();
    if (!isForwardingHeader(name) || ADDRESS_HEADERS.has(name)) continue;
    const value = sent[i + 1]!;
    if (name === 'x-forwarded-proto' || name === 'x-forwarded-host') {
      const expected = name === 'x-forwarded-proto' ? origin.scheme : origin.host;
      for (const v of value.split(',')) if (v.trim().toLowerCase() !== expected) return false;
    } else if (name === 'forwarded') {
      if (!forwardedKeyed(value, origin)) return false;
    } else {
      others ??= new Map();
      const before = others.get(name);
      others.set(name, before === undefined ? value : `${before}, ${value}`);
    }
  }
  if (others !== undefined) {
    const keyed = new Map(origin.facts);
    for (const [name, value] of others) if (keyed.get(name) !== value) return false;
  }
  return true;
}

function forwardedKeyed(value: string, origin: Origin): boolean {
  const hosts = new Set([origin.host]);
  const protos = new Set([origin.scheme]);
  for (const [name, fact] of origin.facts) {
    if (name === 'host') hosts.add(fact);
    else if (name === 'forwarded') for (const [k, v] of forwardedParams(fact)) (k === 'host' ? hosts : protos).add(v);
  }
  for (const [k, v] of forwardedParams(value)) if (!(k === 'host' ? hosts : protos).has(v)) return false;
  return true;
}

/**
 * True when the request has a body: a Content-Length above 0, or a Transfer-Encoding; over HTTP/2,
 * a stream its HEADERS frame did not end and no Content-Length of 0.
 */
export function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  if (length !== undefined) return !/^\s*0*\s*$/.test(length);
  return http2HasBody(req);
}

/** The value of `name` in a flat header list, repeated ones joined with `, `; '' when absent. */
export function listValue(list: readonly string[], name: string): string {
  let out: string | undefined;
  for (let i = 0; i < list.length; i += 2) {
    if (list[i]!.toLowerCase() === name) out = out === undefined ? list[i + 1]! : `${out}, ${list[i + 1]!}`;
  }
  return out ?? '';
}

/**
 * The forwarding headers balance() would send for the request, as cache() sees it (its own
 * `trustProxy`, balance()'s defaults for the headers it sets): what a Vary lookup keys by before the
 * request went anywhere. Entries are keyed by what was actually sent, so a wrong guess only misses.
 */
export function expectedForwarding(ex: Exchange, trust: TrustTest): string[] {
  const policy: ForwardingPolicy = { trust, xForwarded: true, forwarded: true, host: 'client' };
  return upstreamRequestHeaders(ex, policy, '', [], undefined);
}
