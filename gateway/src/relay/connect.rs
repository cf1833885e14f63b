//! Connecting to an upstream: TCP, TLS for `wss://`, then the WebSocket handshake, under one
//! deadline; trying the next upstream after a failure and taking a failing one out of the
//! rotation for `unhealthy_for`.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

use super::balance::key;
use super::error::ConnectError;
use super::forward::Refused;
use super::upstream::ActiveGuard;
use super::RelayRoute;
use crate::admission::Admitted;
use crate::core::url::Url;
use crate::net::http1::RequestHead;
use crate::net::quiet_tls::QuietTls;
use crate::net::websocket::deflate::Offer;
use crate::net::websocket::upstream::{self, Switched};
use crate::obs::metrics::Metrics;
use crate::obs::trace;

/// The upstream byte stream: plain TCP, or rustls over TCP (boxed: it is large, and an idle
/// plain socket should not pay for it).
pub(crate) type UpstreamStream = Either<TcpStream, Box<QuietTls<TlsStream<TcpStream>>>>;

/// A connected, handshaken upstream.
pub(crate) struct Connected {
    pub(crate) ws: WebSocketStream<UpstreamStream>,
    /// What the upstream's `101` agreed: its subprotocol (one of those offered, or none) and
    /// permessage-deflate.
    pub(crate) switched: Switched,
    /// Index of the upstream in the route's list.
    pub(crate) upstream: usize,
    /// Counts the socket on its upstream (least connections) for as long as it lives.
    pub(crate) active: ActiveGuard,
}

impl RelayRoute {
    /// Connect to an upstream and complete its WebSocket handshake: the first available one in
    /// balancing order (for `balance = "hash"`, the order of the key read from the admitted
    /// handshake), trying the next after a connection failure (up to
    /// [`super::balance::MAX_ATTEMPTS`]). A failing upstream is taken out of the rotation for
    /// `unhealthy_for`; one that refuses the upgrade answers the client itself.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        head: &RequestHead,
        admitted: &Admitted,
        client_tls: bool,
        offer: Option<&Offer>,
        config: WebSocketConfig,
    ) -> Result<Connected, ConnectError> {
        let protocols = self.forwarding.offered_protocols(admitted);
        let key = match self.wants_key() {
            true => key::of(
                &self.balancing.hash_key,
                head,
                admitted,
                self.forwarding.policy_headers(),
            ),
            false => None,
        };
        let metrics = Metrics::global();
        if self.wants_key() && key.is_none() {
            metrics.hash_key_missing(&self.path);
        }
        let choice = self.choose(key.as_deref());
        if let Some(&first) = choice.order.first() {
            metrics.upstream_selected(self.upstreams[first].label(), choice.reason);
        }
        let mut last = ConnectError::NoneAvailable;
        for index in choice.order {
            let upstream = &self.upstreams[index];
            let request = self
                .forwarding
                .request(&upstream.url, head, admitted, client_tls)
                .map_err(|e| match e {
                    Refused::Identity(claim) => ConnectError::Identity(claim),
                    Refused::Local(why) => ConnectError::Local(why),
                })?;
            // Counted from the start, so concurrent handshakes spread under least-connections.
            let active = upstream.hold();
            let started = Instant::now();
            let bounded = async {
                tokio::time::timeout(
                    self.settings.connect_timeout,
                    self.handshake(&upstream.url, &request, &protocols, offer, config),
                )
                .await
                .unwrap_or(Err(ConnectError::Timeout))
            };
            // The attempt's span, a timeout included (its error is the span's).
            let attempt = trace::step("upstream.connect", upstream.label(), bounded).await;
            metrics.upstream_connect(
                upstream.label(),
                attempt.as_ref().map(|_| ()).map_err(ConnectError::kind),
                started.elapsed(),
            );
            let error = match attempt {
                Ok((ws, switched)) => {
                    upstream.succeeded();
                    return Ok(Connected {
                        ws,
                        switched,
                        upstream: index,
                        active,
                    });
                }
                Err(e) if e.is_refusal() => {
                    // The upstream is up and said no: its answer goes to the client as it is.
                    log::info!("upstream {} {e}", upstream.label());
                    return Err(e);
                }
                Err(e) => e,
            };
            match &error {
                ConnectError::Timeout => log::warn!(
                    "upstream {} timed out after {:.1}s; out of rotation for {:.1}s",
                    upstream.label(),
                    self.settings.connect_timeout.as_secs_f64(),
                    self.settings.unhealthy_for.as_secs_f64()
                ),
                other => log::warn!(
                    "upstream {} failed: {other}; out of rotation for {:.1}s",
                    upstream.label(),
                    self.settings.unhealthy_for.as_secs_f64()
                ),
            }
            upstream.eject(self.settings.unhealthy_for);
            last = error;
        }
        Err(last)
    }

    /// TCP, TLS when `wss://`, then the WebSocket handshake (not bounded here; see `connect`).
    async fn handshake(
        &self,
        url: &Url,
        request: &http::Request<()>,
        protocols: &[String],
        offer: Option<&Offer>,
        config: WebSocketConfig,
    ) -> Result<(WebSocketStream<UpstreamStream>, Switched), ConnectError> {
        let stream = self.transport(url).await?;
        upstream::handshake(stream, request, protocols, offer, config)
            .await
            .map_err(ConnectError::from_handshake)
    }

    /// A TCP connection, wrapped in TLS for `wss://`.
    pub(crate) async fn transport(&self, url: &Url) -> Result<UpstreamStream, ConnectError> {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(ConnectError::Connect)?;
        let _ = tcp.set_nodelay(true);
        if !url.tls() {
            return Ok(Either::Left(tcp));
        }
        let connector = self
            .tls
            .as_ref()
            .ok_or_else(|| ConnectError::Local("no TLS settings".into()))?;
        let name = match &self.sni {
            Some(name) => name.clone(),
            None => ServerName::try_from(url.host.clone())
                .map_err(|_| ConnectError::Local(format!("invalid TLS name {:?}", url.host)))?,
        };
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(ConnectError::Tls)?;
        Ok(Either::Right(Box::new(QuietTls::new(tls))))
    }
}
