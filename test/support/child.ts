// A child `node` process for tests that need a fresh process (global instrumentation, NODE_DEBUG
// read at start-up), or several (gateway instances sharing Redis): killed after a time limit and
// when the test ends, its output collected.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
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

/** A gateway fixture running in a child `node` process (see {@link startGateway}). */
export interface GatewayChild {
  /** Its name, given to it as the environment variable `INSTANCE`. */
  readonly name: string;
  readonly process: ChildProcessWithoutNullStreams;
  /** `http://127.0.0.1:<port>` once the fixture wrote where it listens; undefined before. */
  url: string | undefined;
  /** The first line the fixture wrote, parsed (`{ port, ... }`). */
  hello: Record<string, unknown> | undefined;
  /** What it wrote on stderr, and any first line that was not JSON. */
  stderr: string;
}

/**
 * Starts `node <fixture>` with `env` and `INSTANCE=<name>`: a gateway that writes one JSON line
 * `{"port": …}` on stdout once it listens. SIGKILLed after `limitMs` and when the test ends.
 */
export function startGateway(t: TestContext, fixture: string, name: string, env: Record<string, string>, limitMs = 60_000): GatewayChild {
  const child = spawn(process.execPath, [fixture], { env: { ...process.env, ...env, INSTANCE: name }, stdio: ['pipe', 'pipe', 'pipe'] });
  const out: GatewayChild = { name, process: child, url: undefined, hello: undefined, stderr: '' };
  let buffer = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    buffer += s;
    const nl = buffer.indexOf('\n');
    if (nl < 0 || out.hello !== undefined) return;
    try {
      out.hello = JSON.parse(buffer.slice(0, nl)) as Record<string, unknown>;
      out.url = `http://127.0.0.1:${String(out.hello.port)}`;
    } catch {
      out.stderr += `bad line: ${buffer}\n`;
    }
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => (out.stderr += s));
  const limit = setTimeout(() => child.kill('SIGKILL'), limitMs);
  t.after(() => {
    clearTimeout(limit);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return out;
}
