// Shared by the pool tests: fixtures, fake requests, and a replay of nginx's
// request loop (peer.tries, proxy_next_upstream, passive health) on top of pool.select/finish.
// No side effects on import: bare `node --test` also loads this file.
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { exchange } from '../../src/core/exchange.ts';
import type { ServerOptions, UpstreamPool } from '../../src/pool/index.ts';
import type { Peer } from '../../src/pool/peer.ts';
import type { Selection } from '../../src/pool/methods/types.ts';
import { internals } from '../../src/pool/internal.ts';
import type { Clock } from '../helpers.ts';

/** Reads `test/pool/fixtures/<name>` (written by fixtures/generate.sh from real nginx). */
export function fixture<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8')) as T;
}

/** mulberry32: a small seeded generator in [0, 1) (the same numbers on every run). */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A server as a fixture describes it: nginx's `server` line. failTimeout in seconds. */
export interface FixtureServer {
  server: string;
  weight?: number | undefined;
  down?: boolean | undefined;
  backup?: boolean | undefined;
  maxConns?: number | undefined;
  maxFails?: number | undefined;
  failTimeout?: number | undefined;
  behaviour?: 'ok' | 's500' | 's404' | 's500first' | undefined;
}

/** The pool's servers for a fixture group: the same `host:port` text as nginx's `server` lines. */
export function serversOf(list: readonly FixtureServer[]): ServerOptions[] {
  return list.map((s) => {
    const o: ServerOptions = { url: `http://${s.server}` };
    if (s.weight !== undefined) o.weight = s.weight;
    if (s.down !== undefined) o.down = s.down;
    if (s.backup !== undefined) o.backup = s.backup;
    if (s.maxConns !== undefined) o.maxConns = s.maxConns;
    if (s.maxFails !== undefined) o.maxFails = s.maxFails;
    if (s.failTimeout !== undefined) o.failTimeout = `${s.failTimeout}s`;
    return o;
  });
}

/** Servers a, b, c, … at 127.0.0.1 ports from `firstPort` on (nothing listens there), with the settings in `list`. */
export function lettered(firstPort: number, list: ReadonlyArray<Partial<ServerOptions>>): ServerOptions[] {
  return list.map((o, i) => ({ url: `http://127.0.0.1:${firstPort + i}`, id: String.fromCharCode(97 + i), ...o }));
}

/** The smallest IncomingMessage-like object exchange() and the variables facility read. */
export function fakeRequest(
  init: { url?: string | undefined; headers?: Record<string, string> | undefined; remoteAddress?: string | undefined } = {},
): IncomingMessage {
  return {
    url: init.url ?? '/',
    method: 'GET',
    httpVersion: '1.1',
    headers: init.headers ?? {},
    socket: { remoteAddress: init.remoteAddress ?? '127.0.0.1', localAddress: '127.0.0.1', localPort: 8080, remotePort: 40000 },
  } as unknown as IncomingMessage;
}

/** A fresh per-request selection, with an exchange record like balance() makes. */
export function selection(pool: UpstreamPool, init: { url?: string; headers?: Record<string, string>; clientAddress?: string } = {}): Selection {
  const req = fakeRequest({ url: init.url, headers: init.headers, remoteAddress: init.clientAddress });
  const ex = exchange(req);
  if (init.clientAddress !== undefined) ex.clientAddress = init.clientAddress;
  return internals(pool).selection(req, ex);
}

const OK = { header: 5, response: 10, inflightDone: false };

/** Ends an attempt successfully (state 0 in nginx). */
export function finishOk(pool: UpstreamPool, peer: Peer, status = 200): void {
  internals(pool).finish(peer, 'ok', OK, status);
}

/** One request's first choice, finished at once: the peer's name, or undefined. */
export function pick(pool: UpstreamPool, init: Parameters<typeof selection>[1] = {}): string | undefined {
  const peer = internals(pool).select(selection(pool, init));
  if (peer === undefined) return undefined;
  finishOk(pool, peer);
  return peer.name;
}

/** `n` sequential requests (each finished before the next), as peer ids or names. */
export function sequence(pool: UpstreamPool, n: number, by: 'id' | 'name' = 'id'): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const peer = internals(pool).select(selection(pool));
    if (peer === undefined) {
      out.push('-');
      continue;
    }
    out.push(by === 'id' ? peer.id : peer.name);
    finishOk(pool, peer);
  }
  return out;
}

export type Step = { op: 'get'; n?: number } | { op: 'hang' } | { op: 'release' } | { op: 'sleep'; ms: number };

export type StepResult =
  | { op: 'get'; addrs: string[]; statuses: number[]; status: number }
  | { op: 'hang'; addr: string }
  | { op: 'release' }
  | { op: 'sleep'; ms: number };

export interface SequenceGroup {
  name: string;
  method: 'round-robin' | 'least-conn' | 'hash';
  next?: string[] | undefined;
  servers: FixtureServer[];
  steps: Step[];
  results: StepResult[];
}

/**
 * Replays a fixture's steps against the pool the way nginx runs a request: `peer.tries` attempts,
 * connect errors always failures, `http_5xx` failures only when listed and another try is left (the
 * last attempt's response counts as a success), `http_403/404` NGX_PEER_NEXT, "no live upstreams" =
 * the group name with 502. Returns what nginx's `$upstream_addr`/`$upstream_status` would show.
 */
export function replay(pool: UpstreamPool, group: SequenceGroup, dead: readonly string[], c: Clock): StepResult[] {
  const next = new Set(group.next ?? ['error', 'timeout']);
  const behaviour = new Map(group.servers.map((s) => [s.server, s.behaviour ?? 'ok']));
  const seen = new Set<string>();
  const hung: Peer[] = [];
  const out: StepResult[] = [];
  const answer = (peer: Peer): number | 'error' => {
    if (dead.includes(peer.name)) return 'error';
    const b = behaviour.get(peer.name) ?? 'ok';
    if (b === 's500') return 500;
    if (b === 's404') return 404;
    if (b === 's500first' && !seen.has(peer.name)) {
      seen.add(peer.name);
      return 500;
    }
    return 200;
  };
  for (const step of group.steps) {
    if (step.op === 'sleep') {
      c.advance(step.ms);
      out.push({ op: 'sleep', ms: step.ms });
    } else if (step.op === 'hang') {
      const peer = internals(pool).select(selection(pool, { url: '/hang' }));
      if (peer === undefined) throw new Error('hang: no server');
      hung.push(peer);
      out.push({ op: 'hang', addr: peer.name });
    } else if (step.op === 'release') {
      for (const peer of hung.splice(0)) finishOk(pool, peer);
      out.push({ op: 'release' });
    } else {
      for (let i = 0; i < (step.n ?? 1); i++) out.push(request(pool, next, answer));
    }
  }
  return out;
}

function request(pool: UpstreamPool, next: Set<string>, answer: (peer: Peer) => number | 'error'): StepResult {
  const sel = selection(pool);
  let tries = internals(pool).maxTries();
  const addrs: string[] = [];
  const statuses: number[] = [];
  for (;;) {
    const peer = internals(pool).select(sel);
    if (peer === undefined) {
      addrs.push(pool.name);
      statuses.push(502);
      return { op: 'get', addrs, statuses, status: 502 };
    }
    addrs.push(peer.name);
    const a = answer(peer);
    if (a === 'error') {
      internals(pool).finish(peer, 'failed', { header: -1, response: 1, inflightDone: false }, undefined);
      statuses.push(502);
      tries--;
      if (tries > 0 && next.has('error')) continue;
      return { op: 'get', addrs, statuses, status: 502 };
    }
    statuses.push(a);
    if (a !== 200 && tries > 1 && next.has(`http_${a}`)) {
      internals(pool).finish(peer, a === 403 || a === 404 ? 'next' : 'failed', OK, a);
      tries--;
      continue;
    }
    internals(pool).finish(peer, 'ok', OK, a);
    return { op: 'get', addrs, statuses, status: a };
  }
}

/** A group of the hash fixtures: servers and where nginx sent each key. */
export interface HashGroup {
  name: string;
  consistent: boolean;
  servers: FixtureServer[];
  results: Array<{ key: string; addr: string }>;
}

/** A group of the ip_hash fixtures; `mapped` holds nginx's answers for IPv4-mapped IPv6 text. */
export interface IpGroup {
  name: string;
  servers: FixtureServer[];
  results: Array<{ address: string; addr: string }>;
  mapped?: Array<{ address: string; addr: string }> | undefined;
}
