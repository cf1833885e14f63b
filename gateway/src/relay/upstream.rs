//! One upstream of a relay route and the state that outlives a configuration generation: its
//! open-socket count (least connections) and its health (passive ejection, active checks).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::duration::deadline;
use crate::core::url::WsUrl;
use crate::obs::metrics::Metrics;

/// One upstream of a route.
pub(crate) struct Upstream {
    pub(crate) url: WsUrl,
    /// Shared with the previous generation's copy when a reload kept the upstream.
    pub(crate) state: Arc<UpstreamState>,
}

/// What the gateway knows about an upstream right now.
#[derive(Default)]
pub(crate) struct UpstreamState {
    /// Open relayed sockets (for least-connections).
    active: AtomicUsize,
    /// Passive ejection: left out of the rotation until then.
    ejected_until: Mutex<Option<Instant>>,
    /// Active checks: the last check failed.
    down: AtomicBool,
}

impl Upstream {
    /// How the upstream is shown: its configured URL without the query string, which may hold
    /// a key (metric labels, logs, the session listing; the README promises a listing never
    /// shows a query string). Connections still use the whole URL.
    pub(crate) fn label(&self) -> &str {
        self.url.shown()
    }

    pub(crate) fn is_available(&self, now: Instant) -> bool {
        self.state.is_available(now)
    }

    /// Publish this upstream's series and health (a generation going into force).
    pub(crate) fn publish(&self, metrics: &Metrics) {
        metrics.init_upstream(self.label());
        metrics.upstream_health(self.label(), self.state.is_available(Instant::now()));
    }

    /// Take the upstream out of the rotation for `for_` after a failure.
    pub(crate) fn eject(&self, for_: Duration) {
        *self.state.ejected() = Some(deadline(Instant::now(), for_));
        Metrics::global().upstream_health(self.label(), false);
    }

    /// A connection worked: back in the rotation if it was ejected (not if a check failed).
    pub(crate) fn succeeded(&self) {
        *self.state.ejected() = None;
        if !self.state.down.load(Ordering::Relaxed) {
            Metrics::global().upstream_health(self.label(), true);
        }
    }

    /// The verdict of an active health check.
    pub(crate) fn mark_checked(&self, healthy: bool) {
        Metrics::global().upstream_health(self.label(), healthy);
        let was_down = self.state.down.swap(!healthy, Ordering::Relaxed);
        if healthy {
            *self.state.ejected() = None;
        }
        if was_down == healthy {
            if healthy {
                log::info!("upstream {} passes its health check again", self.label());
            } else {
                log::warn!("upstream {} fails its health check", self.label());
            }
        }
    }

    pub(crate) fn active(&self) -> usize {
        self.state.active.load(Ordering::Relaxed)
    }

    /// Count one socket on this upstream until the guard drops.
    pub(crate) fn hold(&self) -> ActiveGuard {
        self.state.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.state.clone())
    }
}

impl UpstreamState {
    fn ejected(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.ejected_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_available(&self, now: Instant) -> bool {
        !self.down.load(Ordering::Relaxed) && self.ejected().is_none_or(|until| now >= until)
    }
}

/// Keeps one relayed socket counted on its upstream (least-connections) until dropped. It holds
/// the shared state, so a socket opened before a reload still counts after it.
pub(crate) struct ActiveGuard(Arc<UpstreamState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
