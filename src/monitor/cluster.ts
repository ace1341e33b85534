// The monitor's view of the gateway's instances (issue 14): every live instance's figures, read from
// the statistics board of a sync handle, and how they add up to the totals the API, the dashboard
// and /metrics answer with. Without a handle the view is this process alone.
//
// Every instance answers from the same data: the other instances' last reports, and for this one
// the report it last published as the others heard it (its echo on the board's channel), not its
// figures of this instant. So a scrape or a GET gives the same numbers whichever instance takes it,
// and an instance's counters never go back between two reads served by two instances.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { CacheCounter, CacheMiddleware, CacheStats, CacheWriteCounter } from '../cache/index.ts';
import type { PoolStats, StreamPoolStats, StreamServerStats, UpstreamPool } from '../pool/index.ts';
import { RESPONSE_TIME_BUCKETS, type ResponseCounters, type ServerState, type ServerStats } from '../pool/peer.ts';
import { type InstanceReport, type SyncHandle, type SyncInternals, syncInternals } from '../sync/index.ts';
import { parseJson } from '../sync/transport.ts';
import { LIMIT_COUNTERS, type LimitCounters, type LimitKind } from './api.ts';
import { addZones, type ZoneFigures } from './stream.ts';

/** What a monitor counts of its gateway's server, as its instance's `monitor` section carries it. */
export interface GatewayFigures {
  connectionsAccepted: number;
  connectionsActive: number;
  requestsTotal: number;
  requestsCurrent: number;
  /** Seconds since the monitor started, when the figures were read. */
  uptime: number;
}

/** One instance's figures, as the monitor reads them. */
export interface InstanceFigures {
  /** The instance's name (the sync handle's `instance`), or `<host>:<pid>` without sync. */
  readonly name: string;
  readonly host: string;
  readonly pid: number;
  /** Whether it is the instance answering. */
  readonly self: boolean;
  /** Milliseconds since the report these figures come from was heard; 0 when read on the spot. */
  readonly age: number;
  /** What its monitor counted of its server; undefined when it runs no monitor with sync. */
  readonly gateway: GatewayFigures | undefined;
  /** Its statistics of the pools this monitor shows, by pool name (those it has). */
  readonly pools: ReadonlyMap<string, PoolStats>;
  /** Its statistics of the caches this monitor shows, by cache name (those it has). */
  readonly caches: ReadonlyMap<string, CacheStats>;
  /** Its counters of the limit zones this monitor shows, by section name (`limit_req:<zone>`, `limit_conn:<zone>`; those it has). */
  readonly limits: ReadonlyMap<string, LimitCounters>;
  /** Its stream statistics of the stream pools this monitor shows, by pool name (those it published). */
  readonly streamPools: ReadonlyMap<string, StreamPoolStats>;
  /** Its stream server zones this monitor shows, by zone name (those it has). */
  readonly streamZones: ReadonlyMap<string, ZoneFigures>;
}

/** A reset the API was asked for, as it is broadcast to the other instances' monitors. */
export type ResetTarget =
  | { kind: 'upstream'; name: string }
  | { kind: 'cache'; name: string }
  | { kind: LimitKind; name: string }
  | { kind: 'stream_upstream'; name: string }
  | { kind: 'stream_zone'; name: string }
  | { kind: 'connections' }
  | { kind: 'requests' };

/** What a {@link ClusterView} reads and resets. */
export interface ClusterSources {
  pools: ReadonlyMap<string, UpstreamPool>;
  caches: ReadonlyMap<string, CacheMiddleware>;
  /** The limit zones' counters of this process, by section name (`limit_req:<zone>`, `limit_conn:<zone>`). */
  limits: ReadonlyMap<string, () => LimitCounters>;
  /** The pools of the stream handlers shown, by pool name. */
  streamPools: ReadonlyMap<string, UpstreamPool>;
  /** The stream server zones' figures of this process, by zone name. */
  streamZones: ReadonlyMap<string, () => ZoneFigures>;
  /** This monitor's gateway counters now. */
  gateway(): GatewayFigures;
  /** Resets what `target` names here (a reset another instance's monitor was asked for). */
  reset(target: ResetTarget): void;
}

/** The board section a monitor publishes its gateway counters under. */
export const MONITOR_SECTION = 'monitor';
/** The board section of a pool's stream statistics (`pool.streamStats()`), published by the pool's sync part or by the monitor. */
export const streamSection = (pool: string): string => `stream:${pool}`;
/** The board section of a stream server zone's figures, published by the monitor that shows it. */
const zoneSection = (zone: string): string => `stream_zone:${zone}`;
/** The channel resets are broadcast on. */
const RESET_CHANNEL = 'monitor:reset';
/** The channel the statistics board publishes reports on (src/sync/index.ts). */
const STATS_CHANNEL = 'stats';

/** The name of this process when there is no sync handle. */
const LOCAL_NAME = `${hostname()}:${process.pid}`;

/** The instances of a gateway as one monitor sees them. */
export class ClusterView {
  /** Whether the view spans the instances of a sync handle. */
  readonly shared: boolean;
  /** This instance's name. */
  readonly instance: string;
  readonly #sources: ClusterSources;
  readonly #sync: SyncInternals | undefined;
  readonly #id = randomUUID();
  /** When each instance's last report was heard, by instance name. */
  readonly #heard = new Map<string, number>();
  /** This instance's last published report, as the others heard it. */
  #echo: { at: number; report: InstanceReport } | undefined;
  #closed = false;
  readonly #stops: Array<() => void> = [];

  constructor(sources: ClusterSources, handle: SyncHandle | undefined) {
    this.#sources = sources;
    this.shared = handle !== undefined;
    if (handle === undefined) {
      this.instance = LOCAL_NAME;
      return;
    }
    const shared = syncInternals(handle);
    this.#sync = shared;
    this.instance = shared.instance;
    const board = shared.board;
    this.#stops.push(
      shared.transport.listen(STATS_CHANNEL, (message) => this.#heardReport(message)),
      shared.transport.listen(RESET_CHANNEL, (message) => this.#heardReset(message)),
      shared.transport.onConnection((up) => {
        this.#echo = undefined;
        if (up) this.publish();
      }),
    );
    // What this instance does not publish yet (a pool without this handle, a cache without sync),
    // the monitor publishes: every instance then sees every pool and cache this one shows.
    const own = board.reports().get(shared.instance)?.sections ?? {};
    for (const pool of new Set(sources.pools.values())) {
      if (!(`pool:${pool.name}` in own)) this.#stops.push(board.provide(`pool:${pool.name}`, () => pool.stats()));
    }
    for (const cache of new Set(sources.caches.values())) {
      if (!(`cache:${cache.name}` in own)) this.#stops.push(board.provide(`cache:${cache.name}`, () => cache.stats()));
    }
    for (const [section, read] of sources.limits) if (!(section in own)) this.#stops.push(board.provide(section, read));
    for (const pool of new Set(sources.streamPools.values())) {
      const section = streamSection(pool.name);
      if (!(section in own)) this.#stops.push(board.provide(section, () => pool.streamStats()));
    }
    for (const [zone, read] of sources.streamZones) if (!(zoneSection(zone) in own)) this.#stops.push(board.provide(zoneSection(zone), read));
    this.#stops.push(board.provide(MONITOR_SECTION, () => sources.gateway()));
    shared.onClose(() => this.close());
    this.publish();
  }

  /** Publishes this instance's report now (after a reset, and when the engine comes back). */
  publish(): void {
    if (this.#sync === undefined || this.#closed) return;
    this.#sync.board.publish().catch(() => {});
  }

  /**
   * Every live instance's figures, in the order of their names (the same list from any instance).
   * While the engine is away, this instance alone, read on the spot: the others' last reports
   * would be older than what they answer for themselves meanwhile.
   */
  instances(): InstanceFigures[] {
    const sync = this.#sync;
    if (sync === undefined || this.#closed || !sync.transport.connected) return [this.#local()];
    const now = sync.clock.now();
    const echo = this.#echo;
    const out: InstanceFigures[] = [];
    for (const [name, fresh] of sync.board.reports()) {
      if (name === sync.instance) {
        out.push(this.#figures(echo?.report ?? fresh, true, echo === undefined ? 0 : Math.max(0, now - echo.at)));
      } else {
        out.push(this.#figures(fresh, false, Math.max(0, now - (this.#heard.get(name) ?? now))));
      }
    }
    for (const name of this.#heard.keys()) if (!out.some((f) => f.name === name)) this.#heard.delete(name);
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Asks the other instances' monitors to reset what `target` names (the caller resets its own),
   * and publishes this instance's figures, so the totals show the reset soon. Sends nothing
   * without a handle or while the engine is away: the reset then stays here.
   */
  reset(target: ResetTarget): void {
    const sync = this.#sync;
    if (sync === undefined || this.#closed) return;
    // Figures read on the spot until the next echo: not the report published before the reset.
    this.#echo = undefined;
    if (sync.transport.connected) sync.transport.broadcast(RESET_CHANNEL, JSON.stringify({ origin: this.#id, ...target })).catch(() => {});
    this.publish();
  }

  /** Stops publishing and listening; the view is this process alone from then on. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#echo = undefined;
    for (const stop of this.#stops.splice(0)) stop();
  }

  #heardReport(message: string): void {
    const sync = this.#sync;
    if (sync === undefined) return;
    const report = parseJson(message);
    const name = (report as { instance?: unknown } | null)?.instance;
    if (typeof name !== 'string') return;
    const at = sync.clock.now();
    if (name !== sync.instance) {
      this.#heard.set(name, at);
      return;
    }
    const r = report as Partial<InstanceReport>;
    if (typeof r.host !== 'string' || typeof r.pid !== 'number' || !isRecord(r.sections)) return;
    this.#echo = { at, report: { instance: name, host: r.host, pid: r.pid, sections: r.sections } };
  }

  #heardReset(message: string): void {
    const m = parseJson(message);
    if (!isRecord(m) || m.origin === this.#id) return;
    const kind = m.kind;
    if (kind === 'connections' || kind === 'requests') this.#sources.reset({ kind });
    else if (kind === 'upstream' && typeof m.name === 'string') this.#sources.reset({ kind, name: m.name });
    else if (kind === 'cache' && typeof m.name === 'string') this.#sources.reset({ kind, name: m.name });
    else if ((kind === 'limit_req' || kind === 'limit_conn' || kind === 'stream_upstream' || kind === 'stream_zone') && typeof m.name === 'string')
      this.#sources.reset({ kind, name: m.name });
    else return;
    this.#echo = undefined;
    this.publish();
  }

  /** This process's figures, read now. */
  #local(): InstanceFigures {
    const pools = new Map<string, PoolStats>();
    for (const pool of this.#sources.pools.values()) pools.set(pool.name, pool.stats());
    const caches = new Map<string, CacheStats>();
    for (const cache of this.#sources.caches.values()) caches.set(cache.name, cache.stats());
    const limits = new Map<string, LimitCounters>();
    for (const [section, read] of this.#sources.limits) limits.set(section, read());
    const streamPools = new Map<string, StreamPoolStats>();
    for (const pool of this.#sources.streamPools.values()) streamPools.set(pool.name, pool.streamStats());
    const streamZones = new Map<string, ZoneFigures>();
    for (const [zone, read] of this.#sources.streamZones) streamZones.set(zone, read());
    const host = this.#sync?.host ?? hostname();
    const gateway = this.#sources.gateway();
    return { name: this.instance, host, pid: process.pid, self: true, age: 0, gateway, pools, caches, limits, streamPools, streamZones };
  }

  /** The figures of a report: the sections of the pools and caches this monitor shows, checked. */
  #figures(report: InstanceReport, self: boolean, age: number): InstanceFigures {
    const sections = report.sections;
    const pools = new Map<string, PoolStats>();
    for (const pool of this.#sources.pools.values()) {
      const stats = poolStatsOf(sections[`pool:${pool.name}`]);
      if (stats !== undefined) pools.set(pool.name, stats);
    }
    const caches = new Map<string, CacheStats>();
    for (const cache of this.#sources.caches.values()) {
      const stats = cacheStatsOf(sections[`cache:${cache.name}`]);
      if (stats !== undefined) caches.set(cache.name, stats);
    }
    const limits = new Map<string, LimitCounters>();
    for (const section of this.#sources.limits.keys()) {
      const counters = limitCountersOf(section, sections[section]);
      if (counters !== undefined) limits.set(section, counters);
    }
    const streamPools = new Map<string, StreamPoolStats>();
    for (const pool of this.#sources.streamPools.values()) {
      const stats = streamPoolStatsOf(sections[streamSection(pool.name)]);
      if (stats !== undefined) streamPools.set(pool.name, stats);
    }
    const streamZones = new Map<string, ZoneFigures>();
    for (const zone of this.#sources.streamZones.keys()) {
      const figures = zoneFiguresOf(sections[zoneSection(zone)]);
      if (figures !== undefined) streamZones.set(zone, figures);
    }
    return {
      name: report.instance,
      host: report.host.slice(0, 255),
      pid: report.pid,
      self,
      age,
      gateway: gatewayOf(sections[MONITOR_SECTION]),
      pools,
      caches,
      limits,
      streamPools,
      streamZones,
    };
  }
}

// ---- the totals ----

const sumOf = <T>(parts: readonly T[], read: (part: T) => number): number => parts.reduce((n, p) => n + read(p), 0);
const maxOf = <T>(parts: readonly T[], read: (part: T) => number): number => parts.reduce((n, p) => Math.max(n, read(p)), 0);

/**
 * A server's statistics over the instances: this instance's configuration view (`id`, `weight`,
 * `state`, ...: configuration is replicated), and the instances' figures merged. Summed: what each
 * instance does on its own (`active`, `requests`, `responses`, `sent`, `received`, `fails`, the
 * probes of `healthChecks` and the histogram). The largest: what every instance sees of the same
 * event, as passive and active health are shared (`unavail`, `downtime`, `healthChecks.unhealthy`),
 * which a sum would count once per instance. Weighted by requests: `headerTime`, `responseTime`.
 * The latest: `selected`. `healthChecks.lastPassed`: of the instance that probed the most.
 */
export function mergeServer(local: ServerStats, parts: readonly ServerStats[]): ServerStats {
  const requests = sumOf(parts, (s) => s.requests);
  const average = (read: (s: ServerStats) => number): number =>
    requests === 0 ? read(local) : Math.round(parts.reduce((n, s) => n + read(s) * s.requests, 0) / requests);
  const codes: Record<string, number> = {};
  for (const s of parts) for (const [code, n] of Object.entries(s.responses.codes)) codes[code] = (codes[code] ?? 0) + n;
  const responses: ResponseCounters = {
    '1xx': sumOf(parts, (s) => s.responses['1xx']),
    '2xx': sumOf(parts, (s) => s.responses['2xx']),
    '3xx': sumOf(parts, (s) => s.responses['3xx']),
    '4xx': sumOf(parts, (s) => s.responses['4xx']),
    '5xx': sumOf(parts, (s) => s.responses['5xx']),
    codes,
    total: sumOf(parts, (s) => s.responses.total),
  };
  const buckets: Record<string, number> = {};
  for (const key of BUCKET_KEYS) buckets[key] = sumOf(parts, (s) => s.responseTimeHist.buckets[key] ?? 0);
  return {
    ...local,
    ...mergeShared(local, parts),
    requests,
    responses,
    headerTime: average((s) => s.headerTime),
    responseTime: average((s) => s.responseTime),
    responseTimeHist: {
      count: sumOf(parts, (s) => s.responseTimeHist.count),
      sum: sumOf(parts, (s) => s.responseTimeHist.sum),
      buckets,
    },
  };
}

/** What a server's HTTP and stream statistics share, over the instances (see {@link mergeServer}). */
type SharedFigures = Pick<ServerStats, 'active' | 'sent' | 'received' | 'fails' | 'unavail' | 'downtime' | 'selected' | 'healthChecks'>;

/** The figures HTTP and stream statistics merge alike: summed, the largest, the latest, the busiest prober's. */
function mergeShared<T extends SharedFigures>(local: T, parts: readonly T[]): SharedFigures {
  let selected: string | undefined;
  for (const s of parts) if (s.selected !== undefined && (selected === undefined || Date.parse(s.selected) > Date.parse(selected))) selected = s.selected;
  const prober = parts.reduce<T>((best, s) => (s.healthChecks.checks > best.healthChecks.checks ? s : best), local);
  return {
    active: sumOf(parts, (s) => s.active),
    sent: sumOf(parts, (s) => s.sent),
    received: sumOf(parts, (s) => s.received),
    fails: sumOf(parts, (s) => s.fails),
    unavail: maxOf(parts, (s) => s.unavail),
    downtime: maxOf(parts, (s) => s.downtime),
    selected,
    healthChecks: {
      checks: sumOf(parts, (s) => s.healthChecks.checks),
      fails: sumOf(parts, (s) => s.healthChecks.fails),
      unhealthy: maxOf(parts, (s) => s.healthChecks.unhealthy),
      lastPassed: prober.healthChecks.lastPassed,
    },
  };
}

/**
 * A server's stream statistics over the instances, as {@link mergeServer} merges the HTTP ones:
 * `connections`, bytes, `fails` and `active` summed, `unavail` and `downtime` the largest, the
 * times weighted by connections.
 */
export function mergeStreamServer(local: StreamServerStats, parts: readonly StreamServerStats[]): StreamServerStats {
  const connections = sumOf(parts, (s) => s.connections);
  const average = (read: (s: StreamServerStats) => number): number =>
    connections === 0 ? read(local) : Math.round(parts.reduce((n, s) => n + read(s) * s.connections, 0) / connections);
  return {
    ...local,
    ...mergeShared(local, parts),
    connections,
    connectTime: average((s) => s.connectTime),
    firstByteTime: average((s) => s.firstByteTime),
    responseTime: average((s) => s.responseTime),
  };
}

/** The parts of `name` the instances have, as `pick` reads them. */
function partsOf<T>(figures: readonly InstanceFigures[], pick: (f: InstanceFigures) => T | undefined): T[] {
  return figures.flatMap((f) => {
    const part = pick(f);
    return part === undefined ? [] : [part];
  });
}

/** The servers of `local` (in its order) each merged with the same server (by id) of every part. */
function mergeServers<S extends { id: string }>(local: readonly S[], parts: ReadonlyArray<{ servers: readonly S[] }>, merge: (s: S, same: S[]) => S): S[] {
  return local.map((s) =>
    merge(
      s,
      parts.flatMap((p) => p.servers.filter((other) => other.id === s.id)),
    ),
  );
}

/** A pool's stream statistics over the instances: this instance's servers, each merged ({@link mergeStreamServer}); zombies summed. */
export function streamPoolTotals(local: StreamPoolStats, figures: readonly InstanceFigures[]): StreamPoolStats {
  const parts = partsOf(figures, (f) => f.streamPools.get(local.name));
  return { ...local, servers: mergeServers(local.servers, parts, mergeStreamServer), zombies: sumOf(parts, (p) => p.zombies) };
}

/** A stream server zone over the instances that show it: every figure summed. */
export function zoneTotals(zone: string, figures: readonly InstanceFigures[]): ZoneFigures {
  return addZones(partsOf(figures, (f) => f.streamZones.get(zone)));
}

/**
 * A pool's statistics over the instances: this instance's servers, in its order, each merged with
 * the same server (by id) of every instance ({@link mergeServer}); a server only other instances
 * have (a change still on its way) is left out. Idle connections, zombies, the queue's size and
 * overflows are summed; the queue's limit is this instance's.
 */
export function poolTotals(local: PoolStats, figures: readonly InstanceFigures[]): PoolStats {
  const parts = partsOf(figures, (f) => f.pools.get(local.name));
  const queues = parts.flatMap((p) => (p.queue === undefined ? [] : [p.queue]));
  return {
    ...local,
    servers: mergeServers(local.servers, parts, mergeServer),
    zombies: sumOf(parts, (p) => p.zombies),
    keepalive: sumOf(parts, (p) => p.keepalive),
    queue:
      local.queue === undefined
        ? undefined
        : { size: sumOf(queues, (q) => q.size), maxSize: local.queue.maxSize, overflows: sumOf(queues, (q) => q.overflows) },
  };
}

const CACHE_STATUSES = ['hit', 'stale', 'updating', 'revalidated', 'miss', 'expired', 'bypass'] as const;
const CACHE_WRITES = ['miss', 'expired', 'bypass'] as const;

/** A cache's statistics over the instances: every counter and the size summed; `maxSize` and `cold` this instance's. */
export function cacheTotals(name: string, local: CacheStats, figures: readonly InstanceFigures[]): CacheStats {
  const parts = partsOf(figures, (f) => f.caches.get(name));
  const read = (status: (typeof CACHE_STATUSES)[number]): CacheCounter => ({
    responses: sumOf(parts, (c) => c[status].responses),
    bytes: sumOf(parts, (c) => c[status].bytes),
  });
  const written = (status: (typeof CACHE_WRITES)[number]): CacheWriteCounter => ({
    ...read(status),
    responsesWritten: sumOf(parts, (c) => c[status].responsesWritten),
    bytesWritten: sumOf(parts, (c) => c[status].bytesWritten),
  });
  return {
    size: sumOf(parts, (c) => c.size),
    maxSize: local.maxSize,
    cold: local.cold,
    hit: read('hit'),
    stale: read('stale'),
    updating: read('updating'),
    revalidated: read('revalidated'),
    miss: written('miss'),
    expired: written('expired'),
    bypass: written('bypass'),
  };
}

/** A limit zone's counters over the instances (`section` is `limit_req:<zone>` or `limit_conn:<zone>`): each summed. */
export function limitTotals(section: string, figures: readonly InstanceFigures[]): LimitCounters {
  const kind = section.startsWith('limit_conn:') ? 'limit_conn' : 'limit_req';
  const out: Record<string, number> = {};
  for (const name of LIMIT_COUNTERS[kind]) out[name] = sumOf(figures, (f) => f.limits.get(section)?.[name] ?? 0);
  return out;
}

/** The gateway counters over the instances that run a monitor: each summed. */
export function gatewayTotals(figures: readonly InstanceFigures[]): Omit<GatewayFigures, 'uptime'> {
  const parts = figures.flatMap((f) => (f.gateway === undefined ? [] : [f.gateway]));
  return {
    connectionsAccepted: sumOf(parts, (g) => g.connectionsAccepted),
    connectionsActive: sumOf(parts, (g) => g.connectionsActive),
    requestsTotal: sumOf(parts, (g) => g.requestsTotal),
    requestsCurrent: sumOf(parts, (g) => g.requestsCurrent),
  };
}

// ---- reading what other instances published (checked: anyone who can write the namespace can publish) ----

const BUCKET_KEYS = [...RESPONSE_TIME_BUCKETS.map(String), 'inf'];
const STATES: readonly ServerState[] = ['up', 'draining', 'down', 'unavail', 'checking', 'unhealthy'];

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** A count: a finite number not below 0, else 0. */
function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0;
}

function text(value: unknown, max = 2048): string {
  return typeof value === 'string' ? value.slice(0, max) : '';
}

function time(value: unknown): string | undefined {
  return typeof value === 'string' && value.length <= 64 && !Number.isNaN(Date.parse(value)) ? value : undefined;
}

function responsesOf(value: unknown): ResponseCounters {
  const r = isRecord(value) ? value : {};
  const codes: Record<string, number> = {};
  if (isRecord(r.codes)) for (const [code, n] of Object.entries(r.codes)) if (/^[1-5]\d\d$/.test(code)) codes[code] = count(n);
  return {
    '1xx': count(r['1xx']),
    '2xx': count(r['2xx']),
    '3xx': count(r['3xx']),
    '4xx': count(r['4xx']),
    '5xx': count(r['5xx']),
    codes,
    total: count(r.total),
  };
}

/** What a server's HTTP and stream statistics share, as another instance published them. */
function commonServerOf(value: Record<string, unknown>) {
  const hc = isRecord(value.healthChecks) ? value.healthChecks : {};
  return {
    id: text(value.id),
    server: text(value.server),
    name: text(value.name),
    backup: value.backup === true,
    weight: count(value.weight),
    state: STATES.includes(value.state as ServerState) ? (value.state as ServerState) : 'up',
    active: count(value.active),
    maxConns: count(value.maxConns),
    sent: count(value.sent),
    received: count(value.received),
    fails: count(value.fails),
    unavail: count(value.unavail),
    downtime: count(value.downtime),
    downstart: time(value.downstart),
    selected: time(value.selected),
    healthChecks: {
      checks: count(hc.checks),
      fails: count(hc.fails),
      unhealthy: count(hc.unhealthy),
      lastPassed: typeof hc.lastPassed === 'boolean' ? hc.lastPassed : undefined,
    },
  };
}

/** A server's statistics as another instance published them, or undefined when they are not. */
export function serverStatsOf(value: unknown): ServerStats | undefined {
  if (!isRecord(value) || typeof value.id !== 'string') return undefined;
  const hist = isRecord(value.responseTimeHist) ? value.responseTimeHist : {};
  const histBuckets = isRecord(hist.buckets) ? hist.buckets : {};
  const buckets: Record<string, number> = {};
  for (const key of BUCKET_KEYS) buckets[key] = count(histBuckets[key]);
  return {
    ...commonServerOf(value),
    maxFails: count(value.maxFails),
    failTimeout: count(value.failTimeout),
    route: text(value.route),
    requests: count(value.requests),
    responses: responsesOf(value.responses),
    headerTime: count(value.headerTime),
    responseTime: count(value.responseTime),
    responseTimeHist: { count: count(hist.count), sum: count(hist.sum), buckets },
  };
}

/** A pool's statistics as an instance published them, or undefined. */
export function poolStatsOf(value: unknown): PoolStats | undefined {
  if (!isRecord(value) || !Array.isArray(value.servers)) return undefined;
  const q = value.queue;
  return {
    name: text(value.name),
    method: text(value.method),
    servers: value.servers.flatMap((s) => serverStatsOf(s) ?? []),
    zombies: count(value.zombies),
    keepalive: count(value.keepalive),
    queue: isRecord(q) ? { size: count(q.size), maxSize: count(q.maxSize), overflows: count(q.overflows) } : undefined,
  };
}

/** A pool's stream statistics as an instance published them (`pool.streamStats()`), or undefined. */
export function streamPoolStatsOf(value: unknown): StreamPoolStats | undefined {
  if (!isRecord(value) || !Array.isArray(value.servers)) return undefined;
  const servers = value.servers.flatMap((s): StreamServerStats[] =>
    isRecord(s) && typeof s.id === 'string'
      ? [
          {
            ...commonServerOf(s),
            connections: count(s.connections),
            connectTime: count(s.connectTime),
            firstByteTime: count(s.firstByteTime),
            responseTime: count(s.responseTime),
          },
        ]
      : [],
  );
  return { name: text(value.name), method: text(value.method), servers, zombies: count(value.zombies) };
}

/** A stream server zone's figures as an instance published them, or undefined. */
function zoneFiguresOf(value: unknown): ZoneFigures | undefined {
  if (!isRecord(value)) return undefined;
  const s = isRecord(value.sessions) ? value.sessions : {};
  return {
    processing: count(value.processing),
    connections: count(value.connections),
    sessions: { '2xx': count(s['2xx']), '4xx': count(s['4xx']), '5xx': count(s['5xx']), total: count(s.total) },
    discarded: count(value.discarded),
    received: count(value.received),
    sent: count(value.sent),
  };
}

/** A cache's statistics as an instance published them (`cache.stats()`), or undefined. */
export function cacheStatsOf(value: unknown): CacheStats | undefined {
  if (!isRecord(value)) return undefined;
  const counter = (c: unknown) => (isRecord(c) ? c : {});
  const out: Record<string, unknown> = {
    size: count(value.size),
    maxSize: typeof value.maxSize === 'number' ? count(value.maxSize) : undefined,
    cold: value.cold === true,
  };
  for (const status of CACHE_STATUSES) {
    const c = counter(value[status]);
    out[status] = { responses: count(c.responses), bytes: count(c.bytes) };
  }
  for (const status of CACHE_WRITES) {
    const c = counter(value[status]);
    out[status] = { ...(out[status] as object), responsesWritten: count(c.responsesWritten), bytesWritten: count(c.bytesWritten) };
  }
  return out as unknown as CacheStats;
}

function gatewayOf(value: unknown): GatewayFigures | undefined {
  if (!isRecord(value)) return undefined;
  return {
    connectionsAccepted: count(value.connectionsAccepted),
    connectionsActive: count(value.connectionsActive),
    requestsTotal: count(value.requestsTotal),
    requestsCurrent: count(value.requestsCurrent),
    uptime: count(value.uptime),
  };
}

/** A limit zone's counters as an instance published them (`limit.stats()[zone]`), or undefined. */
function limitCountersOf(section: string, value: unknown): LimitCounters | undefined {
  if (!isRecord(value)) return undefined;
  const out: Record<string, number> = {};
  for (const name of LIMIT_COUNTERS[section.startsWith('limit_conn:') ? 'limit_conn' : 'limit_req']) out[name] = count(value[name]);
  return out;
}
