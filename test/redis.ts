// Redis for the tests that need it: the shared server at REDIS_URL (skipped with a clear message
// when unreachable, a failure with REQUIRE_REDIS=1), and private redis-server processes that a
// test can stop and restart.
import { spawn, type ChildProcess } from 'node:child_process';
import { before } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { reachable } from './helpers.ts';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
export const REQUIRE_REDIS = process.env.REQUIRE_REDIS === '1';

/** The node-redis client calls the tests make (the adapter's union type hides them). */
export interface RedisAdmin {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<unknown>;
  del(keys: string[]): Promise<number>;
  sendCommand(args: string[]): Promise<unknown>;
  quit(): Promise<unknown>;
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
