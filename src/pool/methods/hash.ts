import type { IncomingMessage } from 'node:http';
import { crc32 } from 'node:zlib';
import { InvalidOptionError } from '../../core/errors.ts';
import { compileTemplate } from '../../core/variables.ts';
import type { Peer } from '../peer.ts';
import { roundRobin, smoothStep } from './round-robin.ts';
import { booleanParameter, HASHED_CAPABILITIES, type Balancer, type MethodDefinition, type PeerSet, type Selection } from './types.ts';

/** Computes the hash key of a request (a compiled variables template or the user's function). @internal */
export type KeyFunction = (sel: Selection) => string;

function walkWeights(list: readonly Peer[], w: number): Peer {
  let i = 0;
  while (w >= list[i]!.weight) {
    w -= list[i]!.weight;
    i++;
  }
  return list[i]!;
}

function keyOf(sel: Selection, key: KeyFunction): string {
  if (sel.key === undefined) sel.key = key(sel);
  return sel.key;
}

/**
 * `hash`: nginx's generic hash, compatible with Cache::Memcached: 15 bits of
 * crc32 of the key (prefixed by the retry count from the second try on),
 * accumulated, modulo the total weight over weighted slots in config order.
 */
export function createHash(key: KeyFunction): Balancer {
  return {
    select(peers, sel) {
      const k = keyOf(sel, key);
      if (sel.tries > 20 || peers.primary.length < 2 || k === '') return roundRobin(peers, sel);
      for (;;) {
        const text = sel.rehash > 0 ? `${sel.rehash}${k}` : k;
        sel.hash += (crc32(text) >>> 16) & 0x7fff;
        sel.rehash++;
        const peer = walkWeights(peers.primary, sel.hash % peers.totalWeight);
        if (!sel.tried.has(peer) && peer.usable(sel.now)) return peer;
        if (++sel.tries > 20) return roundRobin(peers, sel);
      }
    },
  };
}

interface Point {
  hash: number;
  /** The `server` text of the peers this point belongs to. */
  server: string;
}

/**
 * `hash … consistent`: ketama as Cache::Memcached::Fast with 160 points per unit
 * of weight, each point `crc32(HOST \0 PORT ++ previous point, little-endian)`,
 * HOST and PORT cut from the url's authority as written (nginx's `server` text).
 * Removing a server moves only the keys that were on it.
 */
export function createConsistentHash(key: KeyFunction): Balancer {
  let points: Point[] = [];
  const le = Buffer.alloc(4);
  const rebuild = (peers: PeerSet): void => {
    const all: Point[] = [];
    for (const peer of peers.primary) {
      const server = peer.target.server;
      const colon = server.lastIndexOf(':');
      const hasPort = colon !== -1 && /^\d*$/.test(server.slice(colon + 1));
      const host = hasPort ? server.slice(0, colon) : server;
      const port = hasPort ? server.slice(colon + 1) : '';
      const base = crc32(Buffer.from(`${host}\0${port}`, 'utf8')); // the text as written (a config file's bytes)
      let prev = 0;
      for (let j = 0; j < 160 * peer.weight; j++) {
        le.writeUInt32LE(prev >>> 0, 0);
        const h = crc32(le, base) >>> 0;
        all.push({ hash: h, server });
        prev = h;
      }
    }
    all.sort((a, b) => a.hash - b.hash);
    const unique: Point[] = [];
    for (const p of all) if (unique.length === 0 || unique[unique.length - 1]!.hash !== p.hash) unique.push(p);
    points = unique;
  };
  const findPoint = (hash: number): number => {
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]!.hash < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return {
    rebuild,
    select(peers, sel) {
      const first = sel.key === undefined;
      const k = keyOf(sel, key);
      if (sel.tries > 20 || peers.primary.length < 2 || k === '' || points.length === 0) return roundRobin(peers, sel);
      if (first) sel.hash = findPoint(crc32(k) >>> 0);
      for (;;) {
        const server = points[sel.hash % points.length]!.server;
        const best = smoothStep(peers.primary, sel, (peer) => peer.target.server === server);
        if (best !== undefined) return best;
        sel.hash++;
        if (++sel.tries > 20) return roundRobin(peers, sel);
      }
    },
  };
}

/** Bytes nginx's ip_hash uses: 3 octets of IPv4 (v4-mapped IPv6 included), 16 of IPv6, `0.0.0` otherwise. @internal */
export function ipHashBytes(address: string): number[] {
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.\d{1,3}$/i.exec(address);
  if (v4 !== null) return [Number(v4[1]), Number(v4[2]), Number(v4[3])];
  const v6 = expandIPv6(address);
  return v6 ?? [0, 0, 0];
}

function expandIPv6(address: string): number[] | undefined {
  let text = address;
  const zone = text.indexOf('%');
  if (zone !== -1) text = text.slice(0, zone);
  if (!text.includes(':')) return undefined;
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const maybeV4 = text.slice(lastColon + 1);
  if (maybeV4.includes('.')) {
    const parts = maybeV4.split('.').map(Number);
    if (parts.length !== 4 || parts.some((n) => !(n >= 0 && n <= 255))) return undefined;
    tail = parts;
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] === '' ? [] : halves[0]!.split(':');
  const rest = halves.length === 2 ? (halves[1] === '' ? [] : halves[1]!.split(':')) : [];
  const fill = halves.length === 2 ? 8 - head.length - rest.length : 0;
  const groups = [...head, ...Array<string>(Math.max(0, fill)).fill('0'), ...rest];
  if (groups.length !== 8) return undefined;
  const bytes: number[] = [];
  for (const g of groups) {
    if (!/^[0-9a-f]{1,4}$/i.test(g)) return undefined;
    const n = parseInt(g, 16);
    bytes.push(n >> 8, n & 0xff);
  }
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

/**
 * `ip-hash`: nginx's ip_hash over the client address (3 octets of IPv4, so a
 * /24 shares a server; the whole IPv6 address). Down servers keep their slot.
 */
export function createIpHash(address: (sel: Selection) => string): Balancer {
  return {
    select(peers, sel) {
      if (sel.tries > 20 || peers.primary.length < 2) return roundRobin(peers, sel);
      if (sel.key === undefined) {
        sel.key = address(sel);
        sel.hash = 89;
      }
      const bytes = ipHashBytes(sel.key);
      let hash = sel.hash;
      for (;;) {
        for (const b of bytes) hash = (hash * 113 + b) % 6271;
        const peer = walkWeights(peers.primary, hash % peers.totalWeight);
        if (!sel.tried.has(peer) && peer.usable(sel.now)) {
          sel.hash = hash;
          return peer;
        }
        if (++sel.tries > 20) return roundRobin(peers, sel);
      }
    },
  };
}

/** The `key` parameter of `hash`: a variables template, or the user's function of the request. */
function compileKey(key: unknown, option: string): KeyFunction {
  if (typeof key === 'function') {
    const fn = key as (req: IncomingMessage) => string;
    return (sel) => (sel.req === undefined ? '' : String(fn(sel.req) ?? ''));
  }
  if (typeof key !== 'string' || key === '') throw new InvalidOptionError(option, 'a non-empty variables template such as "$request_uri", or a function', key);
  const template = compileTemplate(key, option);
  return (sel) => (sel.ex === undefined ? '' : template(sel.ex));
}

/** Parameters of `hash`. */
interface HashParams {
  key: KeyFunction;
  consistent: boolean;
}

/** The registry's entry for `hash` (nginx `hash key [consistent]`). */
export const HASH: MethodDefinition<HashParams> = {
  name: 'hash',
  parameters: { key: compileKey, consistent: booleanParameter },
  capabilities: () => HASHED_CAPABILITIES,
  create: (p) => (p.consistent ? createConsistentHash(p.key) : createHash(p.key)),
};

/** The registry's entry for `ip-hash` (nginx `ip_hash`): the client address as the exchange record has it. */
export const IP_HASH: MethodDefinition<Record<never, never>> = {
  name: 'ip-hash',
  parameters: {},
  capabilities: () => HASHED_CAPABILITIES,
  create: () => createIpHash((sel) => sel.ex?.clientAddress ?? sel.req?.socket?.remoteAddress ?? ''),
};
