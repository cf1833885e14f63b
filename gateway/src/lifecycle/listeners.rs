//! The public listeners as a reload sees them: their certificate resolvers, bound once at
//! start, into which a generation put in force installs its certificates.

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::addr::Addr;
use crate::edge::generation::{Generation, InForce};
use crate::net::server_tls::CertStore;
use crate::obs::metrics::Metrics;

/// The certificate resolvers of the listeners, bound once at start: a generation put in force
/// installs its certificates into them.
pub(crate) struct Listeners {
    /// By listener index: the address as configured, and its store (TLS listeners only).
    stores: Vec<(Addr, Option<Arc<CertStore>>)>,
}

impl Listeners {
    pub(crate) fn new(stores: Vec<(Addr, Option<Arc<CertStore>>)>) -> Listeners {
        Listeners { stores }
    }

    pub(crate) fn cert_stores(&self) -> impl Iterator<Item = &Arc<CertStore>> {
        self.stores.iter().filter_map(|(_, s)| s.as_ref())
    }

    /// Put `next` in force in place of the generation in force. Returns the removal signals of
    /// the routes it no longer has.
    pub(crate) fn put_in_force(
        &self,
        in_force: &InForce,
        mut next: Generation,
        metrics: &Metrics,
    ) -> Vec<watch::Sender<bool>> {
        let removed = self.activate(&mut next, metrics);
        in_force.swap(next);
        removed
    }

    /// What putting a generation in force does besides the swap: its certificates into the
    /// listeners (those that kept their address), its metrics published, its background work
    /// started. Returns the removal signals of the routes it no longer has.
    pub(crate) fn activate(
        &self,
        next: &mut Generation,
        metrics: &Metrics,
    ) -> Vec<watch::Sender<bool>> {
        for (listener, set) in next.config.listeners.iter().zip(&next.certs) {
            let store = self
                .stores
                .iter()
                .find(|(addr, _)| *addr == listener.address)
                .and_then(|(_, store)| store.as_ref());
            if let (Some(store), Some(set)) = (store, set) {
                if let Err(e) = store.install(set.clone()) {
                    log::error!(
                        "certificates of {} kept, the new ones cannot be served: {e}",
                        store.describe()
                    );
                }
            }
        }
        next.publish(metrics);
        next.take_removed()
    }
}
