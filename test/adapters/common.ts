// Shared parts of the adapter end-to-end tests: a real upstream that answers
// JSON, echoes streams and WebSockets, or never answers; and clients for the
// three kinds of traffic a gateway carries.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import type { TestContext } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { listen, type Upstream } from '../helpers.ts';

/** What a backend saw of one request. */
export interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** What a backend saw of one streamed (echoed) body. */
export interface Streamed {
  url: string;
  bytes: number;
  sha256: string;
}

export interface Backend {
  name: string;
  url: string;
  /** Plain requests, in order. */
  seen: Seen[];
  /** Echoed bodies, in order. */
  streamed: Streamed[];
  /** WebSocket connections: the request target each one arrived with. */
  sockets: string[];
  /** `/drip` responses that closed before their end (they never end by themselves). */
  dripsClosed(): number;
  close(): Promise<void>;
}

/**
 * A real upstream on port 0, closed in `t.after`:
 * - `/stream...` echoes the request body as it arrives (full duplex) and records its sha256;
 * - `/hang...` reads the request and never answers;
 * - `/drip...` answers 200 and a line every 20 ms, never ending, until the connection closes;
 * - anything else answers JSON `{ name, method, url, headers, body }`;
 * - WebSocket upgrades echo every message back prefixed with the backend's name.
 */
export async function backend(t: TestContext, name: string): Promise<Backend> {
  const seen: Seen[] = [];
  const streamed: Streamed[] = [];
  const sockets: string[] = [];
  let dripsClosed = 0;
  const server = createServer((req, res) => {
    const url = req.url ?? '';
    if (url.includes('/drip')) {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name });
      const timer = setInterval(() => res.write('drip\n'), 20);
      res.once('close', () => {
        clearInterval(timer);
        dripsClosed++;
      });
      return;
    }
    if (url.includes('/stream')) {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      req.on('end', () => streamed.push({ url, bytes, sha256: hash.digest('hex') }));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-upstream': name });
      req.pipe(res);
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? '', url, headers: req.headers, body });
      if (url.includes('/hang')) return; // never answers: the gateway's header timeout has to fire
      const payload = JSON.stringify({ name, method: req.method, url, headers: req.headers, body });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'x-upstream': name });
      res.end(payload);
    });
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    sockets.push(req.url ?? '');
    ws.on('message', (data, isBinary) => {
      ws.send(isBinary ? data : `${name}:${String(data)}`, { binary: isBinary });
    });
  });
  const up: Upstream = await listen(undefined, server);
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await up.close();
  };
  t.after(close);
  return { name, url: up.url, seen, streamed, sockets, dripsClosed: () => dripsClosed, close };
}

/** The JSON a backend answers with. */
export interface Echo {
  name: string;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface StreamResult {
  status: number;
  headers: IncomingHttpHeaders;
  /** sha256 of the bytes sent. */
  sent: string;
  /** sha256 of the bytes received back. */
  received: string;
  bytes: number;
}

export const MiB = 1024 * 1024;

/**
 * POSTs `size` random bytes to an echoing path and reads the echo back. Only the
 * first MiB is sent before the echo starts; the rest is sent after the first
 * echoed byte arrives. So the exchange completes only if the gateway streams both
 * ways; a gateway that buffers the request or the response makes it fail after
 * `stallMs`, with an error saying so.
 */
export function streamThrough(url: string, size = 16 * MiB, headers: Record<string, string> = {}, stallMs = 10_000): Promise<StreamResult> {
  const data = randomBytes(size);
  const sent = createHash('sha256').update(data).digest('hex');
  return new Promise((resolve, reject) => {
    let released = false;
    let answered = false;
    const req = request(
      url,
      { method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': String(size), ...headers } },
      (res) => {
        const hash = createHash('sha256');
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          bytes += chunk.length;
          if (!released) {
            released = true;
            clearTimeout(stall);
            req.end(data.subarray(MiB));
          }
        });
        res.on('end', () => {
          clearTimeout(stall);
          answered = true;
          if (!released) req.destroy(); // answered without echoing (an error status): stop sending
          resolve({ status: res.statusCode ?? 0, headers: res.headers, sent, received: hash.digest('hex'), bytes });
        });
        res.on('error', reject);
      },
    );
    const stall = setTimeout(() => {
      req.destroy();
      reject(new Error(`no echo within ${stallMs} ms of sending the first MiB: the body is not streamed through the gateway`));
    }, stallMs);
    req.on('error', (err) => {
      clearTimeout(stall);
      if (answered) return; // destroyed above, after the answer
      reject(err);
    });
    req.write(data.subarray(0, Math.min(MiB, size)));
  });
}

/** Opens a WebSocket, sends each message, collects as many replies, closes it. */
export async function wsEcho(url: string, messages: string[]): Promise<string[]> {
  const ws = new WebSocket(url);
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
    });
    const replies: string[] = [];
    for (const m of messages) {
      const reply = new Promise<string>((resolve, reject) => {
        ws.once('message', (data) => resolve(String(data)));
        ws.once('close', () => reject(new Error('closed before the echo')));
      });
      ws.send(m);
      replies.push(await reply);
      ws.removeAllListeners('close');
    }
    return replies;
  } finally {
    if (ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      ws.close();
      const timer = setTimeout(() => ws.terminate(), 2000);
      await closed;
      clearTimeout(timer);
    }
  }
}

/** A WebSocket upgrade that is expected to fail: resolves with the HTTP status, or 0 when the socket was cut. */
export function wsRefused(url: string, timeoutMs = 3000): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no answer to the upgrade within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.once('open', () => {
      clearTimeout(timer);
      ws.terminate();
      reject(new Error('the upgrade unexpectedly succeeded'));
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      res.resume();
      ws.terminate();
      resolve(res.statusCode ?? 0);
    });
    ws.once('error', () => {
      clearTimeout(timer);
      resolve(0);
    });
  });
}

/** The JSON sent in the body-parser tests: spacing a parser would not keep. */
export const JSON_TEXT = '{ "user" : "ada",  "tags" : ["a", "b"], "n" : 1.50 }';
export const JSON_VALUE = { user: 'ada', tags: ['a', 'b'], n: 1.5 };

/** Parses a backend's JSON answer. */
export function echo(body: string): Echo {
  return JSON.parse(body) as Echo;
}

/** Captures a pino (Fastify) logger's output, one parsed record per line. */
export function logCapture(): { stream: { write(line: string): void }; records: Array<{ level: number; msg?: string; [k: string]: unknown }> } {
  const records: Array<{ level: number; msg?: string }> = [];
  return {
    records,
    stream: {
      write(line: string) {
        for (const l of line.split('\n')) if (l.trim() !== '') records.push(JSON.parse(l));
      },
    },
  };
}

/** Waits `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
