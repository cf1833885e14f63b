//! Finished spans on their way to the collector: a bounded queue that a handshake never waits
//! on (when it is full the span is dropped and counted), drained in batches by one task on a
//! background thread, which sends each batch through the OTLP exporter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::Notify;

use crate::core::background;
use crate::core::labels::SpanDrop;
use crate::obs::log_limit::{left_out, LogLimit};
use crate::obs::metrics::Metrics;

/// The SDK's span processor: `on_end` only queues. It wakes the exporting thread once per
/// full batch, not once per span (a wake is a system call on the handshake's thread); otherwise
/// that thread looks every `batch_delay` on its own.
#[derive(Debug)]
pub(super) struct Queue {
    tx: mpsc::Sender<SpanData>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Spans in the queue, or about to be: at least as many as it holds.
    queued: AtomicUsize,
    /// Told when the queue holds a batch.
    full: Notify,
    batch: usize,
}

impl Queue {
    /// A queue of `capacity` spans, exported by `exporter` in batches of up to `batch` spans,
    /// each sent when full or `delay` after the last, on a thread of its own.
    pub(super) fn start<E>(exporter: E, capacity: usize, batch: usize, delay: Duration) -> Queue
    where
        E: SpanExporter + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            full: Notify::new(),
            batch,
        });
        background::spawn("trace-export", drain(rx, exporter, shared.clone(), delay));
        Queue { tx, shared }
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        // Counted before it is sent, so the count never falls below what is in the queue.
        let queued = self.shared.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if self.tx.try_send(span).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            Metrics::global().spans_dropped(SpanDrop::QueueFull, 1);
            return;
        }
        if queued == self.shared.batch {
            self.shared.full.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Send what the queue holds, a batch at a time: when a batch is full, or `delay` after the
/// last export. One export at a time; while the collector is slow the queue fills, and what
/// does not fit is dropped by [`Queue::on_end`].
async fn drain<E: SpanExporter>(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: E,
    shared: Arc<Shared>,
    delay: Duration,
) {
    let metrics = Metrics::global();
    let warn = LogLimit::default();
    let batch = shared.batch;
    let mut spans = Vec::with_capacity(batch);
    loop {
        if shared.queued.load(Ordering::Relaxed) < batch {
            let _ = tokio::time::timeout(delay, shared.full.notified()).await;
        }
        while spans.len() < batch {
            match rx.try_recv() {
                Ok(span) => spans.push(span),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let n = spans.len();
        if n == 0 {
            continue;
        }
        shared.queued.fetch_sub(n, Ordering::Relaxed);
        match exporter.export(std::mem::take(&mut spans)).await {
            Ok(()) => metrics.spans_exported(n),
            Err(e) => {
                metrics.spans_dropped(SpanDrop::ExportFailed, n);
                if let Some(more) = warn.allow() {
                    log::warn!(
                        "trace export failed, {n} spans dropped: {e}{}",
                        left_out(more)
                    );
                }
            }
        }
        spans = Vec::with_capacity(batch);
    }
}
