/**
 * `cache()`'s options: their types and defaults, and their validation into the frozen settings the
 * middleware runs on.
 * @module
 */
import type { IncomingMessage } from 'node:http';
import type { NextUpstreamCondition } from '../balance/index.ts';
import type { Duration } from '../core/duration.ts';
import { InvalidOptionError } from '../core/errors.ts';
import type { Exchange } from '../core/exchange.ts';
import { TOKEN, UPSTREAM_FAILURE_CONDITIONS } from '../core/http.ts';
import { booleanOption, durationOption, enumOption, integerOption, nowOption, objectOption, stringListOption, stringOption } from '../core/options.ts';
import { compileTemplate } from '../core/variables.ts';
import { isForwardingHeader } from '../proxy/headers.ts';
import { compileTrust, type TrustProxy, type TrustTest } from '../proxy/trust.ts';
import { DEFAULT_INACTIVE, type MemoryStoreOptions, type StoreBreakerOptions, type StoreOption } from '../store/index.ts';
import type { SyncHandle } from '../sync/index.ts';
import { compilePolicy, type CachePolicy, type CachePolicyOptions } from './policy.ts';
import { syncHandleOption } from './sync.ts';

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
  name?: string | undefined;
  /**
   * Where entries live, in any of the forms `sticky()`'s learn store takes too ({@link StoreOption}):
   * a {@link CacheStore}, a `Keyv`, or a keyv storage adapter such as `new KeyvRedis(url)` (to share
   * one cache between gateway instances) or {@link createMemoryStore}'s store.
   * @default a bounded in-memory store (see `memory`)
   */
  store?: StoreOption | undefined;
  /** Bounds of the default in-memory store: `maxEntries` (10000), `maxBytes` (64 MiB), `inactive` ('10m'). @default {} */
  memory?: MemoryStoreOptions | undefined;
  /** Namespace for keys in a shared store. @default 'switchyard' */
  namespace?: string | undefined;
  /** Longest a store operation may take before it counts as failed (the request then goes upstream). @default '1s' */
  storeTimeout?: Duration | undefined;
  /**
   * The store's circuit breaker: after `failures` (3) failures in a row the store is skipped at once
   * (requests go upstream, nothing waits for `storeTimeout`) and probed in the background, after
   * `probeDelay` ('500ms'), doubling up to `maxProbeDelay` ('10s'), until it answers. `false` turns it off.
   * Ignored when `store` is a {@link CacheStore} (give it its own `breaker`).
   * @default {}
   */
  storeBreaker?: StoreBreakerOptions | false | undefined;
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
  key?: (string | ((req: IncomingMessage, ex: Exchange) => string)) | undefined;
  /**
   * Proxies whose X-Forwarded-Proto, X-Forwarded-Host (and X-Forwarded-For, for `$remote_addr`) are
   * believed, with the same meaning as balance()'s option: give both the same value. From such a
   * proxy, the default key and `$scheme` / `$host` follow the scheme and host it names, and its other
   * forwarding headers (X-Forwarded-Prefix, -Port, -Server, Forwarded's host and proto, ...) are keyed
   * too, since balance() passes them on. A response is never stored when balance() told the upstream
   * another scheme, host or forwarding header than the key was built from.
   * @default false
   */
  trustProxy?: TrustProxy | undefined;
  /**
   * Requests with a body (Content-Length above 0, or Transfer-Encoding) bypass the cache (BYPASS:
   * neither answered from it nor stored), since the body may change the answer and is not in the key.
   * `true` caches them too: then the key must account for the body (a `key` function reading what a
   * body parser put on the request, say), as nginx leaves to `proxy_cache_key`.
   * @default false
   */
  cacheBodies?: boolean | undefined;
  /** nginx `proxy_cache_methods`: GET and HEAD are always included. @default ['GET', 'HEAD'] */
  methods?: readonly string[] | undefined;
  /** nginx `proxy_cache_convert_head`: fetch HEAD as GET so the answer can be cached. @default true */
  convertHead?: boolean | undefined;
  /** nginx `proxy_cache_min_uses`: store after this many requests for the key. @default 1 */
  minUses?: number | undefined;
  /** nginx `proxy_cache_bypass`: do not answer from the cache (the fresh response is still stored unless `noCache`). */
  bypass?: RequestSwitch | undefined;
  /** nginx `proxy_no_cache`: do not store the response. */
  noCache?: RequestSwitch | undefined;
  /** Response header carrying the cache status, or `false` for none. @default 'X-Cache-Status' */
  statusHeader?: string | false | undefined;
  /** nginx `proxy_cache_use_stale`. @default [] */
  useStale?: readonly UseStaleCondition[] | undefined;
  /** nginx `proxy_cache_background_update`: answer STALE at once and update in the background. @default false */
  backgroundUpdate?: boolean | undefined;
  /** nginx `proxy_cache_lock`: one request populates a new entry, the others wait. @default false */
  lock?: boolean | undefined;
  /** nginx `proxy_cache_lock_timeout`: how long the others wait, then go upstream without storing. @default '5s' */
  lockTimeout?: Duration | undefined;
  /** nginx `proxy_cache_lock_age`: after this long one more request may go upstream to populate or update. @default '5s' */
  lockAge?: Duration | undefined;
  /** nginx `proxy_cache_revalidate`: revalidate expired entries with If-None-Match / If-Modified-Since. @default false */
  revalidate?: boolean | undefined;
  /** Largest body stored, in bytes; larger responses are delivered but not stored. @default 1 MiB */
  maxEntrySize?: number | undefined;
  /**
   * How long an entry stays in the store after it expires, for STALE, UPDATING and revalidation
   * (nginx keeps expired files until `inactive` removes them).
   * @default '10m'
   */
  staleRetention?: Duration | undefined;
  /**
   * NGINX Plus `proxy_cache_purge`: requests for which this is on purge their key (a key ending in
   * `*` purges by prefix) and get 204, or 404 when nothing was cached. Off unless set; guard it,
   * for example `(req) => req.method === 'PURGE' && isAdmin(req)`.
   */
  purge?: RequestSwitch | undefined;
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
  unkeyedHeaders?: readonly string[] | undefined;
  /** Clock in milliseconds, for tests (also given to the default memory store). @default Date.now */
  now?: (() => number) | undefined;
  /**
   * Makes the instances of a gateway act as one cache (a handle from `sync()`; caches share what
   * they do by `name`, so give the same cache the same name on every instance):
   * - `lock` and `lockAge` hold across instances: one request in the cluster fills a key, the others
   *   (on any instance) wait for it, up to `lockTimeout`, and serve what it stored;
   * - `updating` and `backgroundUpdate`: one update per key in the cluster, the others answer UPDATING;
   * - `minUses` counts the requests of every instance (a shared counter, for `staleRetention`);
   * - `purge()` and purge requests reach every instance's memory store (a shared store is purged
   *   once), and a response fetched before a purge, on any instance, is not stored after it;
   * - with the default memory store, an entry one instance stores is sent to the others' memory
   *   stores (so those that waited for it serve it);
   * - the cache's statistics go to the board `monitor()` sums, as section `cache:<name>`.
   *
   * When Redis cannot be reached every instance carries on alone at once: the lock is per process
   * again and nothing waits for Redis. Only locking waits on Redis while it answers (one command
   * on a miss or an expired entry with `lock` or `updating`). Purges made while an instance is cut
   * off from Redis do not reach its memory store later.
   * @default undefined (everything per process)
   * @example
   * ```ts
   * const shared = sync({ redis: 'redis://127.0.0.1:6379', namespace: 'shop' });
   * app.use(cache({ name: 'pages', valid: '1m', lock: true, minUses: 2, sync: shared }), balance(pool));
   * ```
   */
  sync?: SyncHandle | undefined;
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
export const DEFAULT_LOCK_TIMEOUT = '5s';
/** Default of {@link CacheOptions.lockAge} (nginx: 5s). */
export const DEFAULT_LOCK_AGE = '5s';
/** Default of {@link CacheOptions.maxEntrySize}. */
export const DEFAULT_MAX_ENTRY_SIZE = 1024 * 1024;

const USE_STALE: readonly UseStaleCondition[] = [...UPSTREAM_FAILURE_CONDITIONS, 'updating'];

/** Every key of {@link CacheOptions}: any other is refused, naming the nearest of these. */
const CACHE_OPTIONS = [
  'name',
  'store',
  'memory',
  'namespace',
  'storeTimeout',
  'storeBreaker',
  'key',
  'trustProxy',
  'cacheBodies',
  'methods',
  'convertHead',
  'minUses',
  'bypass',
  'noCache',
  'statusHeader',
  'useStale',
  'backgroundUpdate',
  'lock',
  'lockTimeout',
  'lockAge',
  'revalidate',
  'maxEntrySize',
  'staleRetention',
  'purge',
  'unkeyedHeaders',
  'now',
  'sync',
  'valid',
  'ignoreHeaders',
  'authorized',
] as const satisfies ReadonlyArray<keyof CacheOptions>;

/** Refuses `value` (at `path`) unless it is a token such as an HTTP method or header name. */
function token(expected: string): (value: string, path: string) => void {
  return (value, path) => {
    if (!TOKEN.test(value)) throw new InvalidOptionError(path, expected, value);
  };
}

/** A compiled {@link RequestSwitch}. */
export type Check = (req: IncomingMessage, ex: Exchange) => boolean;

function compileSwitch(value: RequestSwitch | undefined, option: string): Check | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'function') return value;
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((v) => typeof v === 'string')) {
    throw new InvalidOptionError(option, 'a predicate (req, ex) => boolean, or strings with nginx variables', value);
  }
  const templates = list.map((t, i) => compileTemplate(t, `${option}[${i}]`));
  return (_req, ex) =>
    templates.some((t) => {
      const v = t(ex);
      return v !== '' && v !== '0';
    });
}

/** A user's `key` option compiled: the request's key before the cache's own suffixes. */
export type KeyFunction = (req: IncomingMessage, ex: Exchange) => string;

/** {@link CacheOptions} validated, with their defaults resolved: what the middleware runs on. */
export interface CacheSettings {
  readonly name: string;
  readonly now: () => number;
  readonly policy: CachePolicy;
  /** Methods looked up and stored, uppercase (GET and HEAD always). */
  readonly methods: ReadonlySet<string>;
  readonly convertHead: boolean;
  readonly minUses: number;
  readonly bypass: Check | undefined;
  readonly noCache: Check | undefined;
  readonly purge: Check | undefined;
  readonly statusHeader: string | undefined;
  readonly useStale: ReadonlySet<string>;
  readonly backgroundUpdate: boolean;
  readonly lock: boolean;
  readonly lockTimeout: number;
  readonly lockAge: number;
  readonly revalidate: boolean;
  readonly maxEntrySize: number;
  /** `staleRetention` in milliseconds. */
  readonly retention: number;
  readonly trust: TrustTest;
  /** `trustProxy` trusts no address (the default): {@link trust} need not be asked, nor the peer's address read. */
  readonly trustsNobody: boolean;
  readonly cacheBodies: boolean;
  /** `unkeyedHeaders` that are forwarding headers: judged by what balance() sent. */
  readonly unkeyedForwarding: readonly string[];
  /** The other `unkeyedHeaders`: any of them stops storing. */
  readonly unkeyedOthers: readonly string[];
  /** The user's `key`, compiled; `undefined` for the default key. */
  readonly key: KeyFunction | undefined;
  /** The cluster-wide state the cache takes part in (option `sync`). */
  readonly sync: SyncHandle | undefined;
}

/**
 * Validates `options` (an {@link InvalidOptionError} naming the first bad one) and resolves their
 * defaults. The store options are resolved apart (`resolveStore`).
 */
export function resolveCacheOptions(options: CacheOptions): CacheSettings {
  objectOption(options, '', CACHE_OPTIONS);
  const name = stringOption(options.name, 'name', 'cache', { nonEmpty: true });
  const now = nowOption(options.now);
  const policy = compilePolicy({ valid: options.valid, ignoreHeaders: options.ignoreHeaders, authorized: options.authorized });
  const methodList = stringListOption(options.methods, 'methods', [], 'an array of HTTP methods', token('an HTTP method name'));
  const methods = new Set(['GET', 'HEAD', ...methodList.map((m) => m.toUpperCase())]);
  const convertHead = booleanOption(options.convertHead, 'convertHead', true);
  const minUses = integerOption(options.minUses, 'minUses', 1, { min: 1 });
  const bypass = compileSwitch(options.bypass, 'bypass');
  const noCache = compileSwitch(options.noCache, 'noCache');
  const purgeSwitch = compileSwitch(options.purge, 'purge');
  const statusOption = options.statusHeader ?? DEFAULT_STATUS_HEADER;
  if (statusOption !== false && (typeof statusOption !== 'string' || !TOKEN.test(statusOption))) {
    throw new InvalidOptionError('statusHeader', 'a header name or false', statusOption);
  }
  const statusHeader = statusOption === false ? undefined : statusOption;
  const useStale = new Set<string>(
    stringListOption(options.useStale, 'useStale', [], 'an array of conditions', (c, path) => enumOption(c, path, USE_STALE, 'error')),
  );
  const backgroundUpdate = booleanOption(options.backgroundUpdate, 'backgroundUpdate', false);
  const lock = booleanOption(options.lock, 'lock', false);
  const lockTimeout = durationOption(options.lockTimeout, 'lockTimeout', DEFAULT_LOCK_TIMEOUT);
  const lockAge = durationOption(options.lockAge, 'lockAge', DEFAULT_LOCK_AGE);
  const revalidate = booleanOption(options.revalidate, 'revalidate', false);
  const maxEntrySize = integerOption(options.maxEntrySize, 'maxEntrySize', DEFAULT_MAX_ENTRY_SIZE);
  const retention = durationOption(options.staleRetention, 'staleRetention', DEFAULT_INACTIVE);
  const trust = compileTrust(options.trustProxy ?? DEFAULT_CACHE_TRUST_PROXY, 'trustProxy');
  const cacheBodies = booleanOption(options.cacheBodies, 'cacheBodies', DEFAULT_CACHE_BODIES);
  const unkeyed = stringListOption(options.unkeyedHeaders, 'unkeyedHeaders', DEFAULT_UNKEYED_HEADERS, 'an array of header names', token('a header name')).map(
    (h) => h.toLowerCase(),
  );
  const unkeyedForwarding = unkeyed.filter((h) => isForwardingHeader(h));
  const sync = syncHandleOption(options.sync);
  const unkeyedOthers = unkeyed.filter((h) => !isForwardingHeader(h));

  let key: KeyFunction | undefined;
  if (typeof options.key === 'function') {
    const fn = options.key;
    key = (req, ex) => fn(req, ex);
  } else if (typeof options.key === 'string') {
    const t = compileTemplate(options.key, 'key');
    key = (_req, ex) => t(ex);
  } else if (options.key !== undefined) throw new InvalidOptionError('key', 'a string with nginx variables or a function (req, ex) => string', options.key);
  return Object.freeze({
    name,
    now,
    policy,
    methods,
    convertHead,
    minUses,
    bypass,
    noCache,
    purge: purgeSwitch,
    statusHeader,
    useStale,
    backgroundUpdate,
    lock,
    lockTimeout,
    lockAge,
    revalidate,
    maxEntrySize,
    retention,
    trust,
    trustsNobody: (options.trustProxy ?? DEFAULT_CACHE_TRUST_PROXY) === false,
    cacheBodies,
    unkeyedForwarding,
    unkeyedOthers,
    key,
    sync,
  });
}
