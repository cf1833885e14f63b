//! Finished spans on their way to the collector: a bounded queue that a handshake never waits
//! on (when it is full the span is dropped and counted), drained in batches by one task on a
//! background thread, which sends each batch through the OTLP exporter.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;

use crate::core::background;
use crate::core::labels::SpanDrop;
use crate::obs::log_limit::{left_out, LogLimit};
use crate::obs::metrics::Metrics;

/// The SDK's span processor: `on_end` only queues.
#[derive(Debug)]
pub(super) struct Queue {
    tx: mpsc::Sender<SpanData>,
}

impl Queue {
    /// A queue of `capacity` spans, exported by `exporter` in batches of up to `batch` spans,
    /// each waiting at most `delay` to fill, on a thread of its own.
    pub(super) fn start<E>(exporter: E, capacity: usize, batch: usize, delay: Duration) -> Queue
    where
        E: SpanExporter + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity);
        background::spawn("trace-export", drain(rx, exporter, batch, delay));
        Queue { tx }
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            Metrics::global().spans_dropped(SpanDrop::QueueFull, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Send what the queue holds, a batch at a time: a batch goes when it is full or `delay` after
/// its first span. One export at a time; while the collector is slow the queue fills, and what
/// does not fit is dropped by [`Queue::on_end`].
async fn drain<E: SpanExporter>(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: E,
    batch: usize,
    delay: Duration,
) {
    let metrics = Metrics::global();
    let warn = LogLimit::default();
    let mut spans = Vec::with_capacity(batch);
    while let Some(first) = rx.recv().await {
        spans.push(first);
        let deadline = tokio::time::Instant::now() + delay;
        while spans.len() < batch {
            let room = batch - spans.len();
            tokio::select! {
                n = rx.recv_many(&mut spans, room) => if n == 0 { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let n = spans.len();
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
    }
}
