// The NGINX Plus API (version 9) shapes of switchyard's pools and caches, and the validation of
// writes to upstream servers.
import { parseDuration } from '../core/duration.ts';
import type { ServerInfo, ServerOptions, ServerUpdate, UpstreamPool } from '../pool/index.ts';
import type { ServerStats } from '../pool/peer.ts';
import type { CacheMiddleware } from '../cache/index.ts';

/** An API error: the status, NGINX Plus's error code, and the text. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, text: string) {
    super(text);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** nginx's duration text for milliseconds: `'10s'`, `'500ms'`. */
export function durationText(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** A server's configuration as `GET /api/9/http/upstreams/{name}/servers` lists it. */
export function serverConf(s: ServerInfo) {
  return {
    id: s.id,
    server: hostPort(s.url),
    url: s.url,
    weight: s.weight,
    max_conns: s.maxConns,
    max_fails: s.maxFails,
    fail_timeout: durationText(s.failTimeout),
    slow_start: durationText(s.slowStart),
    route: s.route,
    backup: s.backup,
    down: s.down,
    drain: s.drain,
  };
}

/** `host:port` of a server url (the url is already free of credentials). */
export function hostPort(url: string): string {
  const u = new URL(url);
  const port = u.port !== '' ? u.port : u.protocol === 'https:' ? '443' : '80';
  return `${u.hostname}:${port}`;
}

/** One peer as `GET /api/9/http/upstreams/{name}` shows it. */
export function peerJson(s: ServerStats) {
  return {
    id: s.id,
    server: s.name,
    name: s.name,
    backup: s.backup,
    weight: s.weight,
    state: s.state,
    active: s.active,
    max_conns: s.maxConns,
    requests: s.requests,
    responses: s.responses,
    sent: s.sent,
    received: s.received,
    fails: s.fails,
    unavail: s.unavail,
    health_checks: { checks: s.healthChecks.checks, fails: s.healthChecks.fails, unhealthy: s.healthChecks.unhealthy, ...(s.healthChecks.lastPassed === undefined ? {} : { last_passed: s.healthChecks.lastPassed }) },
    downtime: s.downtime,
    ...(s.downstart === undefined ? {} : { downstart: s.downstart }),
    ...(s.selected === undefined ? {} : { selected: s.selected }),
    header_time: s.headerTime,
    response_time: s.responseTime,
    response_time_hist: s.responseTimeHist,
  };
}

/** An upstream as `GET /api/9/http/upstreams/{name}` shows it. */
export function upstreamJson(pool: UpstreamPool) {
  const stats = pool.stats();
  return {
    peers: stats.servers.map(peerJson),
    keepalive: stats.keepalive,
    zombies: stats.zombies,
    zone: pool.name,
    ...(stats.queue === undefined ? {} : { queue: { size: stats.queue.size, max_size: stats.queue.maxSize, overflows: stats.queue.overflows } }),
  };
}

/** A cache as `GET /api/9/http/caches/{name}` shows it. */
export function cacheJson(cache: CacheMiddleware) {
  const s = cache.stats();
  return { ...s, ...(s.max_size === undefined ? { max_size: undefined } : {}) };
}

const CONF_FIELDS = new Map<string, string>([
  ['server', 'server'],
  ['url', 'url'],
  ['id', 'id'],
  ['weight', 'weight'],
  ['max_conns', 'maxConns'],
  ['max_fails', 'maxFails'],
  ['fail_timeout', 'failTimeout'],
  ['slow_start', 'slowStart'],
  ['route', 'route'],
  ['backup', 'backup'],
  ['down', 'down'],
  ['drain', 'drain'],
]);
/** Longest duration a write may set: a day (longer ones would keep a failed server out for good). */
const MAX_DURATION = 86_400_000;
const PATCHABLE = new Set(['weight', 'max_conns', 'max_fails', 'fail_timeout', 'slow_start', 'route', 'down', 'drain']);
const BAD_VALUE_CODE: Record<string, string> = {
  weight: 'UpstreamBadWeight',
  max_conns: 'UpstreamBadMaxConns',
  max_fails: 'UpstreamBadMaxFails',
  fail_timeout: 'UpstreamBadFailTimeout',
  slow_start: 'UpstreamBadSlowStart',
  route: 'UpstreamBadRoute',
  server: 'UpstreamBadAddress',
  url: 'UpstreamBadAddress',
};

function checkType(field: string, value: unknown): void {
  const ok =
    field === 'weight' || field === 'max_conns' || field === 'max_fails'
      ? typeof value === 'number' && Number.isSafeInteger(value)
      : field === 'fail_timeout' || field === 'slow_start'
        ? (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= MAX_DURATION) || (typeof value === 'string' && value.length <= 32)
        : field === 'backup' || field === 'down' || field === 'drain'
          ? typeof value === 'boolean'
          : typeof value === 'string';
  if (!ok) throw new ApiError(400, 'UpstreamConfFormatError', `invalid "${field}" value: expected ${expected(field)}`);
  if ((field === 'fail_timeout' || field === 'slow_start') && typeof value === 'string') {
    let ms: number;
    try {
      ms = parseDuration(value, field);
    } catch {
      throw new ApiError(400, BAD_VALUE_CODE[field]!, `invalid "${field}" value: expected ${expected(field)}`);
    }
    if (ms < 0 || ms > MAX_DURATION) throw new ApiError(400, BAD_VALUE_CODE[field]!, `invalid "${field}" value: ${value} is out of range (at most a day)`);
  }
  if ((field === 'weight' && (value as number) < 1) || ((field === 'max_conns' || field === 'max_fails') && (value as number) < 0)) {
    throw new ApiError(400, BAD_VALUE_CODE[field]!, `invalid "${field}" value: ${String(value)} is out of range`);
  }
}

function expected(field: string): string {
  if (field === 'weight') return 'an integer >= 1';
  if (field === 'max_conns' || field === 'max_fails') return 'an integer >= 0';
  if (field === 'fail_timeout' || field === 'slow_start') return 'a duration such as "10s", or whole milliseconds up to a day';
  if (field === 'backup' || field === 'down' || field === 'drain') return 'true or false';
  return 'a string';
}

function plainObject(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ApiError(400, 'UpstreamConfFormatError', 'the body must be a JSON object');
  for (const [k, v] of Object.entries(body)) {
    if (v !== null && typeof v === 'object') throw new ApiError(400, 'UpstreamConfFormatError', `invalid "${k}" value: nested objects and lists are not accepted`);
  }
  return body as Record<string, unknown>;
}

/** The server options of a `POST …/servers` body, or an {@link ApiError} naming the field. */
export function serverFromBody(body: unknown): ServerOptions {
  const o = plainObject(body);
  const out: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(o)) {
    const key = CONF_FIELDS.get(field);
    if (key === undefined) throw new ApiError(400, 'UpstreamConfFormatError', `unknown parameter "${field}"`);
    checkType(field, value);
    out[key] = value;
  }
  if (typeof out.server === 'string' && typeof out.url === 'string') throw new ApiError(400, 'UpstreamConfFormatError', 'give "server" or "url", not both');
  const address = (out.url ?? out.server) as string | undefined;
  if (address === undefined) throw new ApiError(400, 'UpstreamConfFormatError', 'missing "server"');
  delete out.server;
  out.url = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `http://${address}`;
  return out as unknown as ServerOptions;
}

/** The changes of a `PATCH …/servers/{id}` body, or an {@link ApiError} naming the field. */
export function updateFromBody(body: unknown): ServerUpdate {
  const o = plainObject(body);
  const out: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(o)) {
    if (field === 'id' || field === 'server' || field === 'backup' || field === 'url') {
      throw new ApiError(400, 'UpstreamServerImmutable', `"${field}" cannot be changed on an existing server`);
    }
    if (!PATCHABLE.has(field)) throw new ApiError(400, 'UpstreamConfFormatError', `unknown parameter "${field}"`);
    checkType(field, value);
    out[CONF_FIELDS.get(field)!] = value;
  }
  return out as ServerUpdate;
}

/** Maps an InvalidOptionError from the pool to NGINX Plus's code for the field. */
export function apiErrorOf(option: string, message: string): ApiError {
  const field = [...CONF_FIELDS].find(([, key]) => option === key || option.endsWith(`.${key}`))?.[0];
  const code = field === undefined ? 'UpstreamConfFormatError' : (BAD_VALUE_CODE[field] ?? 'UpstreamConfFormatError');
  return new ApiError(400, code, field === undefined ? message : `invalid "${field}" value: ${message}`);
}
