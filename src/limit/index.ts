// Rate and connection limiting (issue 18): limitRequests() is nginx's limit_req, limitConnections()
// its limit_conn, with nginx's arithmetic; zone.ts holds the per-key states, delay.ts the delayed
// requests.
export {
  DEFAULT_LIMIT_MAX_KEYS,
  DEFAULT_LIMIT_REQ_ZONE,
  DEFAULT_LIMIT_STATUS,
  type LimitClock,
  type LimitEvents,
  type LimitKey,
  type LimitRequestsMiddleware,
  type LimitRequestsOptions,
  type LimitRequestsStats,
  type LimitZones,
  limitRequests,
  type Rate,
  type RequestLimit,
} from './requests.ts';
export {
  type ConnectionLimit,
  DEFAULT_LIMIT_CONN_ZONE,
  type LimitConnectionsMiddleware,
  type LimitConnectionsOptions,
  type LimitConnectionsStats,
  limitConnections,
} from './connections.ts';
