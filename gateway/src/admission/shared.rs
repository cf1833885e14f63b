//! Rates and caps that count across replicas when `[cluster]` is set: the admission side of the
//! cluster store. A check asks Redis first; when Redis fails, the policy's `on_error` decides:
//! `open` takes this process's own limiter and caps (which are always kept, so a fallback is
//! exact for this process) and marks the decision as a fallback, `closed` refuses with `503`.
//! All of one handshake's calls share one `[cluster] timeout` (`cluster::Budget`), and after
//! the first failure the rest of its checks are decided without asking, so a failing Redis
//! costs a handshake at most that timeout.

use std::hash::Hash;

use super::caps::Slot;
use super::rate::{rate_limited, HandshakeRate};
use super::Rejection;
use crate::cluster::{Budget, Cluster, ClusterError, Taken};
use crate::config::cluster::OnError;
use crate::config::defaults;
use crate::core::labels::Fallback;
use crate::core::reason::Reason;
use crate::obs::trace;

/// The cluster as one handshake under one policy uses it.
pub(super) struct Shared<'a> {
    pub(super) cluster: &'a Cluster,
    on_error: OnError,
    /// What is left of the handshake's time for Redis.
    budget: Budget,
    /// A check was decided under this process's own limits because Redis failed.
    pub(super) fallback: bool,
}

/// A cap checked across replicas: its key, its cap, and who it counts (for the refusal).
pub(super) struct SharedCap {
    pub(super) key: String,
    pub(super) cap: usize,
    pub(super) who: &'static str,
}

impl<'a> Shared<'a> {
    pub(super) fn new(cluster: &'a Cluster, on_error: OnError) -> Shared<'a> {
        Shared {
            cluster,
            on_error,
            budget: cluster.budget(),
            fallback: false,
        }
    }

    /// What a failed call means for this handshake: `Ok(())` to decide locally (counted, and
    /// marked as a fallback), or the 503 to send (not a fallback: nothing was decided here, so
    /// its access-log line has no `cluster=local_fallback`; its reason says why).
    fn failed(&mut self, e: &ClusterError) -> Result<(), Rejection> {
        log::debug!("cluster: {e}; on_error = {}", self.on_error.as_str());
        match self.on_error {
            OnError::Open => {
                self.cluster.metrics().cluster_fallback(Fallback::Local);
                self.fallback = true;
                Ok(())
            }
            OnError::Closed => {
                self.cluster.metrics().cluster_fallback(Fallback::Refused);
                Err(Rejection::new(
                    Reason::ClusterUnavailable,
                    503,
                    "limits unavailable, try again\n",
                )
                .header(
                    "Retry-After",
                    defaults::CLUSTER_RETRY_AFTER_SECS.to_string(),
                ))
            }
        }
    }

    /// A handshake rate: across replicas, or under `local` when Redis failed.
    pub(super) async fn rate<K: Hash + Eq + Clone>(
        &mut self,
        key: String,
        local: &HandshakeRate<K>,
        local_key: &K,
    ) -> Result<(), Rejection> {
        let call = self.cluster.rate(&mut self.budget, &key, local.gcra);
        match trace::step("cluster.rate", "redis", call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait)) => Err(rate_limited(wait)),
            Err(e) => {
                self.failed(&e)?;
                local
                    .check(local_key)
                    .map_err(|wait| rate_limited(wait).fallback(true))
            }
        }
    }

    /// Take one slot under every cap, all or none. The local caps were taken already, so on a
    /// fallback the socket is admitted and its slots join Redis once it answers again.
    pub(super) async fn caps(
        &mut self,
        caps: Vec<SharedCap>,
        over: impl Fn(&str) -> Rejection,
    ) -> Result<Slot, Rejection> {
        let keys: Vec<(String, usize)> = caps.iter().map(|c| (c.key.clone(), c.cap)).collect();
        let call = self.cluster.take(&mut self.budget, keys.clone());
        match trace::step("cluster.take", "redis", call).await {
            Ok(Taken::Held(lease)) => Ok(Slot::holding(lease)),
            Ok(Taken::Full(i)) => Err(over(caps[i].who)),
            Err(e) => {
                self.failed(&e)?;
                Ok(Slot::holding(self.cluster.hold_unshared(keys)))
            }
        }
    }
}
