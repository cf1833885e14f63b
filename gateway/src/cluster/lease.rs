//! Connection caps across replicas: leases. Every counted key (per IP, per subject, per route) is
//! a sorted set whose members are `replica:socket` and whose scores are lease expiries, in
//! Redis's own clock. Taking slots is one script: drop the expired members of every key, count,
//! and add the socket to all of them only if each is under its cap. This replica renews its
//! members every third of `lease_ttl` (re-adding them, so a Redis restarted empty is refilled),
//! and removes them when the socket ends, however it ends: dropping a [`Lease`] only sends a
//! message to the heartbeat task, so it never blocks. A replica that dies stops renewing and its
//! members expire within `lease_ttl`; a socket open for a week is renewed for a week.
//!
//! On a Redis Cluster a script or a pipeline may only touch keys of one slot: the keys of one
//! socket share their policy's hash tag (`Cluster::cap_key`), and renewals and releases are
//! batched per slot ([`Leases::new`]'s `by_slot`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::cluster_routing::Slot;
use tokio::sync::mpsc;

use super::link::Link;
use super::ClusterError;
use crate::config::defaults;
use crate::core::labels::ClusterOp;
use crate::obs::metrics::Metrics;

/// Drop expired members, check every key against its cap, then add the member to all.
/// KEYS: the counted keys. ARGV: member, ttl (ms), then one cap per key. Returns 0 when the
/// slots were taken, else the (1-based) index of the first key at its cap.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now))
  if redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
    return i
  end
end
local expiry = string.format('%.0f', now + ttl)
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, ARGV[1])
  redis.call('PEXPIRE', key, ttl)
end
return 0
";

/// Renew (or re-add) members. KEYS: the keys. ARGV: ttl (ms), then for each key the number of
/// its members followed by them.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local expiry = string.format('%.0f', now + ttl)
local at = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  for j = 1, n do
    redis.call('ZADD', key, expiry, ARGV[at + j])
  end
  at = at + n + 1
  redis.call('PEXPIRE', key, ttl)
end
return 0
";

/// What the heartbeat task learns from the request path.
enum Event {
    /// A socket holds slots under these keys (shared, or taken locally while Redis failed: the
    /// next renewal adds those, so counting is shared again once Redis is back).
    Held { socket: u64, keys: Vec<String> },
    /// The socket ended: give its slots back.
    Released { socket: u64 },
}

/// A socket's slots; dropping it gives them back (without blocking: the heartbeat task does).
pub(crate) struct Lease {
    socket: u64,
    events: mpsc::UnboundedSender<Event>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Released {
            socket: self.socket,
        });
    }
}

/// The result of trying to take slots.
pub(crate) enum Taken {
    /// Every key was under its cap: the socket holds a slot in each.
    Held(Lease),
    /// The key at this index (into the keys given) is at its cap.
    Full(usize),
}

/// This replica's leases.
pub(crate) struct Leases {
    replica: String,
    ttl: Duration,
    next: AtomicU64,
    events: mpsc::UnboundedSender<Event>,
    take: redis::Script,
    renew: redis::Script,
    /// The heartbeat's end of the channel. It lives here, not in the task, so that a heartbeat
    /// restarted after a panic takes over the same channel (the lock also keeps it to one).
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    /// The keys of every socket that holds slots, by socket: what the heartbeat renews. Here
    /// for the same reason: a restarted heartbeat renews the sockets its predecessor knew.
    held: Mutex<HashMap<u64, Vec<String>>>,
    /// Batch renewals and releases per slot (a Redis Cluster).
    by_slot: bool,
}

impl Leases {
    pub(crate) fn new(replica: String, ttl: Duration, by_slot: bool) -> Leases {
        let (events, inbox) = mpsc::unbounded_channel();
        Leases {
            replica,
            ttl,
            next: AtomicU64::new(1),
            events,
            take: redis::Script::new(TAKE),
            renew: redis::Script::new(RENEW),
            inbox: tokio::sync::Mutex::new(inbox),
            held: Mutex::new(HashMap::new()),
            by_slot,
        }
    }

    /// Which batch a key goes in: its slot on a Redis Cluster, else one for all.
    fn batch_of(&self, key: &str) -> Option<Slot> {
        self.by_slot.then(|| Slot::for_key(key))
    }

    fn member(&self, socket: u64) -> String {
        format!("{}:{socket}", self.replica)
    }

    /// Take one slot under each of `keys` (key, cap), all or none, in one round trip that may
    /// take `within`.
    pub(crate) async fn take(
        &self,
        link: &Link,
        within: Duration,
        keys: Vec<(String, usize)>,
    ) -> Result<Taken, ClusterError> {
        let socket = self.next.fetch_add(1, Ordering::Relaxed);
        let member = self.member(socket);
        let mut invocation = self.take.prepare_invoke();
        invocation.arg(&member).arg(self.ttl.as_millis() as u64);
        for (key, cap) in &keys {
            invocation.key(key);
            invocation.arg(*cap);
        }
        let result = link
            .call_within(ClusterOp::Take, within, |mut conn| async move {
                invocation.invoke_async::<usize>(&mut conn).await
            })
            .await;
        match result {
            Ok(0) => Ok(Taken::Held(self.hold(socket, keys))),
            Ok(i) if i <= keys.len() => Ok(Taken::Full(i - 1)),
            Ok(i) => Err(ClusterError::Response(format!("take script answered {i}"))),
            Err(e) => {
                if e.may_have_run() {
                    // The script may have run after all (a timeout): leave nothing behind.
                    drop(self.hold(socket, keys));
                }
                Err(e)
            }
        }
    }

    /// Hold slots that Redis could not be asked for (admitted under the local limits while it
    /// failed): the heartbeat adds them once Redis answers again.
    pub(crate) fn hold_unshared(&self, keys: Vec<(String, usize)>) -> Lease {
        let socket = self.next.fetch_add(1, Ordering::Relaxed);
        self.hold(socket, keys)
    }

    fn hold(&self, socket: u64, keys: Vec<(String, usize)>) -> Lease {
        let keys = keys.into_iter().map(|(k, _)| k).collect();
        let _ = self.events.send(Event::Held { socket, keys });
        Lease {
            socket,
            events: self.events.clone(),
        }
    }

    /// The heartbeat: follows the sockets' slots, renews them every `ttl / 3` and on every new
    /// connection (a Redis that restarted empty is refilled at once), and gives back the slots
    /// of ended sockets. Runs until the process ends (on the cluster thread, supervised: a
    /// panic between taking ended sockets off `held` and releasing them leaves those to expire).
    pub(crate) async fn run(self: Arc<Self>, link: Arc<Link>, metrics: Arc<Metrics>) {
        let mut inbox = self.inbox.lock().await;
        let mut epochs = link.epochs();
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = inbox.recv() => {
                    let Some(event) = event else { return };
                    let mut released = Vec::new();
                    {
                        let mut held = self.held.lock().expect("leases lock");
                        apply(event, &mut held, &mut released, &metrics);
                        // Take whatever else is queued, so that a burst of ends is one call.
                        while let Ok(event) = inbox.try_recv() {
                            apply(event, &mut held, &mut released, &metrics);
                        }
                    }
                    if !released.is_empty() {
                        self.release(&link, released).await;
                    }
                }
                _ = tick.tick() => self.renew(&link).await,
                changed = epochs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.renew(&link).await;
                }
            }
        }
    }

    /// How many sockets hold slots.
    #[cfg(test)]
    fn sockets(&self) -> usize {
        self.held.lock().expect("leases lock").len()
    }

    /// Remove ended sockets' members (one pipeline, or one per slot on a Redis Cluster). A
    /// failure leaves them to expire.
    async fn release(&self, link: &Link, released: Vec<(u64, Vec<String>)>) {
        let mut pipes: HashMap<Option<Slot>, redis::Pipeline> = HashMap::new();
        for (socket, keys) in &released {
            let member = self.member(*socket);
            for key in keys {
                let pipe = pipes.entry(self.batch_of(key)).or_insert_with(redis::pipe);
                pipe.zrem(key, &member).ignore();
            }
        }
        for (_, pipe) in pipes {
            let _ = link
                .call(ClusterOp::Release, |mut conn| async move {
                    pipe.query_async::<()>(&mut conn).await
                })
                .await;
        }
    }

    /// Renew every held slot, in batches of at most `CLUSTER_RENEW_BATCH` members.
    async fn renew(&self, link: &Link) {
        if !link.connected() {
            return;
        }
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for (socket, keys) in self.held.lock().expect("leases lock").iter() {
            for key in keys {
                by_key
                    .entry(key.clone())
                    .or_default()
                    .push(self.member(*socket));
            }
        }
        if by_key.is_empty() {
            return;
        }
        let mut groups: HashMap<Option<Slot>, Vec<(String, Vec<String>)>> = HashMap::new();
        for (key, members) in by_key {
            groups
                .entry(self.batch_of(&key))
                .or_default()
                .push((key, members));
        }
        let script = &self.renew;
        let ttl = self.ttl.as_millis() as u64;
        for (_, keys) in groups {
            let mut batch = script.prepare_invoke();
            batch.arg(ttl);
            let mut in_batch = 0;
            for (key, members) in keys {
                for chunk in members.chunks(defaults::CLUSTER_RENEW_BATCH) {
                    batch.key(&key).arg(chunk.len()).arg(chunk);
                    in_batch += chunk.len();
                    if in_batch >= defaults::CLUSTER_RENEW_BATCH {
                        let full = std::mem::replace(&mut batch, script.prepare_invoke());
                        batch.arg(ttl);
                        in_batch = 0;
                        if Self::send_renewal(link, full).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if in_batch > 0 && Self::send_renewal(link, batch).await.is_err() {
                return;
            }
        }
    }

    async fn send_renewal(
        link: &Link,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<(), ClusterError> {
        link.call(ClusterOp::Renew, |mut conn| async move {
            invocation.invoke_async::<()>(&mut conn).await
        })
        .await
    }
}

/// Follow one event in `held` (and the gauge of slots held); ended sockets' slots go to
/// `released`.
fn apply(
    event: Event,
    held: &mut HashMap<u64, Vec<String>>,
    released: &mut Vec<(u64, Vec<String>)>,
    metrics: &Metrics,
) {
    match event {
        Event::Held { socket, keys } => {
            metrics.cluster_leases(keys.len() as i64);
            held.insert(socket, keys);
        }
        Event::Released { socket } => {
            if let Some(keys) = held.remove(&socket) {
                metrics.cluster_leases(-(keys.len() as i64));
                released.push((socket, keys));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heartbeat that ends at an await point, as a panicking one does, and is started again
    /// (as `supervise` does) still gets the sockets' events and knows the sockets before it.
    #[tokio::test]
    async fn a_restarted_heartbeat_keeps_its_channel_and_its_sockets() {
        let metrics = Arc::new(Metrics::new());
        // No Redis: calls fail at once as not connected, which is all the heartbeat needs here.
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let link = Arc::new(Link::new(
            Arc::new(super::super::endpoint::Endpoint::Direct(client)),
            "test".into(),
            Duration::from_millis(50),
            super::super::link::Liveness {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
            },
            metrics.clone(),
        ));
        let leases = Arc::new(Leases::new("r".into(), Duration::from_secs(3), false));
        let until = |want: usize| {
            let leases = leases.clone();
            async move {
                while leases.sockets() != want {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let lease = leases.hold_unshared(vec![("k".into(), 1)]);
        let first = tokio::spawn(leases.clone().run(link.clone(), metrics.clone()));
        tokio::time::timeout(Duration::from_secs(5), until(1))
            .await
            .expect("the first heartbeat follows the socket");
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        drop(lease);
        let second = tokio::spawn(leases.clone().run(link, metrics));
        tokio::time::timeout(Duration::from_secs(5), until(0))
            .await
            .expect("the restarted heartbeat gets the release of a socket it did not see come");
        second.abort();
    }
}
