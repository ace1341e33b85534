/** The kinds of nginx `location`: exact, prefix that stops the regex search, prefix, regex, caseless regex. @internal */
export type LocationKind = '=' | '^~' | 'prefix' | '~' | '~*';

/** A location's modifier and its path (or regex source), as nginx names it in messages. @internal */
export interface LocationSpec {
  kind: LocationKind;
  path: string;
}

/** Reads `'= /'`, `'^~ /img/'`, `'~ \\.php$'`, `'~* \\.jpg$'` or a bare prefix. @internal */
export function parseLocation(spec: string): LocationSpec {
  const m = /^(=|\^~|~\*|~)\s+(.+)$/s.exec(spec.trim());
  return { kind: (m?.[1] ?? 'prefix') as LocationKind, path: m?.[2] ?? spec.trim() };
}

/** True for `~` and `~*` locations. @internal */
export function isRegexLocation(l: LocationSpec): boolean {
  return l.kind === '~' || l.kind === '~*';
}

/**
 * What nginx says when `child` cannot stand inside `parent` (ngx_http_core_location), or undefined:
 * nothing nests in an exact location, and a location other than a regex must start with its
 * parent's name (for a regex parent, its source text, so in practice only regexes go there).
 * @internal
 */
export function nestingError(parent: LocationSpec, child: LocationSpec): string | undefined {
  if (parent.kind === '=') return `location "${child.path}" cannot be inside the exact location "${parent.path}"`;
  if (!isRegexLocation(child) && !child.path.startsWith(parent.path)) return `location "${child.path}" is outside location "${parent.path}"`;
  return undefined;
}

/**
 * nginx's "duplicate location": two exact locations, or two prefix ones (`^~` or not), with the
 * same path at one level. Regexes may repeat (the first wins).
 * @internal
 */
export function duplicateError(siblings: readonly LocationSpec[], l: LocationSpec): string | undefined {
  const inclusive = (k: LocationKind): boolean => k === 'prefix' || k === '^~';
  const twin = siblings.find((o) => o.path === l.path && ((o.kind === '=' && l.kind === '=') || (inclusive(o.kind) && inclusive(l.kind))));
  return twin === undefined ? undefined : `duplicate location "${l.path}"`;
}
