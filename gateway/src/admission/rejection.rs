//! A refused handshake: the reason (a label) and the answer the client gets.

use crate::core::reason::Reason;
use crate::net::answer::Answer;

/// A refused handshake.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    pub(crate) reason: Reason,
    pub(crate) answer: Answer,
}

impl Rejection {
    pub(crate) fn new(reason: Reason, status: u16, body: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            answer: Answer::new(status, body),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Rejection {
        self.answer = self.answer.header(name, value);
        self
    }
}
