//! Metric label values besides the rejection reason and the end reasons: each from a small enum,
//! so that no label value ever comes from a request (no raw paths, user ids, client addresses or
//! client-chosen close codes beyond the registered ones).

use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::Message;

/// The `route` label of events that belong to no configured route (a bad head, an unknown path).
pub(crate) const NO_ROUTE: &str = "none";
/// The `route` label of process-wide values, e.g. the global connection cap.
pub(crate) const ALL_ROUTES: &str = "all";

/// The outcome of a handshake (`result` label of the handshake metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeResult {
    /// `101 Switching Protocols` was written.
    Accepted,
    /// Refused with an HTTP error (see the `reason` of `portcullis_rejections_total`).
    Rejected,
    /// The client went away before the 101 could be written.
    Failed,
}

impl HandshakeResult {
    pub(crate) const ALL: [HandshakeResult; 3] = [
        HandshakeResult::Accepted,
        HandshakeResult::Rejected,
        HandshakeResult::Failed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Accepted => "accepted",
            HandshakeResult::Rejected => "rejected",
            HandshakeResult::Failed => "failed",
        }
    }
}

/// Which way a message went, seen from the gateway (`direction` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
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
    pub(crate) const ALL: [Direction; 4] = [
        Direction::FromClient,
        Direction::ToClient,
        Direction::FromUpstream,
        Direction::ToUpstream,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::FromClient => "from_client",
            Direction::ToClient => "to_client",
            Direction::FromUpstream => "from_upstream",
            Direction::ToUpstream => "to_upstream",
        }
    }

    /// Position in [`Direction::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A kind of call to the cluster store (`operation` label of the cluster metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClusterOp {
    /// A handshake rate check (GCRA script).
    Rate,
    /// Taking connection slots (lease script).
    Take,
    /// The heartbeat that renews this replica's slots (and refills a Redis that lost them).
    Renew,
    /// Giving slots back when sockets end.
    Release,
    /// Publishing or reading revocations and operator closes.
    Event,
    /// Connecting, and the first `PING` of a connection.
    Connect,
    /// The liveness check of a link (`PING` at `[cluster] liveness_interval`).
    Ping,
}

impl ClusterOp {
    pub(crate) const ALL: [ClusterOp; 7] = [
        ClusterOp::Rate,
        ClusterOp::Take,
        ClusterOp::Renew,
        ClusterOp::Release,
        ClusterOp::Event,
        ClusterOp::Connect,
        ClusterOp::Ping,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ClusterOp::Rate => "rate",
            ClusterOp::Take => "take",
            ClusterOp::Renew => "renew",
            ClusterOp::Release => "release",
            ClusterOp::Event => "event",
            ClusterOp::Connect => "connect",
            ClusterOp::Ping => "ping",
        }
    }
}

/// A supervised background task (`core::background::supervise`; `task` label of
/// `portcullis_background_task_restarts_total`, and its name in `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackgroundTask {
    /// A JWKS URL's fetcher.
    Jwks,
    /// The SIGHUP and file-watch reloader.
    Reload,
    /// The connection to the cluster store and its reconnect loop.
    ClusterLink,
    /// The lease heartbeat: renews and releases this replica's connection slots.
    ClusterLeases,
    /// The subscription to the cluster's close and revocation events.
    ClusterEvents,
    /// Applies the closes other replicas publish to this process's sessions.
    ClusterCloses,
    /// Ends the process once a graceful stop has drained.
    ExitMonitor,
}

impl BackgroundTask {
    pub(crate) const ALL: [BackgroundTask; 7] = [
        BackgroundTask::Jwks,
        BackgroundTask::Reload,
        BackgroundTask::ClusterLink,
        BackgroundTask::ClusterLeases,
        BackgroundTask::ClusterEvents,
        BackgroundTask::ClusterCloses,
        BackgroundTask::ExitMonitor,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackgroundTask::Jwks => "jwks",
            BackgroundTask::Reload => "reload",
            BackgroundTask::ClusterLink => "cluster_link",
            BackgroundTask::ClusterLeases => "cluster_leases",
            BackgroundTask::ClusterEvents => "cluster_events",
            BackgroundTask::ClusterCloses => "cluster_closes",
            BackgroundTask::ExitMonitor => "exit_monitor",
        }
    }
}

/// What a check did when the cluster store failed (`result` label of
/// `portcullis_cluster_fallbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// `on_error = "open"`: decided under this process's own limits.
    Local,
    /// `on_error = "closed"`: refused with 503.
    Refused,
}

impl Fallback {
    pub(crate) const ALL: [Fallback; 2] = [Fallback::Local, Fallback::Refused];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Fallback::Local => "local",
            Fallback::Refused => "refused",
        }
    }
}

/// The opcode class of a message (`class` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Text,
    Binary,
    /// Ping, pong and close frames.
    Control,
}

impl Class {
    pub(crate) const ALL: [Class; 3] = [Class::Text, Class::Binary, Class::Control];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Class::Text => "text",
            Class::Binary => "binary",
            Class::Control => "control",
        }
    }

    /// Position in [`Class::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The class of a tungstenite message.
    pub(crate) fn of(message: &Message) -> Class {
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
pub(crate) fn payload_len(message: &Message) -> usize {
    match message {
        Message::Close(frame) => frame.as_ref().map_or(0, |f| 2 + f.reason.len()),
        // A compressed message: its payload as sent.
        Message::Frame(frame) => frame.payload().len(),
        other => other.len(),
    }
}

/// Why an upstream connect failed (`error` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
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

impl UpstreamErrorKind {
    pub(crate) const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Refused,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Handshake,
        UpstreamErrorKind::Other,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Refused => "refused",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Handshake => "handshake",
            UpstreamErrorKind::Other => "other",
        }
    }
}

/// Why a relay picked an upstream first for a handshake (`reason` label of
/// `portcullis_upstream_selections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SelectionReason {
    /// Round robin or least connections.
    Rotation,
    /// `balance = "hash"`: the key's own upstream.
    Hash,
    /// `balance = "hash"`: the key's upstream was past the load bound; the next in its order.
    Overflow,
    /// `balance = "hash"` but the handshake had no key: least connections.
    NoKey,
}

impl SelectionReason {
    pub(crate) const ALL: [SelectionReason; 4] = [
        SelectionReason::Rotation,
        SelectionReason::Hash,
        SelectionReason::Overflow,
        SelectionReason::NoKey,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SelectionReason::Rotation => "rotation",
            SelectionReason::Hash => "hash",
            SelectionReason::Overflow => "overflow",
            SelectionReason::NoKey => "no_key",
        }
    }
}

/// Why an external authorizer gave no decision (`error` label of
/// `portcullis_ext_authz_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthzError {
    /// No answer within the policy's `timeout`.
    Timeout,
    /// It could not be reached: refused, unresolvable, or the TLS handshake failed.
    Connect,
    /// Its answer was larger than the gateway reads.
    TooLarge,
    /// The connection broke, or the answer was not HTTP.
    Protocol,
    /// An answer that is no decision (`1xx`, or past `599`).
    Status,
}

impl AuthzError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuthzError::Timeout => "timeout",
            AuthzError::Connect => "connect",
            AuthzError::TooLarge => "too_large",
            AuthzError::Protocol => "protocol",
            AuthzError::Status => "status",
        }
    }
}

/// Why a connection was closed before its request head, without an answer (`reason` label of
/// `portcullis_connections_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// `limits.max_pending_connections` not-yet-admitted connections are open.
    PendingLimit,
    /// `limits.max_pending_per_ip` not-yet-admitted connections are open from this address.
    PendingLimitPerIp,
    /// The TLS handshake did not finish within `limits.head_timeout`.
    HandshakeTimeout,
}

impl DropReason {
    pub(crate) const ALL: [DropReason; 3] = [
        DropReason::PendingLimit,
        DropReason::PendingLimitPerIp,
        DropReason::HandshakeTimeout,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropReason::PendingLimit => "pending_limit",
            DropReason::PendingLimitPerIp => "pending_limit_per_ip",
            DropReason::HandshakeTimeout => "handshake_timeout",
        }
    }
}

/// The `reason` label of `portcullis_trace_spans_dropped_total`: why finished spans were not
/// exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanDrop {
    /// `tracing.queue_size` spans were already waiting (the collector is slow or down).
    QueueFull,
    /// The collector did not take the batch (unreachable, timed out, answered an error).
    ExportFailed,
}

impl SpanDrop {
    pub(crate) const ALL: [SpanDrop; 2] = [SpanDrop::QueueFull, SpanDrop::ExportFailed];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SpanDrop::QueueFull => "queue_full",
            SpanDrop::ExportFailed => "export_failed",
        }
    }
}

/// Why the gateway ended an HTTP/2 connection with an error (GOAWAY), by attack class: the
/// `reason` label of `portcullis_http2_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Http2Error {
    /// GOAWAY `ENHANCE_YOUR_CALM`: rapid reset (streams reset before they were accepted), too
    /// many streams reset for the client's errors, floods of small or empty DATA frames, of
    /// CONTINUATION frames or of control frames (PING, SETTINGS, ...), or an HPACK bomb.
    EnhanceYourCalm,
    /// GOAWAY `PROTOCOL_ERROR`: a frame HTTP/2 does not allow there (CONTINUATION out of
    /// place, SETTINGS or WINDOW_UPDATE with bad values, streams past the limit, ...).
    Protocol,
    /// GOAWAY `FLOW_CONTROL_ERROR`: data past a window, or a window grown past 2^31 - 1.
    FlowControl,
    /// GOAWAY `FRAME_SIZE_ERROR`: a frame larger than allowed.
    FrameSize,
    /// GOAWAY `COMPRESSION_ERROR`: a header block HPACK cannot decode.
    Compression,
    /// No request within `limits.head_timeout` of the connect (TLS included).
    HeadTimeout,
    /// Any other error the gateway ended the connection with.
    Other,
}

impl Http2Error {
    pub(crate) const ALL: [Http2Error; 7] = [
        Http2Error::EnhanceYourCalm,
        Http2Error::Protocol,
        Http2Error::FlowControl,
        Http2Error::FrameSize,
        Http2Error::Compression,
        Http2Error::HeadTimeout,
        Http2Error::Other,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Http2Error::EnhanceYourCalm => "enhance_your_calm",
            Http2Error::Protocol => "protocol_error",
            Http2Error::FlowControl => "flow_control_error",
            Http2Error::FrameSize => "frame_size_error",
            Http2Error::Compression => "compression_error",
            Http2Error::HeadTimeout => "head_timeout",
            Http2Error::Other => "other",
        }
    }
}

/// The `protocol` label: the HTTP that carried a WebSocket's handshake.
pub(crate) const PROTOCOLS: [&str; 2] = ["h1", "h2"];

/// The `code` label of a close: registered codes (1000–1015) as themselves, the ranges a client
/// may choose freely as `3xxx` and `4xxx` (so a client cannot create thousands of series),
/// `none` when the connection ended without a close frame, `invalid` otherwise.
pub(crate) fn close_code_label(code: Option<u16>) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn indexes_follow_the_lists() {
        for (i, d) in Direction::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
        for (i, c) in Class::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
