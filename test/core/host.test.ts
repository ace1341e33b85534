// One `$host` (core/http.ts hostOf): the variable and rewrite's server names read the request's host
// the same way, as nginx: lowercase, without the port, without a trailing dot; a request without a
// Host matches the server name "" and its `$host` is the local address. One Host validator for the
// cache's key check, rewrite's redirects and monitor's allowedHosts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { chain, createPool, monitor, rewrite } from '../../src/index.ts';
import { hostName, hostOf, validHost } from '../../src/core/http.ts';
import { fetchText, listen } from '../helpers.ts';
import { RawClient } from '../balance/support.ts';
import type { IncomingMessage } from 'node:http';

test('hostName: lowercase, no port, no trailing dot; IPv6 keeps its brackets', () => {
  const table: Array<[string, string]> = [
    ['Example.ORG', 'example.org'],
    ['example.org.:8080', 'example.org'],
    ['EXAMPLE.org.', 'example.org'],
    ['[::1]:8080', '[::1]'],
    ['[2001:DB8::1]', '[2001:db8::1]'],
    ['127.0.0.1:80', '127.0.0.1'],
  ];
  for (const [host, name] of table) assert.equal(hostName(host), name, host);
  assert.equal(hostOf({ headers: {}, httpVersionMajor: 1 } as IncomingMessage), '', 'no Host: empty');
  assert.equal(hostOf({ headers: { host: 'A.example.:1' }, httpVersionMajor: 1 } as unknown as IncomingMessage), 'a.example');
});

test("validHost: nginx's Host check", () => {
  for (const ok of [undefined, 'example.org', 'example.org.', 'a-b_c.example:8080', '[::1]:443', '127.0.0.1', '.example'])
    assert.equal(validHost(ok), true, String(ok));
  for (const bad of ['', 'a..b', 'a/b', 'a\\b', 'ex ample', '[::1', 'a:b:c']) assert.equal(validHost(bad), false, bad);
});

test("$host and rewrite's server names agree: a Host with a trailing dot and a port is the bare name (Example.ORG.:8080 is example.org)", async (t) => {
  const gw = await listen(
    t,
    createServer(
      chain(
        rewrite([
          { server: 'example.org', rules: [{ return: 200, text: 'host=$host' }] },
          { server: '~.', rules: [{ return: 200, text: 'other=$host' }] },
        ]),
      ),
    ),
  );
  const r = await fetchText(`${gw.url}/`, { headers: { host: 'Example.ORG.:8080' } });
  assert.equal(r.status, 200);
  assert.equal(r.body, 'host=example.org');
  const other = await fetchText(`${gw.url}/`, { headers: { host: 'www.Example.net.' } });
  assert.equal(other.body, 'other=www.example.net');
});

test('a request without Host matches the server name "" and its $host is the local address', async (t) => {
  const gw = await listen(
    t,
    createServer(
      chain(
        rewrite([
          { server: '', rules: [{ return: 200, text: 'host=$host' }] },
          { server: 'example.org', rules: [{ return: 204 }] },
        ]),
      ),
    ),
  );
  const client = await RawClient.open(t, gw.port);
  client.write('GET / HTTP/1.0\r\n\r\n');
  const r = await client.response();
  assert.equal(r.status, 200);
  assert.equal(r.body, 'host=127.0.0.1');
});

test('rewrite makes a redirect absolute with a valid Host; an invalid one is 400 and never reaches a redirect', async (t) => {
  const gw = await listen(t, createServer(chain(rewrite([{ return: 302, url: '/next' }]))));
  const good = await fetchText(`${gw.url}/`, { headers: { host: 'gw.example_1.org:8080' } });
  assert.equal(good.headers.location, 'http://gw.example_1.org:8080/next');
  const client = await RawClient.open(t, gw.port);
  client.write('GET / HTTP/1.1\r\nHost: a..b\r\nConnection: close\r\n\r\n');
  const bad = await client.response();
  assert.equal(bad.status, 400);
  assert.equal(bad.headers.get('location'), undefined);
});

test("monitor's allowedHosts reads the Host the same way: a listed name with a trailing dot and a port is allowed, a malformed Host is 400", async (t) => {
  const pool = createPool({ servers: [{ url: 'http://127.0.0.1:19801' }] });
  t.after(() => pool.close());
  const mon = monitor({ pools: [pool], allowedHosts: ['gateway.example'] });
  t.after(() => mon.close());
  const gw = await listen(t, createServer(chain(mon)));
  const ok = await fetchText(`${gw.url}/api/9/`, { headers: { host: 'Gateway.Example.:9000' } });
  assert.equal(ok.status, 200);
  const client = await RawClient.open(t, gw.port);
  client.write('GET /api/9/ HTTP/1.1\r\nHost: gateway.example/evil\r\nConnection: close\r\n\r\n');
  const refused = await client.response();
  // chain() refuses it before monitor() sees it (nginx: "client sent invalid host header").
  assert.equal(refused.status, 400);
});
