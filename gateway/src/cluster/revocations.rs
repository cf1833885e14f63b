//! Revoked subjects and token ids: handshakes that carry one are refused (401) until the
//! revocation's ttl ends. This process's copy lives here (one per process); with `[cluster]`
//! each revocation is also a key with the same ttl in Redis (so a replica that starts later
//! reads it) and an event on the channel (so every replica applies it at once; `events`).
//!
//! Each entry remembers where it is known ([`Origin`]). When a replica (re)subscribes it reads
//! the keys and *replaces* what it holds from that store with them, so that a lift made while it
//! was cut off takes effect; what was revoked only here (its publication failed) stays until its
//! ttl ends or it is lifted here.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::duration::deadline;

use serde::{Deserialize, Serialize};

/// Where a revocation is known besides this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Nowhere else: no `[cluster]`, or not (yet) published.
    Here,
    /// In the cluster store whose events have this id (`events::Events`): what that store says
    /// when it is read again replaces it.
    Store(u64),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    until: Instant,
    origin: Origin,
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
    /// The part of its Redis key after the prefix.
    pub(crate) fn key_part(&self) -> String {
        match self {
            Revoked::Subject(s) => format!("revoked:sub:{s}"),
            Revoked::Jti(j) => format!("revoked:jti:{j}"),
        }
    }

    /// Back from a key part (`revoked:sub:alice`).
    pub(crate) fn from_key_part(part: &str) -> Option<Revoked> {
        let rest = part.strip_prefix("revoked:")?;
        if let Some(s) = rest.strip_prefix("sub:") {
            return Some(Revoked::Subject(s.to_string()));
        }
        rest.strip_prefix("jti:")
            .map(|j| Revoked::Jti(j.to_string()))
    }
}

/// The revocations in force in this process.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    until: RwLock<HashMap<Revoked, Entry>>,
}

impl Revocations {
    /// The process's revocations (admission reads them, the admin API and the cluster events
    /// write them).
    pub(crate) fn global() -> &'static Revocations {
        static GLOBAL: OnceLock<Revocations> = OnceLock::new();
        GLOBAL.get_or_init(Revocations::default)
    }

    /// Revoke `who` for `ttl` from now (a later revocation of the same replaces it).
    pub(crate) fn add(&self, who: Revoked, ttl: Duration, origin: Origin) {
        // Saturated: a ttl from another replica's message could be anything.
        let until = deadline(Instant::now(), ttl);
        let mut map = self.until.write().expect("revocations lock");
        let now = Instant::now();
        map.retain(|_, e| e.until > now);
        map.insert(who, Entry { until, origin });
    }

    /// `who`, revoked here, is now in the store `store` too (its publication succeeded).
    pub(crate) fn stored(&self, who: &Revoked, store: u64) {
        if let Some(e) = self.until.write().expect("revocations lock").get_mut(who) {
            e.origin = Origin::Store(store);
        }
    }

    /// What the store `store` holds now (`loaded`: each with the time it has left) replaces what
    /// this process had from it; revocations of this process only are kept (a later deadline
    /// of the two wins where both have one). Returns the revocations that were not in force
    /// before: their sessions are still open.
    pub(crate) fn replace_from(
        &self,
        store: u64,
        loaded: Vec<(Revoked, Duration)>,
    ) -> Vec<Revoked> {
        let now = Instant::now();
        let mut map = self.until.write().expect("revocations lock");
        let before = std::mem::take(&mut *map);
        map.extend(
            before
                .iter()
                .filter(|(_, e)| e.until > now && e.origin != Origin::Store(store))
                .map(|(who, e)| (who.clone(), *e)),
        );
        let mut fresh = Vec::new();
        for (who, ttl) in loaded {
            let until = deadline(now, ttl);
            let was_in_force = before.get(&who).is_some_and(|e| e.until > now);
            if !was_in_force {
                fresh.push(who.clone());
            }
            let stored = Entry {
                until,
                origin: Origin::Store(store),
            };
            match map.get_mut(&who) {
                Some(kept) if kept.until > until => {}
                Some(kept) => *kept = stored,
                None => {
                    map.insert(who, stored);
                }
            }
        }
        fresh
    }

    /// Lift a revocation; whether there was one.
    pub(crate) fn lift(&self, who: &Revoked) -> bool {
        let mut map = self.until.write().expect("revocations lock");
        map.remove(who).is_some_and(|e| e.until > Instant::now())
    }

    /// Whether a token of `subject` with id `jti` is revoked now.
    pub(crate) fn is_revoked(&self, subject: Option<&str>, jti: Option<&str>) -> bool {
        let until = self.until.read().expect("revocations lock");
        if until.is_empty() {
            return false;
        }
        let now = Instant::now();
        let live = |who: Revoked| until.get(&who).is_some_and(|e| e.until > now);
        subject.is_some_and(|s| live(Revoked::Subject(s.to_string())))
            || jti.is_some_and(|j| live(Revoked::Jti(j.to_string())))
    }

    /// Every revocation in force, with the time it has left.
    pub(crate) fn list(&self) -> Vec<(Revoked, Duration)> {
        let now = Instant::now();
        let until = self.until.read().expect("revocations lock");
        let mut out: Vec<(Revoked, Duration)> = until
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|(who, e)| (who.clone(), e.until - now))
            .collect();
        out.sort_by_key(|(_, left)| *left);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_check_expire_lift() {
        let r = Revocations::default();
        assert!(!r.is_revoked(Some("alice"), None));
        r.add(
            Revoked::Subject("alice".into()),
            Duration::from_secs(60),
            Origin::Here,
        );
        r.add(
            Revoked::Jti("t1".into()),
            Duration::from_millis(1),
            Origin::Here,
        );
        assert!(r.is_revoked(Some("alice"), None));
        assert!(!r.is_revoked(Some("bob"), Some("t2")));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!r.is_revoked(None, Some("t1")), "expired");
        assert_eq!(r.list().len(), 1);
        assert!(r.lift(&Revoked::Subject("alice".into())));
        assert!(!r.is_revoked(Some("alice"), None));
        let part = Revoked::Jti("a:b".into()).key_part();
        assert_eq!(
            Revoked::from_key_part(&part),
            Some(Revoked::Jti("a:b".into()))
        );
    }

    #[test]
    fn a_store_read_again_replaces_what_came_from_it_and_names_what_is_new() {
        let r = Revocations::default();
        let hour = Duration::from_secs(3600);
        let sub = |s: &str| Revoked::Subject(s.into());
        r.add(sub("lifted-meanwhile"), hour, Origin::Store(1));
        r.add(sub("still-revoked"), hour, Origin::Store(1));
        r.add(sub("only-here"), hour, Origin::Here);
        r.add(sub("other-store"), hour, Origin::Store(2));
        r.add(sub("published"), hour, Origin::Here);
        r.stored(&sub("published"), 1);
        let fresh = r.replace_from(
            1,
            vec![
                (sub("still-revoked"), hour),
                (sub("new"), hour),
                (sub("only-here"), Duration::from_secs(10)),
            ],
        );
        assert_eq!(fresh, vec![sub("new")]);
        let revoked = |s: &str| r.is_revoked(Some(s), None);
        assert!(
            !revoked("lifted-meanwhile"),
            "a lift made meanwhile takes effect"
        );
        assert!(!revoked("published"), "published, then lifted meanwhile");
        assert!(revoked("still-revoked") && revoked("new"));
        assert!(revoked("only-here"), "never published: kept");
        assert!(
            revoked("other-store"),
            "another store's are not this one's to replace"
        );
        let left = r
            .list()
            .into_iter()
            .find(|(w, _)| *w == sub("only-here"))
            .unwrap()
            .1;
        assert!(
            left > Duration::from_secs(3000),
            "the later deadline wins: {left:?}"
        );
    }
}
