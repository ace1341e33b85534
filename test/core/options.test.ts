// One options module for every factory (core/options.ts): a misspelled option is refused by every
// factory, in its options and in their nested objects of a fixed shape, with an InvalidOptionError
// naming the option's path and the nearest known one; the helpers resolve defaults and bounds.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import {
  balance,
  cache,
  CacheStore,
  chain,
  createMemoryStore,
  createPool,
  fromApache,
  fromNginx,
  healthCheck,
  InvalidOptionError,
  monitor,
  rewrite,
  sticky,
  upgrade,
  type UpstreamPool,
} from '../../src/index.ts';
import {
  booleanOption,
  durationOption,
  enumOption,
  integerOption,
  nearest,
  nowOption,
  objectOption,
  randomOption,
  stringListOption,
  stringOption,
} from '../../src/core/options.ts';

const URL_A = 'http://127.0.0.1:19701';

function testPool(t: TestContext): UpstreamPool {
  const pool = createPool({ servers: [{ url: URL_A, id: 'a' }] });
  t.after(() => pool.close());
  return pool;
}

/** Stops whatever a call made when it did not throw (the test then fails, with nothing left running). */
function dispose(made: unknown): void {
  const m = made as { close?: () => unknown; stop?: () => unknown } | undefined;
  if (typeof m?.stop === 'function') m.stop();
  if (typeof m?.close === 'function') void m.close();
}

/** [factory, what it is given, the unknown option's path, the path suggested] */
type Row = [factory: string, call: (pool: UpstreamPool) => unknown, option: string, suggestion: string];

const MISSPELLED: Row[] = [
  ['createPool', () => createPool({ metod: 'round-robin', servers: [{ url: URL_A }] } as never), 'metod', 'method'],
  ['createPool', () => createPool({ servers: [{ url: URL_A }], radnom: Math.random } as never), 'radnom', 'random'],
  ['createPool server', () => createPool({ servers: [{ url: URL_A, wieght: 2 }] } as never), 'servers[0].wieght', 'servers[0].weight'],
  [
    'createPool server (nginx spelling)',
    () => createPool({ servers: [{ url: URL_A }, { url: URL_A, max_fails: 2 }] } as never),
    'servers[1].max_fails',
    'servers[1].maxFails',
  ],
  ['createPool queue', () => createPool({ servers: [{ url: URL_A }], queue: { size: 1, timout: '1s' } } as never), 'queue.timout', 'queue.timeout'],
  ['createPool agent', () => createPool({ servers: [{ url: URL_A }], agent: { keepAlve: false } } as never), 'agent.keepAlve', 'agent.keepAlive'],
  [
    'createPool method',
    () => createPool({ method: { name: 'hash', key: '$uri', consistant: true }, servers: [{ url: URL_A }] } as never),
    'method.consistant',
    'method.consistent',
  ],
  ['pool.add', (pool) => pool.add({ url: 'http://127.0.0.1:19702', drian: true } as never), 'server.drian', 'server.drain'],
  ['pool.update', (pool) => pool.update('a', { wieght: 2 } as never), 'changes.wieght', 'changes.weight'],
  ['balance', (pool) => balance(pool, { nextUpstrem: ['error'] } as never), 'nextUpstrem', 'nextUpstream'],
  ['upgrade', (pool) => upgrade(pool, { idelTimeout: '1s' } as never), 'idelTimeout', 'idleTimeout'],
  ['rewrite', () => rewrite([], { setURL: true } as never), 'setURL', 'setUrl'],
  ['rewrite rule', () => rewrite([{ rewrite: '^/a', replacment: '/b' } as never]), 'rules[0].replacment', 'rules[0].replacement'],
  ['rewrite if', () => rewrite([{ if: { var: '$http_x', opp: '=', value: '1' }, then: [{ return: 403 }] } as never]), 'rules[0].if.opp', 'rules[0].if.op'],
  ['rewrite location', () => rewrite([{ location: '/a/', rules: [{ return: 301, ulr: '/b' }] } as never]), 'rules[0].rules[0].ulr', 'rules[0].rules[0].url'],
  ['fromNginx', () => fromNginx('', { ignor: ['listen'] } as never), 'ignor', 'ignore'],
  ['fromApache', () => fromApache('', { contxt: 'server' } as never), 'contxt', 'context'],
  ['sticky', (pool) => sticky(pool, { cookie: true, sessionTimout: '1m' } as never), 'sessionTimout', 'sessionTimeout'],
  ['sticky cookie', (pool) => sticky(pool, { cookie: { nmae: 'srv' } } as never), 'cookie.nmae', 'cookie.name'],
  ['sticky route source', (pool) => sticky(pool, { route: { cokie: 'route' } } as never), 'route.cokie', 'route.cookie'],
  [
    'sticky learn',
    (pool) => sticky(pool, { learn: { create: { cookie: 's' }, lookup: { cookie: 's' }, timeuot: '1m' } } as never),
    'learn.timeuot',
    'learn.timeout',
  ],
  [
    'sticky learn create',
    (pool) => sticky(pool, { learn: { create: { cookie: 's', hedaer: 'x' }, lookup: { cookie: 's' } } } as never),
    'learn.create.hedaer',
    'learn.create.header',
  ],
  [
    'sticky learn create (in a list)',
    (pool) => sticky(pool, { learn: { create: [{ header: 'x-s' }, { cookie: 'x', hedaer: 'y' }], lookup: { cookie: 's' } } } as never),
    'learn.create[1].hedaer',
    'learn.create[1].header',
  ],
  [
    'sticky learn lookup',
    (pool) => sticky(pool, { learn: { create: { cookie: 's' }, lookup: [{ cookie: 's' }, { coookie: 't' }] } } as never),
    'learn.lookup[1].coookie',
    'learn.lookup[1].cookie',
  ],
  ['chain', () => chain(() => {}, { fnial: () => {} } as never), 'fnial', 'final'],
  ['healthCheck', (pool) => healthCheck(pool, { intreval: '1s' } as never), 'intreval', 'interval'],
  ['healthCheck match', (pool) => healthCheck(pool, { match: { stauts: 200 } } as never), 'match.stauts', 'match.status'],
  [
    'healthCheck match header',
    (pool) => healthCheck(pool, { match: { headers: { 'X-A': { eqals: 'b' } } } } as never),
    'match.headers.X-A.eqals',
    'match.headers.X-A.equals',
  ],
  ['healthCheck match body', (pool) => healthCheck(pool, { match: { body: { matchs: /ok/ } } } as never), 'match.body.matchs', 'match.body.matches'],
  ['monitor', (pool) => monitor({ pools: [pool], dashbord: false } as never), 'dashbord', 'dashboard'],
  ['cache', () => cache({ lockTimout: '1s' } as never), 'lockTimout', 'lockTimeout'],
  ['cache (policy option)', () => cache({ vaild: '1m' } as never), 'vaild', 'valid'],
  ['cache memory', () => cache({ memory: { maxEntris: 10 } } as never), 'memory.maxEntris', 'memory.maxEntries'],
  ['cache storeBreaker', () => cache({ storeBreaker: { probDelay: '1s' } } as never), 'breaker.probDelay', 'breaker.probeDelay'],
  [
    'sticky learn memory',
    (pool) => sticky(pool, { learn: { create: { cookie: 's' }, lookup: { cookie: 's' }, memory: { inactve: '1m' } } } as never),
    'learn.memory.inactve',
    'learn.memory.inactive',
  ],
  ['createMemoryStore', () => createMemoryStore({ maxByte: 1024 } as never), 'maxByte', 'maxBytes'],
  ['CacheStore', () => new CacheStore({ timout: '1s' } as never), 'timout', 'timeout'],
];

for (const [factory, call, option, suggestion] of MISSPELLED) {
  test(`${factory} refuses the misspelled option "${option}", suggesting "${suggestion}"`, (t) => {
    const pool = testPool(t);
    assert.throws(
      () => dispose(call(pool)),
      (err: unknown) => {
        assert.ok(err instanceof InvalidOptionError, String(err));
        assert.ok(err instanceof TypeError);
        assert.equal(err.code, 'SWY_ERR_INVALID_OPTION');
        assert.equal(err.option, option);
        assert.equal(err.message, `unknown option "${option}" (did you mean "${suggestion}"?)`);
        return true;
      },
    );
  });
}

test('an unknown option with no near name lists the known ones', () => {
  assert.throws(
    () => createPool({ servers: [{ url: URL_A }], zzzzzz: 1 } as never),
    (err: unknown) =>
      err instanceof InvalidOptionError &&
      err.option === 'zzzzzz' &&
      err.message === 'unknown option "zzzzzz" (known options: name, method, servers, agent, tls, now, random, queue, sync)',
  );
});

test('chain refuses an unknown option with no near name, listing the known ones', () => {
  assert.throws(
    () => chain(() => {}, { onEror: () => {} } as never),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'onEror' && err.message === 'unknown option "onEror" (known options: final)',
  );
});

test('a misspelled method name is refused with the nearest one', () => {
  assert.throws(
    () => createPool({ method: 'round-robbin' as never, servers: [{ url: URL_A }] }),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'method' && err.message.includes('(did you mean "round-robin"?)'),
  );
});

test("pool.update names a field fixed for the server's life as such, not as a misspelling", (t) => {
  const pool = testPool(t);
  assert.throws(
    () => pool.update('a', { backup: true } as never),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'changes.backup' && err.message.includes('fixed when the server is added'),
  );
});

test('nearest: edit distance with swaps, case, "_" and "-" aside, within a third of the name; none when far', () => {
  const known = ['method', 'interval', 'maxFails', 'dashboard', 'now', 'name'];
  const table: Array<[string, string | undefined]> = [
    ['metod', 'method'],
    ['intreval', 'interval'],
    ['max_fails', 'maxFails'],
    ['MAXFAILS', 'maxFails'],
    ['dashbord', 'dashboard'],
    ['nwo', 'now'],
    ['nam', 'name'],
    ['servers', undefined],
    ['x', undefined],
    ['', undefined],
  ];
  for (const [name, expected] of table) assert.equal(nearest(name, known), expected, name);
});

test('objectOption: refuses null, arrays and non-objects naming the path (options at the top), undefined only when optional', () => {
  const cases: Array<[unknown, string, boolean, string]> = [
    [null, '', false, 'options'],
    [[], 'cookie', false, 'cookie'],
    ['x', 'queue', true, 'queue'],
    [undefined, 'queue', false, 'queue'],
  ];
  for (const [value, path, optional, option] of cases) {
    assert.throws(
      () => objectOption(value, path, ['a'], 'an object', optional),
      (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      String(value),
    );
  }
  assert.deepEqual(objectOption(undefined, 'queue', ['a'], 'an object', true), {});
  const given = { a: 1 };
  assert.equal(objectOption(given, '', ['a']), given, 'the object itself, not a copy');
});

test('integerOption: safe integers within bounds, the fallback when absent (0 is honoured)', () => {
  assert.equal(integerOption(undefined, 'n', 7), 7);
  assert.equal(integerOption(0, 'n', 7), 0);
  assert.equal(integerOption(65535, 'port', 0, { min: 1, max: 65535 }), 65535);
  for (const bad of [-1, 1.5, '2', Number.NaN, Infinity, 2 ** 53, null]) {
    assert.throws(
      () => integerOption(bad, 'n', 0),
      (err: unknown) => err instanceof InvalidOptionError && err.option === 'n' && err.message.includes('an integer >= 0'),
      String(bad),
    );
  }
  assert.throws(() => integerOption(0, 'port', 1, { min: 1, max: 65535 }), /an integer from 1 to 65535/);
  assert.throws(() => integerOption(65536, 'port', 1, { min: 1, max: 65535 }), /an integer from 1 to 65535/);
});

test('booleanOption, stringOption, enumOption, stringListOption: types checked, fallbacks with ?? (false and "" are honoured)', () => {
  assert.equal(booleanOption(false, 'b', true), false);
  assert.equal(booleanOption(undefined, 'b', true), true);
  assert.throws(
    () => booleanOption('yes', 'b', true),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'b',
  );
  assert.equal(stringOption('', 's', 'x'), '');
  assert.equal(stringOption(undefined, 's', 'x'), 'x');
  assert.throws(() => stringOption('', 's', 'x', { nonEmpty: true }), /a non-empty string/);
  assert.throws(() => stringOption('a b', 's', 'x', { pattern: /^\S+$/, expected: 'no spaces' }), /expected no spaces/);
  assert.equal(enumOption(undefined, 'e', ['a', 'b'] as const, 'a'), 'a');
  assert.equal(enumOption(503, 'e', [502, 503], 502), 503);
  assert.throws(() => enumOption('c', 'e', ['a', 'b'], 'a'), /expected "a" or "b"/);
  assert.throws(() => enumOption('d', 'e', ['a', 'b', 'c'], 'a'), /expected one of "a", "b", "c"/);
  const list = stringListOption(['x', 'y'], 'l', [], 'a list');
  assert.deepEqual(list, ['x', 'y']);
  assert.ok(Object.isFrozen(list));
  assert.throws(
    () => stringListOption(['x', 3], 'l', [], 'a list'),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'l[1]',
  );
  assert.throws(
    () => stringListOption('x', 'l', [], 'a list'),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'l',
  );
});

test('durationOption: nginx strings and milliseconds, defaults written as nginx writes them, positive when asked', () => {
  assert.equal(durationOption(undefined, 'd', '10s'), 10_000);
  assert.equal(durationOption('1m30s', 'd', '10s'), 90_000);
  assert.equal(durationOption(250, 'd', '10s'), 250);
  assert.equal(durationOption(0, 'd', '10s'), 0);
  assert.throws(
    () => durationOption(0, 'interval', '5s', true),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'interval' && err.message.includes('a positive duration'),
  );
  assert.throws(
    () => durationOption('soon', 'd', '10s'),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'd',
  );
});

test('nowOption and randomOption: functions, Date.now and Math.random by default', () => {
  assert.equal(nowOption(undefined), Date.now);
  assert.equal(randomOption(undefined), Math.random);
  const fixed = (): number => 42;
  assert.equal(nowOption(fixed), fixed);
  assert.throws(
    () => nowOption(5),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'now',
  );
  assert.throws(
    () => randomOption(0.5),
    (err: unknown) => err instanceof InvalidOptionError && err.option === 'random',
  );
});

test("factories validate values they used to take unchecked: upgrade's forwarding options, monitor's dashboard and prefix, the pool's tls", (t) => {
  const pool = testPool(t);
  const cases: Array<[() => unknown, string]> = [
    [() => upgrade(pool, { xForwarded: 'no' as never }), 'xForwarded'],
    [() => upgrade(pool, { host: '' }), 'host'],
    [() => upgrade(pool, { underscoresInHeaders: 'yes' as never }), 'underscoresInHeaders'],
    [() => monitor({ pools: [pool], dashboard: 'off' as never }), 'dashboard'],
    [() => monitor({ pools: [pool], prefix: 5 as never }), 'prefix'],
    [() => monitor({ pools: [pool], now: 5 as never }), 'now'],
    [() => monitor({ pools: [pool], healthChecks: {} as never }), 'healthChecks'],
    [() => createPool({ servers: [{ url: URL_A }], tls: 'insecure' as never }), 'tls'],
  ];
  for (const [call, option] of cases) {
    assert.throws(
      () => dispose(call()),
      (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      option,
    );
  }
});
