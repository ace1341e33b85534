/**
 * Every error switchyard raises, in one module. Each has a stable `code`
 * (`SWY_ERR_*`), an HTTP `statusCode` (and `status`, which Koa and Express read),
 * and the original error as `cause` when there is one.
 * @module
 */

import { STATUS_CODES as STATUS_TEXT } from 'node:http';

/** Options accepted by every switchyard error constructor. */
export interface SwitchyardErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown | undefined;
}

/**
 * Base class of the errors that reach a framework's error handling.
 * @example
 * ```ts
 * app.use((err, req, res, next) => {
 *   if (err instanceof SwitchyardError) res.status(err.statusCode).send(err.code);
 *   else next(err);
 * });
 * ```
 */
export class SwitchyardError extends Error {
  /** Stable machine-readable code, such as `SWY_ERR_BAD_GATEWAY`. */
  readonly code: string;
  /** HTTP status the client should get. */
  readonly statusCode: number;
  /** Alias of `statusCode` for Koa and Express. */
  readonly status: number;
  /** Marks the message as safe to show to clients (Koa reads `expose`). */
  readonly expose: boolean = true;

  constructor(code: string, statusCode: number, message: string, options?: SwitchyardErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.statusCode = statusCode;
    this.status = statusCode;
  }
}

/** A class made by {@link fixedError}: `new X(message?, options?)`, with the statics of any error class. */
interface FixedErrorClass extends Omit<typeof SwitchyardError, 'prototype'> {
  new (message?: string, options?: SwitchyardErrorOptions): SwitchyardError;
  prototype: SwitchyardError;
}

/**
 * The base of an error class whose code and status are fixed: its constructor takes the message
 * (`defaultMessage` when none is given) and the options.
 */
function fixedError(code: string, statusCode: number, defaultMessage: string): FixedErrorClass {
  return class extends SwitchyardError {
    constructor(message = defaultMessage, options?: SwitchyardErrorOptions) {
      super(code, statusCode, message, options);
    }
  };
}

/**
 * An upstream could not be reached or answered with something unusable
 * (nginx: `error`, `invalid_header`, no live upstreams after attempts). Status 502; default
 * message `Bad Gateway`.
 * @example
 * ```ts
 * if (err.code === 'SWY_ERR_BAD_GATEWAY') console.log('upstream failed', err.cause);
 * ```
 */
export class BadGatewayError extends fixedError('SWY_ERR_BAD_GATEWAY', 502, 'Bad Gateway') {}

/**
 * The upstream timed out while connecting, sending the request or reading the
 * response header (nginx: `timeout`). Status 504; default message `Gateway Timeout`.
 * @example
 * ```ts
 * if (err instanceof GatewayTimeoutError) res.setHeader('Retry-After', '5');
 * ```
 */
export class GatewayTimeoutError extends fixedError('SWY_ERR_GATEWAY_TIMEOUT', 504, 'Gateway Timeout') {}

/**
 * No server of the pool could take the request: all down, unavailable, draining
 * or at `maxConns` (nginx: "no live upstreams"). Status 503 by default, see
 * {@link BalanceOptions.noServerStatus}.
 * @example
 * ```ts
 * if (err.code === 'SWY_ERR_NO_SERVER') metrics.increment('pool.exhausted');
 * ```
 */
export class NoServerAvailableError extends SwitchyardError {
  /** Name of the pool that had no server. */
  readonly pool: string;
  constructor(pool: string, statusCode = 503, options?: SwitchyardErrorOptions) {
    super('SWY_ERR_NO_SERVER', statusCode, `No server available in pool "${pool}"`, options);
    this.pool = pool;
  }
}

/**
 * The client's request cannot be proxied as sent: a malformed target, an invalid Host header, a
 * rewritten URI with a `..` segment. Status 400; default message `Bad Request`.
 * @example
 * ```ts
 * if (err instanceof BadRequestError) res.statusCode = 400;
 * ```
 */
export class BadRequestError extends fixedError('SWY_ERR_BAD_REQUEST', 400, 'Bad Request') {}

/**
 * The request's method is refused whatever its target: TRACE, which nginx answers 405 (without an
 * `Allow` header) while reading the request, since a gateway that forwards it lets a page read the
 * cookies and credentials the browser sent (cross-site tracing). Status 405; default message
 * `Method Not Allowed`.
 * @example
 * ```ts
 * if (err instanceof MethodNotAllowedError) res.statusCode = 405;
 * ```
 */
export class MethodNotAllowedError extends fixedError('SWY_ERR_METHOD_NOT_ALLOWED', 405, 'Method Not Allowed') {}

/**
 * A body parser before balance() consumed the request body and left no `req.body` switchyard can
 * send again (a Buffer, a string, or JSON / urlencoded data): the request fails at once rather than
 * hang waiting for a body that will never come. Status 500: the gateway is set up wrong, the client
 * did nothing wrong. Default message `The request body was consumed by a body parser before
 * switchyard could forward it`.
 * @example
 * ```ts
 * if (err.code === 'SWY_ERR_BODY_CONSUMED') console.error('mount balance() before the body parser');
 * ```
 */
export class BodyConsumedError extends fixedError(
  'SWY_ERR_BODY_CONSUMED',
  500,
  'The request body was consumed by a body parser before switchyard could forward it',
) {}

/**
 * The request's body comes in a transfer coding switchyard does not forward:
 * anything but `Transfer-Encoding: chunked` alone (`gzip, chunked`, say). As
 * nginx, the request is refused with 501 (RFC 9112 §6.1) rather than sent on
 * with the coding dropped. Code `SWY_ERR_TRANSFER_CODING`.
 * @example
 * ```ts
 * if (err instanceof UnsupportedTransferCodingError) console.log(err.transferEncoding);
 * ```
 */
export class UnsupportedTransferCodingError extends SwitchyardError {
  /** The request's Transfer-Encoding, as received. */
  readonly transferEncoding: string;
  constructor(transferEncoding: string) {
    super('SWY_ERR_TRANSFER_CODING', 501, `Transfer coding not implemented: ${JSON.stringify(transferEncoding.slice(0, 80))}`);
    this.transferEncoding = transferEncoding;
  }
}

/**
 * A request or response hook of balance() (`onRequest`, `onResponse`) or shapeResponse()'s `hook`
 * threw or rejected, or asked for something that would break the message: setting or removing a
 * framing or hop-by-hop header (Content-Length, Transfer-Encoding, Connection, ...), an invalid header
 * name or value, a status out of range. A hook's own {@link SwitchyardError} is passed on as it is;
 * anything else it throws becomes this error, with what it threw as `cause`. Status 500: the
 * gateway's code failed, not the client. Default message `A balance() hook failed`.
 * @example
 * ```ts
 * if (err.code === 'SWY_ERR_HOOK') console.error('hook failed:', err.message, err.cause);
 * ```
 */
export class HookError extends fixedError('SWY_ERR_HOOK', 500, 'A balance() hook failed') {}

/**
 * balance()'s pool selector (`balance((req, ex) => ...)`, nginx's `map` into `proxy_pass
 * http://$upstream`) returned neither a pool nor the name of one of its `pools`, or threw (the error
 * is the `cause`). Status 502, as nginx answers a `proxy_pass` whose upstream name it cannot resolve.
 * The message names what the selector returned, cut short. Default message `No such pool`.
 * @example
 * ```ts
 * if (err.code === 'SWY_ERR_UNKNOWN_POOL') console.warn(err.message); // 'Pool selector returned "beta", which names no pool'
 * ```
 */
export class UnknownPoolError extends fixedError('SWY_ERR_UNKNOWN_POOL', 502, 'No such pool') {}

/**
 * Thrown synchronously by factories and pool methods when an option is invalid.
 * A `TypeError` that names the option path and what was expected.
 * @example
 * ```ts
 * try { createPool({ servers: [{ url: 'http://a', weight: 0 }] }); }
 * catch (err) { err.code === 'SWY_ERR_INVALID_OPTION'; err.option === 'servers[0].weight'; }
 * ```
 */
export class InvalidOptionError extends TypeError {
  /** Always `SWY_ERR_INVALID_OPTION`. */
  readonly code = 'SWY_ERR_INVALID_OPTION';
  /** 400: when the error comes from the monitoring API, the request was bad. */
  readonly statusCode = 400;
  /** Path of the offending option, such as `servers[1].weight`. */
  readonly option: string;
  /**
   * @param option The option's path.
   * @param expected What the option takes, for the message: `Invalid option "<option>": expected <expected>, received <received>`.
   * @param received The value given, described in the message (cut short, never more than 80 characters of it).
   * @param message The whole message instead, when "expected" does not say it (an unknown option).
   */
  constructor(option: string, expected: string, received?: unknown, message?: string) {
    super(message ?? `Invalid option "${option}": expected ${expected}${received === undefined ? '' : `, received ${describe(received)}`}`);
    this.name = 'InvalidOptionError';
    this.option = option;
  }
}

/**
 * A `rewrite` rule made the URI change more than ten times, or `last` rules sent the request from
 * location to location without end (nginx's "rewrite or internal redirection cycle"). Status 500;
 * default message `rewrite or internal redirection cycle`.
 * @example
 * ```ts
 * if (err instanceof RewriteCycleError) console.error('rewrite rules loop on', req.url);
 * ```
 */
export class RewriteCycleError extends fixedError('SWY_ERR_REWRITE_CYCLE', 500, 'rewrite or internal redirection cycle') {}

/**
 * A `rewrite` rule left an empty URI (nginx answers 500, as here). Status 500; default message
 * `rewrite produced an empty URI`.
 * @example
 * ```ts
 * if (err.code === 'SWY_ERR_REWRITE_EMPTY') console.error('a rewrite rule produced an empty URI');
 * ```
 */
export class RewriteEmptyError extends fixedError('SWY_ERR_REWRITE_EMPTY', 500, 'rewrite produced an empty URI') {}

/**
 * A `return` rule with an error status and neither text nor url (`{ return: 403 }`, nginx
 * `return 403;`): handed to the framework's error handling with that status, so the application's
 * own error pages answer it.
 * @example
 * ```ts
 * app.use((err, req, res, next) => {
 *   if (err instanceof ReturnStatusError && err.statusCode === 403) res.status(403).send('Forbidden here');
 *   else next(err);
 * });
 * ```
 */
export class ReturnStatusError extends SwitchyardError {
  constructor(statusCode: number, message = STATUS_TEXT[statusCode] ?? `Status ${statusCode}`, options?: SwitchyardErrorOptions) {
    super('SWY_ERR_RETURN', statusCode, message, options);
  }
}

/**
 * limitRequests() rejected the request: its key's excess over the zone's rate is above `burst`
 * (nginx `limit_req`, "limiting requests"). Code `SWY_ERR_RATE_LIMITED`; the status is the
 * middleware's `status` option (503 by default, as nginx's `limit_req_status`; 429 is the common choice).
 * @example
 * ```ts
 * app.use((err, req, res, next) => {
 *   if (err instanceof RateLimitedError) res.status(err.statusCode).set('Retry-After', '1').end();
 *   else next(err);
 * });
 * ```
 */
export class RateLimitedError extends SwitchyardError {
  /** The name of the zone whose limit was exceeded. */
  readonly zone: string;
  constructor(zone: string, statusCode = 503, options?: SwitchyardErrorOptions) {
    super('SWY_ERR_RATE_LIMITED', statusCode, `Too many requests (zone "${zone}")`, options);
    this.zone = zone;
  }
}

/**
 * limitConnections() rejected the request: its key already has `max` requests in progress (nginx
 * `limit_conn`, "limiting connections"). Code `SWY_ERR_CONNECTION_LIMITED`; the status is the
 * middleware's `status` option (503 by default, as nginx's `limit_conn_status`).
 * @example
 * ```ts
 * if (err.code === 'SWY_ERR_CONNECTION_LIMITED') metrics.increment(`limit_conn.${err.zone}`);
 * ```
 */
export class ConnectionLimitedError extends SwitchyardError {
  /** The name of the zone whose limit was reached. */
  readonly zone: string;
  constructor(zone: string, statusCode = 503, options?: SwitchyardErrorOptions) {
    super('SWY_ERR_CONNECTION_LIMITED', statusCode, `Too many requests in progress (zone "${zone}")`, options);
    this.zone = zone;
  }
}

/**
 * A pool operation named a server that does not exist, or added one whose id is taken.
 * @example
 * ```ts
 * try { pool.remove('nope'); } catch (err) { err.code === 'SWY_ERR_SERVER_NOT_FOUND'; }
 * ```
 */
export class ServerNotFoundError extends SwitchyardError {
  constructor(id: string) {
    super('SWY_ERR_SERVER_NOT_FOUND', 404, `No server with id "${id}"`);
  }
}

/** Operations of the cache store, as named in {@link CacheStoreError.operation}. */
export type CacheStoreOperation = 'get' | 'set' | 'delete' | 'deletePrefix' | 'list' | 'disconnect' | 'store';

/** Why a store operation failed: it threw or rejected, took longer than `timeout`, or returned something that is not an entry. */
export type CacheStoreFailure = 'error' | 'timeout' | 'invalid';

/**
 * A store operation failed and was answered as a miss (get) or ignored (set, delete). Emitted as
 * the `'storeError'` event of the cache store, never thrown. Code `SWY_ERR_CACHE_STORE`.
 * @example
 * ```ts
 * cache.on('storeError', (err) => metrics.increment(`cache.store.${err.operation}.${err.reason}`));
 * ```
 */
export class CacheStoreError extends SwitchyardError {
  /** The operation that failed; `'store'` for an error the store reported on its own (a lost connection). */
  readonly operation: CacheStoreOperation;
  /** What went wrong. */
  readonly reason: CacheStoreFailure;
  /** The key (or prefix) involved, if any. */
  readonly key: string | undefined;
  constructor(operation: CacheStoreOperation, reason: CacheStoreFailure, key: string | undefined, message: string, cause?: unknown) {
    super('SWY_ERR_CACHE_STORE', 500, message, { cause });
    this.operation = operation;
    this.reason = reason;
    this.key = key;
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}
