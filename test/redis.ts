// Redis for the tests that need it: the shared server at REDIS_URL (skipped with a clear message
// when unreachable, a failure with REQUIRE_REDIS=1), and private redis-server processes that a
// test can stop and restart.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { before, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import KeyvRedis from '@keyv/redis';
import { createClient } from '@redis/client';
import { deadPort, reachable } from './helpers.ts';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
export const REQUIRE_REDIS = process.env.REQUIRE_REDIS === '1';

/** The node-redis client calls the tests make (the adapter's union type hides them). */
export interface RedisAdmin {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<unknown>;
  del(keys: string[]): Promise<number>;
  sendCommand(args: string[]): Promise<unknown>;
  quit(): Promise<unknown>;
  /** Closes the connection at once, whether Redis answers or not. */
  destroy(): void;
  scanIterator(options: { MATCH: string; COUNT: number }): AsyncIterable<string | string[]>;
}

/**
 * Registers a `before` hook that finds out what Redis this machine has, and returns the skip
 * reasons to give `t.skip()`: `shared()` for REDIS_URL, `private()` for a redis-server binary.
 */
export function redisAvailability(): { shared: () => string | false; private: () => string | false } {
  let up = false;
  let binary = false;
  before(async () => {
    const url = new URL(REDIS_URL);
    up = await reachable(url.hostname, Number(url.port || 6379));
    if (!up && REQUIRE_REDIS) throw new Error(`REQUIRE_REDIS=1 but Redis is unreachable at ${REDIS_URL}`);
    binary = await new Promise<boolean>((resolve) => {
      const p = spawn('redis-server', ['--version'], { stdio: 'ignore' });
      p.once('error', () => resolve(false));
      p.once('exit', (code) => resolve(code === 0));
    });
    if (!binary && REQUIRE_REDIS) throw new Error('REQUIRE_REDIS=1 but redis-server is not installed');
  });
  return {
    shared: () => (up ? false : `Redis unreachable at ${REDIS_URL} (set REDIS_URL, or REQUIRE_REDIS=1 to fail)`),
    private: () => (binary ? false : 'redis-server is not installed (REQUIRE_REDIS=1 to fail)'),
  };
}

/** A private redis-server on `port`, for tests that stop and restart it. */
export async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if (await reachable('127.0.0.1', port)) return child;
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server did not start on port ${port}`);
}

/** Kills a private redis-server and waits for it to be gone. */
export async function stopRedis(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}

/** Freezes a private redis-server (SIGSTOP): connections stay up, nothing is answered. */
export function pauseRedis(child: ChildProcess): void {
  child.kill('SIGSTOP');
}

/** Thaws a private redis-server frozen by {@link pauseRedis}. */
export function resumeRedis(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGCONT');
}

// The shared wait (it throws once `ms` have passed), re-exported for the tests that take it from here.
export { until } from './helpers.ts';

/**
 * A `@keyv/redis` store built as the README recommends: node-redis's offline queue off, so nothing
 * sent while Redis is unreachable waits to be replayed once it is back.
 */
export function redisStore(url: string = REDIS_URL): KeyvRedis<unknown> {
  return new KeyvRedis<unknown>({ url, disableOfflineQueue: true });
}

/** A private redis-server for one test, killed when the test ends (see {@link privateRedis}). */
export interface PrivateRedis {
  port: number;
  url: string;
  /** Kills it (SIGKILL); its data is gone. */
  stop(): Promise<void>;
  /** Starts it again on the same port, empty. */
  start(): Promise<void>;
  /** Freezes it (SIGSTOP): connections stay up, nothing is answered. */
  pause(): void;
  resume(): void;
  /** A client for looking into it, closed when the test ends. */
  admin(): Promise<RedisAdmin>;
}

/** Starts a private redis-server on a free port for the test `t`; all is cleaned up in `t.after`. */
export async function privateRedis(t: TestContext): Promise<PrivateRedis> {
  const port = await deadPort();
  const url = `redis://127.0.0.1:${port}`;
  let child = await startRedis(port);
  t.after(async () => {
    resumeRedis(child);
    await stopRedis(child);
  });
  return {
    port,
    url,
    stop: () => stopRedis(child),
    async start() {
      child = await startRedis(port);
    },
    pause: () => pauseRedis(child),
    resume: () => resumeRedis(child),
    async admin() {
      const client = (await new KeyvRedis<unknown>(url).getClient()) as unknown as RedisAdmin;
      t.after(() => client.destroy());
      return client;
    },
  };
}

/** Whether `promise` settles within `ms`. */
export function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms, false);
    void promise
      .then(
        () => resolve(true),
        () => resolve(true),
      )
      .finally(() => clearTimeout(timer));
  });
}

/**
 * A namespace of its own for a test on the shared Redis (`<prefix>-<uuid>`), whose keys are
 * deleted when the test ends (SCAN MATCH `<namespace>:*` and DEL; never a FLUSH).
 */
export async function testNamespace(t: TestContext, prefix: string, url: string = REDIS_URL): Promise<string> {
  const namespace = `${prefix}-${randomUUID()}`;
  const admin = createClient({ url });
  await admin.connect();
  t.after(async () => {
    const keys: string[] = [];
    for await (const key of admin.scanIterator({ MATCH: `${namespace}:*`, COUNT: 100 })) keys.push(...(Array.isArray(key) ? key : [key]));
    if (keys.length > 0) await admin.del(keys);
    admin.destroy();
  });
  return namespace;
}
