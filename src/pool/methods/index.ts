// The registry of balancing methods: each method's file exports its definition (names, parameters
// and their validation, capabilities, balancer), and this file lists them. Adding a method is its
// file and its entry here: a row of METHODS, and its form in MethodOption (what users write).
import type { IncomingMessage } from 'node:http';
import { InvalidOptionError } from '../../core/errors.ts';
import { nearest, objectOption } from '../../core/options.ts';
import { HASH, IP_HASH } from './hash.ts';
import { LEAST_CONN } from './least-conn.ts';
import { LEAST_TIME } from './least-time.ts';
import { RANDOM } from './random.ts';
import { ROUND_ROBIN } from './round-robin.ts';
import type { Balancer, MethodCapabilities, MethodDefinition, MethodEnvironment } from './types.ts';

/** A balancing method and its parameters. Kebab-case names; nginx's (`least_conn`) are accepted too. */
export type MethodOption =
  | 'round-robin'
  | 'least-conn'
  | 'least-time'
  | 'ip-hash'
  | 'random'
  | 'random-two'
  | {
      /** The method, written as an object. */
      name: 'round-robin' | 'least-conn' | 'ip-hash';
    }
  | {
      /** Least time: the lowest estimated time to serve, average time × (1 + active connections), per unit of weight. */
      name: 'least-time';
      /**
       * Time to the response header or to the last byte; for streamBalance() also `connect` (time to
       * connect) and `first-byte` (time to the server's first byte, the stream's `header`). @default 'header'
       */
      measure?: 'header' | 'last-byte' | 'connect' | 'first-byte' | undefined;
      /** Count the age of requests still in flight. @default false */
      inflight?: boolean | undefined;
    }
  | {
      /** Generic hash: the server is chosen by a hash of the key. */
      name: 'hash';
      /** nginx variables template (`'$request_uri'`, `'$cookie_user'`) or a function of the request. */
      key: string | ((req: IncomingMessage) => string);
      /** Ketama consistent hashing: adding or removing a server moves only its keys. @default false */
      consistent?: boolean | undefined;
    }
  | {
      /** Random: a server drawn at random by weight. */
      name: 'random';
      /** Draw two servers and use the less loaded one. @default false */
      two?: boolean | undefined;
    };

/** Every balancing method, in the order error messages list them. @internal */
export const METHODS: readonly MethodDefinition[] = Object.freeze([ROUND_ROBIN, LEAST_CONN, LEAST_TIME, HASH, IP_HASH, RANDOM]);

/** The default method (nginx's). @internal */
export const DEFAULT_METHOD = 'round-robin';

/** A method option resolved: the name reported, what it allows, and a maker of balancers. @internal */
export interface ResolvedMethod {
  readonly name: string;
  readonly capabilities: MethodCapabilities;
  create(env: MethodEnvironment): Balancer;
}

/** Every name the registry answers to, aliases included. @internal */
export function methodNames(): string[] {
  return METHODS.flatMap((m) => [m.name, ...Object.keys(m.aliases ?? {})]);
}

/**
 * Finds the method an option names and validates its parameters (InvalidOptionError naming
 * `method`, `method.name` or `method.<parameter>`; an unknown parameter is named with the nearest
 * known one). @internal
 */
export function resolveMethod(option: MethodOption | undefined): ResolvedMethod {
  const spec = option ?? DEFAULT_METHOD;
  const raw = typeof spec === 'string' ? spec : spec?.name;
  if (typeof raw !== 'string') throw new InvalidOptionError('method', 'a method name or { name, ... }', spec);
  const name = raw.replace(/_/g, '-');
  const definition = METHODS.find((m) => m.name === name || Object.hasOwn(m.aliases ?? {}, name));
  if (definition === undefined) {
    const near = nearest(name, methodNames());
    throw new InvalidOptionError('method', `one of ${methodNames().join(', ')}${near === undefined ? '' : ` (did you mean "${near}"?)`}`, raw);
  }
  const given = typeof spec === 'object' ? objectOption(spec, 'method', ['name', ...Object.keys(definition.parameters)]) : {};
  const params: Record<string, unknown> = {};
  for (const [key, check] of Object.entries(definition.parameters)) params[key] = check(given[key], `method.${key}`);
  if (name !== definition.name) Object.assign(params, definition.aliases![name]);
  return Object.freeze({
    name: definition.label?.(params) ?? definition.name,
    capabilities: definition.capabilities(params),
    create: (env: MethodEnvironment) => definition.create(params, env),
  });
}
