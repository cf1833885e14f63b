//! HTTP/2's own attacks against the real gateway, each sent by a real HTTP/2 client at the frame
//! level (`tests/clients/h2_attacks.py`, on Python's `h2` family: hyperframe and hpack), and a
//! well-behaved client (`tests/clients/h2_websocket.py`, hyper-h2's state machine) opening a
//! hundred RFC 8441 WebSockets on one connection. Each attack is answered as RFC 9113 says —
//! GOAWAY with the error code where it names one (`ENHANCE_YOUR_CALM` for the floods its section
//! 10.5 calls abuse), RST_STREAM for a stream's own fault, a `431` for a header list over the
//! announced limit — counted in the gateway's metrics by class, and leaves every other
//! connection working: a WebSocket opened over HTTP/1.1 before the attack still echoes after it,
//! and a new HTTP/2 connection still gets its WebSockets.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::upstream::Upstream;
use crate::support::*;

const ATTACKS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/clients/h2_attacks.py"
);
const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/clients/h2_websocket.py"
);

/// Each client run ends well within this (its own waits are bounded by `--wait`).
const CLIENT_LIMIT: Duration = Duration::from_secs(90);

/// The bounds of the attacked gateway: small, so that each bound is reached quickly.
const BOUNDS: &str = r#"
[limits]
head_timeout = "2s"

[http2]
max_concurrent_streams = 8
send_stall_timeout = "2s"
"#;

/// A gateway whose TLS listener offers HTTP/2 (ALPN `h2`) besides HTTP/1.1, with `extra`.
async fn h2_gateway(extra: &str) -> Gateway {
    Gateway::start_tls_extra("http2 = true", extra, |_| {}).await
}

/// Run one attack; its report (see the script's docstring).
async fn attack(gw: &Gateway, name: &str, args: &[&str]) -> Value {
    let mut python = Command::new("python3");
    python
        .arg(ATTACKS)
        .arg(name)
        .args(["--port", &gw.port.to_string(), "--ca"])
        .arg(&gw.cert)
        .args(args);
    let report = run_json(python, name).await;
    assert_eq!(
        report["alpn"], "h2",
        "the gateway did not choose HTTP/2: {report}"
    );
    report
}

/// Run the well-behaved client: `streams` WebSockets on `path` over one connection.
async fn websockets(gw: &Gateway, path: &str, streams: usize, args: &[&str]) -> Value {
    let mut python = Command::new("python3");
    python
        .arg(CLIENT)
        .args(["--port", &gw.port.to_string(), "--ca"])
        .arg(&gw.cert)
        .args(["--path", path, "--streams", &streams.to_string()])
        .args(args);
    run_json(python, "h2_websocket.py").await
}

async fn run_json(cmd: Command, what: &str) -> Value {
    let out = output_within_async(cmd, b"", CLIENT_LIMIT).await;
    let text = text_of(&out);
    assert!(out.status.success(), "{what} failed:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e} in:\n{text}"))
}

/// Every stream of a client report opened (200), echoed its hello and closed cleanly.
fn all_echoed(report: &Value, streams: usize) {
    let seen = report["streams"].as_array().expect("streams");
    assert_eq!(seen.len(), streams, "{report}");
    for s in seen {
        let n = &s["n"];
        assert_eq!(s["status"], 200, "stream {n}: {s}");
        assert_eq!(
            s["frames"][0]["text"],
            format!("echo: hello {n}").as_str(),
            "stream {n}: {s}"
        );
        assert_eq!(s["close"]["code"], 1000, "stream {n}: {s}");
        assert_eq!(s["ended"], true, "stream {n}: {s}");
        // Ended by END_STREAM after the close frame; at most h2's RST_STREAM NO_ERROR after it
        // (RFC 9113 section 8.1), never CANCEL.
        assert!(
            s.get("reset").is_none() || s["reset"] == "NO_ERROR",
            "stream {n}: {s}"
        );
    }
    assert_eq!(report["goaway"], Value::Null, "{report}");
}

/// A WebSocket over HTTP/1.1 opened before an attack, which must keep working through it.
async fn bystander(gw: &Gateway) -> Wss {
    let mut ws = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("before")).await,
        Message::text("echo: before")
    );
    ws
}

/// After an attack: the bystander still echoes, and a new HTTP/2 connection gets WebSockets.
async fn others_unaffected(gw: &Gateway, mut ws: Wss) {
    assert_eq!(
        roundtrip(&mut ws, Message::text("after")).await,
        Message::text("echo: after"),
        "the connection opened alongside the attack"
    );
    finish(&mut ws).await;
    let report = websockets(gw, "/ws/echo", 3, &[]).await;
    all_echoed(&report, 3);
}

/// The attack got GOAWAY with `error`, counted under `reason`.
async fn goaway(gw: &Gateway, report: &Value, error: &str, reason: &str) {
    assert_eq!(
        report["goaway"]["error"], error,
        "expected GOAWAY {error}: {report}"
    );
    gw.wait_metric(&format!(
        "portcullis_http2_errors_total{{reason=\"{reason}\"}} 1"
    ))
    .await;
}

#[tokio::test]
async fn a_hundred_websocket_streams_on_one_connection_beside_http1() {
    let gw = h2_gateway("").await;
    let report = websockets(&gw, "/ws/echo", 100, &["--get", "/"]).await;
    assert_eq!(report["alpn"], "h2", "{report}");
    assert_eq!(report["enable_connect_protocol"], 1, "{report}");
    // The static route answers over HTTP/2 on the same connection.
    assert_eq!(report["get"]["status"], 200, "{report}");
    assert_eq!(report["get"]["body"], "Hello, World!", "{report}");
    all_echoed(&report, 100);
    assert_eq!(report["most_open_at_once"], 100, "{report}");
    // Counted as h2 by the gateway, each in the access log with its protocol.
    gw.wait_metric(r#"portcullis_websockets_opened_total{protocol="h2"} 100"#)
        .await;
    let log = eventually(STEP, "100 h2 sessions in the access log", || async {
        let log = gw.log();
        let h2 = log
            .lines()
            .filter(|l| l.contains("] session route=/ws/echo") && l.contains("protocol=h2"))
            .count();
        done_or(h2 == 100, log.clone()).map(|()| log)
    })
    .await;
    assert!(!log.contains("protocol=h1"), "{log}");
    // HTTP/1.1 clients keep working on the same listener.
    let mut ws = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("h1")).await,
        Message::text("echo: h1")
    );
    finish(&mut ws).await;
    gw.wait_metric(r#"portcullis_websockets_opened_total{protocol="h1"} 1"#)
        .await;
}

#[tokio::test]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "rapid_reset", &["--count", "10000"]).await;
    goaway(&gw, &report, "ENHANCE_YOUR_CALM", "enhance_your_calm").await;
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn continuation_flood_gets_goaway_enhance_your_calm() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "continuation", &[]).await;
    goaway(&gw, &report, "ENHANCE_YOUR_CALM", "enhance_your_calm").await;
    // Long before the flood's hundred thousand frames were all taken.
    assert!(
        report["frames_sent"].as_u64().unwrap() < 100_000,
        "{report}"
    );
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn hpack_bomb_gets_goaway_enhance_your_calm() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "hpack_bomb", &[]).await;
    goaway(&gw, &report, "ENHANCE_YOUR_CALM", "enhance_your_calm").await;
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn a_header_list_over_the_limit_gets_431_and_the_connection_goes_on() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "oversized_headers", &[]).await;
    // The limit is announced (SETTINGS_MAX_HEADER_LIST_SIZE, id 6) as `max_head_bytes`.
    assert_eq!(report["server_settings"]["6"], 16384, "{report}");
    // RFC 9113 section 10.5.1: a 431 on that stream; the next request on the connection is served.
    assert_eq!(report["statuses"]["1"], 431, "{report}");
    assert_eq!(report["statuses"]["3"], 200, "{report}");
    assert_eq!(report["goaway"], Value::Null, "{report}");
    // Counted as the HTTP/1.1 head over the limit is.
    gw.wait_metric(r#"portcullis_rejections_total{reason="head_too_large",route="none"} 1"#)
        .await;
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn settings_flood_gets_goaway_enhance_your_calm() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "settings_flood", &[]).await;
    goaway(&gw, &report, "ENHANCE_YOUR_CALM", "enhance_your_calm").await;
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn ping_flood_gets_goaway_enhance_your_calm() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "ping_flood", &[]).await;
    goaway(&gw, &report, "ENHANCE_YOUR_CALM", "enhance_your_calm").await;
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn window_update_flood_gets_goaway_enhance_your_calm() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "window_update_flood", &[]).await;
    goaway(&gw, &report, "ENHANCE_YOUR_CALM", "enhance_your_calm").await;
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn empty_data_flood_gets_goaway_enhance_your_calm() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "empty_data_flood", &[]).await;
    assert_eq!(report["statuses"]["1"], 200, "{report}");
    goaway(&gw, &report, "ENHANCE_YOUR_CALM", "enhance_your_calm").await;
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn streams_past_max_concurrent_streams_are_refused_and_the_others_work() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "too_many_streams", &["--count", "4"]).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS (id 3) as configured.
    assert_eq!(report["server_settings"]["3"], 8, "{report}");
    // RFC 9113 section 5.1.2: the streams past it get RST_STREAM REFUSED_STREAM (retryable);
    // the eight before them are WebSockets, and one of them still echoes.
    let statuses = report["statuses"].as_object().unwrap();
    let resets = report["resets"].as_object().unwrap();
    for i in 0..12u64 {
        let sid = (2 * i + 1).to_string();
        if i < 8 {
            assert_eq!(statuses[&sid], 200, "stream {sid}: {report}");
            assert!(!resets.contains_key(&sid), "stream {sid}: {report}");
        } else {
            assert_eq!(resets[&sid], "REFUSED_STREAM", "stream {sid}: {report}");
        }
    }
    assert_eq!(report["goaway"], Value::Null, "{report}");
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn a_header_block_never_finished_is_bounded_by_head_timeout() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "stalled_headers", &["--wait", "20"]).await;
    // The connection ends (GOAWAY, then close) once `head_timeout` has passed, counted.
    assert!(
        report["goaway"].is_object() || report["closed"] == true,
        "the stalled connection was never ended: {report}"
    );
    gw.wait_metric(r#"portcullis_http2_errors_total{reason="head_timeout"} 1"#)
        .await;
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn a_header_block_never_finished_beside_an_open_stream_is_bounded_by_head_timeout() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    // Past its first request the connection is bounded by its idleness, which an open stream
    // holds off; the header block's own timer ends it: GOAWAY once `head_timeout` has passed
    // (the wait is that and a margin), counted as the connection's head timeout.
    let report = attack(&gw, "stalled_headers_open", &["--wait", "12"]).await;
    assert_eq!(report["statuses"]["1"], 200, "{report}");
    goaway(&gw, &report, "ENHANCE_YOUR_CALM", "head_timeout").await;
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn a_window_held_at_zero_resets_its_stream_after_send_stall_timeout() {
    let gw = h2_gateway(BOUNDS).await;
    let ws = bystander(&gw).await;
    // The client's SETTINGS_INITIAL_WINDOW_SIZE is 0 and never grows: the gateway can send no
    // echo; after `send_stall_timeout` the stream is reset, not kept for ever.
    let report = attack(&gw, "zero_window", &["--wait", "20"]).await;
    assert_eq!(report["statuses"]["1"], 200, "{report}");
    assert!(
        report["resets"]["1"].is_string(),
        "the stalled stream was never reset: {report}"
    );
    others_unaffected(&gw, ws).await;
}

#[tokio::test]
async fn a_websocket_stream_opened_and_never_written_is_ended_by_its_pings() {
    // A relay route pings a silent client; one that never answers is dropped, stream and all,
    // as an HTTP/1.1 socket would be.
    let up = Upstream::echo().await;
    let route = format!(
        "[[routes]]\npath = \"/ws/relay\"\nmode = \"relay\"\nupstreams = [\"{}\"]\n\
         ping_interval = \"1s\"\nping_timeout = \"1s\"\n",
        up.url("/")
    );
    let gw = h2_gateway(&format!("{BOUNDS}\n{route}")).await;
    let ws = bystander(&gw).await;
    let report = attack(&gw, "idle_stream", &["--path", "/ws/relay", "--wait", "30"]).await;
    assert_eq!(report["statuses"]["1"], 200, "{report}");
    let ended = report["ended"].as_array().unwrap().contains(&1.into());
    assert!(
        ended || report["resets"]["1"].is_string(),
        "the silent stream was never ended: {report}"
    );
    // The connection itself stays: only the stream ended.
    assert_eq!(report["goaway"], Value::Null, "{report}");
    let line = gw
        .wait_log_line("the silent stream's access line", |l| {
            l.contains("session route=/ws/relay") && l.contains("protocol=h2")
        })
        .await;
    assert!(line.contains("end_reason=ping_timeout"), "{line}");
    others_unaffected(&gw, ws).await;
}
