//! Graceful stop: which signals start it, how sessions learn of it, and when the process exits.
//!
//! pingora broadcasts shutdown on its `ShutdownWatch` (listeners stop accepting; our sessions
//! send close 1001), then sleeps a fixed grace period. We want "exit as soon as the last socket
//! has closed, and never later than the grace period", so an exit monitor watches pingora's
//! execution phase and ends the process when the open-session count reaches zero or the grace
//! period runs out. pingora's own grace sleep stays as a backstop.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::session::Sessions;

/// Resolves once the gateway is shutting down; never, if the shutdown sender is gone without one.
pub async fn shutting_down(watch: &mut ShutdownWatch) {
    if watch.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Why the gateway ends a session on its own account, with close 1001.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The gateway is stopping (or handing over to a new process).
    Shutdown,
    /// A reload removed the session's route.
    RouteRemoved,
}

impl Stop {
    pub fn reason(self) -> &'static str {
        match self {
            Stop::Shutdown => "server shutting down",
            Stop::RouteRemoved => "route removed",
        }
    }
}

/// What a session watches to learn that the gateway wants it closed: the server's shutdown,
/// delayed by this session's own random share of the drain window (so clients do not all
/// reconnect at once), and its route's removal by a reload.
pub struct StopSignal {
    shutdown: ShutdownWatch,
    removed: watch::Receiver<bool>,
    drain_window: Duration,
    /// Set once shutdown is seen: when this session closes. Kept across calls, so the delay does
    /// not restart each time the session's `select!` polls `wait` anew.
    close_at: Option<Instant>,
}

impl StopSignal {
    pub fn new(
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
    pub async fn wait(&mut self) -> Stop {
        if let Some(at) = self.close_at {
            tokio::time::sleep_until(at).await;
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
        let at = Instant::now() + jitter(self.drain_window);
        self.close_at = Some(at);
        tokio::time::sleep_until(at).await;
        Stop::Shutdown
    }
}

/// A random duration in `[0, window)`.
fn jitter(window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    let r = RandomState::new().hash_one(Instant::now());
    window.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64)
}

/// SIGTERM and SIGINT both drain gracefully (pingora's default makes SIGINT a fast stop that
/// cuts sockets without a close frame); SIGQUIT keeps pingora's graceful upgrade (socket
/// hand-over to a new process).
pub struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}

/// Start the thread that ends the process once a graceful stop has drained, or at its deadline.
/// A second SIGTERM/SIGINT during the drain exits at once.
pub fn spawn_exit_monitor(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    sessions: Arc<Sessions>,
    grace: Duration,
) {
    crate::background::spawn("exit-monitor", async move {
        loop {
            match phases.recv().await {
                Ok(ExecutionPhase::GracefulTerminate) | Ok(ExecutionPhase::ShutdownStarted) => {
                    break
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        let open = sessions.count();
        log::info!(
            "graceful stop: closing {open} open socket(s) with 1001, waiting up to {:.1}s",
            grace.as_secs_f64()
        );
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = sessions.all_closed() => log::info!("graceful stop: all sockets closed, exiting"),
            _ = tokio::time::sleep(grace) => log::warn!(
                "graceful stop: grace period over with {} socket(s) still open, exiting",
                sessions.count()
            ),
            _ = term.recv() => log::warn!("second signal: exiting now"),
            _ = int.recv() => log::warn!("second signal: exiting now"),
        }
        log::logger().flush();
        std::process::exit(0);
    });
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
