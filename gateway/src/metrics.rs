//! Metrics: the Prometheus registry and every metric's name, type, labels and help text, in one
//! place ([`defs`]), plus the small typed methods the rest of the gateway calls.
//!
//! Rules (checked by this module's tests): one `portcullis_` prefix, base units (`_seconds`,
//! `_bytes`), counters end in `_total`, and labels only of low cardinality. Every label value
//! comes from a small enum of this crate or from configuration (a route's configured path, an
//! upstream's configured name); never from a request (no raw paths, user ids, client addresses,
//! or client-chosen close codes beyond the registered ones: see [`close_code_label`]).
//!
//! The process has one instance, [`Metrics::global`], which the admin listener exposes at
//! `/metrics`; tests may build their own with [`Metrics::new`].

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::admission::Reason;
use crate::session::Initiator;

/// The `route` label of events that belong to no configured route (a bad head, an unknown path).
pub const NO_ROUTE: &str = "none";
/// The `route` label of process-wide values, e.g. the global connection cap.
pub const ALL_ROUTES: &str = "all";

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What kind of metric a definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric's name, type, labels and help text.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// Every metric the gateway exports. `docs/metrics.md` describes the same list for users; the
/// deploy files (alert rules, dashboard) may only use these names (a test checks that).
pub mod defs {
    use super::{Def, Kind};

    pub const CONNECTIONS_ACCEPTED: Def = Def {
        name: "portcullis_connections_accepted_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Client connections accepted on the public listeners (after TLS, before the request head).",
    };
    pub const CONNECTIONS_OPEN: Def = Def {
        name: "portcullis_connections_open",
        kind: Kind::Gauge,
        labels: &["route"],
        help: "WebSocket connections open now (after 101 Switching Protocols), by route.",
    };
    pub const CONNECTIONS_LIMIT: Def = Def {
        name: "portcullis_connections_limit",
        kind: Kind::Gauge,
        labels: &["route"],
        help: "Configured cap on open WebSocket connections, by route (route=\"all\": the global cap). Absent when no cap is set.",
    };
    pub const HANDSHAKES: Def = Def {
        name: "portcullis_handshakes_total",
        kind: Kind::Counter,
        labels: &["route", "result"],
        help: "WebSocket handshakes by result: accepted (101 sent), rejected (refused with an HTTP error), failed (the client left before the 101 was written).",
    };
    pub const REJECTIONS: Def = Def {
        name: "portcullis_rejections_total",
        kind: Kind::Counter,
        labels: &["route", "reason"],
        help: "Requests refused before 101, by route and reason.",
    };
    pub const HANDSHAKE_DURATION: Def = Def {
        name: "portcullis_handshake_duration_seconds",
        kind: Kind::Histogram,
        labels: &["route", "result"],
        help: "Time from a complete request head to the 101 or the rejection being written (admission, and for relays the upstream connect).",
    };
    pub const MESSAGES: Def = Def {
        name: "portcullis_messages_total",
        kind: Kind::Counter,
        labels: &["route", "direction", "class"],
        help: "WebSocket messages by route, direction and class (text, binary, control).",
    };
    pub const MESSAGE_BYTES: Def = Def {
        name: "portcullis_message_bytes_total",
        kind: Kind::Counter,
        labels: &["route", "direction", "class"],
        help: "WebSocket message payload bytes by route, direction and class.",
    };
    pub const CLOSES: Def = Def {
        name: "portcullis_closes_total",
        kind: Kind::Counter,
        labels: &["route", "code", "initiator"],
        help: "WebSocket sessions ended, by close code (\"none\": no close frame) and the side that started the close.",
    };
    pub const RELAY_ENDS: Def = Def {
        name: "portcullis_relay_session_ends_total",
        kind: Kind::Counter,
        labels: &["route", "reason"],
        help: "Relayed WebSocket sessions ended, by why (client_closed, upstream_closed, ping_timeout, idle_timeout, token_expired, shutdown, ...).",
    };
    pub const CONNECTION_DURATION: Def = Def {
        name: "portcullis_connection_duration_seconds",
        kind: Kind::Histogram,
        labels: &["route"],
        help: "Lifetime of WebSocket connections, from 101 to the end of the session.",
    };
    pub const UPSTREAM_CONNECT_ERRORS: Def = Def {
        name: "portcullis_upstream_connect_errors_total",
        kind: Kind::Counter,
        labels: &["upstream", "error"],
        help: "Failed attempts to connect (TCP, TLS, WebSocket handshake) to an upstream, by error kind.",
    };
    pub const UPSTREAM_CONNECT_DURATION: Def = Def {
        name: "portcullis_upstream_connect_duration_seconds",
        kind: Kind::Histogram,
        labels: &["upstream", "result"],
        help: "Time to connect and complete the WebSocket handshake with an upstream, by result (ok, error).",
    };
    pub const UPSTREAM_HEALTHY: Def = Def {
        name: "portcullis_upstream_healthy",
        kind: Kind::Gauge,
        labels: &["upstream"],
        help: "1 when the upstream passes its health check, 0 when it does not.",
    };
    pub const TLS_HANDSHAKE_FAILURES: Def = Def {
        name: "portcullis_tls_handshake_failures_total",
        kind: Kind::Counter,
        labels: &[],
        help: "TLS handshakes on the public listeners that failed or timed out.",
    };
    pub const CONFIG_RELOADS: Def = Def {
        name: "portcullis_config_reloads_total",
        kind: Kind::Counter,
        labels: &["result"],
        help: "Configuration reloads by result (success, failure).",
    };
    pub const BUILD_INFO: Def = Def {
        name: "portcullis_build_info",
        kind: Kind::Gauge,
        labels: &["version"],
        help: "Always 1; the labels tell the running build.",
    };

    /// Every definition, for tests, docs and the deploy-file check.
    pub const ALL: &[Def] = &[
        RELAY_ENDS,
        CONNECTIONS_ACCEPTED,
        CONNECTIONS_OPEN,
        CONNECTIONS_LIMIT,
        HANDSHAKES,
        REJECTIONS,
        HANDSHAKE_DURATION,
        MESSAGES,
        MESSAGE_BYTES,
        CLOSES,
        CONNECTION_DURATION,
        UPSTREAM_CONNECT_ERRORS,
        UPSTREAM_CONNECT_DURATION,
        UPSTREAM_HEALTHY,
        TLS_HANDSHAKE_FAILURES,
        CONFIG_RELOADS,
        BUILD_INFO,
    ];
}

/// Histogram buckets, in seconds.
mod buckets {
    /// Handshakes and upstream connects: sub-millisecond to 10 s.
    pub const FAST: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    /// Connection lifetimes: a second to a day.
    pub const LIFETIME: &[f64] = &[
        0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0,
    ];
}

/// The outcome of a handshake (`result` label of the handshake metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeResult {
    /// `101 Switching Protocols` was written.
    Accepted,
    /// Refused with an HTTP error (see the `reason` of `portcullis_rejections_total`).
    Rejected,
    /// The client went away before the 101 could be written.
    Failed,
}

impl HandshakeResult {
    pub const ALL: [HandshakeResult; 3] = [
        HandshakeResult::Accepted,
        HandshakeResult::Rejected,
        HandshakeResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Accepted => "accepted",
            HandshakeResult::Rejected => "rejected",
            HandshakeResult::Failed => "failed",
        }
    }
}

/// Which way a message went, seen from the gateway (`direction` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the client.
    FromClient,
    /// Sent to the client.
    ToClient,
    /// Received from the upstream (relay routes).
    FromUpstream,
    /// Sent to the upstream (relay routes).
    ToUpstream,
}

impl Direction {
    pub const ALL: [Direction; 4] = [
        Direction::FromClient,
        Direction::ToClient,
        Direction::FromUpstream,
        Direction::ToUpstream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::FromClient => "from_client",
            Direction::ToClient => "to_client",
            Direction::FromUpstream => "from_upstream",
            Direction::ToUpstream => "to_upstream",
        }
    }
}

/// The opcode class of a message (`class` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Text,
    Binary,
    /// Ping, pong and close frames.
    Control,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Text, Class::Binary, Class::Control];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Text => "text",
            Class::Binary => "binary",
            Class::Control => "control",
        }
    }

    /// The class of a tungstenite message.
    pub fn of(message: &tokio_tungstenite::tungstenite::Message) -> Class {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::Message;
        match message {
            Message::Text(_) => Class::Text,
            Message::Binary(_) => Class::Binary,
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Class::Control,
            Message::Frame(f) => match f.header().opcode {
                OpCode::Control(_) => Class::Control,
                OpCode::Data(Data::Text) => Class::Text,
                OpCode::Data(_) => Class::Binary,
            },
        }
    }
}

/// The payload bytes of a message as they go on the wire: for a close frame its 2-byte code
/// plus the reason (tungstenite's `Message::len` counts only the reason).
pub fn payload_len(message: &tokio_tungstenite::tungstenite::Message) -> usize {
    use tokio_tungstenite::tungstenite::Message;
    match message {
        Message::Close(frame) => frame.as_ref().map_or(0, |f| 2 + f.reason.len()),
        other => other.len(),
    }
}

/// Why an upstream connect failed (`error` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No answer in time (TCP, TLS or handshake).
    Timeout,
    /// The TCP connection was refused or reset.
    Refused,
    /// The TLS handshake with the upstream failed (certificate, protocol).
    Tls,
    /// The upstream did not answer the WebSocket handshake with 101.
    Handshake,
    /// Anything else (DNS, I/O).
    Other,
}

impl UpstreamError {
    pub const ALL: [UpstreamError; 5] = [
        UpstreamError::Timeout,
        UpstreamError::Refused,
        UpstreamError::Tls,
        UpstreamError::Handshake,
        UpstreamError::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Refused => "refused",
            UpstreamError::Tls => "tls",
            UpstreamError::Handshake => "handshake",
            UpstreamError::Other => "other",
        }
    }
}

/// The `code` label of a close: registered codes (1000–1015) as themselves, the ranges a client
/// may choose freely as `3xxx` and `4xxx` (so a client cannot create thousands of series),
/// `none` when the connection ended without a close frame, `invalid` otherwise.
pub fn close_code_label(code: Option<u16>) -> &'static str {
    const REGISTERED: [&str; 16] = [
        "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010",
        "1011", "1012", "1013", "1014", "1015",
    ];
    match code {
        None => "none",
        Some(c @ 1000..=1015) => REGISTERED[usize::from(c - 1000)],
        Some(3000..=3999) => "3xxx",
        Some(4000..=4999) => "4xxx",
        Some(_) => "invalid",
    }
}

/// The registry and every metric of the gateway.
pub struct Metrics {
    registry: Registry,
    connections_accepted: IntCounter,
    connections_open: IntGaugeVec,
    connections_limit: IntGaugeVec,
    handshakes: IntCounterVec,
    rejections: IntCounterVec,
    handshake_duration: HistogramVec,
    messages: IntCounterVec,
    message_bytes: IntCounterVec,
    closes: IntCounterVec,
    relay_ends: IntCounterVec,
    connection_duration: HistogramVec,
    upstream_connect_errors: IntCounterVec,
    upstream_connect_duration: HistogramVec,
    upstream_healthy: IntGaugeVec,
    tls_handshake_failures: IntCounter,
    config_reloads: IntCounterVec,
    /// Per-route message counters, resolved once per route rather than once per message.
    meters: RwLock<HashMap<String, Meter>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn opts(def: &Def) -> Opts {
    Opts::new(def.name, def.help)
}

fn counter(r: &Registry, def: &Def) -> IntCounter {
    debug_assert!(def.kind == Kind::Counter && def.labels.is_empty());
    register(r, IntCounter::with_opts(opts(def)).expect("valid counter"))
}

fn counter_vec(r: &Registry, def: &Def) -> IntCounterVec {
    debug_assert!(def.kind == Kind::Counter);
    register(
        r,
        IntCounterVec::new(opts(def), def.labels).expect("valid counter"),
    )
}

fn gauge_vec(r: &Registry, def: &Def) -> IntGaugeVec {
    debug_assert!(def.kind == Kind::Gauge);
    register(
        r,
        IntGaugeVec::new(opts(def), def.labels).expect("valid gauge"),
    )
}

fn histogram_vec(r: &Registry, def: &Def, buckets: &[f64]) -> HistogramVec {
    debug_assert!(def.kind == Kind::Histogram);
    let opts = HistogramOpts::new(def.name, def.help).buckets(buckets.to_vec());
    register(
        r,
        HistogramVec::new(opts, def.labels).expect("valid histogram"),
    )
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry holding every metric (values zero), with `portcullis_build_info` set.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let build_info = gauge_vec(&r, &defs::BUILD_INFO);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let config_reloads = counter_vec(&r, &defs::CONFIG_RELOADS);
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        Metrics {
            connections_accepted: counter(&r, &defs::CONNECTIONS_ACCEPTED),
            connections_open: gauge_vec(&r, &defs::CONNECTIONS_OPEN),
            connections_limit: gauge_vec(&r, &defs::CONNECTIONS_LIMIT),
            handshakes: counter_vec(&r, &defs::HANDSHAKES),
            rejections: counter_vec(&r, &defs::REJECTIONS),
            handshake_duration: histogram_vec(&r, &defs::HANDSHAKE_DURATION, buckets::FAST),
            messages: counter_vec(&r, &defs::MESSAGES),
            message_bytes: counter_vec(&r, &defs::MESSAGE_BYTES),
            closes: counter_vec(&r, &defs::CLOSES),
            relay_ends: counter_vec(&r, &defs::RELAY_ENDS),
            connection_duration: histogram_vec(&r, &defs::CONNECTION_DURATION, buckets::LIFETIME),
            upstream_connect_errors: counter_vec(&r, &defs::UPSTREAM_CONNECT_ERRORS),
            upstream_connect_duration: histogram_vec(
                &r,
                &defs::UPSTREAM_CONNECT_DURATION,
                buckets::FAST,
            ),
            upstream_healthy: gauge_vec(&r, &defs::UPSTREAM_HEALTHY),
            tls_handshake_failures: counter(&r, &defs::TLS_HANDSHAKE_FAILURES),
            config_reloads,
            meters: RwLock::new(HashMap::new()),
            registry: r,
        }
    }

    /// The process-wide instance that `/metrics` exposes.
    pub fn global() -> &'static Arc<Metrics> {
        static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Metrics::new()))
    }

    /// The registry (for exposition, or to register more collectors).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails on valid metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Create a configured route's series at zero (handshakes by result, rejections by reason,
    /// open connections), so that rates and ratios exist before the first event.
    pub fn init_route(&self, route: &str) {
        for result in HandshakeResult::ALL {
            self.handshakes.with_label_values(&[route, result.as_str()]);
        }
        for reason in Reason::ALL {
            self.rejections.with_label_values(&[route, reason.as_str()]);
        }
        self.connections_open.with_label_values(&[route]);
    }

    /// Create the series of a configured upstream at zero.
    pub fn init_upstream(&self, upstream: &str) {
        for error in UpstreamError::ALL {
            self.upstream_connect_errors
                .with_label_values(&[upstream, error.as_str()]);
        }
    }

    // --- Connections and handshakes ------------------------------------------------------

    /// A client connection reached the gateway (after TLS).
    pub fn connection_accepted(&self) {
        self.connections_accepted.inc();
    }

    /// A handshake ended with `result`, `duration` after its head was complete. For
    /// [`HandshakeResult::Rejected`] prefer [`Metrics::rejected`], which also counts the reason.
    pub fn handshake(&self, route: &str, result: HandshakeResult, duration: Duration) {
        let labels = [route, result.as_str()];
        self.handshakes.with_label_values(&labels).inc();
        self.handshake_duration
            .with_label_values(&labels)
            .observe(duration.as_secs_f64());
    }

    /// A request was refused for `reason`: counts the rejection and a `rejected` handshake.
    /// `route` is the configured route path, or [`NO_ROUTE`].
    pub fn rejected(&self, route: &str, reason: Reason, duration: Duration) {
        self.rejections
            .with_label_values(&[route, reason.as_str()])
            .inc();
        self.handshake(route, HandshakeResult::Rejected, duration);
    }

    /// Publish a connection cap (`route` = a route path, or [`ALL_ROUTES`] for the global cap),
    /// so alerts can compare `portcullis_connections_open` with it.
    pub fn set_connection_limit(&self, route: &str, limit: u64) {
        self.connections_limit
            .with_label_values(&[route])
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    // --- Sessions -----------------------------------------------------------------------

    /// A WebSocket session opened on `route`: the open gauge goes up until the returned guard is
    /// dropped, which also records the connection's duration.
    pub fn session_opened(&self, route: &str) -> OpenSession {
        let gauge = self.connections_open.with_label_values(&[route]);
        gauge.inc();
        OpenSession {
            gauge,
            duration: self.connection_duration.with_label_values(&[route]),
            started: Instant::now(),
        }
    }

    /// The message counters of `route`, resolved once (cheap to clone, use one per session).
    pub fn meter(&self, route: &str) -> Meter {
        if let Some(m) = self.meters.read().expect("meters lock").get(route) {
            return m.clone();
        }
        let meter = Meter::resolve(self, route);
        self.meters
            .write()
            .expect("meters lock")
            .entry(route.to_string())
            .or_insert(meter)
            .clone()
    }

    /// Count one message (see also [`Meter::message`], the per-session shortcut).
    pub fn message(&self, route: &str, direction: Direction, class: Class, bytes: usize) {
        self.meter(route).message(direction, class, bytes);
    }

    /// A session ended with close `code` (`None`: no close frame), started by `initiator`.
    pub fn closed(&self, route: &str, code: Option<u16>, initiator: Initiator) {
        self.closes
            .with_label_values(&[route, close_code_label(code), initiator.as_str()])
            .inc();
    }

    /// A relayed session ended for `reason` (a label from `session::relay::EndReason`).
    pub fn relay_ended(&self, route: &str, reason: &str) {
        self.relay_ends.with_label_values(&[route, reason]).inc();
    }

    // --- Upstreams, TLS, configuration ---------------------------------------------------

    /// One upstream connect attempt (TCP, TLS and WebSocket handshake) and how long it took.
    pub fn upstream_connect(
        &self,
        upstream: &str,
        result: Result<(), UpstreamError>,
        latency: Duration,
    ) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(error) => {
                self.upstream_connect_errors
                    .with_label_values(&[upstream, error.as_str()])
                    .inc();
                "error"
            }
        };
        self.upstream_connect_duration
            .with_label_values(&[upstream, outcome])
            .observe(latency.as_secs_f64());
    }

    /// The health-check verdict of an upstream.
    pub fn upstream_health(&self, upstream: &str, healthy: bool) {
        self.upstream_healthy
            .with_label_values(&[upstream])
            .set(i64::from(healthy));
    }

    /// A TLS handshake on a public listener failed or timed out.
    pub fn tls_handshake_failure(&self) {
        self.tls_handshake_failures.inc();
    }

    /// A configuration reload was attempted.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
    }
}

/// Keeps a WebSocket session counted in `portcullis_connections_open`; dropping it (however the
/// session ends) decrements the gauge and records the connection's duration.
#[derive(Debug)]
pub struct OpenSession {
    gauge: IntGauge,
    duration: prometheus::Histogram,
    started: Instant,
}

impl OpenSession {
    /// Time since the session opened.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.gauge.dec();
        self.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

/// The message and byte counters of one route, by direction and class. Cheap to clone; a
/// session keeps one and calls [`Meter::message`] per message. `Meter::default()` counts nothing
/// (for tests and sessions outside the gateway).
#[derive(Debug, Clone, Default)]
pub struct Meter {
    /// `[direction][class]` → (messages, bytes); empty when disabled.
    counters: Arc<Vec<Vec<(IntCounter, IntCounter)>>>,
}

impl Meter {
    fn resolve(metrics: &Metrics, route: &str) -> Meter {
        let counters = Direction::ALL
            .iter()
            .map(|d| {
                Class::ALL
                    .iter()
                    .map(|c| {
                        let labels = [route, d.as_str(), c.as_str()];
                        (
                            metrics.messages.with_label_values(&labels),
                            metrics.message_bytes.with_label_values(&labels),
                        )
                    })
                    .collect()
            })
            .collect();
        Meter {
            counters: Arc::new(counters),
        }
    }

    /// Count one message of `bytes` payload bytes.
    pub fn message(&self, direction: Direction, class: Class, bytes: usize) {
        let d = Direction::ALL.iter().position(|x| *x == direction);
        let c = Class::ALL.iter().position(|x| *x == class);
        if let (Some(d), Some(c)) = (d, c) {
            if let Some((messages, total)) = self.counters.get(d).and_then(|v| v.get(c)) {
                messages.inc();
                total.inc_by(bytes as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base units Prometheus recommends; a name that ends in another unit word is wrong.
    const NON_BASE_UNITS: &[&str] = &[
        "_milliseconds",
        "_microseconds",
        "_nanoseconds",
        "_ms",
        "_minutes",
        "_hours",
        "_kilobytes",
        "_megabytes",
        "_kib",
        "_mib",
        "_bits",
        "_percent",
    ];

    #[test]
    fn names_follow_the_rules() {
        let mut seen = std::collections::HashSet::new();
        for def in defs::ALL {
            let n = def.name;
            assert!(seen.insert(n), "{n} is defined twice");
            assert!(n.starts_with("portcullis_"), "{n}: missing prefix");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}: use lowercase snake_case"
            );
            assert!(!def.help.is_empty(), "{n}: no help text");
            match def.kind {
                Kind::Counter => assert!(n.ends_with("_total"), "{n}: counters end in _total"),
                _ => assert!(!n.ends_with("_total"), "{n}: only counters end in _total"),
            }
            if def.kind == Kind::Histogram {
                assert!(
                    n.ends_with("_seconds") || n.ends_with("_bytes"),
                    "{n}: histograms carry their base unit"
                );
            }
            if n.contains("duration") || n.contains("latency") {
                assert!(n.ends_with("_seconds"), "{n}: durations are in seconds");
            }
            for unit in NON_BASE_UNITS {
                assert!(!n.contains(unit), "{n}: use base units, not {unit}");
            }
            for label in def.labels {
                assert!(
                    [
                        "route",
                        "result",
                        "reason",
                        "direction",
                        "class",
                        "code",
                        "initiator",
                        "upstream",
                        "error",
                        "version"
                    ]
                    .contains(label),
                    "{n}: label {label} is not on the low-cardinality list"
                );
            }
        }
    }

    #[test]
    fn every_definition_is_registered_and_rendered() {
        let m = Metrics::new();
        m.init_route("/ws/echo");
        m.init_upstream("backend");
        m.connection_accepted();
        m.closed("/ws/echo", Some(1000), Initiator::Client);
        m.relay_ended("/ws/relay", "client_closed");
        let _open = m.session_opened("/ws/echo");
        m.message("/ws/echo", Direction::FromClient, Class::Text, 5);
        m.handshake(
            "/ws/echo",
            HandshakeResult::Accepted,
            Duration::from_millis(1),
        );
        m.upstream_connect("backend", Ok(()), Duration::from_millis(3));
        m.upstream_health("backend", true);
        m.set_connection_limit(ALL_ROUTES, 100);
        m.tls_handshake_failure();
        m.config_reload(true);
        let text = m.render();
        for def in defs::ALL {
            assert!(
                text.contains(&format!("# TYPE {} {}\n", def.name, def.kind.as_str())),
                "{} missing from:\n{text}",
                def.name
            );
            assert!(text.contains(&format!("# HELP {} ", def.name)));
        }
        assert!(text.contains(&format!(
            "portcullis_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn counts_land_on_the_right_series() {
        let m = Metrics::new();
        m.init_route("/a");
        m.rejected("/a", Reason::UpgradeRequired, Duration::ZERO);
        m.rejected("/a", Reason::UpgradeRequired, Duration::ZERO);
        m.rejected(NO_ROUTE, Reason::HeadTimeout, Duration::ZERO);
        let meter = m.meter("/a");
        meter.message(Direction::FromClient, Class::Binary, 10);
        meter.message(Direction::FromClient, Class::Binary, 6);
        Meter::default().message(Direction::ToClient, Class::Text, 1);
        {
            let _s = m.session_opened("/a");
            assert_eq!(m.connections_open.with_label_values(&["/a"]).get(), 1);
        }
        assert_eq!(m.connections_open.with_label_values(&["/a"]).get(), 0);
        let get = |c: &IntCounterVec, l: &[&str]| c.with_label_values(l).get();
        assert_eq!(get(&m.rejections, &["/a", "upgrade_required"]), 2);
        assert_eq!(get(&m.rejections, &["/a", "origin"]), 0);
        assert_eq!(get(&m.handshakes, &["/a", "rejected"]), 2);
        assert_eq!(get(&m.handshakes, &["none", "rejected"]), 1);
        assert_eq!(get(&m.messages, &["/a", "from_client", "binary"]), 2);
        assert_eq!(get(&m.message_bytes, &["/a", "from_client", "binary"]), 16);
        assert_eq!(
            m.connection_duration
                .with_label_values(&["/a"])
                .get_sample_count(),
            1
        );
    }

    #[test]
    fn close_codes_have_bounded_labels() {
        assert_eq!(close_code_label(None), "none");
        assert_eq!(close_code_label(Some(1000)), "1000");
        assert_eq!(close_code_label(Some(1009)), "1009");
        assert_eq!(close_code_label(Some(1015)), "1015");
        assert_eq!(close_code_label(Some(3001)), "3xxx");
        assert_eq!(close_code_label(Some(4000)), "4xxx");
        assert_eq!(close_code_label(Some(4999)), "4xxx");
        assert_eq!(close_code_label(Some(999)), "invalid");
        assert_eq!(close_code_label(Some(2000)), "invalid");
        assert_eq!(close_code_label(Some(u16::MAX)), "invalid");
    }
}
