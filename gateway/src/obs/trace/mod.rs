//! Traces (OpenTelemetry, `[tracing]`): a SERVER span per WebSocket handshake, ended when its
//! `101` or its refusal is written; child spans for the steps that wait (the authorizer,
//! introspection, a JWKS fetch, the cluster store, the upstream connect and handshake); and at
//! the end of a session a separate span linked to its handshake, so an hour-long socket is not
//! an hour-long span. The upstream's handshake request carries the trace context
//! ([`inject`]), so the backend's spans join the trace.
//!
//! A client's `traceparent`/`tracestate` is continued only when the socket's peer is one of
//! `tracing.trusted_sources`; any other client's context becomes a link of a new trace (a client
//! can neither choose the trace its handshake joins nor force it to be recorded).
//!
//! The rest of the gateway sees no OpenTelemetry type: the edge holds a [`HandshakeSpan`] and
//! runs the handshake in its context ([`HandshakeSpan::scope`]); the layers below call
//! [`step`] around what they wait for and [`inject`] where a request goes upstream. Without
//! `[tracing]` every one of these is a check of an empty cell.

mod queue;
mod sampler;

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use futures_util::future::Either;
use http::HeaderMap;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter as _};
use opentelemetry_sdk::Resource;

use crate::config::tracing::Tracing;
use crate::core::cidr::Cidr;
use crate::core::end::{EndReason, SessionEnd};

/// The name of the session span (the sampler follows its link by this name).
const SESSION_SPAN: &str = "websocket.session";

/// The process's tracer, set once at start when `[tracing]` is configured.
static TRACES: OnceLock<Traces> = OnceLock::new();

struct Traces {
    tracer: SdkTracer,
    trusted: Vec<Cidr>,
    propagator: TraceContextPropagator,
    /// Kept so the tracer's processor lives as long as the process.
    _provider: SdkTracerProvider,
}

/// Start tracing as `config` says, exporting through `client` (the gateway's HTTP client, which
/// also bounds each export in time). Called once, at start; later calls change nothing.
pub(crate) fn install<C>(config: &Tracing, client: C) -> Result<(), String>
where
    C: opentelemetry_http::HttpClient + 'static,
{
    if TRACES.get().is_some() {
        return Ok(());
    }
    let headers: HashMap<String, String> = config.headers.clone().into_iter().collect();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.0.text.clone())
        .with_timeout(config.timeout.0)
        .with_headers(headers)
        .build()
        .map_err(|e| format!("tracing.endpoint: {e}"))?;
    let instance = config
        .service_instance_id
        .clone()
        .unwrap_or_else(default_instance_id);
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", config.service_name.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance),
        ])
        .build();
    exporter.set_resource(&resource);
    let queue = queue::Queue::start(
        exporter,
        config.queue_size,
        config.batch_size,
        config.batch_delay.0,
    );
    let provider = SdkTracerProvider::builder()
        .with_span_processor(queue)
        .with_sampler(sampler::Sampler::new(config.sample_ratio))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("portcullis");
    let _ = TRACES.set(Traces {
        tracer,
        trusted: config.trusted_sources.clone(),
        propagator: TraceContextPropagator::new(),
        _provider: provider,
    });
    Ok(())
}

/// The host's name and this process's id: distinct per replica and per restart.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// The span of one WebSocket handshake, from its complete request head to the `101` or the
/// refusal written. Dropped unended (the client left, the head timed out), it ends there.
pub(crate) struct HandshakeSpan {
    cx: Context,
}

impl HandshakeSpan {
    /// A handshake on `route` from the socket peer `peer`, carried by HTTP `version` (`1.1`
    /// or `2`); `None` when tracing is off.
    pub(crate) fn start(
        route: &str,
        version: &'static str,
        method: &str,
        path: &str,
        tls: bool,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Option<HandshakeSpan> {
        let t = TRACES.get()?;
        let theirs = t.propagator.extract(&HeaderExtractor(headers));
        let their_span = theirs.span().span_context().clone();
        let trusted = peer.is_some_and(|ip| t.trusted.iter().any(|c| c.contains(ip)));
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("http.route", route.to_string()),
            KeyValue::new("url.path", path.to_string()),
            KeyValue::new("url.scheme", if tls { "wss" } else { "ws" }),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new("network.protocol.version", version),
        ];
        if let Some(peer) = peer {
            attributes.push(KeyValue::new("network.peer.address", peer.to_string()));
        }
        let mut builder = t
            .tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes);
        let parent = if trusted && their_span.is_valid() {
            theirs
        } else {
            if their_span.is_valid() {
                builder = builder.with_links(vec![Link::new(
                    their_span,
                    vec![KeyValue::new("portcullis.link", "untrusted_parent")],
                    0,
                )]);
            }
            Context::new()
        };
        let span = builder.start_with_context(&t.tracer, &parent);
        Some(HandshakeSpan {
            cx: Context::new().with_span(span),
        })
    }

    /// The context the rest of the handshake runs in (`None`: not traced).
    pub(crate) fn scope(span: Option<&HandshakeSpan>) -> Scope {
        Scope(span.map(|s| s.cx.clone()))
    }

    /// The client address admission resolved (trusted-proxy aware).
    pub(crate) fn client(&self, client: Option<IpAddr>) {
        if let Some(ip) = client {
            self.cx
                .span()
                .set_attribute(KeyValue::new("client.address", ip.to_string()));
        }
    }

    /// The refusal (`status`, `reason`) was written: a 5xx is the gateway's error, anything
    /// else is the client's answer, not an error of this span (HTTP server conventions).
    pub(crate) fn refused(self, status: u16, reason: &'static str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new("portcullis.refusal.reason", reason));
        if status >= 500 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(reason));
        }
        span.end();
    }

    /// The `101` (or HTTP/2's `200`) was written (`written`) or the client left before it
    /// could be. A recorded handshake gives the link its session span will carry.
    pub(crate) fn switched(self, status: u16, written: bool) -> Option<SessionLink> {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if !written {
            span.set_attribute(KeyValue::new("portcullis.client_gone", true));
        }
        span.end();
        let linked = span.span_context().clone();
        (written && linked.is_sampled()).then(|| SessionLink {
            handshake: linked,
            opened: SystemTime::now(),
        })
    }
}

/// A handshake's trace context, to run the handshake in.
pub(crate) struct Scope(Option<Context>);

impl Scope {
    /// Run `work` in this context, so the spans of its steps are children of the handshake's
    /// and [`inject`] finds it; untraced, `work` as it is.
    pub(crate) fn run<F: Future>(self, work: F) -> Either<WithContext<F>, F> {
        match self.0 {
            Some(cx) => Either::Left(work.with_context(cx)),
            None => Either::Right(work),
        }
    }
}

/// What a session keeps to report its span at its end: the handshake's span and when the
/// session opened.
#[derive(Debug)]
pub(crate) struct SessionLink {
    handshake: SpanContext,
    opened: SystemTime,
}

impl SessionLink {
    /// The session on `route` ended as `end` says after `duration`; `reason` is why (a relay's
    /// end reason, or why the gateway ended it). An upstream that went away after a good
    /// upgrade is this span's end reason, not an error of the handshake.
    pub(crate) fn ended(
        self,
        route: &str,
        client: Option<IpAddr>,
        end: &SessionEnd,
        reason: Option<EndReason>,
        duration: Duration,
    ) {
        let Some(t) = TRACES.get() else { return };
        let mut attributes = vec![
            KeyValue::new("http.route", route.to_string()),
            KeyValue::new("websocket.close.initiator", end.initiator.as_str()),
            KeyValue::new("websocket.messages.from_client", end.messages_in as i64),
            KeyValue::new("websocket.messages.to_client", end.messages_out as i64),
            KeyValue::new("websocket.bytes.from_client", end.bytes_in as i64),
            KeyValue::new("websocket.bytes.to_client", end.bytes_out as i64),
            KeyValue::new(
                "portcullis.session.duration_ms",
                duration.as_millis() as i64,
            ),
        ];
        if let Some(code) = end.close_code {
            attributes.push(KeyValue::new("websocket.close.code", i64::from(code)));
        }
        if let Some(reason) = reason {
            attributes.push(KeyValue::new(
                "portcullis.session.end_reason",
                reason.as_str(),
            ));
        }
        if let Some(ip) = client {
            attributes.push(KeyValue::new("client.address", ip.to_string()));
        }
        let mut span = t
            .tracer
            .span_builder(SESSION_SPAN)
            .with_kind(SpanKind::Internal)
            .with_start_time(self.opened)
            .with_attributes(attributes)
            .with_links(vec![Link::with_context(self.handshake)])
            .start_with_context(&t.tracer, &Context::new());
        span.end_with_timestamp(self.opened + duration);
    }
}

/// Run `work`, a step of a traced handshake that waits on `target` (an authorizer's URL, an
/// upstream), as a CLIENT span named `name`; an `Err` marks the span an error. Outside a traced
/// handshake it is `work` alone.
pub(crate) async fn step<T, E, F>(name: &'static str, target: &str, work: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: Display,
{
    let Some(t) = TRACES.get() else {
        return work.await;
    };
    let parent = Context::current();
    if !parent.span().span_context().is_sampled() {
        return work.await;
    }
    let span = t
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("server.address", target.to_string())])
        .start_with_context(&t.tracer, &parent);
    let cx = parent.with_span(span);
    let out = work.with_context(cx.clone()).await;
    let span = cx.span();
    if let Err(e) = &out {
        span.set_status(Status::error(e.to_string()));
    }
    span.end();
    out
}

/// The W3C trace context of the current span (the upstream connect step of a traced
/// handshake), as `(name, value)` headers for a request going upstream; none outside one.
pub(crate) fn inject() -> Vec<(&'static str, String)> {
    let Some(t) = TRACES.get() else {
        return Vec::new();
    };
    let cx = Context::current();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut headers = Headers(Vec::with_capacity(2));
    t.propagator.inject_context(&cx, &mut headers);
    headers.0
}

/// The names [`inject`] writes (a client's own are not passed on while tracing is on).
pub(crate) const FIELDS: [&str; 2] = ["traceparent", "tracestate"];

struct Headers(Vec<(&'static str, String)>);

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        if let Some(name) = FIELDS.iter().find(|f| **f == key) {
            self.0.push((name, value));
        }
    }
}
