//! Every default value of the configuration, in one place.

use std::time::Duration;

use super::policy::{Alg, TokenSource};
use crate::core::on_error::OnError;

// [server]

/// Worker threads for the gateway's listeners when `threads` is not set (or `"auto"`): one per
/// core the process may use, as NGINX's `worker_processes auto`. `available_parallelism` is the
/// affinity mask capped by a cgroup CPU quota (v1 and v2, rounded down, at least 1), so a
/// container limited to 2 CPUs on a 64-core host gets 2.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
/// How long a graceful stop (SIGTERM/SIGINT) waits for open sockets to finish.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Window over which shutdown spreads its 1001 closes (at most half the grace period).
pub(crate) const DRAIN_WINDOW: Duration = Duration::from_secs(5);
/// Time a removed route's sockets keep after a reload.
pub(crate) const ROUTE_REMOVAL_GRACE: Duration = Duration::from_secs(30);
/// Where an upgrading process picks up the listening sockets.
pub(crate) const UPGRADE_SOCK: &str = "/tmp/portcullis_upgrade.sock";

/// Whether the worker threads share their tasks (work stealing) rather than each accepting on
/// a listening socket of its own and keeping its connections. Chosen by measurement (README,
/// "Threads"): on the 2-core benchmark machine, shared with the load, a socket and a runtime
/// per thread relayed 1.55 × the messages per second of work stealing at 0.98 × the CPU per
/// message (1.31 × at 0.91 × in a busier run).
pub(crate) const WORK_STEALING: bool = false;

// [routes.compression]

/// permessage-deflate is negotiated on echo and relay routes unless a route turns it off.
pub(crate) const COMPRESSION: bool = true;
/// LZ77 window (bits) each way: 4 KiB, as Python `websockets` servers choose, so an idle
/// compressed socket keeps 4 KiB per direction with context takeover (RFC 7692 allows 8-15).
pub(crate) const DEFLATE_WINDOW_BITS: u8 = 12;
/// zlib's default level.
pub(crate) const DEFLATE_LEVEL: u32 = 6;
/// Messages shorter than this go uncompressed (their frame would barely shrink).
pub(crate) const DEFLATE_MIN_BYTES: usize = 16;

// [admin]

/// The admin listener's address: loopback only.
pub(crate) const ADMIN_ADDRESS: &str = "127.0.0.1:9090";

// [limits]

/// How long a client may take from its connect to a complete request head, TLS included.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted; larger gets `431`.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request head; more gets `431`.
pub(crate) const MAX_HEADERS: usize = 64;
/// Idle time allowed between requests on a kept-alive plain HTTP connection.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest WebSocket message (after reassembly of fragments); larger gets close `1009`.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Initial read buffer per WebSocket. Small on purpose: idle sockets should cost little
/// (tungstenite's own default is 128 KiB per connection).
pub(crate) const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Most bytes queued for a slow reader before the session stops and waits (backpressure).
pub(crate) const MAX_WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// How long to wait for the peer's reply to our close frame.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Open WebSockets across the gateway before new handshakes get 503.
pub(crate) const MAX_CONNECTIONS: usize = 100_000;
/// Connections still in TLS or before a complete WebSocket head, across the gateway.
pub(crate) const MAX_PENDING_CONNECTIONS: usize = 10_000;
/// The same, from one client address (the socket's peer: a proxy in front counts as one).
pub(crate) const MAX_PENDING_PER_IP: usize = 256;

// [[routes]]

/// The policy name a route uses when it names none (public).
pub(crate) const POLICY: &str = "default";
/// The prefix the echo mode puts in front of a text message (the Pedestal guide's example).
pub(crate) const ECHO_PREFIX: &str = "echo: ";
/// A `static` route's status.
pub(crate) const STATIC_STATUS: u16 = 200;

// Relay routes (`mode = "relay"`).

/// How long connecting to an upstream may take: TCP, TLS and the WebSocket handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an upstream that refused or failed a connection is left out of the rotation.
pub(crate) const UNHEALTHY_FOR: Duration = Duration::from_secs(10);
/// A client silent this long is sent a ping.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a pinged client has to send anything (its pong) before it is dropped.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(15);
/// Whether the client's token goes upstream.
pub(crate) const FORWARD_TOKEN: bool = false;
/// An upstream's relative share of new sockets.
pub(crate) const UPSTREAM_WEIGHT: u32 = 1;
/// The largest `weight` of an upstream.
pub(crate) const MAX_UPSTREAM_WEIGHT: u32 = 100;
/// `balance = "hash"`: the claim of the verified token that is hashed.
pub(crate) const HASH_KEY_CLAIM: &str = "sub";
/// `balance = "hash"`: no upstream takes more than this × the mean of open sockets per
/// upstream (HAProxy's `hash-balance-factor` 125).
pub(crate) const HASH_BALANCE_FACTOR: f64 = 1.25;

// [policies.NAME.jwt]

/// Where a token is looked for, in this order.
pub(crate) const TOKEN_SOURCES: [TokenSource; 4] = [
    TokenSource::Header,
    TokenSource::Subprotocol,
    TokenSource::Query,
    TokenSource::Cookie,
];
/// The query parameter that may carry a token.
pub(crate) const QUERY_PARAM: &str = "access_token";
/// The cookie that may carry a token.
pub(crate) const COOKIE: &str = "access_token";
/// Tokens longer than this are refused before any decoding.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Allowed clock skew for `exp`/`nbf`/`iat`.
pub(crate) const LEEWAY: Duration = Duration::from_secs(30);
/// Whether a token must carry `exp`.
pub(crate) const REQUIRE_EXP: bool = true;
/// Extra time an open socket keeps after its token's `exp` (and leeway).
pub(crate) const EXPIRY_GRACE: Duration = Duration::ZERO;
/// Periodic JWKS refresh.
pub(crate) const JWKS_REFRESH: Duration = Duration::from_secs(600);
/// Least time between two JWKS fetches caused by tokens with an unknown `kid`.
pub(crate) const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
/// One JWKS fetch, connect to last byte.
pub(crate) const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
pub(crate) const JWKS_MAX_BYTES: usize = 1024 * 1024;
/// Algorithms accepted for JWKS keys that do not name their own `alg`.
pub(crate) const JWKS_ALGORITHMS: [Alg; 5] =
    [Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA];

// [cluster]

/// Put before every Redis key and the event channel.
pub(crate) const CLUSTER_KEY_PREFIX: &str = "portcullis:";
/// The longest a handshake waits for Redis, all its calls together (and one background call).
pub(crate) const CLUSTER_TIMEOUT: Duration = Duration::from_millis(50);
/// How long a connection slot lives in Redis unless renewed (renewed every third of it).
pub(crate) const CLUSTER_LEASE_TTL: Duration = Duration::from_secs(15);
/// When Redis fails: decide under the local limits.
pub(crate) const CLUSTER_ON_ERROR: OnError = OnError::Open;
/// The first wait before reconnecting to Redis, doubled after each failure up to the maximum.
pub(crate) const CLUSTER_RECONNECT_MIN: Duration = Duration::from_millis(100);
pub(crate) const CLUSTER_RECONNECT_MAX: Duration = Duration::from_secs(5);
/// The `Retry-After` of a handshake refused because Redis failed (`on_error = "closed"`).
pub(crate) const CLUSTER_RETRY_AFTER_SECS: u64 = 1;
/// The longest a connection attempt to Redis (TCP, TLS, AUTH, SELECT) may take, in the background.
pub(crate) const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most slots one renewal call carries (a replica with more renews in several calls).
pub(crate) const CLUSTER_RENEW_BATCH: usize = 1000;
/// This many calls failing in a row (error answers included) drop the connection for a new one.
pub(crate) const CLUSTER_FAILURES_BEFORE_RECONNECT: u32 = 3;
/// What an operator's close, revocation or lift may wait for each Redis call (and for a
/// connection) before it is tried again or answered as not published.
pub(crate) const CLUSTER_ADMIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an operator's action is tried before it is answered as not published.
pub(crate) const CLUSTER_ADMIN_ATTEMPTS: u32 = 2;
/// How long a failed call keeps `/readyz` saying `cluster degraded` (unless a call succeeds).
pub(crate) const CLUSTER_RECENT_FAILURE: Duration = Duration::from_secs(10);
/// How often each link to Redis (commands, subscription) is checked with `PING`; with the
/// timeout below, a dead link is noticed within 2 s.
pub(crate) const CLUSTER_LIVENESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a `PING` may go unanswered before its link counts as dead.
pub(crate) const CLUSTER_LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an operator's close stays in Redis to be replayed to a replica whose subscription
/// comes back (a replica deaf for longer misses it; revocations are kept for their ttl).
pub(crate) const CLUSTER_CLOSE_REPLAY: Duration = Duration::from_secs(60);
/// The shortest a lift's tombstone is kept (otherwise as long as the revocation it lifted had
/// left): while it is, no replica's write-back brings the revocation back.
pub(crate) const REVOCATION_TOMBSTONE_MIN: Duration = Duration::from_secs(60);
// [policies.NAME.ext_authz]

/// One call to the authorizer, connect to last byte.
pub(crate) const EXT_AUTHZ_TIMEOUT: Duration = Duration::from_millis(200);
/// Largest answer body read from the authorizer (a larger one is an error).
pub(crate) const EXT_AUTHZ_MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How much of a refusal's body the client gets.
pub(crate) const EXT_AUTHZ_BODY_BYTES: usize = 1024;

// [policies.NAME.introspection]

/// One introspection call, connect to last byte.
pub(crate) const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest introspection answer read.
pub(crate) const INTROSPECTION_MAX_ANSWER_BYTES: usize = 64 * 1024;

// Caches of ext_authz decisions and introspection answers.

/// Entries one policy's cache holds at most (then expired ones go, then the soonest to expire).
pub(crate) const IDENTITY_CACHE_ENTRIES: usize = 10_000;

// [tracing]

/// The fraction of new traces recorded.
pub(crate) const TRACING_SAMPLE_RATIO: f64 = 1.0;
/// `service.name` of the spans.
pub(crate) const TRACING_SERVICE_NAME: &str = "portcullis";
/// Finished spans waiting for export (OpenTelemetry's batch processor default).
pub(crate) const TRACING_QUEUE_SIZE: usize = 2048;
/// Spans per export request (OpenTelemetry's default).
pub(crate) const TRACING_BATCH_SIZE: usize = 512;
/// How long a batch waits to fill (OpenTelemetry's default is 5 s; a shorter wait keeps traces
/// fresh at a few requests per second).
pub(crate) const TRACING_BATCH_DELAY: Duration = Duration::from_secs(1);
/// One export request, connect to last byte.
pub(crate) const TRACING_TIMEOUT: Duration = Duration::from_secs(5);

// [listeners.tls] and [http2]

/// Whether a TLS listener offers HTTP/2 (ALPN `h2`, RFC 8441 WebSockets) besides HTTP/1.1.
/// On: browsers treat the setting as all or nothing, and every part of RFC 8441 that they use
/// is served and tested (docs/http2.md); `http2 = false` keeps a listener on HTTP/1.1 only.
pub(crate) const LISTENER_HTTP2: bool = true;
/// Streams one HTTP/2 connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`);
/// each WebSocket stream also counts as one connection for the caps.
pub(crate) const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Each stream's receive window (`SETTINGS_INITIAL_WINDOW_SIZE`): the most a client can have
/// in flight, unread by its session, on one stream. The connection's window is this times
/// `max_concurrent_streams`, so a slow stream never stalls the others.
pub(crate) const H2_STREAM_WINDOW_BYTES: u32 = 65_535;
/// Most bytes queued for one stream but not yet written (h2's per-stream send buffer); a
/// session writing more waits for the client's window (backpressure, as on HTTP/1.1).
pub(crate) const H2_MAX_SEND_BUFFER_BYTES: usize = 64 * 1024;
/// A stream whose window stays at zero this long while the gateway has data for it is reset
/// (a client that never reads cannot hold a session for ever).
pub(crate) const H2_SEND_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams the client reset before the gateway accepted them (rapid reset, CVE-2023-44487);
/// past this the connection gets GOAWAY `ENHANCE_YOUR_CALM`.
pub(crate) const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the gateway had to reset for the client's protocol errors; past this, GOAWAY
/// `ENHANCE_YOUR_CALM`.
pub(crate) const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Control frames (PING, SETTINGS, PRIORITY, RST_STREAM, WINDOW_UPDATE beyond what the data
/// the gateway sent explains) one connection may send per second, and at once; past this,
/// GOAWAY `ENHANCE_YOUR_CALM`. Browsers send a handful per connection.
pub(crate) const H2_MAX_CONTROL_FRAMES_PER_SECOND: u32 = 1000;
