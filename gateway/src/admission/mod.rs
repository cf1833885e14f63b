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

/// Why a request was refused: a low-cardinality label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a valid WebSocket upgrade (400).
    BadRequest,
    /// A plain HTTP request to a WebSocket route (426).
    UpgradeRequired,
    /// The gateway is draining for shutdown (503).
    ShuttingDown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad_request",
            Reason::UpgradeRequired => "upgrade_required",
            Reason::ShuttingDown => "shutting_down",
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
