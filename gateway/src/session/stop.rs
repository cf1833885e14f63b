//! How a session learns that the gateway wants it closed: pingora's shutdown (listeners stop
//! accepting), delayed by the session's own random share of the drain window, and its route's
//! removal by a reload. Both close with 1001 (`core::end::Stop`).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use pingora::server::ShutdownWatch;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::core::duration::deadline;
use crate::core::end::Stop;

/// What a session watches to learn that the gateway wants it closed: the server's shutdown,
/// delayed by this session's own random share of the drain window (so clients do not all
/// reconnect at once), and its route's removal by a reload.
pub(crate) struct StopSignal {
    shutdown: ShutdownWatch,
    removed: watch::Receiver<bool>,
    drain_window: Duration,
    /// Set once shutdown is seen: when this session closes. Kept across calls, so the delay does
    /// not restart each time the session's `select!` polls `wait` anew.
    close_at: Option<Instant>,
}

impl StopSignal {
    pub(crate) fn new(
        shutdown: ShutdownWatch,
        removed: watch::Receiver<bool>,
        drain_window: Duration,
    ) -> StopSignal {
        StopSignal {
            shutdown,
            removed,
            drain_window,
            close_at: None,
        }
    }

    /// Resolves when the session must close, and says why. Cancel-safe. (Written with
    /// `changed()` rather than `wait_for` in a `select!`: every open socket holds this future,
    /// and this way it is half the size.)
    pub(crate) async fn wait(&mut self) -> Stop {
        if self.close_at.is_none() {
            // A sender that is gone sends nothing more: stop listening to it.
            let (mut shutdown_open, mut removed_open) = (true, true);
            loop {
                if removed_open && *self.removed.borrow_and_update() {
                    return Stop::RouteRemoved;
                }
                if *self.shutdown.borrow_and_update() {
                    break;
                }
                tokio::select! {
                    r = self.shutdown.changed(), if shutdown_open => shutdown_open = r.is_ok(),
                    r = self.removed.changed(), if removed_open => removed_open = r.is_ok(),
                    else => std::future::pending::<()>().await,
                }
            }
            self.close_at = Some(deadline(Instant::now(), jitter(self.drain_window)));
        }
        if let Some(at) = self.close_at {
            super::sleep_until(at).await;
        }
        Stop::Shutdown
    }
}

/// A random duration in `[0, window)`.
pub(super) fn jitter(window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    let r = RandomState::new().hash_one(Instant::now());
    window.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_window() {
        let w = Duration::from_secs(2);
        let samples: Vec<Duration> = (0..200).map(|_| jitter(w)).collect();
        assert!(samples.iter().all(|d| *d < w));
        let spread = samples
            .iter()
            .max()
            .unwrap()
            .saturating_sub(*samples.iter().min().unwrap());
        assert!(spread > Duration::from_millis(500), "{spread:?}");
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn stop_signal_says_why() {
        let (stx, srx) = watch::channel(false);
        let (rtx, rrx) = watch::channel(false);
        let mut stop = StopSignal::new(srx.clone(), rrx, Duration::ZERO);
        rtx.send_replace(true);
        assert_eq!(stop.wait().await, Stop::RouteRemoved);
        let (_rtx2, rrx2) = watch::channel(false);
        let mut stop = StopSignal::new(srx, rrx2, Duration::from_millis(50));
        stx.send_replace(true);
        let t = Instant::now();
        assert_eq!(stop.wait().await, Stop::Shutdown);
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_route_signal_that_is_gone_leaves_the_shutdown() {
        let (stx, srx) = watch::channel(false);
        let (rtx, rrx) = watch::channel(false);
        let mut stop = StopSignal::new(srx, rrx, Duration::ZERO);
        drop(rtx);
        let waiting = tokio::time::timeout(Duration::from_millis(50), stop.wait()).await;
        assert!(waiting.is_err(), "no stop yet");
        stx.send_replace(true);
        assert_eq!(stop.wait().await, Stop::Shutdown);
    }
}
