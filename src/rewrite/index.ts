import type { IncomingMessage, ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import { compile as compilePath, match as matchPath } from 'path-to-regexp';
import type { Middleware, Next } from '../core/chain.ts';
import { BadRequestError, InvalidOptionError, ReturnStatusError, RewriteCycleError, RewriteEmptyError, type SwitchyardError } from '../core/errors.ts';
import { booleanOption, objectOption, unknownOption } from '../core/options.ts';
import { encodePath, exchange, requestHost, type Exchange } from '../core/exchange.ts';
import { hostOf, validHost } from '../core/http.ts';
import { closeHttp2Stream, isHttp2Response, writeHead } from '../core/http2.ts';
import { compileTemplate, type Template } from '../core/variables.ts';
import { compileCondition, compileRegex, hostMatcher, keepCaptures, unsettable, type Condition, type HostMatch } from './conditions.ts';
import { duplicateError, nestingError, parseLocation, type LocationSpec } from './locations.ts';

export type { Condition, ConditionOperator } from './conditions.ts';

/** What happens after a rewrite matches (nginx's flags). No flag: go on with the next rule. */
export type RewriteFlag = 'last' | 'break' | 'redirect' | 'permanent';

/**
 * One rule. The shapes mirror nginx's rewrite module, plus path-to-regexp patterns:
 * - `{ rewrite: '^/old/(.*)$', replacement: '/new/$1', flag }`: nginx `rewrite`
 * - `{ from: '/old/:id', to: '/new/:id', flag }`: the same with path-to-regexp patterns
 * - `{ return: 301, url: 'https://$host$request_uri' }`, `{ return: 403 }`, `{ return: 200, text: 'ok' }`: nginx `return`
 * - `{ if: '$http_x_debug', then: [...] }`: nginx `if`
 * - `{ set: '$route', value: '$cookie_route' }`: nginx `set`
 * - `{ break: true }`: nginx `break`
 * - `{ location: '~* \\.php$', rules: [...] }`: a location whose rules run once it is chosen (locations nest as nginx's)
 * - `{ server: ['example.org', '*.example.org'], rules: [...] }`: rules for a host (nginx `server_name`)
 */
export type RewriteRule =
  | {
      /** The regex the URI must match (nginx `rewrite`'s first argument). */
      rewrite: string | RegExp;
      /** The new URI, with `$1`… captures and variables; an absolute url, or a trailing `?` to drop the arguments, as nginx. */
      replacement: string;
      /** What happens after a match. @default none: go on with the next rule */
      flag?: RewriteFlag | undefined;
    }
  | {
      /** A path-to-regexp pattern the decoded URI must match, such as `'/old/:id'`. */
      from: string;
      /** The new target with the pattern's parameters: a path or an absolute url, such as `'/new/:id'`. */
      to: string;
      /** What happens after a match. @default none: go on with the next rule */
      flag?: RewriteFlag | undefined;
    }
  | {
      /** The status to answer with; 444 closes the connection without an answer. */
      return: number;
      /** The response body with variables; with a redirect status, the redirect url. */
      text?: string | undefined;
      /** The redirect url with variables; only with 301, 302, 303, 307 or 308. */
      url?: string | undefined;
    }
  | {
      /** The condition the rules run on. */
      if: Condition;
      /** The rules run when the condition holds. */
      then: RewriteRule[];
    }
  | {
      /** The variable set, such as `'$route'`. */
      set: string;
      /** Its value, with variables. */
      value: string;
    }
  | {
      /** Stop running rewrite rules (nginx `break`). */
      break: true;
    }
  | {
      /** The location, in nginx syntax: a prefix (`'/api/'`), `'= /'`, `'^~ /img/'`, `'~ regex'` or `'~* regex'`. */
      location: string;
      /**
       * The rules run once the location is chosen. Locations nest as in nginx: in a prefix or regex
       * location, a regex location or a prefix (`=`, `^~`) that starts with the parent's path; a
       * nested location that matches is chosen instead of its parent, and the parent's rules do not
       * run for it. No server blocks here.
       */
      rules: RewriteRule[];
    }
  | {
      /** Server names the request's host may match, as nginx `server_name`. */
      server: string | readonly string[];
      /** The rules for those hosts, locations included. */
      rules: RewriteRule[];
    };

/** Options of {@link rewrite}. */
export interface RewriteOptions {
  /** Also write the rewritten target into `req.url` (for handlers that route on it). @default false */
  setUrl?: boolean | undefined;
  /** Make relative redirect targets absolute with the request's scheme and Host (nginx `absolute_redirect`). @default true */
  absoluteRedirect?: boolean | undefined;
}

/** The keys of {@link RewriteOptions}. */
const REWRITE_OPTIONS = ['setUrl', 'absoluteRedirect'] as const satisfies ReadonlyArray<keyof RewriteOptions>;

/** Result of running a list of rules. */
type Outcome = 'next' | 'last' | 'break' | Reply;

interface Reply {
  status: number;
  location?: string | undefined;
  text?: string | undefined;
  close?: boolean | undefined;
  /** Handed to next() instead of answering. */
  error?: SwitchyardError | undefined;
}

/** Per-request state of a run: the options, and whether a rewrite matched since the last location search (nginx `uri_changed`). */
interface State {
  readonly o: Resolved;
  changed: boolean;
}

type Step = (ex: Exchange, st: State) => Outcome;

interface Location extends LocationSpec {
  regex: RegExp | undefined;
  steps: Step[];
  /** Locations inside this one. */
  nested: Location[];
}

interface Server {
  match: ((host: string) => HostMatch | undefined) | undefined;
  steps: Step[];
  locations: Location[];
}

interface Resolved {
  absoluteRedirect: boolean;
}

const REDIRECT_CODES = new Set([301, 302, 303, 307, 308]);
const FLAGS = new Set(['last', 'break', 'redirect', 'permanent']);
/** nginx's limit on URI changes per request ("rewrite or internal redirection cycle"). */
const MAX_CYCLES = 10;

/**
 * URL rewriting with nginx's rewrite-module semantics: rules run top to bottom,
 * `last` searches a location again, `break` stops, redirects answer at once. The
 * rewritten URI goes to the exchange record (what balance() sends upstream and
 * cache() keys on); `req.url` is left alone unless `setUrl` is on.
 *
 * Regex rules are trusted configuration (JavaScript regular expressions can
 * backtrack); path-to-regexp patterns (`from`/`to`) always match in linear time.
 * URIs are percent-decoded and normalized (merged slashes, `.` and `..` resolved,
 * `\` read as `/`) before matching, as nginx's `$uri`; a path that climbs above
 * the root is answered 400.
 * @example
 * ```ts
 * app.use(rewrite([
 *   { rewrite: '^(/download/.*)/media/(\\w+)\\.?.*$', replacement: '$1/mp3/$2.mp3', flag: 'last' },
 *   { from: '/users/:id', to: '/api/v2/users/:id', flag: 'break' },
 *   { if: '$http_x_legacy', then: [{ return: 410 }] },
 * ]));
 * app.use(balance(pool));
 * ```
 */
export function rewrite(rules: readonly RewriteRule[], options: RewriteOptions = {}): Middleware {
  if (!Array.isArray(rules)) throw new InvalidOptionError('rules', 'an array of rules', rules);
  objectOption(options, '', REWRITE_OPTIONS);
  const o: Resolved = { absoluteRedirect: booleanOption(options.absoluteRedirect, 'absoluteRedirect', true) };
  const setUrl = booleanOption(options.setUrl, 'setUrl', false);
  const servers = compileServers(rules);
  return function rewrite(req: IncomingMessage, res: ServerResponse, next: Next): void {
    const ex = exchange(req);
    if (!ex.uriValid) {
      // A request the exchange refuses whatever its path (TRACE 405, a bad or repeated Host 400) gets its own error.
      next(ex.refusal ?? new BadRequestError('Malformed request target'));
      return;
    }
    const server = chooseServer(servers, ex);
    if (server === undefined) {
      next();
      return;
    }
    const uriBefore = ex.uri;
    const argsBefore = ex.args;
    const outcome = run(server, ex, { o, changed: false });
    if (outcome === 'cycle') {
      next(new RewriteCycleError());
      return;
    }
    if (typeof outcome === 'object') {
      respond(req, res, next, outcome);
      return;
    }
    if (ex.uri !== uriBefore || ex.args !== argsBefore) {
      ex.uriChanged = true;
      ex.argMap = undefined;
      // encodePath, not encodeURI: a `?` or `#` decoded from the path must not become a query or fragment.
      if (setUrl) req.url = ex.args === '' ? encodePath(ex.uri) : `${encodePath(ex.uri)}?${ex.args}`;
    }
    next();
  };
}

function run(server: Server, ex: Exchange, st: State): 'done' | 'cycle' | Reply {
  // Server-level rules run once; `break` or `last` there only ends them: the location search
  // still follows (verified with nginx 1.22: `rewrite ^/sb/(.*)$ /loc/$1 break` at server level,
  // then `location /loc/ { return 200 ... }` answers).
  const first = runSteps(server.steps, ex, st);
  if (typeof first === 'object') return first;
  if (server.locations.length === 0) return 'done';
  // nginx allows 10 URI changes from location rules; the 11th is a "rewrite or internal
  // redirection cycle" (verified: 10 chained `last` rewrites answer, 11 give 500).
  for (let cycle = 0; cycle <= MAX_CYCLES; cycle++) {
    const location = findLocation(server.locations, ex);
    if (location === undefined) return 'done';
    st.changed = false;
    const out = runSteps(location.steps, ex, st);
    if (typeof out === 'object') return out;
    if (out === 'break') return 'done';
    // Any matching rewrite counts, even one that leaves the URI as it was (nginx sets
    // uri_changed; `rewrite ^ /same last` in `location /same` ends in 500).
    if (!st.changed) return 'done';
  }
  return 'cycle';
}

function runSteps(steps: readonly Step[], ex: Exchange, st: State): Outcome {
  for (const step of steps) {
    const out = step(ex, st);
    if (out !== 'next') return out;
  }
  return 'next';
}

function respond(req: IncomingMessage, res: ServerResponse, next: Next, reply: Reply): void {
  if (reply.error !== undefined) {
    next(reply.error);
    return;
  }
  if (reply.close) {
    // nginx 444: close the connection without a response; over HTTP/2, reset the stream (as nginx
    // does), not the connection the client's other requests share.
    if (isHttp2Response(res)) closeHttp2Stream(res, true);
    else req.socket.destroy();
    return;
  }
  if (reply.location === undefined && reply.text === undefined && reply.status >= 400) {
    next(new ReturnStatusError(reply.status));
    return;
  }
  if (reply.status === 204 || reply.status === 304) {
    // No content (RFC 9110 §15.3.5, §15.4.5): no body and no Content-Length or Content-Type,
    // whatever text the rule has (nginx drops them too).
    writeHead(res, reply.status, reply.location === undefined ? {} : { location: reply.location });
    res.end();
    return;
  }
  const body = reply.text ?? (reply.location !== undefined ? `${reply.status} ${STATUS_CODES[reply.status] ?? ''}\n` : '');
  // nginx's default_type, without a charset (nginx adds one only with its charset directive)
  const headers: Record<string, string | number> = { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) };
  if (reply.location !== undefined) headers.location = reply.location;
  writeHead(res, reply.status, headers);
  res.end(req.method === 'HEAD' ? undefined : body);
}

// ---- compilation ----

function compileServers(rules: readonly RewriteRule[]): Server[] {
  const hostBlocks = rules.filter((r) => r !== null && typeof r === 'object' && 'server' in r);
  if (hostBlocks.length === 0) return [compileBlock(rules, 'rules', undefined)];
  if (hostBlocks.length !== rules.length) {
    throw new InvalidOptionError('rules', 'either only { server } blocks, or rules without { server } blocks', rules);
  }
  return rules.map((r, i) => {
    const block = r as { server: string | readonly string[]; rules: RewriteRule[] };
    return compileBlock(block.rules, `rules[${i}].rules`, hostMatcher(block.server, `rules[${i}].server`));
  });
}

function compileBlock(rules: readonly RewriteRule[], where: string, match: Server['match']): Server {
  if (!Array.isArray(rules)) throw new InvalidOptionError(where, 'an array of rules', rules);
  const steps: Step[] = [];
  const locations: Location[] = [];
  for (const [i, rule] of rules.entries()) {
    const path = `${where}[${i}]`;
    if (rule !== null && typeof rule === 'object' && 'location' in rule) locations.push(compileLocation(rule, path, undefined, locations));
    else steps.push(compileStep(rule, path));
  }
  return { match, steps, locations };
}

function compileLocation(
  rule: { location: string; rules: RewriteRule[] },
  where: string,
  parent: LocationSpec | undefined,
  siblings: readonly LocationSpec[],
): Location {
  const spec = rule.location;
  if (typeof spec !== 'string' || spec.trim() === '')
    throw new InvalidOptionError(`${where}.location`, 'a location such as "/api/", "= /", "^~ /img/", "~ \\.php$" or "~* \\.jpg$"', spec);
  const { kind, path } = parseLocation(spec);
  const nesting = (parent === undefined ? undefined : nestingError(parent, { kind, path })) ?? duplicateError(siblings, { kind, path });
  if (nesting !== undefined) throw new InvalidOptionError(`${where}.location`, `a location nginx accepts here (${nesting})`, spec);
  const regex = kind === '~' || kind === '~*' ? compileRegex(path, kind === '~*', `${where}.location`) : undefined;
  if (!Array.isArray(rule.rules)) throw new InvalidOptionError(`${where}.rules`, 'an array of rules', rule.rules);
  const steps: Step[] = [];
  const nested: Location[] = [];
  for (const [i, r] of rule.rules.entries()) {
    if (r !== null && typeof r === 'object' && 'server' in r)
      throw new InvalidOptionError(`${where}.rules[${i}]`, 'a rule (a server block cannot stand in a location)', r);
    if (r !== null && typeof r === 'object' && 'location' in r) nested.push(compileLocation(r, `${where}.rules[${i}]`, { kind, path }, nested));
    else steps.push(compileStep(r, `${where}.rules[${i}]`));
  }
  return { kind, path, regex, steps, nested };
}

/** nginx's location choice (see searchLocations). */
function findLocation(locations: readonly Location[], ex: Exchange): Location | undefined {
  const found: { location: Location | undefined } = { location: undefined };
  searchLocations(locations, ex, found);
  return found.location;
}

/**
 * nginx's ngx_http_core_find_location, one level: an exact match ends the search; else the
 * longest prefix is remembered and its nested locations are searched; unless that prefix is
 * `^~`, this level's regexes follow in order, and the first that matches is chosen (its own
 * nested locations searched in turn); else the deepest prefix found stands. True when the
 * choice is final (an exact or a regex match).
 */
function searchLocations(locations: readonly Location[], ex: Exchange, found: { location: Location | undefined }): boolean {
  const uri = ex.uri;
  let prefix: Location | undefined;
  for (const l of locations) {
    if (l.kind === '=' && l.path === uri) {
      found.location = l;
      return true;
    }
    if ((l.kind === 'prefix' || l.kind === '^~') && uri.startsWith(l.path) && (prefix === undefined || l.path.length > prefix.path.length)) prefix = l;
  }
  if (prefix !== undefined) {
    found.location = prefix;
    if (prefix.nested.length > 0 && searchLocations(prefix.nested, ex, found)) return true;
    if (prefix.kind === '^~') return false;
  }
  for (const l of locations) {
    if (l.regex === undefined) continue;
    const m = l.regex.exec(uri);
    if (m !== null) {
      keepCaptures(ex, m);
      found.location = l;
      if (l.nested.length > 0) searchLocations(l.nested, ex, found);
      return true;
    }
  }
  return false;
}

/**
 * nginx's server choice across all blocks: an exact name, else the longest leading
 * wildcard, else the longest trailing wildcard, else the first block (in order) with a
 * matching regex. A host no block names gets no rules (nginx would use its default server:
 * add a last block `{ server: '~.', rules }` for that).
 */
function chooseServer(servers: readonly Server[], ex: Exchange): Server | undefined {
  if (servers.length === 1 && servers[0]!.match === undefined) return servers[0];
  const host = hostOf(ex.req);
  let best: Server | undefined;
  let bestMatch: HostMatch | undefined;
  for (const s of servers) {
    const m = s.match!(host);
    if (m === undefined) continue;
    if (m.rank === 0) {
      best = s;
      bestMatch = m;
      break;
    }
    if (bestMatch === undefined || m.rank < bestMatch.rank || (m.rank === bestMatch.rank && m.rank !== 3 && m.length > bestMatch.length)) {
      best = s;
      bestMatch = m;
    }
  }
  if (bestMatch?.captures !== undefined) ex.captures = bestMatch.captures;
  return best;
}

function checkFlag(flag: unknown, where: string): RewriteFlag | undefined {
  if (flag === undefined) return undefined;
  if (typeof flag !== 'string' || !FLAGS.has(flag)) throw new InvalidOptionError(`${where}.flag`, 'last, break, redirect or permanent', flag);
  return flag as RewriteFlag;
}

function compileStep(rule: RewriteRule, where: string): Step {
  if (rule === null || typeof rule !== 'object') throw new InvalidOptionError(where, 'a rule object', rule);
  const keys = Object.keys(rule);
  const has = (k: string): boolean => keys.includes(k);
  if (has('rewrite')) {
    const r = rule as { rewrite: string | RegExp; replacement: string; flag?: RewriteFlag };
    only(keys, ['rewrite', 'replacement', 'flag'], where);
    return regexStep(r.rewrite, r.replacement, checkFlag(r.flag, where), where);
  }
  if (has('from')) {
    const r = rule as { from: string; to: string; flag?: RewriteFlag };
    only(keys, ['from', 'to', 'flag'], where);
    return patternStep(r.from, r.to, checkFlag(r.flag, where), where);
  }
  if (has('return')) {
    only(keys, ['return', 'text', 'url'], where);
    return returnStep(rule as { return: number; text?: string; url?: string }, where);
  }
  if (has('if')) {
    only(keys, ['if', 'then'], where);
    const r = rule as { if: Condition; then: RewriteRule[] };
    const test = compileCondition(r.if, `${where}.if`);
    if (!Array.isArray(r.then)) throw new InvalidOptionError(`${where}.then`, 'an array of rules', r.then);
    const steps = r.then.map((s, i) => compileStep(s, `${where}.then[${i}]`));
    return (ex, st) => (test(ex) ? runSteps(steps, ex, st) : 'next');
  }
  if (has('set')) {
    only(keys, ['set', 'value'], where);
    const r = rule as { set: string; value: string };
    if (typeof r.set !== 'string' || !/^\$[A-Za-z_][A-Za-z0-9_]*$/.test(r.set))
      throw new InvalidOptionError(`${where}.set`, 'a variable name such as "$route"', r.set);
    const name = r.set.slice(1);
    const refused = unsettable(name);
    if (refused !== undefined) throw new InvalidOptionError(`${where}.set`, refused, r.set);
    const value = compileTemplate(r.value, `${where}.value`);
    // `set $args` replaces the request's arguments: what goes upstream, `$args` and `$arg_NAME` (nginx).
    if (name.toLowerCase() === 'args') {
      return (ex) => {
        ex.args = value(ex);
        ex.argMap = undefined;
        return 'next';
      };
    }
    return (ex) => {
      ex.vars.set(name, value(ex));
      return 'next';
    };
  }
  if (has('break')) {
    only(keys, ['break'], where);
    if ((rule as { break: unknown }).break !== true) throw new InvalidOptionError(`${where}.break`, 'true', (rule as { break: unknown }).break);
    return () => 'break';
  }
  if (has('location') || has('server')) throw new InvalidOptionError(where, 'a rule (a location or server block cannot stand here)', rule);
  throw new InvalidOptionError(where, 'a rule with one of rewrite, from, return, if, set, break, location, server', rule);
}

function only(keys: readonly string[], allowed: readonly string[], where: string): void {
  for (const k of keys) if (!allowed.includes(k)) throw unknownOption(`${where}.${k}`, k, allowed, where);
}

const ABSOLUTE = /^(?:https?:\/\/|\$scheme)/;

/** A rewrite's result: the path, and the arguments when the replacement has a `?` (split where the replacement has it, never inside a value). */
interface Target {
  path: string;
  args: string | undefined;
}

/** How a rewrite ends when it matched: the new target, a flag, and whether it redirects. */
interface Replacement {
  /** Computes the target after a successful test; captures are escaped when it goes into a redirect. */
  produce: (ex: Exchange) => Target;
  flag: RewriteFlag | undefined;
  redirect: boolean;
  /** A trailing `?` in the replacement: the request's arguments are dropped. */
  dropArgs: boolean;
}

const DOT_DOT = /(?:^|\/)\.\.(?:\/|$)/;

/** A rewrite: on a match, the replacement becomes the URI (and args), or a redirect. */
function replaceStep(test: (ex: Exchange) => boolean, r: Replacement): Step {
  const status = r.flag === 'permanent' ? 301 : 302;
  return (ex, st) => {
    if (!test(ex)) return 'next';
    const result = r.produce(ex);
    if (r.redirect) {
      // nginx: the request's args follow after `&` when the replacement has a `?`, else after `?`
      // (so `https://x$request_uri` doubles them, as nginx does).
      let url = result.args === undefined ? result.path : `${result.path}?${result.args}`;
      if (!r.dropArgs && ex.args !== '') url += `${result.args === undefined ? '?' : '&'}${ex.args}`;
      return { status, location: redirectUrl(url, ex, st.o) };
    }
    // nginx answers 500 to a rewrite that leaves an empty URI.
    if (result.path === '') return { status: 500, error: new RewriteEmptyError() };
    // A capture or variable that brings a `..` segment would let the upstream climb out of
    // the replacement's prefix (nginx sends it as is): answer 400 instead.
    if (DOT_DOT.test(result.path)) return { status: 400, error: new BadRequestError('Rewritten URI has a ".." segment') };
    ex.uri = result.path;
    if (r.dropArgs) ex.args = result.args ?? '';
    else if (result.args !== undefined && result.args !== '') ex.args = ex.args === '' ? result.args : `${result.args}&${ex.args}`;
    ex.argMap = undefined;
    st.changed = true;
    if (r.flag === 'last') return 'last';
    if (r.flag === 'break') return 'break';
    return 'next';
  };
}

function regexStep(source: string | RegExp, replacement: string, flag: RewriteFlag | undefined, where: string): Step {
  const re = compileRegex(source, false, `${where}.rewrite`);
  if (typeof replacement !== 'string' || replacement === '') throw new InvalidOptionError(`${where}.replacement`, 'a non-empty replacement', replacement);
  const dropArgs = replacement.endsWith('?');
  const body = dropArgs ? replacement.slice(0, -1) : replacement;
  const q = body.indexOf('?');
  const redirect = flag === 'redirect' || flag === 'permanent' || ABSOLUTE.test(replacement);
  const path = compileTemplate(q === -1 ? body : body.slice(0, q), `${where}.replacement`, redirect ? redirectVariable : undefined);
  const args = q === -1 ? undefined : compileTemplate(body.slice(q + 1), `${where}.replacement`, argVariable);
  // Most rules start with a literal (`^/download/`): a startsWith check skips the regex for other URIs.
  const prefix = literalPrefix(re);
  const test = (ex: Exchange): boolean => {
    if (prefix !== '' && !ex.uri.startsWith(prefix)) return false;
    const m = re.exec(ex.uri);
    if (m === null) return false;
    keepCaptures(ex, m);
    return true;
  };
  // Captures land in the path as they are (the URI is decoded text, encoded again on its way
  // upstream) or percent-encoded for a redirect; in the arguments they are always encoded, so a
  // capture cannot add arguments (`&`, `=`) or a fragment (nginx escapes them likewise). Decoded
  // variables in the arguments are encoded the same way (argVariable), and what remains is made
  // valid for a request line (queryText).
  const produce = (ex: Exchange): Target => ({
    path: redirect ? withCaptures(ex, escapeForRedirect, path) : path(ex),
    args: args === undefined ? undefined : queryText(withCaptures(ex, escapeArg, args)),
  });
  return replaceStep(test, { produce, flag, redirect, dropArgs });
}

/**
 * The literal text every match of an anchored regex must start with (`^/a\\.b/(.*)` gives `/a.b/`),
 * or '' when there is none to rely on (no `^`, alternation, case-insensitive or multiline flags).
 * @internal
 */
export function literalPrefix(re: RegExp): string {
  const src = re.source;
  if (!src.startsWith('^') || re.flags.includes('i') || re.flags.includes('m') || src.includes('|')) return '';
  let out = '';
  for (let i = 1; i < src.length; i++) {
    let c = src[i]!;
    if (c === '\\') {
      const next = src[i + 1];
      // Only escaped punctuation is a literal; \d, \w, \s, \b… are classes or assertions.
      if (next === undefined || /[A-Za-z0-9]/.test(next)) break;
      c = next;
      i++;
    } else if ('.^$*+?()[]{}'.includes(c)) {
      break;
    }
    // A quantifier after this character makes it optional or repeated: it is not part of the prefix.
    const after = src[i + 1];
    if (after === '?' || after === '*' || after === '{') break;
    out += c;
  }
  return out;
}

/** `{ from, to }` with path-to-regexp patterns (linear-time matching), against the decoded URI. */
function patternStep(from: string, to: string, flag: RewriteFlag | undefined, where: string): Step {
  if (typeof from !== 'string' || !from.startsWith('/')) throw new InvalidOptionError(`${where}.from`, 'a path pattern such as "/old/:id"', from);
  if (typeof to !== 'string' || to === '') throw new InvalidOptionError(`${where}.to`, 'a target such as "/new/:id" or "https://example.com/:id"', to);
  let test: ReturnType<typeof matchPath>;
  try {
    // Case-sensitive, as nginx's rewrite.
    test = matchPath(from, { decode: false, sensitive: true });
  } catch (err) {
    throw new InvalidOptionError(`${where}.from`, `a valid path-to-regexp pattern (${(err as Error).message})`, from);
  }
  const dropArgs = to.endsWith('?');
  const target = dropArgs ? to.slice(0, -1) : to;
  const q = target.indexOf('?');
  const toPath = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? undefined : queryText(target.slice(q + 1));
  const origin = /^https?:\/\/[^/]*/.exec(toPath)?.[0] ?? '';
  if (origin === '' && !toPath.startsWith('/')) throw new InvalidOptionError(`${where}.to`, 'a target such as "/new/:id" or "https://example.com/:id"', to);
  const redirect = flag === 'redirect' || flag === 'permanent' || origin !== '';
  let build: (params: Partial<Record<string, string | string[]>>) => string;
  try {
    // Parameters are escaped here (for redirects) rather than by path-to-regexp, whose encoder
    // wants wildcards as arrays while matching with `decode: false` gives strings.
    build = compilePath(toPath.slice(origin.length) || '/', { encode: false });
  } catch (err) {
    throw new InvalidOptionError(`${where}.to`, `a valid path-to-regexp pattern (${(err as Error).message})`, to);
  }
  let built = '';
  // The literal text before the first parameter: other URIs skip the matcher.
  const prefix = /^[^:*{}()\\]*/.exec(from)![0];
  const matches = (ex: Exchange): boolean => {
    if (!ex.uri.startsWith(prefix)) return false;
    const m = test(ex.uri);
    if (m === false) return false;
    const params = m.params as Record<string, string | undefined>;
    try {
      built = origin + build(redirect ? Object.fromEntries(Object.entries(params).map(([k, v]) => [k, v === undefined ? v : escapeForRedirect(v)])) : params);
    } catch {
      return false;
    }
    return true;
  };
  return replaceStep(matches, { produce: () => ({ path: built, args: query }), flag: redirect && flag === undefined ? 'redirect' : flag, redirect, dropArgs });
}

function withCaptures(ex: Exchange, escape: (value: string) => string, produce: (ex: Exchange) => string): string {
  const saved = ex.captures;
  if (saved === undefined) return produce(ex);
  const named = saved.named === undefined ? undefined : Object.fromEntries(Object.entries(saved.named).map(([k, v]) => [k, v === undefined ? v : escape(v)]));
  ex.captures = Object.assign(
    saved.map((c) => (c === undefined ? c : escape(c))),
    named === undefined ? {} : { named },
  );
  try {
    return produce(ex);
  } finally {
    ex.captures = saved;
  }
}

/** Percent-encodes a capture for a query argument: everything but unreserved characters. */
function escapeArg(value: string): string {
  return encodeURIComponent(wellFormed(value));
}

/**
 * Variables whose values are decoded text (the normalized path, the host, header and cookie values):
 * in a replacement's arguments they are percent-encoded as captures are, so `$uri` on `/a%20b` gives
 * `/x?u=%2Fa%20b` and a `&` or `#` in them cannot add an argument or end the target. nginx copies
 * them as they are, which on `/a%20b` puts a space in the upstream request line. Variables that hold
 * query text already (`$args`, `$arg_NAME`, `$request_uri`, `set` variables) keep their escapes;
 * captures are encoded by withCaptures.
 */
function argVariable(name: string, get: Template): Template {
  const n = name.toLowerCase();
  const decoded = n === 'uri' || n === 'document_uri' || n === 'host' || n === 'content_type' || n.startsWith('http_') || n.startsWith('cookie_');
  return decoded ? (ex) => escapeArg(get(ex)) : get;
}

/**
 * Variables that hold query text (`$arg_NAME`, `$args`, `$query_string`), put before the `?` of a
 * redirect: unescaped as nginx unescapes a rewritten redirect (NGX_UNESCAPE_REDIRECT), so
 * `rewrite ^ $arg_r? redirect` with `r=http%3A%2F%2Fexample.com%2F%3Ffrom` redirects to
 * `http://example.com/?from` (nginx-tests rewrite_unescape.t). Other variables, captures and the
 * replacement's own text are left as they are (nginx unescapes them too, which turns `%3F` into a
 * query; rewrite_unescape.t marks that as a bug to fix).
 */
function redirectVariable(name: string, get: Template): Template {
  const n = name.toLowerCase();
  return n === 'args' || n === 'query_string' || n.startsWith('arg_') ? (ex) => unescapeRedirect(get(ex)) : get;
}

/**
 * nginx's NGX_UNESCAPE_REDIRECT: `%XX` becomes its character when that is printable ASCII after `%`
 * (so `%0D%0A`, `%20` and `%25` stay escaped); the first `?`, literal or escaped, ends the path and
 * what follows is copied as it is. An invalid escape is kept (nginx drops its `%`).
 * @internal
 */
export function unescapeRedirect(text: string): string {
  if (!text.includes('%')) return text;
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '?') return out + text.slice(i);
    if (c === '%' && /^[0-9A-Fa-f]{2}$/.test(text.slice(i + 1, i + 3))) {
      const code = Number.parseInt(text.slice(i + 1, i + 3), 16);
      if (code === 0x3f) return `${out}?${text.slice(i + 3)}`;
      if (code > 0x25 && code < 0x7f) {
        out += String.fromCharCode(code);
        i += 2;
        continue;
      }
    }
    out += c;
  }
  return out;
}

/**
 * Makes argument text valid in a request line: percent-encodes (UTF-8) controls, space, DEL,
 * non-ASCII, `#`, `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}` and a `%` that starts no escape;
 * valid escapes, `&` and `=` stay as they are.
 */
function queryText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[^\x21-\x7e]|[#"<>\\^`{|}]|%(?![0-9A-Fa-f]{2})/gu, (c) => encodeURIComponent(wellFormed(c)));
}

/** Replaces lone surrogates (a regex without `u` can capture half a pair) with U+FFFD, so encoding cannot throw. */
function wellFormed(value: string): string {
  return value.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

/** Percent-encodes what a capture carries into a redirect: controls, spaces, quotes, `%`, `?`, `#`, non-ASCII. */
function escapeForRedirect(value: string): string {
  return encodeURI(wellFormed(value)).replace(/[?#'"<>\\^`{|}]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** Percent-encodes (UTF-8) every character that cannot stand in a Location header as is: controls, space, DEL, non-ASCII. */
function headerSafe(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[^\x21-\x7e]/gu, (c) => {
    let out = '';
    for (const b of Buffer.from(wellFormed(c), 'utf8')) out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
    return out;
  });
}

/** Makes a redirect target absolute (nginx `absolute_redirect on`) and escapes anything that cannot be in a header. */
function redirectUrl(target: string, ex: Exchange, o: Resolved): string {
  const clean = headerSafe(target);
  if (!clean.startsWith('/')) return clean;
  // `//host` and `/\\host` would leave the site: relative mode collapses them to one slash,
  // absolute mode keeps them as a path on this host, as nginx does.
  if (!o.absoluteRedirect) return clean.replace(/^[/\\]+/, '/');
  const named = requestHost(ex.req);
  // No Host (HTTP/1.0): the server's address and port; an invalid Host: the address alone (such
  // a request is refused before this where the gateway checks Host, as nginx does).
  const host = named === undefined ? localHost(ex) : validHost(named) ? named : (ex.req.socket?.localAddress ?? 'localhost');
  return `${ex.scheme}://${host}${clean}`;
}

/**
 * The server's own address and listening port, for a request without a Host (HTTP/1.0): nginx's
 * `port_in_redirect`, which leaves out only the scheme's default port. An IPv6 address is bracketed
 * (nginx writes it bare, which makes no valid URL with a port).
 */
function localHost(ex: Exchange): string {
  const socket = ex.req.socket;
  let address = socket?.localAddress ?? 'localhost';
  if (address.startsWith('::ffff:') && address.includes('.')) address = address.slice(7);
  else if (address.includes(':')) address = `[${address}]`;
  const port = socket?.localPort;
  if (port === undefined || port === (ex.scheme === 'https' ? 443 : 80)) return address;
  return `${address}:${port}`;
}

function returnStep(rule: { return: number; text?: string; url?: string }, where: string): Step {
  const status = rule.return;
  if (!Number.isInteger(status) || status < 100 || status > 999)
    throw new InvalidOptionError(`${where}.return`, 'an HTTP status code (444 closes the connection)', status);
  if (rule.text !== undefined && rule.url !== undefined) throw new InvalidOptionError(where, 'either text or url, not both', rule);
  if (status === 444) return () => ({ status, close: true });
  if (rule.url !== undefined) {
    if (!REDIRECT_CODES.has(status)) throw new InvalidOptionError(`${where}.url`, 'a url only with 301, 302, 303, 307 or 308', rule.url);
    const url = compileTemplate(rule.url, `${where}.url`);
    return (ex, st) => ({ status, location: redirectUrl(url(ex), ex, st.o) });
  }
  if (rule.text !== undefined) {
    const text = compileTemplate(rule.text, `${where}.text`);
    if (REDIRECT_CODES.has(status)) return (ex, st) => ({ status, location: redirectUrl(text(ex), ex, st.o) });
    return (ex) => ({ status, text: text(ex) });
  }
  return () => ({ status });
}
