// HTTP grammar the factories validate options against, and the request's host as nginx reads it.
import type { IncomingMessage } from 'node:http';
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
