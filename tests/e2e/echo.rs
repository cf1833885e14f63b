//! The local echo over `wss`: text, binary, ping/pong, close codes, the message-size limit and
//! hostile frames.

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn echoes_text_and_binary() {
    let gw = Gateway::start("");
    let mut ws = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("hello")).await,
        Message::text("echo: hello")
    );
    assert_eq!(
        roundtrip(&mut ws, Message::text("héllo wörld ✓")).await,
        Message::text("echo: héllo wörld ✓")
    );
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(
        roundtrip(&mut ws, Message::binary(bytes.clone())).await,
        Message::binary(bytes)
    );
    // A large (but allowed) message, several TLS records long.
    let big = "x".repeat(200_000);
    assert_eq!(
        roundtrip(&mut ws, Message::text(big.clone())).await,
        Message::text(format!("echo: {big}"))
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn answers_pings_with_pongs() {
    let gw = Gateway::start("");
    let mut ws = gw.ws("/ws/echo").await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(STEP, futures_util::StreamExt::next(&mut ws))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
    // The session goes on after control frames.
    assert_eq!(
        roundtrip(&mut ws, Message::text("still")).await,
        Message::text("echo: still")
    );
}

#[tokio::test]
async fn close_is_answered_with_the_same_code_and_reason() {
    let gw = Gateway::start("");
    for (code, reason) in [(1000u16, "bye"), (4000, "app says so"), (1001, "")] {
        let mut ws = gw.ws("/ws/echo").await;
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })))
        .await
        .unwrap();
        assert_eq!(expect_close(&mut ws).await, (code, reason.to_string()));
        // After the close handshake the server ends the connection.
        let end = tokio::time::timeout(STEP, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap();
        assert!(end.is_none() || matches!(end, Some(Err(_))), "{end:?}");
    }
    let log = gw.log();
    assert!(log.contains("close_code=4000 initiator=client"), "{log}");
}

#[tokio::test]
async fn oversized_message_is_closed_with_1009_and_others_are_unaffected() {
    let gw = Gateway::start("[limits]\nmax_message_bytes = 1024\n");
    let mut bystander = gw.ws("/ws/echo").await;
    let mut ws = gw.ws("/ws/echo").await;
    // Exactly at the limit passes.
    let at_limit = "a".repeat(1024);
    assert_eq!(
        roundtrip(&mut ws, Message::text(at_limit.clone())).await,
        Message::text(format!("echo: {at_limit}"))
    );
    ws.send(Message::text("b".repeat(1025))).await.unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    // A fragmented message over the limit counts as one message.
    let mut ws = gw
        .ws_with("/ws/echo", Some(WebSocketConfig::default()))
        .await;
    let mut raw = gw.tls().await;
    raw.write_all(handshake("/ws/echo", "").as_bytes())
        .await
        .unwrap();
    let mut frames = Vec::new();
    // Three 600-byte fragments: text (FIN=0), continuation (FIN=0), continuation (FIN=1).
    for (i, opcode) in [(0, 0x1u8), (1, 0x0), (2, 0x0)] {
        let fin = if i == 2 { 0x80 } else { 0 };
        frames.push(fin | opcode);
        frames.push(0x80 | 126);
        frames.extend_from_slice(&600u16.to_be_bytes());
        frames.extend_from_slice(&[0, 0, 0, 0]);
        frames.extend(std::iter::repeat_n(b'z', 600));
    }
    raw.write_all(&frames).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + STEP;
    // Read the 101 then the close frame: 0x88, len, code 1009 (0x03F1).
    while !got.windows(2).any(|w| w == [0x03, 0xF1]) {
        let n = tokio::time::timeout_at(deadline, raw.read(&mut answer))
            .await
            .expect("no close in time")
            .unwrap();
        assert!(n > 0, "closed without a 1009 close frame: {got:?}");
        got.extend_from_slice(&answer[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"));
    // Everyone else keeps working.
    assert_eq!(
        roundtrip(&mut bystander, Message::text("ok?")).await,
        Message::text("echo: ok?")
    );
    assert_eq!(
        roundtrip(&mut ws, Message::text("fine")).await,
        Message::text("echo: fine")
    );
}

#[tokio::test]
async fn per_route_limit_overrides_the_global_one() {
    let gw = Gateway::start(
        "[[routes]]\npath = \"/ws/small\"\nmode = \"echo\"\nprefix = \"\"\nmax_message_bytes = 10\n",
    );
    let mut small = gw.ws("/ws/small").await;
    assert_eq!(
        roundtrip(&mut small, Message::text("0123456789")).await,
        Message::text("0123456789")
    );
    small.send(Message::text("0123456789X")).await.unwrap();
    assert_eq!(expect_close(&mut small).await.0, 1009);
    let mut normal = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut normal, Message::text("0123456789X")).await,
        Message::text("echo: 0123456789X")
    );
}

/// Frames sent in the same packet as the handshake are not lost.
#[tokio::test]
async fn frames_right_behind_the_handshake_are_kept() {
    let gw = Gateway::start("");
    let mut raw = gw.tls().await;
    let mut bytes = handshake("/ws/echo", "").into_bytes();
    bytes.extend(client_frame(0x1, b"early", Some([1, 2, 3, 4])));
    raw.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let want = b"\x81\x0becho: early";
    let deadline = tokio::time::Instant::now() + STEP;
    while !got.windows(want.len()).any(|w| w == want) {
        let n = tokio::time::timeout_at(deadline, raw.read(&mut chunk))
            .await
            .expect("no echo of the early frame")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Hostile frames get the RFC's close code; the gateway and other sockets carry on.
#[tokio::test]
async fn protocol_violations_get_rfc_close_codes() {
    let gw = Gateway::start("");
    let mut bystander = gw.ws("/ws/echo").await;
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "unmasked client frame",
            client_frame(0x1, b"hi", None),
            1002,
        ),
        (
            "reserved opcode",
            client_frame(0x3, b"hi", Some([9, 9, 9, 9])),
            1002,
        ),
        (
            "invalid UTF-8 in text",
            client_frame(0x1, &[0xff, 0xfe], Some([1, 1, 1, 1])),
            1007,
        ),
        (
            "oversized control frame",
            {
                // A ping with a 126-byte payload (control frames are limited to 125).
                let mut f = vec![0x89, 0x80 | 126];
                f.extend_from_slice(&126u16.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 0]);
                f.extend(std::iter::repeat_n(0u8, 126));
                f
            },
            1002,
        ),
    ];
    for (what, frame, code) in cases {
        let mut raw = gw.tls().await;
        let mut bytes = handshake("/ws/echo", "").into_bytes();
        bytes.extend(frame);
        raw.write_all(&bytes).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        let want = [0x88u8];
        let code_bytes = code.to_be_bytes();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let n = tokio::time::timeout_at(deadline, raw.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("{what}: no close frame in time"))
                .unwrap_or(0);
            got.extend_from_slice(&chunk[..n]);
            let body = got
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| &got[i + 4..]);
            if let Some(body) = body {
                if body.len() >= 4 && body[0] == want[0] {
                    assert_eq!(&body[2..4], &code_bytes, "{what}: close frame {body:?}");
                    break;
                }
            }
            assert!(n > 0, "{what}: closed without a close frame: {got:?}");
        }
    }
    assert_eq!(
        roundtrip(&mut bystander, Message::text("alive")).await,
        Message::text("echo: alive")
    );
}

#[tokio::test]
async fn plain_ws_listener_for_local_development() {
    let gw = Gateway::start_with(false, "");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(gw.url("/ws/echo"), tcp)
        .await
        .unwrap();
    assert_eq!(
        roundtrip(&mut ws, Message::text("plain")).await,
        Message::text("echo: plain")
    );
}

/// A route whose messages are larger than the write queue still echoes them (the queue grows to
/// the largest message the route allows).
#[tokio::test]
async fn messages_larger_than_the_write_queue_are_echoed() {
    let gw = Gateway::start(
        "[limits]\nmax_write_buffer_bytes = 4096\n\
         [[routes]]\npath = \"/ws/big\"\nmode = \"echo\"\nmax_message_bytes = 100000\n",
    );
    let mut ws = gw
        .ws_with(
            "/ws/big",
            Some(WebSocketConfig::default().max_message_size(Some(200_000))),
        )
        .await;
    let big = "b".repeat(90_000);
    assert_eq!(
        roundtrip(&mut ws, Message::text(big.clone())).await,
        Message::text(format!("echo: {big}"))
    );
}
