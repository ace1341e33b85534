// The configuration replica of issue 14: each instance's copy of a pool's run-time server list,
// kept in step with the others' through a Transport. Every server is one record ordered by a
// version the transport hands out (last writer wins per server; host clocks play no part);
// a removal is a record too (a tombstone), so a late, older `add` cannot bring a server back.
// Local changes take effect at once (nothing waits for the transport) and stay pending until a
// version is assigned and the record stored; while the transport is away they queue, and on
// reconnection the replica reads the snapshot, pushes back what the engine lost, then pushes its
// queued changes with fresh versions (so they win over whatever is older).
import { randomUUID } from 'node:crypto';
import type { Transport, VersionedEntry } from './transport.ts';

/** A server's fields as the pool knows them (`weight`, `down`, ...), serializable to JSON. */
export type ServerFields = Readonly<Record<string, unknown>>;

/**
 * One change to the server list, as the pool's `add`, `update` and `remove` make it.
 *
 * @example
 * ```ts
 * replica.local({ op: 'update', key: '10.0.0.1:80', fields: { drain: true } });
 * ```
 */
export type ServerChange =
  | { readonly op: 'add'; readonly key: string; readonly fields: ServerFields }
  | {
      readonly op: 'update';
      readonly key: string;
      /** The fields changed. */
      readonly fields: ServerFields;
      /** The whole server as this instance knows it, for a server no record holds yet (one of the static list). */
      readonly base?: ServerFields | undefined;
    }
  | { readonly op: 'remove'; readonly key: string };

/** What the transport stores for a server: its whole field set, or a tombstone. */
export type ServerRecord = { readonly removed: false; readonly fields: ServerFields } | { readonly removed: true };

/** How long a replica waits before it tries again after a push failed on a connection that stayed up, in ms. */
const DEFAULT_RETRY_DELAY = 500;

/** Options of a {@link ConfigReplica}. */
export interface ConfigReplicaOptions {
  /** The engine shared with the other instances. */
  transport: Transport;
  /** The scope records live in (one per pool, e.g. `'<namespace>:pool:<name>'`). */
  scope: string;
  /** This instance's name in the records it writes; must differ between instances. @default a random UUID */
  origin?: string | undefined;
  /**
   * Called whenever a server's visible state changes, with its fields, or `undefined` once it is
   * removed. The pool implements it with its own add / update / remove (without publishing again).
   */
  apply: (key: string, fields: ServerFields | undefined) => void;
  /** After a push failed while the transport stayed connected (a command timed out), try again after this many ms. @default 500 */
  retryDelay?: number | undefined;
}

/**
 * A change applied to a record: the record it becomes. An update merges its fields into the
 * record (so updates of different fields made at once on two instances both hold); an update of a
 * server no record holds starts from its `base`, and one of a removed server changes nothing.
 */
function applyChange(record: ServerRecord | undefined, change: ServerChange): ServerRecord | undefined {
  if (change.op === 'add') return { removed: false, fields: { ...change.fields } };
  if (change.op === 'remove') return { removed: true };
  if (record === undefined) return change.base === undefined ? undefined : { removed: false, fields: { ...change.base, ...change.fields } };
  if (record.removed) return record;
  return { removed: false, fields: { ...record.fields, ...change.fields } };
}

/** The record an entry carries, or `undefined` when its value is not one. */
function parse(entry: VersionedEntry): ServerRecord | undefined {
  try {
    const value: unknown = JSON.parse(entry.value);
    if (typeof value !== 'object' || value === null) return undefined;
    const v = value as { removed?: unknown; fields?: unknown };
    if (v.removed === true) return { removed: true };
    if (v.removed === false && typeof v.fields === 'object' && v.fields !== null) return { removed: false, fields: v.fields as ServerFields };
  } catch {}
  return undefined;
}

/**
 * One instance's replica of a server list shared through a {@link Transport}. Call
 * {@link ConfigReplica.start} once, {@link ConfigReplica.local} for every change made here, and
 * {@link ConfigReplica.close} at the end; changes from everywhere reach `apply`.
 *
 * @example
 * ```ts
 * const replica = new ConfigReplica({ transport, scope: 'gw:pool:api', apply: (key, fields) => mirror(key, fields) });
 * await replica.start();
 * replica.local({ op: 'add', key: '10.0.0.1:80', fields: { weight: 1 } });
 * ```
 */
export class ConfigReplica {
  /** This instance's name in the records it writes. */
  readonly origin: string;
  /** The transport, the scope and `apply`, as given. */
  readonly #o: ConfigReplicaOptions;
  /** Records confirmed by the transport (or read from it), tombstones included. */
  readonly #base = new Map<string, { version: number; record: ServerRecord }>();
  /** Local changes not stored yet, in the order they were made. */
  readonly #pending: ServerChange[] = [];
  /** What `apply` was last told per key (JSON of the fields, or '' for absent). */
  readonly #shown = new Map<string, string>();
  #maxVersion = 0;
  #stops: Array<() => void> = [];
  #work: Promise<void> = Promise.resolve();
  #running = false;
  #closed = false;

  constructor(options: ConfigReplicaOptions) {
    this.#o = options;
    this.origin = options.origin ?? randomUUID();
  }

  /** Subscribes to the scope and follows the connection; settles once the first synchronisation is done (at once when disconnected). */
  start(): Promise<void> {
    this.#stops.push(
      this.#o.transport.subscribe(this.#o.scope, (entry) => this.remote(entry)),
      this.#o.transport.onConnection((up) => {
        this.#connections++;
        if (up) this.#schedule();
        else this.#synced = false;
      }),
    );
    this.#schedule();
    return this.settled();
  }

  /** Stops following the transport. Pending changes stay unsent. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    for (const stop of this.#stops) stop();
    this.#stops = [];
  }

  /** Settles when the replica has nothing left to push (or the transport went away meanwhile). */
  async settled(): Promise<void> {
    let work: Promise<void>;
    do {
      work = this.#work;
      await work;
    } while (work !== this.#work);
  }

  /** The visible state: every present server with its fields. */
  servers(): Map<string, ServerFields> {
    const out = new Map<string, ServerFields>();
    for (const key of this.#keys()) {
      const record = this.#visible(key);
      if (record !== undefined && !record.removed) out.set(key, record.fields);
    }
    return out;
  }

  /** The highest version seen. */
  get version(): number {
    return this.#maxVersion;
  }

  /** A change made on this instance: applied at once, pushed to the others as soon as the transport allows. */
  local(change: ServerChange): void {
    this.#pending.push(change);
    this.#show(change.key);
    this.#schedule();
  }

  /** A record published by an instance: applied when newer than the one held; this instance's own echoes are ignored. */
  remote(entry: VersionedEntry): void {
    if (entry.origin === this.origin) return;
    if (this.#merge(entry)) this.#show(entry.key);
  }

  /**
   * The engine's full state, read on (re)connection: newer records are taken. Returns the
   * records this replica holds that the engine lacks or holds older (an engine restarted empty),
   * to be stored again.
   */
  snapshot(entries: readonly VersionedEntry[]): VersionedEntry[] {
    const theirs = new Map<string, number>();
    for (const entry of entries) {
      theirs.set(entry.key, entry.version);
      if (this.#merge(entry)) this.#show(entry.key);
    }
    const missing: VersionedEntry[] = [];
    for (const [key, { version, record }] of this.#base) {
      if ((theirs.get(key) ?? 0) < version) missing.push(this.#entry(key, version, record));
    }
    return missing;
  }

  #entry(key: string, version: number, record: ServerRecord): VersionedEntry {
    return { key, version, origin: this.origin, value: JSON.stringify(record) };
  }

  #merge(entry: VersionedEntry): boolean {
    const record = parse(entry);
    if (record === undefined) return false;
    this.#maxVersion = Math.max(this.#maxVersion, entry.version);
    const held = this.#base.get(entry.key);
    if (held !== undefined && held.version >= entry.version) return false;
    this.#base.set(entry.key, { version: entry.version, record });
    return true;
  }

  #keys(): Set<string> {
    return new Set([...this.#base.keys(), ...this.#pending.map((c) => c.key)]);
  }

  /** The key's record with the pending changes on top. */
  #visible(key: string): ServerRecord | undefined {
    let record = this.#base.get(key)?.record;
    for (const change of this.#pending) if (change.key === key) record = applyChange(record, change);
    return record;
  }

  /** Tells `apply` about the key when its visible state differs from what it was told last. */
  #show(key: string): void {
    const record = this.#visible(key);
    const fields = record === undefined || record.removed ? undefined : record.fields;
    // '' for absent: a key `apply` was never told of (a server of the static list) is told of its removal too.
    const json = fields === undefined ? '' : JSON.stringify(fields);
    if (json === this.#shown.get(key)) return;
    this.#shown.set(key, json);
    this.#o.apply(key, fields);
  }

  /** Starts a synchronisation run unless one is under way (a run that ends re-checks for new work). */
  #schedule(): void {
    if (this.#running || this.#closed || !this.#o.transport.connected) return;
    this.#running = true;
    const connections = this.#connections;
    this.#work = this.#sync().then((ok) => {
      this.#running = false;
      // Changes made meanwhile, or a connection lost and regained during the run: go again
      // (not after a failure on an unchanged connection, which would only fail again at once).
      if (this.#closed || (this.#synced && this.#pending.length === 0)) return;
      if (ok || connections !== this.#connections) this.#schedule();
      // A failure on a connection that stayed up (commands timing out: Redis frozen, overloaded):
      // nothing will reconnect to wake the replica, so it tries again after a while.
      else this.#retryLater();
    });
  }

  /** Tries again after `retryDelay` (one timer at a time, unref'd). */
  #retryLater(): void {
    if (this.#retry !== undefined) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#schedule();
    }, this.#o.retryDelay ?? DEFAULT_RETRY_DELAY);
    this.#retry.unref();
  }

  #retry: NodeJS.Timeout | undefined;

  /** Reads the snapshot on (re)connection, stores back what the engine lost, then pushes the pending changes in order. */
  async #sync(): Promise<boolean> {
    const t = this.#o.transport;
    try {
      if (!this.#synced) {
        const missing = this.snapshot(await t.snapshot(this.#o.scope));
        for (const entry of missing) await t.put(this.#o.scope, entry);
        this.#synced = true;
      }
      while (this.#pending.length > 0 && !this.#closed) {
        const change = this.#pending[0] as ServerChange;
        const version = await t.version(this.#o.scope, this.#maxVersion);
        this.#maxVersion = Math.max(this.#maxVersion, version);
        const record = applyChange(this.#base.get(change.key)?.record, change);
        if (record !== undefined && (await t.put(this.#o.scope, this.#entry(change.key, version, record)))) {
          const held = this.#base.get(change.key);
          if (held === undefined || held.version < version) this.#base.set(change.key, { version, record });
        }
        this.#pending.shift();
        this.#show(change.key);
      }
      return true;
    } catch {
      // The transport went away: what is pending stays pending, and the next connection reads the snapshot again.
      this.#synced = false;
      return false;
    }
  }

  /** Whether the snapshot was read since the last connection. */
  #synced = false;
  /** Connection changes seen so far. */
  #connections = 0;
}
