// healthCheck() of https:// servers (issue 12): probes connect as the pool's proxied requests do,
// with its TLS settings (ca, servername, client certificate, or those of the user's own https
// agent), send SNI for host names only, and so pass where requests pass. Real HTTPS upstreams on
// 127.0.0.1 with certificates from a private CA made for the test (test/support/tls.ts).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Agent as HttpsAgent, type AgentOptions } from 'node:https';
import { balance, chain, healthCheck, type ProbeResult, type UpstreamPool } from '../../src/index.ts';
import { fetchText, gateway, poolOf, type PoolOfOptions } from '../helpers.ts';
import { createTestCa, NO_OPENSSL, tlsUpstream, type TestCa } from '../support/tls.ts';
import { probes } from './support.ts';

const NAME = 'upstream.test';
let authority: TestCa | undefined;
/** The test CA, made once for the file (only when a test runs: none is made when openssl is missing). */
const ca = (): TestCa => (authority ??= createTestCa());

function makePool(t: TestContext, url: string, options: PoolOfOptions): UpstreamPool {
  return poolOf(t, { a: url }, { name: 'tls', ...options });
}

/** Runs a health check until its first probe of every server is done; returns those probes. */
async function firstProbes(t: TestContext, pool: UpstreamPool): Promise<ProbeResult[]> {
  const hc = healthCheck(pool, { interval: '1h', timeout: '10s' });
  t.after(() => hc.stop());
  const seen = probes(hc);
  await hc.ready;
  return seen;
}

const state = (pool: UpstreamPool): string => pool.stats().servers[0]!.state;

test("https probes keep the pool's tls.servername: a server on 127.0.0.1 with a certificate for a name stays healthy, and balance() reaches it", {
  skip: NO_OPENSSL,
}, async (t) => {
  const up = await tlsUpstream(t, 'a', ca().issue({ names: [NAME] }));
  const pool = makePool(t, up.url, { tls: { ca: ca().ca, servername: NAME } });
  const [probe] = await firstProbes(t, pool);
  assert.deepEqual(probe, { id: 'a', passed: true, status: 200, reason: undefined, healthy: true });
  assert.equal(state(pool), 'up');
  assert.deepEqual(
    up.seen.map((r) => r.servername),
    [NAME],
    'the probe sent SNI upstream.test',
  );
  // the same CA and name carry a proxied request
  const gw = await gateway(t, chain(balance(pool)));
  const r = await fetchText(`${gw.url}/through`);
  assert.equal(r.status, 200);
  assert.equal(r.body, 'a');
  assert.equal(up.seen.at(-1)?.url, '/through');
  assert.equal(up.seen.at(-1)?.servername, NAME);
});

test('https probes with a tls.servername the certificate does not name fail verification: the server is unhealthy', { skip: NO_OPENSSL }, async (t) => {
  const up = await tlsUpstream(t, 'a', ca().issue({ names: [NAME] }));
  const pool = makePool(t, up.url, { tls: { ca: ca().ca, servername: 'other.test' } });
  const [probe] = await firstProbes(t, pool);
  assert.equal(probe?.passed, false);
  assert.equal(probe?.reason, 'ERR_TLS_CERT_ALTNAME_INVALID');
  assert.equal(state(pool), 'unhealthy');
  assert.equal(up.seen.length, 0);
});

test("https probes trust only the pool's ca: a certificate from another CA fails", { skip: NO_OPENSSL }, async (t) => {
  const up = await tlsUpstream(t, 'a', createTestCa('another CA').issue({ names: [NAME] }));
  const pool = makePool(t, up.url, { tls: { ca: ca().ca, servername: NAME } });
  const [probe] = await firstProbes(t, pool);
  assert.equal(probe?.passed, false);
  assert.equal(probe?.reason, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  assert.equal(state(pool), 'unhealthy');
});

test('https probes of a server given by IP address send no SNI and verify the address (no tls.servername)', { skip: NO_OPENSSL }, async (t) => {
  const up = await tlsUpstream(t, 'a', ca().issue({ names: ['127.0.0.1'] }));
  const pool = makePool(t, up.url, { tls: { ca: ca().ca } });
  const [probe] = await firstProbes(t, pool);
  assert.equal(probe?.passed, true, probe?.reason);
  assert.equal(state(pool), 'up');
  assert.deepEqual(
    up.seen.map((r) => r.servername),
    [undefined],
    'no SNI for an IP literal',
  );
});

test('https probes of a server given by host name send it as SNI (localhost)', { skip: NO_OPENSSL }, async (t) => {
  const up = await tlsUpstream(t, 'a', ca().issue({ names: ['localhost'] }));
  const pool = makePool(t, `https://localhost:${up.port}`, { tls: { ca: ca().ca } });
  const [probe] = await firstProbes(t, pool);
  assert.equal(probe?.passed, true, probe?.reason);
  assert.deepEqual(
    up.seen.map((r) => r.servername),
    ['localhost'],
  );
});

test("https probes present the pool's client certificate (tls.cert, tls.key) to a server that requires one", { skip: NO_OPENSSL }, async (t) => {
  const server = { ...ca().issue({ names: [NAME] }), ca: ca().ca, requestCert: true, rejectUnauthorized: true };
  const up = await tlsUpstream(t, 'a', server);
  const client = ca().issue({ names: ['gateway.test'], client: true });
  const withCert = makePool(t, up.url, { tls: { ca: ca().ca, servername: NAME, ...client } });
  const [passed] = await firstProbes(t, withCert);
  assert.equal(passed?.passed, true, passed?.reason);
  assert.deepEqual(
    up.seen.map((r) => r.authorized),
    [true],
  );
  // the server does refuse a client without one
  const without = makePool(t, up.url, { tls: { ca: ca().ca, servername: NAME } });
  const [refused] = await firstProbes(t, without);
  assert.equal(refused?.passed, false);
  assert.equal(state(without), 'unhealthy');
  assert.equal(up.seen.length, 1);
});

test("https probes use the TLS settings of the user's own https agent (pool option agent.https), as proxied requests do", { skip: NO_OPENSSL }, async (t) => {
  const up = await tlsUpstream(t, 'a', ca().issue({ names: [NAME] }));
  const settings: AgentOptions = { ca: ca().ca, servername: NAME, keepAlive: true };
  const agent = new HttpsAgent(settings);
  t.after(() => agent.destroy());
  const pool = makePool(t, up.url, { agent: { https: agent } });
  const [probe] = await firstProbes(t, pool);
  assert.equal(probe?.passed, true, probe?.reason);
  assert.equal(state(pool), 'up');
  const gw = await gateway(t, chain(balance(pool)));
  const r = await fetchText(`${gw.url}/through`);
  assert.equal(r.status, 200);
  assert.deepEqual(
    up.seen.map((s) => s.servername),
    [NAME, NAME],
  );
});
