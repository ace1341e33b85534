/**
 * switchyard: NGINX and NGINX Plus reverse-proxy powers for Node HTTP apps,
 * one middleware at a time.
 * @module switchyard
 */
export { createPool, UpstreamPool, RESPONSE_TIME_BUCKETS, DEFAULT_QUEUE_TIMEOUT, DEFAULT_FAIL_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONNS, DEFAULT_MAX_FAILS, DEFAULT_WEIGHT } from './pool/index.ts';
export type {
  AgentSettings,
  MethodOption,
  PoolEvents,
  PoolOptions,
  PoolStats,
  QueueOptions,
  QueueStats,
  ResponseCounters,
  ResponseTimeHistogram,
  HealthCheckStats,
  ServerInfo,
  ServerOptions,
  ServerState,
  ServerStats,
  ServerUpdate,
  StateChange,
} from './pool/index.ts';

export {
  balance,
  DEFAULT_CONNECT_TIMEOUT,
  DEFAULT_HEADER_TIMEOUT,
  DEFAULT_IDLE_TIMEOUT,
  DEFAULT_NEXT_UPSTREAM,
  DEFAULT_NO_SERVER_STATUS,
  DEFAULT_RETRY_BODY_LIMIT,
} from './balance/index.ts';
export type { BalanceMiddleware, BalanceOptions, NextUpstreamCondition } from './balance/index.ts';
export { DIAGNOSTICS_CHANNELS, type CacheStatusMessage, type PoolChangeMessage, type PoolStateMessage, type RequestStartMessage, type StoreErrorMessage, type UpstreamAttemptMessage, type UpstreamEndMessage, type UpstreamEndOutcome, type UpstreamErrorFailure, type UpstreamErrorMessage, type UpstreamHeaderMessage, type UpstreamServerRef } from './core/diagnostics.ts';
export { rewrite } from './rewrite/index.ts';
export type { Condition, ConditionOperator, RewriteFlag, RewriteOptions, RewriteRule } from './rewrite/index.ts';
export { fromNginx, DEFAULT_NGINX_IGNORE } from './rewrite/nginx.ts';
export type { FromNginxOptions } from './rewrite/nginx.ts';
export { fromApache, DEFAULT_APACHE_CONTEXT } from './rewrite/apache.ts';
export type { FromApacheOptions } from './rewrite/apache.ts';
export { cache, DEFAULT_CACHE_BODIES, DEFAULT_CACHE_TRUST_PROXY, DEFAULT_LOCK_AGE, DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_ENTRY_SIZE, DEFAULT_STATUS_HEADER, DEFAULT_UNKEYED_HEADERS } from './cache/index.ts';
export type { CacheCounter, CacheMiddleware, CacheOptions, CacheStats, CacheStatus, CacheWriteCounter, RequestSwitch, UseStaleCondition } from './cache/index.ts';
export { CacheStore, createMemoryStore, estimateSize, ENTRY_OVERHEAD, UNKNOWN_VALUE_SIZE, DEFAULT_BREAKER_FAILURES, DEFAULT_INACTIVE, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_PROBE_DELAY, DEFAULT_NAMESPACE, DEFAULT_PROBE_DELAY, DEFAULT_STORE_TIMEOUT } from './store/index.ts';
export type { CacheEntry, CacheStoreEvents, CacheStoreOptions, MemoryStore, MemoryStoreOptions, StoreBreakerOptions, StoreBreakerState, StoreOption } from './store/index.ts';
export { compilePolicy, compileValid, freshness, DEFAULT_VALID_CODES, MAX_VARY_LENGTH } from './cache/policy.ts';
export type { CachePolicy, CachePolicyOptions, CompiledValid, Freshness, FreshnessRequest, HeadersInput, IgnorableHeader, NotStoredReason, TtlSource, ValidCodes, ValidOption, ValidRule } from './cache/policy.ts';
export { sticky, cookieDate, DEFAULT_LEARN_MEMORY, DEFAULT_LEARN_NAMESPACE, DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TIMEOUT, DEFAULT_STICKY_COOKIE, MAX_STICKY_VALUE } from './sticky/index.ts';
export type { LearnCreateSource, LearnLookupSource, RouteSource, StickyCookieOptions, StickyLearnOptions, StickyMiddleware, StickyOptions } from './sticky/index.ts';
export { healthCheck, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, MAX_PROBE_BODY } from './health/index.ts';
export type { HeaderCondition, HealthCheck, HealthCheckEvents, HealthCheckOptions, HealthClock, MatchOptions, ProbeResult } from './health/index.ts';
export { monitor, PROMETHEUS_CONTENT_TYPE, STATE_NUMBERS } from './monitor/index.ts';
export type { MonitorMiddleware, MonitorOptions } from './monitor/index.ts';
export { upgrade } from './proxy/upgrade.ts';
export type { ProxyUpgradeHandler, UpgradeHandler, UpgradeOptions } from './proxy/upgrade.ts';
export type { TrustProxy } from './proxy/trust.ts';
export { chain, respondWithError, statusOf } from './core/chain.ts';
export type { ChainOptions, Middleware, Next } from './core/chain.ts';
export { exchange } from './core/exchange.ts';
export type { Captures, ConnectionFacts, Exchange, ExchangeServer, ResponseHook } from './core/exchange.ts';
export { compileTemplate } from './core/variables.ts';
export type { Template } from './core/variables.ts';
export { parseDuration } from './core/duration.ts';
export type { Duration } from './core/duration.ts';
export {
  BadGatewayError,
  BadRequestError,
  CacheStoreError,
  GatewayTimeoutError,
  InvalidOptionError,
  NoServerAvailableError,
  ServerNotFoundError,
  SwitchyardError,
  UnsupportedTransferCodingError,
  UpstreamStatusError,
} from './core/errors.ts';
export type { CacheStoreFailure, CacheStoreOperation, SwitchyardErrorOptions } from './core/errors.ts';
