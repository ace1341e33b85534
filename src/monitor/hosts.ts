// Which Host headers monitor() answers: a defence against DNS rebinding, where a page on another site
// has its own name resolve to the gateway's address and then reads or changes the monitor from the
// operator's browser, as same-origin. Such a request carries that site's name in Host; IP literals
// and `localhost` cannot be rebound.
import { isIP } from 'node:net';
import { InvalidOptionError } from '../core/errors.ts';
import { hostName, validHost } from '../core/http.ts';

/** Host names always allowed besides IP literals (browsers never ask DNS for `localhost`). */
const ALWAYS_ALLOWED = ['localhost'];

const NAME = /^\.?[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/;

/**
 * Compiles `allowedHosts` into a test of a request's Host header: true for an IP literal, `localhost`
 * or a listed name (`.example.org` also allows every name under it), with any port; `true` allows
 * every Host. Validated here, at factory time.
 */
export function hostAllowed(allowed: readonly string[] | true | undefined): (host: string | undefined) => boolean {
  if (allowed === true) return () => true;
  if (allowed !== undefined && !Array.isArray(allowed)) throw new InvalidOptionError('allowedHosts', 'an array of host names, or true', allowed);
  const exact = new Set<string>(ALWAYS_ALLOWED);
  const suffixes: string[] = [];
  (allowed ?? []).forEach((entry: unknown, i) => {
    const name = typeof entry === 'string' ? entry.toLowerCase() : '';
    if (!NAME.test(name) && isIP(name) === 0)
      throw new InvalidOptionError(`allowedHosts[${i}]`, 'a host name without port, such as "gateway.example.org" or ".example.org"', entry);
    if (name.startsWith('.')) {
      exact.add(name.slice(1));
      suffixes.push(name);
    } else exact.add(name);
  });
  return (host) => {
    const name = nameOf(host);
    if (name === undefined) return false;
    if (isIP(name) !== 0 || exact.has(name)) return true;
    for (const s of suffixes) if (name.endsWith(s)) return true;
    return false;
  };
}

/** The name in a Host header ({@link hostName}: lowercase, no port, no trailing dot), without IPv6 brackets; undefined when malformed or absent. */
function nameOf(host: string | undefined): string | undefined {
  if (host === undefined || !validHost(host)) return undefined;
  const name = hostName(host);
  if (!name.startsWith('[')) return name;
  const inside = name.slice(1, -1);
  return isIP(inside) === 6 ? inside : undefined;
}
