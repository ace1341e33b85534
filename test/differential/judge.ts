// How a case's differences are judged against deviations.ts (used by differential.test.ts, and
// checked on its own by judge.test.ts, which needs no nginx).
import type { Deviation, Entry, Known } from './deviations.ts';

export type Verdict = { verdict: 'agree' | 'documented' | 'known failing' } | { error: string };

/** The verdict on case `id` whose differences from nginx are `diffs` (empty: it agrees). */
export function judge(id: string, diffs: readonly string[], deviations: Readonly<Record<string, Deviation>>, known: Readonly<Record<string, Known>>): Verdict {
  const deviation: Entry | undefined = deviations[id];
  const failing: Entry | undefined = known[id];
  const listed = deviation ?? failing;
  const list = deviation !== undefined ? 'DEVIATIONS' : 'KNOWN_FAILING';
  if (diffs.length === 0)
    return listed === undefined ? { verdict: 'agree' } : { error: `${id} now agrees with nginx: remove it from ${list} in test/differential/deviations.ts` };
  if (listed === undefined) return { error: `${id} differs from nginx and is not listed in deviations.ts:\n  ${diffs.join('\n  ')}` };
  const unexplained = diffs.filter((d) => !listed.shows.some((s) => d.includes(s)));
  if (unexplained.length > 0)
    return { error: `${id} differs in ways its ${list} entry does not name (shows: ${JSON.stringify(listed.shows)}):\n  ${unexplained.join('\n  ')}` };
  return { verdict: deviation !== undefined ? 'documented' : 'known failing' };
}
