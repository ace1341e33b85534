// The Prometheus text exposition format (version 0.0.4) of the gateway, its pools and caches: of
// this process, or with sync of every live instance, each instance's series labelled `instance`
// (never summed here: a sum would go down when an instance leaves, which Prometheus reads as a reset).
import type { PoolStats } from '../pool/index.ts';
import { RESPONSE_TIME_BUCKETS, type ServerState, type ServerStats } from '../pool/peer.ts';
import { CACHE_READ_STATUSES, CACHE_WRITE_STATUSES, type CacheJson, LIMIT_COUNTERS, type LimitCounters, snake } from './api.ts';
import type { GatewayFigures } from './cluster.ts';

const CACHE_STATUSES = [...CACHE_READ_STATUSES, ...CACHE_WRITE_STATUSES] as const;

/** The content type Prometheus expects for the text format. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Numbers of the server states, in NGINX Plus's order (as the nginx Prometheus exporter maps them). */
export const STATE_NUMBERS: Readonly<Record<ServerState, number>> = Object.freeze({ up: 1, draining: 2, down: 3, unavail: 4, checking: 5, unhealthy: 6 });

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

/** Writes metric families and samples in the text format. @internal */
export class Writer {
  #out: string[] = [];
  #declared = new Set<string>();
  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): void {
    if (this.#declared.has(name)) return;
    this.#declared.add(name);
    this.#out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  }
  sample(name: string, labels: Record<string, string>, value: number): void {
    const keys = Object.keys(labels);
    const text = keys.length === 0 ? '' : `{${keys.map((k) => `${k}="${escapeLabel(labels[k]!)}"`).join(',')}}`;
    this.#out.push(`${name}${text} ${Number.isFinite(value) ? String(value) : value > 0 ? '+Inf' : 'NaN'}`);
  }
  text(): string {
    return `${this.#out.join('\n')}\n`;
  }
}

/**
 * What /metrics shows of one instance: without sync, this process (no `instance` label); with
 * sync, each live instance, its series labelled with its name.
 */
export interface MetricsInstance {
  /** The `instance` label; undefined for none. */
  label: string | undefined;
  /** Its gateway counters; undefined when it runs no monitor. */
  gateway: GatewayFigures | undefined;
  /** Its statistics of each pool, by the monitor's name for the pool. */
  pools: ReadonlyArray<readonly [upstream: string, stats: PoolStats]>;
  /** Its statistics of each cache, by the monitor's name for the cache. */
  caches: ReadonlyArray<readonly [cache: string, stats: CacheJson]>;
  /** Its counters of each limit zone, by section name (`limit_req:<zone>`, `limit_conn:<zone>`). */
  limits: ReadonlyArray<readonly [section: string, counters: LimitCounters]>;
}

/**
 * Renders every metric; families are grouped, as the format requires, and within a family the
 * instances follow each other in the order given. `live` (with sync) adds `switchyard_instances`.
 */
export function prometheus(instances: readonly MetricsInstance[], live?: number): string {
  const w = new Writer();
  const own = (i: MetricsInstance, labels: Record<string, string> = {}): Record<string, string> =>
    i.label === undefined ? labels : { ...labels, instance: i.label };
  const gateways = instances.flatMap((i) => (i.gateway === undefined ? [] : [{ i, g: i.gateway }]));
  const gateway = (name: string, type: 'counter' | 'gauge', help: string, value: (g: GatewayFigures) => number): void => {
    w.family(name, type, help);
    for (const { i, g } of gateways) w.sample(name, own(i), value(g));
  };
  w.family('switchyard_up', 'gauge', 'Always 1 while the gateway answers.');
  w.sample('switchyard_up', {}, 1);
  if (live !== undefined) {
    w.family('switchyard_instances', 'gauge', 'Live instances of the gateway (those heard from within three statistics intervals).');
    w.sample('switchyard_instances', {}, live);
  }
  gateway('switchyard_uptime_seconds', 'gauge', 'Seconds since the monitor started.', (g) => g.uptime);
  gateway('switchyard_connections_accepted_total', 'counter', 'Client connections accepted.', (g) => g.connectionsAccepted);
  gateway('switchyard_connections_active', 'gauge', 'Client connections open now.', (g) => g.connectionsActive);
  gateway('switchyard_http_requests_total', 'counter', 'Client requests received.', (g) => g.requestsTotal);
  gateway('switchyard_http_requests_current', 'gauge', 'Client requests in progress.', (g) => g.requestsCurrent);

  const servers = instances.flatMap((i) =>
    i.pools.flatMap(([upstream, pool]) => pool.servers.map((s) => ({ labels: own(i, { upstream, server: s.name, id: s.id }), s }))),
  );
  const per = <T>(
    name: string,
    type: 'counter' | 'gauge',
    help: string,
    value: (s: ServerStats) => T,
    extra?: (v: T) => Array<[Record<string, string>, number]>,
  ): void => {
    w.family(name, type, help);
    for (const { labels, s } of servers) {
      const v = value(s);
      if (extra === undefined) w.sample(name, labels, v as number);
      else for (const [more, n] of extra(v)) w.sample(name, { ...labels, ...more }, n);
    }
  };
  per(
    'switchyard_upstream_server_state',
    'gauge',
    'Server state: 1 up, 2 draining, 3 down, 4 unavail, 5 checking, 6 unhealthy.',
    (s) => STATE_NUMBERS[s.state],
  );
  per('switchyard_upstream_server_active', 'gauge', 'Requests in flight to the server.', (s) => s.active);
  per('switchyard_upstream_server_weight', 'gauge', 'Configured weight.', (s) => s.weight);
  per('switchyard_upstream_server_requests_total', 'counter', 'Attempts sent to the server.', (s) => s.requests);
  per(
    'switchyard_upstream_server_responses_total',
    'counter',
    'Responses from the server by status class.',
    (s) => s.responses,
    (r) => (['1xx', '2xx', '3xx', '4xx', '5xx'] as const).map((c) => [{ code: c }, r[c]] as [Record<string, string>, number]),
  );
  per('switchyard_upstream_server_sent_bytes_total', 'counter', 'Request bytes sent to the server.', (s) => s.sent);
  per('switchyard_upstream_server_received_bytes_total', 'counter', 'Response bytes received from the server.', (s) => s.received);
  per('switchyard_upstream_server_fails_total', 'counter', 'Unsuccessful attempts.', (s) => s.fails);
  per('switchyard_upstream_server_unavail_total', 'counter', 'Times the server became unavailable through maxFails.', (s) => s.unavail);
  per('switchyard_upstream_server_health_checks_total', 'counter', 'Active health check probes.', (s) => s.healthChecks.checks);
  per('switchyard_upstream_server_health_checks_fails_total', 'counter', 'Failed active health check probes.', (s) => s.healthChecks.fails);
  per('switchyard_upstream_server_health_checks_unhealthy_total', 'counter', 'Times the server became unhealthy.', (s) => s.healthChecks.unhealthy);
  per('switchyard_upstream_server_downtime_seconds_total', 'counter', 'Time spent down, unavailable, checking or unhealthy.', (s) => s.downtime / 1000);
  per('switchyard_upstream_server_header_time_seconds', 'gauge', 'Moving average of the time to the response header.', (s) => s.headerTime / 1000);

  const hist = 'switchyard_upstream_server_response_time_seconds';
  w.family(hist, 'histogram', 'Time to the last byte of responses.');
  for (const { labels, s } of servers) {
    let cumulative = 0;
    for (const bound of RESPONSE_TIME_BUCKETS) {
      cumulative += s.responseTimeHist.buckets[String(bound)] ?? 0;
      w.sample(`${hist}_bucket`, { ...labels, le: String(bound / 1000) }, cumulative);
    }
    w.sample(`${hist}_bucket`, { ...labels, le: '+Inf' }, s.responseTimeHist.count);
    w.sample(`${hist}_sum`, labels, s.responseTimeHist.sum / 1000);
    w.sample(`${hist}_count`, labels, s.responseTimeHist.count);
  }

  const cacheStats = instances.flatMap((i) => i.caches.map(([name, s]) => ({ labels: own(i, { cache: name }), s })));
  w.family('switchyard_cache_responses_total', 'counter', 'Responses by cache status.');
  for (const { labels, s } of cacheStats) {
    for (const status of CACHE_STATUSES) w.sample('switchyard_cache_responses_total', { ...labels, status }, s[status].responses);
  }
  w.family('switchyard_cache_bytes_total', 'counter', 'Body bytes sent by cache status.');
  for (const { labels, s } of cacheStats) {
    for (const status of CACHE_STATUSES) w.sample('switchyard_cache_bytes_total', { ...labels, status }, s[status].bytes);
  }
  w.family('switchyard_cache_written_responses_total', 'counter', 'Responses stored in the cache.');
  for (const { labels, s } of cacheStats) {
    for (const status of CACHE_WRITE_STATUSES) w.sample('switchyard_cache_written_responses_total', { ...labels, status }, s[status].responses_written);
  }
  w.family('switchyard_cache_size_bytes', 'gauge', 'Bytes held by an in-memory cache store.');
  for (const { labels, s } of cacheStats) w.sample('switchyard_cache_size_bytes', labels, s.size);

  const families = [
    ['limit_req', 'switchyard_limit_requests_total', 'Requests by limitRequests() zone and outcome (passed, delayed, rejected, and the dry-run forms).'],
    ['limit_conn', 'switchyard_limit_connections_total', 'Requests by limitConnections() zone and outcome (passed, rejected, rejected_dry_run).'],
  ] as const;
  for (const [kind, name, help] of families) {
    w.family(name, 'counter', help);
    for (const i of instances) {
      for (const [section, counters] of i.limits) {
        if (!section.startsWith(`${kind}:`)) continue;
        const zone = section.slice(kind.length + 1);
        for (const counter of LIMIT_COUNTERS[kind]) w.sample(name, own(i, { zone, status: snake(counter) }), counters[counter] ?? 0);
      }
    }
  }
  return w.text();
}
