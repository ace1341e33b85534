// The balancing-method registry (src/pool/methods/index.ts): every method and alias it lists is
// accepted by name (nginx's spelling too), its parameters are checked naming `method.<param>`, its
// capabilities decide what createPool, add() and update() allow, and the pool keeps the response
// time statistics for every method, WebSocket upgrades included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { createServer } from 'node:http';
import { balance } from '../../src/balance/index.ts';
import { createPool, type MethodOption, type UpstreamPool } from '../../src/pool/index.ts';
import { internals } from '../../src/pool/internal.ts';
import { METHODS, methodNames, resolveMethod } from '../../src/pool/methods/index.ts';
import { backend, wsEcho } from '../adapters/common.ts';
import { listen, poolOf, until } from '../helpers.ts';

const A = 'http://127.0.0.1:19901';
const B = 'http://127.0.0.1:19902';

/** A valid option for each registered name: the hash key is its one required parameter. */
function optionFor(name: string): MethodOption {
  return (name === 'hash' ? { name, key: '$request_uri' } : { name }) as MethodOption;
}

/** Every method with each combination of its boolean and enumerated parameters worth telling apart. */
const VARIANTS: MethodOption[] = [
  ...methodNames().map(optionFor),
  { name: 'least-time', measure: 'header', inflight: true },
  { name: 'least-time', measure: 'last-byte', inflight: true },
  { name: 'least-time', measure: 'last-byte' },
  { name: 'hash', key: '$request_uri', consistent: true },
  { name: 'random', two: true },
];

function pool(t: TestContext, method: MethodOption, extra: object = {}): UpstreamPool {
  return poolOf(t, { a: A, b: B }, { method, extra: { b: extra } });
}

test("every registered name and alias makes a pool, in kebab case and nginx's snake case, and stats() reports it", (t) => {
  assert.deepEqual(methodNames(), ['round-robin', 'least-conn', 'least-time', 'hash', 'ip-hash', 'random', 'random-two']);
  for (const name of methodNames()) {
    assert.equal(pool(t, optionFor(name)).stats().method, name);
    assert.equal(pool(t, optionFor(name.replace(/-/g, '_'))).method, name);
    if (name !== 'hash') assert.equal(pool(t, name as MethodOption).method, name);
  }
  assert.equal(pool(t, { name: 'random', two: true }).method, 'random-two', 'a parameter can make the reported name');
});

test('each declared parameter is checked at createPool, naming method.<parameter>', () => {
  for (const definition of METHODS) {
    for (const param of Object.keys(definition.parameters)) {
      const option = { ...(optionFor(definition.name) as object), [param]: 42 } as unknown as MethodOption;
      assert.throws(
        () => createPool({ method: option, servers: [{ url: A }] }),
        { code: 'SWY_ERR_INVALID_OPTION', option: `method.${param}` },
        `${definition.name}.${param}`,
      );
    }
  }
});

test('capabilities decide backup and slowStart, at createPool, add() and update(), as nginx allows them', (t) => {
  for (const option of VARIANTS) {
    const { capabilities, name } = resolveMethod(option);
    const label = JSON.stringify(option);
    const backup = (): UpstreamPool => createPool({ method: option, servers: [{ url: A }, { url: B, backup: true }] });
    const slow = (): UpstreamPool => createPool({ method: option, servers: [{ url: A, slowStart: '10s' }, { url: B }] });
    if (capabilities.backup) backup().close();
    else assert.throws(backup, { option: 'servers[1].backup', message: new RegExp(`"${name}" method does not support`) }, label);
    if (capabilities.slowStart) slow().close();
    else assert.throws(slow, { option: 'servers[0].slowStart' }, label);
    const p = pool(t, option);
    if (!capabilities.backup) assert.throws(() => p.add({ url: 'http://127.0.0.1:19903', backup: true }), { option: 'server.backup' }, label);
    if (!capabilities.slowStart) assert.throws(() => p.update('a', { slowStart: 1000 }), { option: 'changes.slowStart' }, label);
    else assert.equal(p.update('a', { slowStart: 1000 }).slowStart, 1000);
  }
});

test('the pool keeps headerTime, responseTime and the histogram for every method (no method hook freezes them)', (t) => {
  for (const option of VARIANTS) {
    const p = pool(t, option);
    const inner = internals(p);
    for (let i = 0; i < 4; i++) {
      const peer = inner.select(inner.selection(undefined, undefined))!;
      const inflightDone = inner.header(peer, 10);
      inner.finish(peer, 'ok', { header: 10, response: 30, inflightDone }, 200);
    }
    const used = p.stats().servers.filter((s) => s.requests > 0);
    assert.ok(used.length > 0);
    for (const s of used) {
      assert.deepEqual([s.headerTime, s.responseTime, s.responseTimeHist.count], [10, 30, s.requests], `${JSON.stringify(option)} ${s.id}`);
    }
  }
});

test('a WebSocket upgrade counts in headerTime under least-time header inflight too, as under every other method', async (t) => {
  const up = await backend(t, 'a');
  for (const method of [{ name: 'least-time', measure: 'header', inflight: true }, { name: 'least-time' }, 'round-robin'] as MethodOption[]) {
    const p = createPool({ method, servers: [{ url: up.url }] });
    t.after(() => p.close());
    const mw = balance(p);
    const server = createServer((_req, res) => res.end());
    server.on('upgrade', mw.upgrade);
    const gw = await listen(t, server);
    assert.deepEqual(await wsEcho(`ws://127.0.0.1:${gw.port}/ws`, ['hi']), ['a:hi']);
    // The attempt ends when the tunnel closes.
    await until(() => p.stats().servers[0]!.active === 0, 3000, 'the upgrade to end');
    const s = p.stats().servers[0]!;
    assert.ok(s.headerTime > 0, `${JSON.stringify(method)}: headerTime ${s.headerTime}`);
    assert.ok(s.responseTime > 0, `${JSON.stringify(method)}: responseTime ${s.responseTime}`);
  }
});
