//! Idle sockets give their buffers back. tungstenite releases a socket's read and write buffers
//! on a read that finds nothing once the socket has been quiet for [`QUIET`]
//! (`release_idle_buffers`, our patch: vendor/README.md), so a busy socket keeps its buffers
//! (no allocation per message) and an idle one holds none. A read only happens when the session
//! polls its socket, so [`wake_when_quiet`] wakes the session after a quiet period, and then
//! less and less often while it stays quiet: a busy session is woken once per period, an idle
//! one a few times an hour.

use std::convert::Infallible;
use std::time::Duration;

use super::registry::Counters;

/// How long a socket must be quiet before its buffers go (the protocol's one value).
pub(crate) use crate::net::websocket::QUIET;

/// The longest pause between two wakes of a quiet session.
const MAX_PAUSE: Duration = Duration::from_secs(64);

/// Never resolves (hence `Infallible`); wakes the session's task now and then (see the module
/// docs), judging quietness by the session's message counts. Poll it beside the sockets.
pub(crate) async fn wake_when_quiet(counters: &Counters) -> Infallible {
    let mut pause = QUIET;
    let mut seen = counters.messages();
    loop {
        tokio::time::sleep(pause).await;
        let now = counters.messages();
        pause = if now == seen {
            (pause * 2).min(MAX_PAUSE)
        } else {
            QUIET
        };
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wakes_back_off_while_quiet_and_reset_on_traffic() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Poll, Wake, Waker};

        struct CountWakes(AtomicUsize);
        impl Wake for CountWakes {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wakes = std::sync::Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let counters = Counters::default();
        let mut fut = Box::pin(wake_when_quiet(&counters));
        let mut poll = || {
            let mut cx = Context::from_waker(&waker);
            assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Pending));
        };
        poll();
        // Quiet: woken after 1, 2, 4, ... seconds.
        let mut at = Vec::new();
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            let before = wakes.0.load(Ordering::Relaxed);
            while wakes.0.load(Ordering::Relaxed) == before {
                tokio::time::advance(Duration::from_millis(100)).await;
            }
            at.push((tokio::time::Instant::now() - start).as_secs_f64().round() as u64);
            poll();
        }
        assert_eq!(at, [1, 3, 7, 15]);
        // Traffic: back to one period.
        counters.count_in(1);
        let before = wakes.0.load(Ordering::Relaxed);
        let from = tokio::time::Instant::now();
        while wakes.0.load(Ordering::Relaxed) == before {
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        poll();
        let before = wakes.0.load(Ordering::Relaxed);
        let from2 = tokio::time::Instant::now();
        while wakes.0.load(Ordering::Relaxed) == before {
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let second = tokio::time::Instant::now() - from2;
        assert!(
            from2 - from <= Duration::from_secs(16),
            "the pending long pause ends first"
        );
        assert!(second <= QUIET + Duration::from_millis(200), "{second:?}");
    }
}
