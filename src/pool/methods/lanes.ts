// Smooth weighted round robin without scanning every server. nginx's ngx_http_upstream_get_peer adds
// each eligible peer's effective weight to its current weight, picks the largest (the earliest listed
// on ties) and charges it the total: a pass over the whole list per selection. Its least_conn and
// least_time make the same pass among the peers that tie for the lowest load per unit of weight.
//
// The same choices, in logarithmic time: servers whose state is steady (eligible until an event the
// pool reports, effective weight = weight, no slow start, for least_conn and least_time a load that
// only changes on such an event) sit in *lanes*, one lane per load per unit of weight (round robin: a
// single lane). A lane counts its passes (T); its servers' current weights are kept as
// `b + weight × T`, so a pass over a lane is T += 1, and servers of equal weight keep their order,
// held in one max-heap per weight ordered by (b, list position). The other servers (recovering
// from a failure, in slow start, probing after fail_timeout, tried by this request...) are few and
// are handled one by one with nginx's arithmetic; servers that cannot be chosen (down, draining,
// held out by a health check, failed, full) wait outside until the event that can bring them back.
// All values stay exact (integers, or multiples of 2^-16 once slow start weighs in), so the order of
// the additions does not matter and every choice equals the plain scan's (test/pool/lanes.test.ts
// replays random histories against the scan).
import type { Peer, PeerWatch } from '../peer.ts';
import type { Selection } from './types.ts';

/** Slow-start weights go in steps of 1/65536, so sums and differences of current weights stay exact. */
const RAMP_STEPS = 65536;
/** Largest weight a lane holds: b + weight × T stays exact (see REBASE). Heavier servers are handled one by one. */
const MAX_WEIGHT = 65536;
/** Largest load (conns, least_time's eta) a lane holds: lane keys and their products stay exact. */
const MAX_LOAD = 2 ** 32;
/** A lane rewrites its b values (b += weight × T, T = 0) after this many passes, keeping them below 2^33. */
const REBASE = 65536;

/** A server's weight during slow start as SWRR and the least-load comparisons use it: {@link Peer.weightAt} in steps of 2^-16. @internal */
export function rampWeight(peer: Peer, now: number): number {
  return Math.floor(peer.weightAt(now) * RAMP_STEPS) / RAMP_STEPS;
}

/** The weight the least-load methods divide by: nominal, or the ramp's (never quite 0). @internal */
export function loadWeight(peer: Peer, now: number): number {
  return now < peer.rampEnd ? Math.max(rampWeight(peer, now), 1 / RAMP_STEPS) : peer.weight;
}

/**
 * What a least-load method measures (least_conn: conns; least_time: the estimated time to serve).
 * Round robin has none: every server ties. @internal
 */
export interface LoadMeasure {
  /** The server's load now; compared per unit of weight. */
  load(peer: Peer, now: number): number;
  /**
   * When the load may next change without a hook or event telling (least_time's decay of idle
   * servers): a time at or before that change, or Infinity.
   */
  until?(peer: Peer, now: number): number;
  /** True for a server whose load changes at every selection (least_time's requests in flight): handled one by one. */
  volatile?(peer: Peer): boolean;
  /** Called before a selection for every eligible server handled one by one (least_time ages requests in flight). */
  before?(peer: Peer, now: number): void;
}

const OUTSIDE = 0;
const ONE_BY_ONE = 1;
const IN_LANE = 2;

/** One server's place in a {@link Lanes}. */
class Slot implements PeerWatch {
  readonly peer: Peer;
  /** Position in the list (nginx's list order breaks ties). */
  index: number;
  readonly owner: Lanes;
  state = OUTSIDE;
  // in a lane: the current weight is b + group.weight × lane.t
  lane: Lane | undefined = undefined;
  group: Group | undefined = undefined;
  b = 0;
  /** Position in the group's heap, or in the one-by-one list. */
  pos = -1;
  /** When to look at the server again (a failure window ends, least_time's decay steps), and its place in the timer heap. */
  due = Infinity;
  duePos = -1;
  queued = false;
  /** False once the server left the list. */
  listed = true;
  /** The list version ({@link Lanes.reset}) that last held the server. */
  version = 0;
  // the settings the server was placed with: a run-time update that changes one places it again
  weight = 0;
  down = false;
  drain = false;
  maxConns = 0;
  maxFails = 0;
  failTimeout = 0;
  rampEnd = 0;

  constructor(peer: Peer, index: number, owner: Lanes) {
    this.peer = peer;
    this.index = index;
    this.owner = owner;
  }

  /** The server's state changed where the method's hooks do not see it (see PeerWatch). */
  changed(): void {
    this.owner.touch(this);
  }
}

/** The servers of one weight in a lane: a max-heap by (b, earliest in the list). */
class Group {
  readonly weight: number;
  readonly heap = new Heap<Slot>(aboveInGroup, atInGroup);
  /** Position in the lane's list of groups. */
  pos = -1;

  constructor(weight: number) {
    this.weight = weight;
  }
}

/** The servers of one load per unit of weight (`num / den`, reduced), all at their nominal weight. */
class Lane {
  readonly key: number;
  readonly num: number;
  readonly den: number;
  /** Passes made over the lane. */
  t = 0;
  readonly groups = new Map<number, Group>();
  readonly list: Group[] = [];
  size = 0;
  /** Sum of the weights of the lane's servers: what a pass over it adds to nginx's `total`. */
  weightSum = 0;
  /** Position in the heap of lanes. */
  pos = -1;

  constructor(key: number, num: number, den: number) {
    this.key = key;
    this.num = num;
    this.den = den;
  }
}

/**
 * A binary heap that keeps each item's position (`at` records it), so that any item can be moved
 * after its key changed or taken out: the servers of one weight in a lane, the lanes, the timers.
 */
class Heap<T> {
  readonly items: T[] = [];
  /** True when `a` goes before `b`. */
  readonly #first: (a: T, b: T) => boolean;
  readonly #at: (item: T, i: number) => void;

  constructor(first: (a: T, b: T) => boolean, at: (item: T, i: number) => void) {
    this.#first = first;
    this.#at = at;
  }

  push(item: T): void {
    this.items.push(item);
    this.up(this.items.length - 1);
  }

  /** Takes out the item at position `i`. */
  remove(i: number): void {
    const items = this.items;
    const last = items.pop()!;
    if (i === items.length) return;
    items[i] = last;
    this.#at(last, i);
    this.up(i);
    this.down(i);
  }

  /** Moves the item at `i` towards the top while it goes before its parent. */
  up(i: number): void {
    const items = this.items;
    const item = items[i]!;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = items[parent]!;
      if (!this.#first(item, p)) break;
      items[i] = p;
      this.#at(p, i);
      i = parent;
    }
    items[i] = item;
    this.#at(item, i);
  }

  /** Moves the item at `i` towards the bottom while a child goes before it. */
  down(i: number): void {
    const items = this.items;
    const item = items[i]!;
    const n = items.length;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && this.#first(items[child + 1]!, items[child]!)) child++;
      const c = items[child]!;
      if (!this.#first(c, item)) break;
      items[i] = c;
      this.#at(c, i);
      i = child;
    }
    items[i] = item;
    this.#at(item, i);
  }
}

/** Servers of one weight: the largest b first, the earliest listed on ties (their current weights differ by as much). */
const aboveInGroup = (a: Slot, b: Slot): boolean => a.b > b.b || (a.b === b.b && a.index < b.index);
const atInGroup = (s: Slot, i: number): void => {
  s.pos = i;
};
/** Lanes: the least load per unit of weight first (cross-multiplied: exact below 2^53). */
const lighter = (a: Lane, b: Lane): boolean => a.num * b.den < b.num * a.den;
const atInOrder = (lane: Lane, i: number): void => {
  lane.pos = i;
};
const sooner = (a: Slot, b: Slot): boolean => a.due < b.due;
const atInTimers = (s: Slot, i: number): void => {
  s.duePos = i;
};

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const r = a % b;
    a = b;
    b = r;
  }
  return a;
}

/**
 * One list of servers (the primaries or the backups) of a pool using round robin, least_conn or
 * least_time, with nginx's choices made without a pass over every server (see the top of this file). @internal
 */
export class Lanes {
  readonly #measure: LoadMeasure | undefined;
  #slots: Slot[] = [];
  readonly #lanes = new Map<number, Lane>();
  /** Lanes by load per unit of weight, least first. */
  readonly #order = new Heap<Lane>(lighter, atInOrder);
  readonly #oneByOne: Slot[] = [];
  readonly #touched: Slot[] = [];
  readonly #timers = new Heap<Slot>(sooner, atInTimers);
  readonly #ties: Slot[] = [];
  #last = Number.NEGATIVE_INFINITY;
  #version = 0;

  /** Takes over `list`'s servers, their current weights as they are (`peer.currentWeight`). */
  constructor(list: readonly Peer[], measure: LoadMeasure | undefined) {
    this.#measure = measure;
    this.reset(list);
  }

  /**
   * Takes the list as the pool has it after a change (add, remove, update): the servers still in it
   * keep their place and are placed again before the next choice (a weight, down or drain may have
   * changed); new ones come in with `peer.currentWeight`; the others are let go. The list keeps its
   * order (servers are added at the end), so the heaps' order by list position holds.
   */
  reset(list: readonly Peer[]): void {
    const version = ++this.#version;
    const slots: Slot[] = new Array(list.length);
    let last = -1;
    let ordered = true;
    for (let i = 0; i < list.length; i++) {
      const peer = list[i]!;
      const watch = peer.watch;
      let s: Slot;
      if (watch instanceof Slot && watch.owner === this && watch.listed) {
        s = watch;
        if (s.index < last) ordered = false;
        last = s.index;
        s.index = i;
        // A new weight restarted the server's round (fields.ts: currentWeight = 0): out of its lane
        // at once, so that the 0 is what counts (a sticky request's look at it before the next
        // choice, or a second change that brings the old weight back before then).
        if (s.state === IN_LANE && s.group!.weight !== peer.weight) this.#unplace(s);
        if (
          peer.weight !== s.weight ||
          peer.down !== s.down ||
          peer.drain !== s.drain ||
          peer.maxConns !== s.maxConns ||
          peer.maxFails !== s.maxFails ||
          peer.failTimeout !== s.failTimeout ||
          peer.rampEnd !== s.rampEnd
        )
          this.touch(s);
      } else {
        s = new Slot(peer, i, this);
        peer.watch = s;
        this.touch(s);
      }
      s.version = version;
      slots[i] = s;
    }
    for (const s of this.#slots) {
      if (s.version === version) continue;
      this.#unplace(s);
      this.#setDue(s, Infinity);
      s.listed = false;
      if (s.peer.watch === s) s.peer.watch = undefined;
    }
    if (!ordered) {
      // not expected (the pool appends), but the heaps would not hold: place everything anew
      for (const s of slots) {
        this.#unplace(s);
        this.touch(s);
      }
    }
    this.#slots = slots;
  }

  /** Notes that a server's state changed (its {@link Slot.changed}): it is placed again before the next choice. */
  touch(s: Slot): void {
    if (s.queued) return;
    s.queued = true;
    this.#touched.push(s);
  }

  /** The server's current weight (nginx `current_weight`). */
  current(peer: Peer): number {
    const s = peer.watch;
    if (s instanceof Slot && s.owner === this && s.state === IN_LANE) return s.b + s.group!.weight * s.lane!.t;
    return peer.currentWeight;
  }

  /**
   * nginx's choice in this list: with a measure, the server with the least load per unit of weight,
   * ties by SWRR among them (a single one is taken as it is); without, SWRR among every server that
   * can take the request. With `forced` (a sticky request's server), the pass runs as usual and
   * `forced` pays the total. Undefined when no server can take the request.
   */
  select(sel: Selection, forced?: Peer): Peer | undefined {
    const now = sel.now;
    this.#refresh(now);
    const tried = sel.tried;
    if (tried.size > 0) {
      // tried servers sit this selection out: handled one by one, skipped
      for (const peer of tried) {
        const s = peer.watch;
        if (s instanceof Slot && s.owner === this && s.state === IN_LANE) {
          this.#unplace(s);
          this.#add(s);
          this.touch(s);
        }
      }
    }
    const measure = this.#measure;
    const ties = this.#ties;
    ties.length = 0;
    let lane: Lane | undefined = this.#order.items[0];
    if (measure === undefined) {
      for (const s of this.#oneByOne) if (!tried.has(s.peer) && s.peer.usable(now)) ties.push(s);
    } else {
      const oneByOne = this.#oneByOne;
      if (measure.before !== undefined) for (const s of oneByOne) if (!tried.has(s.peer) && s.peer.usable(now)) measure.before(s.peer, now);
      let num = lane === undefined ? 0 : lane.num;
      let den = lane === undefined ? 0 : lane.den;
      for (const s of oneByOne) {
        const peer = s.peer;
        if (tried.has(peer) || !peer.usable(now)) continue;
        const m = measure.load(peer, now);
        const w = loadWeight(peer, now);
        if (den === 0 || m * den < num * w) {
          num = m;
          den = w;
          lane = undefined;
          ties.length = 0;
          ties.push(s);
        } else if (m * den === num * w) {
          ties.push(s);
        }
      }
      if (forced === undefined) {
        const count = (lane === undefined ? 0 : lane.size) + ties.length;
        if (count === 0) return undefined;
        if (count === 1) return lane === undefined ? ties[0]!.peer : lane.list[0]!.heap.items[0]!.peer;
      }
    }
    return this.#pass(lane, ties, now, forced);
  }

  /** One SWRR pass over `lane` and the servers in `ties`; the largest current weight (or `forced`) pays the total. */
  #pass(lane: Lane | undefined, ties: readonly Slot[], now: number, forced: Peer | undefined): Peer | undefined {
    let total = 0;
    let best: Slot | undefined;
    let top = 0;
    for (const s of ties) {
      const peer = s.peer;
      const ew = now < peer.rampEnd ? Math.min(peer.effectiveWeight, rampWeight(peer, now)) : peer.effectiveWeight;
      peer.currentWeight += ew;
      total += ew;
      if (peer.effectiveWeight < peer.weight) peer.effectiveWeight++;
      if (best === undefined || peer.currentWeight > top || (peer.currentWeight === top && s.index < best.index)) {
        best = s;
        top = peer.currentWeight;
      }
    }
    if (lane !== undefined) {
      if (lane.t >= REBASE) this.#rebase(lane);
      const t = ++lane.t;
      total += lane.weightSum;
      for (const g of lane.list) {
        const s = g.heap.items[0]!;
        const v = s.b + g.weight * t;
        if (best === undefined || v > top || (v === top && s.index < best.index)) {
          best = s;
          top = v;
        }
      }
    }
    if (forced !== undefined) {
      const s = forced.watch;
      if (s instanceof Slot && s.owner === this && s.state === IN_LANE) {
        s.b -= total;
        s.group!.heap.down(s.pos);
      } else {
        forced.currentWeight -= total;
      }
      return forced;
    }
    if (best === undefined) return undefined;
    if (best.state === IN_LANE) {
      best.b -= total;
      best.group!.heap.down(best.pos);
    } else {
      best.peer.currentWeight -= total;
    }
    return best.peer;
  }

  /** Places again the servers whose state changed or whose time came, and looks at those handled one by one. */
  #refresh(now: number): void {
    if (now < this.#last) {
      // the clock went back: time-bound states (failure windows, slow start, decay) may be back too
      for (const s of this.#slots) this.touch(s);
    }
    this.#last = now;
    const timers = this.#timers.items;
    while (timers.length > 0 && timers[0]!.due <= now) {
      const s = timers[0]!;
      this.#setDue(s, Infinity);
      this.touch(s);
    }
    const touched = this.#touched;
    if (touched.length > 0) {
      for (let i = 0; i < touched.length; i++) {
        const s = touched[i]!;
        s.queued = false;
        if (s.listed) this.#place(s, now);
      }
      touched.length = 0;
    }
    const oneByOne = this.#oneByOne;
    for (let i = 0; i < oneByOne.length; ) {
      const s = oneByOne[i]!;
      this.#place(s, now);
      if (oneByOne[i] === s) i++;
    }
  }

  /** Puts a server where its state says: outside, one by one, or in the lane of its load. */
  #place(s: Slot, now: number): void {
    const peer = s.peer;
    s.weight = peer.weight;
    s.down = peer.down;
    s.drain = peer.drain;
    s.maxConns = peer.maxConns;
    s.maxFails = peer.maxFails;
    s.failTimeout = peer.failTimeout;
    s.rampEnd = peer.rampEnd;
    let state = IN_LANE;
    let due = Infinity;
    let m = 0;
    if (peer.down || peer.drain || peer.held !== 0 || peer.full()) {
      state = OUTSIDE; // until an update, a health mark or the end of a request says otherwise
    } else if (peer.failed(now)) {
      due = peer.checked + peer.failTimeout;
      state = due > now ? OUTSIDE : ONE_BY_ONE;
    } else if (
      (peer.maxFails !== 0 && peer.fails >= peer.maxFails) ||
      peer.effectiveWeight !== peer.weight ||
      now < peer.rampEnd ||
      peer.weight > MAX_WEIGHT ||
      !Number.isInteger(peer.weight)
    ) {
      state = ONE_BY_ONE; // a probe after fail_timeout, a weight recovering or ramping up
    } else if (this.#measure !== undefined) {
      const measure = this.#measure;
      if (measure.volatile?.(peer) === true) {
        state = ONE_BY_ONE;
      } else {
        m = measure.load(peer, now);
        if (!Number.isInteger(m) || m < 0 || m > MAX_LOAD) {
          state = ONE_BY_ONE;
        } else if (measure.until !== undefined) {
          due = measure.until(peer, now);
          if (due <= now) state = ONE_BY_ONE;
        }
      }
    }
    if (state === ONE_BY_ONE) due = Infinity; // looked at before every choice anyway
    if (state === IN_LANE) {
      const w = peer.weight;
      const g = m === 0 ? w : gcd(m, w);
      const num = m / g;
      const den = w / g;
      const key = num * 131072 + den;
      if (s.state === IN_LANE && s.lane!.key === key && s.group!.weight === w) {
        this.#setDue(s, due);
        return;
      }
      this.#unplace(s);
      this.#enter(s, key, num, den);
    } else if (state !== s.state) {
      this.#unplace(s);
      if (state === ONE_BY_ONE) this.#add(s);
    }
    s.state = state;
    this.#setDue(s, due);
  }

  /** Takes a server out of its lane or the one-by-one list; its current weight is then `peer.currentWeight`. */
  #unplace(s: Slot): void {
    if (s.state === IN_LANE) {
      const lane = s.lane!;
      const g = s.group!;
      // a new weight restarted the server's round (fields.ts set currentWeight = 0): keep that
      if (g.weight === s.peer.weight) s.peer.currentWeight = s.b + g.weight * lane.t;
      g.heap.remove(s.pos);
      lane.size--;
      lane.weightSum -= g.weight;
      if (g.heap.items.length === 0) {
        lane.groups.delete(g.weight);
        const moved = lane.list.pop()!;
        if (moved !== g) {
          lane.list[g.pos] = moved;
          moved.pos = g.pos;
        }
      }
      if (lane.size === 0) {
        this.#lanes.delete(lane.key);
        this.#order.remove(lane.pos);
      }
      s.lane = undefined;
      s.group = undefined;
    } else if (s.state === ONE_BY_ONE) {
      const list = this.#oneByOne;
      const last = list.pop()!;
      if (last !== s) {
        list[s.pos] = last;
        last.pos = s.pos;
      }
    }
    s.state = OUTSIDE;
    s.pos = -1;
  }

  #add(s: Slot): void {
    s.state = ONE_BY_ONE;
    s.pos = this.#oneByOne.length;
    this.#oneByOne.push(s);
  }

  /** Puts a server (outside, its current weight in `peer.currentWeight`) into the lane `key`. */
  #enter(s: Slot, key: number, num: number, den: number): void {
    let lane = this.#lanes.get(key);
    if (lane === undefined) {
      lane = new Lane(key, num, den);
      this.#lanes.set(key, lane);
      this.#order.push(lane);
    }
    const w = s.peer.weight;
    let g = lane.groups.get(w);
    if (g === undefined) {
      g = new Group(w);
      g.pos = lane.list.length;
      lane.list.push(g);
      lane.groups.set(w, g);
    }
    s.lane = lane;
    s.group = g;
    s.b = s.peer.currentWeight - w * lane.t;
    s.state = IN_LANE;
    g.heap.push(s);
    lane.size++;
    lane.weightSum += w;
  }

  /** Writes the lane's passes into its servers' b values (b += weight × t, t = 0): the heaps keep their order. */
  #rebase(lane: Lane): void {
    for (const g of lane.list) {
      const add = g.weight * lane.t;
      for (const s of g.heap.items) s.b += add;
    }
    lane.t = 0;
  }

  /** Sets when to look at the server again (Infinity: only when told). */
  #setDue(s: Slot, due: number): void {
    if (due === s.due) return;
    const timers = this.#timers;
    if (s.duePos !== -1 && due === Infinity) {
      timers.remove(s.duePos);
      s.duePos = -1;
      s.due = Infinity;
    } else if (s.duePos === -1) {
      s.due = due;
      timers.push(s);
    } else {
      const before = s.due;
      s.due = due;
      if (due < before) timers.up(s.duePos);
      else timers.down(s.duePos);
    }
  }
}
