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
use crate::core::shutdown::shutting_down;

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

    /// Resolves when the session must close, and says why. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> Stop {
        if let Some(at) = self.close_at {
            super::sleep_until(at).await;
            return Stop::Shutdown;
        }
        let removed = &mut self.removed;
        tokio::select! {
            _ = shutting_down(&mut self.shutdown) => {}
            removed = async { removed.wait_for(|gone| *gone).await.is_ok() } => {
                if removed {
                    return Stop::RouteRemoved;
                }
                shutting_down(&mut self.shutdown).await;
            }
        }
        let at = deadline(Instant::now(), jitter(self.drain_window));
        self.close_at = Some(at);
        super::sleep_until(at).await;
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
}
