// Shared by the sticky() tests: named upstreams, a sticky gateway, cookie helpers (pools: poolOf of
// test/helpers.ts, ids = names).
// No side effects on import.
import type { TestContext } from 'node:test';
import { balance, chain, sticky, type BalanceOptions, type StickyMiddleware, type StickyOptions, type UpstreamPool } from '../../src/index.ts';
import { fetchText, gateway, upstream, type Reply, type Upstream } from '../helpers.ts';

/** Upstreams answering with their own name, by name. */
export async function named(t: TestContext, names: readonly string[]): Promise<Record<string, Upstream>> {
  const out: Record<string, Upstream> = {};
  for (const n of names) out[n] = await upstream(t, n);
  return out;
}

export interface StickyGateway {
  url: string;
  mw: StickyMiddleware;
  /** GET path with headers; resolves with the reply. */
  get(path?: string, headers?: Record<string, string>): Promise<Reply>;
}

/** `createServer(chain(sticky(pool, opts), balance(pool, balanceOptions)))` on port 0. */
export async function stickyGateway(t: TestContext, pool: UpstreamPool, opts: StickyOptions, balanceOptions: BalanceOptions = {}): Promise<StickyGateway> {
  const mw = sticky(pool, opts);
  t.after(() => mw.close());
  const gw = await gateway(t, chain(mw, balance(pool, balanceOptions)));
  return { url: gw.url, mw, get: (path = '/', headers) => fetchText(gw.url + path, { headers }) };
}

/** The Set-Cookie lines of a reply. */
export function setCookies(r: Reply): string[] {
  return r.headers['set-cookie'] ?? [];
}

/** The value the reply's Set-Cookie gives cookie `name`, or undefined. */
export function cookieValue(r: Reply, name = 'srv_id'): string | undefined {
  for (const line of setCookies(r)) {
    const pair = line.split(';')[0]!;
    const eq = pair.indexOf('=');
    if (pair.slice(0, eq) === name) return pair.slice(eq + 1);
  }
  return undefined;
}

/** The SID of server `id` in `pool`. */
export function sidOf(pool: UpstreamPool, id: string): string {
  const s = pool.get(id);
  if (s === undefined) throw new Error(`no server ${id}`);
  return s.sid;
}
