// Watching a response as the rest of the chain writes it, whatever writes it (balance(), a local
// handler, a framework's error handler): the cache sees the status and headers before they leave,
// may add its status header, may answer with a stale entry instead, and sees every body byte.
import type { IncomingMessage, OutgoingHttpHeader, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Socket } from 'node:net';

/** What the cache decides when the handler's response begins. */
export type HeadDecision =
  /** Let the response through, adding `[name, value]` to its headers when given. */
  | { readonly pass: true; readonly add?: readonly [string, string] | undefined }
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
  /** The handler destroyed the response while detached (its output is incomplete). */
  abort(): void;
}

/** What the handler may read of the client's connection once detached (the client's address for X-Forwarded-For). */
export type ConnectionFacts = Readonly<Record<(typeof CONNECTION_FACTS)[number], unknown>>;

const CONNECTION_FACTS = ['remoteAddress', 'remotePort', 'remoteFamily', 'localAddress', 'localPort'] as const;

/**
 * Reads the request's connection facts now: an HTTP/2 request's socket is out of reach once its
 * stream is closed, which is when a background update starts.
 */
export function connectionFacts(req: IncomingMessage): ConnectionFacts {
  const real = req.socket as Socket | undefined;
  const out: Record<string, unknown> = {};
  for (const key of CONNECTION_FACTS) out[key] = real?.[key];
  return out as ConnectionFacts;
}

/** The response's own methods, for the cache to answer with. */
export interface Interception {
  /**
   * Switches to capture-only: the client has its answer, the handler's output only feeds the cache.
   * The handler sees `facts` (read while the response was going) as the request's connection.
   */
  detach(facts: ConnectionFacts): void;
  /** Whether the handler's response began. */
  readonly started: boolean;
}

type Callback = (err?: Error | null) => void;

function toBuffer(chunk: unknown, encoding: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.alloc(0);
}

function pushHeader(out: string[], name: string, value: OutgoingHttpHeader | undefined): void {
  if (value === undefined) return;
  if (Array.isArray(value)) for (const v of value) out.push(name, String(v));
  else out.push(name, String(value));
}

/** Flattens the `headers` argument of writeHead (object, flat array or array of pairs). */
function flatten(headers: unknown): string[] {
  const out: string[] = [];
  if (headers === undefined || headers === null) return out;
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) {
      for (const pair of headers as Array<[string, OutgoingHttpHeader]>) pushHeader(out, String(pair[0]), pair[1]);
    } else {
      for (let i = 0; i + 1 < headers.length; i += 2) pushHeader(out, String(headers[i]), headers[i + 1] as OutgoingHttpHeader);
    }
    return out;
  }
  if (typeof headers === 'object') {
    for (const [name, value] of Object.entries(headers as OutgoingHttpHeaders)) pushHeader(out, name, value);
  }
  return out;
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

/**
 * Installs the interception on `res` (own properties shadowing the prototype's methods, as
 * compression middleware does). Node's implicit headers (`write`/`end` without `writeHead`) come
 * through the same path.
 */
export function intercept(res: ServerResponse, hooks: InterceptHooks, request: IncomingMessage): Interception {
  // The methods as they are now: a wrapper an earlier middleware installed (on-headers,
  // compression) keeps working.
  const realWriteHead = res.writeHead;
  const realWrite = res.write;
  const realEnd = res.end;
  let started = false;
  let pass = true;
  let detached = false;
  let ended = false;
  // The handler's own headers once detached (the real ones went out with the cache's answer).
  const shadow = new Map<string, { name: string; value: OutgoingHttpHeader }>();

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
    if (detached) {
      for (const { name, value } of shadow.values()) pushHeader(all, name, value);
    } else {
      for (const name of res.getHeaderNames()) pushHeader(all, name, res.getHeader(name));
    }
    const given = flatten(headers);
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
    if (detached || !decision.pass) {
      pass = false;
      return res;
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

  return {
    get started() {
      return started;
    },
    detach(facts: ConnectionFacts): void {
      detached = true;
      // The client's socket carries its next request by now: nothing the handler does may touch it.
      // (The request is passed in: `res.req` is not there on node:http2's compatibility response.)
      const spare = new Socket();
      for (const key of CONNECTION_FACTS) Object.defineProperty(spare, key, { configurable: true, value: facts[key] });
      Object.defineProperty(request, 'socket', { configurable: true, writable: true, value: spare });
      Object.defineProperty(request, 'connection', { configurable: true, writable: true, value: spare });
      pass = false;
      started = false;
      ended = false;
      // The handler must see a response it can still write: its own header store and state.
      own.setHeader = (name: string, value: OutgoingHttpHeader) => {
        shadow.set(name.toLowerCase(), { name, value });
        return res;
      };
      own.appendHeader = (name: string, value: OutgoingHttpHeader) => {
        const old = shadow.get(name.toLowerCase());
        const values = old === undefined ? [] : Array.isArray(old.value) ? old.value : [old.value];
        shadow.set(name.toLowerCase(), { name, value: [...values.map(String), ...(Array.isArray(value) ? value.map(String) : [String(value)])] });
        return res;
      };
      own.getHeader = (name: string) => shadow.get(name.toLowerCase())?.value;
      own.getHeaders = () => {
        const out: OutgoingHttpHeaders = Object.create(null) as OutgoingHttpHeaders;
        for (const [k, { value }] of shadow) out[k] = value;
        return out;
      };
      own.getHeaderNames = () => [...shadow.keys()];
      own.hasHeader = (name: string) => shadow.has(name.toLowerCase());
      own.removeHeader = (name: string) => {
        shadow.delete(name.toLowerCase());
      };
      own.flushHeaders = () => begin();
      let destroyed = false;
      own.destroy = () => {
        if (!destroyed) {
          destroyed = true;
          hooks.abort();
        }
        return res;
      };
      Object.defineProperty(res, 'destroyed', { configurable: true, get: () => destroyed });
      Object.defineProperty(res, 'headersSent', { configurable: true, get: () => started });
      Object.defineProperty(res, 'writableEnded', { configurable: true, get: () => ended });
      Object.defineProperty(res, 'finished', { configurable: true, get: () => ended });
    },
  };
}
