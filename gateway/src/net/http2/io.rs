//! One HTTP/2 stream as the byte stream a WebSocket runs over (RFC 8441 section 5): DATA frames
//! both ways, with HTTP/2's per-stream flow control. What the client sent is released to its
//! window only as the session reads it, so a slow session stalls its own stream and no other
//! (the connection's window covers every stream's, see `config::http2`); what the session
//! writes waits for the client's window, and h2 buffers at most `max_send_buffer_bytes` of it.
//! A window held at zero for `send_stall_timeout` while data waits fails the write, so a client
//! that never reads cannot hold a session (and its slots) for ever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An HTTP/2 stream carrying a WebSocket.
pub(crate) struct StreamIo {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received but not yet read by the session (released to the window as it is read); let go
    /// of once read (see `poll_read`).
    unread: Bytes,
    /// Running while a write waits for window; its end fails the write.
    stall: Option<Pin<Box<Sleep>>>,
    stall_timeout: Duration,
    /// END_STREAM or RST_STREAM was sent.
    ended: bool,
    /// The stream failed (the client reset it, its window stalled): it ends with RST_STREAM.
    failed: bool,
}

impl StreamIo {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        stall_timeout: Duration,
    ) -> StreamIo {
        StreamIo {
            send,
            recv,
            unread: Bytes::new(),
            stall: None,
            stall_timeout,
            ended: false,
            failed: false,
        }
    }
}

/// An h2 error as an I/O error: a stream the client reset reads as a reset connection.
fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into());
    }
    let kind = if e.is_reset() || e.is_go_away() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

impl AsyncRead for StreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.unread = data,
                // END_STREAM: the client's side is closed, read as the end of the stream.
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => {
                    this.failed = true;
                    return Poll::Ready(Err(io_error(e)));
                }
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        if this.unread.is_empty() {
            // h2's DATA payloads are slices of the connection's 8 KiB read buffers: an empty
            // slice kept here would pin one of them for as long as the stream stays quiet.
            this.unread = Bytes::new();
        }
        // Only now may the client send this much more on this stream.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StreamIo {
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
        // Window already granted is used at once; h2 signals only increases of it.
        let available = this.send.capacity();
        let polled = if available > 0 {
            Poll::Ready(Some(Ok(available)))
        } else {
            this.send.poll_capacity(cx)
        };
        let granted = match polled {
            Poll::Ready(Some(Ok(n))) => n,
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                return Poll::Ready(Err(io_error(e)));
            }
            Poll::Ready(None) => {
                this.failed = true;
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            Poll::Pending => {
                let timeout = this.stall_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(stall.as_mut().poll(cx));
                this.stall = None;
                this.failed = true;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client's HTTP/2 window stayed closed",
                )));
            }
        };
        this.stall = None;
        let n = granted.min(buf.len());
        if let Err(e) = this
            .send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
        {
            this.failed = true;
            return Poll::Ready(Err(io_error(e)));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2's connection task writes what is queued; nothing waits here.
        Poll::Ready(Ok(()))
    }

    /// After the WebSocket closing handshake: END_STREAM (RFC 8441 section 5).
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ended {
            this.ended = true;
            this.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

/// How a stream ends when its session lets go of it (RFC 8441 section 5, as TCP's FIN and RST
/// end an HTTP/1.1 socket): after a session that ended on its own (the close handshake, or its
/// close frame for an error), END_STREAM (h2 then resets the client's half with `NO_ERROR`,
/// as RFC 9113 section 8.1 has a server that needs no more of the request do); a stream that
/// failed is reset with `CANCEL`.
impl Drop for StreamIo {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if self.failed {
            self.send.send_reset(h2::Reason::CANCEL);
        } else {
            let _ = self.send.send_data(Bytes::new(), true);
        }
    }
}
