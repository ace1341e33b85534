import { randomBytes } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import type { CacheMiddleware } from '../cache/index.ts';
import type { Middleware, Next } from '../core/chain.ts';
import { requestHost } from '../core/exchange.ts';
import { closeHttp2Stream, isHttp2Response, writeHead } from '../core/http2.ts';
import { InvalidOptionError, ServerNotFoundError } from '../core/errors.ts';
import { booleanOption, functionOption, integerOption, nowOption, objectOption, stringOption } from '../core/options.ts';
import type { HealthCheck } from '../health/index.ts';
import type { LimitConnectionsMiddleware, LimitRequestsMiddleware } from '../limit/index.ts';
import { UpstreamPool } from '../pool/index.ts';
import { internals } from '../pool/internal.ts';
import { isSyncHandle, type SyncHandle } from '../sync/index.ts';
import type { StreamHandler } from '../stream/index.ts';
import { serverZoneJson, streamMetrics, streamSources, streamUpstreamJson } from './stream.ts';
import {
  ApiError,
  apiErrorOf,
  cacheJson,
  cacheJsonOf,
  type LimitCounters,
  type LimitKind,
  limitJson,
  serverConf,
  serverFromBody,
  updateFromBody,
  upstreamJsonOf,
} from './api.ts';
import {
  cacheTotals,
  ClusterView,
  gatewayTotals,
  type GatewayFigures,
  type InstanceFigures,
  limitTotals,
  poolTotals,
  type ResetTarget,
  streamPoolTotals,
  zoneTotals,
} from './cluster.ts';
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS } from './dashboard.ts';
import { hostAllowed } from './hosts.ts';
import { type MetricsInstance, prometheus, PROMETHEUS_CONTENT_TYPE } from './prometheus.ts';

export { STATE_NUMBERS, PROMETHEUS_CONTENT_TYPE } from './prometheus.ts';

/** Options of {@link monitor}. */
export interface MonitorOptions {
  /** The pools to show and manage, by name (an array uses each pool's `name`). */
  pools: readonly UpstreamPool[] | Readonly<Record<string, UpstreamPool>>;
  /** The caches to show, by name (an array uses each cache's `name`). @default none */
  caches?: readonly CacheMiddleware[] | Readonly<Record<string, CacheMiddleware>> | undefined;
  /**
   * streamBalance() handlers to show: their zones under `/api/9/stream/server_zones/{zone}` (handlers
   * of one zone added up) and their pools' stream statistics under `/api/9/stream/upstreams/{name}`,
   * whose `servers` are managed as the HTTP upstreams' are; in /metrics and the dashboard. With
   * `sync`, the totals over the live instances, as for HTTP upstreams (a zone counts on the
   * instances whose monitor shows it). @default none
   */
  streams?: readonly StreamHandler[] | undefined;
  /** Health checks, listed in the summary. @default none */
  healthChecks?: readonly HealthCheck[] | undefined;
  /**
   * The rate and connection limits to show: limitRequests() and limitConnections() middlewares, each
   * zone under its name (`/api/9/http/limit_reqs/{zone}`, `/api/9/http/limit_conns/{zone}`, and in
   * /metrics); zones of the same kind and name in several middlewares are added up. @default none
   */
  limits?: ReadonlyArray<LimitRequestsMiddleware | LimitConnectionsMiddleware> | undefined;
  /**
   * Which requests may change anything (POST, PATCH, DELETE): the default refuses every write (405,
   * NGINX Plus's `api write=off`). Give a predicate that checks who is asking: a credential (a token,
   * your authentication) rather than the client's address alone.
   * @default () => false
   */
  write?: ((req: IncomingMessage) => boolean) | undefined;
  /**
   * The host names the monitor answers to (the Host header, any port), besides IP literals and
   * `localhost`, which are always allowed; `.example.org` allows every name under example.org too.
   * Any other Host gets 403 `HostNotAllowed`, on reads and writes alike: a page on another site that
   * rebinds its own name to the gateway's address (DNS rebinding) cannot read or change anything
   * from the operator's browser. List the names operators, scrapers and load balancers use to reach
   * the monitor; `true` allows every Host (only when `write` checks a credential and reads are
   * not sensitive).
   * @default [] (IP literals and localhost only)
   */
  allowedHosts?: readonly string[] | true | undefined;
  /**
   * Where the monitor is mounted when the framework does not strip it from `req.url` (node:http with
   * chain(), Koa): requests outside it go to `next()`. Express's `app.use('/status', monitor(...))`
   * strips it already.
   * @default '' (req.url as it comes)
   */
  prefix?: string | undefined;
  /** The gateway's server, to count connections and requests (`/api/9/connections`, `/api/9/http/requests`). @default none */
  server?: Server | undefined;
  /** Serve the dashboard at `/dashboard`. @default true */
  dashboard?: boolean | undefined;
  /** Largest write body, in bytes. @default 65536 */
  maxBodySize?: number | undefined;
  /** Clock in milliseconds. @default Date.now */
  now?: (() => number) | undefined;
  /**
   * Answer for every live instance of the gateway, not this process alone: a handle from `sync()`.
   * The statistics endpoints, the dashboard and `/metrics` then read every instance's last report
   * (published each `statsInterval`), so they answer the same from any instance: the API with the
   * totals, `/api/9/switchyard/instances` with each instance's own figures, `/metrics` with each
   * instance's series labelled `instance`. A DELETE that resets statistics resets them on every
   * instance. `false`: this process alone, even when a pool has a handle.
   * @default the handle of the first pool (of `pools`, then of the `streams`' pools) that has one; none (this process alone) otherwise
   */
  sync?: SyncHandle | false | undefined;
}

/** Default of {@link MonitorOptions.maxBodySize}: 64 KiB. */
export const DEFAULT_MAX_BODY_SIZE = 64 * 1024;

/** The keys of {@link MonitorOptions}. */
const MONITOR_OPTIONS = [
  'pools',
  'caches',
  'healthChecks',
  'streams',
  'limits',
  'write',
  'allowedHosts',
  'prefix',
  'server',
  'dashboard',
  'maxBodySize',
  'now',
  'sync',
] as const satisfies ReadonlyArray<keyof MonitorOptions>;

/** The middleware returned by {@link monitor}. */
export interface MonitorMiddleware extends Middleware {
  /** Stops counting the server's connections and requests, and publishing and reading statistics through `sync`. */
  close(): void;
}

const require = createRequire(import.meta.url);
const VERSION = (require('../../package.json') as { version: string }).version;
const API_VERSION = 9;
const HREF = 'https://nginx.org/en/docs/http/ngx_http_api_module.html';

function named<T extends { name: string }>(
  value: readonly T[] | Readonly<Record<string, T>> | undefined,
  option: string,
  check: (v: unknown) => boolean,
): Map<string, T> {
  const out = new Map<string, T>();
  if (value === undefined) return out;
  const entries: Array<[string, T]> = Array.isArray(value) ? value.map((v: T) => [v?.name, v] as [string, T]) : Object.entries(value as Record<string, T>);
  entries.forEach(([name, v], i) => {
    if (!check(v))
      throw new InvalidOptionError(
        Array.isArray(value) ? `${option}[${i}]` : `${option}.${name}`,
        option === 'pools' ? 'an UpstreamPool' : 'a cache() middleware',
        v,
      );
    if (out.has(name)) throw new InvalidOptionError(`${option}.${name}`, 'names used once', name);
    out.set(name, v);
  });
  return out;
}

/**
 * The `limits` option: the middlewares of each zone, by section name (`limit_req:<zone>`,
 * `limit_conn:<zone>`), in the order given.
 */
function limitZones(value: unknown): Map<string, Array<LimitRequestsMiddleware | LimitConnectionsMiddleware>> {
  const out = new Map<string, Array<LimitRequestsMiddleware | LimitConnectionsMiddleware>>();
  if (value === undefined) return out;
  if (!Array.isArray(value)) throw new InvalidOptionError('limits', 'an array of limitRequests() and limitConnections() middlewares', value);
  value.forEach((m: unknown, i) => {
    const limit = m as { kind?: unknown; zones?: unknown; stats?: unknown; resetStats?: unknown };
    if (
      typeof m !== 'function' ||
      (limit.kind !== 'limit_req' && limit.kind !== 'limit_conn') ||
      !Array.isArray(limit.zones) ||
      typeof limit.stats !== 'function' ||
      typeof limit.resetStats !== 'function'
    )
      throw new InvalidOptionError(`limits[${i}]`, 'a limitRequests() or limitConnections() middleware', m);
    const middleware = m as unknown as LimitRequestsMiddleware | LimitConnectionsMiddleware;
    for (const zone of middleware.zones) {
      const section = `${middleware.kind}:${zone}`;
      const list = out.get(section) ?? [];
      if (!list.includes(middleware)) list.push(middleware);
      out.set(section, list);
    }
  });
  return out;
}

/**
 * Live activity monitoring and on-the-fly reconfiguration: NGINX Plus's API (version 9 shapes) for
 * the pools and caches, Prometheus metrics at `/metrics`, and a live dashboard at `/dashboard`.
 * Writes (adding, changing, removing servers; resetting statistics) are refused unless `write`
 * allows the request, and need a JSON body. Requests whose Host is not an IP literal, `localhost`
 * or a name in `allowedHosts` are refused (403), against DNS rebinding. Mount it at any path.
 * @example
 * ```ts
 * import express from 'express';
 * import { randomUUID, timingSafeEqual } from 'node:crypto';
 * import { createPool, balance, monitor } from 'switchyard-proxy';
 *
 * const token = Buffer.from(`Bearer ${process.env.ADMIN_TOKEN || randomUUID()}`); // unset: nobody writes
 * const pool = createPool({ name: 'app', servers: [{ url: 'http://10.0.0.1:8080' }] });
 * const app = express();
 * app.use('/status', monitor({
 *   pools: [pool],
 *   allowedHosts: ['gateway.internal'],
 *   write: (req) => {
 *     const given = Buffer.from(req.headers.authorization ?? '');
 *     return given.length === token.length && timingSafeEqual(given, token);
 *   },
 * }));
 * app.use(balance(pool));
 * const server = app.listen(8080);
 * ```
 */
export function monitor(options: MonitorOptions): MonitorMiddleware {
  objectOption(options, '', MONITOR_OPTIONS, 'an object with pools');
  if (options.pools === undefined) throw new InvalidOptionError('pools', 'pools to monitor (an array or an object by name)', options.pools);
  const pools = named(options.pools, 'pools', (v) => v instanceof UpstreamPool);
  const caches = named(options.caches, 'caches', (v) => typeof v === 'function' && typeof (v as CacheMiddleware).stats === 'function');
  const write = functionOption<(req: IncomingMessage) => boolean>(options.write, 'write', 'a predicate (req) => boolean', () => false);
  const allowedHost = hostAllowed(options.allowedHosts);
  const prefix = stringOption(options.prefix, 'prefix', '', { pattern: /^(?:\/.*)?$/s, expected: 'a path starting with "/"' }).replace(/\/+$/, '');
  const dashboard = booleanOption(options.dashboard, 'dashboard', true);
  const maxBody = integerOption(options.maxBodySize, 'maxBodySize', DEFAULT_MAX_BODY_SIZE, { min: 1 });
  const now = nowOption(options.now);
  const healthChecks = options.healthChecks ?? [];
  if (!Array.isArray(healthChecks)) throw new InvalidOptionError('healthChecks', 'an array of healthCheck() results', healthChecks);
  healthChecks.forEach((h: unknown, i) => {
    if (h === null || typeof h !== 'object' || typeof (h as HealthCheck).name !== 'string')
      throw new InvalidOptionError(`healthChecks[${i}]`, 'a healthCheck() result', h);
  });

  const limits = limitZones(options.limits);
  const streamList = options.streams ?? [];
  if (!Array.isArray(streamList)) throw new InvalidOptionError('streams', 'an array of streamBalance() handlers', streamList);
  streamList.forEach((h: unknown, i) => {
    if (typeof h !== 'function' || typeof (h as StreamHandler).stats !== 'function' || !((h as StreamHandler).pool instanceof UpstreamPool))
      throw new InvalidOptionError(`streams[${i}]`, 'a streamBalance() handler', h);
  });
  const streams = streamSources(streamList);

  const counters = { connectionsAccepted: 0, connectionsActive: 0, requestsTotal: 0, requestsCurrent: 0, startedAt: now() };
  const server = options.server;
  const onConnection = (socket: Socket): void => {
    counters.connectionsAccepted++;
    counters.connectionsActive++;
    socket.once('close', () => counters.connectionsActive--);
  };
  const onRequest = (_req: IncomingMessage, res: ServerResponse): void => {
    counters.requestsTotal++;
    counters.requestsCurrent++;
    res.once('close', () => counters.requestsCurrent--);
  };
  if (server !== undefined) {
    if (typeof server !== 'object' || typeof (server as Server).on !== 'function') throw new InvalidOptionError('server', "the gateway's http.Server", server);
  }
  let handle: SyncHandle | undefined;
  if (options.sync !== false && options.sync !== undefined) {
    if (!isSyncHandle(options.sync)) throw new InvalidOptionError('sync', 'a handle from sync(), or false', options.sync);
    handle = options.sync;
  } else if (options.sync === undefined) {
    for (const p of [...pools.values(), ...streams.pools.values()]) handle ??= internals(p).sync();
  }
  if (server !== undefined) {
    server.on('connection', onConnection);
    server.on('request', onRequest);
  }

  const gateway = (): GatewayFigures => ({
    connectionsAccepted: counters.connectionsAccepted,
    connectionsActive: counters.connectionsActive,
    requestsTotal: counters.requestsTotal,
    requestsCurrent: counters.requestsCurrent,
    uptime: Math.max(0, (now() - counters.startedAt) / 1000),
  });
  const resetCounters = (target: ResetTarget): void => {
    if (target.kind === 'connections') counters.connectionsAccepted = counters.connectionsActive;
    else if (target.kind === 'requests') counters.requestsTotal = counters.requestsCurrent;
    else if (target.kind === 'limit_req' || target.kind === 'limit_conn') {
      for (const m of limits.get(`${target.kind}:${target.name}`) ?? []) m.resetStats(target.name);
    } else if (target.kind === 'stream_zone') {
      for (const h of streams.zones.get(target.name) ?? []) h.resetStats();
    } else if (target.kind === 'stream_upstream') {
      streams.pools.get(target.name)?.resetStreamStats();
    } else {
      const { kind, name } = target;
      const all: ReadonlyArray<UpstreamPool | CacheMiddleware> = kind === 'upstream' ? [...pools.values()] : [...caches.values()];
      for (const x of new Set(all)) if (x.name === name) x.resetStats();
    }
  };
  /** A zone's counters in this process: each of its middlewares' added up. */
  const zoneCounters = (section: string): LimitCounters => {
    const zone = section.slice(section.indexOf(':') + 1);
    const out: Record<string, number> = {};
    for (const m of limits.get(section) ?? []) {
      const stats = m.stats()[zone] as unknown as LimitCounters | undefined;
      for (const [name, n] of Object.entries(stats ?? {})) out[name] = (out[name] ?? 0) + n;
    }
    return out;
  };
  const limitSources = new Map([...limits.keys()].map((section) => [section, () => zoneCounters(section)] as const));
  const streamZones = new Map([...streams.zones].map(([zone, hs]) => [zone, () => serverZoneJson(hs)] as const));
  const view = new ClusterView({ pools, caches, limits: limitSources, streamPools: streams.pools, streamZones, gateway, reset: resetCounters }, handle);
  /** Resets here (`here`, or what `target` names), and on every instance when the monitor has a handle. */
  const reset = (target: ResetTarget, here = (): void => resetCounters(target)): void => {
    here();
    view.reset(target);
  };
  /** A pool's statistics: this process's, or with sync the totals over the live instances. */
  const poolStats = (p: UpstreamPool, all: () => InstanceFigures[]) => (view.shared ? poolTotals(p.stats(), all()) : p.stats());
  const cacheStats = (c: CacheMiddleware, all: () => InstanceFigures[]) => (view.shared ? cacheTotals(c.name, c.stats(), all()) : c.stats());
  const gatewayStats = (all: () => InstanceFigures[]) => (view.shared ? gatewayTotals(all()) : counters);
  const limitStats = (section: string, all: () => InstanceFigures[]) => (view.shared ? limitTotals(section, all()) : zoneCounters(section));
  const streamPoolStats = (p: UpstreamPool, all: () => InstanceFigures[]) => (view.shared ? streamPoolTotals(p.streamStats(), all()) : p.streamStats());
  const zoneStats = (zone: string, all: () => InstanceFigures[]) => (view.shared ? zoneTotals(zone, all()) : serverZoneJson(streams.zones.get(zone) ?? []));
  /** The zones of `kind`, by name, with their counters as NGINX Plus's JSON. */
  const limitsJson = (kind: LimitKind, all: () => InstanceFigures[]) =>
    Object.fromEntries(
      [...limits.keys()]
        .filter((section) => section.startsWith(`${kind}:`))
        .map((section) => [section.slice(kind.length + 1), limitJson(kind, limitStats(section, all))]),
    );
  /** One instance as `/api/9/switchyard/instances` shows it. */
  const instanceJson = (f: InstanceFigures) => ({
    host: f.host,
    pid: f.pid,
    self: f.self,
    age: f.age,
    ...(f.gateway === undefined
      ? {}
      : {
          connections: { accepted: f.gateway.connectionsAccepted, active: f.gateway.connectionsActive },
          requests: { total: f.gateway.requestsTotal, current: f.gateway.requestsCurrent },
        }),
    upstreams: Object.fromEntries(
      [...pools].flatMap(([name, p]) => {
        const stats = f.pools.get(p.name);
        return stats === undefined ? [] : [[name, upstreamJsonOf(stats)]];
      }),
    ),
    caches: Object.fromEntries(
      [...caches].flatMap(([name, c]) => {
        const stats = f.caches.get(c.name);
        return stats === undefined ? [] : [[name, cacheJsonOf(stats)]];
      }),
    ),
    limit_reqs: instanceLimits(f, 'limit_req'),
    limit_conns: instanceLimits(f, 'limit_conn'),
    ...(streamList.length === 0
      ? {}
      : {
          stream: {
            server_zones: Object.fromEntries(f.streamZones),
            upstreams: Object.fromEntries([...f.streamPools].map(([name, stats]) => [name, streamUpstreamJson(stats)])),
          },
        }),
  });
  const instanceLimits = (f: InstanceFigures, kind: LimitKind) =>
    Object.fromEntries([...f.limits].flatMap(([section, c]) => (section.startsWith(`${kind}:`) ? [[section.slice(kind.length + 1), limitJson(kind, c)]] : [])));
  /** What /metrics shows: this process, or with sync every live instance. */
  const metrics = (): string => {
    if (!view.shared) {
      const local: MetricsInstance = {
        label: undefined,
        gateway: gateway(),
        pools: [...pools].map(([name, p]) => [name, p.stats()] as const),
        caches: [...caches].map(([name, c]) => [name, cacheJson(c)] as const),
        limits: [...limits.keys()].map((section) => [section, zoneCounters(section)] as const),
      };
      const zones = [...streams.zones].map(([zone, hs]) => [zone, serverZoneJson(hs)] as const);
      return prometheus([local]) + streamMetrics([{ label: undefined, zones, pools: [...streams.pools].map(([name, p]) => [name, p.streamStats()] as const) }]);
    }
    const all = view.instances();
    return `${prometheus(
      all.map((f) => ({
        label: f.name,
        gateway: f.gateway,
        pools: [...pools].flatMap(([name, p]) => {
          const stats = f.pools.get(p.name);
          return stats === undefined ? [] : [[name, stats] as const];
        }),
        caches: [...caches].flatMap(([name, c]) => {
          const stats = f.caches.get(c.name);
          return stats === undefined ? [] : [[name, cacheJsonOf(stats)] as const];
        }),
        limits: [...f.limits],
      })),
      all.length,
    )}${streamMetrics(all.map((f) => ({ label: f.name, zones: [...f.streamZones], pools: [...f.streamPools] })))}`;
  };

  const send = (res: ServerResponse, status: number, body: unknown): void => {
    const text = body === undefined ? '' : `${JSON.stringify(body)}\n`;
    writeHead(res, status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
    });
    res.end(text);
  };
  const fail = (res: ServerResponse, err: ApiError): void => {
    const h2 = err.status === 413 && isHttp2Response(res);
    if (err.status === 413 && !h2) {
      // The unread rest of the body cannot be left on a kept-alive connection.
      res.setHeader('connection', 'close');
      res.once('finish', () => res.req.destroy());
    }
    send(res, err.status, { error: { status: err.status, text: err.message, code: err.code }, request_id: randomBytes(16).toString('hex'), href: HREF });
    // HTTP/2: only this stream ends, once the answer is out; the client is told to stop sending the rest.
    if (h2) closeHttp2Stream(res);
  };

  const readJson = (req: IncomingMessage): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const type = String(req.headers['content-type'] ?? '')
        .split(';')[0]!
        .trim()
        .toLowerCase();
      if (type !== 'application/json') {
        reject(new ApiError(415, 'JsonError', 'the body must be JSON, sent with Content-Type: application/json'));
        req.resume();
        return;
      }
      // A body parser before the monitor (express.json()) has read the stream already.
      const parsed = (req as IncomingMessage & { body?: unknown }).body;
      if (req.readableEnded || (parsed !== undefined && req.readableLength === 0 && req.complete)) {
        if (parsed !== null && typeof parsed === 'object' && !Buffer.isBuffer(parsed)) resolve(parsed);
        else reject(new ApiError(400, 'BodyReadError', 'the body was already read by another middleware and is not a JSON object'));
        return;
      }
      const tooLarge = (): void => {
        // Answered first, then the connection is closed (the rest of the body is never read).
        req.pause();
        reject(new ApiError(413, 'BodyReadError', `the body is larger than ${maxBody} bytes`));
      };
      if (Number(req.headers['content-length'] ?? 0) > maxBody) {
        tooLarge();
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      req.on('data', (chunk: Buffer) => {
        if (over) return;
        size += chunk.length;
        if (size > maxBody) {
          over = true;
          tooLarge();
          return;
        }
        chunks.push(chunk);
      });
      req.on('error', () => reject(new ApiError(400, 'BodyReadError', 'the body could not be read')));
      req.on('close', () => reject(new ApiError(400, 'BodyReadError', 'the connection closed before the body ended')));
      req.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (err) {
          reject(new ApiError(400, 'JsonError', `the body is not valid JSON: ${(err as Error).message}`));
        }
      });
    });

  const pool = (name: string): UpstreamPool => {
    const p = pools.get(name);
    if (p === undefined) throw new ApiError(404, 'UpstreamNotFound', `upstream not found: "${name}"`);
    return p;
  };
  const poolCall = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof ServerNotFoundError) throw new ApiError(404, 'UpstreamServerNotFound', err.message);
      // The field's NGINX Plus code (UpstreamBadWeight, UpstreamNoBackup...), from the server-field table.
      if (err instanceof InvalidOptionError) throw apiErrorOf(err.option, err.message);
      throw err;
    }
  };

  async function route(req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> {
    const method = req.method ?? 'GET';
    const parts = path
      .split('/')
      .filter((p) => p !== '')
      .map((p) => {
        try {
          return decodeURIComponent(p);
        } catch {
          throw new ApiError(400, 'BadRequest', 'malformed path');
        }
      });
    if (parts.length === 0) return false;
    let read: InstanceFigures[] | undefined;
    /** The live instances' figures, read once per request. */
    const all = (): InstanceFigures[] => (read ??= view.instances());
    if (parts[0] === 'metrics' && parts.length === 1) {
      if (method !== 'GET' && method !== 'HEAD') throw new ApiError(405, 'MethodNotSupported', 'method not supported');
      const text = metrics();
      writeHead(res, 200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
      res.end(method === 'HEAD' ? undefined : text);
      return true;
    }
    if (parts[0] === 'dashboard' && dashboard && parts.length <= 2) {
      if (method !== 'GET' && method !== 'HEAD') throw new ApiError(405, 'MethodNotSupported', 'method not supported');
      const file = parts[1] ?? '';
      const asset =
        file === ''
          ? [DASHBOARD_HTML, 'text/html; charset=utf-8']
          : file === 'dashboard.js'
            ? [DASHBOARD_JS, 'text/javascript; charset=utf-8']
            : file === 'dashboard.css'
              ? [DASHBOARD_CSS, 'text/css; charset=utf-8']
              : undefined;
      if (asset === undefined) return false;
      // `/dashboard` without the slash: the page's relative links need the directory form.
      if (file === '' && !path.endsWith('/')) {
        writeHead(res, 301, { location: 'dashboard/', 'content-length': 0 });
        res.end();
        return true;
      }
      writeHead(res, 200, {
        'content-type': asset[1]!,
        'content-length': Buffer.byteLength(asset[0]!),
        'cache-control': 'no-cache',
        'x-content-type-options': 'nosniff',
        'x-frame-options': 'DENY',
        'content-security-policy':
          "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
      });
      res.end(method === 'HEAD' ? undefined : asset[0]);
      return true;
    }
    if (parts[0] !== 'api') return false;
    if (parts.length === 1) {
      if (method !== 'GET') throw new ApiError(405, 'MethodNotSupported', 'method not supported');
      send(res, 200, [API_VERSION]);
      return true;
    }
    if (parts[1] !== String(API_VERSION)) throw new ApiError(404, 'UnknownVersion', 'unknown API version');
    const rest = parts.slice(2);
    const isWrite = method === 'POST' || method === 'PATCH' || method === 'DELETE';
    if (isWrite && !write(req)) throw new ApiError(405, 'MethodDisabled', 'method disabled');
    if (!isWrite && method !== 'GET' && method !== 'HEAD') throw new ApiError(405, 'MethodNotSupported', 'method not supported');
    const [a, b, c, d, e] = rest;
    if (a === undefined) return reply(res, method, ['nginx', 'connections', 'http', ...(streamList.length > 0 ? ['stream'] : []), 'switchyard']);
    if (a === 'nginx' && b === undefined) {
      return reply(res, method, {
        version: VERSION,
        build: 'switchyard',
        address: req.socket.localAddress ?? '',
        generation: 0,
        load_timestamp: new Date(counters.startedAt).toISOString(),
        timestamp: new Date(now()).toISOString(),
        pid: process.pid,
        ppid: process.ppid,
      });
    }
    if (a === 'switchyard') {
      if (b === undefined) {
        return reply(res, method, {
          version: VERSION,
          uptime: Math.floor((now() - counters.startedAt) / 1000),
          write: write(req),
          upstreams: [...pools.keys()],
          caches: [...caches.keys()],
          health_checks: healthChecks.map((h) => h.name),
          limit_reqs: Object.keys(limitsJson('limit_req', () => [])),
          limit_conns: Object.keys(limitsJson('limit_conn', () => [])),
          ...(view.shared ? { instance: view.instance, instances: all().length } : {}),
        });
      }
      if (b !== 'instances' || d !== undefined) return false;
      if (c === undefined) return reply(res, method, Object.fromEntries(all().map((f) => [f.name, instanceJson(f)])));
      const one = all().find((f) => f.name === c);
      if (one === undefined) throw new ApiError(404, 'InstanceNotFound', `instance not found: "${c}"`);
      return reply(res, method, instanceJson(one));
    }
    // The gateway's own counters: `/connections` and `/http/requests`.
    const counted = a === 'connections' && b === undefined ? 'connections' : a === 'http' && b === 'requests' && c === undefined ? 'requests' : undefined;
    if (counted !== undefined) {
      return resetOrReply(
        res,
        method,
        () => reset({ kind: counted }),
        () => {
          const g = gatewayStats(all);
          if (counted === 'requests') return { total: g.requestsTotal, current: g.requestsCurrent };
          return { accepted: g.connectionsAccepted, dropped: 0, active: g.connectionsActive, idle: 0 };
        },
      );
    }
    if (a === 'stream') {
      // the upstreams' servers are managed below, as the HTTP ones
      if (b !== 'upstreams' || c === undefined || d === undefined) return streamRoute(res, method, all, b, c, d);
    } else if (a !== 'http') return false;
    if (b === undefined) return reply(res, method, ['requests', 'upstreams', 'caches', 'limit_reqs', 'limit_conns']);
    if (b === 'limit_reqs' || b === 'limit_conns') {
      const kind: LimitKind = b === 'limit_reqs' ? 'limit_req' : 'limit_conn';
      if (c === undefined) {
        if (isWrite) throw new ApiError(405, 'MethodNotSupported', 'method not supported');
        return reply(res, method, limitsJson(kind, all));
      }
      const section = `${kind}:${c}`;
      if (!limits.has(section) || d !== undefined)
        throw new ApiError(404, kind === 'limit_req' ? 'LimitReqNotFound' : 'LimitConnNotFound', `${kind} zone not found: "${c}"`);
      return resetOrReply(
        res,
        method,
        () => reset({ kind, name: c }),
        () => limitJson(kind, limitStats(section, all)),
      );
    }
    if (b === 'caches') {
      if (c === undefined) return reply(res, method, Object.fromEntries([...caches].map(([name, cache]) => [name, cacheJsonOf(cacheStats(cache, all))])));
      const cache = caches.get(c);
      if (cache === undefined || d !== undefined) throw new ApiError(404, 'CacheNotFound', `cache not found: "${c}"`);
      return resetOrReply(
        res,
        method,
        () => reset({ kind: 'cache', name: cache.name }, () => cache.resetStats()),
        () => cacheJsonOf(cacheStats(cache, all)),
      );
    }
    if (b !== 'upstreams') return false;
    if (c === undefined) {
      if (isWrite) throw new ApiError(405, 'MethodNotSupported', 'method not supported');
      return reply(res, method, Object.fromEntries([...pools].map(([name, p]) => [name, upstreamJsonOf(poolStats(p, all))])));
    }
    const p = a === 'stream' ? streamPool(c) : pool(c);
    if (d === undefined) {
      return resetOrReply(
        res,
        method,
        () => reset({ kind: 'upstream', name: p.name }, () => p.resetStats()),
        () => upstreamJsonOf(poolStats(p, all)),
      );
    }
    if (d !== 'servers' || rest.length > 5) return false;
    if (e === undefined) {
      if (method === 'POST') {
        const body = await readJson(req);
        const options = serverFromBody(body);
        if (options.id !== undefined && p.get(options.id) !== undefined) throw new ApiError(409, 'EntryExists', `a server with id "${options.id}" exists`);
        const info = poolCall(() => p.add(options));
        send(res, 201, serverConf(info));
        return true;
      }
      if (isWrite) throw new ApiError(405, 'MethodNotSupported', 'method not supported');
      return reply(res, method, p.servers.map(serverConf));
    }
    if (p.get(e) === undefined) throw new ApiError(404, 'UpstreamServerNotFound', `server not found: "${e}"`);
    if (method === 'PATCH') {
      const body = await readJson(req);
      const changes = updateFromBody(body);
      send(res, 200, serverConf(poolCall(() => p.update(e, changes))));
      return true;
    }
    if (method === 'DELETE') {
      poolCall(() => p.remove(e));
      send(res, 200, p.servers.map(serverConf));
      return true;
    }
    if (method === 'POST') throw new ApiError(405, 'MethodNotSupported', 'method not supported');
    return reply(res, method, serverConf(p.get(e)!));
  }

  const streamPool = (name: string): UpstreamPool => {
    const p = streams.pools.get(name);
    if (p === undefined) throw new ApiError(404, 'UpstreamNotFound', `upstream not found: "${name}"`);
    return p;
  };
  /** `/api/9/stream`, its server zones and its upstreams' statistics. */
  const streamRoute = (res: ServerResponse, method: string, all: () => InstanceFigures[], b?: string, c?: string, d?: string): boolean => {
    if (b === undefined) return reply(res, method, ['server_zones', 'upstreams']);
    if (b === 'server_zones') {
      if (c === undefined) return reply(res, method, Object.fromEntries([...streams.zones.keys()].map((zone) => [zone, zoneStats(zone, all)])));
      const hs = streams.zones.get(c);
      if (hs === undefined || d !== undefined) throw new ApiError(404, 'ServerZoneNotFound', `server zone not found: "${c}"`);
      return resetOrReply(
        res,
        method,
        () => reset({ kind: 'stream_zone', name: c }),
        () => zoneStats(c, all),
      );
    }
    if (b !== 'upstreams' || d !== undefined) return false;
    if (c === undefined)
      return reply(res, method, Object.fromEntries([...streams.pools].map(([name, p]) => [name, streamUpstreamJson(streamPoolStats(p, all))])));
    const p = streamPool(c);
    return resetOrReply(
      res,
      method,
      () => reset({ kind: 'stream_upstream', name: p.name }),
      () => streamUpstreamJson(streamPoolStats(p, all)),
    );
  };

  const reply = (res: ServerResponse, method: string, body: unknown): true => {
    if (method !== 'GET' && method !== 'HEAD') throw new ApiError(405, 'MethodNotSupported', 'method not supported');
    send(res, 200, body);
    return true;
  };

  /** A statistics endpoint: DELETE resets (204, as NGINX Plus), GET and HEAD read, anything else is a 405. */
  const resetOrReply = (res: ServerResponse, method: string, reset: () => void, body: () => unknown): true => {
    if (method !== 'DELETE') return reply(res, method, body());
    reset();
    writeHead(res, 204);
    res.end();
    return true;
  };

  const handler = function monitor(req: IncomingMessage, res: ServerResponse, next: Next): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let path = q === -1 ? url : url.slice(0, q);
    if (prefix !== '') {
      if (path !== prefix && !path.startsWith(`${prefix}/`)) {
        next();
        return;
      }
      path = path.slice(prefix.length) || '/';
    }
    // An HTTP/2 request names its host in :authority.
    const host = requestHost(req);
    if (!allowedHost(host)) {
      fail(
        res,
        new ApiError(403, 'HostNotAllowed', `host not allowed: ${JSON.stringify(host ?? '')} (list the names the monitor is reached by in allowedHosts)`),
      );
      return;
    }
    route(req, res, path).then(
      (handled) => {
        if (!handled) fail(res, new ApiError(404, 'PathNotFound', 'path not found'));
      },
      (err: unknown) => {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        if (err instanceof ApiError) fail(res, err);
        else next(err);
      },
    );
  };
  return Object.assign(handler, {
    close(): void {
      server?.off('connection', onConnection);
      server?.off('request', onRequest);
      view.close();
    },
  }) as MonitorMiddleware;
}
