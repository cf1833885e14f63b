//! The gateway's opening handshake with an upstream, made as a client must (RFC 6455 section
//! 4.1): the request goes out, and the answer is checked before anything is relayed: status
//! `101`, `Upgrade`, `Connection`, the accept key, a subprotocol only from those offered (or
//! none: a server may select none, section 4.2.2), and extensions only as offered (anything
//! else fails the connection). tungstenite's own client handshake is not used: it fails a
//! `101` that selects no subprotocol, and it does not look at extensions at all.

use std::io;

use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::deflate::{Agreed, Offer};
use super::extensions;
use crate::core::header;
use crate::obs::trace;

/// Largest answer head read from an upstream.
const MAX_ANSWER_HEAD: usize = 16 * 1024;
/// Most headers in an upstream's answer.
const MAX_ANSWER_HEADERS: usize = 64;

/// What the upstream's `101` agreed to.
#[derive(Debug, Default)]
pub(crate) struct Switched {
    /// The subprotocol the upstream selected (one of those offered), if any.
    pub(crate) protocol: Option<String>,
    /// permessage-deflate, if the upstream accepted the gateway's offer.
    pub(crate) deflate: Option<Agreed>,
}

/// Why the handshake did not give a WebSocket.
#[derive(Debug)]
pub(crate) enum Failed {
    /// Reading or writing failed (reset, closed before a complete answer).
    Io(io::Error),
    /// A complete answer that is not a `101` (with what followed its head, if anything).
    Answered(Box<Response<Option<Vec<u8>>>>),
    /// A `101` (or an answer head) that breaks the protocol.
    Invalid(String),
}

/// The request to send: `request` carries the gateway's headers; the key, the offered
/// subprotocols and the deflate offer are added here.
pub(crate) async fn handshake<S>(
    mut stream: S,
    request: &Request<()>,
    protocols: &[String],
    offer: Option<&Offer>,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<S>, Switched), Failed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let head = request_head(request, &key, protocols, offer)?;
    stream.write_all(&head).await.map_err(Failed::Io)?;
    stream.flush().await.map_err(Failed::Io)?;

    let mut buf = Vec::with_capacity(1024);
    let (response, used) = loop {
        if let Some(parsed) = parse_answer(&buf)? {
            break parsed;
        }
        if buf.len() >= MAX_ANSWER_HEAD {
            return Err(Failed::Invalid("answer head too large".into()));
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.map_err(Failed::Io)?;
        if n == 0 {
            return Err(Failed::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let rest = buf.split_off(used);
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let (parts, ()) = response.into_parts();
        return Err(Failed::Answered(Box::new(Response::from_parts(
            parts,
            (!rest.is_empty()).then_some(rest),
        ))));
    }
    let switched = check_switch(response.headers(), &key, protocols, offer)?;
    let config = config.compressed_messages(switched.deflate.is_some());
    let ws = WebSocketStream::from_partially_read(stream, rest, Role::Client, Some(config)).await;
    Ok((ws, switched))
}

/// The request head: `GET` with the request's path and query, its headers, and the handshake's
/// own.
fn request_head(
    request: &Request<()>,
    key: &str,
    protocols: &[String],
    offer: Option<&Offer>,
) -> Result<Vec<u8>, Failed> {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut out = format!("GET {target} HTTP/1.1\r\n").into_bytes();
    let mut line = |name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    // A traced handshake passes its own context on (replacing the client's, which a trusted
    // client's continues); untraced, the client's headers go as they are.
    let trace = trace::inject();
    for (name, value) in request.headers() {
        if !trace.is_empty() && trace::FIELDS.contains(&name.as_str()) {
            continue;
        }
        line(name.as_str(), value.as_bytes());
    }
    for (name, value) in &trace {
        line(name, value.as_bytes());
    }
    line("Sec-WebSocket-Key", key.as_bytes());
    if !protocols.is_empty() {
        let list = protocols.join(", ");
        HeaderValue::from_str(&list)
            .map_err(|_| Failed::Invalid("invalid subprotocol list".into()))?;
        line("Sec-WebSocket-Protocol", list.as_bytes());
    }
    if let Some(offer) = offer {
        line("Sec-WebSocket-Extensions", offer.header().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// The answer and its head's length once the head is complete.
fn parse_answer(buf: &[u8]) -> Result<Option<(Response<()>, usize)>, Failed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failed::Invalid(format!("malformed answer: {e}"))),
    };
    let status = parsed.code.unwrap_or(0);
    let mut response = Response::builder()
        .status(status)
        .body(())
        .map_err(|e| Failed::Invalid(format!("malformed answer: {e}")))?;
    for h in parsed.headers.iter() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Failed::Invalid("malformed answer header".into()))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| Failed::Invalid("malformed answer header".into()))?;
        response.headers_mut().append(name, value);
    }
    Ok(Some((response, used)))
}

/// RFC 6455 section 4.1, the client's checks of a `101`.
fn check_switch(
    headers: &HeaderMap,
    key: &str,
    protocols: &[String],
    offer: Option<&Offer>,
) -> Result<Switched, Failed> {
    let invalid = |why: &str| Err(Failed::Invalid(why.to_string()));
    let has = |name: &str, token: &str| {
        header::items(headers.get_all(name)).any(|v| v.eq_ignore_ascii_case(token))
    };
    if !has("upgrade", "websocket") {
        return invalid("101 without Upgrade: websocket");
    }
    if !has("connection", "upgrade") {
        return invalid("101 without Connection: Upgrade");
    }
    let accept = derive_accept_key(key.as_bytes());
    if headers
        .get("sec-websocket-accept")
        .map(HeaderValue::as_bytes)
        != Some(accept.as_bytes())
    {
        return invalid("101 with a wrong Sec-WebSocket-Accept");
    }
    let selected: Vec<&str> = header::items(headers.get_all("sec-websocket-protocol")).collect();
    let protocol = match selected[..] {
        [] => None,
        [one] if protocols.iter().any(|p| p == one) => Some(one.to_string()),
        _ => return invalid("101 selected a subprotocol that was not offered"),
    };
    let answer = extensions::parse(
        headers
            .get_all("sec-websocket-extensions")
            .iter()
            .map(HeaderValue::as_bytes),
    )
    .ok_or_else(|| Failed::Invalid("101 with a malformed Sec-WebSocket-Extensions".into()))?;
    let deflate =
        Offer::agreed(offer, &answer).map_err(|why| Failed::Invalid(format!("101 {why}")))?;
    Ok(Switched { protocol, deflate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compression::Compression;

    fn answer(extra: &[(&str, &str)], key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert(
            "sec-websocket-accept",
            HeaderValue::from_str(&derive_accept_key(key.as_bytes())).unwrap(),
        );
        for (k, v) in extra {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_server_may_select_no_subprotocol_but_never_an_unoffered_one() {
        let offered = ["chat.v1".to_string()];
        let none = check_switch(&answer(&[], "k"), "k", &offered, None).unwrap();
        assert_eq!(none.protocol, None);
        let one = check_switch(
            &answer(&[("sec-websocket-protocol", "chat.v1")], "k"),
            "k",
            &offered,
            None,
        )
        .unwrap();
        assert_eq!(one.protocol.as_deref(), Some("chat.v1"));
        for bad in ["chat.v2", "chat.v1, chat.v1"] {
            let h = answer(&[("sec-websocket-protocol", bad)], "k");
            assert!(
                matches!(
                    check_switch(&h, "k", &offered, None),
                    Err(Failed::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(check_switch(&answer(&[], "other"), "k", &offered, None).is_err());
    }

    #[test]
    fn extensions_must_have_been_offered() {
        let h = answer(&[("sec-websocket-extensions", "permessage-deflate")], "k");
        assert!(matches!(
            check_switch(&h, "k", &[], None),
            Err(Failed::Invalid(_))
        ));
        let offer = Offer::new(&Compression::default(), None).unwrap();
        let h = answer(
            &[(
                "sec-websocket-extensions",
                "permessage-deflate; server_max_window_bits=12",
            )],
            "k",
        );
        assert!(check_switch(&h, "k", &[], Some(&offer))
            .unwrap()
            .deflate
            .is_some());
        let h = answer(&[("sec-websocket-extensions", "x-foo")], "k");
        assert!(check_switch(&h, "k", &[], Some(&offer)).is_err());
    }
}
