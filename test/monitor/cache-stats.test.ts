// The monitor maps a cache's statistics to NGINX Plus's snake_case names in one place (api.ts
// cacheJson, which /metrics reads too): it takes switchyard's camelCase names (as pool.stats() has
// them) and, until cache() reports those, the snake_case ones, and answers the same either way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CacheMiddleware } from '../../src/index.ts';
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

test('cacheJson: camelCase statistics (maxSize, responsesWritten, bytesWritten) come out under NGINX Plus\'s names', () => {
  const camel = {
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
  assert.deepEqual(JSON.parse(JSON.stringify(cacheJson(reporting(camel)))), NGINX_NAMES);
});

test('cacheJson: snake_case statistics (cache() today) come out the same, max_size left out when there is none', () => {
  assert.deepEqual(JSON.parse(JSON.stringify(cacheJson(reporting(NGINX_NAMES)))), NGINX_NAMES);
  const external = { ...NGINX_NAMES, size: 0, max_size: undefined };
  const { max_size: _, ...withoutMax } = NGINX_NAMES;
  assert.deepEqual(JSON.parse(JSON.stringify(cacheJson(reporting(external)))), { ...withoutMax, size: 0 });
});
