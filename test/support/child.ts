// A child `node` process for tests that need a fresh process (global instrumentation, NODE_DEBUG
// read at start-up): killed after a time limit and when the test ends, its output collected.
import { spawn } from 'node:child_process';
import type { TestContext } from 'node:test';

export interface ChildOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the child outlived `limitMs` and was killed. */
  killed: boolean;
}

/** Runs `node <args>` with `env` (default: this process's), killed after `limitMs`. */
export function runNode(t: TestContext, args: readonly string[], options: { env?: NodeJS.ProcessEnv; limitMs: number }): Promise<ChildOutcome> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
  let killed = false;
  const limit = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, options.limitMs);
  t.after(() => {
    clearTimeout(limit);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(limit);
      resolve({ code, signal, stdout, stderr, killed });
    });
  });
}
