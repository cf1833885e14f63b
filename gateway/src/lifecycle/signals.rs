//! Graceful stop: which signals start it, and when the process exits.
//!
//! pingora broadcasts shutdown on its `ShutdownWatch` (listeners stop accepting; our sessions
//! send close 1001), then sleeps a fixed grace period. We want "exit as soon as the last socket
//! has closed, and never later than the grace period", so an exit monitor watches pingora's
//! execution phase and ends the process when the open-session count reaches zero or the grace
//! period runs out. pingora's own grace sleep stays as a backstop.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

use crate::core::labels::BackgroundTask;
use crate::obs::metrics::supervised;
use crate::session::count::Sessions;

/// SIGTERM and SIGINT both drain gracefully (pingora's default makes SIGINT a fast stop that
/// cuts sockets without a close frame); SIGQUIT keeps pingora's graceful upgrade (socket
/// hand-over to a new process).
pub(crate) struct Signals;

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
/// A second SIGTERM/SIGINT during the drain exits at once. The monitor is supervised: one that
/// panics starts again, still following the same phases and, once the drain has begun, the same
/// deadline.
pub(crate) fn spawn_exit_monitor(
    phases: broadcast::Receiver<ExecutionPhase>,
    sessions: Arc<Sessions>,
    grace: Duration,
) {
    let monitor = Arc::new(ExitMonitor {
        phases: tokio::sync::Mutex::new(phases),
        drain_started: OnceLock::new(),
        sessions,
        grace,
    });
    crate::core::background::spawn(
        "exit-monitor",
        supervised(BackgroundTask::ExitMonitor, move || monitor.clone().run()),
    );
}

/// What the exit monitor keeps across a restart.
struct ExitMonitor {
    phases: tokio::sync::Mutex<broadcast::Receiver<ExecutionPhase>>,
    /// When the graceful stop began (set once).
    drain_started: OnceLock<Instant>,
    sessions: Arc<Sessions>,
    grace: Duration,
}

impl ExitMonitor {
    async fn run(self: Arc<Self>) {
        if self.drain_started.get().is_none() {
            let mut phases = self.phases.lock().await;
            loop {
                match phases.recv().await {
                    Ok(ExecutionPhase::GracefulTerminate) | Ok(ExecutionPhase::ShutdownStarted) => {
                        break
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            let _ = self.drain_started.set(Instant::now());
            log::info!(
                "graceful stop: closing {} open socket(s) with 1001, waiting up to {:.1}s",
                self.sessions.count(),
                self.grace.as_secs_f64()
            );
        }
        let started = *self.drain_started.get().expect("set above");
        let left = self.grace.saturating_sub(started.elapsed());
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = self.sessions.all_closed() => log::info!("graceful stop: all sockets closed, exiting"),
            _ = tokio::time::sleep(left) => log::warn!(
                "graceful stop: grace period over with {} socket(s) still open, exiting",
                self.sessions.count()
            ),
            _ = term.recv() => log::warn!("second signal: exiting now"),
            _ = int.recv() => log::warn!("second signal: exiting now"),
        }
        log::logger().flush();
        std::process::exit(0);
    }
}
