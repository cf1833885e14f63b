//! The public listener's application: read the request head, route it, run admission, then
//! either answer over HTTP or complete the upgrade and run the WebSocket session.
//!
//! This is one pingora `ServerApp`: pingora owns the listening sockets, TLS and the process
//! lifecycle; everything from the first request byte on is ours (see `http1` for why).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::access_log::{AccessLog, RejectionRecord, SessionRecord};
use crate::admission::{self, Reason, Rejection};
use crate::config::{Mode, Route};
use crate::http1::{self, Answer, HeadError, HeadLimits, RequestHead};
use crate::live::{Live, LiveConfig};
use crate::metrics::{self, HandshakeResult, Metrics};
use crate::route::RouteEntry;
use crate::session::guard::Guard;
use crate::session::{self, echo, SessionContext, Sessions};
use crate::shutdown::StopSignal;

/// Shared state of the public listeners.
pub struct Gateway {
    live: Arc<LiveConfig>,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    access: AccessLog,
}

impl Gateway {
    pub fn new(live: Arc<LiveConfig>, sessions: Arc<Sessions>, metrics: Arc<Metrics>) -> Gateway {
        let current = live.get();
        for route in current
            .config
            .routes
            .iter()
            .filter(|r| r.mode != Mode::Static)
        {
            metrics.init_route(&route.path);
        }
        Gateway {
            access: AccessLog::new(current.config.server.log_format),
            live,
            sessions,
            metrics,
        }
    }

    /// Answer a refused request, count it and log it. `route` is the configured route path or
    /// [`metrics::NO_ROUTE`]; `started` is when its head was complete.
    async fn refuse(
        &self,
        io: &mut Stream,
        route: &str,
        client: Client,
        rejection: &Rejection,
        started: Instant,
    ) {
        // Counted and logged before the answer goes out, so whoever sees the answer also finds
        // it in the metrics and the log.
        self.metrics
            .rejected(route, rejection.reason, started.elapsed());
        self.access.rejection(&RejectionRecord {
            route,
            client: client.ip(),
            subject: None,
            reason: rejection.reason,
            status: rejection.answer.status,
        });
        let _ = rejection.answer.write(io, false, false).await;
    }

    /// Serve one client connection: plain HTTP requests (kept alive while allowed) until one of
    /// them upgrades to a WebSocket, which then owns the connection to its end.
    async fn serve(&self, mut io: Stream, mut shutdown: ShutdownWatch) {
        self.metrics.connection_accepted();
        let client = Client::of(&io);
        let mut buf = BytesMut::new();
        let mut first = true;
        loop {
            // Each request follows the configuration in force when it starts.
            let live = self.live.get();
            let limits = &live.config.limits;
            let head_limits = HeadLimits {
                max_bytes: limits.max_head_bytes,
                max_headers: limits.max_headers,
            };
            let timeout = if first {
                limits.head_timeout.0
            } else {
                limits.keepalive_timeout.0
            };
            // An idle kept-alive connection just ends when the gateway stops.
            let idle = !first && buf.is_empty();
            let read = http1::read_head(&mut io, &mut buf, head_limits, timeout);
            let result = tokio::select! {
                r = read => r,
                _ = crate::shutdown::shutting_down(&mut shutdown), if idle => return,
            };
            let head = match result {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(HeadError::Timeout) if !first && buf.is_empty() => return,
                Err(e) => {
                    if let Some((status, why)) = e.answer() {
                        let reason = match e {
                            HeadError::Timeout => Reason::HeadTimeout,
                            HeadError::TooLarge => Reason::HeadTooLarge,
                            _ => Reason::BadRequest,
                        };
                        let rejection = Rejection::new(reason, status, format!("{why}\n"));
                        let now = Instant::now();
                        self.refuse(&mut io, metrics::NO_ROUTE, client, &rejection, now)
                            .await;
                    }
                    return;
                }
            };
            first = false;
            let Some(entry) = live.router.find(head.path()).cloned() else {
                if head.header_has_token("upgrade", "websocket") {
                    // A WebSocket upgrade to nowhere is a refused handshake.
                    let rejection = Rejection::new(Reason::NoRoute, 404, "no route\n");
                    let now = Instant::now();
                    self.refuse(&mut io, metrics::NO_ROUTE, client, &rejection, now)
                        .await;
                    return;
                }
                let answer = Answer::new(404, "no route\n");
                if !answer_http(&mut io, &head, &answer, &shutdown).await {
                    return;
                }
                continue;
            };
            match entry.route.mode {
                Mode::Static => {
                    let answer = static_answer(&entry.route, &head);
                    if !answer_http(&mut io, &head, &answer, &shutdown).await {
                        return;
                    }
                }
                Mode::Echo => {
                    self.websocket(io, buf, head, &live, &entry, client, shutdown)
                        .await;
                    return;
                }
            }
        }
    }

    /// Admission, the 101, then the session.
    #[allow(clippy::too_many_arguments)]
    async fn websocket(
        &self,
        mut io: Stream,
        preread: BytesMut,
        head: RequestHead,
        live: &Live,
        entry: &RouteEntry,
        client: Client,
        shutdown: ShutdownWatch,
    ) {
        let route = &*entry.route;
        let started = Instant::now();
        let client_ip = live.admission.client_ip(client.0, &head);
        let who = Client(client_ip);
        let admitted = match admission::upgrade::check(&head) {
            Err(rejection) => Err(rejection),
            Ok(_) if *shutdown.borrow() => {
                Err(Rejection::new(Reason::ShuttingDown, 503, "shutting down\n"))
            }
            Ok(upgrade) => live
                .admission
                .admit(&head, route, client_ip, &upgrade)
                .await
                .map(|(admitted, permit)| (upgrade, admitted, permit)),
        };
        let (upgrade, admitted, _permit) = match admitted {
            Ok(ok) => ok,
            Err(rejection) => {
                self.refuse(&mut io, &route.path, who, &rejection, started)
                    .await;
                return;
            }
        };
        // The echo speaks any subprotocol: it picks the client's first (never a token entry),
        // since browsers fail a handshake that offered protocols and got none back.
        let protocol = admitted
            .protocols
            .first()
            .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
            .unwrap_or_default();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{protocol}\r\n",
            upgrade.accept
        );
        // Counted for the graceful stop before the client can see the 101, so that a stop
        // signalled right after it still waits for this session.
        let _open = self.sessions.open();
        if io.write_all(response.as_bytes()).await.is_err() || io.flush().await.is_err() {
            let failed = HandshakeResult::Failed;
            self.metrics
                .handshake(&route.path, failed, started.elapsed());
            return;
        }
        self.metrics
            .handshake(&route.path, HandshakeResult::Accepted, started.elapsed());
        let open = self.metrics.session_opened(&route.path);
        let max_message = route
            .max_message_bytes
            .unwrap_or(live.config.limits.max_message_bytes);
        let config = session::websocket_config(&live.config.limits, max_message);
        // Frames the client sent right behind its head are already in `preread`.
        let ws =
            WebSocketStream::from_partially_read(io, preread.to_vec(), Role::Server, Some(config))
                .await;
        let ctx = SessionContext {
            stop: StopSignal::new(shutdown, entry.removed(), live.config.server.drain_window()),
            close_timeout: live.config.limits.close_timeout.0,
            inbound: Guard::new(max_message, live.admission.client_rates(route)),
            expiry: admitted.expiry,
            meter: self.metrics.meter(&route.path),
        };
        let end = echo::run(ws, route.echo_prefix(), ctx).await;
        self.metrics
            .closed(&route.path, end.close_code, end.initiator);
        self.access.session(&SessionRecord {
            route: &route.path,
            client: who.ip(),
            subject: admitted.subject.as_deref(),
            end: &end,
            duration: open.elapsed(),
        });
    }
}

/// Answer a plain HTTP request; `true` when the connection stays open for another request
/// (the client allows it, sent no body we would have to skip, and the gateway is not stopping).
async fn answer_http(
    io: &mut Stream,
    head: &RequestHead,
    answer: &Answer,
    shutdown: &ShutdownWatch,
) -> bool {
    let keep = head.keep_alive() && !head.has_body() && !*shutdown.borrow();
    let written = answer.write(io, keep, head.method == "HEAD").await.is_ok();
    written && keep
}

/// The answer of a `static` route.
fn static_answer(route: &Route, head: &RequestHead) -> Answer {
    if head.method != "GET" && head.method != "HEAD" {
        return Answer::new(405, "method not allowed\n").header("Allow", "GET, HEAD");
    }
    Answer::new(
        route.status.unwrap_or(200),
        route.body.clone().unwrap_or_default(),
    )
}

/// The client's address, for logs.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub Option<IpAddr>);

impl Client {
    /// The socket's peer.
    pub fn of(io: &Stream) -> Client {
        Client(io.get_socket_digest().and_then(|d| {
            d.peer_addr()
                .and_then(|a| a.as_inet().map(|inet| inet.ip()))
        }))
    }

    /// The client's IP address (no port), when known.
    pub fn ip(&self) -> Option<IpAddr> {
        self.0
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("unknown"),
        }
    }
}

#[async_trait]
impl ServerApp for Gateway {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.serve(stream, shutdown.clone()).await;
        None
    }
}
