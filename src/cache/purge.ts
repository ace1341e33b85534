/**
 * NGINX Plus `proxy_cache_purge` for `cache()`: removing a key's entries (every method's, Vary
 * variant's and forwarded variant's), or every key with a prefix, and remembering the purges made
 * here or heard from other instances (`sync`) for a while, so that a response fetched before a purge
 * is not stored after it.
 * @module
 */
import type { ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { InvalidOptionError } from '../core/errors.ts';
import { writeHead } from '../core/http2.ts';
import type { CacheStore } from '../store/index.ts';
import { escapeKey } from './key.ts';

/** How long a purge is remembered: a fill that began before a purge older than this is never stored. */
export const PURGE_MEMORY_MS = 10 * 60_000;
/** Most purges remembered; past it the oldest is forgotten, and fills that began before it are never stored. */
export const PURGE_MEMORY_LIMIT = 1000;

/** A purge as the cache remembers it. */
interface PurgeRecord {
  /** The store key purged (escaped), or the prefix when `prefix`. */
  readonly base: string;
  readonly prefix: boolean;
  /** The purge's number in this process (local and heard purges alike). */
  readonly generation: number;
  /** When it was made or heard, on the monotonic clock (`performance.now()`). */
  readonly at: number;
}

/** Whether store key `base` (a request's key and its suffixes) is one a purge of `purged` removes. */
export function purgeCovers(purged: string, prefix: boolean, base: string): boolean {
  if (prefix) return base.startsWith(purged);
  return base === purged || base.startsWith(`${purged}\n`);
}

/** The store key or prefix of the key a user purges: `'*'` at the end purges by prefix. */
export function purgeTarget(key: string): { base: string; prefix: boolean } {
  if (typeof key !== 'string') throw new InvalidOptionError('key', 'a string', key);
  return key.endsWith('*') ? { base: escapeKey(key.slice(0, -1)), prefix: true } : { base: escapeKey(key), prefix: false };
}

/** Removes a purged key's entries from `store`; resolves how many store keys were removed. */
export async function removeFrom(store: CacheStore, base: string, prefix: boolean): Promise<number> {
  if (prefix) return store.deletePrefix(base);
  const one = (await store.delete(base)) ? 1 : 0;
  return one + (await store.deletePrefix(`${base}\n`));
}

/** Purges a cache's store and remembers the purges made here and heard from other instances. */
export class Purger {
  readonly #store: CacheStore;
  #generation = 0;
  readonly #log: PurgeRecord[] = [];
  /** Fills that began before this generation are never stored: the purges up to it are forgotten. */
  #floorGeneration = 0;
  /** The same floor on the monotonic clock. */
  #floorAt = Number.NEGATIVE_INFINITY;
  /** Told of every purge made here (`sync`: broadcast to the other instances). */
  onPurge: ((base: string, prefix: boolean) => Promise<void>) | undefined;

  constructor(store: CacheStore) {
    this.#store = store;
  }

  /** Purges so far, made here or heard: a fill remembers it when it begins. */
  get generation(): number {
    return this.#generation;
  }

  /** Remembers a purge of `base` (a prefix when `prefix`), made here or heard from another instance. */
  note(base: string, prefix: boolean): void {
    const at = performance.now();
    this.#generation++;
    const log = this.#log;
    log.push({ base, prefix, generation: this.#generation, at });
    let drop = 0;
    while (drop < log.length && (log.length - drop > PURGE_MEMORY_LIMIT || log[drop]!.at < at - PURGE_MEMORY_MS)) drop++;
    if (drop > 0) {
      const last = log[drop - 1]!;
      this.#floorGeneration = last.generation;
      this.#floorAt = last.at;
      log.splice(0, drop);
    }
  }

  /** Whether a fill of `base` that began at `generation` may store what it fetched: no purge of it since. */
  mayStore(base: string, generation: number): boolean {
    if (generation === this.#generation) return true;
    if (generation < this.#floorGeneration) return false;
    for (let i = this.#log.length - 1; i >= 0; i--) {
      const r = this.#log[i]!;
      if (r.generation <= generation) break;
      if (purgeCovers(r.base, r.prefix, base)) return false;
    }
    return true;
  }

  /**
   * Whether a fill of `base` that another instance began about `age` ms ago may be stored here: no
   * purge of it heard since then, give or take `margin` ms (the time messages take; in doubt, not stored).
   */
  mayStoreSince(base: string, age: number, margin: number): boolean {
    const began = performance.now() - age - margin;
    if (began < this.#floorAt) return false;
    for (let i = this.#log.length - 1; i >= 0; i--) {
      const r = this.#log[i]!;
      if (r.at < began) break;
      if (purgeCovers(r.base, r.prefix, base)) return false;
    }
    return true;
  }

  /**
   * Removes the entries of `key` (as the `key` option computes it, before the cache's suffixes);
   * a key ending in `*` removes every entry whose key starts with the rest. Resolves how many store
   * keys were removed. With `sync`, the other instances hear of it (see {@link Purger.onPurge}).
   */
  async purge(key: string): Promise<number> {
    const { base, prefix } = purgeTarget(key);
    this.note(base, prefix);
    const removed = await removeFrom(this.#store, base, prefix);
    await this.onPurge?.(base, prefix);
    return removed;
  }
}

/** The answer to a purge request: 204 when something was removed (or for a prefix), else 404. */
export function answerPurge(res: ServerResponse, key: string, removed: number): void {
  writeHead(res, removed > 0 || key.endsWith('*') ? 204 : 404, { 'content-length': '0' });
  res.end();
}
