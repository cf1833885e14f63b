//! One client connection as the edge holds it after TLS: the stream, the bytes read past the
//! last request head (a pipelined request, or the first WebSocket frames), the peer's address,
//! its verified client certificate, and its place among the not-yet-admitted connections.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio_util::either::Either;

use super::accept::{ClientIo, PendingSlot};
use crate::net::peer_cert::PeerCert;

/// A client connection.
pub(crate) struct Conn {
    pub(crate) io: ClientIo,
    /// Bytes read but not yet used.
    pub(crate) buf: BytesMut,
    /// The socket's peer (not yet trusted-proxy aware).
    pub(crate) peer: Option<IpAddr>,
    /// The client certificate the listener verified (listeners with `client_ca`).
    pub(crate) peer_cert: Option<Arc<PeerCert>>,
    /// Held until the connection reaches admission (or ends).
    pending: Option<PendingSlot>,
}

impl Conn {
    pub(crate) fn new(io: ClientIo, peer: Option<IpAddr>, pending: PendingSlot) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            peer,
            peer_cert: None,
            pending: Some(pending),
        }
    }

    /// Read the identity of the certificate the TLS verifier accepted, if the client sent one.
    /// An unreadable one (the verifier accepted it, so this is rare) counts as none, logged.
    pub(crate) fn read_peer_cert(&mut self) {
        let Either::Right(tls) = &self.io else { return };
        let Some(der) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
            return;
        };
        match PeerCert::from_der(der) {
            Ok(cert) => self.peer_cert = Some(Arc::new(cert)),
            Err(e) => log::warn!("client {:?}: {e}; treated as no certificate", self.peer),
        }
    }

    /// Whether the client reached us over TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.io, Either::Right(_))
    }

    /// The connection has sent a complete WebSocket head: it no longer counts as pending.
    pub(crate) fn admitting(&mut self) {
        self.pending = None;
    }

    /// The stream and the bytes read past the head, for the WebSocket layer. The head buffer
    /// (up to `max_head_bytes` of capacity) is freed instead of living as long as the socket.
    pub(crate) fn into_parts(self) -> (ClientIo, Vec<u8>) {
        (self.io, self.buf.to_vec())
    }
}
