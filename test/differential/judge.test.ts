// The differential suite's judgement (judge.ts), without nginx: each list stays true.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { judge } from './judge.ts';

const deviations = { doc: { reason: 'r', readme: 'x', shows: ['status'] } };
const known = { todo: { item: 'fix: y', shows: ['response location'] } };

it('a case that agrees and is listed nowhere agrees', () => {
  assert.deepEqual(judge('plain', [], deviations, known), { verdict: 'agree' });
});

it('a difference listed in DEVIATIONS is documented, one in KNOWN_FAILING is known failing', () => {
  assert.deepEqual(judge('doc', ['status: nginx 400, switchyard 200'], deviations, known), { verdict: 'documented' });
  assert.deepEqual(judge('todo', ['response location: nginx "a", switchyard "b"'], deviations, known), { verdict: 'known failing' });
});

it('a listed case that agrees fails, naming the list to remove it from', () => {
  const doc = judge('doc', [], deviations, known);
  const todo = judge('todo', [], deviations, known);
  assert.ok('error' in doc && doc.error.includes('remove it from DEVIATIONS'));
  assert.ok('error' in todo && todo.error.includes('remove it from KNOWN_FAILING'));
});

it('a difference not listed fails, and so does one its entry does not name', () => {
  const plain = judge('plain', ['status: nginx 400, switchyard 200'], deviations, known);
  assert.ok('error' in plain && plain.error.includes('is not listed'));
  const other = judge('doc', ['status: nginx 400, switchyard 200', 'upstream body: nginx "", switchyard "x"'], deviations, known);
  assert.ok('error' in other && other.error.includes('upstream body'));
});
