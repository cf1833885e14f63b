//! A refused handshake: the reason (a label) and the answer the client gets.

use crate::core::reason::Reason;
use crate::net::answer::Answer;

/// A refused handshake.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    pub(crate) reason: Reason,
    pub(crate) answer: Answer,
    /// Decided without the cluster store because it failed (the access log says so).
    pub(crate) cluster_fallback: bool,
}

impl Rejection {
    pub(crate) fn new(reason: Reason, status: u16, body: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            answer: Answer::new(status, body),
            cluster_fallback: false,
        }
    }

    /// Mark the rejection as decided without the cluster store.
    pub(crate) fn fallback(mut self, fallback: bool) -> Rejection {
        self.cluster_fallback = fallback;
        self
    }

    /// `400 invalid_request` (RFC 6750, section 3.1): the request carries credentials
    /// ambiguously.
    pub(crate) fn invalid_request(why: &str) -> Rejection {
        Rejection::new(Reason::BadRequest, 400, format!("{why}\n")).header(
            "WWW-Authenticate",
            format!(
                "Bearer realm=\"portcullis\", error=\"invalid_request\", error_description=\"{why}\""
            ),
        )
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Rejection {
        self.answer = self.answer.header(name, value);
        self
    }
}
