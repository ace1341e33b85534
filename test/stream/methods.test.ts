// What the stream measures feed: least-time `connect`, `first-byte` and `last-byte` read the
// stream averages the pool keeps from finishStream(), apart from the HTTP ones (pool internals, no
// sockets: the times are given).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPool, type MethodOption } from '../../src/pool/index.ts';
import { internals } from '../../src/pool/internal.ts';

/** A pool of a and b where one stream session on each took these times (ms): connect, first byte, session. */
function measured(method: MethodOption, a: [number, number, number], b: [number, number, number]) {
  const pool = createPool({
    method,
    servers: [
      { url: 'http://127.0.0.1:1', id: 'a' },
      { url: 'http://127.0.0.1:2', id: 'b' },
    ],
  });
  const inner = internals(pool);
  // nothing measured yet: the first two sessions go to a and to b
  for (let i = 0; i < 2; i++) {
    const peer = inner.select(inner.selection(undefined, undefined, true))!;
    const [connect, firstByte, response] = peer.id === 'a' ? a : b;
    inner.finishStream(peer, 'ok', { connect, firstByte, response, sent: 10, received: 20 });
  }
  return { pool, inner };
}

const picks = (m: ReturnType<typeof measured>, n: number): string => {
  let out = '';
  for (let i = 0; i < n; i++) {
    const peer = m.inner.select(m.inner.selection(undefined, undefined, true))!;
    out += peer.id;
    m.inner.finishStream(peer, 'next', { connect: -1, firstByte: -1, response: 0, sent: 0, received: 0 });
  }
  return out;
};

test('least-time connect, first-byte and last-byte each choose by their own stream average', () => {
  // a connects slowly but answers fast; b the other way round
  const times = { a: [200, 210, 5000] as [number, number, number], b: [5, 400, 600] as [number, number, number] };
  const cases: Array<[MethodOption, string]> = [
    [{ name: 'least-time', measure: 'connect' }, 'b'],
    [{ name: 'least-time', measure: 'first-byte' }, 'a'],
    [{ name: 'least-time', measure: 'header' }, 'a'],
    [{ name: 'least-time', measure: 'last-byte' }, 'b'],
  ];
  for (const [method, winner] of cases) {
    const m = measured(method, times.a, times.b);
    assert.equal(picks(m, 6), winner.repeat(6), JSON.stringify(method));
    const s = m.pool.streamStats().servers;
    assert.deepEqual(
      s.map((x) => [x.id, x.connections, x.connectTime, x.firstByteTime, x.responseTime, x.sent, x.received]),
      [
        // the winner: its first session and the six picks
        ['a', winner === 'a' ? 7 : 1, 200, 210, 5000, 10, 20],
        ['b', winner === 'b' ? 7 : 1, 5, 400, 600, 10, 20],
      ],
    );
    // the HTTP statistics saw nothing
    assert.deepEqual(
      m.pool.stats().servers.map((x) => [x.requests, x.headerTime, x.responseTime, x.sent]),
      [
        [0, 0, 0, 0],
        [0, 0, 0, 0],
      ],
    );
    m.pool.resetStreamStats();
    assert.deepEqual(
      m.pool.streamStats().servers.map((x) => [x.connections, x.sent, x.received, x.fails]),
      [
        [0, 0, 0, 0],
        [0, 0, 0, 0],
      ],
    );
    m.pool.close();
  }
});
