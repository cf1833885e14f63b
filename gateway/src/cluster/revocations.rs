//! Revoked subjects and token ids: handshakes that carry one are refused (401) until the
//! revocation's ttl ends. This process's copy lives here (one per process); with `[cluster]`
//! each revocation is also a key with the same ttl in Redis (so a replica that starts later
//! reads it) and an event on the channel (so every replica applies it at once; `events`).

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::duration::deadline;

use serde::{Deserialize, Serialize};

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
    until: RwLock<HashMap<Revoked, Instant>>,
}

impl Revocations {
    /// The process's revocations (admission reads them, the admin API and the cluster events
    /// write them).
    pub(crate) fn global() -> &'static Revocations {
        static GLOBAL: OnceLock<Revocations> = OnceLock::new();
        GLOBAL.get_or_init(Revocations::default)
    }

    /// Revoke `who` for `ttl` from now (a later revocation of the same replaces it).
    pub(crate) fn add(&self, who: Revoked, ttl: Duration) {
        // Saturated: a ttl from another replica's message could be anything.
        let at = deadline(Instant::now(), ttl);
        let mut until = self.until.write().expect("revocations lock");
        until.retain(|_, at| *at > Instant::now());
        until.insert(who, at);
    }

    /// Lift a revocation; whether there was one.
    pub(crate) fn lift(&self, who: &Revoked) -> bool {
        let mut until = self.until.write().expect("revocations lock");
        until.remove(who).is_some_and(|at| at > Instant::now())
    }

    /// Whether a token of `subject` with id `jti` is revoked now.
    pub(crate) fn is_revoked(&self, subject: Option<&str>, jti: Option<&str>) -> bool {
        let until = self.until.read().expect("revocations lock");
        if until.is_empty() {
            return false;
        }
        let now = Instant::now();
        let live = |who: Revoked| until.get(&who).is_some_and(|at| *at > now);
        subject.is_some_and(|s| live(Revoked::Subject(s.to_string())))
            || jti.is_some_and(|j| live(Revoked::Jti(j.to_string())))
    }

    /// Every revocation in force, with the time it has left.
    pub(crate) fn list(&self) -> Vec<(Revoked, Duration)> {
        let now = Instant::now();
        let until = self.until.read().expect("revocations lock");
        let mut out: Vec<(Revoked, Duration)> = until
            .iter()
            .filter(|(_, at)| **at > now)
            .map(|(who, at)| (who.clone(), *at - now))
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
        r.add(Revoked::Subject("alice".into()), Duration::from_secs(60));
        r.add(Revoked::Jti("t1".into()), Duration::from_millis(1));
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
}
