// healthCheck().ready in a standalone program (issue 12): the probes run on unref'd timers, so
// `ready` itself keeps the process alive while it is pending, and nothing does once it settles.
// Each test runs test/health/ready-toplevel.fixture.ts in a child `node` process (test/support/child.ts).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { runNode, type ChildOutcome } from '../support/child.ts';

const FIXTURE = fileURLToPath(new URL('./ready-toplevel.fixture.ts', import.meta.url));
/** Longest a child may run: far more than it needs on a loaded machine; past it, it is killed and the test fails. */
const LIMIT_MS = 30_000;

function runFixture(t: TestContext, mode: 'close' | 'leave'): Promise<ChildOutcome> {
  return runNode(t, [FIXTURE, mode], { limitMs: LIMIT_MS });
}

test('await hc.ready at the top level of a module waits for the first probe (no "unsettled top-level await"), then the program ends by itself', async (t) => {
  const r = await runFixture(t, 'close');
  assert.equal(r.killed, false, `the child did not end within ${LIMIT_MS} ms; stderr: ${r.stderr}`);
  assert.equal(r.stdout, 'ready up\n', `stderr: ${r.stderr}`);
  assert.equal(r.code, 0, `stderr: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /unsettled top-level await/);
});

test('once ready settles, a health check left running does not keep the process alive', async (t) => {
  const r = await runFixture(t, 'leave');
  assert.equal(r.killed, false, `the child did not end within ${LIMIT_MS} ms: something keeps it alive after ready; stderr: ${r.stderr}`);
  assert.equal(r.stdout, 'ready up\n', `stderr: ${r.stderr}`);
  assert.equal(r.code, 0, `stderr: ${r.stderr}`);
});
