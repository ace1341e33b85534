// A pool's part of the cluster-wide state (issue 14): its run-time server list replicated through
// the sync handle (changes made anywhere reach every instance; a restarted instance comes back with
// them), passive failures counted across instances, and its statistics on the board the monitor
// sums. The static list of createPool is every instance's version 0: a server only the static list
// names stays as configured until a change to it is made somewhere. A pool that has carried stream
// (TCP/UDP) connections also publishes its stream statistics (section `stream:<name>`).
import { channels } from '../core/diagnostics.ts';
import { type ConfigReplica, type ServerFields, type SyncHandle, type SyncInternals, syncInternals } from '../sync/index.ts';
import { UPDATABLE_NAMES } from './fields.ts';
import type { ServerInfo, ServerOptions, ServerUpdate, UpstreamPool } from './index.ts';
import type { Peer } from './peer.ts';

/** What the pool lets its sync part do: its own changes, without publishing them again. @internal */
export interface PoolSyncHooks {
  add(server: ServerOptions): ServerInfo;
  update(id: string, changes: ServerUpdate): ServerInfo;
  remove(id: string): ServerInfo;
  /** Other instances' failures took the server to `maxFails`. */
  failed(id: string): void;
  peer(id: string): Peer | undefined;
}

/** A server's record as it is shared: its settings, durations in ms, the url with its credentials. */
function recordOf(peer: Peer): Record<string, unknown> {
  const t = peer.target;
  const url = t.auth === undefined ? peer.url : `${t.protocol}//${t.auth}@${t.authority}${t.prefix}`;
  return {
    url,
    id: peer.id,
    weight: peer.weight,
    maxConns: peer.maxConns,
    maxFails: peer.maxFails,
    failTimeout: peer.failTimeout,
    backup: peer.backup,
    down: peer.down,
    drain: peer.drain,
    route: peer.route,
    slowStart: peer.slowStart,
    http2: peer.http2,
  };
}

/** The server options a shared record describes (validated by the pool as any other). */
function optionsOf(id: string, fields: ServerFields): ServerOptions {
  const server: Record<string, unknown> = { ...fields, id };
  if (server.route === '') delete server.route;
  return server as unknown as ServerOptions;
}

/** The pool's connection to the cluster-wide state. @internal */
export class PoolSync {
  readonly handle: SyncHandle;
  readonly #owned: boolean;
  readonly #pool: UpstreamPool;
  readonly #hooks: PoolSyncHooks;
  readonly #shared: SyncInternals;
  readonly #replica: ConfigReplica;
  readonly #stops: Array<() => void>;
  readonly #channel: string;

  constructor(pool: UpstreamPool, handle: SyncHandle, owned: boolean, hooks: PoolSyncHooks) {
    this.handle = handle;
    this.#owned = owned;
    this.#pool = pool;
    this.#hooks = hooks;
    this.#shared = syncInternals(handle);
    this.#channel = `passive:${pool.name}`;
    this.#replica = this.#shared.replica(`pool:${pool.name}`, (key, fields) => this.#apply(key, fields));
    let streamed = false;
    this.#stops = [
      this.#shared.board.provide(`pool:${pool.name}`, () => pool.stats()),
      // Left out of the report (undefined) until a stream connection was counted: HTTP-only pools publish no stream section.
      this.#shared.board.provide(`stream:${pool.name}`, () => {
        const stats = pool.streamStats();
        streamed ||= stats.servers.some((s) => s.connections > 0);
        return streamed ? stats : undefined;
      }),
      this.#shared.transport.listen(this.#channel, (message) => this.#heard(message)),
    ];
    this.#replica.start().catch(() => {});
  }

  /** Settles once the handle's first connection attempt is over and the replica has read the shared list (or the engine is away). */
  ready(): Promise<void> {
    return this.handle.ready.then(
      () => this.#replica.settled(),
      () => {},
    );
  }

  added(id: string): void {
    const peer = this.#hooks.peer(id);
    if (peer !== undefined) this.#replica.local({ op: 'add', key: id, fields: recordOf(peer) });
  }

  updated(id: string, changes: ServerUpdate): void {
    const peer = this.#hooks.peer(id);
    if (peer === undefined) return;
    const record = recordOf(peer);
    const fields: Record<string, unknown> = {};
    for (const name of Object.keys(changes)) if (UPDATABLE_NAMES.includes(name)) fields[name] = record[name];
    this.#replica.local({ op: 'update', key: id, fields, base: record });
  }

  removed(id: string): void {
    this.#replica.local({ op: 'remove', key: id });
  }

  /**
   * A failed attempt here. Counted in the shared counter of the server's failure window; the
   * failure that brings the count to `maxFails` (here or anywhere) is broadcast, and every
   * instance holds the server out for `failTimeout`. Nothing waits for the answer.
   */
  failure(peer: Peer, reachedHere: boolean): void {
    const t = this.#shared.transport;
    if (!t.connected) return;
    const id = peer.id;
    if (reachedHere) {
      t.broadcast(this.#channel, JSON.stringify({ id })).catch(() => {});
      return;
    }
    const maxFails = peer.maxFails;
    t.increment(`fails:${this.#pool.name}:${id}`, 1, peer.failTimeout)
      .then(
        (count) => {
          if (count >= maxFails) return t.broadcast(this.#channel, JSON.stringify({ id }));
        },
        () => {},
      )
      .catch(() => {});
  }

  #heard(message: string): void {
    let id: unknown;
    try {
      id = (JSON.parse(message) as { id?: unknown } | null)?.id;
    } catch {
      return;
    }
    if (typeof id === 'string') this.#hooks.failed(id);
  }

  /** A server's shared record changed (here or elsewhere): bring the pool in line, when it differs. */
  #apply(key: string, fields: ServerFields | undefined): void {
    const peer = this.#hooks.peer(key);
    try {
      if (fields === undefined) {
        if (peer !== undefined) this.#hooks.remove(key);
        return;
      }
      const server = optionsOf(key, fields);
      if (peer === undefined) {
        this.#hooks.add(server);
        return;
      }
      const current = recordOf(peer);
      if (current.url !== server.url || current.backup !== (server.backup ?? false)) {
        this.#hooks.remove(key);
        this.#hooks.add(server);
        return;
      }
      const changes: Record<string, unknown> = {};
      for (const name of UPDATABLE_NAMES) {
        const value = name === 'route' ? (fields.route ?? '') : fields[name];
        if (value !== undefined && value !== current[name]) changes[name] = value;
      }
      if (Object.keys(changes).length > 0) this.#hooks.update(key, changes as ServerUpdate);
    } catch (err) {
      // A record this pool refuses (another method's fields, the last server's removal, a hostile
      // value): the pool stays as it is.
      if (channels.storeError.hasSubscribers) channels.storeError.publish({ store: `sync:pool:${this.#pool.name}`, operation: 'apply', error: err as Error });
    }
  }

  close(): void {
    for (const stop of this.#stops) stop();
    this.#replica.close();
    if (this.#owned) this.handle.close().catch(() => {});
  }
}
