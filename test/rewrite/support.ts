// Shared by the rewrite tests: a gateway `chain(rewrite(rules), echo)` whose last
// handler answers what the exchange record holds after the rules ran, so a test can
// read the URI and args the upstream would get without running an upstream.
import { createServer } from 'node:http';
import type { TestContext } from 'node:test';
import { chain, exchange, rewrite, type RewriteOptions, type RewriteRule } from '../../src/index.ts';
import { statusOf } from '../../src/core/chain.ts';
import { fetchText, listen, type Reply } from '../helpers.ts';

/** What the echo handler answers: the exchange record's view after the rules ran. */
export interface Echo {
  uri: string;
  args: string;
  /** `req.url` as the next handler sees it. */
  url: string;
  uriChanged: boolean;
  vars: Record<string, string>;
}

export interface RewriteGateway {
  url: string;
  port: number;
  /** GET (or `method`) `path` with optional headers; the reply as is. */
  get(path: string, headers?: Record<string, string>, method?: string): Promise<Reply>;
  /** The same, asserting the rules handed on, and returning the echo. */
  echo(path: string, headers?: Record<string, string>): Promise<Echo>;
  /** Errors the rules handed to next(), in order. */
  errors: unknown[];
}

/** A gateway on port 0 running `rewrite(rules, options)`, closed in `t.after`. */
export async function rewriteGateway(t: TestContext, rules: RewriteRule[], options?: RewriteOptions): Promise<RewriteGateway> {
  const errors: unknown[] = [];
  const listener = chain(
    rewrite(rules, options),
    (req, res) => {
      const ex = exchange(req);
      const body: Echo = { uri: ex.uri, args: ex.args, url: req.url ?? '', uriChanged: ex.uriChanged, vars: Object.fromEntries(ex.vars) };
      res.writeHead(200, { 'content-type': 'application/json', 'x-echo': '1' });
      res.end(JSON.stringify(body));
    },
    {
      final: (err, _req, res) => {
        errors.push(err);
        const status = statusOf(err);
        const code = (err as { code?: string } | undefined)?.code ?? '';
        res.writeHead(status, { 'content-type': 'text/plain', 'x-error-code': code });
        res.end(`error ${status} ${code}`);
      },
    },
  );
  const up = await listen(t, createServer(listener));
  const get = (path: string, headers?: Record<string, string>, method?: string): Promise<Reply> =>
    fetchText(`${up.url}${path}`, { headers: { host: `127.0.0.1:${up.port}`, ...headers }, method });
  return {
    url: up.url,
    port: up.port,
    errors,
    get,
    async echo(path, headers) {
      const r = await get(path, headers);
      if (r.headers['x-echo'] !== '1') throw new Error(`expected the rules to hand on for ${path}, got ${r.status} ${r.headers.location ?? ''} ${r.body}`);
      return JSON.parse(r.body) as Echo;
    },
  };
}
