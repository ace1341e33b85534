// limitRequests() against nginx itself: seeded sequences of requests through two limit_req zones
// (keys $arg_a and $arg_b, random bursts, nodelay), sent to a real nginx and to switchyard, on its
// own zones and on shared buckets (sync: the in-memory engine, and the Redis script on a private
// redis-server when there is one); the statuses must be the same, request by request. The zones drain at 1r/m (16 milli-requests a
// second), so the few milliseconds between the two runs never move an excess across a threshold:
// what is compared is nginx's arithmetic of burst, several zones, empty keys and uncounted rejections.
// Skipped without nginx (REQUIRE_NGINX=1 makes that a failure).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { limitRequests, SyncHandle, sync } from '../../src/index.ts';
import { MemoryHub } from '../../src/sync/transport.ts';
import { freePorts, NginxProcess, nginxAvailable, renderNginxConf } from '../differential/harness.ts';
import { fetchText } from '../helpers.ts';
import { privateRedis, redisAvailability } from '../redis.ts';
import { limited } from './support.ts';

const available = nginxAvailable();
if (available !== true && process.env.REQUIRE_NGINX === '1') throw new Error(`REQUIRE_NGINX=1 but nginx cannot run: ${available}`);
const skip = available === true ? false : available;
const redis = redisAvailability();

/** A small seeded generator (mulberry32), so a failure names a sequence that can be replayed. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  test(`seed ${seed}: the same statuses as nginx, request by request, locally and on shared buckets (sync: in memory, on Redis)`, {
    skip,
    timeout: 30_000,
  }, async (t) => {
    const r = random(seed);
    const burstA = pick(r, [0, 1, 2, 3]);
    const burstB = pick(r, [0, 1, 2]);
    const targets = Array.from({ length: 30 }, () => {
      const a = pick(r, ['', 'x', 'y']);
      const b = pick(r, ['', 'p', 'q']);
      const query = [a === '' ? '' : `a=${a}`, b === '' ? '' : `b=${b}`].filter((q) => q !== '').join('&');
      return `/t${query === '' ? '' : `?${query}`}`;
    });

    const nginx = new NginxProcess();
    t.after(() => nginx.stop());
    mkdirSync(join(nginx.dir, 'html'));
    writeFileSync(join(nginx.dir, 'html', 't'), 'ok');
    const [port] = await freePorts(1);
    const burst = (n: number): string => (n === 0 ? '' : ` burst=${n}`);
    await nginx.start(
      renderNginxConf(
        `server {
  listen 127.0.0.1:${port};
  location / {
    root {dir}/html;
    limit_req zone=A${burst(burstA)} nodelay;
    limit_req zone=B${burst(burstB)} nodelay;
  }
}`,
        'limit_req_zone $arg_a zone=A:1m rate=1r/m;\n  limit_req_zone $arg_b zone=B:1m rate=1r/m;',
      ),
      [port!],
    );
    const fromNginx: number[] = [];
    for (const target of targets) fromNginx.push((await fetchText(`http://127.0.0.1:${port}${target}`)).status);
    assert.ok(fromNginx.includes(503) && fromNginx.includes(200), 'the sequence exercises both answers');
    const handle = new SyncHandle({ transport: new MemoryHub().connect(), owned: false, namespace: 't' });
    t.after(() => handle.close());
    const engines: Array<SyncHandle | undefined> = [undefined, handle];
    if (redis.private() === false) {
      // The Redis script itself, on a private redis-server.
      const server = await privateRedis(t);
      const onRedis = sync({ redis: server.url, namespace: `nginx-${seed}` });
      t.after(() => onRedis.close());
      await onRedis.ready;
      engines.push(onRedis);
    }
    for (const shared of engines) {
      const limit = limitRequests({
        limits: [
          { key: '$arg_a', rate: '1r/m', burst: burstA, nodelay: true, name: 'A' },
          { key: '$arg_b', rate: '1r/m', burst: burstB, nodelay: true, name: 'B' },
        ],
        ...(shared === undefined ? {} : { sync: shared }),
      });
      const gw = await limited(t, limit);
      const fromSwitchyard: number[] = [];
      for (const target of targets) fromSwitchyard.push((await fetchText(`${gw.url}${target}`)).status);
      const table = targets.map((target, i) => `${target} nginx ${fromNginx[i]} switchyard ${fromSwitchyard[i]}`).join('\n');
      assert.deepEqual(
        fromSwitchyard,
        fromNginx,
        `${shared === undefined ? 'local' : shared === handle ? 'sync (memory)' : 'sync (Redis)'}, burst A=${burstA} B=${burstB}\n${table}`,
      );
    }
  });
}

/** Five requests at once to `url`: each one's status and when it ended, in whole seconds after they were sent, sorted. */
async function fiveAtOnce(url: string): Promise<string[]> {
  const start = performance.now();
  const out = await Promise.all(Array.from({ length: 5 }, () => fetchText(url).then((r) => `${r.status}@${Math.round((performance.now() - start) / 1000)}s`)));
  return out.sort();
}

for (const [name, options, directive] of [
  ['1r/s burst=3', { burst: 3 }, 'burst=3'],
  ['1r/s burst=3 delay=1', { burst: 3, delay: 1 }, 'burst=3 delay=1'],
] as const) {
  test(`five at once with ${name}: the same answers at the same seconds as nginx, on the real clock`, { skip, timeout: 30_000 }, async (t) => {
    const nginx = new NginxProcess();
    t.after(() => nginx.stop());
    mkdirSync(join(nginx.dir, 'html'));
    writeFileSync(join(nginx.dir, 'html', 't'), 'ok');
    const [port] = await freePorts(1);
    await nginx.start(
      renderNginxConf(
        `server {\n  listen 127.0.0.1:${port};\n  location / {\n    root {dir}/html;\n    limit_req zone=one ${directive};\n  }\n}`,
        'limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s;',
      ),
      [port!],
    );
    const gw = await limited(t, limitRequests({ key: '$remote_addr', rate: '1r/s', ...options }));
    const [fromNginx, fromSwitchyard] = [await fiveAtOnce(`http://127.0.0.1:${port}/t`), await fiveAtOnce(`${gw.url}/t`)];
    t.diagnostic(`nginx ${fromNginx.join(' ')}; switchyard ${fromSwitchyard.join(' ')}`);
    assert.deepEqual(fromSwitchyard, fromNginx);
  });
}
