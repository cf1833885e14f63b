//! Header rules of the handshake the gateway makes upstream: which of the client's request
//! headers never go on as they are.

use crate::core::header::RELAY_RESERVED_HEADERS;

/// Hop-by-hop headers (RFC 9110, section 7.6.1) and others a proxy never forwards as they are.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Whether the client's header `name` (lower case) stays behind: hop-by-hop or named in its
/// `Connection` header (`connection_listed`, lower case), WebSocket's own (each side's
/// handshake is its own: key, version, subprotocols and extensions are negotiated per side),
/// or one the relay sets itself.
pub(crate) fn never_forwarded(name: &str, connection_listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name)
        || connection_listed.iter().any(|c| c == name)
        || name.starts_with("sec-websocket-")
        || RELAY_RESERVED_HEADERS.contains(&name)
}
