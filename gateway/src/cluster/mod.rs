//! The cluster store: the Redis that replicas share so that handshake rates ([`rate`]) and
//! connection caps ([`lease`]) hold across all of them, and operators' closes and revocations
//! reach all of them ([`events`], [`revocations`]), over one connection that reconnects by
//! itself ([`link`]); failures are typed ([`error`]).
//!
//! Keys (every one behind `[cluster] key_prefix`):
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `rate:{policy}:ip:{address}`, `rate:{policy}:sub:{subject}` | string | a GCRA arrival time (µs) |
//! | `conn:{policy}:ip:{address}`, `conn:{policy}:sub:{subject}`, `conn:route:{path}` | sorted set | leases: `replica:socket` → expiry (ms) |
//!
//! On a Redis Cluster (`cluster_nodes`) the keys carry hash tags so that every script and
//! pipeline touches one slot: the cap keys are `conn:{POLICY}:...` with literal braces (the
//! route's is `conn:{POLICY}:route:PATH`), and the revocation keys are
//! `{revocations}revoked:...`, `{revocations}lifted:...` (one slot, scanned on its node).
//! | `revoked:sub:{subject}`, `revoked:jti:{id}` | string (when it was made, Unix ms), with the revocation's ttl | a revocation ([`revocations`]) |
//! | `lifted:sub:{subject}`, `lifted:jti:{id}` | string (when it was lifted), with its own ttl | a lift's tombstone: no write-back brings the revocation back |
//! | `closes` | sorted set, kept a minute | operators' closes by time, replayed to replicas that did not hear them ([`events`]) |
//! | `events` | pub/sub channel | closes and revocations for every replica ([`events`]) |
//!
//! Nothing here blocks a handshake beyond `[cluster] timeout` in all ([`Budget`]), and nothing
//! waits for a connection: the admission layer decides what a failure means (`on_error`).
//!
//! Both connections (commands, and the subscription) are checked with `PING` every
//! `[cluster] liveness_interval`, so a dead one is noticed within about 2 s even when nothing
//! else uses it ([`link`], [`events`]).
//!
//! The connection and its reconnect loop, the lease heartbeat and the event subscription run
//! on a thread of their own (`core::background`), each supervised (a panic restarts it),
//! started once by [`Cluster::start`] (never by `--check`). A reload that leaves `[cluster]`
//! (and the password) as it was keeps the same [`Cluster`], connection included.
//!
//! `rediss://` is the one TLS client of the gateway whose rustls settings are not built by
//! `net::client_tls`: redis-rs 1.8 takes the CA as PEM bytes and builds its rustls settings
//! itself on every connect, with no way to pass prebuilt ones (`net::client_tls` says what that
//! means and what the way around it would cost).

mod budget;
mod conn;
mod endpoint;
mod error;
pub(crate) mod events;
mod lease;
mod link;
mod rate;
pub(crate) mod revocations;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(crate) use budget::Budget;
pub(crate) use error::ClusterError;
pub(crate) use lease::{Lease, Taken};
pub(crate) use rate::Gcra;

use crate::config::cluster::{self as settings, OnError};
use crate::config::defaults;
use crate::core::background;
use crate::core::labels::BackgroundTask;
use crate::obs::metrics::{supervised, Metrics};
use endpoint::Endpoint;
use events::{Close, Events};
use lease::Leases;
use link::{Link, Liveness};
use rate::Rates;
use revocations::{Mark, Revoked};
use std::time::Duration;

/// Who a rate or a cap counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counted<'a> {
    Ip(IpAddr),
    Subject(&'a str),
}

impl Counted<'_> {
    fn key_part(&self) -> String {
        match self {
            Counted::Ip(ip) => format!("ip:{ip}"),
            Counted::Subject(sub) => format!("sub:{sub}"),
        }
    }
}

/// The handle every generation's admission shares while `[cluster]` is unchanged.
pub(crate) struct Cluster {
    settings: settings::Cluster,
    password: Option<String>,
    /// This process's id among the replicas (in lease members and logs).
    replica: String,
    link: Arc<Link>,
    rates: Rates,
    leases: Arc<Leases>,
    events: Arc<Events>,
    /// Where the primary is (for the event subscription's own connection too).
    target: Arc<Endpoint>,
    metrics: Arc<Metrics>,
    started: AtomicBool,
}

impl Cluster {
    /// The cluster handle for `config`: `previous` when it was built from the same settings and
    /// password (a reload), else a new one (not connected until [`Cluster::start`]).
    pub(crate) fn build(
        config: &settings::Cluster,
        previous: Option<&Arc<Cluster>>,
    ) -> Result<Arc<Cluster>, String> {
        let password = config.password()?;
        if let Some(prev) = previous {
            if prev.settings == *config && prev.password == password {
                return Ok(prev.clone());
            }
        }
        let target = Arc::new(Endpoint::new(config, password.as_deref())?);
        let replica = replica_id();
        let metrics = Metrics::global().clone();
        Ok(Arc::new(Cluster {
            events: Arc::new(Events::new(
                &config.key_prefix,
                config.is_redis_cluster(),
                &replica,
                metrics.clone(),
            )),
            target: target.clone(),
            link: Arc::new(Link::new(
                target,
                config.describe(),
                config.timeout.0,
                liveness(config),
                metrics.clone(),
            )),
            rates: Rates::new(),
            leases: Arc::new(Leases::new(
                replica.clone(),
                config.lease_ttl.0,
                config.is_redis_cluster(),
            )),
            settings: config.clone(),
            password,
            replica,
            metrics,
            started: AtomicBool::new(false),
        }))
    }

    /// Connect and start the heartbeat, once (on the cluster thread).
    pub(crate) fn start(&self) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        log::info!(
            "cluster: replica {} sharing limits through {} (prefix {:?}, on_error = {})",
            self.replica,
            self.settings.describe(),
            self.settings.key_prefix,
            self.settings.on_error.as_str()
        );
        // Each task is supervised: a panic restarts it (logged, counted, and named by /readyz
        // if it keeps panicking). What a task must keep across a restart (the connection, the
        // heartbeat's channel and sockets) lives in the shared handles, not in the task.
        let (link, leases, events) = (self.link.clone(), self.leases.clone(), self.events.clone());
        let (metrics, target) = (self.metrics.clone(), self.target.clone());
        let connect = {
            let link = link.clone();
            supervised(BackgroundTask::ClusterLink, move || link.clone().run())
        };
        let heartbeat = {
            let link = link.clone();
            supervised(BackgroundTask::ClusterLeases, move || {
                leases.clone().run(link.clone(), metrics.clone())
            })
        };
        let checks = liveness(&self.settings);
        let subscribe = supervised(BackgroundTask::ClusterEvents, move || {
            let (events, target, link) = (events.clone(), target.clone(), link.clone());
            async move { events.run(&target, &link, checks).await }
        });
        background::spawn("cluster", async move {
            tokio::join!(connect, heartbeat, subscribe);
        });
    }

    /// What checks do when Redis fails, unless their policy says otherwise.
    pub(crate) fn on_error(&self) -> OnError {
        self.settings.on_error
    }

    /// `None` while Redis answers and the subscription hears; otherwise why not (for `/readyz`
    /// and logs).
    pub(crate) fn degraded(&self) -> Option<String> {
        let deaf = self
            .events
            .deaf_because()
            .map(|why| format!("not hearing closes and revocations from other replicas ({why})"));
        match (self.link.down_because(), deaf) {
            (Some(down), Some(deaf)) => Some(format!("{down}; {deaf}")),
            (down, deaf) => down.or(deaf),
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.settings.key_prefix)
    }

    /// The rate key of `who` under `policy`.
    pub(crate) fn rate_key(&self, policy: &str, who: Counted<'_>) -> String {
        self.key(format_args!("rate:{policy}:{}", who.key_part()))
    }

    /// The cap key of `who` under `policy`. On a Redis Cluster the policy is the key's hash
    /// tag, so that the keys one socket takes slots under are in one slot.
    pub(crate) fn cap_key(&self, policy: &str, who: Counted<'_>) -> String {
        match self.settings.is_redis_cluster() {
            true => self.key(format_args!("conn:{{{policy}}}:{}", who.key_part())),
            false => self.key(format_args!("conn:{policy}:{}", who.key_part())),
        }
    }

    /// The cap key of a route (caps per route count across policies, as locally). On a Redis
    /// Cluster it carries the hash tag of the route's `policy`, as its other cap keys do.
    pub(crate) fn route_key(&self, policy: &str, route: &str) -> String {
        match self.settings.is_redis_cluster() {
            true => self.key(format_args!("conn:{{{policy}}}:route:{route}")),
            false => self.key(format_args!("conn:route:{route}")),
        }
    }

    /// A new handshake's time for Redis (`[cluster] timeout` for all its calls).
    pub(crate) fn budget(&self) -> Budget {
        Budget::new(self.settings.timeout.0)
    }

    /// One rate check within what is left of `budget`: `Ok(Err(wait))` when over the rate.
    pub(crate) async fn rate(
        &self,
        budget: &mut Budget,
        key: &str,
        gcra: Gcra,
    ) -> Result<Result<(), std::time::Duration>, ClusterError> {
        budget
            .spend(|within| self.rates.check(&self.link, within, key, gcra))
            .await
    }

    /// Take one slot under each (key, cap), all or none, within what is left of `budget`.
    pub(crate) async fn take(
        &self,
        budget: &mut Budget,
        keys: Vec<(String, usize)>,
    ) -> Result<Taken, ClusterError> {
        budget
            .spend(|within| self.leases.take(&self.link, within, keys))
            .await
    }

    /// The closes (and revocations' closes) other replicas ask this one for.
    pub(crate) fn closes(&self) -> tokio::sync::broadcast::Receiver<Close> {
        self.events.subscribe()
    }

    /// Ask every other replica to close the matching sessions (an operator's action).
    pub(crate) async fn publish_close(&self, close: Close) -> Result<(), ClusterError> {
        self.operator("a close", |within| {
            self.events.close(&self.link, within, close.clone())
        })
        .await
    }

    /// Revoke `who` on every replica for `ttl` (and on replicas that start within it).
    pub(crate) async fn revoke(&self, who: Revoked, ttl: Duration) -> Result<(), ClusterError> {
        self.operator("a revocation", |within| {
            self.events.revoke(&self.link, within, who.clone(), ttl)
        })
        .await
    }

    /// Lift a revocation on every replica (`tombstone`: the lift as made here).
    pub(crate) async fn lift(&self, who: Revoked, tombstone: Mark) -> Result<(), ClusterError> {
        self.operator("a lift", |within| {
            self.events.lift(&self.link, within, who.clone(), tombstone)
        })
        .await
    }

    /// Run an operator's action: unlike a handshake, an operator can wait a little for it to
    /// reach the other replicas. Each attempt waits for a connection and gives each call up to
    /// [`defaults::CLUSTER_ADMIN_TIMEOUT`] (or `[cluster] timeout` if longer); a failed attempt
    /// is made once more (the first may have met a connection that had just broken, which
    /// nothing had noticed yet). Publishing twice is harmless: every action is idempotent.
    async fn operator<F, Fut>(&self, what: &str, action: F) -> Result<(), ClusterError>
    where
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<(), ClusterError>>,
    {
        let within = self.settings.timeout.0.max(defaults::CLUSTER_ADMIN_TIMEOUT);
        let mut attempt = 1;
        loop {
            self.link.wait_connected(within).await;
            match action(within).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < defaults::CLUSTER_ADMIN_ATTEMPTS => {
                    log::info!("cluster: publishing {what} failed ({e}); trying again");
                    attempt += 1;
                }
                Err(e) => {
                    log::warn!(
                        "cluster: publishing {what} failed ({e}) after {attempt} attempts; it \
                         applies on this replica only"
                    );
                    return Err(e);
                }
            }
        }
    }

    /// Hold slots admitted without Redis; they are added to Redis by the next renewal.
    pub(crate) fn hold_unshared(&self, keys: Vec<(String, usize)>) -> Lease {
        self.leases.hold_unshared(keys)
    }
}

/// How the links are checked, from the settings.
fn liveness(config: &settings::Cluster) -> Liveness {
    Liveness {
        interval: config.liveness_interval.0,
        timeout: config.liveness_timeout.0,
    }
}

/// A random replica id: 16 hex digits (unique enough among the replicas of one Redis).
fn replica_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}
