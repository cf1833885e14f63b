//! What a session holds to count itself: the open-connection gauge and duration ([`OpenSession`])
//! and the per-route message counters resolved once ([`Meter`]).

use std::sync::Arc;
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

/// The message and byte counters of one route, by direction and class. Cheap to clone; a
/// session keeps one and calls [`Meter::message`] per message. `Meter::default()` counts nothing
/// (for tests and sessions outside the gateway).
#[derive(Debug, Clone, Default)]
pub(crate) struct Meter {
    counters: Arc<Counters>,
}

/// A route's counters; empty when disabled.
#[derive(Debug, Default)]
struct Counters {
    /// `[direction][class]` → (messages, bytes).
    classes: Vec<Vec<(IntCounter, IntCounter)>>,
    /// `[direction]` → plain bytes of compressed messages.
    plain: Vec<IntCounter>,
}

impl Meter {
    pub(super) fn resolve(metrics: &Metrics, route: &str) -> Meter {
        let classes = Direction::ALL
            .iter()
            .map(|d| {
                Class::ALL
                    .iter()
                    .map(|c| {
                        let labels = [route, d.as_str(), c.as_str()];
                        (
                            metrics.messages.with_label_values(&labels),
                            metrics.message_bytes.with_label_values(&labels),
                        )
                    })
                    .collect()
            })
            .collect();
        let plain = Direction::ALL
            .iter()
            .map(|d| {
                metrics
                    .message_plain_bytes
                    .with_label_values(&[route, d.as_str()])
            })
            .collect();
        Meter {
            counters: Arc::new(Counters { classes, plain }),
        }
    }

    /// Count one message of `bytes` payload bytes.
    pub(crate) fn message(&self, direction: Direction, class: Class, bytes: usize) {
        let counters = self.counters.classes.get(direction.index());
        if let Some((messages, total)) = counters.and_then(|v| v.get(class.index())) {
            messages.inc();
            total.inc_by(bytes as u64);
        }
    }
}

impl Meter {
    /// Count the plain size of a compressed message (its payload was counted by
    /// [`Meter::message`] as on the wire).
    pub(crate) fn plain(&self, direction: Direction, bytes: usize) {
        if let Some(c) = self.counters.plain.get(direction.index()) {
            c.inc_by(bytes as u64);
        }
    }
}
