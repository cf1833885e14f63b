//! HTTP answers before any WebSocket exists: 426 for plain requests to a WebSocket route, 400
//! with a short reason for malformed upgrades, 404/405, and the request-head limits.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn plain_http_routes() {
    let gw = Gateway::start("").await;
    let answer = gw
        .raw(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status_of(&answer), 200);
    assert!(answer.ends_with("\r\n\r\nHello, World!"), "{answer}");
    let answer = gw
        .raw(b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status_of(&answer), 404);
    let answer = gw
        .raw(b"DELETE / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status_of(&answer), 405);
    assert!(answer.contains("Allow: GET, HEAD"), "{answer}");
}

#[tokio::test]
async fn keep_alive_serves_several_requests_then_upgrades() {
    let gw = Gateway::start("").await;
    let mut tls = gw.tls().await;
    let mut got = Vec::new();
    for _ in 0..3 {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        got.clear();
        let answered = read_until(&mut tls, &mut got, "the static answer", |got| {
            got.ends_with(b"Hello, World!")
        })
        .await;
        assert!(answered);
        assert!(String::from_utf8_lossy(&got).contains("Connection: keep-alive"));
    }
    // The same connection can then become a WebSocket.
    tls.write_all(handshake("/ws/echo", "").as_bytes())
        .await
        .unwrap();
    got.clear();
    assert!(read_until(&mut tls, &mut got, "the 101", has_head).await);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols"),
        "{text}"
    );
    assert!(
        text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{text}"
    );
}

#[tokio::test]
async fn websocket_route_answers_426_to_plain_requests() {
    let gw = Gateway::start("").await;
    let answer = gw
        .raw(b"GET /ws/echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert_eq!(status_of(&answer), 426, "{answer}");
    assert!(answer.contains("Upgrade: websocket"), "{answer}");
    assert!(answer.contains("Sec-WebSocket-Version: 13"), "{answer}");
    gw.wait_log("reason=upgrade_required").await;
}

#[tokio::test]
async fn malformed_upgrades_get_400_with_a_reason() {
    let gw = Gateway::start("").await;
    let good = handshake("/ws/echo", "");
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("GET /ws/echo", "POST /ws/echo"),
            "must use GET",
        ),
        (
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            "missing Sec-WebSocket-Key",
        ),
        (
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "not-base64!"),
            "invalid Sec-WebSocket-Key",
        ),
        (
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            "invalid Sec-WebSocket-Key",
        ),
        (
            good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            "Version must be 13",
        ),
        (
            good.replace("Sec-WebSocket-Version: 13\r\n", ""),
            "Version must be 13",
        ),
        (
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            "Connection header",
        ),
        (good.replace("HTTP/1.1", "HTTP/1.0"), "HTTP/1.1"),
        (good.replace("Host: localhost\r\n", ""), "Host"),
    ];
    for (request, reason) in cases {
        let answer = gw.raw(request.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{request:?} -> {answer}");
        assert!(answer.contains(reason), "{request:?} -> {answer}");
    }
    let answer = gw
        .raw(
            good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8")
                .as_bytes(),
        )
        .await;
    assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"), "{answer}");
    gw.wait_log("reason=bad_request").await;
}

#[tokio::test]
async fn garbage_oversized_and_slow_heads() {
    let gw = Gateway::start("[limits]\nhead_timeout = \"500ms\"\nmax_head_bytes = 4096\n").await;
    let mut bystander = gw.ws("/ws/echo").await;

    let answer = gw.raw(b"\x00\x01\x02 garbage\r\n\r\n").await;
    assert_eq!(status_of(&answer), 400, "{answer}");

    let big = format!(
        "GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(5000)
    );
    let answer = gw.raw(big.as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");

    // A head that never ends (sent, then silence) gets 408 once head_timeout passes (the
    // connection, and so its timer, starts after `started`).
    let started = std::time::Instant::now();
    let answer = gw.raw(b"GET / HTTP/1.1\r\nHost: loc").await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < STEP,
        "408 after {took:?}, head_timeout 500ms"
    );

    // A byte-at-a-time client cannot stretch the head past the timeout either.
    let mut slow = gw.tls().await;
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in b"GET / HTTP/1.1\r\nHost: localhost\r\nX: "
        .iter()
        .cycle()
        .take(200)
    {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        // The test: one byte every 20 ms, slower than a client should be.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(STEP, slow.read_to_end(&mut rest)).await;
    let text = String::from_utf8_lossy(&rest);
    assert!(closed || text.starts_with("HTTP/1.1 408"), "{text}");

    assert_eq!(
        roundtrip(
            &mut bystander,
            tokio_tungstenite::tungstenite::Message::text("still here")
        )
        .await,
        tokio_tungstenite::tungstenite::Message::text("echo: still here")
    );
}
