/**
 * switchyard: NGINX and NGINX Plus reverse-proxy powers for Node HTTP apps,
 * one middleware at a time.
 * @module switchyard
 */
export { createPool, UpstreamPool } from './pool/index.ts';
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
  StateChange,
  StreamPoolStats,
  StreamServerStats,
} from './pool/index.ts';
export type { ServerEvent, ServerInfo, ServerOptions, ServerState, ServerStats, ServerUpdate } from './pool/index.ts';

export { sync, SyncHandle, DEFAULT_STATS_INTERVAL, DEFAULT_SYNC_NAMESPACE, DEFAULT_SYNC_TIMEOUT } from './sync/index.ts';
export type { InstanceReport, RedisClientLike, RedisClusterLike, RedisSentinelLike, SyncEvents, SyncOptions } from './sync/index.ts';

export { streamBalance, DEFAULT_PROXY_PROTOCOL_TIMEOUT, DEFAULT_STREAM_CONNECT_TIMEOUT, DEFAULT_STREAM_IDLE_TIMEOUT } from './stream/index.ts';
export type { StreamBalanceOptions, StreamEvents, StreamHandler, StreamSession, StreamSessionCounters, StreamZoneStats } from './stream/index.ts';

export { balance } from './balance/index.ts';
export type { BalanceMiddleware, BalanceOptions, NextUpstreamCondition, PoolSelector } from './balance/index.ts';
export type {
  HookHeaderInit,
  HookHeaders,
  HookServer,
  OnRequestHook,
  OnResponseHook,
  RequestHookContext,
  ResponseHookContext,
} from './proxy/hooks.ts';
export type { CookieFlag, CookieFlagsRule, CookieOptions, CookieRewriteRule } from './proxy/cookies.ts';
export type { RedirectOption, RedirectRule } from './proxy/redirect.ts';
export {
  DIAGNOSTICS_CHANNELS,
  type CacheStatusMessage,
  type PoolChangeMessage,
  type PoolStateMessage,
  type RequestStartMessage,
  type StoreErrorMessage,
  type UpstreamAttemptMessage,
  type UpstreamEndMessage,
  type UpstreamEndOutcome,
  type UpstreamErrorFailure,
  type UpstreamErrorMessage,
  type UpstreamHeaderMessage,
  type UpstreamServerRef,
} from './core/diagnostics.ts';
export { rewrite } from './rewrite/index.ts';
export type { Condition, ConditionOperator, RewriteFlag, RewriteOptions, RewriteRule } from './rewrite/index.ts';
export { fromNginx } from './rewrite/nginx.ts';
export type { FromNginxOptions } from './rewrite/nginx.ts';
export { fromApache } from './rewrite/apache.ts';
export type { FromApacheOptions } from './rewrite/apache.ts';
export { cache } from './cache/index.ts';
export type {
  CacheCounter,
  CacheMiddleware,
  CacheOptions,
  CacheStats,
  CacheStatus,
  CacheWriteCounter,
  RequestSwitch,
  UseStaleCondition,
} from './cache/index.ts';
export { CacheStore, createMemoryStore } from './store/index.ts';
export type {
  CacheEntry,
  CacheStoreEvents,
  CacheStoreOptions,
  MemoryStore,
  MemoryStoreOptions,
  StoreBreakerOptions,
  StoreBreakerState,
  StoreOption,
} from './store/index.ts';
export type { IgnorableHeader, ValidCodes, ValidOption, ValidRule } from './cache/policy.ts';
export {
  DEFAULT_LIMIT_CONN_ZONE,
  DEFAULT_LIMIT_MAX_KEYS,
  DEFAULT_LIMIT_REQ_ZONE,
  DEFAULT_LIMIT_STATUS,
  limitConnections,
  limitRequests,
} from './limit/index.ts';
export type {
  ConnectionLimit,
  LimitClock,
  LimitConnectionsMiddleware,
  LimitConnectionsOptions,
  LimitConnectionsStats,
  LimitEvents,
  LimitKey,
  LimitRequestsMiddleware,
  LimitRequestsOptions,
  LimitRequestsStats,
  LimitZones,
  Rate,
  RequestLimit,
} from './limit/index.ts';
export { sticky } from './sticky/index.ts';
export type {
  LearnCreateSource,
  LearnLookupSource,
  RouteSource,
  StickyCookieOptions,
  StickyLearnOptions,
  StickyMiddleware,
  StickyOptions,
} from './sticky/index.ts';
export { ADD_HEADER_STATUSES, DEFAULT_SHAPE_ALWAYS, shapeResponse } from './shape/index.ts';
export type { ShapeContext, ShapeErrorListener, ShapeResponseOptions } from './shape/index.ts';
export { healthCheck, DEFAULT_UDP_PROBE } from './health/index.ts';
export type {
  HeaderCondition,
  HealthCheck,
  HealthCheckEvents,
  HealthCheckOptions,
  HealthClock,
  MatchOptions,
  ProbeResult,
  StreamExpect,
} from './health/index.ts';
export { monitor } from './monitor/index.ts';
export type { MonitorMiddleware, MonitorOptions } from './monitor/index.ts';
export { upgrade } from './proxy/upgrade.ts';
export type { ProxyUpgradeHandler, UpgradeHandler, UpgradeOptions } from './proxy/upgrade.ts';
export type { TrustProxy } from './proxy/trust.ts';
export { chain, respondWithError } from './core/chain.ts';
export type { ChainOptions, Middleware, Next } from './core/chain.ts';
export { exchange } from './core/exchange.ts';
export type { Captures, ConnectionFacts, Exchange, ExchangeServer, ResponseHook } from './core/exchange.ts';
export { compileTemplate } from './core/variables.ts';
export type { Template } from './core/variables.ts';
export {
  accessLog,
  COMBINED_FORMAT,
  DEFAULT_ACCESS_LOG_BUFFER,
  DEFAULT_ACCESS_LOG_ESCAPE,
  DEFAULT_ACCESS_LOG_FLUSH,
  DEFAULT_ACCESS_LOG_FORMAT,
  DEFAULT_ACCESS_LOG_MAX_PENDING,
  DEFAULT_REQUEST_ID_HEADER,
  requestId,
} from './log/index.ts';
export type {
  AccessLogContext,
  AccessLogDestination,
  AccessLogCloseOptions,
  AccessLogErrorSource,
  AccessLogEscape,
  AccessLogFormatter,
  AccessLogMiddleware,
  AccessLogOptions,
  AccessLogStats,
  RequestIdOptions,
  RequestIdTrust,
} from './log/index.ts';
export { parseDuration } from './core/duration.ts';
export type { Duration } from './core/duration.ts';
export {
  BadGatewayError,
  BadRequestError,
  BodyConsumedError,
  CacheStoreError,
  ConnectionLimitedError,
  GatewayTimeoutError,
  HookError,
  InvalidOptionError,
  MethodNotAllowedError,
  NoServerAvailableError,
  RateLimitedError,
  ReturnStatusError,
  RewriteCycleError,
  RewriteEmptyError,
  ServerNotFoundError,
  SwitchyardError,
  UnknownPoolError,
  UnsupportedTransferCodingError,
} from './core/errors.ts';
export type { CacheStoreFailure, CacheStoreOperation, SwitchyardErrorOptions } from './core/errors.ts';
