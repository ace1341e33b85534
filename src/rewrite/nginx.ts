import { InvalidOptionError } from '../core/errors.ts';
import { objectOption, stringListOption } from '../core/options.ts';
import { pcreRegex, regexError, unsettable, type Condition, type ConditionOperator } from './conditions.ts';
import type { RewriteFlag, RewriteRule } from './index.ts';
import { duplicateError, nestingError, parseLocation, type LocationSpec } from './locations.ts';

/** Options of {@link fromNginx}. */
export interface FromNginxOptions {
  /**
   * Directives to skip (with their blocks) instead of failing, such as `['listen', 'root']`.
   * Everything outside the rewrite module fails by default, so nothing is dropped silently.
   * @default [] (none)
   */
  ignore?: readonly string[] | undefined;
}

/** Directives {@link fromNginx} skips unless told otherwise: none. */
export const DEFAULT_NGINX_IGNORE: readonly string[] = Object.freeze([]);

/** The keys of {@link FromNginxOptions}. */
const NGINX_OPTIONS = ['ignore'] as const satisfies ReadonlyArray<keyof FromNginxOptions>;

interface Token {
  text: string;
  line: number;
  quoted: boolean;
  /** `word`, or the punctuation `;`, `{`, `}`. */
  kind: 'word' | ';' | '{' | '}';
}

interface Statement {
  name: string;
  line: number;
  args: Token[];
  block: Statement[] | undefined;
}

const FLAGS = new Set(['last', 'break', 'redirect', 'permanent']);
const REDIRECT_CODES = new Set([301, 302, 303, 307, 308]);
const OPERATORS = new Set(['=', '!=', '~', '~*', '!~', '!~*']);
const MODIFIERS = new Set(['=', '^~', '~', '~*']);
const VARIABLE = /^\$[A-Za-z_][A-Za-z0-9_]*$/;
const BLOCKS = new Set(['if', 'location', 'server']);
const STEP_DIRECTIVES = 'rewrite, return, if, set, break';

/**
 * Converts nginx configuration text into {@link rewrite} rules: `rewrite`, `return`,
 * `if`, `set`, `break`, `location` blocks (nested as nginx nests them) and `server` blocks with `server_name`.
 * Comments, single and double quotes (with nginx's backslash escapes) and any line
 * layout are understood. Any other directive, and any syntax error, throws an
 * `InvalidOptionError` whose option is `nginx:LINE`; list directives that do not
 * matter for rewriting in `options.ignore` to skip them.
 *
 * Several `server` blocks are ordered the way nginx chooses between them (exact
 * names, then the longest `*.` wildcard, the longest `.*` wildcard, then regexes in
 * order), one entry per kind of name. A request whose host matches no
 * `server_name` passes through unchanged: there is no default server.
 * @example
 * ```ts
 * const rules = fromNginx(`
 *   rewrite ^(/download/.*)/media/(\\w+)\\.?.*$ $1/mp3/$2.mp3 last;
 *   return 403;
 * `);
 * app.use(rewrite(rules));
 * ```
 */
export function fromNginx(text: string, options: FromNginxOptions = {}): RewriteRule[] {
  if (typeof text !== 'string') throw new InvalidOptionError('text', 'nginx configuration text', text);
  objectOption(options, '', NGINX_OPTIONS);
  const ignore = new Set(stringListOption(options.ignore, 'ignore', DEFAULT_NGINX_IGNORE, 'an array of directive names'));
  const statements = parse(tokenize(text), ignore).filter((s) => !ignore.has(s.name));
  const servers = statements.filter((s) => s.name === 'server');
  if (servers.length > 0) {
    const other = statements.find((s) => s.name !== 'server');
    if (other !== undefined) fail(other.line, `only server blocks at the top level once one is used, received "${other.name}"`);
    return orderServers(servers.map((s) => convertServer(s, ignore)));
  }
  return convertBlock(statements, 'top', ignore);
}

function fail(line: number, expected: string): never {
  throw new InvalidOptionError(`nginx:${line}`, `${expected} (line ${line})`);
}

function checkRegex(source: string, caseless: boolean, st: Statement): void {
  try {
    pcreRegex(source, caseless);
  } catch (err) {
    fail(st.line, `a valid regular expression in "${st.name}", received "${source}" (${regexError(err)})`);
  }
}

// ---- tokens ----

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const ch = text[i]!;
    if (ch === '\n') {
      line++;
      i++;
    } else if (ch === ' ' || ch === '\t' || ch === '\r') i++;
    else if (ch === '#') {
      while (i < n && text[i] !== '\n') i++;
    } else if (ch === ';' || ch === '{' || ch === '}') {
      tokens.push({ text: ch, line, quoted: false, kind: ch });
      i++;
    } else if (ch === '"' || ch === "'") {
      const start = line;
      let out = '';
      i++;
      for (;;) {
        if (i >= n) fail(start, `a closing ${ch} for the string opened`);
        const c = text[i]!;
        if (c === ch) break;
        if (c === '\\' && i + 1 < n) {
          out += unescape(text[i + 1]!);
          if (text[i + 1] === '\n') line++;
          i += 2;
          continue;
        }
        if (c === '\n') line++;
        out += c;
        i++;
      }
      i++;
      const after = text[i];
      if (after !== undefined && !/[\s;{)]/.test(after)) fail(line, `a space, ";" or "{" after a quoted string, received "${after}"`);
      tokens.push({ text: out, line: start, quoted: true, kind: 'word' });
    } else {
      let out = '';
      while (i < n) {
        const c = text[i]!;
        if (/[\s;{}]/.test(c)) {
          // `${name}` is a variable, not a block.
          if (c === '{' && out.endsWith('$')) {
            const close = text.indexOf('}', i);
            if (close === -1 || /[\s;]/.test(text.slice(i, close))) fail(line, 'a variable name and "}" after "${"');
            out += text.slice(i, close + 1);
            i = close + 1;
            continue;
          }
          break;
        }
        if (c === '\\' && i + 1 < n) {
          out += unescape(text[i + 1]!);
          if (text[i + 1] === '\n') line++;
          i += 2;
          continue;
        }
        out += c;
        i++;
      }
      tokens.push({ text: out, line, quoted: false, kind: 'word' });
    }
  }
  return tokens;
}

/** nginx keeps a backslash except before a quote, a backslash, t, r or n. */
function unescape(c: string): string {
  if (c === '"' || c === "'" || c === '\\') return c;
  if (c === 't') return '\t';
  if (c === 'r') return '\r';
  if (c === 'n') return '\n';
  return `\\${c}`;
}

// ---- statements ----

function parse(tokens: readonly Token[], ignore: ReadonlySet<string>): Statement[] {
  let pos = 0;
  const block = (opener: Token | undefined): Statement[] => {
    const list: Statement[] = [];
    for (;;) {
      const t = tokens[pos++];
      if (t === undefined) {
        if (opener !== undefined) fail(opener.line, 'a "}" closing the block opened');
        return list;
      }
      if (t.kind === '}') {
        if (opener === undefined) fail(t.line, 'a directive, received an unexpected "}"');
        return list;
      }
      if (t.kind !== 'word') fail(t.line, `a directive, received an unexpected "${t.kind}"`);
      const args: Token[] = [];
      for (;;) {
        const a = tokens[pos++];
        if (a === undefined) fail(t.line, `";" or "{" ending the "${t.text}" directive`);
        if (a.kind === 'word') args.push(a);
        else if (a.kind === ';') {
          list.push({ name: t.text, line: t.line, args, block: undefined });
          break;
        } else if (a.kind === '{') {
          if (!BLOCKS.has(t.text) && !ignore.has(t.text))
            fail(a.line, `";" ending the "${t.text}" directive, received "{" (it takes no block; quote arguments that contain "{" or "}")`);
          list.push({ name: t.text, line: t.line, args, block: block(a) });
          break;
        } else fail(a.line, `";" ending the "${t.text}" directive, received "}"`);
      }
    }
  };
  return block(undefined);
}

// ---- conversion ----

type Level = 'top' | 'server' | 'location' | 'if';

function convertServer(s: Statement, ignore: ReadonlySet<string>): { names: string[]; line: number; rules: RewriteRule[] } {
  if (s.block === undefined) fail(s.line, 'a block after "server"');
  if (s.args.length > 0) fail(s.line, '"server" without arguments');
  const names: string[] = [];
  const body: Statement[] = [];
  for (const st of s.block) {
    if (ignore.has(st.name)) continue;
    if (st.name === 'server_name') {
      if (st.block !== undefined) fail(st.line, '";" after "server_name"');
      if (st.args.length === 0) fail(st.line, 'at least one name after "server_name"');
      for (const a of st.args) {
        if (a.text.startsWith('~')) checkRegex(a.text.slice(1), true, st);
        else if (a.text.includes('*') && !a.text.startsWith('*.') && !a.text.endsWith('.*'))
          fail(st.line, `a server name with "*" only as "*.name" or "name.*", received "${a.text}"`);
        names.push(a.text);
      }
    } else body.push(st);
  }
  if (names.length === 0) fail(s.line, 'a server_name in the server block (switchyard has no default server; "server_name ~." catches every host)');
  return { names, line: s.line, rules: convertBlock(body, 'server', ignore) };
}

/** One entry per kind of name, in the order nginx ranks them across servers. */
function orderServers(servers: Array<{ names: string[]; line: number; rules: RewriteRule[] }>): RewriteRule[] {
  if (servers.length === 1) return [{ server: servers[0]!.names, rules: servers[0]!.rules }];
  const exact: RewriteRule[] = [];
  const leading: Array<{ key: string; rule: RewriteRule }> = [];
  const trailing: Array<{ key: string; rule: RewriteRule }> = [];
  const regex: RewriteRule[] = [];
  for (const s of servers) {
    const kinds = { exact: [] as string[], regex: [] as string[] };
    for (const name of s.names) {
      if (name.startsWith('~')) kinds.regex.push(name);
      else if (name.startsWith('*.')) leading.push({ key: name.slice(1), rule: { server: [name], rules: s.rules } });
      else if (name.startsWith('.')) {
        kinds.exact.push(name.slice(1));
        leading.push({ key: name, rule: { server: [`*${name}`], rules: s.rules } });
      } else if (name.endsWith('.*')) trailing.push({ key: name.slice(0, -1), rule: { server: [name], rules: s.rules } });
      else kinds.exact.push(name);
    }
    if (kinds.exact.length > 0) exact.push({ server: kinds.exact, rules: s.rules });
    for (const name of kinds.regex) regex.push({ server: [name], rules: s.rules });
  }
  const longestFirst = (a: { key: string }, b: { key: string }): number => b.key.length - a.key.length;
  return [...exact, ...leading.sort(longestFirst).map((e) => e.rule), ...trailing.sort(longestFirst).map((e) => e.rule), ...regex];
}

function convertBlock(statements: readonly Statement[], level: Level, ignore: ReadonlySet<string>, parent?: LocationSpec): RewriteRule[] {
  const rules: RewriteRule[] = [];
  const siblings: LocationSpec[] = [];
  for (const st of statements) {
    if (ignore.has(st.name)) continue;
    if (st.name !== 'if' && st.name !== 'location' && st.name !== 'server' && st.block !== undefined)
      fail(st.line, `";" after "${st.name}" (it takes no block)`);
    const arity = (min: number, max: number): void => {
      if (st.args.length < min || st.args.length > max)
        fail(st.line, `${min === max ? min : `${min} to ${max}`} argument${max === 1 ? '' : 's'} for "${st.name}", received ${st.args.length}`);
    };
    switch (st.name) {
      case 'rewrite': {
        arity(2, 3);
        const [regex, replacement, flag] = st.args.map((a) => a.text) as [string, string, string | undefined];
        checkRegex(regex, false, st);
        if (replacement === '') fail(st.line, 'a non-empty replacement for "rewrite"');
        if (flag !== undefined && !FLAGS.has(flag)) fail(st.line, `last, break, redirect or permanent as the "rewrite" flag, received "${flag}"`);
        rules.push(flag === undefined ? { rewrite: regex, replacement } : { rewrite: regex, replacement, flag: flag as RewriteFlag });
        break;
      }
      case 'return':
        arity(1, 2);
        rules.push(convertReturn(st));
        break;
      case 'set': {
        arity(2, 2);
        const [name, value] = st.args.map((a) => a.text) as [string, string];
        if (!VARIABLE.test(name)) fail(st.line, `a variable such as $name for "set", received "${name}"`);
        const refused = unsettable(name.slice(1));
        if (refused !== undefined) fail(st.line, refused);
        rules.push({ set: name, value });
        break;
      }
      case 'break':
        arity(0, 0);
        rules.push({ break: true });
        break;
      case 'if': {
        if (level === 'if') fail(st.line, 'no "if" inside "if" (nginx does not nest them)');
        if (st.block === undefined) fail(st.line, 'a block after "if (...)"');
        rules.push({ if: convertCondition(st), then: convertBlock(st.block, 'if', ignore) });
        break;
      }
      case 'location': {
        if (level === 'if') fail(st.line, 'no "location" inside "if" (nginx does not allow it there)');
        if (st.block === undefined) fail(st.line, 'a block after "location"');
        arity(1, 2);
        const [first, second] = st.args.map((a) => a.text) as [string, string | undefined];
        if (second !== undefined && !MODIFIERS.has(first)) fail(st.line, `=, ^~, ~ or ~* as the location modifier, received "${first}"`);
        if (second === undefined && first.startsWith('@')) fail(st.line, 'a path location (named locations such as "@name" are not supported)');
        if (second === undefined && MODIFIERS.has(first)) fail(st.line, `a path after the location modifier "${first}"`);
        if (first === '~' || first === '~*') checkRegex(second!, first === '~*', st);
        const spec = parseLocation(second === undefined ? first : `${first} ${second}`);
        const nesting = (parent === undefined ? undefined : nestingError(parent, spec)) ?? duplicateError(siblings, spec);
        if (nesting !== undefined) fail(st.line, `a location nginx accepts here, received ${nesting}`);
        siblings.push(spec);
        const body = st.block.filter((s) => !ignore.has(s.name));
        rules.push({ location: second === undefined ? first : `${first} ${second}`, rules: convertBlock(body, 'location', ignore, spec) });
        break;
      }
      case 'server':
        fail(st.line, level === 'top' ? 'only server blocks at the top level once one is used' : 'no "server" block inside another block');
        break;
      case 'server_name':
        fail(st.line, '"server_name" only directly in a server block');
        break;
      default:
        fail(
          st.line,
          `a rewrite-module directive (${STEP_DIRECTIVES}${level === 'if' ? '' : ', location'}${level === 'top' ? ', server' : ''}); ` +
            `"${st.name}" is not supported (options.ignore skips it)`,
        );
    }
  }
  return rules;
}

function convertReturn(st: Statement): RewriteRule {
  const [first, second] = st.args.map((a) => a.text) as [string, string | undefined];
  if (!/^[0-9]+$/.test(first)) {
    if (second !== undefined || !/^(?:https?:\/\/|\$scheme)/.test(first))
      fail(st.line, `a status code, or a URL starting with http://, https:// or $scheme, for "return"; received "${first}"`);
    return { return: 302, url: first };
  }
  const code = Number(first);
  if (code < 100 || code > 999) fail(st.line, `a status code from 100 to 999 for "return", received ${first}`);
  if (second === undefined) return { return: code };
  return REDIRECT_CODES.has(code) ? { return: code, url: second } : { return: code, text: second };
}

function convertCondition(st: Statement): Condition {
  const args = st.args.map((a) => ({ ...a }));
  const first = args[0];
  const last = args[args.length - 1];
  if (first === undefined || first.quoted || !first.text.startsWith('(')) fail(st.line, '"(" after "if"');
  if (last === undefined || last.quoted || !last.text.endsWith(')')) fail(st.line, '")" closing the "if" condition');
  first.text = first.text.slice(1);
  last.text = last.text.slice(0, -1);
  const parts = args.filter((a) => a.quoted || a.text !== '').map((a) => a.text);
  if (parts.length === 0) fail(st.line, 'a condition inside "if ()"');
  const variable = parts[0]!;
  if (/^!?-[fdex]$/.test(variable)) fail(st.line, `a variable test ("${variable}" file checks are not supported)`);
  if (!VARIABLE.test(variable) && !/^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(variable))
    fail(st.line, `a variable such as $http_host at the start of the condition, received "${variable}"`);
  if (parts.length === 1) return { var: variable };
  if (parts.length !== 3) fail(st.line, `"$var", "$var = value", "$var != value" or "$var ~ regex" as the condition, received ${parts.length} parts`);
  const op = parts[1]!;
  const value = parts[2]!;
  if (!OPERATORS.has(op)) fail(st.line, `one of = != ~ ~* !~ !~* in the condition, received "${op}"`);
  if (op.includes('~')) checkRegex(value, op.endsWith('*'), st);
  return { var: variable, op: op as ConditionOperator, value };
}
