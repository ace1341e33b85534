// Summarizes a V8 .cpuprofile (from `node bench/run.ts --cpu-prof` or `node --cpu-prof`):
// where the time went, by function (self and inclusive) and by area
// (switchyard's files, Node's internals, each package, GC, idle).
//
//   node bench/profile.ts bench/results/profiles/switchyard-node.cpuprofile [--top 25]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string' } } });
const file = positionals[0];
if (file === undefined) {
  console.error('usage: node bench/profile.ts <file.cpuprofile> [--top 25]');
  process.exit(2);
}
const top = Number(values.top ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;

const byId = new Map<number, ProfileNode>();
const parent = new Map<number, number>();
for (const n of profile.nodes) {
  byId.set(n.id, n);
  for (const c of n.children ?? []) parent.set(c, n.id);
}

/** A short location: `src/balance/index.ts:120`, `node:_http_server:210`, `fastify/lib/route.js:40`. */
function where(f: CallFrame): string {
  const url = f.url;
  if (url === '') return '';
  const line = f.lineNumber + 1;
  const nm = url.lastIndexOf('/node_modules/');
  if (nm !== -1) return `${url.slice(nm + 14)}:${line}`;
  const src = url.search(/\/(src|bench)\//);
  if (src !== -1) return `${url.slice(src + 1)}:${line}`;
  return `${url.replace(/^file:\/\//, '')}:${line}`;
}

function area(f: CallFrame): string {
  const url = f.url;
  if (url === '') {
    if (f.functionName.startsWith('(')) return f.functionName;
    return '(native / V8 builtins)';
  }
  if (url.startsWith('node:')) return 'node internals';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm !== -1) {
    const rest = url.slice(nm + 14).split('/');
    return `pkg ${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const src = url.search(/\/src\//);
  if (src !== -1) return `switchyard ${url.slice(src + 1)}`;
  return url.replace(/^file:\/\//, '');
}

function key(f: CallFrame): string {
  return `${f.functionName || '(anonymous)'} ${where(f)}`.trim();
}

const self = new Map<string, number>();
const inclusive = new Map<string, number>();
const areas = new Map<string, number>();
let total = 0;
let idle = 0;

for (let i = 0; i < profile.samples.length; i++) {
  // Each sample's delta is the time until the next sample; the first is the start offset.
  const dt = profile.timeDeltas[i + 1] ?? 0;
  const node = byId.get(profile.samples[i]!)!;
  total += dt;
  if (node.callFrame.functionName === '(idle)') idle += dt;
  const k = key(node.callFrame);
  self.set(k, (self.get(k) ?? 0) + dt);
  const a = area(node.callFrame);
  areas.set(a, (areas.get(a) ?? 0) + dt);
  const seen = new Set<string>();
  for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
    const kk = key(byId.get(id)!.callFrame);
    if (seen.has(kk)) continue;
    seen.add(kk);
    inclusive.set(kk, (inclusive.get(kk) ?? 0) + dt);
  }
}

const busy = total - idle;
const pct = (x: number, of: number): string => `${((x / of) * 100).toFixed(1).padStart(5)}%`;

function print(title: string, map: Map<string, number>, n: number, filter: (k: string) => boolean = () => true): void {
  console.log(`\n${title}`);
  const rows = [...map]
    .filter(([k]) => filter(k))
    .sort((a, b) => b[1] - a[1])
    .slice(0, n);
  for (const [k, v] of rows) console.log(`  ${pct(v, busy)}  ${(v / 1000).toFixed(0).padStart(7)} ms  ${k}`);
}

console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (${pct(busy, total).trim()}); percentages are of busy time`);
print('By area (self time)', areas, 40, (k) => k !== '(idle)');
print(`Top ${top} functions by self time`, self, top, (k) => !k.startsWith('(idle)'));
print(`Top ${top} switchyard functions by inclusive time`, inclusive, top, (k) => / src\//.test(k));
