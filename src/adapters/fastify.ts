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
import type { UpgradeHandler } from '../proxy/upgrade.ts';

/** Options of the {@link switchyard} Fastify plugin. */
export interface SwitchyardPluginOptions {
  /** The middleware to run, in order (rewrite, cache, sticky, balance...). */
  use: Middleware | Middleware[];
  /** HTTP methods the plugin's routes answer. @default all of Fastify's methods */
  methods?: HTTPMethods[];
  /**
   * Let Fastify parse request bodies (JSON, text) before the middleware; parsed
   * bodies are re-sent upstream. Off, every content type is accepted and the body
   * streams to the upstream untouched.
   * @default false
   */
  parseBody?: boolean;
  /** Proxy WebSocket upgrades under the prefix through the balance() middleware in `use`. @default true */
  websocket?: boolean;
  /** Fastify's route prefix, set through `register(plugin, { prefix })`. */
  prefix?: string;
}

const ALL_METHODS: HTTPMethods[] = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS'];

/**
 * The Fastify plugin: routes every request under its prefix through the
 * middleware chain. Errors go to Fastify's error handler with their status;
 * requests the chain does not answer go to Fastify's not-found handler.
 * @example
 * ```ts
 * import Fastify from 'fastify';
 * import { createPool, balance } from 'switchyard';
 * import { switchyard } from 'switchyard/fastify';
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
  if (list.length === 0 || list.some((m) => typeof m !== 'function')) throw new InvalidOptionError('use', 'a middleware function or a non-empty array of them', options.use);
  const methods = options.methods ?? ALL_METHODS;
  if (!Array.isArray(methods) || methods.length === 0) throw new InvalidOptionError('methods', 'a non-empty array of HTTP methods', methods);
  if (options.parseBody !== undefined && typeof options.parseBody !== 'boolean') throw new InvalidOptionError('parseBody', 'a boolean', options.parseBody);
  const run = chain(...list);

  if (options.parseBody !== true) {
    fastify.removeAllContentTypeParsers();
    // Leave the stream unread: balance() streams it to the upstream.
    fastify.addContentTypeParser('*', (_req: FastifyRequest, _payload: IncomingMessage, done: (err: Error | null, body?: unknown) => void) => done(null));
  }

  const handler = (request: FastifyRequest, reply: FastifyReply): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (options.parseBody === true && request.body !== undefined) exchange(request.raw).parsedBody = request.body;
      const res = reply.raw;
      const onClose = (): void => resolve();
      res.once('close', onClose);
      run(request.raw, res, (err?: unknown) => {
        res.off('close', onClose);
        if (err !== undefined && err !== null) reject(err);
        else {
          reply.callNotFound();
          resolve();
        }
      });
    });
  fastify.route({ method: methods, url: '/', handler });
  fastify.route({ method: methods, url: '/*', handler });

  if (options.websocket !== false) {
    const upgrades = list.map((m) => (m as Middleware & { upgrade?: UpgradeHandler }).upgrade).filter((u): u is UpgradeHandler => typeof u === 'function');
    if (upgrades.length > 0) {
      const prefix = fastify.prefix ?? '';
      const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
        const url = req.url ?? '/';
        if (prefix !== '' && url !== prefix && !url.startsWith(`${prefix}/`) && !url.startsWith(`${prefix}?`)) return;
        upgrades[0]!(req, socket, head);
      };
      fastify.server.on('upgrade', onUpgrade);
      fastify.addHook('onClose', async () => {
        fastify.server.off('upgrade', onUpgrade);
      });
    }
  }
};
