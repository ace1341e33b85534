// HTTP grammar the factories validate options against, the request's host as nginx reads it, and
// writeHead()'s headers as a flat list (for the middlewares that watch a response's head).
import type { IncomingMessage, OutgoingHttpHeader, OutgoingHttpHeaders } from 'node:http';
import { requestHost } from './exchange.ts';
import { hostName } from './host.ts';

export { hostName, validHost } from './host.ts';

/**
 * The conditions nginx's `proxy_next_upstream` and `proxy_cache_use_stale` share: a failed attempt
 * and the upstream statuses that may move on (or serve stale).
 * @internal
 */
export const UPSTREAM_FAILURE_CONDITIONS = Object.freeze([
  'error',
  'timeout',
  'invalid_header',
  'http_500',
  'http_502',
  'http_503',
  'http_504',
  'http_403',
  'http_404',
  'http_429',
] as const);

/** RFC 9110 `token`: header names, methods, cookie names. */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The name of the host a request is for ({@link requestHost}: HTTP/2's `:authority`, an HTTP/1.x
 * absolute-form target's host, else the Host header) as nginx's `$host` has it ({@link hostName});
 * `''` when the request names none (the `$host` variable then falls back to the local address,
 * nginx's server name; rewrite's server blocks match it with `''`, as nginx's `server_name ""`).
 * @internal
 */
export function hostOf(req: IncomingMessage): string {
  const host = requestHost(req);
  return host === undefined || host === '' ? '' : hostName(host);
}

/**
 * Adds a header's value (or each of its values) to a flat `[name, value, ...]` list; nothing for
 * `undefined`.
 * @internal
 */
export function pushHeader(out: string[], name: string, value: OutgoingHttpHeader | undefined): void {
  if (value === undefined) return;
  if (Array.isArray(value)) for (const v of value) out.push(name, String(v));
  else out.push(name, String(value));
}

/**
 * writeHead()'s `headers` argument (an object, a flat array or an array of pairs) as a flat
 * `[name, value, ...]` list, a header with several values once for each; `[]` for anything else.
 * @internal
 */
export function flattenHeaders(headers: unknown): string[] {
  const out: string[] = [];
  if (headers === undefined || headers === null || typeof headers !== 'object') return out;
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) {
      for (const pair of headers as Array<[string, OutgoingHttpHeader]>) pushHeader(out, String(pair[0]), pair[1]);
    } else {
      for (let i = 0; i + 1 < headers.length; i += 2) pushHeader(out, String(headers[i]), headers[i + 1] as OutgoingHttpHeader);
    }
    return out;
  }
  for (const [name, value] of Object.entries(headers as OutgoingHttpHeaders)) pushHeader(out, name, value);
  return out;
}
