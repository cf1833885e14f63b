//! Which upstream a new socket tries first: round robin over the available upstreams, or the one
//! with the fewest open sockets (ties keep the rotation).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use super::upstream::Upstream;
use crate::config::Balance;

/// Most upstreams tried for one client before it gets its `502`/`504`.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// The available upstreams in the order to try them (at most [`MAX_ATTEMPTS`]). `next` is the
/// route's rotation counter.
pub(crate) fn candidates(
    upstreams: &[Upstream],
    balance: Balance,
    next: &AtomicUsize,
) -> Vec<usize> {
    let now = Instant::now();
    let n = upstreams.len();
    if n == 0 {
        return Vec::new();
    }
    let start = next.fetch_add(1, Ordering::Relaxed) % n;
    let mut order: Vec<usize> = (0..n)
        .map(|k| (start + k) % n)
        .filter(|&i| upstreams[i].is_available(now))
        .collect();
    if balance == Balance::LeastConnections {
        // Stable: ties keep the rotation, so equal loads still alternate.
        order.sort_by_key(|&i| upstreams[i].active());
    }
    order.truncate(MAX_ATTEMPTS);
    order
}
