//! Operator actions that every replica must apply at once: closes and revocations, pushed on one
//! Redis pub/sub channel (`{prefix}events`), each also kept in Redis for replicas that did not
//! hear it: a revocation (and a lift, as a tombstone) as a key with its ttl, a close in a sorted
//! set for [`defaults::CLUSTER_CLOSE_REPLAY`].
//!
//! The subscriber runs on the cluster thread with a connection of its own (subscribed
//! connections take no other commands), reconnecting with the same backoff as the link. It
//! checks that connection with `PING` every `[cluster] liveness_interval`: one unanswered for
//! `liveness_timeout` ends the subscription, so a flow dropped without FIN or RST is noticed in
//! about 2 s. While it is down, `/readyz` says that closes and revocations from other replicas
//! are not being heard ([`Events::deaf_because`]).
//!
//! Every (re)subscription, once subscribed (so that nothing falls between):
//! - reads the revocation and tombstone keys and merges them into [`Revocations::global`], the
//!   newer action winning; the open sessions of revocations newly in force are closed, as the
//!   message missed would have closed them;
//! - writes back what the store lacks or holds older ([`WRITE`]): a Redis restarted empty gets
//!   every replica's revocations and tombstones again, and a tombstone newer than a revocation
//!   keeps it lifted. What a write-back changes is published, so that connected replicas apply
//!   it too;
//! - replays the closes kept in Redis that this process has not applied (each close has an id,
//!   so a close heard and replayed acts once), to the sessions that were open when it was made.
//!
//! The merge and write-back run again on every new command connection while the subscription
//! stays up (after a failover to a replica that had not caught up, the subscription may
//! survive on the old server).
//!
//! Received revocations and lifts go into [`Revocations::global`]; the sessions to close go to
//! whoever listens on [`Events::subscribe`] (the lifecycle applies them to the session
//! registry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::endpoint::Endpoint;
use super::link::{Link, Liveness};
use super::revocations::{Mark, Revocations, Revoked, State};
use super::ClusterError;
use crate::config::defaults;
use crate::core::labels::ClusterOp;
use crate::obs::metrics::Metrics;

/// Store a revocation or a lift (a tombstone) unless the store holds an action on the same
/// name that is as new or newer. KEYS: the revocation key, the tombstone key. ARGV: `revoked`
/// or `lifted`; when the action happened (Unix ms; 0: now, in Redis's clock and after anything
/// stored); its ttl (ms; a tombstone lasts at least as long as the revocation it lifts has
/// left). Returns {1 if written, the action's time, its ttl}.
const WRITE: &str = r"
local function at_of(key)
  local v = redis.call('GET', key)
  if v then
    return tonumber(v) or 0
  end
  return -1
end
local newest = math.max(at_of(KEYS[1]), at_of(KEYS[2]))
local at = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
if at == 0 then
  local t = redis.call('TIME')
  at = math.max(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), newest + 1)
elseif at <= newest then
  return {0, newest, 0}
end
local write, gone = KEYS[1], KEYS[2]
if ARGV[1] == 'lifted' then
  write, gone = KEYS[2], KEYS[1]
  local left = redis.call('PTTL', KEYS[1])
  if left > ttl then
    ttl = left
  end
end
redis.call('SET', write, string.format('%.0f', at), 'PX', ttl)
redis.call('DEL', gone)
return {1, at, ttl}
";

/// Keep a close for replay and publish it. KEYS: the sorted set of recent closes. ARGV: the
/// channel, the message, how long closes are kept (ms). Returns when it was made (Unix ms).
const CLOSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - keep))
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[2])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return now
";

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
    /// A replayed close: only the sessions that started before this (Unix ms, when it was
    /// made), so that a close reaching a replica late never closes a session opened after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_before_ms: Option<u64>,
}

/// One message on the channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Message {
    Close {
        from: String,
        /// Unique per close (replica and number): a close heard and then replayed acts once.
        #[serde(default)]
        id: String,
        close: Close,
    },
    Revoke {
        from: String,
        who: Revoked,
        ttl_ms: u64,
        /// When it was made (0 from a replica that does not say: applied whatever is known).
        #[serde(default)]
        at: u64,
    },
    Lift {
        from: String,
        who: Revoked,
        #[serde(default)]
        ttl_ms: u64,
        #[serde(default)]
        at: u64,
    },
}

/// The channel, the keys and the closes to hand upward.
pub(crate) struct Events {
    channel: String,
    prefix: String,
    /// What the revocation and tombstone keys start with: the prefix, and on a Redis Cluster
    /// the hash tag that puts them all in one slot (so one node is scanned).
    marks_prefix: String,
    replica: String,
    closes: broadcast::Sender<Close>,
    write: redis::Script,
    close_script: redis::Script,
    /// The numbers of this replica's closes (their ids).
    next_close: AtomicU64,
    /// The closes applied here, by id, and when: a replay skips them. Pruned after twice the
    /// replay time.
    applied: Mutex<HashMap<String, Instant>>,
    /// Why closes and revocations from other replicas are not being heard, while they are not.
    deaf: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
}

impl Events {
    pub(crate) fn new(
        prefix: &str,
        redis_cluster: bool,
        replica: &str,
        metrics: Arc<Metrics>,
    ) -> Events {
        metrics.cluster_subscribed(false);
        let tag = if redis_cluster { "{revocations}" } else { "" };
        Events {
            channel: format!("{prefix}events"),
            prefix: prefix.to_string(),
            marks_prefix: format!("{prefix}{tag}"),
            replica: replica.to_string(),
            closes: broadcast::channel(1024).0,
            write: redis::Script::new(WRITE),
            close_script: redis::Script::new(CLOSE),
            next_close: AtomicU64::new(1),
            applied: Mutex::new(HashMap::new()),
            deaf: Mutex::new(Some("not subscribed yet".into())),
            metrics,
        }
    }

    /// The closes other replicas asked for (revocations included).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Close> {
        self.closes.subscribe()
    }

    /// `None` while the subscription is up and answers; otherwise why not.
    pub(crate) fn deaf_because(&self) -> Option<String> {
        self.deaf.lock().expect("events lock").clone()
    }

    fn hearing(&self, why_not: Option<String>) {
        self.metrics.cluster_subscribed(why_not.is_none());
        *self.deaf.lock().expect("events lock") = why_not;
    }

    fn key(&self, who: &Revoked, state: State) -> String {
        format!("{}{}", self.marks_prefix, who.key_part(state))
    }

    fn closes_key(&self) -> String {
        format!("{}closes", self.prefix)
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

    /// Ask every other replica to close the matching sessions, now and (kept for
    /// [`defaults::CLUSTER_CLOSE_REPLAY`]) when their subscription comes back; the call may
    /// take `within`.
    pub(crate) async fn close(
        &self,
        link: &Link,
        within: Duration,
        close: Close,
    ) -> Result<(), ClusterError> {
        let number = self.next_close.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{number}", self.replica);
        let from = self.replica.clone();
        let text = serde_json::to_string(&Message::Close { from, id, close }).expect("serialize");
        let mut invocation = self.close_script.key(self.closes_key());
        invocation
            .arg(&self.channel)
            .arg(&text)
            .arg(defaults::CLUSTER_CLOSE_REPLAY.as_millis() as u64);
        link.call_within(ClusterOp::Event, within, |mut conn| async move {
            invocation.invoke_async::<u64>(&mut conn).await
        })
        .await
        .map(drop)
    }

    /// Store `mark` for `who` (`at` 0: now, after anything stored) unless the store holds an
    /// action as new or newer: the mark as stored, if it was.
    async fn write(
        &self,
        link: &Link,
        within: Duration,
        who: &Revoked,
        mark: Mark,
    ) -> Result<Option<Mark>, ClusterError> {
        let mut invocation = self.write.prepare_invoke();
        invocation
            .key(self.key(who, State::Revoked))
            .key(self.key(who, State::Lifted))
            .arg(mark.state.key_word())
            .arg(mark.at)
            .arg(mark.left.as_millis().max(1) as u64);
        let (written, at, ttl): (u8, u64, u64) = link
            .call_within(ClusterOp::Event, within, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok((written == 1).then_some(Mark {
            state: mark.state,
            left: Duration::from_millis(ttl),
            at,
        }))
    }

    /// The message that tells other replicas of `mark`.
    fn message(&self, who: Revoked, mark: Mark) -> Message {
        let (from, ttl_ms, at) = (self.replica.clone(), mark.left.as_millis() as u64, mark.at);
        match mark.state {
            State::Revoked => Message::Revoke {
                from,
                who,
                ttl_ms,
                at,
            },
            State::Lifted => Message::Lift {
                from,
                who,
                ttl_ms,
                at,
            },
        }
    }

    /// Store `mark` (an operator's action, stamped by Redis), hold it here as stored, and tell
    /// every other replica; each call may take `within`.
    async fn act(
        &self,
        link: &Link,
        within: Duration,
        who: Revoked,
        mark: Mark,
    ) -> Result<(), ClusterError> {
        let now = Mark { at: 0, ..mark };
        let stored = self
            .write(link, within, &who, now)
            .await?
            .ok_or_else(|| ClusterError::Response("the store refused a new action".into()))?;
        Revocations::global().set(who.clone(), stored);
        self.publish(link, within, &self.message(who, stored)).await
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
        let mark = Mark {
            state: State::Revoked,
            left: ttl,
            at: 0,
        };
        self.act(link, within, who, mark).await
    }

    /// Replace the revocation with a tombstone (`tombstone`: as this process made it) and tell
    /// every other replica; each call may take `within`.
    pub(crate) async fn lift(
        &self,
        link: &Link,
        within: Duration,
        who: Revoked,
        tombstone: Mark,
    ) -> Result<(), ClusterError> {
        self.act(link, within, who, tombstone).await
    }

    /// Apply one message from the channel (another replica's, or this one's own).
    fn apply(&self, text: &str) {
        let message: Message = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("cluster: ignoring an unreadable event ({e})");
                return;
            }
        };
        let mark = |state, ttl_ms: u64, at| Mark {
            state,
            left: Duration::from_millis(ttl_ms),
            at,
        };
        let record = |who: Revoked, mark: Mark| match mark.at {
            0 => Revocations::global().set(who, mark),
            _ => Revocations::global().merge(who, mark),
        };
        match message {
            Message::Close { from, .. } if from == self.replica => {}
            Message::Close { id, close, .. } => {
                if self.first_time(&id) {
                    let _ = self.closes.send(close);
                }
            }
            Message::Revoke {
                from,
                who,
                ttl_ms,
                at,
            } => {
                let newly = record(who.clone(), mark(State::Revoked, ttl_ms, at));
                // Its own: the sessions were closed when the operator asked.
                if newly && from != self.replica {
                    let _ = self.closes.send(revocation_close(who));
                }
            }
            Message::Lift {
                who, ttl_ms, at, ..
            } => {
                let ttl_ms = ttl_ms.max(defaults::REVOCATION_TOMBSTONE_MIN.as_millis() as u64);
                record(who, mark(State::Lifted, ttl_ms, at));
            }
        }
    }

    /// Whether the close `id` is applied here for the first time (and remember it). A close
    /// without an id (from a replica that does not give one) always is.
    fn first_time(&self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        let now = Instant::now();
        let mut applied = self.applied.lock().expect("events lock");
        applied.retain(|_, at| now.duration_since(*at) < defaults::CLUSTER_CLOSE_REPLAY * 2);
        applied.insert(id.to_string(), now).is_none()
    }

    /// Every key matching `pattern` (SCAN; on a Redis Cluster, on the node of the marks' slot).
    async fn scan(&self, link: &Link, pattern: String) -> Result<Vec<String>, ClusterError> {
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let pattern = pattern.clone();
            let slot_of = self.marks_prefix.clone();
            let answer = link
                .call(ClusterOp::Event, |mut conn| async move {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000);
                    conn.on_node_of(&slot_of, scan).await
                })
                .await?;
            let (next, batch): (u64, Vec<String>) = redis::from_redis_value(answer)
                .map_err(|e| ClusterError::Response(format!("SCAN answered {e}")))?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                return Ok(keys);
            }
        }
    }

    /// Every revocation and tombstone the store holds.
    async fn read_marks(&self, link: &Link) -> Result<HashMap<Revoked, Mark>, ClusterError> {
        let mut keys = self
            .scan(link, format!("{}revoked:*", self.marks_prefix))
            .await?;
        keys.extend(
            self.scan(link, format!("{}lifted:*", self.marks_prefix))
                .await?,
        );
        let mut marks = HashMap::new();
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.get(key).cmd("PTTL").arg(key);
            }
            let answers: Vec<redis::Value> = link
                .call(ClusterOp::Event, |mut conn| async move {
                    pipe.query_async(&mut conn).await
                })
                .await?;
            for (key, pair) in chunk.iter().zip(answers.chunks(2)) {
                let Some((state, who)) = key
                    .strip_prefix(&self.marks_prefix)
                    .and_then(Revoked::from_key_part)
                else {
                    continue;
                };
                let at: Option<String> = redis::from_redis_value_ref(&pair[0]).unwrap_or(None);
                let ttl: i64 = redis::from_redis_value_ref(&pair[1]).unwrap_or(-2);
                // A key without a ttl is none of ours; one gone meanwhile is nothing.
                if ttl <= 0 {
                    continue;
                }
                let mark = Mark {
                    state,
                    left: Duration::from_millis(ttl as u64),
                    // Written before actions had times (a bare "1"): older than any.
                    at: at.and_then(|a| a.parse().ok()).unwrap_or(0),
                };
                let newer = marks.get(&who).is_none_or(|m: &Mark| m.at < mark.at);
                if newer {
                    marks.insert(who, mark);
                }
            }
        }
        Ok(marks)
    }

    /// Merge the store's revocations and tombstones into this process's, and write back what
    /// the store lacks or holds older. Returns how many revocations the store held, how many
    /// were new here, and how many marks were written back.
    async fn settle(&self, link: &Link) -> Result<(usize, usize, usize), ClusterError> {
        let stored = self.read_marks(link).await?;
        let revocations = Revocations::global();
        let mut fresh = 0;
        for (who, mark) in &stored {
            if revocations.merge(who.clone(), *mark) {
                fresh += 1;
                let _ = self.closes.send(revocation_close(who.clone()));
            }
        }
        let mut written = 0;
        for (who, mark) in revocations.marks() {
            if stored.get(&who).is_some_and(|s| s.at >= mark.at) {
                continue;
            }
            if let Some(mark) = self.write(link, link.timeout(), &who, mark).await? {
                self.publish(link, link.timeout(), &self.message(who, mark))
                    .await?;
                written += 1;
            }
        }
        let in_store = stored
            .values()
            .filter(|m| m.state == State::Revoked)
            .count();
        Ok((in_store, fresh, written))
    }

    /// Apply the closes kept in the store that this process has not applied (a close made
    /// while it was not subscribed), each to the sessions open when it was made. Returns how
    /// many.
    async fn replay(&self, link: &Link) -> Result<usize, ClusterError> {
        let key = self.closes_key();
        let kept: Vec<(String, u64)> = link
            .call(ClusterOp::Event, |mut conn| async move {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let mut replayed = 0;
        for (text, at) in kept {
            let Ok(Message::Close { from, id, close }) = serde_json::from_str(&text) else {
                continue;
            };
            if from == self.replica || !self.first_time(&id) {
                continue;
            }
            let close = Close {
                started_before_ms: Some(at),
                ..close
            };
            let _ = self.closes.send(close);
            replayed += 1;
        }
        Ok(replayed)
    }

    /// Subscribe, catch up, apply messages, check the subscription; again after every
    /// failure, with backoff. Runs until the process ends (on the cluster thread).
    pub(crate) async fn run(&self, target: &Endpoint, link: &Link, liveness: Liveness) {
        let mut backoff = defaults::CLUSTER_RECONNECT_MIN;
        loop {
            match self.subscribe_and_catch_up(target, link).await {
                Ok((mut sink, mut messages)) => {
                    backoff = defaults::CLUSTER_RECONNECT_MIN;
                    self.hearing(None);
                    let why = self.listen(link, &mut sink, &mut messages, liveness).await;
                    log::warn!("cluster: the event subscription {why}; subscribing again");
                    self.hearing(Some(format!("the subscription {why}")));
                }
                Err(e) => {
                    log::debug!("cluster: cannot subscribe to events yet ({e})");
                    self.hearing(Some(format!("cannot subscribe ({e})")));
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(defaults::CLUSTER_RECONNECT_MAX);
        }
    }

    /// Apply messages until the subscription ends or a `PING` on it goes unanswered; why it
    /// ended.
    ///
    /// A new command connection while the subscription stays (the server behind the address
    /// may be another one, after a failover, or one restarted empty) settles the revocations
    /// again: what that server lacks is written back.
    async fn listen(
        &self,
        link: &Link,
        sink: &mut redis::aio::PubSubSink,
        messages: &mut redis::aio::PubSubStream,
        liveness: Liveness,
    ) -> String {
        let start = tokio::time::Instant::now() + liveness.interval;
        let mut tick = tokio::time::interval_at(start, liveness.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut epochs = link.epochs();
        loop {
            tokio::select! {
                Ok(()) = epochs.changed() => {
                    match self.settle(link).await {
                        Ok((_, fresh, written)) if fresh + written > 0 => log::info!(
                            "cluster: on a new connection, {fresh} revocation(s) new here, \
                             {written} revocation(s) or lift(s) written back"
                        ),
                        Ok(_) => {}
                        Err(e) => log::debug!("cluster: settling revocations failed ({e})"),
                    }
                }
                msg = messages.next() => match msg {
                    Some(msg) => {
                        if let Ok(text) = msg.get_payload::<String>() {
                            self.apply(&text);
                        }
                    }
                    None => return "ended".into(),
                },
                _ = tick.tick() => {
                    let started = Instant::now();
                    let ping = sink.ping::<redis::Value>();
                    let result = match tokio::time::timeout(liveness.timeout, ping).await {
                        Err(_) => Err(ClusterError::Timeout),
                        Ok(r) => r.map(drop).map_err(ClusterError::from),
                    };
                    let label = result.as_ref().err().map(ClusterError::label);
                    self.metrics.cluster_call(ClusterOp::Ping, label, started.elapsed());
                    match result {
                        Ok(()) | Err(ClusterError::Response(_)) => {}
                        Err(ClusterError::Timeout) => {
                            return format!(
                                "answered no PING within {:?} (liveness_timeout)",
                                liveness.timeout
                            )
                        }
                        Err(e) => return format!("failed its PING ({e})"),
                    }
                }
            }
        }
    }

    async fn subscribe_and_catch_up(
        &self,
        target: &Endpoint,
        link: &Link,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), ClusterError> {
        let client = target.primary().await?;
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
        // Subscribed first, then the store: an action made in between is in one or the other
        // (or both: applying it twice changes nothing). The link may learn only now that its
        // connection is gone (nothing used it while the line was down): then try again once
        // it has a new one.
        let catch_up = || async {
            let settled = self.settle(link).await?;
            let replayed = self.replay(link).await?;
            Ok::<_, ClusterError>((settled, replayed))
        };
        let ((in_store, fresh, written), replayed) = match catch_up().await {
            Err(e) if link.wait_connected(defaults::CLUSTER_CONNECT_TIMEOUT).await => {
                log::debug!("cluster: catching up again ({e})");
                catch_up().await?
            }
            done => done?,
        };
        if in_store + fresh + written + replayed > 0 {
            log::info!(
                "cluster: {in_store} revocation(s) in force read from Redis, {fresh} new here; \
                 {written} revocation(s) or lift(s) written back; {replayed} close(s) replayed"
            );
        }
        Ok(pubsub.split())
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
        started_before_ms: None,
    }
}
