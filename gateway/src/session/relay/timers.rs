//! The clocks of one relay session: when the client was last heard, pinged, and when data last
//! went either way; and the watchdogs that end the session on them (ping timeout, idle timeout).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::core::duration::deadline;
use crate::session::registry::Counters;

/// Mutable state shared by the pumps and watchdogs of one session. They all run in one task;
/// atomics (relaxed) only because the session future must be `Send`.
pub(super) struct Shared {
    base: Instant,
    pub(super) heard_from_client: Moment,
    pub(super) last_ping: Moment,
    pub(super) last_data: Moment,
    /// The session's counts, which the admin API reads while it runs.
    pub(super) counters: Arc<Counters>,
}

/// An instant after `Shared::base`, or none (stored as nanoseconds + 1; 0 is none).
#[derive(Default)]
pub(super) struct Moment(AtomicU64);

impl Shared {
    pub(super) fn new(counters: Arc<Counters>) -> Shared {
        let shared = Shared {
            base: Instant::now(),
            heard_from_client: Moment::default(),
            last_ping: Moment::default(),
            last_data: Moment::default(),
            counters,
        };
        shared.touch(&shared.heard_from_client);
        shared.touch(&shared.last_data);
        shared
    }

    pub(super) fn touch(&self, m: &Moment) {
        let nanos = self.base.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64;
        m.0.store(nanos + 1, Ordering::Relaxed);
    }

    pub(super) fn get(&self, m: &Moment) -> Option<Instant> {
        match m.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    pub(super) fn heard(&self) -> Instant {
        self.get(&self.heard_from_client).unwrap_or(self.base)
    }
}

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the client has been silent for `interval + timeout` (it was pinged after
/// `interval` and did not answer within `timeout`); never when pings are off.
pub(super) async fn silent_client(shared: &Shared, interval: Option<Duration>, timeout: Duration) {
    let Some(interval) = interval else {
        return std::future::pending().await;
    };
    loop {
        let at = deadline(shared.heard(), interval.saturating_add(timeout));
        if Instant::now() >= at {
            return;
        }
        crate::session::sleep_until(at).await;
    }
}

/// Resolves when no data message went either way for `limit`; never without a limit.
pub(super) async fn idle(shared: &Shared, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    loop {
        let at = deadline(shared.get(&shared.last_data).unwrap_or(shared.base), limit);
        if Instant::now() >= at {
            return;
        }
        crate::session::sleep_until(at).await;
    }
}
