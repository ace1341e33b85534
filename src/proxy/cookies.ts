import type { Exchange } from '../core/exchange.ts';

/** One rewrite of a Set-Cookie attribute (nginx `proxy_cookie_domain` / `proxy_cookie_path`). */
export interface CookieRewriteRule {
  /** A string matches the attribute's value case-insensitively (whole value); a RegExp is matched against it. */
  readonly from: string | RegExp;
  /** The replacement: nginx variables, and `$1`… after a RegExp. */
  readonly to: string;
}

/** A flag nginx's `proxy_cookie_flags` adds (or, with `no`, removes). */
export type CookieFlag = 'secure' | 'nosecure' | 'httponly' | 'nohttponly' | 'samesite=strict' | 'samesite=lax' | 'samesite=none' | 'nosamesite';

/** Flags for the cookies one name (or a RegExp over names) selects (nginx `proxy_cookie_flags`). */
export interface CookieFlagsRule {
  /** The cookie's name (exact), or a RegExp over names. */
  readonly cookie: string | RegExp;
  /** The flags to add or remove. */
  readonly flags: readonly CookieFlag[];
}

/** The cookie options balance() takes. */
export interface CookieOptions {
  /** Rewrites of the Domain attribute, first match wins (nginx `proxy_cookie_domain`); `false` is off. @default false */
  cookieDomain?: false | readonly CookieRewriteRule[] | undefined;
  /** Rewrites of the Path attribute, first match wins (nginx `proxy_cookie_path`); `false` is off. @default false */
  cookiePath?: false | readonly CookieRewriteRule[] | undefined;
  /** Flags set on cookies by name, first match wins (nginx `proxy_cookie_flags`); `false` is off. @default false */
  cookieFlags?: false | readonly CookieFlagsRule[] | undefined;
}

/** The compiled cookie options. @internal */
export interface CookieRules {
  readonly kind: 'cookie-rules';
}

/**
 * Validates and compiles the cookie options once; `undefined` when none is set.
 * @internal
 */
export function cookieRules(_options: CookieOptions): CookieRules | undefined {
  return undefined;
}

/**
 * One Set-Cookie value with the rules applied.
 * @internal
 */
export function rewriteSetCookie(_rules: CookieRules, value: string, _ex: Exchange): string {
  return value;
}
