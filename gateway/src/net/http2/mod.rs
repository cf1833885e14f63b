//! HTTP/2 on the wire (RFC 9113), for the HTTP/2 front (`edge::h2`): the server's settings, a
//! stream's request as the same [`RequestHead`] an HTTP/1.1 head gives, short answers as
//! responses on a stream, the `200` that opens a WebSocket on an extended CONNECT (RFC 8441),
//! the stream as a byte stream for the WebSocket layer ([`io`]), and the connection's bytes
//! watched for floods of control frames ([`connection`], [`flood`]).

pub(crate) mod connection;
mod flood;
pub(crate) mod io;

use bytes::Bytes;
use h2::server::{Builder, SendResponse};
use h2::SendStream;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST};
use http::{request, Request, Response, StatusCode};

use super::answer::Answer;
use super::http1::{RequestHead, Version};
use crate::config::http2::Http2;
use crate::config::Limits;

/// h2 refuses a header list this many times `max_head_bytes` itself (a `431` nobody counts), and
/// ends the connection (GOAWAY `ENHANCE_YOUR_CALM`) at four times that: below it, the gateway
/// measures the list against `max_head_bytes` and refuses it as an HTTP/1.1 head, counted.
const HEADER_LIST_CEILING: usize = 4;

/// The server settings of every HTTP/2 connection: extended CONNECT on
/// (`SETTINGS_ENABLE_CONNECT_PROTOCOL`), and each bound from the configuration.
pub(crate) fn builder(h2: &Http2, limits: &Limits) -> Builder {
    let mut b = h2::server::Builder::new();
    let ceiling = limits.max_head_bytes.saturating_mul(HEADER_LIST_CEILING);
    b.enable_connect_protocol()
        .max_concurrent_streams(h2.max_concurrent_streams)
        // HPACK bombs and CONTINUATION floods stop at this ceiling (h2 counts the decoded list,
        // CONTINUATION frames included); the client is told `max_head_bytes` (see
        // `connection`), which [`over_head_limit`] holds each request to.
        .max_header_list_size(u32::try_from(ceiling).unwrap_or(u32::MAX))
        .initial_window_size(h2.stream_window_bytes)
        .initial_connection_window_size(h2.connection_window())
        .max_send_buffer_size(h2.max_send_buffer_bytes)
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(h2.max_local_error_reset_streams));
    b
}

/// A connection's I/O watched for floods and for header blocks left open past `head_timeout`,
/// announcing `max_head_bytes` as its header-list limit; the signals tell the connection's task.
pub(crate) fn watched<T>(
    io: T,
    h2: &Http2,
    limits: &Limits,
) -> (connection::ConnectionIo<T>, connection::Signals) {
    let announce = u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX);
    connection::ConnectionIo::new(
        io,
        h2.max_control_frames_per_second,
        announce,
        limits.head_timeout.0,
    )
}

/// Whether a request's header list is over `max_head_bytes`, measured as RFC 9113 section
/// 6.5.2 does (each field's name and value and 32 bytes, pseudo-header fields included), as an
/// HTTP/1.1 head over the limit is.
pub(crate) fn over_head_limit<T>(request: &Request<T>, max_head_bytes: usize) -> bool {
    const FIELD: usize = 32;
    let uri = request.uri();
    let mut size = ":method".len() + request.method().as_str().len() + FIELD;
    let pseudo = [
        (":scheme", uri.scheme_str()),
        (":authority", uri.authority().map(|a| a.as_str())),
        (":path", uri.path_and_query().map(|p| p.as_str())),
        (
            ":protocol",
            request
                .extensions()
                .get::<h2::ext::Protocol>()
                .map(|p| p.as_str()),
        ),
    ];
    for (name, value) in pseudo {
        if let Some(value) = value {
            size += name.len() + value.len() + FIELD;
        }
    }
    for (name, value) in request.headers() {
        size += name.as_str().len() + value.len() + FIELD;
    }
    size > max_head_bytes
}

/// A stream's request as the route and admission read it: `:authority` is its `Host` (as an
/// absolute-form HTTP/1.1 target's authority is, RFC 9113 section 8.3.1), `:path` its target,
/// `:protocol` kept. `None`: a request without a path (only CONNECT without `:protocol` may
/// have none, and the gateway serves no tunnels).
pub(crate) fn head_of(parts: &request::Parts) -> Option<RequestHead> {
    let target = parts.uri.path_and_query()?.as_str().to_string();
    let mut headers = parts.headers.clone();
    // HTTP/2 may split cookies into several fields; they are one field again before anything
    // reads them or they go to an HTTP/1.1 upstream (RFC 9113 section 8.2.3).
    if headers.get_all(COOKIE).iter().nth(1).is_some() {
        let joined: Vec<&[u8]> = parts
            .headers
            .get_all(COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let joined = HeaderValue::from_bytes(&joined.join(&b"; "[..])).ok()?;
        headers.insert(COOKIE, joined);
    }
    if let Some(authority) = parts.uri.authority() {
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        headers.insert(HOST, host);
    }
    let protocol = parts
        .extensions
        .get::<h2::ext::Protocol>()
        .map(|p| p.as_str().to_string());
    Some(RequestHead {
        method: parts.method.as_str().to_string(),
        target,
        minor_version: 1,
        headers,
        tls: parts.uri.scheme_str() == Some("https"),
        version: Version::Http2 { protocol },
    })
}

/// Headers an HTTP/2 message must not carry (RFC 9113 section 8.2.2); h2 refuses to send them.
fn connection_specific(name: &str) -> bool {
    [
        "connection",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The response head of an answer: its status, a plain-text content type unless it names
/// one, its length and its extra headers (connection headers left out).
fn response_of(answer: &Answer) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert("server", HeaderValue::from_static("portcullis"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(answer.body.len()));
    for (name, value) in &answer.headers {
        if connection_specific(name) {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue;
        };
        if name == CONTENT_TYPE {
            headers.insert(name, value);
        } else {
            headers.append(name, value);
        }
    }
    response
}

/// Answer a stream with a short answer (a refusal, a static route); `head_only` for `HEAD`.
/// The body is a few hundred bytes at most, so h2 buffers it without waiting for the window.
pub(crate) fn answer(
    respond: &mut SendResponse<Bytes>,
    answer: &Answer,
    head_only: bool,
) -> Result<(), h2::Error> {
    let response = response_of(answer);
    let end = head_only || answer.body.is_empty();
    let mut body = respond.send_response(response, end)?;
    if !end {
        body.send_data(Bytes::from(answer.body.clone()), true)?;
    }
    Ok(())
}

/// Open the WebSocket: `200` on the extended CONNECT stream (RFC 8441 section 5) with the
/// subprotocol and the extension agreed, as a `101` has them. The stream stays open both ways.
pub(crate) fn websocket_opened(
    respond: &mut SendResponse<Bytes>,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Result<SendStream<Bytes>, h2::Error> {
    let mut response = Response::new(());
    let headers = response.headers_mut();
    let pairs = [
        ("sec-websocket-protocol", protocol),
        ("sec-websocket-extensions", extensions),
    ];
    for (name, value) in pairs {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    }
    respond.send_response(response, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_leave_out_connection_headers() {
        let refusal = Answer::new(426, "websocket only\n")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Retry-After", "1");
        let r = response_of(&refusal);
        assert_eq!(r.status(), 426);
        assert!(r.headers().get("upgrade").is_none());
        assert_eq!(r.headers()["sec-websocket-version"], "13");
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()[CONTENT_LENGTH], "15");
    }

    #[test]
    fn header_lists_are_measured_as_rfc_9113_does() {
        let req = http::Request::builder()
            .method("GET")
            .uri("https://a.example/x")
            .header("x-big", "b".repeat(100))
            .body(())
            .unwrap();
        // :method GET, :scheme https, :authority a.example, :path /x, x-big.
        let size = (7 + 3) + (7 + 5) + (10 + 9) + (5 + 2) + (5 + 100) + 5 * 32;
        assert!(!over_head_limit(&req, size));
        assert!(over_head_limit(&req, size - 1));
    }

    #[test]
    fn heads_take_authority_as_host_and_keep_protocol() {
        let mut req = http::Request::builder()
            .method("CONNECT")
            .uri("https://chat.example:8443/ws/echo?access_token=t")
            .header("host", "other.example")
            .header("sec-websocket-version", "13")
            .header("cookie", "a=1")
            .header("cookie", "access_token=t")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let (parts, ()) = req.into_parts();
        let head = head_of(&parts).unwrap();
        assert_eq!(head.target, "/ws/echo?access_token=t");
        assert_eq!(head.path(), "/ws/echo");
        assert_eq!(head.header("host"), Some("chat.example:8443"));
        assert_eq!(head.count("host"), 1);
        assert_eq!(head.header("cookie"), Some("a=1; access_token=t"));
        assert!(head.tls);
        assert!(head.wants_websocket());
    }
}
