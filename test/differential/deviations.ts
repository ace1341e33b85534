// The differential suite's judgements: which differences from nginx are meant (DEVIATIONS, each
// with its reason and the README text that documents it) and which are issue 16 items switchyard
// does not do right yet (KNOWN_FAILING). A case that differs must be in one of the two, with
// `shows` naming every difference it makes (a prefix of the difference line, such as 'status' or
// 'upstream headers'); an entry whose case agrees fails the suite, so both lists stay true: a fix
// removes its KNOWN_FAILING entry, a decision to keep switchyard's behaviour moves it to DEVIATIONS
// with a README bullet under "Where switchyard differs from nginx, and why".

export interface Entry {
  /** Substrings that every difference line of the case contains one of. */
  readonly shows: readonly string[];
}

export interface Deviation extends Entry {
  readonly reason: string;
  /** Text of the README that documents it (found in README.md; most under "Where switchyard differs from nginx, and why"). */
  readonly readme: string;
}

export interface Known extends Entry {
  /** The item of issue 16 it stands for. */
  readonly item: string;
}

export const DEVIATIONS: Readonly<Record<string, Deviation>> = {
  'post-chunked': {
    reason: 'request bodies stream: a chunked body goes on chunked; nginx buffers it and sends Content-Length',
    readme: '**Request bodies** stream instead of being buffered to disk',
    shows: ['upstream headers', 'upstream body framing'],
  },
  'delete-chunked-body': {
    reason: 'request bodies stream: a chunked DELETE body goes on chunked; nginx buffers it and sends Content-Length',
    readme: '**Request bodies** stream instead of being buffered to disk',
    shows: ['upstream headers', 'upstream body framing'],
  },
  'req-header-x-forwarded-from-client': {
    reason: "a client's X-Forwarded-For and X-Real-IP are removed unless it is a trusted proxy (nginx passes them on)",
    readme: '**X-Forwarded headers** are set by default',
    shows: ['upstream headers'],
  },
  'req-x-forwarded-default': {
    reason: 'switchyard also writes RFC 7239 Forwarded (nginx sets no forwarding header unless configured)',
    readme: '**X-Forwarded headers** are set by default',
    shows: ['upstream headers'],
  },
  'server-name-default': {
    reason: 'a host no server block names passes through the rules; nginx uses its first server',
    readme: '**No default server in rewrite().**',
    shows: ['response body', 'upstream requests'],
  },
  'options-asterisk': {
    reason: 'OPTIONS * goes upstream in absolute form; nginx 1.22 answers it 400',
    readme: '**`OPTIONS *`** goes upstream in absolute form',
    shows: ['status', 'upstream requests'],
  },
  'get-backslash-encoded-climb': {
    reason: '`\\` (and %5c) is read as `/`, so /..%5cx climbs above the root: 400 (nginx on Linux passes it on)',
    readme: 'and `\\` read as `/`), and a path that climbs above the root is answered 400',
    shows: ['status', 'upstream requests'],
  },
  'get-fragment': {
    reason: 'a fragment is cut from the target, so the upstream never gets it; nginx sends /a/b#frag on',
    readme: 'and the upstream never gets the fragment',
    shows: ['upstream request line'],
  },
  'rewrite-uri-variable': {
    reason: 'a decoded variable ($uri) in the arguments is percent-encoded; nginx copies it and sends a space in the request line',
    readme: "In a replacement's arguments, captures and decoded variables",
    shows: ['upstream request line'],
  },
  'rewrite-capture-args-encoded': {
    reason: 'a capture put into the arguments is percent-encoded and cannot add arguments; nginx injects v=a&b=c',
    readme: 'and they cannot add arguments',
    shows: ['upstream request line'],
  },
  'rewrite-capture-path-brackets': {
    reason: 'the rewritten URI is percent-encoded on its way upstream ([] as %5B%5D); nginx sends them raw',
    readme: 'URI is percent-encoded again on its way upstream',
    shows: ['upstream request line'],
  },
  'rewrite-capture-redirect-encoded': {
    reason: "a decoded ? from a capture stays %3F in the Location; nginx's Location turns it into a query",
    readme: 'What a capture puts into a redirect is percent-encoded',
    shows: ['response location'],
  },
  'cache-conditional-on-miss': {
    reason: 'on a MISS the conditional request gets the full 200; nginx answers 304 on the fly',
    readme: "**On a MISS the client's conditional or range request gets the full response**",
    shows: ['status'],
  },
  'cache-range-on-miss': {
    reason: 'on a MISS the range request gets the full 200; nginx answers 206 on the fly',
    readme: "**On a MISS the client's conditional or range request gets the full response**",
    shows: ['status', 'response content-range'],
  },
  'cache-range-multiple': {
    reason: 'several byte ranges get the whole body; nginx sends multipart/byteranges',
    readme: 'multiple byte ranges get the whole body (nginx sends multipart)',
    shows: ['status'],
  },
  'cache-authorization': {
    reason: 'a request with Authorization is neither answered from nor stored to the shared cache without public/s-maxage (RFC 9111 §3.5); nginx stores it',
    readme: 'nginx stores such responses',
    shows: ['x-cache-status', 'response body', 'upstream requests'],
  },
};

/**
 * Issue 16 items switchyard does not do right yet ("fix: …"), items still to decide ("decide: …":
 * fix them, or keep switchyard's behaviour and move the entry to DEVIATIONS with a README bullet),
 * and differences this suite found that the issue does not name ("found: …"). Each fix removes
 * its entry: a case listed here that agrees with nginx fails the suite.
 */
export const KNOWN_FAILING: Readonly<Record<string, Known>> = {
  // fix: proxy_redirect default
  'redirect-default-named-pool': {
    item: "decide: a named pool sends the server's host:port as Host (its Location is now rewritten as nginx's proxy_redirect default does)",
    shows: ['upstream headers'],
  },
  // fix: absolute-form targets
  // fix: bad Host
  // fix: bodiless requests, transfer codings, TRACE
  'method-propfind-bodiless': {
    item: 'fix: a request without a body is sent without one (PROPFIND gets Content-Length: 0)',
    shows: ['upstream headers', 'upstream body framing'],
  },
  'te-identity': { item: 'fix: a body in a coding other than chunked gets 501 (identity: 400 from the parser)', shows: ['status'] },
  // fix: Upgrade on a 426, hidden response headers
  'resp-x-accel-redirect': {
    item: 'fix: X-Accel-* from the upstream is hidden (nginx also follows X-Accel-Redirect: an internal redirect, a second upstream request)',
    shows: ['response x-accel-redirect', 'response body', 'upstream requests'],
  },
  // fix: rewrite
  // decide
  'req-header-connection-listed': { item: 'decide: headers named in Connection are removed (nginx forwards them)', shows: ['upstream headers'] },
  'req-header-proxy-connection': { item: 'decide: Proxy-Connection is removed', shows: ['upstream headers'] },
  'req-header-proxy-authorization': { item: 'decide: Proxy-Authorization is removed', shows: ['upstream headers'] },
  'req-header-trailer': { item: 'decide: Trailer is removed', shows: ['upstream headers'] },
  'resp-upgrade-200': { item: 'decide: Upgrade on a 200 is removed', shows: ['response upgrade'] },
  'resp-connection-listed': { item: 'decide: response headers named in Connection are removed', shows: ['response x-hop'] },
  'resp-proxy-authenticate': { item: 'decide: Proxy-Authenticate is removed', shows: ['response proxy-authenticate'] },
  'resp-trailer-header': { item: 'decide: Trailer is removed from responses', shows: ['response trailer'] },
  'req-header-order-case': { item: 'decide: header names reach the upstream lowercased, Host last', shows: ['upstream headers'] },
  'req-header-duplicates': { item: 'decide: repeated request headers are folded', shows: ['upstream headers'] },
  'req-header-cookies': { item: 'decide: cookies are folded into one line', shows: ['upstream headers'] },
  'req-header-user-agent-twice': { item: "decide: a second User-Agent is dropped by Node's parser", shows: ['upstream headers'] },
  'post-no-body': { item: 'decide: a POST without a body gets Content-Length: 0', shows: ['upstream headers', 'upstream body framing'] },
  'method-mkcol-length-zero': {
    item: "decide: a bodiless request's Content-Length: 0 is dropped (nginx forwards it)",
    shows: ['upstream headers', 'upstream body framing'],
  },
  'get-length-zero': { item: "decide: a GET's Content-Length: 0 is dropped", shows: ['upstream headers', 'upstream body framing'] },
  'resp-server-date': { item: "decide: the upstream's Server and Date pass through", shows: ['response server', 'response date'] },
  'resp-big-header': { item: 'decide: an upstream header larger than nginx buffers passes', shows: ['status'] },
  'resp-garbage': { item: 'decide: upstream garbage is 502 (nginx relays it as HTTP/0.9)', shows: ['transport', 'status'] },
  'named-pool-host': { item: "decide: a named pool sends the server's host:port as Host (nginx: $proxy_host, the block's name)", shows: ['upstream headers'] },
  'return-302-relative-host-without-port': {
    item: 'decide: redirect host and port come from the Host header (nginx: its listen port)',
    shows: ['response location'],
  },
  'return-302-double-slash-absolute-off': { item: 'decide: absolute_redirect off collapses //evil.example/x', shows: ['response location'] },
  'cache-chunked-hit': { item: 'decide: a chunked upstream response comes back with Content-Length on a HIT', shows: ['response content-length'] },
  'cache-range-hit-no-accept-ranges': {
    item: 'decide: Range on a HIT when the upstream sent no Accept-Ranges (nginx 200)',
    shows: ['status', 'response content-range'],
  },
  'cache-host-key': {
    item: "decide: the client's Host is in the default key (nginx keys on $proxy_host)",
    shows: ['x-cache-status', 'response body', 'upstream requests'],
  },
  'cache-stale-if-error': { item: 'decide: stale-if-error serves STALE on an upstream 500', shows: ['status', 'x-cache-status'] },
  'cache-revalidate-merge': { item: 'decide: a 304 revalidation merges its headers into the stored entry', shows: ['response x-v'] },
  // found by this suite, not named in issue 16
  'resp-unknown-transfer-encoding': {
    item: 'found: an upstream response in an unknown transfer coding is relayed (nginx since 1.23: 502, proxy_duplicate_headers.t)',
    shows: ['status'],
  },
  'method-unknown': {
    item: "found: a method Node's parser does not know (FOO) is 400 before switchyard sees it; nginx proxies any token",
    shows: ['status', 'upstream requests'],
  },
  'req-header-invalid-name': {
    item: "found: a header name with a character outside a token (X@A) is 400 from Node's parser; nginx drops the header (ignore_invalid_headers)",
    shows: ['status', 'upstream requests'],
  },
  'cache-head-no-convert-then-get': {
    item: "found: with convertHead off nginx's default key has no method, so a GET after a HEAD is a HIT with the HEAD's empty body (nginx's docs say to add $request_method to the key); switchyard keys each method",
    shows: ['x-cache-status', 'response body', 'upstream requests'],
  },
  'return-200-text': { item: 'found: return 200 "text" adds "; charset=utf-8" to default_type text/plain', shows: ['response content-type'] },
  'host-trailing-dot': { item: "found: host: 'client' sends the Host as it came (nginx's $host drops a trailing dot)", shows: ['upstream headers'] },
  'host-uppercase': { item: "found: host: 'client' sends the Host as it came (nginx's $host is lowercase)", shows: ['upstream headers'] },
};
