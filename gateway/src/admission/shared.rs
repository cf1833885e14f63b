//! Rates and caps that count across replicas when `[cluster]` is set: the admission side of the
//! cluster store. A check asks Redis first; when Redis fails, the policy's `on_error` decides:
//! `open` takes this process's own limiter and caps (which are always kept, so a fallback is
//! exact for this process) and marks the decision as a fallback, `closed` refuses with `503`.
//! Either way the failure costs at most `[cluster] timeout`.

use std::hash::Hash;

use super::caps::Slot;
use super::rate::{rate_limited, HandshakeRate};
use super::Rejection;
use crate::cluster::{Cluster, Taken};
use crate::config::cluster::OnError;
use crate::config::defaults;
use crate::core::labels::Fallback;
use crate::core::reason::Reason;

/// The cluster as one policy uses it.
#[derive(Clone, Copy)]
pub(super) struct Shared<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) on_error: OnError,
}

/// A cap checked across replicas: its key, its cap, and who it counts (for the refusal).
pub(super) struct SharedCap {
    pub(super) key: String,
    pub(super) cap: usize,
    pub(super) who: &'static str,
}

impl Shared<'_> {
    /// What a failed call means for this handshake: `Ok(())` to decide locally (counted),
    /// or the 503 to send.
    fn failed(&self, e: &crate::cluster::ClusterError) -> Result<(), Rejection> {
        log::debug!("cluster: {e}; on_error = {}", self.on_error.as_str());
        match self.on_error {
            OnError::Open => {
                self.cluster.metrics().cluster_fallback(Fallback::Local);
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
                )
                .fallback(true))
            }
        }
    }

    /// A handshake rate: across replicas, or under `local` when Redis failed (`fallback` is
    /// set then).
    pub(super) async fn rate<K: Hash + Eq + Clone>(
        &self,
        key: String,
        local: &HandshakeRate<K>,
        local_key: &K,
        fallback: &mut bool,
    ) -> Result<(), Rejection> {
        match self.cluster.rate(&key, local.gcra).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait)) => Err(rate_limited(wait)),
            Err(e) => {
                self.failed(&e)?;
                *fallback = true;
                local
                    .check(local_key)
                    .map_err(|wait| rate_limited(wait).fallback(true))
            }
        }
    }

    /// Take one slot under every cap, all or none. The local caps were taken already, so on a
    /// fallback the socket is admitted and its slots join Redis once it answers again.
    pub(super) async fn caps(
        &self,
        caps: Vec<SharedCap>,
        fallback: &mut bool,
        over: impl Fn(&str) -> Rejection,
    ) -> Result<Slot, Rejection> {
        let keys: Vec<(String, usize)> = caps.iter().map(|c| (c.key.clone(), c.cap)).collect();
        match self.cluster.take(keys.clone()).await {
            Ok(Taken::Held(lease)) => Ok(Slot::holding(lease)),
            Ok(Taken::Full(i)) => Err(over(caps[i].who)),
            Err(e) => {
                self.failed(&e)?;
                *fallback = true;
                Ok(Slot::holding(self.cluster.hold_unshared(keys)))
            }
        }
    }
}
