//! One upstream of a relay route and the state that outlives a configuration generation: its
//! open-socket count (least connections, the hash load bound), its health (passive ejection,
//! active checks) and when it (re)joined (slow start).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::UpstreamEntry;
use crate::core::duration::deadline;
use crate::core::url::WsUrl;
use crate::obs::metrics::Metrics;

/// One upstream of a route.
pub(crate) struct Upstream {
    pub(crate) url: WsUrl,
    /// Relative share of new sockets (`weight`).
    pub(crate) weight: u32,
    /// In drain by configuration: no new sockets, the open ones stay.
    pub(crate) drain: bool,
    /// A stable hash of the configured URL: the upstream's identity for `balance = "hash"`,
    /// the same on every replica and across reloads.
    pub(crate) id: u64,
    /// Shared with the previous generation's copy when a reload kept the upstream.
    pub(crate) state: Arc<UpstreamState>,
}

/// What the gateway knows about an upstream right now.
pub(crate) struct UpstreamState {
    /// How the upstream is shown (its open-sockets gauge is kept from here).
    label: String,
    /// Open relayed sockets, handshakes in progress included.
    active: AtomicUsize,
    /// Passive ejection: left out of the rotation until then.
    ejected_until: Mutex<Option<Instant>>,
    /// Active checks: the last check failed.
    down: AtomicBool,
    /// When the upstream last joined or came back (slow start ramps its share from then);
    /// `None`: it has been there from the start.
    joined: Mutex<Option<Instant>>,
}

/// The smallest share of its weight an upstream in slow start has (never none at all).
const MIN_RAMP: f64 = 0.01;

impl Upstream {
    /// How the upstream is shown: its configured URL without the query string, which may hold
    /// a key (metric labels, logs, the session listing; the README promises a listing never
    /// shows a query string). Connections still use the whole URL.
    pub(crate) fn label(&self) -> &str {
        self.url.shown()
    }

    /// A fresh upstream; `joined`: it joins a running route now (a reload added it), so slow
    /// start applies.
    pub(crate) fn new(entry: &UpstreamEntry, joined: Option<Instant>) -> Upstream {
        let url = entry.url.clone();
        let state = Arc::new(UpstreamState {
            label: url.shown().to_string(),
            active: AtomicUsize::new(0),
            ejected_until: Mutex::new(None),
            down: AtomicBool::new(false),
            joined: Mutex::new(joined),
        });
        Upstream::with_state(entry, state)
    }

    /// An upstream that keeps the state of the previous generation's copy.
    pub(crate) fn with_state(entry: &UpstreamEntry, state: Arc<UpstreamState>) -> Upstream {
        Upstream {
            id: stable_hash(entry.url.to_string().as_bytes()),
            url: entry.url.clone(),
            weight: entry.weight,
            drain: entry.drain,
            state,
        }
    }

    pub(crate) fn is_available(&self, now: Instant) -> bool {
        self.state.is_available(now)
    }

    /// Whether it takes new sockets: available and not in drain.
    pub(crate) fn takes_new(&self, now: Instant) -> bool {
        !self.drain && self.is_available(now)
    }

    /// Its weight now: the configured weight, times the slow-start ramp (a linear climb from
    /// [`MIN_RAMP`] to 1 over `slow_start` after it joined or came back).
    pub(crate) fn weight_now(&self, now: Instant, slow_start: Option<Duration>) -> f64 {
        let weight = f64::from(self.weight);
        let (Some(window), Some(since)) = (slow_start, *self.state.joined()) else {
            return weight;
        };
        let ramp = now.saturating_duration_since(since).as_secs_f64() / window.as_secs_f64();
        weight * ramp.clamp(MIN_RAMP, 1.0)
    }

    /// It joins a running route now (slow start from here).
    pub(crate) fn joins(&self) {
        *self.state.joined() = Some(Instant::now());
    }

    /// Publish this upstream's series and health (a generation going into force).
    pub(crate) fn publish(&self, metrics: &Metrics) {
        metrics.init_upstream(self.label());
        metrics.upstream_health(self.label(), self.state.is_available(Instant::now()));
    }

    /// Take the upstream out of the rotation for `for_` after a failure.
    /// When it comes back, slow start applies from then.
    pub(crate) fn eject(&self, for_: Duration) {
        let until = deadline(Instant::now(), for_);
        *self.state.ejected() = Some(until);
        *self.state.joined() = Some(until);
        Metrics::global().upstream_health(self.label(), false);
    }

    /// A connection worked: back in the rotation if it was ejected (not if a check failed).
    /// An ejection it ends early ends its slow-start wait too: the ramp starts now.
    pub(crate) fn succeeded(&self) {
        let now = Instant::now();
        if self.state.ejected().take().is_some_and(|until| until > now) {
            *self.state.joined() = Some(now);
        }
        if !self.state.down.load(Ordering::Relaxed) {
            Metrics::global().upstream_health(self.label(), true);
        }
    }

    /// The verdict of an active health check.
    pub(crate) fn mark_checked(&self, healthy: bool) {
        Metrics::global().upstream_health(self.label(), healthy);
        let was_down = self.state.down.swap(!healthy, Ordering::Relaxed);
        if healthy {
            let was_ejected = self
                .state
                .ejected()
                .take()
                .is_some_and(|u| u > Instant::now());
            if was_down || was_ejected {
                *self.state.joined() = Some(Instant::now());
            }
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
        Metrics::global().upstream_sockets(&self.state.label, 1);
        ActiveGuard(self.state.clone())
    }
}

/// A hash that is the same in every process and on every replica (unlike std's `HashMap`
/// hasher, randomly keyed per process): FNV-1a over the bytes, then the 64-bit finaliser of
/// MurmurHash3 so that every input bit reaches every output bit (FNV alone mixes its last
/// bytes poorly, and keys such as `user-1`, `user-2` differ only there).
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// MurmurHash3's `fmix64`: a bijection on 64 bits with full avalanche.
pub(crate) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl UpstreamState {
    fn ejected(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.ejected_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn joined(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.joined.lock().unwrap_or_else(|p| p.into_inner())
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
        Metrics::global().upstream_sockets(&self.0.label, -1);
    }
}
