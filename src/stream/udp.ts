import type { Socket as DgramSocket } from 'node:dgram';
import type { StreamBalancer } from './index.ts';

/** UDP sessions: not there yet (attach() throws). @internal */
export class UdpListener {
  constructor(b: StreamBalancer, socket: DgramSocket) {
    void b;
    void socket;
    throw new Error('streamBalance: UDP is not implemented yet');
  }
  detach(): void {}
}
