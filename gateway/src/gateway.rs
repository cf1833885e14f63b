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

use crate::access_log::{AccessLog, RejectionRecord, RelayRecord, SessionRecord};
use crate::admission::{self, Admitted, Reason, Rejection};
use crate::config::{Mode, Route};
use crate::http1::{self, Answer, HeadError, HeadLimits, RequestHead};
use crate::live::{Live, LiveConfig};
use crate::metrics::{self, HandshakeResult, Metrics, OpenSession};
use crate::route::RouteEntry;
use crate::session::guard::{Guard, Rates};
use crate::session::relay::RelayOptions;
use crate::session::{self, echo, SessionContext, SessionEnd, SessionGuard, Sessions};
use crate::shutdown::StopSignal;
use crate::upstream::ConnectError;

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
                Mode::Echo | Mode::Relay => {
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
        let accepted = Accepted {
            live,
            entry,
            who,
            admitted,
            accept: upgrade.accept,
            started,
            shutdown,
        };
        // Only the bytes behind the head go on: the head buffer (up to max_head_bytes of
        // capacity) is freed instead of living as long as the socket.
        let early = preread.to_vec();
        drop(preread);
        match route.mode {
            Mode::Relay => self.relay(io, early, head, accepted).await,
            _ => {
                drop(head);
                self.echo(io, early, accepted).await
            }
        }
    }

    /// Write the `101` (with the chosen subprotocol) and count the handshake. On success the
    /// session is counted for the graceful stop and the metrics until the guards drop.
    async fn switch_protocols(
        &self,
        io: &mut Stream,
        a: &Accepted<'_>,
        protocol: Option<&str>,
    ) -> Option<(SessionGuard, OpenSession)> {
        let route = &a.entry.route.path;
        let protocol = protocol
            .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
            .unwrap_or_default();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{protocol}\r\n",
            a.accept
        );
        // Counted for the graceful stop before the client can see the 101, so that a stop
        // signalled right after it still waits for this session.
        let counted = self.sessions.open();
        if io.write_all(response.as_bytes()).await.is_err() || io.flush().await.is_err() {
            self.metrics
                .handshake(route, HandshakeResult::Failed, a.started.elapsed());
            return None;
        }
        self.metrics
            .handshake(route, HandshakeResult::Accepted, a.started.elapsed());
        Some((counted, self.metrics.session_opened(route)))
    }

    /// What every session gets from the gateway: stop signal, close timeout, the client-side
    /// policy, expiry and meter.
    fn session_context(&self, a: &Accepted<'_>, client_max: usize) -> SessionContext {
        let route = &a.entry.route;
        SessionContext {
            stop: StopSignal::new(
                a.shutdown.clone(),
                a.entry.removed(),
                a.live.config.server.drain_window(),
            ),
            close_timeout: a.live.config.limits.close_timeout.0,
            inbound: Guard::new(client_max, a.live.admission.client_rates(route)),
            expiry: a.admitted.expiry,
            meter: self.metrics.meter(&route.path),
        }
    }

    /// Count and log a session's end.
    fn session_ended(
        &self,
        a: &Accepted<'_>,
        end: &SessionEnd,
        open: &OpenSession,
        relay: Option<RelayRecord<'_>>,
    ) {
        let route = &a.entry.route.path;
        self.metrics.closed(route, end.close_code, end.initiator);
        self.access.session(&SessionRecord {
            route,
            client: a.who.ip(),
            subject: a.admitted.subject.as_deref(),
            end,
            duration: open.elapsed(),
            relay,
        });
    }

    /// The local echo. It speaks any subprotocol: it picks the client's first (never a token
    /// entry), since browsers fail a handshake that offered protocols and got none back.
    async fn echo(&self, mut io: Stream, early: Vec<u8>, a: Accepted<'_>) {
        let protocol = a.admitted.protocols.first().cloned();
        let Some((_counted, open)) = self
            .switch_protocols(&mut io, &a, protocol.as_deref())
            .await
        else {
            return;
        };
        let route = &a.entry.route;
        let limits = &a.live.config.limits;
        let max_message = route.max_message_bytes.unwrap_or(limits.max_message_bytes);
        // The echo sends back what it received, behind its prefix.
        let echo_max = max_message + route.echo_prefix().len();
        let config = session::websocket_config(limits, max_message, echo_max);
        // Frames the client sent right behind its head.
        let ws = WebSocketStream::from_partially_read(io, early, Role::Server, Some(config)).await;
        let ctx = self.session_context(&a, max_message);
        let end = echo::run(ws, route.echo_prefix(), ctx).await;
        self.session_ended(&a, &end, &open, None);
    }

    /// A relay route: connect and handshake upstream FIRST (a failure is a `502`/`504` or the
    /// upstream's own refusal, never a `101` then a close), then the `101` with the upstream's
    /// subprotocol, then the frames both ways.
    async fn relay(&self, mut io: Stream, early: Vec<u8>, head: RequestHead, a: Accepted<'_>) {
        let route = &a.entry.route;
        let Some(relay) = a.live.relays.get(&route.path).cloned() else {
            let rejection = Rejection::new(Reason::UpstreamUnavailable, 502, "no upstream\n");
            self.refuse(&mut io, &route.path, a.who, &rejection, a.started)
                .await;
            return;
        };
        let limits = &a.live.config.limits;
        let client_max = route.max_message_bytes.unwrap_or(limits.max_message_bytes);
        let upstream_max = route.upstream_max_message_bytes.unwrap_or(client_max);
        // Each side writes the other side's messages.
        let ws_config = |read_max: usize, write_max: usize| {
            session::websocket_config(limits, read_max, write_max)
        };
        let client_tls = io.get_ssl_digest().is_some();
        let connect = relay.connect(
            &head,
            &a.admitted,
            client_tls,
            ws_config(upstream_max, client_max),
        );
        let mut shutdown = a.shutdown.clone();
        let connected = tokio::select! {
            c = connect => c,
            _ = crate::shutdown::shutting_down(&mut shutdown) => {
                let rejection = Rejection::new(Reason::ShuttingDown, 503, "shutting down\n");
                self.refuse(&mut io, &route.path, a.who, &rejection, a.started).await;
                return;
            }
        };
        let connected = match connected {
            Ok(c) => c,
            Err(e) => {
                let reason = match e {
                    ConnectError::Refused { .. } => Reason::UpstreamRefused,
                    _ => Reason::UpstreamUnavailable,
                };
                let rejection = Rejection {
                    reason,
                    answer: e.answer(),
                };
                self.refuse(&mut io, &route.path, a.who, &rejection, a.started)
                    .await;
                return;
            }
        };
        let protocol = connected.protocol.clone();
        let Some((_counted, open)) = self
            .switch_protocols(&mut io, &a, protocol.as_deref())
            .await
        else {
            return;
        };
        let upstream_url = relay.upstreams[connected.upstream].url.url.clone();
        let (upstream_ws, _active) = connected.into_parts();
        let client_ws = WebSocketStream::from_partially_read(
            io,
            early,
            Role::Server,
            Some(ws_config(client_max, upstream_max)),
        )
        .await;
        let settings = relay.settings;
        let ctx = self.session_context(&a, client_max);
        let opts = RelayOptions {
            outbound: Guard::new(upstream_max, Rates::default()),
            ping_interval: settings.ping_interval,
            ping_timeout: settings.ping_timeout,
            idle_timeout: settings.idle_timeout,
        };
        let end = session::relay::run(client_ws, upstream_ws, ctx, opts).await;
        self.metrics.relay_ended(&route.path, end.reason.as_str());
        let relay = RelayRecord {
            upstream: &upstream_url,
            end_reason: end.reason.as_str(),
            upstream_close_code: end.upstream_close_code,
        };
        self.session_ended(&a, &end.session, &open, Some(relay));
    }
}

/// An admitted handshake: everything its session needs from admission and the configuration.
struct Accepted<'a> {
    live: &'a Live,
    entry: &'a RouteEntry,
    who: Client,
    admitted: Admitted,
    accept: String,
    started: Instant,
    shutdown: ShutdownWatch,
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
