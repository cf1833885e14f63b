//! The configuration in force: config, routes and compiled admission, swapped whole by a reload.
//!
//! Each request reads the current generation once and uses it to its end; a socket keeps the
//! generation (route, policy, limits) it was admitted under, so a reload never changes the rules
//! of an open socket. New handshakes see the new generation at once.

use std::sync::{Arc, RwLock};

use crate::admission::Admission;
use crate::config::Config;
use crate::route::Router;
use crate::upstream::Relays;

/// One generation of configuration.
pub struct Live {
    pub config: Arc<Config>,
    pub router: Router,
    pub admission: Arc<Admission>,
    /// The relay routes' upstreams (balancing and health state).
    pub relays: Arc<Relays>,
}

/// The current generation, shared by the listeners and the reloader.
pub struct LiveConfig {
    current: RwLock<Arc<Live>>,
}

impl LiveConfig {
    pub fn new(live: Live) -> LiveConfig {
        LiveConfig {
            current: RwLock::new(Arc::new(live)),
        }
    }

    pub fn get(&self) -> Arc<Live> {
        self.current.read().expect("live config lock").clone()
    }

    /// Put `next` in force; returns the generation it replaced.
    pub fn swap(&self, next: Live) -> Arc<Live> {
        std::mem::replace(
            &mut *self.current.write().expect("live config lock"),
            Arc::new(next),
        )
    }
}
