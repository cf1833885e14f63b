//! How a session ended: who started the close, what went through it, and why the gateway stopped
//! it on its own account. The access log and the metrics report these; sessions produce them.

use super::close::{self, Violation};

/// Which side started the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Initiator {
    #[default]
    None,
    Client,
    Gateway,
}

impl Initiator {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Initiator::None => "none",
            Initiator::Client => "client",
            Initiator::Gateway => "gateway",
        }
    }
}

/// How a session ended and what went through it: the access-log line's content.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionEnd {
    pub(crate) close_code: Option<u16>,
    pub(crate) initiator: Initiator,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Why the gateway ended it on its own account, when it did (echo sessions; a relay
    /// reports its own end reason).
    pub(crate) reason: Option<EndReason>,
}

impl SessionEnd {
    /// Record that the gateway closed the session with `code`.
    pub(crate) fn close_by_gateway(&mut self, code: u16) {
        self.initiator = Initiator::Gateway;
        self.close_code = Some(code);
    }
}

/// Why the gateway ends a session on its own account, with close 1001.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The gateway is stopping (or handing over to a new process).
    Shutdown,
    /// A reload removed the session's route.
    RouteRemoved,
}

impl Stop {
    /// The close the client gets.
    pub(crate) fn close(self) -> Violation {
        match self {
            Stop::Shutdown => Violation::new(close::GOING_AWAY, "server shutting down"),
            Stop::RouteRemoved => Violation::new(close::GOING_AWAY, "route removed"),
        }
    }
}

/// Why a relay session ended: a low-cardinality label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// The client sent a close frame.
    ClientClosed,
    /// The upstream sent a close frame.
    UpstreamClosed,
    /// The client's connection ended without a close frame.
    ClientGone,
    /// The upstream's connection ended without a close frame, or writing to it failed.
    UpstreamGone,
    /// The client broke the protocol (1002/1007/1009 to it).
    ClientProtocolError,
    /// The upstream broke the protocol (1002/1007/1009 to it, 1011 to the client).
    UpstreamProtocolError,
    /// A client message broke the route's policy (size, rate).
    ClientPolicy,
    /// An upstream message broke the route's policy.
    UpstreamPolicy,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// No data either way for `idle_timeout`.
    IdleTimeout,
    /// The token expired.
    TokenExpired,
    /// The gateway is shutting down.
    Shutdown,
    /// A reload removed the route.
    RouteRemoved,
    /// An operator closed it (`POST /sessions/close`).
    Admin,
    /// An operator revoked its subject or token id (`POST /revocations`).
    Revoked,
    /// It reached its route's `max_session_duration`.
    Lifetime,
}

impl EndReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientClosed => "client_closed",
            EndReason::UpstreamClosed => "upstream_closed",
            EndReason::ClientGone => "client_gone",
            EndReason::UpstreamGone => "upstream_gone",
            EndReason::ClientProtocolError => "client_protocol_error",
            EndReason::UpstreamProtocolError => "upstream_protocol_error",
            EndReason::ClientPolicy => "client_policy",
            EndReason::UpstreamPolicy => "upstream_policy",
            EndReason::PingTimeout => "ping_timeout",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::TokenExpired => "token_expired",
            EndReason::Shutdown => "shutdown",
            EndReason::RouteRemoved => "route_removed",
            EndReason::Admin => "admin",
            EndReason::Revoked => "revoked",
            EndReason::Lifetime => "lifetime",
        }
    }
}

impl From<Stop> for EndReason {
    fn from(stop: Stop) -> EndReason {
        match stop {
            Stop::Shutdown => EndReason::Shutdown,
            Stop::RouteRemoved => EndReason::RouteRemoved,
        }
    }
}
