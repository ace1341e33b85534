import type { IncomingMessage } from 'node:http';
import type { Exchange } from '../core/exchange.ts';
import { hostOf } from '../core/http.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { objectOption } from '../core/options.ts';
import { compileTemplate, type Template } from '../core/variables.ts';
import { PcreSyntaxError, translatePcre } from './pcre.ts';

/**
 * A condition, as nginx's `if`: a string in nginx syntax (`'$request_method = POST'`,
 * `'$http_user_agent ~* bot'`, `'$arg_debug'`, `'$host !~ ^www\\.'`), an object
 * `{ var, op, value }`, a host match `{ host: ['example.org', '*.example.org'] }`
 * (nginx `server_name` rules), or a function of the request.
 */
export type Condition =
  | string
  | {
      /** The variable tested, such as `'$request_method'`. */
      var: string;
      /** The operator; without one, the test is true unless the variable is empty or `'0'`. */
      op?: ConditionOperator | undefined;
      /** What the variable is compared with: a string with variables for `=` and `!=`, a regex for the others. */
      value?: string | undefined;
    }
  | {
      /**
       * Server names the request's host may match, as nginx `server_name`: exact, wildcards
       * (`*.example.org`, `.example.org`, `www.example.*`) or `~` regexes.
       */
      host: string | readonly string[];
    }
  | ((req: IncomingMessage, ex: Exchange) => boolean);

/** Operators of nginx's `if`. */
export type ConditionOperator = '=' | '!=' | '~' | '~*' | '!~' | '!~*';

/** A compiled condition; a regex match sets the exchange's captures. @internal */
export type Test = (ex: Exchange) => boolean;

const OPS = new Set(['=', '!=', '~', '~*', '!~', '!~*']);

/** Compiles a {@link Condition} once. @internal */
export function compileCondition(cond: Condition, where: string): Test {
  if (typeof cond === 'function') return (ex) => cond(ex.req, ex) === true;
  if (typeof cond === 'string') return compileText(cond, where);
  if (cond !== null && typeof cond === 'object') {
    if ('host' in cond) return compileHost(objectOption(cond, where, ['host']).host as string | readonly string[], `${where}.host`);
    if ('var' in cond) {
      objectOption(cond, where, ['var', 'op', 'value']);
      return compileParts(cond.var, cond.op, cond.value, where);
    }
  }
  throw new InvalidOptionError(where, 'a condition: nginx if syntax, { var, op, value }, { host }, or a function', cond);
}

function compileText(text: string, where: string): Test {
  const m = /^\s*(\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)\s*(?:(!?~\*?|!?=)\s*(.*?))?\s*$/s.exec(text);
  if (m === null) throw new InvalidOptionError(where, 'an nginx if condition such as "$request_method = POST" or "$uri ~* \\.php$"', text);
  let value = m[3];
  if (value !== undefined && value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.endsWith(value[0]!)) value = value.slice(1, -1);
  return compileParts(m[1]!, m[2] as ConditionOperator | undefined, value, where);
}

function compileParts(variable: string, op: ConditionOperator | undefined, value: string | undefined, where: string): Test {
  if (typeof variable !== 'string' || !variable.startsWith('$')) throw new InvalidOptionError(`${where}.var`, 'a variable such as "$host"', variable);
  const get = compileTemplate(variable, `${where}.var`);
  if (op === undefined) {
    // nginx: false when empty or "0"
    return (ex) => {
      const v = get(ex);
      return v !== '' && v !== '0';
    };
  }
  if (!OPS.has(op)) throw new InvalidOptionError(`${where}.op`, `one of ${[...OPS].join(' ')}`, op);
  if (typeof value !== 'string') throw new InvalidOptionError(`${where}.value`, 'a string', value);
  if (op === '=' || op === '!=') {
    const expected: Template = compileTemplate(value, `${where}.value`);
    return op === '=' ? (ex) => get(ex) === expected(ex) : (ex) => get(ex) !== expected(ex);
  }
  const negate = op.startsWith('!');
  const re = compileRegex(value, op.endsWith('*'), `${where}.value`);
  return (ex) => {
    const m = re.exec(get(ex));
    if (negate) return m === null;
    if (m === null) return false;
    keepCaptures(ex, m);
    return true;
  };
}

/**
 * Compiles an nginx (PCRE) regex given as text: translated to JavaScript where that is exact (see
 * translatePcre: `\Q…\E`, `(?i)`, `\p{…}`, `(?P<name>…)`…), refused otherwise. A RegExp is used as it is.
 * @internal
 */
export function compileRegex(source: string | RegExp, caseless: boolean, where: string): RegExp {
  if (source instanceof RegExp) {
    // `g` and `y` make exec() stateful (lastIndex): every other request would miss.
    const flags = source.flags.replace(/[gy]/g, '');
    return new RegExp(source.source, caseless && !flags.includes('i') ? `${flags}i` : flags);
  }
  if (typeof source !== 'string' || source === '') throw new InvalidOptionError(where, 'a regular expression', source);
  try {
    return pcreRegex(source, caseless);
  } catch (err) {
    throw new InvalidOptionError(where, `a valid regular expression (${regexError(err)})`, source);
  }
}

/** A PCRE pattern as a JavaScript RegExp; throws PcreSyntaxError or SyntaxError (see {@link regexError}). @internal */
export function pcreRegex(source: string, caseless: boolean): RegExp {
  const translated = translatePcre(source, caseless);
  return new RegExp(translated.source, translated.flags);
}

/** Why {@link pcreRegex} refused a pattern, for a message. @internal */
export function regexError(err: unknown): string {
  if (err instanceof PcreSyntaxError) return `PCRE syntax JavaScript cannot match exactly: ${err.message}`;
  if (err instanceof SyntaxError) return err.message;
  throw err;
}

/**
 * nginx's built-in variables that `set` cannot change ("the duplicate variable" when the
 * configuration loads): its core ones but `$args` and `$limit_rate`, and the upstream ones
 * switchyard has. Prefixed names (`$http_foo`, `$arg_x`, `$cookie_y`) can be set: the set value
 * then reads instead of the request's (`$http_host`, `$http_cookie` and the few other headers nginx
 * names itself cannot).
 */
const READ_ONLY_VARIABLES = new Set(
  (
    'http_host http_user_agent http_referer http_via http_x_forwarded_for http_cookie content_length content_type host ' +
    'binary_remote_addr remote_addr remote_port proxy_protocol_addr proxy_protocol_port proxy_protocol_server_addr ' +
    'proxy_protocol_server_port server_addr server_port server_protocol scheme https request_port is_request_port request_uri ' +
    'uri document_uri request document_root realpath_root query_string is_args request_filename server_name request_method ' +
    'remote_user bytes_sent body_bytes_sent pipe request_completion request_body request_body_file request_length request_time ' +
    'request_id status sent_http_content_type sent_http_content_length sent_http_location sent_http_last_modified ' +
    'sent_http_connection sent_http_keep_alive sent_http_transfer_encoding sent_http_cache_control sent_http_link connection ' +
    'connection_requests connection_time nginx_version hostname pid msec time_iso8601 time_local upstream_addr upstream_status ' +
    'upstream_cache_status'
  ).split(' '),
);

/** Why `set` cannot change a variable (named without `$`, any case), or undefined when it can. @internal */
export function unsettable(name: string): string | undefined {
  const lower = name.toLowerCase();
  if (!READ_ONLY_VARIABLES.has(lower)) return undefined;
  return `a variable "set" can change ("$${lower}" is built in: nginx refuses it as "the duplicate variable")`;
}

/**
 * Records a match's captures on the exchange. Numbered captures are the last match's alone; named
 * ones are variables, as nginx makes them: they stay until a later match names them again (so
 * `location ~ ^/user/(?<uid>\d+)$ { rewrite ^ /users/$uid; }` keeps `$uid`), and that match
 * replaces a `set` of the same name.
 * @internal
 */
export function keepCaptures(ex: Exchange, m: RegExpExecArray): void {
  const next = captures(m);
  const before = ex.captures?.named;
  if (before !== undefined) next.named = next.named === undefined ? before : { ...before, ...next.named };
  if (m.groups !== undefined) for (const name of Object.keys(m.groups)) ex.vars.delete(name);
  ex.captures = next;
}

/** Captures of a match as the exchange keeps them: `$0`…`$9` by index, named groups by name. @internal */
export function captures(m: RegExpExecArray): string[] & { named?: Record<string, string | undefined> } {
  const list = Array.from(m, (v) => v ?? '') as string[] & { named?: Record<string, string | undefined> };
  if (m.groups !== undefined) list.named = m.groups;
  return list;
}

/**
 * How a host matched a list of `server_name`s: `rank` 0 exact, 1 leading wildcard,
 * 2 trailing wildcard, 3 regex; `length` of the wildcard name (longer wins); regex captures.
 * @internal
 */
export interface HostMatch {
  rank: 0 | 1 | 2 | 3;
  length: number;
  captures: ReturnType<typeof captures> | undefined;
}

/**
 * nginx `server_name` matching: exact names, `*.example.org` (leading wildcard),
 * `mail.*` (trailing), `.example.org` (the name and its subdomains), `~regex`.
 * Order: exact, longest leading wildcard, longest trailing wildcard, first regex.
 * @internal
 */
export function compileHost(names: string | readonly string[], where: string): Test {
  const matcher = hostMatcher(names, where);
  return (ex) => {
    const m = matcher(hostOf(ex.req));
    if (m === undefined) return false;
    if (m.captures !== undefined) ex.captures = m.captures;
    return true;
  };
}

/** Returns how well a host matches a list of names (see {@link HostMatch}), or undefined. @internal */
export function hostMatcher(names: string | readonly string[], where: string): (host: string) => HostMatch | undefined {
  const list = typeof names === 'string' ? [names] : names;
  if (!Array.isArray(list) || list.length === 0) throw new InvalidOptionError(where, 'a host name or a non-empty list of them', names);
  const exact = new Set<string>();
  // `.example.org` also matches `example.org` itself, with a wildcard's rank (nginx keeps it in the wildcard hash).
  const leading: Array<{ suffix: string; bare: string | undefined }> = [];
  const trailing: string[] = [];
  const regexes: RegExp[] = [];
  for (const [i, raw] of list.entries()) {
    if (typeof raw !== 'string') throw new InvalidOptionError(`${where}[${i}]`, 'a host name', raw);
    const name = raw.toLowerCase();
    if (name.startsWith('~')) regexes.push(compileRegex(raw.slice(1), true, `${where}[${i}]`));
    else if (name.startsWith('*.')) leading.push({ suffix: name.slice(1), bare: undefined });
    else if (name.startsWith('.')) leading.push({ suffix: name, bare: name.slice(1) });
    else if (name.endsWith('.*')) trailing.push(name.slice(0, -1));
    else if (name.includes('*'))
      throw new InvalidOptionError(`${where}[${i}]`, 'a wildcard only at the start ("*.example.org") or the end ("www.example.*")', raw);
    else exact.add(name);
  }
  return (host) => {
    if (exact.has(host)) return { rank: 0, length: host.length, captures: undefined };
    let best = -1;
    for (const { suffix, bare } of leading) {
      if (suffix.length > best && ((host.endsWith(suffix) && host.length > suffix.length) || host === bare)) best = suffix.length;
    }
    if (best !== -1) return { rank: 1, length: best, captures: undefined };
    for (const prefix of trailing) if (prefix.length > best && host.startsWith(prefix) && host.length > prefix.length) best = prefix.length;
    if (best !== -1) return { rank: 2, length: best, captures: undefined };
    for (const re of regexes) {
      const m = re.exec(host);
      if (m !== null) return { rank: 3, length: 0, captures: captures(m) };
    }
    return undefined;
  };
}
