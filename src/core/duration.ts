import { InvalidOptionError } from './errors.ts';

/**
 * A duration: milliseconds as a number, or a string with a unit as nginx writes
 * them (`ms`, `s`, `m`, `h`, `d`), which may be combined: `'1m30s'`, `'500ms'`, `'10s'`.
 * A bare number string is seconds, as in nginx (`'10'` is ten seconds).
 */
export type Duration = number | string;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;

/**
 * Converts a {@link Duration} to milliseconds, throwing {@link InvalidOptionError}
 * naming `option` when the value is not a non-negative finite duration.
 * @example
 * ```ts
 * parseDuration('1m30s', 'failTimeout'); // 90000
 * parseDuration(250, 'timeout');         // 250
 * ```
 */
export function parseDuration(value: Duration, option: string): number {
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) return value;
    throw new InvalidOptionError(option, 'a non-negative number of milliseconds or a duration string such as "10s"', value);
  }
  if (typeof value === 'string') {
    const text = value.trim();
    if (/^\d+$/.test(text)) return Number(text) * 1000;
    PART.lastIndex = 0;
    let total = 0;
    let consumed = 0;
    for (let m = PART.exec(text); m !== null; m = PART.exec(text)) {
      total += Number(m[1]) * UNIT_MS[m[2]!]!;
      consumed = PART.lastIndex;
    }
    if (consumed > 0 && consumed === text.length && Number.isFinite(total)) return Math.round(total);
  }
  throw new InvalidOptionError(option, 'a non-negative number of milliseconds or a duration string such as "10s"', value);
}

/** Formats milliseconds as nginx prints durations (`'10s'`, `'500ms'`). */
export function formatDuration(ms: number): string {
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
