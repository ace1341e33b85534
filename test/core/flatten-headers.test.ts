// writeHead()'s headers as a flat list (src/core/http.ts: flattenHeaders, pushHeader), which cache()'s
// interception and shapeResponse() both read: on its own, and through both middlewares in front of a
// handler that writes its head in each of the forms Node takes (an object, a flat array, an array of
// pairs), its writeHead() headers replacing its setHeader() ones of the same name.
import assert from 'node:assert/strict';
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { test } from 'node:test';
import { flattenHeaders, pushHeader } from '../../src/core/http.ts';
import { cache, chain, shapeResponse } from '../../src/index.ts';
import { fetchText, gateway } from '../helpers.ts';

test('flattenHeaders(): objects, flat arrays and arrays of pairs, several values once each', () => {
  const expected = ['X-A', '1', 'X-M', 'a', 'X-M', 'b'];
  assert.deepEqual(flattenHeaders({ 'X-A': 1, 'X-M': ['a', 'b'], 'X-U': undefined }), expected);
  assert.deepEqual(flattenHeaders(['X-A', '1', 'X-M', ['a', 'b']]), expected);
  assert.deepEqual(
    flattenHeaders([
      ['X-A', 1],
      ['X-M', ['a', 'b']],
    ]),
    expected,
  );
  assert.deepEqual(flattenHeaders(['X-A', '1', 'dangling']), ['X-A', '1']);
  for (const nothing of [undefined, null, 'X-A: 1', 7, []]) assert.deepEqual(flattenHeaders(nothing), []);
});

test('pushHeader(): a value, each of a list, nothing for undefined', () => {
  const out: string[] = [];
  pushHeader(out, 'X-A', 1);
  pushHeader(out, 'X-M', ['a', 'b']);
  pushHeader(out, 'X-U', undefined);
  assert.deepEqual(out, ['X-A', '1', 'X-M', 'a', 'X-M', 'b']);
});

const FORMS: Record<string, unknown> = {
  object: { 'Content-Type': 'text/plain', 'X-Set': 'replaced', 'X-Multi': ['a', 'b'] } satisfies OutgoingHttpHeaders,
  'flat array': ['Content-Type', 'text/plain', 'X-Set', 'replaced', 'X-Multi', ['a', 'b']],
  'array of pairs': [
    ['Content-Type', 'text/plain'],
    ['X-Set', 'replaced'],
    ['X-Multi', ['a', 'b']],
  ],
};

for (const [form, headers] of Object.entries(FORMS)) {
  test(`shapeResponse() and cache() read writeHead()'s headers given as ${form}`, { timeout: 10_000 }, async (t) => {
    let calls = 0;
    const handler = (_req: unknown, res: ServerResponse) => {
      calls++;
      res.setHeader('X-Set', 'first');
      res.setHeader('X-Kept', 'kept');
      (res.writeHead as (status: number, headers: unknown) => ServerResponse)(200, headers);
      res.end('body');
    };
    const mw = cache({ valid: { '200': '1m' }, statusHeader: 'X-Cache-Status' });
    t.after(() => mw.close());
    const gw = await gateway(
      t,
      chain(shapeResponse({ add: { 'X-Shaped': 'yes', ETag: '"gw"' } }), mw, (req, res) => handler(req, res)),
    );
    for (const status of ['MISS', 'HIT']) {
      const r = await fetchText(`${gw.url}/x`);
      assert.equal(r.status, 200);
      assert.equal(r.body, 'body');
      assert.equal(r.headers['x-cache-status'], status);
      assert.equal(r.headers['x-set'], 'replaced', `${status}: writeHead's X-Set replaces setHeader's`);
      assert.equal(r.headers['x-kept'], 'kept');
      assert.equal(r.headers['x-multi'], 'a, b');
      assert.equal(r.headers['content-type'], 'text/plain');
      assert.equal(r.headers['x-shaped'], 'yes');
      assert.equal(r.headers.etag, '"gw"');
    }
    assert.equal(calls, 1, 'the second request is a HIT');
  });
}
