import { createHash } from 'node:crypto';
import type { FixedName, ServerConfig } from './fields.ts';

import type { ServerState } from '../core/diagnostics.ts';

export type { ServerState };

/** Response counters by status class, with per-code counts (NGINX Plus `responses`). */
export interface ResponseCounters {
  /** Informational responses (100–199). */
  '1xx': number;
  /** Successful responses (200–299). */
  '2xx': number;
  /** Redirects (300–399). */
  '3xx': number;
  /** Client error responses (400–499). */
  '4xx': number;
  /** Server error responses (500–599). */
  '5xx': number;
  /** Count per status code, such as `{ "200": 12, "502": 1 }`. */
  codes: Record<string, number>;
  /** Every response counted, whatever its status. */
  total: number;
}

/** Upper bounds, in ms, of the response time histogram buckets (NGINX Plus API 9 `response_time_hist`). */
export const RESPONSE_TIME_BUCKETS: readonly number[] = Object.freeze([5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000]);

/** Response times of one server (NGINX Plus `response_time_hist`). */
export interface ResponseTimeHistogram {
  /** Responses counted. */
  count: number;
  /** Sum of their times, in ms. */
  sum: number;
  /** Responses per bucket (not cumulative), keyed by upper bound in ms, then `inf`. */
  buckets: Record<string, number>;
}

/** Active health check counters of one server (NGINX Plus `health_checks`). */
export interface HealthCheckStats {
  /** Probes sent. */
  checks: number;
  /** Probes that failed. */
  fails: number;
  /** Times the server became unhealthy. */
  unhealthy: number;
  /** Whether the last probe passed; undefined before the first. */
  lastPassed: boolean | undefined;
}

/** Live statistics of one server, as NGINX Plus's API reports a peer. */
export interface ServerStats {
  /** The server's id. */
  id: string;
  /** The server url without credentials. */
  server: string;
  /** `host:port`, as nginx's `$upstream_addr`. */
  name: string;
  /** Used only when every primary server is unavailable. */
  backup: boolean;
  /** Share of requests relative to the others. */
  weight: number;
  /** The server's state now. */
  state: ServerState;
  /** Requests in flight. */
  active: number;
  /** Maximum simultaneous requests; 0 is unlimited. */
  maxConns: number;
  /** Failures within `failTimeout` that make the server unavailable; 0 disables accounting. */
  maxFails: number;
  /** The failure window and the unavailability period, in milliseconds. */
  failTimeout: number;
  /** Session route for sticky(); empty when none was given. */
  route: string;
  /** Attempts sent to the server. */
  requests: number;
  /** Responses received, by status. */
  responses: ResponseCounters;
  /** Request bytes sent to the server. */
  sent: number;
  /** Response bytes received from the server. */
  received: number;
  /** Unsuccessful attempts (nginx `fails`). */
  fails: number;
  /** Times the server became unavailable through `maxFails` (nginx `unavail`). */
  unavail: number;
  /** Total milliseconds spent in a state other than up or draining. */
  downtime: number;
  /** ISO time the current downtime began, when the server is not up. */
  downstart: string | undefined;
  /** ISO time the server was last selected. */
  selected: string | undefined;
  /** Average time to the response header, in ms (nginx's moving average). */
  headerTime: number;
  /** Average time to the last byte of the response, in ms. */
  responseTime: number;
  /** Active health checks (all zero without healthCheck()). */
  healthChecks: HealthCheckStats;
  /** Distribution of the times to the last byte of responses, in ms. */
  responseTimeHist: ResponseTimeHistogram;
}

/** How an attempt ended, for passive health (nginx `NGX_PEER_FAILED`, `NGX_PEER_NEXT`, 0). */
export type AttemptOutcome = 'ok' | 'failed' | 'next';

/** Parsed target of a server url. */
export interface PeerTarget {
  protocol: 'http:' | 'https:';
  hostname: string;
  port: number;
  /** Path prefix joined before the request path; '' when none. */
  prefix: string;
  /** `host[:port]` as the URL standard normalizes it (lowercase host, default port omitted): the Host header. */
  authority: string;
  /**
   * `host[:port]` exactly as written in the url (case and an explicit default port kept), nginx's
   * `server` text: consistent hashing hashes it, so `http://10.0.0.1:80` and `http://10.0.0.1` place
   * their points differently, as `server 10.0.0.1:80` and `server 10.0.0.1` do.
   */
  server: string;
  /** `user:password` from the url, sent as Basic authorization; never shown. */
  auth: string | undefined;
}

/**
 * A balancing method's record of one server (methods/lanes.ts), told when the server's state changes
 * where the method's hooks do not see it: a health check holds it out or lets it back (`held`), its
 * failure count changes (failures shared by other instances included), a slow-start ramp begins.
 * @internal
 */
export interface PeerWatch {
  changed(): void;
}

/** A server's settings, as the server-field table (fields.ts) has them: those fixed for its life read-only. @internal */
type PeerSettings = Readonly<Pick<ServerConfig, FixedName>> & Omit<ServerConfig, FixedName>;

/**
 * One server of a pool with nginx's per-peer balancing state. Its settings (`weight`, `maxConns`,
 * ... every field of the server-field table) are set from the resolved configuration. Internal:
 * users see {@link ServerStats} and the server options.
 * @internal
 */
export interface Peer extends PeerSettings {}

/** @internal */
export class Peer {
  readonly target: PeerTarget;
  /** `host:port` with the port always present (nginx `peer->name`). */
  readonly name: string;
  /** Session id for sticky: the route, or md5(name) as nginx. */
  sid: string;
  /** When the current slow-start ramp began (-Infinity: none). */
  rampStart = Number.NEGATIVE_INFINITY;
  /** When it ends (`rampStart + slowStart`): before that, {@link Peer.weightAt} is below `weight`. */
  rampEnd = Number.NEGATIVE_INFINITY;
  removed = false;
  /** The balancing method's record of this server, when its method keeps one (told of changes, see {@link PeerWatch}). */
  watch: PeerWatch | undefined = undefined;
  #held = 0;
  #fails = 0;

  /** How many health checks hold the server out (failing or pending): 0 when none. */
  get held(): number {
    return this.#held;
  }

  set held(n: number) {
    if (n === this.#held) return;
    this.#held = n;
    this.watch?.changed();
  }

  /** Failures counted by passive health (nginx `fails`). */
  get fails(): number {
    return this.#fails;
  }

  set fails(n: number) {
    if (n === this.#fails) return;
    this.#fails = n;
    this.watch?.changed();
  }

  // active health checks: the checks (by id) that hold the server out
  readonly failingChecks = new Set<number>();
  readonly pendingChecks = new Set<number>();
  hcChecks = 0;
  hcFails = 0;
  hcUnhealthy = 0;
  hcLastPassed: boolean | undefined;
  /** Response time histogram: counts per RESPONSE_TIME_BUCKETS bound, then one for beyond. */
  rtBuckets: number[] = new Array<number>(RESPONSE_TIME_BUCKETS.length + 1).fill(0);
  rtCount = 0;
  rtSum = 0;

  // nginx round-robin state
  currentWeight = 0;
  effectiveWeight: number;
  conns = 0;
  accessed = 0;
  checked = 0;

  // response times (nginx's moving averages: statistics, and what least_time reads)
  avgHeaderTime = 0;
  avgResponseTime = 0;
  // stream (TCP/UDP) connections through streamBalance(), counted apart from HTTP requests; moving
  // averages in ms (least_time connect and first-byte read them, last-byte when no HTTP time exists)
  streamConnections = 0;
  streamSent = 0;
  streamReceived = 0;
  streamFails = 0;
  streamConnectTime = 0;
  streamFirstByteTime = 0;
  streamResponseTime = 0;
  // least_time inflight state
  inflightReqs = 0;
  inflightLast = 0;
  inflightChanged = 0;
  inflightTime = 0;

  // statistics
  requests = 0;
  responses: ResponseCounters = emptyResponses();
  sent = 0;
  received = 0;
  totalFails = 0;
  unavail = 0;
  downtime = 0;
  downSince: number | undefined;
  selectedAt: number | undefined;
  lastState: ServerState = 'up';

  constructor(config: ServerConfig, target: PeerTarget) {
    Object.assign(this, config);
    this.target = target;
    this.name = `${target.hostname.includes(':') ? `[${target.hostname}]` : target.hostname}:${target.port}`;
    this.effectiveWeight = config.weight;
    this.sid = config.route !== '' ? config.route : createHash('md5').update(this.name).digest('hex');
  }

  /** True while `maxFails` failures keep the server out (nginx's skip rule). */
  failed(now: number): boolean {
    return this.maxFails !== 0 && this.fails >= this.maxFails && now - this.checked <= this.failTimeout;
  }

  /** True at `maxConns`. */
  full(): boolean {
    return this.maxConns !== 0 && this.conns >= this.maxConns;
  }

  /** True while a mandatory health check has not passed yet (NGINX Plus `checking`). */
  checking(): boolean {
    return this.pendingChecks.size > 0;
  }

  /** True while an active health check fails the server. */
  unhealthy(): boolean {
    return this.failingChecks.size > 0;
  }

  /** nginx's eligibility test for a new, unbound request. */
  usable(now: number): boolean {
    return !this.down && !this.drain && this.held === 0 && !this.failed(now) && !this.full();
  }

  /** Starts the slow-start ramp (when the server comes back). */
  startRamp(now: number): void {
    if (this.slowStart <= 0) return;
    this.rampStart = now;
    this.rampEnd = now + this.slowStart;
    this.watch?.changed();
  }

  /**
   * The weight at `now`: during slow start, linear from 0 at the start of the ramp to `weight`
   * `slowStart` milliseconds later; `weight` otherwise.
   */
  weightAt(now: number): number {
    const elapsed = now - this.rampStart;
    if (elapsed >= this.slowStart) return this.weight;
    return elapsed <= 0 ? 0 : (this.weight * elapsed) / this.slowStart;
  }

  state(now: number): ServerState {
    if (this.down) return 'down';
    if (this.pendingChecks.size > 0) return 'checking';
    if (this.failingChecks.size > 0) return 'unhealthy';
    if (this.failed(now)) return 'unavail';
    if (this.drain) return 'draining';
    return 'up';
  }
}

/** Adds one response time (ms) to the server's histogram. */
export function recordResponseTime(peer: Peer, ms: number): void {
  let i = 0;
  while (i < RESPONSE_TIME_BUCKETS.length && ms > RESPONSE_TIME_BUCKETS[i]!) i++;
  peer.rtBuckets[i]!++;
  peer.rtCount++;
  peer.rtSum += ms;
}

/** The histogram as the API shows it. */
export function histogramOf(peer: Peer): ResponseTimeHistogram {
  const buckets: Record<string, number> = {};
  RESPONSE_TIME_BUCKETS.forEach((bound, i) => (buckets[String(bound)] = peer.rtBuckets[i]!));
  buckets.inf = peer.rtBuckets[RESPONSE_TIME_BUCKETS.length]!;
  return { count: peer.rtCount, sum: Math.round(peer.rtSum), buckets };
}

export function emptyResponses(): ResponseCounters {
  return { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0, codes: {}, total: 0 };
}

/** nginx's moving average of response times (`ngx_http_upstream_response_time_avg`). */
export function movingAverage(avg: number, value: number): number {
  return avg === 0 ? value : Math.floor(0.5 + 0.05 * value + 0.95 * avg);
}
