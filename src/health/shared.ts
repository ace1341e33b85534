// Active health checks shared across instances (issue 14): one prober per upstream server and
// scope, chosen by a lease, its results published to every instance of the scope, which apply them
// in memory. A scope is all the instances that share a pool of one name (`'cluster'`), or those of
// them on one host (`'host'`). While the engine is away every instance probes for itself, as
// without sync; nothing here is on the request path.
import type { TimerClock } from '../core/clock.ts';
import { type Lease, type SyncHandle, type SyncInternals, syncInternals, type Transport, type VersionedEntry } from '../sync/index.ts';
import { parseJsonObject } from '../sync/transport.ts';

/** How widely a check's probes are shared: see {@link HealthCheckOptions.shared}. @internal */
export type HealthScope = 'host' | 'cluster' | 'each';

/** The scopes a check may share its probes in. @internal */
export const HEALTH_SCOPES: readonly HealthScope[] = ['host', 'cluster', 'each'];

/** What a check says of a server after one probe, as the prober publishes it. @internal */
export interface SharedVerdict {
  /** The server's URL, so a server replaced under the same id does not take an old verdict. */
  readonly url: string;
  /** Whether this probe passed. */
  readonly passed: boolean;
  readonly status: number | undefined;
  readonly reason: string | undefined;
  /** The check's state machine after the probe. */
  readonly healthy: boolean;
  readonly pending: boolean;
  readonly passesInARow: number;
  readonly failsInARow: number;
  /** When the probe ended, by the prober's clock (snapshots older than the check's limit are ignored). */
  readonly at: number;
}

/** Options of {@link SharedProbes}. @internal */
export interface SharedProbesOptions {
  readonly handle: SyncHandle;
  readonly scope: 'host' | 'cluster';
  /** The pool's name and the check's shared key: what names the check alike on every instance. */
  readonly key: string;
  /** The check's interval in ms: the lease's TTL is 3/4 of it, so a takeover comes within one interval. */
  readonly interval: number;
  /** A stored verdict older than this (ms) is not taken from a snapshot: its prober is gone. */
  readonly staleAfter: number;
  /** The check's clock (verdicts' `at`). */
  readonly clock: TimerClock;
  /** A verdict another instance published (`live`) or one read from the stored records; returns whether the server is known here. */
  heard(id: string, verdict: SharedVerdict, from: string, live: boolean): boolean;
  /** Which servers this instance probes may have changed (a lease taken or lost, the engine lost or back): `id`, or all. */
  changed(id?: string): void;
}

/** The lease TTL of a check probing every `interval` ms: a dead prober's lease is taken over within TTL + TTL/3 = one interval. @internal */
export function leaseTtl(interval: number): number {
  return Math.max(1, Math.floor((interval * 3) / 4));
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** A verdict from a stored or published record, or `undefined` when it is not one (what Redis holds is read as hostile). */
function parseVerdict(value: string): SharedVerdict | undefined {
  const d = parseJsonObject(value);
  if (d === undefined) return undefined;
  if (typeof d.url !== 'string' || typeof d.passed !== 'boolean' || typeof d.healthy !== 'boolean' || typeof d.pending !== 'boolean') return undefined;
  if (!isCount(d.passesInARow) || !isCount(d.failsInARow) || typeof d.at !== 'number' || !Number.isFinite(d.at)) return undefined;
  const status = isCount(d.status) && d.status <= 999 ? d.status : undefined;
  const reason = typeof d.reason === 'string' ? d.reason.slice(0, 200) : undefined;
  return {
    url: d.url,
    passed: d.passed,
    status,
    reason,
    healthy: d.healthy,
    pending: d.pending,
    passesInARow: d.passesInARow,
    failsInARow: d.failsInARow,
    at: d.at,
  };
}

/**
 * One health check's sharing: a lease per server (`health:<key>[:host:<host>]:<server id>`), the
 * verdicts of the scope as versioned records (a new instance reads them at once: it does not wait
 * for the next probe), and the connection state that turns sharing off and on.
 * @internal
 */
export class SharedProbes {
  /** The lease TTL in ms. */
  readonly ttl: number;
  /** The transport scope the verdicts live in. */
  readonly scope: string;
  readonly #o: SharedProbesOptions;
  readonly #shared: SyncInternals;
  readonly #t: Transport;
  readonly #leases = new Map<string, Lease>();
  /** The highest version applied per server. */
  readonly #seen = new Map<string, number>();
  #floor = 0;
  readonly #stops: Array<() => void>;
  /** Whether the handle's first connection attempt is over (before it, nobody probes: the lease decides once connected). */
  #ready = false;
  #stopped: Promise<void> | undefined;
  #catchUpQueued = false;

  constructor(options: SharedProbesOptions) {
    this.#o = options;
    this.#shared = syncInternals(options.handle);
    this.#t = this.#shared.transport;
    this.scope = options.scope === 'host' ? `health:${options.key}:host:${this.#shared.host}` : `health:${options.key}`;
    this.ttl = leaseTtl(options.interval);
    this.#stops = [
      this.#t.subscribe(this.scope, (entry) => this.#receive(entry, true)),
      this.#t.onConnection((up) => {
        if (up) this.#catchUp();
        options.changed();
      }),
    ];
    // A handle closed before the check stops: its leases go back while the transport still answers.
    this.#shared.onClose(() => this.stop());
    options.handle.ready.then(
      () => {
        if (this.#stopped !== undefined) return;
        this.#ready = true;
        this.#catchUp();
        options.changed();
      },
      () => {},
    );
  }

  /**
   * Whether this instance probes server `id` now: it holds the server's lease; or the engine is
   * away (every instance probes for itself, as without sync); or sharing has stopped.
   */
  probes(id: string): boolean {
    if (this.#stopped !== undefined) return true;
    if (!this.#t.connected) return this.#ready;
    return this.#leases.get(id)?.held === true;
  }

  /** A server to probe: its lease starts competing. */
  add(id: string): void {
    if (this.#stopped !== undefined || this.#leases.has(id)) return;
    const lease = this.#shared.lease(`${this.scope}:${id}`, this.ttl, () => this.#o.changed(id));
    this.#leases.set(id, lease);
    lease.start();
    // A server added after the start (by the pool's replica, say) may have a verdict stored already.
    if (this.#ready && !this.#catchUpQueued) {
      this.#catchUpQueued = true;
      queueMicrotask(() => {
        this.#catchUpQueued = false;
        this.#catchUp();
      });
    }
  }

  /** A server gone from the pool: its lease is given back. */
  remove(id: string): void {
    const lease = this.#leases.get(id);
    this.#leases.delete(id);
    this.#seen.delete(id);
    lease?.stop().catch(() => {});
  }

  /** Publishes this instance's verdict on a server it probes (nothing while the engine is away). */
  publish(id: string, verdict: SharedVerdict): void {
    if (this.#stopped !== undefined || !this.#t.connected) return;
    const t = this.#t;
    const value = JSON.stringify(verdict);
    t.version(this.scope, this.#floor)
      .then((version) => {
        if (version > this.#floor) this.#floor = version;
        if (version > (this.#seen.get(id) ?? 0)) this.#seen.set(id, version);
        return t.put(this.scope, { key: id, version, origin: this.#shared.instance, value });
      })
      .catch(() => {});
  }

  /** Reads the stored verdicts (at the start, after an outage, for a server added later). */
  #catchUp(): void {
    if (this.#stopped !== undefined || !this.#t.connected) return;
    this.#t.snapshot(this.scope).then(
      (entries) => {
        for (const entry of entries) this.#receive(entry, false);
      },
      () => {},
    );
  }

  #receive(entry: VersionedEntry, live: boolean): void {
    if (this.#stopped !== undefined) return;
    if (entry.version > this.#floor) this.#floor = entry.version;
    if (entry.version <= (this.#seen.get(entry.key) ?? 0)) return;
    // This instance's own verdicts were applied when it probed.
    if (live && entry.origin === this.#shared.instance) {
      if (this.#leases.has(entry.key)) this.#seen.set(entry.key, entry.version);
      return;
    }
    const verdict = parseVerdict(entry.value);
    if (verdict === undefined) return;
    if (!live && this.#o.clock.now() - verdict.at > this.#o.staleAfter) return;
    if (this.#o.heard(entry.key, verdict, entry.origin, live)) this.#seen.set(entry.key, entry.version);
  }

  /** Gives every lease back and stops listening; the check then probes for itself. Idempotent. */
  stop(): Promise<void> {
    if (this.#stopped !== undefined) return this.#stopped;
    let done = (): void => {};
    this.#stopped = new Promise<void>((resolve) => (done = resolve));
    for (const stop of this.#stops.splice(0)) stop();
    const leases = [...this.#leases.values()];
    this.#leases.clear();
    void Promise.all(leases.map((lease) => lease.stop().catch(() => {}))).then(done);
    this.#o.changed();
    return this.#stopped;
  }
}
