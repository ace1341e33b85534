import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { STATUS_CODES } from 'node:http';
import { InvalidOptionError } from './errors.ts';
import { requestRefusal } from './exchange.ts';
import { writeHead } from './http2.ts';
import { objectOption } from './options.ts';

/** The continuation a middleware calls: with nothing to hand on, with an error to fail the request. */
export type Next = (err?: unknown) => void;

/**
 * A connect-style middleware, as every switchyard factory returns: native in
 * Express, Connect and node:http (through {@link chain}); the Fastify plugin and
 * the Koa adapter translate.
 */
export type Middleware = (req: IncomingMessage, res: ServerResponse, next: Next) => void;

/** Options of {@link chain}. */
export interface ChainOptions {
  /**
   * Called when the chain ends without a response: with an error, or with none
   * (nothing handled the request). The default answers the error's
   * `statusCode` (500 otherwise) or 404, with a short text body.
   */
  final?: ((err: unknown, req: IncomingMessage, res: ServerResponse) => void) | undefined;
}

/** The keys of {@link ChainOptions}. */
const CHAIN_OPTIONS = ['final'] as const satisfies ReadonlyArray<keyof ChainOptions>;

/**
 * Composes middleware into one request listener for `node:http` (or into one
 * middleware, since the listener also takes a `next`). Errors and unhandled
 * requests get a minimal response unless `final` says otherwise. A request nginx
 * refuses while reading it fails before the first middleware, as an error: TRACE
 * (405, `SWY_ERR_METHOD_NOT_ALLOWED`), two Host headers or an invalid host in the
 * Host header or an absolute-form target (400, `SWY_ERR_BAD_REQUEST`). The listener
 * serves node:http2 servers too (`http2.createSecureServer({ key, cert,
 * allowHTTP1: true }, chain(...))`), whose compatibility request and response
 * stand in for node:http's.
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { createPool, balance, chain } from 'switchyard-proxy';
 *
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }] });
 * createServer(chain(balance(pool))).listen(8080);
 * ```
 */
export function chain(...args: Array<Middleware | ChainOptions>): RequestListener & Middleware & ((req: Http2ServerRequest, res: Http2ServerResponse) => void) {
  const last = args[args.length - 1];
  const options: ChainOptions =
    typeof last === 'object' && last !== null ? (objectOption(args.pop(), '', CHAIN_OPTIONS, 'an object with final') as ChainOptions) : {};
  const stack = args as Middleware[];
  for (const [i, fn] of stack.entries()) if (typeof fn !== 'function') throw new InvalidOptionError(`middleware[${i}]`, 'a function (req, res, next)', fn);
  const final = options.final ?? respondWithError;
  if (typeof final !== 'function') throw new InvalidOptionError('final', 'a function (err, req, res)', final);
  const listener = function chain(req: IncomingMessage, res: ServerResponse, done?: Next): void {
    // A request nginx refuses while reading it (TRACE, a bad or repeated Host) reaches no middleware.
    const refusal = requestRefusal(req);
    if (refusal !== undefined) {
      if (done !== undefined) done(refusal);
      else final(refusal, req, res);
      return;
    }
    let index = 0;
    const next: Next = (err?: unknown): void => {
      if (err !== undefined && err !== null) {
        if (done !== undefined) done(err);
        else final(err, req, res);
        return;
      }
      const fn = stack[index++];
      if (fn === undefined) {
        if (done !== undefined) done();
        else final(undefined, req, res);
        return;
      }
      try {
        fn(req, res, next);
      } catch (e) {
        next(e ?? new Error('middleware threw'));
      }
    };
    next();
  };
  // node:http2's compatibility request and response stand in for node:http's (test/http2).
  return listener as typeof listener & ((req: Http2ServerRequest, res: Http2ServerResponse) => void);
}

/**
 * The minimal default response for an error (its `statusCode`, else 500) or for
 * a request nothing handled (404). Never shows an error's internals for 5xx.
 * @example
 * ```ts
 * server.on('request', (req, res) => respondWithError(new BadGatewayError(), req, res));
 * ```
 */
export function respondWithError(err: unknown, _req: IncomingMessage, res: ServerResponse): void {
  const status = statusOf(err);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = `${status} ${STATUS_CODES[status] ?? 'Error'}\n`;
  // (To an HTTP/2 client, without a connection-specific header a middleware may have set.)
  writeHead(res, status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(_req.method === 'HEAD' ? undefined : text);
}

/** The HTTP status an error asks for: `statusCode` or `status` when in 400..599, else 500; 404 without an error. */
export function statusOf(err: unknown): number {
  if (err === undefined) return 404;
  const e = err as { statusCode?: unknown; status?: unknown };
  const s = typeof e?.statusCode === 'number' ? e.statusCode : typeof e?.status === 'number' ? e.status : 500;
  return Number.isInteger(s) && s >= 400 && s <= 599 ? s : 500;
}
