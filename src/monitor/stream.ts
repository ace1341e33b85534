// The NGINX Plus API (version 9) shapes of the stream side: `/api/9/stream/upstreams/{name}` (a
// pool's stream statistics, kept apart from HTTP's) and `/api/9/stream/server_zones/{zone}` (what
// each streamBalance() handler counted). This process's figures (no totals over instances).
import type { StreamPoolStats, StreamServerStats } from '../pool/index.ts';
import type { StreamHandler, StreamZoneStats } from '../stream/index.ts';

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
    health_checks: {
      checks: s.healthChecks.checks,
      fails: s.healthChecks.fails,
      unhealthy: s.healthChecks.unhealthy,
      ...(s.healthChecks.lastPassed === undefined ? {} : { last_passed: s.healthChecks.lastPassed }),
    },
    downtime: s.downtime,
    ...(s.downstart === undefined ? {} : { downstart: s.downstart }),
    ...(s.selected === undefined ? {} : { selected: s.selected }),
  };
}

/** A stream upstream as `GET /api/9/stream/upstreams/{name}` shows it. */
export function streamUpstreamJson(stats: StreamPoolStats) {
  return { peers: stats.servers.map(streamPeerJson), zombies: stats.zombies, zone: stats.name };
}

/** A server zone as `GET /api/9/stream/server_zones/{zone}` shows it: the handlers of one zone name added up. */
export function serverZoneJson(handlers: readonly StreamHandler[]) {
  const sum = (pick: (z: StreamZoneStats) => number): number => handlers.reduce((n, h) => n + pick(h.stats()), 0);
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
