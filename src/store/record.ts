/**
 * A cached response as the stores hold it ({@link CacheEntry}), and the record it becomes in a store
 * that serializes: `{ v: 1, status, headers, body: base64, storedAt, meta }`, which survives any keyv
 * serializer (JSON included) and is checked on the way back.
 * @module
 */
import { Buffer } from 'node:buffer';
import { InvalidOptionError } from '../core/errors.ts';
import { ownMemory } from './memory.ts';

/** A cached response as {@link CacheStore} stores it. */
export interface CacheEntry {
  /** HTTP status code. */
  status: number;
  /** Response headers as a flat `[name, value, name, value, ...]` list (like `rawHeaders`). */
  headers: string[];
  /** The response body. */
  body: Buffer;
  /** When the entry was stored, in milliseconds since the epoch. */
  storedAt: number;
  /** Anything else the cache needs (validators, Vary data); must survive `JSON.stringify`. */
  meta?: Record<string, unknown> | undefined;
}

/** An entry as a store that serializes holds it. */
export interface StoredRecord {
  v: 1;
  status: number;
  headers: string[];
  body: string;
  storedAt: number;
  meta?: Record<string, unknown> | undefined;
}

/** Throws an {@link InvalidOptionError} naming the field when `entry` is not a {@link CacheEntry}. */
export function validEntry(entry: CacheEntry): void {
  if (entry === null || typeof entry !== 'object') throw new InvalidOptionError('entry', 'an object', entry);
  if (!Number.isInteger(entry.status) || entry.status < 100 || entry.status > 999)
    throw new InvalidOptionError('entry.status', 'an HTTP status code', entry.status);
  if (!Array.isArray(entry.headers) || entry.headers.length % 2 !== 0 || !entry.headers.every((h) => typeof h === 'string')) {
    throw new InvalidOptionError('entry.headers', 'a flat array of name/value strings', entry.headers);
  }
  if (!Buffer.isBuffer(entry.body)) throw new InvalidOptionError('entry.body', 'a Buffer', entry.body);
  if (typeof entry.storedAt !== 'number' || !Number.isFinite(entry.storedAt))
    throw new InvalidOptionError('entry.storedAt', 'a finite number of milliseconds', entry.storedAt);
  if (entry.meta !== undefined && (entry.meta === null || typeof entry.meta !== 'object' || Array.isArray(entry.meta))) {
    throw new InvalidOptionError('entry.meta', 'a plain object', entry.meta);
  }
}

/**
 * The entry as the memory store holds it: frozen (readers share it and must not change it), its
 * headers copied, its body in memory of its own.
 */
export function heldEntry(entry: CacheEntry): CacheEntry {
  const held: CacheEntry = {
    status: entry.status,
    headers: Object.freeze(entry.headers.slice()) as string[],
    body: ownMemory(entry.body),
    storedAt: entry.storedAt,
  };
  if (entry.meta !== undefined) held.meta = Object.freeze({ ...entry.meta });
  return Object.freeze(held);
}

/** The record a serializing store keeps for `entry`. */
export function encode(entry: CacheEntry): StoredRecord {
  const record: StoredRecord = { v: 1, status: entry.status, headers: entry.headers.slice(), body: entry.body.toString('base64'), storedAt: entry.storedAt };
  if (entry.meta !== undefined) record.meta = entry.meta;
  return record;
}

/** The entry a store's value holds, or `undefined` when it is not a well-formed record. */
export function decode(raw: unknown): CacheEntry | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const r = raw as Partial<StoredRecord>;
  if (r.v !== 1) return undefined;
  if (typeof r.status !== 'number' || !Number.isInteger(r.status) || r.status < 100 || r.status > 999) return undefined;
  if (!Array.isArray(r.headers) || r.headers.length % 2 !== 0 || !r.headers.every((h) => typeof h === 'string')) return undefined;
  if (typeof r.body !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(r.body) || r.body.length % 4 !== 0) return undefined;
  if (typeof r.storedAt !== 'number' || !Number.isFinite(r.storedAt)) return undefined;
  if (r.meta !== undefined && (r.meta === null || typeof r.meta !== 'object' || Array.isArray(r.meta))) return undefined;
  const entry: CacheEntry = { status: r.status, headers: r.headers.slice(), body: Buffer.from(r.body, 'base64'), storedAt: r.storedAt };
  if (r.meta !== undefined) entry.meta = r.meta;
  return entry;
}
