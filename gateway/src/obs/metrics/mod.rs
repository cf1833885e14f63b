//! Metrics: the Prometheus registry and the small typed methods the rest of the gateway calls.
//! Every metric's name, type, labels and help text is in [`defs`]; every label value comes from
//! a small enum of `core` or from configuration (a route's configured path, an upstream's
//! configured URL), never from a request.
//!
//! The process has one instance, [`Metrics::global`], which the admin listener exposes at
//! `/metrics`; tests may build their own with [`Metrics::new`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub mod defs;
mod meter;

use defs::{buckets, Def, Kind};
pub(crate) use meter::{Meter, OpenSession};

use crate::core::background;
use crate::core::end::{EndReason, Initiator};
use crate::core::labels::{
    close_code_label, AuthzError, BackgroundTask, ClusterOp, DropReason, Fallback, HandshakeResult,
    Http2Error, SelectionReason, SpanDrop, UpstreamErrorKind, PROTOCOLS,
};
use crate::core::on_error::AuthzOnError;
use crate::core::reason::Reason;

/// The `error` label values of `portcullis_cluster_errors_total` (the cluster layer's error
/// kinds; listed here so every series starts at zero).
pub(crate) const CLUSTER_ERROR_KINDS: [&str; 5] = [
    "unavailable",
    "timeout",
    "connection",
    "replica",
    "response",
];

/// The content type of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry and every metric of the gateway.
pub(crate) struct Metrics {
    registry: Registry,
    connections_accepted: IntCounter,
    connections_dropped: IntCounterVec,
    websockets_opened: IntCounterVec,
    http2_connections: IntCounter,
    http2_errors: IntCounterVec,
    connections_pending: IntGauge,
    connections_open: IntGaugeVec,
    connections_limit: IntGaugeVec,
    handshakes: IntCounterVec,
    rejections: IntCounterVec,
    handshake_duration: HistogramVec,
    messages: IntCounterVec,
    message_bytes: IntCounterVec,
    message_plain_bytes: IntCounterVec,
    closes: IntCounterVec,
    relay_ends: IntCounterVec,
    gateway_closes: IntCounterVec,
    connection_duration: HistogramVec,
    upstream_connect_errors: IntCounterVec,
    upstream_connect_duration: HistogramVec,
    upstream_healthy: IntGaugeVec,
    upstream_selections: IntCounterVec,
    upstream_sockets_open: IntGaugeVec,
    hash_key_missing: IntCounterVec,
    tls_handshake_failures: IntCounter,
    trace_spans_exported: IntCounter,
    trace_spans_dropped: IntCounterVec,
    config_reloads: IntCounterVec,
    cluster_call_duration: HistogramVec,
    cluster_errors: IntCounterVec,
    cluster_fallbacks: IntCounterVec,
    /// Without labels, but vectors so that they are absent until a cluster is configured.
    cluster_leases: IntGaugeVec,
    cluster_connected: IntGaugeVec,
    cluster_subscribed: IntGaugeVec,
    ext_authz_errors: IntCounterVec,
    background_task_restarts: IntCounterVec,
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

fn gauge(r: &Registry, def: &Def) -> IntGauge {
    debug_assert!(def.kind == Kind::Gauge && def.labels.is_empty());
    register(r, IntGauge::with_opts(opts(def)).expect("valid gauge"))
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
    pub(crate) fn new() -> Metrics {
        let r = Registry::new();
        let build_info = gauge_vec(&r, &defs::BUILD_INFO);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let connections_dropped = counter_vec(&r, &defs::CONNECTIONS_DROPPED);
        for reason in DropReason::ALL {
            connections_dropped.with_label_values(&[reason.as_str()]);
        }
        let websockets_opened = counter_vec(&r, &defs::WEBSOCKETS_OPENED);
        for protocol in PROTOCOLS {
            websockets_opened.with_label_values(&[protocol]);
        }
        let http2_errors = counter_vec(&r, &defs::HTTP2_ERRORS);
        for reason in Http2Error::ALL {
            http2_errors.with_label_values(&[reason.as_str()]);
        }
        let config_reloads = counter_vec(&r, &defs::CONFIG_RELOADS);
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        let trace_spans_dropped = counter_vec(&r, &defs::TRACE_SPANS_DROPPED);
        for reason in SpanDrop::ALL {
            trace_spans_dropped.with_label_values(&[reason.as_str()]);
        }
        let background_task_restarts = counter_vec(&r, &defs::BACKGROUND_TASK_RESTARTS);
        for task in BackgroundTask::ALL {
            background_task_restarts.with_label_values(&[task.as_str()]);
        }
        Metrics {
            cluster_call_duration: histogram_vec(
                &r,
                &defs::CLUSTER_CALL_DURATION,
                buckets::CLUSTER,
            ),
            cluster_errors: counter_vec(&r, &defs::CLUSTER_ERRORS),
            cluster_fallbacks: counter_vec(&r, &defs::CLUSTER_FALLBACKS),
            cluster_leases: gauge_vec(&r, &defs::CLUSTER_LEASES),
            cluster_connected: gauge_vec(&r, &defs::CLUSTER_CONNECTED),
            cluster_subscribed: gauge_vec(&r, &defs::CLUSTER_SUBSCRIBED),
            ext_authz_errors: counter_vec(&r, &defs::EXT_AUTHZ_ERRORS),
            connections_accepted: counter(&r, &defs::CONNECTIONS_ACCEPTED),
            connections_dropped,
            websockets_opened,
            http2_connections: counter(&r, &defs::HTTP2_CONNECTIONS),
            http2_errors,
            connections_pending: gauge(&r, &defs::CONNECTIONS_PENDING),
            connections_open: gauge_vec(&r, &defs::CONNECTIONS_OPEN),
            connections_limit: gauge_vec(&r, &defs::CONNECTIONS_LIMIT),
            handshakes: counter_vec(&r, &defs::HANDSHAKES),
            rejections: counter_vec(&r, &defs::REJECTIONS),
            handshake_duration: histogram_vec(&r, &defs::HANDSHAKE_DURATION, buckets::FAST),
            messages: counter_vec(&r, &defs::MESSAGES),
            message_bytes: counter_vec(&r, &defs::MESSAGE_BYTES),
            message_plain_bytes: counter_vec(&r, &defs::MESSAGE_PLAIN_BYTES),
            closes: counter_vec(&r, &defs::CLOSES),
            relay_ends: counter_vec(&r, &defs::RELAY_ENDS),
            gateway_closes: counter_vec(&r, &defs::GATEWAY_CLOSES),
            connection_duration: histogram_vec(&r, &defs::CONNECTION_DURATION, buckets::LIFETIME),
            upstream_connect_errors: counter_vec(&r, &defs::UPSTREAM_CONNECT_ERRORS),
            upstream_connect_duration: histogram_vec(
                &r,
                &defs::UPSTREAM_CONNECT_DURATION,
                buckets::FAST,
            ),
            upstream_healthy: gauge_vec(&r, &defs::UPSTREAM_HEALTHY),
            upstream_selections: counter_vec(&r, &defs::UPSTREAM_SELECTIONS),
            upstream_sockets_open: gauge_vec(&r, &defs::UPSTREAM_SOCKETS_OPEN),
            hash_key_missing: counter_vec(&r, &defs::HASH_KEY_MISSING),
            tls_handshake_failures: counter(&r, &defs::TLS_HANDSHAKE_FAILURES),
            trace_spans_exported: counter(&r, &defs::TRACE_SPANS_EXPORTED),
            trace_spans_dropped,
            config_reloads,
            background_task_restarts,
            meters: RwLock::new(HashMap::new()),
            registry: r,
        }
    }

    /// The process-wide instance that `/metrics` exposes.
    pub(crate) fn global() -> &'static Arc<Metrics> {
        static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Metrics::new()))
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub(crate) fn render(&self) -> String {
        self.fold_meters();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails on valid metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Create a configured route's series at zero (handshakes by result, rejections by reason,
    /// open connections), so that rates and ratios exist before the first event.
    pub(crate) fn init_route(&self, route: &str) {
        for result in HandshakeResult::ALL {
            self.handshakes.with_label_values(&[route, result.as_str()]);
        }
        for reason in Reason::ALL {
            self.rejections.with_label_values(&[route, reason.as_str()]);
        }
        self.connections_open.with_label_values(&[route]);
    }

    /// Create the series of a configured upstream at zero.
    pub(crate) fn init_upstream(&self, upstream: &str) {
        for error in UpstreamErrorKind::ALL {
            self.upstream_connect_errors
                .with_label_values(&[upstream, error.as_str()]);
        }
        for reason in SelectionReason::ALL {
            self.upstream_selections
                .with_label_values(&[upstream, reason.as_str()]);
        }
        self.upstream_sockets_open.with_label_values(&[upstream]);
    }

    /// Create the series of a `balance = "hash"` route at zero.
    pub(crate) fn init_hash_route(&self, route: &str) {
        self.hash_key_missing.with_label_values(&[route]);
    }

    // --- Connections and handshakes ------------------------------------------------------

    /// A client connection reached the gateway (after TLS).
    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.inc();
    }

    /// The gauge of not-yet-admitted connections (the edge holds it per pending connection).
    pub(crate) fn pending_gauge(&self) -> IntGauge {
        self.connections_pending.clone()
    }

    /// `n` spans reached the trace collector.
    pub(crate) fn spans_exported(&self, n: usize) {
        self.trace_spans_exported.inc_by(n as u64);
    }

    /// `n` finished spans were not exported, for `why`.
    pub(crate) fn spans_dropped(&self, why: SpanDrop, n: usize) {
        self.trace_spans_dropped
            .with_label_values(&[why.as_str()])
            .inc_by(n as u64);
    }

    /// A connection was closed before its head, without an answer.
    pub(crate) fn connection_dropped(&self, reason: DropReason) {
        self.connections_dropped
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// A handshake ended with `result`, `duration` after its head was complete. For
    /// [`HandshakeResult::Rejected`] prefer [`Metrics::rejected`], which also counts the reason.
    pub(crate) fn handshake(&self, route: &str, result: HandshakeResult, duration: Duration) {
        let labels = [route, result.as_str()];
        self.handshakes.with_label_values(&labels).inc();
        self.handshake_duration
            .with_label_values(&labels)
            .observe(duration.as_secs_f64());
    }

    /// A request was refused for `reason`: counts the rejection and a `rejected` handshake.
    /// `route` is the configured route path, or `labels::NO_ROUTE`.
    pub(crate) fn rejected(&self, route: &str, reason: Reason, duration: Duration) {
        self.rejections
            .with_label_values(&[route, reason.as_str()])
            .inc();
        self.handshake(route, HandshakeResult::Rejected, duration);
    }

    /// Publish the connection caps of the configuration in force (`route` = a route path, or
    /// `labels::ALL_ROUTES` for the global cap), so alerts can compare
    /// `portcullis_connections_open` with them. Caps no longer configured disappear.
    pub(crate) fn set_connection_limits<'a>(
        &self,
        limits: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.connections_limit.reset();
        for (route, limit) in limits {
            self.connections_limit
                .with_label_values(&[route])
                .set(i64::try_from(limit).unwrap_or(i64::MAX));
        }
    }

    // --- Sessions -----------------------------------------------------------------------

    /// A WebSocket session opened on `route`: the open gauge goes up until the returned guard is
    /// dropped, which also records the connection's duration.
    pub(crate) fn session_opened(&self, route: &str) -> OpenSession {
        OpenSession::start(
            self.connections_open.with_label_values(&[route]),
            self.connection_duration.with_label_values(&[route]),
        )
    }

    /// Bring the message counters up to date (they count per thread; see [`Meter`]).
    fn fold_meters(&self) {
        for meter in self.meters.read().expect("meters lock").values() {
            meter.fold();
        }
    }

    /// The message counters of `route`, resolved once (cheap to clone, use one per session).
    pub(crate) fn meter(&self, route: &str) -> Meter {
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

    /// A session ended with close `code` (`None`: no close frame), started by `initiator`.
    pub(crate) fn closed(&self, route: &str, code: Option<u16>, initiator: Initiator) {
        self.closes
            .with_label_values(&[route, close_code_label(code), initiator.as_str()])
            .inc();
    }

    /// A relayed session ended for `reason`.
    pub(crate) fn relay_ended(&self, route: &str, reason: EndReason) {
        self.relay_ends
            .with_label_values(&[route, reason.as_str()])
            .inc();
    }

    /// The gateway closed a session on its own account, for `reason`.
    pub(crate) fn gateway_closed(&self, route: &str, reason: EndReason) {
        self.gateway_closes
            .with_label_values(&[route, reason.as_str()])
            .inc();
    }

    // --- Upstreams, TLS, configuration ---------------------------------------------------

    /// One upstream connect attempt (TCP, TLS and WebSocket handshake) and how long it took.
    pub(crate) fn upstream_connect(
        &self,
        upstream: &str,
        result: Result<(), UpstreamErrorKind>,
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
    /// The balancer chose `upstream` first for a handshake.
    pub(crate) fn upstream_selected(&self, upstream: &str, reason: SelectionReason) {
        self.upstream_selections
            .with_label_values(&[upstream, reason.as_str()])
            .inc();
    }

    /// One relayed socket more (`+1`) or less (`-1`) on `upstream`.
    pub(crate) fn upstream_sockets(&self, upstream: &str, delta: i64) {
        self.upstream_sockets_open
            .with_label_values(&[upstream])
            .add(delta);
    }

    /// A handshake on a `balance = "hash"` route lacked the key.
    pub(crate) fn hash_key_missing(&self, route: &str) {
        self.hash_key_missing.with_label_values(&[route]).inc();
    }

    pub(crate) fn upstream_health(&self, upstream: &str, healthy: bool) {
        self.upstream_healthy
            .with_label_values(&[upstream])
            .set(i64::from(healthy));
    }

    /// A WebSocket was opened over `protocol` (`h1` or `h2`).
    pub(crate) fn websocket_opened(&self, protocol: &str) {
        self.websockets_opened.with_label_values(&[protocol]).inc();
    }

    /// A client connection chose HTTP/2.
    pub(crate) fn http2_connection(&self) {
        self.http2_connections.inc();
    }

    /// The gateway ended an HTTP/2 connection with an error.
    pub(crate) fn http2_error(&self, reason: Http2Error) {
        self.http2_errors
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// A TLS handshake on a public listener failed or timed out.
    pub(crate) fn tls_handshake_failure(&self) {
        self.tls_handshake_failures.inc();
    }

    // --- The cluster store ---------------------------------------------------------------

    /// A cluster store is configured: create its series at zero (they are absent otherwise,
    /// so that a gateway without one shows no disconnected store).
    pub(crate) fn init_cluster(&self) {
        for op in ClusterOp::ALL {
            for error in CLUSTER_ERROR_KINDS {
                self.cluster_errors.with_label_values(&[op.as_str(), error]);
            }
        }
        for result in Fallback::ALL {
            self.cluster_fallbacks.with_label_values(&[result.as_str()]);
        }
        self.cluster_leases.with_label_values(&[] as &[&str]);
        self.cluster_connected.with_label_values(&[] as &[&str]);
        self.cluster_subscribed.with_label_values(&[] as &[&str]);
    }

    /// One call to the cluster store: how long it took, and its error kind if it failed
    /// (`error` is one of [`CLUSTER_ERROR_KINDS`]).
    pub(crate) fn cluster_call(&self, op: ClusterOp, error: Option<&str>, took: Duration) {
        let result = match error {
            None => "ok",
            Some(kind) => {
                self.cluster_errors
                    .with_label_values(&[op.as_str(), kind])
                    .inc();
                "error"
            }
        };
        self.cluster_call_duration
            .with_label_values(&[op.as_str(), result])
            .observe(took.as_secs_f64());
    }

    /// A cluster call that was never sent (no connection, or no time left) failed with the
    /// error kind `error`: counted as an error, but it took no time worth a latency sample.
    pub(crate) fn cluster_call_unsent(&self, op: ClusterOp, error: &str) {
        self.cluster_errors
            .with_label_values(&[op.as_str(), error])
            .inc();
    }

    /// An admission check was decided without the cluster store.
    pub(crate) fn cluster_fallback(&self, how: Fallback) {
        self.cluster_fallbacks
            .with_label_values(&[how.as_str()])
            .inc();
    }

    /// The slots this replica holds in the cluster store changed by `delta`.
    pub(crate) fn cluster_leases(&self, delta: i64) {
        self.cluster_leases
            .with_label_values(&[] as &[&str])
            .add(delta);
    }

    /// Whether this replica is connected to the cluster store now.
    pub(crate) fn cluster_connected(&self, up: bool) {
        self.cluster_connected
            .with_label_values(&[] as &[&str])
            .set(i64::from(up));
    }

    /// Whether the subscription to other replicas' closes and revocations is up.
    pub(crate) fn cluster_subscribed(&self, up: bool) {
        self.cluster_subscribed
            .with_label_values(&[] as &[&str])
            .set(i64::from(up));
    }

    // --- Identity ------------------------------------------------------------------------

    /// An external authorizer gave no decision on `route`'s handshake, and `on_error` decided.
    pub(crate) fn ext_authz_error(&self, route: &str, error: AuthzError, on_error: AuthzOnError) {
        self.ext_authz_errors
            .with_label_values(&[route, error.as_str(), on_error.as_str()])
            .inc();
    }

    /// A configuration reload was attempted.
    pub(crate) fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// A supervised background task panicked and is being restarted.
    pub(crate) fn background_task_restarted(&self, task: &str) {
        self.background_task_restarts
            .with_label_values(&[task])
            .inc();
    }
}

/// Count a restart of the supervised task `task` in the process's metrics (the `on_panic` of
/// `core::background::supervise`).
fn count_background_restart(task: &'static str) {
    Metrics::global().background_task_restarted(task);
}

/// One of the gateway's own background tasks, supervised (`core::background::supervise`): the
/// future `make` returns runs again after a panic, with the usual backoff, and each restart is
/// counted under the task's name.
pub(crate) fn supervised<F, Fut>(task: BackgroundTask, make: F) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    background::supervise(
        task.as_str(),
        background::BACKOFF,
        count_background_restart,
        make,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::labels::{Class, Direction, ALL_ROUTES, NO_ROUTE};

    #[test]
    fn every_definition_is_registered_and_rendered() {
        let m = Metrics::new();
        m.init_route("/ws/echo");
        m.init_upstream("backend");
        m.connection_accepted();
        m.closed("/ws/echo", Some(1000), Initiator::Client);
        m.relay_ended("/ws/relay", EndReason::ClientClosed);
        m.gateway_closed("/ws/echo", EndReason::Revoked);
        let _open = m.session_opened("/ws/echo");
        m.meter("/ws/echo")
            .message(Direction::FromClient, Class::Text, 5);
        m.handshake(
            "/ws/echo",
            HandshakeResult::Accepted,
            Duration::from_millis(1),
        );
        m.upstream_connect("backend", Ok(()), Duration::from_millis(3));
        m.upstream_health("backend", true);
        m.upstream_selected("backend", SelectionReason::Hash);
        m.upstream_sockets("backend", 1);
        m.init_hash_route("/ws/relay");
        m.set_connection_limits([(ALL_ROUTES, 100)]);
        m.tls_handshake_failure();
        m.config_reload(true);
        m.init_cluster();
        m.cluster_call(ClusterOp::Rate, None, Duration::from_micros(90));
        m.cluster_fallback(Fallback::Local);
        m.cluster_leases(1);
        m.cluster_connected(true);
        m.cluster_subscribed(true);
        m.ext_authz_error("/ws/echo", AuthzError::Timeout, AuthzOnError::Allow);
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
        m.background_task_restarted("jwks");
        assert_eq!(get(&m.background_task_restarts, &["jwks"]), 1);
        assert_eq!(get(&m.background_task_restarts, &["reload"]), 0);
        assert_eq!(get(&m.background_task_restarts, &["cluster_leases"]), 0);
        assert!(m
            .render()
            .contains("portcullis_background_task_restarts_total{task=\"exit_monitor\"} 0\n"));
        m.init_cluster();
        m.cluster_call_unsent(ClusterOp::Take, "unavailable");
        m.cluster_call(ClusterOp::Take, Some("replica"), Duration::from_millis(1));
        assert_eq!(get(&m.cluster_errors, &["take", "unavailable"]), 1);
        assert_eq!(get(&m.cluster_errors, &["take", "replica"]), 1);
        let samples = |result: &str| {
            m.cluster_call_duration
                .with_label_values(&["take", result])
                .get_sample_count()
        };
        assert_eq!(samples("error"), 1, "a call never sent has no latency");
        assert_eq!(get(&m.handshakes, &["/a", "rejected"]), 2);
        assert_eq!(get(&m.handshakes, &["none", "rejected"]), 1);
        m.fold_meters();
        assert_eq!(get(&m.messages, &["/a", "from_client", "binary"]), 2);
        assert_eq!(get(&m.message_bytes, &["/a", "from_client", "binary"]), 16);
        assert_eq!(
            m.connection_duration
                .with_label_values(&["/a"])
                .get_sample_count(),
            1
        );
    }
}
