//! One client connection as the edge holds it after TLS: the stream, the bytes read past the
//! last request head (a pipelined request, or the first WebSocket frames), the peer's address,
//! its verified client certificate, and its place among the not-yet-admitted connections.
//! A WebSocket request's client side is a [`Client`] whichever HTTP carried it: an HTTP/1.1
//! connection, or one stream of an HTTP/2 connection; the handshake answers it, and the session
//! runs over its [`ClientSocket`], without knowing which.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::either::Either;

use super::accept::{ClientIo, PendingSlot};
use crate::net::answer::Answer;
use crate::net::http2::{self, io::StreamIo};
use crate::net::peer_cert::PeerCert;
use crate::net::server_tls::ALPN_H2;
use crate::net::websocket::answer::switching_protocols;

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

    /// Whether the client chose HTTP/2 by ALPN (offered only by listeners with `http2`).
    pub(crate) fn chose_http2(&self) -> bool {
        let Either::Right(tls) = &self.io else {
            return false;
        };
        tls.get_ref().1.alpn_protocol() == Some(ALPN_H2)
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

    /// The connection becomes an HTTP/2 connection: its stream, peer, certificate and pending
    /// slot (held until its first request). Bytes already read belong to the HTTP/2 preface
    /// and go first.
    pub(crate) fn into_http2(
        self,
    ) -> (ClientIo, Option<IpAddr>, Option<Arc<PeerCert>>, PendingSlot) {
        let pending = self.pending.expect("a new connection is pending");
        (self.io, self.peer, self.peer_cert, pending)
    }
}

/// One HTTP/2 stream with a WebSocket request (extended CONNECT), before its answer.
pub(crate) struct H2Stream {
    pub(crate) respond: SendResponse<Bytes>,
    pub(crate) recv: RecvStream,
    /// Sent the `200`: the stream's sending half.
    pub(crate) send: Option<SendStream<Bytes>>,
    pub(crate) peer: Option<IpAddr>,
    pub(crate) peer_cert: Option<Arc<PeerCert>>,
    /// `[http2] send_stall_timeout`.
    pub(crate) stall_timeout: Duration,
    /// This stream's request among the not-yet-admitted.
    pub(crate) pending: Option<PendingSlot>,
}

/// A WebSocket request's client side, whichever HTTP carried it.
pub(crate) enum Client {
    Http1(Conn),
    Http2(Box<H2Stream>),
}

impl Client {
    pub(crate) fn peer(&self) -> Option<IpAddr> {
        match self {
            Client::Http1(c) => c.peer,
            Client::Http2(s) => s.peer,
        }
    }

    pub(crate) fn peer_cert(&self) -> Option<&PeerCert> {
        match self {
            Client::Http1(c) => c.peer_cert.as_deref(),
            Client::Http2(s) => s.peer_cert.as_deref(),
        }
    }

    /// Whether the client reached us over TLS (HTTP/2 is served over TLS only).
    pub(crate) fn is_tls(&self) -> bool {
        match self {
            Client::Http1(c) => c.is_tls(),
            Client::Http2(_) => true,
        }
    }

    /// `h1` or `h2`, as the access log and the metrics say it.
    pub(crate) fn protocol(&self) -> &'static str {
        match self {
            Client::Http1(_) => "h1",
            Client::Http2(_) => "h2",
        }
    }

    /// The status that opens the WebSocket: `101` on HTTP/1.1, `200` on an HTTP/2 stream
    /// (RFC 8441 section 5).
    pub(crate) fn opened_status(&self) -> u16 {
        match self {
            Client::Http1(_) => 101,
            Client::Http2(_) => 200,
        }
    }

    /// The HTTP version as the trace conventions name it (`network.protocol.version`).
    pub(crate) fn http_version(&self) -> &'static str {
        match self {
            Client::Http1(_) => "1.1",
            Client::Http2(_) => "2",
        }
    }

    /// The request has reached admission: it no longer counts as pending.
    pub(crate) fn admitting(&mut self) {
        match self {
            Client::Http1(c) => c.admitting(),
            Client::Http2(s) => s.pending = None,
        }
    }

    /// Answer with a refusal; the connection (HTTP/1.1) or the stream (HTTP/2) ends with it.
    pub(crate) async fn refuse(&mut self, answer: &Answer) {
        match self {
            Client::Http1(c) => {
                let _ = answer.write(&mut c.io, false, false).await;
            }
            Client::Http2(s) => {
                let _ = http2::answer(&mut s.respond, answer, false);
            }
        }
    }

    /// Open the WebSocket: the `101` on HTTP/1.1 (with `accept`), the `200` on an HTTP/2
    /// stream; with the subprotocol and extension agreed. `false`: the client is gone.
    pub(crate) async fn open(
        &mut self,
        accept: Option<&str>,
        protocol: Option<&str>,
        extension: Option<&str>,
    ) -> bool {
        match self {
            Client::Http1(c) => {
                let response = switching_protocols(accept.unwrap_or_default(), protocol, extension);
                c.io.write_all(&response).await.is_ok() && c.io.flush().await.is_ok()
            }
            Client::Http2(s) => {
                match http2::websocket_opened(&mut s.respond, protocol, extension) {
                    Ok(send) => {
                        s.send = Some(send);
                        true
                    }
                    Err(_) => false,
                }
            }
        }
    }

    /// The byte stream the session runs over, and the bytes the client already sent on it.
    pub(crate) fn into_socket(self) -> (ClientSocket, Vec<u8>) {
        match self {
            Client::Http1(c) => {
                let (io, early) = c.into_parts();
                (ClientSocket::Http1(io), early)
            }
            Client::Http2(s) => {
                let s = *s;
                let send = s.send.expect("the stream was opened");
                let io = StreamIo::new(send, s.recv, s.stall_timeout);
                (ClientSocket::Http2(Box::new(io)), Vec::new())
            }
        }
    }
}

/// The byte stream under a client's WebSocket: an HTTP/1.1 connection, or an HTTP/2 stream
/// (boxed: an idle HTTP/1.1 socket stays as small as before).
pub(crate) enum ClientSocket {
    Http1(ClientIo),
    Http2(Box<StreamIo>),
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Http1(io) => Pin::new(io).poll_read(cx, buf),
            ClientSocket::Http2(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientSocket::Http1(io) => Pin::new(io).poll_write(cx, buf),
            ClientSocket::Http2(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientSocket::Http1(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            ClientSocket::Http2(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientSocket::Http1(io) => io.is_write_vectored(),
            ClientSocket::Http2(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Http1(io) => Pin::new(io).poll_flush(cx),
            ClientSocket::Http2(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Http1(io) => Pin::new(io).poll_shutdown(cx),
            ClientSocket::Http2(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
