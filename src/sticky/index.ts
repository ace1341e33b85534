import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { resolveStore, sharedRedisAdapter, type CacheStore, type MemoryStoreOptions, type StoreBreakerOptions, type StoreOption } from '../store/index.ts';
import type { Middleware, Next } from '../core/chain.ts';
import { parseDuration, type Duration } from '../core/duration.ts';
import { InvalidOptionError, ServerNotFoundError } from '../core/errors.ts';
import { booleanOption, durationOption, integerOption, nowOption, objectOption, stringOption } from '../core/options.ts';
import { TOKEN } from '../core/http.ts';
import { exchange, type Exchange, type ResponseHook } from '../core/exchange.ts';
import { args, compileTemplate, cookies, hasVariables, type Template } from '../core/variables.ts';
import { poolOption, type UpstreamPool } from '../pool/index.ts';
import { internals } from '../pool/internal.ts';
import { syncInternals } from '../sync/index.ts';
import { refuseUpgrade, screenUpgrade, type UpgradeHandler } from '../proxy/upgrade.ts';

/** Options of the cookie mode (nginx `sticky cookie`). */
export interface StickyCookieOptions {
  /** Cookie name. @default 'srv_id' */
  name?: string | undefined;
  /** Lifetime: a duration, or `'max'` (nginx: 31 Dec 2037, max-age 10 years). @default none: a session cookie */
  expires?: Duration | 'max' | undefined;
  /** `Domain` attribute; may contain nginx variables (`'.$host'`); omitted when it evaluates empty. @default none */
  domain?: string | undefined;
  /** `Path` attribute, literal. @default none */
  path?: string | undefined;
  /** `HttpOnly`. @default false */
  httpOnly?: boolean | undefined;
  /** `Secure`. @default false */
  secure?: boolean | undefined;
  /**
   * `SameSite`: `'strict'`, `'lax'`, `'none'` (needs `secure`), or nginx variables: a value that is
   * empty omits the attribute, anything but strict/lax/none becomes strict (as nginx).
   * @default none
   */
  sameSite?: string | undefined;
  /**
   * Signs the cookie with HMAC-SHA256 so its value cannot be guessed or forged: the cookie holds
   * `<server id>.<signature>`, and a cookie whose signature does not verify is ignored (rebalanced).
   * @default none: the value is the server id, as nginx
   */
  secret?: string | Buffer | undefined;
}

/**
 * Where a route comes from (nginx `sticky route $var ...`): a cookie, a query argument or a request
 * header (optionally through `pattern`, a regular expression with a named group `route`), nginx
 * variables, or a function.
 */
export type RouteSource =
  | string
  | {
      /** The request cookie that holds the route. */
      readonly cookie: string;
      /** A regular expression with a named group `route` that takes the route out of the value. @default none: the whole value */
      readonly pattern?: RegExp | undefined;
    }
  | {
      /** The query argument that holds the route. */
      readonly query: string;
      /** A regular expression with a named group `route` that takes the route out of the value. @default none: the whole value */
      readonly pattern?: RegExp | undefined;
    }
  | {
      /** The request header that holds the route. */
      readonly header: string;
      /** A regular expression with a named group `route` that takes the route out of the value. @default none: the whole value */
      readonly pattern?: RegExp | undefined;
    }
  | ((req: IncomingMessage, ex: Exchange) => string | undefined);

/**
 * Where a learned session id comes from in the upstream's response: a cookie the upstream sets
 * (`{ cookie }`, nginx `create=$upstream_cookie_NAME`), a response header (`{ header }`, nginx
 * `create=$upstream_http_NAME`), or a function of the upstream response.
 */
export type LearnCreateSource =
  | {
      /** The cookie's name. */
      readonly cookie: string;
    }
  | {
      /** The header's name. */
      readonly header: string;
    }
  | ((message: IncomingMessage, ex: Exchange) => string | undefined);

/**
 * Where a learned session id comes from in the client's request: the forms of
 * {@link LearnCreateSource} read from the request (a request cookie, nginx `lookup=$cookie_NAME`; a
 * request header, nginx `lookup=$http_NAME`; a function of the request), or nginx variables.
 */
export type LearnLookupSource = LearnCreateSource | string;

/** Options of the learn mode (nginx `sticky learn`). */
export interface StickyLearnOptions {
  /** Sources of a new session id in responses; the first non-empty wins. */
  create: LearnCreateSource | readonly LearnCreateSource[];
  /** Sources of the session id in requests; the first non-empty wins. */
  lookup: LearnLookupSource | readonly LearnLookupSource[];
  /** A session unused for this long is forgotten. @default '10m' */
  timeout?: Duration | undefined;
  /**
   * Where sessions live, in any of the forms `cache()`'s store takes too ({@link StoreOption}): a
   * {@link CacheStore}, a `Keyv`, or a keyv storage adapter such as `new KeyvRedis(url)` (to share
   * them between gateway instances) or {@link createMemoryStore}'s store.
   * @default the Redis of the pool's `sync` when it has one (sessions shared by every instance, under
   * `<namespace>:sticky:<pool>`), else a bounded in-memory store
   */
  store?: StoreOption | undefined;
  /** Bounds of the default in-memory store. @default DEFAULT_LEARN_MEMORY ({ maxEntries: 100000 }, inactive: `timeout`) */
  memory?: MemoryStoreOptions | undefined;
  /** Key prefix in a shared store. @default DEFAULT_LEARN_NAMESPACE ('switchyard-sticky'); `<sync namespace>:sticky:<pool>` in the pool's sync Redis */
  namespace?: string | undefined;
  /** A store operation slower than this counts as failed (the request is then balanced). @default '1s' */
  storeTimeout?: Duration | undefined;
  /**
   * The store's circuit breaker: after `failures` (3) failures in a row the store is skipped at once
   * (requests are balanced as if they had no session, nothing waits for `storeTimeout`) and probed
   * in the background, after `probeDelay` ('500ms'), doubling up to `maxProbeDelay` ('10s'),
   * until it answers. `false` turns it off.
   * @default {}
   */
  storeBreaker?: StoreBreakerOptions | false | undefined;
}

/** Options of {@link sticky}: exactly one of `cookie`, `route`, `learn`. */
export interface StickyOptions {
  /** nginx `sticky cookie`: the gateway issues a cookie naming the server. `true` for the defaults. */
  cookie?: StickyCookieOptions | true | undefined;
  /** nginx `sticky route`: the application issues routes; the first non-empty source wins. */
  route?: RouteSource | readonly RouteSource[] | undefined;
  /** nginx `sticky learn`: sessions learned from the upstream's responses. */
  learn?: StickyLearnOptions | undefined;
  /**
   * How long a client stays counted in {@link StickyMiddleware.sessions} after its last bound request
   * (cookie and route modes; learn mode counts its stored sessions, which expire after `learn.timeout`).
   * @default '10m'
   */
  sessionTimeout?: Duration | undefined;
  /**
   * Most clients remembered for {@link StickyMiddleware.sessions} in cookie and route modes, the
   * least recently seen dropped first (cookie mode remembers as many again that were given a
   * cookie and have not come back with it). Each costs a few hundred bytes at most.
   * @default 10000
   */
  maxSessions?: number | undefined;
  /** Clock in milliseconds, for tests. @default Date.now */
  now?: (() => number) | undefined;
}

/** The middleware returned by {@link sticky}. */
export interface StickyMiddleware extends Middleware {
  /** The pool it binds requests to. */
  readonly pool: UpstreamPool;
  /** The learn mode's session store (fail-open, `'storeError'` events); undefined in other modes. */
  readonly store: CacheStore | undefined;
  /**
   * Sessions bound to server `id` (id, url or route): in learn mode the stored sessions naming it;
   * in route mode the distinct route source values that made a request bound to it within
   * `sessionTimeout`; in cookie mode the distinct clients (address and user agent) that came back
   * within `sessionTimeout` with the cookie this gateway gave them. A client sending a cookie it was
   * not given (a forged one, or one from before a restart) counts once it comes back with the cookie
   * of the answer, so rotating user agents cannot keep a drained server's count up.
   * Drain a server, wait for this to reach zero, then remove it.
   */
  sessions(id: string): Promise<number>;
  /**
   * Clients remembered for {@link StickyMiddleware.sessions} in cookie and route modes (at most
   * `maxSessions`, twice that in cookie mode); `0` in learn mode, whose sessions are in its store.
   */
  readonly tracked: number;
  /**
   * Wraps a server's `upgrade` listener (balance()'s `upgrade`) so that WebSocket upgrades, which do
   * not go through the middleware chain, are bound too (no cookie is set on a 101).
   * @example
   * ```ts
   * server.on('upgrade', st.wrapUpgrade(proxy.upgrade));
   * ```
   */
  wrapUpgrade(listener: UpgradeHandler): UpgradeHandler;
  /** Disconnects the learn store. */
  close(): Promise<void>;
}

/** Default of {@link StickyCookieOptions.name}. */
export const DEFAULT_STICKY_COOKIE = 'srv_id';
/** Default of {@link StickyLearnOptions.timeout} and {@link StickyOptions.sessionTimeout} (nginx: 10m). */
export const DEFAULT_SESSION_TIMEOUT = '10m';
/** Default of {@link StickyLearnOptions.namespace}. */
export const DEFAULT_LEARN_NAMESPACE = 'switchyard-sticky';
/** Default of {@link StickyLearnOptions.memory} (its `inactive` is the learn mode's `timeout`). */
export const DEFAULT_LEARN_MEMORY: Readonly<MemoryStoreOptions> = Object.freeze({ maxEntries: 100_000 });
/** Longest cookie or route value looked at; longer ones are ignored (rebalanced). */
export const MAX_STICKY_VALUE = 256;

// Cookie values: RFC 6265 cookie-octets.
const COOKIE_VALUE = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*$/;
const DOMAIN = /^\.?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const PATH = /^\/[\x21-\x3A\x3C-\x7E]*$/;
const MAX_EXPIRES = 'Thu, 31-Dec-37 23:55:55 GMT';
const MAX_AGE_MAX = 315_360_000;
/** Default of {@link StickyOptions.maxSessions}. */
export const DEFAULT_MAX_SESSIONS = 10_000;

/** The keys of {@link StickyOptions}. */
const STICKY_OPTIONS = ['cookie', 'route', 'learn', 'sessionTimeout', 'maxSessions', 'now'] as const satisfies ReadonlyArray<keyof StickyOptions>;
/** The keys of {@link StickyCookieOptions}. */
const COOKIE_OPTIONS = ['name', 'expires', 'domain', 'path', 'httpOnly', 'secure', 'sameSite', 'secret'] as const satisfies ReadonlyArray<
  keyof StickyCookieOptions
>;
/** The keys of {@link StickyLearnOptions}. */
const LEARN_OPTIONS = ['create', 'lookup', 'timeout', 'store', 'memory', 'namespace', 'storeTimeout', 'storeBreaker'] as const satisfies ReadonlyArray<
  keyof StickyLearnOptions
>;
/** The keys of a `{ cookie }`, `{ query }` or `{ header }` source. */
const SOURCE_OPTIONS = ['cookie', 'query', 'header', 'pattern'] as const;
/** The keys of a learn mode `{ cookie }` or `{ header }` create source. */
const CREATE_SOURCE_OPTIONS = ['cookie', 'header'] as const;
/** What a learn mode create source takes, for the messages. */
const CREATE_SOURCE = '{ cookie }, { header } or a function of the upstream response';
/** Longest client key kept (address and user agent, or a route's source value). */
const CLIENT_KEY_LIMIT = 200;
const HASH_CACHE_LIMIT = 10_000;
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** nginx's cookie date: `Fri, 27-Nov-26 17:09:15 GMT` (two-digit year). */
export function cookieDate(ms: number): string {
  const d = new Date(ms);
  const p = (n: number): string => String(n).padStart(2, '0');
  const date = `${p(d.getUTCDate())}-${MONTHS[d.getUTCMonth()]}-${p(d.getUTCFullYear() % 100)}`;
  return `${DAYS[d.getUTCDay()]}, ${date} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} GMT`;
}

type Extract = (req: IncomingMessage, ex: Exchange) => string | undefined;

function withPattern(get: (ex: Exchange) => string | undefined, pattern: RegExp | undefined, option: string): Extract {
  if (pattern === undefined) return (_req, ex) => get(ex);
  if (!(pattern instanceof RegExp)) throw new InvalidOptionError(`${option}.pattern`, 'a RegExp with a named group "route"', pattern);
  if (!pattern.source.includes('(?<route>')) {
    throw new InvalidOptionError(`${option}.pattern`, 'a RegExp with a named group "route", such as /\\.(?<route>\\w+)$/', pattern);
  }
  const re = new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ''));
  return (_req, ex) => {
    const v = get(ex);
    if (v === undefined || v === '') return undefined;
    return re.exec(v)?.groups?.['route'];
  };
}

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** A route source compiled once: its route, and the value it came from (cookie, query argument, header). */
interface CompiledSource {
  route: Extract;
  raw: Extract | undefined;
}

function compileSource(source: RouteSource, option: string): CompiledSource {
  if (typeof source === 'function') return { route: source, raw: undefined };
  if (typeof source === 'string') {
    const t = compileTemplate(source, option);
    return { route: (_req, ex) => t(ex), raw: undefined };
  }
  const s = objectOption(source, option, SOURCE_OPTIONS, 'a template, { cookie }, { query }, { header } or a function');
  const pattern = s.pattern as RegExp | undefined;
  let get: ((ex: Exchange) => string | undefined) | undefined;
  if (typeof s.cookie === 'string' && s.cookie !== '') {
    const name = s.cookie;
    get = (ex) => cookies(ex).get(name);
  } else if (typeof s.query === 'string' && s.query !== '') {
    const name = s.query;
    get = (ex) => args(ex).get(name);
  } else if (typeof s.header === 'string' && TOKEN.test(s.header)) {
    const name = s.header.toLowerCase();
    get = (ex) => headerOf(ex.req, name);
  }
  if (get === undefined) throw new InvalidOptionError(option, 'a template, { cookie }, { query }, { header } or a function', source);
  const raw = get;
  return { route: withPattern(raw, pattern, option), raw: (_req, ex) => raw(ex) };
}

function compileRoute(source: RouteSource, option: string): Extract {
  return compileSource(source, option).route;
}

function list<T>(value: T | readonly T[] | undefined, option: string): readonly T[] {
  if (value === undefined) throw new InvalidOptionError(option, 'at least one source', value);
  const l = Array.isArray(value) ? (value as readonly T[]) : [value as T];
  if (l.length === 0) throw new InvalidOptionError(option, 'at least one source', value);
  return l;
}

function firstOf(extractors: readonly Extract[], req: IncomingMessage, ex: Exchange): string | undefined {
  for (const e of extractors) {
    const v = e(req, ex);
    if (v !== undefined && v !== '') return v;
  }
  return undefined;
}

/** A value fit to compare with session ids: short, and printable ASCII. */
function plausible(v: string | undefined): v is string {
  return v !== undefined && v !== '' && v.length <= MAX_STICKY_VALUE && COOKIE_VALUE.test(v);
}

/** The value of cookie `name` among an upstream response's Set-Cookie headers. */
function setCookieValue(response: IncomingMessage, name: string): string | undefined {
  const all = response.headers['set-cookie'];
  if (all === undefined) return undefined;
  for (const line of all) {
    const semi = line.indexOf(';');
    const pair = semi === -1 ? line : line.slice(0, semi);
    const eq = pair.indexOf('=');
    if (eq === -1) continue;
    if (pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * The brand of sticky()'s middleware: its `wrapUpgrade`, under a symbol only this package knows, so
 * the Fastify plugin finds it by what it is, not by a property name another function may carry. @internal
 */
export const kSticky: unique symbol = Symbol('switchyard.sticky');

/**
 * nginx's `sticky` directive for a pool: binds a client's requests to one server (cookie, route or
 * learn mode) by setting the request's hint, which every balancing method tries first. A hint naming
 * a server that is down, unavailable, full or unknown is ignored and the request balanced (and, in
 * cookie mode, given a new cookie). A draining server keeps its bound requests. Put it before
 * balance() with the same pool.
 * @example
 * ```ts
 * import { createPool, sticky, balance, chain } from 'switchyard-proxy';
 *
 * const pool = createPool({ servers: [{ url: 'http://10.0.0.1:8080' }, { url: 'http://10.0.0.2:8080' }] });
 * const app = chain(sticky(pool, { cookie: { name: 'srv_id', expires: '1h', httpOnly: true, secure: true, sameSite: 'lax', path: '/' } }), balance(pool));
 * ```
 */
export function sticky(pool: UpstreamPool, options: StickyOptions): StickyMiddleware {
  poolOption(pool);
  objectOption(options, '', STICKY_OPTIONS, 'an object with cookie, route or learn');
  const modes = (['cookie', 'route', 'learn'] as const).filter((m) => options[m] !== undefined);
  if (modes.length !== 1) throw new InvalidOptionError('options', 'exactly one of cookie, route or learn', modes.length === 0 ? options : modes.join(' and '));
  const now = nowOption(options.now);
  const sessionTimeout = durationOption(options.sessionTimeout, 'sessionTimeout', DEFAULT_SESSION_TIMEOUT);
  const maxSessions = integerOption(options.maxSessions, 'maxSessions', DEFAULT_MAX_SESSIONS, { min: 1 });

  // Clients counted by sessions() (cookie and route modes), and in cookie mode those given a
  // cookie that have not come back with it yet.
  const seen = new ClientTable(maxSessions, sessionTimeout);
  const issued = new ClientTable(maxSessions, sessionTimeout);
  const sidOf = (id: string): string => {
    const server = pool.get(id) ?? pool.servers.find((s) => s.url === id || (s.route !== '' && s.route === id));
    if (server === undefined) throw new ServerNotFoundError(id);
    return server.sid;
  };

  // Per mode: `bind` sets the request's hint (a promise when it needs the store), `hook` adds to the response.
  let bind: (req: IncomingMessage, ex: Exchange) => Promise<void> | undefined;
  let hook: ResponseHook | undefined;
  let store: CacheStore | undefined;
  let sessions: (sid: string) => Promise<number>;
  const countSeen = async (sid: string): Promise<number> => seen.count(sid, now());

  if (options.cookie !== undefined) {
    const c = (options.cookie === true ? {} : objectOption(options.cookie, 'cookie', COOKIE_OPTIONS, 'an object or true')) as StickyCookieOptions;
    const name = stringOption(c.name, 'cookie.name', DEFAULT_STICKY_COOKIE, { pattern: TOKEN, expected: 'a cookie name (token characters)' });
    let expires = '';
    if (c.expires === 'max') expires = `; expires=${MAX_EXPIRES}; max-age=${MAX_AGE_MAX}`;
    const lifetime = c.expires === undefined || c.expires === 'max' ? 0 : parseDuration(c.expires, 'cookie.expires');
    if (c.expires !== undefined && c.expires !== 'max' && lifetime <= 0)
      throw new InvalidOptionError('cookie.expires', 'a positive duration or "max"', c.expires);
    let domain: Template | undefined;
    if (c.domain !== undefined) {
      if (typeof c.domain !== 'string' || (!hasVariables(c.domain) && !DOMAIN.test(c.domain)))
        throw new InvalidOptionError('cookie.domain', 'a domain name such as ".example.com" (or nginx variables)', c.domain);
      domain = compileTemplate(c.domain, 'cookie.domain');
    }
    if (c.path !== undefined && (typeof c.path !== 'string' || !PATH.test(c.path)))
      throw new InvalidOptionError('cookie.path', 'a path starting with "/" without ";", spaces or control characters', c.path);
    const httpOnly = booleanOption(c.httpOnly, 'cookie.httpOnly', false);
    const secure = booleanOption(c.secure, 'cookie.secure', false);
    let sameSite: Template | undefined;
    if (c.sameSite !== undefined) {
      if (typeof c.sameSite !== 'string') throw new InvalidOptionError('cookie.sameSite', '"strict", "lax", "none" or nginx variables', c.sameSite);
      if (!hasVariables(c.sameSite)) {
        const v = c.sameSite.toLowerCase();
        if (v !== 'strict' && v !== 'lax' && v !== 'none')
          throw new InvalidOptionError('cookie.sameSite', '"strict", "lax", "none" or nginx variables', c.sameSite);
        if (v === 'none' && !secure) throw new InvalidOptionError('cookie.sameSite', '"none" only with secure: true (browsers drop it otherwise)', c.sameSite);
      }
      sameSite = compileTemplate(c.sameSite, 'cookie.sameSite');
    }
    let secret: Buffer | undefined;
    if (c.secret !== undefined) {
      secret = typeof c.secret === 'string' ? Buffer.from(c.secret) : c.secret;
      if (!Buffer.isBuffer(secret) || secret.length < 16) throw new InvalidOptionError('cookie.secret', 'a string or Buffer of at least 16 bytes', c.secret);
    }
    const sign = (sid: string): string => {
      if (secret === undefined) return sid;
      return `${sid}.${createHmac('sha256', secret).update(sid).digest('base64url').slice(0, 32)}`;
    };
    const verify = (value: string): string | undefined => {
      if (secret === undefined) return value;
      const dot = value.lastIndexOf('.');
      if (dot <= 0) return undefined;
      const sid = value.slice(0, dot);
      const expected = Buffer.from(sign(sid).slice(dot + 1));
      const given = Buffer.from(value.slice(dot + 1));
      return given.length === expected.length && timingSafeEqual(given, expected) ? sid : undefined;
    };
    // Without variables the attributes change only with the second `expires` names: built once per second.
    const fixed = (domain === undefined || !hasVariables(c.domain!)) && (sameSite === undefined || !hasVariables(c.sameSite!));
    let cachedSecond = Number.NaN;
    let cachedTail = '';
    const tail = (ex: Exchange): string => {
      if (!fixed) return buildTail(ex);
      const second = lifetime > 0 ? Math.floor(now() / 1000) : 0;
      if (second !== cachedSecond) {
        cachedTail = buildTail(ex);
        cachedSecond = second;
      }
      return cachedTail;
    };
    const buildTail = (ex: Exchange): string => {
      let out = expires;
      if (lifetime > 0) out += `; expires=${cookieDate(now() + lifetime)}; max-age=${Math.floor(lifetime / 1000)}`;
      if (domain !== undefined) {
        const d = domain(ex);
        // A domain built from request values ($host) must not inject attributes.
        if (d !== '' && DOMAIN.test(d)) out += `; domain=${d}`;
      }
      if (httpOnly) out += '; httponly';
      if (secure) out += '; secure';
      if (sameSite !== undefined) {
        const v = sameSite(ex).toLowerCase();
        if (v !== '') out += `; samesite=${v === 'lax' || v === 'none' || v === 'strict' ? v : 'strict'}`;
      }
      if (c.path !== undefined) out += `; path=${c.path}`;
      return out;
    };
    hook = (ex, _response, headers) => {
      if (ex.server === undefined) return;
      headers.push('Set-Cookie', `${name}=${sign(ex.server.sid)}${tail(ex)}`);
      // A client that came back with the cookie it was given, and that its server answered: one
      // more sign of its session. Any other client is remembered as given this cookie.
      const sid = ex.server.sid;
      const who = clientKey(`${ex.clientAddress} ${headerOf(ex.req, 'user-agent') ?? ''}`);
      const t = now();
      if (ex.hint === sid && (seen.bound(who, sid, t) || issued.bound(who, sid, t))) {
        issued.delete(who);
        seen.note(who, sid, t);
      } else {
        issued.note(who, sid, t);
      }
    };
    bind = (_req, ex) => {
      const raw = cookies(ex).get(name);
      const sid = plausible(raw) ? verify(raw) : undefined;
      if (sid !== undefined) ex.hint = sid;
      return undefined;
    };
    sessions = countSeen;
  } else if (options.route !== undefined) {
    const compiled = list(options.route, 'route').map((s, i) => compileSource(s, Array.isArray(options.route) ? `route[${i}]` : 'route'));
    const sources = compiled.map((c) => c.route);
    // The value a route came from tells sessions apart (a JSESSIONID is one per session).
    const raws = compiled.flatMap((c) => (c.raw === undefined ? [] : [c.raw]));
    bind = (req, ex) => {
      const route = firstOf(sources, req, ex);
      if (plausible(route)) ex.hint = route;
      return undefined;
    };
    hook = (ex) => {
      if (ex.server !== undefined && ex.hint === ex.server.sid) seen.note(clientKey(`route ${firstOf(raws, ex.req, ex) ?? ex.hint}`), ex.server.sid, now());
    };
    sessions = countSeen;
  } else {
    const l = objectOption(options.learn, 'learn', LEARN_OPTIONS, 'an object with create and lookup') as unknown as StickyLearnOptions;
    const creates = list(l.create, 'learn.create').map((s, i): ((response: IncomingMessage, ex: Exchange) => string | undefined) => {
      const option = Array.isArray(l.create) ? `learn.create[${i}]` : 'learn.create';
      if (typeof s === 'function') return s;
      const o = objectOption(s, option, CREATE_SOURCE_OPTIONS, CREATE_SOURCE);
      if (typeof o.cookie === 'string' && TOKEN.test(o.cookie)) {
        const name = o.cookie;
        return (response) => setCookieValue(response, name);
      }
      if (typeof o.header === 'string' && TOKEN.test(o.header)) {
        const name = o.header.toLowerCase();
        return (response) => headerOf(response, name);
      }
      throw new InvalidOptionError(option, CREATE_SOURCE, s);
    });
    const lookups = list(l.lookup, 'learn.lookup').map((s, i): Extract => {
      const option = Array.isArray(l.lookup) ? `learn.lookup[${i}]` : 'learn.lookup';
      if (typeof s === 'object' && s !== null && 'cookie' in s && typeof s.cookie !== 'string')
        throw new InvalidOptionError(`${option}.cookie`, 'a cookie name', s.cookie);
      return compileRoute(s as RouteSource, option);
    });
    const timeout = durationOption(l.timeout, 'learn.timeout', DEFAULT_SESSION_TIMEOUT, true);
    // A pool shared through sync() keeps its learned sessions in the same Redis, unless a store is given.
    const handle = l.store === undefined ? internals(pool).sync() : undefined;
    const shared = handle === undefined ? undefined : syncInternals(handle);
    const sharedStore = shared?.redis === undefined ? undefined : sharedRedisAdapter(shared.redis);
    const sessionStore = resolveStore(l.store ?? sharedStore, {
      option: 'learn.store',
      memory: l.memory,
      memoryDefaults: { ...DEFAULT_LEARN_MEMORY, inactive: timeout },
      now: options.now,
      namespace: l.namespace ?? (shared?.redis === undefined ? DEFAULT_LEARN_NAMESPACE : `${shared.namespace}:sticky:${pool.name}`),
      timeout: l.storeTimeout,
      breaker: l.storeBreaker,
    });
    store = sessionStore;
    // Session ids are stored hashed: the store never holds a usable session token. The sessions
    // seen lately keep their hash, their key in the in-process store and their last refresh, so a
    // busy session costs one Map lookup per request.
    interface Seen {
      key: string;
      refreshedAt: number;
    }
    const recent = new Map<string, Seen>();
    const seenOf = (value: string): Seen => {
      let s = recent.get(value);
      if (s === undefined) {
        const key = `s:${createHash('sha256').update(value).digest('base64url')}`;
        s = { key, refreshedAt: 0 };
        recent.set(value, s);
        if (recent.size > HASH_CACHE_LIMIT) recent.delete(recent.keys().next().value!);
      }
      return s;
    };
    const refreshEvery = timeout / 10;
    // What a response teaches: a new session (create), or that a looked-up one is still in use.
    const learnFrom = (ex: Exchange, response: IncomingMessage, seen: Seen | undefined, sid: string | undefined): void => {
      const server = ex.server;
      if (server === undefined || (response.statusCode ?? 0) >= 500) return;
      let created: string | undefined;
      for (const f of creates) {
        created = f(response, ex);
        if (created !== undefined && created !== '') break;
      }
      if (created !== undefined && created !== '') {
        if (plausible(created)) {
          if (ex.sticky !== undefined) ex.sticky.sessid = created;
          void sessionStore.setText(seenOf(created).key, server.sid, timeout);
        }
        return;
      }
      // Refreshed only when the bound server answered: a session re-created elsewhere meanwhile
      // (another request, another gateway) is not put back.
      if (seen === undefined || sid === undefined || server.sid !== sid) return;
      // Refresh the idle timer, at most every tenth of the timeout per session.
      const t = now();
      if (t - seen.refreshedAt > refreshEvery) {
        seen.refreshedAt = t;
        void sessionStore.setText(seen.key, sid, timeout);
      }
    };
    const unbound: ResponseHook = (ex, response) => learnFrom(ex, response, undefined, undefined);
    bind = (req, ex) => {
      const value = firstOf(lookups, req, ex);
      if (!plausible(value)) {
        (ex.responseHooks ??= []).push(unbound);
        return undefined;
      }
      const seen = seenOf(value);
      if (ex.sticky !== undefined) ex.sticky.sessid = value;
      const found = (sid: string | undefined): void => {
        if (sid === undefined || !plausible(sid)) {
          (ex.responseHooks ??= []).push(unbound);
          return;
        }
        ex.hint = sid;
        (ex.responseHooks ??= []).push((e, response) => learnFrom(e, response, seen, sid));
      };
      // Sessions held in this process are looked up without a promise.
      if (sessionStore.memory !== undefined) {
        found(sessionStore.getTextSync(seen.key));
        return undefined;
      }
      return sessionStore.getText(seen.key).then(found);
    };
    sessions = async (sid) => (await sessionStore.texts()).filter((v) => v === sid).length;
  }

  const mode = modes[0]!;
  const handler = function sticky(req: IncomingMessage, res: ServerResponse, next: Next): void {
    const ex = exchange(req);
    ex.sticky = { mode, sessid: undefined };
    if (hook !== undefined) (ex.responseHooks ??= []).push(hook);
    let pending: Promise<void> | undefined;
    try {
      pending = bind(req, ex);
    } catch (err) {
      next(err);
      return;
    }
    if (pending === undefined) next();
    else
      pending.then(
        () => next(),
        (err: unknown) => {
          if (res.headersSent) res.destroy();
          else next(err);
        },
      );
  };
  const upgradeWith = (listener: UpgradeHandler): UpgradeHandler =>
    function stickyUpgrade(req, socket, head) {
      // The target is checked (400) before the binding reads the request, and an upgrade that is not
      // tunneled goes back to the server as ordinary HTTP, where the middleware binds it.
      if (screenUpgrade(req, socket, head)) return;
      const proceed = (): void => {
        if (socket.destroyed) return;
        try {
          listener(req, socket, head);
        } catch {
          // An event listener (or, after a lookup, a promise callback) must not throw.
          refuseUpgrade(socket, 500, 'Internal Server Error');
        }
      };
      let pending: Promise<void> | undefined;
      try {
        pending = bind(req, exchange(req));
      } catch {
        refuseUpgrade(socket, 500, 'Internal Server Error');
        return;
      }
      if (pending === undefined) proceed();
      else pending.then(proceed, () => refuseUpgrade(socket, 500, 'Internal Server Error'));
    };

  Object.defineProperty(handler, 'tracked', { get: () => seen.size + issued.size, enumerable: true });
  Object.defineProperty(handler, kSticky, { value: upgradeWith });
  return Object.assign(handler, {
    pool,
    store,
    wrapUpgrade: upgradeWith,
    sessions: async (id: string) => sessions(sidOf(id)),
    close: async () => {
      await store?.disconnect();
    },
  }) as unknown as StickyMiddleware;
}

/** Bounded keys: whatever a client sends, an entry costs a few hundred bytes at most. */
function clientKey(who: string): string {
  return who.length > CLIENT_KEY_LIMIT ? who.slice(0, CLIENT_KEY_LIMIT) : who;
}

/**
 * Clients and the server each was last seen bound to, least recently seen first: at most `limit`,
 * and none idle for `idle` ms or longer (dropped as new ones come).
 */
class ClientTable {
  readonly #entries = new Map<string, { sid: string; at: number }>();
  readonly #limit: number;
  readonly #idle: number;

  constructor(limit: number, idle: number) {
    this.#limit = limit;
    this.#idle = idle;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Whether `who` was last seen bound to `sid`, less than `idle` ago. */
  bound(who: string, sid: string, t: number): boolean {
    const e = this.#entries.get(who);
    return e !== undefined && e.sid === sid && t - e.at < this.#idle;
  }

  /** Records `who` bound to `sid` at `t`. */
  note(who: string, sid: string, t: number): void {
    const entries = this.#entries;
    const last = entries.get(who);
    // Seen with the same server within the second: the counts cannot change, spare the reordering.
    if (last !== undefined && last.sid === sid && t - last.at < 1000 && t >= last.at) return;
    entries.delete(who);
    entries.set(who, { sid, at: t });
    // Oldest first: the idle ones, and the least recently seen past the limit.
    for (const [k, v] of entries) {
      if (entries.size <= this.#limit && t - v.at < this.#idle) break;
      entries.delete(k);
    }
  }

  delete(who: string): void {
    this.#entries.delete(who);
  }

  /** Clients bound to `sid` seen less than `idle` ago. */
  count(sid: string, t: number): number {
    let n = 0;
    for (const v of this.#entries.values()) if (v.sid === sid && t - v.at < this.#idle) n++;
    return n;
  }
}
