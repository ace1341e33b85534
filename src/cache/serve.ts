// Answering a request from a cached entry: the client's conditional headers (304), a single byte
// range (206/416), HEAD, and the status header. Entries hold complete responses only.
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { writeHead } from '../core/http2.ts';
import type { CacheEntry } from '../store/index.ts';
import { parseHttpDate } from './policy.ts';

/** Request headers the cache answers itself and never forwards upstream (nginx clears them too). */
export const CLIENT_CONDITIONALS = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'range', 'if-range'] as const;

/** The client's conditional and range headers, which the cache answers itself and keeps from the upstream. */
export type Conditionals = Partial<Record<(typeof CLIENT_CONDITIONALS)[number], string>>;

/** The conditional and range headers of `headers` (repeated ones joined). */
export function conditionalsOf(headers: IncomingHttpHeaders): Conditionals {
  const out: Conditionals = {};
  for (const name of CLIENT_CONDITIONALS) {
    const v = headers[name];
    if (v === undefined) continue;
    out[name] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/** First value of `name` (lowercase) in a flat header list. */
export function entryHeader(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() === name) return headers[i + 1];
  return undefined;
}

function opaque(tag: string): string {
  const t = tag.trim();
  return t.startsWith('W/') ? t.slice(2) : t;
}

function etagMatches(list: string, etag: string, weak: boolean): boolean {
  if (list.trim() === '*') return true;
  if (!weak && etag.trim().startsWith('W/')) return false;
  const target = opaque(etag);
  for (const part of list.split(',')) {
    const p = part.trim();
    if (p === '') continue;
    if (!weak && p.startsWith('W/')) continue;
    if (opaque(p) === target) return true;
  }
  return false;
}

/**
 * Whether the client's validators say its copy is current: `If-None-Match` (weak comparison)
 * when present, else `If-Modified-Since` equal to `Last-Modified` (nginx's default
 * `if_modified_since exact`). Only 200 entries answer 304, as nginx's not-modified filter.
 */
export function notModified(entry: CacheEntry, c: Conditionals): boolean {
  if (entry.status !== 200) return false;
  const inm = c['if-none-match'];
  if (inm !== undefined) {
    const etag = entryHeader(entry.headers, 'etag');
    return etag !== undefined && etagMatches(inm, etag, true);
  }
  const ims = c['if-modified-since'];
  if (ims !== undefined) {
    const lm = entryHeader(entry.headers, 'last-modified');
    if (lm === undefined) return false;
    const a = parseHttpDate(lm);
    const b = parseHttpDate(ims);
    return a !== undefined && a === b;
  }
  return false;
}

/** Whether the client's `If-Match` / `If-Unmodified-Since` fail against the entry (412). */
export function preconditionFailed(entry: CacheEntry, c: Conditionals): boolean {
  const im = c['if-match'];
  if (im !== undefined) {
    const etag = entryHeader(entry.headers, 'etag');
    return etag === undefined || !etagMatches(im, etag, false);
  }
  const ius = c['if-unmodified-since'];
  if (ius !== undefined) {
    const lm = entryHeader(entry.headers, 'last-modified');
    const a = lm === undefined ? undefined : parseHttpDate(lm);
    const b = parseHttpDate(ius);
    if (a === undefined || b === undefined) return true;
    return a > b;
  }
  return false;
}

/** A satisfiable single byte range, `'unsatisfiable'`, or `undefined` to send the whole body. */
export function byteRange(entry: CacheEntry, c: Conditionals): { start: number; end: number } | 'unsatisfiable' | undefined {
  const range = c.range;
  // A HEAD's entry has no body to take a range of.
  if (range === undefined || entry.status !== 200 || headEntry(entry)) return undefined;
  const ifRange = c['if-range'];
  if (ifRange !== undefined) {
    const t = ifRange.trim();
    if (t.startsWith('"') || t.startsWith('W/')) {
      const etag = entryHeader(entry.headers, 'etag');
      if (etag === undefined || t.startsWith('W/') || etag.trim() !== t) return undefined;
    } else {
      const lm = entryHeader(entry.headers, 'last-modified');
      if (lm === undefined || parseHttpDate(lm) === undefined || parseHttpDate(lm) !== parseHttpDate(t)) return undefined;
    }
  }
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(range);
  // Several ranges, or a unit other than bytes: the whole body (allowed by RFC 9110 §14.2).
  if (m === null) return undefined;
  const size = entry.body.length;
  const [, a, b] = m;
  if (a === '' && b === '') return undefined;
  let start: number;
  let end: number;
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
    if (b !== '' && Number(b) < start) return undefined;
  }
  if (!Number.isSafeInteger(start) || start >= size) return 'unsatisfiable';
  return { start, end };
}

/**
 * Whether `entry` is a HEAD's response (stored with `convertHead: false`): it has no body and keeps
 * the upstream's Content-Length, which its answers send as they are.
 */
export function headEntry(entry: CacheEntry): boolean {
  return entry.meta?.['head'] === true;
}

/** Adds the Content-Length of an answer with `length` body bytes from `entry` (a HEAD's entry has its own). */
function pushLength(headers: string[], entry: CacheEntry, length: number): void {
  if (!headEntry(entry)) headers.push('content-length', String(length));
}

const hitHeaders = new WeakMap<CacheEntry, { statusHeader: string | undefined; list: string[] }>();

/** Whether the request has none of the headers that make a HIT other than the entry as stored (conditionals, range). */
export function plainHit(c: Conditionals): boolean {
  return (
    c['if-none-match'] === undefined &&
    c['if-modified-since'] === undefined &&
    c.range === undefined &&
    c['if-match'] === undefined &&
    c['if-unmodified-since'] === undefined
  );
}

/**
 * Writes `entry` as it is stored (a {@link plainHit}), with Content-Length and the status header
 * `statusHeader: status`: the header list is built once per entry and status header. `h1`: the
 * response is node:http's (not HTTP/2's compatibility one), written without the HTTP/2 checks.
 * Returns the number of body bytes written.
 */
export function serveStored(res: ServerResponse, method: string, entry: CacheEntry, statusHeader: string | undefined, status: string, h1: boolean): number {
  let wire = status === 'HIT' ? hitHeaders.get(entry) : undefined;
  if (wire === undefined || wire.statusHeader !== statusHeader) {
    const list = entry.headers.slice();
    pushLength(list, entry, entry.body.length);
    if (statusHeader !== undefined) list.push(statusHeader, status);
    wire = { statusHeader, list };
    if (status === 'HIT') hitHeaders.set(entry, wire);
  }
  if (h1) res.writeHead(entry.status, wire.list);
  else writeHead(res, entry.status, wire.list);
  if (method === 'HEAD' || entry.status === 204 || entry.status === 304) {
    res.end();
    return 0;
  }
  res.end(entry.body);
  return entry.body.length;
}

/**
 * Not sent on a 304 (RFC 9110 §15.4.5), as nginx's not-modified filter clears them: the framing,
 * Content-Type and Content-Encoding. The other headers of the 200 go with it (ETag, Last-Modified,
 * Cache-Control, Expires, Vary, Content-Location, Content-Language, and the rest).
 */
const NOT_FOR_304 = new Set(['content-length', 'content-range', 'accept-ranges', 'transfer-encoding', 'content-type', 'content-encoding']);

/** Not sent on a 206 from an entry: its length is the range's, and nginx's range filter drops Accept-Ranges. */
const NOT_FOR_206 = new Set(['content-length', 'content-range', 'accept-ranges']);

/**
 * Writes `entry` to `res` as the answer to a `method` request, honouring the client's
 * conditional and range headers. Returns the number of body bytes written.
 */
export function serveEntry(res: ServerResponse, method: string, entry: CacheEntry, c: Conditionals, statusHeader: string | undefined, status: string): number {
  // The common case (a HIT without conditions): the header list is built once per entry.
  if (status === 'HIT' && plainHit(c)) return serveStored(res, method, entry, statusHeader, status, false);
  const headers: string[] = [];
  let code = entry.status;
  let body = entry.body;
  if (preconditionFailed(entry, c)) {
    code = 412;
    body = Buffer.alloc(0);
  } else if (notModified(entry, c)) {
    code = 304;
    for (let i = 0; i < entry.headers.length; i += 2) {
      if (!NOT_FOR_304.has(entry.headers[i]!.toLowerCase())) headers.push(entry.headers[i]!, entry.headers[i + 1]!);
    }
    if (statusHeader !== undefined) headers.push(statusHeader, status);
    writeHead(res, 304, headers);
    res.end();
    return 0;
  } else {
    const range = byteRange(entry, c);
    if (range === 'unsatisfiable') {
      code = 416;
      body = Buffer.alloc(0);
      headers.push('content-range', `bytes */${entry.body.length}`);
    } else if (range !== undefined) {
      code = 206;
      body = entry.body.subarray(range.start, range.end + 1);
      headers.push('content-range', `bytes ${range.start}-${range.end}/${entry.body.length}`);
    }
  }
  if (code === entry.status) {
    for (let i = 0; i < entry.headers.length; i += 2) headers.push(entry.headers[i]!, entry.headers[i + 1]!);
  } else if (code === 206) {
    for (let i = 0; i < entry.headers.length; i += 2) {
      if (!NOT_FOR_206.has(entry.headers[i]!.toLowerCase())) headers.push(entry.headers[i]!, entry.headers[i + 1]!);
    }
  }
  if (code === entry.status) pushLength(headers, entry, body.length);
  else headers.push('content-length', String(body.length));
  if (statusHeader !== undefined) headers.push(statusHeader, status);
  writeHead(res, code, headers);
  if (method === 'HEAD' || code === 204 || code === 304) {
    res.end();
    return 0;
  }
  res.end(body);
  return body.length;
}
