//! What ended a relay session's pumps, and the table of what each side is told then: the close
//! frame each side gets (or none when it closed itself or is gone), whose close reply to wait
//! for, and how the session is reported.

use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::RelayEnd;
use crate::core::close::{self, Violation};
use crate::core::end::{EndReason, Initiator, SessionEnd, Stop};
use crate::session::close::{code_of, frame};
use crate::session::registry::CloseRequest;

/// What ended the pumps.
pub(super) enum Outcome {
    /// A side sent a close frame: the other side gets the same code and reason.
    Closed {
        by_client: bool,
        frame: Option<CloseFrame>,
    },
    /// A side is gone; the other gets a close.
    Gone { client: bool },
    /// A side broke the protocol or the policy: it gets `violation`, the other side a close.
    Broke {
        client: bool,
        violation: Violation,
        policy: bool,
    },
    /// The gateway ends the session for both sides.
    Gateway { reason: EndReason },
    /// An operator's close, a revocation or the session's lifetime: the client gets the
    /// request's close, the upstream 1001.
    Operator(CloseRequest),
}

/// How to finish one side: `close` (when `Some`) is sent as it is (`Some(None)`: a close frame
/// without a code); `drain` waits for the end of a side that closed itself (its close was
/// answered by tungstenite).
pub(super) struct Finish {
    pub(super) close: Option<Option<CloseFrame>>,
    pub(super) drain: bool,
}

impl Finish {
    const NOTHING: Finish = Finish {
        close: None,
        drain: false,
    };
    const DRAIN: Finish = Finish {
        close: None,
        drain: true,
    };

    fn send(v: Violation) -> Finish {
        Finish {
            close: Some(Some(frame(v.code, v.reason))),
            drain: false,
        }
    }

    fn pass(f: Option<CloseFrame>) -> Finish {
        Finish {
            close: Some(f),
            drain: false,
        }
    }

    /// The code of the close frame we send, if any.
    fn code(&self) -> Option<u16> {
        match &self.close {
            Some(Some(f)) => Some(u16::from(f.code)),
            _ => None,
        }
    }
}

/// The decision for both sides.
pub(super) struct Plan {
    pub(super) end: RelayEnd,
    pub(super) client: Finish,
    pub(super) upstream: Finish,
    /// The client broke the protocol or the policy: close the upstream first, delivering its
    /// data messages to the client until its close reply, then close the client (the order the
    /// local echo keeps too, so a client's valid message before a bad frame is still answered).
    pub(super) upstream_first: bool,
}

const fn going_away(reason: &'static str) -> Violation {
    Violation::new(close::GOING_AWAY, reason)
}

impl Plan {
    pub(super) fn of(outcome: Outcome) -> Plan {
        let mut end = RelayEnd {
            session: SessionEnd::default(),
            reason: EndReason::Shutdown,
            upstream_close_code: None,
        };
        let upstream_first = matches!(outcome, Outcome::Broke { client: true, .. });
        let (client, upstream) = match outcome {
            Outcome::Closed { by_client, frame } => {
                let code = code_of(frame.as_ref());
                end.session.close_code = Some(code);
                end.upstream_close_code = Some(code);
                if by_client {
                    end.reason = EndReason::ClientClosed;
                    end.session.initiator = Initiator::Client;
                    (Finish::DRAIN, Finish::pass(frame))
                } else if code == close::PROTOCOL_ERROR {
                    // The upstream broke the protocol, or said its hop (the gateway's) did: a
                    // close with a code that must never be sent (1005, 1006, 1015: tungstenite
                    // answers those with 1002) or 1002 itself. The client did nothing wrong:
                    // it gets 1011, and the report blames the upstream.
                    end.reason = EndReason::UpstreamProtocolError;
                    end.session.initiator = Initiator::Gateway;
                    let to_client =
                        Violation::new(close::INTERNAL_ERROR, "upstream protocol error");
                    (Finish::send(to_client), Finish::DRAIN)
                } else {
                    end.reason = EndReason::UpstreamClosed;
                    end.session.initiator = Initiator::Gateway;
                    (Finish::pass(frame), Finish::DRAIN)
                }
            }
            Outcome::Gone { client: true } => {
                end.reason = EndReason::ClientGone;
                end.session.initiator = Initiator::Client;
                (
                    Finish::NOTHING,
                    Finish::send(going_away("client disconnected")),
                )
            }
            Outcome::Gone { client: false } => {
                end.reason = EndReason::UpstreamGone;
                (
                    Finish::send(Violation::new(
                        close::INTERNAL_ERROR,
                        "upstream connection lost",
                    )),
                    Finish::NOTHING,
                )
            }
            Outcome::Broke {
                client: true,
                violation,
                policy,
            } => {
                end.reason = if policy {
                    EndReason::ClientPolicy
                } else {
                    EndReason::ClientProtocolError
                };
                let other = match (policy, violation.code) {
                    (_, close::MESSAGE_TOO_BIG) => "client message too big",
                    (true, _) => "client closed by policy",
                    (false, _) => "client protocol error",
                };
                (Finish::send(violation), Finish::send(going_away(other)))
            }
            Outcome::Broke {
                client: false,
                violation,
                policy,
            } => {
                end.reason = if policy {
                    EndReason::UpstreamPolicy
                } else {
                    EndReason::UpstreamProtocolError
                };
                let other = match (policy, violation.code) {
                    (_, close::MESSAGE_TOO_BIG) => "upstream message too big",
                    (true, _) => "upstream closed by policy",
                    (false, _) => "upstream protocol error",
                };
                (
                    Finish::send(Violation::new(close::INTERNAL_ERROR, other)),
                    Finish::send(violation),
                )
            }
            Outcome::Operator(request) => {
                end.reason = request.cause;
                let to_upstream = match request.cause {
                    EndReason::Revoked => "client revoked",
                    EndReason::Lifetime => close::LIFETIME.reason,
                    _ => "client closed by operator",
                };
                (
                    Finish {
                        close: Some(Some(frame(request.code, &request.reason))),
                        drain: false,
                    },
                    Finish::send(going_away(to_upstream)),
                )
            }
            Outcome::Gateway { reason } => {
                end.reason = reason;
                let (to_client, to_upstream) = match reason {
                    EndReason::TokenExpired => {
                        (close::TOKEN_EXPIRED, going_away("client token expired"))
                    }
                    EndReason::PingTimeout => (
                        going_away("ping timeout"),
                        going_away("client ping timeout"),
                    ),
                    EndReason::IdleTimeout => {
                        (going_away("idle timeout"), going_away("idle timeout"))
                    }
                    EndReason::RouteRemoved => {
                        (Stop::RouteRemoved.close(), Stop::RouteRemoved.close())
                    }
                    _ => (Stop::Shutdown.close(), Stop::Shutdown.close()),
                };
                (Finish::send(to_client), Finish::send(to_upstream))
            }
        };
        if let Some(code) = client.code() {
            end.session.close_by_gateway(code);
        }
        if let Some(code) = upstream.code() {
            end.upstream_close_code = Some(code);
        }
        Plan {
            end,
            client,
            upstream,
            upstream_first,
        }
    }
}
