// limitConnections(): nginx's limit_conn on real sockets (limit_conn.t, limit_conn_dry_run.t), over
// HTTP/1.1 and HTTP/2 (each stream counts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { chain, ConnectionLimitedError, InvalidOptionError, limitConnections, type LimitConnectionsOptions } from '../../src/index.ts';
import { h2Connect, h2Gateway, h2Request } from '../http2/support.ts';
import { fetchText, gateway, until } from '../helpers.ts';
import { holding } from './support.ts';

test('a request counts while in progress; zones are shared across routes, other zones are not (limit_conn.t)', async (t) => {
  const zone = limitConnections({ key: '$remote_addr', max: 1, name: 'zone' });
  const zone2 = limitConnections({ key: '$remote_addr', max: 1, name: 'zone2' });
  const unlim = limitConnections({ key: '$remote_addr', max: 5, name: 'unlim' });
  const gw = await holding(t, (path) => (path.startsWith('/zone') ? zone2 : path.startsWith('/unlim') ? unlim : zone));
  const slow = fetchText(`${gw.url}/w`);
  await until(() => gw.held.length === 1);
  assert.equal(zone.active(), 1);
  assert.equal((await fetchText(`${gw.url}/`)).status, 503, 'rejected');
  assert.equal((await fetchText(`${gw.url}/1`)).status, 503, 'rejected on another route of the zone');
  assert.equal((await fetchText(`${gw.url}/zone`)).status, 200, 'another zone passes');
  assert.equal((await fetchText(`${gw.url}/unlim`)).status, 200);
  gw.release();
  assert.equal((await slow).status, 200);
  await until(() => zone.active() === 0);
  const after = await fetchText(`${gw.url}/1`);
  assert.deepEqual([after.status, after.headers['x-limit-conn']], [200, 'PASSED']);
  assert.deepEqual(zone.stats(), { zone: { passed: 2, rejected: 2, rejectedDryRun: 0 } });
});

test('status, and the rejection is a ConnectionLimitedError through next(err)', async (t) => {
  const errors: unknown[] = [];
  const custom = limitConnections({ key: '$remote_addr', max: 1, status: 501, name: 'custom' });
  let hold: (() => void) | undefined;
  const gw = await gateway(
    t,
    chain(
      custom,
      (_req, res) => {
        hold = () => res.end();
      },
      {
        final: (err, _req, res) => {
          errors.push(err);
          res.statusCode = (err as ConnectionLimitedError).statusCode;
          res.end();
        },
      },
    ),
  );
  const first = fetchText(gw.url);
  await until(() => hold !== undefined);
  assert.equal((await fetchText(gw.url)).status, 501);
  const err = errors[0] as ConnectionLimitedError;
  assert.ok(err instanceof ConnectionLimitedError);
  assert.equal(err.code, 'SWY_ERR_CONNECTION_LIMITED');
  assert.equal(err.zone, 'custom');
  hold?.();
  await first;
});

test('dry run: REJECTED_DRY_RUN and the request goes on (limit_conn_dry_run.t)', async (t) => {
  const dry = limitConnections({ key: '$remote_addr', max: 1, dryRun: true });
  const gw = await holding(t, () => dry);
  const slow = fetchText(`${gw.url}/w`);
  await until(() => gw.held.length === 1);
  const r = await fetchText(`${gw.url}/dry`);
  assert.deepEqual([r.status, r.headers['x-limit-conn']], [200, 'REJECTED_DRY_RUN']);
  gw.release();
  await slow;
  assert.deepEqual(dry.stats().limit_conn, { passed: 1, rejected: 0, rejectedDryRun: 1 });
});

test('a client that goes away gives its place back', async (t) => {
  const limit = limitConnections({ key: '$remote_addr', max: 1 });
  const gw = await holding(t, () => limit);
  const req = request(`${gw.url}/w`, { agent: false });
  req.on('error', () => undefined);
  req.end();
  await until(() => limit.active() === 1);
  req.destroy();
  await until(() => limit.active() === 0, 5000, 'the count released');
  gw.held.splice(0);
  assert.equal((await fetchText(`${gw.url}/`)).status, 200);
});

test('several limits: a rejection by one takes back what the others counted; empty keys are not limited', async (t) => {
  const limit = limitConnections({
    limits: [
      { key: '$remote_addr', max: 5, name: 'wide' },
      { key: '$arg_user', max: 1, name: 'narrow' },
    ],
  });
  const gw = await holding(t, () => limit);
  const slow = fetchText(`${gw.url}/w?user=a`);
  await until(() => gw.held.length === 1);
  assert.equal((await fetchText(`${gw.url}/?user=a`)).status, 503);
  assert.equal(limit.active('wide'), 1, 'the rejected request holds nothing in wide');
  assert.equal((await fetchText(`${gw.url}/?user=b`)).status, 200);
  assert.equal((await fetchText(`${gw.url}/`)).status, 200);
  gw.release();
  await slow;
  await until(() => limit.active('wide') === 0 && limit.active('narrow') === 0);
});

test('HTTP/2: each stream counts as one', async (t) => {
  const limit = limitConnections({ key: '$remote_addr', max: 2 });
  const held: Array<() => void> = [];
  const gw = await h2Gateway(
    t,
    'h2c',
    chain(limit, (req, res) => {
      if (req.url === '/w') held.push(() => res.end('held'));
      else res.end('ok');
    }),
  );
  const session = h2Connect(t, gw.url);
  const a = h2Request(session, { ':path': '/w' });
  const b = h2Request(session, { ':path': '/w' });
  await until(() => held.length === 2);
  assert.equal(limit.active(), 2);
  assert.equal((await h2Request(session, { ':path': '/' })).status, 503);
  for (const fn of held.splice(0)) fn();
  assert.deepEqual([(await a).status, (await b).status], [200, 200]);
  await until(() => limit.active() === 0);
  assert.equal((await h2Request(session, { ':path': '/' })).status, 200);
});

test('options are checked when limitConnections() is called', () => {
  const bad: Array<[unknown, string]> = [
    [{ key: '$remote_addr' }, 'max'],
    [{ key: '$remote_addr', max: 0 }, 'max'],
    [{ max: 1 }, 'key'],
    [{ key: '$remote_addr', max: 1, status: 302 }, 'status'],
    [{ key: '$remote_addr', max: 1, rate: '1r/s' }, 'rate'],
    [
      {
        limits: [
          { key: '$uri', max: 1, name: 'a' },
          { key: '$uri', max: 1, name: 'a' },
        ],
      },
      'limits[1].name',
    ],
    [{ key: '$uri', max: 1, limits: [{ key: '$uri', max: 1 }] }, 'key'],
  ];
  for (const [options, option] of bad)
    assert.throws(
      () => limitConnections(options as LimitConnectionsOptions),
      (e: unknown) => e instanceof InvalidOptionError && e.option === option,
      JSON.stringify(options),
    );
  const mw = limitConnections({ key: '$remote_addr', max: 1 });
  assert.equal(mw.name, 'limitConnections');
  assert.deepEqual(mw.zones, ['limit_conn']);
});
