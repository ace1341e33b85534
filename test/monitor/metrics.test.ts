// monitor(): the Prometheus text exposition format (0.0.4) at /metrics, parsed strictly and checked
// against the JSON API, pool.stats() and cache.stats() after live traffic through balance() and cache().
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { healthCheck } from '../../src/index.ts';
import { PROMETHEUS_CONTENT_TYPE, STATE_NUMBERS } from '../../src/monitor/prometheus.ts';
import { until, upstream } from '../helpers.ts';
import { call, getJson, startMonitorGateway, traffic, type MonitorGateway } from './support.ts';

// ---- a small strict parser of the text format, version 0.0.4 ----

type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  family: string;
}
interface Family {
  name: string;
  type: MetricType | undefined;
  help: string | undefined;
  samples: Sample[];
}
interface Exposition {
  families: Map<string, Family>;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

function parseValue(text: string, line: number): number {
  if (text === '+Inf' || text === 'Inf') return Number.POSITIVE_INFINITY;
  if (text === '-Inf') return Number.NEGATIVE_INFINITY;
  if (text === 'NaN') return Number.NaN;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) throw new Error(`line ${line}: bad value ${JSON.stringify(text)}`);
  return Number(text);
}

function unescapeHelp(text: string, line: number): string {
  return text.replace(/\\(.)?/g, (_m, c: string | undefined) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new Error(`line ${line}: bad escape in HELP`);
  });
}

/** Parses the whole exposition; throws on anything the format does not allow. */
function parseExposition(text: string): Exposition {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a line feed');
  const lines = text.slice(0, -1).split('\n');
  const families = new Map<string, Family>();
  const samples: Sample[] = [];
  const series = new Set<string>();
  let current: string | undefined;
  const closed = new Set<string>();
  const enter = (family: string, n: number): void => {
    if (current === family) return;
    if (closed.has(family)) throw new Error(`line ${n}: family ${family} is not contiguous`);
    if (current !== undefined) closed.add(current);
    current = family;
  };
  const familyOf = (name: string, labels: Record<string, string>, n: number): string => {
    const own = families.get(name);
    if (own?.type !== undefined && own.type !== 'histogram' && own.type !== 'summary') return name;
    for (const suffix of ['_bucket', '_sum', '_count']) {
      if (!name.endsWith(suffix)) continue;
      const base = families.get(name.slice(0, -suffix.length));
      if (base?.type === 'histogram') {
        if (suffix === '_bucket' && labels.le === undefined) throw new Error(`line ${n}: ${name} without le`);
        if (suffix !== '_bucket' && labels.le !== undefined) throw new Error(`line ${n}: ${name} with le`);
        return base.name;
      }
      if (base?.type === 'summary' && suffix !== '_bucket') return base.name;
    }
    if (own?.type === 'histogram' || own?.type === 'summary') throw new Error(`line ${n}: bare sample ${name} of a ${own.type}`);
    throw new Error(`line ${n}: sample ${name} belongs to no declared family (no # TYPE)`);
  };
  lines.forEach((line, i) => {
    const n = i + 1;
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([^ ]+)(?: (.*))?$/.exec(line);
      if (m === null) {
        if (/^#\s*(HELP|TYPE)\b/.test(line)) throw new Error(`line ${n}: malformed ${line}`);
        return; // a plain comment
      }
      const [, kind, name, rest] = m;
      if (!NAME.test(name!) || NAME.exec(name!)![0] !== name) throw new Error(`line ${n}: bad metric name ${name}`);
      const f = families.get(name!) ?? { name: name!, type: undefined, help: undefined, samples: [] };
      if (f.samples.length > 0) throw new Error(`line ${n}: ${kind} of ${name} after its samples`);
      if (kind === 'HELP') {
        if (f.help !== undefined) throw new Error(`line ${n}: second HELP for ${name}`);
        f.help = unescapeHelp(rest ?? '', n);
      } else {
        if (f.type !== undefined) throw new Error(`line ${n}: second TYPE for ${name}`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest ?? '')) throw new Error(`line ${n}: bad type ${rest}`);
        f.type = rest as MetricType;
      }
      families.set(name!, f);
      enter(name!, n);
      return;
    }
    // a sample: name{labels} value [timestamp]
    const nm = NAME.exec(line);
    if (nm === null) throw new Error(`line ${n}: not a comment, sample or blank: ${JSON.stringify(line)}`);
    const name = nm[0];
    let pos = name.length;
    const labels: Record<string, string> = {};
    if (line[pos] === '{') {
      pos++;
      while (line[pos] !== '}') {
        const ln = LABEL_NAME.exec(line.slice(pos));
        if (ln === null) throw new Error(`line ${n}: bad label name at ${pos}`);
        pos += ln[0].length;
        if (line[pos] !== '=' || line[pos + 1] !== '"') throw new Error(`line ${n}: expected ="`);
        pos += 2;
        let value = '';
        for (;;) {
          const c = line[pos];
          if (c === undefined) throw new Error(`line ${n}: unterminated label value`);
          if (c === '"') break;
          if (c === '\\') {
            const e = line[pos + 1];
            if (e === '\\') value += '\\';
            else if (e === '"') value += '"';
            else if (e === 'n') value += '\n';
            else throw new Error(`line ${n}: bad escape \\${e} in a label value`);
            pos += 2;
            continue;
          }
          value += c;
          pos++;
        }
        pos++;
        if (Object.hasOwn(labels, ln[0])) throw new Error(`line ${n}: label ${ln[0]} twice`);
        labels[ln[0]] = value;
        if (line[pos] === ',') pos++;
        else if (line[pos] !== '}') throw new Error(`line ${n}: expected , or } at ${pos}`);
      }
      pos++;
    }
    if (line[pos] !== ' ') throw new Error(`line ${n}: expected a space before the value`);
    const parts = line.slice(pos + 1).split(' ');
    if (parts.length > 2 || parts[0] === '') throw new Error(`line ${n}: bad value part ${JSON.stringify(line.slice(pos))}`);
    if (parts.length === 2 && !/^-?\d+$/.test(parts[1]!)) throw new Error(`line ${n}: bad timestamp`);
    const value = parseValue(parts[0]!, n);
    const family = familyOf(name, labels, n);
    enter(family, n);
    const key = `${name}{${Object.keys(labels)
      .sort()
      .map((k) => `${k}=${JSON.stringify(labels[k])}`)
      .join(',')}}`;
    if (series.has(key)) throw new Error(`line ${n}: duplicate series ${key}`);
    series.add(key);
    const s = { name, labels, value, family };
    families.get(family)!.samples.push(s);
    samples.push(s);
  });
  return { families, samples };
}

// ---- helpers ----

async function scrape(gw: MonitorGateway): Promise<Exposition & { text: string }> {
  const r = await call(gw.metrics);
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  return { ...parseExposition(r.text), text: r.text };
}

function one(e: Exposition, name: string, labels: Record<string, string>): number {
  const found = e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(found.length, 1, `exactly one ${name} ${JSON.stringify(labels)}, found ${found.length}`);
  return found[0]!.value;
}

// ---- the parser itself must be strict, or the tests below prove nothing ----

test('the test parser rejects what the format forbids', () => {
  const ok = '# HELP x_total X.\n# TYPE x_total counter\nx_total{a="q\\"\\\\\\n"} 1\n';
  const parsed = parseExposition(ok);
  assert.deepEqual(parsed.samples[0]!.labels, { a: 'q"\\\n' });
  const bad = [
    'x_total 1\n', // no TYPE
    '# TYPE x counter\nx{a="b} 1\n', // unterminated
    '# TYPE x counter\nx{a="b\\q"} 1\n', // bad escape
    '# TYPE x counter\nx 1\nx 2\n', // duplicate series
    '# TYPE x counter\n# TYPE y gauge\nx 1\ny 1\n', // x after y was declared... x sample after y entered
    '# TYPE x counter\nx 1\n# TYPE y gauge\ny 1\nx{a="1"} 1\n', // non-contiguous
    '# TYPE h histogram\nh_bucket 1\n', // bucket without le
    '# TYPE x counter\nx one\n', // bad value
    '# TYPE x counter\nx 1', // no final line feed
    '# TYPE x counter\n x 1\n', // junk
  ];
  for (const text of bad) assert.throws(() => parseExposition(text), Error, JSON.stringify(text));
});

// ---- /metrics ----

test('/metrics: strict 0.0.4 text; per-server requests and responses by class equal the JSON API', async (t) => {
  const gw = await startMonitorGateway(t, {
    upstreams: {
      a: undefined,
      b: (_req, res) => ((res.statusCode = 500), res.end('boom')),
      c: (req, res) => ((res.statusCode = req.url === '/missing' ? 404 : 302), res.setHeader('location', '/'), res.end()),
    },
    dead: 1,
    cache: { valid: '1m', name: 'pages' },
  });
  for (let i = 0; i < 4; i++) await traffic(gw.url, 3, `/p${i}`);
  await traffic(gw.url, 3, '/missing');
  assert.equal(PROMETHEUS_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
  const e = await scrape(gw);
  for (const f of e.families.values()) {
    assert.ok(f.type !== undefined, `${f.name} has a TYPE`);
    assert.ok(f.help !== undefined && f.help.length > 0, `${f.name} has a HELP`);
  }
  assert.equal(one(e, 'switchyard_up', {}), 1);
  const u = await getJson(`${gw.api}/http/upstreams/backend`);
  assert.equal(u.peers.length, 4);
  let total = 0;
  for (const p of u.peers) {
    const labels = { upstream: 'backend', id: p.id, server: p.name };
    assert.equal(one(e, 'switchyard_upstream_server_requests_total', labels), p.requests, `requests of ${p.id}`);
    total += p.requests;
    for (const cls of ['1xx', '2xx', '3xx', '4xx', '5xx']) {
      assert.equal(one(e, 'switchyard_upstream_server_responses_total', { ...labels, code: cls }), p.responses[cls], `${cls} of ${p.id}`);
    }
    assert.equal(one(e, 'switchyard_upstream_server_fails_total', labels), p.fails);
    assert.equal(one(e, 'switchyard_upstream_server_unavail_total', labels), p.unavail);
    assert.equal(one(e, 'switchyard_upstream_server_received_bytes_total', labels), p.received);
    assert.equal(one(e, 'switchyard_upstream_server_sent_bytes_total', labels), p.sent);
    assert.equal(one(e, 'switchyard_upstream_server_weight', labels), p.weight);
    assert.equal(one(e, 'switchyard_upstream_server_state', labels), STATE_NUMBERS[p.state as keyof typeof STATE_NUMBERS]);
  }
  // 4 misses + 1 uncached 404 path (3 requests) went upstream, plus one failed attempt on the dead server
  assert.equal(total, 4 + 3 + 1);
  const byId = Object.fromEntries(u.peers.map((p: any) => [p.id, p]));
  assert.ok(byId.b.responses['5xx'] > 0 && byId.a.responses['2xx'] > 0, JSON.stringify(u.peers.map((p: any) => [p.id, p.responses])));
  assert.equal(byId.dead1.fails, 1);
  assert.equal(one(e, 'switchyard_upstream_server_state', { id: 'dead1' }), 4);
  // the gateway's own counters: 15 proxied requests and this scrape
  assert.equal(one(e, 'switchyard_http_requests_total', {}), 15 + 1);
  assert.equal(one(e, 'switchyard_connections_accepted_total', {}), 16, 'one connection per request (agent: false)');
  assert.equal(one(e, 'switchyard_http_requests_current', {}), 1);
  // HEAD: the same headers, no body
  const head = await call(gw.metrics, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.text, '');
  assert.equal(head.headers['content-type'], PROMETHEUS_CONTENT_TYPE);
});

test('/metrics: state gauge is 1 up, 2 draining, 3 down, 4 unavail, 5 checking, 6 unhealthy', async (t) => {
  let release: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  const gw = await startMonitorGateway(t, {
    upstreams: {
      a: undefined,
      b: undefined,
      c: undefined,
      h: (req, res) => {
        if (req.url === '/hc') void held.then(() => res.end('ok'));
        else res.end('h');
      },
      sick: (_req, res) => ((res.statusCode = 503), res.end('sick')),
    },
    dead: 1,
    write: () => true,
  });
  const state = async (): Promise<Record<string, number>> => {
    const e = await scrape(gw);
    return Object.fromEntries(e.samples.filter((s) => s.name === 'switchyard_upstream_server_state').map((s) => [s.labels.id!, s.value]));
  };
  assert.deepEqual(await state(), { a: 1, b: 1, c: 1, h: 1, sick: 1, dead1: 1 });
  assert.equal((await call(`${gw.api}/http/upstreams/backend/servers/b`, { method: 'PATCH', json: { drain: true } })).status, 200);
  assert.equal((await call(`${gw.api}/http/upstreams/backend/servers/c`, { method: 'PATCH', json: { down: true } })).status, 200);
  await traffic(gw.url, 6); // reaches the dead server once: unavail
  const s1 = await state();
  assert.equal(s1.a, 1);
  assert.equal(s1.b, 2);
  assert.equal(s1.c, 3);
  assert.equal(s1.dead1, 4);
  // a health check: `sick` fails it (unhealthy); `h` answers its probe late (checking while mandatory and pending)
  const hc = healthCheck(gw.pool, { uri: '/hc', interval: '1h', mandatory: true, timeout: '10s' });
  t.after(() => hc.stop());
  const probing = hc.check();
  await new Promise((r) => setTimeout(r, 100));
  const s2 = await state();
  assert.equal(s2.h, 5, `h while its first mandatory probe is pending: ${JSON.stringify(s2)}`);
  assert.equal(s2.sick, 6, `sick after a failed probe: ${JSON.stringify(s2)}`);
  assert.equal(s2.c, 3, 'down wins over checks');
  release();
  await probing;
  const s3 = await state();
  assert.equal(s3.h, 1);
  assert.equal(s3.sick, 6);
  // the JSON API agrees, and the numbers are the exported STATE_NUMBERS
  const u = await getJson(`${gw.api}/http/upstreams/backend`);
  for (const p of u.peers) assert.equal(s3[p.id], STATE_NUMBERS[p.state as keyof typeof STATE_NUMBERS], p.id);
  assert.deepEqual({ ...STATE_NUMBERS }, { up: 1, draining: 2, down: 3, unavail: 4, checking: 5, unhealthy: 6 });
});

test('/metrics: the response time histogram is cumulative and ends with le="+Inf" equal to _count', async (t) => {
  const gw = await startMonitorGateway(t, {
    upstreams: {
      fast: undefined,
      slow: (_req, res) => void setTimeout(() => res.end('slow'), 30),
    },
  });
  await traffic(gw.url, 8);
  // An attempt is recorded as its response ends, which may be just after the client has it.
  const recorded = async (): Promise<number> =>
    ((await getJson(`${gw.api}/http/upstreams/backend`)).peers as Array<{ response_time_hist: { count: number } }>).reduce(
      (n, p) => n + p.response_time_hist.count,
      0,
    );
  await until(async () => (await recorded()) === 8, 3000, 'the 8 attempts recorded');
  const e = await scrape(gw);
  const f: Family | undefined = e.families.get('switchyard_upstream_server_response_time_seconds');
  assert.ok(f !== undefined);
  const histSamples: Sample[] = f.samples;
  assert.equal(f.type, 'histogram');
  const u = await getJson(`${gw.api}/http/upstreams/backend`);
  for (const p of u.peers) {
    const labels = { upstream: 'backend', id: p.id, server: p.name };
    const buckets: Sample[] = histSamples.filter((s) => s.name === 'switchyard_upstream_server_response_time_seconds_bucket' && s.labels.id === p.id);
    const les: string[] = buckets.map((b) => b.labels.le!);
    assert.deepEqual(les, ['0.005', '0.01', '0.025', '0.05', '0.075', '0.1', '0.25', '0.5', '0.75', '1', '2.5', '5', '7.5', '10', '+Inf']);
    const bounds = les.map((le) => (le === '+Inf' ? Infinity : Number(le)));
    for (let i = 1; i < buckets.length; i++) {
      assert.ok(bounds[i]! > bounds[i - 1]!, 'le increases');
      assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `cumulative at le=${les[i]}`);
    }
    const count = one(e, 'switchyard_upstream_server_response_time_seconds_count', labels);
    assert.equal(buckets.at(-1)!.value, count);
    assert.equal(count, p.response_time_hist.count);
    assert.equal(count, 4);
    assert.equal(one(e, 'switchyard_upstream_server_response_time_seconds_sum', labels), p.response_time_hist.sum / 1000);
    // each cumulative bucket equals the sum of the JSON API's per-bucket counts up to it
    const keys = Object.keys(p.response_time_hist.buckets);
    let running = 0;
    keys.forEach((k, i) => {
      running += p.response_time_hist.buckets[k];
      assert.equal(buckets[i]!.value, running, `bucket ${k} of ${p.id}`);
    });
  }
  // the slow server's 30 ms responses are not in the 25 ms bucket
  assert.equal(one(e, 'switchyard_upstream_server_response_time_seconds_bucket', { id: 'slow', le: '0.025' }), 0);
  assert.equal(one(e, 'switchyard_upstream_server_response_time_seconds_bucket', { id: 'slow', le: '0.1' }), 4);
  assert.ok(one(e, 'switchyard_upstream_server_response_time_seconds_sum', { id: 'slow' }) >= 0.12);
});

test('/metrics: cache counters match cache.stats()', async (t) => {
  const gw = await startMonitorGateway(t, { upstreams: { a: undefined }, cache: { valid: '1m', name: 'pages' } });
  await traffic(gw.url, 4, '/x');
  await traffic(gw.url, 2, '/y');
  await call(`${gw.url}/z`, { method: 'POST', body: 'q' });
  const stats = gw.cache!.stats();
  assert.equal(stats.miss.responses, 2);
  assert.equal(stats.hit.responses, 4);
  const e = await scrape(gw);
  for (const status of ['hit', 'stale', 'updating', 'revalidated', 'miss', 'expired', 'bypass'] as const) {
    assert.equal(one(e, 'switchyard_cache_responses_total', { cache: 'pages', status }), stats[status].responses, `${status} responses`);
    assert.equal(one(e, 'switchyard_cache_bytes_total', { cache: 'pages', status }), stats[status].bytes, `${status} bytes`);
  }
  for (const status of ['miss', 'expired', 'bypass'] as const) {
    assert.equal(one(e, 'switchyard_cache_written_responses_total', { cache: 'pages', status }), stats[status].responsesWritten);
  }
  assert.equal(one(e, 'switchyard_cache_written_responses_total', { cache: 'pages', status: 'miss' }), 2);
  assert.equal(one(e, 'switchyard_cache_size_bytes', { cache: 'pages' }), stats.size);
  assert.ok(stats.size > 0);
  assert.ok(one(e, 'switchyard_cache_bytes_total', { cache: 'pages', status: 'hit' }) >= 4);
  // the JSON API shows the same
  const json = await getJson(`${gw.api}/http/caches/pages`);
  assert.equal(json.hit.responses, 4);
  assert.equal(json.miss.responses_written, 2);
});

test('/metrics: label values with quotes, backslashes and line feeds are escaped', async (t) => {
  const a = await upstream(t, 'a');
  const weird = 'we"ird\\name';
  const oddId = 'id "one"\\\nsecond line';
  const gw = await startMonitorGateway(t, {
    upstreams: {},
    servers: () => [{ url: a.url, id: oddId }],
    pool: { name: weird },
    cache: { valid: '1m', name: 'c"a\\che' },
  });
  await traffic(gw.url, 3);
  const r = await call(gw.metrics);
  assert.ok(r.text.includes('upstream="we\\"ird\\\\name"'), 'the raw text escapes " and \\');
  assert.ok(r.text.includes('id="id \\"one\\"\\\\\\nsecond line"'), 'the raw text escapes a line feed as \\n');
  const e = parseExposition(r.text);
  // one miss went upstream; the two hits did not
  assert.equal(one(e, 'switchyard_upstream_server_requests_total', { upstream: weird, id: oddId }), 1);
  assert.equal(one(e, 'switchyard_cache_responses_total', { cache: 'c"a\\che', status: 'miss' }), 1);
  assert.equal(one(e, 'switchyard_cache_responses_total', { cache: 'c"a\\che', status: 'hit' }), 2);
  // and the JSON API finds the pool by its encoded name
  const u = await call(`${gw.api}/http/upstreams/${encodeURIComponent(weird)}`);
  assert.equal(u.status, 200);
  assert.equal(u.body.peers[0].id, oddId);
});
