//! An HTTP/2 connection's bytes (after TLS) as h2 reads and writes them, watched on the way:
//! the client's frames spend from the control-frame budget ([`flood`](super::flood)), whose end
//! is signalled to the connection's task (which ends it with GOAWAY `ENHANCE_YOUR_CALM`), and
//! the header-list limit h2's first SETTINGS frame announces is the configured one, while h2
//! itself enforces a ceiling above it so that the gateway measures, refuses and counts a header
//! list over the limit as it does an HTTP/1.1 head (see [`super::over_head_limit`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::flood::{ControlBudget, FrameWalker};

/// `SETTINGS_MAX_HEADER_LIST_SIZE` (RFC 9113 section 6.5.2).
const MAX_HEADER_LIST_SIZE: u16 = 0x6;
const SETTINGS: u8 = 0x4;

/// Where h2's first SETTINGS frame is.
#[derive(Debug)]
enum Announce {
    /// Not written yet: the header-list limit to announce in it.
    Pending(u32),
    /// Being written as patched, so far up to the offset.
    Writing(Vec<u8>, usize),
    Done,
}

/// The connection's I/O, watched.
pub(crate) struct ConnectionIo<T> {
    inner: T,
    walker: FrameWalker,
    budget: ControlBudget,
    /// Told once the budget is spent.
    flooded: Arc<Notify>,
    /// The budget was spent: nothing more is read, the connection is ending.
    over: bool,
    announce: Announce,
}

impl<T> ConnectionIo<T> {
    /// `control_rate`: `[http2] max_control_frames_per_second`; `announce`: the header-list
    /// limit to announce. `flooded` is told when the client spends its budget.
    pub(crate) fn new(inner: T, control_rate: u32, announce: u32) -> (Self, Arc<Notify>) {
        let flooded = Arc::new(Notify::new());
        let io = ConnectionIo {
            inner,
            walker: FrameWalker::client(),
            budget: ControlBudget::new(control_rate, Instant::now()),
            flooded: flooded.clone(),
            over: false,
            announce: Announce::Pending(announce),
        };
        (io, flooded)
    }
}

/// h2's SETTINGS frame, whole at the start of `buf`, with `SETTINGS_MAX_HEADER_LIST_SIZE` set to
/// `value`; `None` if `buf` does not start with a whole SETTINGS frame.
fn announcing(buf: &[u8], value: u32) -> Option<Vec<u8>> {
    let header = buf.get(..9)?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    if header[3] != SETTINGS || header[4] != 0 || len % 6 != 0 {
        return None;
    }
    let mut frame = buf.get(..9 + len)?.to_vec();
    for setting in frame[9..].chunks_exact_mut(6) {
        if u16::from_be_bytes([setting[0], setting[1]]) == MAX_HEADER_LIST_SIZE {
            setting[2..].copy_from_slice(&value.to_be_bytes());
        }
    }
    Some(frame)
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnectionIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.over {
            // The connection's task ends it (GOAWAY, then close, bounded in time).
            return Poll::Pending;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let budget = &mut this.budget;
        let mut over = false;
        this.walker.feed(&buf.filled()[before..], |c| {
            if !over && !budget.spend(c, Instant::now()) {
                over = true;
            }
        });
        if over {
            this.over = true;
            this.flooded.notify_one();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnectionIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Announce::Pending(value) = this.announce {
            // h2 writes its SETTINGS frame first, whole (the server's preface).
            this.announce = match announcing(buf, value) {
                Some(frame) => Announce::Writing(frame, 0),
                None => Announce::Done,
            };
        }
        let n = if let Announce::Writing(frame, at) = &mut this.announce {
            // `buf` starts where the frame's written part ends.
            let rest = &frame[*at..];
            let rest = &rest[..rest.len().min(buf.len())];
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, rest))?;
            *at += n;
            if *at == frame.len() {
                this.announce = Announce::Done;
            }
            n
        } else {
            ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?
        };
        this.budget.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !matches!(this.announce, Announce::Done) {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(this).poll_write(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.budget.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_settings_announce_the_configured_limit() {
        // max_concurrent_streams 100, max_header_list_size 65536, enable_connect_protocol 1;
        // then a WINDOW_UPDATE.
        let mut bytes = vec![0, 0, 18, SETTINGS, 0, 0, 0, 0, 0];
        bytes.extend([0, 3, 0, 0, 0, 100]);
        bytes.extend([0, 6, 0, 1, 0, 0]);
        bytes.extend([0, 8, 0, 0, 0, 1]);
        let frame_len = bytes.len();
        bytes.extend([0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        let frame = announcing(&bytes, 16384).unwrap();
        assert_eq!(frame.len(), frame_len);
        assert_eq!(&frame[..15], &bytes[..15]);
        assert_eq!(&frame[15..21], &[0, 6, 0, 0, 0x40, 0]);
        assert_eq!(&frame[21..], &bytes[21..frame_len]);
        // Not a whole SETTINGS frame: left alone.
        assert!(announcing(&bytes[..20], 16384).is_none());
        assert!(announcing(&bytes[frame_len..], 16384).is_none());
    }

    #[tokio::test]
    async fn a_flood_is_signalled_and_nothing_more_is_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let (mut io, flooded) = ConnectionIo::new(server, 10, 16384);
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for _ in 0..11 {
            bytes.extend([0, 0, 8, 0x6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        client.write_all(&bytes).await.unwrap();
        let mut got = vec![0; bytes.len()];
        io.read_exact(&mut got).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), flooded.notified())
            .await
            .expect("the flood was signalled");
        assert!(io.over, "reads stop after the flood");
    }
}
