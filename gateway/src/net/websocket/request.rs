//! Admission's check 1: is this a valid RFC 6455 opening handshake (section 4.2.1)? What the
//! client offered (subprotocols, extensions) comes with the answer.

use base64::Engine;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::extensions::{self, Extension};
use super::Rejection;
use crate::core::header;
use crate::core::reason::Reason;
use crate::net::http1::{RequestHead, Version};

/// The only protocol version RFC 6455 defines.
pub(crate) const WEBSOCKET_VERSION: &str = "13";

/// Headers a handshake carries at most once (RFC 6455 11.3.1-11.3.5, RFC 9110 7.2, 5.3).
const SINGLETONS: [(&str, &str); 5] = [
    ("host", "Host"),
    ("origin", "Origin"),
    ("sec-websocket-key", "Sec-WebSocket-Key"),
    ("sec-websocket-version", "Sec-WebSocket-Version"),
    ("content-length", "Content-Length"),
];

/// A valid upgrade: what the 101 answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upgrade {
    /// `Sec-WebSocket-Accept` for the 101; `None` on HTTP/2, which has none (RFC 8441).
    pub(crate) accept: Option<String>,
    /// Subprotocols the client offered, in its order.
    pub(crate) offered_protocols: Vec<String>,
    /// Extensions the client offered, in its order; none when their syntax is broken (an offer
    /// the gateway cannot read is declined, not failed).
    pub(crate) offered_extensions: Vec<Extension>,
}

/// Validate the opening handshake of a request to a WebSocket route, whichever HTTP carried
/// it: RFC 6455 section 4.2.1 on HTTP/1.1, RFC 8441 section 4 (extended CONNECT) on HTTP/2.
pub(crate) fn check(head: &RequestHead) -> Result<Upgrade, Rejection> {
    if !head.wants_websocket() {
        let refusal = Rejection::new(
            Reason::UpgradeRequired,
            426,
            "this endpoint speaks WebSocket only\n",
        );
        // `Upgrade` is a connection header, which HTTP/2 forbids (RFC 9113 section 8.2.2).
        let refusal = match head.version {
            Version::Http1 => refusal.header("Upgrade", "websocket"),
            Version::Http2 { .. } => refusal,
        };
        return Err(refusal.header("Sec-WebSocket-Version", WEBSOCKET_VERSION));
    }
    let bad = |why: &str| Rejection::new(Reason::BadRequest, 400, format!("{why}\n"));
    if head.version == Version::Http1 {
        if head.method != "GET" {
            return Err(bad("a WebSocket handshake must use GET"));
        }
        if head.minor_version < 1 {
            return Err(bad("a WebSocket handshake needs HTTP/1.1"));
        }
    }
    // Content behind an upgrade would be read as frames here while a proxy in front, following
    // HTTP framing, sees a body: a desync that lets frames pass unseen.
    if head.has_body() {
        return Err(bad("a WebSocket handshake carries no content"));
    }
    // A header that may appear once, appearing twice, could be read differently by something in
    // front of the gateway: refused rather than resolved.
    if head.count("authorization") > 1 {
        return Err(Rejection::invalid_request(
            "more than one Authorization header",
        ));
    }
    for (name, shown) in SINGLETONS {
        if head.count(name) > 1 {
            return Err(bad(&format!("more than one {shown} header")));
        }
    }
    // On HTTP/2 the `:authority` pseudo-header stands for Host (the front puts it there).
    if head.count("host") != 1 {
        return Err(bad("a WebSocket handshake needs one Host header"));
    }
    if head.version == Version::Http1 && !head.header_has_token("connection", "upgrade") {
        return Err(bad("the Connection header must include Upgrade"));
    }
    match head.header("sec-websocket-version") {
        Some(v) if v.trim() == WEBSOCKET_VERSION => {}
        _ => {
            return Err(bad("Sec-WebSocket-Version must be 13")
                .header("Sec-WebSocket-Version", WEBSOCKET_VERSION))
        }
    }
    // RFC 8441 section 5: no Sec-WebSocket-Key and no Sec-WebSocket-Accept on HTTP/2; the
    // stream itself binds the answer to the request.
    let accept = match head.version {
        Version::Http1 => Some(accept_key(head)?),
        Version::Http2 { .. } => None,
    };
    let offered_protocols = header::items(head.headers.get_all("sec-websocket-protocol"))
        .map(String::from)
        .collect();
    let offered_extensions = extensions::parse(
        head.headers
            .get_all("sec-websocket-extensions")
            .iter()
            .map(|v| v.as_bytes()),
    )
    .unwrap_or_default();
    Ok(Upgrade {
        accept,
        offered_protocols,
        offered_extensions,
    })
}

/// `Sec-WebSocket-Accept` for an HTTP/1.1 handshake's `Sec-WebSocket-Key`.
fn accept_key(head: &RequestHead) -> Result<String, Rejection> {
    let bad = |why: &str| Rejection::new(Reason::BadRequest, 400, format!("{why}\n"));
    let key = match head.headers.get("sec-websocket-key") {
        Some(k) => k.as_bytes(),
        None => return Err(bad("missing Sec-WebSocket-Key")),
    };
    let key = key.trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if !matches!(decoded, Ok(ref nonce) if nonce.len() == 16) {
        return Err(bad(
            "invalid Sec-WebSocket-Key (must be 16 bytes in base64)",
        ));
    }
    Ok(derive_accept_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(&'static str, &'static str)>;

    const GOOD: [(&str, &str); 5] = [
        ("host", "example"),
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accepts_the_rfc_example() {
        let mut h = GOOD.to_vec();
        h.push(("sec-websocket-protocol", "chat, superchat"));
        let up = check(&RequestHead::for_test("GET", "/ws", &h)).unwrap();
        // RFC 6455, section 1.3.
        assert_eq!(up.accept.as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert_eq!(up.offered_protocols, ["chat", "superchat"]);
        assert!(up.offered_extensions.is_empty());
        h.push((
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits",
        ));
        let up = check(&RequestHead::for_test("GET", "/ws", &h)).unwrap();
        assert_eq!(up.offered_extensions[0].name, "permessage-deflate");
    }

    #[test]
    fn content_length_zero_is_no_content() {
        let mut h = GOOD.to_vec();
        h.push(("content-length", "0"));
        assert!(check(&RequestHead::for_test("GET", "/ws", &h)).is_ok());
    }

    #[test]
    fn refuses_each_defect() {
        let without =
            |name: &str| -> Headers { GOOD.iter().copied().filter(|(k, _)| *k != name).collect() };
        let with = |name: &'static str, value: &'static str| {
            let mut h = without(name);
            h.push((name, value));
            h
        };
        let also = |name: &'static str, value: &'static str| {
            let mut h = GOOD.to_vec();
            h.push((name, value));
            h
        };
        let twice = |name: &'static str, value: &'static str| {
            let mut h = GOOD.to_vec();
            h.extend([(name, value), (name, value)]);
            h
        };
        let cases: Vec<(&str, Headers, u16, &str)> = vec![
            ("GET", without("upgrade"), 426, "WebSocket only"),
            ("POST", GOOD.to_vec(), 400, "must use GET"),
            ("GET", without("host"), 400, "Host"),
            ("GET", without("connection"), 400, "Connection"),
            (
                "GET",
                without("sec-websocket-version"),
                400,
                "Version must be 13",
            ),
            (
                "GET",
                with("sec-websocket-version", "8"),
                400,
                "Version must be 13",
            ),
            (
                "GET",
                without("sec-websocket-key"),
                400,
                "missing Sec-WebSocket-Key",
            ),
            (
                "GET",
                with("sec-websocket-key", "c2hvcnQ="),
                400,
                "invalid Sec-WebSocket-Key",
            ),
            (
                "GET",
                with("sec-websocket-key", "!!!!"),
                400,
                "invalid Sec-WebSocket-Key",
            ),
            (
                "GET",
                with("content-length", "5"),
                400,
                "carries no content",
            ),
            (
                "GET",
                with("transfer-encoding", "chunked"),
                400,
                "carries no content",
            ),
            (
                "GET",
                also("sec-websocket-version", "13"),
                400,
                "more than one Sec-WebSocket-Version",
            ),
            (
                "GET",
                also("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                400,
                "more than one Sec-WebSocket-Key",
            ),
            ("GET", also("host", "example"), 400, "more than one Host"),
            (
                "GET",
                twice("origin", "https://a.example"),
                400,
                "more than one Origin",
            ),
            (
                "GET",
                twice("authorization", "Bearer a"),
                400,
                "more than one Authorization",
            ),
        ];
        for (method, headers, status, text) in cases {
            let r = check(&RequestHead::for_test(method, "/ws", &headers)).unwrap_err();
            assert_eq!(r.answer.status, status, "{method} {headers:?}");
            assert!(
                r.answer.body.contains(text),
                "{:?} should say {text}",
                r.answer.body
            );
        }
    }

    /// An HTTP/2 head as the front builds it: `:authority` as Host, `:protocol` kept.
    fn h2(method: &str, protocol: Option<&str>, headers: &[(&str, &str)]) -> RequestHead {
        let mut head = RequestHead::for_test(method, "/ws", headers);
        head.version = Version::Http2 {
            protocol: protocol.map(String::from),
        };
        head
    }

    #[test]
    fn accepts_extended_connect_without_key_or_upgrade() {
        let h = [
            ("host", "example"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat"),
            ("sec-websocket-extensions", "permessage-deflate"),
        ];
        let up = check(&h2("CONNECT", Some("websocket"), &h)).unwrap();
        assert_eq!(up.accept, None);
        assert_eq!(up.offered_protocols, ["chat"]);
        assert_eq!(up.offered_extensions[0].name, "permessage-deflate");
    }

    #[test]
    fn refuses_http2_defects() {
        let good = [("host", "example"), ("sec-websocket-version", "13")];
        let r = check(&h2("GET", None, &good)).unwrap_err();
        assert_eq!(r.answer.status, 426);
        assert!(
            r.answer.headers.iter().all(|(n, _)| *n != "Upgrade"),
            "no connection header on HTTP/2"
        );
        let r = check(&h2("CONNECT", Some("h2-tunnel"), &good)).unwrap_err();
        assert_eq!(r.answer.status, 426);
        let r = check(&h2("CONNECT", Some("websocket"), &good[..1])).unwrap_err();
        assert!(r.answer.body.contains("Version must be 13"));
        let r = check(&h2("CONNECT", Some("websocket"), &good[1..])).unwrap_err();
        assert!(r.answer.body.contains("Host"));
        let mut with_body = good.to_vec();
        with_body.push(("content-length", "3"));
        let r = check(&h2("CONNECT", Some("websocket"), &with_body)).unwrap_err();
        assert!(r.answer.body.contains("carries no content"));
    }
}
