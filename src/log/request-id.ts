import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Middleware, Next } from '../core/chain.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { exchange } from '../core/exchange.ts';
import { TOKEN } from '../core/http.ts';
import { objectOption, stringOption } from '../core/options.ts';
import { newRequestId } from '../core/variables.ts';

/** The default `header` of {@link requestId}. */
export const DEFAULT_REQUEST_ID_HEADER = 'X-Request-Id';

/** Which incoming ids {@link requestId} believes: none, any, or those of requests the function accepts. */
export type RequestIdTrust = boolean | ((req: IncomingMessage) => boolean);

/** Options of {@link requestId}. */
export interface RequestIdOptions {
  /** The request header an incoming id comes in (when `trust` allows it). @default 'X-Request-Id' */
  header?: string | undefined;
  /**
   * Whether an incoming id is kept as the request's `$request_id`: `false` never (a client could
   * otherwise choose the ids your logs show), `true` always, or a function of the request (say, one
   * that checks it came from your own load balancer). A kept id must be 1 to 200 characters of
   * `A-Z a-z 0-9 . _ : -`; any other is replaced by a new one. A function that throws sends its
   * error to `next()`.
   * @default false
   */
  trust?: RequestIdTrust | undefined;
  /** A response header to send the id in (`true`: the `header` name); `false` sends none. @default false */
  respond?: boolean | string | undefined;
}

const KNOWN_OPTIONS = ['header', 'trust', 'respond'] as const;
const VALID_ID = /^[A-Za-z0-9._:-]{1,200}$/;

/**
 * Gives every request its id (nginx `$request_id`: 32 lowercase hex characters of fresh random
 * bytes), or keeps a trusted incoming one, so that `$request_id` in an access log, in balance()'s
 * `setHeaders` (`{ 'X-Request-Id': '$request_id' }`) and in the response all show the same. Without
 * this middleware `$request_id` is made on first use all the same; it is needed to trust an incoming
 * id or to send the id back.
 * @example
 * ```ts
 * import express from 'express';
 * import { accessLog, requestId } from 'switchyard-proxy';
 *
 * const app = express();
 * app.use(requestId({ trust: (req) => req.socket.remoteAddress === '10.0.0.2', respond: true }));
 * app.use(accessLog({ format: '$request_id $remote_addr "$request" $status' }));
 * ```
 */
export function requestId(options: RequestIdOptions = {}): Middleware {
  const o = objectOption(options, '', KNOWN_OPTIONS, 'an options object', true) as RequestIdOptions;
  const header = stringOption(o.header, 'header', DEFAULT_REQUEST_ID_HEADER, { pattern: TOKEN, expected: 'a header name' });
  const lower = header.toLowerCase();
  const trust = o.trust ?? false;
  if (typeof trust !== 'boolean' && typeof trust !== 'function') throw new InvalidOptionError('trust', 'a boolean or a function (req) => boolean', trust);
  let respond: string | undefined;
  if (o.respond === true) respond = header;
  else if (o.respond !== undefined && o.respond !== false)
    respond = stringOption(o.respond, 'respond', undefined, { pattern: TOKEN, expected: 'a boolean or a header name' });
  return function requestId(req: IncomingMessage, res: ServerResponse, next: Next): void {
    const ex = exchange(req);
    let id: string | undefined;
    if (trust !== false) {
      const incoming = req.headers[lower];
      if (typeof incoming === 'string' && VALID_ID.test(incoming)) {
        let trusted = trust === true;
        if (!trusted) {
          try {
            trusted = (trust as (req: IncomingMessage) => boolean)(req) === true;
          } catch (err) {
            next(err);
            return;
          }
        }
        if (trusted) id = incoming;
      }
    }
    if (id !== undefined) ex.requestId = id;
    else if (ex.requestId === undefined && respond !== undefined) ex.requestId = newRequestId();
    if (respond !== undefined && !res.headersSent) res.setHeader(respond, ex.requestId!);
    next();
  };
}
