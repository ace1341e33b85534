// Keeps examples/tcp working: started as users start it (`node examples/tcp/server.ts`, importing the
// package by name from the built dist/), its TCP and UDP gateways answer, its monitor shows the
// stream zones, and it ends by itself on SIGTERM.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { until } from '../helpers.ts';
import { getJson } from '../monitor/support.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('examples/tcp: lines through the TCP gateway, datagrams through the UDP one, the monitor, SIGTERM', async (t) => {
  assert.ok(existsSync(`${root}dist/index.js`), 'dist/ is missing: build the package first (npm run build; npm test does it)');
  const child = spawn(process.execPath, ['examples/tcp/server.ts'], {
    cwd: root,
    env: { ...process.env, PORT: '0', NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = once(child, 'exit');
  const started = performance.now();
  while (!/monitor on http/.test(stdout)) {
    assert.ok(performance.now() - started < 15_000 && child.exitCode === null, `no listening line; stdout: ${stdout}\nstderr: ${stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const tcpPort = Number(/listening on tcp:\/\/127\.0\.0\.1:(\d+)/.exec(stdout)![1]);
  const udpPort = Number(/udp gateway on udp:\/\/127\.0\.0\.1:(\d+)/.exec(stdout)![1]);
  const api = `${/monitor on (http:\/\/127\.0\.0\.1:\d+)/.exec(stdout)![1]}/api/9`;

  const reply = await new Promise<string>((resolve, reject) => {
    const c = connect({ port: tcpPort, host: '127.0.0.1' }, () => c.end('hello\nworld\n'));
    let got = '';
    c.on('data', (d: Buffer) => (got += d));
    c.on('error', reject);
    c.on('close', () => resolve(got));
  });
  assert.match(reply, /^(alpha|beta): hello\n\1: world\n$/);

  const udp = createSocket('udp4');
  t.after(() => udp.close());
  const answers: string[] = [];
  udp.on('message', (m) => answers.push(m.toString()));
  for (const n of [1, 2]) {
    udp.send('hi', udpPort, '127.0.0.1');
    const end = performance.now() + 3000;
    while (answers.length < n && performance.now() < end) await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(answers.sort(), ['alpha: hi\n', 'beta: hi\n']);

  const zones = await getJson(`${api}/stream/server_zones`);
  assert.equal(zones.lines_tcp.sessions.total, 1);
  assert.equal(zones.lines_udp.sessions.total, 2);
  // the TCP health check (send PING, expect PONG) probes both servers
  const probed = async (): Promise<boolean> =>
    ((await getJson(`${api}/stream/upstreams/lines`)).peers as Array<{ health_checks: { checks: number; fails: number } }>).every(
      (p) => p.health_checks.checks >= 1 && p.health_checks.fails === 0,
    );
  assert.ok(await until(probed, 5000, 'both servers probed'));

  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const [code, signal] = await exited;
  clearTimeout(timer);
  assert.equal(signal, null, `the example did not end by itself after SIGTERM; stderr: ${stderr}`);
  assert.equal(code, 0);
});
