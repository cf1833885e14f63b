//! Admission: the checks a request passes before the gateway answers `101 Switching Protocols`.
//!
//! Cheapest check first (see `shared/design.md`): a valid RFC 6455 upgrade, then (as they land)
//! rate, Origin, token, claims and connection caps. Each check is a pure function of the request
//! head (plus shared state where it must be) and yields either a go-ahead or a [`Rejection`].

pub mod upgrade;

use std::net::IpAddr;

use crate::http1::Answer;
use crate::session::guard::Expiry;

/// What admission learned about a client it let in. Sessions use it for the token's expiry;
/// relays for identity forwarding and the subprotocols to offer upstream.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// The client's address: the socket peer, or the forwarded address from a trusted proxy.
    pub client_ip: Option<IpAddr>,
    /// The token's `sub`, when a token was checked.
    pub subject: Option<String>,
    /// The token's verified claims (empty for public routes).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The raw token, kept only so a route that asks for it can forward it; never logged.
    pub token: Option<String>,
    /// When the socket must close because the token expires.
    pub expiry: Option<Expiry>,
    /// The subprotocols the client offered, minus any `bearer.<token>` entry.
    pub protocols: Vec<String>,
}

/// Why a request was refused: a low-cardinality label for logs and metrics
/// (`portcullis_rejections_total{reason}`), in one place. The admission and relay work return a
/// [`Rejection`] with one of these; the gateway counts and logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not a valid WebSocket upgrade, or a malformed request head (400).
    BadRequest,
    /// A plain HTTP request to a WebSocket route (426).
    UpgradeRequired,
    /// The gateway is draining for shutdown (503).
    ShuttingDown,
    /// The client did not send a complete request head in time (408).
    HeadTimeout,
    /// The request head was larger than allowed (431).
    HeadTooLarge,
    /// A WebSocket upgrade to a path with no route (404).
    NoRoute,
    /// The Origin is not on the route's allow-list (403).
    Origin,
    /// No token where the route requires one (401).
    AuthMissing,
    /// A token that does not verify: signature, issuer, audience, algorithm (401).
    AuthInvalid,
    /// A token past its expiry (401).
    AuthExpired,
    /// A valid token whose claims the route's policy refuses (403).
    Forbidden,
    /// Too many handshakes from one client (429).
    RateLimited,
    /// A connection cap (per IP, subject, route or global) is reached (429/503).
    ConnLimit,
    /// A relay route could not reach any upstream (502/504).
    UpstreamUnavailable,
}

impl Reason {
    /// Every reason, so that metrics can start each series at zero.
    pub const ALL: [Reason; 14] = [
        Reason::BadRequest,
        Reason::UpgradeRequired,
        Reason::ShuttingDown,
        Reason::HeadTimeout,
        Reason::HeadTooLarge,
        Reason::NoRoute,
        Reason::Origin,
        Reason::AuthMissing,
        Reason::AuthInvalid,
        Reason::AuthExpired,
        Reason::Forbidden,
        Reason::RateLimited,
        Reason::ConnLimit,
        Reason::UpstreamUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad_request",
            Reason::UpgradeRequired => "upgrade_required",
            Reason::ShuttingDown => "shutting_down",
            Reason::HeadTimeout => "head_timeout",
            Reason::HeadTooLarge => "head_too_large",
            Reason::NoRoute => "no_route",
            Reason::Origin => "origin",
            Reason::AuthMissing => "auth_missing",
            Reason::AuthInvalid => "auth_invalid",
            Reason::AuthExpired => "auth_expired",
            Reason::Forbidden => "forbidden",
            Reason::RateLimited => "rate_limited",
            Reason::ConnLimit => "conn_limit",
            Reason::UpstreamUnavailable => "upstream_unavailable",
        }
    }
}

/// A refused handshake: the reason, and the answer the client gets.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: Reason,
    pub answer: Answer,
}

impl Rejection {
    pub fn new(reason: Reason, status: u16, body: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            answer: Answer::new(status, body),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Rejection {
        self.answer = self.answer.header(name, value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed_once_with_distinct_labels() {
        let mut labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len());
        // A new variant must join `ALL`: this match stops compiling until it is handled here.
        for r in Reason::ALL {
            match r {
                Reason::BadRequest
                | Reason::UpgradeRequired
                | Reason::ShuttingDown
                | Reason::HeadTimeout
                | Reason::HeadTooLarge
                | Reason::NoRoute
                | Reason::Origin
                | Reason::AuthMissing
                | Reason::AuthInvalid
                | Reason::AuthExpired
                | Reason::Forbidden
                | Reason::RateLimited
                | Reason::ConnLimit
                | Reason::UpstreamUnavailable => {}
            }
        }
    }
}
