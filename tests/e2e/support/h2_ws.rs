//! The client's side of an HTTP/2 extended CONNECT stream (RFC 8441) as the byte stream a
//! WebSocket client runs over: DATA frames both ways, the window released as it is read, writes
//! waiting for the gateway's window. Shared by the e2e tests and the benchmark's HTTP/2 phase
//! (`bench/src/http2.rs`, which includes this file by path).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct H2Ws {
    send: SendStream<Bytes>,
    recv: RecvStream,
    unread: Bytes,
}

impl H2Ws {
    /// The stream of a request answered `200`: its send half and the response's body.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> H2Ws {
        H2Ws {
            send,
            recv,
            unread: Bytes::new(),
        }
    }
}

impl std::fmt::Debug for H2Ws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "H2Ws({:?})", self.send.stream_id())
    }
}

fn h2_io(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

impl AsyncRead for H2Ws {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.unread = data,
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Ws {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(buf.len());
        let n = match this.send.capacity() {
            0 => match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            },
            n => n,
        };
        let n = n.min(buf.len());
        this.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(h2_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// END_STREAM: the client's side of the stream is done.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.get_mut().send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}
