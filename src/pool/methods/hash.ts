import type { IncomingMessage } from 'node:http';
import { crc32 } from 'node:zlib';
import { InvalidOptionError } from '../../core/errors.ts';
import { compileTemplate } from '../../core/variables.ts';
import type { Peer } from '../peer.ts';
import { roundRobin, smoothStep } from './round-robin.ts';
import { booleanParameter, HASHED_CAPABILITIES, type Balancer, type MethodDefinition, type PeerSet, type Selection } from './types.ts';

/** Computes the hash key of a request (a compiled variables template or the user's function). @internal */
export type KeyFunction = (sel: Selection) => string;

/**
 * nginx's walk over weighted slots in configuration order (`w` minus each peer's weight until it is
 * below the next one's) as a binary search over the running sums of the weights, made once per list.
 */
class WeightedSlots {
  #list: readonly Peer[] = [];
  /** ends[i]: sum of the weights of peers 0..i. */
  #ends = new Float64Array(0);

  /** The peer whose slot holds `w` (0 <= w < total weight) in `list`. */
  find(list: readonly Peer[], w: number): Peer {
    if (list !== this.#list) {
      this.#list = list;
      this.#ends = new Float64Array(list.length);
      let sum = 0;
      for (let i = 0; i < list.length; i++) this.#ends[i] = sum += list[i]!.weight;
    }
    const ends = this.#ends;
    let lo = 0;
    let hi = ends.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ends[mid]! > w) hi = mid;
      else lo = mid + 1;
    }
    return list[lo]!;
  }
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
  const slots = new WeightedSlots();
  return {
    select(peers, sel) {
      const k = keyOf(sel, key);
      if (sel.tries > 20 || peers.primary.length < 2 || k === '') return roundRobin(peers, sel);
      for (;;) {
        const text = sel.rehash > 0 ? `${sel.rehash}${k}` : k;
        sel.hash += (crc32(text) >>> 16) & 0x7fff;
        sel.rehash++;
        const peer = slots.find(peers.primary, sel.hash % peers.totalWeight);
        if (!sel.tried.has(peer) && peer.usable(sel.now)) return peer;
        if (++sel.tries > 20) return roundRobin(peers, sel);
      }
    },
  };
}

/** Ring points sort by hash, then by server (its first peer's place in the list): 2^21 servers at most. */
const GROUP_BITS = 2 ** 21;
/**
 * Most points a ring holds (16 bytes each while it is made): 160 per unit of weight, so a sum of
 * weights up to 209,715. Weights up to 2^53 - 1 are accepted, and a ring of their points cannot be
 * made (nginx would try to allocate it). @internal
 */
export const MAX_RING_POINTS = 2 ** 25;

/**
 * `hash … consistent`: ketama as Cache::Memcached::Fast with 160 points per unit
 * of weight, each point `crc32(HOST \0 PORT ++ previous point, little-endian)`,
 * HOST and PORT cut from the url's authority as written (nginx's `server` text).
 * Removing a server moves only the keys that were on it. A key's point is found by binary search
 * (nginx's ngx_http_upstream_find_chash_point), and the point's server by its index: SWRR runs
 * among that server's peers only, as nginx's pass that skips every peer of another `server`.
 */
export function createConsistentHash(key: KeyFunction): Balancer {
  /** The points' hashes, sorted and unique, and the server (index into `groups`) of each. */
  let hashes = new Uint32Array(0);
  let owners = new Uint32Array(0);
  /** The primaries of each `server` text, in list order. */
  let groups: Peer[][] = [];
  const le = Buffer.alloc(4);
  const rebuild = (peers: PeerSet): void => {
    let count = 0;
    for (const peer of peers.primary) count += 160 * peer.weight;
    // refused before anything changes: the ring in use stays whole (and requests keep being served)
    if (count > MAX_RING_POINTS) {
      throw new InvalidOptionError(
        'weight',
        `weights that add up to at most ${Math.floor(MAX_RING_POINTS / 160)} (160 points per unit of weight on the consistent hash ring)`,
        count / 160,
      );
    }
    const index = new Map<string, number>();
    const made: Peer[][] = [];
    // hash × 2^21 + server: sorting the numbers sorts by hash, and equal hashes by the list (nginx keeps the first)
    const all = new Float64Array(count);
    let n = 0;
    for (const peer of peers.primary) {
      const server = peer.target.server;
      let g = index.get(server);
      if (g === undefined) {
        g = made.length;
        index.set(server, g);
        made.push([]);
      }
      made[g]!.push(peer);
      const colon = server.lastIndexOf(':');
      const hasPort = colon !== -1 && /^\d*$/.test(server.slice(colon + 1));
      const host = hasPort ? server.slice(0, colon) : server;
      const port = hasPort ? server.slice(colon + 1) : '';
      const base = crc32(Buffer.from(`${host}\0${port}`, 'utf8')); // the text as written (a config file's bytes)
      let prev = 0;
      for (let j = 0; j < 160 * peer.weight; j++) {
        le.writeUInt32LE(prev >>> 0, 0);
        const h = crc32(le, base) >>> 0;
        all[n++] = h * GROUP_BITS + g;
        prev = h;
      }
    }
    all.sort();
    const h32 = new Uint32Array(count);
    const o32 = new Uint32Array(count);
    let unique = 0;
    for (let i = 0; i < count; i++) {
      const v = all[i]!;
      const h = Math.floor(v / GROUP_BITS);
      if (unique > 0 && h32[unique - 1] === h) continue;
      h32[unique] = h;
      o32[unique] = v - h * GROUP_BITS;
      unique++;
    }
    groups = made;
    hashes = h32.subarray(0, unique);
    owners = o32.subarray(0, unique);
  };
  const findPoint = (hash: number): number => {
    let lo = 0;
    let hi = hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hashes[mid]! < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return {
    rebuild,
    select(peers, sel) {
      const first = sel.key === undefined;
      const k = keyOf(sel, key);
      if (sel.tries > 20 || peers.primary.length < 2 || k === '' || hashes.length === 0) return roundRobin(peers, sel);
      if (first) sel.hash = findPoint(crc32(k) >>> 0);
      for (;;) {
        const best = smoothStep(groups[owners[sel.hash % hashes.length]!]!, sel);
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
  const slots = new WeightedSlots();
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
        const peer = slots.find(peers.primary, hash % peers.totalWeight);
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
