// Stream probes of healthCheck() (NGINX Plus stream `health_check` with `match { send; expect; }`):
// a TCP connect (over TLS for https:// servers), optionally bytes sent and an answer expected; a UDP
// datagram sent, and an answer expected or no ICMP unreachable within the timeout.
import { createSocket } from 'node:dgram';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import type { PeerTarget } from '../pool/peer.ts';

/** What a server's answer must be: a literal it begins with, or a pattern it matches (latin1 text). */
export type StreamExpect = string | RegExp;

/** Most answer bytes a stream probe reads (nginx `proxy_buffer_size` 16k). */
export const MAX_STREAM_PROBE_BYTES = 16 * 1024;

/** The NGINX Plus UDP probe's datagram when none is given. */
export const DEFAULT_UDP_PROBE = 'nginx health check';

/** One stream probe's settings. @internal */
export interface StreamProbeSettings {
  readonly type: 'tcp' | 'udp';
  readonly send: Buffer | undefined;
  readonly expect: StreamExpect | undefined;
  readonly port: number | undefined;
  readonly tls: Readonly<ConnectionOptions>;
}

/** A running probe: `destroy` aborts it. @internal */
export interface RunningProbe {
  destroy(): void;
}

/**
 * The verdict on what came so far: `true` when `data` meets `expect`, `false` when no more bytes can
 * change that (a literal with as many bytes in that differ), `undefined` while more may.
 */
function judge(expect: StreamExpect, data: Buffer): boolean | undefined {
  const text = data.toString('latin1');
  if (typeof expect === 'string') {
    if (text.length >= expect.length) return text.startsWith(expect);
    return expect.startsWith(text) ? undefined : false;
  }
  expect.lastIndex = 0;
  return expect.test(text) ? true : undefined;
}

/**
 * Runs one stream probe against `target`; `done(passed, reason)` is called once (the caller's timer
 * calls `finish` on timeout, which for UDP without `expect` is a pass: no ICMP unreachable came).
 * @internal
 */
export function streamProbe(
  target: PeerTarget,
  s: StreamProbeSettings,
  done: (passed: boolean, reason: string | undefined) => void,
): RunningProbe & { timeout(): void } {
  const port = s.port ?? target.port;
  let settled = false;
  let socket: Socket | undefined;
  let udp: ReturnType<typeof createSocket> | undefined;
  const finish = (passed: boolean, reason: string | undefined): void => {
    if (settled) return;
    settled = true;
    socket?.destroy();
    try {
      udp?.close();
    } catch {
      // closed already
    }
    done(passed, reason);
  };
  const chunks: Buffer[] = [];
  let size = 0;
  const read = (chunk: Buffer): void => {
    if (settled || s.expect === undefined) return;
    const room = MAX_STREAM_PROBE_BYTES - size;
    chunks.push(chunk.length > room ? chunk.subarray(0, room) : chunk);
    size += Math.min(chunk.length, room);
    const verdict = judge(s.expect, Buffer.concat(chunks));
    if (verdict !== undefined) finish(verdict, verdict ? undefined : 'unexpected answer');
    else if (size >= MAX_STREAM_PROBE_BYTES) finish(false, 'unexpected answer');
  };
  if (s.type === 'udp') {
    udp = createSocket(isIP(target.hostname) === 6 ? 'udp6' : 'udp4');
    udp.on('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
    udp.on('message', (msg) => {
      // a datagram is a whole answer
      if (s.expect === undefined) return;
      const verdict = judge(s.expect, msg.subarray(0, MAX_STREAM_PROBE_BYTES)) === true;
      finish(verdict, verdict ? undefined : 'unexpected answer');
    });
    udp.connect(port, target.hostname, () => {
      if (!settled) udp?.send(s.send ?? Buffer.from(DEFAULT_UDP_PROBE));
    });
  } else {
    const options = { host: target.hostname, port };
    const secure = target.protocol === 'https:';
    try {
      socket = secure
        ? tlsConnect({ ...s.tls, ...options, servername: s.tls.servername ?? (isIP(target.hostname) === 0 ? target.hostname : undefined) })
        : netConnect(options);
    } catch (err) {
      finish(false, (err as Error).message);
      return { destroy: () => finish(false, 'stopped'), timeout: () => finish(false, 'timeout') };
    }
    socket.on('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      if (s.send !== undefined) socket?.write(s.send);
      if (s.expect === undefined) finish(true, undefined);
    });
    socket.on('data', read);
    socket.on('end', () => finish(false, size === 0 ? 'closed without an answer' : 'unexpected answer'));
  }
  return {
    destroy: () => finish(false, 'stopped'),
    // UDP without expect: silence until the timeout is a pass (NGINX Plus: no ICMP "unreachable")
    timeout: () => finish(s.type === 'udp' && s.expect === undefined, s.type === 'udp' && s.expect === undefined ? undefined : 'timeout'),
  };
}
