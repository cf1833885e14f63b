//! Reading an HTTP/1.1 request head under limits.
//!
//! Why not pingora's `HttpSession` here: its head limit is a fixed 1 MiB, and `into_inner()`
//! drops the bytes a client sent right behind its head (the first WebSocket frames, when a client
//! pipelines them). A gateway needs a configurable small limit and must hand every byte to the
//! WebSocket layer, so this module reads the head itself with `httparse` (the parser pingora
//! uses) and leaves whatever follows in the caller's buffer.

use std::time::Duration;

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::core::header;

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: String,
    /// The request target in origin form (path and query). An absolute-form target
    /// (`GET https://host/path`, RFC 9112 section 3.2.2) is reduced to its path and query here,
    /// and its authority replaces any `Host` header the client sent (the server ignores `Host`
    /// then), so every route and check sees one form and one host.
    pub(crate) target: String,
    /// HTTP/1.x minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub(crate) minor_version: u8,
    pub(crate) headers: HeaderMap,
    /// Whether the request came over TLS: the scheme of its target URI (`https`, RFC 9112
    /// section 3.3), which the authorizer is told (`X-Forwarded-Proto`). The reader of the head
    /// does not know its connection; the edge, which does, sets it.
    pub(crate) tls: bool,
    /// Which HTTP carried the request.
    pub(crate) version: Version,
}

/// The HTTP that carried a request: its WebSocket handshake differs (RFC 6455 section 4 on
/// HTTP/1.1, RFC 8441 extended CONNECT on HTTP/2); everything after it is the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Version {
    Http1,
    /// An HTTP/2 stream; `protocol` is its `:protocol` pseudo-header, if it had one.
    Http2 {
        protocol: Option<String>,
    },
}

impl RequestHead {
    /// A head built in code, for unit tests of the checks that read heads.
    #[cfg(test)]
    pub(crate) fn for_test(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let (target, authority) = split_absolute_form(target).expect("a valid test target");
        if let Some(authority) = &authority {
            map.insert(
                http::header::HOST,
                HeaderValue::from_str(authority).expect("authority"),
            );
        }
        RequestHead {
            method: method.into(),
            target,
            minor_version: 1,
            headers: map,
            tls: false,
            version: Version::Http1,
        }
    }

    /// The path without the query string.
    pub(crate) fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }

    /// How many times a header appears.
    pub(crate) fn count(&self, name: &str) -> usize {
        self.headers.get_all(name).iter().count()
    }

    /// A header's value as text, when present once and valid text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether a comma-separated header (e.g. `Connection`) holds `token`, case-insensitively.
    pub(crate) fn header_has_token(&self, name: &str, token: &str) -> bool {
        header::items(self.headers.get_all(name)).any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Whether the request asks for a WebSocket: an `Upgrade: websocket` on HTTP/1.1, an
    /// extended CONNECT with `:protocol = websocket` on HTTP/2 (RFC 8441 section 4).
    pub(crate) fn wants_websocket(&self) -> bool {
        match &self.version {
            Version::Http1 => self.header_has_token("upgrade", "websocket"),
            Version::Http2 { protocol } => {
                self.method == "CONNECT"
                    && protocol
                        .as_deref()
                        .is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
            }
        }
    }

    /// Whether content follows the head (which the gateway never reads): any
    /// `Transfer-Encoding`, or any `Content-Length` other than exactly `0`. (A value that is no
    /// number was refused when the head was read; one that is not text, such as a non-ASCII
    /// byte, used to read as "no content" here.)
    pub(crate) fn has_body(&self) -> bool {
        self.headers.contains_key(http::header::TRANSFER_ENCODING)
            || self
                .headers
                .get_all(http::header::CONTENT_LENGTH)
                .iter()
                .any(|v| v.as_bytes().trim_ascii() != b"0")
    }

    /// Whether the client allows the connection to stay open after the answer.
    pub(crate) fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.header_has_token("connection", "keep-alive")
        } else {
            !self.header_has_token("connection", "close")
        }
    }
}

/// Why a head could not be read. Each maps to the answer the client gets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// Not valid HTTP/1.x.
    Malformed(&'static str),
    /// Head larger than the limit, or too many headers.
    TooLarge,
    /// The client did not finish its head in time.
    Timeout,
    /// The client closed mid-head, or the socket failed: nobody to answer.
    Closed,
}

impl HeadError {
    /// The status and short reason to answer with; `None` when nobody can be answered.
    pub(crate) fn answer(&self) -> Option<(u16, &'static str)> {
        match self {
            HeadError::Malformed(why) => Some((400, why)),
            HeadError::TooLarge => Some((431, "request head too large")),
            HeadError::Timeout => Some((408, "request head timeout")),
            HeadError::Closed => None,
        }
    }
}

/// Limits on reading one head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    pub(crate) max_bytes: usize,
    pub(crate) max_headers: usize,
}

/// Read one request head from `io`. Bytes already in `buf` are parsed first; on success the head
/// is removed from `buf` and anything after it stays there. `Ok(None)`: the client closed
/// cleanly before sending anything (normal on a kept-alive connection).
///
/// `timeout` bounds the whole head, so a client sending a byte at a time cannot hold it open.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    limits: HeadLimits,
    timeout: Duration,
) -> Result<Option<RequestHead>, HeadError> {
    match tokio::time::timeout(timeout, read_head_inner(io, buf, limits)).await {
        Ok(result) => result,
        Err(_) => Err(HeadError::Timeout),
    }
}

/// Wait up to `idle` for the first byte of the next request on a kept-alive connection (it goes
/// into `buf`): `true` once it is there, `false` when the client closed, the socket failed or
/// `idle` passed. The idle wait and the head are bounded apart: a client may think for
/// `keepalive_timeout` between requests, but once it starts one, [`read_head`] gives the head
/// `head_timeout` like any other, so trickling heads cannot hold a connection longer.
pub(crate) async fn next_request<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    idle: Duration,
) -> bool {
    buf.reserve(1);
    let mut first = (&mut *io).take(1);
    matches!(
        tokio::time::timeout(idle, first.read_buf(buf)).await,
        Ok(Ok(1))
    )
}

async fn read_head_inner<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    limits: HeadLimits,
) -> Result<Option<RequestHead>, HeadError> {
    loop {
        if !buf.is_empty() {
            if let Some((head, len)) = parse(buf, limits)? {
                let _ = buf.split_to(len);
                return Ok(Some(head));
            }
        }
        if buf.len() >= limits.max_bytes {
            return Err(HeadError::TooLarge);
        }
        // Never read past the limit: a head can cost at most `max_bytes` of memory.
        let room = (limits.max_bytes - buf.len()).min(4096);
        buf.reserve(room);
        let n = (&mut *io)
            .take(room as u64)
            .read_buf(buf)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Closed)
            };
        }
    }
}

/// Parse a complete head from `buf`: `Ok(None)` while it is incomplete.
fn parse(buf: &[u8], limits: HeadLimits) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed("unsupported HTTP version"))
        }
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if len > limits.max_bytes {
        return Err(HeadError::TooLarge);
    }
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Malformed("malformed header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HeadError::Malformed("malformed header value"))?;
        headers.append(name, value);
    }
    let minor_version = req.version.unwrap_or(1);
    check_framing(&headers, minor_version)?;
    let (target, authority) = split_absolute_form(req.path.unwrap_or_default())
        .ok_or(HeadError::Malformed("unsupported request target"))?;
    // Checked above, before the authority replaces it: an absolute-form target must not hide a
    // missing or duplicated Host header that something in front of the gateway read its way.
    if let Some(authority) = &authority {
        let host = HeaderValue::from_str(authority)
            .map_err(|_| HeadError::Malformed("malformed request target"))?;
        headers.insert(http::header::HOST, host);
    }
    let head = RequestHead {
        method: req.method.unwrap_or_default().to_string(),
        target,
        minor_version,
        headers,
        tls: false,
        version: Version::Http1,
    };
    Ok(Some((head, len)))
}

/// The headers every reader of the request must agree on, checked whatever the route:
///
/// - `Host` (RFC 9112 section 3.2): exactly one in HTTP/1.1, at most one in HTTP/1.0, whatever
///   the target's form;
/// - `Content-Length` (RFC 9110 section 8.6): each one a decimal number, so that a value the
///   gateway cannot read is never taken for "no content".
fn check_framing(headers: &HeaderMap, minor_version: u8) -> Result<(), HeadError> {
    match headers.get_all(http::header::HOST).iter().count() {
        0 if minor_version >= 1 => return Err(HeadError::Malformed("missing Host header")),
        0 | 1 => {}
        _ => return Err(HeadError::Malformed("more than one Host header")),
    }
    let number = |v: &HeaderValue| {
        let digits = v.as_bytes().trim_ascii();
        !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
    };
    if !headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .all(number)
    {
        return Err(HeadError::Malformed("malformed Content-Length"));
    }
    Ok(())
}

/// An origin-form target as it is; an absolute-form one (`http://` or `https://`, any case)
/// split into its origin form and authority. `None`: an absolute URI of another scheme, or one
/// with credentials.
fn split_absolute_form(target: &str) -> Option<(String, Option<String>)> {
    let Some((scheme, rest)) = target.split_once("://") else {
        return Some((target.to_string(), None));
    };
    if target.starts_with('/') {
        // A path that merely contains "://".
        return Some((target.to_string(), None));
    }
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Some((path, Some(authority.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_headers: 8,
    };

    async fn read(input: &[u8]) -> (Result<Option<RequestHead>, HeadError>, BytesMut) {
        let mut io = input;
        let mut buf = BytesMut::new();
        let r = read_head(&mut io, &mut buf, LIMITS, Duration::from_secs(1)).await;
        (r, buf)
    }

    #[tokio::test]
    async fn keeps_bytes_after_the_head() {
        let (r, rest) = read(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n\x81\x80abcd").await;
        let head = r.unwrap().unwrap();
        assert_eq!(head.path(), "/a");
        assert_eq!(head.header("host"), Some("h"));
        assert_eq!(&rest[..], b"\x81\x80abcd");
    }

    #[tokio::test]
    async fn absolute_form_targets_are_reduced_to_their_path() {
        let (r, _) = read(
            b"GET https://Gw.Example:8443/ws/echo?x=1 HTTP/1.1\r\nHost: gw.example:8443\r\n\r\n",
        )
        .await;
        let head = r.unwrap().unwrap();
        assert_eq!(head.path(), "/ws/echo");
        assert_eq!(head.target, "/ws/echo?x=1");
        let (r, _) = read(b"GET HTTP://h?q HTTP/1.1\r\nHost: h\r\n\r\n").await;
        assert_eq!(r.unwrap().unwrap().target, "/?q");
        for bad in [
            &b"GET ftp://h/ws HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET http://u@h/ws HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET http:///ws HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(
                matches!(read(bad).await.0, Err(HeadError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let (r, _) = read(b"GET /a://b HTTP/1.1\r\nHost: h\r\n\r\n").await;
        assert_eq!(r.unwrap().unwrap().path(), "/a://b");
    }

    /// RFC 9112 section 3.2: exactly one Host in HTTP/1.1, whatever the target's form; the
    /// authority of an absolute-form target replaces it only after that check.
    #[tokio::test]
    async fn a_request_has_one_host() {
        let refused = |why| Err(HeadError::Malformed(why));
        for (input, want) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "missing Host header"),
            (b"GET http://h/ws HTTP/1.1\r\n\r\n", "missing Host header"),
            (
                b"GET http://h/ws HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
                "more than one Host header",
            ),
            (
                b"GET /ws HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
                "more than one Host header",
            ),
        ] {
            let (r, _) = read(input).await;
            assert_eq!(
                r.map(|_| ()),
                refused(want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // HTTP/1.0 needs none; an absolute-form target's authority is then the host.
        let (r, _) = read(b"GET http://h:8443/ws HTTP/1.0\r\n\r\n").await;
        assert_eq!(r.unwrap().unwrap().header("host"), Some("h:8443"));
        let (r, _) = read(b"GET /ws HTTP/1.0\r\n\r\n").await;
        assert!(r.unwrap().unwrap().header("host").is_none());
    }

    /// A Content-Length that is no decimal number is a malformed request, never "no content";
    /// one that is a number other than exactly 0 is content.
    #[tokio::test]
    async fn content_lengths_are_numbers_and_only_0_is_none() {
        let with = |value: &[u8]| {
            let mut input = b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: ".to_vec();
            input.extend_from_slice(value);
            input.extend_from_slice(b"\r\n\r\n");
            input
        };
        for bad in [
            &b"\xb9"[..],
            b"\xc2\xb9",
            b"5a",
            b"+1",
            b"-0",
            b"1, 1",
            b"0x10",
        ] {
            let (r, _) = read(&with(bad)).await;
            assert_eq!(
                r.map(|_| ()),
                Err(HeadError::Malformed("malformed Content-Length")),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for (value, body) in [
            (&b"0"[..], false),
            (b" 0 ", false),
            (b"00", true),
            (b"7", true),
        ] {
            let (r, _) = read(&with(value)).await;
            assert_eq!(r.unwrap().unwrap().has_body(), body, "{value:?}");
        }
        let (r, _) =
            read(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 3\r\n\r\n")
                .await;
        assert!(
            r.unwrap().unwrap().has_body(),
            "any Content-Length but 0 counts"
        );
    }

    #[tokio::test]
    async fn limits_and_garbage() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(
            read(big.as_bytes()).await.0.unwrap_err(),
            HeadError::TooLarge
        );
        let many: String = (0..20).map(|i| format!("H{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            read(many.as_bytes()).await.0.unwrap_err(),
            HeadError::TooLarge
        );
        assert!(matches!(
            read(b"\x16\x03\x01garbage\r\n\r\n").await.0,
            Err(HeadError::Malformed(_))
        ));
        assert_eq!(read(b"GET / HT").await.0.unwrap_err(), HeadError::Closed);
        assert!(read(b"").await.0.unwrap().is_none());
    }

    #[tokio::test]
    async fn slow_heads_time_out() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let r = read_head(&mut server, &mut buf, LIMITS, Duration::from_millis(50)).await;
        assert_eq!(r.unwrap_err(), HeadError::Timeout);
        drop(client);
    }

    /// Between requests the wait is for one byte only; the head that follows has its own bound.
    #[tokio::test]
    async fn the_next_request_waits_for_its_first_byte_then_the_head_is_bounded() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let idle = Duration::from_millis(50);
        assert!(
            !next_request(&mut server, &mut buf, idle).await,
            "nothing came"
        );
        client.write_all(b"GET / HT").await.unwrap();
        assert!(next_request(&mut server, &mut buf, idle).await);
        assert_eq!(&buf[..], b"G", "the first byte only");
        let r = read_head(&mut server, &mut buf, LIMITS, Duration::from_millis(50)).await;
        assert_eq!(
            r.unwrap_err(),
            HeadError::Timeout,
            "the head never finished"
        );
        drop(client);
        let mut buf = BytesMut::new();
        assert!(
            !next_request(&mut server, &mut buf, idle).await,
            "the client closed"
        );
    }

    #[test]
    fn tokens_and_keepalive() {
        let mut headers = HeaderMap::new();
        headers.append(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        let head = RequestHead {
            method: "GET".into(),
            target: "/".into(),
            minor_version: 1,
            headers,
            tls: false,
            version: Version::Http1,
        };
        assert!(head.header_has_token("connection", "upgrade"));
        assert!(head.keep_alive());
    }
}
