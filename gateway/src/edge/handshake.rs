//! A WebSocket request on an echo or relay route: admission, then for relays the upstream
//! FIRST (a failure is a `502`/`504` or the upstream's own refusal, never a `101` then a close),
//! then the `101` with the negotiated subprotocol, then the session, then its report.
//!
//! The session runs as a task of its own ([`Held::spawn`]): once the `101` is out, pingora's
//! connection task and the handshake's state (the request head, admission's futures, the
//! upstream connect) are gone, and an open socket keeps only its streams, its
//! [`SessionContext`] and what [`Held`] lists. That is most of what an idle socket costs.

use std::future::Future;

use futures_util::FutureExt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use pingora::server::ShutdownWatch;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::conn::Client;
use super::generation::Generation;
use super::report::Who;
use super::route::RouteEntry;
use super::Edge;
use crate::admission::caps::Permit;
use crate::admission::{self, not_revoked, Admitted, Rejection};
use crate::config::{Mode, Route};
use crate::core::end::{EndReason, SessionEnd};
use crate::core::reason::Reason;
use crate::core::shutdown::shutting_down;
use crate::net::http1::RequestHead;
use crate::net::websocket::deflate::{self, Agreed, Offer};
use crate::obs::access_log::RelayRecord;
use crate::obs::metrics::OpenSession;
use crate::obs::trace::{HandshakeSpan, SessionLink};
use crate::relay::RelayRoute;
use crate::session::control::Control;
use crate::session::count::SessionGuard;
use crate::session::deflate::Translate;
use crate::session::guard::{Expiry, Guard, Rates};
use crate::session::registry::{Registered, SessionInfo};
use crate::session::relay::RelayOptions;
use crate::session::settings::SessionSettings;
use crate::session::stop::StopSignal;
use crate::session::{self, echo, SessionContext};

/// One WebSocket handshake in the edge, from its request head to its `101` or refusal: the
/// connection, the route and its configuration generation, and who is asking.
struct Handshake<'g> {
    edge: &'g Arc<Edge>,
    /// The client's side: an HTTP/1.1 connection or an HTTP/2 stream.
    front: Client,
    generation: &'g Generation,
    entry: &'g RouteEntry,
    /// The client address (trusted-proxy aware).
    client: Option<IpAddr>,
    started: Instant,
    shutdown: ShutdownWatch,
    /// Its span, ended when the `101` or the refusal is written (`None`: not traced).
    trace: Option<HandshakeSpan>,
}

impl Handshake<'_> {
    fn route(&self) -> &str {
        &self.entry.route.path
    }

    fn settings(&self) -> &SessionSettings {
        &self.entry.session
    }

    /// Answer with a refusal: counted and logged first, so whoever sees the answer also finds
    /// it in the metrics and the log.
    async fn refuse(&mut self, rejection: &Rejection) {
        let route = &self.entry.route.path;
        self.edge.report.rejected(
            route,
            self.client,
            self.front.protocol(),
            rejection,
            self.started,
        );
        self.front.refuse(&rejection.answer).await;
        if let Some(span) = self.trace.take() {
            span.refused(rejection.answer.status, rejection.reason.as_str());
        }
    }
}

/// What admission gave a handshake it let in, and what the `101` says.
struct Accepted {
    admitted: Admitted,
    /// The connection slots admission took; the session holds them to its end.
    permit: Permit,
    /// `Sec-WebSocket-Accept` (HTTP/1.1 only).
    accept: Option<String>,
    /// permessage-deflate as agreed with the client, and the answer's extension header.
    deflate: Option<(Agreed, String)>,
}

/// What an open session holds until it ends, besides its streams and its [`SessionContext`]:
/// the slots admission gave it, its registry entry, its place in the open-session counts, and
/// who it was (for its report). Dropping it, however the session ends, gives all of them back.
struct Held {
    edge: Arc<Edge>,
    route: Arc<Route>,
    who: Who,
    /// Counted for the graceful stop and in `portcullis_connections_open`.
    _counted: SessionGuard,
    metrics: OpenSession,
    _registered: Registered,
    _permit: Permit,
    /// The handshake's span, for the session's (boxed: most sessions are not traced).
    trace: Option<Box<SessionLink>>,
}

impl Held {
    /// Run `session` as a task of its own, and report how it ended. The task's future is the
    /// session's own future, mapped: an `async` block around it would keep the moved-in future
    /// beside the one it awaits, and an idle socket would hold both. (Pass the session's future
    /// itself too, mapped with combinators rather than wrapped in a block, for the same reason.)
    fn spawn<F>(self, session: F)
    where
        F: Future<Output = (SessionEnd, Option<RelayEnded>)> + Send + 'static,
    {
        tokio::spawn(session.map(move |(end, relay)| {
            // The whole of `self` moves in (a field-by-field capture would drop the guards now).
            let mut held = self;
            let record = relay.as_ref().map(|r| RelayRecord {
                upstream: r.relay.upstreams[r.upstream].label(),
                end_reason: r.reason,
                upstream_close_code: r.upstream_close_code,
            });
            held.edge.report.session_ended(
                &held.route.path,
                &held.who,
                &end,
                held.metrics.elapsed(),
                record,
                held.trace.take(),
            );
        }));
    }
}

/// The echo route's prefix, held through the route itself (the session task owns what it reads).
struct EchoPrefix(Arc<Route>);

impl AsRef<str> for EchoPrefix {
    fn as_ref(&self) -> &str {
        self.0.echo_prefix()
    }
}

/// What a relayed session adds to its report.
struct RelayEnded {
    relay: Arc<RelayRoute>,
    /// The upstream's index in the route's list.
    upstream: usize,
    reason: EndReason,
    upstream_close_code: Option<u16>,
}

impl Edge {
    /// Admission, the 101, then the session; traced with `[tracing]`.
    pub(super) async fn websocket(
        self: &Arc<Self>,
        client: Client,
        head: RequestHead,
        generation: &Generation,
        entry: &RouteEntry,
        shutdown: ShutdownWatch,
    ) {
        let trace = HandshakeSpan::start(
            &entry.route.path,
            client.http_version(),
            &head.method,
            head.path(),
            head.tls,
            client.peer(),
            &head.headers,
        );
        let scope = HandshakeSpan::scope(trace.as_ref());
        let handshake = self.handshake(client, head, generation, entry, shutdown, trace);
        scope.run(handshake).await
    }

    async fn handshake(
        self: &Arc<Self>,
        client: Client,
        head: RequestHead,
        generation: &Generation,
        entry: &RouteEntry,
        shutdown: ShutdownWatch,
        trace: Option<HandshakeSpan>,
    ) {
        let started = Instant::now();
        let stopping = *shutdown.borrow();
        let decision = generation
            .admission
            .decide(admission::Request {
                head: &head,
                route: &entry.route,
                peer: client.peer(),
                peer_cert: client.peer_cert(),
                stopping,
            })
            .await;
        let mut hs = Handshake {
            edge: self,
            front: client,
            generation,
            entry,
            client: decision.client,
            started,
            shutdown,
            trace,
        };
        if let Some(span) = &hs.trace {
            span.client(decision.client);
        }
        let admit = match decision.verdict {
            Ok(admit) => admit,
            Err(rejection) => return hs.refuse(&rejection).await,
        };
        let deflate = deflate::accept(
            &admit.upgrade.offered_extensions,
            &entry.session.compression,
        );
        let accepted = Accepted {
            admitted: admit.admitted,
            permit: admit.permit,
            accept: admit.upgrade.accept,
            deflate,
        };
        match entry.route.mode {
            Mode::Relay => self.relay(hs, head, accepted).await,
            _ => {
                drop(head);
                self.echo(hs, accepted).await
            }
        }
    }

    /// Register the session, then write the `101` (with the chosen subprotocol and the agreed
    /// extension) and count the handshake. The session is registered before the client can see
    /// the 101, so an operator who sees the socket open can also find and close it; and a
    /// revocation made while the handshake was in flight is honoured here (refused with 401)
    /// rather than missed. On success the session is counted for the graceful stop and in the
    /// metrics until [`Held`] drops.
    async fn switch_protocols(
        self: &Arc<Self>,
        hs: &mut Handshake<'_>,
        a: Accepted,
        upstream: Option<&str>,
        protocol: Option<&str>,
    ) -> Option<(Held, SessionContext)> {
        let registered = self.register(hs, &a.admitted, upstream, protocol);
        if let Err(rejection) = not_revoked(a.admitted.subject.as_deref(), a.admitted.jti()) {
            hs.refuse(&rejection).await;
            return None;
        }
        let extension = a.deflate.as_ref().map(|(_, header)| header.as_str());
        // Counted for the graceful stop before the client can see the 101, so that a stop
        // signalled right after it still waits for this session.
        let counted = self.sessions.open();
        let written = hs
            .front
            .open(a.accept.as_deref(), protocol, extension)
            .await;
        let opened = hs.front.opened_status();
        let trace = hs
            .trace
            .take()
            .and_then(|span| span.switched(opened, written));
        let protocol_label = hs.front.protocol();
        let metrics = self
            .report
            .switched(hs.route(), protocol_label, written, hs.started)?;
        let ctx = self.session_context(hs, &a.admitted, &registered);
        let held = Held {
            edge: self.clone(),
            route: hs.entry.route.clone(),
            who: Who {
                client: hs.client,
                protocol: protocol_label,
                subject: a.admitted.subject,
                cluster_fallback: a.admitted.cluster_fallback,
                extension: a.deflate.map(|(agreed, _)| agreed),
            },
            _counted: counted,
            metrics,
            _registered: registered,
            _permit: a.permit,
            trace: trace.map(Box::new),
        };
        Some((held, ctx))
    }

    /// Put an open session in the registry (the admin API lists and closes it from there).
    fn register(
        &self,
        hs: &Handshake<'_>,
        admitted: &Admitted,
        upstream: Option<&str>,
        subprotocol: Option<&str>,
    ) -> Registered {
        self.registry.register(SessionInfo {
            route: hs.entry.route.clone(),
            subject: admitted.subject.clone(),
            jti: admitted.jti().map(String::from),
            client: hs.client,
            upstream: upstream.map(String::from),
            subprotocol: subprotocol.map(String::from),
            protocol: hs.front.protocol(),
        })
    }

    /// What every session gets from the edge: stop signal, close timeout, the client-side
    /// policy, expiry, meter, and its registry entry's counters and close signal.
    fn session_context(
        &self,
        hs: &Handshake<'_>,
        admitted: &Admitted,
        registered: &Registered,
    ) -> SessionContext {
        let settings = hs.settings();
        SessionContext {
            stop: StopSignal::new(
                hs.shutdown.clone(),
                hs.entry.removed(),
                settings.drain_window,
            ),
            close_timeout: settings.close_timeout,
            inbound: Guard::new(settings.client_max, settings.rates),
            expiry: Expiry::at(admitted.expires_at),
            meter: self.report.metrics.meter(hs.route()),
            counters: registered.counters.clone(),
            control: Control::new(registered.close.clone(), settings.max_session_duration),
        }
    }

    /// The local echo. It speaks any subprotocol: it picks the client's first (never a token
    /// entry), since browsers fail a handshake that offered protocols and got none back.
    async fn echo(self: &Arc<Self>, mut hs: Handshake<'_>, a: Accepted) {
        let protocol = a.admitted.protocols.first().cloned();
        let route = hs.entry.route.clone();
        let settings = hs.settings();
        let config = settings.client_ws.compressed_messages(a.deflate.is_some());
        let translate = a
            .deflate
            .as_ref()
            .map(|(agreed, _)| Translate::echo(agreed, &settings.compression))
            .unwrap_or_default();
        let Some((held, ctx)) = self
            .switch_protocols(&mut hs, a, None, protocol.as_deref())
            .await
        else {
            return;
        };
        let (io, early) = hs.front.into_socket();
        // Frames the client sent right behind its head are kept.
        let ws = WebSocketStream::from_partially_read(io, early, Role::Server, Some(config)).await;
        held.spawn(echo::run(ws, EchoPrefix(route), ctx, translate).map(|end| (end, None)));
    }

    /// A relay route: connect and handshake upstream first, then the `101` with the upstream's
    /// subprotocol, then the frames both ways.
    async fn relay(self: &Arc<Self>, mut hs: Handshake<'_>, head: RequestHead, a: Accepted) {
        let Some(relay) = hs.generation.relays.get(hs.route()).cloned() else {
            let rejection = Rejection::new(Reason::UpstreamUnavailable, 502, "no upstream\n");
            return hs.refuse(&rejection).await;
        };
        let settings = hs.settings();
        let client_config = settings.client_ws.compressed_messages(a.deflate.is_some());
        let client_deflate = a.deflate.as_ref().map(|(agreed, _)| *agreed);
        let offer = Offer::new(&settings.compression, client_deflate.as_ref());
        let connect = relay.connect(
            &head,
            &a.admitted,
            hs.front.is_tls(),
            offer.as_ref(),
            settings.upstream_ws,
        );
        let mut shutdown = hs.shutdown.clone();
        let connected = tokio::select! {
            c = connect => c,
            _ = shutting_down(&mut shutdown) => {
                let rejection = Rejection::new(Reason::ShuttingDown, 503, "shutting down\n");
                return hs.refuse(&rejection).await;
            }
        };
        let connected = match connected {
            Ok(c) => c,
            Err(e) => return hs.refuse(&e.rejection()).await,
        };
        drop(head);
        let upstream = connected.upstream;
        let settings = hs.settings();
        let (to_upstream, to_client) = Translate::relay(
            client_deflate.as_ref(),
            connected.switched.deflate.as_ref(),
            &settings.compression,
        );
        let timers = settings.relay.expect("a relay route has relay settings");
        let opts = RelayOptions {
            outbound: Guard::new(settings.upstream_max, Rates::default()),
            ping_interval: timers.ping_interval,
            ping_timeout: timers.ping_timeout,
            idle_timeout: timers.idle_timeout,
            to_upstream,
            to_client,
        };
        let Some((held, ctx)) = self
            .switch_protocols(
                &mut hs,
                a,
                Some(relay.upstreams[upstream].label()),
                connected.switched.protocol.as_deref(),
            )
            .await
        else {
            return;
        };
        let (io, early) = hs.front.into_socket();
        let client_ws =
            WebSocketStream::from_partially_read(io, early, Role::Server, Some(client_config))
                .await;
        let active = connected.active;
        let session = session::relay::run(client_ws, connected.ws, ctx, opts);
        held.spawn(session.map(move |end| {
            // The upstream's least-connections count lasts as long as the session.
            drop(active);
            let relayed = RelayEnded {
                relay,
                upstream,
                reason: end.reason,
                upstream_close_code: end.upstream_close_code,
            };
            (end.session, Some(relayed))
        }));
    }
}
