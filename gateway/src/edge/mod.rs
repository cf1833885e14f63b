//! One connection's life on a public listener, in the order it travels:
//! accept and TLS ([`accept`]) → head ([`conn`], `net::http1`; or an HTTP/2 connection's
//! streams, [`h2`]) → route ([`route`]) → admission
//! → upstream first → `101` ([`handshake`]) → session (`session`, a task of its own) → report
//! ([`report`]). Each request follows the [`generation`] in force when it begins, to its end.
//!
//! This is one pingora `ServerApp`: pingora owns the listening sockets and the process
//! lifecycle (graceful stop, zero-downtime upgrade) and hands over each accepted TCP stream.
//! TLS is terminated here ([`accept`]: rustls, with the certificates of `net::server_tls`)
//! rather than by pingora's listener, whose TLS phase has a fixed 60 s timeout and no hook to
//! bound or cap connections that never finish it; and the request head is read here too (see
//! `net::http1` for why). pingora's task for the connection ends at the `101`: the session runs
//! as a task of its own, holding only what it needs, and reports how it ended ([`handshake`]).

pub(crate) mod accept;
pub(crate) mod conn;
pub(crate) mod generation;
mod h2;
mod handshake;
pub(crate) mod report;
pub(crate) mod route;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::admission::Rejection;
use crate::config::{defaults, Mode, Route};
use crate::core::labels::{DropReason, NO_ROUTE};
use crate::core::reason::Reason;
use crate::core::shutdown::shutting_down;
use crate::net::answer::Answer;
use crate::net::http1::{self, HeadError, HeadLimits, RequestHead};
use crate::net::quiet_tls::QuietTls;
use crate::obs::metrics::Metrics;
use crate::session::count::Sessions;
use crate::session::registry::Registry;
use accept::{listener_of, peer_of, EdgeListener, Pending};
use conn::{Client, Conn};
use generation::InForce;
use report::Report;
use tokio_util::either::Either;

/// Shared state of the public listeners.
pub(crate) struct Edge {
    in_force: Arc<InForce>,
    sessions: Arc<Sessions>,
    /// The open sessions, for the operator.
    registry: Arc<Registry>,
    report: Report,
    listeners: Vec<EdgeListener>,
    pending: Pending,
}

impl Edge {
    pub(crate) fn new(
        in_force: Arc<InForce>,
        sessions: Arc<Sessions>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        listeners: Vec<EdgeListener>,
    ) -> Edge {
        let format = in_force.get().config.server.log_format;
        Edge {
            in_force,
            sessions,
            registry,
            pending: Pending::new(metrics.pending_gauge()),
            report: Report::new(metrics, format),
            listeners,
        }
    }

    /// The first phase: a pending slot, then TLS, all within `head_timeout` of the accept.
    /// `None`: the connection was closed (and counted) before anything could be answered.
    async fn accept(&self, io: Stream) -> Option<(Conn, tokio::time::Instant)> {
        let peer = peer_of(&io);
        let generation = self.in_force.get();
        let limits = &generation.config.limits;
        let deadline = tokio::time::Instant::now() + limits.head_timeout.0;
        let pending = match self.pending.enter(peer, limits) {
            Ok(slot) => slot,
            Err(reason) => {
                self.report.metrics.connection_dropped(reason);
                return None;
            }
        };
        let Some(listener) = listener_of(&self.listeners, &io) else {
            log::error!("a connection arrived on no known listener; closing it");
            return None;
        };
        let io = match &self.listeners[listener].tls {
            None => Either::Left(io),
            Some(store) => {
                match tokio::time::timeout_at(deadline, store.acceptor().accept(io)).await {
                    Ok(Ok(tls)) => Either::Right(Box::new(QuietTls::new(tls))),
                    Ok(Err(e)) => {
                        self.report.metrics.tls_handshake_failure();
                        log::debug!("TLS handshake with {peer:?} failed: {e}");
                        return None;
                    }
                    Err(_) => {
                        self.report.metrics.tls_handshake_failure();
                        self.report
                            .metrics
                            .connection_dropped(DropReason::HandshakeTimeout);
                        return None;
                    }
                }
            }
        };
        self.report.metrics.connection_accepted();
        let mut conn = Conn::new(io, peer, pending);
        conn.read_peer_cert();
        Some((conn, deadline))
    }

    /// Answer a request refused before it reached a route (a broken head, a WebSocket upgrade
    /// to no route), after counting and logging it; a routed handshake refuses through its
    /// own value (`handshake::Handshake::refuse`).
    async fn refuse_unrouted(&self, conn: &mut Conn, rejection: &Rejection) {
        self.report
            .rejected(NO_ROUTE, conn.peer, "h1", rejection, Instant::now());
        let _ = rejection.answer.write(&mut conn.io, false, false).await;
    }

    /// Serve one client connection: plain HTTP requests (kept alive while allowed) until one of
    /// them upgrades to a WebSocket, which then owns the connection to its end.
    async fn serve(self: &Arc<Self>, io: Stream, mut shutdown: ShutdownWatch) {
        let Some((mut conn, first_deadline)) = self.accept(io).await else {
            return;
        };
        if conn.chose_http2() {
            return self.serve_h2(conn, first_deadline, shutdown).await;
        }
        let mut first = true;
        loop {
            // Each request follows the configuration in force when it starts.
            let generation = self.in_force.get();
            let limits = &generation.config.limits;
            let head_limits = HeadLimits {
                max_bytes: limits.max_head_bytes,
                max_headers: limits.max_headers,
            };
            // The first head shares `head_timeout` with the TLS handshake before it; a later
            // one has `head_timeout` from its first byte, which may take `keepalive_timeout`.
            let timeout = if first {
                first_deadline.saturating_duration_since(tokio::time::Instant::now())
            } else {
                limits.head_timeout.0
            };
            if !first && conn.buf.is_empty() {
                // An idle kept-alive connection just ends: when the gateway stops, when the
                // client leaves, or when no request begins within keepalive_timeout.
                let idle = limits.keepalive_timeout.0;
                let next = http1::next_request(&mut conn.io, &mut conn.buf, idle);
                let begun = tokio::select! {
                    begun = next => begun,
                    _ = shutting_down(&mut shutdown) => return,
                };
                if !begun {
                    return;
                }
            }
            let result = http1::read_head(&mut conn.io, &mut conn.buf, head_limits, timeout).await;
            let head = match result {
                Ok(Some(mut head)) => {
                    head.tls = conn.is_tls();
                    head
                }
                Ok(None) => return,
                Err(e) => {
                    if let Some((status, why)) = e.answer() {
                        let reason = match e {
                            HeadError::Timeout => Reason::HeadTimeout,
                            HeadError::TooLarge => Reason::HeadTooLarge,
                            _ => Reason::BadRequest,
                        };
                        let rejection = Rejection::new(reason, status, format!("{why}\n"));
                        self.refuse_unrouted(&mut conn, &rejection).await;
                    }
                    return;
                }
            };
            first = false;
            let Some(entry) = generation.router.find(head.path()).cloned() else {
                if head.wants_websocket() {
                    // A WebSocket upgrade to nowhere is a refused handshake.
                    let rejection = Rejection::new(Reason::NoRoute, 404, "no route\n");
                    self.refuse_unrouted(&mut conn, &rejection).await;
                    return;
                }
                let answer = Answer::new(404, "no route\n");
                if !answer_http(&mut conn, &head, &answer, &shutdown).await {
                    return;
                }
                continue;
            };
            match entry.route.mode {
                Mode::Static => {
                    let answer = static_answer(&entry.route, &head);
                    if !answer_http(&mut conn, &head, &answer, &shutdown).await {
                        return;
                    }
                }
                Mode::Echo | Mode::Relay => {
                    let mut client = Client::Http1(conn);
                    client.admitting();
                    self.websocket(client, head, &generation, &entry, shutdown)
                        .await;
                    return;
                }
            }
        }
    }
}

/// Answer a plain HTTP request; `true` when the connection stays open for another request
/// (the client allows it, sent no body we would have to skip, and the gateway is not stopping).
async fn answer_http(
    conn: &mut Conn,
    head: &RequestHead,
    answer: &Answer,
    shutdown: &ShutdownWatch,
) -> bool {
    let keep = head.keep_alive() && !head.has_body() && !*shutdown.borrow();
    let written = answer
        .write(&mut conn.io, keep, head.method == "HEAD")
        .await
        .is_ok();
    written && keep
}

/// The answer of a `static` route.
pub(super) fn static_answer(route: &Route, head: &RequestHead) -> Answer {
    if head.method != "GET" && head.method != "HEAD" {
        return Answer::new(405, "method not allowed\n").header("Allow", "GET, HEAD");
    }
    Answer::new(
        route.status.unwrap_or(defaults::STATIC_STATUS),
        route.body.clone().unwrap_or_default(),
    )
}

/// The pingora app of one public-listener service. With a service per worker thread (README,
/// "Threads") every one of them serves the same [`Edge`].
pub(crate) struct EdgeApp(pub(crate) Arc<Edge>);

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.0.serve(stream, shutdown.clone()).await;
        None
    }
}
