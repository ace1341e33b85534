// NGINX Plus `match` blocks: conditions on a probe's status, headers and body.
import type { IncomingHttpHeaders } from 'node:http';
import { InvalidOptionError } from '../core/errors.ts';
import { TOKEN } from '../core/http.ts';
import { objectOption } from '../core/options.ts';

/**
 * A header condition: a string (equals), a RegExp (matches), `true` (present), `false` (absent),
 * or one of `{ equals }`, `{ notEquals }`, `{ matches }`, `{ notMatches }`.
 */
export type HeaderCondition =
  | string
  | RegExp
  | boolean
  | {
      /** The header is present with exactly this value. */
      readonly equals: string;
    }
  | {
      /** The header is absent or has another value. */
      readonly notEquals: string;
    }
  | {
      /** The header is present and its value matches. */
      readonly matches: RegExp;
    }
  | {
      /** The header is absent or its value does not match. */
      readonly notMatches: RegExp;
    };

/** Options of a health check's `match` (NGINX Plus `match { status …; header …; body …; }`); all must pass. */
export interface MatchOptions {
  /**
   * Status codes as nginx writes them (`'200'`, `'! 500'`, `'200 204'`, `'200-399'`, `'! 400-599'`,
   * `'301-303 307'`), a number, or a list of codes and `[low, high]` ranges.
   * @default '200-399'
   */
  status?: string | number | ReadonlyArray<number | string | readonly [number, number]> | undefined;
  /**
   * Header conditions: nginx lines (`'Content-Type = text/html'`, `'Content-Type != text/html'`,
   * `'Connection ~ close'`, `'Connection !~ close'`, `'Host'` present, `'! X-Accel-Redirect'` absent)
   * or an object of header name to {@link HeaderCondition}.
   */
  headers?: readonly string[] | Readonly<Record<string, HeaderCondition>> | undefined;
  /**
   * A condition on the first 256 KiB of the body: a RegExp (matches), `{ matches }`,
   * `{ notMatches }`, or nginx's `'~ "regex"'` / `'!~ "regex"'`.
   */
  body?:
    | RegExp
    | string
    | {
        /** The body matches. */
        readonly matches: RegExp;
      }
    | {
        /** The body does not match. */
        readonly notMatches: RegExp;
      }
    | undefined;
}

/** A compiled match: which parts it needs, and the test. */
export interface CompiledMatch {
  /** True when the body must be read. */
  readonly needsBody: boolean;
  /** `undefined` when the probe passes, else why it failed. */
  test(status: number, headers: IncomingHttpHeaders, body: string): string | undefined;
}

type StatusTest = (status: number) => boolean;
type HeaderTest = { name: string; describe: string; test: (value: string | undefined) => boolean };

function code(value: unknown, path: string): number {
  const n = typeof value === 'string' && /^\d{3}$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 100 || n > 599) throw new InvalidOptionError(path, 'a status code from 100 to 599', value);
  return n;
}

function compileStatus(spec: MatchOptions['status'], path: string): StatusTest {
  if (spec === undefined) return (s) => s >= 200 && s < 400;
  if (typeof spec === 'number') {
    const c = code(spec, path);
    return (s) => s === c;
  }
  let negate = false;
  let items: Array<number | string | readonly [number, number]>;
  if (typeof spec === 'string') {
    let text = spec.trim();
    if (text.startsWith('!')) {
      negate = true;
      text = text.slice(1).trim();
    }
    items = text.split(/\s+/).filter((t) => t !== '');
  } else if (Array.isArray(spec)) {
    items = [...spec];
  } else {
    throw new InvalidOptionError(path, "a status such as '200', '! 500', '200-399', a code, or a list of codes and [low, high] ranges", spec);
  }
  if (items.length === 0) throw new InvalidOptionError(path, 'at least one status code or range', spec);
  const ranges = items.map((item, i): [number, number] => {
    const at = typeof spec === 'string' ? path : `${path}[${i}]`;
    if (Array.isArray(item)) {
      if (item.length !== 2) throw new InvalidOptionError(at, 'a [low, high] range', item);
      const lo = code(item[0], at);
      const hi = code(item[1], at);
      if (lo > hi) throw new InvalidOptionError(at, 'a range whose low end is not above its high end', item);
      return [lo, hi];
    }
    if (typeof item === 'string' && item.includes('-')) {
      const [a, b] = item.split('-');
      const lo = code(a, at);
      const hi = code(b, at);
      if (lo > hi) throw new InvalidOptionError(at, 'a range whose low end is not above its high end', item);
      return [lo, hi];
    }
    const c = code(item, at);
    return [c, c];
  });
  return (s) => ranges.some(([lo, hi]) => s >= lo && s <= hi) !== negate;
}

function regex(text: string, path: string): RegExp {
  try {
    return new RegExp(text);
  } catch (err) {
    throw new InvalidOptionError(path, `a valid regular expression (${(err as Error).message})`, text);
  }
}

function unquote(text: string): string {
  const t = text.trim();
  return t.length >= 2 && ((t.startsWith('"') && t.endsWith('"')) || (t.startsWith("'") && t.endsWith("'"))) ? t.slice(1, -1) : t;
}

function headerName(name: unknown, path: string): string {
  if (typeof name !== 'string' || !TOKEN.test(name)) throw new InvalidOptionError(path, 'a header name', name);
  return name.toLowerCase();
}

function fromLine(line: unknown, path: string): HeaderTest {
  if (typeof line !== 'string') throw new InvalidOptionError(path, "an nginx header condition such as 'Content-Type = text/html'", line);
  const text = line.trim();
  const absent = /^!\s*(\S+)$/.exec(text);
  if (absent !== null) {
    const name = headerName(absent[1], path);
    return { name, describe: `no ${name}`, test: (v) => v === undefined };
  }
  const m = /^(\S+)\s*(=|!=|~|!~)\s*(.*)$/.exec(text);
  if (m === null) {
    const name = headerName(text, path);
    return { name, describe: `${name} present`, test: (v) => v !== undefined };
  }
  const name = headerName(m[1], path);
  const value = unquote(m[3]!);
  return fromCondition(
    name,
    m[2] === '=' ? value : m[2] === '!=' ? { notEquals: value } : m[2] === '~' ? regex(value, path) : { notMatches: regex(value, path) },
    path,
  );
}

function fromCondition(name: string, c: HeaderCondition, path: string): HeaderTest {
  if (typeof c === 'string') return { name, describe: `${name} = ${c}`, test: (v) => v === c };
  if (typeof c === 'boolean') return { name, describe: c ? `${name} present` : `no ${name}`, test: (v) => (v !== undefined) === c };
  if (c instanceof RegExp) {
    const re = new RegExp(c.source, c.flags.replace(/[gy]/g, ''));
    return { name, describe: `${name} ~ ${c}`, test: (v) => v !== undefined && re.test(v) };
  }
  if (typeof c === 'object' && c !== null) {
    const o = objectOption(c, path, ['equals', 'notEquals', 'matches', 'notMatches']);
    if (typeof o.equals === 'string') return fromCondition(name, o.equals, path);
    if (typeof o.notEquals === 'string') {
      const value = o.notEquals;
      return { name, describe: `${name} != ${value}`, test: (v) => v !== value };
    }
    if (o.matches instanceof RegExp) return fromCondition(name, o.matches, path);
    if (o.notMatches instanceof RegExp) {
      const re = new RegExp(o.notMatches.source, o.notMatches.flags.replace(/[gy]/g, ''));
      return { name, describe: `${name} !~ ${o.notMatches}`, test: (v) => v === undefined || !re.test(v) };
    }
  }
  throw new InvalidOptionError(path, 'a string, RegExp, boolean, or { equals | notEquals | matches | notMatches }', c);
}

function compileBody(spec: MatchOptions['body'], path: string): ((body: string) => boolean) | undefined {
  if (spec === undefined) return undefined;
  let re: RegExp;
  let negate = false;
  if (spec instanceof RegExp) re = spec;
  else if (typeof spec === 'string') {
    const m = /^(!?~)\s*(.*)$/s.exec(spec.trim());
    if (m === null) throw new InvalidOptionError(path, `nginx's '~ "regex"' or '!~ "regex"'`, spec);
    negate = m[1] === '!~';
    re = regex(unquote(m[2]!), path);
  } else {
    const o = typeof spec === 'object' && spec !== null ? objectOption(spec, path, ['matches', 'notMatches']) : {};
    if (o.matches instanceof RegExp) re = o.matches;
    else if (o.notMatches instanceof RegExp) {
      re = o.notMatches;
      negate = true;
    } else throw new InvalidOptionError(path, 'a RegExp, { matches }, { notMatches }, or an nginx body condition', spec);
  }
  const plain = new RegExp(re.source, re.flags.replace(/[gy]/g, ''));
  return (body) => plain.test(body) !== negate;
}

/** The keys of {@link MatchOptions}. */
const MATCH_OPTIONS = ['status', 'headers', 'body'] as const satisfies ReadonlyArray<keyof MatchOptions>;

/** Compiles a `match` option, throwing {@link InvalidOptionError} naming the field. */
export function compileMatch(match: MatchOptions | undefined, path = 'match'): CompiledMatch {
  const m = objectOption(match, path, MATCH_OPTIONS, 'an object with status, headers or body', true) as MatchOptions;
  const status = compileStatus(m.status, `${path}.status`);
  const headers: HeaderTest[] = [];
  if (m.headers !== undefined) {
    if (Array.isArray(m.headers)) m.headers.forEach((line: unknown, i: number) => headers.push(fromLine(line, `${path}.headers[${i}]`)));
    else if (typeof m.headers === 'object' && m.headers !== null) {
      for (const [name, c] of Object.entries(m.headers as Record<string, HeaderCondition>))
        headers.push(fromCondition(headerName(name, `${path}.headers`), c, `${path}.headers.${name}`));
    } else throw new InvalidOptionError(`${path}.headers`, 'a list of nginx header conditions or an object of conditions', m.headers);
  }
  const body = compileBody(m.body, `${path}.body`);
  return {
    needsBody: body !== undefined,
    test(code, h, text) {
      if (!status(code)) return `status ${code}`;
      for (const t of headers) {
        const raw = h[t.name];
        const value = Array.isArray(raw) ? raw.join(', ') : raw;
        if (!t.test(value)) return `header condition failed: ${t.describe}`;
      }
      if (body !== undefined && !body(text)) return 'body condition failed';
      return undefined;
    },
  };
}
