// The statistics board of the sync handle (issue 14): every instance publishes its report each
// interval and hears every other's, over the in-memory engine. The reports heard are read when the
// board is asked for them (the monitor), not as they arrive: hearing the others costs each instance
// next to nothing on a gateway nobody is looking at.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { TimerClock } from '../../src/core/clock.ts';
import { type InstanceReport, SyncHandle, type StatsBoard, syncInternals } from '../../src/sync/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';

/** A clock that only moves when told to; the board's own publishing timer never fires. */
function manualClock(): TimerClock & { t: number } {
  const c = { t: 1_700_000_000_000, now: () => c.t, setTimeout: () => ({}), clearTimeout: () => {} };
  return c;
}

function instance(t: TestContext, hub: MemoryHub, name: string, clock: TimerClock): { board: StatsBoard; figures: { n: number } } {
  const handle = new SyncHandle({ transport: hub.connect(), owned: false, namespace: 't', instance: name, statsInterval: '1s', clock, host: 'h' });
  t.after(() => handle.close());
  const figures = { n: 0 };
  const board = syncInternals(handle).board;
  board.provide('pool:api', () => ({ ...figures }));
  return { board, figures };
}

/** Lets the engine deliver what was broadcast. */
const delivered = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Counts the JSON texts parsed (objects, not the short strings a board may read a name from) while `t` runs. */
function countParses(t: TestContext): { reports: number } {
  const count = { reports: 0 };
  const parse = JSON.parse;
  JSON.parse = function (this: unknown, text: string, reviver?: (key: string, value: unknown) => unknown) {
    if (typeof text === 'string' && text.startsWith('{')) count.reports++;
    return parse.call(JSON, text, reviver);
  } as typeof JSON.parse;
  t.after(() => {
    JSON.parse = parse;
  });
  return count;
}

const sectionOf = (report: InstanceReport | undefined): unknown => report?.sections['pool:api'];

test('the others’ reports are read when the board is asked for them, once; its own echo is never read', async (t) => {
  const hub = new MemoryHub();
  const clock = manualClock();
  const a = instance(t, hub, 'a', clock);
  const b = instance(t, hub, 'b', clock);
  const c = instance(t, hub, 'c', clock);
  const parses = countParses(t);
  for (let i = 1; i <= 20; i++) {
    b.figures.n = i;
    c.figures.n = 100 + i;
    await Promise.all([a.board.publish(), b.board.publish(), c.board.publish()]);
    await delivered();
  }
  assert.equal(parses.reports, 0, 'no report parsed as it arrives: 60 were heard by each instance');
  const reports = a.board.reports();
  assert.deepEqual([...reports.keys()].sort(), ['a', 'b', 'c']);
  assert.deepEqual(sectionOf(reports.get('b')), { n: 20 });
  assert.deepEqual(sectionOf(reports.get('c')), { n: 120 });
  assert.deepEqual(reports.get('b'), { instance: 'b', host: 'h', pid: process.pid, sections: { 'pool:api': { n: 20 } } });
  assert.equal(parses.reports, 2, 'the last report of each other instance, read once');
  assert.deepEqual(sectionOf(a.board.reports().get('b')), { n: 20 });
  assert.equal(parses.reports, 2, 'read again only after a new one arrives');
  b.figures.n = 21;
  await b.board.publish();
  await delivered();
  assert.deepEqual(sectionOf(a.board.reports().get('b')), { n: 21 });
  assert.equal(parses.reports, 3);
});

test('what is not a report changes nothing: the last valid report of an instance stands until three intervals pass', async (t) => {
  const hub = new MemoryHub();
  const clock = manualClock();
  const a = instance(t, hub, 'a', clock);
  const b = instance(t, hub, 'b', clock);
  const rogue = hub.connect();
  b.figures.n = 1;
  await b.board.publish();
  await delivered();
  clock.t += 2000;
  // Up to three malformed texts under b's name after its report (a board keeps four unread per instance).
  for (const message of [
    '{"instance":"b","host":7,"pid":1,"sections":{}}',
    '{"instance":"b",,,',
    // names another instance further on (a later key wins in JSON.parse)
    '{"instance":"b","host":"h","pid":1,"sections":{"pool:api":{"n":666}},"instance":"z"}',
    '{"instance":"a","host":"h","pid":1,"sections":{"pool:api":{"n":666}}}',
    `{"instance":"${'x'.repeat(201)}","host":"h","pid":1,"sections":{}}`,
    'null',
    '[]',
    'not json',
  ]) {
    await rogue.broadcast('stats', message);
  }
  await delivered();
  let reports = a.board.reports();
  assert.deepEqual([...reports.keys()].sort(), ['a', 'b']);
  assert.deepEqual(sectionOf(reports.get('b')), { n: 1 }, 'the last valid report of b');
  assert.deepEqual(sectionOf(reports.get('a')), { n: 0 }, 'this instance’s own figures, read on the spot');
  // Reports written in another order, or with a name JSON escapes, are reports too.
  await rogue.broadcast('stats', '{"host":"h2","pid":2,"sections":{"pool:api":{"n":5}},"instance":"c"}');
  await rogue.broadcast('stats', JSON.stringify({ instance: 'q"\\é', host: 'h3', pid: 3, sections: { 'pool:api': { n: 6 } } }));
  await delivered();
  reports = a.board.reports();
  assert.deepEqual([...reports.keys()].sort(), ['a', 'b', 'c', 'q"\\é']);
  assert.deepEqual(reports.get('c'), { instance: 'c', host: 'h2', pid: 2, sections: { 'pool:api': { n: 5 } } });
  assert.deepEqual(sectionOf(reports.get('q"\\é')), { n: 6 });
  // b was last heard 2 s ago, the others now: 1.5 s later only b is past three intervals.
  clock.t += 1500;
  assert.deepEqual([...a.board.reports().keys()].sort(), ['a', 'c', 'q"\\é']);
  // An invalid text heard after a valid report does not make the report fresher.
  await rogue.broadcast('stats', '{"instance":"c","host":null}');
  await delivered();
  clock.t += 1600;
  assert.deepEqual([...a.board.reports().keys()], ['a']);
});
