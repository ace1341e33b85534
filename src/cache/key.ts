/**
 * `cache()`'s store keys: the request's key (the user's `key`, or `scheme://host` and the upstream
 * target), escaped, with the cache's own suffixes (the method, a trusted proxy's forwarding facts,
 * a Vary variant) after it. The fast HIT path and the general path make the default key with the
 * same function, {@link originKey}.
 * @module
 */
import type { IncomingMessage } from 'node:http';
import { InvalidOptionError } from '../core/errors.ts';
import { hasExchange, requestHost, upstreamTarget, type Exchange } from '../core/exchange.ts';
import { validHost } from '../core/http.ts';
import { factsSuffix, hasBody, keyHost, mayHaveFacts, originKey, type Origin } from './forwarding.ts';
import type { CacheSettings } from './options.ts';

/** Store keys: the user's key with `%` and LF escaped, so the cache's own suffixes cannot be forged. */
export function escapeKey(key: string): string {
  return key.indexOf('%') === -1 && key.indexOf('\n') === -1 ? key : key.replace(/%/g, '%25').replace(/\n/g, '%0A');
}

/** Whether a request with `method` is keyed as a GET: a GET, or a HEAD fetched as GET (`convertHead`). */
export function keyedAsGet(method: string, convertHead: boolean): boolean {
  return method === 'GET' || (method === 'HEAD' && convertHead);
}

/**
 * The request's key as the `key` option computes it, before it is escaped and suffixed: the user's
 * key, or the default one, {@link originKey} of the scheme and host the upstream is told and the
 * target it gets. Throws what the user's key function throws, or an {@link InvalidOptionError}
 * when it returns something else than a string.
 */
export function keyOf(settings: CacheSettings, req: IncomingMessage, ex: Exchange, origin: Origin): string {
  if (settings.key === undefined) return originKey(origin.scheme, origin.host, upstreamTarget(ex));
  const key = settings.key(req, ex);
  if (typeof key !== 'string') throw new InvalidOptionError('key', 'a function returning a string', key);
  return key;
}

/**
 * The store key of a request: its key ({@link keyOf}) escaped, then the method when the request is
 * not keyed as a GET, then what the upstream is told of its origin beyond scheme and host
 * (`origin.facts`).
 */
export function requestKey(settings: CacheSettings, req: IncomingMessage, ex: Exchange, origin: Origin, method: string): string {
  let base = escapeKey(keyOf(settings, req, ex, origin));
  if (!keyedAsGet(method, settings.convertHead)) base += `\nM:${method}`;
  return base + factsSuffix(origin);
}

/**
 * Whether a request may be answered without an exchange record (the fast HIT path): a GET (or
 * converted HEAD) whose target nothing rewrote. Its target when it may, else `undefined`.
 */
function fastTarget(settings: CacheSettings, req: IncomingMessage): string | undefined {
  const method = req.method;
  if (method === undefined || !keyedAsGet(method, settings.convertHead) || hasExchange(req)) return undefined;
  const original = (req as IncomingMessage & { originalUrl?: unknown }).originalUrl;
  const target = typeof original === 'string' ? original : req.url;
  if (target === undefined || target.charCodeAt(0) !== 47 /* '/' */) return undefined;
  return target;
}

/** Whether the request keeps out of the fast HIT path: a body, a trusted proxy to resolve, forwarding facts to key. */
function notFast(settings: CacheSettings, req: IncomingMessage): boolean {
  return (!settings.cacheBodies && hasBody(req)) || (!settings.trustsNobody && settings.trust(req.socket?.remoteAddress ?? '')) || mayHaveFacts(req);
}

/** Whether the request came over TLS (the scheme of its key). */
function isHttps(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean } | null)?.encrypted === true;
}

/** How many keys {@link KnownKeys} holds before it forgets them all. */
export const MAX_KNOWN_KEYS = 8192;

/**
 * The fast HIT path's keys made once: per scheme, Host (as the client sent it) and target, the
 * default key with the store's prefix in front (what the memory store holds
 * it under). A Host seen for the first time is checked once; at most {@link MAX_KNOWN_KEYS} keys
 * are kept, then they are all forgotten and made again as requests come.
 */
export class KnownKeys {
  readonly #http = new Map<string, Map<string, string>>();
  readonly #https = new Map<string, Map<string, string>>();
  readonly #prefix: string;
  #size = 0;

  constructor(prefix: string) {
    this.#prefix = prefix;
  }

  /** How many keys are held. */
  get size(): number {
    return this.#size;
  }

  /**
   * The prefixed store key of a request that may take the fast HIT path, else `undefined`: the
   * default key of a GET (or converted HEAD) whose target nothing rewrote, with a valid Host, no
   * body and no trusted proxy to resolve (the general path takes the others). A key stored earlier
   * came from a valid request target, so the same target needs no second check.
   */
  storeKey(settings: CacheSettings, req: IncomingMessage): string | undefined {
    const target = fastTarget(settings, req);
    if (target === undefined) return undefined;
    const host = requestHost(req);
    const https = isHttps(req);
    // No Host: the key has the connection's local address.
    if (host === undefined) return notFast(settings, req) ? undefined : this.#make(https, host, req, target);
    const hosts = https ? this.#https : this.#http;
    let targets = hosts.get(host);
    let key = targets?.get(target);
    if (key === undefined) {
      if (targets === undefined && !validHost(host)) return undefined;
      if (this.#size >= MAX_KNOWN_KEYS) {
        this.#http.clear();
        this.#https.clear();
        this.#size = 0;
        targets = undefined;
      }
      if (targets === undefined) {
        targets = new Map();
        hosts.set(host, targets);
      }
      key = this.#make(https, host, req, target);
      targets.set(target, key);
      this.#size++;
    }
    return notFast(settings, req) ? undefined : key;
  }

  /** The default key as keyOf() makes it (the same origin, target and escaping), with the store's prefix. */
  #make(https: boolean, host: string | undefined, req: IncomingMessage, target: string): string {
    return this.#prefix + escapeKey(originKey(https ? 'https' : 'http', keyHost(host, req), target));
  }
}
