//! Servers the tests start themselves, inside the test's runtime, each on a port bound once
//! (`127.0.0.1:0`) and kept: test upstream WebSocket servers (plain or TLS) that report what
//! they see, a small HTTP server (a JWKS endpoint, a test page), and a held port with nothing
//! listening (an upstream that is down, or down for a while).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::wait::STEP;

/// Any byte stream the test upstream serves on (TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type UpWs = WebSocketStream<Box<dyn Io>>;

/// What the test upstream reports.
#[derive(Debug)]
pub enum Event {
    /// A handshake request's headers (before it is accepted or refused).
    Request(HeaderMap, String),
    /// A close frame the upstream received: code and reason (1005 for none).
    Closed(u16, String),
    /// The connection ended without a close frame, or with an error.
    Ended,
    /// A data message the upstream received.
    Data(Message),
}

/// What the upstream does with each accepted WebSocket session.
pub type Handler =
    Arc<dyn Fn(UpWs, mpsc::UnboundedSender<Event>) -> BoxFuture<'static, ()> + Send + Sync>;

/// How the test upstream answers handshakes.
#[derive(Clone, Default)]
pub struct Handshake {
    /// Refuse every upgrade with this status and body.
    pub refuse: Option<(u16, &'static str)>,
    /// Choose the first offered subprotocol that is in this list.
    pub protocols: Vec<&'static str>,
    /// Never answer (accept TCP, read nothing).
    pub stall: bool,
    /// Serve TLS with this (cert PEM, key PEM).
    pub tls: Option<(String, String)>,
    /// With `tls`: require a client certificate issued by this CA (PEM).
    pub client_ca: Option<String>,
    /// Headers added to every `101` (an extension the gateway never offered, say).
    pub answer_headers: Vec<(&'static str, &'static str)>,
}

/// A test upstream WebSocket server; stops accepting when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// On a fresh port.
    pub async fn start(handshake: Handshake, handler: Handler) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Upstream::serve(listener, handshake, handler)
    }

    /// An echo upstream with the default handshake, on a fresh port.
    pub async fn echo() -> Upstream {
        Upstream::start(Handshake::default(), echo()).await
    }

    /// On a listener the test bound.
    pub fn serve(listener: TcpListener, handshake: Handshake, handler: Handler) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let acceptor = handshake
            .tls
            .as_ref()
            .map(|(cert, key)| tls_acceptor(cert, key, handshake.client_ca.as_deref()));
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                if handshake.stall {
                    held.push(tcp);
                    continue;
                }
                let tx = tx.clone();
                let handler = handler.clone();
                let handshake = handshake.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match acceptor {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => Box::new(tls),
                            Err(_) => return,
                        },
                        None => Box::new(tcp),
                    };
                    let report = tx.clone();
                    // tungstenite's callback signature returns its (large) ErrorResponse.
                    #[allow(clippy::result_large_err)]
                    let callback = move |req: &Request, mut resp: Response| {
                        let _ = report
                            .send(Event::Request(req.headers().clone(), req.uri().to_string()));
                        if let Some((status, body)) = handshake.refuse {
                            let mut e = ErrorResponse::new(Some(body.to_string()));
                            *e.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            e.headers_mut()
                                .insert("www-authenticate", "Bearer realm=\"up\"".parse().unwrap());
                            return Err(e);
                        }
                        let offered = req
                            .headers()
                            .get("sec-websocket-protocol")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .split(',')
                            .map(|p| p.trim().to_string())
                            .collect::<Vec<_>>();
                        if let Some(p) = offered
                            .iter()
                            .find(|p| handshake.protocols.contains(&p.as_str()))
                        {
                            resp.headers_mut()
                                .insert("sec-websocket-protocol", p.parse().unwrap());
                        }
                        for (name, value) in &handshake.answer_headers {
                            resp.headers_mut().append(*name, value.parse().unwrap());
                        }
                        Ok(resp)
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(io, callback).await {
                        handler(ws, tx).await;
                    }
                });
            }
        });
        Upstream { addr, events, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The next event (bounded).
    pub async fn event(&mut self) -> Event {
        tokio::time::timeout(STEP, self.events.recv())
            .await
            .expect("no upstream event in time")
            .expect("upstream gone")
    }

    /// The next request's headers.
    pub async fn request(&mut self) -> (HeaderMap, String) {
        loop {
            if let Event::Request(h, uri) = self.event().await {
                return (h, uri);
            }
        }
    }

    /// The next close frame the upstream received (on any of its connections; `Ended` events
    /// are skipped: they are often an earlier connection finishing).
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            if let Event::Closed(code, reason) = self.event().await {
                return (code, reason);
            }
        }
    }
}

/// A [`Handler`] from an async closure.
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(UpWs, mpsc::UnboundedSender<Event>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Arc::new(move |ws, tx| Box::pin(f(ws, tx)))
}

/// Read until the connection ends, reporting data and the close frame.
pub async fn serve_rest(mut ws: UpWs, tx: &mpsc::UnboundedSender<Event>, echo: bool) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                let _ = tx.send(Event::Closed(code, reason));
            }
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                let _ = tx.send(Event::Data(m.clone()));
                if echo && ws.send(m).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Event::Ended);
}

/// Echo data messages; report everything.
pub fn echo() -> Handler {
    handler(|ws, tx| async move { serve_rest(ws, &tx, true).await })
}

/// Report everything, answer nothing.
pub fn listen() -> Handler {
    handler(|ws, tx| async move { serve_rest(ws, &tx, false).await })
}

/// Server push: send `messages` (pings included) at once, then report everything.
pub fn pushes(messages: Vec<Message>) -> Handler {
    handler(move |mut ws, tx| {
        let messages = messages.clone();
        async move {
            for m in messages {
                ws.send(m).await.unwrap();
            }
            serve_rest(ws, &tx, false).await
        }
    })
}

/// Dies mid-stream: answer the first message with `last_words`, then drop the connection
/// without a close frame.
pub fn dies_after_answering(last_words: &'static str) -> Handler {
    handler(move |mut ws, _tx| async move {
        let _ = ws.next().await;
        ws.send(Message::text(last_words)).await.unwrap();
        drop(ws);
    })
}

/// Closes first: answer the first message with a close frame, then report everything.
pub fn closes_after_first(code: u16, reason: &'static str) -> Handler {
    handler(move |mut ws, tx| async move {
        let _ = ws.next().await;
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })))
        .await
        .unwrap();
        serve_rest(ws, &tx, false).await
    })
}

/// Writes `bytes` raw (say, a frame that breaks the protocol) at once, then reports everything.
pub fn writes_raw(bytes: Vec<u8>) -> Handler {
    let bytes = Arc::new(bytes);
    handler(move |mut ws, tx| {
        let bytes = bytes.clone();
        async move {
            ws.get_mut().write_all(&bytes).await.unwrap();
            serve_rest(ws, &tx, false).await
        }
    })
}

/// Floods: sends `chunk`-byte binary messages until `limit` bytes are sent or the connection
/// fails, counting the bytes sent in `sent`.
pub fn floods(sent: Arc<AtomicU64>, chunk: usize, limit: u64) -> Handler {
    handler(move |mut ws, _tx| {
        let sent = sent.clone();
        async move {
            let chunk = vec![0x5au8; chunk];
            while sent.load(Ordering::Relaxed) < limit {
                if ws.send(Message::binary(chunk.clone())).await.is_err() {
                    return;
                }
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
    })
}

/// Never reads: holds the session open, reading nothing, until the test ends.
pub fn never_reads() -> Handler {
    handler(|ws, _tx| async move {
        let _held = ws;
        std::future::pending::<()>().await
    })
}

/// A TLS acceptor for `cert`/`key` (PEM), requiring client certificates from `client_ca`.
fn tls_acceptor(cert: &str, key: &str, client_ca: Option<&str>) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A loopback port held for the whole test with nothing listening on it: connections to it are
/// refused (an upstream that is down) until [`HeldPort::listen`] opens a listener on it, and are
/// refused again once that listener is dropped. The port is never released in between, so no
/// other test can be given it: a placeholder socket bound with `SO_REUSEPORT` keeps it (the
/// kernel hands out no port another socket holds), as the gateway does for port 0.
pub struct HeldPort {
    pub addr: SocketAddr,
    _placeholder: TcpSocket,
}

impl HeldPort {
    pub fn new() -> HeldPort {
        let placeholder = reuseport_socket();
        placeholder.bind(([127, 0, 0, 1], 0).into()).unwrap();
        HeldPort {
            addr: placeholder.local_addr().unwrap(),
            _placeholder: placeholder,
        }
    }

    /// A listener on the port (it comes up).
    pub fn listen(&self) -> TcpListener {
        let socket = reuseport_socket();
        socket.bind(self.addr).unwrap();
        socket.listen(1024).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

fn reuseport_socket() -> TcpSocket {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseport(true).unwrap();
    socket
}

/// A small HTTP/1.1 server: every request gets the current body (200; JSON, or HTML for a page),
/// or a 503 while the body is `None`; it counts the connections it answers. Stops when dropped.
pub struct HttpServer {
    pub addr: SocketAddr,
    body: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    /// Answers every request with `body` as JSON (a JWKS endpoint).
    pub async fn start(body: String) -> HttpServer {
        HttpServer::start_typed(body, "application/json").await
    }

    /// Answers every request with `html` (a test page; its origin is `http://` + the address).
    pub async fn page(html: String) -> HttpServer {
        HttpServer::start_typed(html, "text/html; charset=utf-8").await
    }

    async fn start_typed(body: String, content_type: &'static str) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(Some(body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                h.fetch_add(1, Ordering::SeqCst);
                let body = b.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = tokio::time::timeout(STEP, s.read(&mut buf)).await;
                    let answer = match body {
                        Some(b) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                            b.len()
                        ),
                        None => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        HttpServer {
            addr,
            body,
            hits,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serve `body` from now on (`None`: answer 503).
    pub fn set_body(&self, body: Option<String>) {
        *self.body.lock().unwrap() = body;
    }

    /// How many connections it has answered.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A request an [`HttpService`] received.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// A field of a form-encoded body.
    pub fn form(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// What an [`HttpService`] answers, after `delay`.
#[derive(Debug, Clone, Default)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: std::time::Duration,
    /// Written as it is instead of an answer built from the fields above (a malformed or
    /// hostile answer), then the connection is closed.
    pub raw: Option<String>,
}

impl HttpReply {
    pub fn new(status: u16, body: impl Into<String>) -> HttpReply {
        HttpReply {
            status,
            body: body.into(),
            ..HttpReply::default()
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> HttpReply {
        self.headers.push((name, value.into()));
        self
    }

    /// An answer written byte for byte as given, then the connection closed.
    pub fn raw(text: impl Into<String>) -> HttpReply {
        HttpReply {
            raw: Some(text.into()),
            ..HttpReply::default()
        }
    }
}

/// How an [`HttpService`] answers each request.
pub type HttpHandler = Arc<dyn Fn(&HttpRequest) -> HttpReply + Send + Sync>;

/// A small HTTP/1.1 service (an authorizer, an introspection endpoint, a JWKS endpoint), plain
/// or over TLS: each request is recorded and answered by the handler; connections are kept
/// alive as a client asks. Stops when dropped.
pub struct HttpService {
    pub addr: SocketAddr,
    tls: bool,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpService {
    /// On a fresh loopback port.
    pub async fn start(handler: HttpHandler) -> HttpService {
        HttpService::start_at("127.0.0.1:0", handler).await
    }

    /// On `bind` (e.g. `[::1]:0`).
    pub async fn start_at(bind: &str, handler: HttpHandler) -> HttpService {
        HttpService::serve(bind, None, handler).await
    }

    /// Over TLS on a fresh loopback port, with `cert`/`key` (PEM; say, issued by a
    /// [`super::TestCa`] for `127.0.0.1`).
    pub async fn start_tls(cert: &str, key: &str, handler: HttpHandler) -> HttpService {
        HttpService::serve("127.0.0.1:0", Some(tls_acceptor(cert, key, None)), handler).await
    }

    async fn serve(
        bind: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        handler: HttpHandler,
    ) -> HttpService {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let secure = tls.is_some();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                let (handler, seen, tls) = (handler.clone(), seen.clone(), tls.clone());
                conns.spawn(async move {
                    let io: Box<dyn Io> = match tls {
                        // A client that does not trust the certificate fails here; the
                        // service never sees its request.
                        Some(acceptor) => {
                            match tokio::time::timeout(STEP, acceptor.accept(s)).await {
                                Ok(Ok(tls)) => Box::new(tls),
                                _ => return,
                            }
                        }
                        None => Box::new(s),
                    };
                    serve_http(io, handler, seen).await
                });
            }
        });
        HttpService {
            addr,
            tls: secure,
            requests,
            task,
        }
    }

    /// `http://ADDR/path`, or `https://` over TLS (IPv6 addresses bracketed).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests `pred` holds for.
    pub fn count(&self, pred: impl Fn(&HttpRequest) -> bool) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| pred(r))
            .count()
    }
}

/// One connection of an [`HttpService`]: requests until the client closes or asks to.
async fn serve_http(mut s: Box<dyn Io>, handler: HttpHandler, seen: Arc<Mutex<Vec<HttpRequest>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let (request, used) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let mut map = HeaderMap::new();
                for h in req.headers.iter() {
                    map.append(
                        http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                        http::HeaderValue::from_bytes(h.value).unwrap(),
                    );
                }
                let len: usize = map
                    .get("content-length")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                if buf.len() >= n + len {
                    let request = HttpRequest {
                        method: req.method.unwrap_or_default().to_string(),
                        target: req.path.unwrap_or_default().to_string(),
                        headers: map,
                        body: buf[n..n + len].to_vec(),
                    };
                    break (request, n + len);
                }
            }
            match tokio::time::timeout(STEP, s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        buf.drain(..used);
        seen.lock().unwrap().push(request.clone());
        let reply = handler(&request);
        tokio::time::sleep(reply.delay).await;
        if let Some(raw) = reply.raw {
            let _ = s.write_all(raw.as_bytes()).await;
            let _ = s.shutdown().await;
            return;
        }
        let close = request.header("connection").eq_ignore_ascii_case("close");
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        if s.write_all(out.as_bytes()).await.is_err() || close {
            return;
        }
    }
}
