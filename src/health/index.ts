import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { unrefClock } from '../core/clock.ts';
import type { Duration } from '../core/duration.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { booleanOption, durationOption, enumOption, integerOption, objectOption, randomOption, stringOption } from '../core/options.ts';
import { TOKEN } from '../core/http.ts';
import { poolOption, type ServerInfo, type UpstreamPool } from '../pool/index.ts';
import { internals } from '../pool/internal.ts';
import type { Peer } from '../pool/peer.ts';
import { compileMatch, type MatchOptions } from './match.ts';
import { HEALTH_SCOPES, type HealthScope, SharedProbes, type SharedVerdict } from './shared.ts';
import { streamProbe, type RunningProbe, type StreamExpect, type StreamProbeSettings } from './stream.ts';

export type { HeaderCondition, MatchOptions } from './match.ts';
export type { StreamExpect } from './stream.ts';
export { DEFAULT_UDP_PROBE } from './stream.ts';

/** Timers the checks run on: the real ones by default; tests give their own to run without sleeping. */
export interface HealthClock {
  /** The time in milliseconds. */
  now(): number;
  /** Runs `fn` once after `ms` milliseconds and returns a handle for {@link HealthClock.clearTimeout}. */
  setTimeout(fn: () => void, ms: number): unknown;
  /** Cancels a timer {@link HealthClock.setTimeout} returned. */
  clearTimeout(handle: unknown): void;
}

/** Options of {@link healthCheck}, with NGINX Plus's defaults. Times are {@link Duration}s. */
export interface HealthCheckOptions {
  /**
   * What a probe is: `'http'`, a request (`uri`, `method`, `headers`, `match`); for pools that
   * streamBalance() serves, `'tcp'` (NGINX Plus stream `health_check`: the connection is made, over
   * TLS for `https://` servers; with `send` and `expect`, those bytes are sent and the answer must
   * match) or `'udp'` (`health_check udp`: `send` goes as a datagram; with `expect` an answer must
   * match, without it the probe passes unless an ICMP unreachable comes back within `timeout`).
   * @default 'http'
   */
  type?: 'http' | 'tcp' | 'udp' | undefined;
  /** Stream probes: bytes sent once connected (nginx stream `match { send ...; }`). @default nothing for tcp; 'nginx health check' for udp */
  send?: string | Buffer | undefined;
  /**
   * Stream probes: what the server's answer (its first 16 KiB, read as latin1 text) must be: a string
   * it begins with, or a RegExp it matches (nginx `expect "..."` / `expect ~ "..."`). @default none: connecting is enough (tcp)
   */
  expect?: StreamExpect | undefined;
  /** Request path of the probe. @default '/' */
  uri?: string | undefined;
  /** Time between two probes of one server. @default '5s' */
  interval?: Duration | undefined;
  /** A random delay up to this, added to each interval. @default 0 */
  jitter?: Duration | undefined;
  /** Consecutive failed probes that make a server unhealthy. @default 1 */
  fails?: number | undefined;
  /** Consecutive passed probes that make an unhealthy server healthy. @default 1 */
  passes?: number | undefined;
  /** Longest a probe may take, from connecting to the end of what it reads. @default '5s' */
  timeout?: Duration | undefined;
  /** Port to probe. @default the server's */
  port?: number | undefined;
  /** Probe method. @default 'GET' */
  method?: string | undefined;
  /** Request headers of the probe; `Host` replaces the default (the server's `host:port`). @default {} */
  headers?: Readonly<Record<string, string>> | undefined;
  /** Conditions a response must meet. @default status 200-399 */
  match?: MatchOptions | undefined;
  /** Servers start `checking` and get no requests until their first probe passes (those added later too). @default false */
  mandatory?: boolean | undefined;
  /** With `mandatory`: servers that are up when the check starts are not held back (NGINX Plus after a reload). @default false */
  persistent?: boolean | undefined;
  /** Name of this check in events and errors. @default 'health' */
  name?: string | undefined;
  /** Timers and clock. @default the real ones (unref'd: checks never keep the process alive; only a pending {@link HealthCheck.ready} does) */
  clock?: HealthClock | undefined;
  /** Random numbers in [0, 1) for jitter. @default Math.random */
  random?: (() => number) | undefined;
  /**
   * With a pool that has `sync` (several instances of one gateway): which instances share one
   * prober per server, chosen by a lease; the prober publishes each result and every instance of
   * the scope applies it (state and events; the probe counters count the probes each instance sent), a new instance at once from the stored
   * results. `'host'`: one prober per machine (the sync handle's host name); `'cluster'`: one for
   * all instances; `'each'`: every instance probes for itself, as without sync. A prober that dies
   * is replaced within two intervals (its lease lasts 3/4 of an interval and is tried every quarter
   * interval); while Redis is away every instance probes for itself, and goes back to the lease
   * when it returns. Ignored without `sync`.
   * @default 'host'
   * @example
   * ```ts
   * const pool = createPool({ name: 'api', servers: [{ url: 'http://10.0.0.1:8080' }], sync: { redis: 'redis://127.0.0.1:6379' } });
   * healthCheck(pool, { uri: '/healthz', interval: '1s', shared: 'cluster' }); // one probe a second per server, whatever the instance count
   * ```
   */
  shared?: 'host' | 'cluster' | 'each' | undefined;
  /**
   * The name instances share this check under (with the pool's name): instances whose checks have
   * the same key share probers and results. Letters, digits, `.`, `_` and `-`, at most 100.
   * @default a digest of the check's settings (name, uri, port, method, headers, match, interval,
   * timeout, fails, passes, mandatory): identical configurations match, different ones never mix
   * @example
   * ```ts
   * healthCheck(pool, { uri: '/healthz', sharedKey: 'api-healthz-v2' });
   * ```
   */
  sharedKey?: string | undefined;
}

/** One probe's outcome. */
export interface ProbeResult {
  /** The server's id. */
  id: string;
  /** Whether the probe passed: a response arrived in time and met `match`. */
  passed: boolean;
  /** The response status, when one arrived. */
  status: number | undefined;
  /** Why it failed (`status 500`, `timeout`, `ECONNREFUSED`, ...). */
  reason: string | undefined;
  /** The server's health after this probe. */
  healthy: boolean;
  /** The instance that ran the probe, for a result another instance published (`shared`); absent for this instance's own probes. */
  from?: string;
}

/** Events of a {@link HealthCheck}. The pool's `state` event reports every change of state too. */
export interface HealthCheckEvents {
  /** A probe ended. */
  probe: [result: ProbeResult];
  /** A server turned healthy (after `passes` passes, or its first mandatory pass). */
  healthy: [id: string];
  /** A server turned unhealthy (after `fails` failures, or its first mandatory failure). */
  unhealthy: [id: string];
  /** A listener of another event threw; the checks go on (emitted only when someone listens). */
  error: [error: unknown];
}

/** A running health check, from {@link healthCheck}. */
export interface HealthCheck extends EventEmitter<HealthCheckEvents> {
  /** The check's name (option `name`). */
  readonly name: string;
  /**
   * Settles when every server present at the start has had its first probe (or the check stops).
   * While it is pending it keeps the process alive, so `await hc.ready` works at the top level of
   * a module; once settled, the checks never keep the process alive.
   */
  readonly ready: Promise<void>;
  /**
   * Probes every server now (outside the schedule, never overlapping a running probe); settles when
   * done. With `shared`, the servers another instance probes are left to it.
   */
  check(): Promise<void>;
  /** Stops: clears every timer, aborts running probes, gives back its leases (`shared`), and lifts what this check held servers out for. */
  stop(): void;
}

/** Default of {@link HealthCheckOptions.interval} (NGINX Plus: 5s). */
export const DEFAULT_HEALTH_INTERVAL = '5s';
/** Default of {@link HealthCheckOptions.timeout}. */
export const DEFAULT_HEALTH_TIMEOUT = '5s';
/** Default of {@link HealthCheckOptions.name}. */
export const DEFAULT_HEALTH_NAME = 'health';
/** Default of {@link HealthCheckOptions.shared}: one prober per server per machine. */
export const DEFAULT_HEALTH_SHARED: 'host' | 'cluster' | 'each' = 'host';

/** The keys of {@link HealthCheckOptions}. */
const HEALTH_OPTIONS = [
  'type',
  'send',
  'expect',
  'uri',
  'interval',
  'jitter',
  'fails',
  'passes',
  'timeout',
  'port',
  'method',
  'headers',
  'match',
  'mandatory',
  'persistent',
  'name',
  'clock',
  'random',
  'shared',
  'sharedKey',
] as const satisfies ReadonlyArray<keyof HealthCheckOptions>;
/** Most body bytes a probe reads (NGINX Plus: 256k). */
export const MAX_PROBE_BODY = 256 * 1024;

/** Period of the timer that keeps the process alive while `ready` is pending (it never fires in practice). */
const HOLD_MS = 2 ** 31 - 1;

const realClock: HealthClock = unrefClock;

interface ServerCheck {
  peer: Peer;
  timer: unknown;
  probe: RunningProbe | undefined;
  running: Promise<void> | undefined;
  passesInARow: number;
  failsInARow: number;
  healthy: boolean;
  pending: boolean;
  /** When the last result came in (this instance's probe or a shared one), by the check's clock. */
  lastAt: number | undefined;
  /** Settles the server's part of `ready` (first probe done, server removed, or check stopped). */
  first: (() => void) | undefined;
}

/**
 * NGINX Plus `health_check` for a pool: probes every server on its own schedule and takes the
 * ones that fail out of rotation (`unhealthy`, sticky-bound requests included) until they pass
 * again; with `mandatory`, servers start `checking`. Several checks on one pool: failing any makes
 * a server unhealthy. A server coming back ramps up over its `slowStart`. On a pool with `sync`, one
 * instance per host probes each server and the others apply its results (option `shared`).
 * @example
 * ```ts
 * import { createPool, healthCheck, balance } from 'switchyard-proxy';
 *
 * const pool = createPool({ servers: [{ url: 'http://10.0.0.1:8080', slowStart: '30s' }, { url: 'http://10.0.0.2:8080' }] });
 * const hc = healthCheck(pool, { uri: '/healthz', interval: '2s', fails: 2, passes: 2, match: { status: '200', body: /ok/ } });
 * await hc.ready;
 * process.on('SIGTERM', () => hc.stop());
 * ```
 */
export function healthCheck(pool: UpstreamPool, options: HealthCheckOptions = {}): HealthCheck {
  poolOption(pool);
  objectOption(options, '', HEALTH_OPTIONS);
  const uri = stringOption(options.uri, 'uri', '/', {
    pattern: /^\/[^\s\u0000-\u001f\u007f]*$/,
    expected: 'a path starting with "/" without spaces or control characters',
  });
  const interval = durationOption(options.interval, 'interval', DEFAULT_HEALTH_INTERVAL, true);
  const jitter = durationOption(options.jitter, 'jitter', 0);
  const fails = integerOption(options.fails, 'fails', 1, { min: 1 });
  const passes = integerOption(options.passes, 'passes', 1, { min: 1 });
  const timeout = durationOption(options.timeout, 'timeout', DEFAULT_HEALTH_TIMEOUT, true);
  const port = integerOption(options.port, 'port', 0, { min: 1, max: 65535 }) || undefined;
  const method = stringOption(options.method, 'method', 'GET', { pattern: TOKEN, expected: 'an HTTP method' }).toUpperCase();
  const headers: Record<string, string> = {};
  if (options.headers !== undefined) {
    if (options.headers === null || typeof options.headers !== 'object')
      throw new InvalidOptionError('headers', 'an object of header names to values', options.headers);
    for (const [name, value] of Object.entries(options.headers)) {
      if (!TOKEN.test(name)) throw new InvalidOptionError(`headers.${name}`, 'a header name', name);
      if (typeof value !== 'string' || /[\r\n\u0000]/.test(value))
        throw new InvalidOptionError(`headers.${name}`, 'a header value without CR, LF or NUL', value);
      headers[name.toLowerCase()] = value;
    }
  }
  const match = compileMatch(options.match);
  const type = enumOption(options.type, 'type', ['http', 'tcp', 'udp'] as const, 'http');
  if (type === 'http' && (options.send !== undefined || options.expect !== undefined))
    throw new InvalidOptionError(
      options.send !== undefined ? 'send' : 'expect',
      "nothing with type 'http' (send and expect are for 'tcp' and 'udp' probes)",
      options.send ?? options.expect,
    );
  if (options.send !== undefined && typeof options.send !== 'string' && !Buffer.isBuffer(options.send))
    throw new InvalidOptionError('send', 'a string or a Buffer', options.send);
  if (options.expect !== undefined && typeof options.expect !== 'string' && !(options.expect instanceof RegExp))
    throw new InvalidOptionError('expect', 'a string the answer begins with, or a RegExp', options.expect);
  const stream: StreamProbeSettings | undefined =
    type === 'http'
      ? undefined
      : {
          type,
          send: options.send === undefined ? undefined : Buffer.from(options.send as string),
          expect: options.expect,
          port: integerOption(options.port, 'port', 0, { min: 1, max: 65535 }) || undefined,
          tls: internals(pool).tls,
        };
  const mandatory = booleanOption(options.mandatory, 'mandatory', false);
  const persistent = booleanOption(options.persistent, 'persistent', false);
  const name = stringOption(options.name, 'name', DEFAULT_HEALTH_NAME, { nonEmpty: true });
  const clock = options.clock ?? realClock;
  if (
    typeof clock !== 'object' ||
    clock === null ||
    typeof clock.now !== 'function' ||
    typeof clock.setTimeout !== 'function' ||
    typeof clock.clearTimeout !== 'function'
  ) {
    throw new InvalidOptionError('clock', 'an object with now, setTimeout and clearTimeout', clock);
  }
  const random = randomOption(options.random);
  const scope = enumOption<HealthScope>(options.shared, 'shared', HEALTH_SCOPES, DEFAULT_HEALTH_SHARED);
  const sharedKey = stringOption(options.sharedKey, 'sharedKey', undefined, {
    pattern: /^[A-Za-z0-9._-]{1,100}$/,
    expected: 'letters, digits, ".", "_" and "-" (at most 100)',
  });

  const inner = internals(pool);
  const id = inner.healthCheckId();
  const emitter = new EventEmitter<HealthCheckEvents>();
  const servers = new Map<string, ServerCheck>();
  let stopped = false;
  let sharing: SharedProbes | undefined;
  // With sharing, a server is probed here only while this instance holds its lease (or the engine is away).
  const probing = (s: ServerCheck): boolean => sharing === undefined || sharing.probes(s.peer.id);

  const mark = (s: ServerCheck): void => inner.healthMark(s.peer, id, !s.healthy, s.pending);

  const track = (peer: Peer, gate: boolean): ServerCheck => {
    const s: ServerCheck = {
      peer,
      timer: undefined,
      probe: undefined,
      running: undefined,
      passesInARow: 0,
      failsInARow: 0,
      healthy: true,
      pending: gate,
      lastAt: undefined,
      first: undefined,
    };
    servers.set(peer.id, s);
    if (gate) mark(s);
    sharing?.add(peer.id);
    return s;
  };

  /** Delay to a server's next probe: an interval after its last result, now if none came. */
  const due = (s: ServerCheck): number => (s.lastAt === undefined ? 0 : Math.max(0, s.lastAt + interval - clock.now()));

  const schedule = (s: ServerCheck, delay: number): void => {
    if (stopped || servers.get(s.peer.id) !== s) return;
    if (s.timer !== undefined) clock.clearTimeout(s.timer);
    const extra = jitter > 0 ? Math.floor(random() * jitter) : 0;
    s.timer = clock.setTimeout(() => {
      s.timer = undefined;
      // Another instance probes it: look again an interval later (a lease taken reschedules at once).
      if (!probing(s)) {
        schedule(s, interval);
        return;
      }
      // Whatever a listener does, the next probe is scheduled.
      run(s)
        .catch(() => undefined)
        .finally(() => schedule(s, interval));
    }, delay + extra);
  };

  const run = (s: ServerCheck): Promise<void> => {
    // One probe at a time per server: a caller arriving during one waits for it.
    if (s.running !== undefined) return s.running;
    s.running = probe(s).then((result) => {
      s.running = undefined;
      // A result that came back after another instance took the server over is its to give.
      if (stopped || servers.get(s.peer.id) !== s || !probing(s)) return;
      record(s, result);
    });
    return s.running;
  };

  const record = (s: ServerCheck, r: { passed: boolean; status: number | undefined; reason: string | undefined }): void => {
    inner.healthProbe(s.peer, r.passed);
    const was = s.healthy && !s.pending;
    const wasPending = s.pending;
    if (r.passed) {
      s.failsInARow = 0;
      s.passesInARow++;
      if (s.pending) {
        s.pending = false;
        s.healthy = true;
      } else if (!s.healthy && s.passesInARow >= passes) s.healthy = true;
    } else {
      s.passesInARow = 0;
      s.failsInARow++;
      if (s.pending) {
        s.pending = false;
        s.healthy = false;
      } else if (s.healthy && s.failsInARow >= fails) s.healthy = false;
    }
    s.lastAt = clock.now();
    commit(s, was, wasPending, { id: s.peer.id, passed: r.passed, status: r.status, reason: r.reason, healthy: s.healthy });
    sharing?.publish(s.peer.id, {
      url: s.peer.url,
      passed: r.passed,
      status: r.status,
      reason: r.reason,
      healthy: s.healthy,
      pending: s.pending,
      passesInARow: s.passesInARow,
      failsInARow: s.failsInARow,
      at: s.lastAt,
    });
  };

  /** A server's new state is set: the pool's mark, then the events (`result` for a probe here or one another instance published). */
  const commit = (s: ServerCheck, was: boolean, wasPending: boolean, result: ProbeResult | undefined): void => {
    s.first?.();
    s.first = undefined;
    const now = s.healthy && !s.pending;
    // A listener that throws (here or on the pool's `state` event) must not stop the checks.
    const safely = (fn: () => void): void => {
      try {
        fn();
      } catch (err) {
        process.nextTick(() => {
          if (emitter.listenerCount('error') > 0) emitter.emit('error', err);
        });
      }
    };
    safely(() => mark(s));
    if (result !== undefined) safely(() => emitter.emit('probe', result));
    if (now && !was) safely(() => emitter.emit('healthy', s.peer.id));
    // Up before, or a mandatory first probe that failed: either way the server is now unhealthy.
    if (!now && (was || wasPending)) safely(() => emitter.emit('unhealthy', s.peer.id));
  };

  /**
   * What the prober of a server said (`live`: a probe just published; else a stored result read at
   * the start or after an outage): its state applied as if probed here. The probe counters stay the
   * prober's (each instance counts the probes it sent), so the monitor's totals over the instances
   * count every probe once.
   */
  const heard = (serverId: string, v: SharedVerdict, from: string, live: boolean): boolean => {
    const s = servers.get(serverId);
    if (s === undefined || stopped || v.url !== s.peer.url) return false;
    const was = s.healthy && !s.pending;
    const wasPending = s.pending;
    s.healthy = v.healthy;
    s.pending = v.pending;
    s.passesInARow = v.passesInARow;
    s.failsInARow = v.failsInARow;
    s.lastAt = live ? clock.now() : Math.min(clock.now(), v.at);
    commit(s, was, wasPending, live ? { id: serverId, passed: v.passed, status: v.status, reason: v.reason, healthy: v.healthy, from } : undefined);
    return true;
  };

  /** A lease taken or lost, the engine lost or back: a server this instance now probes gets its probe when due. */
  const changed = (serverId?: string): void => {
    if (stopped) return;
    const affected = serverId === undefined ? [...servers.values()] : [servers.get(serverId)];
    for (const s of affected) if (s !== undefined && s.running === undefined && probing(s)) schedule(s, due(s));
  };

  /** A stream probe (type tcp or udp), with the check's timeout on its clock. */
  const probeStream = (s: ServerCheck, settings: StreamProbeSettings): Promise<{ passed: boolean; status: number | undefined; reason: string | undefined }> =>
    new Promise((resolve) => {
      let timer: unknown;
      const running = streamProbe(s.peer.target, settings, (passed, reason) => {
        if (timer !== undefined) clock.clearTimeout(timer);
        s.probe = undefined;
        resolve({ passed, status: undefined, reason });
      });
      s.probe = running;
      timer = clock.setTimeout(() => running.timeout(), timeout);
    });

  const probe = (s: ServerCheck): Promise<{ passed: boolean; status: number | undefined; reason: string | undefined }> =>
    stream !== undefined ? probeStream(s, stream) : probeHttp(s);

  const probeHttp = (s: ServerCheck): Promise<{ passed: boolean; status: number | undefined; reason: string | undefined }> =>
    new Promise((resolve) => {
      const target = s.peer.target;
      let settled = false;
      let timer: unknown;
      let req: ClientRequest | undefined;
      let res: IncomingMessage | undefined;
      const done = (passed: boolean, status: number | undefined, reason: string | undefined): void => {
        if (settled) return;
        settled = true;
        if (timer !== undefined) clock.clearTimeout(timer);
        s.probe = undefined;
        res?.destroy();
        req?.destroy();
        resolve({ passed, status, reason });
      };
      timer = clock.setTimeout(() => done(false, res?.statusCode, 'timeout'), timeout);
      const requestHeaders: Record<string, string> = { host: target.authority, 'user-agent': 'switchyard-health-check', connection: 'close', ...headers };
      if (target.auth !== undefined && requestHeaders.authorization === undefined)
        requestHeaders.authorization = `Basic ${Buffer.from(target.auth).toString('base64')}`;
      // A connection of its own (agent: false): a probe tests connecting, and never waits behind requests for a socket.
      const requestOptions = { host: target.hostname, port: port ?? target.port, method, path: uri, headers: requestHeaders, agent: false as const };
      try {
        if (target.protocol === 'https:') {
          // SNI and the name verified, as for proxied requests: the pool's `servername`, else the
          // server's host name; for an IP address, Node's default (the Host header's name, never an address).
          // The pool's TLS settings: those of the agent its proxied requests go through.
          const tls = inner.tls;
          const servername = tls.servername ?? (isIP(target.hostname) === 0 ? target.hostname : undefined);
          req = httpsRequest({ ...tls, ...requestOptions, servername });
        } else req = httpRequest(requestOptions);
      } catch (err) {
        done(false, undefined, (err as Error).message);
        return;
      }
      s.probe = req;
      req.on('error', (err: NodeJS.ErrnoException) => done(false, res?.statusCode, err.code ?? err.message));
      req.on('response', (response) => {
        res = response;
        const status = response.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let size = 0;
        const judge = (): void => {
          const body = match.needsBody ? Buffer.concat(chunks).toString('utf8') : '';
          const reason = match.test(status, response.headers, body);
          done(reason === undefined, status, reason);
        };
        if (!match.needsBody) {
          // The status and headers decide; the body is not read.
          judge();
          return;
        }
        response.on('data', (chunk: Buffer) => {
          if (settled) return;
          const room = MAX_PROBE_BODY - size;
          chunks.push(chunk.length > room ? chunk.subarray(0, room) : chunk);
          size += Math.min(chunk.length, room);
          if (size >= MAX_PROBE_BODY) judge();
        });
        response.on('end', judge);
        response.on('error', (err: NodeJS.ErrnoException) => done(false, status, err.code ?? err.message));
        response.on('aborted', () => done(false, status, 'response cut short'));
      });
      req.end();
    });

  const onAdd = (info: ServerInfo): void => {
    const peer = inner.peers().find((p) => p.id === info.id);
    if (peer === undefined || stopped) return;
    schedule(track(peer, mandatory), 0);
  };
  const onRemove = (info: ServerInfo): void => {
    const s = servers.get(info.id);
    if (s === undefined) return;
    servers.delete(info.id);
    if (s.timer !== undefined) clock.clearTimeout(s.timer);
    s.probe?.destroy();
    s.first?.();
    sharing?.remove(info.id);
  };
  pool.on('add', onAdd);
  pool.on('remove', onRemove);

  const syncHandle = inner.sync();
  if (syncHandle !== undefined && scope !== 'each') {
    const settings = [name, uri, port ?? null, method, Object.entries(headers).sort(), options.match ?? null, interval, timeout, fails, passes, mandatory];
    // stream probes: their kind and bytes too (an HTTP check's key stays what it was)
    if (stream !== undefined) settings.push(type, stream.send?.toString('latin1') ?? null, String(options.expect ?? ''));
    const key = sharedKey ?? settingsKey(settings);
    sharing = new SharedProbes({
      handle: syncHandle,
      scope,
      key: `${pool.name}:${key}`,
      interval,
      staleAfter: 2 * (interval + jitter + timeout) + interval,
      clock,
      heard,
      changed,
    });
  }

  const first: Array<Promise<void>> = [];
  for (const peer of inner.peers()) {
    const gate = mandatory && !(persistent && peer.state(inner.now()) === 'up');
    const s = track(peer, gate);
    first.push(new Promise<void>((resolve) => (s.first = resolve)));
    schedule(s, 0);
  }
  const ready = Promise.all(first).then(() => undefined);
  // The probes' timers are unref'd, so while the first probes are only scheduled nothing keeps the
  // process alive: `await hc.ready` at the top level of a module would end it ("unsettled top-level
  // await"). A ref'd timer holds it until `ready` settles or the check stops, and no longer.
  let hold: NodeJS.Timeout | undefined = setInterval(() => undefined, HOLD_MS);
  const release = (): void => {
    if (hold !== undefined) clearInterval(hold);
    hold = undefined;
  };
  void ready.then(release);

  const handle = Object.assign(emitter, {
    name,
    ready,
    async check(): Promise<void> {
      await Promise.all([...servers.values()].filter(probing).map((s) => run(s)));
    },
    stop(): void {
      if (stopped) return;
      stopped = true;
      release();
      pool.off('add', onAdd);
      pool.off('remove', onRemove);
      void sharing?.stop();
      for (const s of servers.values()) {
        if (s.timer !== undefined) clock.clearTimeout(s.timer);
        s.probe?.destroy();
        s.healthy = true;
        s.pending = false;
        mark(s);
        s.first?.();
      }
      servers.clear();
    },
  });
  return handle as HealthCheck;
}

/** The default {@link HealthCheckOptions.sharedKey}: a digest of the settings that decide a check's verdicts. */
function settingsKey(settings: unknown): string {
  const text = JSON.stringify(settings, (_key, value: unknown) => (value instanceof RegExp ? `/${value.source}/${value.flags}` : value));
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}
