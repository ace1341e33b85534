// One TCP client connection through streamBalance(): the PROXY protocol header from a trusted
// client, the attempts (nginx's stream proxy_next_upstream: connect errors and timeouts only), then
// the two directions piped with backpressure, rate limits, half-close and the idle timeout.
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { isIP } from 'node:net';
import { Cancellation } from '../core/cancel.ts';
import { BadGatewayError, BadRequestError, GatewayTimeoutError, NoServerAvailableError, type SwitchyardError } from '../core/errors.ts';
import type { Exchange } from '../core/exchange.ts';
import type { Selection } from '../pool/methods/types.ts';
import type { Peer } from '../pool/peer.ts';
import type { ClientFacts, Closable, StreamBalancer, StreamSession } from './index.ts';
import { parseProxyHeader, proxyHeader } from './proxy-protocol.ts';
import { RateGate } from './rate.ts';

/** Most bytes read from a client while its server is being connected (nginx's `proxy_buffer_size` is 16k). */
const EARLY_LIMIT = 64 * 1024;

/** Resets the socket when Node can (RST, as the other side's reset), else destroys it (a TLS socket has no TCP handle of its own to reset). */
function reset(socket: Socket): void {
  if (socket.destroyed) return;
  const s = socket as Socket & { resetAndDestroy?: () => Socket };
  if (typeof s.resetAndDestroy === 'function' && !s.connecting) {
    try {
      s.resetAndDestroy();
      return;
    } catch {
      // ERR_INVALID_HANDLE_TYPE (TLS): closed below
    }
  }
  socket.destroy();
}

/** Ends the socket's writing, then closes it once what it holds is flushed. */
function closeAfterFlush(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writableFinished) {
    socket.destroy();
    return;
  }
  socket.once('finish', () => socket.destroy());
  if (!socket.writableEnded) socket.end();
}

/** @internal */
export class TcpSession implements Closable {
  readonly #b: StreamBalancer;
  readonly #client: Socket;
  readonly #began = performance.now();
  #facts: ClientFacts;
  #ex: Exchange | undefined;
  #sel: Selection | undefined;
  #maxTries = 0;
  #attempts = 0;
  #firstAttempt = 0;
  /** Bytes read from the client before the server was connected (after a PROXY header). */
  #early: Buffer[] = [];
  #earlySize = 0;
  #header: Buffer = Buffer.alloc(0);
  #timer: NodeJS.Timeout | undefined;
  #cancel = new Cancellation();
  #upstream: Socket | undefined;
  #peer: Peer | undefined;
  #attemptStart = 0;
  #connectTime = -1;
  #firstByte = -1;
  #upSent = 0;
  #upReceived = 0;
  #fromClient = 0;
  #toClient = 0;
  #addrs: string[] = [];
  #connectTimes: number[] = [];
  #done = false;
  /** Bytes moved since the idle timer's last tick. */
  #active = false;
  /** The idle timer's quiet ticks in a row. */
  #quiet = 0;

  constructor(b: StreamBalancer, client: Socket) {
    this.#b = b;
    this.#client = client;
    // half-close needs the client side to stay writable after its FIN (the server's allowHalfOpen,
    // read per socket when the FIN arrives)
    (client as Socket & { allowHalfOpen: boolean }).allowHalfOpen = true;
    this.#facts = {
      remoteAddress: client.remoteAddress ?? '',
      remotePort: client.remotePort ?? 0,
      remoteFamily: client.remoteFamily ?? '',
      localAddress: client.localAddress ?? '',
      localPort: client.localPort ?? 0,
    };
  }

  start(): void {
    const b = this.#b;
    const client = this.#client;
    b.connections++;
    b.processing++;
    b.sessions.add(this);
    client.on('error', this.#onClientError);
    client.on('close', this.#onClientClose);
    const trust = b.settings.acceptProxyProtocol;
    if (trust !== undefined && trust(this.#facts.remoteAddress)) {
      this.#timer = setTimeout(() => this.#fail(new BadRequestError('PROXY protocol header timed out'), 400, true), b.settings.proxyProtocolTimeout);
      client.on('data', this.#onHeaderData);
      return;
    }
    client.on('data', this.#onEarlyData);
    this.#begin();
  }

  /**
   * What the client sends while a server is being connected is read and kept (so that a client that
   * resets or leaves meanwhile is seen at once), up to {@link EARLY_LIMIT} bytes; then reading pauses.
   */
  readonly #onEarlyData = (chunk: Buffer): void => {
    this.#fromClient += chunk.length;
    this.#early.push(chunk);
    this.#earlySize += chunk.length;
    if (this.#earlySize >= EARLY_LIMIT) this.#client.pause();
  };

  readonly #onHeaderData = (chunk: Buffer): void => {
    this.#fromClient += chunk.length;
    this.#header = this.#header.length === 0 ? chunk : Buffer.concat([this.#header, chunk]);
    const parsed = parseProxyHeader(this.#header);
    if (parsed.state === 'more') return;
    this.#client.off('data', this.#onHeaderData);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (parsed.state === 'invalid') {
      this.#fail(new BadRequestError(`Invalid PROXY protocol header: ${parsed.reason}`), 400, true);
      return;
    }
    const a = parsed.addresses;
    if (a !== undefined) {
      this.#facts = {
        remoteAddress: a.sourceAddress,
        remotePort: a.sourcePort,
        remoteFamily: isIP(a.sourceAddress) === 6 ? 'IPv6' : 'IPv4',
        localAddress: a.destinationAddress,
        localPort: a.destinationPort,
      };
    }
    const rest = this.#header.subarray(parsed.length);
    if (rest.length > 0) this.#early.push(rest);
    this.#earlySize = rest.length;
    this.#header = Buffer.alloc(0);
    if (this.#earlySize >= EARLY_LIMIT) this.#client.pause();
    this.#client.on('data', this.#onEarlyData);
    this.#begin();
  };

  /** The selection state and the first attempt. */
  #begin(): void {
    const b = this.#b;
    this.#ex = b.exchangeFor(this.#facts);
    this.#ex.clientAddress = this.#facts.remoteAddress;
    this.#sel = b.inner.selection(this.#ex.req, this.#ex, true);
    const poolTries = b.inner.maxTries();
    this.#maxTries = b.settings.tries === 0 ? poolTries : Math.min(b.settings.tries, poolTries);
    this.#firstAttempt = performance.now();
    this.#next(undefined);
  }

  /** Picks a server for the next attempt, waiting in the pool's queue when it has one. */
  #next(last: SwitchyardError | undefined): void {
    if (this.#done) return;
    const b = this.#b;
    const peer = b.inner.select(this.#sel!);
    if (peer !== undefined) {
      this.#attempt(peer);
      return;
    }
    if (last === undefined && b.inner.queueing) {
      void b.inner.wait(this.#sel!, this.#cancel).then((waited) => {
        if (this.#done) {
          if (waited !== undefined) b.inner.finishStream(waited, 'next', { connect: -1, firstByte: -1, response: 0, sent: 0, received: 0 });
          return;
        }
        if (waited === undefined) this.#fail(new NoServerAvailableError(b.pool.name, 502), 502, false);
        else this.#attempt(waited);
      });
      return;
    }
    this.#fail(last ?? new NoServerAvailableError(b.pool.name, 502), 502, false);
  }

  #attempt(peer: Peer): void {
    const b = this.#b;
    this.#attempts++;
    this.#peer = peer;
    this.#addrs.push(peer.name);
    this.#attemptStart = performance.now();
    const t = peer.target;
    const options = { host: t.hostname, port: t.port, allowHalfOpen: true, noDelay: true };
    let upstream: Socket;
    let event: 'connect' | 'secureConnect' = 'connect';
    try {
      if (t.protocol === 'https:') {
        const tls = b.inner.tls;
        const servername = tls.servername ?? (isIP(t.hostname) === 0 ? t.hostname : undefined);
        upstream = tlsConnect({ ...tls, ...options, servername });
        event = 'secureConnect';
      } else {
        upstream = netConnect(options);
      }
    } catch (err) {
      this.#attemptFailed(peer, undefined, err);
      return;
    }
    this.#upstream = upstream;
    this.#timer = setTimeout(() => this.#attemptFailed(peer, upstream, undefined), b.settings.connectTimeout);
    const onError = (err: Error): void => this.#attemptFailed(peer, upstream, err);
    upstream.once('error', onError);
    upstream.once(event, () => {
      upstream.off('error', onError);
      this.#connected(upstream);
    });
  }

  /** A connect error (`err`) or timeout: the attempt failed; the next server is tried if allowed. */
  #attemptFailed(peer: Peer, upstream: Socket | undefined, err: unknown): void {
    if (this.#done || this.#peer !== peer) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    upstream?.destroy();
    this.#upstream = undefined;
    this.#peer = undefined;
    this.#connectTimes.push(-1);
    const elapsed = performance.now() - this.#attemptStart;
    this.#b.inner.finishStream(peer, 'failed', { connect: -1, firstByte: -1, response: elapsed, sent: 0, received: 0 });
    const failure =
      err === undefined
        ? new GatewayTimeoutError(`Timed out connecting to ${peer.name}`)
        : new BadGatewayError(`Could not connect to ${peer.name}: ${(err as Error).message ?? String(err)}`, { cause: err });
    const s = this.#b.settings;
    const budget = s.nextUpstreamTimeout === 0 || performance.now() - this.#firstAttempt < s.nextUpstreamTimeout;
    if (s.nextUpstream && this.#attempts < this.#maxTries && budget) this.#next(failure);
    else this.#fail(failure, 502, false);
  }

  /** The server is connected: the PROXY header, what the client sent so far, then both directions piped. */
  #connected(upstream: Socket): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const b = this.#b;
    const s = b.settings;
    this.#connectTime = performance.now() - this.#attemptStart;
    this.#connectTimes.push(Math.round(this.#connectTime * 1000) / 1000);
    upstream.on('error', this.#onUpstreamError);
    upstream.on('close', this.#onUpstreamClose);
    if (s.proxyProtocol !== false) {
      const header = proxyHeader(s.proxyProtocol, {
        sourceAddress: this.#facts.remoteAddress,
        sourcePort: this.#facts.remotePort,
        destinationAddress: this.#facts.localAddress,
        destinationPort: this.#facts.localPort,
      });
      this.#upSent += header.length;
      upstream.write(header);
    }
    this.#client.off('data', this.#onEarlyData);
    for (const chunk of this.#early.splice(0)) {
      this.#upSent += chunk.length;
      upstream.write(chunk);
    }
    this.#timer = setTimeout(this.#idle, Math.max(1, s.idleTimeout / 4));
    this.#pipe(this.#client, upstream, new RateGate(s.uploadRate), true);
    this.#pipe(upstream, this.#client, new RateGate(s.downloadRate), false);
    this.#client.resume();
  }

  /** One direction: `up` is client → server. */
  #pipe(src: Socket, dst: Socket, gate: RateGate, up: boolean): void {
    let draining = false;
    const resume = (): void => {
      if (!draining && !gate.waiting && !src.destroyed && !this.#done) src.resume();
    };
    const limited = up ? this.#b.settings.uploadRate > 0 : this.#b.settings.downloadRate > 0;
    src.on('data', (chunk: Buffer) => {
      this.#active = true;
      const n = chunk.length;
      if (up) {
        this.#fromClient += n;
        this.#upSent += n;
      } else {
        if (this.#firstByte < 0) this.#firstByte = performance.now() - this.#attemptStart;
        this.#upReceived += n;
        this.#toClient += n;
      }
      if (dst.destroyed || dst.writableEnded) return;
      if (!dst.write(chunk)) {
        draining = true;
        src.pause();
      }
      const wait = limited ? gate.take(n, performance.now()) : 0;
      if (wait > 0) {
        src.pause();
        gate.wait(wait, resume);
      }
    });
    dst.on('drain', () => {
      draining = false;
      resume();
    });
    const onEnd = (): void => {
      if (this.#b.settings.halfClose) {
        if (!dst.destroyed && !dst.writableEnded) dst.end();
      } else {
        closeAfterFlush(dst);
        closeAfterFlush(src);
      }
    };
    // the client's FIN may have come with the end of its PROXY header, before this pipe existed
    if (src.readableEnded) onEnd();
    else src.on('end', onEnd);
    src.once('close', () => gate.stop());
  }

  /**
   * The idle timer ticks every quarter of idleTimeout; bytes moving mark the tick active (cheaper than
   * re-arming a timer for every chunk). Four quiet ticks in a row: nothing moved for idleTimeout.
   */
  readonly #idle = (): void => {
    if (this.#active) {
      this.#active = false;
      this.#quiet = 0;
      this.#timer?.refresh();
      return;
    }
    if (++this.#quiet < 4) {
      this.#timer?.refresh();
      return;
    }
    // nginx proxy_timeout: the session ends, status 200
    this.#timer = undefined;
    this.#client.destroy();
    this.#upstream?.destroy();
  };

  readonly #onClientError = (): void => {
    // a reset or error from the client: the server's connection is reset too
    if (this.#upstream !== undefined) reset(this.#upstream);
  };

  readonly #onUpstreamError = (): void => {
    reset(this.#client);
  };

  readonly #onClientClose = (): void => {
    if (this.#done) return;
    if (this.#upstream === undefined || this.#connectTime < 0) {
      // gone before a server was connected: whatever attempt is in progress ends
      this.#cancel.abort();
      const peer = this.#peer;
      if (peer !== undefined) {
        clearTimeout(this.#timer);
        this.#upstream?.destroy();
        this.#peer = undefined;
        this.#b.inner.finishStream(peer, 'next', { connect: -1, firstByte: -1, response: performance.now() - this.#attemptStart, sent: 0, received: 0 });
      }
      // before its PROXY header was read: a connection without a session (nginx `discarded`)
      this.#finish(this.#sel === undefined ? 400 : 200, undefined, this.#sel === undefined);
      return;
    }
    // the client's side is fully closed: nothing more can reach it, the server's connection closes
    // once what it was sent is flushed
    closeAfterFlush(this.#upstream);
    this.#maybeFinish();
  };

  readonly #onUpstreamClose = (): void => {
    if (this.#done) return;
    closeAfterFlush(this.#client);
    this.#maybeFinish();
  };

  #maybeFinish(): void {
    if (!this.#client.destroyed || this.#upstream === undefined || !this.#upstream.destroyed) return;
    const peer = this.#peer!;
    this.#peer = undefined;
    this.#b.inner.finishStream(peer, 'ok', {
      connect: this.#connectTime,
      firstByte: this.#firstByte,
      response: performance.now() - this.#attemptStart,
      sent: this.#upSent,
      received: this.#upReceived,
    });
    this.#finish(200, undefined, false);
  }

  /** The session cannot go on: the client is closed with `status`. */
  #fail(error: SwitchyardError, status: number, discarded: boolean): void {
    if (this.#done) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#client.off('close', this.#onClientClose);
    this.#client.destroy();
    this.#finish(status, error, discarded);
  }

  #finish(status: number, error: SwitchyardError | undefined, discarded: boolean): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const b = this.#b;
    b.sessions.delete(this);
    const session: StreamSession = {
      remoteAddress: this.#facts.remoteAddress,
      remotePort: this.#facts.remotePort,
      protocol: 'tcp',
      status,
      upstreamAddr: this.#addrs,
      upstreamConnectTime: this.#connectTimes,
      upstreamFirstByteTime: this.#firstByte < 0 ? -1 : Math.round(this.#firstByte * 1000) / 1000,
      bytesReceived: this.#fromClient,
      bytesSent: this.#toClient,
      upstreamBytesSent: this.#upSent,
      upstreamBytesReceived: this.#upReceived,
      sessionTime: Math.round((performance.now() - this.#began) * 1000) / 1000,
    };
    b.ended(session, error, discarded);
  }

  get server(): string | undefined {
    return this.#peer?.id;
  }

  close(): void {
    if (this.#done) return;
    this.#client.destroy();
    this.#upstream?.destroy();
  }
}
