// The differential harness: each case is described once (raw request bytes, what the upstream
// answers, a configuration) and run by real nginx and by a switchyard gateway, each in front of the
// same recording upstream. What reaches the client (status, chosen headers, body) and what reaches
// the upstream (request line, headers, body and its framing) are compared; the differences are the
// case's outcome, judged against deviations.ts by the test.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  balance,
  type CookieOptions,
  type CookieRewriteRule,
  cache,
  chain,
  createPool,
  fromNginx,
  type Middleware,
  rewrite,
  type ShapeResponseOptions,
  shapeResponse,
  type UpstreamPool,
} from '../../src/index.ts';
import { deadPort } from '../helpers.ts';

/** Where Debian's package puts nginx. */
export const NGINX = process.env.NGINX_BINARY ?? '/usr/sbin/nginx';

/** One request as the recording upstream received it. */
export interface Recorded {
  /** The request line exactly as sent (`GET /x HTTP/1.1`). */
  line: string;
  method: string;
  target: string;
  /** Header lines in the order and case they came. */
  headers: Array<[string, string]>;
  /** How the body was framed: no body, Content-Length, chunked. */
  framing: 'none' | 'length' | 'chunked';
  /** The body, chunked framing removed. */
  body: string;
}

/** What the upstream answers: a structured response, or the bytes to write as they are. */
export interface Reply {
  status?: number;
  /** Header lines; `Content-Length` is added unless a framing header is given or `noLength`. */
  headers?: Array<[string, string]>;
  body?: string;
  /** Send the body without Content-Length (the end of the connection ends it). */
  noLength?: boolean;
  /** Raw response bytes, instead of the fields above. */
  raw?: string;
}

/** The upstream's behaviour: one reply, or one per request (`n` counts from 0 for each side's run). */
export type Behaviour = Reply | ((req: Recorded, n: number) => Reply);

/** The cache configuration, rendered as `proxy_cache*` directives and as `cache()` options. */
export interface CacheConfig {
  /** `proxy_cache_valid`: code (or `any`) → time. */
  valid?: Record<string, string>;
  convertHead?: boolean;
  revalidate?: boolean;
  useStale?: string[];
  methods?: string[];
  /** A key template in nginx variables, same on both sides. */
  key?: string;
  /** `proxy_cache_bypass` / `bypass`: nginx variables, on when non-empty and not "0". */
  bypass?: string;
  /** `proxy_no_cache` / `noCache`. */
  noCache?: string;
  minUses?: number;
}

/** One shapeResponse()'s `add` and `always`, rendered for nginx as an `add_header name value [always];` per value. */
export type ShapeConfig = Pick<ShapeResponseOptions, 'add' | 'always'>;

/** The configuration of a case, expressed once. */
export interface Config {
  /**
   * nginx rewrite-module text (`rewrite`, `return`, `if`, `set`, `location`, `server` blocks):
   * the same text goes into nginx.conf and through `fromNginx()`. nginx gets `proxy_pass` added
   * to every location and a `location /` when there is none; switchyard passes to `balance()`.
   */
  rewrite?: string;
  /** `absolute_redirect` / rewrite()'s `absoluteRedirect`. */
  absoluteRedirect?: boolean;
  /** `proxy_pass http://127.0.0.1:port` (direct) or through an `upstream backend { … }` block (named). */
  pool?: 'direct' | 'named';
  /** Host sent upstream: `$proxy_host` (nginx's default) or the client's (`$host`, nginx's usual `proxy_set_header Host $host`). */
  host?: 'upstream' | 'client';
  /** X-Forwarded-For/-Proto/-Host and Forwarded: off by default on both sides (nginx sets none). */
  xForwarded?: boolean;
  cache?: CacheConfig;
  /**
   * balance()'s `cookieDomain`, `cookiePath` and `cookieFlags`, from which nginx's
   * `proxy_cookie_domain`, `proxy_cookie_path` and `proxy_cookie_flags` are written, one per rule in
   * order: a string as it is, a RegExp as `~source` (`~*source` for a `cookiePath` RegExp with `i`;
   * nginx's `~` in the other two matches in any case, as switchyard's).
   */
  cookies?: CookieOptions;
  /**
   * shapeResponse()s put first in the chain (before rewrite(), so that rewrite()'s own answers are
   * shaped as nginx's `return`s are), and the `add_header` lines nginx gets, in this order.
   */
  shape?: readonly ShapeConfig[];
}

/** One request of a case and what to compare about its answer. */
export interface Step {
  /** Raw request bytes; `{front}` is replaced by the gateway's 127.0.0.1:port, `{port}` by its port. */
  request: string;
  /** Response headers compared at the client (lowercase); `location` and `x-cache-status` always are. */
  headers?: string[];
  /** Compare the client's body even when the proxy made the answer itself (default: only upstream's). */
  body?: boolean;
  /** Wait this long before sending (ms), e.g. for an entry to expire. */
  delay?: number;
}

/** A differential case. */
export interface Case {
  /** Unique id, `area-what` (deviations.ts refers to it). */
  id: string;
  /** Where it comes from: an nginx-tests file or the issue's item. */
  from: string;
  config?: Config;
  upstream?: Behaviour;
  steps: Step[];
  /** Compare header lines at the upstream raw (order and case) rather than as a sorted, lowercased set. */
  rawUpstream?: boolean;
  /**
   * What current nginx does where the installed one (Debian's 1.22) is older and differs, as
   * nginx-tests at HEAD says: applied to nginx's observation of every step when nginx is older than `since`.
   */
  current?: { since: string; source: string; status?: number; drop?: string[]; body?: string; refused?: boolean };
  /** Header names never compared at the upstream for this case (beyond `connection` and `keep-alive`). */
  ignoreUpstream?: string[];
}

/** What one side produced for one step. */
export interface Observed {
  status: number;
  headers: Array<[string, string]>;
  body: string;
  /** What the upstream received during the step. */
  upstream: Recorded[];
  /** Interim responses before the final one (100, 103). */
  interim?: number[];
  error?: string;
}

/** Builds a raw HTTP/1.1 request with `Connection: close` (and Host unless `host` is null). */
export function req(line: string, headers: Array<[string, string]> | Record<string, string> = {}, body?: string, host: string | null = 'test.example'): string {
  const list = Array.isArray(headers) ? headers : Object.entries(headers);
  const out = [line.includes(' HTTP/') ? line : `${line} HTTP/1.1`];
  if (host !== null) out.push(`Host: ${host}`);
  for (const [n, v] of list) out.push(`${n}: ${v}`);
  if (!list.some(([n]) => n.toLowerCase() === 'connection')) out.push('Connection: close');
  if (body !== undefined && !list.some(([n]) => /^(content-length|transfer-encoding)$/i.test(n))) out.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${out.join('\r\n')}\r\n\r\n${body ?? ''}`;
}

// ---------------------------------------------------------------- recording upstream

/** A raw TCP upstream that records each request exactly and answers from the case's behaviour. */
export class RecordingUpstream {
  readonly seen: Recorded[] = [];
  #count = 0;
  #server = createServer((socket) => this.#serve(socket));
  #sockets = new Set<Socket>();
  port = 0;
  readonly behaviour: Behaviour | undefined;
  constructor(behaviour: Behaviour | undefined) {
    this.behaviour = behaviour;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as AddressInfo).port;
  }

  /** Starts a side's run: requests count from 0 again. */
  reset(): void {
    this.#count = 0;
  }

  take(): Recorded[] {
    return this.seen.splice(0);
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #serve(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    let busy = false;
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (busy) return;
      const parsed = parseRequest(buf);
      if (parsed === undefined) return;
      busy = true;
      this.seen.push(parsed);
      const n = this.#count++;
      const b = this.behaviour;
      const reply = typeof b === 'function' ? b(parsed, n) : (b ?? { status: 200, headers: [['Content-Type', 'text/plain']], body: 'ok' });
      socket.end(renderReply(reply, parsed.method));
    });
  }
}

/** A request parsed from `buf`, or undefined while incomplete. */
function parseRequest(buf: Buffer): Recorded | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const head = buf.subarray(0, end).toString('latin1').split('\r\n');
  const line = head[0] ?? '';
  const [method = '', target = ''] = line.split(' ');
  const headers = head.slice(1).map((l): [string, string] => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
  const get = (name: string) => headers.find(([n]) => n.toLowerCase() === name)?.[1];
  const rest = buf.subarray(end + 4);
  const te = get('transfer-encoding');
  if (te !== undefined && /chunked/i.test(te)) {
    const body = dechunk(rest);
    return body === undefined ? undefined : { line, method, target, headers, framing: 'chunked', body };
  }
  const cl = get('content-length');
  if (cl !== undefined) {
    const n = Number(cl);
    if (rest.length < n) return undefined;
    return { line, method, target, headers, framing: 'length', body: rest.subarray(0, n).toString('latin1') };
  }
  return { line, method, target, headers, framing: 'none', body: '' };
}

/** The data of a chunked body, or undefined while incomplete. */
function dechunk(buf: Buffer): string | undefined {
  let pos = 0;
  const parts: Buffer[] = [];
  for (;;) {
    const eol = buf.indexOf('\r\n', pos);
    if (eol < 0) return undefined;
    const size = Number.parseInt(buf.subarray(pos, eol).toString('latin1'), 16);
    if (Number.isNaN(size)) return parts.map((p) => p.toString('latin1')).join('');
    if (size === 0) {
      const end = buf.indexOf('\r\n\r\n', eol);
      return end < 0 && !buf.subarray(eol).toString('latin1').startsWith('\r\n\r\n') && buf.indexOf('\r\n', eol + 2) < 0
        ? undefined
        : Buffer.concat(parts).toString('latin1');
    }
    if (buf.length < eol + 2 + size + 2) return undefined;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    pos = eol + 2 + size + 2;
  }
}

const REASONS: Record<number, string> = {
  200: 'OK',
  204: 'No Content',
  206: 'Partial Content',
  301: 'Moved Permanently',
  302: 'Found',
  304: 'Not Modified',
  404: 'Not Found',
  426: 'Upgrade Required',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

function renderReply(r: Reply, method: string): string {
  if (r.raw !== undefined) return r.raw;
  const status = r.status ?? 200;
  const headers = [...(r.headers ?? [])];
  const body = r.body ?? '';
  const framed = headers.some(([n]) => /^(content-length|transfer-encoding)$/i.test(n));
  const bodiless = status === 204 || status === 304 || (status >= 100 && status < 200);
  if (!framed && !r.noLength && !bodiless) headers.push(['Content-Length', String(Buffer.byteLength(body))]);
  headers.push(['Connection', 'close']);
  const head = [`HTTP/1.1 ${status} ${REASONS[status] ?? 'Status'}`, ...headers.map(([n, v]) => `${n}: ${v}`)].join('\r\n');
  return `${head}\r\n\r\n${method === 'HEAD' || bodiless ? '' : body}`;
}

// ---------------------------------------------------------------- client

/** Sends raw bytes on a fresh connection and reads the answer until the server closes (at most `ms`). */
export function send(port: number, bytes: string, ms = 4000): Promise<Observed> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(parseResponse(Buffer.concat(chunks), bytes.startsWith('HEAD '), error));
    };
    const timer = setTimeout(() => finish('timeout'), ms);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => finish());
    socket.on('close', () => finish());
    socket.on('error', (e) => finish(chunks.length === 0 ? `error ${(e as NodeJS.ErrnoException).code ?? e.message}` : undefined));
    socket.write(Buffer.from(bytes, 'latin1'));
  });
}

function parseResponse(whole: Buffer, head: boolean, error?: string): Observed {
  let buf = whole;
  if (buf.length > 0 && !buf.toString('latin1', 0, 5).startsWith('HTTP/'))
    return { status: 0, headers: [], body: buf.toString('latin1'), upstream: [], error: 'not an HTTP/1 response (HTTP/0.9)' };
  // Interim responses (100 Continue, 103 Early Hints) are noted, the final one parsed.
  const interim: number[] = [];
  for (;;) {
    const m = /^HTTP\/1\.[01] (1\d\d)[^\r]*\r\n/.exec(buf.toString('latin1', 0, 64));
    const end = buf.indexOf('\r\n\r\n');
    if (m === null || m[1] === '101' || end < 0) break;
    interim.push(Number(m[1]));
    buf = buf.subarray(end + 4);
  }
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0)
    return {
      status: 0,
      headers: [],
      body: buf.toString('latin1'),
      upstream: [],
      error: error ?? (buf.length === 0 ? 'closed without a response' : 'no header end'),
    };
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number((lines[0] ?? '').split(' ')[1]);
  const headers = lines.slice(1).map((l): [string, string] => {
    const i = l.indexOf(':');
    return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()];
  });
  let rest = buf.subarray(end + 4);
  if (head || status === 204 || status === 304) rest = Buffer.alloc(0);
  const te = headers.find(([n]) => n === 'transfer-encoding')?.[1];
  const body = te !== undefined && /chunked/i.test(te) ? (dechunk(rest) ?? rest.toString('latin1')) : rest.toString('latin1');
  return { status, headers, body, upstream: [], ...(interim.length === 0 ? {} : { interim }), ...(error === undefined ? {} : { error }) };
}

// ---------------------------------------------------------------- ports and processes

/**
 * `n` different ports that were free a moment ago, below the kernel's ephemeral range (see
 * deadPort()): no `listen(0)` elsewhere takes one of them before nginx binds it.
 */
export async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await deadPort());
  return [...ports];
}

/** Whether nginx can be run here (false: the reason). */
export function nginxAvailable(): true | string {
  if (!existsSync(NGINX)) return `${NGINX} is not installed (apt-get install nginx; REQUIRE_NGINX=1 makes this a failure)`;
  const v = spawnSync(NGINX, ['-v'], { encoding: 'utf8', timeout: 5000 });
  if (v.status !== 0) return `${NGINX} -v failed: ${v.stderr}`;
  return true;
}

/** The installed nginx's version number (`1.22.1`). */
export function nginxVersion(): string {
  const out = spawnSync(NGINX, ['-v'], { encoding: 'utf8', timeout: 5000 }).stderr;
  return /nginx\/([\d.]+)/.exec(out)?.[1] ?? '0';
}

/** A running nginx in a directory of its own, killed by `stop()` (and on process exit). */
export class NginxProcess {
  readonly dir = mkdtempSync(join(tmpdir(), 'swy-nginx-'));
  #child: ChildProcess | undefined;
  #onExit = () => {
    this.#child?.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  };
  /** A signal that ends this process (the test runner cancelling the file) ends nginx first. */
  #onSignal = (signal: NodeJS.Signals) => {
    this.#onExit();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };

  /** Writes `conf`, checks it with `-t` and starts nginx; throws with the error log when it fails. */
  async start(conf: string, ports: number[]): Promise<void> {
    const file = join(this.dir, 'nginx.conf');
    writeFileSync(file, conf.replaceAll('{dir}', this.dir));
    writeFileSync(join(this.dir, 'error.log'), ''); // a start after a failed one reads only its own errors
    const args = ['-p', `${this.dir}/`, '-c', file, '-e', join(this.dir, 'error.log')];
    const check = spawnSync(NGINX, [...args, '-t'], { encoding: 'utf8', timeout: 10_000 });
    if (check.status !== 0) throw new Error(`nginx -t failed:\n${check.stderr}\n${conf}`);
    process.once('exit', this.#onExit);
    process.once('SIGTERM', this.#onSignal);
    process.once('SIGINT', this.#onSignal);
    this.#child = spawn(NGINX, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    this.#child.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const deadline = Date.now() + 10_000;
    for (const port of ports) {
      while (!(await canConnect(port))) {
        if (this.#child.exitCode !== null || Date.now() > deadline)
          throw new Error(`nginx did not start (exit ${this.#child.exitCode}): ${stderr}\n${this.errorLog()}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    // Something else may hold a port: nginx then retries its bind() and gives up.
    if (/\[emerg\]/.test(this.errorLog())) throw new Error(`nginx could not start:\n${this.errorLog()}`);
  }

  errorLog(): string {
    const f = join(this.dir, 'error.log');
    return existsSync(f) ? readFileSync(f, 'utf8') : '';
  }

  /** Kills nginx, waits for it to be gone, and removes its directory (`keep`: for another start). */
  async stop(keep = false): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    process.removeListener('exit', this.#onExit);
    process.removeListener('SIGTERM', this.#onSignal);
    process.removeListener('SIGINT', this.#onSignal);
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
    }
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

// ---------------------------------------------------------------- rendering the configuration

/** The blocks `{ … }` at the top level of `text` named `name`, with the text outside them. */
function topBlocks(text: string, name: string): { blocks: string[]; rest: string } {
  const blocks: string[] = [];
  let rest = '';
  let i = 0;
  const re = new RegExp(`(^|[;{}\\s])${name}\\s*\\{`, 'g');
  for (;;) {
    re.lastIndex = i;
    const m = re.exec(text);
    if (m === null || depthAt(text, m.index) > 0) {
      rest += text.slice(i);
      break;
    }
    rest += text.slice(i, m.index + m[1]!.length);
    let depth = 0;
    let j = m.index + m[0].length - 1;
    for (; j < text.length; j++) {
      if (text[j] === '{') depth++;
      else if (text[j] === '}' && --depth === 0) break;
    }
    blocks.push(text.slice(m.index + m[0].length, j));
    i = j + 1;
  }
  return { blocks, rest };
}

function depthAt(text: string, at: number): number {
  let d = 0;
  for (let k = 0; k < at; k++) {
    if (text[k] === '{') d++;
    else if (text[k] === '}') d--;
  }
  return d;
}

/** nginx's server blocks for a case listening on `port` and proxying to `pass`. */
export function renderNginxServers(c: Case, port: number, pass: string, cacheZone: string): string {
  const cfg = c.config ?? {};
  const common = [
    `listen 127.0.0.1:${port};`,
    'proxy_http_version 1.1;', // the default since nginx 1.29.7
    cfg.host === 'client' ? 'proxy_set_header Host $host;' : '',
    cfg.xForwarded
      ? 'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;'
      : '',
    cfg.absoluteRedirect === false ? 'absolute_redirect off;' : '',
    ...(cfg.cache === undefined ? [] : renderNginxCache(cfg.cache, cacheZone)),
    ...(cfg.cookies === undefined ? [] : renderNginxCookies(cfg.cookies)),
    ...(cfg.shape ?? []).flatMap(renderNginxAddHeader),
  ]
    .filter(Boolean)
    .join('\n    ');
  const withPass = (body: string) => {
    const located = body.replace(/\blocation\s+((?:"[^"]*"|'[^']*'|[^{;"'])*)\{/g, (_m, args: string) => `location ${args}{ proxy_pass ${pass};`);
    const hasRoot = /\blocation\s+\/\s*\{/.test(body);
    return `${located}\n    ${hasRoot ? '' : `location / { proxy_pass ${pass}; }`}`;
  };
  const text = cfg.rewrite ?? '';
  const { blocks } = topBlocks(text, 'server');
  const bodies = blocks.length > 0 ? blocks : [text];
  return bodies.map((body) => `  server {\n    ${common}\n    ${withPass(body)}\n  }\n`).join('');
}

function renderNginxCache(c: CacheConfig, zone: string): string[] {
  const out = [`proxy_cache ${zone};`, 'add_header X-Cache-Status $upstream_cache_status always;'];
  for (const [code, time] of Object.entries(c.valid ?? {})) out.push(`proxy_cache_valid ${code} ${time};`);
  if (c.convertHead === false) out.push('proxy_cache_convert_head off;');
  if (c.revalidate) out.push('proxy_cache_revalidate on;');
  if (c.useStale !== undefined) out.push(`proxy_cache_use_stale ${c.useStale.join(' ')};`);
  if (c.methods !== undefined) out.push(`proxy_cache_methods ${c.methods.join(' ')};`);
  if (c.key !== undefined) out.push(`proxy_cache_key "${c.key}";`);
  if (c.bypass !== undefined) out.push(`proxy_cache_bypass ${c.bypass};`);
  if (c.noCache !== undefined) out.push(`proxy_no_cache ${c.noCache};`);
  if (c.minUses !== undefined) out.push(`proxy_cache_min_uses ${c.minUses};`);
  return out;
}

/**
 * One argument of an nginx directive, quoted when it is empty or holds what would end or split a bare
 * word. A backslash before a character nginx's parser unescapes (`\\`, quotes, `n`, `r`, `t`) is
 * refused: the two sides would read different text.
 */
export function nginxArg(text: string): string {
  if (/\\[\\"'nrt]/.test(text)) throw new Error(`nginxArg: ${JSON.stringify(text)} holds an escape nginx's parser would unescape`);
  return text !== '' && !/[\s;{}"'#]/.test(text) ? text : `"${text.replaceAll('"', '\\"')}"`;
}

/** A cookie rule's pattern as nginx writes it: `~` for a RegExp (`~*` when `caseless` says so). */
function nginxPattern(from: string | RegExp, caseless: boolean): string {
  if (typeof from === 'string') return nginxArg(from);
  if (/[^i]/.test(from.flags)) throw new Error(`nginxPattern: /${from.source}/${from.flags} has flags nginx cannot say`);
  return nginxArg(`${caseless && from.flags.includes('i') ? '~*' : '~'}${from.source}`);
}

/** balance()'s cookie options as nginx's `proxy_cookie_*` directives. */
function renderNginxCookies(c: CookieOptions): string[] {
  const rewrites = (directive: string, rules: false | readonly CookieRewriteRule[] | undefined, caseless: boolean) =>
    rules === false ? [`${directive} off;`] : (rules ?? []).map((r) => `${directive} ${nginxPattern(r.from, caseless)} ${nginxArg(r.to)};`);
  return [
    ...rewrites('proxy_cookie_domain', c.cookieDomain, false),
    ...rewrites('proxy_cookie_path', c.cookiePath, true),
    ...(c.cookieFlags === false
      ? ['proxy_cookie_flags off;']
      : (c.cookieFlags ?? []).map((r) => `proxy_cookie_flags ${nginxPattern(r.cookie, false)} ${r.flags.join(' ')};`)),
  ];
}

/** One shapeResponse()'s `add` as nginx's `add_header` lines (a list of values: one line each). */
function renderNginxAddHeader(s: ShapeConfig): string[] {
  return Object.entries(s.add ?? {}).flatMap(([name, value]) =>
    (typeof value === 'string' ? [value] : value).map((v) => `add_header ${nginxArg(name)} ${nginxArg(v)}${s.always === true ? ' always' : ''};`),
  );
}

/** The whole nginx.conf for the cases (`{dir}` is the prefix directory). */
export function renderNginxConf(servers: string, http: string): string {
  return `daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path {dir}/client_body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  default_type text/plain;
${http}
${servers}
}
`;
}

/** A switchyard gateway for the case, listening on port 0: shapeResponse → rewrite → cache → balance, as configured. */
export async function startGateway(c: Case, upstreamPort: number): Promise<{ port: number; close: () => Promise<void>; error?: string }> {
  const cfg = c.config ?? {};
  let pool: UpstreamPool | undefined;
  const closers: Array<() => unknown> = [];
  let listener: ReturnType<typeof chain>;
  try {
    pool = createPool({ servers: [{ url: `http://127.0.0.1:${upstreamPort}` }] });
    // shapeResponse()s wrap the head in the order they run, each passing it to the one before it:
    // the last one configured is put first, so that headers are added in the order nginx adds them.
    const mws: Middleware[] = [...(cfg.shape ?? [])].reverse().map((s) => shapeResponse(s));
    if (cfg.rewrite !== undefined)
      mws.push(rewrite(fromNginx(cfg.rewrite, { ignore: ['proxy_pass'] }), cfg.absoluteRedirect === false ? { absoluteRedirect: false } : {}));
    if (cfg.cache !== undefined) {
      const cc = cfg.cache;
      const mw = cache({
        statusHeader: 'X-Cache-Status',
        ...(cc.valid === undefined ? {} : { valid: cc.valid }),
        ...(cc.convertHead === undefined ? {} : { convertHead: cc.convertHead }),
        ...(cc.revalidate === undefined ? {} : { revalidate: cc.revalidate }),
        ...(cc.useStale === undefined ? {} : { useStale: cc.useStale as never }),
        ...(cc.methods === undefined ? {} : { methods: cc.methods }),
        ...(cc.key === undefined ? {} : { key: cc.key }),
        ...(cc.bypass === undefined ? {} : { bypass: cc.bypass }),
        ...(cc.noCache === undefined ? {} : { noCache: cc.noCache }),
        ...(cc.minUses === undefined ? {} : { minUses: cc.minUses }),
      } as Parameters<typeof cache>[0]);
      closers.push(() => mw.close());
      mws.push(mw);
    }
    mws.push(
      balance(pool, {
        xForwarded: cfg.xForwarded === true,
        forwarded: cfg.xForwarded === true,
        ...(cfg.host === 'client' ? { host: 'client' as const } : {}),
        ...cfg.cookies,
      }),
    );
    listener = chain(...mws);
  } catch (e) {
    pool?.close();
    return { port: 0, close: async () => undefined, error: `switchyard refused the configuration: ${(e as Error).message}` };
  }
  const server = createHttpServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      for (const close of closers) await close();
      pool?.close();
    },
  };
}

// ---------------------------------------------------------------- comparing

const ALWAYS_COMPARED = ['location', 'x-cache-status'];
const UPSTREAM_IGNORED = new Set(['connection', 'keep-alive']);

/** Replaces the ports that differ between the sides with names. */
export function normalizer(front: number, up: number): (s: string) => string {
  return (s) => s.replaceAll(`127.0.0.1:${front}`, '{front}').replaceAll(`:${front}`, ':{front}').replaceAll(`127.0.0.1:${up}`, '{up}');
}

/** The differences between nginx's and switchyard's observations of one step, as readable lines. */
export function differences(c: Case, step: Step, a: Observed, b: Observed, na: (s: string) => string, nb: (s: string) => string): string[] {
  const out: string[] = [];
  const show = (s: unknown) => JSON.stringify(s);
  if (a.error !== undefined || b.error !== undefined) {
    if (a.error !== b.error) out.push(`transport: nginx ${a.error ?? 'ok'}, switchyard ${b.error ?? 'ok'}`);
  }
  if (a.status !== b.status) out.push(`status: nginx ${a.status}, switchyard ${b.status}`);
  if (String(a.interim ?? []) !== String(b.interim ?? [])) out.push(`interim responses: nginx [${a.interim ?? []}], switchyard [${b.interim ?? []}]`);
  for (const name of [...ALWAYS_COMPARED, ...(step.headers ?? [])]) {
    const va = headerValue(a.headers, name, na);
    const vb = headerValue(b.headers, name, nb);
    if (va !== vb) out.push(`response ${name}: nginx ${show(va ?? null)}, switchyard ${show(vb ?? null)}`);
  }
  // Bodies the proxies make themselves (redirects, errors) are their own; the upstream's are compared.
  const upstreamAnswered = a.upstream.length > 0 && b.upstream.length > 0 && a.status !== 502 && a.status !== 504;
  const compareBody = step.body === true || upstreamAnswered || (a.status < 300 && a.headers.some(([n]) => n === 'x-cache-status'));
  if (compareBody && a.status === b.status && na(a.body) !== nb(b.body))
    out.push(`response body: nginx ${show(na(a.body).slice(0, 120))}, switchyard ${show(nb(b.body).slice(0, 120))}`);
  if (a.upstream.length !== b.upstream.length)
    out.push(
      `upstream requests: nginx ${a.upstream.length} ${show(a.upstream.map((r) => r.line))}, switchyard ${b.upstream.length} ${show(b.upstream.map((r) => r.line))}`,
    );
  const ignored = new Set([...UPSTREAM_IGNORED, ...(c.ignoreUpstream ?? [])]);
  for (let i = 0; i < Math.min(a.upstream.length, b.upstream.length); i++) {
    const ra = a.upstream[i]!;
    const rb = b.upstream[i]!;
    const target = (r: Recorded, n: (s: string) => string) => `${r.method} ${n(r.target)}`;
    if (target(ra, na) !== target(rb, nb)) out.push(`upstream request line: nginx ${show(ra.line)}, switchyard ${show(rb.line)}`);
    const hs = (r: Recorded, n: (s: string) => string) =>
      c.rawUpstream
        ? r.headers.filter(([k]) => !ignored.has(k.toLowerCase())).map(([k, v]) => `${k}: ${n(v)}`)
        : r.headers
            .filter(([k]) => !ignored.has(k.toLowerCase()))
            .map(([k, v]) => `${k.toLowerCase()}: ${n(v)}`)
            .sort();
    const ha = hs(ra, na);
    const hb = hs(rb, nb);
    if (c.rawUpstream) {
      if (ha.join('\n') !== hb.join('\n')) out.push(`upstream headers: nginx ${show(ha)}, switchyard ${show(hb)}`);
    } else {
      const onlyA = ha.filter((h) => !hb.includes(h));
      const onlyB = hb.filter((h) => !ha.includes(h));
      if (onlyA.length > 0 || onlyB.length > 0) out.push(`upstream headers: only nginx ${show(onlyA)}, only switchyard ${show(onlyB)}`);
    }
    if (ra.framing !== rb.framing) out.push(`upstream body framing: nginx ${ra.framing}, switchyard ${rb.framing}`);
    if (ra.body !== rb.body) out.push(`upstream body: nginx ${show(ra.body)}, switchyard ${show(rb.body)}`);
  }
  return out;
}

function headerValue(headers: Array<[string, string]>, name: string, n: (s: string) => string): string | undefined {
  const vs = headers.filter(([k]) => k === name).map(([, v]) => n(v));
  return vs.length === 0 ? undefined : vs.join(' | ');
}

/** Runs one side: each step sent to `port`, with the upstream's records of the step. */
export async function runSide(c: Case, port: number, up: RecordingUpstream): Promise<Observed[]> {
  up.reset();
  up.take();
  const out: Observed[] = [];
  for (const step of c.steps) {
    if (step.delay !== undefined) await new Promise((r) => setTimeout(r, step.delay));
    const o = await send(port, step.request.replaceAll('{front}', `127.0.0.1:${port}`).replaceAll('{port}', String(port)));
    // A request the upstream got after the client's answer (none expected) would land in the next step.
    await new Promise((r) => setImmediate(r));
    o.upstream = up.take();
    out.push(o);
  }
  return out;
}

/** `a` is an older version than `b` (dotted numbers). */
export function olderThan(a: string, b: string): boolean {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) < (pb[i] ?? 0);
  }
  return false;
}

/** nginx's observation as current nginx would have made it (`Case.current`), for an older nginx. */
export function asCurrent(c: Case, o: Observed, version: string): Observed {
  const cur = c.current;
  if (cur === undefined || !olderThan(version, cur.since)) return o;
  const drop = new Set(cur.drop ?? []);
  const { interim: _interim, ...rest } = o;
  return {
    ...rest,
    ...(cur.status === undefined ? {} : { status: cur.status }),
    ...(cur.body === undefined ? {} : { body: cur.body }),
    // Refused by current nginx: nothing reaches the upstream.
    ...(cur.refused ? { upstream: [] } : {}),
    headers: o.headers.filter(([n]) => !drop.has(n)),
  };
}
