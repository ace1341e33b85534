// createPool validates every option up front and names the offending field (InvalidOptionError.option).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPool, InvalidOptionError, type PoolOptions } from '../../src/index.ts';

const A = 'http://127.0.0.1:19601';
const SID_A = '5e5d2be92a06399c515b25574b159d5b';
const SID_LOCALHOST = '1c3c2192e2912699ccd31119b162666a';
const B = 'http://127.0.0.1:19602';

const INVALID: Array<[name: string, options: unknown, option: string]> = [
  ['weight 0 (nginx: invalid parameter)', { servers: [{ url: A, weight: 0 }] }, 'servers[0].weight'],
  ['weight 1.5', { servers: [{ url: A }, { url: B, weight: 1.5 }] }, 'servers[1].weight'],
  ['weight as a string', { servers: [{ url: A, weight: '2' }] }, 'servers[0].weight'],
  ['weight negative', { servers: [{ url: A, weight: -1 }] }, 'servers[0].weight'],
  ['maxConns -1', { servers: [{ url: A, maxConns: -1 }] }, 'servers[0].maxConns'],
  ['maxFails 1.5', { servers: [{ url: A, maxFails: 1.5 }] }, 'servers[0].maxFails'],
  ['unknown method', { method: 'fastest', servers: [{ url: A }] }, 'method'],
  ['unknown method object', { method: { name: 'sticky-rr' }, servers: [{ url: A }] }, 'method'],
  ['method of the wrong type', { method: 42, servers: [{ url: A }] }, 'method'],
  ['hash without a key', { method: 'hash', servers: [{ url: A }] }, 'method.key'],
  ['hash with an empty key', { method: { name: 'hash', key: '' }, servers: [{ url: A }] }, 'method.key'],
  ['hash consistent not a boolean', { method: { name: 'hash', key: '$uri', consistent: 'yes' }, servers: [{ url: A }] }, 'method.consistent'],
  ['least-time unknown measure', { method: { name: 'least-time', measure: 'body' }, servers: [{ url: A }] }, 'method.measure'],
  ['least-time inflight not a boolean', { method: { name: 'least-time', inflight: 1 }, servers: [{ url: A }] }, 'method.inflight'],
  ['random two not a boolean', { method: { name: 'random', two: 'yes' }, servers: [{ url: A }] }, 'method.two'],
  ['malformed url', { servers: [{ url: 'http://' }] }, 'servers[0].url'],
  ['not a url at all', { servers: [{ url: A }, { url: 'backend:8080 weight=2' }] }, 'servers[1].url'],
  ['non-http url', { servers: [{ url: 'ftp://127.0.0.1:21' }] }, 'servers[0].url'],
  ['unix socket url (not supported)', { servers: [{ url: 'unix:/tmp/app.sock' }] }, 'servers[0].url'],
  ['url with a query', { servers: [{ url: `${A}/?x=1` }] }, 'servers[0].url'],
  ['url not a string', { servers: [{ url: 19601 }] }, 'servers[0].url'],
  [
    'duplicate id',
    {
      servers: [
        { url: A, id: 'x' },
        { url: B, id: 'x' },
      ],
    },
    'servers[1].id',
  ],
  ['empty id', { servers: [{ url: A, id: '' }] }, 'servers[0].id'],
  ['empty servers', { servers: [] }, 'servers'],
  ['no servers', {}, 'servers'],
  ['server not an object', { servers: [A] }, 'servers[0]'],
  ['unknown server field', { servers: [{ url: A, wieght: 2 }] }, 'servers[0].wieght'],
  ['nginx spelling of a server field', { servers: [{ url: A, max_fails: 2 }] }, 'servers[0].max_fails'],
  ['route longer than 32 characters', { servers: [{ url: A, route: 'r'.repeat(33) }] }, 'servers[0].route'],
  ['empty route', { servers: [{ url: A, route: '' }] }, 'servers[0].route'],
  ['route with a semicolon', { servers: [{ url: A, route: 'a;b' }] }, 'servers[0].route'],
  ['failTimeout not a duration', { servers: [{ url: A, failTimeout: 'soon' }] }, 'servers[0].failTimeout'],
  ['failTimeout negative', { servers: [{ url: A, failTimeout: -1 }] }, 'servers[0].failTimeout'],
  ['failTimeout with a bad unit', { servers: [{ url: A, failTimeout: '10 sec' }] }, 'servers[0].failTimeout'],
  ['backup not a boolean', { servers: [{ url: A }, { url: B, backup: 'yes' }] }, 'servers[1].backup'],
  ['down not a boolean', { servers: [{ url: A, down: 1 }] }, 'servers[0].down'],
  ['drain not a boolean', { servers: [{ url: A, drain: 'true' }] }, 'servers[0].drain'],
  ['empty name', { name: '', servers: [{ url: A }] }, 'name'],
  ['now not a function', { now: 5, servers: [{ url: A }] }, 'now'],
  ['options not an object', null, 'options'],
  ['backup with hash', { method: { name: 'hash', key: '$uri' }, servers: [{ url: A }, { url: B, backup: true }] }, 'servers[1].backup'],
  [
    'backup with consistent hash',
    { method: { name: 'hash', key: '$uri', consistent: true }, servers: [{ url: A, backup: true }, { url: B }] },
    'servers[0].backup',
  ],
  ['backup with ip-hash', { method: 'ip-hash', servers: [{ url: A }, { url: B, backup: true }] }, 'servers[1].backup'],
  ['backup with ip_hash (nginx spelling)', { method: 'ip_hash', servers: [{ url: A }, { url: B, backup: true }] }, 'servers[1].backup'],
  ['backup with random', { method: 'random', servers: [{ url: A }, { url: B, backup: true }] }, 'servers[1].backup'],
  ['backup with random-two', { method: { name: 'random', two: true }, servers: [{ url: A }, { url: B, backup: true }] }, 'servers[1].backup'],
];

for (const [name, options, option] of INVALID) {
  test(`createPool rejects ${name}: InvalidOptionError naming "${option}"`, () => {
    assert.throws(
      () => createPool(options as PoolOptions),
      (err: unknown) => {
        assert.ok(err instanceof InvalidOptionError, String(err));
        assert.ok(err instanceof TypeError);
        assert.equal(err.code, 'SWY_ERR_INVALID_OPTION');
        assert.equal(err.option, option);
        assert.ok(err.message.includes(`"${option}"`), err.message);
        return true;
      },
    );
  });
}

const VALID: Array<[name: string, options: PoolOptions]> = [
  ['backup with round robin', { servers: [{ url: A }, { url: B, backup: true }] }],
  ['backup with least-conn', { method: 'least-conn', servers: [{ url: A }, { url: B, backup: true }] }],
  ['backup with least_time (nginx spelling)', { method: 'least_time' as 'least-time', servers: [{ url: A }, { url: B, backup: true }] }],
  ['route of exactly 32 characters', { servers: [{ url: A, route: 'r'.repeat(32) }] }],
  [
    'weight, maxConns, maxFails 0 and failTimeout forms',
    {
      servers: [
        { url: A, weight: 100, maxConns: 0, maxFails: 0, failTimeout: 0 },
        { url: B, failTimeout: '1m30s' },
      ],
    },
  ],
  ['the same url twice (nginx allows it)', { servers: [{ url: A }, { url: A }] }],
  ['https and an IPv6 host with a path prefix', { servers: [{ url: 'https://[::1]:8443/app' }] }],
];
for (const [name, options] of VALID) {
  test(`createPool accepts ${name}`, () => {
    createPool(options).close();
  });
}

test("defaults are nginx's: weight 1, maxConns 0, maxFails 1, failTimeout 10 s, ids from the url (#2 for repeats)", () => {
  const pool = createPool({ servers: [{ url: A }, { url: `${A}/` }, { url: 'HTTP://LOCALHOST:80/api/' }] });
  assert.deepEqual(pool.servers, [
    // sid: nginx's md5 of "host:port" (the values printed by `printf 127.0.0.1:19601 | md5sum`)
    {
      id: A,
      url: A,
      weight: 1,
      maxConns: 0,
      maxFails: 1,
      failTimeout: 10_000,
      backup: false,
      down: false,
      drain: false,
      route: '',
      sid: SID_A,
      slowStart: 0,
      http2: false,
    },
    {
      id: `${A}#2`,
      url: A,
      weight: 1,
      maxConns: 0,
      maxFails: 1,
      failTimeout: 10_000,
      backup: false,
      down: false,
      drain: false,
      route: '',
      sid: SID_A,
      slowStart: 0,
      http2: false,
    },
    {
      id: 'http://localhost/api',
      url: 'http://localhost/api',
      weight: 1,
      maxConns: 0,
      maxFails: 1,
      failTimeout: 10_000,
      backup: false,
      down: false,
      drain: false,
      route: '',
      sid: SID_LOCALHOST,
      slowStart: 0,
      http2: false,
    },
  ]);
  assert.equal(pool.method, 'round-robin');
  assert.equal(pool.name, 'upstream');
  pool.close();
});

test("createPool neither mutates nor needs to mutate the caller's options (frozen input works)", () => {
  const options = Object.freeze({
    name: 'frozen',
    method: Object.freeze({ name: 'hash' as const, key: '$uri', consistent: true }),
    servers: Object.freeze([Object.freeze({ url: A, weight: 2 }), Object.freeze({ url: B })]) as PoolOptions['servers'],
  });
  const before = JSON.stringify(options);
  const pool = createPool(options);
  pool.update(A, { weight: 3 });
  pool.add({ url: 'http://127.0.0.1:19603' });
  assert.equal(JSON.stringify(options), before);
  pool.close();
});

test('nginx spellings of method names are accepted: least_conn, ip_hash, least_time', () => {
  for (const [m, name] of [
    ['least_conn', 'least-conn'],
    ['ip_hash', 'ip-hash'],
    ['least_time', 'least-time'],
    ['random-two', 'random-two'],
  ] as const) {
    const pool = createPool({ method: m as PoolOptions['method'], servers: [{ url: A }] });
    assert.equal(pool.method, name);
    pool.close();
  }
});

test('an invalid url with credentials is reported without them', () => {
  for (const url of ['ftp://user:s3cret@127.0.0.1', 'http://user:s3cret@', 'http://user:p@ss:s3cret@host?x=1']) {
    assert.throws(
      () => createPool({ servers: [{ url }] }),
      (err: unknown) =>
        err instanceof InvalidOptionError && err.option === 'servers[0].url' && !err.message.includes('s3cret') && !err.message.includes('user:'),
      url,
    );
  }
});

test('run-time changes are validated the same way, naming the field', () => {
  const pool = createPool({
    method: 'ip-hash',
    servers: [
      { url: A, id: 'a' },
      { url: B, id: 'b' },
    ],
  });
  const cases: Array<[() => unknown, string]> = [
    [() => pool.update('a', { weight: 0 }), 'changes.weight'],
    [() => pool.update('a', { failTimeout: 'later' }), 'changes.failTimeout'],
    [() => pool.update('a', { route: 'x'.repeat(33) }), 'changes.route'],
    [() => pool.update('a', { url: B } as never), 'changes.url'],
    [() => pool.update('a', null as never), 'changes'],
    [() => pool.add({ url: 'http://127.0.0.1:19603', backup: true }), 'server.backup'],
    [() => pool.add({ url: 'nope' }), 'server.url'],
    [() => pool.add({ url: 'http://127.0.0.1:19603', id: 'a' }), 'server.id'],
    [() => pool.remove(5 as never), 'id'],
  ];
  for (const [fn, option] of cases) {
    assert.throws(fn, (err: unknown) => err instanceof InvalidOptionError && err.option === option, option);
  }
  assert.deepEqual(
    pool.servers.map((s) => [s.id, s.weight]),
    [
      ['a', 1],
      ['b', 1],
    ],
    'nothing changed',
  );
  pool.close();
});
