//! The first phase of a connection: from accept to a complete request head. The whole phase is
//! bounded by `[limits] head_timeout` (TLS included), and connections still in it are capped in
//! total and per client address; past a cap a connection is closed at once and counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use pingora::protocols::Stream;
use prometheus::IntGauge;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use crate::admission::caps::{Caps, Slot};
use crate::config::Limits;
use crate::core::labels::DropReason;
use crate::net::quiet_tls::QuietTls;
use crate::net::server_tls::CertStore;

/// A client's byte stream after TLS (or without it, on a plain `ws://` listener). The TLS
/// state (about 1.2 KB) is boxed so that the futures that move the stream stay small; its
/// buffers are freed while the socket is quiet.
pub(crate) type ClientIo = Either<Stream, Box<QuietTls<TlsStream<Stream>>>>;

/// One public listener as the edge sees it.
pub(crate) struct EdgeListener {
    /// The bound address (a port-0 address resolved to its port).
    pub(crate) address: SocketAddr,
    /// Its TLS settings in force; `None`: plain `ws://` (local development only).
    pub(crate) tls: Option<Arc<CertStore>>,
}

impl EdgeListener {
    /// Whether a connection with this local address came in here.
    fn serves(&self, local: SocketAddr) -> bool {
        self.address.port() == local.port()
            && (self.address.ip().is_unspecified() || self.address.ip() == local.ip())
    }
}

/// The listener a connection arrived on.
pub(crate) fn listener_of(listeners: &[EdgeListener], io: &Stream) -> Option<usize> {
    let local = io
        .get_socket_digest()
        .and_then(|d| d.local_addr().and_then(|a| a.as_inet().copied()))?;
    listeners.iter().position(|l| l.serves(local))
}

/// The socket's peer address.
pub(crate) fn peer_of(io: &Stream) -> Option<IpAddr> {
    io.get_socket_digest().and_then(|d| {
        d.peer_addr()
            .and_then(|a| a.as_inet().map(|inet| inet.ip()))
    })
}

/// The counts of not-yet-admitted connections.
pub(crate) struct Pending {
    total: Arc<Caps<()>>,
    per_ip: Arc<Caps<IpAddr>>,
    /// `portcullis_connections_pending`.
    gauge: IntGauge,
}

/// One connection counted as pending until dropped.
pub(crate) struct PendingSlot {
    _total: Slot,
    _per_ip: Option<Slot>,
    gauge: IntGauge,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Pending {
    pub(crate) fn new(gauge: IntGauge) -> Pending {
        Pending {
            total: Arc::default(),
            per_ip: Arc::default(),
            gauge,
        }
    }

    /// Count a new connection from `peer`, unless a cap is reached.
    pub(crate) fn enter(
        &self,
        peer: Option<IpAddr>,
        limits: &Limits,
    ) -> Result<PendingSlot, DropReason> {
        let per_ip = match peer {
            Some(ip) => Some(
                self.per_ip
                    .acquire(ip, limits.max_pending_per_ip)
                    .ok_or(DropReason::PendingLimitPerIp)?,
            ),
            None => None,
        };
        let total = self
            .total
            .acquire((), limits.max_pending_connections)
            .ok_or(DropReason::PendingLimit)?;
        self.gauge.inc();
        Ok(PendingSlot {
            _total: total,
            _per_ip: per_ip,
            gauge: self.gauge.clone(),
        })
    }
}
