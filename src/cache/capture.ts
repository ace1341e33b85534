/**
 * Capturing a response for `cache()`: a request sent on down the chain (MISS, EXPIRED, BYPASS, or a
 * background update) has its response watched as it streams to the client, judged by nginx's rules
 * when its header comes, copied while it is under `maxEntrySize`, and stored once it is complete.
 * The cache may answer with its stale entry instead (REVALIDATED on a 304, STALE on a failure).
 * @module
 */
import { performance } from 'node:perf_hooks';
import type { ConnectionFacts } from '../core/exchange.ts';
import { responseFinished } from '../core/http2.ts';
import type { CacheEntry } from '../store/index.ts';
import type { CacheCall } from './decide.ts';
import { DetachedResponse } from './detached.ts';
import { CACHE_ONLY, mergeHeaders, metaOf, saveEntry, withoutCacheOnly, type Meta, type Written } from './entry.ts';
import { toldAsKeyed } from './forwarding.ts';
import { intercept, type HeadDecision, type InterceptHooks } from './intercept.ts';
import type { Fill } from './lock.ts';
import type { CacheStatus } from './options.ts';
import { freshness, type Freshness } from './policy.ts';
import { CLIENT_CONDITIONALS, conditionalsOf, entryHeader, serveEntry, type Conditionals } from './serve.ts';
import { setStatus } from './stats.ts';
import type { ClusterLock } from './sync.ts';

/** The body of a HEAD's entry. */
const EMPTY = Buffer.alloc(0);

// Conditions a `stale-if-error` (or `stale-while-revalidate`) window covers: the errors of RFC 5861
// §4, upstream 500, 502, 503 and 504 answers included. nginx uses the window only for the failures
// it treats as a failed attempt (a connection error, a timeout, an invalid header), not for a 5xx
// the upstream answers with: a difference kept on purpose (README).
const ERROR_WINDOW = new Set<string>(['error', 'timeout', 'invalid_header', 'http_500', 'http_502', 'http_503', 'http_504']);

/** How a request goes on down the chain, as the cache decided before it did. */
export interface FetchPlan {
  /** MISS, EXPIRED or BYPASS. */
  status: CacheStatus;
  /** Whether the response must not be stored (`noCache`, an unkeyed header, `minUses` not reached, past the lock). */
  noStore: boolean;
  /** The fill this request holds for its key (lock, updating), released when it is over. */
  fill?: Fill | undefined;
  /** The cluster lock it holds for its key (`sync`), given back when it is over. */
  lock?: ClusterLock | undefined;
  /** `minUses` counted across instances: whether the response may be stored, known once the count comes back. */
  allowed?: Promise<boolean> | undefined;
  /** The expired entry, to revalidate or to serve stale. */
  stale?: CacheEntry | undefined;
  /** A background update, with the client's connection as it was while its answer was going. */
  detached?: ConnectionFacts | undefined;
}

/**
 * The response's headers without those set before the cache ran (`preset`) and those balance()'s
 * hooks added (`added`, sticky()'s cookie): the upstream's own, which alone are judged and stored.
 */
function upstreamHeaders(all: string[], preset: readonly string[] | undefined, added: readonly string[] | undefined): string[] {
  if ((preset === undefined || preset.length === 0) && (added === undefined || added.length === 0)) return all;
  const skip = new Set(preset);
  const extra = new Map<string, number>();
  if (added !== undefined)
    for (let i = 0; i < added.length; i += 2)
      extra.set(`${added[i]!.toLowerCase()}\n${added[i + 1]}`, (extra.get(`${added[i]!.toLowerCase()}\n${added[i + 1]}`) ?? 0) + 1);
  const out: string[] = [];
  for (let i = 0; i < all.length; i += 2) {
    const name = all[i]!.toLowerCase();
    if (skip.has(name)) continue;
    const pair = `${name}\n${all[i + 1]}`;
    const left = extra.get(pair);
    if (left !== undefined && left > 0) {
      extra.set(pair, left - 1);
      continue;
    }
    out.push(all[i]!, all[i + 1]!);
  }
  return out;
}

/**
 * Sets how the request goes upstream on its exchange, never on the request: without the client's
 * conditional and range headers (the cache answers those), with the stale entry's validators when
 * it revalidates, and as GET for a HEAD (`convertHead`). Returns whether it revalidates.
 */
function planUpstream({ ctx, req, ex }: CacheCall, stale: CacheEntry | undefined): boolean {
  const { revalidate, convertHead } = ctx.settings;
  let changes = ex.upstreamHeaderChanges;
  for (const name of CLIENT_CONDITIONALS) if (req.headers[name] !== undefined) (changes ??= new Map()).set(name, null);
  let revalidating = false;
  if (revalidate && stale !== undefined && (stale.status === 200 || stale.status === 206)) {
    for (const [header, validator] of [
      ['etag', 'if-none-match'],
      ['last-modified', 'if-modified-since'],
    ] as const) {
      const value = entryHeader(stale.headers, header);
      if (value === undefined) continue;
      changes ??= new Map();
      // After the request's own headers, as the gateway's.
      changes.delete(validator);
      changes.set(validator, value);
      revalidating = true;
    }
  }
  ex.upstreamHeaderChanges = changes;
  if (req.method === 'HEAD' && convertHead) ex.upstreamMethod = 'GET';
  return revalidating;
}

/**
 * One request's capture: the interception's hooks, what was copied so far, and the verdict on
 * storing. Created by {@link Capture.start}, which hands the request on.
 */
export class Capture implements InterceptHooks {
  /** The request, as the cache decided to send it on. */
  readonly #call: CacheCall;
  readonly #plan: FetchPlan;
  /** The client's conditionals, for answering it from the stale entry. */
  readonly #client: Conditionals;
  readonly #staleMeta: Meta | undefined;
  readonly #revalidating: boolean;
  /** A HEAD sent upstream as HEAD (`convertHead: false`): its entry has no body but the upstream's Content-Length. */
  readonly #head: boolean;
  /**
   * Headers set before the request reached the cache (a request id, a CSP nonce): they belong to
   * this response only, as nginx's add_header, and are neither judged nor stored.
   */
  readonly #preset: readonly string[] | undefined;
  /** The purges when the request went upstream: a purge since then may have been of what it fetches. */
  readonly #generation: number;
  /** When it went upstream, on the monotonic clock (other instances judge the entry's age against their purges). */
  readonly #began = performance.now();
  /** Body chunks copied so far; `undefined` when the response is not to be stored. */
  #chunks: Buffer[] | undefined;
  #captured = 0;
  #status = 0;
  #headers: string[] = [];
  #verdict: Freshness | undefined;
  /** Body bytes the client got. */
  #sent = 0;
  #counted = false;
  #settled = false;
  /** The status the client's answer ends up with (REVALIDATED or STALE when the cache answered instead). */
  #served: CacheStatus;

  private constructor(call: CacheCall, plan: FetchPlan) {
    this.#call = call;
    this.#plan = plan;
    this.#client = conditionalsOf(call.req.headers);
    this.#staleMeta = plan.stale === undefined ? undefined : metaOf(plan.stale);
    this.#revalidating = planUpstream(call, plan.stale);
    this.#head = call.req.method === 'HEAD' && !call.ctx.settings.convertHead;
    this.#preset = plan.detached ? undefined : call.res.getHeaderNames();
    this.#generation = call.ctx.purger.generation;
    this.#served = plan.status;
  }

  /** Sends the request on down the chain (`call.next`) with its response captured as `plan` says. */
  static start(call: CacheCall, plan: FetchPlan): void {
    const { req, res, next, ex, base } = call;
    const capture = new Capture(call, plan);
    setStatus(ex, plan.status, base);
    if (plan.detached !== undefined) {
      // The client has its answer: the rest of the chain writes to a stand-in, which feeds the capture.
      ex.detached = true;
      ex.clientConnection = plan.detached;
      DetachedResponse.attach(req, res, capture, plan.detached);
    } else {
      intercept(res, capture);
      res.once('finish', capture.#onFinish);
      res.once('close', capture.#onClose);
    }
    next();
  }

  readonly #onClose = (): void => {
    this.#call.res.off('finish', this.#onFinish);
    this.#finish(responseFinished(this.#call.res));
  };

  readonly #onFinish = (): void => {
    this.#call.res.off('close', this.#onClose);
    // node:http2's compatibility response emits 'finish' when its stream closes, also when the
    // client reset it mid-response.
    this.#finish(responseFinished(this.#call.res));
  };

  /** The handler's status and headers: answer from the stale entry, or let them through (and maybe store). */
  head(status: number, all: string[]): HeadDecision {
    const { ctx, req, ex } = this.#call;
    const settings = ctx.settings;
    const plan = this.#plan;
    const stale = plan.stale;
    const headers = upstreamHeaders(all, this.#preset, ex.addedHeaders);
    // Revalidation answered "not modified": the entry is current again.
    if (this.#revalidating && status === 304 && stale !== undefined) {
      const merged = mergeHeaders(stale.headers, headers);
      const f = freshness(stale.status, merged, req, settings.policy, settings.now());
      if (f.store && !plan.noStore && this.#storable()) {
        this.#chunks = [stale.body];
        this.#captured = stale.body.length;
        this.#status = stale.status;
        this.#headers = merged;
        this.#verdict = f;
      }
      this.#serveStale('REVALIDATED', { ...stale, headers: withoutCacheOnly(merged) });
      return { pass: false };
    }
    if (stale !== undefined && !plan.detached && this.#shouldServeStale(status, stale)) {
      this.#serveStale('STALE', stale);
      return { pass: false };
    }
    if (!plan.noStore && status !== 206 && status !== 304 && this.#storable()) {
      const f = freshness(status, headers, req, settings.policy, settings.now());
      if (f.store) {
        this.#chunks = [];
        this.#status = status;
        this.#headers = headers;
        this.#verdict = f;
      }
    }
    return { pass: true, add: settings.statusHeader === undefined ? undefined : [settings.statusHeader, plan.status], drop: CACHE_ONLY };
  }

  /** A body chunk the handler wrote: counted as sent, and copied while the entry may still be stored. */
  data(chunk: Buffer): void {
    if (this.#served === 'STALE' || this.#served === 'REVALIDATED') return;
    this.#sent += chunk.length;
    if (this.#chunks === undefined || chunk.length === 0) return;
    this.#captured += chunk.length;
    if (this.#captured > this.#call.ctx.settings.maxEntrySize) {
      this.#chunks = undefined;
      return;
    }
    // Chunks may be reused by the writer once written: keep copies.
    this.#chunks.push(Buffer.from(chunk));
  }

  /** The handler ended its response (a background update is complete then; the client's when it finishes). */
  end(): void {
    if (this.#plan.detached) this.#finish(true);
  }

  /** The handler destroyed a background update's response: nothing is stored. */
  abort(): void {
    this.#chunks = undefined;
    this.#finish(false);
  }

  /** The client gets the stale entry (`status` REVALIDATED or STALE) instead of the handler's response. */
  #serveStale(status: CacheStatus, entry: CacheEntry): void {
    this.#served = status;
    const { ctx, req, res, ex, base } = this.#call;
    setStatus(ex, status, base);
    if (this.#plan.detached) return;
    this.#sent = serveEntry(res, req.method ?? 'GET', entry, this.#client, ctx.settings.statusHeader, status);
  }

  /** nginx `proxy_cache_use_stale` and the `stale-if-error` window, for a response with `status` or a failure. */
  #shouldServeStale(status: number, stale: CacheEntry): boolean {
    const meta = this.#staleMeta;
    if (meta === undefined) return false;
    const { ctx, ex } = this.#call;
    const condition = ex.upstreamFailure !== undefined && ex.server === undefined ? ex.upstreamFailure : `http_${status}`;
    if (ctx.settings.useStale.has(condition)) return true;
    // stale-if-error / stale-while-revalidate windows; never a stale 5xx (nginx 1.19.3+).
    return ERROR_WINDOW.has(condition) && ctx.settings.now() < meta.expiresAt + meta.sie && stale.status < 500;
  }

  /**
   * Whether the answer may be stored under a key built from the request's origin, judged once the
   * request went upstream: balance() told the upstream what the key has (its forwarding headers
   * included), or, with another handler, which sees the client's headers as they are, no unkeyed
   * forwarding header came with the request.
   */
  #storable(): boolean {
    const { ctx, req, ex, origin } = this.#call;
    if (ex.upstreamRequestHeaders !== undefined) return toldAsKeyed(ex, origin);
    const headers = req.headers;
    for (const h of ctx.settings.unkeyedForwarding) if (headers[h] !== undefined && !origin.facts.some((f) => f[0] === h)) return false;
    return true;
  }

  /** The response is over (`complete`, or cut short): counted, and stored when it may be. */
  #finish(complete: boolean): void {
    if (this.#settled) return;
    const ctx = this.#call.ctx;
    if (!this.#counted && !this.#plan.detached) {
      this.#counted = true;
      ctx.stats.count(this.#served, this.#sent);
    }
    const chunks = this.#chunks;
    const verdict = this.#verdict;
    if (!complete || chunks === undefined || verdict === undefined) return this.#settle();
    // A HEAD's entry has no body, whatever its Content-Length says (and whatever a local handler wrote).
    const body = this.#head ? EMPTY : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#captured);
    this.#chunks = undefined;
    const length = entryHeader(this.#headers, 'content-length');
    // A response cut short is not stored.
    if (!this.#head && length !== undefined && Number(length) !== body.length) return this.#settle();
    void this.#save(body, verdict);
  }

  /** Stores the complete response unless `minUses` (counted across instances) or a purge since it went upstream says no. */
  async #save(body: Buffer, verdict: Freshness): Promise<void> {
    const { ctx, ex, base } = this.#call;
    let written: Written[] | undefined;
    try {
      if (this.#plan.allowed !== undefined && !(await this.#plan.allowed)) return;
      // A purge since this request went upstream (made here or heard from another instance): what it fetched may be what was purged.
      if (!ctx.purger.mayStore(base, this.#generation)) return;
      const list: Written[] = [];
      if (await saveEntry(ctx.store, ctx.settings, base, ex, this.#status, this.#headers, body, verdict, list, this.#head)) {
        ctx.stats.written(this.#plan.status, body.length);
        written = list;
      }
    } catch {
      // The store failed open; nothing more to do.
    } finally {
      this.#settle(written);
    }
  }

  /** Done: the key is free for the next fill, here and (`sync`) in the cluster, whose instances hear what was `written`. */
  #settle(written?: Written[]): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#plan.fill?.release();
    const { ctx, base } = this.#call;
    ctx.cluster?.finished(base, this.#plan.lock, written, performance.now() - this.#began);
  }
}
