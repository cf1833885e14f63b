//! WebSockets over HTTP/2 (RFC 8441) end to end: a real HTTP/2 client (the `h2` crate over
//! rustls, ALPN `h2`) against the real gateway with `[listeners.tls] http2 = true`. Extended
//! CONNECT streams echo and relay, refusals carry HTTP/1.1's statuses and bodies, static routes
//! answer, a hundred sockets share one connection, HTTP/1.1 keeps working on the same listener,
//! a stop sends GOAWAY and 1001, and the gateway's access log and metrics say which protocol
//! carried each socket.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use h2::client::SendRequest;
use h2::RecvStream;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject, pki_types::CertificateDer};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::sessions;
use crate::support::upstream::*;
use crate::support::*;
use crate::tokens::*;

/// The listener key that offers HTTP/2.
const HTTP2: &str = "http2 = true";

/// A TLS connection offering `alpn`, trusting only `cert`.
async fn tls_alpn(port: u16, cert: &Path, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("TCP connect timed out")
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        STEP,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .expect("TLS handshake failed")
}

/// One HTTP/2 connection to the gateway; its frames are driven by a task of its own.
struct H2 {
    send: SendRequest<Bytes>,
    conn: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

impl H2 {
    /// Connect with ALPN `h2` and wait (bounded) for the gateway's SETTINGS to allow extended
    /// CONNECT (`SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`).
    async fn connect(gw: &Gateway) -> H2 {
        let tls = tls_alpn(gw.port, &gw.cert, &[b"h2", b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        // A connection window for many streams, as browsers have (Chromium's is 15 MiB): with
        // h2's default of 64 KiB, one stream the test leaves unread would hold the window of
        // the whole connection on the client's side.
        let handshake = h2::client::Builder::new()
            .initial_connection_window_size(16 << 20)
            .handshake(tls);
        let (send, conn) = tokio::time::timeout(STEP, handshake)
            .await
            .expect("HTTP/2 preface timed out")
            .expect("HTTP/2 preface failed");
        let conn = tokio::spawn(conn);
        let send = tokio::time::timeout(STEP, send.ready())
            .await
            .expect("not ready in time")
            .unwrap();
        eventually(STEP, "extended CONNECT enabled", || {
            let on = send.is_extended_connect_protocol_enabled();
            async move { done_or(on, "SETTINGS_ENABLE_CONNECT_PROTOCOL not seen") }
        })
        .await;
        H2 { send, conn }
    }

    /// A plain request: the status and the whole body.
    async fn get(&mut self, method: &str, path: &str) -> (u16, String) {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(())
            .unwrap();
        let send = self.send.clone().ready().await.unwrap();
        let (response, _) = send.clone().send_request(request, true).unwrap();
        let response = tokio::time::timeout(STEP, response)
            .await
            .expect("no answer in time")
            .unwrap();
        let status = response.status().as_u16();
        (status, body(response.into_body()).await)
    }

    /// An extended CONNECT (`:protocol = websocket`) to `path` with extra headers: the open
    /// WebSocket and the `200`'s headers, or the refusal's status and body.
    async fn websocket(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(WebSocketStream<H2Ws>, http::HeaderMap), (u16, String)> {
        let mut builder = http::Request::builder()
            .method("CONNECT")
            .uri(format!("https://localhost{path}"))
            .header("sec-websocket-version", "13");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut request = builder.body(()).unwrap();
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let send = tokio::time::timeout(STEP, self.send.clone().ready())
            .await
            .expect("no stream free in time")
            .unwrap();
        let (response, stream) = send.clone().send_request(request, false).unwrap();
        let response = tokio::time::timeout(STEP, response)
            .await
            .expect("no answer in time")
            .unwrap();
        let status = response.status().as_u16();
        let (parts, recv) = response.into_parts();
        if status != 200 {
            return Err((status, body(recv).await));
        }
        let io = H2Ws::new(stream, recv);
        let ws = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
        Ok((ws, parts.headers))
    }
}

/// A whole response body (bounded in time).
async fn body(mut recv: RecvStream) -> String {
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(STEP, recv.data())
        .await
        .expect("body not in time")
    {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).unwrap()
}

/// Close with 1000 and read (bounded) until the gateway's answer ends the stream.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    finish(ws).await;
}

async fn h2_gateway(extra: &str) -> Gateway {
    Gateway::start_tls_extra(HTTP2, extra, write_keys).await
}

/// The `portcullis_websockets_opened_total` sample for `protocol`.
fn opened(protocol: &str, n: usize) -> String {
    format!("portcullis_websockets_opened_total{{protocol=\"{protocol}\"}} {n}")
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn echo_and_static_routes_over_h2_beside_http1_on_one_listener() {
    let gw = h2_gateway("").await;
    let mut h2 = H2::connect(&gw).await;
    assert_eq!(h2.get("GET", "/").await, (200, "Hello, World!".into()));
    assert_eq!(h2.get("HEAD", "/").await, (200, String::new()));
    assert_eq!(h2.get("GET", "/nowhere").await, (404, "no route\n".into()));
    assert_eq!(h2.get("POST", "/").await.0, 405);
    // A plain GET to a WebSocket route is refused as on HTTP/1.1.
    let (status, text) = h2.get("GET", "/ws/echo").await;
    assert_eq!(
        (status, text.as_str()),
        (426, "this endpoint speaks WebSocket only\n")
    );

    let (mut ws, _) = h2.websocket("/ws/echo", &[]).await.unwrap();
    assert_eq!(
        roundtrip(&mut ws, Message::text("hello")).await,
        Message::text("echo: hello")
    );
    let bytes: Vec<u8> = (0..=255).cycle().take(200_000).collect();
    assert_eq!(
        roundtrip(&mut ws, Message::binary(bytes.clone())).await,
        Message::binary(bytes)
    );
    // The close handshake, then END_STREAM both ways.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    match tokio::time::timeout(STEP, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(_))) | None => {}
        other => panic!("expected the close answered, got {other:?}"),
    }

    // HTTP/1.1 on the same listener, and a client that offers no ALPN at all.
    let mut old = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut old, Message::text("h1")).await,
        Message::text("echo: h1")
    );
    close(&mut old).await;
    let (status, _) = gw.try_handshake("/ws/nowhere", "").await;
    assert_eq!(status, 404);

    gw.wait_metric(&opened("h2", 1)).await;
    gw.wait_metric(&opened("h1", 1)).await;
    gw.wait_metric("portcullis_http2_connections_total 1").await;
    let line = gw
        .wait_log_line("the h2 session's access line", |l| {
            l.contains("session route=/ws/echo") && l.contains("protocol=h2")
        })
        .await;
    assert!(line.contains("close_code=1000"), "{line}");
    gw.wait_log_line("the h1 session's access line", |l| {
        l.contains("session route=/ws/echo") && l.contains("protocol=h1")
    })
    .await;
    assert!(!h2.conn.is_finished(), "the connection stays open");
}

#[tokio::test]
async fn a_hundred_websockets_share_one_connection() {
    let gw = h2_gateway("").await;
    let mut h2 = H2::connect(&gw).await;
    let mut sockets = Vec::new();
    for _ in 0..100 {
        sockets.push(h2.websocket("/ws/echo", &[]).await.unwrap().0);
    }
    let rounds = sockets.iter_mut().enumerate().map(|(i, ws)| async move {
        let text = format!("stream {i}");
        assert_eq!(
            roundtrip(ws, Message::text(text.clone())).await,
            Message::text(format!("echo: {text}"))
        );
    });
    futures_util::future::join_all(rounds).await;
    gw.wait_metric(&opened("h2", 100)).await;
    gw.wait_metric("portcullis_connections_open{route=\"/ws/echo\"} 100")
        .await;
    gw.wait_metric("portcullis_http2_connections_total 1").await;
    futures_util::future::join_all(sockets.iter_mut().map(close)).await;
    gw.wait_metric("portcullis_connections_open{route=\"/ws/echo\"} 0")
        .await;
}

/// A token route like a browser app's: an origin allow-list, the token from a `bearer.`
/// subprotocol entry or the `Authorization` header, and a cap of one socket.
const TOKEN_ROUTE: &str = r#"
[[routes]]
path = "/ws/chat"
mode = "echo"
policy = "chat"

[policies.chat.origin]
allow = ["https://chat.example.com"]

[policies.chat.jwt]
sources = ["header", "subprotocol"]
issuers = ["https://idp.test"]
audiences = ["chat"]
keys = [{ kid = "es", alg = "ES256", pem_file = "keys/ec.pub.pem" }]

[policies.chat.limits]
connections_per_route = 1
"#;

#[tokio::test]
async fn refusals_and_the_token_in_the_subprotocol_over_h2() {
    let gw = h2_gateway(TOKEN_ROUTE).await;
    let mut h2 = H2::connect(&gw).await;
    let token = sign(Algorithm::ES256, Some("es"), &claims(json!({})));
    let origin = ("origin", "https://chat.example.com");
    let protocols = format!("bearer.{token}, chat.v1");

    // The same statuses and bodies as HTTP/1.1, and the same metrics.
    let refused = h2.websocket("/ws/nowhere", &[]).await.unwrap_err();
    assert_eq!(refused, (404, "no route\n".into()));
    let (status, _) = h2.websocket("/ws/chat", &[origin]).await.unwrap_err();
    assert_eq!(status, 401);
    let (h1_status, h1_head) = gw
        .try_handshake("/ws/chat", "Origin: https://chat.example.com\r\n")
        .await;
    assert_eq!(h1_status, 401);
    let (_, h2_body) = h2.websocket("/ws/chat", &[origin]).await.unwrap_err();
    assert!(h1_head.ends_with(&h2_body), "{h1_head:?} vs {h2_body:?}");
    let elsewhere = [
        ("origin", "https://evil.example"),
        ("sec-websocket-protocol", protocols.as_str()),
    ];
    assert_eq!(
        h2.websocket("/ws/chat", &elsewhere).await.unwrap_err().0,
        403
    );
    let bad_version = [origin, ("sec-websocket-version", "8")];
    assert_eq!(
        h2.websocket("/ws/chat", &bad_version).await.unwrap_err().0,
        400
    );

    // The token in a subprotocol entry: the app protocol is selected, never the token.
    let good = [origin, ("sec-websocket-protocol", protocols.as_str())];
    let (mut ws, headers) = h2.websocket("/ws/chat", &good).await.unwrap();
    assert_eq!(headers["sec-websocket-protocol"], "chat.v1");
    assert_eq!(
        roundtrip(&mut ws, Message::text("hi")).await,
        Message::text("echo: hi")
    );
    // Each stream is one connection for the caps: a second is over the route's cap of one.
    let bearer = format!("Bearer {token}");
    let header = [origin, ("authorization", bearer.as_str())];
    let refused = h2.websocket("/ws/chat", &header).await.unwrap_err();
    assert_eq!(
        refused,
        (429, "too many connections on this route\n".into())
    );
    close(&mut ws).await;

    gw.wait_metric("portcullis_rejections_total{reason=\"no_route\",route=\"none\"} 1")
        .await;
    gw.wait_metric("portcullis_rejections_total{reason=\"origin\",route=\"/ws/chat\"} 1")
        .await;
    gw.wait_log_line("a refusal's access line over h2", |l| {
        l.contains("rejection route=/ws/chat") && l.contains("status=401 protocol=h2")
    })
    .await;
    gw.wait_log_line("a refusal's access line over h1", |l| {
        l.contains("rejection route=/ws/chat") && l.contains("status=401 protocol=h1")
    })
    .await;
}

#[tokio::test]
async fn relay_over_h2_connects_upstream_first() {
    let mut up = Upstream::start(
        Handshake {
            protocols: vec!["chat.v2"],
            ..Handshake::default()
        },
        echo(),
    )
    .await;
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("ws://{}/", down.local_addr().unwrap());
    drop(down);
    let routes = format!(
        "[[routes]]\npath = \"/relay\"\nmode = \"relay\"\nupstreams = [\"{}\"]\n\n\
         [[routes]]\npath = \"/down\"\nmode = \"relay\"\nupstreams = [\"{down_url}\"]\n",
        up.url("/chat")
    );
    let gw = h2_gateway(&routes).await;
    let mut h2 = H2::connect(&gw).await;
    let offer = [("sec-websocket-protocol", "chat.v1, chat.v2")];
    let (mut ws, headers) = h2.websocket("/relay?room=1", &offer).await.unwrap();
    assert_eq!(headers["sec-websocket-protocol"], "chat.v2");
    let (upstream_headers, uri) = up.request().await;
    assert_eq!(uri, "/chat?room=1");
    // The upstream sees an HTTP/1.1 handshake with the client's host.
    assert_eq!(upstream_headers["x-forwarded-host"], "localhost");
    assert_eq!(upstream_headers["x-forwarded-proto"], "https");
    assert_eq!(
        roundtrip(&mut ws, Message::text("via h2")).await,
        Message::text("via h2")
    );
    ws.close(None).await.unwrap();
    assert_eq!(up.closed().await, (1005, String::new()));
    // An upstream that is down is the client's 502, never a 200 then a close.
    let (status, _) = h2.websocket("/down", &[]).await.unwrap_err();
    assert_eq!(status, 502);
    gw.wait_log_line("the relayed session's access line", |l| {
        l.contains("session route=/relay") && l.contains("protocol=h2")
    })
    .await;
}

#[tokio::test]
async fn a_stream_that_does_not_read_stalls_only_itself() {
    let gw = h2_gateway("").await;
    let mut h2 = H2::connect(&gw).await;
    let (mut slow, _) = h2.websocket("/ws/echo", &[]).await.unwrap();
    let (mut other, _) = h2.websocket("/ws/echo", &[]).await.unwrap();
    // The slow stream sends and never reads its echoes: once the gateway's buffers for it and
    // the stream's windows are full, its sends wait (or the gateway closes it, 1008).
    let chunk = "x".repeat(16 * 1024);
    let mut sent = 0usize;
    loop {
        let send = tokio::time::timeout(
            Duration::from_secs(1),
            slow.send(Message::text(chunk.clone())),
        );
        match send.await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) | Err(_) => break,
        }
        assert!(
            sent < 64 << 20,
            "64 MiB went into a stream that never reads: no backpressure"
        );
    }
    // The connection's other stream is unaffected.
    for i in 0..3 {
        assert_eq!(
            roundtrip(&mut other, Message::text(format!("still here {i}"))).await,
            Message::text(format!("echo: still here {i}"))
        );
    }
    close(&mut other).await;
    // Reading again releases the slow stream's window: its echoes come, in order.
    assert_eq!(
        next_message(&mut slow).await,
        Message::text(format!("echo: {chunk}"))
    );
}

#[tokio::test]
async fn a_stop_sends_goaway_and_closes_every_stream_with_1001() {
    let mut gw = h2_gateway("[server]\nshutdown_grace = \"10s\"\ndrain_window = \"0s\"\n").await;
    let mut h2 = H2::connect(&gw).await;
    let mut a = h2.websocket("/ws/echo", &[]).await.unwrap().0;
    let mut b = h2.websocket("/ws/echo", &[]).await.unwrap().0;
    assert_eq!(
        roundtrip(&mut a, Message::text("a")).await,
        Message::text("echo: a")
    );
    gw.signal("TERM");
    for ws in [&mut a, &mut b] {
        let (code, _) = expect_close(ws).await;
        assert_eq!(code, 1001);
    }
    // GOAWAY: the connection ends once its streams have, and cleanly.
    let ended = tokio::time::timeout(STEP, &mut h2.conn)
        .await
        .expect("the connection did not end after GOAWAY")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    gw.wait_exit(STEP).await;
}

#[tokio::test]
async fn listeners_offer_h2_by_default_and_not_when_switched_off() {
    let gw = Gateway::start("").await;
    let tls = tls_alpn(gw.port, &gw.cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);
    let gw = Gateway::start_tls_extra("http2 = false", "", |_| {}).await;
    let tls = tls_alpn(gw.port, &gw.cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    // Such a client speaks HTTP/1.1, as before.
    let mut ws = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("x")).await,
        Message::text("echo: x")
    );
    close(&mut ws).await;
    drop(tls);
}

#[tokio::test]
async fn a_connection_without_a_request_ends_at_the_head_timeout() {
    let gw = h2_gateway("[limits]\nhead_timeout = \"3s\"\n").await;
    let h2 = H2::connect(&gw).await;
    gw.wait_metric("portcullis_connections_pending 1").await;
    // No request: GOAWAY and the end of the connection, counted, and no longer pending.
    let ended = tokio::time::timeout(STEP, h2.conn)
        .await
        .expect("the connection outlived head_timeout")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    gw.wait_metric("portcullis_http2_errors_total{reason=\"head_timeout\"} 1")
        .await;
    gw.wait_metric("portcullis_connections_pending 0").await;
    // A connection that sends a request in time is not one of them.
    let mut h2 = H2::connect(&gw).await;
    assert_eq!(h2.get("GET", "/").await.0, 200);
    gw.wait_metric("portcullis_connections_pending 0").await;
}

#[tokio::test]
async fn session_limits_apply_per_stream() {
    let route =
        "[[routes]]\npath = \"/ws/short\"\nmode = \"echo\"\nmax_session_duration = \"1s\"\n\
                 max_message_bytes = 1024\n";
    let gw = h2_gateway(route).await;
    let mut h2 = H2::connect(&gw).await;
    let (mut short, _) = h2.websocket("/ws/short", &[]).await.unwrap();
    let (mut big, _) = h2.websocket("/ws/short", &[]).await.unwrap();
    let (mut echo, _) = h2.websocket("/ws/echo", &[]).await.unwrap();
    // A message over the route's limit closes its own stream with 1009, and only it.
    big.send(Message::text("x".repeat(2048))).await.unwrap();
    assert_eq!(expect_close(&mut big).await.0, 1009);
    // The route's lifetime closes its stream with 1001; the other route's stream stays.
    assert_eq!(expect_close(&mut short).await.0, 1001);
    assert_eq!(
        roundtrip(&mut echo, Message::text("on")).await,
        Message::text("echo: on")
    );
    close(&mut echo).await;
    gw.wait_log_line("the lifetime's access line", |l| {
        l.contains("session route=/ws/short")
            && l.contains("close_code=1001")
            && l.contains("protocol=h2")
    })
    .await;
}

/// With `[tracing]`, a WebSocket over an HTTP/2 stream is traced as on HTTP/1.1: its handshake
/// span (an extended CONNECT, HTTP version 2) ends with the `200` that opened the stream, and
/// its session span, linked to it, arrives at the close with its counts.
#[tokio::test]
async fn a_websocket_over_h2_is_traced_with_its_200() {
    let collector = Collector::start().await;
    let gw = h2_gateway(&format!(
        "[tracing]\nendpoint = \"{}\"\nbatch_delay = \"50ms\"\n",
        collector.url()
    ))
    .await;
    let mut h2 = H2::connect(&gw).await;
    let (mut ws, _) = h2.websocket("/ws/echo", &[]).await.unwrap();
    assert_eq!(
        roundtrip(&mut ws, Message::text("traced")).await,
        Message::text("echo: traced")
    );
    close(&mut ws).await;
    let hs = collector
        .wait_span("the h2 handshake span", |s| {
            s.span.name == "CONNECT /ws/echo"
        })
        .await;
    assert_eq!(hs.int("http.response.status_code"), Some(200));
    assert_eq!(hs.str("network.protocol.version").as_deref(), Some("2"));
    assert_eq!(hs.str("http.request.method").as_deref(), Some("CONNECT"));
    let session = collector
        .wait_span("the h2 session span", |s| {
            s.span.name == "websocket.session"
                && s.span.links.iter().any(|l| l.span_id == hs.span.span_id)
        })
        .await;
    assert_eq!(session.int("websocket.close.code"), Some(1000));
    assert_eq!(session.int("websocket.messages.from_client"), Some(1));
    assert_eq!(session.int("websocket.messages.to_client"), Some(1));
}

/// A gateway with an admin token and a JWT route, speaking HTTP/2 on its TLS listener.
async fn h2_admin_gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    std::fs::write(
        dir.path().join("admin.token"),
        format!("{}\n", sessions::TOKEN),
    )
    .unwrap();
    let chat = "[[routes]]\npath = \"/ws/chat\"\nmode = \"echo\"\npolicy = \"chat\"\n\
                [policies.chat.jwt]\nkeys = [{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }]\n";
    let marker = "generate_self_signed = true\n";
    let text = config_text_at(
        ANY_PORT,
        ANY_PORT,
        true,
        "token_file = \"admin.token\"\n",
        chat,
    )
    .replacen(marker, &format!("{marker}{HTTP2}\n"), 1);
    std::fs::write(dir.path().join("portcullis.toml"), text).unwrap();
    let cert = dir.path().join("certs/cert.pem");
    Gateway::run(dir, &["--config", "portcullis.toml"], cert, true).await
}

/// A WebSocket on `/ws/chat` as `subject`, one more stream of `h2`.
async fn chat_stream(h2: &mut H2, subject: &str, jti: &str) -> WebSocketStream<H2Ws> {
    let bearer = format!("Bearer {}", sessions::token_for(subject, jti));
    let header = [("authorization", bearer.as_str())];
    h2.websocket("/ws/chat", &header).await.unwrap().0
}

/// Session control reaches each stream of an HTTP/2 connection on its own: the streams are
/// listed (as `h2`), a close by id ends only its stream, a revocation only its subject's, and
/// the connection and its other streams go on.
#[tokio::test]
async fn session_control_closes_and_revokes_single_streams() {
    let gw = h2_admin_gateway().await;
    let mut h2 = H2::connect(&gw).await;
    let mut alice = chat_stream(&mut h2, "alice", "a1").await;
    let mut bob = chat_stream(&mut h2, "bob", "b1").await;
    let mut carol = chat_stream(&mut h2, "carol", "c1").await;

    let (status, all) = sessions::admin(&gw, "GET", "/sessions", None).await;
    assert_eq!((status, &all["total"]), (200, &json!(3)), "{all}");
    let mut subjects: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["protocol"], "h2", "{s}");
            assert_eq!(s["route"], "/ws/chat", "{s}");
            s["subject"].as_str().unwrap()
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["alice", "bob", "carol"]);

    // A close by id: that stream gets 1008, the others keep echoing.
    let (_, listed) = sessions::admin(&gw, "GET", "/sessions?subject=alice", None).await;
    let id = listed["sessions"][0]["id"].as_str().unwrap().to_string();
    let (status, body) =
        sessions::admin(&gw, "POST", "/sessions/close", Some(json!({ "id": id }))).await;
    assert_eq!((status, &body["closed"]), (200, &json!(1)), "{body}");
    assert_eq!(
        expect_close(&mut alice).await,
        (1008, "closed by operator".into())
    );
    for (ws, text) in [(&mut bob, "b"), (&mut carol, "c")] {
        assert_eq!(
            roundtrip(ws, Message::text(text)).await,
            Message::text(format!("echo: {text}"))
        );
    }

    // A revocation: the subject's stream gets 1008 `revoked`; carol's stays.
    let (status, body) = sessions::admin(
        &gw,
        "POST",
        "/revocations",
        Some(json!({ "subject": "bob", "ttl": "1h" })),
    )
    .await;
    assert_eq!((status, &body["closed"]), (200, &json!(1)), "{body}");
    assert_eq!(expect_close(&mut bob).await, (1008, "revoked".into()));
    assert_eq!(
        roundtrip(&mut carol, Message::text("still")).await,
        Message::text("echo: still")
    );

    // The connection stays open: a revoked subject is refused on it, new streams open on it.
    assert!(!h2.conn.is_finished());
    let bearer = format!("Bearer {}", sessions::token_for("bob", "b2"));
    let refused = h2
        .websocket("/ws/chat", &[("authorization", bearer.as_str())])
        .await
        .unwrap_err();
    assert_eq!(refused.0, 401);
    let mut dave = chat_stream(&mut h2, "dave", "d1").await;
    assert_eq!(
        roundtrip(&mut dave, Message::text("new")).await,
        Message::text("echo: new")
    );
    eventually(STEP, "only carol's and dave's streams listed", || async {
        let (_, all) = sessions::admin(&gw, "GET", "/sessions", None).await;
        done_or(all["total"] == 2, all)
    })
    .await;
    close(&mut carol).await;
    close(&mut dave).await;
    assert!(!h2.conn.is_finished());
}
