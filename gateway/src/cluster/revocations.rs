//! Revoked subjects and token ids: handshakes that carry one are refused (401) until the
//! revocation's ttl ends. This process's copy lives here (one per process); with `[cluster]`
//! each revocation is also a key with the same ttl in Redis (so a replica that starts later
//! reads it) and an event on the channel (so every replica applies it at once; `events`).
//!
//! Every name carries a [`Mark`]: revoked or lifted, for how long, and when the operator acted
//! (`at`). A lift is not a forgetting: it is a tombstone with a ttl of its own, kept here and in
//! Redis. What this process holds and what a store holds are merged, the newer action winning
//! ([`Revocations::merge`]), never replaced: a Redis that restarted empty cannot lift a
//! revocation (the replicas write theirs back), and a write-back never brings back a revocation
//! a newer tombstone lifted.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::config::defaults;
use crate::core::duration::deadline;

use serde::{Deserialize, Serialize};

/// Whether a name is revoked, or its revocation was lifted (a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Revoked,
    Lifted,
}

impl State {
    /// The first part of its Redis key.
    pub(crate) fn key_word(self) -> &'static str {
        match self {
            State::Revoked => "revoked",
            State::Lifted => "lifted",
        }
    }
}

/// What is known of one name: its state, how long that lasts, and when the action that made it
/// happened (`at`, Unix milliseconds: Redis's clock for an action stored there, this process's
/// for one that could not be). Of two marks the one with the later `at` wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) state: State,
    pub(crate) left: Duration,
    pub(crate) at: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    until: Instant,
    at: u64,
}

/// What is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Revoked {
    /// Every token of this subject (`sub`).
    Subject(String),
    /// The token with this id (`jti`).
    Jti(String),
}

impl Revoked {
    /// The part of its Redis key after the prefix, in `state` (`revoked:sub:alice`,
    /// `lifted:jti:t1`).
    pub(crate) fn key_part(&self, state: State) -> String {
        let word = state.key_word();
        match self {
            Revoked::Subject(s) => format!("{word}:sub:{s}"),
            Revoked::Jti(j) => format!("{word}:jti:{j}"),
        }
    }

    /// Back from a key part (`revoked:sub:alice`).
    pub(crate) fn from_key_part(part: &str) -> Option<(State, Revoked)> {
        let (state, rest) = if let Some(rest) = part.strip_prefix("revoked:") {
            (State::Revoked, rest)
        } else {
            (State::Lifted, part.strip_prefix("lifted:")?)
        };
        if let Some(s) = rest.strip_prefix("sub:") {
            return Some((state, Revoked::Subject(s.to_string())));
        }
        let who = Revoked::Jti(rest.strip_prefix("jti:")?.to_string());
        Some((state, who))
    }
}

/// Now, in Unix milliseconds of this process's clock (the `at` of an action not stored).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The revocations (and lifts) known to this process.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    marks: RwLock<HashMap<Revoked, Entry>>,
}

impl Revocations {
    /// The process's revocations (admission reads them, the admin API and the cluster events
    /// write them).
    pub(crate) fn global() -> &'static Revocations {
        static GLOBAL: OnceLock<Revocations> = OnceLock::new();
        GLOBAL.get_or_init(Revocations::default)
    }

    /// Revoke `who` here for `ttl` from now (an operator's action on this replica).
    pub(crate) fn revoke_here(&self, who: Revoked, ttl: Duration) {
        let mark = Mark {
            state: State::Revoked,
            left: ttl,
            at: now_ms(),
        };
        self.set(who, mark);
    }

    /// Lift `who` here: a tombstone kept as long as the revocation had left, and at least
    /// [`defaults::REVOCATION_TOMBSTONE_MIN`]. Whether a revocation was in force, and the
    /// tombstone.
    pub(crate) fn lift_here(&self, who: Revoked) -> (bool, Mark) {
        let now = Instant::now();
        let known = self
            .marks
            .read()
            .expect("revocations lock")
            .get(&who)
            .copied();
        let in_force = known.filter(|e| e.state == State::Revoked && e.until > now);
        let left = in_force.map_or(Duration::ZERO, |e| e.until - now);
        let mark = Mark {
            state: State::Lifted,
            left: left.max(defaults::REVOCATION_TOMBSTONE_MIN),
            at: now_ms(),
        };
        self.set(who, mark);
        (in_force.is_some(), mark)
    }

    /// Record `mark` for `who`, whatever was known (an action just made, or just stored under
    /// the store's clock). Whether `who` is revoked now and was not before.
    pub(crate) fn set(&self, who: Revoked, mark: Mark) -> bool {
        self.record(who, mark, true)
    }

    /// Record `mark` for `who` unless what is known of it comes from an action as new or newer
    /// (another replica's message, or what a store holds). Whether `who` is revoked now and
    /// was not before (its open sessions must be closed).
    pub(crate) fn merge(&self, who: Revoked, mark: Mark) -> bool {
        self.record(who, mark, false)
    }

    fn record(&self, who: Revoked, mark: Mark, always: bool) -> bool {
        let now = Instant::now();
        // Saturated: a ttl from another replica or a store could be anything.
        let until = deadline(now, mark.left);
        let mut map = self.marks.write().expect("revocations lock");
        map.retain(|_, e| e.until > now);
        let before = map.get(&who).copied();
        if !always && before.is_some_and(|e| e.at >= mark.at) {
            return false;
        }
        let was = before.is_some_and(|e| e.state == State::Revoked);
        map.insert(
            who,
            Entry {
                state: mark.state,
                until,
                at: mark.at,
            },
        );
        mark.state == State::Revoked && !was
    }

    /// Every mark in force (revocations and tombstones), with the time each has left: what a
    /// store that lost them gets back.
    pub(crate) fn marks(&self) -> Vec<(Revoked, Mark)> {
        let now = Instant::now();
        let map = self.marks.read().expect("revocations lock");
        map.iter()
            .filter(|(_, e)| e.until > now)
            .map(|(who, e)| {
                let mark = Mark {
                    state: e.state,
                    left: e.until - now,
                    at: e.at,
                };
                (who.clone(), mark)
            })
            .collect()
    }

    /// Whether a token of `subject` with id `jti` is revoked now.
    pub(crate) fn is_revoked(&self, subject: Option<&str>, jti: Option<&str>) -> bool {
        let map = self.marks.read().expect("revocations lock");
        if map.is_empty() {
            return false;
        }
        let now = Instant::now();
        let live = |who: Revoked| {
            map.get(&who)
                .is_some_and(|e| e.state == State::Revoked && e.until > now)
        };
        subject.is_some_and(|s| live(Revoked::Subject(s.to_string())))
            || jti.is_some_and(|j| live(Revoked::Jti(j.to_string())))
    }

    /// Every revocation in force, with the time it has left.
    pub(crate) fn list(&self) -> Vec<(Revoked, Duration)> {
        let mut out: Vec<(Revoked, Duration)> = self
            .marks()
            .into_iter()
            .filter(|(_, m)| m.state == State::Revoked)
            .map(|(who, m)| (who, m.left))
            .collect();
        out.sort_by_key(|(_, left)| *left);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str) -> Revoked {
        Revoked::Subject(s.into())
    }

    fn mark(state: State, left: Duration, at: u64) -> Mark {
        Mark { state, left, at }
    }

    #[test]
    fn revoke_check_expire_lift() {
        let r = Revocations::default();
        assert!(!r.is_revoked(Some("alice"), None));
        r.revoke_here(sub("alice"), Duration::from_secs(60));
        r.revoke_here(Revoked::Jti("t1".into()), Duration::from_millis(1));
        assert!(r.is_revoked(Some("alice"), None));
        assert!(!r.is_revoked(Some("bob"), Some("t2")));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!r.is_revoked(None, Some("t1")), "expired");
        assert_eq!(r.list().len(), 1);
        let (was, tombstone) = r.lift_here(sub("alice"));
        assert!(was);
        assert_eq!(tombstone.state, State::Lifted);
        assert!(tombstone.left > Duration::from_secs(59), "{tombstone:?}");
        assert!(!r.is_revoked(Some("alice"), None));
        assert!(r.list().is_empty(), "a tombstone is not listed");
        let (was, tombstone) = r.lift_here(sub("nobody"));
        assert!(!was);
        assert_eq!(tombstone.left, defaults::REVOCATION_TOMBSTONE_MIN);
        let part = Revoked::Jti("a:b".into()).key_part(State::Lifted);
        assert_eq!(part, "lifted:jti:a:b");
        assert_eq!(
            Revoked::from_key_part(&part),
            Some((State::Lifted, Revoked::Jti("a:b".into())))
        );
        assert_eq!(
            Revoked::from_key_part("revoked:sub:x"),
            Some((State::Revoked, sub("x")))
        );
        assert_eq!(Revoked::from_key_part("conn:sub:x"), None);
    }

    /// A store's marks are merged, not taken as the whole truth: what it lacks stays, the newer
    /// action wins either way, and only a revocation newly in force asks for closes.
    #[test]
    fn the_newer_action_wins_and_nothing_is_forgotten() {
        let r = Revocations::default();
        let hour = Duration::from_secs(3600);
        r.set(sub("kept"), mark(State::Revoked, hour, 100));
        r.set(sub("lifted-later"), mark(State::Revoked, hour, 100));
        r.set(sub("revoked-again"), mark(State::Lifted, hour, 100));
        r.set(sub("lifted-here-later"), mark(State::Lifted, hour, 300));
        // The store (say restarted empty, then partly refilled) holds these:
        assert!(!r.merge(sub("lifted-later"), mark(State::Lifted, hour, 200)));
        assert!(r.merge(sub("revoked-again"), mark(State::Revoked, hour, 200)));
        assert!(!r.merge(sub("lifted-here-later"), mark(State::Revoked, hour, 200)));
        assert!(r.merge(sub("new"), mark(State::Revoked, hour, 50)));
        assert!(
            !r.merge(sub("new"), mark(State::Revoked, hour, 50)),
            "the same again"
        );
        let revoked = |s: &str| r.is_revoked(Some(s), None);
        assert!(revoked("kept"), "the store lacking it does not lift it");
        assert!(!revoked("lifted-later"));
        assert!(revoked("revoked-again"));
        assert!(!revoked("lifted-here-later"), "an older revocation");
        assert!(revoked("new"));
        // An action just stored under the store's clock replaces what was known, even when
        // this process's clock had stamped it later.
        assert!(!r.set(sub("kept"), mark(State::Revoked, hour, 10)));
        assert!(!r.merge(sub("kept"), mark(State::Lifted, hour, 20)) && !revoked("kept"));
        let states: HashMap<Revoked, State> =
            r.marks().into_iter().map(|(w, m)| (w, m.state)).collect();
        assert_eq!(states.len(), 5);
        assert_eq!(states[&sub("lifted-later")], State::Lifted);
    }
}
