//! Checks 2 and 6: handshake rates (governor, keyed by client IP or token subject) and
//! concurrent-connection caps (per IP, per subject, per route, global). A cap is held by a
//! [`Slot`] for exactly as long as the socket lives: dropping it — however the session ends,
//! errors and panics included — gives the slot back.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::policy::Rate;

/// A keyed handshake rate.
pub struct HandshakeRate<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, HashMapStateStore<K>, DefaultClock>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> HandshakeRate<K> {
    pub fn new(rate: &Rate) -> HandshakeRate<K> {
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
        HandshakeRate {
            limiter: RateLimiter::hashmap(quota),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// `Err(retry_after)` when `key` is over its rate.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
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
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

/// Counters under caps, keyed (per IP, per subject, per route) or not (global, with `()`).
pub struct Caps<K: Hash + Eq + Clone + Send + 'static> {
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone + Send + 'static> Default for Caps<K> {
    fn default() -> Self {
        Caps {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Caps<K> {
    /// Take one slot for `key` if fewer than `cap` are taken.
    pub fn acquire(self: &Arc<Self>, key: K, cap: usize) -> Option<Slot> {
        let mut counts = self.counts.lock().expect("caps lock");
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        drop(counts);
        let caps = self.clone();
        Some(Slot(Some(Box::new(move || caps.release(&key)))))
    }

    fn release(&self, key: &K) {
        let mut counts = self.counts.lock().expect("caps lock");
        if let Some(n) = counts.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(key);
            }
        }
    }

    /// Slots taken for `key` (for tests and metrics).
    pub fn count(&self, key: &K) -> usize {
        self.counts
            .lock()
            .expect("caps lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// One taken slot; released on drop.
pub struct Slot(Option<Box<dyn FnOnce() + Send>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

/// The slots an admitted socket holds.
#[derive(Default)]
pub struct Permit {
    slots: Vec<Slot>,
}

impl Permit {
    pub fn hold(&mut self, slot: Slot) {
        self.slots.push(slot);
    }
}

/// Per-IP caps key.
pub type IpCaps = Caps<IpAddr>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_release_on_drop() {
        let caps: Arc<Caps<&'static str>> = Arc::default();
        let a = caps.acquire("k", 2).unwrap();
        let b = caps.acquire("k", 2).unwrap();
        assert!(caps.acquire("k", 2).is_none());
        assert!(caps.acquire("other", 2).is_some());
        drop(a);
        assert_eq!(caps.count(&"k"), 1);
        let c = caps.acquire("k", 2).unwrap();
        drop((b, c));
        assert_eq!(caps.count(&"k"), 0);
    }

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
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
