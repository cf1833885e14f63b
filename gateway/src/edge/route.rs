//! Matching a request to a route, and each route's "removed by a reload" signal.

use crate::session::settings::SessionSettings;
use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, Route};

/// A configured route and the signal its open sockets watch: it turns `true` when a reload
/// removed the route (after the removal grace period).
#[derive(Debug)]
pub(crate) struct RouteEntry {
    pub(crate) route: Arc<Route>,
    /// What its sessions need from the configuration, resolved once per generation.
    pub(crate) session: SessionSettings,
    removed: watch::Sender<bool>,
}

impl RouteEntry {
    pub(crate) fn removed(&self) -> watch::Receiver<bool> {
        self.removed.subscribe()
    }
}

/// The routes of a configuration, by exact path.
#[derive(Debug, Default)]
pub(crate) struct Router {
    by_path: HashMap<String, Arc<RouteEntry>>,
}

impl Router {
    pub(crate) fn new(config: &Config) -> Router {
        Router::next(config, &Router::default()).0
    }

    /// The router of a reloaded `config`. A path that stays keeps its removal signal, so sockets
    /// opened under the old configuration are not disturbed; the returned senders belong to paths
    /// that are gone, for the caller to fire when their grace period ends.
    pub(crate) fn next(config: &Config, old: &Router) -> (Router, Vec<watch::Sender<bool>>) {
        let by_path: HashMap<String, Arc<RouteEntry>> = config
            .routes
            .iter()
            .map(|r| {
                let removed = match old.by_path.get(&r.path) {
                    Some(entry) => entry.removed.clone(),
                    None => watch::channel(false).0,
                };
                let entry = RouteEntry {
                    session: SessionSettings::of(config, r),
                    route: Arc::new(r.clone()),
                    removed,
                };
                (r.path.clone(), Arc::new(entry))
            })
            .collect();
        let gone = old
            .by_path
            .iter()
            .filter(|(path, _)| !by_path.contains_key(*path))
            .map(|(_, entry)| entry.removed.clone())
            .collect();
        (Router { by_path }, gone)
    }

    /// The route for a request path (query already removed).
    pub(crate) fn find(&self, path: &str) -> Option<&Arc<RouteEntry>> {
        self.by_path.get(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_paths_only() {
        let config = Config::embedded().unwrap();
        let router = Router::new(&config);
        assert!(router.find("/ws/echo").is_some());
        assert!(router.find("/").is_some());
        assert!(router.find("/ws/echo/").is_none());
        assert!(router.find("/ws").is_none());
    }

    #[test]
    fn reload_keeps_signals_of_kept_paths_and_returns_removed_ones() {
        let config = Config::embedded().unwrap();
        let old = Router::new(&config);
        let kept = old.find("/ws/echo").unwrap().removed();
        let mut smaller = config.clone();
        smaller.routes.retain(|r| r.path != "/");
        let (new, gone) = Router::next(&smaller, &old);
        assert!(new.find("/").is_none());
        assert_eq!(gone.len(), 1);
        let mut gone_rx = old.find("/").unwrap().removed();
        gone[0].send_replace(true);
        assert!(*gone_rx.borrow_and_update());
        // The kept path shares its signal with sockets opened before the reload.
        new.find("/ws/echo").unwrap().removed.send_replace(true);
        assert!(*kept.borrow());
    }
}
