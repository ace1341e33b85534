// nginx's `proxy_redirect`: a Location or Refresh from the upstream that names the upstream's own
// address is rewritten to the client-facing one, so that the internal address does not leak and
// the redirect leads back through the gateway.
import { InvalidOptionError } from '../core/errors.ts';
import { requestHost, type Exchange } from '../core/exchange.ts';
import { compileTemplate, type Template } from '../core/variables.ts';
import type { PeerTarget } from '../pool/peer.ts';

/**
 * One rewrite rule: a Location or Refresh URL that starts with `from` (a string, which may hold nginx
 * variables) has that start replaced by `to`; one that `from` (a RegExp) matches is replaced whole by
 * `to`, where `$1`… and `$name` are the match's groups. `to` may hold nginx variables (`$scheme`,
 * `$host`…).
 */
export interface RedirectRule {
  /** A URL prefix (which may hold nginx variables), or a RegExp matched against the whole URL. */
  from: string | RegExp;
  /** What replaces the prefix or the match: nginx variables, and a RegExp's `$1`… and `$name`. */
  to: string;
}

/**
 * balance()'s `redirect` option: `'default'` (nginx `proxy_redirect default`), `false` (off) or a
 * list of rules tried in order, the first that matches applies (`'default'` may be one of them).
 */
export type RedirectOption = 'default' | false | readonly (RedirectRule | 'default')[];

/** A compiled rule: the value from `offset` rewritten, or undefined when it does not apply. */
type Rule = (value: string, offset: number, ex: Exchange, target: PeerTarget) => string | undefined;

/** The prefix nginx's default rule replaces: the server's URL with its path prefix, and a slash. */
const ownPrefixes = new WeakMap<PeerTarget, string>();

function ownPrefix(t: PeerTarget): string {
  let p = ownPrefixes.get(t);
  if (p === undefined) {
    p = `${t.protocol}//${t.authority}${t.prefix}/`;
    ownPrefixes.set(t, p);
  }
  return p;
}

/**
 * nginx's default: the URL balance() sent the request to (the server's url and its path prefix) is
 * replaced by the path the request came on, `/` (balance() joins the whole request path to the
 * prefix, so its mount path is in both).
 */
const defaultRule: Rule = (value, offset, _ex, target) => {
  const own = ownPrefix(target);
  if (!value.startsWith(own, offset)) return undefined;
  return `${value.slice(0, offset)}/${value.slice(offset + own.length)}`;
};

function prefixRule(from: string, to: Template, option: string): Rule {
  const pattern = from.includes('$') ? compileTemplate(from, option) : () => from;
  return (value, offset, ex) => {
    const start = pattern(ex);
    if (start === '' || !value.startsWith(start, offset)) return undefined;
    return value.slice(0, offset) + to(ex) + value.slice(offset + start.length);
  };
}

function regexRule(from: RegExp, to: string, option: string): Rule {
  // A sticky or global RegExp would carry lastIndex from one response to the next.
  const re = new RegExp(from.source, from.flags.replace(/[gy]/g, ''));
  let match: RegExpExecArray | null = null;
  const replacement = compileTemplate(to, option, (name, get) => {
    if (/^[0-9]$/.test(name)) {
      const i = Number(name);
      return () => match?.[i] ?? '';
    }
    return (ex) => {
      const group = match?.groups?.[name];
      return group ?? get(ex);
    };
  });
  return (value, offset, ex) => {
    match = re.exec(offset === 0 ? value : value.slice(offset));
    if (match === null) return undefined;
    try {
      return value.slice(0, offset) + replacement(ex);
    } finally {
      match = null;
    }
  };
}

/** Compiled `redirect` option: undefined when off. @internal */
export interface Redirects {
  readonly rules: readonly Rule[];
}

/** Validates and compiles balance()'s `redirect` option (InvalidOptionError naming it). @internal */
export function redirectRules(value: unknown, option = 'redirect'): Redirects | undefined {
  if (value === undefined || value === 'default') return { rules: [defaultRule] };
  if (value === false) return undefined;
  const expected = "'default', false, or an array of { from, to } rules";
  if (!Array.isArray(value)) throw new InvalidOptionError(option, expected, value);
  const rules = value.map((entry: unknown, i): Rule => {
    const path = `${option}[${i}]`;
    if (entry === 'default') return defaultRule;
    if (entry === null || typeof entry !== 'object') throw new InvalidOptionError(path, "{ from, to } or 'default'", entry);
    const { from, to } = entry as { from?: unknown; to?: unknown };
    for (const key of Object.keys(entry)) if (key !== 'from' && key !== 'to') throw new InvalidOptionError(`${path}.${key}`, 'no such key (from, to)', key);
    if (typeof to !== 'string') throw new InvalidOptionError(`${path}.to`, 'a string', to);
    if (from instanceof RegExp) return regexRule(from, to, `${path}.to`);
    if (typeof from !== 'string' || from === '') throw new InvalidOptionError(`${path}.from`, 'a non-empty string or a RegExp', from);
    return prefixRule(from, compileTemplate(to, `${path}.to`), `${path}.from`);
  });
  return rules.length === 0 ? undefined : { rules };
}

/**
 * The Location or Refresh `value` as the client gets it, for a response of the server `target`: the
 * first rule that applies rewrites it (a Refresh from its `url=`), else it is unchanged. A rewritten
 * Location that became a path is made absolute with the request's scheme and host, as nginx's
 * `absolute_redirect on` does (a Refresh stays as it is, as in nginx).
 * @internal
 */
export function rewriteRedirect(redirects: Redirects, value: string, refresh: boolean, ex: Exchange, target: PeerTarget): string {
  let offset = 0;
  if (refresh) {
    const at = value.search(/url=/i);
    if (at === -1) return value;
    offset = at + 4;
  }
  for (const rule of redirects.rules) {
    const out = rule(value, offset, ex, target);
    if (out === undefined) continue;
    if (refresh || out.charCodeAt(0) !== 47 /* / */ || out.charCodeAt(1) === 47) return out;
    const host = requestHost(ex.req);
    return host === undefined || host === '' ? out : `${ex.scheme}://${host}${out}`;
  }
  return value;
}
