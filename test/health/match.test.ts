// compileMatch: NGINX Plus `match { status; header; body; }` (nginx-semantics.md section 5).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { compileMatch, type MatchOptions } from '../../src/health/match.ts';
import { InvalidOptionError } from '../../src/core/errors.ts';

const passes = (m: MatchOptions | undefined, status: number, headers: IncomingHttpHeaders = {}, body = ''): boolean =>
  compileMatch(m).test(status, headers, body) === undefined;

test('status forms: each passes exactly its codes', () => {
  const table: Array<[MatchOptions['status'], number[], number[]]> = [
    ['200', [200], [201, 204, 301, 500]],
    ['! 500', [200, 204, 404, 503], [500]],
    ['!500', [200], [500]],
    ['200 204', [200, 204], [201, 203, 205, 500]],
    ['200-399', [200, 250, 301, 399], [199, 400, 500]],
    ['! 400-599', [200, 302, 399], [400, 404, 500, 599]],
    ['301-303 307', [301, 302, 303, 307], [300, 304, 306, 308, 200]],
    ['! 301 302', [200, 303], [301, 302]],
    [204, [204], [200, 205]],
    [
      [200, [300, 302], '404'],
      [200, 300, 301, 302, 404],
      [201, 299, 303, 403, 405],
    ],
    [
      ['500-502', 204],
      [500, 501, 502, 204],
      [503, 200],
    ],
  ];
  for (const [status, good, bad] of table) {
    for (const s of good) assert.equal(passes({ status }, s), true, `${JSON.stringify(status)} should pass ${s}`);
    for (const s of bad) assert.equal(compileMatch({ status }).test(s, {}, ''), `status ${s}`, `${JSON.stringify(status)} should fail ${s}`);
  }
});

test('default (no match, or match without status): 2xx and 3xx pass, 1xx/4xx/5xx fail', () => {
  for (const m of [undefined, {}]) {
    for (const s of [200, 204, 299, 301, 304, 399]) assert.equal(passes(m, s), true, `default should pass ${s}`);
    for (const s of [100, 101, 199, 400, 404, 499, 500, 503]) assert.equal(compileMatch(m).test(s, {}, ''), `status ${s}`, `default should fail ${s}`);
  }
  assert.equal(compileMatch(undefined).needsBody, false);
});

test('header lines: =, !=, ~, !~, present, absent; names case-insensitive', () => {
  const html = { 'content-type': 'text/html' };
  const json = { 'content-type': 'application/json' };
  const table: Array<[string, IncomingHttpHeaders, boolean]> = [
    ['Content-Type = text/html', html, true],
    ['Content-Type = text/html', json, false],
    ['Content-Type = text/html', {}, false],
    ['content-type = text/html', html, true],
    ['CONTENT-TYPE=text/html', html, true],
    ['Content-Type = "text/html"', html, true],
    ['Content-Type = Text/HTML', html, false],
    ['Content-Type != text/html', html, false],
    ['Content-Type != text/html', json, true],
    ['Content-Type != text/html', {}, true],
    ['Connection ~ close', { connection: 'keep-alive, close' }, true],
    ['Connection ~ ^close$', { connection: 'keep-alive' }, false],
    ['Connection ~ close', {}, false],
    ['Connection !~ close', { connection: 'close' }, false],
    ['Connection !~ close', { connection: 'keep-alive' }, true],
    ['Connection !~ close', {}, true],
    ['Host', { host: 'a' }, true],
    ['Host', {}, false],
    ['HOST', { host: '' }, true],
    ['! X-Accel-Redirect', {}, true],
    ['! X-Accel-Redirect', { 'x-accel-redirect': '/x' }, false],
    ['!x-accel-redirect', { 'x-accel-redirect': '/x' }, false],
  ];
  for (const [line, headers, expected] of table) {
    const reason = compileMatch({ headers: [line] }).test(200, headers, '');
    assert.equal(reason === undefined, expected, `${line} with ${JSON.stringify(headers)}: ${reason}`);
    if (!expected) assert.match(reason!, /^header condition failed/);
  }
  // All lines must pass.
  const both = compileMatch({ headers: ['Content-Type = text/html', '! X-Accel-Redirect'] });
  assert.equal(both.test(200, { 'content-type': 'text/html' }, ''), undefined);
  assert.notEqual(both.test(200, { 'content-type': 'text/html', 'x-accel-redirect': '/' }, ''), undefined);
  // Status is tested too.
  assert.equal(compileMatch({ headers: ['Host'] }).test(500, { host: 'a' }, ''), 'status 500');
});

test('header object form: string, RegExp, true, false, equals, notEquals, matches, notMatches', () => {
  const table: Array<[MatchOptions['headers'], IncomingHttpHeaders, boolean]> = [
    [{ 'Content-Type': 'text/html' }, { 'content-type': 'text/html' }, true],
    [{ 'Content-Type': 'text/html' }, { 'content-type': 'text/plain' }, false],
    [{ 'content-type': /html/ }, { 'content-type': 'text/html' }, true],
    [{ 'content-type': /html/g }, { 'content-type': 'text/html' }, true],
    [{ 'content-type': /json/ }, { 'content-type': 'text/html' }, false],
    [{ Host: true }, { host: 'x' }, true],
    [{ Host: true }, {}, false],
    [{ 'X-Accel-Redirect': false }, {}, true],
    [{ 'X-Accel-Redirect': false }, { 'x-accel-redirect': '/a' }, false],
    [{ 'X-A': { equals: 'v' } }, { 'x-a': 'v' }, true],
    [{ 'X-A': { equals: 'v' } }, { 'x-a': 'w' }, false],
    [{ 'X-A': { notEquals: 'v' } }, { 'x-a': 'v' }, false],
    [{ 'X-A': { notEquals: 'v' } }, { 'x-a': 'w' }, true],
    [{ 'X-A': { notEquals: 'v' } }, {}, true],
    [{ 'X-A': { matches: /^v\d$/ } }, { 'x-a': 'v1' }, true],
    [{ 'X-A': { matches: /^v\d$/ } }, { 'x-a': 'vv' }, false],
    [{ 'X-A': { matches: /^v\d$/ } }, {}, false],
    [{ 'X-A': { notMatches: /^v\d$/ } }, { 'x-a': 'v1' }, false],
    [{ 'X-A': { notMatches: /^v\d$/ } }, { 'x-a': 'vv' }, true],
    [{ 'X-A': { notMatches: /^v\d$/ } }, {}, true],
  ];
  for (const [headers, h, expected] of table) {
    const m = compileMatch({ headers });
    assert.equal(
      m.test(200, h, '') === undefined,
      expected,
      `${JSON.stringify(headers, (_k, v) => (v instanceof RegExp ? String(v) : v))} with ${JSON.stringify(h)}`,
    );
    // A global RegExp must not keep state between probes.
    assert.equal(m.test(200, h, '') === undefined, expected, 'second probe gives the same answer');
  }
});

test('body conditions: RegExp, { matches }, { notMatches }, nginx "~" and "!~"', () => {
  const table: Array<[MatchOptions['body'], string, boolean]> = [
    [/ok/, 'all ok', true],
    [/ok/, 'bad', false],
    [/ok/g, 'ok', true],
    [{ matches: /^up$/m }, 'status\nup\n', true],
    [{ matches: /^up$/ }, 'down', false],
    [{ notMatches: /error/ }, 'fine', true],
    [{ notMatches: /error/ }, 'an error', false],
    ['~ "ok"', 'all ok', true],
    ['~ "ok"', 'bad', false],
    ['~ "^a.c$"', 'abc', true],
    ['!~ "maintenance"', 'serving', true],
    ['!~ "maintenance"', 'in maintenance', false],
    ['!~ maintenance', 'in maintenance', false],
  ];
  for (const [body, text, expected] of table) {
    const m = compileMatch({ body });
    assert.equal(m.needsBody, true);
    assert.equal(m.test(200, {}, text), expected ? undefined : 'body condition failed', `${String(body)} on ${JSON.stringify(text)}`);
    assert.equal(m.test(200, {}, text) === undefined, expected, 'stateless');
  }
  // The status is tested before the body.
  assert.equal(compileMatch({ body: /ok/ }).test(503, {}, 'ok'), 'status 503');
});

test('invalid match options throw InvalidOptionError naming the field', () => {
  const table: Array<[unknown, string]> = [
    [{ status: 'abc' }, 'match.status'],
    [{ status: '' }, 'match.status'],
    [{ status: '!' }, 'match.status'],
    [{ status: 600 }, 'match.status'],
    [{ status: 99 }, 'match.status'],
    [{ status: 200.5 }, 'match.status'],
    [{ status: '399-200' }, 'match.status'],
    [{ status: '200-abc' }, 'match.status'],
    [{ status: [] }, 'match.status'],
    [{ status: [200, [500, 400]] }, 'match.status[1]'],
    [{ status: [200, [500]] }, 'match.status[1]'],
    [{ status: [700] }, 'match.status[0]'],
    [{ status: { lo: 200 } }, 'match.status'],
    [{ headers: ['Bad Name = x'] }, 'match.headers[0]'],
    [{ headers: ['Host', 'X ~ ('] }, 'match.headers[1]'],
    [{ headers: [42] }, 'match.headers[0]'],
    [{ headers: 'Host' }, 'match.headers'],
    [{ headers: { 'X-A': 42 } }, 'match.headers.X-A'],
    [{ headers: { 'X-A': { other: 'v' } } }, 'match.headers.X-A.other'],
    [{ body: 'ok' }, 'match.body'],
    [{ body: '~ "("' }, 'match.body'],
    [{ body: 42 }, 'match.body'],
    [{ body: { matches: 'ok' } }, 'match.body'],
    [{ foo: 1 }, 'match.foo'],
    ['200', 'match'],
    [null, 'match'],
  ];
  for (const [m, option] of table) {
    assert.throws(
      () => compileMatch(m as MatchOptions),
      (err: unknown) => err instanceof InvalidOptionError && err.option === option && err.message.includes(option),
      `${JSON.stringify(m)} should throw naming ${option}`,
    );
  }
});
