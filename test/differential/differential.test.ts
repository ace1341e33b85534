// The differential suite: every case of cases.ts run by real nginx and by a switchyard gateway
// (harness.ts), judged against deviations.ts. A case agrees, or differs as a documented deviation
// (DEVIATIONS) or as an issue item not yet fixed (KNOWN_FAILING); anything else fails, and so does
// an entry of either list whose case now agrees. Skipped when nginx is not installed, unless
// REQUIRE_NGINX=1 (CI).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { CASES } from './cases.ts';
import { DEVIATIONS, KNOWN_FAILING } from './deviations.ts';
import {
  asCurrent,
  differences,
  freePorts,
  NginxProcess,
  nginxAvailable,
  nginxVersion,
  normalizer,
  RecordingUpstream,
  renderNginxConf,
  renderNginxServers,
  runSide,
  startGateway,
} from './harness.ts';
import { judge, type Verdict } from './judge.ts';

const REQUIRE_NGINX = process.env.REQUIRE_NGINX === '1';
const available = nginxAvailable();
if (available !== true && REQUIRE_NGINX) throw new Error(`REQUIRE_NGINX=1 but nginx cannot run: ${available}`);
const skip = available === true ? false : available;
const version = available === true ? nginxVersion() : '0';

/** Each case's differences, one line per difference and step (empty: they agree). */
const results = new Map<string, string[]>();

describe('differential: nginx and switchyard from one description per case', { skip, timeout: 120_000 }, () => {
  const nginx = new NginxProcess();
  const upstreams = new Map<string, RecordingUpstream>();

  before(async () => {
    const started = performance.now();
    for (const c of CASES) {
      const up = new RecordingUpstream(c.upstream);
      await up.start();
      upstreams.set(c.id, up);
    }
    let ports: number[] = [];
    try {
      // Ports taken after the upstreams, which would otherwise take those just freed; another
      // process may still take one before nginx binds it: then again with new ports.
      for (let attempt = 1; ; attempt++) {
        ports = await freePorts(CASES.length);
        try {
          await nginx.start(nginxConf(ports), ports);
          break;
        } catch (e) {
          await nginx.stop(true);
          if (attempt === 3 || !/bind\(\)/.test(String(e))) throw e;
        }
      }
      for (const [i, c] of CASES.entries()) {
        const up = upstreams.get(c.id)!;
        const a = await runSide(c, ports[i]!, up);
        const gw = await startGateway(c, up.port);
        let diffs: string[];
        if (gw.error !== undefined) diffs = [gw.error];
        else {
          try {
            const b = await runSide(c, gw.port, up);
            const na = normalizer(ports[i]!, up.port);
            const nb = normalizer(gw.port, up.port);
            diffs = c.steps.flatMap((step, k) =>
              differences(c, step, asCurrent(c, a[k]!, version), b[k]!, na, nb).map((d) => (c.steps.length > 1 ? `step ${k + 1}: ${d}` : d)),
            );
          } finally {
            await gw.close();
          }
        }
        results.set(c.id, diffs);
        if (process.env.DIFFERENTIAL_VERBOSE === '1') console.log(`  ${c.id}: nginx ${a.map((o) => o.status || o.error).join(', ')}`);
      }
    } finally {
      await nginx.stop();
      for (const up of upstreams.values()) await up.close();
    }
    const took = Math.round(performance.now() - started);
    const count = (v: string) => CASES.filter((c) => verdict(c.id) === v).length;
    console.log(
      `differential (nginx ${version}): ${CASES.length} cases, ${count('agree')} agree, ${count('documented')} documented, ${count('known failing')} known failing (${took} ms)`,
    );
    if (process.env.DIFFERENTIAL_VERBOSE === '1') for (const c of CASES) for (const d of results.get(c.id) ?? []) console.log(`  ${c.id}: ${d}`);
  });

  after(() => nginx.stop());

  /** nginx.conf for every case: case i listens on ports[i] and proxies to its recording upstream. */
  function nginxConf(ports: number[]): string {
    const http: string[] = [];
    const servers: string[] = [];
    for (const [i, c] of CASES.entries()) {
      const up = upstreams.get(c.id)!;
      let pass = `http://127.0.0.1:${up.port}`;
      if (c.config?.pool === 'named') {
        http.push(`  upstream backend${i} { server 127.0.0.1:${up.port}; }`);
        pass = `http://backend${i}`;
      }
      if (c.config?.cache !== undefined) http.push(`  proxy_cache_path {dir}/cache${i} keys_zone=zone${i}:1m;`);
      servers.push(`  # ${c.id}\n${renderNginxServers(c, ports[i]!, pass, `zone${i}`)}`);
    }
    return renderNginxConf(servers.join('\n'), http.join('\n'));
  }

  it('lists only cases that exist, each in one list, with a reason and a README pointer that is there', () => {
    const ids = new Set(CASES.map((c) => c.id));
    assert.equal(ids.size, CASES.length, 'case ids are unique');
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    for (const [id, e] of Object.entries(DEVIATIONS)) {
      assert.ok(ids.has(id), `DEVIATIONS names ${id}, which is no case`);
      assert.ok(!(id in KNOWN_FAILING), `${id} is in both DEVIATIONS and KNOWN_FAILING`);
      assert.ok(e.reason.length > 0 && e.shows.length > 0, `${id}: a reason and what it shows`);
      assert.ok(readme.includes(e.readme), `${id}: the README no longer says ${JSON.stringify(e.readme)}`);
    }
    for (const [id, e] of Object.entries(KNOWN_FAILING)) {
      assert.ok(ids.has(id), `KNOWN_FAILING names ${id}, which is no case`);
      assert.ok(e.item.length > 0 && e.shows.length > 0, `${id}: the issue item and what it shows`);
    }
  });

  for (const c of CASES) {
    it(`${c.id} (${c.from})`, () => {
      const v = judgement(c.id);
      if ('error' in v) assert.fail(v.error);
    });
  }
});

function judgement(id: string): Verdict {
  const diffs = results.get(id);
  return diffs === undefined ? { error: `${id} did not run` } : judge(id, diffs, DEVIATIONS, KNOWN_FAILING);
}

function verdict(id: string): string | undefined {
  const v = judgement(id);
  return 'verdict' in v ? v.verdict : undefined;
}
