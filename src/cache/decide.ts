/**
 * What `cache()` does with a request: answer it from the store (HIT, UPDATING, STALE), purge, or send
 * it on down the chain (MISS, EXPIRED, BYPASS) as nginx's `proxy_cache` directives say: methods,
 * bypass, a body, `min_uses`, the lock and its age, `updating` and background updates.
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Next } from '../core/chain.ts';
import { BadRequestError } from '../core/errors.ts';
import { exchange, type Exchange } from '../core/exchange.ts';
import type { CacheEntry, CacheStore } from '../store/index.ts';
import { Capture } from './capture.ts';
import { lookupEntry, metaOf, servableNow, sharedAllowed } from './entry.ts';
import { hasBody, resolveOrigin, type Origin } from './forwarding.ts';
import { connectionFacts } from './detached.ts';
import { keyOf, requestKey, type KnownKeys } from './key.ts';
import { waitUntil, type FillTable, type UseCounter } from './lock.ts';
import type { CacheSettings, CacheStatus } from './options.ts';
import { answerPurge, type Purger } from './purge.ts';
import { plainHit, serveEntry, serveStored, type Conditionals } from './serve.ts';
import { setEarlyHit, setStatus, type CacheCounters } from './stats.ts';
import type { CacheCluster } from './sync.ts';

/** One cache: its settings, its store, and what it keeps per process. */
export interface CacheContext {
  readonly settings: CacheSettings;
  readonly store: CacheStore;
  readonly stats: CacheCounters;
  /** Fills in flight per key (lock, updating). */
  readonly fills: FillTable;
  /** Requests per key (min uses). */
  readonly uses: UseCounter;
  readonly purger: Purger;
  /** The cache's part of the cluster-wide state (option `sync`): locks, use counts, purges and fills shared. */
  readonly cluster: CacheCluster | undefined;
  /** The fast HIT path's keys, with the memory store's prefix (undefined with another store). */
  readonly known: KnownKeys | undefined;
}

/**
 * One request on its way through a cache, from its key on: what answering it, or sending it on down
 * the chain and capturing its response, takes. Made once by {@link decide}, handed to the capture.
 */
export interface CacheCall {
  readonly ctx: CacheContext;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly next: Next;
  readonly ex: Exchange;
  /** The request's store key. */
  readonly base: string;
  /** What the key was built from: a response is stored only if the upstream was told the same. */
  readonly origin: Origin;
}

/** How many times a request that waited on the lock looks the entry up again before going upstream itself. */
const LOCK_ROUNDS = 3;

/** Answers the request with `entry` (honouring its conditionals, range and HEAD) and counts it. */
function answer({ ctx, req, res, ex }: CacheCall, entry: CacheEntry, status: CacheStatus): void {
  setStatus(ex, status);
  // The request's headers serve as its conditionals (Node joins repeated ones into one string).
  ctx.stats.count(status, serveEntry(res, req.method ?? 'GET', entry, req.headers as Conditionals, ctx.settings.statusHeader, status));
}

/** `noCache`, or a header that is not keyed but could change the response (forwarding ones are judged once sent). */
function refuseStore(settings: CacheSettings, req: IncomingMessage, ex: Exchange): boolean {
  for (const h of settings.unkeyedOthers) if (req.headers[h] !== undefined) return true;
  return settings.noCache !== undefined && settings.noCache(req, ex);
}

/**
 * A HIT that needs no exchange record: the default key on the in-process store, nothing before the
 * cache having rewritten the request, no body, no trusted proxy to resolve. Whether it answered.
 */
export function fastHit(ctx: CacheContext, req: IncomingMessage, res: ServerResponse): boolean {
  const memory = ctx.store.memory;
  if (memory === undefined || ctx.known === undefined) return false;
  const key = ctx.known.storeKey(ctx.settings, req);
  if (key === undefined) return false;
  const entry = memory.getSync<CacheEntry>(key);
  if (entry === undefined || !servableNow(entry, req, ctx.settings.now())) return false;
  setEarlyHit(req);
  const c = req.headers as Conditionals;
  const bytes = plainHit(c)
    ? serveStored(res, req.method!, entry, ctx.settings.statusHeader, 'HIT', req.httpVersionMajor !== 2)
    : serveEntry(res, req.method!, entry, c, ctx.settings.statusHeader, 'HIT');
  ctx.stats.count('HIT', bytes);
  return true;
}

/**
 * A purge request (option `purge`): its key's entries removed, answered 204 or 404 (400 for a Host
 * that is not a host name). False when the request is not one.
 */
function purgeRequest(ctx: CacheContext, req: IncomingMessage, res: ServerResponse, next: Next, ex: Exchange, origin: Origin | undefined): boolean {
  const check = ctx.settings.purge;
  if (check === undefined) return false;
  let key: string;
  try {
    if (!check(req, ex)) return false;
    if (origin === undefined) throw new BadRequestError('Invalid Host header');
    key = keyOf(ctx.settings, req, ex, origin);
  } catch (err) {
    next(err);
    return true;
  }
  ctx.purger.purge(key).then(
    (n) => answerPurge(res, key, n),
    (err: unknown) => next(err),
  );
  return true;
}

/**
 * The general path of a request: its key, then the store, then an answer or the way on down the
 * chain. Errors of the user's functions (key, bypass) go to `next`.
 */
export function decide(ctx: CacheContext, req: IncomingMessage, res: ServerResponse, next: Next): void {
  const settings = ctx.settings;
  const ex = exchange(req);
  const method = req.method ?? 'GET';
  // A Host (or trusted X-Forwarded-Host) that is not a host name (`victim.com/admin`) could forge
  // another URL's key: such requests are not cached at all (nginx answers them 400).
  const origin = resolveOrigin(ex, settings.trust);
  if (purgeRequest(ctx, req, res, next, ex, origin)) return;
  if (!settings.methods.has(method) || !ex.uriValid || origin === undefined) {
    next();
    return;
  }
  // A body may change the answer and is not in the key (a "fat GET"), unless the user's key reads it.
  const withBody = !settings.cacheBodies && hasBody(req);
  let base: string;
  let skipLookup: boolean;
  try {
    base = requestKey(settings, req, ex, origin, method);
    skipLookup = withBody || (settings.bypass !== undefined && settings.bypass(req, ex));
  } catch (err) {
    next(err);
    return;
  }
  const call: CacheCall = { ctx, req, res, next, ex, base, origin };
  if (skipLookup) {
    Capture.start(call, { status: 'BYPASS', noStore: withBody || refuseStore(settings, req, ex) });
    return;
  }
  // Entries held in this process: a fresh one is answered without a promise.
  if (ctx.store.memory !== undefined) {
    const entry = ctx.store.getSync(base);
    if (entry !== undefined && servableNow(entry, req, settings.now())) {
      answer(call, entry, 'HIT');
      return;
    }
  }
  respond(call, 0).catch((err: unknown) => {
    if (res.headersSent) res.destroy();
    else next(err);
  });
}

/**
 * Looks the key up: a fresh entry is a HIT; an expired one is UPDATING while another request
 * updates it (here, or in another instance with `sync`), STALE with a background update, else
 * EXPIRED (fetched, maybe revalidated); none is a MISS, after `minUses` counting and waiting on
 * the lock. `round`: lookups after waiting; `counted`: the `minUses` count of the first round.
 */
async function respond(call: CacheCall, round: number, counted?: boolean | Promise<boolean>): Promise<void> {
  const { ctx, req, res, ex, base } = call;
  const { settings, store, fills, cluster } = ctx;
  let entry = await lookupEntry(store, base, ex, settings.trust);
  if (entry !== undefined && req.headers.authorization !== undefined && !sharedAllowed(entry)) entry = undefined;
  const meta = entry === undefined ? undefined : metaOf(entry);
  const t = settings.now();
  const noStore = refuseStore(settings, req, ex);
  if (entry !== undefined && meta !== undefined) {
    if (t < meta.expiresAt) {
      answer(call, entry, 'HIT');
      return;
    }
    const swr = t < meta.expiresAt + meta.swr;
    const current = fills.get(base);
    const canServeUpdating = settings.useStale.has('updating') || swr;
    if (current !== undefined && t - current.since < settings.lockAge && canServeUpdating) {
      answer(call, entry, 'UPDATING');
      return;
    }
    if (!canServeUpdating) {
      Capture.start(call, { status: 'EXPIRED', noStore, fill: fills.claim(base), stale: entry });
      return;
    }
    // One update at a time per key, across the instances with `sync`.
    const fill = fills.claim(base);
    const lock = cluster?.active ? await cluster.take(base, fill) : undefined;
    if (lock === 'busy') {
      answer(call, entry, 'UPDATING');
      return;
    }
    if (settings.backgroundUpdate) {
      const facts = connectionFacts(req);
      answer(call, entry, 'STALE');
      // The update runs once the client's response is over, so no event of it reaches the handler.
      const stale = entry;
      res.once('close', () => Capture.start(call, { status: 'EXPIRED', noStore, detached: facts, fill, lock, stale }));
      return;
    }
    Capture.start(call, { status: 'EXPIRED', noStore, fill, lock, stale: entry });
    return;
  }
  // Not found: count the use (nginx min_uses) once, then maybe wait for another request populating it.
  const allowed = counted ?? use(call);
  const storing = typeof allowed === 'boolean' ? { noStore: noStore || !allowed } : { noStore, allowed };
  if (!settings.lock) {
    Capture.start(call, { status: 'MISS', ...storing });
    return;
  }
  const started = settings.now();
  let current = fills.get(base);
  for (;;) {
    if (current === undefined) {
      // Nobody here fills the key: this request does, unless (`sync`) another instance does.
      const fill = fills.claim(base);
      const lock = cluster?.active ? await cluster.take(base, fill) : undefined;
      if (lock !== 'busy') {
        // A fill elsewhere may have ended just before the lock was free: its entry is served.
        const found = lock === undefined ? undefined : await lookupEntry(store, base, ex, settings.trust);
        if (found !== undefined && servableNow(found, req, settings.now())) {
          fill.release();
          cluster?.finished(base, lock, undefined, 0);
          answer(call, found, 'HIT');
          return;
        }
        Capture.start(call, { status: 'MISS', ...storing, fill, lock });
        return;
      }
      // `fill` now stands for the other instance's fill: wait for it as for one of this instance.
      current = fill;
    }
    const waitFor = Math.min(started + settings.lockTimeout, current.since + settings.lockAge) - settings.now();
    if (waitFor > 0 && (await waitUntil(current.done, waitFor))) {
      if (round < LOCK_ROUNDS) return respond(call, round + 1, allowed);
      break;
    }
    if (settings.now() >= started + settings.lockTimeout) {
      // nginx: past the lock timeout the request goes upstream and its response is not cached.
      Capture.start(call, { status: 'MISS', noStore: true });
      return;
    }
    // Past the lock age one more request may go upstream: this one, when the cluster lets it.
    current = settings.now() >= current.since + settings.lockAge ? undefined : fills.get(base);
  }
  Capture.start(call, { status: 'MISS', ...storing, fill: fills.claim(base) });
}

/**
 * Counts the request for `minUses`: whether its response may be stored, or (`sync`) the answer of
 * the count across instances to come. Counted here too, which answers when the engine cannot.
 */
function use({ ctx, base }: CacheCall): boolean | Promise<boolean> {
  const { settings, uses, cluster } = ctx;
  const here = uses.use(base);
  if (settings.minUses <= 1 || cluster === undefined || !cluster.active) return here;
  return cluster.count(base).then(
    (n) => n >= settings.minUses,
    () => here,
  );
}
