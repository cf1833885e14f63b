//! The connection to Redis: one multiplexed connection shared by every caller, each call bounded
//! in time, and a background loop that (re)connects with backoff.
//!
//! A call never waits for a connection: while there is none it fails at once
//! ([`ClusterError::Unavailable`]), so a handshake with Redis down costs no time at all. The
//! connection is dropped, and the loop makes a new one, when a call says it is no good: it timed
//! out, it broke, or the server is a replica ([`ClusterError::breaks_link`]: after a failover the
//! old primary answers `READONLY` on the same connection for ever), or
//! [`defaults::CLUSTER_FAILURES_BEFORE_RECONNECT`] calls in a row failed for any reason. A new
//! connection is checked with `HELLO` under the call timeout: the server must answer, and must
//! not be a replica, before it is put in use. Each new connection gets a new epoch, which the
//! lease heartbeat watches to refill a Redis that may have restarted empty.
//!
//! Reconnecting is immediate after losing a connection that served calls, and waits the backoff
//! (100 ms, doubling to 5 s) after failed attempts and after losing a connection that never
//! served one (a server that accepts and checks fine but fails every call must not be hammered).
//!
//! The link is degraded ([`Link::down_because`], for `/readyz`) while it has no connection, and
//! while its last calls failed (for [`defaults::CLUSTER_RECENT_FAILURE`] unless a call
//! succeeds): a connection that is up but useless is not healthy.
//!
//! Liveness: a failing call is not the only way a dead connection is noticed. While connected,
//! the loop sends `PING` every [`Liveness::interval`]; one not answered within
//! [`Liveness::timeout`] drops the connection. A Redis killed while no handshake asks it, or a
//! flow a NAT or load balancer forgot (no FIN, no RST: the kernel would keep retransmitting
//! for minutes), is so noticed within interval + timeout (2 s by default), and `/readyz` and
//! `portcullis_cluster_connected` follow.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::AsyncConnectionConfig;
use tokio::sync::{watch, Notify};

use super::conn::Conn;
use super::endpoint::Endpoint;
use super::error::ClusterError;
use crate::config::defaults;
use crate::core::labels::ClusterOp;
use crate::obs::metrics::Metrics;

/// How each link to Redis is checked while nothing else shows it alive (`[cluster]
/// liveness_interval`, `liveness_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Liveness {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// A connection in use, and its epoch.
struct Live {
    epoch: u64,
    conn: Conn,
    /// A call succeeded on it (then losing it is worth an immediate reconnect).
    proven: AtomicBool,
}

/// The calls that failed in a row on the link (any connection), and the last one's error.
#[derive(Default)]
struct Failures {
    in_row: AtomicU32,
    last: Mutex<Option<(Instant, String)>>,
}

/// The shared connection to Redis.
pub(crate) struct Link {
    endpoint: Arc<Endpoint>,
    /// For logs: the URL as configured (it holds no credentials).
    url: String,
    timeout: Duration,
    liveness: Liveness,
    live: ArcSwapOption<Live>,
    /// Wakes the connect loop when a call broke the connection.
    broken: Notify,
    /// Whether the connection dropped last had served a call.
    dropped_proven: AtomicBool,
    /// The epoch of the connection in use (0: none yet); changes on every new connection.
    epoch: watch::Sender<u64>,
    /// The next connection's epoch (kept here, so a restarted connect loop never reuses one).
    next_epoch: AtomicU64,
    /// Why the last connection attempt or call failed, while there is no connection.
    last_error: Mutex<Option<String>>,
    failures: Failures,
    metrics: Arc<Metrics>,
}

impl Link {
    pub(crate) fn new(
        endpoint: Arc<Endpoint>,
        url: String,
        timeout: Duration,
        liveness: Liveness,
        metrics: Arc<Metrics>,
    ) -> Link {
        metrics.init_cluster();
        metrics.cluster_connected(false);
        Link {
            endpoint,
            url,
            timeout,
            liveness,
            live: ArcSwapOption::empty(),
            broken: Notify::new(),
            dropped_proven: AtomicBool::new(false),
            epoch: watch::channel(0).0,
            next_epoch: AtomicU64::new(1),
            last_error: Mutex::new(Some("not connected yet".into())),
            failures: Failures::default(),
            metrics,
        }
    }

    /// The longest one call may take (`[cluster] timeout`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether there is a connection in use (its calls may still fail).
    pub(crate) fn connected(&self) -> bool {
        self.live.load().is_some()
    }

    /// `None` while Redis answers; otherwise why not (for `/readyz`; never a secret): no
    /// connection, or recent calls failed.
    pub(crate) fn down_because(&self) -> Option<String> {
        if !self.connected() {
            return Some(
                self.last_error
                    .lock()
                    .expect("link lock")
                    .clone()
                    .unwrap_or_else(|| "not connected".into()),
            );
        }
        let in_row = self.failures.in_row.load(Ordering::Relaxed);
        if in_row == 0 {
            return None;
        }
        let last = self.failures.last.lock().expect("link lock");
        let (at, why) = last.as_ref()?;
        (at.elapsed() < defaults::CLUSTER_RECENT_FAILURE)
            .then(|| format!("{in_row} call(s) in a row failed (last: {why})"))
    }

    /// Follows the epoch of the connection in use.
    pub(crate) fn epochs(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Wait until there is a connection, at most `limit`; whether there is one.
    pub(crate) async fn wait_connected(&self, limit: Duration) -> bool {
        let mut epochs = self.epochs();
        let wait = async {
            while !self.connected() {
                if epochs.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.connected()
    }

    /// Run one call on the shared connection, bounded by `[cluster] timeout`, and count it.
    pub(crate) async fn call<T, F, Fut>(&self, op: ClusterOp, work: F) -> Result<T, ClusterError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_within(op, self.timeout, work).await
    }

    /// Run one call on the shared connection, bounded by `within`, and count it. A call that is
    /// not sent (no connection, or no time left) counts as an error but not in the latency
    /// histogram, and says nothing about the connection.
    pub(crate) async fn call_within<T, F, Fut>(
        &self,
        op: ClusterOp,
        within: Duration,
        work: F,
    ) -> Result<T, ClusterError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let unsent = match self.live.load_full() {
            None => ClusterError::Unavailable,
            Some(_) if within.is_zero() => ClusterError::Timeout,
            Some(live) => {
                let started = Instant::now();
                let result = match tokio::time::timeout(within, work(live.conn.clone())).await {
                    Err(_) => Err(ClusterError::Timeout),
                    Ok(r) => r.map_err(ClusterError::from),
                };
                self.metrics.cluster_call(
                    op,
                    result.as_ref().err().map(ClusterError::label),
                    started.elapsed(),
                );
                match &result {
                    Ok(_) => self.succeeded(&live),
                    Err(e) => self.failed(&live, e, within),
                }
                return result;
            }
        };
        self.metrics.cluster_call_unsent(op, unsent.label());
        Err(unsent)
    }

    fn succeeded(&self, live: &Live) {
        if !live.proven.load(Ordering::Relaxed) {
            live.proven.store(true, Ordering::Relaxed);
        }
        if self.failures.in_row.load(Ordering::Relaxed) != 0 {
            self.failures.in_row.store(0, Ordering::Relaxed);
            *self.failures.last.lock().expect("link lock") = None;
        }
    }

    /// A sent call failed: remember it (for `/readyz`), and drop the connection when the error
    /// says it is no good or when too many calls failed in a row. A call that timed out with
    /// less than the full timeout (what was left of a handshake's time) says nothing certain
    /// about the connection, so it only counts in the run.
    fn failed(&self, live: &Live, e: &ClusterError, within: Duration) {
        let in_row = self.failures.in_row.fetch_add(1, Ordering::Relaxed) + 1;
        *self.failures.last.lock().expect("link lock") = Some((Instant::now(), e.to_string()));
        let breaks = match e {
            ClusterError::Timeout => within >= self.timeout,
            e => e.breaks_link(),
        };
        if breaks {
            self.drop_connection(live.epoch, &e.to_string());
        } else if in_row >= defaults::CLUSTER_FAILURES_BEFORE_RECONNECT {
            self.drop_connection(
                live.epoch,
                &format!("{in_row} calls in a row failed, the last: {e}"),
            );
        }
    }

    /// Stop using the connection of `epoch` (unless a newer one replaced it already).
    fn drop_connection(&self, epoch: u64, why: &str) {
        let current = self.live.load();
        if current.as_ref().is_some_and(|l| l.epoch == epoch) {
            // A racing caller may have swapped already; compare_and_swap keeps a newer one.
            let prev = self.live.compare_and_swap(&*current, None);
            if let Some(prev) = prev.as_ref().filter(|l| l.epoch == epoch) {
                log::warn!(
                    "cluster: dropping the connection to {} ({why}); reconnecting",
                    self.url
                );
                *self.last_error.lock().expect("link lock") = Some(why.to_string());
                self.dropped_proven
                    .store(prev.proven.load(Ordering::Relaxed), Ordering::Relaxed);
                self.metrics.cluster_connected(false);
                self.broken.notify_one();
            }
        }
    }

    /// Connect, and reconnect with backoff whenever the connection is lost. Runs until the
    /// process ends (on the cluster thread, supervised: everything it must keep across a
    /// restart lives in the link).
    pub(crate) async fn run(self: Arc<Self>) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(defaults::CLUSTER_CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let mut backoff = defaults::CLUSTER_RECONNECT_MIN;
        let mut reported = false;
        // Whether a connection was in use when the loop last looked (then losing it decides
        // the wait before the next attempt).
        let mut had_one = false;
        loop {
            if let Some(live) = self.live.load_full() {
                had_one = true;
                // Until a call breaks it, or a PING goes unanswered.
                tokio::select! {
                    _ = self.broken.notified() => {}
                    _ = tokio::time::sleep(self.liveness.interval) => self.check(&live).await,
                }
                continue;
            }
            if std::mem::take(&mut had_one) {
                if self.dropped_proven.load(Ordering::Relaxed) {
                    backoff = defaults::CLUSTER_RECONNECT_MIN;
                } else {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(defaults::CLUSTER_RECONNECT_MAX);
                }
            }
            let started = Instant::now();
            match self.connect(&config).await {
                Ok(conn) => {
                    self.metrics
                        .cluster_call(ClusterOp::Connect, None, started.elapsed());
                    let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
                    self.live.store(Some(Arc::new(Live {
                        epoch,
                        conn,
                        proven: AtomicBool::new(false),
                    })));
                    *self.last_error.lock().expect("link lock") = None;
                    self.metrics.cluster_connected(true);
                    self.epoch.send_replace(epoch);
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

    /// The liveness check: `PING` on the connection in use, answered within
    /// [`Liveness::timeout`], or the connection is dropped. An answer proves the connection
    /// as a call's does (losing it later is worth an immediate reconnect).
    async fn check(&self, live: &Live) {
        let started = Instant::now();
        let mut conn = live.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<redis::Value>(&mut conn);
        let result = match tokio::time::timeout(self.liveness.timeout, ping).await {
            Err(_) => Err(ClusterError::Timeout),
            Ok(r) => r.map(|_| ()).map_err(ClusterError::from),
        };
        self.metrics.cluster_call(
            ClusterOp::Ping,
            result.as_ref().err().map(ClusterError::label),
            started.elapsed(),
        );
        match result {
            // An error answer is an answer (a user whose ACL forbids PING): the link is alive.
            Ok(()) | Err(ClusterError::Response(_)) => live.proven.store(true, Ordering::Relaxed),
            Err(ClusterError::Timeout) => self.drop_connection(
                live.epoch,
                &format!(
                    "no answer to PING within {:?} (liveness_timeout)",
                    self.liveness.timeout
                ),
            ),
            Err(e) => self.drop_connection(live.epoch, &format!("PING failed: {e}")),
        }
    }

    /// One connection attempt: find the primary (ask the Sentinels, if so configured),
    /// connect (authenticating and selecting the database), then `HELLO` within the call
    /// timeout, so that a Redis that accepts but does not answer is not taken for up, and one
    /// that is a replica (after a failover, the old primary) is not taken for the primary. A
    /// Redis Cluster connection learns the nodes and slots from the configured ones and routes
    /// to primaries itself; it must answer a `PING`.
    async fn connect(&self, config: &AsyncConnectionConfig) -> Result<Conn, ClusterError> {
        let within = self.timeout.max(Duration::from_millis(100));
        if let Some(cluster) = self.endpoint.redis_cluster() {
            let connect = cluster.get_async_connection();
            let mut conn = tokio::time::timeout(defaults::CLUSTER_CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| ClusterError::Timeout)??;
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<redis::Value>(&mut conn);
            return match tokio::time::timeout(within, ping).await {
                Err(_) => Err(ClusterError::Timeout),
                Ok(r) => r.map(|_| Conn::Cluster(conn)).map_err(ClusterError::from),
            };
        }
        let mut conn = self
            .endpoint
            .primary()
            .await?
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        let check = primary(&mut conn);
        match tokio::time::timeout(within, check).await {
            Err(_) => Err(ClusterError::Timeout),
            Ok(r) => r.map(|()| Conn::Single(conn)),
        }
    }
}

/// `Ok` when the server answers `HELLO` as a primary. A server without `HELLO` (before Redis 6)
/// or a user not allowed to call it gets the benefit of the doubt: it answered, and a replica
/// is caught by its first `READONLY` instead.
async fn primary(conn: &mut redis::aio::MultiplexedConnection) -> Result<(), ClusterError> {
    let hello = redis::cmd("HELLO").query_async::<redis::Value>(conn).await;
    let info = match hello.map_err(ClusterError::from) {
        Ok(info) => info,
        Err(ClusterError::Response(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    match role(&info) {
        Some(role) if role != "master" && role != "primary" => Err(ClusterError::Replica(format!(
            "the server's role is {role:?}"
        ))),
        _ => Ok(()),
    }
}

/// The `role` field of a `HELLO` answer (a flat list of names and values under RESP2, a map
/// under RESP3).
fn role(info: &redis::Value) -> Option<String> {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let pairs: Vec<(&Value, &Value)> = match info {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| Some((p.first()?, p.get(1)?)))
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs
        .into_iter()
        .find(|(k, _)| text(k).as_deref() == Some("role"))
        .and_then(|(_, v)| text(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_of_a_hello_answer() {
        let hello = |role: &str| {
            let wire = format!(
                "*6\r\n$6\r\nserver\r\n$5\r\nredis\r\n$4\r\nrole\r\n${}\r\n{role}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n",
                role.len()
            );
            redis::parse_redis_value(wire.as_bytes()).unwrap()
        };
        assert_eq!(role(&hello("replica")).as_deref(), Some("replica"));
        assert_eq!(role(&hello("master")).as_deref(), Some("master"));
        let resp3 = redis::parse_redis_value(b"%1\r\n+role\r\n+master\r\n").unwrap();
        assert_eq!(role(&resp3).as_deref(), Some("master"));
        assert_eq!(role(&redis::Value::Nil), None);
    }
}
