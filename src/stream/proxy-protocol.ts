// The PROXY protocol (HAProxy's specification, versions 1 and 2): the header streamBalance() sends
// an upstream before the client's bytes (nginx `proxy_protocol on`), and the one it reads from a
// trusted client (nginx `listen ... proxy_protocol`).
import { isIP } from 'node:net';

/** The addresses a PROXY protocol header carries. @internal */
export interface ProxyAddresses {
  /** The client's address and port. */
  readonly sourceAddress: string;
  readonly sourcePort: number;
  /** The address and port the client connected to. */
  readonly destinationAddress: string;
  readonly destinationPort: number;
}

/** The 12-byte signature of a version 2 header. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** A version 1 header is at most 107 bytes, CRLF included. */
const V1_MAX = 107;
/** Longest version 2 header accepted: 16 bytes and the addresses with their TLVs (nginx reads at most 4096 in all). */
const V2_MAX = 4096;

/** `::ffff:10.0.0.1` as `10.0.0.1`: the family a header names is the address's own. */
function plain(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/**
 * The PROXY protocol header for a connection (`transport` `'tcp'` or `'udp'`, the latter only in
 * version 2). Addresses of two families (a client over IPv6 to an IPv4 listener) are sent as
 * `UNKNOWN` (v1) or with the LOCAL-like unspecified family (v2), as the specification asks. @internal
 */
export function proxyHeader(version: 'v1' | 'v2', a: ProxyAddresses, transport: 'tcp' | 'udp' = 'tcp'): Buffer {
  const src = plain(a.sourceAddress);
  const dst = plain(a.destinationAddress);
  const family = isIP(src);
  const known = family !== 0 && family === isIP(dst);
  if (version === 'v1') {
    if (!known) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
    return Buffer.from(`PROXY ${family === 4 ? 'TCP4' : 'TCP6'} ${src} ${dst} ${a.sourcePort} ${a.destinationPort}\r\n`, 'latin1');
  }
  if (!known) {
    // PROXY command, AF_UNSPEC: the receiver uses the connection's own addresses
    return Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x00, 0x00, 0x00])]);
  }
  const size = family === 4 ? 12 : 36;
  const out = Buffer.alloc(16 + size);
  V2_SIGNATURE.copy(out, 0);
  out[12] = 0x21; // version 2, PROXY command
  out[13] = (family === 4 ? 0x10 : 0x20) | (transport === 'tcp' ? 0x01 : 0x02);
  out.writeUInt16BE(size, 14);
  const addrBytes = family === 4 ? ipv4Bytes : ipv6Bytes;
  const s = addrBytes(src);
  const d = addrBytes(dst);
  s.copy(out, 16);
  d.copy(out, 16 + s.length);
  out.writeUInt16BE(a.sourcePort, 16 + 2 * s.length);
  out.writeUInt16BE(a.destinationPort, 18 + 2 * s.length);
  return out;
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

function ipv6Bytes(address: string): Buffer {
  const out = Buffer.alloc(16);
  let text = address;
  // an embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) becomes two groups
  const dot = text.lastIndexOf(':');
  if (text.includes('.', dot)) {
    const v4 = ipv4Bytes(text.slice(dot + 1));
    text = `${text.slice(0, dot + 1)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined];
  const first = head === '' ? [] : head.split(':');
  const last = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...first, ...new Array<string>(8 - first.length - last.length).fill('0'), ...last];
  groups.forEach((g, i) => out.writeUInt16BE(Number.parseInt(g, 16), 2 * i));
  return out;
}

function ipv6Text(b: Buffer, at: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(at + 2 * i).toString(16));
  // the shortest form Node itself prints
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
}

/** What reading a client's PROXY protocol header found. @internal */
export type ProxyParse =
  /** More bytes are needed. */
  | { readonly state: 'more' }
  /** Not a valid header: the connection is refused (nginx closes it, status 400). */
  | { readonly state: 'invalid'; readonly reason: string }
  /**
   * A header of `length` bytes: its addresses, or undefined for `UNKNOWN` / LOCAL / an
   * unsupported family (the connection's own addresses stay).
   */
  | { readonly state: 'done'; readonly length: number; readonly addresses: ProxyAddresses | undefined };

const V1 = /^PROXY (?:UNKNOWN(?: [^\r\n]*)?|(TCP4|TCP6) (\S+) (\S+) (\d{1,5}) (\d{1,5}))\r\n/;

/** Reads a PROXY protocol header (either version) at the start of `data`. @internal */
export function parseProxyHeader(data: Buffer): ProxyParse {
  if (data.length === 0) return { state: 'more' };
  if (data[0] === 0x0d) {
    const n = Math.min(data.length, V2_SIGNATURE.length);
    if (!data.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) return { state: 'invalid', reason: 'not a PROXY protocol header' };
    if (data.length < 16) return { state: 'more' };
    const version = data[12]! >> 4;
    const command = data[12]! & 0x0f;
    if (version !== 2 || command > 1) return { state: 'invalid', reason: 'unsupported PROXY protocol version or command' };
    const length = 16 + data.readUInt16BE(14);
    if (length > V2_MAX) return { state: 'invalid', reason: 'PROXY protocol header too long' };
    if (data.length < length) return { state: 'more' };
    if (command === 0) return { state: 'done', length, addresses: undefined };
    const family = data[13]! >> 4;
    if (family === 1 && length >= 16 + 12) {
      const ip = (at: number): string => `${data[at]}.${data[at + 1]}.${data[at + 2]}.${data[at + 3]}`;
      return {
        state: 'done',
        length,
        addresses: { sourceAddress: ip(16), destinationAddress: ip(20), sourcePort: data.readUInt16BE(24), destinationPort: data.readUInt16BE(26) },
      };
    }
    if (family === 2 && length >= 16 + 36) {
      return {
        state: 'done',
        length,
        addresses: {
          sourceAddress: ipv6Text(data, 16),
          destinationAddress: ipv6Text(data, 32),
          sourcePort: data.readUInt16BE(48),
          destinationPort: data.readUInt16BE(50),
        },
      };
    }
    if (family === 0 || family === 3) return { state: 'done', length, addresses: undefined };
    return { state: 'invalid', reason: 'PROXY protocol v2 addresses too short' };
  }
  const prefix = Math.min(data.length, 6);
  if (data.toString('latin1', 0, prefix) !== 'PROXY '.slice(0, prefix)) return { state: 'invalid', reason: 'not a PROXY protocol header' };
  const end = data.indexOf('\r\n', 0, 'latin1');
  if (end === -1) return data.length >= V1_MAX ? { state: 'invalid', reason: 'PROXY protocol header too long' } : { state: 'more' };
  const line = data.toString('latin1', 0, end + 2);
  const m = V1.exec(line);
  if (m === null || end + 2 > V1_MAX) return { state: 'invalid', reason: 'malformed PROXY protocol v1 header' };
  if (m[1] === undefined) return { state: 'done', length: end + 2, addresses: undefined };
  const family = m[1] === 'TCP4' ? 4 : 6;
  const [src, dst, sp, dp] = [m[2]!, m[3]!, Number(m[4]), Number(m[5])];
  if (isIP(src) !== family || isIP(dst) !== family || sp > 65535 || dp > 65535) return { state: 'invalid', reason: 'malformed PROXY protocol v1 addresses' };
  return { state: 'done', length: end + 2, addresses: { sourceAddress: src, destinationAddress: dst, sourcePort: sp, destinationPort: dp } };
}
