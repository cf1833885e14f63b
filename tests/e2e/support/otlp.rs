//! A test OpenTelemetry collector: an OTLP/HTTP receiver on loopback (an [`HttpService`] that
//! answers every export with 200) whose requests are decoded with the official protobuf
//! definitions (`opentelemetry-proto`'s generated types).

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::upstream::{HttpReply, HttpService};
use super::wait::{eventually, STEP};

/// A span as the collector received it, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Exported {
    pub span: Span,
    pub resource: Vec<KeyValue>,
}

impl Exported {
    /// A string attribute of the span.
    pub fn str(&self, key: &str) -> Option<String> {
        match attr(&self.span.attributes, key)? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// An integer attribute of the span.
    pub fn int(&self, key: &str) -> Option<i64> {
        match attr(&self.span.attributes, key)? {
            Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    /// A string attribute of the resource.
    pub fn resource_str(&self, key: &str) -> Option<String> {
        match attr(&self.resource, key)? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// Bytes as lowercase hex (trace and span ids as `traceparent` writes them).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The receiver.
pub struct Collector {
    pub service: HttpService,
}

impl Collector {
    pub async fn start() -> Collector {
        let service = HttpService::start(Arc::new(|_| {
            HttpReply::new(200, "").header("content-type", "application/x-protobuf")
        }))
        .await;
        Collector { service }
    }

    /// The traces endpoint, for `[tracing] endpoint`.
    pub fn url(&self) -> String {
        self.service.url("/v1/traces")
    }

    /// Every span received so far; panics on a request that is not a valid OTLP/HTTP protobuf
    /// export.
    pub fn spans(&self) -> Vec<Exported> {
        let mut out = Vec::new();
        for r in self.service.requests() {
            assert_eq!(
                (r.method.as_str(), r.target.as_str()),
                ("POST", "/v1/traces")
            );
            assert_eq!(r.header("content-type"), "application/x-protobuf");
            let req = ExportTraceServiceRequest::decode(&r.body[..]).expect("OTLP protobuf");
            for rs in req.resource_spans {
                let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        out.push(Exported {
                            span,
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Wait (bounded) for a span that `pred` holds for.
    pub async fn wait_span(&self, what: &str, pred: impl Fn(&Exported) -> bool) -> Exported {
        eventually(STEP, what, || async {
            let spans = self.spans();
            let names: Vec<String> = spans.iter().map(|s| s.span.name.clone()).collect();
            spans
                .into_iter()
                .find(|s| pred(s))
                .ok_or_else(|| format!("spans: {names:?}"))
        })
        .await
    }
}
