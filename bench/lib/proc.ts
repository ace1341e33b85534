// Process helpers for the benchmark: spawning with an optional CPU pin, IPC
// readiness, bounded waits, and CPU time read from /proc (Linux).
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** True when `cmd` can be executed (found on PATH). */
export function hasCommand(cmd: string, args: string[] = ['--version']): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 5000 });
  return r.error === undefined;
}

/** Spawns `cmd args`, through `taskset -c cpus` when a CPU list is given. */
export function spawnPinned(cpus: string | undefined, cmd: string, args: string[], options: SpawnOptions): ChildProcess {
  if (cpus === undefined) return spawn(cmd, args, options);
  return spawn('taskset', ['-c', cpus, cmd, ...args], options);
}

/** Waits for an IPC message `{ type }` from `child`, failing after `ms` or if the child exits first. */
export function waitMessage<T extends { type: string }>(child: ChildProcess, type: string, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`no "${type}" message within ${ms} ms`)), ms);
    const onMessage = (msg: T): void => {
      if (msg?.type === type) done(undefined, msg);
    };
    const onExit = (code: number | null, signal: string | null): void => done(new Error(`process exited (${signal ?? code}) before "${type}"`));
    const done = (err: Error | undefined, msg?: T): void => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err !== undefined) reject(err);
      else resolve(msg!);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/** Stops a child: SIGTERM, then SIGKILL after `ms`. Resolves once it exited. */
export function stop(child: ChildProcess, ms = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Runs a command to completion with a hard time limit; resolves with its output. */
export function run(cpus: string | undefined, cmd: string, args: string[], limitMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawnPinned(cpus, cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ran past ${limitMs} ms and was killed`));
    }, limitMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

let clockTicks: number | undefined;

function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 });
    const n = Number(r.stdout?.trim());
    clockTicks = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return clockTicks;
}

function statFields(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces: split after its closing parenthesis.
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

function descendants(pid: number): number[] {
  const byParent = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const f = statFields(Number(e));
    if (f === undefined) continue;
    const ppid = Number(f[1]);
    const list = byParent.get(ppid) ?? [];
    list.push(Number(e));
    byParent.set(ppid, list);
  }
  const out: number[] = [];
  const stack = [pid];
  while (stack.length > 0) {
    const p = stack.pop()!;
    for (const c of byParent.get(p) ?? []) {
      out.push(c);
      stack.push(c);
    }
  }
  return out;
}

/**
 * CPU seconds (user + system, all threads) used so far by `pid` and its child
 * processes (nginx's worker), from /proc. Undefined where /proc is missing.
 */
export function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  const own = statFields(pid);
  if (own === undefined) return undefined;
  let ticks = 0;
  for (const p of [pid, ...descendants(pid)]) {
    const f = statFields(p);
    // Fields 14 and 15 of /proc/<pid>/stat (utime, stime); index 0 here is field 3.
    if (f !== undefined) ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks / ticksPerSecond();
}

/** CPU seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal), from /proc/stat. */
export function machineBusySeconds(): number | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
    return (user + nice + system + irq + softirq + steal) / ticksPerSecond();
  } catch {
    return undefined;
  }
}

/** CPU seconds of this process plus its exited, reaped children (the load generator runs). */
export function selfAndReapedSeconds(): number | undefined {
  const f = statFields(process.pid);
  if (f === undefined) return undefined;
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / ticksPerSecond();
}

/**
 * Where paired gateways, the upstream and the load generator run (undefined: unpinned): `what`
 * (the gateways) on CPU 1, everything else on the other CPUs, with taskset. `pin`: `auto` pins when
 * it can, `on` must, `off` does not.
 */
export function pairedPlacement(pin: string, what: string): { proxy: string | undefined; other: string | undefined; description: string } {
  const n = availableParallelism();
  const can = n >= 2 && process.platform === 'linux' && hasCommand('taskset', ['-V']);
  if (pin === 'on' && !can) throw new Error('--pin on needs Linux, taskset and at least 2 CPUs');
  if (pin === 'off' || !can) return { proxy: undefined, other: undefined, description: 'not pinned' };
  const other = n === 2 ? '0' : `0,2-${n - 1}`;
  return { proxy: '1', other, description: `${what} on CPU 1; upstream and load generator on CPU ${other} (taskset)` };
}

/**
 * Runs a benchmark's `main`: on SIGINT/SIGTERM or a failure, every process in `live` is stopped
 * first; a failure's message is printed and the exit code is 1.
 */
export async function runMain(main: () => Promise<void>, live: Set<ChildProcess>): Promise<void> {
  const stopAll = async (): Promise<void> => {
    await Promise.all([...live].map((c) => stop(c)));
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void stopAll().then(() => process.exit(130)));
  await main().catch(async (err: unknown) => {
    console.error((err as Error).message ?? err);
    await stopAll();
    process.exit(1);
  });
}
