// One 'close' listener per client connection for everything that must end with it: balance()'s
// requests in progress, limitConnections()'s held places, accessLog()'s lines of queued pipelined
// requests (Node 22 emits no 'close' on a response still queued when its connection closes).
import type { Socket } from 'node:net';

const closersByConnection = new WeakMap<Socket, Set<() => void>>();

/**
 * Calls `fn` once when the connection closes; returns what stops that (to be called when the
 * request is over first). Every caller on a connection shares one listener.
 * @internal
 */
export function onConnectionClose(socket: Socket, fn: () => void): () => void {
  let closers = closersByConnection.get(socket);
  if (closers === undefined) {
    const set = new Set<() => void>();
    closers = set;
    closersByConnection.set(socket, set);
    socket.once('close', () => {
      closersByConnection.delete(socket);
      for (const close of [...set]) close();
    });
  }
  const set = closers;
  set.add(fn);
  return () => set.delete(fn);
}
