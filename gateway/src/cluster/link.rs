//! The connection to Redis: one multiplexed connection shared by every caller, each call bounded
//! by `[cluster] timeout`, and a background loop that (re)connects with backoff.
//!
//! A call never waits for a connection: while there is none it fails at once
//! ([`ClusterError::Unavailable`]), so a handshake with Redis down costs no time at all. A call
//! that times out or whose connection breaks drops the connection; the loop then reconnects
//! (100 ms, doubling to 5 s), checks the new connection with a `PING` under the same timeout,
//! and only then puts it in use. Each new connection gets a new epoch, which the lease
//! heartbeat watches to refill a Redis that may have restarted empty.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::{watch, Notify};

use super::error::ClusterError;
use crate::config::defaults;
use crate::core::labels::ClusterOp;
use crate::obs::metrics::Metrics;

/// A connection in use, and its epoch.
struct Live {
    epoch: u64,
    conn: MultiplexedConnection,
}

/// The shared connection to Redis.
pub(crate) struct Link {
    client: redis::Client,
    /// For logs: the URL as configured (it holds no credentials).
    url: String,
    timeout: Duration,
    live: ArcSwapOption<Live>,
    /// Wakes the connect loop when a call broke the connection.
    broken: Notify,
    /// The epoch of the connection in use (0: none yet); changes on every new connection.
    epoch: watch::Sender<u64>,
    /// Why the last connection attempt or call failed, while there is no connection.
    last_error: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
}

impl Link {
    pub(crate) fn new(
        client: redis::Client,
        url: String,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Link {
        metrics.init_cluster();
        metrics.cluster_connected(false);
        Link {
            client,
            url,
            timeout,
            live: ArcSwapOption::empty(),
            broken: Notify::new(),
            epoch: watch::channel(0).0,
            last_error: Mutex::new(Some("not connected yet".into())),
            metrics,
        }
    }

    /// `None` while connected; otherwise why not (for `/readyz`; never a secret).
    pub(crate) fn down_because(&self) -> Option<String> {
        if self.live.load().is_some() {
            return None;
        }
        Some(
            self.last_error
                .lock()
                .expect("link lock")
                .clone()
                .unwrap_or_else(|| "not connected".into()),
        )
    }

    /// Follows the epoch of the connection in use.
    pub(crate) fn epochs(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Run one call on the shared connection, bounded by the timeout, and count it.
    pub(crate) async fn call<T, F, Fut>(&self, op: ClusterOp, work: F) -> Result<T, ClusterError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = match self.live.load_full() {
            None => Err(ClusterError::Unavailable),
            Some(live) => {
                let result = match tokio::time::timeout(self.timeout, work(live.conn.clone())).await
                {
                    Err(_) => Err(ClusterError::Timeout),
                    Ok(r) => r.map_err(ClusterError::from),
                };
                if let Err(e) = &result {
                    if e.breaks_link() {
                        self.drop_connection(live.epoch, e);
                    }
                }
                result
            }
        };
        self.metrics.cluster_call(
            op,
            result.as_ref().err().map(ClusterError::label),
            started.elapsed(),
        );
        result
    }

    /// Stop using the connection of `epoch` (unless a newer one replaced it already).
    fn drop_connection(&self, epoch: u64, why: &ClusterError) {
        let current = self.live.load();
        if current.as_ref().is_some_and(|l| l.epoch == epoch) {
            // A racing caller may have swapped already; compare_and_swap keeps a newer one.
            let prev = self.live.compare_and_swap(&*current, None);
            if prev.as_ref().is_some_and(|l| l.epoch == epoch) {
                log::warn!(
                    "cluster: lost the connection to {} ({why}); reconnecting",
                    self.url
                );
                *self.last_error.lock().expect("link lock") = Some(why.to_string());
                self.metrics.cluster_connected(false);
                self.broken.notify_one();
            }
        }
    }

    /// Connect, and reconnect with backoff whenever the connection is lost. Runs until the
    /// process ends (on the cluster thread).
    pub(crate) async fn run(self: Arc<Self>) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(defaults::CLUSTER_CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let mut backoff = defaults::CLUSTER_RECONNECT_MIN;
        let mut next_epoch = 1;
        let mut reported = false;
        loop {
            if self.live.load().is_some() {
                self.broken.notified().await;
                continue;
            }
            let started = Instant::now();
            match self.connect(&config).await {
                Ok(conn) => {
                    self.metrics
                        .cluster_call(ClusterOp::Connect, None, started.elapsed());
                    self.live.store(Some(Arc::new(Live {
                        epoch: next_epoch,
                        conn,
                    })));
                    *self.last_error.lock().expect("link lock") = None;
                    self.metrics.cluster_connected(true);
                    self.epoch.send_replace(next_epoch);
                    next_epoch += 1;
                    backoff = defaults::CLUSTER_RECONNECT_MIN;
                    reported = false;
                    log::info!("cluster: connected to {}", self.url);
                }
                Err(e) => {
                    self.metrics.cluster_call(
                        ClusterOp::Connect,
                        Some(e.label()),
                        started.elapsed(),
                    );
                    if !reported {
                        log::warn!(
                            "cluster: cannot connect to {} ({e}); deciding without it and \
                             retrying with backoff",
                            self.url
                        );
                        reported = true;
                    }
                    *self.last_error.lock().expect("link lock") = Some(e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(defaults::CLUSTER_RECONNECT_MAX);
                }
            }
        }
    }

    /// One connection attempt: connect (authenticating and selecting the database), then a
    /// `PING` within the call timeout, so that a Redis that accepts but does not answer is not
    /// taken for up.
    async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, ClusterError> {
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeout.max(Duration::from_millis(100)), ping).await {
            Err(_) => Err(ClusterError::Timeout),
            Ok(r) => r.map(|_| conn).map_err(ClusterError::from),
        }
    }
}
