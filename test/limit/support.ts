// What the limit tests share: a manual clock whose timers run only when the test moves time, and a
// gateway that answers 'ok' behind the middleware under test (errors answered by chain()).
import type { TestContext } from 'node:test';
import { chain, exchange, type LimitClock, type Middleware } from '../../src/index.ts';
import { fetchText, gateway, type Reply, type Upstream } from '../helpers.ts';

/** A {@link LimitClock} that moves only with {@link ManualClock.advance}. */
export class ManualClock implements LimitClock {
  #now = 1_000_000;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  now = (): number => this.#now;

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Timers set and not yet fired nor cleared. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Moves time by `ms`, firing the timers that fall due in order. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) if (entry[1].at <= target && (next === undefined || entry[1].at < next[1].at)) next = entry;
      if (next === undefined) break;
      this.#timers.delete(next[0]);
      this.#now = Math.max(this.#now, next[1].at);
      next[1].fn();
    }
    this.#now = target;
  }
}

/** A gateway answering 200 'ok' with the request's `$limit_req_status` / `$limit_conn_status` in headers, behind `mw`. */
export function limited(t: TestContext, ...mw: Middleware[]): Promise<Upstream> {
  return gateway(
    t,
    chain(...mw, (req, res) => {
      const s = exchange(req).limitStatus;
      res.setHeader('x-limit-req', s?.req ?? '-');
      res.setHeader('x-limit-conn', s?.conn ?? '-');
      res.end('ok');
    }),
  );
}

/** `n` sequential requests: their statuses. */
export async function statuses(url: string, n: number, headers?: Record<string, string>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await fetchText(url, { headers })).status);
  return out;
}

/** Resolves on the next turn of the event loop, after I/O. */
export function tick(ms = 20): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A gateway whose handler holds every request to a path starting with `/w` until `release()`; others answer at once. */
export async function holding(t: TestContext, route: (path: string) => Middleware | undefined) {
  const held: Array<() => void> = [];
  const gw = await gateway(
    t,
    chain((req, res, next) => {
      const mw = route(req.url ?? '/');
      const answer = (err?: unknown): void => {
        if (err) return next(err);
        res.setHeader('x-limit-conn', exchange(req).limitStatus?.conn ?? '-');
        if (req.url?.includes('/w')) held.push(() => res.end('held'));
        else res.end('ok');
      };
      if (mw === undefined) answer();
      else mw(req, res, answer);
    }),
  );
  return {
    url: gw.url,
    held,
    release(): void {
      for (const fn of held.splice(0)) fn();
    },
  };
}

export type { Reply };
