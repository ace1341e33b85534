/**
 * Cacheability and freshness of an upstream response, as nginx's `proxy_cache`
 * decides them (`proxy_cache_valid`, `proxy_ignore_headers`, and the
 * `X-Accel-Expires` / `Cache-Control` / `Expires` / `Set-Cookie` / `Vary` rules).
 * Pure and synchronous: no I/O, no timers, the clock is a parameter.
 *
 * Differences from nginx, on purpose:
 * - Times are milliseconds, not whole seconds. nginx stores `valid_sec` and
 *   treats an entry as expired when `valid_sec < now` in seconds, so
 *   `proxy_cache_valid 200 1s` stays fresh between 1 and 2 s depending on the
 *   sub-second moment it was stored. Here an entry is fresh while
 *   `now < expiresAt` with `expiresAt = now + ttl` to the millisecond: tests with
 *   an injected clock are exact, and sub-second TTLs (`'500ms'` microcaching) mean
 *   what they say. Header values (`max-age`, `X-Accel-Expires`, `Expires`) are whole
 *   seconds by definition and are simply multiplied by 1000.
 * - A request carrying `Authorization` is not stored unless the response has
 *   `Cache-Control: public`, `s-maxage` or `must-revalidate` (RFC 9111 §3.5).
 *   nginx does not check this; set {@link CachePolicyOptions.authorized} to get
 *   nginx's behaviour.
 * @module
 */
import { parseDuration, type Duration } from '../core/duration.ts';
import { InvalidOptionError } from '../core/errors.ts';

/** A status selector in `valid`: one code, several codes, or `'any'`. */
export type ValidCodes = number | readonly number[] | 'any';

/**
 * nginx `proxy_cache_valid`, in one of three forms:
 * - a {@link Duration} alone: that time for 200, 301 and 302 (`proxy_cache_valid 10m`);
 * - an object `{ 200: '10m', '301 302': '1h', 404: '1m', any: '5s' }`: keys are
 *   status codes (several separated by spaces or commas) or `any`; a code may appear
 *   once. Explicit codes are tried before `any`, whatever the key order (JavaScript
 *   orders integer keys first anyway);
 * - an array `[[[200, 301], '10m'], [404, '1m'], ['any', '5s']]` tried in order: the
 *   first entry naming the status, or an `any` entry, wins, as nginx matches its
 *   directives in configuration order.
 *
 * A time of `0` matches but stores nothing, so `[[404, 0], ['any', '1m']]` caches
 * everything but 404.
 */
export type ValidOption = Duration | Readonly<Record<string, Duration>> | ReadonlyArray<readonly [ValidCodes, Duration]>;

/** One compiled `valid` entry. */
export interface ValidRule {
  /** Status codes this entry covers, or `'any'`. */
  readonly codes: readonly number[] | 'any';
  /** Time to live in milliseconds. */
  readonly ttl: number;
}

/** A compiled, frozen `valid` option: rules in matching order. */
export interface CompiledValid {
  readonly rules: readonly ValidRule[];
}

/** Response headers {@link CachePolicyOptions.ignoreHeaders} can disable (nginx `proxy_ignore_headers`). */
export type IgnorableHeader = 'X-Accel-Expires' | 'Expires' | 'Cache-Control' | 'Set-Cookie' | 'Vary';

/**
 * Headers as Node gives them: an `IncomingHttpHeaders`-like object with lowercase
 * names (arrays for repeated headers), or a raw `[name, value, name, value, ...]`
 * list such as `req.rawHeaders`.
 */
export type HeadersInput = Readonly<Record<string, string | readonly string[] | number | undefined>> | readonly string[];

/** The parts of the request {@link freshness} looks at (an `IncomingMessage` fits). */
export interface FreshnessRequest {
  readonly headers: HeadersInput;
}

/** Options of {@link compilePolicy} and {@link freshness}. */
export interface CachePolicyOptions {
  /** nginx `proxy_cache_valid`: TTLs by status when no header gave one. @default undefined (nothing is stored without caching headers) */
  valid?: ValidOption | undefined;
  /** nginx `proxy_ignore_headers`: response headers whose rule is disabled. Case-insensitive. @default [] */
  ignoreHeaders?: readonly IgnorableHeader[] | undefined;
  /**
   * Store responses to requests with `Authorization` even without `public`, `s-maxage`
   * or `must-revalidate` (nginx's behaviour). When `Cache-Control` is in
   * `ignoreHeaders`, those directives are not seen either, so set this too.
   * @default false
   */
  authorized?: boolean | undefined;
}

/** A compiled, frozen {@link CachePolicyOptions}, made by {@link compilePolicy}. */
export interface CachePolicy {
  readonly valid: CompiledValid | undefined;
  /** Lowercase names of the ignored headers. */
  readonly ignoreHeaders: ReadonlySet<string>;
  readonly authorized: boolean;
}

/** Where the TTL came from. */
export type TtlSource = 'x-accel-expires' | 'cache-control' | 'expires' | 'valid';

/** Why a response is not stored. */
export type NotStoredReason =
  /** `X-Accel-Expires: 0`. */
  | 'x-accel-expires'
  /** `Cache-Control` has `no-cache`, `no-store` or `private`. */
  | 'cache-control-private'
  /** `Cache-Control: max-age=0` or `s-maxage=0`. */
  | 'cache-control-zero'
  /** A `Cache-Control` number that does not parse. */
  | 'cache-control-invalid'
  /** `Expires` in the past or not a date. */
  | 'expires'
  /** No header gave a TTL and `valid` does not cover the status (or gives it 0). */
  | 'no-ttl'
  /** The response sets a cookie. */
  | 'set-cookie'
  /** `Vary: *`. */
  | 'vary-star'
  /** `Vary` longer than {@link MAX_VARY_LENGTH} bytes. */
  | 'vary-too-long'
  /** The request has `Authorization` and the response does not allow shared caching. */
  | 'authorization';

/** The verdict of {@link freshness}. All times in milliseconds. */
export interface Freshness {
  /** Whether the response may be stored. */
  readonly store: boolean;
  /** Why not, when `store` is false. */
  readonly reason: NotStoredReason | undefined;
  /** Which rule gave the TTL, when `store` is true. */
  readonly source: TtlSource | undefined;
  /** Time to live; 0 when not stored, or stored expired (`X-Accel-Expires: @T` already past). */
  readonly ttl: number;
  /** `now + ttl`: the entry is fresh while `now < expiresAt`. */
  readonly expiresAt: number;
  /** After expiry, how long a stale copy may be served while it is being updated (`stale-while-revalidate`). */
  readonly staleWhileRevalidate: number;
  /** After expiry, how long a stale copy may be served when the upstream fails (`stale-if-error`, or `stale-while-revalidate`). */
  readonly staleIfError: number;
  /** Lowercase request header names to key variants on (from `Vary`), in order; empty when none. */
  readonly vary: readonly string[];
}

/** Codes covered by a `valid` time given alone (nginx: 200 301 302). */
export const DEFAULT_VALID_CODES: readonly number[] = Object.freeze([200, 301, 302]);
/** Default of {@link CachePolicyOptions.ignoreHeaders}. */
export const DEFAULT_IGNORE_HEADERS: readonly IgnorableHeader[] = Object.freeze([]);
/** Default of {@link CachePolicyOptions.authorized}. */
export const DEFAULT_AUTHORIZED = false;
/** Longest `Vary` value, in bytes, a stored response may have (nginx: 128). */
export const MAX_VARY_LENGTH = 128;

const IGNORABLE = new Map<string, IgnorableHeader>(
  (['X-Accel-Expires', 'Expires', 'Cache-Control', 'Set-Cookie', 'Vary'] as const).map((h) => [h.toLowerCase(), h]),
);

/**
 * Compiles and validates a `valid` option (nginx `proxy_cache_valid`), throwing
 * {@link InvalidOptionError} naming the offending entry (`valid`, `valid[1][0]`, `valid.404`).
 * @example
 * ```ts
 * const valid = compileValid({ 200: '10m', 404: '1m', any: '5s' });
 * validTtl(valid, 404); // 60000
 * validTtl(compileValid('1m'), 500); // undefined: a time alone covers 200, 301, 302
 * ```
 */
export function compileValid(valid: ValidOption, option = 'valid'): CompiledValid {
  const rules: ValidRule[] = [];
  if (typeof valid === 'number' || typeof valid === 'string') {
    rules.push({ codes: DEFAULT_VALID_CODES, ttl: parseDuration(valid, option) });
  } else if (Array.isArray(valid)) {
    if (valid.length === 0) throw new InvalidOptionError(option, 'at least one [codes | "any", time] entry', valid);
    valid.forEach((entry: unknown, i: number) => {
      if (!Array.isArray(entry) || entry.length !== 2) {
        throw new InvalidOptionError(`${option}[${i}]`, 'a [codes | "any", time] pair', entry);
      }
      rules.push({ codes: compileCodes(entry[0], `${option}[${i}][0]`), ttl: parseDuration(entry[1] as Duration, `${option}[${i}][1]`) });
    });
  } else if (typeof valid === 'object' && valid !== null) {
    const seen = new Set<number>();
    let any: ValidRule | undefined;
    const keys = Object.keys(valid);
    if (keys.length === 0) throw new InvalidOptionError(option, 'at least one status code or "any"', valid);
    for (const key of keys) {
      const path = `${option}.${key}`;
      const ttl = parseDuration((valid as Readonly<Record<string, Duration>>)[key]!, path);
      if (key.trim().toLowerCase() === 'any') {
        any = { codes: 'any', ttl };
        continue;
      }
      const parts = key.split(/[\s,]+/).filter((p) => p !== '');
      if (parts.length === 0) throw new InvalidOptionError(path, 'status codes (100-599) or "any" as the key', key);
      const codes = parts.map((p) => compileCode(/^\d+$/.test(p) ? Number(p) : p, path));
      for (const code of codes) {
        if (seen.has(code)) throw new InvalidOptionError(path, `status ${code} only once`, key);
        seen.add(code);
      }
      rules.push({ codes: Object.freeze(codes), ttl });
    }
    if (any !== undefined) rules.push(any);
  } else {
    throw new InvalidOptionError(option, 'a duration, an object of status codes to durations, or an array of [codes, duration]', valid);
  }
  return Object.freeze({ rules: Object.freeze(rules.map((r) => Object.freeze(r))) });
}

function compileCodes(codes: unknown, path: string): readonly number[] | 'any' {
  if (codes === 'any') return 'any';
  if (Array.isArray(codes)) {
    if (codes.length === 0) throw new InvalidOptionError(path, 'a non-empty list of status codes', codes);
    return Object.freeze(codes.map((c: unknown, i: number) => compileCode(c, `${path}[${i}]`)));
  }
  return Object.freeze([compileCode(codes, path)]);
}

function compileCode(code: unknown, path: string): number {
  if (typeof code === 'number' && Number.isInteger(code) && code >= 100 && code <= 599) return code;
  throw new InvalidOptionError(path, 'a status code from 100 to 599 or "any"', code);
}

/**
 * The TTL in milliseconds that a compiled `valid` gives `status`: the first rule
 * naming it or `any`; `undefined` when none does.
 * @example
 * ```ts
 * validTtl(compileValid([['any', '10s'], [404, '1m']]), 404); // 10000: `any` came first
 * ```
 */
export function validTtl(valid: CompiledValid, status: number): number | undefined {
  for (const rule of valid.rules) {
    if (rule.codes === 'any' || rule.codes.includes(status)) return rule.ttl;
  }
  return undefined;
}

const compiled = new WeakSet<CachePolicy>();

/**
 * Validates and freezes the options of {@link freshness} once, so that the
 * per-response call does no validation. Throws {@link InvalidOptionError}.
 * @example
 * ```ts
 * const policy = compilePolicy({ valid: { 200: '10m', any: '5s' }, ignoreHeaders: ['Set-Cookie'] });
 * freshness(200, res.headers, req, policy, Date.now());
 * ```
 */
export function compilePolicy(options: CachePolicyOptions = {}): CachePolicy {
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError('options', 'an object', options);
  const valid = options.valid === undefined ? undefined : compileValid(options.valid);
  const ignore = new Set<string>();
  const list: unknown = options.ignoreHeaders ?? DEFAULT_IGNORE_HEADERS;
  if (!Array.isArray(list)) throw new InvalidOptionError('ignoreHeaders', 'an array of header names', list);
  list.forEach((name: unknown, i: number) => {
    const known = typeof name === 'string' ? IGNORABLE.get(name.trim().toLowerCase()) : undefined;
    if (known === undefined) {
      throw new InvalidOptionError(`ignoreHeaders[${i}]`, `one of ${[...IGNORABLE.values()].join(', ')}`, name);
    }
    ignore.add(known.toLowerCase());
  });
  const authorized = options.authorized ?? DEFAULT_AUTHORIZED;
  if (typeof authorized !== 'boolean') throw new InvalidOptionError('authorized', 'a boolean', authorized);
  const policy: CachePolicy = Object.freeze({ valid, ignoreHeaders: ignore, authorized });
  compiled.add(policy);
  return policy;
}

/**
 * Decides whether an upstream response may be stored, for how long, with which
 * stale windows and `Vary` names, in nginx's order of precedence:
 * 1. `X-Accel-Expires`: `N` seconds, `0` not stored, `@T` until epoch second T (a T
 *    already past stores the response expired from the start, `ttl` 0, as nginx); the
 *    first value wins; it overrides `Cache-Control` and `Expires` whatever the header
 *    order. A value that is not a number, and `@0`, are ignored.
 * 2. `Cache-Control`: `no-cache`, `no-store` or `private` → not stored; `s-maxage`
 *    over `max-age`; `0` → not stored; a number that does not parse → not stored.
 *    `stale-while-revalidate=N` sets both stale windows, `stale-if-error=N` the error
 *    one; they apply even when `X-Accel-Expires` gave the TTL.
 * 3. `Expires`: in the past or not an HTTP date → not stored.
 * 4. `valid` by status; nothing matching → not stored.
 *
 * Then, whatever the TTL: `Set-Cookie` → not stored; `Vary: *` or a `Vary` over 128
 * bytes → not stored; `Authorization` on the request without `public`, `s-maxage` or
 * `must-revalidate` → not stored (RFC 9111; nginx does not check, see
 * {@link CachePolicyOptions.authorized}). Each header rule is off when named in
 * `ignoreHeaders`. The request method is not looked at (that is the caller's
 * `proxy_cache_methods`).
 *
 * @param status Upstream response status.
 * @param headers Upstream response headers.
 * @param request The client request (only its headers are read).
 * @param policy A {@link compilePolicy} result, or options to compile on the spot.
 * @param now Current time in milliseconds. @default Date.now()
 * @example
 * ```ts
 * const policy = compilePolicy({ valid: '1m' });
 * freshness(200, { 'cache-control': 'max-age=60, stale-if-error=30' }, req, policy, 0);
 * // { store: true, source: 'cache-control', ttl: 60000, expiresAt: 60000, staleIfError: 30000, ... }
 * freshness(500, {}, req, policy, 0).store; // false: a time alone covers 200, 301, 302
 * ```
 */
export function freshness(
  status: number,
  headers: HeadersInput,
  request: FreshnessRequest,
  policy: CachePolicy | CachePolicyOptions = {},
  now: number = Date.now(),
): Freshness {
  const p = compiled.has(policy as CachePolicy) ? (policy as CachePolicy) : compilePolicy(policy as CachePolicyOptions);
  const ignored = p.ignoreHeaders;
  let ttl: number | undefined;
  let source: TtlSource | undefined;
  let swr = 0;
  let sie = 0;

  // 1. X-Accel-Expires
  if (!ignored.has('x-accel-expires')) {
    const first = headerValues(headers, 'x-accel-expires')[0];
    const raw = first === undefined ? undefined : first.split(',')[0]!.trim();
    if (raw !== undefined) {
      const m = /^(@?)(\d+)$/.exec(raw);
      // `@0` is no time at all, as in nginx: the other rules decide.
      if (m !== null && !(m[1] === '@' && Number(m[2]) === 0)) {
        const n = Number(m[2]) * 1000;
        if (m[1] !== '@' && n === 0) return notStored('x-accel-expires', now);
        // `@T` already past: stored expired from the start, as nginx does (EXPIRED next, not MISS).
        ttl = m[1] === '@' ? Math.max(0, n - now) : n;
        source = 'x-accel-expires';
      }
    }
  }

  // 2. Cache-Control
  let cc: Map<string, string | undefined> | undefined;
  if (!ignored.has('cache-control')) {
    const values = headerValues(headers, 'cache-control');
    if (values.length > 0) {
      cc = parseCacheControl(values.join(','));
      for (const name of ['stale-while-revalidate', 'stale-if-error', ...(ttl === undefined ? ['s-maxage', 'max-age'] : [])]) {
        if (cc.has(name) && seconds(cc.get(name)) === undefined) return notStored('cache-control-invalid', now);
      }
      if (cc.has('stale-while-revalidate')) swr = sie = seconds(cc.get('stale-while-revalidate'))! * 1000;
      if (cc.has('stale-if-error')) sie = seconds(cc.get('stale-if-error'))! * 1000;
      if (ttl === undefined) {
        if (cc.has('no-cache') || cc.has('no-store') || cc.has('private')) return notStored('cache-control-private', now);
        const age = cc.has('s-maxage') ? seconds(cc.get('s-maxage')) : cc.has('max-age') ? seconds(cc.get('max-age')) : undefined;
        if (age === 0) return notStored('cache-control-zero', now);
        if (age !== undefined) {
          ttl = age * 1000;
          source = 'cache-control';
        }
      }
    }
  }

  // 3. Expires
  if (ttl === undefined && !ignored.has('expires')) {
    const first = headerValues(headers, 'expires')[0];
    if (first !== undefined) {
      const at = parseHttpDate(first);
      if (at === undefined || at <= now) return notStored('expires', now);
      ttl = at - now;
      source = 'expires';
    }
  }

  // 4. valid
  if (ttl === undefined && p.valid !== undefined) {
    const t = validTtl(p.valid, status);
    if (t !== undefined && t > 0) {
      ttl = t;
      source = 'valid';
    }
  }
  if (ttl === undefined) return notStored('no-ttl', now);

  if (!ignored.has('set-cookie') && headerValues(headers, 'set-cookie').length > 0) return notStored('set-cookie', now);

  let vary: readonly string[] = EMPTY;
  if (!ignored.has('vary')) {
    const values = headerValues(headers, 'vary');
    if (values.length > 0) {
      const text = values.join(', ');
      const names = text
        .split(',')
        .map((v) => v.trim().toLowerCase())
        .filter((v) => v !== '');
      if (names.includes('*')) return notStored('vary-star', now);
      if (Buffer.byteLength(text) > MAX_VARY_LENGTH) return notStored('vary-too-long', now);
      if (names.length > 0) vary = Object.freeze(names);
    }
  }

  if (!p.authorized && headerValues(request.headers, 'authorization').length > 0) {
    if (cc === undefined || !(cc.has('public') || cc.has('s-maxage') || cc.has('must-revalidate'))) {
      return notStored('authorization', now);
    }
  }

  return Object.freeze({
    store: true,
    reason: undefined,
    source,
    ttl,
    expiresAt: now + ttl,
    staleWhileRevalidate: swr,
    staleIfError: sie,
    vary,
  });
}

const EMPTY: readonly string[] = Object.freeze([]);

function notStored(reason: NotStoredReason, now: number): Freshness {
  return Object.freeze({ store: false, reason, source: undefined, ttl: 0, expiresAt: now, staleWhileRevalidate: 0, staleIfError: 0, vary: EMPTY });
}

/**
 * All values of one header, in order. From an object, `name` (lowercase) is read
 * directly; from a raw list, every pair whose name matches case-insensitively.
 * @example
 * ```ts
 * headerValues(['Vary', 'a', 'vary', 'b'], 'vary'); // ['a', 'b']
 * headerValues({ 'set-cookie': ['a=1', 'b=2'] }, 'set-cookie'); // ['a=1', 'b=2']
 * ```
 */
export function headerValues(headers: HeadersInput, name: string): string[] {
  if (Array.isArray(headers)) {
    const out: string[] = [];
    for (let i = 0; i + 1 < headers.length; i += 2) {
      if ((headers[i] as string).toLowerCase() === name) out.push(String(headers[i + 1]));
    }
    return out;
  }
  const value = (headers as Readonly<Record<string, string | readonly string[] | number | undefined>>)[name];
  if (value === undefined) return [];
  if (Array.isArray(value)) return value.map(String);
  return [String(value)];
}

/** Splits a Cache-Control value into lowercase directive names and raw values; the first occurrence of a directive wins. */
function parseCacheControl(text: string): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  for (const part of text.match(DIRECTIVE) ?? []) {
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (name !== '' && !out.has(name)) out.set(name, eq < 0 ? undefined : part.slice(eq + 1).trim());
  }
  return out;
}

/** One comma-separated element, keeping commas inside quoted strings. */
const DIRECTIVE = /(?:[^,"]|"(?:[^"\\]|\\.)*"?)+/g;

/** A delta-seconds value: digits only, as nginx accepts them. */
function seconds(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  return Number(value);
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const IMF = /^[a-z]{3}, (\d{2}) ([a-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) gmt$/i;
const RFC850 = /^[a-z]+, (\d{2})-([a-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) gmt$/i;
const ASCTIME = /^[a-z]{3} ([a-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/i;

/**
 * Parses an HTTP date (IMF-fixdate, RFC 850 or asctime, RFC 9110 §5.6.7) to
 * milliseconds since the epoch; `undefined` when it is none of them.
 * @example
 * ```ts
 * parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT'); // 784111777000
 * parseHttpDate('0'); // undefined
 * ```
 */
export function parseHttpDate(text: string): number | undefined {
  const s = text.trim();
  let parts: [day: string, month: string, year: number, hour: string, minute: string, second: string];
  let m: RegExpExecArray | null;
  if ((m = IMF.exec(s)) !== null) {
    parts = [m[1]!, m[2]!, Number(m[3]), m[4]!, m[5]!, m[6]!];
  } else if ((m = RFC850.exec(s)) !== null) {
    const yy = Number(m[3]);
    parts = [m[1]!, m[2]!, yy < 70 ? 2000 + yy : 1900 + yy, m[4]!, m[5]!, m[6]!];
  } else if ((m = ASCTIME.exec(s)) !== null) {
    parts = [m[2]!, m[1]!, Number(m[6]), m[3]!, m[4]!, m[5]!];
  } else {
    return undefined;
  }
  const month = MONTHS.indexOf(parts[1].toLowerCase());
  const day = Number(parts[0].trim());
  const hour = Number(parts[3]),
    minute = Number(parts[4]),
    second = Number(parts[5]);
  if (month < 0 || day < 1 || hour > 23 || minute > 59 || second > 60) return undefined;
  const ms = Date.UTC(parts[2], month, day, hour, minute, second);
  if (new Date(ms).getUTCDate() !== day && second !== 60) return undefined;
  return ms;
}
