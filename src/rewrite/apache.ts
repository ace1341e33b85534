import type { IncomingMessage } from 'node:http';
import { InvalidOptionError } from '../core/errors.ts';
import { enumOption, objectOption, stringListOption } from '../core/options.ts';
import { normalizePath, requestHost, type Exchange } from '../core/exchange.ts';
import { hostOf } from '../core/http.ts';
import type { RewriteRule } from './index.ts';
import { pcreRegex, regexError } from './conditions.ts';

/** Options of {@link fromApache}. */
export interface FromApacheOptions {
  /**
   * Where the rules would stand: `'server'` (httpd.conf, virtual host: patterns see `/path`) or
   * `'directory'` (a `.htaccess` at the document root: patterns see `path` without the leading
   * slash, relative substitutions get the `RewriteBase`, and a changed URI runs the rules again).
   * @default 'server'
   */
  context?: 'server' | 'directory' | undefined;
  /**
   * Directives to skip instead of failing, such as `['Options']`. Everything else outside
   * mod_rewrite fails by default, so nothing is dropped silently.
   * @default [] (none)
   */
  ignore?: readonly string[] | undefined;
}

/** Default of {@link FromApacheOptions.context}. */
export const DEFAULT_APACHE_CONTEXT = 'server';

/** The keys of {@link FromApacheOptions}. */
const APACHE_OPTIONS = ['context', 'ignore'] as const satisfies ReadonlyArray<keyof FromApacheOptions>;

/** Variables that carry a rule's computed target to the rewrite or return it runs. */
const TARGET = 'swy_apache_target';
const REDIRECT = 'swy_apache_redirect';
const PATH = 'swy_apache_path';
const ARGS = 'swy_apache_args';
/** A `?` in the template sets the arguments; the trailing one drops the request's own. */
const REPLACEMENT = `$${PATH}?$${ARGS}?`;

interface Cond {
  line: number;
  read: Expand;
  test: (value: string) => RegExpExecArray | boolean;
  or: boolean;
  regex: boolean;
  negate: boolean;
}

interface Flags {
  last: boolean;
  end: boolean;
  redirect: number | undefined;
  nocase: boolean;
  qsa: boolean;
  qsd: boolean;
  status: number | undefined;
  noescape: boolean;
}

interface Backrefs {
  rule: readonly string[];
  cond: readonly string[];
}

type Expand = (ex: Exchange, refs: Backrefs) => string;

/**
 * Converts common Apache mod_rewrite configuration into {@link rewrite} rules:
 * `RewriteEngine`, `RewriteBase`, `RewriteCond` (on `%{HTTP_HOST}`, `%{REQUEST_URI}`,
 * `%{QUERY_STRING}`, `%{HTTPS}`, `%{REQUEST_METHOD}`, `%{HTTP:Header}` and a few more;
 * regex, `!regex`, `=string`; flags `NC`, `OR`, `NV`) and `RewriteRule` (flags `L`,
 * `END`, `R[=3xx]`, `NC`, `QSA`, `QSD`, `F`, `G`, `NE`; `-` substitution; `$N` and
 * `%N` back-references; `%{VAR}` in substitutions). Apache's semantics are kept:
 * a rule without `L` goes on to the next rule; a substitution with `?` replaces the
 * query string unless `QSA`; an absolute URL to another host redirects with 302,
 * one to the request's own host and port is reduced to its path. Each rule becomes
 * an `if` whose condition is a function, so the result is for {@link rewrite}, not
 * for reading. Anything else throws an `InvalidOptionError` whose option is `apache:LINE`.
 * @example
 * ```ts
 * app.use(rewrite(fromApache(`
 *   RewriteEngine On
 *   RewriteCond %{HTTP_HOST} ^example\\.org$ [NC]
 *   RewriteRule ^(.*)$ https://www.example.org$1 [R=301,L]
 * `)));
 * ```
 */
export function fromApache(text: string, options: FromApacheOptions = {}): RewriteRule[] {
  if (typeof text !== 'string') throw new InvalidOptionError('text', 'Apache configuration text', text);
  objectOption(options, '', APACHE_OPTIONS);
  const context = enumOption(options.context, 'context', ['server', 'directory'], DEFAULT_APACHE_CONTEXT);
  const ignore = new Set(stringListOption(options.ignore, 'ignore', [], 'an array of directive names').map((d) => d.toLowerCase()));
  const directory = context === 'directory';

  let engine = true;
  let base = '/';
  let conds: Cond[] = [];
  let sections = 0;
  const rules: RewriteRule[] = [];
  for (const { line, args } of lines(text)) {
    const name = args[0]!;
    const lower = name.toLowerCase();
    if (lower.startsWith('<')) {
      if (/^<ifmodule$/i.test(name) && args.length === 2 && /^!?(?:mod_rewrite\.c|rewrite_module)>$/i.test(args[1]!)) {
        if (args[1]!.startsWith('!')) fail(line, 'a <IfModule> on mod_rewrite being present');
        sections++;
      } else if (/^<\/ifmodule>$/i.test(name) && args.length === 1) {
        if (sections === 0) fail(line, 'an opened <IfModule> before </IfModule>');
        sections--;
      } else fail(line, `mod_rewrite directives (sections other than <IfModule mod_rewrite.c> are not supported), received "${name}"`);
      continue;
    }
    if (ignore.has(lower)) continue;
    switch (lower) {
      case 'rewriteengine':
        if (args.length !== 2 || !/^(?:on|off)$/i.test(args[1]!)) fail(line, 'RewriteEngine On or Off');
        engine = args[1]!.toLowerCase() === 'on';
        break;
      case 'rewritebase':
        if (!directory) fail(line, 'RewriteBase only with { context: "directory" }');
        if (args.length !== 2 || !args[1]!.startsWith('/')) fail(line, 'RewriteBase with one URL path starting with "/"');
        base = args[1]!.endsWith('/') ? args[1]! : `${args[1]}/`;
        break;
      case 'rewritecond':
        conds.push(parseCond(args, line, directory));
        break;
      case 'rewriterule': {
        const rule = parseRule(args, line, conds, directory, () => base);
        conds = [];
        rules.push(rule);
        break;
      }
      default:
        fail(line, `a mod_rewrite directive (RewriteEngine, RewriteBase, RewriteCond, RewriteRule); "${name}" is not supported (options.ignore skips it)`);
    }
  }
  if (sections !== 0) fail(text.split('\n').length, 'a </IfModule> closing every <IfModule>');
  if (conds.length > 0) fail(conds[0]!.line, 'a RewriteRule after RewriteCond');
  if (!engine) return [];
  return directory ? [{ location: '/', rules }] : rules;
}

function fail(line: number, expected: string): never {
  throw new InvalidOptionError(`apache:${line}`, `${expected} (line ${line})`);
}

/** Logical lines (a trailing backslash continues one), split into Apache's words. */
function* lines(text: string): Generator<{ line: number; args: string[] }> {
  const physical = text.split(/\r?\n/);
  for (let i = 0; i < physical.length; i++) {
    const line = i + 1;
    let content = physical[i]!;
    while (content.endsWith('\\') && i + 1 < physical.length) content = content.slice(0, -1) + physical[++i]!;
    content = content.trim();
    if (content === '' || content.startsWith('#')) continue;
    yield { line, args: words(content, line) };
  }
}

function words(content: string, line: number): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < content.length) {
    const ch = content[i]!;
    if (ch === ' ' || ch === '\t') {
      i++;
      continue;
    }
    if (ch === '"' || ch === "'") {
      let word = '';
      i++;
      for (;;) {
        if (i >= content.length) fail(line, `a closing ${ch}`);
        const c = content[i]!;
        if (c === '\\' && content[i + 1] === ch) {
          word += ch;
          i += 2;
          continue;
        }
        if (c === ch) break;
        word += c;
        i++;
      }
      i++;
      out.push(word);
      continue;
    }
    let word = '';
    while (i < content.length && content[i] !== ' ' && content[i] !== '\t') word += content[i++];
    out.push(word);
  }
  return out;
}

function parseFlags(text: string | undefined, line: number, allowed: ReadonlySet<string>): Map<string, string | undefined> {
  const flags = new Map<string, string | undefined>();
  if (text === undefined) return flags;
  if (!text.startsWith('[') || !text.endsWith(']')) fail(line, `flags in brackets such as [L,R=301], received "${text}"`);
  for (const part of text.slice(1, -1).split(',')) {
    const eq = part.indexOf('=');
    const key = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase();
    const value = eq === -1 ? undefined : part.slice(eq + 1).trim();
    const canonical = ALIASES[key] ?? key;
    if (!allowed.has(canonical)) fail(line, `supported flags (${[...allowed].join(', ').toUpperCase()}), received "${part.trim()}"`);
    flags.set(canonical, value);
  }
  return flags;
}

const ALIASES: Record<string, string> = {
  nocase: 'nc',
  ornext: 'or',
  novary: 'nv',
  last: 'l',
  redirect: 'r',
  qsappend: 'qsa',
  qsdiscard: 'qsd',
  forbidden: 'f',
  gone: 'g',
  noescape: 'ne',
};
const COND_FLAGS = new Set(['nc', 'or', 'nv']);
const RULE_FLAGS = new Set(['l', 'end', 'r', 'nc', 'qsa', 'qsd', 'f', 'g', 'ne']);

function parseCond(args: readonly string[], line: number, directory: boolean): Cond {
  if (args.length < 3 || args.length > 4) fail(line, `RewriteCond TestString CondPattern [flags], received ${args.length - 1} arguments`);
  let pattern = args[2]!;
  const negate = pattern.startsWith('!');
  if (negate) pattern = pattern.slice(1);
  if (/^(?:-[a-zA-Z]+|<=?|>=?)/.test(pattern) || pattern === 'expr')
    fail(line, `a regex or =string as the CondPattern ("${pattern}" comparisons and file tests are not supported)`);
  const read = compileExpansion(args[1]!, line, directory);
  const flags = parseFlags(args[3], line, COND_FLAGS);
  const nocase = flags.has('nc');
  const base = { line, read, or: flags.has('or'), negate };
  if (pattern.startsWith('=')) {
    let expected = pattern.slice(1);
    if (expected === '""') expected = '';
    const wanted = nocase ? expected.toLowerCase() : expected;
    return { ...base, regex: false, test: (v) => (nocase ? v.toLowerCase() : v) === wanted };
  }
  const re = regex(pattern, nocase, line);
  return { ...base, regex: true, test: (v) => re.exec(v) ?? false };
}

/** mod_rewrite's patterns are PCRE too: translated as nginx's are (see translatePcre), or refused. */
function regex(source: string, nocase: boolean, line: number): RegExp {
  try {
    return pcreRegex(source, nocase);
  } catch (err) {
    fail(line, `a valid regular expression, received "${source}" (${regexError(err)})`);
  }
}

function parseRule(args: readonly string[], line: number, conds: readonly Cond[], directory: boolean, baseOf: () => string): RewriteRule {
  if (args.length < 3 || args.length > 4) fail(line, `RewriteRule Pattern Substitution [flags], received ${args.length - 1} arguments`);
  const raw = parseFlags(args[3], line, RULE_FLAGS);
  const flags = ruleFlags(raw, line);
  let source = args[1]!;
  const negate = source.startsWith('!');
  if (negate) source = source.slice(1);
  const pattern = regex(source, flags.nocase, line);
  const substitution = args[2]!;
  const keep = substitution === '-';
  if (keep && flags.redirect !== undefined) fail(line, 'a substitution other than "-" with the R flag');
  const absolute = /^https?:\/\//i.test(substitution);
  const expand = keep ? undefined : compileExpansion(substitution, line, directory);
  const dynamic = /^(?:%\{|[$%][0-9])/.test(substitution);
  if (!keep && !absolute && !dynamic && !substitution.startsWith('/') && !directory && flags.status === undefined)
    fail(line, `a substitution starting with "/" or http(s):// in server context, or "-", received "${substitution}"`);
  const base = baseOf();
  const matches = (ex: Exchange): Backrefs | undefined => {
    const subject = directory ? ex.uri.slice(1) : ex.uri;
    const m = pattern.exec(subject);
    if ((m === null) !== negate) return undefined;
    const refs = { rule: m === null ? [] : Array.from(m, (v) => v ?? ''), cond: [] as string[] };
    return evaluateConds(conds, ex, refs) ? refs : undefined;
  };
  if (flags.status !== undefined) {
    const test = (_req: IncomingMessage, ex: Exchange): boolean => matches(ex) !== undefined;
    return { if: test, then: [{ return: flags.status }] };
  }
  const test = (_req: IncomingMessage, ex: Exchange): boolean => {
    const refs = matches(ex);
    if (refs === undefined) return false;
    let target = expand === undefined ? ex.uri : expand(ex, refs);
    const q = target.indexOf('?');
    let path = q === -1 ? target : target.slice(0, q);
    const query = q === -1 ? undefined : target.slice(q + 1);
    // Apache: no `?` keeps the query (QSD drops it); `?new` replaces it, or comes first with QSA.
    const kept = query === undefined ? (flags.qsd ? '' : ex.args) : flags.qsa ? ex.args : '';
    const join = (added: string): string => [added, kept].filter((a) => a !== '').join('&');
    const args = join(query ?? '');
    let redirect = flags.redirect !== undefined;
    if (!/^https?:\/\//i.test(path) && !path.startsWith('/')) path = directory ? base + path : `/${path}`;
    if (/^https?:\/\//i.test(path) && !redirect) {
      const local = sameServer(path, ex);
      if (local === undefined) redirect = true;
      else path = local;
    }
    if (redirect) {
      // Without NE, what the substitution added is escaped; the client's own query is not.
      const redirectArgs = flags.noescape ? args : join(escapeRedirect(query ?? ''));
      target = (flags.noescape ? path : escapeUrl(path)) + (redirectArgs === '' ? '' : `?${redirectArgs}`);
    } else {
      ex.vars.set(PATH, path);
      ex.vars.set(ARGS, args);
    }
    ex.vars.set(TARGET, target);
    ex.vars.set(REDIRECT, redirect ? '1' : '');
    return true;
  };
  const flag = flags.end ? 'break' : flags.last ? 'last' : undefined;
  const rewrite: RewriteRule = flag === undefined ? { rewrite: '^', replacement: REPLACEMENT } : { rewrite: '^', replacement: REPLACEMENT, flag };
  const code = flags.redirect ?? 302;
  if (flags.redirect !== undefined) return { if: test, then: [{ return: code, url: `$${TARGET}` }] };
  if (keep || (!absolute && !dynamic)) return { if: test, then: [rewrite] };
  return { if: test, then: [{ if: `$${REDIRECT}`, then: [{ return: 302, url: `$${TARGET}` }] }, rewrite] };
}

function ruleFlags(raw: Map<string, string | undefined>, line: number): Flags {
  for (const [k, v] of raw) if (v !== undefined && k !== 'r') fail(line, `the ${k.toUpperCase()} flag without a value`);
  let redirect: number | undefined;
  if (raw.has('r')) {
    const v = raw.get('r')?.toLowerCase();
    redirect = v === undefined || v === 'temp' ? 302 : v === 'permanent' ? 301 : v === 'seeother' ? 303 : /^3[0-9][0-9]$/.test(v) ? Number(v) : undefined;
    if (redirect === undefined) fail(line, `R, R=permanent, R=temp, R=seeother or R=3xx, received "R=${raw.get('r')}" (other codes are not supported)`);
  }
  const status = raw.has('f') ? 403 : raw.has('g') ? 410 : undefined;
  if (raw.has('f') && raw.has('g')) fail(line, 'either F or G, not both');
  if (status !== undefined && redirect !== undefined) fail(line, `either ${raw.has('f') ? 'F' : 'G'} or R, not both`);
  if (raw.has('qsa') && raw.has('qsd')) fail(line, 'either QSA or QSD, not both');
  return {
    last: raw.has('l'),
    end: raw.has('end'),
    redirect,
    nocase: raw.has('nc'),
    qsa: raw.has('qsa'),
    qsd: raw.has('qsd'),
    status,
    noescape: raw.has('ne'),
  };
}

/** Apache's loop over conditions: `[OR]` chains one condition to the next, the rest are ANDed. */
function evaluateConds(conds: readonly Cond[], ex: Exchange, refs: Backrefs & { cond: string[] }): boolean {
  for (let i = 0; i < conds.length; i++) {
    let c = conds[i]!;
    const value = c.read(ex, refs);
    const result = c.test(value);
    const ok = (result !== false) !== c.negate;
    if (ok && c.regex && !c.negate && typeof result === 'object') refs.cond = Array.from(result, (v) => v ?? '');
    if (c.or) {
      if (!ok) continue;
      // Skip the rest of the chain, and the condition that ends it.
      while (c.or && i + 1 < conds.length) c = conds[++i]!;
    } else if (!ok) return false;
  }
  return true;
}

/** When a URL names the request's own host and port, its path (Apache reduces such URLs). */
function sameServer(url: string, ex: Exchange): string | undefined {
  const m = /^(https?):\/\/([^/:?#]*)(?::([0-9]+))?(.*)$/i.exec(url);
  if (m === null) return undefined;
  const scheme = m[1]!.toLowerCase();
  const urlPort = m[3] === undefined ? (scheme === 'https' ? 443 : 80) : Number(m[3]);
  const hostHeader = requestHost(ex.req) ?? '';
  const portMatch = /:([0-9]+)$/.exec(hostHeader.startsWith('[') ? hostHeader.slice(hostHeader.indexOf(']') + 1) : hostHeader);
  const reqPort = portMatch === null ? (ex.scheme === 'https' ? 443 : 80) : Number(portMatch[1]);
  if (m[2]!.toLowerCase() !== hostOf(ex.req) || urlPort !== reqPort) return undefined;
  return m[4] === '' ? '/' : m[4];
}

/** Escapes a redirect's path as Apache does without NE (everything but RFC 3986 path characters). */
function escapeUrl(url: string): string {
  const origin = /^https?:\/\/[^/]*/i.exec(url)?.[0] ?? '';
  return origin + escapeRedirect(url.slice(origin.length));
}

function escapeRedirect(text: string): string {
  return text.replace(/[^A-Za-z0-9$\-_.+!*'(),:;@&=/~]/g, (c) =>
    Array.from(Buffer.from(c), (b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
}

/** Compiles a TestString or Substitution: `$N`, `%N`, `%{VAR}`, `%{HTTP:Header}`, `\` escapes. */
function compileExpansion(text: string, line: number, directory: boolean): Expand {
  const parts: Array<string | Expand> = [];
  let literal = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    const next = text[i + 1];
    if (c === '\\' && next !== undefined && (next === '$' || next === '%' || next === '\\')) {
      literal += next;
      i++;
    } else if ((c === '$' || c === '%') && next !== undefined && /[0-9]/.test(next)) {
      if (literal !== '') parts.push(literal);
      literal = '';
      const n = Number(next);
      parts.push(c === '$' ? (_ex, refs) => refs.rule[n] ?? '' : (_ex, refs) => refs.cond[n] ?? '');
      i++;
    } else if (c === '%' && next === '{') {
      const close = text.indexOf('}', i);
      if (close === -1) fail(line, `a "}" closing "%{" in "${text}"`);
      if (literal !== '') parts.push(literal);
      literal = '';
      parts.push(serverVariable(text.slice(i + 2, close), line, directory));
      i = close;
    } else if (c === '$' && next === '{') fail(line, `no RewriteMap lookups ("\${map:key}" is not supported), received "${text}"`);
    else literal += c;
  }
  if (literal !== '') parts.push(literal);
  return (ex, refs) => {
    let out = '';
    for (const p of parts) out += typeof p === 'string' ? p : p(ex, refs);
    return out;
  };
}

/** The request headers with a variable of their own, by the variable's name: `%{HTTP_USER_AGENT}` is User-Agent. */
const HEADERS = new Map(['host', 'user-agent', 'referer', 'cookie', 'accept', 'forwarded'].map((h) => [`HTTP_${h.toUpperCase().replaceAll('-', '_')}`, h]));

const VARIABLES: Record<string, Expand> = {
  // The URI the request came with: a server-context pass does not change it.
  REQUEST_URI: (ex) => {
    const q = ex.requestUri.indexOf('?');
    const path = q === -1 ? ex.requestUri : ex.requestUri.slice(0, q);
    return normalizePath(path) ?? path;
  },
  QUERY_STRING: (ex) => ex.args,
  HTTPS: (ex) => (ex.scheme === 'https' ? 'on' : 'off'),
  REQUEST_SCHEME: (ex) => ex.scheme,
  REQUEST_METHOD: (ex) => ex.req.method ?? '',
  REMOTE_ADDR: (ex) => ex.clientAddress,
  THE_REQUEST: (ex) => `${ex.req.method ?? ''} ${ex.requestUri} HTTP/${ex.req.httpVersion}`,
};

function serverVariable(name: string, line: number, directory: boolean): Expand {
  const header = name.toUpperCase().startsWith('HTTP:') ? name.slice(5).toLowerCase() : HEADERS.get(name.toUpperCase());
  if (header !== undefined) {
    if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(header)) fail(line, `a header name in %{HTTP:...}, received "${name}"`);
    // An HTTP/2 request's Host is its :authority.
    if (header === 'host') return (ex) => requestHost(ex.req) ?? '';
    return (ex) => {
      const v = ex.req.headers[header];
      return Array.isArray(v) ? v.join(', ') : (v ?? '');
    };
  }
  // In a directory, each pass after an internal rewrite is a new request for the new URI.
  if (directory && name.toUpperCase() === 'REQUEST_URI') return (ex) => ex.uri;
  const fixed = VARIABLES[name.toUpperCase()];
  if (fixed === undefined)
    fail(line, `a supported variable (${[...HEADERS.keys(), 'HTTP:Header', ...Object.keys(VARIABLES)].join(', ')}), received "%{${name}}"`);
  return fixed;
}
