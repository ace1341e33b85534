/**
 * How `cache()` keeps a response in the store: the entry under the request's key with its freshness
 * in `meta`, or, when the response has `Vary`, a marker under the key naming the headers it varies
 * on and one entry per variant under `<key>\nV:<values>`.
 * @module
 */
import type { IncomingMessage } from 'node:http';
import { requestHost, type Exchange } from '../core/exchange.ts';
import { isForwardingHeader } from '../proxy/headers.ts';
import type { TrustTest } from '../proxy/trust.ts';
import type { CacheEntry, CacheStore } from '../store/index.ts';
import { expectedForwarding, listValue } from './forwarding.ts';
import { headerValues, type Freshness } from './policy.ts';

/** Not kept in an entry: per-connection or per-response framing, and cookies (never shared). */
export const NOT_STORED: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'set-cookie',
  'proxy-connection',
  'trailer',
  'upgrade',
]);

/**
 * The header the cache reads and nginx hides from the client by default (`proxy_hide_header`):
 * dropped from the response a MISS lets through, from stored entries, and from a REVALIDATED answer.
 * Always, even when balance()'s `passHeaders` names it (nginx `proxy_pass_header`), which the cache
 * cannot see.
 */
export const CACHE_ONLY = 'x-accel-expires';

/** A flat header list without {@link CACHE_ONLY}. */
export function withoutCacheOnly(headers: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() !== CACHE_ONLY) out.push(headers[i]!, headers[i + 1]!);
  return out;
}

/** An entry's freshness, kept in its `meta`. Times in milliseconds. */
export interface Meta {
  /** Fresh while the clock is below this. */
  expiresAt: number;
  /** `stale-while-revalidate` window after `expiresAt`. */
  swr: number;
  /** `stale-if-error` window after `expiresAt`. */
  sie: number;
  /** The request headers the response varies on (lowercase), when it has `Vary`. */
  vary?: string[] | undefined;
}

/** The freshness of an entry, or `undefined` when its `meta` has none (not one of the cache's). */
export function metaOf(entry: CacheEntry): Meta | undefined {
  const m = entry.meta as Partial<Meta> | undefined;
  if (m === undefined || typeof m.expiresAt !== 'number') return undefined;
  return {
    expiresAt: m.expiresAt,
    swr: typeof m.swr === 'number' ? m.swr : 0,
    sie: typeof m.sie === 'number' ? m.sie : 0,
    ...(Array.isArray(m.vary) ? { vary: m.vary.map(String) } : {}),
  };
}

/** Whether a shared cache may answer a request with `Authorization` from `entry` (RFC 9111 §3.5). */
export function sharedAllowed(entry: CacheEntry): boolean {
  const cc = headerValues(entry.headers, 'cache-control').join(',').toLowerCase();
  return /(?:^|,)\s*(?:public|s-maxage\s*=|must-revalidate)/.test(cc);
}

/** A fresh entry (not a Vary marker) this request may be answered with at `t`: the test of a HIT. */
export function servableNow(entry: CacheEntry, req: IncomingMessage, t: number): boolean {
  const meta = entry.meta as (Partial<Meta> & { variants?: boolean }) | undefined;
  if (meta === undefined || typeof meta.expiresAt !== 'number' || t >= meta.expiresAt || meta.variants === true) return false;
  return req.headers.authorization === undefined || sharedAllowed(entry);
}

/**
 * The store key of a Vary variant: the values of the named request headers, where a forwarding
 * header (X-Forwarded-*, Forwarded) takes the value in `sent` (what the upstream got) when given.
 */
function variantKey(base: string, names: readonly string[], req: IncomingMessage, sent: readonly string[] | undefined): string {
  const values = names.map((n) => {
    if (sent !== undefined && isForwardingHeader(n)) return listValue(sent, n);
    // An HTTP/2 request's host is its :authority.
    if (n === 'host') return requestHost(req) ?? '';
    const v = req.headers[n];
    return Array.isArray(v) ? v.join(', ') : (v ?? '');
  });
  return `${base}\nV:${JSON.stringify(values)}`;
}

/** The entry a request finds under `base`, through a Vary marker to its variant. */
export async function lookupEntry(store: CacheStore, base: string, ex: Exchange, trust: TrustTest): Promise<CacheEntry | undefined> {
  const entry = await store.get(base);
  if (entry === undefined) return undefined;
  const meta = metaOf(entry);
  if (meta?.vary !== undefined && entry.meta?.['variants'] === true) {
    // Variants stored from what balance() sent are looked up by what it would send.
    const sent = entry.meta['sent'] === true && meta.vary.some(isForwardingHeader) ? expectedForwarding(ex, trust) : undefined;
    return store.get(variantKey(base, meta.vary, ex.req, sent));
  }
  return entry;
}

/** What {@link saveEntry} needs of the cache's settings. */
export interface SaveSettings {
  readonly now: () => number;
  /** The cache's status header: never stored. */
  readonly statusHeader: string | undefined;
  /** How long an expired entry is kept (for STALE, UPDATING and revalidation), in milliseconds. */
  readonly retention: number;
}

/** A store write of a fill: the store key, the entry and its TTL in milliseconds (what other instances' memory stores take too). */
export type Written = readonly [key: string, entry: CacheEntry, ttl: number];

/**
 * Stores a complete response under `base` (and its Vary variant); resolves whether the store took
 * it. Each write is added to `written` when given. `head`: the response to a HEAD sent upstream as
 * HEAD (`convertHead: false`), kept with its Content-Length and marked `head` in its meta.
 */
export async function saveEntry(
  store: CacheStore,
  settings: SaveSettings,
  base: string,
  ex: Exchange,
  status: number,
  headers: readonly string[],
  body: Buffer,
  f: Freshness,
  written?: Written[],
  head = false,
): Promise<boolean> {
  const statusHeader = settings.statusHeader?.toLowerCase();
  const kept: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!.toLowerCase();
    if ((!NOT_STORED.has(n) || (head && n === 'content-length')) && n !== statusHeader && n !== CACHE_ONLY) kept.push(headers[i]!, headers[i + 1]!);
  }
  const t = settings.now();
  const meta: Meta = { expiresAt: f.expiresAt, swr: f.staleWhileRevalidate, sie: f.staleIfError };
  const ttl = Math.max(1, f.expiresAt - t) + Math.max(settings.retention, f.staleWhileRevalidate, f.staleIfError);
  let key = base;
  const markers: Written[] = [];
  if (f.vary.length > 0) {
    meta.vary = [...f.vary];
    // Forwarding headers vary by what balance() sent upstream, not by what the client sent.
    const sent = ex.upstreamRequestHeaders;
    const marker: CacheEntry = {
      status: 204,
      headers: [],
      body: Buffer.alloc(0),
      storedAt: t,
      meta: { expiresAt: f.expiresAt, swr: 0, sie: 0, vary: [...f.vary], variants: true, sent: sent !== undefined },
    };
    if (await store.set(base, marker, ttl)) markers.push([base, marker, ttl]);
    key = variantKey(base, f.vary, ex.req, sent);
  }
  const entry: CacheEntry = { status, headers: kept, body, storedAt: t, meta: { ...meta, ...(head ? { head: true } : {}) } };
  const stored = await store.set(key, entry, ttl);
  if (stored) written?.push(...markers, [key, entry, ttl]);
  return stored;
}

/** The stored headers updated by a 304's (RFC 9111 §4.3.4), framing headers excepted. */
export function mergeHeaders(stored: readonly string[], fresh: readonly string[]): string[] {
  const replaced = new Set<string>();
  for (let i = 0; i < fresh.length; i += 2) {
    const n = fresh[i]!.toLowerCase();
    if (!NOT_STORED.has(n) && n !== 'content-type' && n !== 'content-encoding') replaced.add(n);
  }
  const out: string[] = [];
  for (let i = 0; i < stored.length; i += 2) if (!replaced.has(stored[i]!.toLowerCase())) out.push(stored[i]!, stored[i + 1]!);
  for (let i = 0; i < fresh.length; i += 2) if (replaced.has(fresh[i]!.toLowerCase())) out.push(fresh[i]!, fresh[i + 1]!);
  return out;
}
