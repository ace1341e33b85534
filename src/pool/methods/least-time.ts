import { InvalidOptionError } from '../../core/errors.ts';
import { movingAverage, type Peer } from '../peer.ts';
import { leastBy, roundRobin, withBackup } from './round-robin.ts';
import { booleanParameter, FULL_CAPABILITIES, type Balancer, type MethodDefinition } from './types.ts';

/** What least_time measures: time to the response header, or to its last byte. */
export type LeastTimeMeasure = 'header' | 'last-byte';

/**
 * `least-time`: the lowest estimated time to serve, `avg time × (1 + active)`
 * per unit of weight, with nginx's 20 ms clustering, 5 s cap, and halving of a
 * peer's time once per `failTimeout` so slow peers get another chance.
 * With `inflight`, the age of requests still in flight counts too. The averages it reads are the
 * pool's (`headerTime`, `responseTime` of stats()); with `header` and `inflight` the pool takes the
 * header time as the header arrives (capability `headerTime: 'header'`), when in-flight accounting
 * of the attempt ends.
 */
export function createLeastTime(measure: LeastTimeMeasure, inflight: boolean): Balancer {
  const eta = (peer: Peer, now: number): number => {
    let rt = measure === 'header' ? peer.avgHeaderTime : peer.avgResponseTime;
    if (now - peer.checked > peer.failTimeout) {
      const shift = Math.floor(Math.floor((now - peer.checked) / 1000) / (Math.floor(peer.failTimeout / 1000) + 1));
      rt = shift < 32 ? Math.floor(rt / 2 ** shift) : 0;
    }
    if (peer.inflightReqs > 0) rt = Math.max(rt, peer.inflightTime);
    rt = rt > 5000 ? 5000 : rt + 20 - (rt % 20);
    return rt * (1 + peer.conns);
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
  return {
    select(peers, sel) {
      if (peers.single) return roundRobin(peers, sel);
      const now = sel.now;
      return withBackup(peers, sel, (list) => {
        // nginx ages the in-flight requests of each eligible peer of the list it is about to
        // search, the backups too when it falls over to them
        for (const peer of list) {
          if (peer.inflightReqs > 0 && !sel.tried.has(peer) && peer.usable(now)) {
            const age = peer.inflightLast / peer.inflightReqs + (now - peer.inflightChanged);
            peer.inflightTime = movingAverage(peer.inflightTime, age);
          }
        }
        return leastBy(list, sel, (p) => eta(p, now));
      });
    },
    chosen(peer, now) {
      if (!inflight) return;
      if (peer.inflightReqs > 0) peer.inflightLast += (now - peer.inflightChanged) * peer.inflightReqs;
      peer.inflightChanged = now;
      peer.inflightReqs++;
    },
    header(peer, headerTime, now) {
      if (inflight && measure === 'header') inflightDone(peer, headerTime, now);
    },
    finished(peer, _outcome, timings, now) {
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
    measure(value, option) {
      const measure = value ?? 'header';
      if (measure !== 'header' && measure !== 'last-byte' && measure !== 'last_byte') throw new InvalidOptionError(option, '"header" or "last-byte"', measure);
      return measure === 'header' ? 'header' : 'last-byte';
    },
    inflight: booleanParameter,
  },
  capabilities: (p) => ({ ...FULL_CAPABILITIES, headerTime: p.inflight && p.measure === 'header' ? 'header' : 'end' }),
  create: (p) => createLeastTime(p.measure, p.inflight),
};
