// What the cluster tests share: gateway child processes (fixtures/gateway.ts) killed with the test,
// the monitor API calls they make, and the medians they report. A test's namespace on the shared
// Redis is testNamespace() of test/redis.ts.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { ServerOptions } from '../../src/index.ts';
import { fetchText, until } from '../helpers.ts';
import { REDIS_URL } from '../redis.ts';
import { startGateway as startChild } from '../support/child.ts';

const GATEWAY = fileURLToPath(new URL('./fixtures/gateway.ts', import.meta.url));

/** The pool every gateway fixture serves, and where its monitor is mounted. */
export const POOL = 'api';
export const STATUS = '/status/api/9';

/** A gateway child process. */
export interface Gateway {
  name: string;
  /** `http://127.0.0.1:<port>` */
  url: string;
  pid: number;
  /** Whether its sync handle was connected when it said it was ready. */
  connected: boolean;
  child: ChildProcessWithoutNullStreams;
  stderr(): string;
  /** SIGKILL, and waits for the exit. */
  kill(): Promise<void>;
}

/**
 * Starts `node test/cluster/fixtures/gateway.ts` with the pool's static `servers`, synced in
 * `namespace` (or not, with `namespace: undefined`), and waits for its ready line. The child is
 * SIGKILLed when the test ends, and after 120 s whatever happens (a loaded CI machine can take many seconds to start six processes).
 */
export async function startGateway(t: TestContext, name: string, servers: ServerOptions[], namespace: string | undefined): Promise<Gateway> {
  const env = { NODE_OPTIONS: '', SERVERS: JSON.stringify(servers), POOL, REDIS_URL, NAMESPACE: namespace ?? '', SYNC: namespace === undefined ? '0' : '1' };
  const started = startChild(t, GATEWAY, name, env, 120_000);
  const child = started.process;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let ended = false;
  void exited.then(() => (ended = true));
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  await until(() => started.url !== undefined || ended, 60_000, `gateway ${name} ready`).catch((err: Error) => {
    throw new Error(`${err.message}; its stderr: ${started.stderr}`);
  });
  if (started.url === undefined) throw new Error(`gateway ${name} exited before it was ready: ${started.stderr}`);
  const hello = started.hello as { pid: number; connected: boolean };
  return { name, url: started.url, pid: hello.pid, connected: hello.connected, child, stderr: () => started.stderr, kill };
}

/** A server's configuration as a gateway's monitor API shows it (NGINX Plus names), or undefined when it has none by that id. */
export async function serverConf(g: Gateway, id: string): Promise<Record<string, unknown> | undefined> {
  const reply = await fetchText(`${g.url}${STATUS}/http/upstreams/${POOL}/servers/${encodeURIComponent(id)}`);
  if (reply.status === 404) return undefined;
  if (reply.status !== 200) throw new Error(`${g.name}: GET server ${id} answered ${reply.status} ${reply.body}`);
  return JSON.parse(reply.body) as Record<string, unknown>;
}

/** The servers' ids and configuration, by id, as a gateway's API lists them. */
export async function serverList(g: Gateway): Promise<Map<string, Record<string, unknown>>> {
  const reply = await fetchText(`${g.url}${STATUS}/http/upstreams/${POOL}/servers`);
  if (reply.status !== 200) throw new Error(`${g.name}: GET servers answered ${reply.status} ${reply.body}`);
  return new Map((JSON.parse(reply.body) as Array<Record<string, unknown>>).map((s) => [String(s.id), s]));
}

/** A write to the servers of a gateway's pool through its monitor API; throws unless it succeeded. */
export async function write(g: Gateway, method: 'POST' | 'PATCH' | 'DELETE', id: string | undefined, body?: unknown): Promise<void> {
  const path = `${g.url}${STATUS}/http/upstreams/${POOL}/servers${id === undefined ? '' : `/${encodeURIComponent(id)}`}`;
  const reply = await fetchText(path, {
    method,
    headers: body === undefined ? undefined : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (reply.status >= 300) throw new Error(`${g.name}: ${method} ${path} answered ${reply.status} ${reply.body}`);
}

/** Milliseconds until `check` holds on every gateway, polled every 5 ms (at most `ms`). */
export async function propagation(gateways: readonly Gateway[], check: (g: Gateway) => Promise<boolean>, what: string, ms = 5000): Promise<number> {
  const started = performance.now();
  const seen = new Set<Gateway>();
  await until(
    async () => {
      await Promise.all(gateways.filter((g) => !seen.has(g)).map(async (g) => (await check(g)) && seen.add(g)));
      return seen.size === gateways.length;
    },
    ms,
    what,
    5,
  );
  return performance.now() - started;
}

/** Sends `n` sequential GETs through a gateway, each on a fresh connection; returns the statuses. */
export async function traffic(g: Gateway, n: number, path = '/'): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) statuses.push((await fetchText(`${g.url}${path}`)).status);
  return statuses;
}

/** The median of some figures. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
