// Helpers for the healthCheck() tests: a manual HealthClock and upstreams whose behaviour can be switched
// (the bounded wait `until` is test/helpers.ts's).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import type { HealthCheck, HealthClock, ProbeResult } from '../../src/health/index.ts';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Waits for `ms` real milliseconds (timer unref'd). */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface ManualTimer {
  id: number;
  at: number;
  fn: () => void;
}

/**
 * A HealthClock that only moves on `advance(ms)`: due timers run in order of due time (then of
 * creation). Health checks `attach`ed to it are waited for after each timer fires (the timer starts
 * or ends a probe, which is real network I/O): until their next `probe` event (at most `settleMs`
 * real milliseconds), then a turn of the event loop so the next probe gets scheduled.
 */
export class ManualClock implements HealthClock {
  #now = 0;
  #seq = 0;
  #timers = new Map<number, ManualTimer>();
  #checks: HealthCheck[] = [];
  /** Timers fired so far. */
  fired = 0;

  now = (): number => this.#now;

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { id, at: this.#now + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Timers not yet fired nor cleared. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Milliseconds from now to each pending timer, soonest first. */
  delays(): number[] {
    return [...this.#timers.values()].map((t) => t.at - this.#now).sort((a, b) => a - b);
  }

  attach(...checks: HealthCheck[]): this {
    this.#checks.push(...checks);
    return this;
  }

  /** Moves the clock by `ms`, running the timers that fall due; `settle: false` does not wait for probes. */
  async advance(ms: number, opts: { settle?: boolean; settleMs?: number } = {}): Promise<number> {
    const target = this.#now + ms;
    const settle = opts.settle ?? true;
    let count = 0;
    for (;;) {
      let next: ManualTimer | undefined;
      for (const t of this.#timers.values()) if (t.at <= target && (next === undefined || t.at < next.at || (t.at === next.at && t.id < next.id))) next = t;
      if (next === undefined) break;
      this.#timers.delete(next.id);
      this.#now = next.at;
      const probed = settle ? this.#nextProbe(opts.settleMs ?? 3000) : undefined;
      this.fired++;
      count++;
      next.fn();
      if (probed !== undefined) await probed;
      await tick();
      await tick();
    }
    this.#now = target;
    return count;
  }

  #nextProbe(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        for (const hc of this.#checks) hc.off('probe', on);
        resolve();
      };
      const on = (): void => cleanup();
      const timer = setTimeout(cleanup, ms);
      timer.unref();
      for (const hc of this.#checks) hc.on('probe', on);
    });
  }
}

/** Collects the `probe` events of a health check. */
export function probes(hc: HealthCheck): ProbeResult[] {
  const out: ProbeResult[] = [];
  hc.on('probe', (r) => out.push(r));
  return out;
}

/** Resolves with the next `probe` event (rejects after `ms` real milliseconds). */
export function nextProbe(hc: HealthCheck, ms = 3000): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no probe within ${ms} ms`)), ms);
    hc.once('probe', (r) => {
      clearTimeout(timer);
      resolve(r);
    });
  });
}

export type Mode =
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  | { kind: 'hang' }
  | { kind: 'reset' }
  | { kind: 'slow'; ms: number; status?: number }
  | { kind: 'stream'; size: number; marker: string; at: number };

export const ok: Mode = { kind: 'status', status: 200, body: 'ok' };
export const fail: Mode = { kind: 'status', status: 500, body: 'down' };

export interface Switchable {
  url: string;
  port: number;
  host: string;
  /** Requests received (method, url, headers), in order. */
  seen: Array<{ method: string; url: string; headers: IncomingMessage['headers'] }>;
  /** The behaviour now; set it to switch. A function of the request path may pick per path. */
  mode: Mode | ((path: string) => Mode);
  /** Requests being answered now, and the most at once so far. */
  inflight: number;
  maxInflight: number;
  /** Streamed responses: bytes written and whether the response finished. */
  streams: Array<{ written: number; finished: boolean; closed: boolean }>;
  connections(): Promise<number>;
  close(): Promise<void>;
}

/** An HTTP upstream on port 0 whose behaviour is `mode` (200 by default); closed after the test. */
export async function switchable(t: TestContext | undefined, mode: Switchable['mode'] = ok): Promise<Switchable> {
  const hangs = new Set<ServerResponse>();
  const state: Partial<Switchable> = { seen: [], mode, inflight: 0, maxInflight: 0, streams: [] };
  const s = state as Switchable;
  const server = createServer((req, res) => {
    s.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const m = typeof s.mode === 'function' ? s.mode(req.url ?? '/') : s.mode;
    s.inflight++;
    s.maxInflight = Math.max(s.maxInflight, s.inflight);
    let done = false;
    const end = (): void => {
      if (done) return;
      done = true;
      s.inflight--;
    };
    res.on('close', end);
    switch (m.kind) {
      case 'status':
        res.writeHead(m.status, { 'content-type': 'text/plain', ...m.headers });
        res.end(m.body ?? '');
        return;
      case 'hang':
        hangs.add(res);
        return;
      case 'reset':
        req.socket.destroy();
        return;
      case 'slow': {
        const timer = setTimeout(() => {
          res.writeHead(m.status ?? 200);
          res.end('slow');
        }, m.ms);
        res.on('close', () => clearTimeout(timer));
        return;
      }
      case 'stream': {
        const rec = { written: 0, finished: false, closed: false };
        s.streams.push(rec);
        const chunk = 64 * 1024;
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(m.size) });
        res.on('finish', () => (rec.finished = true));
        res.on('close', () => (rec.closed = true));
        const pump = (): void => {
          while (rec.written < m.size && !res.destroyed) {
            const n = Math.min(chunk, m.size - rec.written);
            const buf = Buffer.alloc(n, 'x');
            const start = rec.written;
            if (m.at >= start && m.at < start + n) buf.write(m.marker, m.at - start);
            rec.written += n;
            if (!res.write(buf)) {
              res.once('drain', pump);
              return;
            }
          }
          if (rec.written >= m.size) res.end();
        };
        pump();
        return;
      }
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  Object.assign(s, {
    url: `http://127.0.0.1:${port}`,
    port,
    host: `127.0.0.1:${port}`,
    connections: () => new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
    close: async () => {
      if (closed) return;
      closed = true;
      for (const r of hangs) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
  t?.after(() => s.close());
  return s;
}

/** A raw TCP server answering every connection with bytes that are not HTTP. */
export async function garbage(
  t: TestContext | undefined,
): Promise<{ url: string; port: number; server: NetServer; accepted: number; connections(): Promise<number>; close(): Promise<void> }> {
  const out = { accepted: 0 } as { url: string; port: number; server: NetServer; accepted: number; connections(): Promise<number>; close(): Promise<void> };
  const sockets = new Set<import('node:net').Socket>();
  const server = createNetServer((socket) => {
    out.accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.resume(); // read (and drop) the request, so the close of the other end is seen
    socket.write('\x00\x01garbage bytes, not HTTP \xff\r\n\r\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  Object.assign(out, {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    connections: () => new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
    close: async () => {
      if (closed) return;
      closed = true;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
  t?.after(() => out.close());
  return out;
}
