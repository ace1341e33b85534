// nginx's `proxy_cookie_domain`, `proxy_cookie_path` and `proxy_cookie_flags`: the Domain and Path
// attributes and the flags of the Set-Cookie headers an upstream sends, rewritten before the client
// gets them. A Set-Cookie value is split and joined as nginx does (ngx_http_proxy_rewrite_cookie): at
// `;`, spaces around names and values dropped; a value nothing applies to is passed on byte for byte,
// one a rule applied to is written again as `name=value; Attr=v; Flag`.
import type { Exchange } from '../core/exchange.ts';
import { InvalidOptionError } from '../core/errors.ts';
import { objectOption, oneOf, optionPath } from '../core/options.ts';
import { compileTemplate, hasVariables, type Template } from '../core/variables.ts';

/**
 * One rewrite of a Set-Cookie attribute (nginx `proxy_cookie_domain` / `proxy_cookie_path`).
 * @example
 * ```ts
 * const rule: CookieRewriteRule = { from: /^(.+)\.internal$/, to: '$1.example.com' };
 * ```
 */
export interface CookieRewriteRule {
  /**
   * A string (which may hold nginx variables) or a RegExp. For `cookieDomain` a string matches the
   * whole Domain value in any case, a leading `.` aside on both sides, and the value keeps its own
   * leading `.`; for `cookiePath` a string matches a prefix of the Path value, case-sensitively, and
   * only that prefix is replaced. A RegExp may match anywhere in the value (anchor it with `^…$`) and
   * the whole value is replaced; `cookieDomain`'s RegExps match in any case (nginx's `~` there),
   * `cookiePath`'s as their flags say (`/…/i` is nginx's `~*`).
   */
  readonly from: string | RegExp;
  /**
   * The replacement: nginx variables (`$host`), and after a RegExp its groups (`$1`…, `$name`). A
   * leading `.` is dropped after a string `from` in `cookieDomain`, as nginx does.
   */
  readonly to: string;
}

/**
 * A flag nginx's `proxy_cookie_flags` adds (or, with `no`, removes). Read in any case, as nginx.
 * @example
 * ```ts
 * const flags: CookieFlag[] = ['secure', 'httponly', 'samesite=lax'];
 * ```
 */
export type CookieFlag = 'secure' | 'nosecure' | 'httponly' | 'nohttponly' | 'samesite=strict' | 'samesite=lax' | 'samesite=none' | 'nosamesite';

/**
 * Flags for the cookies one name (or a RegExp over names) selects (nginx `proxy_cookie_flags`).
 * @example
 * ```ts
 * const rule: CookieFlagsRule = { cookie: 'sid', flags: ['secure', 'httponly', 'samesite=lax'] };
 * ```
 */
export interface CookieFlagsRule {
  /**
   * The cookie's name, compared in any case as nginx does, or a RegExp over names, which may match
   * anywhere in the name and matches in any case (nginx's `~`).
   */
  readonly cookie: string | RegExp;
  /**
   * The flags to add (`secure`, `httponly`, `samesite=strict|lax|none`, the last replacing a SameSite
   * the cookie has) or remove (`nosecure`, `nohttponly`, `nosamesite`). At least one.
   */
  readonly flags: readonly CookieFlag[];
}

/**
 * The cookie options balance() takes.
 * @example
 * ```ts
 * const cookies: CookieOptions = { cookiePath: [{ from: '/app/', to: '/' }], cookieFlags: [{ cookie: 'sid', flags: ['secure'] }] };
 * ```
 */
export interface CookieOptions {
  /** Rewrites of the Domain attribute, first match wins (nginx `proxy_cookie_domain`); `false` is off. @default false */
  cookieDomain?: false | readonly CookieRewriteRule[] | undefined;
  /** Rewrites of the Path attribute, first match wins (nginx `proxy_cookie_path`); `false` is off. @default false */
  cookiePath?: false | readonly CookieRewriteRule[] | undefined;
  /** Flags set on cookies by name, first match wins (nginx `proxy_cookie_flags`); `false` is off. @default false */
  cookieFlags?: false | readonly CookieFlagsRule[] | undefined;
}

/** One compiled rewrite: the attribute's new value, or undefined when the rule does not apply. */
type Rewrite = (value: string, ex: Exchange) => string | undefined;

/** One compiled flags rule: which names it selects, and its flags as a bit mask. */
interface FlagsRule {
  readonly selects: (name: string) => boolean;
  readonly flags: number;
}

/** The compiled cookie options. @internal */
export interface CookieRules {
  readonly kind: 'cookie-rules';
  /** `cookieDomain`, compiled; empty when off. */
  readonly domain: readonly Rewrite[];
  /** `cookiePath`, compiled; empty when off. */
  readonly path: readonly Rewrite[];
  /** `cookieFlags`, compiled; empty when off. */
  readonly flags: readonly FlagsRule[];
}

const SECURE_ON = 1;
const SECURE_OFF = 2;
const HTTPONLY_ON = 4;
const HTTPONLY_OFF = 8;
const SAMESITE_STRICT = 16;
const SAMESITE_LAX = 32;
const SAMESITE_NONE = 64;
const SAMESITE_OFF = 128;
const SAMESITE_SET = SAMESITE_STRICT | SAMESITE_LAX | SAMESITE_NONE;

const FLAG_BITS: Readonly<Record<CookieFlag, number>> = {
  secure: SECURE_ON,
  nosecure: SECURE_OFF,
  httponly: HTTPONLY_ON,
  nohttponly: HTTPONLY_OFF,
  'samesite=strict': SAMESITE_STRICT,
  'samesite=lax': SAMESITE_LAX,
  'samesite=none': SAMESITE_NONE,
  nosamesite: SAMESITE_OFF,
};

const FLAG_NAMES = Object.keys(FLAG_BITS) as CookieFlag[];

/** What Node refuses in a header value (its checkInvalidHeaderChar): CR, LF, NUL and the other controls but tab. */
const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * Validates and compiles the cookie options once; `undefined` when none is set. Reads only
 * `cookieDomain`, `cookiePath` and `cookieFlags` of `options` (balance()'s options may be passed
 * whole). Throws an InvalidOptionError naming the option's path (`cookieDomain[0].from`).
 * @internal
 */
export function cookieRules(options: CookieOptions): CookieRules | undefined {
  const domain = rewriteList(options.cookieDomain, 'cookieDomain', true);
  const path = rewriteList(options.cookiePath, 'cookiePath', false);
  const flags = flagsList(options.cookieFlags, 'cookieFlags');
  if (domain.length === 0 && path.length === 0 && flags.length === 0) return undefined;
  return Object.freeze({ kind: 'cookie-rules', domain, path, flags });
}

function ruleList(value: unknown, option: string, shape: string): readonly unknown[] {
  if (value === undefined || value === false) return [];
  if (!Array.isArray(value)) throw new InvalidOptionError(option, `false or an array of ${shape} rules`, value);
  return value;
}

function rewriteList(value: unknown, option: string, domain: boolean): readonly Rewrite[] {
  return Object.freeze(
    ruleList(value, option, '{ from, to }').map((entry, i) => {
      const path = optionPath(option, i);
      const { from, to } = objectOption(entry, path, ['from', 'to'], 'a { from, to } rule');
      if (typeof to !== 'string') throw new InvalidOptionError(`${path}.to`, 'a string', to);
      if (INVALID_HEADER_CHAR.test(to))
        throw new InvalidOptionError(`${path}.to`, 'a string a header can carry (no CR, LF, NUL, other controls or characters above \\xff)', to);
      if (from instanceof RegExp) return regexRewrite(from, domain, to, `${path}.to`);
      if (typeof from !== 'string' || from === '' || (domain && from === '.')) {
        throw new InvalidOptionError(`${path}.from`, 'a non-empty string or a RegExp', from);
      }
      // nginx drops a leading dot of a string rule's domains (`.example.com` is `example.com`).
      const target = compileTemplate(domain ? withoutDot(to) : to, `${path}.to`);
      const pattern = domain ? withoutDot(from) : from;
      const match = hasVariables(pattern) ? compileTemplate(pattern, `${path}.from`) : () => pattern;
      return domain ? domainRewrite(match, target) : pathRewrite(match, target);
    }),
  );
}

function withoutDot(text: string): string {
  return text.charCodeAt(0) === 46 /* . */ ? text.slice(1) : text;
}

/** A Domain equal to `match` in any case, its own leading dot aside, which it keeps. */
function domainRewrite(match: Template, to: Template): Rewrite {
  return (value, ex) => {
    const dot = value.charCodeAt(0) === 46 /* . */ ? 1 : 0;
    const pattern = match(ex);
    if (!sameIgnoringCase(value, dot, pattern)) return undefined;
    return value.slice(0, dot) + to(ex);
  };
}

/** A Path that starts with `match` (case-sensitive): that prefix replaced. */
function pathRewrite(match: Template, to: Template): Rewrite {
  return (value, ex) => {
    const prefix = match(ex);
    if (prefix === '' || !value.startsWith(prefix)) return undefined;
    return to(ex) + value.slice(prefix.length);
  };
}

/** A RegExp found anywhere in the value: the whole value replaced by `to`, with the match's groups. */
function regexRewrite(from: RegExp, caseless: boolean, to: string, option: string): Rewrite {
  // A global or sticky RegExp would carry lastIndex from one cookie to the next.
  let flags = from.flags.replace(/[gy]/g, '');
  if (caseless && !flags.includes('i')) flags += 'i';
  const re = new RegExp(from.source, flags);
  let match: RegExpExecArray | null = null;
  const replacement = compileTemplate(to, option, (name, get) => {
    if (/^[0-9]$/.test(name)) {
      const i = Number(name);
      return () => match?.[i] ?? '';
    }
    return (ex) => match?.groups?.[name] ?? get(ex);
  });
  return (value, ex) => {
    match = re.exec(value);
    if (match === null) return undefined;
    try {
      return replacement(ex);
    } finally {
      match = null;
    }
  };
}

function flagsList(value: unknown, option: string): readonly FlagsRule[] {
  return Object.freeze(
    ruleList(value, option, '{ cookie, flags }').map((entry, i): FlagsRule => {
      const path = optionPath(option, i);
      const rule = objectOption(entry, path, ['cookie', 'flags'], 'a { cookie, flags } rule');
      const flags = flagBits(rule.flags, `${path}.flags`);
      const cookie = rule.cookie;
      if (cookie instanceof RegExp) {
        // Names match in any case, as nginx's `~` in proxy_cookie_flags.
        let reFlags = cookie.flags.replace(/[gy]/g, '');
        if (!reFlags.includes('i')) reFlags += 'i';
        const re = new RegExp(cookie.source, reFlags);
        return { selects: (name) => re.test(name), flags };
      }
      if (typeof cookie !== 'string' || cookie === '') throw new InvalidOptionError(`${path}.cookie`, 'a cookie name or a RegExp', cookie);
      return { selects: (name) => sameIgnoringCase(name, 0, cookie), flags };
    }),
  );
}

function flagBits(value: unknown, path: string): number {
  if (!Array.isArray(value) || value.length === 0) throw new InvalidOptionError(path, `a non-empty array of flags (${FLAG_NAMES.join(', ')})`, value);
  let bits = 0;
  value.forEach((flag: unknown, i) => {
    // nginx reads the flags in any case.
    const key = typeof flag === 'string' ? flag.toLowerCase() : '';
    if (!Object.hasOwn(FLAG_BITS, key)) {
      throw new InvalidOptionError(
        optionPath(path, i),
        oneOf(FLAG_NAMES),
        flag,
        `Invalid option "${optionPath(path, i)}": unknown cookie flag ${describeFlag(flag)} (known flags: ${FLAG_NAMES.join(', ')})`,
      );
    }
    bits |= FLAG_BITS[key as CookieFlag];
  });
  return bits;
}

function describeFlag(flag: unknown): string {
  return typeof flag === 'string' ? JSON.stringify(flag.length > 40 ? `${flag.slice(0, 40)}…` : flag) : typeof flag;
}

/** True when `value` from `offset` on equals `other`, ASCII letters in any case (nginx's ngx_strncasecmp). */
function sameIgnoringCase(value: string, offset: number, other: string): boolean {
  if (value.length - offset !== other.length) return false;
  for (let i = 0; i < other.length; i++) {
    let a = value.charCodeAt(offset + i);
    let b = other.charCodeAt(i);
    if (a === b) continue;
    if (a >= 65 && a <= 90) a += 32;
    if (b >= 65 && b <= 90) b += 32;
    if (a !== b) return false;
  }
  return true;
}

/** A Set-Cookie value's parts as nginx splits them: `names[0]=values[0]` is the cookie; `null` names are dropped. */
interface Parts {
  readonly names: Array<string | null>;
  readonly values: Array<string | null>;
}

/**
 * Splits at every `;`; around each name and value, spaces (not tabs, as nginx) are dropped; a part
 * without `=` has a `null` value. One pass, linear in the value's length.
 */
function split(value: string): Parts {
  const names: Array<string | null> = [];
  const values: Array<string | null> = [];
  let start = 0;
  for (;;) {
    let last = value.indexOf(';', start);
    if (last === -1) last = value.length;
    while (start < last && value.charCodeAt(start) === 32) start++;
    // Looked for within the part only: a search to the value's end for every part would be quadratic.
    let eq = start;
    while (eq < last && value.charCodeAt(eq) !== 61 /* = */) eq++;
    let nameEnd = eq;
    while (nameEnd > start && value.charCodeAt(nameEnd - 1) === 32) nameEnd--;
    names.push(value.slice(start, nameEnd));
    if (eq < last) {
      let from = eq + 1;
      while (from < last && value.charCodeAt(from) === 32) from++;
      let to = last;
      while (to > from && value.charCodeAt(to - 1) === 32) to--;
      values.push(value.slice(from, to));
    } else {
      values.push(null);
    }
    if (last === value.length) break;
    start = last + 1;
  }
  return { names, values };
}

function isAttribute(name: string | null, lower: string): boolean {
  return name !== null && sameIgnoringCase(name, 0, lower);
}

/**
 * One Set-Cookie value with the rules applied, as nginx does: each Domain and Path attribute
 * (with a value) rewritten by the first rule of its list that applies, then the flags of the first
 * `cookieFlags` rule that selects the cookie's name. A value no rule applies to, or one without a
 * `name=` first, is returned as it came; a rewritten value that would hold a character Node refuses
 * in a header (CR, LF, NUL, other controls) is dropped for the value as it came. Never throws on
 * what an upstream sends; its work is linear in the value's length (besides the user's RegExps).
 * @internal
 */
export function rewriteSetCookie(rules: CookieRules, value: string, ex: Exchange): string {
  if (typeof value !== 'string') return value;
  const parts = split(value);
  const { names, values } = parts;
  if (values[0] === null) return value;
  let changed = false;
  if (rules.domain.length > 0 || rules.path.length > 0) {
    for (let i = 1; i < names.length; i++) {
      const current = values[i];
      if (current === null || current === undefined) continue;
      const list = isAttribute(names[i]!, 'domain') ? rules.domain : isAttribute(names[i]!, 'path') ? rules.path : undefined;
      if (list === undefined) continue;
      for (const rewrite of list) {
        const out = rewrite(current, ex);
        if (out === undefined) continue;
        values[i] = out;
        changed = true;
        break;
      }
    }
  }
  if (rules.flags.length > 0) {
    const name = names[0]!;
    const rule = rules.flags.find((r) => r.selects(name));
    if (rule !== undefined) {
      editFlags(parts, rule.flags);
      changed = true;
    }
  }
  if (!changed) return value;
  let out = '';
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    if (name === null) continue;
    if (i > 0) out += '; ';
    out += name;
    const v = values[i];
    if (v !== null) out += `=${v}`;
  }
  return INVALID_HEADER_CHAR.test(out) ? value : out;
}

/** nginx's ngx_http_proxy_edit_cookie_flags: edits the flags the cookie has, then appends the ones it lacks. */
function editFlags(parts: Parts, mask: number): void {
  const { names, values } = parts;
  let flags = mask;
  for (let i = 1; i < names.length; i++) {
    const name = names[i]!;
    if (isAttribute(name, 'secure')) {
      if (flags & SECURE_ON) flags &= ~SECURE_ON;
      else if (flags & SECURE_OFF) names[i] = null;
    } else if (isAttribute(name, 'httponly')) {
      if (flags & HTTPONLY_ON) flags &= ~HTTPONLY_ON;
      else if (flags & HTTPONLY_OFF) names[i] = null;
    } else if (isAttribute(name, 'samesite')) {
      const wanted = flags & SAMESITE_STRICT ? 'Strict' : flags & SAMESITE_LAX ? 'Lax' : flags & SAMESITE_NONE ? 'None' : undefined;
      if (wanted !== undefined) {
        flags &= ~(flags & SAMESITE_STRICT ? SAMESITE_STRICT : flags & SAMESITE_LAX ? SAMESITE_LAX : SAMESITE_NONE);
        const v = values[i];
        if (v === null || v === undefined || !sameIgnoringCase(v, 0, wanted.toLowerCase())) {
          names[i] = 'SameSite';
          values[i] = wanted;
        }
      } else if (flags & SAMESITE_OFF) {
        names[i] = null;
      }
    }
  }
  if (flags & SECURE_ON) push(parts, 'Secure', null);
  if (flags & HTTPONLY_ON) push(parts, 'HttpOnly', null);
  if (flags & SAMESITE_SET) push(parts, 'SameSite', flags & SAMESITE_STRICT ? 'Strict' : flags & SAMESITE_LAX ? 'Lax' : 'None');
}

function push(parts: Parts, name: string, value: string | null): void {
  parts.names.push(name);
  parts.values.push(value);
}
