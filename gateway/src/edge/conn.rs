//! One client connection as the edge holds it: the stream, the bytes read past the last request
//! head (a pipelined request, or the first WebSocket frames), and the peer's address.

use std::net::IpAddr;

use bytes::BytesMut;
use pingora::protocols::Stream;

/// A client connection.
pub(crate) struct Conn {
    pub(crate) io: Stream,
    /// Bytes read but not yet used.
    pub(crate) buf: BytesMut,
    /// The socket's peer (not yet trusted-proxy aware).
    pub(crate) peer: Option<IpAddr>,
}

impl Conn {
    pub(crate) fn new(io: Stream) -> Conn {
        let peer = io.get_socket_digest().and_then(|d| {
            d.peer_addr()
                .and_then(|a| a.as_inet().map(|inet| inet.ip()))
        });
        Conn {
            io,
            buf: BytesMut::new(),
            peer,
        }
    }

    /// Whether the client reached us over TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.io.get_ssl_digest().is_some()
    }

    /// The stream and the bytes read past the head, for the WebSocket layer. The head buffer
    /// (up to `max_head_bytes` of capacity) is freed instead of living as long as the socket.
    pub(crate) fn into_parts(self) -> (Stream, Vec<u8>) {
        (self.io, self.buf.to_vec())
    }
}
