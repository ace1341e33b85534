// limitRequests(): nginx's limit_req. Each limit is a zone (a key, a rate, a table of states) with
// its own burst and delay; a request is checked against every limit of the middleware as nginx
// checks the limit_req directives of a location: each zone is looked up in order, only the last one
// accounted at once, the others held; a rejection lets the held ones go unaccounted (a rejected
// request counts nowhere); otherwise they are accounted and the longest delay of all applies.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Next } from '../core/chain.ts';
import { InvalidOptionError, RateLimitedError } from '../core/errors.ts';
import { type Exchange, exchange } from '../core/exchange.ts';
import { booleanOption, integerOption, objectOption, optionPath } from '../core/options.ts';
import {
  clockOption,
  eventMethods,
  keyOption,
  type LimitKey,
  type LimitZones,
  limitsOption,
  maxKeysOption,
  recordStatus,
  statusOption,
  unnamedLimit,
  withZones,
  requestKeys,
} from './common.ts';
import type { SyncHandle } from '../sync/index.ts';
import { DelayQueue, type LimitClock, responseOver } from './delay.ts';
import { SharedBuckets, sharedOption } from './shared.ts';
import { LOOKUP, parseRate, type Rate, RequestZone } from './zone.ts';

export type { Rate } from './zone.ts';
export type { LimitClock } from './delay.ts';
export type { LimitEvents } from './shared.ts';
export { DEFAULT_LIMIT_MAX_KEYS, DEFAULT_LIMIT_STATUS, type LimitKey, type LimitZones } from './common.ts';

/** Default {@link RequestLimit.name} of a middleware's first limit (the others get `_2`, `_3`...). */
export const DEFAULT_LIMIT_REQ_ZONE = 'limit_req';

/**
 * One limit: a zone of states per key, draining at `rate` (nginx `limit_req_zone key zone=name
 * rate=`), and how much it lets above the rate (`limit_req zone=name burst= nodelay|delay=`).
 *
 * @example
 * ```ts
 * const perIp: RequestLimit = { key: '$remote_addr', rate: '10r/s', burst: 20, nodelay: true, name: 'per_ip' };
 * ```
 */
export interface RequestLimit {
  /** What requests are counted by (nginx `limit_req_zone`'s key). */
  key: LimitKey;
  /**
   * The rate the excess drains at, `'<n>r/s'` or `'<n>r/m'` (nginx `rate=`; per minute is kept in
   * integer milli-requests per second, as nginx: `'1r/m'` is 0.016 r/s).
   */
  rate: Rate;
  /** Requests a key may have above the rate before further ones are rejected (nginx `burst=`). @default 0 */
  burst?: number | undefined;
  /** Requests above the rate pass at once, up to `burst`, instead of being delayed (nginx `nodelay`). @default false */
  nodelay?: boolean | undefined;
  /** Requests above the rate that pass at once before the next ones are delayed (nginx `delay=`). @default 0 */
  delay?: number | undefined;
  /** The zone's name, in errors, `monitor()` and the keys shared through `sync`. @default 'limit_req' (the second limit of a middleware 'limit_req_2'...) */
  name?: string | undefined;
  /**
   * The most keys the zone keeps states for (nginx: the zone's size). A new key takes the place of
   * one idle for a minute and drained, else of the least recently used; when every state is in
   * use, the request is rejected, as nginx does with a full zone.
   * @default 100000
   */
  maxKeys?: number | undefined;
}

/**
 * Options of {@link limitRequests}: one limit's fields, or `limits`, several that all apply to each
 * request (the strictest wins, as several `limit_req` directives in one nginx location).
 *
 * @example
 * ```ts
 * const options: LimitRequestsOptions = { key: '$remote_addr', rate: '10r/s', burst: 5, status: 429 };
 * ```
 */
export interface LimitRequestsOptions extends Partial<RequestLimit> {
  /** Several limits, each checked for every request: a rejection by any rejects it; the longest delay applies. Instead of the fields of one. */
  limits?: readonly RequestLimit[] | undefined;
  /** Status of a rejected request's {@link RateLimitedError} (nginx `limit_req_status`); 429 Too Many Requests is the common choice. @default 503 */
  status?: number | undefined;
  /** Decide and count, but let every request through at once (nginx `limit_req_dry_run`); `$limit_req_status` says `*_DRY_RUN`. @default false */
  dryRun?: boolean | undefined;
  /** Time and timers. @default `performance.now()` and the real (unref'd) timers */
  clock?: LimitClock | undefined;
  /**
   * Shares the limits with every instance on the same sync handle (Redis): each request is decided
   * by nginx's arithmetic on the shared buckets, in one atomic round trip, so N instances enforce one
   * limit, not N. Each limit must have a `name`: the zone the instances share. While Redis cannot be
   * reached the middleware limits with its own zones at once (each instance on its own: never no
   * limit, never an error) and emits `'fallback'`; it tries Redis again with one request a second
   * and emits `'shared'` once back. On Redis Cluster, every zone of a middleware is in the hash slot
   * of its first zone. @default none: the limits are this process's
   */
  sync?: SyncHandle | undefined;
}

/** Counters of one zone of {@link limitRequests} (NGINX Plus `/api/9/http/limit_reqs/{zone}`). */
export interface LimitRequestsStats {
  /** Requests neither delayed nor rejected by the zone. */
  passed: number;
  /** Requests delayed. */
  delayed: number;
  /** Requests rejected. */
  rejected: number;
  /** Requests that would have been delayed, with `dryRun`. */
  delayedDryRun: number;
  /** Requests that would have been rejected, with `dryRun`. */
  rejectedDryRun: number;
}

/**
 * The middleware {@link limitRequests} returns, with the counters `monitor({ limits })` reads.
 *
 * @example
 * ```ts
 * const limit = limitRequests({ key: '$remote_addr', rate: '10r/s', name: 'per_ip' });
 * setInterval(() => console.log(limit.stats().per_ip?.rejected), 10_000).unref();
 * ```
 */
export interface LimitRequestsMiddleware extends LimitZones<LimitRequestsStats> {
  /** Marks a limitRequests() middleware (monitor() tells the kinds apart by it). */
  readonly kind: 'limit_req';
  /** Requests waiting for their delay now. */
  readonly waiting: number;
}

const LIMIT_FIELDS = ['key', 'rate', 'burst', 'nodelay', 'delay', 'name', 'maxKeys'] as const satisfies ReadonlyArray<keyof RequestLimit>;
const OPTIONS = [...LIMIT_FIELDS, 'limits', 'status', 'dryRun', 'clock', 'sync'] as const satisfies ReadonlyArray<keyof LimitRequestsOptions>;

/** The longest burst or delay, in requests: its milli-requests stay safe integers. */
const MAX_BURST = 1_000_000_000;

/** A limit checked: its zone, and burst and delay in milli-requests (nginx's `limit->burst`, `limit->delay`). */
interface Limit {
  readonly name: string;
  readonly zone: RequestZone;
  readonly key: (req: IncomingMessage, ex: Exchange) => string;
  readonly burst: number;
  readonly delay: number;
  readonly stats: LimitRequestsStats;
}

function limitOption(path: string, fields: Record<string, unknown>, name: string): Limit {
  const at = (key: string): string => optionPath(path, key);
  const key = keyOption(fields.key, at('key'));
  const rate = parseRate(fields.rate, at('rate'));
  const burst = integerOption(fields.burst, at('burst'), 0, { max: MAX_BURST });
  const nodelay = booleanOption(fields.nodelay, at('nodelay'), false);
  if (nodelay && fields.delay !== undefined)
    throw new InvalidOptionError(at('delay'), '', fields.delay, `Invalid option "${at('delay')}": give either "nodelay" or "delay", not both`);
  const delay = integerOption(fields.delay, at('delay'), 0, { max: MAX_BURST });
  return {
    name,
    zone: new RequestZone(name, rate, maxKeysOption(fields.maxKeys, at('maxKeys'))),
    key,
    burst: burst * 1000,
    // nginx's nodelay: a threshold no excess reaches.
    delay: nodelay ? Number.MAX_SAFE_INTEGER : delay * 1000,
    stats: zeroStats(),
  };
}

function zeroStats(): LimitRequestsStats {
  return { passed: 0, delayed: 0, rejected: 0, delayedDryRun: 0, rejectedDryRun: 0 };
}

/**
 * Limits the rate of requests per key, as nginx's `limit_req`: a leaky bucket per key that drains
 * at `rate`; a request above the rate waits until the bucket has drained enough for it (or passes
 * at once, with `nodelay`, or within `delay`), and one more than `burst` above it is rejected with a
 * {@link RateLimitedError} (status 503, or `status`) through `next(err)`. Rejected requests are not
 * counted. The arithmetic is nginx's, in milli-requests, so the same requests pass, wait and fail.
 * Mount one middleware on several routes to share its zones between them, as nginx's zones are.
 * `exchange(req).limitStatus.req` is nginx's `$limit_req_status`.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { balance, createPool, limitRequests } from 'switchyard-proxy';
 *
 * const app = express();
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }] });
 * app.use('/api', limitRequests({ key: '$remote_addr', rate: '10r/s', burst: 20, nodelay: true, status: 429 }), balance(pool));
 * ```
 * @throws InvalidOptionError on an invalid option.
 */
export function limitRequests(options: LimitRequestsOptions): LimitRequestsMiddleware {
  const o = objectOption(options, '', OPTIONS, 'an object { key, rate } or { limits }');
  const limits = limitsOption(o, LIMIT_FIELDS, 'limits { key, rate }', DEFAULT_LIMIT_REQ_ZONE, limitOption);
  const status = statusOption(o.status);
  const dryRun = booleanOption(o.dryRun, 'dryRun', false);
  const clock = clockOption(o.clock);
  const queue = new DelayQueue(clock);
  const last = limits.length - 1;
  const shared = o.sync === undefined ? undefined : new SharedBuckets(sharedOption(o.sync, unnamedLimit(o)), limits, clock);
  /** The slot each limit holds while the request's later limits are looked up (-1: none). */
  const held = new Int32Array(limits.length);
  /** What each limit decided for the request being settled: its excess, -1 when its key was empty. */
  const excesses = new Float64Array(limits.length);

  const reject = (ex: Exchange, limit: Limit, next: Next): void => {
    if (dryRun) {
      limit.stats.rejectedDryRun++;
      recordStatus(ex, 'req', 'REJECTED_DRY_RUN');
      return next();
    }
    limit.stats.rejected++;
    recordStatus(ex, 'req', 'REJECTED');
    next(new RateLimitedError(limit.name, status));
  };

  /**
   * nginx's handler on this process's zones: each limit with a key looked up in order, the last one
   * accounted at once and the others held, then accounted unless one rejected. Fills `excesses`;
   * returns the index of the limit that rejected, or -1.
   */
  const local = (keys: readonly string[]): number => {
    const now = Math.floor(clock.now());
    let rc = -1;
    let n = 0;
    for (; n <= last; n++) {
      held[n] = -1;
      excesses[n] = -1;
      const key = keys[n]!;
      if (key === '') continue;
      const limit = limits[n]!;
      rc = limit.zone.lookup(key, now, limit.burst, n === last);
      if (rc !== LOOKUP.again) break;
      held[n] = limit.zone.slot;
    }
    if (rc === LOOKUP.busy || rc === LOOKUP.error) {
      unlock(limits, held, n);
      return n;
    }
    if (rc === LOOKUP.ok) excesses[n] = limits[n]!.zone.excess;
    while (n-- > 0) {
      const slot = held[n]!;
      if (slot === -1) continue;
      held[n] = -1;
      excesses[n] = limits[n]!.zone.account(slot, now);
    }
    return -1;
  };

  /** Answers the request from what the limits decided: rejected, or let through at once or after the longest delay any asks. */
  const settle = (ex: Exchange, res: ServerResponse, next: Next, rejected: number, excess: ArrayLike<number>): void => {
    if (rejected !== -1) return reject(ex, limits[rejected]!, next);
    let delay = 0;
    for (let i = 0; i <= last; i++) {
      if (excess[i]! < 0) continue;
      const d = count(limits[i]!, excess[i]!);
      if (d > delay) delay = d;
    }
    // A delay that rounds to 0 ms passes, as nginx's does (`if (!delay)`).
    if (delay === 0) {
      recordStatus(ex, 'req', 'PASSED');
      return next();
    }
    if (dryRun) {
      recordStatus(ex, 'req', 'DELAYED_DRY_RUN');
      return next();
    }
    recordStatus(ex, 'req', 'DELAYED');
    queue.add(delay, res, () => next());
  };

  const middleware = function limitRequests(req: IncomingMessage, res: ServerResponse, next: Next): void {
    const ex = exchange(req);
    let keys: string[] | undefined;
    try {
      keys = requestKeys(limits, req, ex, 65_535);
    } catch (err) {
      return next(err);
    }
    // No limit had a key: not limited, and `$limit_req_status` stays empty.
    if (keys === undefined) return next();
    if (shared?.mode.ready() === true) {
      shared.check(keys).then(
        // A client gone while Redis decided: nothing more to do.
        (decided) => (responseOver(res) ? undefined : settle(ex, res, next, decided.rejected, decided.excess)),
        (err: unknown) => {
          shared.mode.failed(err);
          settle(ex, res, next, local(keys), excesses);
        },
      );
      return;
    }
    settle(ex, res, next, local(keys), excesses);
  };

  /** The delay a zone asks of a request it let through with `excess` (ms, nginx's integer arithmetic), counted in its statistics. */
  const count = (limit: Limit, excess: number): number => {
    const delay = excess > limit.delay ? Math.floor(((excess - limit.delay) * 1000) / limit.zone.rate) : 0;
    if (delay === 0) limit.stats.passed++;
    else if (dryRun) limit.stats.delayedDryRun++;
    else limit.stats.delayed++;
    return delay;
  };

  return withZones(middleware, 'limit_req', limits, zeroStats, {
    waiting: { get: () => queue.size, enumerable: true },
    ...eventMethods(shared?.mode.events),
  });
}

/** Lets go of the states limits `0..n-1` hold (nginx's `ngx_http_limit_req_unlock`). */
function unlock(limits: readonly Limit[], held: Int32Array, n: number): void {
  while (n-- > 0) {
    const slot = held[n]!;
    if (slot === -1) continue;
    limits[n]!.zone.unlock(slot);
    held[n] = -1;
  }
}
