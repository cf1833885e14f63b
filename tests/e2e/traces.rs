//! Traces (`[tracing]`): the gateway exports its spans over OTLP/HTTP to a test collector on
//! loopback that decodes them with the official OpenTelemetry protobuf definitions. A trusted
//! client's `traceparent` is continued and reaches the upstream; an untrusted one is a link of
//! a new trace; a refusal carries its status and reason; the authorizer and the upstream
//! connect are spans of their own; a session's span arrives at its close with its counts; and
//! a collector that is down or slow costs the gateway only dropped spans, counted.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::support::upstream::{
    dies_after_answering, Handshake, HeldPort, HttpReply, HttpRequest, HttpService, Upstream,
};
use crate::support::*;

/// The client's trace: `00-<TRACE>-<SPAN>-01`.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{SPAN}-01")
}

/// Admits `Bearer allow`, refuses anything else with 403.
fn authorizer() -> Arc<dyn Fn(&HttpRequest) -> HttpReply + Send + Sync> {
    Arc::new(|r: &HttpRequest| match r.header("authorization") {
        "Bearer allow" => HttpReply::new(200, ""),
        _ => HttpReply::new(403, "forbidden by policy"),
    })
}

/// A relay route behind the authorizer, a relay route to nothing, and `[tracing]` to
/// `collector` trusting `trusted`.
fn config(collector: &str, authz: &str, upstream: &str, down: &str, trusted: &str) -> String {
    format!(
        r#"
[[routes]]
path = "/ws/traced"
mode = "relay"
upstreams = ["{upstream}"]
policy = "authz"

[[routes]]
path = "/ws/down"
mode = "relay"
upstreams = ["{down}"]

[policies.authz.ext_authz]
url = "{authz}"

[tracing]
endpoint = "{collector}"
trusted_sources = [{trusted}]
batch_delay = "50ms"
service_instance_id = "gw-test-1"
"#
    )
}

/// The test collector, the authorizer, the upstream, a port nothing answers on, and a gateway
/// tracing to the collector with `config`, trusting `trusted` (a TOML list's items).
struct Traced {
    collector: Collector,
    authz: HttpService,
    up: Upstream,
    _down: HeldPort,
    gw: Gateway,
}

async fn traced(trusted: &str) -> Traced {
    let collector = Collector::start().await;
    let authz = HttpService::start(authorizer()).await;
    let up = Upstream::echo().await;
    let down = HeldPort::new();
    let gw = Gateway::start(&config(
        &collector.url(),
        &authz.url("/check"),
        &up.url("/chat"),
        &format!("ws://{}/", down.addr),
        trusted,
    ))
    .await;
    Traced {
        collector,
        authz,
        up,
        _down: down,
        gw,
    }
}

async fn counter(gw: &Gateway, sample: &str) -> f64 {
    gw.admin_get("/metrics")
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{sample} ")))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_trusted_parent_is_continued_to_the_upstream_with_steps_and_a_linked_session() {
    let Traced {
        collector,
        authz,
        mut up,
        _down,
        gw,
    } = traced("\"127.0.0.0/8\"").await;
    let parent = traceparent();
    let (mut ws, _) = gw
        .ws_headers(
            "/ws/traced?room=1",
            &[
                ("traceparent", parent.as_str()),
                ("tracestate", "vendor=abc"),
                ("authorization", "Bearer allow"),
            ],
        )
        .await;

    // The handshake's span continues the client's trace, as a SERVER span with its outcome.
    let hs = collector
        .wait_span("the handshake span", |s| s.span.name == "GET /ws/traced")
        .await;
    assert_eq!(hs.trace_id(), TRACE);
    assert_eq!(hex(&hs.span.parent_span_id), SPAN);
    assert_eq!(hs.span.trace_state, "vendor=abc");
    assert_eq!(hs.span.kind, SpanKind::Server as i32);
    assert_eq!(hs.int("http.response.status_code"), Some(101));
    assert_eq!(hs.str("http.route").as_deref(), Some("/ws/traced"));
    assert_eq!(hs.str("url.path").as_deref(), Some("/ws/traced"));
    assert_eq!(hs.str("client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(hs.str("http.request.method").as_deref(), Some("GET"));
    assert!(hs.span.links.is_empty(), "a continued trace needs no link");
    assert_ne!(
        hs.span.status.as_ref().map_or(0, |s| s.code),
        StatusCode::Error as i32
    );
    assert_eq!(
        hs.resource_str("service.name").as_deref(),
        Some("portcullis")
    );
    assert_eq!(
        hs.resource_str("service.instance.id").as_deref(),
        Some("gw-test-1")
    );
    assert!(hs.resource_str("service.version").is_some());

    // The authorizer call and the upstream connect are its children.
    let authz_span = collector
        .wait_span("the authorizer's span", |s| s.span.name == "ext_authz")
        .await;
    assert_eq!(authz_span.trace_id(), TRACE);
    assert_eq!(authz_span.span.parent_span_id, hs.span.span_id);
    assert_eq!(authz_span.span.kind, SpanKind::Client as i32);
    assert_eq!(authz_span.str("server.address"), Some(authz.url("/check")));
    let connect = collector
        .wait_span("the upstream connect span", |s| {
            s.span.name == "upstream.connect"
        })
        .await;
    assert_eq!(connect.span.parent_span_id, hs.span.span_id);

    // The upstream's handshake request carries the trace, with the connect span as parent.
    let (headers, _) = up.request().await;
    let sent = headers.get("traceparent").unwrap().to_str().unwrap();
    assert_eq!(sent, format!("00-{TRACE}-{}-01", connect.span_id()));
    assert_eq!(headers.get("tracestate").unwrap(), "vendor=abc");

    // Two messages each way, then the client closes: the session span arrives, linked.
    for text in ["one", "three"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(STEP, ws.next()).await.unwrap();
        assert_eq!(echoed.unwrap().unwrap(), Message::text(text));
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    let session = collector
        .wait_span("the session span", |s| s.span.name == "websocket.session")
        .await;
    assert_eq!(session.span.links.len(), 1);
    assert_eq!(session.span.links[0].span_id, hs.span.span_id);
    assert_eq!(hex(&session.span.links[0].trace_id), TRACE);
    assert_eq!(session.str("http.route").as_deref(), Some("/ws/traced"));
    assert_eq!(session.int("websocket.close.code"), Some(1000));
    assert_eq!(
        session.str("websocket.close.initiator").as_deref(),
        Some("client")
    );
    assert_eq!(
        session.str("portcullis.session.end_reason").as_deref(),
        Some("client_closed")
    );
    assert_eq!(session.int("websocket.messages.from_client"), Some(2));
    assert_eq!(session.int("websocket.messages.to_client"), Some(2));
    assert_eq!(session.int("websocket.bytes.from_client"), Some(8));
    assert_eq!(session.int("websocket.bytes.to_client"), Some(8));
    assert!(session.span.end_time_unix_nano >= session.span.start_time_unix_nano);
    assert!(session.span.start_time_unix_nano >= hs.span.start_time_unix_nano);
}

#[tokio::test]
async fn an_untrusted_parent_is_a_link_of_a_new_trace_and_refusals_carry_their_status() {
    let Traced {
        collector,
        authz: _authz,
        mut up,
        _down,
        gw,
    } = traced("\"10.0.0.0/8\"").await;
    let parent = traceparent();
    let (_ws, _) = gw
        .ws_headers(
            "/ws/traced",
            &[
                ("traceparent", parent.as_str()),
                ("authorization", "Bearer allow"),
            ],
        )
        .await;
    let hs = collector
        .wait_span("the handshake span", |s| s.span.name == "GET /ws/traced")
        .await;
    assert_ne!(hs.trace_id(), TRACE, "a new trace");
    assert!(hs.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(hs.span.links.len(), 1, "the client's context as a link");
    assert_eq!(hex(&hs.span.links[0].trace_id), TRACE);
    assert_eq!(hex(&hs.span.links[0].span_id), SPAN);
    // The upstream joins the gateway's trace, not the client's.
    let (headers, _) = up.request().await;
    let sent = headers.get("traceparent").unwrap().to_str().unwrap();
    assert!(
        sent.starts_with(&format!("00-{}-", hs.trace_id())),
        "{sent}"
    );

    // Refused by the authorizer: the client's answer, not the gateway's error.
    let (status, head) = gw
        .try_handshake(
            "/ws/traced",
            &format!("traceparent: {parent}\r\n{}", bearer("nope")),
        )
        .await;
    assert_eq!(status, 403, "{head}");
    let refused = collector
        .wait_span("the refused handshake's span", |s| {
            s.span.name == "GET /ws/traced" && s.int("http.response.status_code") == Some(403)
        })
        .await;
    assert_eq!(
        refused.str("portcullis.refusal.reason").as_deref(),
        Some("authz_denied")
    );
    assert_ne!(
        refused.span.status.as_ref().map_or(0, |s| s.code),
        StatusCode::Error as i32
    );

    // No upstream to reach: a 502, the gateway's error, with its failed connect step.
    let (status, head) = gw.try_handshake("/ws/down", "").await;
    assert_eq!(status, 502, "{head}");
    let failed = collector
        .wait_span("the 502's span", |s| s.span.name == "GET /ws/down")
        .await;
    assert_eq!(failed.int("http.response.status_code"), Some(502));
    assert_eq!(
        failed.str("portcullis.refusal.reason").as_deref(),
        Some("upstream_unavailable")
    );
    assert_eq!(
        failed.span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    let connect = collector
        .wait_span("the failed connect step", |s| {
            s.span.name == "upstream.connect" && s.span.parent_span_id == failed.span.span_id
        })
        .await;
    assert_eq!(
        connect.span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
}

/// Twenty handshakes on the echo route, each closed again at once; all get their 101.
async fn twenty_handshakes(gw: &Gateway) {
    for _ in 0..20 {
        let mut ws = gw.ws("/ws/echo").await;
        ws.close(None).await.unwrap();
        while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    }
}

#[tokio::test]
async fn a_collector_down_or_stalled_costs_only_dropped_spans() {
    // Down: nothing listens at the endpoint; every batch fails and its spans are counted.
    let down = HeldPort::new();
    let gw = Gateway::start(&format!(
        "[tracing]\nendpoint = \"http://{}/v1/traces\"\nbatch_delay = \"20ms\"\ntimeout = \"1s\"\n",
        down.addr
    ))
    .await;
    twenty_handshakes(&gw).await;
    let dropped = r#"portcullis_trace_spans_dropped_total{reason="export_failed"}"#;
    eventually(STEP, "every span dropped as export_failed", || async {
        let n = counter(&gw, dropped).await;
        // 20 handshakes and their 20 sessions.
        done_or(n >= 40.0, n)
    })
    .await;
    assert_eq!(
        counter(&gw, "portcullis_trace_spans_exported_total").await,
        0.0
    );

    // Stalled: the collector takes the connection and never answers in time; the small queue
    // fills behind the batch in flight and what does not fit is dropped at once.
    let stalled = HttpService::start(Arc::new(|_| HttpReply {
        delay: Duration::from_secs(60),
        ..HttpReply::new(200, "")
    }))
    .await;
    let gw = Gateway::start(&format!(
        "[tracing]\nendpoint = \"{}\"\nqueue_size = 4\nbatch_size = 2\nbatch_delay = \"20ms\"\ntimeout = \"60s\"\n",
        stalled.url("/v1/traces")
    ))
    .await;
    twenty_handshakes(&gw).await;
    let full = r#"portcullis_trace_spans_dropped_total{reason="queue_full"}"#;
    eventually(STEP, "spans dropped as queue_full", || async {
        let n = counter(&gw, full).await;
        // At most one batch in flight and a full queue are kept: 40 - 2 - 4.
        done_or(n >= 34.0, n)
    })
    .await;
}

#[tokio::test]
async fn an_upstream_lost_after_the_upgrade_ends_the_session_not_the_handshake() {
    let collector = Collector::start().await;
    let up = Upstream::start(Handshake::default(), dies_after_answering("last words")).await;
    let gw = Gateway::start(&format!(
        "[[routes]]\npath = \"/ws/dies\"\nmode = \"relay\"\nupstreams = [\"{}\"]\n\n\
         [tracing]\nendpoint = \"{}\"\nbatch_delay = \"50ms\"\n",
        up.url("/"),
        collector.url()
    ))
    .await;
    let mut ws = gw.ws("/ws/dies").await;
    ws.send(Message::text("hello")).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    let session = collector
        .wait_span("the session span", |s| s.span.name == "websocket.session")
        .await;
    assert_eq!(
        session.str("portcullis.session.end_reason").as_deref(),
        Some("upstream_gone")
    );
    assert_eq!(session.int("websocket.close.code"), Some(1011));
    assert_eq!(
        session.str("websocket.close.initiator").as_deref(),
        Some("gateway")
    );
    let hs = collector
        .wait_span("the handshake span", |s| s.span.name == "GET /ws/dies")
        .await;
    assert_eq!(session.span.links[0].span_id, hs.span.span_id);
    assert_eq!(hs.int("http.response.status_code"), Some(101));
    assert_ne!(
        hs.span.status.as_ref().map_or(0, |s| s.code),
        StatusCode::Error as i32,
        "the upgrade succeeded"
    );
}
