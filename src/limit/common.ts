// What limitRequests() and limitConnections() share: the options every limit takes (key, name,
// status, clock), the parsing of one limit or of `limits`, the exchange's `limitStatus`, and the
// zones' counters the monitor reads.
import type { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Middleware } from '../core/chain.ts';
import { InvalidOptionError } from '../core/errors.ts';
import type { Exchange } from '../core/exchange.ts';
import { integerOption, objectOption, optionPath, stringOption } from '../core/options.ts';
import { compileTemplate } from '../core/variables.ts';
import { type LimitClock, realLimitClock } from './delay.ts';
import type { LimitEvents } from './shared.ts';

/** Default {@link LimitRequestsOptions.status} and {@link LimitConnectionsOptions.status}: nginx's `limit_req_status` and `limit_conn_status`. */
export const DEFAULT_LIMIT_STATUS = 503;
/** Default {@link RequestLimit.maxKeys} and {@link ConnectionLimit.maxKeys}: about the states of nginx's 10 MB zone (8,000 to 16,000 per MB). */
export const DEFAULT_LIMIT_MAX_KEYS = 100_000;

/**
 * What a limit is keyed by: a string with nginx variables (`'$remote_addr'`, `'$http_x_api_key'`,
 * `'$remote_addr$uri'`), or a function of the request. A request whose key is empty is not limited
 * by it (nor is one whose key is too long: 65,535 characters for limitRequests(), 255 for
 * limitConnections(), as nginx).
 */
export type LimitKey = string | ((req: IncomingMessage, ex: Exchange) => string);

/**
 * What both limit middlewares have: their zones and their counters (`monitor({ limits })` reads them).
 *
 * @example
 * ```ts
 * const show = (limit: LimitZones<object>) => limit.zones.map((zone) => [zone, limit.stats()[zone]]);
 * ```
 */
export interface LimitZones<Stats> extends Middleware {
  /** The names of its zones, in the order they are checked. */
  readonly zones: readonly string[];
  /** The counters of each zone, by name. */
  stats(): Record<string, Stats>;
  /** Sets the counters of `zone` (of every zone when none is named) back to zero. */
  resetStats(zone?: string): void;
  /** Listens to the events of a middleware with `sync`: `'fallback'` (Redis lost: limits per instance), `'shared'` (back). */
  on<E extends keyof LimitEvents>(event: E, listener: (...args: LimitEvents[E]) => void): this;
  /** Stops listening. */
  off<E extends keyof LimitEvents>(event: E, listener: (...args: LimitEvents[E]) => void): this;
}

/** `$limit_req_status` and `$limit_conn_status` values, ranked: of two middlewares', the exchange keeps the stricter. */
const RANK: Record<string, number> = { PASSED: 0, DELAYED_DRY_RUN: 1, DELAYED: 2, REJECTED_DRY_RUN: 3, REJECTED: 4 };

/** Records `status` on the exchange unless a stricter one is there (another limit middleware before this one). @internal */
export function recordStatus(ex: Exchange, kind: 'req' | 'conn', status: string): void {
  const limits = (ex.limitStatus ??= {});
  const was = limits[kind];
  if (was === undefined || RANK[status]! > RANK[was]!) limits[kind] = status;
}

/** A key option compiled: a template, or the user's function with what it returns made a string. @internal */
export function keyOption(value: unknown, path: string): (req: IncomingMessage, ex: Exchange) => string {
  if (value === undefined) throw new InvalidOptionError(path, "nginx variables such as '$remote_addr', or a function (req, ex) => string", value);
  if (typeof value === 'function') {
    const fn = value as (req: IncomingMessage, ex: Exchange) => unknown;
    return (req, ex) => {
      const key = fn(req, ex);
      return typeof key === 'string' ? key : key === undefined || key === null ? '' : String(key);
    };
  }
  if (typeof value !== 'string') throw new InvalidOptionError(path, "nginx variables such as '$remote_addr', or a function (req, ex) => string", value);
  const template = compileTemplate(value, path);
  return (_req, ex) => template(ex);
}

/** The `maxKeys` option of a limit. @internal */
export function maxKeysOption(value: unknown, path: string): number {
  return integerOption(value, path, DEFAULT_LIMIT_MAX_KEYS, { min: 1, max: 100_000_000 });
}

/** The status option of both limits: 400 to 599, as nginx's `limit_req_status` and `limit_conn_status`. @internal */
export function statusOption(value: unknown): number {
  return integerOption(value, 'status', DEFAULT_LIMIT_STATUS, { min: 400, max: 599 });
}

/** The clock option of both limits. @internal */
export function clockOption(value: unknown): LimitClock {
  if (value === undefined) return realLimitClock;
  const c = value as Partial<LimitClock> | null;
  if (c === null || typeof c !== 'object' || typeof c.now !== 'function' || typeof c.setTimeout !== 'function' || typeof c.clearTimeout !== 'function')
    throw new InvalidOptionError('clock', 'an object with now, setTimeout and clearTimeout', value);
  return c as LimitClock;
}

/** A limit as both middlewares keep it: its zone's name and its counters. @internal */
export interface LimitBase<Stats> {
  readonly name: string;
  readonly stats: Stats;
}

/**
 * Each limit's key for the request (`''`, not limited, when it is longer than `maxLength`), or
 * `undefined` when no limit has a key (the request is not limited at all). Throws what a key
 * function throws.
 * @internal
 */
export function requestKeys(
  limits: readonly { readonly key: (req: IncomingMessage, ex: Exchange) => string }[],
  req: IncomingMessage,
  ex: Exchange,
  maxLength: number,
): string[] | undefined {
  const keys: string[] = [];
  let applied = 0;
  for (const limit of limits) {
    let key = limit.key(req, ex);
    if (key.length > maxLength) key = '';
    if (key !== '') applied++;
    keys.push(key);
  }
  return applied === 0 ? undefined : keys;
}

/**
 * The limits of a middleware's options `o`: `o.limits` (each an object of `fields`), or the fields
 * of one limit in `o` itself, each read by `parse(path, fields, name)` where `name` is the zone's
 * name (`fallback`, then `fallback_2`...); names unique within the middleware.
 * @internal
 */
export function limitsOption<L extends LimitBase<unknown>>(
  o: Record<string, unknown>,
  fields: readonly string[],
  expected: string,
  fallback: string,
  parse: (path: string, fields: Record<string, unknown>, name: string) => L,
): L[] {
  const one = (path: string, i: number, f: Record<string, unknown>): L => {
    const at = optionPath(path, 'name');
    const name = stringOption(f.name, at, i === 0 ? fallback : `${fallback}_${i + 1}`, {
      pattern: /^[^/\s]+$/,
      expected: 'a non-empty name without "/" or spaces',
    });
    return parse(path, f, name);
  };
  let limits: L[];
  if (o.limits !== undefined) {
    for (const field of fields)
      if (o[field] !== undefined) throw new InvalidOptionError(field, '', o[field], `Invalid option "${field}": give it in each of "limits", not beside them`);
    if (!Array.isArray(o.limits) || o.limits.length === 0) throw new InvalidOptionError('limits', `a non-empty array of ${expected}`, o.limits);
    limits = o.limits.map((entry: unknown, i) => {
      const path = optionPath('limits', i);
      return one(path, i, objectOption(entry, path, fields, expected));
    });
  } else {
    limits = [one('', 0, o)];
  }
  const names = new Set<string>();
  for (const [i, l] of limits.entries()) {
    if (names.has(l.name)) throw new InvalidOptionError(optionPath(optionPath('limits', i), 'name'), 'a name no other limit of the middleware has', l.name);
    names.add(l.name);
  }
  return limits;
}

/** Gives `middleware` the members of {@link LimitZones} over `limits`, and `extra` ones. @internal */
export function withZones<Stats extends object, M>(
  middleware: Middleware,
  kind: string,
  limits: readonly LimitBase<Stats>[],
  zero: () => Stats,
  extra: PropertyDescriptorMap,
): M {
  return Object.defineProperties(middleware, {
    kind: { value: kind, enumerable: true },
    zones: { value: Object.freeze(limits.map((l) => l.name)), enumerable: true },
    stats: { value: () => Object.fromEntries(limits.map((l) => [l.name, { ...l.stats }])) },
    resetStats: {
      value: (zone?: string) => {
        for (const l of limits) if (zone === undefined || l.name === zone) Object.assign(l.stats, zero());
      },
    },
    ...extra,
  }) as unknown as M;
}

/** The path of the first limit without a `name` in the options `o`, or `undefined` when every limit has one. @internal */
export function unnamedLimit(o: Record<string, unknown>): string | undefined {
  if (!Array.isArray(o.limits)) return o.name === undefined ? 'name' : undefined;
  const i = o.limits.findIndex((l: { name?: unknown }) => l.name === undefined);
  return i === -1 ? undefined : `limits[${i}].name`;
}

/** The `on` and `off` methods of a middleware with `sync` (without: they listen to nothing). @internal */
export function eventMethods(events: EventEmitter<LimitEvents> | undefined): PropertyDescriptorMap {
  const method = (name: 'on' | 'off') => ({
    value(this: unknown, event: keyof LimitEvents, listener: (...args: never[]) => void) {
      events?.[name](event, listener);
      return this;
    },
  });
  return { on: method('on'), off: method('off') };
}
