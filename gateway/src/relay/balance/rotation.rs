//! Round robin and least connections: the policies without a key.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Choice, Pool, Selection};
use crate::core::labels::SelectionReason;
use crate::relay::upstream::mix;

/// Each new socket goes to the next upstream in turn; an upstream of weight `w` takes `w`
/// turns in a row per cycle. One in slow start takes its turn only the ramped fraction of the
/// time (decided by a hash of the turn's number, so no random source is needed), otherwise
/// the turn goes to the next.
pub(crate) struct RoundRobin {
    pub(crate) next: Arc<AtomicUsize>,
}

impl Selection for RoundRobin {
    fn select(&self, pool: &Pool, _key: Option<&[u8]>) -> Choice {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let total: u64 = pool.iter().map(|m| u64::from(m.configured)).sum();
        if total == 0 {
            return Choice::of(std::iter::empty(), SelectionReason::Rotation);
        }
        let mut at = turn % total;
        let first = pool
            .iter()
            .position(|m| {
                let mine = at < u64::from(m.configured);
                at = at.saturating_sub(u64::from(m.configured));
                mine
            })
            .unwrap_or(0);
        let n = pool.len();
        let mut order: Vec<usize> = (0..n).map(|k| (first + k) % n).collect();
        let ramp = pool[first].weight / f64::from(pool[first].configured);
        if ramp < 1.0 && unit(mix(turn)) >= ramp {
            order.rotate_left(1);
        }
        Choice::of(
            order.into_iter().map(|k| pool[k].index),
            SelectionReason::Rotation,
        )
    }
}

/// Each new socket goes to the upstream with the fewest open sockets per unit of weight (ties
/// keep the rotation, so equal loads still alternate).
pub(crate) struct LeastConnections {
    pub(crate) next: Arc<AtomicUsize>,
}

impl Selection for LeastConnections {
    fn select(&self, pool: &Pool, _key: Option<&[u8]>) -> Choice {
        let n = pool.len();
        if n == 0 {
            return Choice::of(std::iter::empty(), SelectionReason::Rotation);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        // With the socket being placed counted: an idle upstream of weight 1 and one of
        // weight 2 are not a tie.
        let load = |k: usize| (pool[k].active as f64 + 1.0) / pool[k].weight;
        order.sort_by(|&a, &b| load(a).total_cmp(&load(b)));
        Choice::of(
            order.into_iter().map(|k| pool[k].index),
            SelectionReason::Rotation,
        )
    }
}

/// A hash as a number in [0, 1).
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}
