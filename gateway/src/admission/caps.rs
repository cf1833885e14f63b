//! Check 6: concurrent-connection caps (per IP, per subject, per route, global). A cap is held by
//! a [`Slot`] for exactly as long as the socket lives: dropping it — however the session ends,
//! errors and panics included — gives the slot back.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Counters under caps, keyed (per IP, per subject, per route) or not (global, with `()`).
pub(crate) struct Caps<K: Hash + Eq + Clone + Send + 'static> {
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
    pub(crate) fn acquire(self: &Arc<Self>, key: K, cap: usize) -> Option<Slot> {
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

    /// Slots taken for `key`.
    #[cfg(test)]
    pub(crate) fn count(&self, key: &K) -> usize {
        self.counts
            .lock()
            .expect("caps lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// One taken slot; released on drop.
pub(crate) struct Slot(Option<Box<dyn FnOnce() + Send>>);

impl Slot {
    /// A slot held by `holder` (a cluster lease): released when the holder drops.
    pub(crate) fn holding<T: Send + 'static>(holder: T) -> Slot {
        Slot(Some(Box::new(move || drop(holder))))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

/// The slots an admitted socket holds.
#[derive(Default)]
pub(crate) struct Permit {
    slots: Vec<Slot>,
}

impl Permit {
    /// Grown one slot at a time (a socket holds one to a few for its life): a plain `push`
    /// would give the first slot room for four, 48 bytes more on every open socket.
    pub(crate) fn hold(&mut self, slot: Slot) {
        self.slots.reserve_exact(1);
        self.slots.push(slot);
    }
}

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
}
