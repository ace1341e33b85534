// The server fields, written once. This table drives the validation of ServerOptions (createPool,
// add) and of update()'s changes, the defaults, which fields update() may change, ServerInfo (the
// pool's `servers`, `get()` and events), a Peer's configuration, and the NGINX Plus API names and
// error codes monitor() reads and writes them with. A compile-time check below keeps it, the
// ServerOptions, ServerUpdate and ServerInfo interfaces and the Peer naming the same fields.
import { InvalidOptionError } from '../core/errors.ts';
import { booleanOption, durationOption, integerOption, objectOption } from '../core/options.ts';
import type { ServerInfo, ServerOptions, ServerUpdate } from './index.ts';
import type { MethodCapabilities } from './methods/types.ts';
import type { Peer, PeerTarget } from './peer.ts';

/** Default server weight (nginx `weight=1`). */
export const DEFAULT_WEIGHT = 1;
/** Default `maxConns`: 0, unlimited (nginx `max_conns=0`). */
export const DEFAULT_MAX_CONNS = 0;
/** Default `maxFails` (nginx `max_fails=1`). */
export const DEFAULT_MAX_FAILS = 1;
/** Default `failTimeout` (nginx `fail_timeout=10s`). */
export const DEFAULT_FAIL_TIMEOUT = '10s';

/** A server's settings as the pool holds them (durations in ms, the url without credentials). @internal */
export type ServerConfig = Omit<ServerInfo, 'sid'>;

/**
 * How a field's values are checked, resolved and shown: `integer` (at least `min`), `duration`
 * (ms, shown by the API as nginx writes durations), `boolean`, `route` (sticky's session route),
 * `url` (parsed to a target; the API's `server` is its `host:port`) and `id` (the url by default).
 * @internal
 */
export type FieldKind = 'url' | 'id' | 'integer' | 'duration' | 'boolean' | 'route';

/** One row of the server-field table. @internal */
export interface ServerField {
  /** The field's name in ServerOptions, ServerInfo and on the Peer. */
  readonly name: keyof ServerConfig;
  readonly kind: FieldKind;
  /** The smallest value of an `integer` field. */
  readonly min?: number | undefined;
  /** The value when absent; undefined for `url` (required) and `id` (derived from the url). */
  readonly default: number | string | boolean | undefined;
  /** Whether update() (and the API's PATCH) may change it on an existing server. */
  readonly update: boolean;
  /** The balancing-method capability a value other than the default needs, and the refusal's text. */
  readonly needs?: { readonly capability: 'backup' | 'slowStart'; readonly refusal: (method: string) => string } | undefined;
  /** Its name in NGINX Plus's API (`GET`, `POST` and `PATCH …/http/upstreams/{name}/servers`). */
  readonly api: string;
  /** NGINX Plus's error code for a bad value of it. */
  readonly apiError: string;
  /** Brings the peer's derived state in line after update() changed the field. */
  readonly changed?: ((peer: Peer) => void) | undefined;
}

/** The server fields, in the order they are checked. @internal */
export const SERVER_FIELDS = Object.freeze([
  { name: 'url', kind: 'url', default: undefined, update: false, api: 'server', apiError: 'UpstreamBadAddress' },
  { name: 'id', kind: 'id', default: undefined, update: false, api: 'id', apiError: 'UpstreamBadServerId' },
  {
    name: 'weight',
    kind: 'integer',
    min: 1,
    default: DEFAULT_WEIGHT,
    update: true,
    api: 'weight',
    apiError: 'UpstreamBadWeight',
    changed: (peer: Peer) => {
      peer.effectiveWeight = peer.weight;
      peer.currentWeight = 0;
    },
  },
  { name: 'maxConns', kind: 'integer', min: 0, default: DEFAULT_MAX_CONNS, update: true, api: 'max_conns', apiError: 'UpstreamBadMaxConns' },
  { name: 'maxFails', kind: 'integer', min: 0, default: DEFAULT_MAX_FAILS, update: true, api: 'max_fails', apiError: 'UpstreamBadMaxFails' },
  { name: 'failTimeout', kind: 'duration', default: DEFAULT_FAIL_TIMEOUT, update: true, api: 'fail_timeout', apiError: 'UpstreamBadFailTimeout' },
  {
    name: 'backup',
    kind: 'boolean',
    default: false,
    update: false,
    needs: { capability: 'backup', refusal: (method: string) => `no backup servers: the "${method}" method does not support them (as in nginx)` },
    api: 'backup',
    apiError: 'UpstreamNoBackup',
  },
  { name: 'down', kind: 'boolean', default: false, update: true, api: 'down', apiError: 'UpstreamConfFormatError' },
  { name: 'drain', kind: 'boolean', default: false, update: true, api: 'drain', apiError: 'UpstreamConfFormatError' },
  {
    name: 'route',
    kind: 'route',
    default: '',
    update: true,
    api: 'route',
    apiError: 'UpstreamBadRoute',
    changed: (peer: Peer) => {
      peer.sid = peer.route;
    },
  },
  {
    name: 'slowStart',
    kind: 'duration',
    default: 0,
    update: true,
    needs: { capability: 'slowStart', refusal: (method: string) => `no slow start: the "${method}" method does not support it (as in nginx)` },
    api: 'slow_start',
    apiError: 'UpstreamBadSlowStart',
    changed: (peer: Peer) => {
      peer.rampEnd = peer.rampStart + peer.slowStart;
    },
  },
  { name: 'http2', kind: 'boolean', default: false, update: false, api: 'http2', apiError: 'UpstreamConfFormatError' },
] as const satisfies readonly ServerField[]);

type Row = (typeof SERVER_FIELDS)[number];
/** The name of every field. @internal */
export type FieldName = Row['name'];
/** The fields update() may change. @internal */
export type UpdatableName = Extract<Row, { readonly update: true }>['name'];
/** The fields fixed for a server's life. @internal */
export type FixedName = Exclude<FieldName, UpdatableName>;

// The table and the public interfaces name the same fields: adding a field to one and not the
// other fails to compile.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Holds<T extends true> = T;
export type FieldTableMatches = [
  Holds<Same<FieldName, keyof ServerOptions>>,
  Holds<Same<UpdatableName, keyof ServerUpdate>>,
  Holds<Same<FieldName | 'sid', keyof ServerInfo>>,
];

const FIELD_NAMES: readonly string[] = SERVER_FIELDS.map((f) => f.name);
const UPDATABLE: readonly ServerField[] = SERVER_FIELDS.filter((f) => f.update);
/** The names of the fields update() may change. @internal */
export const UPDATABLE_NAMES: readonly string[] = UPDATABLE.map((f) => f.name);

/** The method a server is checked against: what it allows. @internal */
export interface FieldContext {
  readonly method: string;
  readonly capabilities: MethodCapabilities;
}

/**
 * Validates one server of `createPool` or `add` (InvalidOptionError naming `path.<field>`): its
 * settings, and the target its url points at. `taken` tells the ids in use, for the default id.
 * @internal
 */
export function resolveServer(server: unknown, path: string, ctx: FieldContext, taken: (id: string) => boolean): { config: ServerConfig; target: PeerTarget } {
  const given = objectOption(server, path, FIELD_NAMES, 'an object with a url');
  const target = parseTarget(given.url, `${path}.url`);
  const config: Record<string, unknown> = {};
  for (const field of SERVER_FIELDS) {
    const option = `${path}.${field.name}`;
    const value = given[field.name];
    if (field.kind === 'url') config[field.name] = publicUrl(target);
    else if (field.kind === 'id') config[field.name] = idOption(value, option, publicUrl(target), taken);
    else config[field.name] = resolveField(field, value, option, ctx);
  }
  return { config: config as ServerConfig, target };
}

/** Validates update()'s changes (InvalidOptionError naming `changes.<field>`): the fields given. @internal */
export function resolveUpdate(changes: unknown, ctx: FieldContext): Partial<ServerConfig> {
  if (changes === null || typeof changes !== 'object' || Array.isArray(changes)) throw new InvalidOptionError('changes', 'an object', changes);
  for (const key of Object.keys(changes)) {
    // A field fixed for the server's life is named as such, not as a misspelling.
    if (FIELD_NAMES.includes(key) && !UPDATABLE_NAMES.includes(key))
      throw new InvalidOptionError(`changes.${key}`, `one of ${UPDATABLE_NAMES.join(', ')} (${key} is fixed when the server is added)`, key);
  }
  const given = objectOption(changes, 'changes', UPDATABLE_NAMES);
  const out: Record<string, unknown> = {};
  for (const field of UPDATABLE) {
    if (given[field.name] !== undefined) out[field.name] = resolveField(field, given[field.name], `changes.${field.name}`, ctx);
  }
  return out as Partial<ServerConfig>;
}

/** Applies resolved changes to a peer, then what depends on the fields that changed. @internal */
export function applyUpdate(peer: Peer, changes: Partial<ServerConfig>): void {
  const target = peer as unknown as Record<string, unknown>;
  const changed: ServerField[] = [];
  for (const field of UPDATABLE) {
    if (!Object.hasOwn(changes, field.name)) continue;
    const value = changes[field.name];
    if (target[field.name] !== value) changed.push(field);
    target[field.name] = value;
  }
  for (const field of changed) field.changed?.(peer);
}

/** A server's settings as the pool reports them ({@link ServerInfo}). @internal */
export function serverInfo(peer: Peer): ServerInfo {
  const out: Record<string, unknown> = {};
  for (const field of SERVER_FIELDS) out[field.name] = peer[field.name];
  out.sid = peer.sid;
  return out as unknown as ServerInfo;
}

function resolveField(field: ServerField, value: unknown, option: string, ctx: FieldContext): number | string | boolean {
  let resolved: number | string | boolean;
  switch (field.kind) {
    case 'integer':
      resolved = integerOption(value, option, field.default as number, { min: field.min ?? 0 });
      break;
    case 'duration':
      resolved = durationOption(value, option, field.default as number | string);
      break;
    case 'boolean':
      resolved = booleanOption(value, option, field.default as boolean);
      break;
    case 'route':
      resolved = value === undefined ? (field.default as string) : routeOption(value, option);
      break;
    default:
      throw new InvalidOptionError(option, 'a field set when the server is added', value);
  }
  if (field.needs !== undefined && resolved !== field.default && !ctx.capabilities[field.needs.capability]) {
    throw new InvalidOptionError(option, field.needs.refusal(ctx.method), value);
  }
  return resolved;
}

function routeOption(value: unknown, option: string): string {
  if (typeof value !== 'string' || value === '' || value.length > 32 || !/^[\x21-\x7e]+$/.test(value) || /[;,"\\]/.test(value)) {
    throw new InvalidOptionError(option, 'a route of 1 to 32 visible characters without ; , " or \\', value);
  }
  return value;
}

/** The id given, or the url's (with `#2`, `#3`… when another server has it). */
function idOption(value: unknown, option: string, url: string, taken: (id: string) => boolean): string {
  if (value !== undefined) {
    if (typeof value !== 'string' || value === '') throw new InvalidOptionError(option, 'a non-empty string', value);
    return value;
  }
  let id = url;
  for (let n = 2; taken(id); n++) id = `${url}#${n}`;
  return id;
}

function parseTarget(url: unknown, option: string): PeerTarget {
  if (typeof url !== 'string') throw new InvalidOptionError(option, 'an http:// or https:// url', url);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidOptionError(option, 'an http:// or https:// url with a host', redact(url));
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.hostname === '') {
    throw new InvalidOptionError(option, 'an http:// or https:// url with a host', redact(url));
  }
  if (parsed.search !== '' || parsed.hash !== '') throw new InvalidOptionError(option, 'a url without query or fragment', redact(url));
  const hostname = parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname;
  const port = parsed.port === '' ? (parsed.protocol === 'https:' ? 443 : 80) : Number(parsed.port);
  const prefix = parsed.pathname === '/' ? '' : parsed.pathname.replace(/\/$/, '');
  const auth = parsed.username !== '' ? `${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}` : undefined;
  return { protocol: parsed.protocol, hostname, port, prefix, authority: parsed.host, server: serverText(url, parsed.host), auth };
}

/** The url's authority as written, without credentials (nginx's `server` text); the normalized one if it cannot be cut out. */
function serverText(url: string, normalized: string): string {
  const m = /^\s*[a-z][a-z0-9+.-]*:\/\/([^/?#\\]*)/i.exec(url);
  if (m === null) return normalized;
  const raw = m[1]!;
  const text = raw.slice(raw.lastIndexOf('@') + 1);
  return text === '' || /\s/.test(text) ? normalized : text;
}

/** Hides `user:password@` (up to the last `@` of the authority, a password may contain `@`). */
function redact(url: string): string {
  return url.replace(/\/\/[^/?#]*@/, '//***@');
}

function publicUrl(t: PeerTarget): string {
  return `${t.protocol}//${t.authority}${t.prefix}`;
}
