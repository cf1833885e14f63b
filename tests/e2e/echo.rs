//! The local echo over `wss`: text, binary, ping/pong, close codes, the message-size limit and
//! hostile frames.

use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn echoes_text_and_binary() {
    let gw = Gateway::start("").await;
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
    let gw = Gateway::start("").await;
    let mut ws = gw.ws("/ws/echo").await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = next_frame(&mut ws).await;
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
    // The session goes on after control frames.
    assert_eq!(
        roundtrip(&mut ws, Message::text("still")).await,
        Message::text("echo: still")
    );
}

#[tokio::test]
async fn close_is_answered_with_the_same_code_and_reason() {
    let gw = Gateway::start("").await;
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
    // Written when that session ends, a little after the client saw it end.
    gw.wait_log("close_code=4000 initiator=client").await;
}

#[tokio::test]
async fn oversized_message_is_closed_with_1009_and_others_are_unaffected() {
    let gw = Gateway::start("[limits]\nmax_message_bytes = 1024\n").await;
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
    // Three 600-byte fragments: text (FIN=0), continuation (FIN=0), continuation (FIN=1).
    let fragment = [b'z'; 600];
    let mask = Some([0, 0, 0, 0]);
    let frames = [
        raw_frame(0x1, &fragment, mask),
        raw_frame(0x0, &fragment, mask),
        raw_frame(0x80, &fragment, mask),
    ]
    .concat();
    raw.write_all(&frames).await.unwrap();
    // The 101, then the close frame with 1009.
    let (code, _) = raw_close(&mut raw, "a fragmented message over the limit").await;
    assert_eq!(code, 1009);
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
    ).await;
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
    let gw = Gateway::start("").await;
    let mut raw = gw.tls().await;
    let mut bytes = handshake("/ws/echo", "").into_bytes();
    bytes.extend(client_frame(0x1, b"early", Some([1, 2, 3, 4])));
    raw.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let want = b"\x81\x0becho: early";
    let echoed = read_until(&mut raw, &mut got, "the echo of the early frame", |got| {
        got.windows(want.len()).any(|w| w == want)
    })
    .await;
    assert!(echoed, "closed early: {:?}", String::from_utf8_lossy(&got));
}

/// Hostile frames get the RFC's close code; the gateway and other sockets carry on.
#[tokio::test]
async fn protocol_violations_get_rfc_close_codes() {
    let gw = Gateway::start("").await;
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
            // A ping with a 126-byte payload (control frames are limited to 125).
            client_frame(0x9, &[0u8; 126], Some([0, 0, 0, 0])),
            1002,
        ),
    ];
    for (what, frame, code) in cases {
        let mut raw = gw.tls().await;
        let mut bytes = handshake("/ws/echo", "").into_bytes();
        bytes.extend(frame);
        raw.write_all(&bytes).await.unwrap();
        let (got, reason) = raw_close(&mut raw, what).await;
        assert_eq!(got, code, "{what}: close frame with {reason:?}");
    }
    assert_eq!(
        roundtrip(&mut bystander, Message::text("alive")).await,
        Message::text("echo: alive")
    );
}

#[tokio::test]
async fn plain_ws_listener_for_local_development() {
    let gw = Gateway::start_with(false, "").await;
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
    )
    .await;
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
