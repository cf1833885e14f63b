//! A WebSocket request on an echo or relay route: admission, then for relays the upstream
//! FIRST (a failure is a `502`/`504` or the upstream's own refusal, never a `101` then a close),
//! then the `101` with the negotiated subprotocol, then the session, then its report.

use std::net::IpAddr;
use std::time::Instant;

use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::accept::ClientIo;
use super::conn::Conn;
use super::generation::Generation;
use super::route::RouteEntry;
use super::Edge;
use crate::admission::{upgrade, Admitted, Rejection};
use crate::config::Mode;
use crate::core::reason::Reason;
use crate::core::shutdown::shutting_down;
use crate::net::http1::RequestHead;
use crate::obs::access_log::RelayRecord;
use crate::obs::metrics::OpenSession;
use crate::session::control::Control;
use crate::session::count::SessionGuard;
use crate::session::guard::{Expiry, Guard, Rates};
use crate::session::registry::{Registered, SessionInfo};
use crate::session::relay::RelayOptions;
use crate::session::stop::StopSignal;
use crate::session::{self, echo, SessionContext};

/// An admitted handshake: everything its session needs from admission and the configuration.
struct Accepted<'a> {
    generation: &'a Generation,
    entry: &'a RouteEntry,
    /// The client address (trusted-proxy aware).
    client: Option<IpAddr>,
    admitted: Admitted,
    accept: String,
    started: Instant,
    shutdown: ShutdownWatch,
}

impl Accepted<'_> {
    fn route(&self) -> &str {
        &self.entry.route.path
    }
}

/// A session counted for the graceful stop and in the metrics, until dropped.
struct Open {
    _counted: SessionGuard,
    metrics: OpenSession,
}

impl Edge {
    /// Admission, the 101, then the session.
    pub(super) async fn websocket(
        &self,
        mut conn: Conn,
        head: RequestHead,
        generation: &Generation,
        entry: &RouteEntry,
        shutdown: ShutdownWatch,
    ) {
        let route = &*entry.route;
        let started = Instant::now();
        let client = generation.admission.client_ip(conn.peer, &head);
        let admitted = match upgrade::check(&head) {
            Err(rejection) => Err(rejection),
            Ok(_) if *shutdown.borrow() => {
                Err(Rejection::new(Reason::ShuttingDown, 503, "shutting down\n"))
            }
            Ok(upgrade) => generation
                .admission
                .admit(&head, route, client, conn.peer_cert.as_deref(), &upgrade)
                .await
                .map(|(admitted, permit)| (upgrade, admitted, permit)),
        };
        let (upgrade, admitted, _permit) = match admitted {
            Ok(ok) => ok,
            Err(rejection) => {
                self.refuse(&mut conn, &route.path, client, &rejection, started)
                    .await;
                return;
            }
        };
        let accepted = Accepted {
            generation,
            entry,
            client,
            admitted,
            accept: upgrade.accept,
            started,
            shutdown,
        };
        match route.mode {
            Mode::Relay => self.relay(conn, head, accepted).await,
            _ => {
                drop(head);
                self.echo(conn, accepted).await
            }
        }
    }

    /// Write the `101` (with the chosen subprotocol) and count the handshake. On success the
    /// session is counted for the graceful stop and the metrics until the result drops.
    async fn switch_protocols(
        &self,
        io: &mut ClientIo,
        a: &Accepted<'_>,
        protocol: Option<&str>,
    ) -> Option<Open> {
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
        let written = io.write_all(response.as_bytes()).await.is_ok() && io.flush().await.is_ok();
        let metrics = self.report.switched(a.route(), written, a.started)?;
        Some(Open {
            _counted: counted,
            metrics,
        })
    }

    /// Put an open session in the registry (the admin API lists and closes it from there).
    fn register(
        &self,
        a: &Accepted<'_>,
        upstream: Option<&str>,
        subprotocol: Option<&str>,
    ) -> Registered {
        self.registry.register(SessionInfo {
            route: a.route().to_string(),
            subject: a.admitted.subject.clone(),
            jti: a
                .admitted
                .claims
                .get("jti")
                .and_then(|j| j.as_str())
                .map(String::from),
            client: a.client,
            upstream: upstream.map(String::from),
            subprotocol: subprotocol.map(String::from),
        })
    }

    /// What every session gets from the edge: stop signal, close timeout, the client-side
    /// policy, expiry, meter, and its registry entry's counters and close signal.
    fn session_context(
        &self,
        a: &Accepted<'_>,
        client_max: usize,
        registered: &Registered,
    ) -> SessionContext {
        let route = &a.entry.route;
        let admission = &a.generation.admission;
        SessionContext {
            stop: StopSignal::new(
                a.shutdown.clone(),
                a.entry.removed(),
                a.generation.config.server.drain_window(),
            ),
            close_timeout: a.generation.config.limits.close_timeout.0,
            inbound: Guard::new(client_max, Rates::of(admission.limits(route))),
            expiry: Expiry::at(a.admitted.expires_at),
            meter: self.report.metrics.meter(&route.path),
            counters: registered.counters.clone(),
            control: Control::new(
                registered.close.clone(),
                route.max_session_duration.map(|d| d.0),
            ),
        }
    }

    /// Report a session's end.
    fn ended(
        &self,
        a: &Accepted<'_>,
        end: &crate::core::end::SessionEnd,
        open: &Open,
        relay: Option<RelayRecord<'_>>,
    ) {
        self.report
            .session_ended(a.route(), &a.admitted, end, open.metrics.elapsed(), relay);
    }

    /// The local echo. It speaks any subprotocol: it picks the client's first (never a token
    /// entry), since browsers fail a handshake that offered protocols and got none back.
    async fn echo(&self, conn: Conn, a: Accepted<'_>) {
        let (mut io, early) = conn.into_parts();
        let protocol = a.admitted.protocols.first().cloned();
        // Registered before the client can see the 101, so an operator who sees the socket
        // open can also find and close it.
        let registered = self.register(&a, None, protocol.as_deref());
        let Some(open) = self
            .switch_protocols(&mut io, &a, protocol.as_deref())
            .await
        else {
            return;
        };
        let route = &a.entry.route;
        let limits = &a.generation.config.limits;
        let max_message = route.max_message_bytes(limits);
        // The echo sends back what it received, behind its prefix.
        let echo_max = max_message + route.echo_prefix().len();
        let config = session::websocket_config(limits, max_message, echo_max);
        // Frames the client sent right behind its head.
        let ws = WebSocketStream::from_partially_read(io, early, Role::Server, Some(config)).await;
        let ctx = self.session_context(&a, max_message, &registered);
        let end = echo::run(ws, route.echo_prefix(), ctx).await;
        self.ended(&a, &end, &open, None);
    }

    /// A relay route: connect and handshake upstream first, then the `101` with the upstream's
    /// subprotocol, then the frames both ways.
    async fn relay(&self, mut conn: Conn, head: RequestHead, a: Accepted<'_>) {
        let route = &a.entry.route;
        let Some(relay) = a.generation.relays.get(&route.path).cloned() else {
            let rejection = Rejection::new(Reason::UpstreamUnavailable, 502, "no upstream\n");
            self.refuse(&mut conn, &route.path, a.client, &rejection, a.started)
                .await;
            return;
        };
        let limits = &a.generation.config.limits;
        let client_max = route.max_message_bytes(limits);
        let upstream_max = route.upstream_max_message_bytes.unwrap_or(client_max);
        // Each side writes the other side's messages.
        let ws_config = |read_max: usize, write_max: usize| {
            session::websocket_config(limits, read_max, write_max)
        };
        let connect = relay.connect(
            &head,
            &a.admitted,
            conn.is_tls(),
            ws_config(upstream_max, client_max),
        );
        let mut shutdown = a.shutdown.clone();
        let connected = tokio::select! {
            c = connect => c,
            _ = shutting_down(&mut shutdown) => {
                let rejection = Rejection::new(Reason::ShuttingDown, 503, "shutting down\n");
                self.refuse(&mut conn, &route.path, a.client, &rejection, a.started).await;
                return;
            }
        };
        let connected = match connected {
            Ok(c) => c,
            Err(e) => {
                self.refuse(&mut conn, &route.path, a.client, &e.rejection(), a.started)
                    .await;
                return;
            }
        };
        drop(head);
        let (mut io, early) = conn.into_parts();
        let upstream = &relay.upstreams[connected.upstream];
        let registered = self.register(&a, Some(upstream.label()), connected.protocol.as_deref());
        let Some(open) = self
            .switch_protocols(&mut io, &a, connected.protocol.as_deref())
            .await
        else {
            return;
        };
        let _active = connected.active;
        let client_ws = WebSocketStream::from_partially_read(
            io,
            early,
            Role::Server,
            Some(ws_config(client_max, upstream_max)),
        )
        .await;
        let settings = relay.settings;
        let ctx = self.session_context(&a, client_max, &registered);
        let opts = RelayOptions {
            outbound: Guard::new(upstream_max, Rates::default()),
            ping_interval: settings.ping_interval,
            ping_timeout: settings.ping_timeout,
            idle_timeout: settings.idle_timeout,
        };
        let end = session::relay::run(client_ws, connected.ws, ctx, opts).await;
        let record = RelayRecord {
            upstream: upstream.label(),
            end_reason: end.reason,
            upstream_close_code: end.upstream_close_code,
        };
        self.ended(&a, &end.session, &open, Some(record));
    }
}
