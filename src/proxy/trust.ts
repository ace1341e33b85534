import { BlockList, isIP } from 'node:net';
import { InvalidOptionError } from '../core/errors.ts';

/**
 * Which peers are trusted proxies whose X-Forwarded-* and Forwarded headers
 * are believed: `true` (every peer), `false` (none), addresses and CIDR ranges
 * (`'10.0.0.0/8'`, `'::1'`, `'loopback'`), or a function of the address.
 */
export type TrustProxy = boolean | string | readonly string[] | ((address: string) => boolean);

/** A compiled trust test. @internal */
export type TrustTest = (address: string) => boolean;

const NAMED: Record<string, string[]> = {
  loopback: ['127.0.0.0/8', '::1/128'],
  linklocal: ['169.254.0.0/16', 'fe80::/10'],
  uniquelocal: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
};

/** Strips the IPv4-mapped prefix so `::ffff:10.0.0.1` is treated as `10.0.0.1`. */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

const PORT = /^:\d{1,5}$/;

/**
 * The address in one X-Forwarded-For entry, or undefined when the entry is not
 * an address (`unknown`, a host name, an obfuscated identifier, garbage). An
 * address may carry a port, as some proxies write it: `192.0.2.1:8080`,
 * `[2001:db8::1]:8080` or `[2001:db8::1]`; the port is dropped, and an
 * IPv4-mapped address is made plain. @internal
 */
export function forwardedAddress(entry: string): string | undefined {
  if (isIP(entry) !== 0) return plainAddress(entry);
  let host: string;
  let port: string;
  if (entry.startsWith('[')) {
    const close = entry.indexOf(']');
    host = entry.slice(1, close);
    port = entry.slice(close + 1);
    if (close === -1 || isIP(host) !== 6) return undefined;
  } else {
    const colon = entry.indexOf(':');
    host = entry.slice(0, colon);
    port = entry.slice(colon);
    if (colon === -1 || isIP(host) !== 4) return undefined;
  }
  if (port !== '' && !(PORT.test(port) && Number(port.slice(1)) <= 65535)) return undefined;
  return plainAddress(host);
}

/** Compiles a {@link TrustProxy} option once. @internal */
export function compileTrust(option: TrustProxy | undefined, name: string): TrustTest {
  if (option === undefined || option === false) return () => false;
  if (option === true) return () => true;
  if (typeof option === 'function') return (a) => option(plainAddress(a)) === true;
  const list = typeof option === 'string' ? option.split(',').map((s) => s.trim()) : option;
  if (!Array.isArray(list)) throw new InvalidOptionError(name, 'a boolean, addresses or CIDR ranges, or a function', option);
  const blocks = new BlockList();
  for (const [i, raw] of list.entries()) {
    const entries = typeof raw === 'string' && NAMED[raw] !== undefined ? NAMED[raw]! : [raw];
    for (const entry of entries) {
      if (typeof entry !== 'string') throw new InvalidOptionError(`${name}[${i}]`, 'an address or CIDR range', entry);
      const [addr, bits] = entry.split('/') as [string, string | undefined];
      const family = isIP(addr);
      if (family === 0) throw new InvalidOptionError(`${name}[${i}]`, 'an IP address, a CIDR range, or loopback/linklocal/uniquelocal', entry);
      const type = family === 4 ? 'ipv4' : 'ipv6';
      if (bits === undefined) {
        blocks.addAddress(addr, type);
      } else {
        const prefix = Number(bits);
        if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) {
          throw new InvalidOptionError(`${name}[${i}]`, 'a valid CIDR prefix length', entry);
        }
        blocks.addSubnet(addr, prefix, type);
      }
    }
  }
  return (address) => {
    const a = plainAddress(address);
    const family = isIP(a);
    return family !== 0 && blocks.check(a, family === 4 ? 'ipv4' : 'ipv6');
  };
}
