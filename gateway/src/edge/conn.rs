//! One client connection as the edge holds it after TLS: the stream, the bytes read past the
//! last request head (a pipelined request, or the first WebSocket frames), the peer's address,
//! and its place among the not-yet-admitted connections.

use std::net::IpAddr;

use bytes::BytesMut;
use tokio_util::either::Either;

use super::accept::{ClientIo, PendingSlot};

/// A client connection.
pub(crate) struct Conn {
    pub(crate) io: ClientIo,
    /// Bytes read but not yet used.
    pub(crate) buf: BytesMut,
    /// The socket's peer (not yet trusted-proxy aware).
    pub(crate) peer: Option<IpAddr>,
    /// Held until the connection reaches admission (or ends).
    pending: Option<PendingSlot>,
}

impl Conn {
    pub(crate) fn new(io: ClientIo, peer: Option<IpAddr>, pending: PendingSlot) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            peer,
            pending: Some(pending),
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
