/**
 * Fastify plugin: runs switchyard middleware within Fastify's lifecycle.
 * @module switchyard/fastify
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';
import { chain, type Middleware } from '../core/chain.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { exchange } from '../core/exchange.ts';
import { kBalance } from '../balance/index.ts';
import { refuseUpgrade, screenUpgrade, type UpgradeHandler } from '../proxy/upgrade.ts';
import { kSticky } from '../sticky/index.ts';

/** Options of the {@link switchyard} Fastify plugin. */
export interface SwitchyardPluginOptions {
  /** The middleware to run, in order (rewrite, cache, sticky, balance...). */
  use: Middleware | Middleware[];
  /** HTTP methods the plugin's routes answer. @default all of Fastify's methods */
  methods?: HTTPMethods[] | undefined;
  /**
   * Let Fastify parse the request bodies it has a parser for (JSON, text, and any
   * added with `addContentTypeParser`) before the middleware; parsed bodies are
   * re-sent upstream, and other content types stream through. Off, every content
   * type is accepted and every body streams to the upstream untouched.
   * @default false
   */
  parseBody?: boolean | undefined;
  /** Proxy WebSocket upgrades under the prefix through the balance() middleware in `use` (bound by a sticky() before it). @default true */
  websocket?: boolean | undefined;
  /** Fastify's route prefix, set through `register(plugin, { prefix })`. */
  prefix?: string;
}

// TRACE is routed to be refused: chain() answers it 405, as nginx (Fastify alone would say 404).
const ALL_METHODS: HTTPMethods[] = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS', 'TRACE'];

/**
 * The Fastify plugin: routes every request under its prefix through the
 * middleware chain. Errors go to Fastify's error handler with their status;
 * requests the chain does not answer go to Fastify's not-found handler.
 * @example
 * ```ts
 * import Fastify from 'fastify';
 * import { createPool, balance } from 'switchyard-proxy';
 * import { switchyard } from 'switchyard-proxy/fastify';
 *
 * const pool = createPool({ servers: [{ url: 'http://127.0.0.1:3001' }] });
 * const app = Fastify();
 * await app.register(switchyard, { prefix: '/api', use: [balance(pool)] });
 * await app.listen({ port: 8080 });
 * ```
 */
export const switchyard: FastifyPluginAsync<SwitchyardPluginOptions> = async function switchyard(fastify: FastifyInstance, options: SwitchyardPluginOptions) {
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('options', 'an object with use', options);
  const list = Array.isArray(options.use) ? options.use : [options.use];
  if (list.length === 0 || list.some((m) => typeof m !== 'function'))
    throw new InvalidOptionError('use', 'a middleware function or a non-empty array of them', options.use);
  const methods = options.methods ?? ALL_METHODS;
  if (!Array.isArray(methods) || methods.length === 0) throw new InvalidOptionError('methods', 'a non-empty array of HTTP methods', methods);
  if (options.parseBody !== undefined && typeof options.parseBody !== 'boolean') throw new InvalidOptionError('parseBody', 'a boolean', options.parseBody);
  const run = chain(...list);

  // Leaves the stream unread: balance() streams it to the upstream.
  const unread = (_req: FastifyRequest, _payload: IncomingMessage, done: (err: Error | null, body?: unknown) => void): void => done(null);
  if (options.parseBody !== true) {
    fastify.removeAllContentTypeParsers();
    fastify.addContentTypeParser('*', unread);
  } else if (!fastify.hasContentTypeParser('*')) {
    // Content types Fastify has no parser for stream through instead of failing with 415.
    fastify.addContentTypeParser('*', unread);
  }

  const handler = (request: FastifyRequest, reply: FastifyReply): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (options.parseBody === true && request.body !== undefined) exchange(request.raw).parsedBody = request.body;
      const res = reply.raw;
      const onClose = (): void => resolve();
      res.once('close', onClose);
      // Headers that hooks set on the reply (CORS, request ids) go out with a proxied
      // response too; the upstream's own headers of the same name win, as with
      // Express and Koa, whose middleware set them on the raw response.
      const lent: string[] = [];
      for (const [name, value] of Object.entries(reply.getHeaders())) {
        if (value === undefined || res.hasHeader(name)) continue;
        res.setHeader(name, value);
        lent.push(name);
      }
      run(request.raw, res, (err?: unknown) => {
        res.off('close', onClose);
        // Fastify answers from here on, with the reply's headers as it sees them.
        if (!res.headersSent) for (const name of lent) res.removeHeader(name);
        if (err !== undefined && err !== null) reject(err);
        else {
          // Settle once the not-found handler has answered, which can be after async
          // hooks: settling earlier makes Fastify send an empty 200 in its place.
          reply.callNotFound();
          reply.then(
            () => resolve(),
            () => resolve(),
          );
        }
      });
    });
  fastify.route({ method: methods, url: '/', handler });
  fastify.route({ method: methods, url: '/*', handler });

  if (options.websocket !== false) {
    // balance()'s upgrade handler, wrapped by the sticky() middleware before it that bind upgrades
    // too (its wrapUpgrade), in the order of `use`; both found by their brands, not by property names.
    type Branded = Middleware & { [kBalance]?: UpgradeHandler; [kSticky]?: (listener: UpgradeHandler) => UpgradeHandler };
    const at = list.findIndex((m) => typeof (m as Branded)[kBalance] === 'function');
    let upgradeHandler = at === -1 ? undefined : (list[at] as Branded)[kBalance]!;
    if (upgradeHandler !== undefined) {
      for (let i = at - 1; i >= 0; i--) {
        const wrap = (list[i] as Branded)[kSticky];
        if (typeof wrap === 'function') upgradeHandler = wrap(upgradeHandler);
      }
    }
    const upgrades = upgradeHandler === undefined ? [] : [upgradeHandler];
    if (upgrades.length > 0) {
      const prefix = fastify.prefix ?? '';
      const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
        const url = req.url ?? '/';
        if (prefix !== '' && url !== prefix && !url.startsWith(`${prefix}/`) && !url.startsWith(`${prefix}?`)) {
          // Not ours: with no other upgrade listener nobody would ever answer or close it. An upgrade
          // that is not tunneled (h2c) goes to Fastify as an ordinary request, as it would without us.
          if (fastify.server.listenerCount('upgrade') === 1 && !screenUpgrade(req, socket, head)) refuseUpgrade(socket, 404, 'Not Found');
          return;
        }
        // The target is checked (400) before anything parses it; nothing thrown reaches the server's emit().
        if (screenUpgrade(req, socket, head)) return;
        try {
          upgrades[0]!(req, socket, head);
        } catch {
          refuseUpgrade(socket, 500, 'Internal Server Error');
        }
      };
      fastify.server.on('upgrade', onUpgrade);
      fastify.addHook('onClose', async () => {
        fastify.server.off('upgrade', onUpgrade);
      });
    }
  }
};
