import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { BodyConsumedError, UnsupportedTransferCodingError } from '../core/errors.ts';
import type { Exchange } from '../core/exchange.ts';
import { http2HasBody } from '../core/http2.ts';

/**
 * The request body on its way upstream. It streams: nothing is read from the
 * client until an upstream connection is ready (undici reads an attempt's body
 * once it writes the request on a connection). Bytes already forwarded are
 * kept (up to a limit) so the body can be replayed to the next server when an
 * attempt fails; past the limit the body is no longer replayable and, as with
 * nginx's unbuffered bodies, a request already sent is not retried.
 * @internal
 */
export interface RequestBody {
  /** Framing header pairs for the upstream request (`content-length` or `transfer-encoding`), last in its header list. */
  readonly framing: readonly string[];
  /** True when {@link framing} is `transfer-encoding: chunked`, which undici writes itself (it is not dispatched). */
  readonly chunked: boolean;
  /** True while every byte forwarded so far can be sent again. */
  readonly replayable: boolean;
  /** Bytes forwarded to the current attempt. */
  readonly sentBytes: number;
  /**
   * The body of a new attempt, for undici's dispatch: none, the bytes, or a source that reads from
   * the client once undici reads it: a stream, or for an HTTP/2 upstream (`multiplexed`) an iterable
   * of chunks (undici does not put a request whose body is a stream on a connection that carries
   * others).
   */
  source(multiplexed: boolean): Buffer | Readable | Iterable<Promise<Buffer>> | null;
  /** Stops sending to the current attempt (it failed, or its answer came early). */
  detach(): void;
  /** Releases listeners on the client request. */
  dispose(): void;
}

function hasBody(req: IncomingMessage): boolean {
  const te = req.headers['transfer-encoding'];
  if (te !== undefined) return true;
  const cl = req.headers['content-length'];
  if (cl !== undefined) return cl !== '0';
  // HTTP/2 frames a body with DATA frames, with or without a Content-Length.
  return http2HasBody(req);
}

const NO_BODY: RequestBody = {
  framing: [],
  chunked: false,
  replayable: true,
  sentBytes: 0,
  source() {
    return null;
  },
  detach() {},
  dispose() {},
};

/**
 * Chooses how the body travels: none, a parsed body re-serialized (the stream
 * was consumed by a body parser), or the live stream. Throws
 * UnsupportedTransferCodingError (501) for a body in a transfer coding other
 * than chunked alone.
 * @internal
 */
export function requestBody(ex: Exchange, replayLimit: number): RequestBody {
  const req = ex.req;
  // Node's parser decodes only the final chunked coding: any other would be sent on
  // undecoded but unlabelled. nginx refuses it with 501 (RFC 9112 §6.1).
  const te = req.headers['transfer-encoding'];
  if (te !== undefined && te.trim().toLowerCase() !== 'chunked') throw new UnsupportedTransferCodingError(te);
  if (!hasBody(req)) {
    // A POST without a body still states its length, as nginx sends it.
    return req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH' ? fixedBody(Buffer.alloc(0)) : NO_BODY;
  }
  const consumed = req.readableEnded || req.readableDidRead;
  if (!consumed) return new StreamBody(req, replayLimit);
  // ex.parsedBody comes from a framework's parser (Fastify, Koa): a string there is a
  // parsed JSON string. req.body (Express) holds raw text when a text parser read it.
  if (ex.parsedBody !== undefined) return fixedBody(serialize(ex.parsedBody, req, true));
  return fixedBody(serialize((req as IncomingMessage & { body?: unknown }).body, req, false));
}

function serialize(body: unknown, req: IncomingMessage, parsed: boolean): Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const type = String(req.headers['content-type'] ?? '').toLowerCase();
  // A JSON parser may hand back any JSON value ("text", 42, true, null): re-encode it as JSON.
  if (body !== undefined && /[/+]json\b/.test(type) && (parsed || typeof body !== 'string')) return Buffer.from(JSON.stringify(body));
  if (typeof body === 'string') return Buffer.from(body);
  if (body !== undefined && body !== null && typeof body === 'object') {
    if (type.startsWith('application/x-www-form-urlencoded')) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
        if (Array.isArray(v)) for (const item of v) params.append(k, String(item));
        else if (v !== undefined) params.append(k, typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v));
      }
      return Buffer.from(params.toString());
    }
  }
  throw new BodyConsumedError(
    'The request body was consumed by a body parser before switchyard could forward it, ' +
      'and no re-sendable req.body was left (a Buffer, a string, or JSON / urlencoded data)',
  );
}

function fixedBody(buf: Buffer): RequestBody {
  return {
    framing: ['content-length', String(buf.length)],
    chunked: false,
    replayable: true,
    sentBytes: buf.length,
    source() {
      return buf.length === 0 ? null : buf;
    },
    detach() {},
    dispose() {},
  };
}

/** Buffered bytes of an attempt's body stream before the client is paused. */
const ATTEMPT_BODY_BUFFER = 64 * 1024;

/** Where a streamed body's bytes go for one attempt: what both kinds of attempt body take. */
interface BodySink {
  /** A chunk, or null at the end; false when the client should wait (the sink holds enough). */
  push(chunk: Buffer | null): boolean;
  readonly destroyed: boolean;
}

const EMPTY = Buffer.alloc(0);

/**
 * One attempt's body for an HTTP/2 upstream: a (synchronous) iterable of promised chunks, which
 * undici's `for await` reads one after the other. undici multiplexes a request with such a body
 * (not one with a stream: it waits for the connection's other requests to end first). Its first
 * read attaches it to the client's body as {@link AttemptBody}'s does; once detached (the attempt
 * failed) it ends, so undici's loop over it does too.
 */
class PulledBody implements BodySink, Iterable<Promise<Buffer>> {
  readonly #owner: StreamBody;
  #chunks: Buffer[] = [];
  #ended = false;
  #waiting: ((chunk: Buffer) => void) | undefined;
  destroyed = false;

  constructor(owner: StreamBody) {
    this.#owner = owner;
  }

  push(chunk: Buffer | null): boolean {
    if (this.destroyed) return false;
    if (chunk === null) this.#ended = true;
    const waiting = this.#waiting;
    if (waiting !== undefined) {
      this.#waiting = undefined;
      waiting(chunk ?? EMPTY);
      return true;
    }
    if (chunk !== null) this.#chunks.push(chunk);
    return false;
  }

  /** The attempt is over: undici's loop ends at its next read. */
  end(): void {
    this.destroyed = true;
    this.#ended = true;
    this.#chunks = [];
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.(EMPTY);
  }

  [Symbol.iterator](): Iterator<Promise<Buffer>> {
    return {
      next: (): IteratorResult<Promise<Buffer>> => {
        const chunk = this.#chunks.shift();
        if (chunk !== undefined) return { done: false, value: Promise.resolve(chunk) };
        if (this.#ended) return { done: true, value: undefined };
        const value = new Promise<Buffer>((resolve) => {
          this.#waiting = resolve;
        });
        this.#owner.pull(this);
        return { done: false, value };
      },
    };
  }
}

/**
 * One attempt's body: a stream undici reads when it writes the request. Its first read attaches it
 * to the client's body (the bytes kept for a replay first, then the live ones); destroyed (the
 * attempt failed, undici is done with it), it lets go of the client's body without touching it.
 */
class AttemptBody extends Readable implements BodySink {
  readonly #owner: StreamBody;

  constructor(owner: StreamBody) {
    super({ highWaterMark: ATTEMPT_BODY_BUFFER });
    this.#owner = owner;
  }

  override _read(): void {
    this.#owner.pull(this);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#owner.release(this);
    callback(err);
  }
}

class StreamBody implements RequestBody {
  readonly framing: readonly string[];
  readonly chunked: boolean;
  replayable = true;
  sentBytes = 0;
  #req: IncomingMessage;
  #limit: number;
  #kept: Buffer[] = [];
  #keptBytes = 0;
  #ended = false;
  /** The attempt's body being fed, once undici started reading it. */
  #sink: BodySink | undefined;
  #onData = (chunk: Buffer): void => {
    if (this.replayable) {
      if (this.#keptBytes + chunk.length <= this.#limit) {
        this.#kept.push(chunk);
        this.#keptBytes += chunk.length;
      } else {
        this.replayable = false;
        this.#kept = [];
        this.#keptBytes = 0;
      }
    }
    const sink = this.#sink;
    if (sink === undefined) return;
    this.sentBytes += chunk.length;
    if (!sink.push(chunk)) this.#req.pause();
  };
  #onEnd = (): void => {
    this.#ended = true;
    this.#sink?.push(null);
  };

  constructor(req: IncomingMessage, limit: number) {
    this.#req = req;
    this.#limit = limit;
    const cl = req.headers['content-length'];
    // Node's parser guarantees the body matches the framing it accepted; the
    // upstream gets the same length, or chunked when the client sent chunked,
    // whatever the method, so one client request is one upstream request.
    this.chunked = req.headers['transfer-encoding'] !== undefined || cl === undefined;
    this.framing = this.chunked ? ['transfer-encoding', 'chunked'] : ['content-length', cl!];
    req.on('data', this.#onData);
    req.on('end', this.#onEnd);
    req.pause();
  }

  source(multiplexed: boolean): Readable | Iterable<Promise<Buffer>> {
    this.detach();
    return multiplexed ? new PulledBody(this) : new AttemptBody(this);
  }

  /** undici reads `sink`: the first read attaches it (replaying what was kept), later ones resume the client. */
  pull(sink: BodySink): void {
    if (this.#sink === sink) {
      if (!this.#ended) this.#req.resume();
      return;
    }
    if (sink.destroyed) return;
    this.#sink = sink;
    this.sentBytes = 0;
    for (const chunk of this.#kept) {
      this.sentBytes += chunk.length;
      sink.push(chunk);
    }
    if (!this.#ended) this.#req.resume();
    // Ended a moment later, not within this read: undici would take a body that ended as it first
    // read it for one of known length, and send a chunked body with a Content-Length.
    else queueMicrotask(() => sink.push(null));
  }

  /** `sink` is destroyed: it is no longer fed. */
  release(sink: BodySink): void {
    if (this.#sink === sink) this.detach();
  }

  detach(): void {
    const sink = this.#sink;
    this.#sink = undefined;
    if (sink instanceof PulledBody) sink.end();
    if (!this.#ended) this.#req.pause();
  }

  dispose(): void {
    this.detach();
    this.#req.off('data', this.#onData);
    this.#req.off('end', this.#onEnd);
    this.#kept = [];
    // Done with the body (answered early, or failed): what the client still sends is
    // read and dropped, as node does with a body nobody reads, so that its keep-alive
    // connection is not left stuck mid-body.
    if (!this.#ended) this.#req.resume();
  }
}
