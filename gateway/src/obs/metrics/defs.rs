//! Every metric's name, type, labels and help text, in one place. `docs/metrics.md` describes
//! the same list for users; the deploy files (alert rules, dashboard) may only use these names
//! (a test checks that).
//!
//! Rules (checked by the tests): one `portcullis_` prefix, base units (`_seconds`, `_bytes`),
//! counters end in `_total`, and labels only of low cardinality.

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

pub const CONNECTIONS_ACCEPTED: Def = Def {
    name: "portcullis_connections_accepted_total",
    kind: Kind::Counter,
    labels: &[],
    help:
        "Client connections accepted on the public listeners (after TLS, before the request head).",
};
pub const CONNECTIONS_DROPPED: Def = Def {
    name: "portcullis_connections_dropped_total",
    kind: Kind::Counter,
    labels: &["reason"],
    help: "Connections closed before a complete request head, without an answer: too many not-yet-admitted connections in total or from one address, or a TLS handshake that did not finish within limits.head_timeout.",
};
pub const CONNECTIONS_PENDING: Def = Def {
    name: "portcullis_connections_pending",
    kind: Kind::Gauge,
    labels: &[],
    help: "Connections accepted but not yet admitted: in TLS, or before a complete WebSocket request head (capped by limits.max_pending_connections and max_pending_per_ip).",
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
pub const MESSAGE_PLAIN_BYTES: Def = Def {
    name: "portcullis_message_plain_bytes_total",
    kind: Kind::Counter,
    labels: &["route", "direction"],
    help: "Bytes of permessage-deflate compressed messages before compression (after inflating what was received, before deflating what was sent); portcullis_message_bytes_total counts the same messages as on the wire.",
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
pub const GATEWAY_CLOSES: Def = Def {
    name: "portcullis_gateway_closes_total",
    kind: Kind::Counter,
    labels: &["route", "reason"],
    help: "WebSocket sessions (echo and relay) the gateway closed on its own account, by why: admin (an operator's close), revoked, lifetime (max_session_duration), token_expired, shutdown, route_removed, idle_timeout, ping_timeout, ...",
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
    help:
        "Failed attempts to connect (TCP, TLS, WebSocket handshake) to an upstream, by error kind.",
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
pub const UPSTREAM_SELECTIONS: Def = Def {
    name: "portcullis_upstream_selections_total",
    kind: Kind::Counter,
    labels: &["upstream", "reason"],
    help: "Handshakes for which the balancer chose this upstream first, by why: rotation (round robin, least connections), hash (the key's upstream), overflow (the key's upstream was past the load bound), no_key (hash route, handshake without its key: least connections).",
};
pub const UPSTREAM_SOCKETS_OPEN: Def = Def {
    name: "portcullis_upstream_sockets_open",
    kind: Kind::Gauge,
    labels: &["upstream"],
    help: "Relayed sockets open to the upstream, its handshakes in progress included (what least connections and the hash load bound count).",
};
pub const HASH_KEY_MISSING: Def = Def {
    name: "portcullis_relay_hash_key_missing_total",
    kind: Kind::Counter,
    labels: &["route"],
    help: "Handshakes on a balance = \"hash\" route without the route's hash_key (or with it twice); they went to the upstream with the fewest open sockets.",
};
pub const TLS_HANDSHAKE_FAILURES: Def = Def {
    name: "portcullis_tls_handshake_failures_total",
    kind: Kind::Counter,
    labels: &[],
    help: "TLS handshakes on the public listeners that failed or timed out.",
};
pub const TRACE_SPANS_EXPORTED: Def = Def {
    name: "portcullis_trace_spans_exported_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Spans (handshakes, their steps, sessions) the trace collector accepted ([tracing]).",
};
pub const TRACE_SPANS_DROPPED: Def = Def {
    name: "portcullis_trace_spans_dropped_total",
    kind: Kind::Counter,
    labels: &["reason"],
    help: "Finished spans not exported: the queue was full (tracing.queue_size; the collector is slow or down) or the collector did not take their batch.",
};
pub const WEBSOCKETS_OPENED: Def = Def {
    name: "portcullis_websockets_opened_total",
    kind: Kind::Counter,
    labels: &["protocol"],
    help: "WebSockets opened (101 on HTTP/1.1, 200 on an HTTP/2 extended CONNECT stream), by the HTTP that carries them: h1 or h2.",
};
pub const HTTP2_CONNECTIONS: Def = Def {
    name: "portcullis_http2_connections_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Client connections that chose HTTP/2 by ALPN and completed its preface.",
};
pub const HTTP2_ERRORS: Def = Def {
    name: "portcullis_http2_errors_total",
    kind: Kind::Counter,
    labels: &["reason"],
    help: "HTTP/2 connections the gateway ended with an error (GOAWAY), by class: enhance_your_calm (rapid reset, reset or DATA floods), protocol_error, flow_control_error, frame_size_error, compression_error, head_timeout (no request in time), other.",
};
pub const CONFIG_RELOADS: Def = Def {
    name: "portcullis_config_reloads_total",
    kind: Kind::Counter,
    labels: &["result"],
    help: "Configuration reloads by result (success, failure).",
};
pub const CLUSTER_CALL_DURATION: Def = Def {
    name: "portcullis_cluster_call_duration_seconds",
    kind: Kind::Histogram,
    labels: &["operation", "result"],
    help: "Calls sent to the cluster store (Redis) by operation (rate, take, renew, release, event, connect) and result (ok, error), bounded by [cluster] timeout.",
};
pub const CLUSTER_ERRORS: Def = Def {
    name: "portcullis_cluster_errors_total",
    kind: Kind::Counter,
    labels: &["operation", "error"],
    help: "Failed calls to the cluster store by operation and error kind: unavailable (not connected: not sent), timeout, connection, replica (READONLY or MASTERDOWN: the server is not the primary), response (another error answer).",
};
pub const CLUSTER_FALLBACKS: Def = Def {
    name: "portcullis_cluster_fallbacks_total",
    kind: Kind::Counter,
    labels: &["result"],
    help: "Admission checks decided without the cluster store because it failed: local (on_error = \"open\": this process's own limits) or refused (on_error = \"closed\": 503).",
};
pub const CLUSTER_LEASES: Def = Def {
    name: "portcullis_cluster_leases",
    kind: Kind::Gauge,
    labels: &[],
    help: "Connection slots (leases) this replica holds in the cluster store and renews.",
};
pub const CLUSTER_CONNECTED: Def = Def {
    name: "portcullis_cluster_connected",
    kind: Kind::Gauge,
    labels: &[],
    help: "1 while this replica has a connection to the cluster store, 0 while it has none (then /readyz says cluster degraded, as it does while recent calls fail).",
};
pub const CLUSTER_SUBSCRIBED: Def = Def {
    name: "portcullis_cluster_subscribed",
    kind: Kind::Gauge,
    labels: &[],
    help: "1 while this replica's subscription to the cluster's closes and revocations is up and answers its liveness checks, 0 while it is not (then /readyz says that closes and revocations from other replicas are not being heard).",
};
pub const EXT_AUTHZ_ERRORS: Def = Def {
    name: "portcullis_ext_authz_errors_total",
    kind: Kind::Counter,
    labels: &["route", "error", "on_error"],
    help: "Calls to an external authorizer that got no decision, by route, error kind (timeout, connect, too_large, protocol, status) and what on_error made of it: deny (refused with 503) or allow (admitted: fail open).",
};
pub const BACKGROUND_TASK_RESTARTS: Def = Def {
    name: "portcullis_background_task_restarts_total",
    kind: Kind::Counter,
    labels: &["task"],
    help: "Background tasks restarted after a panic, by task: jwks, reload, cluster_link, cluster_leases, cluster_events, cluster_closes, exit_monitor.",
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
    CONNECTIONS_DROPPED,
    CONNECTIONS_PENDING,
    CONNECTIONS_OPEN,
    CONNECTIONS_LIMIT,
    HANDSHAKES,
    REJECTIONS,
    HANDSHAKE_DURATION,
    MESSAGES,
    MESSAGE_BYTES,
    MESSAGE_PLAIN_BYTES,
    CLOSES,
    GATEWAY_CLOSES,
    CONNECTION_DURATION,
    UPSTREAM_CONNECT_ERRORS,
    UPSTREAM_CONNECT_DURATION,
    UPSTREAM_HEALTHY,
    UPSTREAM_SELECTIONS,
    UPSTREAM_SOCKETS_OPEN,
    HASH_KEY_MISSING,
    TLS_HANDSHAKE_FAILURES,
    TRACE_SPANS_EXPORTED,
    TRACE_SPANS_DROPPED,
    WEBSOCKETS_OPENED,
    HTTP2_CONNECTIONS,
    HTTP2_ERRORS,
    CONFIG_RELOADS,
    CLUSTER_CALL_DURATION,
    CLUSTER_ERRORS,
    CLUSTER_FALLBACKS,
    CLUSTER_LEASES,
    CLUSTER_CONNECTED,
    CLUSTER_SUBSCRIBED,
    EXT_AUTHZ_ERRORS,
    BACKGROUND_TASK_RESTARTS,
    BUILD_INFO,
];

/// Histogram buckets, in seconds.
pub(crate) mod buckets {
    /// Handshakes and upstream connects: sub-millisecond to 10 s.
    pub const FAST: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    /// Calls to the cluster store: a tenth of a millisecond to a quarter second.
    pub const CLUSTER: &[f64] = &[
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    ];
    /// Connection lifetimes: a second to a day.
    pub const LIFETIME: &[f64] = &[
        0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0,
    ];
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
        for def in ALL {
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
                        "operation",
                        "version",
                        "task",
                        "on_error",
                        "protocol"
                    ]
                    .contains(label),
                    "{n}: label {label} is not on the low-cardinality list"
                );
            }
        }
    }
}
