// Child process of the memory accounting test in memory.test.ts, run as `node --expose-gc`: fills a
// CacheStore's memory store the way cache() and sticky() learn do, and prints, per entry, the memory
// measured (V8 heap plus Buffer memory, after full collections) and the bytes the store counted.
import { createHash } from 'node:crypto';
import { CacheStore } from '../../src/store/index.ts';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');

/** A string of its own (not shared with a constant), as parsing a response gives. */
const own = (s: string): string => [...s].join('');

async function used(): Promise<number> {
  gc!();
  await new Promise((resolve) => setTimeout(resolve, 50));
  gc!();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const kind = process.argv[2];
const count = Number(process.argv[3] ?? 20_000);
const bodyBytes = kind === 'large' ? 16_384 : kind === 'medium' ? 1500 : 20;
const store = new CacheStore({ memory: { maxEntries: 10_000_000, maxBytes: 2 ** 40 } });
const sid = createHash('md5').update('http://127.0.0.1:8080').digest('hex');
const started = Date.now();
const keep: unknown[] = [];
const before = await used();
for (let i = 0; i < count; i++) {
  if (kind === 'session') {
    // sticky() learn: a hashed session id as the key, the server's sid (one string per server) as the value.
    await store.setText(`s:${createHash('sha256').update(`session-${i}`).digest('base64url')}`, sid, 600_000);
    continue;
  }
  // cache(): a key built from scheme, host and target; the upstream's headers; the captured body.
  const headers = [
    own('Content-Type'),
    own('text/html; charset=utf-8'),
    own('Cache-Control'),
    own('public, max-age=60'),
    own('Date'),
    own(new Date(started + i).toUTCString()),
    own('ETag'),
    own(`W/"${i.toString(16)}-5f3a9c"`),
    own('Last-Modified'),
    own(new Date(started - i).toUTCString()),
    own('Vary'),
    own('Accept-Encoding'),
  ];
  const body = Buffer.from(Buffer.allocUnsafe(bodyBytes).fill(i & 0xff));
  keep.length = 0;
  await store.set(
    `http://` + `shop.example.com:8080` + `/catalog/item?id=${i}&view=full`,
    {
      status: 200,
      headers,
      body,
      storedAt: started + i,
      meta: { expiresAt: started + 60_000 + i, swr: 0, sie: 0 },
    },
    60_000,
  );
}
const after = await used();
process.stdout.write(`${JSON.stringify({ kind, measured: (after - before) / count, counted: store.memory!.bytes / count })}\n`);
