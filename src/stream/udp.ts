// UDP through streamBalance() (nginx `listen ... udp`): the datagrams of one client address and
// port are a session, sent to one server from a socket of their own; the server's answers go back
// from the listening socket. A session ends after `responses` answers per client datagram, after
// `idleTimeout` without traffic, or when the server cannot be reached (an ICMP unreachable).
import { createSocket, type RemoteInfo, type Socket as DgramSocket } from 'node:dgram';
import { isIP } from 'node:net';
import { BadGatewayError, NoServerAvailableError, type SwitchyardError } from '../core/errors.ts';
import type { Selection } from '../pool/methods/types.ts';
import type { Peer } from '../pool/peer.ts';
import type { Closable, StreamBalancer, StreamSession } from './index.ts';
import { proxyHeader } from './proxy-protocol.ts';

/** Most bytes of a session's datagrams kept for the next server while no answer came (nginx keeps the first datagram). */
const KEPT_LIMIT = 64 * 1024;

/** One dgram socket the handler serves. @internal */
export class UdpListener {
  readonly #b: StreamBalancer;
  readonly #socket: DgramSocket;
  /** The session each client address and port is bound to now. */
  readonly #sessions = new Map<string, UdpSession>();

  constructor(b: StreamBalancer, socket: DgramSocket) {
    this.#b = b;
    this.#socket = socket;
    socket.on('message', this.#onMessage);
  }

  readonly #onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    const key = `${rinfo.address}|${rinfo.port}`;
    let session = this.#sessions.get(key);
    if (session === undefined) {
      session = new UdpSession(this.#b, this.#socket, rinfo, () => {
        if (this.#sessions.get(key) === session) this.#sessions.delete(key);
      });
      this.#sessions.set(key, session);
      session.start();
    }
    // nginx proxy_requests: after that many datagrams the next one starts a new session
    if (session.request(msg)) this.#sessions.delete(key);
  };

  /** Stops serving the socket and ends its sessions (the socket stays open: it is the caller's). */
  detach(): void {
    this.#socket.off('message', this.#onMessage);
    for (const s of [...this.#sessions.values()]) s.close();
    this.#sessions.clear();
  }
}

/** @internal */
class UdpSession implements Closable {
  readonly #b: StreamBalancer;
  readonly #listener: DgramSocket;
  readonly #client: RemoteInfo;
  readonly #unbind: () => void;
  readonly #began = performance.now();
  #peer: Peer | undefined;
  #upstream: DgramSocket | undefined;
  #ready = false;
  #pending: Buffer[] = [];
  #timer: NodeJS.Timeout | undefined;
  #requests = 0;
  #responses = 0;
  #firstByte = -1;
  #connectTime = -1;
  #fromClient = 0;
  #toClient = 0;
  #upSent = 0;
  #upReceived = 0;
  #addrs: string[] = [];
  #connectTimes: number[] = [];
  #done = false;
  #header: Buffer | undefined;
  #sel: Selection | undefined;
  #maxTries = 0;
  #attempts = 0;
  #attemptStart = 0;
  /** Bytes sent to the current server (its statistics). */
  #peerSent = 0;
  /**
   * The datagrams sent so far, while no answer came and they fit in {@link KEPT_LIMIT}: what the
   * next server gets when this one turns out unreachable (undefined: no retry possible any more).
   */
  #kept: Buffer[] | undefined = [];
  #keptSize = 0;

  constructor(b: StreamBalancer, listener: DgramSocket, client: RemoteInfo, unbind: () => void) {
    this.#b = b;
    this.#listener = listener;
    this.#client = client;
    this.#unbind = unbind;
  }

  start(): void {
    const b = this.#b;
    b.connections++;
    b.processing++;
    b.sessions.add(this);
    let local: { address: string; port: number } = { address: '', port: 0 };
    try {
      local = this.#listener.address();
    } catch {
      // not bound (cannot happen once a datagram arrived)
    }
    const facts = {
      remoteAddress: this.#client.address,
      remotePort: this.#client.port,
      remoteFamily: this.#client.family,
      localAddress: local.address,
      localPort: local.port,
    };
    const ex = b.exchangeFor(facts);
    this.#sel = b.inner.selection(ex.req, ex, true);
    const poolTries = b.inner.maxTries();
    this.#maxTries = b.settings.tries === 0 ? poolTries : Math.min(b.settings.tries, poolTries);
    if (b.settings.proxyProtocol === 'v2') {
      this.#header = proxyHeader(
        'v2',
        { sourceAddress: facts.remoteAddress, sourcePort: facts.remotePort, destinationAddress: facts.localAddress, destinationPort: facts.localPort },
        'udp',
      );
    }
    this.#timer = setTimeout(() => this.#end(200, undefined), b.settings.idleTimeout);
    this.#attempt(undefined);
  }

  /** A server for the session (the next one after `last` failed), and its socket. */
  #attempt(last: SwitchyardError | undefined): void {
    const b = this.#b;
    const peer = b.inner.select(this.#sel!);
    if (peer === undefined) {
      this.#end(502, last ?? new NoServerAvailableError(b.pool.name, 502));
      return;
    }
    this.#attempts++;
    this.#peer = peer;
    this.#peerSent = 0;
    this.#addrs.push(peer.name);
    const t = peer.target;
    const upstream = createSocket(isIP(t.hostname) === 6 || t.hostname === 'localhost6' ? 'udp6' : 'udp4');
    this.#upstream = upstream;
    upstream.on('error', (err) => {
      if (this.#upstream === upstream) this.#failed(err);
    });
    upstream.on('message', (msg) => {
      if (this.#upstream === upstream) this.#answer(msg);
    });
    this.#attemptStart = performance.now();
    upstream.connect(t.port, t.hostname, () => {
      if (this.#done || this.#upstream !== upstream) return;
      this.#connectTime = performance.now() - this.#attemptStart;
      this.#ready = true;
      for (const d of this.#pending.splice(0)) this.#send(d);
      this.#check();
    });
  }

  /** A client datagram; returns true once the session takes no more (nginx `proxy_requests`). */
  request(msg: Buffer): boolean {
    if (this.#done) return true;
    this.#requests++;
    this.#fromClient += msg.length;
    this.#timer?.refresh();
    if (this.#ready) this.#send(msg);
    else this.#pending.push(msg);
    if (this.#ready) this.#check();
    const limit = this.#b.settings.requests;
    return limit !== 0 && this.#requests >= limit;
  }

  #send(msg: Buffer): void {
    const data = this.#header === undefined ? msg : Buffer.concat([this.#header, msg]);
    this.#upSent += data.length;
    this.#peerSent += data.length;
    this.#upstream!.send(data);
    if (this.#kept !== undefined) {
      this.#keptSize += msg.length;
      if (this.#keptSize > KEPT_LIMIT) this.#kept = undefined;
      else this.#kept.push(msg);
    }
  }

  #answer(msg: Buffer): void {
    if (this.#done) return;
    if (this.#firstByte < 0) this.#firstByte = performance.now() - this.#attemptStart;
    this.#responses++;
    this.#kept = undefined;
    this.#upReceived += msg.length;
    this.#toClient += msg.length;
    this.#timer?.refresh();
    this.#listener.send(msg, this.#client.port, this.#client.address);
    this.#check();
  }

  /** nginx: the session ends once `responses` answers came for each client datagram sent (`responses` 0: once sent). */
  #check(): void {
    const expected = this.#b.settings.responses;
    if (expected !== Infinity && this.#responses >= expected * this.#requests) this.#end(200, undefined);
  }

  /**
   * The server cannot be reached (an ICMP port unreachable, a send error). Before any answer came, the
   * next server gets the session's datagrams (nginx moves a UDP session on when the server's first
   * read fails); after one, the session ends.
   */
  #failed(err: Error): void {
    if (this.#done) return;
    const failure = new BadGatewayError(`UDP server ${this.#peer?.name ?? ''} failed: ${err.message}`, { cause: err });
    const s = this.#b.settings;
    const budget = s.nextUpstreamTimeout === 0 || performance.now() - this.#began < s.nextUpstreamTimeout;
    if (this.#responses > 0 || this.#kept === undefined || !s.nextUpstream || this.#attempts >= this.#maxTries || !budget) {
      this.#end(502, failure, this.#responses === 0);
      return;
    }
    const peer = this.#peer!;
    this.#peer = undefined;
    this.#connectTimes.push(-1);
    this.#b.inner.finishStream(peer, 'failed', {
      connect: -1,
      firstByte: -1,
      response: performance.now() - this.#attemptStart,
      sent: this.#peerSent,
      received: 0,
    });
    const old = this.#upstream;
    this.#upstream = undefined;
    try {
      old?.close();
    } catch {
      // closed already
    }
    this.#ready = false;
    this.#pending = [...this.#kept, ...this.#pending];
    this.#kept = [];
    this.#keptSize = 0;
    this.#connectTime = -1;
    this.#attempt(failure);
  }

  #end(status: number, error: SwitchyardError | undefined, failed = false): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#unbind();
    const b = this.#b;
    b.sessions.delete(this);
    try {
      this.#upstream?.close();
    } catch {
      // already closed
    }
    const peer = this.#peer;
    const elapsed = performance.now() - this.#began;
    if (peer !== undefined) {
      this.#connectTimes.push(failed || this.#connectTime < 0 ? -1 : Math.round(this.#connectTime * 1000) / 1000);
      b.inner.finishStream(peer, failed ? 'failed' : 'ok', {
        connect: failed ? -1 : this.#connectTime,
        firstByte: this.#firstByte,
        response: performance.now() - this.#attemptStart,
        sent: this.#peerSent,
        received: this.#upReceived,
      });
    }
    const session: StreamSession = {
      remoteAddress: this.#client.address,
      remotePort: this.#client.port,
      protocol: 'udp',
      status,
      upstreamAddr: this.#addrs,
      upstreamConnectTime: this.#connectTimes,
      upstreamFirstByteTime: this.#firstByte < 0 ? -1 : Math.round(this.#firstByte * 1000) / 1000,
      bytesReceived: this.#fromClient,
      bytesSent: this.#toClient,
      upstreamBytesSent: this.#upSent,
      upstreamBytesReceived: this.#upReceived,
      sessionTime: Math.round(elapsed * 1000) / 1000,
    };
    b.ended(session, error);
  }

  get server(): string | undefined {
    return this.#done ? undefined : this.#peer?.id;
  }

  close(): void {
    this.#end(200, undefined);
  }
}
