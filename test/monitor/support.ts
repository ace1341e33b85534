// Shared by the monitor() tests (api, metrics, dashboard): real upstreams on port 0 and a real
// gateway `createServer(chain(monitor({ pools, caches, prefix: '/status', server, write }), cache?, balance(pool)))`.
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import {
  balance,
  cache as cacheMiddleware,
  chain,
  createPool,
  monitor,
  type BalanceOptions,
  type CacheMiddleware,
  type CacheOptions,
  type MonitorMiddleware,
  type MonitorOptions,
  type PoolOptions,
  type ServerOptions,
  type UpstreamPool,
} from '../../src/index.ts';
import { deadPort, upstream, type Upstream } from '../helpers.ts';

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

export interface MonitorGatewayOptions {
  /** Upstreams to start, by name; a handler or undefined (200 with the name). @default { a: undefined, b: undefined } */
  upstreams?: Record<string, UpstreamHandler | undefined> | undefined;
  /** Dead servers (connection refused) added after the live ones, with ids `dead1`, `dead2`… @default 0 */
  dead?: number | undefined;
  /** Builds the pool's servers from the started upstreams (default: one per upstream, id = its name, then the dead ones). */
  servers?: ((ups: Record<string, Upstream>, dead: string[]) => ServerOptions[]) | undefined;
  /** Extra pool options (name defaults to 'backend'). */
  pool?: Partial<PoolOptions> | undefined;
  /** Put a cache() between monitor() and balance(): true for defaults, or its options. @default none */
  cache?: boolean | CacheOptions | undefined;
  /** monitor() write predicate. @default none (writes refused) */
  write?: ((req: IncomingMessage) => boolean) | undefined;
  /** More monitor() options (pools/caches/prefix/server/write are set by the helper unless given here). */
  monitor?: Partial<MonitorOptions> | undefined;
  /** balance() options. */
  balance?: BalanceOptions | undefined;
  /** Mount prefix. @default '/status' */
  prefix?: string | undefined;
}

export interface MonitorGateway {
  /** Gateway base url, `http://127.0.0.1:port`. */
  url: string;
  /** Base of the monitor: `${url}${prefix}`. */
  status: string;
  /** Base of the API: `${status}/api/9`. */
  api: string;
  /** `${status}/metrics`. */
  metrics: string;
  /** `${status}/dashboard/`. */
  dashboard: string;
  port: number;
  server: Server;
  pool: UpstreamPool;
  cache: CacheMiddleware | undefined;
  mon: MonitorMiddleware;
  /** The started upstreams by name. */
  upstreams: Record<string, Upstream>;
  /** Urls of the dead servers. */
  dead: string[];
}

/** Starts upstreams and a gateway with monitor() mounted at '/status'; everything is closed by t.after. */
export async function startMonitorGateway(t: TestContext, options: MonitorGatewayOptions = {}): Promise<MonitorGateway> {
  const ups: Record<string, Upstream> = {};
  for (const [name, handler] of Object.entries(options.upstreams ?? { a: undefined, b: undefined })) ups[name] = await upstream(t, name, handler);
  const dead: string[] = [];
  for (let i = 0; i < (options.dead ?? 0); i++) dead.push(`http://127.0.0.1:${await deadPort()}`);
  const servers = options.servers?.(ups, dead) ?? [
    ...Object.entries(ups).map(([id, u]) => ({ id, url: u.url })),
    ...dead.map((url, i) => ({ id: `dead${i + 1}`, url })),
  ];
  const pool = createPool({ name: 'backend', ...options.pool, servers });
  t.after(() => pool.close());
  const c = options.cache === undefined || options.cache === false ? undefined : cacheMiddleware(options.cache === true ? {} : options.cache);
  if (c !== undefined) t.after(() => c.close());
  const server = createServer();
  const prefix = options.prefix ?? '/status';
  const mon = monitor({
    pools: [pool],
    ...(c === undefined ? {} : { caches: [c] }),
    prefix,
    server,
    ...(options.write === undefined ? {} : { write: options.write }),
    ...options.monitor,
  });
  t.after(() => mon.close());
  const stack = c === undefined ? chain(mon, balance(pool, options.balance)) : chain(mon, c, balance(pool, options.balance));
  server.on('request', stack);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  const status = `${url}${prefix}`;
  return {
    url,
    status,
    api: `${status}/api/9`,
    metrics: `${status}/metrics`,
    dashboard: `${status}/dashboard/`,
    port,
    server,
    pool,
    cache: c,
    mon,
    upstreams: ups,
    dead,
  };
}

export interface JsonReply<T = any> {
  status: number;
  headers: IncomingMessage['headers'];
  /** The raw body text. */
  text: string;
  /** The parsed body (undefined when empty). */
  body: T;
}

/**
 * One request on a fresh connection; the body is parsed as JSON when there is one. An object
 * `json` is sent with Content-Type application/json unless `headers` gives another.
 */
export function call<T = any>(
  url: string,
  init: { method?: string; headers?: Record<string, string>; json?: unknown; body?: string | Buffer } = {},
): Promise<JsonReply<T>> {
  const headers: Record<string, string> = { ...init.headers };
  let body = init.body;
  if (init.json !== undefined) {
    body = JSON.stringify(init.json);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
  }
  return new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? 'GET', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let parsed: unknown;
        try {
          parsed = text === '' ? undefined : JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed as T });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** GET `url` and return the parsed JSON body (asserting nothing). */
export async function getJson<T = any>(url: string): Promise<T> {
  return (await call<T>(url)).body;
}

/** Sends `n` sequential GETs to the gateway and returns the statuses. */
export async function traffic(url: string, n: number, path = '/'): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await call(`${url}${path}`)).status);
  return out;
}

/** Sends `n` sequential GETs and returns the `x-upstream` header of each (the upstream's name; '' if none). */
export async function whoAnswers(url: string, n: number, path = '/'): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(String((await call(`${url}${path}`)).headers['x-upstream'] ?? ''));
  return out;
}

/** Counts the values of a list. */
export function tally(values: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}
