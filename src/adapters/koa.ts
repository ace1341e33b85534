/**
 * Koa adapter: runs switchyard middleware inside a Koa app.
 * @module switchyard/koa
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { chain, type Middleware } from '../core/chain.ts';
import { exchange } from '../core/exchange.ts';

/** The part of Koa's context the adapter uses; Koa's own `Context` fits it. */
export interface KoaContextLike {
  /** The Node request the middleware proxies. */
  req: IncomingMessage;
  /** The Node response the middleware writes. */
  res: ServerResponse;
  /** Koa's request; only its body is read. */
  request: {
    /** The body a Koa body parser left; re-sent upstream when set. */
    body?: unknown | undefined;
  };
  /** Koa's flag for answering itself; false while switchyard answers, restored when it hands on. */
  respond?: boolean | undefined;
}

/** A Koa middleware as the adapter returns it. */
export type KoaMiddleware = (ctx: KoaContextLike, next: () => Promise<unknown>) => Promise<void>;

/**
 * Wraps switchyard middleware for Koa. While switchyard answers, Koa leaves the
 * response alone (`ctx.respond = false`); when the middleware hands on, Koa's
 * next middleware runs; errors are thrown into Koa's error handling with their
 * `status`. A body parsed by a Koa body parser (`ctx.request.body`) is re-sent
 * upstream.
 * @example
 * ```ts
 * import Koa from 'koa';
 * import { createPool, balance } from 'switchyard-proxy';
 * import { koa } from 'switchyard-proxy/koa';
 *
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }] });
 * const app = new Koa();
 * app.use(koa(balance(pool)));
 * app.listen(8080);
 * ```
 */
export function koa(...middleware: Middleware[]): KoaMiddleware {
  const run = chain(...middleware);
  return function switchyard(ctx, next) {
    const body = ctx.request.body;
    if (body !== undefined) exchange(ctx.req).parsedBody = body;
    return new Promise<void>((resolve, reject) => {
      const previous = ctx.respond;
      ctx.respond = false;
      const onClose = (): void => resolve();
      // on, not once (no wrapper to make): taken off when the middleware hands on; a response closes once.
      ctx.res.on('close', onClose);
      run(ctx.req, ctx.res, (err?: unknown) => {
        ctx.res.off('close', onClose);
        ctx.respond = previous;
        if (err !== undefined && err !== null) reject(err);
        else next().then(() => resolve(), reject);
      });
    });
  };
}
