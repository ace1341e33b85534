// The Prometheus text exposition format (version 0.0.4) of the gateway, its pools and caches.
import type { CacheMiddleware } from '../cache/index.ts';
import type { UpstreamPool } from '../pool/index.ts';
import { RESPONSE_TIME_BUCKETS, type ServerState } from '../pool/peer.ts';
import { CACHE_READ_STATUSES, CACHE_WRITE_STATUSES, cacheJson } from './api.ts';

const CACHE_STATUSES = [...CACHE_READ_STATUSES, ...CACHE_WRITE_STATUSES] as const;

/** The content type Prometheus expects for the text format. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Numbers of the server states, in NGINX Plus's order (as the nginx Prometheus exporter maps them). */
export const STATE_NUMBERS: Readonly<Record<ServerState, number>> = Object.freeze({ up: 1, draining: 2, down: 3, unavail: 4, checking: 5, unhealthy: 6 });

/** What the gateway itself counted. */
export interface GatewayCounters {
  connectionsAccepted: number;
  connectionsActive: number;
  requestsTotal: number;
  requestsCurrent: number;
  startedAt: number;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

class Writer {
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

/** Renders every metric; families are grouped, as the format requires. */
export function prometheus(
  gateway: GatewayCounters,
  pools: ReadonlyMap<string, UpstreamPool>,
  caches: ReadonlyMap<string, CacheMiddleware>,
  now: number,
): string {
  const w = new Writer();
  w.family('switchyard_up', 'gauge', 'Always 1 while the gateway answers.');
  w.sample('switchyard_up', {}, 1);
  w.family('switchyard_uptime_seconds', 'gauge', 'Seconds since the monitor started.');
  w.sample('switchyard_uptime_seconds', {}, Math.max(0, (now - gateway.startedAt) / 1000));
  w.family('switchyard_connections_accepted_total', 'counter', 'Client connections accepted.');
  w.sample('switchyard_connections_accepted_total', {}, gateway.connectionsAccepted);
  w.family('switchyard_connections_active', 'gauge', 'Client connections open now.');
  w.sample('switchyard_connections_active', {}, gateway.connectionsActive);
  w.family('switchyard_http_requests_total', 'counter', 'Client requests received.');
  w.sample('switchyard_http_requests_total', {}, gateway.requestsTotal);
  w.family('switchyard_http_requests_current', 'gauge', 'Client requests in progress.');
  w.sample('switchyard_http_requests_current', {}, gateway.requestsCurrent);

  const servers = [...pools].flatMap(([upstream, pool]) => pool.stats().servers.map((s) => ({ upstream, s })));
  const per = <T>(
    name: string,
    type: 'counter' | 'gauge',
    help: string,
    value: (s: (typeof servers)[number]['s']) => T,
    extra?: (v: T) => Array<[Record<string, string>, number]>,
  ): void => {
    w.family(name, type, help);
    for (const { upstream, s } of servers) {
      const labels = { upstream, server: s.name, id: s.id };
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
  for (const { upstream, s } of servers) {
    const labels = { upstream, server: s.name, id: s.id };
    let cumulative = 0;
    for (const bound of RESPONSE_TIME_BUCKETS) {
      cumulative += s.responseTimeHist.buckets[String(bound)] ?? 0;
      w.sample(`${hist}_bucket`, { ...labels, le: String(bound / 1000) }, cumulative);
    }
    w.sample(`${hist}_bucket`, { ...labels, le: '+Inf' }, s.responseTimeHist.count);
    w.sample(`${hist}_sum`, labels, s.responseTimeHist.sum / 1000);
    w.sample(`${hist}_count`, labels, s.responseTimeHist.count);
  }

  const cacheStats = [...caches].map(([name, c]) => ({ name, s: cacheJson(c) }));
  w.family('switchyard_cache_responses_total', 'counter', 'Responses by cache status.');
  for (const { name, s } of cacheStats) {
    for (const status of CACHE_STATUSES) w.sample('switchyard_cache_responses_total', { cache: name, status }, s[status].responses);
  }
  w.family('switchyard_cache_bytes_total', 'counter', 'Body bytes sent by cache status.');
  for (const { name, s } of cacheStats) {
    for (const status of CACHE_STATUSES) w.sample('switchyard_cache_bytes_total', { cache: name, status }, s[status].bytes);
  }
  w.family('switchyard_cache_written_responses_total', 'counter', 'Responses stored in the cache.');
  for (const { name, s } of cacheStats) {
    for (const status of CACHE_WRITE_STATUSES) w.sample('switchyard_cache_written_responses_total', { cache: name, status }, s[status].responses_written);
  }
  w.family('switchyard_cache_size_bytes', 'gauge', 'Bytes held by an in-memory cache store.');
  for (const { name, s } of cacheStats) w.sample('switchyard_cache_size_bytes', { cache: name }, s.size);
  return w.text();
}
