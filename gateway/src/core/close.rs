//! Close codes the gateway sends or records (RFC 6455, section 7.4.1), and the fixed pairs of
//! code and reason it closes sockets with, in one place.

/// The gateway is going away (shutdown, route removed, idle, lifetime).
pub(crate) const GOING_AWAY: u16 = 1001;
/// The peer broke the protocol (bad framing, reserved bits, unmasked client frame...).
pub(crate) const PROTOCOL_ERROR: u16 = 1002;
/// A close frame without a code (recorded, never sent: RFC 6455 7.1.5).
pub(crate) const NO_STATUS: u16 = 1005;
/// A text message that is not UTF-8.
pub(crate) const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation (rate, token expiry).
pub(crate) const POLICY_VIOLATION: u16 = 1008;
/// A message larger than the route allows.
pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;
/// Something failed inside the gateway, or behind it (the upstream).
pub(crate) const INTERNAL_ERROR: u16 = 1011;

/// Why the gateway closes a socket: the close code and reason it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

impl Violation {
    pub(crate) const fn new(code: u16, reason: &'static str) -> Violation {
        Violation { code, reason }
    }
}

/// A message over the size limit.
pub(crate) const MESSAGE_TOO_BIG_CLOSE: Violation =
    Violation::new(MESSAGE_TOO_BIG, "message too big");
/// A frame over the size limit.
pub(crate) const FRAME_TOO_BIG: Violation = Violation::new(MESSAGE_TOO_BIG, "frame too big");
/// More data messages per second than the policy allows.
pub(crate) const MESSAGE_RATE: Violation =
    Violation::new(POLICY_VIOLATION, "message rate exceeded");
/// More payload bytes per second than the policy allows.
pub(crate) const BYTE_RATE: Violation = Violation::new(POLICY_VIOLATION, "byte rate exceeded");
/// The admitted token's `exp` (plus leeway and grace) passed.
pub(crate) const TOKEN_EXPIRED: Violation = Violation::new(POLICY_VIOLATION, "token expired");
/// A text message that is not UTF-8.
pub(crate) const INVALID_UTF8: Violation =
    Violation::new(INVALID_PAYLOAD, "invalid UTF-8 in text message");
/// A compressed message that does not inflate (RFC 7692 section 8: fail the connection).
pub(crate) const INVALID_COMPRESSED: Violation =
    Violation::new(INVALID_PAYLOAD, "invalid compressed data");
/// Any other protocol violation.
pub(crate) const PROTOCOL: Violation = Violation::new(PROTOCOL_ERROR, "protocol error");
/// The peer's unread data filled the write queue.
pub(crate) const PEER_DOES_NOT_READ: Violation =
    Violation::new(POLICY_VIOLATION, "peer does not read");
/// The session reached its route's `max_session_duration` (the client reconnects and
/// authenticates again).
pub(crate) const LIFETIME: Violation = Violation::new(GOING_AWAY, "session lifetime reached");
/// An operator revoked the session's subject or token id.
pub(crate) const REVOKED: Violation = Violation::new(POLICY_VIOLATION, "revoked");
/// The close an operator's `POST /sessions/close` sends unless it names its own.
pub(crate) const OPERATOR: Violation = Violation::new(POLICY_VIOLATION, "closed by operator");

/// Whether a gateway may send `code` in a close frame (RFC 6455 7.4: the defined codes that may
/// be sent, and the ranges for libraries and applications).
pub(crate) fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The codes [`sendable`] allows, as error messages name them.
pub(crate) const SENDABLE: &str = "1000-1003, 1007-1014 or 3000-4999";
