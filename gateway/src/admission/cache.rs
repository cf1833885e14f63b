//! A small bounded cache with a deadline per entry, for answers that cost a network call
//! (external authorizer decisions, introspection answers). Keys are SHA-256 digests of what the
//! answer depends on, so no credential is ever held as a key; values hold no credential either.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

/// A SHA-256 digest of the parts an answer depends on.
pub(crate) type Key = [u8; 32];

/// The digest of `parts`, each length-prefixed so that no two lists of parts collide.
pub(crate) fn key(parts: &[&[u8]]) -> Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Entries valid until their deadline, at most `capacity` of them.
pub(crate) struct TtlCache<V: Clone> {
    capacity: usize,
    entries: Mutex<HashMap<Key, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    pub(crate) fn new(capacity: usize) -> TtlCache<V> {
        TtlCache {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value of `key`, unless it is absent or past its deadline.
    pub(crate) fn get(&self, key: &Key) -> Option<V> {
        let mut entries = self.entries.lock().expect("cache lock");
        match entries.get(key) {
            Some((until, v)) if Instant::now() < *until => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keep `value` until `until`. When full, expired entries go first, then the one that would
    /// expire soonest.
    pub(crate) fn insert(&self, key: Key, value: V, until: Instant) {
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (t, _)| *t > now);
            if entries.len() >= self.capacity {
                let soonest = entries.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k);
                if let Some(k) = soonest {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(key, (until, value));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().expect("cache lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_do_not_collide_across_boundaries() {
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_eq!(key(&[b"a"]), key(&[b"a"]));
    }

    #[tokio::test]
    async fn bounded_and_expiring() {
        let cache = TtlCache::new(2);
        let now = Instant::now();
        cache.insert(key(&[b"1"]), 1, now + Duration::from_secs(10));
        cache.insert(key(&[b"2"]), 2, now + Duration::from_secs(20));
        cache.insert(key(&[b"3"]), 3, now + Duration::from_secs(30));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&key(&[b"1"])), None, "the soonest to expire went");
        assert_eq!(cache.get(&key(&[b"3"])), Some(3));
        cache.insert(key(&[b"4"]), 4, now + Duration::from_millis(20));
        assert_eq!(cache.get(&key(&[b"4"])), Some(4));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(cache.get(&key(&[b"4"])), None, "past its deadline");
        cache.insert(key(&[b"5"]), 5, Instant::now());
        assert_eq!(cache.get(&key(&[b"5"])), None, "already expired: not kept");
    }
}
