// The server-field table (src/pool/fields.ts) is the one list of server fields: every row
// round-trips createPool → info() (pool.get) → monitor GET → PATCH (updatable rows; the others are
// immutable) → POST, with its default, and the docs name every field and every server state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseDuration } from '../../src/core/duration.ts';
import { SERVER_FIELDS, type FieldKind, type ServerField } from '../../src/pool/fields.ts';
import { STATE_NUMBERS } from '../../src/monitor/index.ts';
import { call, startMonitorGateway } from '../monitor/support.ts';

/** A value of each kind as given to createPool, as info() shows it, and as the API shows it. */
interface Sample {
  given: unknown;
  info: unknown;
  api: unknown;
}

/** Two distinct non-default samples of each kind: the first to create with, the second to PATCH to. */
function samples(field: ServerField, url: string): [Sample, Sample] {
  const kinds: Record<FieldKind, () => [Sample, Sample]> = {
    integer: () => {
      const a = (field.min ?? 0) + 2;
      return [
        { given: a, info: a, api: a },
        { given: a + 1, info: a + 1, api: a + 1 },
      ];
    },
    duration: () => [
      { given: '1500ms', info: 1500, api: '1500ms' },
      { given: '3s', info: 3000, api: '3s' },
    ],
    boolean: () => [
      { given: true, info: true, api: true },
      { given: false, info: false, api: false },
    ],
    route: () => [
      { given: 'r1', info: 'r1', api: 'r1' },
      { given: 'r2', info: 'r2', api: 'r2' },
    ],
    id: () => [
      { given: 'x', info: 'x', api: 'x' },
      { given: 'x2', info: 'x2', api: 'x2' },
    ],
    url: () => [
      { given: url, info: url, api: new URL(url).host },
      { given: url, info: url, api: new URL(url).host },
    ],
  };
  return kinds[field.kind]();
}

for (const field of SERVER_FIELDS) {
  test(`server field "${field.name}" (API "${field.api}") round-trips createPool → info() → monitor GET → ${field.update ? 'PATCH' : 'refused PATCH'} → POST`, async (t) => {
    let url = '';
    const gw = await startMonitorGateway(t, {
      upstreams: { a: undefined, b: undefined },
      servers: (ups) => {
        url = ups.a!.url;
        const [first] = samples(field, url);
        return [
          { url, id: 'x', [field.name]: first.given },
          { url: ups.b!.url, id: 'plain' },
        ];
      },
      write: () => true,
    });
    const [first, second] = samples(field, url);
    const id = field.kind === 'id' ? String(first.info) : 'x';

    // createPool → info()
    assert.deepEqual(gw.pool.get(id)?.[field.name], first.info);
    assert.deepEqual(Object.keys(gw.pool.get(id)!).sort(), [...SERVER_FIELDS.map((f) => f.name), 'sid'].sort(), 'info() shows the table');
    // the default, where the field was not given
    const plain = gw.pool.get('plain')!;
    if (field.default !== undefined)
      assert.deepEqual(plain[field.name], field.kind === 'duration' ? parseDuration(field.default as string | number, field.name) : field.default);

    // monitor GET (one server, and the list)
    const one = await call(`${gw.api}/http/upstreams/backend/servers/${encodeURIComponent(id)}`);
    assert.equal(one.status, 200, one.text);
    assert.deepEqual(one.body[field.api], first.api);
    if (field.kind === 'url') assert.equal(one.body.url, url);
    const list = await call(`${gw.api}/http/upstreams/backend/servers`);
    assert.deepEqual(
      list.body.find((s: { id: string }) => s.id === id),
      one.body,
    );

    // PATCH: updatable fields change; the others are immutable (400), the value kept
    const patched = await call(`${gw.api}/http/upstreams/backend/servers/${encodeURIComponent(id)}`, { method: 'PATCH', json: { [field.api]: second.api } });
    if (field.update) {
      assert.equal(patched.status, 200, patched.text);
      assert.deepEqual(patched.body[field.api], second.api);
      assert.deepEqual(gw.pool.get(id)?.[field.name], second.info);
      // and back through the pool's own update()
      assert.deepEqual(gw.pool.update(id, { [field.name]: first.given })[field.name], first.info);
    } else {
      assert.equal(patched.status, 400, patched.text);
      assert.equal(patched.body.error.code, 'UpstreamServerImmutable');
      assert.deepEqual(gw.pool.get(id)?.[field.name], first.info);
      assert.throws(() => gw.pool.update(id, { [field.name]: first.given } as never), { code: 'SWY_ERR_INVALID_OPTION', option: `changes.${field.name}` });
    }

    // POST a new server with the field as the API writes it
    const body: Record<string, unknown> = { server: new URL(url).host, id: 'posted', [field.api]: first.api };
    if (field.kind === 'id') body.id = 'posted';
    const posted = await call(`${gw.api}/http/upstreams/backend/servers`, { method: 'POST', json: body });
    assert.equal(posted.status, 201, posted.text);
    if (field.kind !== 'id') {
      assert.deepEqual(posted.body[field.api], first.api);
      assert.deepEqual(gw.pool.get('posted')?.[field.name], first.info);
    }
  });
}

test('a bad value of each checked field is refused with its NGINX Plus code, by createPool and by the API', async (t) => {
  const gw = await startMonitorGateway(t, { write: () => true });
  const bad: Partial<Record<FieldKind, unknown>> = { integer: -1, duration: 'soon', route: 'a;b' };
  for (const field of SERVER_FIELDS) {
    const value = bad[field.kind];
    if (value === undefined) continue;
    assert.throws(() => gw.pool.add({ url: gw.upstreams.a!.url, id: 'bad', [field.name]: value }), { option: `server.${field.name}` }, field.name);
    if (!field.update) continue;
    const r = await call(`${gw.api}/http/upstreams/backend/servers/a`, { method: 'PATCH', json: { [field.api]: value } });
    assert.equal(r.status, 400, `${field.api}: ${r.text}`);
    assert.equal(r.body.error.code, field.apiError, field.api);
  }
});

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const POOL_SECTION = README.slice(README.indexOf('### `createPool(options)`'), README.indexOf('### Balancing methods'));

test('the README createPool section lists every server field, update() names every updatable one, stats() every state', () => {
  assert.ok(POOL_SECTION.length > 100, 'the section is there');
  for (const field of SERVER_FIELDS) assert.match(POOL_SECTION, new RegExp(`^\\| \`${field.name}\` \\|`, 'm'), `a row for ${field.name}`);
  const updateRow = POOL_SECTION.split('\n').find((line) => line.startsWith('| `update(id, changes)`'));
  assert.ok(updateRow !== undefined);
  for (const field of SERVER_FIELDS) assert.equal(updateRow.includes(`\`${field.name}\``), field.update, `update() row and ${field.name}`);
  const statsRow = POOL_SECTION.split('\n').find((line) => line.startsWith('| `stats()`'));
  assert.ok(statsRow !== undefined);
  for (const state of Object.keys(STATE_NUMBERS)) assert.ok(statsRow.includes(`\`${state}\``), `stats() row names the state ${state}`);
});

test("update()'s TSDoc names every field update() may change", () => {
  const source = readFileSync(new URL('../../src/pool/index.ts', import.meta.url), 'utf8');
  const at = source.indexOf('  update(id: string, changes: ServerUpdate): ServerInfo {');
  const doc = source.slice(source.lastIndexOf('/**', at), at);
  for (const field of SERVER_FIELDS) if (field.update) assert.ok(doc.includes(`\`${field.name}\``), `update() TSDoc names ${field.name}`);
});
