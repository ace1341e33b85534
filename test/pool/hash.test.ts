// Generic hash (plain and consistent) and ip_hash beyond the recorded mappings: rehashing past
// unavailable servers, retries within a request, fallbacks to round robin (nginx-semantics.md 2.4, 2.5).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPool, type MethodOption, type ServerOptions, type UpstreamPool } from '../../src/pool/index.ts';
import type { Peer } from '../../src/pool/peer.ts';
import { clock } from '../helpers.ts';
import { finishOk, fixture, pick, selection, sequence, serversOf, type HashGroup, type IpGroup } from './support.ts';
import { internals } from '../../src/pool/internal.ts';

type TestContext = { after(fn: () => void): void };
const hash = fixture<{ groups: HashGroup[] }>('hash.json');
const ipHash = fixture<{ groups: IpGroup[] }>('ip-hash.json');
const group = <T extends { name: string }>(list: T[], name: string): T => list.find((g) => g.name === name)!;

const B2 = '127.0.0.1:18182';
const B2_ID = `http://${B2}`;

function make(t: TestContext, method: MethodOption, list: ServerOptions[], now?: () => number): UpstreamPool {
  const p = createPool({ name: 'h', method, servers: list, now });
  t.after(() => p.close());
  return p;
}
const plain: MethodOption = { name: 'hash', key: '$arg_k' };
const consistent: MethodOption = { name: 'hash', key: '$arg_k', consistent: true };

function letters(n: number, extra: Partial<ServerOptions>[] = []): ServerOptions[] {
  return Array.from({ length: n }, (_, i) => ({ url: `http://127.0.0.1:${19501 + i}`, id: String.fromCharCode(97 + i), ...extra[i] }));
}

/** Keys of a fixture group that nginx put on 127.0.0.1:18182, with where nginx put them when it was down. */
function movedKeys(from: string, down: string): Array<{ key: string; addr: string }> {
  const a = group(hash.groups, from);
  const b = group(hash.groups, down);
  return a.results.filter((r) => r.addr === B2).map((r) => ({ key: r.key, addr: b.results.find((x) => x.key === r.key)!.addr }));
}

for (const [method, name] of [
  [plain, 'plain'],
  [consistent, 'consistent'],
] as const) {
  test(`hash ${name}: one key always goes to the same server (upstream_hash.t: 10/10)`, (t) => {
    const p = make(t, method, letters(3));
    const got = Array.from({ length: 10 }, () => pick(p, { url: '/?k=stable-key' }));
    assert.equal(new Set(got).size, 1);
  });

  test(`hash ${name}: an empty key falls back to round robin (upstream_hash.t: 2/2/2)`, (t) => {
    const p = make(t, method, letters(3));
    assert.deepEqual(sequence(p, 6), [...'abcabc']);
  });

  test(`hash ${name}: a key function returning nothing is an empty key`, (t) => {
    const p = make(t, { name: 'hash', key: () => undefined as unknown as string, consistent: name === 'consistent' }, letters(3));
    assert.deepEqual(sequence(p, 3), [...'abc']);
  });

  test(`hash ${name}: one server -> round robin path (the key does not matter; full -> undefined)`, (t) => {
    const p = make(t, method, letters(1, [{ maxConns: 1 }]));
    const a = internals(p).select(selection(p, { url: '/?k=x' }))!;
    assert.equal(a.id, 'a');
    assert.equal(internals(p).select(selection(p, { url: '/?k=y' })), undefined);
    finishOk(p, a);
  });

  test(`hash ${name}: when no server can take the request, 20 rehashes then round robin, then undefined`, (t) => {
    const p = make(t, method, letters(3, [{ down: true }, { down: true }, { drain: true }]));
    const sel = selection(p, { url: '/?k=any' });
    assert.equal(internals(p).select(sel), undefined);
    assert.equal(sel.tries, 21);
  });
}

for (const [from, down, method] of [
  ['h3', 'h3down', plain],
  ['c3', 'c3down', consistent],
] as const) {
  test(`hash ${from}: a full or failed server is passed over exactly like a down one (nginx ${down})`, (t) => {
    const keys = movedKeys(from, down);
    assert.ok(keys.length > 5);
    const c = clock();
    const g = group(hash.groups, from);
    // full: maxConns 1 with one attempt in flight
    const full = make(
      t,
      method,
      serversOf(g.servers).map((s) => (s.url === B2_ID ? { ...s, maxConns: 1 } : s)),
    );
    let held: Peer | undefined;
    for (const r of group(hash.groups, from).results) {
      if (r.addr !== B2) continue;
      held = internals(full).select(selection(full, { url: `/?k=${r.key}` }));
      break;
    }
    assert.equal(held?.name, B2);
    assert.deepEqual(
      keys.map((r) => ({ key: r.key, addr: pick(full, { url: `/?k=${r.key}` }) })),
      keys,
    );
    finishOk(full, held!);
    // failed: maxFails 1 after one failure, for failTimeout
    const failed = make(t, method, serversOf(g.servers), c.now);
    const peer = internals(failed).select(selection(failed, { url: `/?k=${keys[0]!.key}` }))!;
    assert.equal(peer.name, B2);
    internals(failed).finish(peer, 'failed', { header: -1, response: 1, inflightDone: false }, undefined);
    assert.deepEqual(
      keys.map((r) => ({ key: r.key, addr: pick(failed, { url: `/?k=${r.key}` }) })),
      keys,
    );
    c.advance(10_001);
    assert.equal(pick(failed, { url: `/?k=${keys[0]!.key}` }), B2, 'back after failTimeout');
  });

  test(`hash ${from}: a retry within the request continues the hash as nginx does past a down server (${down})`, (t) => {
    // maxFails 0: the failed attempt does not take the server out for the next keys
    const p = make(
      t,
      method,
      serversOf(group(hash.groups, from).servers).map((s) => ({ ...s, maxFails: 0 })),
    );
    for (const r of movedKeys(from, down)) {
      const sel = selection(p, { url: `/?k=${r.key}` });
      const first = internals(p).select(sel)!;
      assert.equal(first.name, B2);
      internals(p).finish(first, 'failed', { header: 5, response: 5, inflightDone: false }, 502);
      const second = internals(p).select(sel)!;
      assert.equal(second.name, r.addr, r.key);
      finishOk(p, second);
    }
  });
}

test('hash: changing a weight at run time remaps like a pool built with that weight (nginx hw)', (t) => {
  const hw = group(hash.groups, 'hw');
  const cw = group(hash.groups, 'cw');
  for (const [g, from] of [
    [hw, 'h3'],
    [cw, 'c3'],
  ] as const) {
    const p = make(t, { name: 'hash', key: '$arg_k', consistent: g.consistent }, serversOf(group(hash.groups, from).servers));
    p.update(B2_ID, { weight: 2 });
    assert.deepEqual(
      g.results.map((r) => ({ key: r.key, addr: pick(p, { url: `/?k=${r.key}` }) })),
      g.results,
      g.name,
    );
  }
});

test('consistent hash: servers with the same url share their points and take turns by SWRR', (t) => {
  const p = make(t, consistent, [
    { url: 'http://127.0.0.1:18181', id: 'x' },
    { url: 'http://127.0.0.1:18181', id: 'y', weight: 2 },
    { url: 'http://127.0.0.1:18183', id: 'z' },
  ]);
  const key = group(hash.groups, 'c2').results.find((r) => r.addr === '127.0.0.1:18181')!.key;
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) {
    const peer = internals(p).select(selection(p, { url: `/?k=${key}` }))!;
    ids.push(peer.id);
    finishOk(p, peer);
  }
  assert.deepEqual(ids, [...'yxyyxy']);
});

test('consistent hash: a point two servers share belongs to the one listed first, and is on the ring once (nginx sorts, then drops repeats)', (t) => {
  // 10.0.0.217:80 and 10.0.0.230:80 both place a point at 4218070947 (crc32 collision); "key289"
  // hashes just below it; the next distinct point on the ring of these three servers is 10.0.1.2:80's.
  const servers = (order: string[]): ServerOptions[] => order.map((s) => ({ url: `http://${s}`, id: s }));
  const first = (p: UpstreamPool): string => internals(p).select(selection(p, { url: '/?k=key289' }))!.id;
  assert.equal(first(make(t, consistent, servers(['10.0.0.217:80', '10.0.0.230:80', '10.0.1.2:80']))), '10.0.0.217:80');
  assert.equal(first(make(t, consistent, servers(['10.0.0.230:80', '10.0.0.217:80', '10.0.1.2:80']))), '10.0.0.230:80');
  // the owner down: the next point is 10.0.1.2's, not the repeat owned by the other server
  const down = servers(['10.0.0.217:80', '10.0.0.230:80', '10.0.1.2:80']);
  down[0]!.down = true;
  assert.equal(first(make(t, consistent, down)), '10.0.1.2:80');
});

test('consistent hash hashes the url authority as written: an explicit :80 and a different case place other points', (t) => {
  const keys = group(hash.groups, 'c3').results.map((r) => r.key);
  const map = (urls: string[]): string[] => {
    const p = make(
      t,
      consistent,
      urls.map((url) => ({ url })),
    );
    return keys.map((k) => String(p.servers.findIndex((s) => s.id === internals(p).select(selection(p, { url: `/?k=${k}` }))?.id)));
  };
  const base = map(['http://127.0.0.2:80', 'http://127.0.0.3:80', 'http://127.0.0.4:80']);
  assert.notDeepEqual(map(['http://127.0.0.2', 'http://127.0.0.3', 'http://127.0.0.4']), base);
  assert.deepEqual(
    map(['http://user:pw@127.0.0.2:80', 'http://127.0.0.3:80/prefix', 'https://127.0.0.4:80']),
    base,
    'credentials, path and scheme are not part of it',
  );
  assert.notDeepEqual(
    map(['http://Host-A:8080', 'http://host-b:8080', 'http://host-c:8080']),
    map(['http://host-a:8080', 'http://host-b:8080', 'http://host-c:8080']),
  );
});

test("ip_hash: unparsable or unix-socket client addresses hash as nginx's pseudo address 0.0.0", (t) => {
  const g = group(ipHash.groups, 'ip5');
  const p = make(t, 'ip-hash', serversOf(g.servers));
  const zero = g.results.find((r) => r.address === '0.0.0.0')!.addr;
  assert.equal(pick(p, { clientAddress: '' }), zero);
  assert.equal(pick(p, { clientAddress: '/run/app.sock' }), zero);
});

test('ip_hash: IPv6 text forms of one address hash alike (compressed, zone id)', (t) => {
  const g = group(ipHash.groups, 'ip5');
  const p = make(t, 'ip-hash', serversOf(g.servers));
  const expected = g.results.find((r) => r.address === '2001:0db8:0000:0000:0000:0000:0000:0003')!.addr;
  for (const a of ['2001:db8::3', '2001:DB8:0:0::3', '2001:db8::3%eth0', '2001:db8:0:0:0:0:0.0.0.3']) assert.equal(pick(p, { clientAddress: a }), expected, a);
});

test('ip_hash: a retry within the request continues the hash as past a down server (nginx ip3 vs ip3down)', (t) => {
  const a = group(ipHash.groups, 'ip3');
  const b = group(ipHash.groups, 'ip3down');
  const p = make(
    t,
    'ip-hash',
    serversOf(a.servers).map((s) => ({ ...s, maxFails: 0 })),
  );
  let n = 0;
  for (const r of a.results) {
    if (r.addr !== B2) continue;
    const sel = selection(p, { clientAddress: r.address });
    const first = internals(p).select(sel)!;
    assert.equal(first.name, B2);
    internals(p).finish(first, 'failed', { header: -1, response: 1, inflightDone: false }, undefined);
    const second = internals(p).select(sel)!;
    assert.equal(second.name, b.results.find((x) => x.address === r.address)!.addr, r.address);
    finishOk(p, second);
    n++;
  }
  assert.ok(n > 10);
});

test('ip_hash: fewer than two servers -> round robin; the client address comes from the exchange record', (t) => {
  const one = make(t, 'ip-hash', letters(1));
  assert.equal(pick(one, { clientAddress: '10.0.0.1' }), '127.0.0.1:19501');
  const g = group(ipHash.groups, 'ip3');
  const p = make(t, 'ip-hash', serversOf(g.servers));
  const r = g.results.find((x) => x.address === '192.168.1.10')!;
  // the socket says 127.0.0.1, the exchange (after trusted-proxy resolution) says 192.168.1.10
  const sel = selection(p, { clientAddress: r.address });
  assert.equal(sel.req?.socket.remoteAddress, r.address);
  sel.ex!.clientAddress = r.address;
  (sel.req!.socket as { remoteAddress: string }).remoteAddress = '127.0.0.1';
  assert.equal(internals(p).select(sel)?.name, r.addr);
});

test('consistent hash: a weight whose ring cannot be made (weights up to 2^53 - 1 are accepted) is refused, and the ring in use keeps serving', (t) => {
  const p = make(t, consistent, [
    { url: 'http://10.0.0.1:80', id: 'a' },
    { url: 'http://10.0.0.2:80', id: 'b' },
  ]);
  const before = pick(p, { url: '/?k=x' });
  assert.throws(() => p.update('a', { weight: 2 ** 40 }), { code: 'SWY_ERR_INVALID_OPTION', option: 'weight' });
  assert.equal(pick(p, { url: '/?k=x' }), before);
  // the refused change is not applied: the server keeps its weight, and other changes still work
  assert.equal(p.get('a')?.weight, 1);
  assert.equal(p.update('a', { weight: 3 }).weight, 3);
  // a server whose weight the ring cannot take is not added either
  assert.throws(() => p.add({ url: 'http://10.0.0.3:80', id: 'c', weight: 2 ** 40 }), { code: 'SWY_ERR_INVALID_OPTION' });
  assert.equal(p.get('c'), undefined);
  assert.deepEqual(
    p.servers.map((s) => s.id),
    ['a', 'b'],
  );
  assert.throws(
    () => createPool({ method: consistent, servers: [{ url: 'http://10.0.0.1:80', weight: Number.MAX_SAFE_INTEGER }, { url: 'http://10.0.0.2:80' }] }),
    {
      code: 'SWY_ERR_INVALID_OPTION',
    },
  );
});
