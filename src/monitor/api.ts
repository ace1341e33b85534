// The NGINX Plus API (version 9) shapes of switchyard's pools and caches, and the validation of
// writes to upstream servers.
import { formatDuration, parseDuration } from '../core/duration.ts';
import { SERVER_FIELDS, type ServerField } from '../pool/fields.ts';
import type { PoolStats, ServerInfo, ServerOptions, ServerUpdate, UpstreamPool } from '../pool/index.ts';
import type { ServerStats } from '../pool/peer.ts';
import type { CacheMiddleware, CacheStats } from '../cache/index.ts';

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

/** A server's active health check counters in NGINX Plus's form (the HTTP and the stream upstreams alike). */
export function healthChecksJson(h: ServerStats['healthChecks']): Record<string, unknown> {
  return {
    checks: h.checks,
    fails: h.fails,
    unhealthy: h.unhealthy,
    ...(h.lastPassed === undefined ? {} : { last_passed: h.lastPassed }),
  };
}

/**
 * A server's configuration as `GET /api/9/http/upstreams/{name}/servers` lists it: every field of
 * the server-field table under its NGINX Plus name, durations as nginx writes them, the address as
 * `server` (`host:port`) and, switchyard's own, the `url`.
 */
export function serverConf(s: ServerInfo): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of SERVER_FIELDS) {
    const value = s[field.name];
    if (field.kind === 'url') {
      out[field.api] = hostPort(s.url);
      out[URL_FIELD] = s.url;
    } else out[field.api] = field.kind === 'duration' ? formatDuration(value as number) : value;
  }
  return out;
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
    health_checks: healthChecksJson(s.healthChecks),
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
  return upstreamJsonOf(pool.stats());
}

/** A pool's statistics (of this process, of another instance, or the totals) as `GET /api/9/http/upstreams/{name}` shows them. */
export function upstreamJsonOf(stats: PoolStats) {
  return {
    peers: stats.servers.map(peerJson),
    keepalive: stats.keepalive,
    zombies: stats.zombies,
    zone: stats.name,
    ...(stats.queue === undefined ? {} : { queue: { size: stats.queue.size, max_size: stats.queue.maxSize, overflows: stats.queue.overflows } }),
  };
}

/** One cache status's counters as NGINX Plus names them. */
export interface CacheCounterJson {
  responses: number;
  bytes: number;
}

/** The counters of a status that goes upstream, with what was written to the cache. */
export interface CacheWriteCounterJson extends CacheCounterJson {
  responses_written: number;
  bytes_written: number;
}

/** A cache as `GET /api/9/http/caches/{name}` shows it (NGINX Plus's names), and as `/metrics` reads it. */
export interface CacheJson {
  size: number;
  max_size?: number | undefined;
  cold: boolean;
  hit: CacheCounterJson;
  stale: CacheCounterJson;
  updating: CacheCounterJson;
  revalidated: CacheCounterJson;
  miss: CacheWriteCounterJson;
  expired: CacheWriteCounterJson;
  bypass: CacheWriteCounterJson;
}

/** The cache statuses counted without writes, and those that write, in the API's order. */
export const CACHE_READ_STATUSES = ['hit', 'stale', 'updating', 'revalidated'] as const;
export const CACHE_WRITE_STATUSES = ['miss', 'expired', 'bypass'] as const;

/**
 * A cache's statistics under NGINX Plus's snake_case names: the one place the monitor maps
 * `cache.stats()` to them, from switchyard's camelCase names (`maxSize`, `responsesWritten`,
 * `bytesWritten`, as `pool.stats()` has them); `max_size` is left out when there is none.
 */
export function cacheJson(cache: CacheMiddleware): CacheJson {
  return cacheJsonOf(cache.stats());
}

/** {@link cacheJson} of a cache's statistics (of this process, of another instance, or the totals). */
export function cacheJsonOf(s: CacheStats): CacheJson {
  const out: Partial<CacheJson> = { size: s.size };
  if (s.maxSize !== undefined) out.max_size = s.maxSize;
  out.cold = s.cold;
  for (const status of CACHE_READ_STATUSES) out[status] = { responses: s[status].responses, bytes: s[status].bytes };
  for (const status of CACHE_WRITE_STATUSES) {
    const c = s[status];
    out[status] = { responses: c.responses, bytes: c.bytes, responses_written: c.responsesWritten, bytes_written: c.bytesWritten };
  }
  return out as CacheJson;
}

/** switchyard's own name for the address, beside NGINX Plus's `server`: the server's url. */
const URL_FIELD = 'url';
/** The server fields by their API name (`url` too). */
const API_FIELDS: ReadonlyMap<string, ServerField> = new Map<string, ServerField>([
  ...SERVER_FIELDS.map((f): [string, ServerField] => [f.api, f]),
  [URL_FIELD, SERVER_FIELDS.find((f) => f.kind === 'url')!],
]);
/** Longest duration a write may set: a day (longer ones would keep a failed server out for good). */
const MAX_DURATION = 86_400_000;

/** Checks a written value's type and range as the field's kind wants it (ApiError naming the field). */
function checkType(name: string, field: ServerField, value: unknown): void {
  const kind = field.kind;
  const ok =
    kind === 'integer'
      ? typeof value === 'number' && Number.isSafeInteger(value)
      : kind === 'duration'
        ? (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= MAX_DURATION) || (typeof value === 'string' && value.length <= 32)
        : kind === 'boolean'
          ? typeof value === 'boolean'
          : typeof value === 'string';
  if (!ok) throw new ApiError(400, 'UpstreamConfFormatError', `invalid "${name}" value: expected ${expected(field)}`);
  if (kind === 'duration' && typeof value === 'string') {
    let ms: number;
    try {
      ms = parseDuration(value, name);
    } catch {
      throw new ApiError(400, field.apiError, `invalid "${name}" value: expected ${expected(field)}`);
    }
    if (ms < 0 || ms > MAX_DURATION) throw new ApiError(400, field.apiError, `invalid "${name}" value: ${value} is out of range (at most a day)`);
  }
  if (kind === 'integer' && (value as number) < (field.min ?? 0))
    throw new ApiError(400, field.apiError, `invalid "${name}" value: ${String(value)} is out of range`);
}

function expected(field: ServerField): string {
  if (field.kind === 'integer') return `an integer >= ${field.min ?? 0}`;
  if (field.kind === 'duration') return 'a duration such as "10s", or whole milliseconds up to a day';
  if (field.kind === 'boolean') return 'true or false';
  return 'a string';
}

function plainObject(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ApiError(400, 'UpstreamConfFormatError', 'the body must be a JSON object');
  for (const [k, v] of Object.entries(body)) {
    if (v !== null && typeof v === 'object')
      throw new ApiError(400, 'UpstreamConfFormatError', `invalid "${k}" value: nested objects and lists are not accepted`);
  }
  return body as Record<string, unknown>;
}

/**
 * The fields of a server body (a plain object), in order, each with what it maps to: an
 * {@link ApiError} for one this API does not know, when the iteration reaches it.
 */
function* fieldsOf(body: unknown): Generator<[name: string, field: ServerField, value: unknown]> {
  for (const [name, value] of Object.entries(plainObject(body))) {
    const field = API_FIELDS.get(name);
    if (field === undefined) throw new ApiError(400, 'UpstreamConfFormatError', `unknown parameter "${name}"`);
    yield [name, field, value];
  }
}

/** The server options of a `POST …/servers` body, or an {@link ApiError} naming the field. */
export function serverFromBody(body: unknown): ServerOptions {
  const out: Record<string, unknown> = {};
  for (const [name, field, value] of fieldsOf(body)) {
    checkType(name, field, value);
    if (field.kind === 'url' && out[field.name] !== undefined)
      throw new ApiError(400, 'UpstreamConfFormatError', `give "${field.api}" or "${URL_FIELD}", not both`);
    out[field.name] = field.kind === 'url' ? urlOf(value as string) : value;
  }
  if (out.url === undefined) throw new ApiError(400, 'UpstreamConfFormatError', 'missing "server"');
  return out as unknown as ServerOptions;
}

/** NGINX Plus's `server` is `host:port` (http); a url is taken as it is. */
function urlOf(address: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `http://${address}`;
}

/** The changes of a `PATCH …/servers/{id}` body, or an {@link ApiError} naming the field. */
export function updateFromBody(body: unknown): ServerUpdate {
  const out: Record<string, unknown> = {};
  for (const [name, field, value] of fieldsOf(body)) {
    if (!field.update) throw new ApiError(400, 'UpstreamServerImmutable', `"${name}" cannot be changed on an existing server`);
    checkType(name, field, value);
    out[field.name] = value;
  }
  return out as ServerUpdate;
}

/** Maps an InvalidOptionError from the pool to NGINX Plus's code for the field it names. */
export function apiErrorOf(option: string, message: string): ApiError {
  const field = SERVER_FIELDS.find((f) => option === f.name || option.endsWith(`.${f.name}`));
  if (field === undefined) return new ApiError(400, 'UpstreamConfFormatError', message);
  return new ApiError(400, field.apiError, `invalid "${field.api}" value: ${message}`);
}

/** The kinds of limit zones: limitRequests()'s (`/api/9/http/limit_reqs`) and limitConnections()'s (`/api/9/http/limit_conns`). */
export type LimitKind = 'limit_req' | 'limit_conn';

/** The counters of a zone of each kind, as the middlewares' `stats()` name them. */
export const LIMIT_COUNTERS: Readonly<Record<LimitKind, readonly string[]>> = {
  limit_req: ['passed', 'delayed', 'rejected', 'delayedDryRun', 'rejectedDryRun'],
  limit_conn: ['passed', 'rejected', 'rejectedDryRun'],
};

/** A zone's counters, by the middlewares' names for them. */
export type LimitCounters = Readonly<Record<string, number>>;

/** NGINX Plus's JSON of a zone's counters (`/api/9/http/limit_reqs/{zone}`: `passed`, `delayed`, `rejected`, `delayed_dry_run`, `rejected_dry_run`). */
export function limitJson(kind: LimitKind, counters: LimitCounters): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of LIMIT_COUNTERS[kind]) out[snake(name)] = counters[name] ?? 0;
  return out;
}

/** `delayedDryRun` as NGINX Plus writes it: `delayed_dry_run`. */
export function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
