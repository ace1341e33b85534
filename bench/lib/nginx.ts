// nginx as a target: one worker, proxy_pass to an upstream block with
// keep-alive connections, in a throw-away prefix directory.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasCommand, spawnPinned } from './proc.ts';

/** nginx's version (`nginx -v`), or undefined when nginx is not installed. */
export function nginxVersion(): string | undefined {
  if (!hasCommand('nginx', ['-v'])) return undefined;
  const r = spawnSync('nginx', ['-v'], { encoding: 'utf8', timeout: 5000 });
  return /nginx\/(\S+)/.exec(`${r.stdout}${r.stderr}`)?.[1] ?? 'unknown';
}

/** The configuration the benchmark runs nginx with. */
export function nginxConfig(dir: string, listen: number, upstream: URL, keepalive: number): string {
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream backend {
    server ${upstream.host};
    keepalive ${keepalive};
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:${listen};
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

/** Starts nginx in the foreground on `listen`; `cleanup` removes its directory once it exited. */
export function startNginx(cpus: string | undefined, listen: number, upstream: URL, keepalive: number): { child: ChildProcess; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-nginx-'));
  writeFileSync(join(dir, 'nginx.conf'), nginxConfig(dir, listen, upstream, keepalive));
  const child = spawnPinned(cpus, 'nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return { child, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
