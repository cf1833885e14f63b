//! The HTTP/2 front (RFC 9113): a connection that chose `h2` by ALPN carries its requests as
//! streams. Each stream's request becomes the same [`RequestHead`] an HTTP/1.1 head gives and
//! goes the same way: route, static answers, or the WebSocket handshake (extended CONNECT,
//! RFC 8441) with admission in the same order, each stream one connection for the caps, then a
//! `200` on the stream instead of a `101` and a session over the stream.
//!
//! The connection's own bounds: its first request must come within `head_timeout` of the
//! connect (TLS included), as an HTTP/1.1 head must, and until then it counts as pending; each
//! stream's request counts as pending until it reaches admission; a connection without streams
//! ends after `keepalive_timeout`; HTTP/2's own attacks are bounded by the settings of
//! `net::http2::builder` and counted here by the error h2 ends the connection with, floods of
//! control frames by the connection's budget and a header block left open past `head_timeout`
//! (`net::http2::watched`), which this task ends with GOAWAY `ENHANCE_YOUR_CALM`; a header list over `max_head_bytes` is refused with the same
//! `431` and reason as an HTTP/1.1 head over it. This task
//! drives the connection (every stream's frames) until it closes; each stream's handshake and
//! session run as tasks of their own.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use pingora::server::ShutdownWatch;
use tokio::time::Instant as Deadline;

use super::accept::PendingSlot;
use super::conn::{Client, Conn, H2Stream};
use super::{static_answer, Edge};
use crate::admission::Rejection;
use crate::config::Mode;
use crate::core::labels::{Http2Error, NO_ROUTE};
use crate::core::reason::Reason;
use crate::core::shutdown::shutting_down;
use crate::net::answer::Answer;
use crate::net::http1::HeadError;
use crate::net::http2;
use crate::net::peer_cert::PeerCert;

/// Where an HTTP/2 connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving streams.
    Open,
    /// The gateway stops: GOAWAY sent, the open streams closing (1001).
    Stopping,
    /// GOAWAY sent with no streams left: flushing it, bounded in time.
    Closing,
}

/// What a stream's task needs of its connection.
#[derive(Clone)]
struct ConnInfo {
    peer: Option<IpAddr>,
    peer_cert: Option<Arc<PeerCert>>,
    stall_timeout: Duration,
}

/// Which attack class an error that ended a connection belongs to; `None` when the client
/// ended it (its GOAWAY, its socket closing), which is nobody's attack on the gateway.
fn classify(e: &h2::Error) -> Option<Http2Error> {
    if e.is_io() || e.is_remote() {
        return None;
    }
    Some(match e.reason() {
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Http2Error::EnhanceYourCalm,
        Some(h2::Reason::PROTOCOL_ERROR) => Http2Error::Protocol,
        Some(h2::Reason::FLOW_CONTROL_ERROR) => Http2Error::FlowControl,
        Some(h2::Reason::FRAME_SIZE_ERROR) => Http2Error::FrameSize,
        Some(h2::Reason::COMPRESSION_ERROR) => Http2Error::Compression,
        _ => Http2Error::Other,
    })
}

impl Edge {
    /// Serve a connection that chose HTTP/2, until it closes.
    pub(super) async fn serve_h2(
        self: &Arc<Self>,
        conn: Conn,
        first_deadline: Deadline,
        mut shutdown: ShutdownWatch,
    ) {
        let generation = self.in_force.get();
        let config = &generation.config;
        let builder = http2::builder(&config.http2, &config.limits);
        let keepalive = config.limits.keepalive_timeout.0;
        let close_timeout = config.limits.close_timeout.0;
        let (io, peer, peer_cert, pending) = conn.into_http2();
        let (io, signals) = http2::watched(io, &config.http2, &config.limits);
        let info = ConnInfo {
            peer,
            peer_cert,
            stall_timeout: config.http2.send_stall_timeout.0,
        };
        drop(generation);
        let handshake = builder.handshake::<_, Bytes>(io);
        let mut h2 = match tokio::time::timeout_at(first_deadline, handshake).await {
            Ok(Ok(h2)) => h2,
            Ok(Err(e)) => {
                if let Some(class) = classify(&e) {
                    self.report.metrics.http2_error(class);
                }
                return;
            }
            Err(_) => {
                self.report.metrics.http2_error(Http2Error::HeadTimeout);
                return;
            }
        };
        self.report.metrics.http2_connection();
        // A graceful stop waits for this connection to write its streams' closes and GOAWAY.
        let _draining = self.sessions.open_connection();
        // The connection is pending until its first request.
        let mut first = Some(pending);
        let mut phase = Phase::Open;
        let mut check_at = first_deadline;
        loop {
            let next = tokio::select! {
                next = h2.accept() => next,
                _ = signals.stalled.notified(), if phase != Phase::Closing => {
                    // A header block begun and not finished within head_timeout: while it is
                    // open no other frame may come (RFC 9113 section 6.10), so it holds every
                    // stream of the connection. Not a malformed frame but a peer that loads the
                    // server, so ENHANCE_YOUR_CALM (section 7), counted as the whole
                    // connection's head timeout is.
                    log::debug!("HTTP/2 connection from {peer:?}: header block not finished");
                    self.report.metrics.http2_error(Http2Error::HeadTimeout);
                    h2.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                    phase = Phase::Closing;
                    check_at = Deadline::now() + close_timeout;
                    continue;
                }
                _ = signals.flooded.notified(), if phase != Phase::Closing => {
                    // Control frames past the budget: GOAWAY, then close (RFC 9113 section 10.5).
                    log::debug!("HTTP/2 connection from {peer:?}: control frame flood");
                    self.report.metrics.http2_error(Http2Error::EnhanceYourCalm);
                    h2.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                    phase = Phase::Closing;
                    check_at = Deadline::now() + close_timeout;
                    continue;
                }
                _ = shutting_down(&mut shutdown), if phase == Phase::Open => {
                    // GOAWAY; the sessions see the same stop and close with 1001.
                    h2.graceful_shutdown();
                    phase = Phase::Stopping;
                    check_at = Deadline::now() + close_timeout;
                    continue;
                }
                _ = tokio::time::sleep_until(check_at) => {
                    if phase == Phase::Closing {
                        return;
                    }
                    if first.is_some() && phase == Phase::Open {
                        self.report.metrics.http2_error(Http2Error::HeadTimeout);
                    }
                    if first.is_some() || !h2.has_streams() {
                        h2.abrupt_shutdown(h2::Reason::NO_ERROR);
                        phase = Phase::Closing;
                        check_at = Deadline::now() + close_timeout;
                    } else {
                        let every = if phase == Phase::Open { keepalive } else { close_timeout };
                        check_at = Deadline::now() + every;
                    }
                    continue;
                }
            };
            match next {
                Some(Ok((request, respond))) => {
                    if first.take().is_some() && phase == Phase::Open {
                        // From now on the connection is bounded by its idleness.
                        check_at = Deadline::now() + keepalive;
                    }
                    self.h2_stream(request, respond, &info, &shutdown);
                }
                Some(Err(e)) => {
                    if let Some(class) = classify(&e) {
                        log::debug!("HTTP/2 connection from {peer:?} ended: {e}");
                        self.report.metrics.http2_error(class);
                    }
                    return;
                }
                None => return,
            }
        }
    }

    /// Take a stream's request: counted as pending (per client address too) until it reaches
    /// admission, then served in a task of its own. Past a pending cap the stream is refused
    /// (`REFUSED_STREAM`, which a client may retry) and counted as a dropped connection.
    fn h2_stream(
        self: &Arc<Self>,
        request: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        info: &ConnInfo,
        shutdown: &ShutdownWatch,
    ) {
        let generation = self.in_force.get();
        if http2::over_head_limit(&request, generation.config.limits.max_head_bytes) {
            // The same answer as an HTTP/1.1 head over the limit.
            let (status, why) = HeadError::TooLarge.answer().unwrap_or((431, ""));
            let rejection = Rejection::new(Reason::HeadTooLarge, status, format!("{why}\n"));
            self.report
                .rejected(NO_ROUTE, info.peer, "h2", &rejection, Instant::now());
            let head_only = request.method() == http::Method::HEAD;
            let _ = http2::answer(&mut respond, &rejection.answer, head_only);
            return;
        }
        let pending = match self.pending.enter(info.peer, &generation.config.limits) {
            Ok(slot) => slot,
            Err(reason) => {
                self.report.metrics.connection_dropped(reason);
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                return;
            }
        };
        let edge = self.clone();
        let info = info.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            edge.h2_request(request, respond, info, pending, shutdown)
                .await;
        });
    }

    /// One stream's request, as an HTTP/1.1 request goes: route, then a static answer or the
    /// WebSocket handshake.
    async fn h2_request(
        self: Arc<Self>,
        request: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        info: ConnInfo,
        pending: PendingSlot,
        shutdown: ShutdownWatch,
    ) {
        // Each request follows the configuration in force when it starts.
        let generation = self.in_force.get();
        let (parts, recv) = request.into_parts();
        let Some(head) = http2::head_of(&parts) else {
            respond.send_reset(h2::Reason::PROTOCOL_ERROR);
            return;
        };
        drop(parts);
        let head_only = head.method == "HEAD";
        let Some(entry) = generation.router.find(head.path()).cloned() else {
            let answer = if head.wants_websocket() {
                // A WebSocket request to nowhere is a refused handshake.
                let rejection = Rejection::new(Reason::NoRoute, 404, "no route\n");
                self.report
                    .rejected(NO_ROUTE, info.peer, "h2", &rejection, Instant::now());
                rejection.answer
            } else {
                Answer::new(404, "no route\n")
            };
            let _ = http2::answer(&mut respond, &answer, head_only);
            return;
        };
        match entry.route.mode {
            Mode::Static => {
                let answer = static_answer(&entry.route, &head);
                let _ = http2::answer(&mut respond, &answer, head_only);
            }
            Mode::Echo | Mode::Relay => {
                let mut client = Client::Http2(Box::new(H2Stream {
                    respond,
                    recv,
                    send: None,
                    peer: info.peer,
                    peer_cert: info.peer_cert,
                    stall_timeout: info.stall_timeout,
                    pending: Some(pending),
                }));
                client.admitting();
                self.websocket(client, head, &generation, &entry, shutdown)
                    .await;
            }
        }
    }
}
