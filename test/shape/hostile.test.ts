// shapeResponse() under a seeded fast-check run: hooks that do random things to the head (framing
// and hop-by-hop names, names that are not tokens, values with CR/LF/NUL or characters above \xff,
// statuses out of range, throws) in front of balance() and a local handler. Every answer is the
// shaped response or the error answer, on one keep-alive connection that stays sound; nothing
// crashes and no header carries what was refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request, type IncomingMessage } from 'node:http';
import fc from 'fast-check';
import { balance, chain, type Middleware } from '../../src/index.ts';
import { shapeResponse, type ShapeContext } from '../../src/shape/index.ts';
import { gateway, poolOf, upstream } from '../helpers.ts';

type Op = { op: 'set' | 'append'; name: string; value: string } | { op: 'delete'; name: string } | { op: 'status'; status: number } | { op: 'throw' };

const names = fc.constantFrom(
  'X-A',
  'x-a',
  'Set-Cookie',
  'Content-Type',
  'Content-Length',
  'Transfer-Encoding',
  'Connection',
  'Keep-Alive',
  'TE',
  'Bad Name',
  '',
  'x:y',
  'Ü',
);
const values = fc.oneof(fc.constantFrom('v', '', 'a\r\nb', 'nul\0', '\u20ac', ' spaced ', '\tt'), fc.string({ maxLength: 6 }));
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constantFrom('set' as const, 'append' as const), name: names, value: values }),
  fc.record({ op: fc.constant('delete' as const), name: names }),
  fc.record({ op: fc.constant('status' as const), status: fc.oneof(fc.constantFrom(200, 204, 304, 404, 599), fc.integer({ min: -1, max: 1000 })) }),
  fc.record({ op: fc.constant('throw' as const) }),
);

function apply(ctx: ShapeContext, ops: readonly Op[]): void {
  for (const o of ops) {
    if (o.op === 'set') ctx.headers.set(o.name, o.value);
    else if (o.op === 'append') ctx.headers.append(o.name, o.value);
    else if (o.op === 'delete') ctx.headers.delete(o.name);
    else if (o.op === 'status') ctx.status = o.status;
    else throw new Error('thrown by the hook');
  }
}

test('random hooks: the shaped answer or the error answer, never a crash, the connection sound', { timeout: 60_000 }, async (t) => {
  const up = await upstream(t, 'origin', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] });
    res.end('origin');
  });
  const runs = fc.sample(fc.tuple(fc.array(op, { maxLength: 5 }), fc.boolean()), { numRuns: 150, seed: 17 });
  const shape = shapeResponse({
    add: { 'X-Added': 'yes' },
    hook(ctx) {
      const i = Number(/run=(\d+)/.exec(ctx.req.url ?? '')?.[1]);
      apply(ctx, runs[i]![0]);
    },
  });
  const local: Middleware = (req, res, next) => {
    if (req.url?.startsWith('/local')) res.end('local');
    else next();
  };
  const gw = await gateway(t, chain(shape, local, balance(poolOf(t, [up.url]))));
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const sockets = new Set<unknown>();
  const get = (path: string) =>
    new Promise<{ status: number; headers: IncomingMessage['headers']; body: string }>((resolve, reject) => {
      const req = request(`${gw.url}${path}`, { agent }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('socket', (s) => sockets.add(s));
      req.on('error', reject);
      req.end();
    });
  let failed = 0;
  for (const [i, [ops, viaLocal]] of runs.entries()) {
    const r = await get(`/${viaLocal ? 'local' : 'up'}?run=${i}`);
    const expected = viaLocal ? 'local' : 'origin';
    if (r.status === 500 && r.body === '500 Internal Server Error\n') {
      assert.equal(r.headers['x-added'], undefined, `run ${i}: the error answer carries none of the response's headers`);
      failed++;
      continue;
    }
    // Shaped: the hook's last valid status, the body as written (none for 204 and 304).
    const statuses = ops.filter((o): o is Extract<Op, { op: 'status' }> => o.op === 'status');
    const status = statuses.length === 0 ? 200 : statuses.at(-1)!.status;
    assert.equal(r.status, status, `run ${i}: ${JSON.stringify(ops)}`);
    if (status !== 204 && status !== 304) assert.equal(r.body, expected, `run ${i}`);
    for (const o of ops) {
      if (o.op === 'throw') assert.fail(`run ${i}: a throwing hook was answered ${r.status}`);
      if (o.op === 'set' || o.op === 'append')
        assert.ok(!/[\r\n\0]/.test(o.value) && /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(o.name), `run ${i}: a refused op went through`);
    }
  }
  assert.equal(sockets.size, 1, 'one connection throughout');
  // The seed gives both kinds of answer plenty of times.
  assert.ok(failed > 30 && failed < runs.length - 30, `${failed} error answers of ${runs.length}`);
});
