import { requestHost, type Exchange } from './exchange.ts';
import { InvalidOptionError } from './errors.ts';
import { hostName, hostOf } from './http.ts';

/** A compiled template: evaluates nginx variables against a request's exchange record. */
export type Template = (ex: Exchange) => string;

type Getter = (ex: Exchange) => string;

const VAR = /\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*|[0-9]))/g;

/**
 * Compiles a string with nginx variables (`$uri`, `${host}`, `$arg_id`,
 * `$http_x_user`, `$cookie_sid`, `$1`) once; the result evaluates it per request.
 * Unknown names read variables set by rewrite()'s `set`, and are empty when unset.
 * `filter`, when given, wraps each variable's getter, given the variable's name (without `$`):
 * rewrite() uses it to percent-encode decoded values put into query arguments.
 * @example
 * ```ts
 * const key = compileTemplate('$scheme$host$request_uri', 'key');
 * key(exchange(req)); // 'http://example.com/a?b=1' without the separators
 * ```
 */
export function compileTemplate(text: string, option: string, filter?: (name: string, get: Template) => Template): Template {
  if (typeof text !== 'string') throw new InvalidOptionError(option, 'a string with nginx variables', text);
  const parts: Array<string | Getter> = [];
  let last = 0;
  VAR.lastIndex = 0;
  for (let m = VAR.exec(text); m !== null; m = VAR.exec(text)) {
    if (m.index > last) parts.push(text.slice(last, m.index));
    const name = (m[1] ?? m[2])!;
    parts.push(filter === undefined ? variable(name) : filter(name, variable(name)));
    last = VAR.lastIndex;
  }
  if (last < text.length) parts.push(text.slice(last));
  if (parts.length === 0) return () => '';
  if (parts.length === 1) {
    const only = parts[0]!;
    return typeof only === 'string' ? () => only : only;
  }
  return (ex) => {
    let out = '';
    for (const p of parts) out += typeof p === 'string' ? p : p(ex);
    return out;
  };
}

/** True when the template contains at least one variable. */
export function hasVariables(text: string): boolean {
  VAR.lastIndex = 0;
  return VAR.test(text);
}

/** Returns the getter of one nginx variable by name (without `$`). */
export function variable(name: string): Getter {
  if (/^[0-9]$/.test(name)) {
    const i = Number(name);
    return (ex) => ex.captures?.[i] ?? '';
  }
  const fixed = FIXED[name];
  if (fixed !== undefined) return fixed;
  const lower = name.toLowerCase();
  // A value rewrite()'s `set` gave `$http_NAME`, `$arg_NAME` or `$cookie_NAME` is read instead of the request's (nginx).
  if (lower.startsWith('http_')) {
    const header = lower.slice(5).replace(/_/g, '-');
    return (ex) => ex.vars.get(name) ?? headerValue(ex, header);
  }
  // Argument and cookie names match case-insensitively, the first in the request winning (nginx).
  if (lower.startsWith('arg_')) {
    const arg = lower.slice(4);
    return (ex) => ex.vars.get(name) ?? caseless(args(ex), arg);
  }
  if (lower.startsWith('cookie_')) {
    const cookie = lower.slice(7);
    return (ex) => ex.vars.get(name) ?? caseless(cookies(ex), cookie);
  }
  return (ex) => ex.vars.get(name) ?? ex.captures?.named?.[name] ?? '';
}

/** The value of the first name in `map` (in the request's order) equal to `lower` in any case, or ''. */
function caseless(map: Map<string, string>, lower: string): string {
  const exact = map.get(lower);
  if (exact !== undefined && map.size === 1) return exact;
  for (const [key, value] of map) if (key.length === lower.length && key.toLowerCase() === lower) return value;
  return '';
}

function headerValue(ex: Exchange, header: string): string {
  // `$http_host` of an HTTP/2 request is its `:authority`, as nginx makes a Host header of it.
  if (header === 'host') return requestHost(ex.req) ?? '';
  const v = ex.req.headers[header];
  if (v === undefined) return '';
  if (Array.isArray(v)) return v.join(header === 'cookie' ? '; ' : ', ');
  return v;
}

/**
 * `$host`: a trusted proxy's X-Forwarded-Host when one was resolved (cache()'s `trustProxy`), else
 * the request's ({@link hostOf}: lowercase, no port, no trailing dot), else the local address (nginx:
 * the server's name).
 */
function host(ex: Exchange): string {
  if (ex.forwardedHost !== undefined) return hostName(ex.forwardedHost);
  return hostOf(ex.req) || (ex.req.socket?.localAddress ?? '');
}

const FIXED: Record<string, Getter> = {
  uri: (ex) => ex.uri,
  document_uri: (ex) => ex.uri,
  request_uri: (ex) => ex.requestUri,
  args: (ex) => ex.args,
  query_string: (ex) => ex.args,
  is_args: (ex) => (ex.args === '' ? '' : '?'),
  host,
  scheme: (ex) => ex.scheme,
  https: (ex) => (ex.scheme === 'https' ? 'on' : ''),
  remote_addr: (ex) => ex.clientAddress,
  binary_remote_addr: (ex) => ex.clientAddress,
  remote_port: (ex) => String(ex.req.socket?.remotePort ?? ''),
  server_addr: (ex) => ex.req.socket?.localAddress ?? '',
  server_port: (ex) => String(ex.req.socket?.localPort ?? ''),
  request_method: (ex) => ex.req.method ?? '',
  server_protocol: (ex) => `HTTP/${ex.req.httpVersion}`,
  content_type: (ex) => headerValue(ex, 'content-type'),
  content_length: (ex) => headerValue(ex, 'content-length'),
  upstream_addr: (ex) => ex.upstreamAddr.join(', '),
  upstream_status: (ex) => ex.upstreamStatus.join(', '),
  upstream_cache_status: (ex) => ex.cacheStatus ?? '',
};

/** The request's query arguments, parsed once (first value of each name wins, as nginx's `$arg_`). */
export function args(ex: Exchange): Map<string, string> {
  if (ex.argMap !== undefined) return ex.argMap;
  const map = new Map<string, string>();
  if (ex.args !== '') {
    for (const pair of ex.args.split('&')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      const name = eq === -1 ? pair : pair.slice(0, eq);
      if (!map.has(name)) map.set(name, eq === -1 ? '' : pair.slice(eq + 1));
    }
  }
  ex.argMap = map;
  return map;
}

/** The request's cookies, parsed once (first occurrence of a name wins, as nginx's `$cookie_`). */
export function cookies(ex: Exchange): Map<string, string> {
  if (ex.cookies !== undefined) return ex.cookies;
  const map = new Map<string, string>();
  const header = headerValue(ex, 'cookie');
  let start = 0;
  while (start < header.length) {
    let end = header.indexOf(';', start);
    if (end === -1) end = header.length;
    const eq = header.indexOf('=', start);
    if (eq !== -1 && eq < end) {
      const name = header.slice(start, eq).trim();
      if (name !== '' && !map.has(name)) map.set(name, header.slice(eq + 1, end).trim());
    }
    start = end + 1;
  }
  ex.cookies = map;
  return map;
}
