/**
 * NGINX Plus `proxy_cache_purge` for `cache()`: removing a key's entries (every method's, Vary
 * variant's and forwarded variant's), or every key with a prefix, and remembering that a purge
 * happened so that a response fetched before it is not stored after it.
 * @module
 */
import type { ServerResponse } from 'node:http';
import { InvalidOptionError } from '../core/errors.ts';
import { writeHead } from '../core/http2.ts';
import type { CacheStore } from '../store/index.ts';
import { escapeKey } from './key.ts';

/** Purges a cache's store and counts the purges. */
export class Purger {
  readonly #store: CacheStore;
  #generation = 0;

  constructor(store: CacheStore) {
    this.#store = store;
  }

  /** Purges so far: a fill that began before a purge (a lower generation) must not store its response. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Removes the entries of `key` (as the `key` option computes it, before the cache's suffixes);
   * a key ending in `*` removes every entry whose key starts with the rest. Resolves how many store
   * keys were removed.
   */
  async purge(key: string): Promise<number> {
    if (typeof key !== 'string') throw new InvalidOptionError('key', 'a string', key);
    this.#generation++;
    const store = this.#store;
    if (key.endsWith('*')) return store.deletePrefix(escapeKey(key.slice(0, -1)));
    const base = escapeKey(key);
    const one = (await store.delete(base)) ? 1 : 0;
    return one + (await store.deletePrefix(`${base}\n`));
  }
}

/** The answer to a purge request: 204 when something was removed (or for a prefix), else 404. */
export function answerPurge(res: ServerResponse, key: string, removed: number): void {
  writeHead(res, removed > 0 || key.endsWith('*') ? 204 : 404, { 'content-length': '0' });
  res.end();
}
