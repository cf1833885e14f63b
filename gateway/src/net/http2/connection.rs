//! An HTTP/2 connection's bytes (after TLS) as h2 reads and writes them, watched on the way:
//! the client's frames spend from the control-frame budget ([`flood`](super::flood)), whose end
//! is signalled to the connection's task (which ends it with GOAWAY `ENHANCE_YOUR_CALM`), and
//! the header-list limit h2's first SETTINGS frame announces is the configured one, while h2
//! itself enforces a ceiling above it so that the gateway measures, refuses and counts a header
//! list over the limit as it does an HTTP/1.1 head (see [`super::over_head_limit`]). A header
//! block the client begins and does not finish within `head_timeout` is signalled too (the
//! task ends the connection with GOAWAY `ENHANCE_YOUR_CALM`): while it is open nothing else on
//! the connection moves, whatever streams it already has.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

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

/// What the connection's task is told, each at most once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signals {
    /// The client spent its control-frame budget.
    pub(crate) flooded: Arc<Notify>,
    /// A header block stayed open for `head_timeout`.
    pub(crate) stalled: Arc<Notify>,
}

/// The connection's I/O, watched.
pub(crate) struct ConnectionIo<T> {
    inner: T,
    walker: FrameWalker,
    budget: ControlBudget,
    signals: Signals,
    /// A flood or a stalled header block: nothing more is read, the connection is ending.
    over: bool,
    announce: Announce,
    head_timeout: Duration,
    /// Running while a header block is open; its end is the connection's.
    block_timer: Option<Pin<Box<Sleep>>>,
}

impl<T> ConnectionIo<T> {
    /// `control_rate`: `[http2] max_control_frames_per_second`; `announce`: the header-list
    /// limit to announce; `head_timeout`: how long a header block may stay open.
    pub(crate) fn new(
        inner: T,
        control_rate: u32,
        announce: u32,
        head_timeout: Duration,
    ) -> (Self, Signals) {
        let signals = Signals::default();
        let io = ConnectionIo {
            inner,
            walker: FrameWalker::client(),
            budget: ControlBudget::new(control_rate, Instant::now()),
            signals: signals.clone(),
            over: false,
            announce: Announce::Pending(announce),
            head_timeout,
            block_timer: None,
        };
        (io, signals)
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
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let budget = &mut this.budget;
            let mut over = false;
            this.walker.feed(&buf.filled()[before..], |c| {
                if !over && !budget.spend(c, Instant::now()) {
                    over = true;
                }
            });
            if over {
                this.over = true;
                this.signals.flooded.notify_one();
                return polled;
            }
        }
        if !this.walker.header_block_open() {
            this.block_timer = None;
        } else {
            let timeout = this.head_timeout;
            let timer = this
                .block_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            // Polled here so that its end wakes h2's reads of the connection.
            if timer.as_mut().poll(cx).is_ready() {
                this.over = true;
                this.signals.stalled.notify_one();
            }
        }
        polled
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
        let (mut io, signals) = ConnectionIo::new(server, 10, 16384, Duration::from_secs(10));
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for _ in 0..11 {
            bytes.extend([0, 0, 8, 0x6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        client.write_all(&bytes).await.unwrap();
        let mut got = vec![0; bytes.len()];
        io.read_exact(&mut got).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), signals.flooded.notified())
            .await
            .expect("the flood was signalled");
        assert!(io.over, "reads stop after the flood");
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_block_left_open_is_signalled_at_the_head_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let timeout = Duration::from_secs(10);
        let (mut io, signals) = ConnectionIo::new(server, 100, 16384, timeout);
        // A whole header block, then one left open (HEADERS without END_HEADERS).
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend([0, 0, 1, 0x1, 0x5, 0, 0, 0, 1, 0x82]);
        let whole = bytes.len();
        bytes.extend([0, 0, 1, 0x1, 0x0, 0, 0, 0, 3, 0x82]);
        client.write_all(&bytes[..whole]).await.unwrap();
        let mut got = vec![0; bytes.len()];
        io.read_exact(&mut got[..whole]).await.unwrap();
        // A finished block starts no timer.
        let read = tokio::time::timeout(timeout * 2, io.read(&mut got[whole..])).await;
        assert!(read.is_err(), "no bytes, no end: {read:?}");
        assert!(!io.over);
        client.write_all(&bytes[whole..]).await.unwrap();
        io.read_exact(&mut got[whole..]).await.unwrap();
        let reading = tokio::spawn(async move {
            let mut more = [0; 16];
            let _ = io.read(&mut more).await;
        });
        tokio::time::timeout(timeout + Duration::from_secs(1), signals.stalled.notified())
            .await
            .expect("the open header block was signalled");
        reading.abort();
    }
}
