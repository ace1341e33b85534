import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KeyvStoreAdapter } from 'keyv';
import { Keyv } from 'keyv';
import type { NextUpstreamCondition } from '../balance/index.ts';
import type { Middleware, Next } from '../core/chain.ts';
import { parseDuration, type Duration } from '../core/duration.ts';
import { BadRequestError, InvalidOptionError } from '../core/errors.ts';
import { TOKEN } from '../core/http.ts';
import { exchange, hasExchange, requestHost, setEarlyCacheStatus, upstreamTarget, type Exchange } from '../core/exchange.ts';
import { responseFinished, writeHead } from '../core/http2.ts';
import { compileTemplate } from '../core/variables.ts';
import { channels } from '../core/diagnostics.ts';
import { isForwardingHeader } from '../proxy/headers.ts';
import { compileTrust, type TrustProxy } from '../proxy/trust.ts';
import { expectedForwarding, factsSuffix, hasBody, keyHost, listValue, originKey, resolveOrigin, toldAsKeyed, validHost, type Origin } from './forwarding.ts';
import { compilePolicy, freshness, headerValues, type CachePolicy, type CachePolicyOptions, type Freshness } from './policy.ts';
import { connectionFacts, intercept, type ConnectionFacts } from './intercept.ts';
import { entryHeader, serveEntry, takeConditionals, type Conditionals } from './serve.ts';
import { CacheStore, createMemoryStore, DEFAULT_INACTIVE, type CacheEntry, type MemoryStoreOptions, type StoreBreakerOptions } from './store.ts';

/** Cache status of a request, as nginx's `$upstream_cache_status`. */
export type CacheStatus = 'MISS' | 'BYPASS' | 'EXPIRED' | 'STALE' | 'UPDATING' | 'REVALIDATED' | 'HIT';

/** nginx `proxy_cache_use_stale` conditions: balance()'s failure conditions, and `updating`. */
export type UseStaleCondition = Exclude<NextUpstreamCondition, 'non_idempotent' | 'off'> | 'updating';

/**
 * A per-request switch: a predicate, or nginx-style strings with variables that are "on" when any
 * of them evaluates to a non-empty value other than `"0"` (nginx `proxy_cache_bypass $cookie_nocache $arg_nocache`).
 */
export type RequestSwitch = ((req: IncomingMessage, ex: Exchange) => boolean) | string | readonly string[];

/** Options of {@link cache}. Times are {@link Duration}s: milliseconds or nginx strings such as `'10s'`. */
export interface CacheOptions extends CachePolicyOptions {
  /** Name of the cache in stats and in monitor() (nginx's `keys_zone` name). @default 'cache' */
  name?: string;
  /**
   * Where entries live: a {@link CacheStore}, a `Keyv`, or any keyv storage adapter such as
   * `new KeyvRedis(url)` to share one cache between gateway instances.
   * @default a bounded in-memory store (see `memory`)
   */
  store?: CacheStore | Keyv | KeyvStoreAdapter;
  /** Bounds of the default in-memory store: `maxEntries` (10000), `maxBytes` (64 MiB), `inactive` ('10m'). @default {} */
  memory?: MemoryStoreOptions;
  /** Namespace for keys in a shared store. @default 'switchyard' */
  namespace?: string;
  /** Longest a store operation may take before it counts as failed (the request then goes upstream). @default '1s' */
  storeTimeout?: Duration;
  /**
   * The store's circuit breaker: after `failures` (3) failures in a row the store is skipped at once
   * (requests go upstream, nothing waits for `storeTimeout`) and probed in the background, after
   * `probeDelay` ('500ms'), doubling up to `maxProbeDelay` ('10s'), until it answers. `false` turns it off.
   * Ignored when `store` is a {@link CacheStore} (give it its own `breaker`).
   * @default {}
   */
  storeBreaker?: StoreBreakerOptions | false;
  /**
   * The cache key: nginx variables (`'$scheme$host$uri$is_args$args'`) or a function. The default
   * is `scheme://host` followed by the request target exactly as it is sent upstream (rewrite()'s
   * result when it changed the URI, else the client's target), where scheme and host are those the
   * upstream is told: the Host header lowercase *with its port* (X-Forwarded-Host and Forwarded
   * carry the port), or a trusted proxy's X-Forwarded-Proto and X-Forwarded-Host (`trustProxy`).
   * nginx's `$host` has no port: a template with `$host` keys `a.example` and `a.example:6666`
   * together. Methods other than GET and HEAD get the method added to the key.
   * @default 'scheme://host:port' + upstream target
   */
  key?: string | ((req: IncomingMessage, ex: Exchange) => string);
  /**
   * Proxies whose X-Forwarded-Proto, X-Forwarded-Host (and X-Forwarded-For, for `$remote_addr`) are
   * believed, with the same meaning as balance()'s option: give both the same value. From such a
   * proxy, the default key and `$scheme` / `$host` follow the scheme and host it names, and its other
   * forwarding headers (X-Forwarded-Prefix, -Port, -Server, Forwarded's host and proto, ...) are keyed
   * too, since balance() passes them on. A response is never stored when balance() told the upstream
   * another scheme, host or forwarding header than the key was built from.
   * @default false
   */
  trustProxy?: TrustProxy;
  /**
   * Requests with a body (Content-Length above 0, or Transfer-Encoding) bypass the cache (BYPASS:
   * neither answered from it nor stored), since the body may change the answer and is not in the key.
   * `true` caches them too: then the key must account for the body (a `key` function reading what a
   * body parser put on the request, say), as nginx leaves to `proxy_cache_key`.
   * @default false
   */
  cacheBodies?: boolean;
  /** nginx `proxy_cache_methods`: GET and HEAD are always included. @default ['GET', 'HEAD'] */
  methods?: readonly string[];
  /** nginx `proxy_cache_convert_head`: fetch HEAD as GET so the answer can be cached. @default true */
  convertHead?: boolean;
  /** nginx `proxy_cache_min_uses`: store after this many requests for the key. @default 1 */
  minUses?: number;
  /** nginx `proxy_cache_bypass`: do not answer from the cache (the fresh response is still stored unless `noCache`). */
  bypass?: RequestSwitch;
  /** nginx `proxy_no_cache`: do not store the response. */
  noCache?: RequestSwitch;
  /** Response header carrying the cache status, or `false` for none. @default 'X-Cache-Status' */
  statusHeader?: string | false;
  /** nginx `proxy_cache_use_stale`. @default [] */
  useStale?: readonly UseStaleCondition[];
  /** nginx `proxy_cache_background_update`: answer STALE at once and update in the background. @default false */
  backgroundUpdate?: boolean;
  /** nginx `proxy_cache_lock`: one request populates a new entry, the others wait. @default false */
  lock?: boolean;
  /** nginx `proxy_cache_lock_timeout`: how long the others wait, then go upstream without storing. @default '5s' */
  lockTimeout?: Duration;
  /** nginx `proxy_cache_lock_age`: after this long one more request may go upstream to populate or update. @default '5s' */
  lockAge?: Duration;
  /** nginx `proxy_cache_revalidate`: revalidate expired entries with If-None-Match / If-Modified-Since. @default false */
  revalidate?: boolean;
  /** Largest body stored, in bytes; larger responses are delivered but not stored. @default 1 MiB */
  maxEntrySize?: number;
  /**
   * How long an entry stays in the store after it expires, for STALE, UPDATING and revalidation
   * (nginx keeps expired files until `inactive` removes them).
   * @default '10m'
   */
  staleRetention?: Duration;
  /**
   * NGINX Plus `proxy_cache_purge`: requests for which this is on purge their key (a key ending in
   * `*` purges by prefix) and get 204, or 404 when nothing was cached. Off unless set; guard it,
   * for example `(req) => req.method === 'PURGE' && isAdmin(req)`.
   */
  purge?: RequestSwitch;
  /**
   * Request headers that are not in the key but that some applications act on (URL, method or host
   * overrides). A request carrying one may be answered from the cache, but its response is never
   * stored, so it cannot change what other users get (web cache poisoning). Forwarding headers
   * listed (`X-Forwarded-Server`, `X-Forwarded-Scheme`) stop storing only when the upstream got them
   * unkeyed: balance() drops them unless they come from a trusted proxy, and from a proxy cache()
   * trusts (`trustProxy`) they are keyed.
   * Give `[]` to store such responses too (put the header in `key` when it matters).
   * @default DEFAULT_UNKEYED_HEADERS
   */
  unkeyedHeaders?: readonly string[];
  /** Clock in milliseconds, for tests (also given to the default memory store). @default Date.now */
  now?: () => number;
}

/** Responses and bytes for one cache status (NGINX Plus cache counters). */
export interface CacheCounter {
  responses: number;
  bytes: number;
}

/** A counter for statuses that go upstream: also what was written to the cache. */
export interface CacheWriteCounter extends CacheCounter {
  responses_written: number;
  bytes_written: number;
}

/** Statistics of one cache, shaped as NGINX Plus's `/api/9/http/caches/{name}`. */
export interface CacheStats {
  /** Bytes held (the in-memory store's count; 0 for external stores, which keep their own). */
  size: number;
  /** The in-memory store's `maxBytes` (undefined for external stores). */
  max_size: number | undefined;
  /** Always false: there is no loader. */
  cold: boolean;
  hit: CacheCounter;
  stale: CacheCounter;
  updating: CacheCounter;
  revalidated: CacheCounter;
  miss: CacheWriteCounter;
  expired: CacheWriteCounter;
  bypass: CacheWriteCounter;
}

/** The middleware returned by {@link cache}, with its store and controls. */
export interface CacheMiddleware extends Middleware {
  /** The cache's name (option `name`). */
  readonly name: string;
  /** The fail-open store; listen to its `'storeError'` event to see store failures. */
  readonly store: CacheStore;
  /**
   * Removes the entry of `key` (as the `key` option computes it, before the method is added),
   * every method's and every Vary variant's; a key ending in `*` removes every entry whose key
   * starts with the rest. Resolves how many store keys were removed.
   */
  purge(key: string): Promise<number>;
  /** A snapshot of the counters. */
  stats(): CacheStats;
  /** Zeroes the counters. */
  resetStats(): void;
  /**
   * Disconnects the store (closes a Redis client): store operations in flight get up to
   * `storeTimeout` (at most a second) to finish, then the client is closed whether Redis answers
   * or not. Never rejects.
   */
  close(): Promise<void>;
}

/** Default of {@link CacheOptions.unkeyedHeaders}: URL, method and host overrides some frameworks honour. */
export const DEFAULT_UNKEYED_HEADERS: readonly string[] = Object.freeze([
  'x-original-url',
  'x-rewrite-url',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-forwarded-server',
  'x-host',
  'x-forwarded-scheme',
]);
/** Default of {@link CacheOptions.trustProxy}: no proxy is trusted. */
export const DEFAULT_CACHE_TRUST_PROXY = false;
/** Default of {@link CacheOptions.cacheBodies}: requests with a body bypass the cache. */
export const DEFAULT_CACHE_BODIES = false;
/** Default of {@link CacheOptions.statusHeader}. */
export const DEFAULT_STATUS_HEADER = 'X-Cache-Status';
/** Default of {@link CacheOptions.lockTimeout} (nginx: 5s). */
export const DEFAULT_LOCK_TIMEOUT = 5000;
/** Default of {@link CacheOptions.lockAge} (nginx: 5s). */
export const DEFAULT_LOCK_AGE = 5000;
/** Default of {@link CacheOptions.maxEntrySize}. */
export const DEFAULT_MAX_ENTRY_SIZE = 1024 * 1024;

const USE_STALE = new Set<UseStaleCondition>(['error', 'timeout', 'invalid_header', 'updating', 'http_500', 'http_502', 'http_503', 'http_504', 'http_403', 'http_404', 'http_429']);
// Conditions a `stale-if-error` window covers (nginx sets the error window's flags for these).
const ERROR_WINDOW = new Set<string>(['error', 'timeout', 'invalid_header', 'http_500', 'http_502', 'http_503', 'http_504']);
// Not kept in an entry: per-connection or per-response framing, and cookies (never shared).
const NOT_STORED = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'set-cookie', 'proxy-connection', 'trailer', 'upgrade']);
const COUNTER = { MISS: 'miss', BYPASS: 'bypass', EXPIRED: 'expired', STALE: 'stale', UPDATING: 'updating', REVALIDATED: 'revalidated', HIT: 'hit' } as const;
const USES_LIMIT = 10_000;

type Check = (req: IncomingMessage, ex: Exchange) => boolean;

function compileSwitch(value: RequestSwitch | undefined, option: string): Check | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'function') return value;
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((v) => typeof v === 'string')) {
    throw new InvalidOptionError(option, 'a predicate (req, ex) => boolean, or strings with nginx variables', value);
  }
  const templates = list.map((t, i) => compileTemplate(t, `${option}[${i}]`));
  return (_req, ex) => templates.some((t) => {
    const v = t(ex);
    return v !== '' && v !== '0';
  });
}

function flag(value: unknown, option: string, fallback: boolean): boolean {
  const v = value ?? fallback;
  if (typeof v !== 'boolean') throw new InvalidOptionError(option, 'a boolean', v);
  return v;
}

function duration(value: Duration | undefined, option: string, fallback: Duration): number {
  const ms = parseDuration(value ?? fallback, option);
  if (ms < 0) throw new InvalidOptionError(option, 'a non-negative duration', value);
  return ms;
}

/** Records a request's cache status on its exchange and publishes it on `switchyard:cache:status`. */
function setStatus(ex: Exchange, status: CacheStatus, key?: string): void {
  ex.cacheStatus = status;
  if (channels.cacheStatus.hasSubscribers) channels.cacheStatus.publish({ req: ex.req, ex, status, key });
}

/** Store keys: the user's key with `%` and LF escaped, so the cache's own suffixes cannot be forged. */
function escapeKey(key: string): string {
  return key.indexOf('%') === -1 && key.indexOf('\n') === -1 ? key : key.replace(/%/g, '%25').replace(/\n/g, '%0A');
}

interface Inflight {
  since: number;
  done: Promise<void>;
  release: () => void;
}

interface Lookup {
  entry: CacheEntry | undefined;
  /** The store key of the entry (the variant's when Vary applies). */
  storeKey: string;
}

interface Meta {
  expiresAt: number;
  swr: number;
  sie: number;
  vary?: string[];
}

function metaOf(entry: CacheEntry): Meta | undefined {
  const m = entry.meta as Partial<Meta> | undefined;
  if (m === undefined || typeof m.expiresAt !== 'number') return undefined;
  return { expiresAt: m.expiresAt, swr: typeof m.swr === 'number' ? m.swr : 0, sie: typeof m.sie === 'number' ? m.sie : 0, ...(Array.isArray(m.vary) ? { vary: m.vary.map(String) } : {}) };
}

/** A fresh entry (not a Vary marker) this request may be answered with: the test of a HIT. */
function servableNow(entry: CacheEntry, req: IncomingMessage, t: number): boolean {
  const meta = entry.meta as (Partial<Meta> & { variants?: boolean }) | undefined;
  if (meta === undefined || typeof meta.expiresAt !== 'number' || t >= meta.expiresAt || meta.variants === true) return false;
  return req.headers.authorization === undefined || sharedAllowed(entry);
}

function sharedAllowed(entry: CacheEntry): boolean {
  const cc = headerValues(entry.headers, 'cache-control').join(',').toLowerCase();
  return /(?:^|,)\s*(?:public|s-maxage\s*=|must-revalidate)/.test(cc);
}

function zero(): CacheStats {
  const c = (): CacheCounter => ({ responses: 0, bytes: 0 });
  const w = (): CacheWriteCounter => ({ responses: 0, bytes: 0, responses_written: 0, bytes_written: 0 });
  return { size: 0, max_size: undefined, cold: false, hit: c(), stale: c(), updating: c(), revalidated: c(), miss: w(), expired: w(), bypass: w() };
}

/**
 * nginx's `proxy_cache` as a middleware: put it in front of balance() (or any handler). Fresh
 * entries are answered from the store (HIT); other requests go on down the chain while the
 * response streams to the client and is captured for the store when nginx's rules allow it
 * (`valid`, X-Accel-Expires, Cache-Control, Expires, Set-Cookie, Vary, Authorization).
 * Stale serving, locking, background updates and revalidation follow nginx's directives of the
 * same names. The store is in memory and bounded by default; give `@keyv/redis` to share it.
 * A failing store never fails a request: the cache goes upstream and the store emits `'storeError'`.
 * @example
 * ```ts
 * import express from 'express';
 * import { createPool, balance, cache } from 'switchyard-proxy';
 *
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }] });
 * const app = express();
 * // Microcaching: each URL reaches the upstream about once a second, however hot.
 * app.use(cache({ valid: '1s', lock: true, useStale: ['updating'], backgroundUpdate: true }), balance(pool));
 * app.listen(8080);
 * ```
 */
export function cache(options: CacheOptions = {}): CacheMiddleware {
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('options', 'an object', options);
  const name = options.name ?? 'cache';
  if (typeof name !== 'string' || name === '') throw new InvalidOptionError('name', 'a non-empty string', name);
  const now = options.now ?? Date.now;
  if (typeof now !== 'function') throw new InvalidOptionError('now', 'a function returning milliseconds', now);
  const policy: CachePolicy = compilePolicy({ valid: options.valid, ignoreHeaders: options.ignoreHeaders, authorized: options.authorized });
  const methods = new Set(['GET', 'HEAD']);
  if (options.methods !== undefined) {
    if (!Array.isArray(options.methods)) throw new InvalidOptionError('methods', 'an array of HTTP methods', options.methods);
    options.methods.forEach((m: unknown, i: number) => {
      if (typeof m !== 'string' || !TOKEN.test(m)) throw new InvalidOptionError(`methods[${i}]`, 'an HTTP method name', m);
      methods.add(m.toUpperCase());
    });
  }
  const convertHead = flag(options.convertHead, 'convertHead', true);
  const minUses = options.minUses ?? 1;
  if (!Number.isSafeInteger(minUses) || minUses < 1) throw new InvalidOptionError('minUses', 'a positive integer', minUses);
  const bypass = compileSwitch(options.bypass, 'bypass');
  const noCache = compileSwitch(options.noCache, 'noCache');
  const purgeSwitch = compileSwitch(options.purge, 'purge');
  const statusOption = options.statusHeader ?? DEFAULT_STATUS_HEADER;
  if (statusOption !== false && (typeof statusOption !== 'string' || !TOKEN.test(statusOption))) {
    throw new InvalidOptionError('statusHeader', 'a header name or false', statusOption);
  }
  const statusHeader = statusOption === false ? undefined : statusOption;
  const useStale = new Set<string>();
  if (options.useStale !== undefined) {
    if (!Array.isArray(options.useStale)) throw new InvalidOptionError('useStale', 'an array of conditions', options.useStale);
    options.useStale.forEach((c: unknown, i: number) => {
      if (!USE_STALE.has(c as UseStaleCondition)) throw new InvalidOptionError(`useStale[${i}]`, [...USE_STALE].join(', '), c);
      useStale.add(c as string);
    });
  }
  const backgroundUpdate = flag(options.backgroundUpdate, 'backgroundUpdate', false);
  const lock = flag(options.lock, 'lock', false);
  const lockTimeout = duration(options.lockTimeout, 'lockTimeout', DEFAULT_LOCK_TIMEOUT);
  const lockAge = duration(options.lockAge, 'lockAge', DEFAULT_LOCK_AGE);
  const revalidate = flag(options.revalidate, 'revalidate', false);
  const maxEntrySize = options.maxEntrySize ?? DEFAULT_MAX_ENTRY_SIZE;
  if (!Number.isSafeInteger(maxEntrySize) || maxEntrySize < 0) throw new InvalidOptionError('maxEntrySize', 'a non-negative integer of bytes', maxEntrySize);
  const retention = duration(options.staleRetention, 'staleRetention', DEFAULT_INACTIVE);
  const trust = compileTrust(options.trustProxy ?? DEFAULT_CACHE_TRUST_PROXY, 'trustProxy');
  const cacheBodies = flag(options.cacheBodies, 'cacheBodies', DEFAULT_CACHE_BODIES);
  const unkeyedOption = options.unkeyedHeaders ?? DEFAULT_UNKEYED_HEADERS;
  if (!Array.isArray(unkeyedOption)) throw new InvalidOptionError('unkeyedHeaders', 'an array of header names', unkeyedOption);
  const unkeyed = unkeyedOption.map((h: unknown, i: number) => {
    if (typeof h !== 'string' || !TOKEN.test(h)) throw new InvalidOptionError(`unkeyedHeaders[${i}]`, 'a header name', h);
    return h.toLowerCase();
  });
  // balance() passes forwarding headers on only from trusted proxies: those are judged once it has.
  const unkeyedForwarding = unkeyed.filter((h) => isForwardingHeader(h));
  const unkeyedOthers = unkeyed.filter((h) => !isForwardingHeader(h));

  let keyOf: (req: IncomingMessage, ex: Exchange, origin: Origin) => string;
  if (options.key === undefined) keyOf = (_req, ex, origin) => originKey(origin.scheme, origin.host, upstreamTarget(ex));
  else if (typeof options.key === 'function') {
    const fn = options.key;
    keyOf = (req, ex) => fn(req, ex);
  } else if (typeof options.key === 'string') {
    const t = compileTemplate(options.key, 'key');
    keyOf = (_req, ex) => t(ex);
  } else throw new InvalidOptionError('key', 'a string with nginx variables or a function (req, ex) => string', options.key);

  let store: CacheStore;
  if (options.store instanceof CacheStore) store = options.store;
  else {
    const memory = options.memory ?? {};
    store = new CacheStore({
      store: options.store ?? createMemoryStore(options.now !== undefined && memory.now === undefined ? { ...memory, now } : memory),
      ...(options.namespace !== undefined ? { namespace: options.namespace } : {}),
      ...(options.storeTimeout !== undefined ? { timeout: options.storeTimeout } : {}),
      ...(options.storeBreaker !== undefined ? { breaker: options.storeBreaker } : {}),
    });
  }

  let counters = zero();
  // Purges so far: a response fetched before one is not stored after it.
  let purges = 0;
  const inflight = new Map<string, Inflight>();
  const uses = new Map<string, number>();

  const count = (status: CacheStatus, bytes: number): void => {
    const c = counters[COUNTER[status]];
    c.responses++;
    c.bytes += bytes;
  };
  const written = (status: CacheStatus, bytes: number): void => {
    if (status !== 'MISS' && status !== 'EXPIRED' && status !== 'BYPASS') return;
    const c = counters[status.toLowerCase() as 'miss'];
    c.responses_written++;
    c.bytes_written += bytes;
  };

  const claim = (key: string): Inflight => {
    let release!: () => void;
    const done = new Promise<void>((resolve) => (release = resolve));
    const slot: Inflight = { since: now(), done, release: () => {} };
    slot.release = () => {
      if (inflight.get(key) === slot) inflight.delete(key);
      release();
    };
    inflight.set(key, slot);
    return slot;
  };

  const lookup = async (base: string, ex: Exchange): Promise<Lookup> => {
    const entry = await store.get(base);
    if (entry === undefined) return { entry: undefined, storeKey: base };
    const meta = metaOf(entry);
    if (meta?.vary !== undefined && entry.meta?.['variants'] === true) {
      // Variants stored from what balance() sent are looked up by what it would send.
      const sent = entry.meta['sent'] === true && meta.vary.some(isForwardingHeader) ? expectedForwarding(ex, trust) : undefined;
      const storeKey = variantKey(base, meta.vary, ex.req, sent);
      return { entry: await store.get(storeKey), storeKey };
    }
    return { entry, storeKey: base };
  };

  /**
   * The store key of a Vary variant: the values of the named request headers, where a forwarding
   * header (X-Forwarded-*, Forwarded) takes the value in `sent` (what the upstream got) when given.
   */
  const variantKey = (base: string, names: readonly string[], req: IncomingMessage, sent: readonly string[] | undefined): string => {
    const values = names.map((n) => {
      if (sent !== undefined && isForwardingHeader(n)) return listValue(sent, n);
      // An HTTP/2 request's host is its :authority.
      if (n === 'host') return requestHost(req) ?? '';
      const v = req.headers[n];
      return Array.isArray(v) ? v.join(', ') : (v ?? '');
    });
    return `${base}\nV:${JSON.stringify(values)}`;
  };

  /** Stores a complete response under `base` (and its Vary variant). */
  const save = async (base: string, ex: Exchange, status: number, headers: string[], body: Buffer, f: Freshness): Promise<boolean> => {
    const kept: string[] = [];
    for (let i = 0; i < headers.length; i += 2) {
      const n = headers[i]!.toLowerCase();
      if (!NOT_STORED.has(n) && (statusHeader === undefined || n !== statusHeader.toLowerCase())) kept.push(headers[i]!, headers[i + 1]!);
    }
    const t = now();
    const meta: Meta = { expiresAt: f.expiresAt, swr: f.staleWhileRevalidate, sie: f.staleIfError };
    const ttl = Math.max(1, f.expiresAt - t) + Math.max(retention, f.staleWhileRevalidate, f.staleIfError);
    let key = base;
    if (f.vary.length > 0) {
      meta.vary = [...f.vary];
      // Forwarding headers vary by what balance() sent upstream, not by what the client sent.
      const sent = ex.upstreamRequestHeaders;
      const marker: CacheEntry = { status: 204, headers: [], body: Buffer.alloc(0), storedAt: t, meta: { expiresAt: f.expiresAt, swr: 0, sie: 0, vary: [...f.vary], variants: true, sent: sent !== undefined } };
      await store.set(base, marker, ttl);
      key = variantKey(base, f.vary, ex.req, sent);
    }
    return store.set(key, { status, headers: kept, body, storedAt: t, meta: meta as unknown as Record<string, unknown> }, ttl);
  };

  // HITs that need no exchange record: the default key on the in-process store, nothing before the
  // cache having rewritten the request, no body, no trusted proxy to resolve. A key stored earlier
  // came from a valid request target, so the same target needs no second check. The key is made by
  // originKey() and keyHost(), as the default key is.
  const fastPath = options.key === undefined && purgeSwitch === undefined && bypass === undefined;
  const fastHit = (req: IncomingMessage, res: ServerResponse): boolean => {
    const memory = store.memory;
    const method = req.method;
    if (memory === undefined || (method !== 'GET' && !(method === 'HEAD' && convertHead)) || hasExchange(req)) return false;
    const original = (req as IncomingMessage & { originalUrl?: unknown }).originalUrl;
    const target = typeof original === 'string' ? original : req.url;
    if (target === undefined || target.charCodeAt(0) !== 47 /* '/' */) return false;
    const host = requestHost(req);
    if (!validHost(host) || (!cacheBodies && hasBody(req)) || trust(req.socket?.remoteAddress ?? '')) return false;
    const scheme = (req.socket as { encrypted?: boolean } | null)?.encrypted === true ? 'https' : 'http';
    const entry = store.getSync(escapeKey(originKey(scheme, keyHost(host, req), target)));
    if (entry === undefined || !servableNow(entry, req, now())) return false;
    setEarlyCacheStatus(req, 'HIT');
    if (channels.cacheStatus.hasSubscribers) channels.cacheStatus.publish({ req, ex: undefined, status: 'HIT', key: undefined });
    count('HIT', serveEntry(res, method, entry, req.headers as Conditionals, statusHeader, 'HIT'));
    return true;
  };

  const handler = function cache(req: IncomingMessage, res: ServerResponse, next: Next): void {
    if (fastPath && fastHit(req, res)) return;
    const ex = exchange(req);
    let method = req.method ?? 'GET';
    // A Host (or trusted X-Forwarded-Host) that is not a host name (`victim.com/admin`) could forge
    // another URL's key: such requests are not cached at all (nginx answers them 400).
    const origin = resolveOrigin(ex, trust);
    if (purgeSwitch !== undefined) {
      let purging: boolean;
      let key = '';
      try {
        purging = purgeSwitch(req, ex);
        if (purging && origin === undefined) throw new BadRequestError('Invalid Host header');
        if (purging) key = keyOf(req, ex, origin!);
      } catch (err) {
        next(err);
        return;
      }
      if (purging) {
        purgeKey(key).then(
          (n) => {
            writeHead(res, n > 0 || key.endsWith('*') ? 204 : 404, { 'content-length': '0' });
            res.end();
          },
          (err: unknown) => next(err),
        );
        return;
      }
    }
    if (!methods.has(method) || !ex.uriValid || origin === undefined) {
      next();
      return;
    }
    // A body may change the answer and is not in the key (a "fat GET"), unless the user's key reads it.
    const withBody = !cacheBodies && hasBody(req);
    let base: string;
    let skipLookup: boolean;
    try {
      const key = keyOf(req, ex, origin);
      if (typeof key !== 'string') throw new InvalidOptionError('key', 'a function returning a string', key);
      base = escapeKey(key);
      if (method !== 'GET' && !(method === 'HEAD' && convertHead)) base += `\nM:${method}`;
      base += factsSuffix(origin);
      skipLookup = withBody || (bypass !== undefined && bypass(req, ex));
    } catch (err) {
      next(err);
      return;
    }
    if (method === 'HEAD' && convertHead) method = 'GET';
    if (skipLookup) {
      fetch(req, res, next, ex, base, { status: 'BYPASS', origin, noStore: withBody || refuseStore(req, ex) });
      return;
    }
    // Entries held in this process: a fresh one is answered without a promise.
    if (store.memory !== undefined) {
      const entry = store.getSync(base);
      if (entry !== undefined && servableNow(entry, req, now())) {
        answer(req, res, ex, entry, 'HIT');
        return;
      }
    }
    respond(req, res, next, ex, base, origin, 0).catch((err: unknown) => {
      if (res.headersSent) res.destroy();
      else next(err);
    });
  };

  /** `noCache`, or a header that is not keyed but could change the response (forwarding ones: see {@link storable}). */
  function refuseStore(req: IncomingMessage, ex: Exchange): boolean {
    for (const h of unkeyedOthers) if (req.headers[h] !== undefined) return true;
    return noCache !== undefined && noCache(req, ex);
  }

  /**
   * Whether the answer may be stored under a key built from `origin`, judged once the request went
   * upstream: balance() told the upstream what the key has (its forwarding headers included), or,
   * with another handler, which sees the client's headers as they are, no unkeyed forwarding header
   * came with the request.
   */
  function storable(req: IncomingMessage, ex: Exchange, origin: Origin): boolean {
    if (ex.upstreamRequestHeaders !== undefined) return toldAsKeyed(ex, origin);
    for (const h of unkeyedForwarding) if (req.headers[h] !== undefined && !origin.facts.some((f) => f[0] === h)) return false;
    return true;
  }

  async function respond(req: IncomingMessage, res: ServerResponse, next: Next, ex: Exchange, base: string, origin: Origin, round: number): Promise<void> {
    const found = await lookup(base, ex);
    let entry = found.entry;
    if (entry !== undefined && req.headers.authorization !== undefined && !sharedAllowed(entry)) entry = undefined;
    const meta = entry === undefined ? undefined : metaOf(entry);
    const t = now();
    const noStore = refuseStore(req, ex);
    if (entry !== undefined && meta !== undefined) {
      if (t < meta.expiresAt) {
        answer(req, res, ex, entry, 'HIT');
        return;
      }
      const swr = t < meta.expiresAt + meta.swr;
      const current = inflight.get(base);
      const canServeUpdating = useStale.has('updating') || swr;
      if (current !== undefined && t - current.since < lockAge && canServeUpdating) {
        answer(req, res, ex, entry, 'UPDATING');
        return;
      }
      if (backgroundUpdate && canServeUpdating) {
        const slot = claim(base);
        const facts = connectionFacts(req);
        answer(req, res, ex, entry, 'STALE');
        // The update runs once the client's response is over, so no event of it reaches the handler.
        res.once('close', () => fetch(req, res, next, ex, base, { status: 'EXPIRED', origin, noStore, detached: facts, slot, stale: entry }));
        return;
      }
      fetch(req, res, next, ex, base, { status: 'EXPIRED', origin, noStore, slot: claim(base), stale: entry });
      return;
    }
    // Not found: count the use (nginx min_uses), then maybe wait for another request populating it.
    let allowed = true;
    if (minUses > 1) {
      const n = (uses.get(base) ?? 0) + 1;
      uses.delete(base);
      uses.set(base, n);
      if (uses.size > USES_LIMIT) uses.delete(uses.keys().next().value!);
      allowed = n >= minUses;
    }
    if (lock) {
      const started = now();
      let current = inflight.get(base);
      while (current !== undefined) {
        const waitFor = Math.min(started + lockTimeout, current.since + lockAge) - now();
        if (waitFor > 0) {
          const released = await waitUntil(current.done, waitFor);
          if (released) {
            if (round < 3) return respond(req, res, next, ex, base, origin, round + 1);
            break;
          }
        }
        if (now() >= started + lockTimeout) {
          // nginx: past the lock timeout the request goes upstream and its response is not cached.
          fetch(req, res, next, ex, base, { status: 'MISS', origin, noStore: true });
          return;
        }
        if (now() >= current.since + lockAge) break;
        current = inflight.get(base);
      }
      fetch(req, res, next, ex, base, { status: 'MISS', origin, noStore: noStore || !allowed, slot: claim(base) });
      return;
    }
    fetch(req, res, next, ex, base, { status: 'MISS', origin, noStore: noStore || !allowed });
  }

  function answer(req: IncomingMessage, res: ServerResponse, ex: Exchange, entry: CacheEntry, status: CacheStatus, conditionals?: Conditionals): void {
    setStatus(ex, status);
    // The request's headers serve as its conditionals (Node joins repeated ones into one string).
    const bytes = serveEntry(res, req.method ?? 'GET', entry, conditionals ?? (req.headers as Conditionals), statusHeader, status);
    count(status, bytes);
  }

  interface FetchPlan {
    status: CacheStatus;
    /** What the key was built from: the response is stored only if the upstream was told the same. */
    origin: Origin;
    noStore: boolean;
    slot?: Inflight;
    stale?: CacheEntry;
    /** A background update, with the client's connection as it was while its answer was going. */
    detached?: ConnectionFacts;
  }

  function fetch(req: IncomingMessage, res: ServerResponse, next: Next, ex: Exchange, base: string, plan: FetchPlan): void {
    const client = takeConditionals(req.headers);
    const clientMethod = req.method ?? 'GET';
    const stale = plan.stale;
    const staleMeta = stale === undefined ? undefined : metaOf(stale);
    let revalidating = false;
    if (revalidate && stale !== undefined && (stale.status === 200 || stale.status === 206)) {
      const etag = entryHeader(stale.headers, 'etag');
      const lm = entryHeader(stale.headers, 'last-modified');
      if (etag !== undefined) req.headers['if-none-match'] = etag;
      if (lm !== undefined) req.headers['if-modified-since'] = lm;
      revalidating = etag !== undefined || lm !== undefined;
    }
    if (clientMethod === 'HEAD' && convertHead) req.method = 'GET';
    setStatus(ex, plan.status, base);

    let capture: Buffer[] | undefined;
    let captured = 0;
    let storeStatus = 0;
    let storeHeaders: string[] = [];
    let verdict: Freshness | undefined;
    let sent = 0;
    let counted = false;
    let settled = false;
    let served: CacheStatus = plan.status;

    const settle = (): void => {
      if (settled) return;
      settled = true;
      if (clientMethod === 'HEAD') req.method = 'HEAD';
      plan.slot?.release();
    };
    const finish = (complete: boolean): void => {
      if (settled) return;
      if (!counted && !plan.detached) {
        counted = true;
        count(served, sent);
      }
      if (!complete || capture === undefined || verdict === undefined) return settle();
      const body = capture.length === 1 ? capture[0]! : Buffer.concat(capture, captured);
      capture = undefined;
      const length = entryHeader(storeHeaders, 'content-length');
      if (length !== undefined && Number(length) !== body.length) return settle();
      // A purge since this request went upstream: what it fetched may be what was purged.
      if (purges !== generation) return settle();
      save(base, ex, storeStatus, storeHeaders, body, verdict).then(
        (ok) => {
          if (ok) written(plan.status, body.length);
          settle();
        },
        () => settle(),
      );
    };

    // Headers set before the request reached the cache (a request id, a CSP nonce) belong to this
    // response only, as nginx's add_header: they are neither judged nor stored.
    const preset = plan.detached ? undefined : res.getHeaderNames();
    const generation = purges;
    const interception = intercept(res, {
      head(status, all) {
        const headers = upstreamHeaders(all, preset, ex.addedHeaders);
        // Revalidation answered "not modified": the entry is current again.
        if (revalidating && status === 304 && stale !== undefined) {
          const merged = mergeHeaders(stale.headers, headers);
          const f = freshness(stale.status, merged, req, policy, now());
          if (f.store && !plan.noStore && storable(req, ex, plan.origin)) {
            capture = [stale.body];
            captured = stale.body.length;
            storeStatus = stale.status;
            storeHeaders = merged;
            verdict = f;
          }
          served = 'REVALIDATED';
          setStatus(ex, served, base);
          if (!plan.detached) {
            req.method = clientMethod;
            sent = serveEntry(res, clientMethod, { ...stale, headers: merged }, client, statusHeader, served);
          }
          return { pass: false };
        }
        if (stale !== undefined && staleMeta !== undefined && !plan.detached && shouldServeStale(ex, status, stale, staleMeta)) {
          served = 'STALE';
          setStatus(ex, served, base);
          req.method = clientMethod;
          sent = serveEntry(res, clientMethod, stale, client, statusHeader, served);
          return { pass: false };
        }
        if (!plan.noStore && status !== 206 && status !== 304 && storable(req, ex, plan.origin)) {
          const f = freshness(status, headers, req, policy, now());
          if (f.store) {
            capture = [];
            storeStatus = status;
            storeHeaders = headers;
            verdict = f;
          }
        }
        return { pass: true, add: statusHeader === undefined ? undefined : [statusHeader, plan.status] };
      },
      data(chunk) {
        if (served === 'STALE' || served === 'REVALIDATED') return;
        sent += chunk.length;
        if (capture === undefined || chunk.length === 0) return;
        captured += chunk.length;
        if (captured > maxEntrySize) {
          capture = undefined;
          return;
        }
        // Chunks may be reused by the writer once written: keep copies.
        capture.push(Buffer.from(chunk));
      },
      end() {
        if (plan.detached) finish(true);
      },
      abort() {
        capture = undefined;
        finish(false);
      },
    }, req);

    if (plan.detached !== undefined) {
      ex.detached = true;
      interception.detach(plan.detached);
    } else {
      const onClose = (): void => {
        res.off('finish', onFinish);
        finish(responseFinished(res));
      };
      const onFinish = (): void => {
        res.off('close', onClose);
        // node:http2's compatibility response emits 'finish' when its stream closes, also when the
        // client reset it mid-response.
        finish(responseFinished(res));
      };
      res.once('finish', onFinish);
      res.once('close', onClose);
    }
    next();
  }

  function shouldServeStale(ex: Exchange, status: number, stale: CacheEntry, meta: Meta): boolean {
    const condition = ex.upstreamFailure !== undefined && ex.server === undefined ? ex.upstreamFailure : `http_${status}`;
    if (useStale.has(condition)) return true;
    // stale-if-error / stale-while-revalidate windows; never a stale 5xx (nginx 1.19.3+).
    return ERROR_WINDOW.has(condition) && now() < meta.expiresAt + meta.sie && stale.status < 500;
  }

  const purgeKey = async (key: string): Promise<number> => {
    if (typeof key !== 'string') throw new InvalidOptionError('key', 'a string', key);
    purges++;
    if (key.endsWith('*')) return store.deletePrefix(escapeKey(key.slice(0, -1)));
    const base = escapeKey(key);
    const one = (await store.delete(base)) ? 1 : 0;
    return one + (await store.deletePrefix(`${base}\n`));
  };

  // A function's own `name` is read-only to assignment, not to definition.
  Object.defineProperty(handler, 'name', { value: name, configurable: true });
  return Object.assign(handler, {
    store,
    purge: purgeKey,
    stats(): CacheStats {
      const s = structuredClone(counters);
      s.size = store.memory?.bytes ?? 0;
      s.max_size = store.memory === undefined ? undefined : (store.memory.opts as { maxBytes: number }).maxBytes;
      return s;
    },
    resetStats(): void {
      counters = zero();
    },
    close(): Promise<void> {
      return store.disconnect();
    },
  }) as CacheMiddleware;
}

/** The response's headers without those set before the cache ran and those balance()'s hooks added. */
function upstreamHeaders(all: string[], preset: readonly string[] | undefined, added: readonly string[] | undefined): string[] {
  if ((preset === undefined || preset.length === 0) && (added === undefined || added.length === 0)) return all;
  const skip = new Set(preset);
  const extra = new Map<string, number>();
  if (added !== undefined) for (let i = 0; i < added.length; i += 2) extra.set(`${added[i]!.toLowerCase()}\n${added[i + 1]}`, (extra.get(`${added[i]!.toLowerCase()}\n${added[i + 1]}`) ?? 0) + 1);
  const out: string[] = [];
  for (let i = 0; i < all.length; i += 2) {
    const name = all[i]!.toLowerCase();
    if (skip.has(name)) continue;
    const pair = `${name}\n${all[i + 1]}`;
    const left = extra.get(pair);
    if (left !== undefined && left > 0) {
      extra.set(pair, left - 1);
      continue;
    }
    out.push(all[i]!, all[i + 1]!);
  }
  return out;
}

/** The stored headers updated by a 304's (RFC 9111 §4.3.4), framing headers excepted. */
function mergeHeaders(stored: readonly string[], fresh: readonly string[]): string[] {
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

/** Resolves true when `done` settles within `ms`, else false; leaves no timer behind. */
function waitUntil(done: Promise<void>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms, false);
    void done.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
