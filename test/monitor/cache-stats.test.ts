// The monitor maps a cache's statistics to NGINX Plus's snake_case names in one place (api.ts
// cacheJson, which /metrics reads too), from switchyard's camelCase names (as cache.stats() and
// pool.stats() have them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cache, type CacheMiddleware } from '../../src/index.ts';
import { cacheJson } from '../../src/monitor/api.ts';

/** Something with a cache's stats(), reporting `stats`. */
function reporting(stats: unknown): CacheMiddleware {
  return Object.assign(() => undefined, { stats: () => stats }) as unknown as CacheMiddleware;
}

const counter = (n: number) => ({ responses: n, bytes: n * 10 });

const NGINX_NAMES = {
  size: 2048,
  max_size: 4096,
  cold: false,
  hit: counter(1),
  stale: counter(2),
  updating: counter(3),
  revalidated: counter(4),
  miss: { ...counter(5), responses_written: 4, bytes_written: 40 },
  expired: { ...counter(6), responses_written: 5, bytes_written: 50 },
  bypass: { ...counter(7), responses_written: 0, bytes_written: 0 },
};

const CAMEL_NAMES = {
  size: 2048,
  maxSize: 4096,
  cold: false,
  hit: counter(1),
  stale: counter(2),
  updating: counter(3),
  revalidated: counter(4),
  miss: { ...counter(5), responsesWritten: 4, bytesWritten: 40 },
  expired: { ...counter(6), responsesWritten: 5, bytesWritten: 50 },
  bypass: { ...counter(7), responsesWritten: 0, bytesWritten: 0 },
};

test("cacheJson: camelCase statistics (maxSize, responsesWritten, bytesWritten) come out under NGINX Plus's names", () => {
  assert.deepEqual(JSON.parse(JSON.stringify(cacheJson(reporting(CAMEL_NAMES)))), NGINX_NAMES);
});

test('cacheJson: max_size is left out when the store has none (an external store)', () => {
  const external = { ...CAMEL_NAMES, size: 0, maxSize: undefined };
  const { max_size: _, ...withoutMax } = NGINX_NAMES;
  assert.deepEqual(JSON.parse(JSON.stringify(cacheJson(reporting(external)))), { ...withoutMax, size: 0 });
});

test("cache.stats() reports camelCase names, and the monitor NGINX Plus's", async (t) => {
  const mw = cache({ valid: '1m' });
  t.after(() => mw.close());
  const s = mw.stats();
  assert.deepEqual(Object.keys(s.miss), ['responses', 'bytes', 'responsesWritten', 'bytesWritten']);
  assert.ok('maxSize' in s && !('max_size' in s));
  const json = cacheJson(mw);
  assert.equal(json.max_size, s.maxSize);
  assert.deepEqual(Object.keys(json.miss), ['responses', 'bytes', 'responses_written', 'bytes_written']);
});
