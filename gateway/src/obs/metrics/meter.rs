//! What a session holds to count itself: the open-connection gauge and duration ([`OpenSession`])
//! and the per-route message counters resolved once ([`Meter`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use prometheus::IntGauge;

use super::Metrics;
use crate::core::labels::{Class, Direction};

/// Keeps a WebSocket session counted in `portcullis_connections_open`; dropping it (however the
/// session ends) decrements the gauge and records the connection's duration.
#[derive(Debug)]
pub(crate) struct OpenSession {
    gauge: IntGauge,
    duration: prometheus::Histogram,
    started: Instant,
}

impl OpenSession {
    /// Count a session as open on `gauge` from now on.
    pub(super) fn start(gauge: IntGauge, duration: prometheus::Histogram) -> OpenSession {
        gauge.inc();
        OpenSession {
            gauge,
            duration,
            started: Instant::now(),
        }
    }

    /// Time since the session opened.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.gauge.dec();
        self.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Shards of a route's message counters: each thread counts into its own (with more threads
/// than this, some share one; counts stay exact, they only contend again).
const SHARDS: usize = 16;

/// Counters per shard: (messages, bytes) per direction and class, then plain bytes per direction.
const COUNTERS: usize = Direction::ALL.len() * Class::ALL.len() * 2 + Direction::ALL.len();

/// One cache line of counters, so two shards never share a line.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Line([AtomicU64; 8]);

const LINES_PER_SHARD: usize = COUNTERS.div_ceil(8);

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, given out in turn as threads first count.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// The message and byte counters of one route, by direction and class. Cheap to clone; a
/// session keeps one and calls [`Meter::message`] per message. Counting writes only the calling
/// thread's shard (no cache line shared between threads on the message path); the Prometheus
/// counters get the sums when they are read ([`Meter::fold`], at every scrape). `Meter::default()`
/// counts nothing (for tests and sessions outside the gateway).
#[derive(Debug, Clone, Default)]
pub(crate) struct Meter {
    counters: Arc<Counters>,
}

/// A route's counters; empty when disabled.
#[derive(Debug, Default)]
struct Counters {
    /// `SHARDS` × `LINES_PER_SHARD` lines; empty when disabled.
    shards: Box<[Line]>,
    /// The Prometheus counter of each index, and what it has been given so far.
    targets: Vec<(IntCounter, AtomicU64)>,
    /// One fold at a time, so each count reaches its Prometheus counter once.
    folding: Mutex<()>,
}

/// The index of a direction and class's message count (its bytes are the next one).
fn class_index(direction: Direction, class: Class) -> usize {
    (direction.index() * Class::ALL.len() + class.index()) * 2
}

/// The index of a direction's plain byte count.
fn plain_index(direction: Direction) -> usize {
    Direction::ALL.len() * Class::ALL.len() * 2 + direction.index()
}

impl Meter {
    pub(super) fn resolve(metrics: &Metrics, route: &str) -> Meter {
        let mut targets = Vec::with_capacity(COUNTERS);
        for d in Direction::ALL {
            for c in Class::ALL {
                let labels = [route, d.as_str(), c.as_str()];
                debug_assert_eq!(targets.len(), class_index(d, c));
                targets.push(metrics.messages.with_label_values(&labels));
                targets.push(metrics.message_bytes.with_label_values(&labels));
            }
        }
        for d in Direction::ALL {
            debug_assert_eq!(targets.len(), plain_index(d));
            targets.push(
                metrics
                    .message_plain_bytes
                    .with_label_values(&[route, d.as_str()]),
            );
        }
        Meter {
            counters: Arc::new(Counters {
                shards: (0..SHARDS * LINES_PER_SHARD)
                    .map(|_| Line::default())
                    .collect(),
                targets: targets
                    .into_iter()
                    .map(|t| (t, AtomicU64::new(0)))
                    .collect(),
                folding: Mutex::new(()),
            }),
        }
    }

    /// Add `n` to counter `index` in this thread's shard.
    fn add(&self, index: usize, n: u64) {
        if self.counters.shards.is_empty() {
            return;
        }
        let line = SHARD.with(|s| *s) * LINES_PER_SHARD + index / 8;
        self.counters.shards[line].0[index % 8].fetch_add(n, Ordering::Relaxed);
    }

    /// Count one message of `bytes` payload bytes.
    pub(crate) fn message(&self, direction: Direction, class: Class, bytes: usize) {
        let i = class_index(direction, class);
        self.add(i, 1);
        self.add(i + 1, bytes as u64);
    }

    /// Count the plain size of a compressed message (its payload was counted by
    /// [`Meter::message`] as on the wire).
    pub(crate) fn plain(&self, direction: Direction, bytes: usize) {
        self.add(plain_index(direction), bytes as u64);
    }

    /// Give the Prometheus counters what was counted since the last fold.
    pub(super) fn fold(&self) {
        let c = &*self.counters;
        let _one = c.folding.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (target, given)) in c.targets.iter().enumerate() {
            let sum: u64 = (0..SHARDS)
                .map(|s| c.shards[s * LINES_PER_SHARD + i / 8].0[i % 8].load(Ordering::Relaxed))
                .sum();
            let before = given.swap(sum, Ordering::Relaxed);
            if sum > before {
                target.inc_by(sum - before);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_fold_exactly_once() {
        let metrics = Metrics::new();
        let meter = metrics.meter("/m");
        // More threads than shards: some share one, and every count still lands once.
        std::thread::scope(|s| {
            for _ in 0..SHARDS + 4 {
                let meter = meter.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        meter.message(Direction::ToClient, Class::Text, 3);
                        meter.plain(Direction::ToClient, 5);
                    }
                });
            }
        });
        let text = metrics.render();
        let threads = (SHARDS + 4) as u64;
        for (series, value) in [
            (
                "portcullis_messages_total{class=\"text\",direction=\"to_client\",route=\"/m\"}",
                threads * 1000,
            ),
            (
                "portcullis_message_bytes_total{class=\"text\",direction=\"to_client\",route=\"/m\"}",
                threads * 3000,
            ),
        ] {
            assert!(text.contains(&format!("{series} {value}\n")), "{series}: {text}");
        }
        // A second fold adds nothing; new counts add only themselves.
        meter.message(Direction::ToClient, Class::Text, 3);
        let text = metrics.render();
        assert!(text.contains(&format!(
            "portcullis_messages_total{{class=\"text\",direction=\"to_client\",route=\"/m\"}} {}\n",
            threads * 1000 + 1
        )));
    }
}
