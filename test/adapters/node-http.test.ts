// node:http end-to-end: `createServer(chain(...))` in front of real upstream servers. Everything it
// is asked is the adapter contract (contract.ts); what chain() does alone is in test/core.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { TestContext } from 'node:test';
import { balance, chain, type BalanceOptions, type ChainOptions, type Middleware, type UpstreamPool } from '../../src/index.ts';
import { listen } from '../helpers.ts';
import { adapterContract, setHeaders } from './contract.ts';

/** A minimal JSON body parser, as a connect-style middleware would be: reads the stream, sets req.body. */
const jsonBody: Middleware = (req, _res, next) => {
  if (!String(req.headers['content-type'] ?? '').startsWith('application/json')) return next();
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    try {
      (req as IncomingMessage & { body?: unknown }).body = JSON.parse(Buffer.concat(chunks).toString());
      next();
    } catch (err) {
      next(Object.assign(err as Error, { statusCode: 400 }));
    }
  });
};

interface GatewayOptions {
  before?: Middleware[] | undefined;
  balance?: BalanceOptions | undefined;
  chain?: ChainOptions | undefined;
}

/** A listening node:http gateway: `createServer(chain(...before, balance(pool)))`, upgrades wired. */
async function gateway(t: TestContext, pool: UpstreamPool, options: GatewayOptions = {}): Promise<{ url: string; ws: string }> {
  t.after(() => pool.close());
  const proxy = balance(pool, options.balance);
  const server = createServer(options.chain === undefined ? chain(...(options.before ?? []), proxy) : chain(...(options.before ?? []), proxy, options.chain));
  server.on('upgrade', proxy.upgrade);
  const gw = await listen(t, server);
  return { url: gw.url, ws: gw.url.replace('http:', 'ws:') };
}

/** chain()'s `final`: the node:http app's own error handling. */
const final: ChainOptions = {
  final(err: unknown, _req: IncomingMessage, res: ServerResponse) {
    const e = err as { code?: string; statusCode?: number; name?: string } | undefined;
    const payload = JSON.stringify({ handledBy: 'final', code: e?.code, statusCode: e?.statusCode, name: e?.name });
    res.writeHead(e?.statusCode ?? 404, { 'content-type': 'application/json' });
    res.end(payload);
  },
};

adapterContract({
  name: 'node:http',
  handledBy: 'final',
  async start(t, { pool, balance: balanceOptions, bodyParser, errorHandler, presetHeaders }) {
    const before: Middleware[] = presetHeaders === undefined ? [] : [setHeaders(presetHeaders)];
    if (bodyParser === true) before.push(jsonBody);
    const gw = await gateway(t, pool, { before, balance: balanceOptions, chain: errorHandler === false ? undefined : final });
    return { url: gw.url, ws: gw.ws, prefix: '', problems: () => [] };
  },
  defaultError(reply) {
    // Without final, chain() answers the status as plain text, without internals.
    assert.equal(reply.body, '502 Bad Gateway\n');
  },
});
