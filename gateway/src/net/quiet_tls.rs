//! TLS streams that give rustls's buffers back while quiet. Once anything has been read, a
//! rustls connection keeps a 4 KiB receive buffer and a few queues for its whole life: on an
//! idle `wss` socket the largest item. [`QuietTls`] frees them (`release_idle_buffers`, our
//! patch: vendor/README.md) on a read that finds nothing once the socket has been quiet for
//! [`QUIET`], the moment tungstenite gives its own buffers back (`session::idle` wakes quiet
//! sessions so that it happens). A busy socket keeps them: no allocation per message.

use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::websocket::QUIET;

/// A TLS stream whose rustls connection can free its empty buffers.
pub(crate) trait ReleaseBuffers {
    fn release_buffers(&mut self);
}

impl<IO> ReleaseBuffers for tokio_rustls::server::TlsStream<IO> {
    fn release_buffers(&mut self) {
        self.get_mut().1.release_idle_buffers();
    }
}

impl<IO> ReleaseBuffers for tokio_rustls::client::TlsStream<IO> {
    fn release_buffers(&mut self) {
        self.get_mut().1.release_idle_buffers();
    }
}

/// A TLS stream (server or client side) that frees rustls's buffers while quiet.
pub(crate) struct QuietTls<T> {
    inner: T,
    /// Since when reads have found nothing, with nothing written since (`None`: traffic since
    /// the last read that found nothing). Set on the first such read, so a busy socket reads
    /// the clock once per message at most.
    quiet_since: Option<Instant>,
}

impl<T> QuietTls<T> {
    pub(crate) fn new(inner: T) -> QuietTls<T> {
        QuietTls {
            inner,
            quiet_since: None,
        }
    }
}

impl<T> Deref for QuietTls<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for QuietTls<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsyncRead + ReleaseBuffers + Unpin> AsyncRead for QuietTls<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                match this.quiet_since {
                    None => this.quiet_since = Some(Instant::now()),
                    // rustls frees only what holds no data (part of a record stays).
                    Some(since) if since.elapsed() >= QUIET => this.inner.release_buffers(),
                    Some(_) => {}
                }
                Poll::Pending
            }
            ready => {
                this.quiet_since = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for QuietTls<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.quiet_since = None;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.quiet_since = None;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A stream that has data to read only when told, and counts releases.
    struct Mock {
        data: Vec<u8>,
        released: Arc<AtomicUsize>,
    }

    impl ReleaseBuffers for Mock {
        fn release_buffers(&mut self) {
            self.released.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl AsyncRead for Mock {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.data.is_empty() {
                return Poll::Pending;
            }
            let data = std::mem::take(&mut self.data);
            buf.put_slice(&data);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Mock {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// One poll of a read; whether it found data.
    fn poll_once(s: &mut QuietTls<Mock>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut bytes = [0u8; 16];
        let mut buf = ReadBuf::new(&mut bytes);
        Pin::new(s).poll_read(&mut cx, &mut buf).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn releases_only_after_a_quiet_period_without_traffic() {
        let released = Arc::new(AtomicUsize::new(0));
        let mut s = QuietTls::new(Mock {
            data: b"hi".to_vec(),
            released: released.clone(),
        });
        let mut got = [0u8; 2];
        s.read_exact(&mut got).await.unwrap();
        // Reads that find nothing within the quiet period keep the buffers.
        assert!(!poll_once(&mut s));
        tokio::time::advance(QUIET / 2).await;
        assert!(!poll_once(&mut s));
        assert_eq!(released.load(Ordering::Relaxed), 0);
        // A write is traffic: the quiet period starts again at the next empty read.
        s.write_all(b"out").await.unwrap();
        tokio::time::advance(QUIET).await;
        assert!(!poll_once(&mut s));
        assert_eq!(released.load(Ordering::Relaxed), 0);
        tokio::time::advance(QUIET - Duration::from_millis(1)).await;
        assert!(!poll_once(&mut s));
        assert_eq!(released.load(Ordering::Relaxed), 0);
        // Quiet for the whole period: released.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!poll_once(&mut s));
        assert_eq!(released.load(Ordering::Relaxed), 1);
        // Data again: the stream reads it, and the next quiet period starts afresh.
        s.data = b"more".to_vec();
        assert!(poll_once(&mut s));
        assert!(!poll_once(&mut s));
        tokio::time::advance(QUIET / 2).await;
        assert!(!poll_once(&mut s));
        assert_eq!(released.load(Ordering::Relaxed), 1);
    }
}
