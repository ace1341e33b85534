// The grammar of a request's host (`host[:port]`), as nginx reads it: which hosts are refused with
// 400, and the name `$host` gets from one. No imports, so that exchange.ts and http.ts share it.

/** A reg-name with an optional port: RFC 3986 unreserved, sub-delims and `%`, as nginx 1.29.4+ allows. */
const REG_NAME = /^([A-Za-z0-9._~!$&'()*+,;=%-]*)(?::(\d*))?$/;
/** An IP literal (`[::1]`, `[v1.x]`) with an optional port. */
const IP_LITERAL = /^(\[[A-Za-z0-9._~!$&'()*+,;=:-]*\])(?::(\d*))?$/;

/**
 * nginx's test of a host, in a Host header, HTTP/2's `:authority` or an absolute-form request target
 * (`ngx_http_validate_host` as of nginx 1.29.4): a name of letters, digits, `-._~`, sub-delims and
 * `%`, or a bracketed IP literal, with an optional port of digits up to 65535 (`a.test:` too). Never
 * `/`, `\`, `@`, spaces or control characters, no `..`, and not empty once one trailing dot is dropped
 * (`''`, `.` and `..` are refused). Underscores and uppercase letters are fine. An absent host
 * (`undefined`) is fine: whether one is required is the HTTP version's business.
 * @internal
 */
export function validHost(host: string | undefined): boolean {
  if (host === undefined) return true;
  // Hosts repeat: the verdicts of the last few hundred are kept.
  const known = hostVerdicts.get(host);
  if (known !== undefined) return known;
  const m = host.charCodeAt(0) === 91 /* [ */ ? IP_LITERAL.exec(host) : REG_NAME.exec(host);
  const name = m?.[1];
  const port = m?.[2];
  const ok =
    name !== undefined &&
    !name.includes('..') &&
    name !== '' &&
    name !== '.' &&
    // (Leading zeros are fine, as nginx reads the digits: `:0080` is 80.)
    (port === undefined || Number(port) <= 65535);
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
