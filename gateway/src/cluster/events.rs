//! Operator actions that every replica must apply at once: closes and revocations, pushed on one
//! Redis pub/sub channel (`{prefix}events`), plus a key per revocation with its ttl, read when
//! the subscription (re)starts, so that a replica that starts later or missed messages while
//! disconnected still honours every revocation in force.
//!
//! The subscriber runs on the cluster thread with a connection of its own (subscribed
//! connections take no other commands), reconnecting with the same backoff as the link.
//! Received revocations go into [`Revocations::global`]; the sessions to close go to whoever
//! listens on [`Events::subscribe`] (the lifecycle applies them to the session registry).
//!
//! Every (re)subscription reads the revocation keys and replaces what this process held from
//! this store with them ([`Revocations::replace_from`]): a lift made while the replica was cut
//! off takes effect, and the open sessions of a revocation it had not seen are closed, as the
//! message it missed would have closed them. A replica applies its own revocation and lift
//! messages too (not its closes): they arrive after a read that may have raced with them, and
//! so settle it.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use std::sync::atomic::{AtomicU64, Ordering};

use super::link::Link;
use super::revocations::{Origin, Revocations, Revoked};
use super::ClusterError;
use crate::config::defaults;
use crate::core::labels::ClusterOp;

/// Which sessions a close means (every field set must match).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) jti: Option<String>,
}

/// Close the matching sessions with this code and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Close {
    pub(crate) target: Target,
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// A revocation's close (else an operator's).
    pub(crate) revoked: bool,
}

/// One message on the channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Message {
    Close {
        from: String,
        close: Close,
    },
    Revoke {
        from: String,
        who: Revoked,
        ttl_ms: u64,
    },
    Lift {
        from: String,
        who: Revoked,
    },
}

/// The channel, the keys and the closes to hand upward.
pub(crate) struct Events {
    channel: String,
    prefix: String,
    replica: String,
    /// Which store this is, for the revocations it holds (a reload may put another in force).
    store: u64,
    closes: broadcast::Sender<Close>,
}

impl Events {
    pub(crate) fn new(prefix: &str, replica: &str) -> Events {
        static STORES: AtomicU64 = AtomicU64::new(1);
        Events {
            channel: format!("{prefix}events"),
            prefix: prefix.to_string(),
            replica: replica.to_string(),
            store: STORES.fetch_add(1, Ordering::Relaxed),
            closes: broadcast::channel(1024).0,
        }
    }

    /// The closes other replicas asked for (revocations included).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Close> {
        self.closes.subscribe()
    }

    fn key(&self, who: &Revoked) -> String {
        format!("{}{}", self.prefix, who.key_part())
    }

    async fn publish(
        &self,
        link: &Link,
        within: Duration,
        message: &Message,
    ) -> Result<(), ClusterError> {
        let text = serde_json::to_string(message).expect("events serialize");
        let channel = self.channel.clone();
        link.call_within(ClusterOp::Event, within, |mut conn| async move {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&text)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    /// Ask every other replica to close the matching sessions; each call may take `within`.
    pub(crate) async fn close(
        &self,
        link: &Link,
        within: Duration,
        close: Close,
    ) -> Result<(), ClusterError> {
        let from = self.replica.clone();
        self.publish(link, within, &Message::Close { from, close })
            .await
    }

    /// Store the revocation for its ttl and tell every other replica; each call may take
    /// `within`.
    pub(crate) async fn revoke(
        &self,
        link: &Link,
        within: Duration,
        who: Revoked,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let key = self.key(&who);
        link.call_within(ClusterOp::Event, within, |mut conn| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut conn)
                .await
        })
        .await?;
        let from = self.replica.clone();
        let message = Message::Revoke {
            from,
            who: who.clone(),
            ttl_ms,
        };
        self.publish(link, within, &message).await?;
        Revocations::global().stored(&who, self.store);
        Ok(())
    }

    /// Remove the revocation and tell every other replica; each call may take `within`.
    pub(crate) async fn lift(
        &self,
        link: &Link,
        within: Duration,
        who: Revoked,
    ) -> Result<(), ClusterError> {
        let key = self.key(&who);
        link.call_within(ClusterOp::Event, within, |mut conn| async move {
            redis::cmd("DEL")
                .arg(&key)
                .query_async::<()>(&mut conn)
                .await
        })
        .await?;
        let from = self.replica.clone();
        self.publish(link, within, &Message::Lift { from, who })
            .await
    }

    /// Apply one message from another replica.
    fn apply(&self, text: &str) {
        let message: Message = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("cluster: ignoring an unreadable event ({e})");
                return;
            }
        };
        let origin = Origin::Store(self.store);
        match message {
            Message::Close { from, .. } if from == self.replica => {}
            Message::Close { close, .. } => {
                let _ = self.closes.send(close);
            }
            Message::Revoke { from, who, ttl_ms } => {
                let ttl = Duration::from_millis(ttl_ms);
                Revocations::global().add(who.clone(), ttl, origin);
                // Its own: the sessions were closed when the operator asked.
                if from != self.replica {
                    let _ = self.closes.send(revocation_close(who));
                }
            }
            Message::Lift { who, .. } => {
                Revocations::global().lift(&who);
            }
        }
    }

    /// Read every revocation key (after each (re)subscription): what the store holds replaces
    /// what this process had from it, and the sessions of revocations not in force here until
    /// now are closed. Returns how many are in force in the store, and how many were new.
    async fn load(&self, link: &Link) -> Result<(usize, usize), ClusterError> {
        let pattern = format!("{}revoked:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let pattern = pattern.clone();
            let (next, batch): (u64, Vec<String>) = link
                .call(ClusterOp::Event, |mut conn| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut loaded = Vec::new();
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("PTTL").arg(key);
            }
            let ttls: Vec<i64> = link
                .call(ClusterOp::Event, |mut conn| async move {
                    pipe.query_async(&mut conn).await
                })
                .await?;
            for (key, ttl) in chunk.iter().zip(ttls) {
                let who = key
                    .strip_prefix(&self.prefix)
                    .and_then(Revoked::from_key_part);
                if let (Some(who), true) = (who, ttl > 0) {
                    loaded.push((who, Duration::from_millis(ttl as u64)));
                }
            }
        }
        let in_force = loaded.len();
        let fresh = Revocations::global().replace_from(self.store, loaded);
        for who in &fresh {
            let _ = self.closes.send(revocation_close(who.clone()));
        }
        Ok((in_force, fresh.len()))
    }

    /// Subscribe, read the keys, apply messages; again after every failure, with backoff.
    /// Runs until the process ends (on the cluster thread).
    pub(crate) async fn run(&self, client: redis::Client, link: &Link) {
        let mut backoff = defaults::CLUSTER_RECONNECT_MIN;
        loop {
            match self.subscribe_and_load(&client, link).await {
                Ok(mut messages) => {
                    backoff = defaults::CLUSTER_RECONNECT_MIN;
                    while let Some(msg) = messages.next().await {
                        if let Ok(text) = msg.get_payload::<String>() {
                            self.apply(&text);
                        }
                    }
                    log::warn!("cluster: the event subscription ended; subscribing again");
                }
                Err(e) => log::debug!("cluster: cannot subscribe to events yet ({e})"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(defaults::CLUSTER_RECONNECT_MAX);
        }
    }

    async fn subscribe_and_load(
        &self,
        client: &redis::Client,
        link: &Link,
    ) -> Result<redis::aio::PubSubStream, ClusterError> {
        let connect = client.get_async_pubsub();
        let mut pubsub = tokio::time::timeout(defaults::CLUSTER_CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ClusterError::Timeout)??;
        tokio::time::timeout(
            defaults::CLUSTER_CONNECT_TIMEOUT,
            pubsub.subscribe(&self.channel),
        )
        .await
        .map_err(|_| ClusterError::Timeout)??;
        // Subscribed first, then the keys: a revocation made in between is in one or the other.
        // The link may learn only now that its connection is gone (nothing used it while the
        // line was down): then read again once it has a new one.
        let (in_force, fresh) = match self.load(link).await {
            Err(e) if link.wait_connected(defaults::CLUSTER_CONNECT_TIMEOUT).await => {
                log::debug!("cluster: reading the revocations again ({e})");
                self.load(link).await?
            }
            read => read?,
        };
        if in_force > 0 {
            log::info!(
                "cluster: {in_force} revocation(s) in force read from Redis, {fresh} new here"
            );
        }
        Ok(pubsub.into_on_message())
    }
}

/// The close a revocation of `who` causes.
pub(crate) fn revocation_close(who: Revoked) -> Close {
    let mut target = Target::default();
    match who {
        Revoked::Subject(s) => target.subject = Some(s),
        Revoked::Jti(j) => target.jti = Some(j),
    }
    Close {
        target,
        code: crate::core::close::REVOKED.code,
        reason: crate::core::close::REVOKED.reason.into(),
        revoked: true,
    }
}
