// sticky() learn mode on a pool shared through sync() (issue 14): sessions go to the sync's Redis
// by default, so a session learned on one instance is followed on every other.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { balance, chain, sticky, sync, type UpstreamPool } from '../../src/index.ts';
import { fetchText, gateway, poolOf, until, upstream } from '../helpers.ts';
import { redisAvailability, REDIS_URL, type RedisAdmin } from '../redis.ts';
import { createClient } from '@redis/client';

const redis = redisAvailability();

/** An upstream answering with its name; `?set=V` makes the one named by `on` set `sid=V`. */
async function backend(t: TestContext, name: string) {
  return upstream(t, name, (req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.searchParams.get('on') === name) res.setHeader('set-cookie', `sid=${u.searchParams.get('set')}; Path=/`);
    res.end(name);
  });
}

async function instance(t: TestContext, namespace: string, servers: Record<string, { url: string }>): Promise<{ url: string; pool: UpstreamPool }> {
  const handle = sync({ redis: REDIS_URL, namespace });
  t.after(() => handle.close());
  await handle.ready;
  const pool = poolOf(t, servers, { name: 'app', sync: handle });
  const st = sticky(pool, { learn: { create: { cookie: 'sid' }, lookup: { cookie: 'sid' } } });
  t.after(() => st.close());
  const gw = await gateway(t, chain(st, balance(pool)));
  return { url: gw.url, pool };
}

test('a session learned on one instance is followed by every instance (the sync Redis is the default store)', async (t) => {
  const skip = redis.shared();
  if (skip) return t.skip(skip);
  const namespace = `swy-test-sticky-${randomUUID()}`;
  const admin = createClient({ url: REDIS_URL }) as unknown as RedisAdmin & { connect(): Promise<unknown> };
  await admin.connect();
  t.after(async () => {
    const keys: string[] = [];
    for await (const k of admin.scanIterator({ MATCH: `${namespace}:*`, COUNT: 100 })) keys.push(...(Array.isArray(k) ? k : [k]));
    if (keys.length > 0) await admin.del(keys);
    admin.destroy();
  });
  const servers = { one: await backend(t, 'one'), two: await backend(t, 'two') };
  const a = await instance(t, namespace, servers);
  const b = await instance(t, namespace, servers);
  // Learn `sid=S` on server two through instance a.
  let learned = false;
  for (let i = 0; i < 4 && !learned; i++) learned = (await fetchText(`${a.url}/login?set=S&on=two`)).body === 'two';
  assert.ok(learned, 'a request reached server two');
  // The session is written to the store off the request's way: wait until Redis has it.
  const sessionKeys = async (): Promise<string[]> => {
    const found: string[] = [];
    for await (const k of admin.scanIterator({ MATCH: `${namespace}:sticky:app*`, COUNT: 100 })) found.push(...(Array.isArray(k) ? k : [k]));
    return found;
  };
  await until(async () => (await sessionKeys()).length >= 1, 5000, `a session key under ${namespace}:sticky:app`);
  // Instance b never saw the session, yet sends it to server two every time.
  for (let i = 0; i < 6; i++) {
    const r = await fetchText(`${b.url}/`, { headers: { cookie: 'sid=S' } });
    assert.equal(r.body, 'two', `request ${i} through instance b`);
  }
  // The session is stored under the sync namespace.
  assert.ok((await sessionKeys()).length >= 1, `a session key under ${namespace}:sticky:app`);
});
