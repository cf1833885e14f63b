//! Which upstreams a new socket tries, in order: one [`Selection`] trait (after pingora's
//! `BackendSelection` and sozu's load balancers: a selection gets a key and answers an order),
//! with round robin and least connections ([`rotation`]) and consistent hashing with bounded
//! loads ([`hash`]) behind it; the key comes from the handshake ([`key`]).
//!
//! What every policy shares is decided here, once: only upstreams that take new sockets (not
//! ejected, not failing their check, not in drain) are in the [`Pool`], with their weight now
//! (slow start applied) and their open sockets.

pub(crate) mod hash;
pub(crate) mod key;
pub(crate) mod rotation;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::time::Instant;

use super::upstream::Upstream;
use crate::config::{Balance, Balancing};
use crate::core::labels::SelectionReason;

/// Most upstreams tried for one client before it gets its `502`/`504`.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// One upstream that takes new sockets, as a selection sees it at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    /// Its index in the route's list.
    pub(crate) index: usize,
    /// Its weight now (slow start applied); more than zero.
    pub(crate) weight: f64,
    /// Its open sockets (handshakes in progress included).
    pub(crate) active: usize,
    /// Its stable identity ([`Upstream::id`]).
    pub(crate) id: u64,
    /// The configured weight (round robin's cycle).
    pub(crate) configured: u32,
}

/// The upstreams that take new sockets, in the route's order.
pub(crate) type Pool = [Member];

/// The pool of a route's upstreams at `now`.
pub(crate) fn pool(
    upstreams: &[Upstream],
    now: Instant,
    slow_start: Option<std::time::Duration>,
) -> Vec<Member> {
    upstreams
        .iter()
        .enumerate()
        .filter(|(_, u)| u.takes_new(now))
        .map(|(index, u)| Member {
            index,
            weight: u.weight_now(now, slow_start),
            active: u.active(),
            id: u.id,
            configured: u.weight,
        })
        .collect()
}

/// An order of upstreams to try, and why the first is first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Choice {
    /// Indices into the route's upstreams, at most [`MAX_ATTEMPTS`].
    pub(crate) order: Vec<usize>,
    pub(crate) reason: SelectionReason,
}

impl Choice {
    fn of(order: impl Iterator<Item = usize>, reason: SelectionReason) -> Choice {
        Choice {
            order: order.take(MAX_ATTEMPTS).collect(),
            reason,
        }
    }
}

/// A balancing policy: the order in which one handshake tries the pool.
pub(crate) trait Selection: Send + Sync {
    /// `key` is the handshake's hash key (`None`: the route hashes nothing, or the handshake
    /// has no key). An empty pool gives an empty order.
    fn select(&self, pool: &Pool, key: Option<&[u8]>) -> Choice;

    /// Whether this policy reads a key from the handshake.
    fn wants_key(&self) -> bool {
        false
    }
}

/// The policy of a route's `balance`; `next` is the route's rotation counter, kept across
/// reloads.
pub(crate) fn selection(balancing: &Balancing, next: Arc<AtomicUsize>) -> Box<dyn Selection> {
    match balancing.balance {
        Balance::RoundRobin => Box::new(rotation::RoundRobin { next }),
        Balance::LeastConnections => Box::new(rotation::LeastConnections { next }),
        Balance::Hash => Box::new(hash::Hash {
            factor: balancing.hash_balance_factor,
            fallback: rotation::LeastConnections { next },
        }),
    }
}
