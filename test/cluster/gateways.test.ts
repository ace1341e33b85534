// Several gateway processes sharing one pool through a real Redis (issue 14): child processes
// (fixtures/gateway.ts) in front of upstreams in this process that count what they receive. What
// the issue measured before sharing: a drain sent to one worker's API left the other sending a
// third of its requests to the drained server, and passive health let N × maxFails failures reach
// a failing server. Each test measures its figure and prints it (t.diagnostic).
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import type { ServerOptions } from '../../src/index.ts';
import { upstream, type Upstream } from '../helpers.ts';
import { redisAvailability, testNamespace } from '../redis.ts';
import { type Gateway, median, propagation, serverConf, serverList, startGateway, traffic, write } from './support.ts';

const redis = redisAvailability();

/** Upstreams a, b, c… counting the requests they receive. */
async function upstreams(t: TestContext, ids: readonly string[]): Promise<Record<string, Upstream>> {
  return Object.fromEntries(await Promise.all(ids.map(async (id) => [id, await upstream(t, id)] as const)));
}

/** The static list of a pool over those upstreams, with their ids. */
const listOf = (ups: Record<string, Upstream>): ServerOptions[] => Object.entries(ups).map(([id, u]) => ({ id, url: u.url }));

/** Requests each upstream has received so far. */
const counts = (ups: Record<string, Upstream>): Record<string, number> => Object.fromEntries(Object.entries(ups).map(([id, u]) => [id, u.seen.length]));

test('a drain sent to one gateway process reaches every process within 1 s, and all of their traffic avoids the server', async (t) => {
  const skip = redis.shared();
  if (skip !== false) return t.skip(skip);
  const namespace = await testNamespace(t, 'test-cluster-drain');
  const ups = await upstreams(t, ['a', 'b', 'c']);
  const gateways = await Promise.all(['g0', 'g1', 'g2'].map((name) => startGateway(t, name, listOf(ups), namespace)));
  // Every process balances over all three before the drain.
  for (const g of gateways) assert.deepEqual(await traffic(g, 6), [200, 200, 200, 200, 200, 200]);
  for (const [id, n] of Object.entries(counts(ups))) assert.ok(n >= 3, `${id} received ${n} requests before the drain`);

  const drained = (value: boolean) => async (g: Gateway) => (await serverConf(g, 'b'))?.drain === value;
  const times: number[] = [];
  // Drained, undrained, drained... through each process in turn; the last run leaves b drained.
  for (let run = 0; run < 7; run++) {
    const value = run % 2 === 0;
    const via = gateways[run % 3]!;
    const started = performance.now();
    await write(via, 'PATCH', 'b', { drain: value });
    await propagation(gateways, drained(value), `drain ${value} sent to ${via.name} shown by every process`);
    times.push(performance.now() - started);
  }
  t.diagnostic(
    `drain propagation to 3 processes (PATCH sent → every API shows it): median ${median(times).toFixed(1)} ms, runs ${times.map((m) => m.toFixed(1)).join(', ')} ms`,
  );
  for (const ms of times) assert.ok(ms < 1000, `a drain took ${Math.round(ms)} ms to reach every process`);

  // The last run left b drained everywhere: no process sends it anything new.
  const before = counts(ups);
  for (const g of gateways) assert.deepEqual(await traffic(g, 12), Array(12).fill(200));
  const after = counts(ups);
  assert.equal(after.b, before.b, `the drained server received ${after.b! - before.b!} of the 36 requests`);
  assert.equal(after.a! - before.a! + (after.c! - before.c!), 36);
});

test('a weight change, an add and a remove reach every process; a process restarted after them comes up with them, not with its static list', async (t) => {
  const skip = redis.shared();
  if (skip !== false) return t.skip(skip);
  const namespace = await testNamespace(t, 'test-cluster-changes');
  const ups = await upstreams(t, ['a', 'b', 'c']);
  const { c, ...staticOnes } = ups;
  const statics = listOf(staticOnes);
  const [g0, g1, g2] = await Promise.all(['g0', 'g1', 'g2'].map((name) => startGateway(t, name, statics, namespace)));
  assert.ok(g0 !== undefined && g1 !== undefined && g2 !== undefined);
  const live = [g0, g1];
  // g2 goes away before the changes are made.
  await g2.kill();

  const times: Record<string, number> = {};
  let started = performance.now();
  await write(g0, 'PATCH', 'b', { weight: 5 });
  await propagation(live, async (g) => (await serverConf(g, 'b'))?.weight === 5, 'weight 5 shown by every process');
  times.weight = performance.now() - started;
  started = performance.now();
  await write(g1, 'POST', undefined, { id: 'c', server: new URL(c!.url).host });
  await propagation(live, async (g) => (await serverConf(g, 'c')) !== undefined, 'c added on every process');
  times.add = performance.now() - started;
  started = performance.now();
  await write(g0, 'DELETE', 'a');
  await propagation(live, async (g) => (await serverConf(g, 'a')) === undefined, 'a removed on every process');
  times.remove = performance.now() - started;

  // The same process started again, with the same static list [a, b]: it reads the changes.
  started = performance.now();
  const back = await startGateway(t, 'g2 again', statics, namespace);
  const ready = performance.now();
  const first = await serverList(back);
  const all = [g0, g1, back];
  const changed = async (g: Gateway): Promise<boolean> => {
    const list = await serverList(g);
    return [...list.keys()].sort().join() === 'b,c' && list.get('b')?.weight === 5;
  };
  times.restart = await propagation([back], changed, 'the restarted process shows b (weight 5) and c, not a');
  t.diagnostic(
    `propagation to every process: weight ${times.weight!.toFixed(1)} ms, add ${times.add!.toFixed(1)} ms, remove ${times.remove!.toFixed(1)} ms; ` +
      `restarted process: ready after ${(ready - started).toFixed(0)} ms, its first API read listed ${[...first.keys()].sort().join(',')}, ` +
      `the changed list ${times.restart.toFixed(1)} ms after its ready line`,
  );
  for (const [what, ms] of Object.entries(times)) assert.ok(ms < 1000, `${what} took ${Math.round(ms)} ms to reach every process`);

  // Traffic through every process, the restarted one included: nothing to a, b five times as much as c.
  const before = counts(ups);
  for (const g of all) assert.deepEqual(await traffic(g, 12), Array(12).fill(200));
  const after = counts(ups);
  const got = { a: after.a! - before.a!, b: after.b! - before.b!, c: after.c! - before.c! };
  assert.equal(got.a, 0, 'the removed server received requests');
  assert.equal(got.b + got.c, 36);
  assert.ok(got.c >= 3 && got.b >= 3 * got.c, `b (weight 5) and c (weight 1) received ${got.b} and ${got.c} of the 36 requests`);
});

/** An upstream that accepts connections and resets each one once a request arrives; counts them. */
async function failing(t: TestContext): Promise<{ url: string; received: () => number }> {
  let received = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.once('data', () => {
      received++;
      socket.resetAndDestroy();
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, received: () => received };
}

test('passive health across processes: about maxFails failures in total reach a failing server, not maxFails per process', async (t) => {
  const skip = redis.shared();
  if (skip !== false) return t.skip(skip);
  const namespace = await testNamespace(t, 'test-cluster-passive');
  const ok = await upstream(t, 'ok');
  // Two sets of 3 processes, each in front of its own failing server: one set synced, the other
  // alone (the control). Started together, measured one after the other.
  const start = async (ns: string | undefined) => {
    const bad = await failing(t);
    const servers: ServerOptions[] = [
      { id: 'bad', url: bad.url, maxFails: 3, failTimeout: '30s' },
      { id: 'ok', url: ok.url },
    ];
    return { bad, gateways: await Promise.all(['g0', 'g1', 'g2'].map((name) => startGateway(t, `${name}${ns === undefined ? ' alone' : ''}`, servers, ns))) };
  };
  /** Failures reaching the failing server after 20 sequential requests through each process, taken in turn. */
  const measure = async ({ bad, gateways }: Awaited<ReturnType<typeof start>>): Promise<number> => {
    for (let i = 0; i < 20; i++) for (const g of gateways) assert.deepEqual(await traffic(g, 1), [200], 'the retry on ok answers every request');
    return bad.received();
  };
  const [synced, alone] = await Promise.all([start(namespace), start(undefined)]);
  const shared = await measure(synced);
  const separate = await measure(alone);
  t.diagnostic(`failures reaching a failing server (maxFails 3, 3 processes, 60 requests): ${shared} with sync, ${separate} without`);
  const logs = synced.gateways.map((g) => `${g.name} (connected at start: ${g.connected}): ${g.stderr()}`).join('\n');
  assert.ok(shared >= 3 && shared <= 4, `${shared} failures reached the failing server with sync (maxFails 3)\n${logs}`);
  assert.equal(separate, 9, 'without sync each process lets maxFails through (the control)');
});
