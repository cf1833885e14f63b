//! The gateway's `101 Switching Protocols` (RFC 6455 section 4.2.2): the accept key, the
//! subprotocol it selected (if any) and the extensions it accepted (if any).

/// The bytes of the `101`.
pub(crate) fn switching_protocols(
    accept: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        out.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    if let Some(e) = extensions {
        out.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_only_what_was_agreed() {
        let plain = super::switching_protocols("k", None, None);
        assert_eq!(
            plain,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: k\r\n\r\n"
        );
        let full = String::from_utf8(super::switching_protocols(
            "k",
            Some("chat.v1"),
            Some("permessage-deflate"),
        ))
        .unwrap();
        assert!(full.ends_with(
            "Sec-WebSocket-Protocol: chat.v1\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        ));
    }
}
