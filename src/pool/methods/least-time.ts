import { InvalidOptionError } from '../../core/errors.ts';
import { movingAverage, type Peer } from '../peer.ts';
import type { LoadMeasure } from './lanes.ts';
import { LaneLists, leastBy, reference, roundRobin, withBackup } from './round-robin.ts';
import { booleanParameter, FULL_CAPABILITIES, type Balancer, type MethodDefinition } from './types.ts';

/**
 * What least_time measures: time to the response header, or to its last byte (HTTP, and streams);
 * for streams (nginx's stream `least_time connect | first_byte | last_byte`) also the time to connect
 * or to the first byte.
 */
export type LeastTimeMeasure = 'header' | 'last-byte' | 'connect' | 'first-byte';

/**
 * The average a measure reads: HTTP's header and response times; a stream's where no HTTP time was
 * taken (a pool that serves only streams), so `header` and `first-byte` are one measure, as are HTTP's
 * and a stream's `last-byte`; `connect` is measured by streams only.
 */
function averageOf(measure: LeastTimeMeasure): (peer: Peer) => number {
  switch (measure) {
    case 'header':
    case 'first-byte':
      return (peer) => peer.avgHeaderTime || peer.streamFirstByteTime;
    case 'last-byte':
      return (peer) => peer.avgResponseTime || peer.streamResponseTime;
    case 'connect':
      return (peer) => peer.streamConnectTime;
  }
}

/**
 * `least-time`: the lowest estimated time to serve, `avg time × (1 + active)`
 * per unit of weight, with nginx's 20 ms clustering, 5 s cap, and halving of a
 * peer's time once per `failTimeout` so slow peers get another chance.
 * With `inflight`, the age of requests still in flight counts too. The averages it reads are the
 * pool's (`headerTime`, `responseTime` of stats()); with `header` and `inflight` the pool takes the
 * header time as the header arrives (capability `headerTime: 'header'`), when in-flight accounting
 * of the attempt ends. Servers sit in lanes by estimated time per unit of weight (lanes.ts); those
 * with requests in flight under `inflight` are weighed one by one at every choice, as nginx ages them.
 */
export function createLeastTime(measure: LeastTimeMeasure, inflight: boolean): Balancer {
  const average = averageOf(measure);
  const eta = (peer: Peer, now: number): number => {
    let rt = average(peer);
    if (now - peer.checked > peer.failTimeout) {
      const shift = Math.floor(Math.floor((now - peer.checked) / 1000) / (Math.floor(peer.failTimeout / 1000) + 1));
      rt = shift < 32 ? Math.floor(rt / 2 ** shift) : 0;
    }
    if (peer.inflightReqs > 0) rt = Math.max(rt, peer.inflightTime);
    // nginx's clusters of 20 ms (rt + 20 - rt % 20 on its integer milliseconds), in whole numbers
    rt = rt > 5000 ? 5000 : (Math.floor(rt / 20) + 1) * 20;
    return rt * (1 + peer.conns);
  };
  /**
   * A time at or before which eta's decay may next change: the halving starts past failTimeout and
   * steps once per whole period of (failTimeout in seconds + 1) seconds; never with nothing to halve
   * or once halved 32 times. A millisecond early, so that rounding never makes it late.
   */
  const until = (peer: Peer, now: number): number => {
    if (average(peer) === 0) return Infinity;
    const age = now - peer.checked;
    const period = Math.floor(peer.failTimeout / 1000) + 1;
    const shift = age > peer.failTimeout ? Math.floor(Math.floor(age / 1000) / period) : 0;
    return shift >= 32 ? Infinity : peer.checked + 1000 * period * (shift + 1) - 1;
  };
  /** nginx ages the in-flight requests of each eligible peer of the list it is about to search. */
  const age = (peer: Peer, now: number): void => {
    if (peer.inflightReqs > 0) peer.inflightTime = movingAverage(peer.inflightTime, peer.inflightLast / peer.inflightReqs + (now - peer.inflightChanged));
  };
  const inflightDone = (peer: Peer, last: number, now: number): void => {
    if (peer.inflightReqs === 1) {
      peer.inflightLast = 0;
    } else {
      peer.inflightLast += (now - peer.inflightChanged) * peer.inflightReqs - last;
      peer.inflightChanged = now;
    }
    peer.inflightReqs--;
  };
  const load: LoadMeasure = { load: eta, until };
  if (inflight) {
    load.volatile = (peer) => peer.inflightReqs > 0;
    load.before = age;
  }
  const lists = reference.scan ? undefined : new LaneLists(load);
  return {
    select(peers, sel) {
      if (peers.single) return roundRobin(peers, sel);
      if (lists !== undefined) return lists.select(peers, sel);
      const now = sel.now;
      return withBackup(peers, sel, (list) => {
        for (const peer of list) if (!sel.tried.has(peer) && peer.usable(now)) age(peer, now);
        return leastBy(list, sel, (p) => eta(p, now));
      });
    },
    rebuild: (peers) => lists?.rebuild(peers),
    chosen(peer, now) {
      peer.watch?.changed();
      if (!inflight) return;
      if (peer.inflightReqs > 0) peer.inflightLast += (now - peer.inflightChanged) * peer.inflightReqs;
      peer.inflightChanged = now;
      peer.inflightReqs++;
    },
    header(peer, headerTime, now) {
      peer.watch?.changed();
      if (inflight && measure === 'header') inflightDone(peer, headerTime, now);
    },
    finished(peer, _outcome, timings, now) {
      peer.watch?.changed();
      if (inflight && !timings.inflightDone && peer.inflightReqs > 0) inflightDone(peer, timings.response, now);
    },
  };
}

/** Parameters of `least-time`. */
interface LeastTimeParams {
  measure: LeastTimeMeasure;
  inflight: boolean;
}

/** The registry's entry for `least-time` (nginx `least_time header | last_byte [inflight]`). */
export const LEAST_TIME: MethodDefinition<LeastTimeParams> = {
  name: 'least-time',
  parameters: {
    measure(value, option): LeastTimeMeasure {
      const measure = value ?? 'header';
      switch (measure) {
        case 'header':
          return 'header';
        case 'connect':
          return 'connect';
        case 'last-byte':
        case 'last_byte':
          return 'last-byte';
        case 'first-byte':
        case 'first_byte':
          return 'first-byte';
        default:
          throw new InvalidOptionError(option, '"header" or "last-byte" (streams: also "connect" or "first-byte")', measure);
      }
    },
    inflight: booleanParameter,
  },
  capabilities: (p) => ({ ...FULL_CAPABILITIES, headerTime: p.inflight && p.measure === 'header' ? 'header' : 'end' }),
  create: (p) => createLeastTime(p.measure, p.inflight),
};
