//! A configuration generation: the configuration and everything loaded from it (certificates,
//! keys, router, admission state, relays), built by one function for start, `--check` and
//! reload, and the generation in force that every new request reads.
//!
//! Each request reads the generation in force once and uses it to its end; a socket keeps the
//! generation (route, policy, limits) it was admitted under, so a reload never changes the rules
//! of an open socket. Building a generation touches nothing live: putting it in force
//! ([`Generation::publish`], and the lifecycle's certificate install) is a separate step, so a
//! reload that fails halfway changes nothing. Nor does it write anything: a reload builds
//! read-only ([`Files::ReadOnly`], as `--check` does), and the lifecycle generates the
//! development certificates the build left out only once the build has succeeded.
//!
//! The builder lives here, not in `lifecycle` (which calls it for start, `--check` and reload),
//! because the edge reads the generation in force on every request and each layer imports only
//! the layers below it: the lifecycle sits above the edge.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::route::Router;
use crate::admission::Admission;
use crate::config::{Config, Mode};
use crate::core::labels::ALL_ROUTES;
use crate::net::server_tls::{ensure_dev_pair, needs_dev_pair, CertSet};
use crate::obs::metrics::Metrics;
use crate::relay::Relays;

/// Whether building a generation may write files (the development certificate). `--check` only
/// validates: it says what a start would generate instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Files {
    MayWrite,
    ReadOnly,
}

/// One generation of configuration.
pub(crate) struct Generation {
    pub(crate) config: Arc<Config>,
    pub(crate) router: Router,
    pub(crate) admission: Arc<Admission>,
    /// The relay routes' upstreams (balancing and health state).
    pub(crate) relays: Arc<Relays>,
    /// The certificates of each listener, by its index (`None`: a plain `ws://` listener).
    pub(crate) certs: Vec<Option<Arc<CertSet>>>,
    /// The admin bearer token, read from its file or variable.
    pub(crate) admin_token: Option<String>,
    /// The removal signals of routes the previous generation had and this one has not.
    removed: Vec<watch::Sender<bool>>,
    /// What a read-only build left undone (a development certificate it would generate).
    pub(crate) notes: Vec<String>,
}

impl Generation {
    /// Build a generation from a validated configuration, carrying over from `previous` (a
    /// reload) what must survive: connection counts, rate-limiter state, JWKS keys, upstream
    /// health and balancing, route removal signals. Every file is loaded and checked here, so
    /// an error names its key; nothing that is live changes.
    pub(crate) fn build(
        config: Config,
        previous: Option<&Generation>,
        files: Files,
    ) -> Result<Generation, String> {
        let admin_token = if config.admin.enabled {
            config.admin.token()?
        } else {
            None
        };
        let mut certs = Vec::new();
        let mut notes = Vec::new();
        for (i, listener) in config.listeners.iter().enumerate() {
            let Some(tls) = &listener.tls else {
                certs.push(None);
                continue;
            };
            if files == Files::ReadOnly && needs_dev_pair(tls) {
                notes.push(format!(
                    "listeners[{i}].tls: a self-signed development certificate would be \
                     generated at {} (key {})",
                    tls.cert.display(),
                    tls.key.display()
                ));
                certs.push(None);
                continue;
            }
            if ensure_dev_pair(tls).map_err(|e| format!("listeners[{i}].tls: {e}"))? {
                log::warn!(
                    "generated a self-signed development certificate {} (key {}); clients must \
                     trust it explicitly. Do not use it in production.",
                    tls.cert.display(),
                    tls.key.display()
                );
            }
            let set = CertSet::load(tls).map_err(|e| format!("listeners[{i}].tls: {e}"))?;
            certs.push(Some(Arc::new(set)));
        }
        let admission = Admission::build(&config, previous.map(|p| &*p.admission))?;
        // Relay routes: upstream URLs, CA files and client certificates load (upstreams need not
        // be up).
        let relays = Relays::build(&config, previous.map(|p| &*p.relays), |route| {
            admission.credentials(route)
        })?;
        let (router, removed) = match previous {
            Some(p) => Router::next(&config, &p.router),
            None => (Router::new(&config), Vec::new()),
        };
        Ok(Generation {
            config: Arc::new(config),
            router,
            admission: Arc::new(admission),
            relays: Arc::new(relays),
            certs,
            admin_token,
            removed,
            notes,
        })
    }

    /// Publish what this generation puts in force besides itself: every route's and
    /// upstream's series, the connection caps, upstream health; and start its JWKS fetchers.
    pub(crate) fn publish(&self, metrics: &Metrics) {
        let config = &self.config;
        for route in config.routes.iter().filter(|r| r.mode != Mode::Static) {
            metrics.init_route(&route.path);
        }
        let per_route = config.routes.iter().filter_map(|route| {
            let cap = config.policy_of(route)?.limits.connections_per_route?;
            Some((route.path.as_str(), cap as u64))
        });
        metrics.set_connection_limits(
            std::iter::once((ALL_ROUTES, config.limits.max_connections as u64)).chain(per_route),
        );
        self.relays.publish(metrics);
        self.admission.start_background();
    }

    /// The signals of the routes this generation removed (to fire after the grace period).
    pub(crate) fn take_removed(&mut self) -> Vec<watch::Sender<bool>> {
        std::mem::take(&mut self.removed)
    }
}

/// The generation in force, shared by the listeners, the admin listener and the reloader.
pub(crate) struct InForce {
    current: ArcSwap<Generation>,
}

impl InForce {
    pub(crate) fn new(generation: Generation) -> InForce {
        InForce {
            current: ArcSwap::from_pointee(generation),
        }
    }

    pub(crate) fn get(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Put `next` in force; returns the generation it replaced.
    pub(crate) fn swap(&self, next: Generation) -> Arc<Generation> {
        self.current.swap(Arc::new(next))
    }
}
