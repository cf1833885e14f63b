//! Checks 2 and 6b: handshake rates (governor, GCRA), keyed by client IP or token subject.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::Rejection;
use crate::cluster::Gcra;
use crate::config::policy::Rate;
use crate::core::reason::Reason;

/// A keyed handshake rate.
pub(crate) struct HandshakeRate<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, HashMapStateStore<K>, DefaultClock>,
    /// The same rate for the cluster store.
    pub(crate) gcra: Gcra,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> HandshakeRate<K> {
    pub(crate) fn new(rate: &Rate) -> HandshakeRate<K> {
        let one = NonZeroU32::MIN;
        let quota = match (rate.per_second, rate.per_minute) {
            (Some(n), _) => Quota::per_second(NonZeroU32::new(n).unwrap_or(one)),
            (None, Some(n)) => Quota::per_minute(NonZeroU32::new(n).unwrap_or(one)),
            (None, None) => Quota::per_second(one),
        };
        let quota = match rate.burst.and_then(NonZeroU32::new) {
            Some(burst) => quota.allow_burst(burst),
            None => quota,
        };
        let gcra = Gcra {
            interval: quota.replenish_interval(),
            burst: quota.burst_size().get(),
        };
        HandshakeRate {
            gcra,
            limiter: RateLimiter::hashmap(quota),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// `Err(retry_after)` when `key` is over its rate.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        // Forget idle keys now and then, so memory follows the active clients only.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Seconds for `Retry-After`: at least one.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

/// The `429` of a handshake over its rate.
pub(crate) fn rate_limited(retry_after: Duration) -> Rejection {
    Rejection::new(Reason::RateLimited, 429, "too many handshakes\n")
        .header("Retry-After", retry_after_secs(retry_after).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_with_burst_and_retry_after() {
        let rate = HandshakeRate::new(&Rate {
            per_second: None,
            per_minute: Some(60),
            burst: Some(3),
        });
        for _ in 0..3 {
            rate.check(&1u8).unwrap();
        }
        let wait = rate.check(&1u8).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        rate.check(&2u8).unwrap();
        assert_eq!(rate.gcra.interval, Duration::from_secs(1));
        assert_eq!(rate.gcra.burst, 3);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
