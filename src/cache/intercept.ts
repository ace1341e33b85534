// Watching a response as the rest of the chain writes it, whatever writes it (balance(), a local
// handler, a framework's error handler): the cache sees the status and headers before they leave,
// may add its status header, may answer with a stale entry instead, and sees every body byte.
// (A background update, whose client has its answer already, writes to a DetachedResponse instead.)
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { flattenHeaders, pushHeader } from '../core/http.ts';

/** What the cache decides when the handler's response begins. */
export type HeadDecision =
  /**
   * Let the response through, adding `[name, value]` to its headers when given and without the
   * header `drop` (lowercase) when given.
   */
  | { readonly pass: true; readonly add?: readonly [string, string] | undefined; readonly drop?: string | undefined }
  /** Drop the handler's response: the cache has answered the client itself. */
  | { readonly pass: false };

/** The cache's side of an interception. */
export interface InterceptHooks {
  /** The handler's status and complete header list (flat name/value pairs, setHeader()'s included). */
  head(status: number, headers: string[]): HeadDecision;
  /** A body chunk the handler wrote (also when dropped). */
  data(chunk: Buffer): void;
  /** The handler ended its response. */
  end(): void;
  /** The handler destroyed a background update's response (its output is incomplete). */
  abort(): void;
}

type Callback = (err?: Error | null) => void;

/** A chunk as `write` and `end` take it, as bytes. */
export function toBuffer(chunk: unknown, encoding: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.alloc(0);
}

/** Adds one header to writeHead's `headers` argument, whatever its form. */
function withHeader(headers: unknown, name: string, value: string): unknown {
  if (headers === undefined || headers === null) return [name, value];
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) return [...(headers as unknown[]), [name, value]];
    return [...(headers as unknown[]), name, value];
  }
  return { ...(headers as OutgoingHttpHeaders), [name]: value };
}

/** writeHead's `headers` argument, whatever its form, without the header `name` (lowercase). */
function withoutHeader(headers: unknown, name: string): unknown {
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) return (headers as Array<[string, unknown]>).filter((pair) => String(pair[0]).toLowerCase() !== name);
    const out: unknown[] = [];
    for (let i = 0; i + 1 < headers.length; i += 2) if (String(headers[i]).toLowerCase() !== name) out.push(headers[i], headers[i + 1]);
    return out;
  }
  if (typeof headers === 'object' && headers !== null) {
    const out: OutgoingHttpHeaders = {};
    for (const [n, v] of Object.entries(headers as OutgoingHttpHeaders)) if (n.toLowerCase() !== name) out[n] = v;
    return out;
  }
  return headers;
}

/** Whether the flat name/value list `all` has the header `name` (lowercase). */
function hasHeader(all: readonly string[], name: string): boolean {
  for (let i = 0; i < all.length; i += 2) if (all[i]!.toLowerCase() === name) return true;
  return false;
}

/**
 * Installs the interception on `res` (own properties shadowing the prototype's methods, as
 * compression middleware does). Node's implicit headers (`write`/`end` without `writeHead`) come
 * through the same path.
 */
export function intercept(res: ServerResponse, hooks: InterceptHooks): void {
  // The methods as they are now: a wrapper an earlier middleware installed (on-headers,
  // compression) keeps working.
  const realWriteHead = res.writeHead;
  const realWrite = res.write;
  const realEnd = res.end;
  let started = false;
  let pass = true;
  let ended = false;

  const own = res as unknown as Record<string, unknown>;

  function writeHead(this: ServerResponse, status: number, reasonOrHeaders?: unknown, maybeHeaders?: unknown): ServerResponse {
    if (started) {
      if (pass) return (realWriteHead as (...a: unknown[]) => ServerResponse).call(res, status, reasonOrHeaders, maybeHeaders);
      return res;
    }
    started = true;
    const reason = typeof reasonOrHeaders === 'string' ? reasonOrHeaders : undefined;
    let headers = reason === undefined ? reasonOrHeaders : maybeHeaders;
    const all: string[] = [];
    for (const name of res.getHeaderNames()) pushHeader(all, name, res.getHeader(name));
    const given = flattenHeaders(headers);
    if (given.length > 0) {
      // writeHead's headers replace setHeader()'s of the same name.
      const names = new Set<string>();
      for (let i = 0; i < given.length; i += 2) names.add(given[i]!.toLowerCase());
      const kept: string[] = [];
      for (let i = 0; i < all.length; i += 2) if (!names.has(all[i]!.toLowerCase())) kept.push(all[i]!, all[i + 1]!);
      all.length = 0;
      all.push(...kept, ...given);
    }
    const decision = hooks.head(status, all);
    if (!decision.pass) {
      pass = false;
      return res;
    }
    if (decision.drop !== undefined && hasHeader(all, decision.drop)) {
      res.removeHeader(decision.drop);
      headers = withoutHeader(headers, decision.drop);
    }
    if (decision.add !== undefined) {
      if (headers === undefined || headers === null) res.setHeader(decision.add[0], decision.add[1]);
      else headers = withHeader(headers, decision.add[0], decision.add[1]);
    }
    if (reason !== undefined) return (realWriteHead as (...a: unknown[]) => ServerResponse).call(res, status, reason, headers);
    return (realWriteHead as (...a: unknown[]) => ServerResponse).call(res, status, headers);
  }

  function begin(): void {
    if (!started) writeHead.call(res, res.statusCode);
  }

  function write(this: ServerResponse, chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
    begin();
    hooks.data(toBuffer(chunk, encoding));
    if (pass) return (realWrite as (...a: unknown[]) => boolean).call(res, chunk, encoding, cb);
    const callback = typeof encoding === 'function' ? encoding : cb;
    if (typeof callback === 'function') process.nextTick(callback as Callback);
    return true;
  }

  function end(this: ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown): ServerResponse {
    if (ended) {
      if (pass) return (realEnd as (...a: unknown[]) => ServerResponse).call(res, chunk, encoding, cb);
      const late = typeof chunk === 'function' ? chunk : typeof encoding === 'function' ? encoding : cb;
      if (typeof late === 'function') process.nextTick(late as Callback);
      return res;
    }
    begin();
    ended = true;
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') hooks.data(toBuffer(chunk, encoding));
    hooks.end();
    if (pass) return (realEnd as (...a: unknown[]) => ServerResponse).call(res, chunk, encoding, cb);
    const callback = typeof chunk === 'function' ? chunk : typeof encoding === 'function' ? encoding : cb;
    if (typeof callback === 'function') process.nextTick(callback as Callback);
    return res;
  }

  own.writeHead = writeHead;
  own.write = write;
  own.end = end;
}
