import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Cancellation } from '../core/cancel.ts';
import type { Peer } from '../pool/peer.ts';
import type { UpstreamPool } from '../pool/index.ts';
import type { RequestBody } from './body.ts';

/** Timeouts of one attempt, in ms (0 disables one). @internal */
export interface AttemptTimeouts {
  connect: number;
  header: number;
  idle: number;
}

/** How an attempt ended before a response could be used. @internal */
export type AttemptFailure = 'error' | 'timeout' | 'invalid_header';

/** Bytes an attempt moved on its connection so far (a kept-alive socket's earlier traffic excluded). @internal */
export interface AttemptBytes {
  sent(): number;
  received(): number;
}

/** The outcome of one upstream attempt. @internal */
export type AttemptResult =
  | { kind: 'response'; request: ClientRequest; response: IncomingMessage; headerTime: number; bytes: AttemptBytes }
  | { kind: 'failure'; failure: AttemptFailure; cause: Error; sent: boolean; reused: boolean; bytes: AttemptBytes };

class TimeoutError extends Error {
  readonly code: string;
  constructor(what: string) {
    super(`upstream timed out while ${what}`);
    this.code = 'ETIMEDOUT';
  }
}

/**
 * Sends one attempt of the request to `peer`: waits for a connection before
 * reading the client's body (so a refused connection leaves the body intact for
 * the next server), then waits for the response header under the timeouts.
 * @internal
 */
export function attempt(
  pool: UpstreamPool,
  peer: Peer,
  method: string,
  path: string,
  headers: string[],
  body: RequestBody,
  timeouts: AttemptTimeouts,
  clientGone: Cancellation,
): Promise<AttemptResult> {
  return new Promise((resolve) => {
    const started = performance.now();
    const t = peer.target;
    const send = t.protocol === 'https:' ? httpsRequest : httpRequest;
    let settled = false;
    let sent = false;
    let reused = false;
    let timer: NodeJS.Timeout | undefined;
    let conn: Socket | undefined;
    let read0 = 0;
    let written0 = 0;
    const bytes: AttemptBytes = {
      sent: () => (conn === undefined ? 0 : Math.max(0, conn.bytesWritten - written0)),
      received: () => (conn === undefined ? 0 : Math.max(0, conn.bytesRead - read0)),
    };
    const req = send({
      protocol: t.protocol,
      hostname: t.hostname,
      port: t.port,
      method,
      path,
      headers,
      agent: pool.agentFor(peer),
      setHost: false,
      ...(t.protocol === 'https:' ? { servername: isIpLiteral(t.hostname) ? undefined : t.hostname } : {}),
    } as RequestOptions);

    const clearTimer = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    };
    const fail = (failure: AttemptFailure, cause: Error): void => {
      if (settled) return;
      settled = true;
      clearTimer();
      clientGone.off(onAbort);
      body.detach();
      req.destroy();
      resolve({ kind: 'failure', failure, cause, sent, reused, bytes });
    };
    const arm = (ms: number, what: string): void => {
      clearTimer();
      if (ms > 0) timer = setTimeout(() => fail('timeout', new TimeoutError(what)), ms);
    };
    const onAbort = (): void => fail('error', new Error('client closed the request'));
    clientGone.onAbort(onAbort);

    const start = (): void => {
      if (settled) return;
      sent = true;
      clearTimer();
      // As nginx's proxy_read_timeout, the wait for the header starts once the
      // request is sent: a long upload is limited by the idle timeout, not by it.
      req.once('finish', () => {
        if (!settled) arm(timeouts.header, 'reading the response header');
      });
      body.attach(req);
    };
    req.on('socket', (socket: Socket) => {
      conn = socket;
      read0 = socket.bytesRead;
      written0 = socket.bytesWritten;
      reused = req.reusedSocket;
      if (timeouts.idle > 0) req.setTimeout(timeouts.idle);
      if (socket.connecting) {
        arm(timeouts.connect, 'connecting');
        socket.once('connect', start);
      } else {
        start();
      }
    });
    req.on('timeout', () => fail('timeout', new TimeoutError('waiting for data')));
    req.on('error', (err: Error & { code?: string }) => {
      const code = err.code ?? '';
      fail(code.startsWith('HPE_') ? 'invalid_header' : 'error', err);
    });
    req.on('response', (response: IncomingMessage) => {
      if (settled) {
        response.resume();
        return;
      }
      const status = response.statusCode ?? 0;
      if (status < 100 || status > 999) {
        // nginx: an invalid status line is an invalid header.
        response.resume();
        fail('invalid_header', new Error(`upstream sent an invalid status ${status}`));
        return;
      }
      settled = true;
      clearTimer();
      clientGone.off(onAbort);
      resolve({ kind: 'response', request: req, response, headerTime: performance.now() - started, bytes });
    });
  });
}

function isIpLiteral(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}
