//! The public listener's application: read the request head, route it, run admission, then
//! either answer over HTTP or complete the upgrade and run the WebSocket session.
//!
//! This is one pingora `ServerApp`: pingora owns the listening sockets, TLS and the process
//! lifecycle; everything from the first request byte on is ours (see `http1` for why).

use std::fmt;
use std::net::SocketAddr;
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

use crate::admission::{self, Admitted, Reason, Rejection};
use crate::config::{Config, Mode, Route};
use crate::http1::{self, Answer, HeadError, HeadLimits, RequestHead};
use crate::route::Router;
use crate::session::guard::{Guard, Rates};
use crate::session::relay::RelayOptions;
use crate::session::{self, echo, SessionContext, Sessions};
use crate::upstream::Relays;

/// Shared state of the public listeners.
pub struct Gateway {
    config: Arc<Config>,
    router: Router,
    sessions: Arc<Sessions>,
    relays: Arc<Relays>,
}

impl Gateway {
    pub fn new(config: Arc<Config>, sessions: Arc<Sessions>) -> Gateway {
        // `server::preflight` has built the relays once already and reported any error.
        let relays = Relays::build(&config).unwrap_or_else(|e| {
            log::error!("relay routes: {e}");
            Relays::default()
        });
        Gateway {
            router: Router::new(&config),
            config,
            sessions,
            relays: Arc::new(relays),
        }
    }

    /// The relay routes (their upstreams and health), shared with the health-check service.
    pub fn relays(&self) -> Arc<Relays> {
        self.relays.clone()
    }

    fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_bytes: self.config.limits.max_head_bytes,
            max_headers: self.config.limits.max_headers,
        }
    }

    /// Serve one client connection: plain HTTP requests (kept alive while allowed) until one of
    /// them upgrades to a WebSocket, which then owns the connection to its end.
    async fn serve(&self, mut io: Stream, mut shutdown: ShutdownWatch) {
        let client = Client::of(&io);
        let limits = &self.config.limits;
        let mut buf = BytesMut::new();
        let mut first = true;
        loop {
            let timeout = if first {
                limits.head_timeout.0
            } else {
                limits.keepalive_timeout.0
            };
            // An idle kept-alive connection just ends when the gateway stops.
            let idle = !first && buf.is_empty();
            let read = http1::read_head(&mut io, &mut buf, self.head_limits(), timeout);
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
                        log::info!("bad request head client={client} status={status} reason={why}");
                        let _ = Answer::new(status, format!("{why}\n"))
                            .write(&mut io, false, false)
                            .await;
                    }
                    return;
                }
            };
            first = false;
            let Some(route) = self.router.find(head.path()).cloned() else {
                let keep = self.may_keep_alive(&head, &shutdown);
                let answer = Answer::new(404, "no route\n");
                if answer
                    .write(&mut io, keep, head.method == "HEAD")
                    .await
                    .is_err()
                    || !keep
                {
                    return;
                }
                continue;
            };
            match route.mode {
                Mode::Static => {
                    let keep = self.may_keep_alive(&head, &shutdown);
                    let answer = static_answer(&route, &head);
                    if answer
                        .write(&mut io, keep, head.method == "HEAD")
                        .await
                        .is_err()
                        || !keep
                    {
                        return;
                    }
                }
                Mode::Echo | Mode::Relay => {
                    self.websocket(io, buf, head, &route, client, shutdown)
                        .await;
                    return;
                }
            }
        }
    }

    fn may_keep_alive(&self, head: &RequestHead, shutdown: &ShutdownWatch) -> bool {
        head.keep_alive() && !head.has_body() && !*shutdown.borrow()
    }

    /// Admission, the 101, then the session.
    async fn websocket(
        &self,
        mut io: Stream,
        preread: BytesMut,
        head: RequestHead,
        route: &Route,
        client: Client,
        shutdown: ShutdownWatch,
    ) {
        let admitted = admission::upgrade::check(&head).and_then(|upgrade| {
            if *shutdown.borrow() {
                Err(Rejection::new(Reason::ShuttingDown, 503, "shutting down\n"))
            } else {
                Ok(upgrade)
            }
        });
        let upgrade = match admitted {
            Ok(upgrade) => upgrade,
            Err(rejection) => {
                log::info!(
                    "rejected route={} client={client} reason={} status={}",
                    route.path,
                    rejection.reason.as_str(),
                    rejection.answer.status
                );
                let _ = rejection.answer.write(&mut io, false, false).await;
                return;
            }
        };
        if route.mode == Mode::Relay {
            return self
                .relay(io, preread, head, route, client, upgrade, shutdown)
                .await;
        }
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            upgrade.accept
        );
        if io.write_all(response.as_bytes()).await.is_err() || io.flush().await.is_err() {
            return;
        }
        let _open = self.sessions.open();
        let started = Instant::now();
        let max_message = route
            .max_message_bytes
            .unwrap_or(self.config.limits.max_message_bytes);
        let config = session::websocket_config(&self.config.limits, max_message);
        // Frames the client sent right behind its head are already in `preread`.
        let ws =
            WebSocketStream::from_partially_read(io, preread.to_vec(), Role::Server, Some(config))
                .await;
        let ctx = SessionContext {
            shutdown,
            close_timeout: self.config.limits.close_timeout.0,
            inbound: Guard::new(max_message, Rates::default()),
            expiry: None,
        };
        let end = echo::run(ws, route.echo_prefix(), ctx).await;
        log::info!(
            "session route={} client={client} close_code={} initiator={} duration_s={:.3} messages_in={} messages_out={} bytes_in={} bytes_out={}",
            route.path,
            end.close_code.map_or("none".to_string(), |c| c.to_string()),
            end.initiator.as_str(),
            started.elapsed().as_secs_f64(),
            end.messages_in,
            end.messages_out,
            end.bytes_in,
            end.bytes_out,
        );
    }
}

impl Gateway {
    /// A relay route: connect and handshake upstream FIRST (a failure is a `502`/`504` or the
    /// upstream's own refusal, never a `101` then a close), then the `101` with the upstream's
    /// subprotocol, then the frames both ways.
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &self,
        mut io: Stream,
        preread: BytesMut,
        head: RequestHead,
        route: &Route,
        client: Client,
        upgrade: admission::upgrade::Upgrade,
        mut shutdown: ShutdownWatch,
    ) {
        let Some(relay) = self.relays.get(&route.path).cloned() else {
            let _ = Answer::new(502, "relay route not configured\n")
                .write(&mut io, false, false)
                .await;
            return;
        };
        // What admission knows about the client (the token work fills in the rest).
        let admitted = Admitted {
            client_ip: client.0.map(|a| a.ip()),
            protocols: upgrade
                .offered_protocols
                .iter()
                .filter(|p| !p.starts_with("bearer."))
                .cloned()
                .collect(),
            ..Admitted::default()
        };
        let limits = &self.config.limits;
        let client_max = route.max_message_bytes.unwrap_or(limits.max_message_bytes);
        let upstream_max = route.upstream_max_message_bytes.unwrap_or(client_max);
        // Each side writes the other side's messages: its write queue must hold the largest.
        let ws_config = |read_max: usize, write_max: usize| {
            session::websocket_config(limits, read_max)
                .max_write_buffer_size(limits.max_write_buffer_bytes.max(write_max + 64))
        };
        let client_tls = io.get_ssl_digest().is_some();
        let connect = relay.connect(
            &head,
            &admitted,
            client_tls,
            ws_config(upstream_max, client_max),
        );
        let connected = tokio::select! {
            c = connect => c,
            _ = crate::shutdown::shutting_down(&mut shutdown) => {
                let _ = Answer::new(503, "shutting down\n").write(&mut io, false, false).await;
                return;
            }
        };
        let connected = match connected {
            Ok(c) => c,
            Err(e) => {
                let answer = e.answer();
                log::info!(
                    "rejected route={} client={client} reason={} status={}",
                    route.path,
                    e.reason(),
                    answer.status
                );
                let _ = answer.write(&mut io, false, false).await;
                return;
            }
        };
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            upgrade.accept
        );
        if let Some(protocol) = &connected.protocol {
            response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        response.push_str("\r\n");
        if io.write_all(response.as_bytes()).await.is_err() || io.flush().await.is_err() {
            return;
        }
        let _open = self.sessions.open();
        let started = Instant::now();
        let upstream_url = relay.upstreams[connected.upstream].url.url.clone();
        let (upstream_ws, _active) = connected.into_parts();
        let client_ws = WebSocketStream::from_partially_read(
            io,
            preread.to_vec(),
            Role::Server,
            Some(ws_config(client_max, upstream_max)),
        )
        .await;
        let settings = relay.settings;
        let ctx = SessionContext {
            shutdown,
            close_timeout: limits.close_timeout.0,
            inbound: Guard::new(client_max, Rates::default()),
            expiry: admitted.expiry,
        };
        let opts = RelayOptions {
            outbound: Guard::new(upstream_max, Rates::default()),
            ping_interval: settings.ping_interval,
            ping_timeout: settings.ping_timeout,
            idle_timeout: settings.idle_timeout,
        };
        let end = session::relay::run(client_ws, upstream_ws, ctx, opts).await;
        let s = &end.session;
        log::info!(
            "session route={} client={client} upstream={upstream_url} end_reason={} close_code={} upstream_close_code={} initiator={} duration_s={:.3} messages_in={} messages_out={} bytes_in={} bytes_out={}",
            route.path,
            end.reason.as_str(),
            s.close_code.map_or("none".to_string(), |c| c.to_string()),
            end.upstream_close_code.map_or("none".to_string(), |c| c.to_string()),
            s.initiator.as_str(),
            started.elapsed().as_secs_f64(),
            s.messages_in,
            s.messages_out,
            s.bytes_in,
            s.bytes_out,
        );
    }
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
pub struct Client(Option<SocketAddr>);

impl Client {
    pub fn of(io: &Stream) -> Client {
        Client(
            io.get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied())),
        )
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{}", addr.ip()),
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
