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
 * The store key of a request that may be answered without an exchange record (the fast HIT path):
 * the default key, a GET (or converted HEAD) whose target nothing rewrote, with a valid Host, no
 * body and no trusted proxy to resolve. `undefined` when the request is not one: it takes the
 * general path. A key stored earlier came from a valid request target, so the same target needs no
 * second check.
 */
export function fastKey(settings: CacheSettings, req: IncomingMessage): string | undefined {
  const method = req.method;
  if (method === undefined || !keyedAsGet(method, settings.convertHead) || hasExchange(req)) return undefined;
  const original = (req as IncomingMessage & { originalUrl?: unknown }).originalUrl;
  const target = typeof original === 'string' ? original : req.url;
  if (target === undefined || target.charCodeAt(0) !== 47 /* '/' */) return undefined;
  const host = requestHost(req);
  if (!validHost(host) || (!settings.cacheBodies && hasBody(req)) || settings.trust(req.socket?.remoteAddress ?? '') || mayHaveFacts(req)) return undefined;
  const scheme = (req.socket as { encrypted?: boolean } | null)?.encrypted === true ? 'https' : 'http';
  // The default key as keyOf() makes it: the same origin, target and escaping.
  return escapeKey(originKey(scheme, keyHost(host, req), target));
}
