//! Relay routes end to end: a real upstream WebSocket server started inside each test on
//! 127.0.0.1:0 (plain or TLS), the real gateway in front of it, real wss clients. Exact status
//! codes, close codes and reasons are asserted; every wait is bounded.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{ClientRequestBuilder, Message};

use crate::support::upstream::*;
use crate::support::*;

fn relay_route(path: &str, upstreams: &[String], extra: &str) -> String {
    let list = upstreams
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[[routes]]\npath = \"{path}\"\nmode = \"relay\"\nupstreams = [{list}]\n{extra}\n")
}

/// A wss client on `path` with extra handshake headers and subprotocols; returns the 101's
/// chosen protocol.
async fn client_with(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    protocols: &[&str],
) -> (Wss, Option<String>) {
    let mut builder = ClientRequestBuilder::new(gw.url(path).parse().unwrap());
    for (k, v) in headers {
        builder = builder.with_header(*k, *v);
    }
    for p in protocols {
        builder = builder.with_sub_protocol(*p);
    }
    let (ws, resp) = gw.ws_request(builder, None).await;
    let protocol = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, protocol)
}

/// The five protocol violations, as frames from a client (masked) or an upstream (unmasked),
/// with the close code the offender must get.
fn violations(client: bool) -> Vec<(&'static str, Vec<u8>, u16)> {
    let m = client.then_some([7, 7, 7, 7]);
    let mut cases = vec![
        (
            "invalid UTF-8 in text",
            raw_frame(0x81, &[0xff, 0xfe, 0xfd], m),
            1007,
        ),
        (
            "reserved bit set",
            raw_frame(0x80 | 0x40 | 0x1, b"rsv", m),
            1002,
        ),
        (
            "oversized control frame",
            raw_frame(0x89, &[0u8; 126], m),
            1002,
        ),
        (
            "interleaved fragments",
            [
                raw_frame(0x01, b"first half", m),
                raw_frame(0x81, b"a new message", m),
            ]
            .concat(),
            1002,
        ),
    ];
    if client {
        cases.push(("unmasked client frame", raw_frame(0x81, b"hi", None), 1002));
    } else {
        cases.push((
            "masked server frame",
            raw_frame(0x81, b"hi", Some([1, 2, 3, 4])),
            1002,
        ));
    }
    cases
}

fn gateway_rss_kib(gw: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn relays_messages_fragments_and_pings_to_an_echo_upstream() {
    let mut up = Upstream::echo().await;
    let gw = Gateway::start(&relay_route("/relay", &[up.url("/chat")], "")).await;
    let mut ws = gw.ws("/relay").await;
    let (_, uri) = up.request().await;
    assert_eq!(uri, "/chat");
    assert_eq!(
        roundtrip(&mut ws, Message::text("héllo ✓")).await,
        Message::text("héllo ✓")
    );
    match up.event().await {
        Event::Data(m) => assert_eq!(m, Message::text("héllo ✓")),
        other => panic!("{other:?}"),
    }
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(
        roundtrip(&mut ws, Message::binary(bytes.clone())).await,
        Message::binary(bytes)
    );
    let big = "x".repeat(300_000);
    assert_eq!(
        roundtrip(&mut ws, Message::text(big.clone())).await,
        Message::text(big)
    );
    // A fragmented message arrives whole.
    for (part, fin, opcode) in [
        ("frag", false, OpCode::Data(Data::Text)),
        ("men", false, OpCode::Data(Data::Continue)),
        ("ted", true, OpCode::Data(Data::Continue)),
    ] {
        ws.feed(Message::Frame(Frame::message(part, opcode, fin)))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("fragmented"));
    // Pings are answered.
    ws.send(Message::Ping(b"there?".to_vec().into()))
        .await
        .unwrap();
    let pong = next_frame(&mut ws).await;
    assert_eq!(pong, Message::Pong(b"there?".to_vec().into()));
    ws.close(None).await.unwrap();
    assert_eq!(up.closed().await, (1005, String::new()));
}

#[tokio::test]
async fn server_initiated_messages_and_pings_reach_the_client() {
    let mut pushed: Vec<Message> = (0..3).map(|i| Message::text(format!("push {i}"))).collect();
    pushed.push(Message::Ping(b"up".to_vec().into()));
    pushed.push(Message::binary(vec![9u8; 10]));
    let up = Upstream::start(Handshake::default(), pushes(pushed)).await;
    let gw = Gateway::start(&relay_route("/push", &[up.url("/")], "")).await;
    let mut ws = gw.ws("/push").await;
    for i in 0..3 {
        assert_eq!(
            next_message(&mut ws).await,
            Message::text(format!("push {i}"))
        );
    }
    let ping = next_frame(&mut ws).await;
    assert_eq!(ping, Message::Ping(b"up".to_vec().into()));
    assert_eq!(next_message(&mut ws).await, Message::binary(vec![9u8; 10]));
}

#[tokio::test]
async fn subprotocols_are_negotiated_with_the_upstream() {
    let mut up = Upstream::start(
        Handshake {
            protocols: vec!["chat.v1", "chat.v2", "admin"],
            ..Handshake::default()
        },
        echo(),
    )
    .await;
    let gw = Gateway::start(&relay_route(
        "/chat",
        &[up.url("/")],
        "subprotocols = [\"chat.v2\", \"chat.v1\"]",
    ))
    .await;
    // The client's order wins; `bearer.` entries and protocols off the allow-list never reach
    // the upstream.
    let (mut ws, chosen) = client_with(
        &gw,
        "/chat",
        &[],
        &["bearer.secret-token", "admin", "chat.v2", "chat.v1"],
    )
    .await;
    assert_eq!(chosen.as_deref(), Some("chat.v2"));
    let (headers, _) = up.request().await;
    assert_eq!(headers["sec-websocket-protocol"], "chat.v2, chat.v1");
    assert_eq!(
        roundtrip(&mut ws, Message::text("v2")).await,
        Message::text("v2")
    );

    // Nothing offered: nothing chosen.
    let (_ws, chosen) = client_with(&gw, "/chat", &[], &[]).await;
    assert_eq!(chosen, None);
    let (headers, _) = up.request().await;
    assert!(headers.get("sec-websocket-protocol").is_none());
}

#[tokio::test]
async fn identity_headers_arrive_and_spoofed_ones_do_not() {
    let mut up = Upstream::echo().await;
    let gw = Gateway::start(&relay_route(
        "/id",
        &[up.url("/svc?v=1")],
        "forward_claims = { sub = \"X-Auth-Subject\", tenant = \"X-Tenant\" }",
    ))
    .await;
    let spoofed = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "gopher"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=6.6.6.6;proto=https"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Auth-Subject", "admin"),
        ("X-Tenant", "all"),
        ("Authorization", "Bearer not-for-the-backend"),
        ("Cookie", "session=abc"),
        ("X-App", "kept"),
    ];
    let (_ws, _) = client_with(&gw, "/id?room=7&access_token=secret", &spoofed, &[]).await;
    let (h, uri) = up.request().await;
    let one = |name: &str| -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        uri, "/svc?v=1&room=7",
        "the token query parameter is not forwarded"
    );
    assert_eq!(one("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(one("x-forwarded-proto"), ["https"]);
    assert_eq!(one("x-forwarded-host"), [format!("localhost:{}", gw.port)]);
    assert_eq!(
        one("forwarded"),
        [format!(
            "for=127.0.0.1;proto=https;host=\"localhost:{}\"",
            gw.port
        )]
    );
    assert!(one("x-real-ip").is_empty());
    assert!(one("x-auth-subject").is_empty(), "no token, no subject");
    assert!(one("x-tenant").is_empty());
    assert!(one("authorization").is_empty(), "tokens are not forwarded");
    assert_eq!(one("cookie"), ["session=abc"]);
    assert_eq!(one("x-app"), ["kept"]);
    assert_eq!(one("host"), [up.addr.to_string()]);
}

#[tokio::test]
async fn the_token_is_forwarded_only_when_the_route_asks() {
    let mut up = Upstream::echo().await;
    let gw = Gateway::start(&relay_route("/tok", &[up.url("/")], "forward_token = true")).await;
    // A raw handshake: a client library would fail it, since the only protocol it offers (the
    // token) is never chosen.
    let (status, head) = gw
        .try_handshake(
            "/tok?access_token=t0k",
            "Authorization: Bearer t0k\r\nSec-WebSocket-Protocol: bearer.t0k\r\n",
        )
        .await;
    assert_eq!(status, 101, "{head}");
    let (h, uri) = up.request().await;
    assert_eq!(uri, "/?access_token=t0k");
    assert_eq!(h["authorization"], "Bearer t0k");
    assert!(
        h.get("sec-websocket-protocol").is_none(),
        "bearer.<token> is never offered upstream"
    );
}

#[tokio::test]
async fn upstream_refusals_are_passed_with_their_status() {
    for (status, body) in [(401u16, "token required\n"), (403, "forbidden here\n")] {
        let up = Upstream::start(
            Handshake {
                refuse: Some((status, body)),
                ..Handshake::default()
            },
            echo(),
        )
        .await;
        let gw = Gateway::start(&relay_route("/r", &[up.url("/")], "")).await;
        let answer = gw.raw(handshake("/r", "").as_bytes()).await;
        assert_eq!(status_of(&answer), status, "{answer}");
        assert!(answer.ends_with(body), "{answer}");
        assert!(
            answer.contains("WWW-Authenticate: Bearer realm=\"up\""),
            "{answer}"
        );
        // A refusal is an answer, not a failure: the upstream stays in rotation.
        let answer = gw.raw(handshake("/r", "").as_bytes()).await;
        assert_eq!(status_of(&answer), status, "{answer}");
    }
}

#[tokio::test]
async fn upstream_down_is_502_and_leaves_the_rotation() {
    // A port held with nothing listening: connections are refused.
    let down = HeldPort::new();
    let dead = down.url("/");
    let gw = Gateway::start(&relay_route(
        "/down",
        std::slice::from_ref(&dead),
        "unhealthy_for = \"30s\"",
    ))
    .await;
    let answer = gw.raw(handshake("/down", "").as_bytes()).await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    assert!(answer.ends_with("upstream unavailable\n"), "{answer}");
    // Now out of rotation: refused at once, without trying.
    let answer = gw.raw(handshake("/down", "").as_bytes()).await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    assert!(answer.ends_with("no healthy upstream\n"), "{answer}");
    gw.wait_log("out of rotation").await;
}

#[tokio::test]
async fn a_failing_upstream_is_skipped_for_the_next() {
    let mut up = Upstream::echo().await;
    let down = HeldPort::new();
    let gw = Gateway::start(&relay_route("/two", &[down.url("/"), up.url("/")], "")).await;
    for i in 0..4 {
        let mut ws = gw.ws("/two").await;
        let text = format!("m{i}");
        assert_eq!(
            roundtrip(&mut ws, Message::text(text.clone())).await,
            Message::text(text)
        );
        up.request().await;
    }
}

#[tokio::test]
async fn slow_upstream_is_504_in_time() {
    let up = Upstream::start(
        Handshake {
            stall: true,
            ..Handshake::default()
        },
        echo(),
    )
    .await;
    let gw = Gateway::start(&relay_route(
        "/slow",
        &[up.url("/")],
        "connect_timeout = \"500ms\"",
    ))
    .await;
    let start = Instant::now();
    let answer = gw.raw(handshake("/slow", "").as_bytes()).await;
    assert_eq!(status_of(&answer), 504, "{answer}");
    assert!(answer.ends_with("upstream timed out\n"), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn upstream_dying_mid_stream_closes_the_client_with_1011() {
    let up = Upstream::start(Handshake::default(), dies_after_answering("last words")).await;
    let gw = Gateway::start(&relay_route("/dies", &[up.url("/")], "")).await;
    let mut ws = gw.ws("/dies").await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("last words"));
    let start = Instant::now();
    assert_eq!(
        expect_close(&mut ws).await,
        (1011, "upstream connection lost".to_string())
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn close_codes_and_reasons_pass_both_ways() {
    // Client → upstream.
    let mut up = Upstream::echo().await;
    let gw = Gateway::start(&relay_route("/c", &[up.url("/")], "")).await;
    let mut ws = gw.ws("/c").await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "client says bye".into(),
    })))
    .await
    .unwrap();
    assert_eq!(up.closed().await, (4000, "client says bye".to_string()));
    assert_eq!(
        expect_close(&mut ws).await,
        (4000, "client says bye".to_string())
    );

    // Upstream → client.
    let up2 = Upstream::start(
        Handshake::default(),
        closes_after_first(4001, "upstream is done"),
    )
    .await;
    let gw2 = Gateway::start(&relay_route("/u", &[up2.url("/")], "")).await;
    let mut ws = gw2.ws("/u").await;
    ws.send(Message::text("go")).await.unwrap();
    assert_eq!(
        expect_close(&mut ws).await,
        (4001, "upstream is done".to_string())
    );
    gw2.wait_log("end_reason=upstream_closed close_code=4001")
        .await;
}

#[tokio::test]
async fn client_protocol_violations_get_rfc_codes_and_the_upstream_1001() {
    let mut up = Upstream::start(Handshake::default(), listen()).await;
    let gw = Gateway::start(&relay_route("/v", &[up.url("/")], "")).await;
    for (what, frame, code) in violations(true) {
        let mut raw = gw.tls().await;
        let mut bytes = handshake("/v", "").into_bytes();
        bytes.extend(frame);
        raw.write_all(&bytes).await.unwrap();
        let (got, _) = raw_close(&mut raw, what).await;
        assert_eq!(got, code, "{what}");
        // Nothing malformed reached the upstream; it was told the client went.
        loop {
            match up.event().await {
                // `Ended`: the previous case's connection finishing.
                Event::Request(..) | Event::Ended => {}
                Event::Closed(c, reason) => {
                    assert_eq!(
                        (c, reason.as_str()),
                        (1001, "client protocol error"),
                        "{what}"
                    );
                    break;
                }
                other => panic!("{what}: upstream got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn upstream_protocol_violations_get_rfc_codes_and_the_client_1011() {
    for (what, frame, code) in violations(false) {
        let mut up = Upstream::start(Handshake::default(), writes_raw(frame)).await;
        let gw = Gateway::start(&relay_route("/v", &[up.url("/")], "")).await;
        let mut ws = gw.ws("/v").await;
        assert_eq!(
            expect_close(&mut ws).await,
            (1011, "upstream protocol error".to_string()),
            "{what}"
        );
        let (got, _) = up.closed().await;
        assert_eq!(got, code, "{what}");
    }
}

#[tokio::test]
async fn message_size_limits_apply_per_direction() {
    let mut up = Upstream::start(
        Handshake::default(),
        handler(|mut ws, tx| async move {
            // Answer "big" with a message over the upstream limit, anything else with itself.
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Close(f) = &m {
                    let f = f.as_ref().unwrap();
                    let _ = tx.send(Event::Closed(u16::from(f.code), f.reason.to_string()));
                    continue;
                }
                let reply = if m == Message::text("big") {
                    Message::text("u".repeat(121))
                } else {
                    m
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
            serve_rest(ws, &tx, false).await
        }),
    )
    .await;
    let gw = Gateway::start(&relay_route(
        "/lim",
        &[up.url("/")],
        "max_message_bytes = 100\nupstream_max_message_bytes = 120",
    ))
    .await;
    let mut ws = gw.ws("/lim").await;
    let at = "c".repeat(100);
    assert_eq!(
        roundtrip(&mut ws, Message::text(at.clone())).await,
        Message::text(at)
    );
    ws.send(Message::text("c".repeat(101))).await.unwrap();
    assert_eq!(
        expect_close(&mut ws).await,
        (1009, "message too big".to_string())
    );
    assert_eq!(
        up.closed().await,
        (1001, "client message too big".to_string())
    );

    let mut ws = gw.ws("/lim").await;
    ws.send(Message::text("big")).await.unwrap();
    assert_eq!(
        expect_close(&mut ws).await,
        (1011, "upstream message too big".to_string())
    );
    assert_eq!(up.closed().await, (1009, "message too big".to_string()));
}

#[tokio::test]
async fn round_robin_and_least_connections_balance_two_upstreams() {
    let mut a = Upstream::echo().await;
    let mut b = Upstream::echo().await;
    let routes = format!(
        "{}{}",
        relay_route("/rr", &[a.url("/a"), b.url("/b")], ""),
        relay_route(
            "/lc",
            &[a.url("/a"), b.url("/b")],
            "balance = \"least_connections\""
        )
    );
    let gw = Gateway::start(&routes).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut ws = gw.ws("/rr").await;
        roundtrip(&mut ws, Message::text("x")).await;
        let which = tokio::select! {
            _ = a.request() => "a",
            _ = b.request() => "b",
        };
        seen.push(which);
        ws.close(None).await.unwrap();
    }
    assert_eq!(seen, ["a", "b", "a", "b"]);

    // Least connections: one long-lived socket on "a"; then every short one goes to "b".
    let mut long = gw.ws("/lc").await;
    roundtrip(&mut long, Message::text("stay")).await;
    let (_, uri) = a.request().await;
    assert_eq!(uri, "/a");
    for _ in 0..3 {
        let mut ws = gw.ws("/lc").await;
        roundtrip(&mut ws, Message::text("x")).await;
        let (_, uri) = b.request().await;
        assert_eq!(uri, "/b");
        ws.close(None).await.unwrap();
        let _ = tokio::time::timeout(STEP, ws.next()).await;
        // The session ends (and its upstream's count drops) right after the close handshake;
        // the route's open-sockets gauge is released after that count.
        gw.wait_metric("portcullis_connections_open{route=\"/lc\"} 1")
            .await;
    }
    assert_eq!(
        roundtrip(&mut long, Message::text("still")).await,
        Message::text("still")
    );
}

#[tokio::test]
async fn keepalive_drops_silent_clients_and_idle_sockets_close() {
    let mut up = Upstream::echo().await;
    let mut idle_up = Upstream::echo().await;
    let routes = format!(
        "{}{}",
        relay_route(
            "/ka",
            &[up.url("/")],
            "ping_interval = \"300ms\"\nping_timeout = \"300ms\""
        ),
        relay_route(
            "/idle",
            &[idle_up.url("/")],
            "ping_interval = \"200ms\"\nping_timeout = \"5s\"\nidle_timeout = \"1s\""
        )
    );
    let gw = Gateway::start(&routes).await;

    // A client that reads (and so answers pings) stays.
    let mut alive = gw.ws("/ka").await;
    up.request().await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    while let Ok(m) = tokio::time::timeout_at(deadline, alive.next()).await {
        match m.unwrap().unwrap() {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings");
    assert_eq!(
        roundtrip(&mut alive, Message::text("here")).await,
        Message::text("here")
    );
    assert!(matches!(up.event().await, Event::Data(_)));

    // (Closed now, so that the next close the upstream sees is the silent client's.)
    alive.close(None).await.unwrap();
    assert_eq!(up.closed().await, (1005, String::new()));
    // A client that does not read (so never answers) is dropped after interval + timeout.
    let mut silent = gw.ws("/ka").await;
    up.request().await;
    let start = Instant::now();
    assert_eq!(up.closed().await, (1001, "client ping timeout".to_string()));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        expect_close(&mut silent).await,
        (1001, "ping timeout".to_string())
    );

    // Pings answered but no data either way: closed for idleness, both sides.
    let mut idle = gw.ws("/idle").await;
    let start = Instant::now();
    let (code, reason) = loop {
        match next_frame(&mut idle).await {
            Message::Close(Some(f)) => break (u16::from(f.code), f.reason.to_string()),
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!((code, reason.as_str()), (1001, "idle timeout"));
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(idle_up.closed().await, (1001, "idle timeout".to_string()));
    gw.wait_log("end_reason=ping_timeout").await;
    gw.wait_log("end_reason=idle_timeout").await;
}

/// A peer that never reads while the other floods: the flood stalls (backpressure reaches the
/// sender) and the gateway's memory stays bounded, in both directions.
#[tokio::test]
async fn a_slow_consumer_slows_the_sender_and_memory_stays_bounded() {
    const CHUNK: usize = 64 * 1024;
    const CAP: u64 = 64 * 1024 * 1024;
    let sent = Arc::new(AtomicU64::new(0));
    // Upstream floods; the client never reads.
    let flood = Upstream::start(Handshake::default(), floods(sent.clone(), CHUNK, 4 * CAP)).await;
    // Upstream never reads; the client floods.
    let sink = Upstream::start(Handshake::default(), never_reads()).await;
    let routes = format!(
        "{}{}",
        relay_route("/flood", &[flood.url("/")], "ping_interval = \"0s\""),
        relay_route("/sink", &[sink.url("/")], "ping_interval = \"0s\"")
    );
    let gw = Gateway::start(&routes).await;
    let _warm = gw.ws("/sink").await;
    let before = gateway_rss_kib(&gw);

    let _reader_that_never_reads = gw.ws("/flood").await;
    let mut last = 0;
    let mut stalled_at = None;
    for _ in 0..60 {
        // The measurement itself: "stalled" means no progress over a 250 ms window (at most
        // 60 windows).
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sent.load(Ordering::Relaxed);
        if now == last && now > 0 {
            stalled_at = Some(now);
            break;
        }
        last = now;
    }
    let stalled_at = stalled_at.expect("the upstream flood never stalled");
    assert!(
        stalled_at < CAP,
        "upstream sent {stalled_at} bytes into a client that reads nothing"
    );

    let mut client = gw.ws("/sink").await;
    let mut pushed: u64 = 0;
    let chunk = vec![0xa5u8; CHUNK];
    loop {
        let send = client.send(Message::binary(chunk.clone()));
        match tokio::time::timeout(Duration::from_secs(1), send).await {
            Ok(Ok(())) => pushed += CHUNK as u64,
            Ok(Err(e)) => panic!("send failed after {pushed} bytes: {e}"),
            Err(_) => break,
        }
        assert!(
            pushed < CAP,
            "the client pushed {pushed} bytes into an upstream that reads nothing"
        );
    }
    let growth_kib = gateway_rss_kib(&gw).saturating_sub(before);
    assert!(
        growth_kib < 32 * 1024,
        "gateway RSS grew by {growth_kib} KiB (upstream pushed {stalled_at} B, client {pushed} B)"
    );
}

#[tokio::test]
async fn shutdown_sends_1001_to_both_sides() {
    let mut up = Upstream::echo().await;
    let mut gw = Gateway::start(&relay_route("/s", &[up.url("/")], "")).await;
    let mut ws = gw.ws("/s").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("x")).await,
        Message::text("x")
    );
    gw.signal("TERM");
    assert_eq!(
        expect_close(&mut ws).await,
        (1001, "server shutting down".to_string())
    );
    assert_eq!(
        up.closed().await,
        (1001, "server shutting down".to_string())
    );
    gw.wait_exit(Duration::from_secs(10)).await;
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn wss_upstream_with_its_own_ca_and_a_client_certificate() {
    let (cert, key) = self_signed(&["localhost"]);
    // A CA that issues the gateway's client certificate.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["portcullis".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();

    let mut up = Upstream::start(
        Handshake {
            tls: Some((cert.clone(), key.clone())),
            client_ca: Some(ca_cert.pem()),
            ..Handshake::default()
        },
        echo(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "upstream-ca.pem", &cert);
    let client_cert_file = write(dir.path(), "client.pem", &client_cert.pem());
    let client_key_file = write(dir.path(), "client-key.pem", &client_key.serialize_pem());
    let url = format!("wss://localhost:{}/secure", up.addr.port());
    let routes = format!(
        "{}{}{}",
        relay_route(
            "/mtls",
            std::slice::from_ref(&url),
            &format!(
                "upstream_ca_file = \"{ca_file}\"\nupstream_client_cert = \"{client_cert_file}\"\n\
                 upstream_client_key = \"{client_key_file}\""
            ),
        ),
        // Trusts the CA but presents no client certificate: the upstream refuses the TLS.
        relay_route(
            "/no-client-cert",
            std::slice::from_ref(&url),
            &format!("upstream_ca_file = \"{ca_file}\"")
        ),
        // Trusts only the system roots: the upstream's self-signed certificate fails.
        relay_route("/system-roots", std::slice::from_ref(&url), ""),
    );
    let gw = Gateway::start(&routes).await;
    let mut ws = gw.ws("/mtls").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("over wss")).await,
        Message::text("over wss")
    );
    let (h, uri) = up.request().await;
    assert_eq!(uri, "/secure");
    assert_eq!(h["host"], format!("localhost:{}", up.addr.port()));
    for path in ["/no-client-cert", "/system-roots"] {
        let answer = gw.raw(handshake(path, "").as_bytes()).await;
        assert_eq!(status_of(&answer), 502, "{path}: {answer}");
    }
}

#[tokio::test]
async fn active_health_checks_bring_an_upstream_back() {
    // Hold a port with nothing listening: the upstream is down.
    let port = HeldPort::new();
    let url = port.url("/");
    let gw = Gateway::start(&relay_route(
        "/hc",
        std::slice::from_ref(&url),
        "health_check_interval = \"200ms\"\nunhealthy_for = \"1h\"",
    ))
    .await;
    let answer = gw.raw(handshake("/hc", "").as_bytes()).await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    // It comes up; passive ejection alone would keep it out for an hour.
    let _up = Upstream::serve(port.listen(), Handshake::default(), echo());
    eventually(STEP, "the upstream back in the rotation", || async {
        let (status, answer) = gw.try_handshake("/hc", "").await;
        done_or(status == 101, answer)
    })
    .await;
    gw.wait_log("passes its health check again").await;
}

// --- Relays under admission policies -------------------------------------------------------

/// A relay route behind a JWT policy: the verified subject and claims reach the backend as
/// headers, the token does not (header, `bearer.` subprotocol, query parameter or cookie), and
/// the client-supplied identity headers are replaced.
#[tokio::test]
async fn admitted_identity_reaches_the_backend_and_the_token_does_not() {
    use crate::tokens::{claims, sign, write_keys};
    use jsonwebtoken::Algorithm;
    let mut up = Upstream::start(
        Handshake {
            protocols: vec!["chat.v1"],
            ..Handshake::default()
        },
        echo(),
    )
    .await;
    let route = relay_route(
        "/chat",
        &[up.url("/svc")],
        "policy = \"chat\"\nforward_claims = { sub = \"X-Auth-Subject\", tenant = \"X-Tenant\", roles = \"X-Roles\" }",
    );
    let gw = Gateway::start_prepared(
        true,
        &format!(
            "{route}\n[policies.chat.jwt]\nkeys = [{{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }}]\n\
             query_param = \"jwt\"\ncookie = \"jwt_cookie\"\n"
        ),
        write_keys,
    ).await;
    let token = sign(
        Algorithm::ES256,
        None,
        &claims(serde_json::json!({"tenant": "acme", "roles": ["a", "b"]})),
    );
    // The token in the subprotocol, the query or a cookie (one way per handshake: two at once
    // are refused), each time with spoofed identity.
    let protocols = format!("bearer.{token}, chat.v1");
    let in_cookie = format!("theme=dark; jwt_cookie={token}");
    let ways: [(String, Vec<(&'static str, &str)>); 3] = [
        (
            "/chat?room=7".to_string(),
            vec![
                ("sec-websocket-protocol", protocols.as_str()),
                ("cookie", "theme=dark"),
            ],
        ),
        (
            format!("/chat?room=7&jwt={token}"),
            vec![
                ("sec-websocket-protocol", "chat.v1"),
                ("cookie", "theme=dark"),
            ],
        ),
        (
            "/chat?room=7".to_string(),
            vec![
                ("sec-websocket-protocol", "chat.v1"),
                ("cookie", in_cookie.as_str()),
            ],
        ),
    ];
    for (target, mut headers) in ways {
        headers.push(("x-auth-subject", "admin"));
        let (mut ws, resp) = gw.ws_headers(&target, &headers).await;
        assert_eq!(resp.headers()["sec-websocket-protocol"], "chat.v1");
        let (h, uri) = up.request().await;
        let get = |name: &str| -> Vec<String> {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(uri, "/svc?room=7");
        assert_eq!(get("x-auth-subject"), ["alice"]);
        assert_eq!(get("x-tenant"), ["acme"]);
        assert_eq!(get("x-roles"), ["a,b"]);
        assert_eq!(get("sec-websocket-protocol"), ["chat.v1"]);
        assert_eq!(get("cookie"), ["theme=dark"]);
        assert!(get("authorization").is_empty());
        let all = format!("{h:?}{uri}");
        assert!(
            !all.contains(&token),
            "the token reached the backend: {all}"
        );
        assert_eq!(
            roundtrip(&mut ws, Message::text("via relay")).await,
            Message::text("via relay")
        );
    }
    // Without a token: refused before any upstream work.
    assert_eq!(gw.try_handshake("/chat", "").await.0, 401);
}

/// Per-connection message rates of the policy apply to relayed sessions too.
#[tokio::test]
async fn policy_message_rate_closes_a_relayed_session_with_1008() {
    let mut up = Upstream::echo().await;
    let route = relay_route("/rated", &[up.url("/")], "policy = \"rated\"");
    let gw = Gateway::start(&format!(
        "{route}\n[policies.rated.limits]\nmessages_per_second = 3\n"
    ))
    .await;
    let mut ws = gw.ws("/rated").await;
    let closed = send_until_closed(&mut ws, 30).await;
    assert_eq!(closed, Some((1008, "message rate exceeded".into())));
    // The upstream is told the client was closed by policy.
    assert_eq!(up.closed().await, (1001, "client closed by policy".into()));
}

/// `/readyz` follows the upstreams: ready while the only upstream is up, 503 with the reason
/// once its health check fails, ready again when it is back.
#[tokio::test]
async fn readyz_flips_when_the_only_upstream_dies() {
    // Held for the whole test, so that the upstream can come back on the same address.
    let port = HeldPort::new();
    let up = Upstream::serve(port.listen(), Handshake::default(), echo());
    let gw = Gateway::start(&relay_route(
        "/svc",
        &[port.url("/")],
        "health_check_interval = \"200ms\"\nconnect_timeout = \"500ms\"",
    ))
    .await;
    let ready = |want: u16| {
        let gw = &gw;
        eventually(
            STEP,
            format!("/readyz answering {want}"),
            move || async move {
                let answer = gw.admin_get("/readyz").await;
                done_or(status_of(&answer) == want, answer.clone()).map(|()| answer)
            },
        )
    };
    ready(200).await;
    drop(up);
    let answer = ready(503).await;
    assert!(answer.contains("no healthy upstream for /svc"), "{answer}");
    gw.wait_metric(&format!(
        "portcullis_upstream_healthy{{upstream=\"{}\"}} 0",
        port.url("/")
    ))
    .await;
    // Back on the same address.
    let _up = Upstream::serve(port.listen(), Handshake::default(), echo());
    ready(200).await;
}

/// An upstream that closes with a code no endpoint may send (1005, 1006, 1015) broke the
/// protocol: the client is not blamed with 1002 but told 1011, and the access line names the
/// upstream and the reason.
#[tokio::test]
async fn an_upstream_close_with_a_reserved_code_gives_the_client_1011() {
    for code in [1005u16, 1006, 1015] {
        let up = Upstream::start(
            Handshake::default(),
            handler(move |mut ws, _tx| async move {
                // The first message is answered with a close carrying `code` on the wire.
                if let Some(Ok(_)) = ws.next().await {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: "".into(),
                    };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                    while let Some(Ok(_)) = ws.next().await {}
                }
            }),
        )
        .await;
        let gw = Gateway::start(&relay_route("/r", &[up.url("/")], "")).await;
        let mut ws = gw.ws("/r").await;
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(
            expect_close(&mut ws).await,
            (1011, "upstream protocol error".into()),
            "upstream close {code}"
        );
        let line = gw
            .wait_log_line("the session's access line", |l| {
                l.contains("] session route=/r")
            })
            .await;
        assert!(
            line.contains("end_reason=upstream_protocol_error") && line.contains("upstream="),
            "{line}"
        );
    }
}

/// A forwarded claim that no header can carry faithfully refuses the handshake (the upstream
/// would otherwise see an authenticated session without its identity); UTF-8 goes as it is.
#[tokio::test]
async fn a_claim_no_header_can_carry_refuses_the_handshake() {
    use crate::tokens::{claims, sign, write_keys};
    use jsonwebtoken::Algorithm;
    let mut up = Upstream::echo().await;
    let route = relay_route(
        "/id",
        &[up.url("/")],
        "policy = \"p\"\nforward_claims = { sub = \"X-Auth-Subject\", roles = \"X-Roles\" }",
    );
    let gw = Gateway::start_prepared(
        true,
        &format!(
            "{route}\n[policies.p.jwt]\nkeys = [{{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }}]\n\
             max_token_bytes = 131072\n[limits]\nmax_head_bytes = 262144\n"
        ),
        write_keys,
    )
    .await;
    let token = |sub: serde_json::Value| {
        sign(
            Algorithm::ES256,
            None,
            &claims(serde_json::json!({ "sub": sub, "roles": ["a", "b"] })),
        )
    };
    // A 64 KiB claim (the head and token limits are raised so that the token is admitted).
    let long = "x".repeat(64 * 1024);
    for bad in [
        "a\rb",
        "a\nb",
        "a\r\nX-Admin: yes",
        "a\u{0}b",
        long.as_str(),
    ] {
        let (status, answer) = gw.try_handshake("/id", &bearer(&token(bad.into()))).await;
        let shown: String = bad.chars().take(40).collect();
        assert_eq!(status, 403, "{shown:?}: {answer}");
        assert!(
            answer.ends_with("identity cannot be forwarded\n"),
            "{answer}"
        );
    }
    gw.wait_metric(r#"portcullis_rejections_total{reason="identity_unforwardable",route="/id"} 5"#)
        .await;
    // Non-ASCII and an array claim reach the upstream intact.
    let (status, _) = gw
        .try_handshake("/id", &bearer(&token("José 🙂".into())))
        .await;
    assert_eq!(status, 101);
    let (h, _) = up.request().await;
    assert_eq!(h["x-auth-subject"].as_bytes(), "José 🙂".as_bytes());
    assert_eq!(h["x-roles"], "a,b");
}
