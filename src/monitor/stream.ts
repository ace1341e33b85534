// The NGINX Plus API (version 9) shapes of the stream side: `/api/9/stream/upstreams/{name}` (a
// pool's stream statistics, kept apart from HTTP's) and `/api/9/stream/server_zones/{zone}` (what
// each streamBalance() handler counted). With sync, the totals over the instances come from
// cluster.ts (streamPoolTotals, zoneTotals); /metrics lists each instance's series.
import type { StreamPoolStats, StreamServerStats } from '../pool/index.ts';
import type { StreamHandler, StreamZoneStats } from '../stream/index.ts';
import { healthChecksJson } from './api.ts';
import { STATE_NUMBERS, Writer } from './prometheus.ts';

/** One peer as `GET /api/9/stream/upstreams/{name}` shows it. */
export function streamPeerJson(s: StreamServerStats) {
  return {
    id: s.id,
    server: s.name,
    name: s.name,
    backup: s.backup,
    weight: s.weight,
    state: s.state,
    active: s.active,
    max_conns: s.maxConns,
    connections: s.connections,
    connect_time: s.connectTime,
    first_byte_time: s.firstByteTime,
    response_time: s.responseTime,
    sent: s.sent,
    received: s.received,
    fails: s.fails,
    unavail: s.unavail,
    health_checks: healthChecksJson(s.healthChecks),
    downtime: s.downtime,
    ...(s.downstart === undefined ? {} : { downstart: s.downstart }),
    ...(s.selected === undefined ? {} : { selected: s.selected }),
  };
}

/** A stream upstream as `GET /api/9/stream/upstreams/{name}` shows it. */
export function streamUpstreamJson(stats: StreamPoolStats) {
  return { peers: stats.servers.map(streamPeerJson), zombies: stats.zombies, zone: stats.name };
}

/** A server zone as `GET /api/9/stream/server_zones/{zone}` shows it (NGINX Plus's names). */
export type ZoneFigures = Omit<StreamZoneStats, 'zone' | 'protocol'>;

/** Server zone figures added up (the handlers of one zone name, or one zone over the instances). */
export function addZones(parts: readonly ZoneFigures[]): ZoneFigures {
  const sum = (pick: (z: ZoneFigures) => number): number => parts.reduce((n, z) => n + pick(z), 0);
  return {
    processing: sum((z) => z.processing),
    connections: sum((z) => z.connections),
    sessions: {
      '2xx': sum((z) => z.sessions['2xx']),
      '4xx': sum((z) => z.sessions['4xx']),
      '5xx': sum((z) => z.sessions['5xx']),
      total: sum((z) => z.sessions.total),
    },
    discarded: sum((z) => z.discarded),
    received: sum((z) => z.received),
    sent: sum((z) => z.sent),
  };
}

/** A server zone as `GET /api/9/stream/server_zones/{zone}` shows it: the handlers of one zone name added up. */
export function serverZoneJson(handlers: readonly StreamHandler[]): ZoneFigures {
  return addZones(handlers.map((h) => h.stats()));
}

/** The stream handlers by zone name, and their pools by name. @internal */
export interface StreamSources {
  readonly zones: ReadonlyMap<string, readonly StreamHandler[]>;
  readonly pools: ReadonlyMap<string, StreamHandler['pool']>;
}

/** Groups the handlers given to monitor() by zone, and their pools by name. @internal */
export function streamSources(handlers: readonly StreamHandler[]): StreamSources {
  const zones = new Map<string, StreamHandler[]>();
  const pools = new Map<string, StreamHandler['pool']>();
  for (const h of handlers) {
    zones.set(h.zone, [...(zones.get(h.zone) ?? []), h]);
    pools.set(h.pool.name, h.pool);
  }
  return { zones, pools };
}

/** One instance's stream figures for /metrics. @internal */
export interface StreamMetricsInstance {
  /** The `instance` label; undefined without sync. */
  readonly label: string | undefined;
  /** Its server zones, by zone name. */
  readonly zones: ReadonlyArray<readonly [string, ZoneFigures]>;
  /** Its stream pools' statistics, by pool name. */
  readonly pools: ReadonlyArray<readonly [string, StreamPoolStats]>;
}

/**
 * The stream figures in the Prometheus text format, appended to /metrics: server zones and the
 * stream statistics of their pools' servers, of each instance (labelled `instance` when given;
 * never summed, so no counter goes down whichever instance is scraped). Nothing without streams.
 * @internal
 */
export function streamMetrics(instances: readonly StreamMetricsInstance[]): string {
  if (!instances.some((i) => i.zones.length > 0 || i.pools.length > 0)) return '';
  const w = new Writer();
  const own = (labels: Record<string, string>, instance: string | undefined): Record<string, string> =>
    instance === undefined ? labels : { ...labels, instance };
  const zones = instances.flatMap((i) => i.zones.map(([zone, z]) => ({ labels: own({ zone }, i.label), z })));
  const zone = (name: string, type: 'counter' | 'gauge', help: string, value: (z: ZoneFigures) => number): void => {
    w.family(name, type, help);
    for (const { labels, z } of zones) w.sample(name, labels, value(z));
  };
  zone('switchyard_stream_server_zone_processing', 'gauge', 'Stream sessions in progress.', (z) => z.processing);
  zone('switchyard_stream_server_zone_connections_total', 'counter', 'Client connections (UDP: sessions) accepted.', (z) => z.connections);
  zone('switchyard_stream_server_zone_discarded_total', 'counter', 'Connections closed before a session began.', (z) => z.discarded);
  zone('switchyard_stream_server_zone_received_bytes_total', 'counter', 'Bytes received from clients.', (z) => z.received);
  zone('switchyard_stream_server_zone_sent_bytes_total', 'counter', 'Bytes sent to clients.', (z) => z.sent);
  w.family('switchyard_stream_server_zone_sessions_total', 'counter', 'Ended sessions by status class.');
  for (const { labels, z } of zones)
    for (const code of ['2xx', '4xx', '5xx'] as const) w.sample('switchyard_stream_server_zone_sessions_total', { ...labels, code }, z.sessions[code]);
  const servers = instances.flatMap((i) =>
    i.pools.flatMap(([upstream, p]) => p.servers.map((s) => ({ labels: own({ upstream, server: s.name, id: s.id }, i.label), s }))),
  );
  const per = (name: string, type: 'counter' | 'gauge', help: string, value: (s: StreamServerStats) => number): void => {
    w.family(name, type, help);
    for (const { labels, s } of servers) w.sample(name, labels, value(s));
  };
  per(
    'switchyard_stream_upstream_server_state',
    'gauge',
    'Server state: 1 up, 2 draining, 3 down, 4 unavail, 5 checking, 6 unhealthy.',
    (s) => STATE_NUMBERS[s.state],
  );
  per('switchyard_stream_upstream_server_active', 'gauge', 'Connections and requests in flight to the server.', (s) => s.active);
  per('switchyard_stream_upstream_server_connections_total', 'counter', 'Stream connections sent to the server.', (s) => s.connections);
  per('switchyard_stream_upstream_server_sent_bytes_total', 'counter', 'Bytes sent to the server by stream connections.', (s) => s.sent);
  per('switchyard_stream_upstream_server_received_bytes_total', 'counter', 'Bytes received from the server by stream connections.', (s) => s.received);
  per('switchyard_stream_upstream_server_fails_total', 'counter', 'Stream connections that failed to connect.', (s) => s.fails);
  per('switchyard_stream_upstream_server_connect_time_seconds', 'gauge', 'Moving average of the time to connect.', (s) => s.connectTime / 1000);
  per('switchyard_stream_upstream_server_first_byte_time_seconds', 'gauge', 'Moving average of the time to the first byte.', (s) => s.firstByteTime / 1000);
  per('switchyard_stream_upstream_server_response_time_seconds', 'gauge', 'Moving average of the session time.', (s) => s.responseTime / 1000);
  return w.text();
}
