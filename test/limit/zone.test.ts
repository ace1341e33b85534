// The zone's arithmetic and table, table-driven from nginx's ngx_http_limit_req_module.c.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LOOKUP, parseRate, RequestZone } from '../../src/limit/zone.ts';

test('rates in milli-requests per second, as nginx rounds them', () => {
  const table: Array<[string, number]> = [
    ['1r/s', 1000],
    ['10r/s', 10000],
    ['30r/m', 500],
    ['1r/m', 16],
    ['7r/m', 116],
  ];
  for (const [rate, milli] of table) assert.equal(parseRate(rate, 'rate'), milli, rate);
  for (const bad of ['1r/h', 'r/s', '-1r/s', '1.5r/s', '0r/m', 10]) assert.throws(() => parseRate(bad, 'rate'));
});

test('excess drains with elapsed ms, in integers; a new key starts at 0; last moves only when time passed', () => {
  const zone = new RequestZone('z', parseRate('1r/m', 'rate'), 10);
  assert.equal(zone.lookup('k', 0, 5000, true), LOOKUP.ok);
  assert.equal(zone.excess, 0);
  assert.equal(zone.lookup('k', 0, 5000, true), LOOKUP.ok);
  assert.equal(zone.excess, 1000);
  // 16 milli-requests per second: after 1000 ms, 1000 - 16 + 1000.
  assert.equal(zone.lookup('k', 1000, 5000, true), LOOKUP.ok);
  assert.equal(zone.excess, 1984);
  // 62 ms drains floor(16 * 62 / 1000) = 0: nothing, but last moves.
  zone.lookup('k', 1062, 5000, true);
  assert.equal(zone.excess, 2984);
  assert.equal(zone.peek('k')?.last, 1062);
  // Over the burst: busy, nothing stored.
  assert.equal(zone.lookup('k', 1062, 3000, true), LOOKUP.busy);
  assert.equal(zone.peek('k')?.excess, 2984);
});

test('the table: idle drained states make room first, else the least recently used; held states are never evicted', () => {
  const zone = new RequestZone('z', 1000, 2);
  zone.lookup('a', 0, 0, true);
  zone.lookup('b', 30_000, 0, true);
  // At 61 s, a is idle for a minute and drained: expired on the way; b is not.
  zone.lookup('c', 61_000, 0, true);
  assert.equal(zone.peek('a'), undefined);
  assert.ok(zone.peek('b'));
  // Full, nothing idle: the least recently used (b) goes.
  zone.lookup('d', 61_001, 0, true);
  assert.equal(zone.peek('b'), undefined);
  assert.equal(zone.size, 2);
  // Both held (looked up, not accounted): no room, an error as nginx's "could not allocate node".
  assert.equal(zone.lookup('c', 61_002, 5000, false), LOOKUP.again);
  const c = zone.slot;
  assert.equal(zone.lookup('d', 61_002, 5000, false), LOOKUP.again);
  const d = zone.slot;
  assert.equal(zone.lookup('e', 61_002, 0, true), LOOKUP.error);
  zone.unlock(c);
  zone.unlock(d);
  assert.equal(zone.lookup('e', 61_003, 0, true), LOOKUP.ok);
});

test('a new key held by a limit that is not the last starts at 0 too, on a clock that starts near 0 (performance.now())', () => {
  const zone = new RequestZone('z', parseRate('1r/m', 'rate'), 10);
  assert.equal(zone.lookup('k', 500, 2000, false), LOOKUP.again);
  assert.equal(zone.account(zone.slot, 500), 0);
  assert.equal(zone.peek('k')?.last, 500);
  assert.equal(zone.lookup('k', 500, 2000, false), LOOKUP.again);
  assert.equal(zone.account(zone.slot, 500), 1000);
});
