//! Where a browser puts its token: browsers cannot set `Authorization` on a WebSocket, so they
//! offer a `bearer.<token>` entry in `Sec-WebSocket-Protocol` next to their real protocol. Such
//! an entry is a credential: it is never echoed, selected or forwarded.

/// The `Sec-WebSocket-Protocol` entry prefix that carries a token.
pub(crate) const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// Whether a subprotocol entry carries a token.
pub(crate) fn is_token_subprotocol(protocol: &str) -> bool {
    protocol.starts_with(BEARER_SUBPROTOCOL_PREFIX)
}
