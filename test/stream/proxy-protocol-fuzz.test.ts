// The PROXY protocol reader on generated input (fast-check, fixed seed): it never throws, a valid
// header cut at any point says `more` until it is whole and then gives back its addresses, and any
// bytes after it are left alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseProxyHeader, proxyHeader, type ProxyAddresses } from '../../src/stream/proxy-protocol.ts';

const SEED = Number(process.env.FUZZ_SEED ?? 19);

test('parseProxyHeader never throws on arbitrary bytes, nor on headers with corrupted bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (bytes, asV2) => {
      const data = Buffer.from(bytes);
      // half the time, start like a real header so the deeper paths are reached
      const prefix = asV2 ? Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]) : Buffer.from('PROXY ');
      for (const input of [data, Buffer.concat([prefix, data])]) {
        const r = parseProxyHeader(input);
        assert.ok(['more', 'invalid', 'done'].includes(r.state));
        if (r.state === 'done') assert.ok(r.length > 0 && r.length <= input.length);
      }
    }),
    { seed: SEED, numRuns: 2000 },
  );
});

const address4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
const address6 = fc.ipV6().map((a) => new URL(`http://[${a}]`).hostname.slice(1, -1));

test('a valid header cut anywhere: more, then done with its addresses; the rest stays', () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.tuple(address4, address4), fc.tuple(address6, address6)),
      fc.nat(65535),
      fc.nat(65535),
      fc.constantFrom('v1' as const, 'v2' as const),
      fc.uint8Array({ maxLength: 40 }),
      fc.nat(),
      ([src, dst], sp, dp, version, rest, cutAt) => {
        const a: ProxyAddresses = { sourceAddress: src, destinationAddress: dst, sourcePort: sp, destinationPort: dp };
        const header = proxyHeader(version, a);
        const whole = Buffer.concat([header, Buffer.from(rest)]);
        const cut = cutAt % header.length;
        assert.equal(parseProxyHeader(whole.subarray(0, cut)).state, 'more');
        const r = parseProxyHeader(whole);
        assert.equal(r.state, 'done');
        if (r.state !== 'done') return;
        assert.equal(r.length, header.length);
        // IPv4-mapped IPv6 addresses are sent as IPv4 (the header names the address's own family)
        const plain = (x: string): string => (x.startsWith('::ffff:') && /^[\d.]+$/.test(x.slice(7)) ? x.slice(7) : x);
        assert.deepEqual(r.addresses, { ...a, sourceAddress: plain(src), destinationAddress: plain(dst) });
      },
    ),
    { seed: SEED, numRuns: 1000 },
  );
});
