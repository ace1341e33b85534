// limitConnections(): nginx's limit_conn. A request counts in its key's state from the moment it
// passes until its response is finished or its connection closed (nginx: while a request whose
// header was read is being processed); each HTTP/2 stream is a request of its own. A rejection
// takes back what the request's earlier limits counted.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Next } from '../core/chain.ts';
import { ConnectionLimitedError, InvalidOptionError } from '../core/errors.ts';
import { type Exchange, exchange } from '../core/exchange.ts';
import { onConnectionClose } from '../core/connection.ts';
import { booleanOption, integerOption, objectOption, optionPath } from '../core/options.ts';
import type { SyncHandle } from '../sync/index.ts';
import {
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
import { responseOver } from './delay.ts';
import { SharedGauges, sharedOption } from './shared.ts';

/** Default {@link ConnectionLimit.name} of a middleware's first limit (the others get `_2`, `_3`...). */
export const DEFAULT_LIMIT_CONN_ZONE = 'limit_conn';

/**
 * One connection limit: at most `max` requests in progress per key (nginx `limit_conn_zone key
 * zone=name` and `limit_conn name max`).
 *
 * @example
 * ```ts
 * const perIp: ConnectionLimit = { key: '$remote_addr', max: 10, name: 'conn_per_ip' };
 * ```
 */
export interface ConnectionLimit {
  /** What requests are counted by (nginx `limit_conn_zone`'s key). An empty key, or one longer than 255 characters, is not limited (nginx). */
  key: LimitKey;
  /** Requests a key may have in progress at once (nginx `limit_conn`'s number). */
  max: number;
  /** The zone's name, in errors and `monitor()`. @default 'limit_conn' (the second limit of a middleware 'limit_conn_2'...) */
  name?: string | undefined;
  /** The most keys counted at once (nginx: the zone's size); a request with a new key when the table is full is rejected, as nginx does. @default 100000 */
  maxKeys?: number | undefined;
}

/**
 * Options of {@link limitConnections}: one limit's fields, or `limits`, several that all apply.
 *
 * @example
 * ```ts
 * const options: LimitConnectionsOptions = { key: '$remote_addr', max: 10, status: 429 };
 * ```
 */
export interface LimitConnectionsOptions extends Partial<ConnectionLimit> {
  /** Several limits, each checked for every request: a rejection by any rejects it. Instead of the fields of one. */
  limits?: readonly ConnectionLimit[] | undefined;
  /** Status of a rejected request's {@link ConnectionLimitedError} (nginx `limit_conn_status`). @default 503 */
  status?: number | undefined;
  /** Decide and count, but let every request through (nginx `limit_conn_dry_run`); `$limit_conn_status` says `REJECTED_DRY_RUN`. @default false */
  dryRun?: boolean | undefined;
  /**
   * Counts the requests in progress of every instance on the same sync handle (Redis): a request
   * passes if the instances together have fewer than `max` for its key (one round trip; one more,
   * off the request's way, when it ends). Each limit must have a `name`. While Redis cannot be
   * reached each instance limits its own requests at once (`'fallback'` event), back to the shared
   * count once a call goes through (`'shared'`). An instance's count lives 30 s in Redis unless
   * written again (every 10 s): an instance that dies lets go of its requests within 30 s.
   * @default none: the limits are this process's
   */
  sync?: SyncHandle | undefined;
}

/** Counters of one zone of {@link limitConnections} (NGINX Plus `/api/9/http/limit_conns/{zone}`). */
export interface LimitConnectionsStats {
  /** Requests that passed the zone. */
  passed: number;
  /** Requests rejected. */
  rejected: number;
  /** Requests that would have been rejected, with `dryRun`. */
  rejectedDryRun: number;
}

/**
 * The middleware {@link limitConnections} returns, with the counters `monitor({ limits })` reads.
 *
 * @example
 * ```ts
 * const conns = limitConnections({ key: '$remote_addr', max: 10, name: 'conn_per_ip' });
 * console.log(conns.active('conn_per_ip'));
 * ```
 */
export interface LimitConnectionsMiddleware extends LimitZones<LimitConnectionsStats> {
  /** Marks a limitConnections() middleware (monitor() tells the kinds apart by it). */
  readonly kind: 'limit_conn';
  /** Requests in progress counted in `zone` (the first zone when none is named), over all its keys, in this process. */
  active(zone?: string): number;
}

const LIMIT_FIELDS = ['key', 'max', 'name', 'maxKeys'] as const satisfies ReadonlyArray<keyof ConnectionLimit>;
const OPTIONS = [...LIMIT_FIELDS, 'limits', 'status', 'dryRun', 'sync'] as const satisfies ReadonlyArray<keyof LimitConnectionsOptions>;

/** A zone of limit_conn: requests in progress per key; a key leaves the table when its count is back to 0. @internal */
export class ConnectionZone {
  readonly name: string;
  readonly maxKeys: number;
  readonly counts = new Map<string, number>();
  /** Requests in progress over all keys. */
  active = 0;
  constructor(name: string, maxKeys: number) {
    this.name = name;
    this.maxKeys = maxKeys;
  }

  /** Counts one more request for `key` unless it has `max` already (or the table is full): whether it did. */
  acquire(key: string, max: number): boolean {
    const n = this.counts.get(key);
    if (n === undefined) {
      if (this.counts.size >= this.maxKeys) return false;
      this.counts.set(key, 1);
    } else {
      if (n >= max) return false;
      this.counts.set(key, n + 1);
    }
    this.active++;
    return true;
  }

  release(key: string): void {
    const n = this.counts.get(key);
    if (n === undefined) return;
    this.active--;
    if (n <= 1) this.counts.delete(key);
    else this.counts.set(key, n - 1);
  }
}

interface Limit {
  readonly name: string;
  readonly zone: ConnectionZone;
  readonly key: (req: IncomingMessage, ex: Exchange) => string;
  readonly max: number;
  readonly stats: LimitConnectionsStats;
}

function limitOption(path: string, fields: Record<string, unknown>, name: string): Limit {
  const at = (key: string): string => optionPath(path, key);
  const key = keyOption(fields.key, at('key'));
  if (fields.max === undefined) throw new InvalidOptionError(at('max'), 'an integer >= 1', undefined);
  return {
    name,
    key,
    max: integerOption(fields.max, at('max'), 1, { min: 1, max: 1_000_000_000 }),
    zone: new ConnectionZone(name, maxKeysOption(fields.maxKeys, at('maxKeys'))),
    stats: zeroStats(),
  };
}

function zeroStats(): LimitConnectionsStats {
  return { passed: 0, rejected: 0, rejectedDryRun: 0 };
}

/** What one request holds in the zones of one middleware, given back when its response ends. */
class Hold {
  readonly #limits: readonly Limit[];
  readonly #keys: readonly string[];
  readonly #shared: SharedGauges | undefined;
  /** Whether the shared gauges counted the request (else only this process did). */
  readonly #counted: boolean;
  #released = false;
  /** Stops the close of the HTTP/1 connection this hold is on from releasing it again. */
  unwatch: (() => void) | undefined;
  constructor(limits: readonly Limit[], keys: readonly string[], shared: SharedGauges | undefined, counted: boolean) {
    this.#limits = limits;
    this.#keys = keys;
    this.#shared = shared;
    this.#counted = counted;
  }
  /** Gives the places back, once, whichever of the response's and the connection's close comes first. */
  readonly release = (): void => {
    if (this.#released) return;
    this.#released = true;
    this.unwatch?.();
    for (let i = 0; i < this.#limits.length; i++) if (this.#keys[i] !== '') this.#limits[i]!.zone.release(this.#keys[i]!);
    if (this.#counted) this.#shared?.sub(this.#keys);
    else this.#shared?.stale(this.#keys);
  };
}

/**
 * Limits the requests in progress per key, as nginx's `limit_conn`: a request counts from the
 * moment it passes until its response is finished or its connection closes, so mount it before
 * what answers (balance()); one more than `max` for a key is rejected with a
 * {@link ConnectionLimitedError} (status 503, or `status`) through `next(err)`. Each HTTP/2 stream
 * counts as one. Mount one middleware on several routes to share its zones between them.
 * `exchange(req).limitStatus.conn` is nginx's `$limit_conn_status`.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { balance, createPool, limitConnections } from 'switchyard-proxy';
 *
 * const app = express();
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }] });
 * app.use('/downloads', limitConnections({ key: '$remote_addr', max: 2 }), balance(pool));
 * ```
 * @throws InvalidOptionError on an invalid option.
 */
export function limitConnections(options: LimitConnectionsOptions): LimitConnectionsMiddleware {
  const o = objectOption(options, '', OPTIONS, 'an object { key, max } or { limits }');
  const limits = limitsOption(o, LIMIT_FIELDS, 'limits { key, max }', DEFAULT_LIMIT_CONN_ZONE, limitOption);
  const status = statusOption(o.status);
  const dryRun = booleanOption(o.dryRun, 'dryRun', false);

  const shared = o.sync === undefined ? undefined : new SharedGauges(sharedOption(o.sync, unnamedLimit(o)), limits);

  const reject = (ex: Exchange, limit: Limit, next: Next): void => {
    if (dryRun) {
      limit.stats.rejectedDryRun++;
      recordStatus(ex, 'conn', 'REJECTED_DRY_RUN');
      return next();
    }
    limit.stats.rejected++;
    recordStatus(ex, 'conn', 'REJECTED');
    next(new ConnectionLimitedError(limit.name, status));
  };

  /** The request passed every limit (counted in this process's zones, and by the shared gauges when `counted`): it holds its places until its response ends. */
  const pass = (ex: Exchange, res: ServerResponse, next: Next, keys: readonly string[], counted: boolean): void => {
    for (let i = 0; i < limits.length; i++) if (keys[i] !== '') limits[i]!.stats.passed++;
    recordStatus(ex, 'conn', 'PASSED');
    const hold = new Hold(limits, keys, shared, counted);
    // A response already over (a client gone before the middleware ran, or while Redis answered)
    // holds nothing, and has nothing more to do.
    if (responseOver(res)) return hold.release();
    const socket = ex.req.httpVersionMajor === 1 ? (ex.req.socket as Socket | null) : null;
    if (socket !== null) {
      if (socket.destroyed) return hold.release();
      // Node 22 emits no 'close' on a pipelined response still queued behind another when the
      // connection closes (Node 24 does): the connection's close gives the places back too, or a
      // client could lock a key out.
      hold.unwatch = onConnectionClose(socket, hold.release);
    }
    res.once('close', hold.release);
    next();
  };

  /** nginx's handler on this process's zones: each limit with a key counts the request, unless one is full (then none does). */
  const local = (ex: Exchange, res: ServerResponse, next: Next, keys: readonly string[]): void => {
    for (let i = 0; i < limits.length; i++) {
      if (keys[i] === '') continue;
      if (limits[i]!.zone.acquire(keys[i]!, limits[i]!.max)) continue;
      for (let n = 0; n < i; n++) if (keys[n] !== '') limits[n]!.zone.release(keys[n]!);
      return reject(ex, limits[i]!, next);
    }
    pass(ex, res, next, keys, false);
  };

  const middleware = function limitConnections(req: IncomingMessage, res: ServerResponse, next: Next): void {
    const ex = exchange(req);
    let keys: string[] | undefined;
    try {
      keys = requestKeys(limits, req, ex, 255);
    } catch (err) {
      return next(err);
    }
    // No limit had a key: not limited, and `$limit_conn_status` stays empty.
    if (keys === undefined) return next();
    if (shared?.mode.ready() === true) {
      shared.add(keys).then(
        (rejected) => {
          if (rejected !== -1) return reject(ex, limits[rejected]!, next);
          // This process's zones count it too: they limit on their own if Redis goes away.
          for (let i = 0; i < limits.length; i++) if (keys[i] !== '') limits[i]!.zone.acquire(keys[i]!, Number.POSITIVE_INFINITY);
          pass(ex, res, next, keys, true);
        },
        (err: unknown) => {
          shared.mode.failed(err);
          local(ex, res, next, keys);
        },
      );
      return;
    }
    local(ex, res, next, keys);
  };

  return withZones(middleware, 'limit_conn', limits, zeroStats, {
    active: { value: (zone?: string) => limits.find((l) => zone === undefined || l.name === zone)?.zone.active ?? 0 },
    ...eventMethods(shared?.mode.events),
  });
}
