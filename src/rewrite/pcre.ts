/**
 * nginx's regexes are PCRE; rewrite() runs JavaScript's. This reads a PCRE pattern and writes the
 * JavaScript pattern that matches the same strings, or refuses what it cannot write exactly, so
 * that no pattern is silently read as something else (in JavaScript `\Q`, `\p{L}` without the `u`
 * flag, `\A` or `\h` are plain letters, `[]a]` is an empty class, `.` skips `\r`, and `$` does not
 * match before a final newline).
 *
 * Translated: `\Q…\E` (an escaped literal), options at the start (`(?i)`, `(?s)`, `(?m)`, also
 * `(?-i)`…) and option groups `(?i:…)`, `(?s:…)`, `(?m:…)`, `(*UTF)`/`(*UTF8)` at the start, `\p{…}`
 * and `\P{…}` (with the `u` flag: the pattern then matches characters, where nginx without
 * `(*UTF8)` matches bytes), `(?P<n>…)`, `(?'n'…)`, `(?P=n)`, `\k{n}`, `\k'n'`, `\g{n}`, `\gN`,
 * `(?#…)`, `\A`, `\z`, `\Z`, `\G` (nginx always matches from the start), `\h`, `\v`, `\R`, `\N`,
 * `\a`, `\e`, `\x{…}`, `\o{…}`, `\xH`, `\cX`, POSIX classes (`[[:alpha:]]`), a `]` first in a class,
 * `\s` (ASCII whitespace, as nginx's PCRE tables), and `.`, `^`, `$` with PCRE's newline rules.
 * Refused: possessive quantifiers, atomic groups, `\K`, `\X`, `\C`, recursion and subroutines,
 * conditionals, callouts, branch reset, verbs, options in the middle of a pattern, `(?x)` and the
 * other options JavaScript lacks, `{,n}` (a quantifier from PCRE2 10.43 on, a literal before), and
 * escapes PCRE itself rejects.
 * @internal
 */

/** A PCRE construct that has no exact JavaScript equivalent. @internal */
export class PcreSyntaxError extends Error {
  override name = 'PcreSyntaxError';
}

/**
 * Whether this Node's regular expressions have modifier groups (`(?i:…)`, `(?-i:…)`): V8 12.5 and
 * later, so Node 24 but not Node 22. Without them, a change of case sensitivity inside a pattern
 * cannot be translated and is refused. @internal
 */
export const REGEXP_MODIFIERS = ((): boolean => {
  try {
    // built at run time (a literal would not even parse on Node 22)
    const source = '(?i:a)';
    new RegExp(source);
    return true;
  } catch {
    return false;
  }
})();

/** The translation: a JavaScript source and its flags (`i`, `u`). @internal */
export interface Translated {
  source: string;
  flags: string;
}

interface Mode {
  /** `.` matches a newline (PCRE `s`). */
  dotall: boolean;
  /** `^` and `$` match at internal newlines (PCRE `m`). */
  multiline: boolean;
}

/** Characters a JavaScript pattern needs escaped outside a class. */
const SYNTAX = '^$\\.*+?()[]{}|/';
/** PCRE's \h and \v, as lists for a class. */
const HSPACE = '\\t \\xa0\\u1680\\u180e\\u2000-\\u200a\\u202f\\u205f\\u3000';
const VSPACE = '\\n\\x0b\\f\\r\\x85\\u2028\\u2029';
/** PCRE's \s with its default (ASCII) tables. */
const SPACE = '\\t\\n\\x0b\\f\\r ';
/** What JavaScript's \s matches beyond ASCII. */
const UNICODE_SPACE = '\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff';
const POSIX: Record<string, string> = {
  alpha: 'a-zA-Z',
  digit: '0-9',
  alnum: 'a-zA-Z0-9',
  upper: 'A-Z',
  lower: 'a-z',
  space: SPACE,
  blank: ' \\t',
  xdigit: '0-9A-Fa-f',
  punct: '!-\\/:-@\\[-`{-~',
  word: '\\w',
  cntrl: '\\x00-\\x1f\\x7f',
  print: ' -~',
  graph: '!-~',
  ascii: '\\x00-\\x7f',
};
const REFUSED_ESCAPES: Record<string, string> = {
  K: '"\\K" (reset the match start)',
  X: '"\\X" (an extended grapheme cluster)',
  C: '"\\C" (one code unit)',
};

/** Translates a PCRE pattern; `caseless` is nginx's `~*`. Throws {@link PcreSyntaxError}. @internal */
export function translatePcre(pattern: string, caseless: boolean): Translated {
  return new Translator(pattern, caseless).run();
}

class Translator {
  private i = 0;
  private out = '';
  private caseless: boolean;
  private unicode = false;
  private mode: Mode = { dotall: false, multiline: false };
  /** Option modifiers `(?i)` opened in the current group, closed and reopened at each `|` and closed with the group. */
  private reopen: string[] = [];
  /** The outer groups' mode and modifiers, restored at `)`. */
  private readonly stack: Array<{ mode: Mode; reopen: string[] }> = [];
  /** The last thing written was a quantifier: a `+` after it makes it possessive. */
  private quantified = false;

  private readonly src: string;

  constructor(src: string, caseless: boolean) {
    this.src = src;
    this.caseless = caseless;
  }

  run(): Translated {
    this.leadingOptions();
    const src = this.src;
    while (this.i < src.length) {
      const c = src[this.i]!;
      const wasQuantifier = this.quantified;
      this.quantified = false;
      if (c === '\\') this.escape(false);
      else if (c === '[') this.charClass();
      else if (c === '(') this.group();
      else if (c === ')') {
        const outer = this.stack.pop();
        if (outer === undefined) throw new PcreSyntaxError('a ")" that closes no group');
        this.emit(`${')'.repeat(this.reopen.length)})`);
        this.mode = outer.mode;
        this.reopen = outer.reopen;
      } else if (c === '|') {
        // An option set in the middle of a group covers the rest of it, later alternatives too.
        this.emit(`${')'.repeat(this.reopen.length)}|${this.reopen.map((m) => `(?${m}:`).join('')}`);
      } else if (c === '*' || c === '+' || c === '?') {
        if (wasQuantifier && c === '+') throw new PcreSyntaxError('a possessive quantifier ("*+", "++", "?+", "{n}+")');
        this.emit(c);
        // `*?` is lazy: no further quantifier may follow it.
        this.quantified = !(wasQuantifier && c === '?');
      } else if (c === '{') this.brace();
      else if (c === '}' || c === ']') this.emit(`\\${c}`);
      else if (c === '.') this.emit(this.mode.dotall ? '[\\s\\S]' : '[^\\n]');
      else if (c === '^') this.emit(this.mode.multiline ? '(?:(?<![\\s\\S])|(?<=\\n)(?=[\\s\\S]))' : '^');
      else if (c === '$') this.emit(this.mode.multiline ? '(?=\\n|(?![\\s\\S]))' : '(?=\\n?(?![\\s\\S]))');
      else this.emit(c);
    }
    this.out += ')'.repeat(this.reopen.length);
    return { source: this.out, flags: `${this.caseless ? 'i' : ''}${this.unicode ? 'u' : ''}` };
  }

  private emit(text: string): void {
    this.out += text;
    this.i++;
  }

  /** `(*UTF)`, `(*UTF8)` and option settings such as `(?i)` or `(?s-i)` at the very start. */
  private leadingOptions(): void {
    for (;;) {
      const rest = this.src.slice(this.i);
      const verb = /^\(\*(UTF8?|[A-Z_]+(?:=\d+)?)\)/.exec(rest);
      if (verb !== null) {
        if (verb[1] !== 'UTF' && verb[1] !== 'UTF8') throw new PcreSyntaxError(`the verb "(*${verb[1]})"`);
        this.unicode = true;
        this.i += verb[0].length;
        continue;
      }
      const opts = /^\(\?([A-Za-z]*)(?:-([A-Za-z]*))?\)/.exec(rest);
      if (opts === null) return;
      this.applyOptions(opts[1]!, opts[2] ?? '', opts[0], true);
      this.i += opts[0].length;
    }
  }

  /** Applies `(?on-off)` to the current mode; returns the JavaScript modifier text for `i` (none when `leading`: the flag). */
  private applyOptions(on: string, off: string, text: string, leading: boolean): string {
    let js = '';
    for (const [letters, value] of [
      [on, true],
      [off, false],
    ] as const) {
      for (const f of letters) {
        if (f === 'i') {
          if (leading) this.caseless = value;
          else if (!REGEXP_MODIFIERS)
            throw new PcreSyntaxError(`"${text}" inside the pattern (a change of case sensitivity there needs JavaScript's modifier groups: Node 24)`);
          else js += value ? 'i' : '-i';
        } else if (f === 's') this.mode = { ...this.mode, dotall: value };
        else if (f === 'm') this.mode = { ...this.mode, multiline: value };
        else throw new PcreSyntaxError(`the option "${f}" in "${text}"`);
      }
    }
    return js;
  }

  private group(): void {
    const rest = this.src.slice(this.i);
    if (!rest.startsWith('(?') && !rest.startsWith('(*')) {
      this.open();
      this.emit('(');
      return;
    }
    if (rest.startsWith('(*')) throw new PcreSyntaxError(`the verb "${/^\(\*[^)]*\)?/.exec(rest)![0]}"`);
    const comment = /^\(\?#[^)]*\)/.exec(rest);
    if (comment !== null) {
      this.i += comment[0].length;
      // A comment between an atom and its quantifier keeps the atom quantifiable.
      return;
    }
    const named = /^\(\?(?:P?<|')([A-Za-z_][A-Za-z0-9_]*)[>']/.exec(rest);
    if (named !== null && !rest.startsWith('(?<=') && !rest.startsWith('(?<!')) {
      this.open();
      this.out += `(?<${named[1]}>`;
      this.i += named[0].length;
      return;
    }
    const backref = /^\(\?P=([A-Za-z_][A-Za-z0-9_]*)\)/.exec(rest);
    if (backref !== null) {
      this.out += `\\k<${backref[1]}>`;
      this.i += backref[0].length;
      return;
    }
    const plain = /^\(\?(?::|=|!|<=|<!)/.exec(rest);
    if (plain !== null) {
      this.open();
      this.out += plain[0];
      this.i += plain[0].length;
      return;
    }
    const what: Array<[RegExp, string]> = [
      [/^\(\?>/, 'an atomic group "(?>…)"'],
      [/^\(\?\|/, 'a branch reset group "(?|…)"'],
      [/^\(\?\(/, 'a conditional group "(?(…)…)"'],
      [/^\(\?C/, 'a callout "(?C…)"'],
      [/^\(\?(?:R|[+-]?\d|&|P>)/, 'recursion or a subroutine call'],
    ];
    for (const [re, name] of what) if (re.test(rest)) throw new PcreSyntaxError(`${name}`);
    const opts = /^\(\?([A-Za-z]*)(?:-([A-Za-z]*))?(:|\))/.exec(rest);
    if (opts !== null && opts[3] === ')') {
      // `(?i)` mid-pattern: a modifier group to the end of the enclosing group (s and m change the mode).
      const js = this.applyOptions(opts[1]!, opts[2] ?? '', opts[0], false);
      for (const m of js.split(/(?=-)/).filter((x) => x !== '')) {
        this.out += `(?${m}:`;
        this.reopen.push(m);
      }
      this.i += opts[0].length;
      return;
    }
    if (opts !== null) {
      this.open();
      const js = this.applyOptions(opts[1]!, opts[2] ?? '', opts[0], false);
      // s and m are carried by the translation of `.`, `^` and `$`; only i needs JavaScript's modifiers.
      const on = js.replace(/-i/g, '');
      const off = js.includes('-i') ? '-i' : '';
      this.out += on === '' && off === '' ? '(?:' : `(?${on}${off}:`;
      this.i += opts[0].length;
      return;
    }
    throw new PcreSyntaxError(`the group "${rest.slice(0, 4)}…"`);
  }

  /** Enters a group: the current mode and modifiers come back at its `)`. */
  private open(): void {
    this.stack.push({ mode: this.mode, reopen: this.reopen });
    this.reopen = [];
  }

  /** `{n}`, `{n,}`, `{n,m}` are quantifiers; `{,n}` is ambiguous; any other `{` is a literal. */
  private brace(): void {
    const rest = this.src.slice(this.i);
    const q = /^\{\d+(?:,\d*)?\}/.exec(rest);
    if (q !== null) {
      this.out += q[0];
      this.i += q[0].length;
      this.quantified = true;
      return;
    }
    if (/^\{\s*,\s*\d+\s*\}/.test(rest)) throw new PcreSyntaxError('"{,n}" (a quantifier in PCRE2 10.43 and later, a literal before)');
    this.emit('\\{');
  }

  private charClass(): void {
    const src = this.src;
    this.i++;
    let out = '[';
    if (src[this.i] === '^') {
      out += '^';
      this.i++;
    }
    // A `]` first in a class is a literal in PCRE (JavaScript reads `[]` as an empty class).
    if (src[this.i] === ']') {
      out += '\\]';
      this.i++;
    }
    this.out += out;
    for (;;) {
      const c = src[this.i];
      if (c === undefined) throw new PcreSyntaxError('a "]" closing the character class');
      if (c === ']') {
        this.emit(']');
        return;
      }
      if (c === '\\') this.escape(true);
      else if (c === '[') {
        const posix = /^\[:(\^?)([a-z]+):\]/.exec(src.slice(this.i));
        if (posix === null) this.emit('\\[');
        else {
          const set = POSIX[posix[2]!];
          if (set === undefined) throw new PcreSyntaxError(`the POSIX class "[:${posix[2]}:]"`);
          if (posix[1] === '^') throw new PcreSyntaxError(`the negated POSIX class "[:^${posix[2]}:]"`);
          this.out += set;
          this.i += posix[0].length;
        }
      } else this.emit(c);
    }
  }

  /** One escape at `this.i` (a backslash), inside a class or not. */
  private escape(inClass: boolean): void {
    const src = this.src;
    const d = src[this.i + 1];
    if (d === undefined) throw new PcreSyntaxError('"\\" at the end of the pattern');
    const rest = src.slice(this.i + 1);
    const take = (length: number, text: string): void => {
      this.out += text;
      this.i += 1 + length;
    };
    const outside = (name: string): void => {
      if (inClass) throw new PcreSyntaxError(`"\\${name}" inside a character class`);
    };
    if (d === 'Q') {
      const end = src.indexOf('\\E', this.i + 2);
      const literal = src.slice(this.i + 2, end === -1 ? src.length : end);
      const escaped = [...literal].map((ch) => (inClass ? classLiteral(ch) : literalChar(ch))).join('');
      // A quantifier after `\Q…\E` applies to its last character, as in PCRE.
      take(1 + literal.length + (end === -1 ? 0 : 2), escaped);
      return;
    }
    if (d === 'E') return take(1, '');
    if (/[0-9]/.test(d)) {
      // In a class every digit escape is octal (`\8`, `\9` are refused, as PCRE2 does).
      const octal = inClass ? /^[0-7]{1,3}/.exec(rest) : /^0[0-7]{0,2}/.exec(rest);
      if (inClass && octal === null) throw new PcreSyntaxError(`the escape "\\${d}" inside a character class`);
      if (octal !== null) return take(octal[0].length, hex(Number.parseInt(octal[0], 8)));
      const digits = /^\d+/.exec(rest)![0];
      return take(digits.length, `\\${digits}`);
    }
    if (!/[A-Za-z]/.test(d)) {
      if (inClass) return take(1, classLiteral(d));
      return take(1, literalChar(d));
    }
    switch (d) {
      case 'd':
      case 'D':
      case 'w':
      case 'W':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        return take(1, `\\${d}`);
      case 'b':
        return take(1, '\\b');
      case 'B':
        outside('B');
        return take(1, '\\B');
      case 's':
        return take(1, inClass ? SPACE : `[${SPACE}]`);
      case 'S':
        // In a class: JavaScript's \S and the non-ASCII spaces it leaves out (PCRE's \S takes them).
        return take(1, inClass ? `\\S${UNICODE_SPACE}` : `[^${SPACE}]`);
      case 'h':
        return take(1, inClass ? HSPACE : `[${HSPACE}]`);
      case 'H':
        outside('H');
        return take(1, `[^${HSPACE}]`);
      case 'v':
        return take(1, inClass ? VSPACE : `[${VSPACE}]`);
      case 'V':
        outside('V');
        return take(1, `[^${VSPACE}]`);
      case 'R':
        outside('R');
        return take(1, `(?:\\r\\n|[${VSPACE}])`);
      case 'N':
        outside('N');
        if (rest.startsWith('N{')) throw new PcreSyntaxError('"\\N{…}"');
        return take(1, '[^\\n]');
      case 'a':
        return take(1, '\\x07');
      case 'e':
        return take(1, '\\x1b');
      case 'A':
      case 'G':
        outside(d);
        return take(1, '(?<![\\s\\S])');
      case 'z':
        outside('z');
        return take(1, '(?![\\s\\S])');
      case 'Z':
        outside('Z');
        return take(1, '(?=\\n?(?![\\s\\S]))');
      case 'x': {
        const braced = /^x\{([0-9A-Fa-f]+)\}/.exec(rest);
        if (braced !== null) return take(braced[0].length, this.codePoint(Number.parseInt(braced[1]!, 16)));
        const short = /^x([0-9A-Fa-f]{0,2})/.exec(rest)!;
        return take(short[0].length, hex(short[1] === '' ? 0 : Number.parseInt(short[1]!, 16)));
      }
      case 'o': {
        const braced = /^o\{([0-7]+)\}/.exec(rest);
        if (braced === null) throw new PcreSyntaxError('"\\o" without "{octal digits}"');
        return take(braced[0].length, this.codePoint(Number.parseInt(braced[1]!, 8)));
      }
      case 'c': {
        const ch = rest[1];
        if (ch === undefined || ch < ' ' || ch > '~') throw new PcreSyntaxError('"\\c" followed by a printable ASCII character');
        return take(2, hex(ch.toUpperCase().charCodeAt(0) ^ 0x40));
      }
      case 'k':
      case 'g':
        outside(d);
        return take(...this.reference(rest));
      case 'p':
      case 'P':
        return take(...this.property(rest));
      default:
        throw new PcreSyntaxError(REFUSED_ESCAPES[d] === undefined ? `the escape "\\${d}"` : `${REFUSED_ESCAPES[d]}`);
    }
  }

  /** A code point from `\x{…}` or `\o{…}`: beyond U+FFFF it needs the `u` flag. */
  private codePoint(cp: number): string {
    if (cp > 0x10ffff) throw new PcreSyntaxError(`the code point ${cp.toString(16)} (beyond U+10FFFF)`);
    if (cp <= 0xffff) return hex(cp);
    this.unicode = true;
    return `\\u{${cp.toString(16)}}`;
  }

  /** `\k<n>`, `\k{n}`, `\k'n'`, `\g{n}`, `\gN`, `\g{N}`: the length read and the JavaScript text. */
  private reference(rest: string): [number, string] {
    const name = /^[kg](?:<([A-Za-z_]\w*)>|\{([A-Za-z_]\w*)\}|'([A-Za-z_]\w*)')/.exec(rest);
    if (name !== null && !(rest[0] === 'g' && name[1] !== undefined)) return [name[0].length, `\\k<${name[1] ?? name[2] ?? name[3]}>`];
    const number = /^g(?:\{(\d+)\}|(\d+))/.exec(rest);
    if (number !== null && Number(number[1] ?? number[2]) > 0) return [number[0].length, `\\${Number(number[1] ?? number[2])}`];
    throw new PcreSyntaxError(`the reference "\\${rest.slice(0, 6)}" (relative references and subroutine calls have no JavaScript equivalent)`);
  }

  /** `\pL`, `\p{Lu}`, `\p{^Lu}`, `\P{Greek}`, `\p{L&}`: the `u` flag's properties. */
  private property(rest: string): [number, string] {
    const m = /^([pP])(?:\{(\^?)([A-Za-z_& ]+)\}|([A-Za-z]))/.exec(rest);
    if (m === null) throw new PcreSyntaxError(`the property "\\${rest.slice(0, 8)}"`);
    const negated = (m[1] === 'P') !== (m[2] === '^');
    const name = (m[3] ?? m[4]!).replace(/[ _]/g, '');
    const js = name === 'L&' ? 'LC' : name;
    for (const candidate of [js, `Script=${js}`]) {
      try {
        new RegExp(`\\p{${candidate}}`, 'u');
      } catch {
        continue;
      }
      this.unicode = true;
      return [m[0].length, `\\${negated ? 'P' : 'p'}{${candidate}}`];
    }
    throw new PcreSyntaxError(`the property "${name}" (JavaScript knows general categories, binary properties and scripts)`);
  }
}

/** `\xHH` or `\uHHHH`. */
function hex(code: number): string {
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** A literal character outside a class. */
function literalChar(ch: string): string {
  return SYNTAX.includes(ch) ? `\\${ch}` : ch;
}

/** A literal character inside a class. */
function classLiteral(ch: string): string {
  return '\\]^-['.includes(ch) ? `\\${ch}` : ch;
}
