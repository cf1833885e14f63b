//! Active health checks of the relay routes that ask for them (`health_check_interval`): a TCP
//! (and TLS) connect within `connect_timeout`. One pingora background service (it stops with the
//! server) follows reloads: each round checks the routes of the generation in force whose
//! interval has passed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use super::{RelayRoute, Relays};
use crate::core::duration::deadline;
use crate::core::shutdown::shutting_down;

/// How often the service looks for routes whose check is due.
const HEALTH_TICK: Duration = Duration::from_millis(250);

/// The service; `relays` gives the relay routes in force.
pub(crate) struct HealthChecks<F>(pub(crate) F);

#[async_trait]
impl<F> BackgroundService for HealthChecks<F>
where
    F: Fn() -> Arc<Relays> + Send + Sync + 'static,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut due: HashMap<String, Instant> = HashMap::new();
        loop {
            let relays = (self.0)();
            let now = Instant::now();
            let rounds = relays.by_path.iter().filter_map(|(path, route)| {
                let interval = route.settings.health_check_interval?;
                if due.get(path).is_some_and(|at| *at > now) {
                    return None;
                }
                due.insert(path.clone(), deadline(now, interval));
                let route = route.clone();
                Some(async move { route.check_all().await })
            });
            let round = futures_util::future::join_all(rounds.collect::<Vec<_>>());
            tokio::select! {
                _ = round => {}
                _ = shutting_down(&mut shutdown) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_TICK) => {}
                _ = shutting_down(&mut shutdown) => return,
            }
        }
    }
}

impl RelayRoute {
    /// One active check of every upstream: TCP (and TLS) connect within `connect_timeout`.
    async fn check_all(&self) {
        for upstream in &self.upstreams {
            let ok = matches!(
                tokio::time::timeout(self.settings.connect_timeout, self.transport(&upstream.url))
                    .await,
                Ok(Ok(_))
            );
            upstream.mark_checked(ok);
        }
    }
}
