// HTTP/2 clients behind node:http2's compatibility layer (`http2.createSecureServer({ allowHTTP1 })`,
// `http2.createServer()`, Fastify with `http2: true`): what differs from HTTP/1.1 for the middleware.
// The request's host is `:authority` (see requestHost() in exchange.ts), a body has no framing header,
// and a response may not carry connection-specific fields.
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { constants, Http2ServerResponse } from 'node:http2';

/**
 * Connection-specific fields, which an HTTP/2 message may not carry (RFC 9113 §8.2.2): node's
 * compatibility layer throws ERR_HTTP2_INVALID_CONNECTION_HEADERS when a response has one (and drops
 * Connection with a process warning). `te` is allowed in requests only, as `trailers`.
 */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'te']);

/** True when `res` answers an HTTP/2 client (node:http2's compatibility response). @internal */
export function isHttp2Response(res: ServerResponse): boolean {
  return (res as unknown) instanceof Http2ServerResponse;
}

/**
 * Resets an HTTP/2 response's stream, the HTTP/2 way of closing an HTTP/1.1 connection, which leaves
 * the client's other streams be. With `error` false, called once the answer is ended, RST_STREAM
 * NO_ERROR tells the client to stop sending the request body it is still sending (RFC 9113 §8.1);
 * node sends it after the answer's last DATA frame. With `error` true, INTERNAL_ERROR says no answer
 * will come (nginx's reset for `return 444`). (The compatibility response's own 'finish' comes only
 * once the stream is closed, too late to wait for.)
 * @internal
 */
export function closeHttp2Stream(res: ServerResponse, error = false): void {
  const stream = (res as unknown as Http2ServerResponse).stream;
  if (stream !== undefined && !stream.closed) stream.close(error ? constants.NGHTTP2_INTERNAL_ERROR : constants.NGHTTP2_NO_ERROR);
}

/**
 * True when the whole response was handed over to the connection. `res.writableFinished` alone will
 * not do: node's HTTP/2 compatibility response reports it also when the client reset the stream
 * before the response was ended, so the response must have been ended too (for HTTP/1.x, finished
 * implies ended).
 * @internal
 */
export function responseFinished(res: ServerResponse): boolean {
  return res.writableEnded && res.writableFinished;
}

/**
 * True when an HTTP/2 request has a body: its HEADERS frame did not end the stream. HTTP/2 frames a
 * body with DATA frames, so neither Content-Length nor Transfer-Encoding need be present.
 * @internal
 */
export function http2HasBody(req: IncomingMessage): boolean {
  const stream = (req as IncomingMessage & { stream?: { endAfterHeaders?: boolean } }).stream;
  return stream !== undefined && stream.endAfterHeaders === false;
}

/**
 * Writes the response head, leaving out for an HTTP/2 client the connection-specific fields HTTP/2
 * forbids, whether in `headers` or set earlier with `setHeader()` (by the user's middleware, a
 * framework hook, or an upstream's header list). For HTTP/1.x it is `res.writeHead(status, headers)`.
 * @internal
 */
export function writeHead(res: ServerResponse, status: number, headers?: readonly string[] | OutgoingHttpHeaders): void {
  if (!isHttp2Response(res)) {
    res.writeHead(status, headers as OutgoingHttpHeaders);
    return;
  }
  for (const name of CONNECTION_SPECIFIC) if (res.hasHeader(name)) res.removeHeader(name);
  if (headers === undefined) {
    res.writeHead(status);
  } else if (Array.isArray(headers)) {
    res.writeHead(status, withoutConnectionFields(headers as readonly string[]));
  } else {
    const out: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) if (!CONNECTION_SPECIFIC.has(name.toLowerCase())) out[name] = value;
    res.writeHead(status, out);
  }
}

/** A flat `[name, value, ...]` list without the connection-specific fields. */
function withoutConnectionFields(list: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < list.length; i += 2) if (!CONNECTION_SPECIFIC.has(list[i]!.toLowerCase())) out.push(list[i]!, list[i + 1]!);
  return out;
}
