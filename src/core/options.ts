// How every factory validates its options (createPool, balance, upgrade, rewrite, fromNginx,
// fromApache, sticky, healthCheck, monitor; cache and the stores next): one helper per kind of
// value, each throwing an InvalidOptionError that names the option's path (`servers[1].weight`,
// `cookie.name`) and what it takes. Objects of a fixed shape refuse keys they do not know, naming
// the key and the nearest known one. A helper resolves the default (`??`, so 0 and false are
// honoured) and never writes into the caller's object.
import { parseDuration, type Duration } from './duration.ts';
import { InvalidOptionError } from './errors.ts';

/** The path of `key` under `parent` (`''` is the top level): `a.b`, `a[2]`, or `b` at the top. @internal */
export function optionPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent === '' ? 'options' : parent}[${key}]`;
  return parent === '' ? key : `${parent}.${key}`;
}

/**
 * An options object of a fixed shape: a non-null object (not an array) whose own keys are all in
 * `known`; `undefined` is `{}` when `optional`. An unknown key is an InvalidOptionError naming its
 * path and the nearest known key: `unknown option "metod" (did you mean "method"?)`. `path` is the
 * object's own path, `''` for a factory's options (named `options` in the error).
 * @internal
 */
export function objectOption(value: unknown, path: string, known: readonly string[], expected = 'an object', optional = false): Record<string, unknown> {
  if (value === undefined && optional) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidOptionError(path === '' ? 'options' : path, expected, value);
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) if (!known.includes(key)) throw unknownOption(optionPath(path, key), key, known, path);
  return record;
}

/**
 * The error for an unknown key: its path, and the nearest of the known keys (by edit distance, case,
 * `_` and `-` aside, so `max_fails` finds `maxFails`), or the list of them when none is near.
 * @internal
 */
export function unknownOption(option: string, key: string, known: readonly string[], parent = ''): InvalidOptionError {
  const near = nearest(key, known);
  const hint = near === undefined ? `(known options: ${known.join(', ')})` : `(did you mean "${optionPath(parent, near)}"?)`;
  return new InvalidOptionError(option, `one of ${known.join(', ')}`, key, `unknown option "${option}" ${hint}`);
}

/**
 * The known name nearest to `name`, when it is near enough to be a misspelling: an edit distance
 * (insertions, deletions, substitutions, swaps of two neighbours) of at most a third of the longer
 * name, and at least 1, after lowercasing and dropping `_` and `-`. The first of equally near ones.
 * @internal
 */
export function nearest(name: string, known: readonly string[]): string | undefined {
  const a = fold(name);
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const b = fold(candidate);
    const limit = Math.max(1, Math.floor(Math.max(a.length, b.length) / 3));
    const d = editDistance(a, b, limit);
    if (d <= limit && d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function fold(name: string): string {
  return name.toLowerCase().replace(/[_-]/g, '');
}

/** Optimal string alignment distance (Levenshtein with adjacent swaps); past `limit` it returns limit + 1. */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let before: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let smallest = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, before[j - 2]! + 1);
      row.push(d);
      if (d < smallest) smallest = d;
    }
    if (smallest > limit) return limit + 1;
    before = prev;
    prev = row;
  }
  return prev[b.length]!;
}

/** Bounds of {@link integerOption}. @internal */
export interface IntegerBounds {
  /** The smallest value. @default 0 */
  readonly min?: number | undefined;
  /** The largest value. @default Number.MAX_SAFE_INTEGER */
  readonly max?: number | undefined;
}

/** A safe integer within `min`..`max`; `fallback` when absent. @internal */
export function integerOption(value: unknown, path: string, fallback: number, bounds: IntegerBounds = {}): number {
  if (value === undefined) return fallback;
  const min = bounds.min ?? 0;
  const max = bounds.max ?? Number.MAX_SAFE_INTEGER;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidOptionError(path, max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`, value);
  }
  return value;
}

/** A boolean; `fallback` when absent. @internal */
export function booleanOption(value: unknown, path: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidOptionError(path, 'a boolean', value);
  return value;
}

/**
 * A {@link Duration} in milliseconds: a number of ms or an nginx string (`'10s'`, `'1m30s'`);
 * `fallback` (written as nginx writes it, `'60s'`) when absent. With `positive`, zero is refused.
 * @internal
 */
export function durationOption(value: unknown, path: string, fallback: Duration, positive = false): number {
  const ms = parseDuration((value ?? fallback) as Duration, path);
  if (positive && ms <= 0) throw new InvalidOptionError(path, 'a positive duration', value);
  return ms;
}

/** A function; `fallback` when absent. @internal */
export function functionOption<F extends (...args: never[]) => unknown>(value: unknown, path: string, expected: string, fallback: F): F;
export function functionOption<F extends (...args: never[]) => unknown>(value: unknown, path: string, expected: string): F | undefined;
export function functionOption<F extends (...args: never[]) => unknown>(value: unknown, path: string, expected: string, fallback?: F): F | undefined {
  if (value === undefined) return fallback;
  if (typeof value !== 'function') throw new InvalidOptionError(path, expected, value);
  return value as F;
}

/** The clock of a factory (`now`): milliseconds since the epoch, `Date.now` by default. @internal */
export function nowOption(value: unknown, path = 'now'): () => number {
  return functionOption(value, path, 'a function returning milliseconds', Date.now);
}

/** The random numbers of a factory (`random`): in [0, 1), `Math.random` by default. @internal */
export function randomOption(value: unknown, path = 'random'): () => number {
  return functionOption(value, path, 'a function returning a number in [0, 1)', Math.random);
}

/** One of `allowed`; `fallback` when absent. The error lists them. @internal */
export function enumOption<T extends string | number>(value: unknown, path: string, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) throw new InvalidOptionError(path, oneOf(allowed), value);
  return value as T;
}

/** `"a"`, `"a" or "b"`, `one of "a", "b", "c"`: how the messages list the values an option takes. @internal */
export function oneOf(allowed: readonly (string | number)[]): string {
  const shown = allowed.map((v) => (typeof v === 'string' ? JSON.stringify(v) : String(v)));
  if (shown.length <= 2) return shown.join(' or ');
  return `one of ${shown.join(', ')}`;
}

/** What {@link stringOption} checks besides the type. @internal */
export interface StringRules {
  /** Refuse `''`. @default false */
  readonly nonEmpty?: boolean | undefined;
  /** A pattern the whole value must match. */
  readonly pattern?: RegExp | undefined;
  /** What the option takes, for the message. @default 'a string' (or 'a non-empty string') */
  readonly expected?: string | undefined;
}

/** A string; `fallback` when absent. @internal */
export function stringOption(value: unknown, path: string, fallback: string, rules?: StringRules): string;
export function stringOption(value: unknown, path: string, fallback: undefined, rules?: StringRules): string | undefined;
export function stringOption(value: unknown, path: string, fallback: string | undefined, rules: StringRules = {}): string | undefined {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || (rules.nonEmpty === true && value === '') || (rules.pattern !== undefined && !rules.pattern.test(value))) {
    throw new InvalidOptionError(path, rules.expected ?? (rules.nonEmpty === true ? 'a non-empty string' : 'a string'), value);
  }
  return value;
}

/** An array of strings, each checked by `item` when given (which throws naming `path[i]`); `fallback` when absent. @internal */
export function stringListOption(
  value: unknown,
  path: string,
  fallback: readonly string[],
  expected: string,
  item?: (entry: string, path: string) => void,
): readonly string[] {
  if (value === undefined) return fallback;
  if (!Array.isArray(value)) throw new InvalidOptionError(path, expected, value);
  value.forEach((entry: unknown, i) => {
    if (typeof entry !== 'string') throw new InvalidOptionError(optionPath(path, i), 'a string', entry);
    item?.(entry, optionPath(path, i));
  });
  return Object.freeze([...(value as string[])]);
}

/**
 * An instance of `type` (a pool from createPool(), say: `instanceOption(pool, 'pool',
 * UpstreamPool, 'an UpstreamPool from createPool()')`). Required.
 * @internal
 */
export function instanceOption<T>(value: unknown, path: string, type: abstract new (...args: never[]) => T, expected: string): T {
  if (!(value instanceof type)) throw new InvalidOptionError(path, expected, value);
  return value;
}
