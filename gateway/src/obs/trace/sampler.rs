//! Which spans are recorded: a handshake follows its parent's decision (only a trusted parent is
//! one) and otherwise the configured ratio; its steps follow it; a session span follows the
//! handshake it is linked to, so a recorded handshake always has its session.

use opentelemetry::trace::{Link, SamplingDecision, SamplingResult, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler as SdkSampler, ShouldSample};

use super::SESSION_SPAN;

#[derive(Debug, Clone)]
pub(super) struct Sampler {
    /// Parent-based, with the ratio for roots.
    inner: SdkSampler,
}

impl Sampler {
    pub(super) fn new(ratio: f64) -> Sampler {
        Sampler {
            inner: SdkSampler::ParentBased(Box::new(SdkSampler::TraceIdRatioBased(ratio))),
        }
    }
}

impl ShouldSample for Sampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        // The session span's only link is the gateway's own handshake span (never a client's
        // context: a client cannot ask for its session to be recorded).
        if name == SESSION_SPAN {
            let sampled = links.first().is_some_and(|l| l.span_context.is_sampled());
            return SamplingResult {
                decision: if sampled {
                    SamplingDecision::RecordAndSample
                } else {
                    SamplingDecision::Drop
                },
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        self.inner
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}
