// HTTP grammar the factories validate options against, and the request's host as nginx reads it.
import type { IncomingMessage } from 'node:http';
import { requestHost } from './exchange.ts';

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
 * nginx's test of a Host header (`ngx_http_validate_host`): a host name or address with an optional
 * port, no `/`, `\`, NUL or control characters, no empty label or `..`. An absent Host is fine.
 * @internal
 */
export function validHost(host: string | undefined): boolean {
  if (host === undefined) return true;
  // Hosts repeat: the verdicts of the last few hundred are kept.
  const known = hostVerdicts.get(host);
  if (known !== undefined) return known;
  let ok: boolean;
  if (host === '' || host.length > 255) ok = false;
  else if (host.startsWith('[')) ok = /^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$/.test(host);
  else ok = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?(?::\d{1,5})?$/.test(host);
  if (hostVerdicts.size >= 512) hostVerdicts.clear();
  hostVerdicts.set(host, ok);
  return ok;
}

const hostVerdicts = new Map<string, boolean>();

/**
 * The name of a `host[:port]` value as nginx's `$host` has it: lowercase, without the port, without
 * a trailing dot (`Example.ORG.:8080` is `example.org`); an IPv6 address keeps its brackets.
 * @internal
 */
export function hostName(host: string): string {
  const lower = host.toLowerCase();
  if (lower.startsWith('[')) {
    const end = lower.indexOf(']');
    return end === -1 ? lower : lower.slice(0, end + 1);
  }
  const colon = lower.indexOf(':');
  const name = colon === -1 ? lower : lower.slice(0, colon);
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

/**
 * The name of the host a request is for ({@link requestHost}: HTTP/2's `:authority`, else the Host
 * header) as nginx's `$host` has it ({@link hostName}); `''` when the request names none (the
 * `$host` variable then falls back to the local address, nginx's server name; rewrite's server
 * blocks match it with `''`, as nginx's `server_name ""`).
 * @internal
 */
export function hostOf(req: IncomingMessage): string {
  const host = requestHost(req);
  return host === undefined || host === '' ? '' : hostName(host);
}
