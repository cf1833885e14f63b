//! `balance = "hash"`: consistent hashing with bounded loads.
//!
//! **Which consistent hash: weighted rendezvous (highest random weight) hashing** (Thaler and
//! Ravishankar 1998; weights by the logarithmic method of Schindelhauer and Schomaker 2005).
//! Each upstream scores `-weight / ln(u)`, `u` a stable hash of (key, upstream) in (0, 1); the
//! key's order is the upstreams by score. Chosen over a ring with virtual nodes, Maglev and jump
//! hashing because:
//! - a key has a whole order, not just a home: an ejected, unhealthy or draining upstream's keys
//!   go to their next upstream and nobody else's keys move; when it returns they come back. The
//!   bounded-load overflow walks the same order, so a hot key spreads over its own runners-up
//!   rather than onto one ring neighbour;
//! - adding or removing one of N upstreams moves exactly the keys whose first choice changes,
//!   1/N of them in expectation, with no virtual-node variance (a ring needs hundreds of points
//!   per upstream to come close; Maglev's table is rebuilt and still moves a little more);
//! - weights, and slow start's fractional weights, are exact and continuous (jump hashing has
//!   none; a ring rounds them to point counts);
//! - nothing is built or stored per generation, so a health change costs nothing.
//!
//! Its price is one hash per upstream per handshake (a ring is a binary search): for the
//! handful to hundreds of upstreams a route has (at most 256) that is well under a microsecond
//! to a few, next to a TLS handshake and an upstream connect.
//!
//! **Bounded loads** (Mirrokni, Thorup and Zadimoghaddam 2017; HAProxy's
//! `hash-balance-factor`): with `c = hash_balance_factor`, an upstream of weight `w` (of `W` in
//! the pool) takes a new socket only while its open sockets are under
//! `ceil(c × (open + 1) × w / W)`, `open` the pool's open sockets and `+ 1` the socket being
//! placed. The key goes to the first upstream in its order that is under its bound; there is
//! always one, since the bounds add up to more than `open`.

use super::rotation::{unit, LeastConnections};
use super::{Choice, Member, Pool, Selection};
use crate::core::labels::SelectionReason;
use crate::relay::upstream::{mix, stable_hash};

/// Consistent hashing of the handshake's key with bounded loads; a handshake without a key
/// goes by least connections.
pub(crate) struct Hash {
    /// `hash_balance_factor`; `0.0`: unbounded.
    pub(crate) factor: f64,
    pub(crate) fallback: LeastConnections,
}

impl Selection for Hash {
    fn select(&self, pool: &Pool, key: Option<&[u8]>) -> Choice {
        let Some(key) = key else {
            let choice = self.fallback.select(pool, None);
            return Choice {
                reason: SelectionReason::NoKey,
                ..choice
            };
        };
        let ranked = rank(pool, stable_hash(key));
        if self.factor == 0.0 {
            return Choice::of(ranked.iter().map(|m| m.index), SelectionReason::Hash);
        }
        let open: usize = pool.iter().map(|m| m.active).sum();
        let weights: f64 = pool.iter().map(|m| m.weight).sum();
        let bound = |m: &Member| (self.factor * (open + 1) as f64 * m.weight / weights).ceil();
        let (under, over): (Vec<&Member>, Vec<&Member>) =
            ranked.iter().partition(|m| (m.active as f64) < bound(m));
        let reason = match (under.first(), ranked.first()) {
            (Some(a), Some(b)) if a.index != b.index => SelectionReason::Overflow,
            _ => SelectionReason::Hash,
        };
        Choice::of(under.into_iter().chain(over).map(|m| m.index), reason)
    }

    fn wants_key(&self) -> bool {
        true
    }
}

/// The pool in the key's order: highest weighted rendezvous score first (ties, which need equal
/// hashes, by the route's order).
pub(crate) fn rank(pool: &Pool, key: u64) -> Vec<Member> {
    let score = |m: &Member| {
        // In (0, 1): half a step above 0, below 1.
        let u = unit(mix(key ^ m.id)) + 0.5 / (1u64 << 53) as f64;
        -m.weight / u.ln()
    };
    let mut scored: Vec<(f64, Member)> = pool.iter().map(|m| (score(m), *m)).collect();
    scored.sort_by(|(a, x), (b, y)| b.total_cmp(a).then(x.index.cmp(&y.index)));
    scored.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|index| Member {
                index,
                weight: 1.0,
                active: 0,
                id: stable_hash(format!("ws://10.0.0.{index}:9001/chat").as_bytes()),
                configured: 1,
            })
            .collect()
    }

    fn hash(factor: f64) -> Hash {
        Hash {
            factor,
            fallback: LeastConnections {
                next: Arc::default(),
            },
        }
    }

    fn home(pool: &Pool, subject: &str) -> usize {
        hash(1.25).select(pool, Some(subject.as_bytes())).order[0]
    }

    fn subjects() -> impl Iterator<Item = String> {
        (0..1000).map(|i| format!("user-{i}"))
    }

    #[test]
    fn a_thousand_subjects_spread_within_15_percent_of_even() {
        let pool = members(3);
        let mut counts = [0usize; 3];
        for s in subjects() {
            counts[home(&pool, &s)] += 1;
        }
        for c in counts {
            assert!((283..=383).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn a_fourth_upstream_moves_about_a_quarter_and_only_to_itself() {
        let three = members(3);
        let four = members(4);
        let mut moved = 0;
        for s in subjects() {
            let (before, after) = (home(&three, &s), home(&four, &s));
            if before != after {
                assert_eq!(after, 3, "{s} moved between old upstreams");
                moved += 1;
            }
        }
        assert!(moved > 150 && moved <= 300, "{moved} of 1000 moved");
        // And back: removing it returns every key home.
        for s in subjects() {
            assert_eq!(home(&three, &s), home(&members(3), &s));
        }
    }

    #[test]
    fn an_ejected_upstreams_keys_go_to_their_next_and_no_one_elses_move() {
        let pool = members(3);
        let without_1: Vec<Member> = pool.iter().filter(|m| m.index != 1).copied().collect();
        for s in subjects() {
            let order = hash(1.25).select(&pool, Some(s.as_bytes())).order;
            let now = home(&without_1, &s);
            if order[0] == 1 {
                assert_eq!(now, order[1], "{s}: to its next");
            } else {
                assert_eq!(now, order[0], "{s}: stays");
            }
        }
    }

    #[test]
    fn weights_set_the_shares() {
        let mut pool = members(2);
        pool[1].weight = 3.0;
        let on_1 = subjects().filter(|s| home(&pool, s) == 1).count();
        assert!(
            (700..=800).contains(&on_1),
            "{on_1} of 1000 on the weight-3 upstream"
        );
    }

    #[test]
    fn a_hot_key_overflows_past_c_times_the_mean() {
        let mut pool = members(3);
        let h = hash(1.25);
        let first = h.select(&pool, Some(b"hot")).order;
        for _ in 0..100 {
            let choice = h.select(&pool, Some(b"hot"));
            let open: usize = pool.iter().map(|m| m.active).sum();
            let to = choice.order[0];
            let bound = (1.25 * (open + 1) as f64 / 3.0).ceil() as usize;
            assert!(pool[to].active < bound, "{pool:?}");
            if to != first[0] {
                assert_eq!(choice.reason, SelectionReason::Overflow);
            }
            pool[to].active += 1;
        }
        let counts: Vec<usize> = pool.iter().map(|m| m.active).collect();
        // 100 sockets: none above ceil(1.25 × 100 / 3) = 42, and the home has the most.
        assert!(counts.iter().all(|&c| c <= 42), "{counts:?}");
        assert_eq!(counts.iter().max(), Some(&counts[first[0]]));
        // Unbounded, it all goes home.
        let unbounded = hash(0.0).select(&pool, Some(b"hot")).order[0];
        assert_eq!(unbounded, first[0]);
    }

    #[test]
    fn no_key_is_least_connections() {
        let mut pool = members(3);
        pool[0].active = 5;
        pool[2].active = 1;
        let choice = hash(1.25).select(&pool, None);
        assert_eq!(choice.order, [1, 2, 0]);
        assert_eq!(choice.reason, SelectionReason::NoKey);
    }

    #[test]
    fn the_hash_is_stable() {
        // Replicas (other processes, other builds) must agree: fixed values.
        // FNV-1a then fmix64, computed independently.
        assert_eq!(stable_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(b"alice"), 0x3507_d047_a67c_08f4);
        assert_ne!(stable_hash(b"user-1"), stable_hash(b"user-2"));
        let pool = members(3);
        let homes: Vec<usize> = ["alice", "bob", "carol", "dave"]
            .iter()
            .map(|s| home(&pool, s))
            .collect();
        assert_eq!(homes, HOMES);
    }

    /// Where four subjects live over `members(3)`: a change of the hash would move them.
    const HOMES: [usize; 4] = [2, 1, 0, 2];
}
