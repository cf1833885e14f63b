//! The gateway's one HTTP client, for every outbound HTTP call: JWKS documents, the external
//! authorizer, token introspection, trace export (the OTLP exporter's transport). It is hyper's
//! pooled HTTP/1.1 client (`hyper-util`) over rustls settings from [`client_config`]
//! (`hyper-rustls`), so `https://` endpoints are checked against a CA file or the system roots
//! exactly as `wss://` upstreams are. Every call is bounded
//! in time (connect to last byte) and the answer's body in size; connections are kept alive and
//! reused, which is what makes a per-handshake call to an authorizer affordable.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::client_tls::{client_config, ClientTlsError};
use crate::core::url::Url;

/// How long an idle kept-alive connection to an endpoint stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per endpoint.
const POOL_MAX_IDLE: usize = 64;

/// Why a call got no usable answer; callers decide what each means (a JWKS fetch keeps its
/// keys, an authorizer follows its `on_error`).
#[derive(Debug)]
pub(crate) enum HttpError {
    /// No answer (connect to last byte) within the call's time.
    Timeout,
    /// The endpoint could not be reached (refused, unresolvable, TLS failed).
    Connect(String),
    /// The answer's body is larger than the call allows.
    TooLarge,
    /// The connection broke or the answer was not HTTP.
    Protocol(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Timeout => f.write_str("timed out"),
            HttpError::Connect(e) => write!(f, "cannot connect: {e}"),
            HttpError::TooLarge => f.write_str("answer too large"),
            HttpError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A reply: its status, headers and (bounded) body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// One request: method, URL, headers, body, and its bounds.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) url: &'a Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Connect to last byte.
    pub(crate) timeout: Duration,
    /// Largest body accepted.
    pub(crate) max_body: usize,
}

impl<'a> Call<'a> {
    /// A `GET` of `url`.
    pub(crate) fn get(url: &'a Url, timeout: Duration, max_body: usize) -> Call<'a> {
        Call {
            method: Method::GET,
            url,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout,
            max_body,
        }
    }
}

/// A pooled HTTP client trusting one set of roots.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client for `http://` and `https://` endpoints; `https://` trusts `ca_file` (or the
    /// system roots). The caller names the key of `ca_file` in errors.
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<HttpClient, ClientTlsError> {
        let tls = client_config(ca_file, None, &[])?;
        let mut http = HttpConnector::new();
        // The scheme is checked by the connector below (http and https both allowed).
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(https);
        Ok(HttpClient { client })
    }

    /// Send `call` and read its answer, within its time and size bounds.
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let timeout = call.timeout;
        tokio::time::timeout(timeout, self.exchange(call))
            .await
            .map_err(|_| HttpError::Timeout)?
    }

    /// Send a request built elsewhere (the OTLP exporter's), within `timeout` and `max_body`.
    pub(crate) async fn send_request(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Reply, HttpError> {
        let request = request.map(Full::new);
        tokio::time::timeout(timeout, self.exchange_request(request, max_body))
            .await
            .map_err(|_| HttpError::Timeout)?
    }

    async fn exchange(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        // `Url` was parsed by `http::Uri` from this text; its host stays bracketed for IPv6.
        let uri: http::Uri = call
            .url
            .text
            .parse()
            .map_err(|e| HttpError::Protocol(format!("bad URL: {e}")))?;
        let mut request = Request::builder()
            .method(call.method)
            .uri(uri)
            .body(Full::new(call.body))
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        *request.headers_mut() = call.headers;
        self.exchange_request(request, call.max_body).await
    }

    async fn exchange_request(
        &self,
        mut request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Reply, HttpError> {
        let headers = request.headers_mut();
        headers
            .entry(http::header::USER_AGENT)
            .or_insert(http::HeaderValue::from_static("portcullis"));
        let answer = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                HttpError::Connect(source_text(&e))
            } else {
                HttpError::Protocol(source_text(&e))
            }
        })?;
        let (parts, body) = answer.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return Err(HttpError::TooLarge);
        }
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    HttpError::TooLarge
                } else {
                    HttpError::Protocol(format!("reading the answer: {e}"))
                }
            })?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// An error and its causes, one line (hyper's top-level message alone says little).
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::url::HttpUrl;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-answer HTTP server on `addr`: reads a request, waits `delay`, writes `answer`.
    async fn serve_once(addr: &str, answer: String, delay: Duration) -> std::net::SocketAddr {
        let listener = TcpListener::bind(addr).await.unwrap();
        let local = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        local
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn get_over_ipv4_and_ipv6_chunked_or_not() {
        let client = HttpClient::new(None).unwrap();
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let addr = serve_once(bind, ok("{\"keys\":[]}"), Duration::ZERO).await;
            let url = HttpUrl::parse(&format!("http://{addr}/jwks")).unwrap();
            let a = client
                .send(Call::get(&url, Duration::from_secs(5), 1024))
                .await
                .unwrap();
            assert_eq!(a.status, 200);
            assert_eq!(&a.body[..], b"{\"keys\":[]}");
        }
        let chunked =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let addr = serve_once("127.0.0.1:0", chunked.into(), Duration::ZERO).await;
        let url = HttpUrl::parse(&format!("http://{addr}/")).unwrap();
        let a = client
            .send(Call::get(&url, Duration::from_secs(5), 1024))
            .await
            .unwrap();
        assert_eq!(&a.body[..], b"abcde");
    }

    #[tokio::test]
    async fn bounded_in_time_and_size() {
        let client = HttpClient::new(None).unwrap();
        let slow = serve_once("127.0.0.1:0", ok("late"), Duration::from_secs(5)).await;
        let url = HttpUrl::parse(&format!("http://{slow}/")).unwrap();
        let e = client
            .send(Call::get(&url, Duration::from_millis(100), 1024))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Timeout), "{e}");

        let big = serve_once("127.0.0.1:0", ok(&"x".repeat(2000)), Duration::ZERO).await;
        let url = HttpUrl::parse(&format!("http://{big}/")).unwrap();
        let e = client
            .send(Call::get(&url, Duration::from_secs(5), 1000))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::TooLarge), "{e}");
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n",
            "y".repeat(2000)
        );
        let big = serve_once("127.0.0.1:0", chunked, Duration::ZERO).await;
        let url = HttpUrl::parse(&format!("http://{big}/")).unwrap();
        let e = client
            .send(Call::get(&url, Duration::from_secs(5), 1000))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::TooLarge), "{e}");
    }

    /// The hand-written JWKS client this one replaced overflowed `size + 2` on a chunk size near
    /// `usize::MAX` and killed the refresh thread (its fuzz crash input was
    /// `fuzz/crashes/jwks/dechunk-size-overflow`). An answer declaring such a chunk is an error
    /// like any other here, whether it ends early or sends more than the call allows, and the
    /// client keeps working for the next call.
    #[tokio::test]
    async fn an_absurd_chunk_size_is_refused_cleanly() {
        let client = HttpClient::new(None).unwrap();
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffe\r\n";
        let truncated = serve_once("127.0.0.1:0", format!("{head}ab"), Duration::ZERO).await;
        let url = HttpUrl::parse(&format!("http://{truncated}/jwks")).unwrap();
        let e = client
            .send(Call::get(&url, Duration::from_secs(5), 1024))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Protocol(_)), "{e}");

        let flood = format!("{head}{}", "z".repeat(4096));
        let flood = serve_once("127.0.0.1:0", flood, Duration::ZERO).await;
        let url = HttpUrl::parse(&format!("http://{flood}/jwks")).unwrap();
        let e = client
            .send(Call::get(&url, Duration::from_secs(5), 1024))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::TooLarge), "{e}");

        let good = serve_once("127.0.0.1:0", ok("{\"keys\":[]}"), Duration::ZERO).await;
        let url = HttpUrl::parse(&format!("http://{good}/jwks")).unwrap();
        let a = client
            .send(Call::get(&url, Duration::from_secs(5), 1024))
            .await
            .unwrap();
        assert_eq!(&a.body[..], b"{\"keys\":[]}");
    }

    #[tokio::test]
    async fn refused_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = HttpClient::new(None).unwrap();
        let url = HttpUrl::parse(&format!("http://{addr}/")).unwrap();
        let e = client
            .send(Call::get(&url, Duration::from_secs(5), 1024))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Connect(_)), "{e}");
    }
}
