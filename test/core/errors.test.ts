// Every error code is a class of core/errors.ts, exported from the package, with a stable
// SWY_ERR_* code and an HTTP status, listed in the README's errors table; no SWY_ERR_ code in src/
// is made anywhere else (a grep over the sources).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as api from '../../src/index.ts';
import * as errors from '../../src/core/errors.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

type ErrorClass = new (...args: never[]) => Error;

/** Arguments to make one instance of each error class; a new class needs its row here. */
const SAMPLES: Record<string, unknown[]> = {
  BadGatewayError: [],
  GatewayTimeoutError: [],
  NoServerAvailableError: ['app'],
  BadRequestError: [],
  MethodNotAllowedError: [],
  BodyConsumedError: [],
  UnsupportedTransferCodingError: ['gzip, chunked'],
  InvalidOptionError: ['servers[0].weight', 'an integer >= 1', 0],
  RewriteCycleError: [],
  RewriteEmptyError: [],
  ReturnStatusError: [403],
  ServerNotFoundError: ['x'],
  CacheStoreError: ['get', 'timeout', 'k', 'store timed out'],
  HookError: [],
  UnknownPoolError: [],
  RateLimitedError: ['api'],
  ConnectionLimitedError: ['api'],
};

/** The base class: it carries the code it is given. */
const BASE = 'SwitchyardError';

function errorClasses(module: Record<string, unknown>): Map<string, ErrorClass> {
  const out = new Map<string, ErrorClass>();
  for (const [name, value] of Object.entries(module)) {
    if (typeof value === 'function' && value.prototype instanceof Error) out.set(name, value as ErrorClass);
  }
  return out;
}

function instance(name: string, type: ErrorClass): Error & { code?: unknown; statusCode?: unknown; status?: unknown } {
  const args = SAMPLES[name];
  assert.ok(args !== undefined, `${name}: add a row to SAMPLES`);
  return new type(...(args as never[]));
}

/** The README's errors table: class name and codes of each row. */
function readmeTable(): Map<string, string[]> {
  const text = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const start = text.indexOf('| Class | `code` | Status |');
  assert.notEqual(start, -1, 'the README has an errors table');
  const rows = new Map<string, string[]>();
  for (const line of text.slice(start).split('\n').slice(2)) {
    if (!line.startsWith('|')) break;
    const cells = line.split('|').map((c) => c.trim());
    const name = /^`(\w+)`$/.exec(cells[1]!)?.[1];
    assert.ok(name !== undefined, `row ${line}`);
    rows.set(
      name,
      [...cells[2]!.matchAll(/`(SWY_ERR_[A-Z_]+)`/g)].map((m) => m[1]!),
    );
  }
  return rows;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

test('every error class of core/errors.ts is exported from the package root', () => {
  const defined = errorClasses(errors);
  const exported = errorClasses(api);
  assert.deepEqual([...exported.keys()].sort(), [...defined.keys()].sort());
  for (const [name, type] of defined) assert.equal(exported.get(name), type, name);
});

test('every error class has a stable SWY_ERR_* code of its own, an HTTP statusCode (and status), and its class name', () => {
  const codes = new Map<string, string>();
  for (const [name, type] of errorClasses(errors)) {
    if (name === BASE) continue;
    const err = instance(name, type);
    assert.equal(err.name, name);
    assert.match(String(err.code), /^SWY_ERR_[A-Z_]+$/, name);
    assert.equal(instance(name, type).code, err.code, `${name}: the same code every time`);
    assert.ok(
      Number.isInteger(err.statusCode) && (err.statusCode as number) >= 400 && (err.statusCode as number) <= 599,
      `${name}: statusCode ${String(err.statusCode)}`,
    );
    if (err instanceof api.SwitchyardError) assert.equal(err.status, err.statusCode, `${name}: status is statusCode`);
    const other = codes.get(String(err.code));
    assert.equal(other, undefined, `${name} and ${other} share ${String(err.code)}`);
    codes.set(String(err.code), name);
  }
});

test("the errors with a status of their own: 500 for a consumed body and the rewrite failures, the rule's for return", () => {
  assert.equal(new api.BodyConsumedError().statusCode, 500);
  assert.equal(new api.BadRequestError().statusCode, 400);
  assert.equal(new api.RewriteCycleError().statusCode, 500);
  assert.equal(new api.RewriteEmptyError().statusCode, 500);
  const r = new api.ReturnStatusError(451);
  assert.equal(r.statusCode, 451);
  assert.equal(r.message, 'Unavailable For Legal Reasons');
  assert.equal(new api.InvalidOptionError('x', 'y').statusCode, 400);
});

test('the errors of a fixed code and status: their code, status, default message, a message and cause given, instanceof', () => {
  const cause = new Error('ECONNREFUSED');
  const table: Array<[new (message?: string, options?: api.SwitchyardErrorOptions) => api.SwitchyardError, string, number, string]> = [
    [api.BadGatewayError, 'SWY_ERR_BAD_GATEWAY', 502, 'Bad Gateway'],
    [api.GatewayTimeoutError, 'SWY_ERR_GATEWAY_TIMEOUT', 504, 'Gateway Timeout'],
    [api.BadRequestError, 'SWY_ERR_BAD_REQUEST', 400, 'Bad Request'],
    [api.MethodNotAllowedError, 'SWY_ERR_METHOD_NOT_ALLOWED', 405, 'Method Not Allowed'],
    [api.BodyConsumedError, 'SWY_ERR_BODY_CONSUMED', 500, 'The request body was consumed by a body parser before switchyard could forward it'],
    [api.RewriteCycleError, 'SWY_ERR_REWRITE_CYCLE', 500, 'rewrite or internal redirection cycle'],
    [api.RewriteEmptyError, 'SWY_ERR_REWRITE_EMPTY', 500, 'rewrite produced an empty URI'],
  ];
  for (const [type, code, status, message] of table) {
    const plain = new type();
    assert.ok(plain instanceof type && plain instanceof api.SwitchyardError && plain instanceof Error, type.name);
    assert.deepEqual([plain.name, plain.code, plain.statusCode, plain.status, plain.message, plain.expose], [type.name, code, status, status, message, true]);
    assert.equal(Object.hasOwn(plain, 'cause'), false, `${type.name}: no cause unless given`);
    const given = new type('upstream said no', { cause });
    assert.deepEqual([given.message, given.cause, given.code], ['upstream said no', cause, code]);
    assert.match(String(given.stack), new RegExp(`^${type.name}: upstream said no`));
  }
  // Each class its own: one is not an instance of another.
  assert.equal(new api.BadGatewayError() instanceof api.GatewayTimeoutError, false);
  assert.equal(new api.RewriteCycleError() instanceof api.RewriteEmptyError, false);
});

test("the README's errors table lists every error class with its code, and nothing else", () => {
  const table = readmeTable();
  const classes = errorClasses(errors);
  for (const [name, type] of classes) {
    if (name === BASE) continue;
    assert.deepEqual(table.get(name), [String(instance(name, type).code)], `README row of ${name}`);
  }
  for (const name of table.keys()) assert.ok(classes.has(name) && name !== BASE, `README lists ${name}, which is not an error class`);
});

test('every SWY_ERR_ code written in src/ belongs to an error class (none is made inline)', () => {
  const known = new Set<string>();
  for (const [name, type] of errorClasses(errors)) if (name !== BASE) known.add(String(instance(name, type).code));
  const strays: string[] = [];
  for (const file of sources(join(ROOT, 'src'))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/SWY_ERR_[A-Z][A-Z_]*/g)) {
      if (!known.has(m[0])) strays.push(`${file.slice(ROOT.length)}: ${m[0]}`);
    }
  }
  assert.deepEqual(strays, []);
  // Each code is made in errors.ts only: elsewhere a class is constructed.
  for (const file of sources(join(ROOT, 'src'))) {
    if (file.endsWith(join('core', 'errors.ts'))) continue;
    const text = readFileSync(file, 'utf8');
    assert.doesNotMatch(text, /new SwitchyardError\(/, `${file.slice(ROOT.length)} constructs the base class with a code of its own`);
  }
});
