//! What outside attack and conformance suites found, one test per finding, over real sockets:
//! fractional token dates, request content behind an upgrade, JWS `crit`, duplicate credentials
//! and singleton headers, absolute-form targets, values from a client, an identity provider or
//! a configuration that used to panic, connections that never finish TLS, heads trickled on a
//! kept-alive connection, and the relay's close ordering after a client's protocol error.
//! (`--check` writing nothing is in `config_check.rs`.)

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::upstream::{handler, Handshake, HttpReply, HttpRequest, HttpService, Upstream};
use crate::support::*;
use crate::tokens::*;

/// A route behind an ES256 policy reading every token source.
const TOKEN_ROUTE: &str = r#"
[[routes]]
path = "/ws/t"
mode = "echo"
policy = "t"

[policies.t.jwt]
keys = [{ kid = "es", alg = "ES256", pem_file = "keys/ec.pub.pem" }]
leeway = "0s"
"#;

async fn token_gateway(extra: &str) -> Gateway {
    Gateway::start_prepared(true, &format!("{TOKEN_ROUTE}\n{extra}"), write_keys).await
}

fn es(claims_patch: serde_json::Value) -> String {
    sign(Algorithm::ES256, Some("es"), &claims(claims_patch))
}

/// 1. A NumericDate with a fraction (RFC 7519 section 2) is a date like any other: the socket of
/// a token whose `exp` is `now + 2.5` is closed with 1008 when it passes, and `iat`/`nbf` with
/// fractions are read the same way.
#[tokio::test]
async fn fractional_exp_closes_the_socket_at_expiry() {
    let gw = token_gateway("").await;
    let exp = now() as f64 + 2.5;
    let token = es(json!({"exp": exp, "iat": now() as f64 - 0.25, "nbf": now() as f64 - 0.5}));
    let (mut ws, _) = gw
        .ws_headers("/ws/t", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("hi")).await,
        Message::text("echo: hi")
    );
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        unix >= exp - 0.05,
        "closed at {unix}, before the token's exp {exp}"
    );
    // An iat in the future, written with a fraction, is still refused.
    let future = es(json!({"iat": now() as f64 + 120.5}));
    let (status, head) = gw.try_handshake("/ws/t", &bearer(&future)).await;
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("token issued in the future"), "{head}");
}

/// 2. An upgrade request that carries content is refused with 400, and the content is never
/// read as frames (no 101, no echo).
#[tokio::test]
async fn an_upgrade_with_content_is_refused_and_never_read_as_frames() {
    let gw = Gateway::start("").await;
    let frame = client_frame(0x1, b"smuggled", Some([1, 2, 3, 4]));
    for header in ["Content-Length", "Transfer-Encoding"] {
        let value = if header == "Content-Length" {
            frame.len().to_string()
        } else {
            "chunked".to_string()
        };
        let mut request = handshake("/ws/echo", &format!("{header}: {value}\r\n")).into_bytes();
        request.extend_from_slice(&frame);
        let answer = gw.raw(&request).await;
        assert_eq!(status_of(&answer), 400, "{header}: {answer}");
        assert!(answer.contains("carries no content"), "{answer}");
        assert!(!answer.contains("smuggled"), "{answer}");
    }
    // A Content-Length other than exactly 0 is content however it is written, and one that is no
    // number at all (a non-ASCII byte used to read as "no content") is a malformed request.
    for (value, says) in [
        (&b"00"[..], "carries no content"),
        (b"1", "carries no content"),
        (b"\xb9", "malformed Content-Length"),
        (b"\xc2\xb9", "malformed Content-Length"),
        (b"5a", "malformed Content-Length"),
        (b"+8", "malformed Content-Length"),
        (b"-0", "malformed Content-Length"),
    ] {
        let mut request = handshake("/ws/echo", "").into_bytes();
        request.truncate(request.len() - 2);
        request.extend_from_slice(b"Content-Length: ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(&frame);
        let answer = gw.raw(&request).await;
        let shown = String::from_utf8_lossy(value);
        assert_eq!(status_of(&answer), 400, "{shown}: {answer}");
        assert!(answer.contains(says), "{shown}: {answer}");
        assert!(!answer.contains("smuggled"), "{answer}");
    }
    // Content-Length: 0 is no content.
    let (status, _) = gw.try_handshake("/ws/echo", "Content-Length: 0\r\n").await;
    assert_eq!(status, 101);
}

/// 3. A JWS naming a critical extension the gateway does not understand is invalid (RFC 7515
/// section 4.1.11), even when correctly signed.
#[tokio::test]
async fn a_token_with_crit_is_refused() {
    let gw = token_gateway("").await;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(keys().ec_private.as_bytes()).unwrap();
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("es".into());
    header.crit = Some(vec!["exp-ext".into()]);
    let token = jsonwebtoken::encode(&header, &claims(json!({})), &key).unwrap();
    let (status, head) = gw.try_handshake("/ws/t", &bearer(&token)).await;
    assert_eq!(status, 401, "{head}");
    assert!(
        head.contains("error=\"invalid_token\"")
            && head.contains("unsupported critical header parameter"),
        "{head}"
    );
    // The same token without crit is admitted.
    let (status, _) = gw.try_handshake("/ws/t", &bearer(&es(json!({})))).await;
    assert_eq!(status, 101);
}

/// 4. Duplicates are refused, never resolved: two Authorization headers, a token by two methods
/// or twice by one, and the singleton handshake headers.
#[tokio::test]
async fn duplicate_credentials_and_singleton_headers_are_refused() {
    let gw = token_gateway("").await;
    let t = es(json!({}));
    let invalid_request = |head: &str| {
        assert!(
            head.starts_with("HTTP/1.1 400 ") && head.contains("error=\"invalid_request\""),
            "{head}"
        );
    };
    let cases: Vec<(String, String)> = vec![
        (
            "/ws/t".into(),
            format!("Authorization: Bearer {t}\r\nAuthorization: Bearer {t}\r\n"),
        ),
        (format!("/ws/t?access_token={t}"), bearer(&t)),
        (
            format!("/ws/t?access_token={t}&access_token={t}"),
            String::new(),
        ),
        (
            "/ws/t".into(),
            format!("Sec-WebSocket-Protocol: bearer.{t}\r\nCookie: access_token={t}\r\n"),
        ),
        (
            "/ws/t".into(),
            format!("Sec-WebSocket-Protocol: bearer.{t}, bearer.{t}\r\n"),
        ),
        (
            "/ws/t".into(),
            format!("Cookie: access_token={t}\r\nCookie: access_token={t}\r\n"),
        ),
    ];
    for (target, extra) in cases {
        let (_, head) = gw.try_handshake(&target, &extra).await;
        invalid_request(&head);
        assert!(!head.contains(&t), "the token was echoed: {head}");
    }
    // Each method alone is fine.
    for (target, extra) in [
        (format!("/ws/t?access_token={t}"), String::new()),
        ("/ws/t".to_string(), bearer(&t)),
        (
            "/ws/t".to_string(),
            format!("Sec-WebSocket-Protocol: bearer.{t}\r\n"),
        ),
        ("/ws/t".to_string(), format!("Cookie: access_token={t}\r\n")),
    ] {
        assert_eq!(
            gw.try_handshake(&target, &extra).await.0,
            101,
            "{target} {extra}"
        );
    }
    // Singleton handshake headers, on a public route too.
    for (extra, what) in [
        (
            "Sec-WebSocket-Version: 13\r\n",
            "more than one Sec-WebSocket-Version",
        ),
        (
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "more than one Sec-WebSocket-Key",
        ),
        ("Host: localhost\r\n", "more than one Host"),
        (
            "Origin: https://a.example\r\nOrigin: https://a.example\r\n",
            "more than one Origin",
        ),
    ] {
        let (status, head) = gw.try_handshake("/ws/echo", extra).await;
        assert_eq!(status, 400, "{extra}: {head}");
        assert!(head.contains(what), "{head}");
    }
    let refused = gw
        .wait_metric("portcullis_rejections_total{reason=\"bad_request\",route=\"/ws/t\"} 6")
        .await;
    assert!(!refused.contains(&t));
}

/// 5. An absolute-form target (RFC 9112 section 3.2.2) is routed like the origin form, under the
/// same admission; its authority stands for the Host header.
#[tokio::test]
async fn absolute_form_targets_are_routed_and_admitted_like_the_origin_form() {
    let gw = token_gateway("").await;
    let host = format!("localhost:{}", gw.port);
    let absolute = |path: &str| format!("https://{host}{path}");
    // The public echo route echoes.
    let (status, _, tls) = gw.handshake_open(&absolute("/ws/echo"), "").await;
    assert_eq!(status, 101);
    let mut ws = WebSocketStream::from_raw_socket(tls, Role::Client, None).await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("abs")).await,
        Message::text("echo: abs")
    );
    // The protected route still needs its token.
    assert_eq!(gw.try_handshake(&absolute("/ws/t"), "").await.0, 401);
    let t = es(json!({}));
    assert_eq!(
        gw.try_handshake(&absolute(&format!("/ws/t?access_token={t}")), "")
            .await
            .0,
        101
    );
    // The target's authority is the host (the Host header is ignored, RFC 9112 3.2.2): one
    // that differs from the client's Host header is routed by its path all the same.
    let (status, head) = gw
        .try_handshake("https://elsewhere.example/ws/echo", "")
        .await;
    assert_eq!(status, 101, "{head}");
    // RFC 9112 3.2: a request has exactly one Host, whatever its target's form. The target's
    // authority replaces the header only after that check, so it cannot hide a request that
    // had none or two (which something in front may have read differently).
    let no_host = |target: &str| handshake(target, "").replace("Host: localhost\r\n", "");
    for (request, says) in [
        (no_host(&absolute("/ws/echo")), "missing Host"),
        (
            handshake(&absolute("/ws/echo"), "Host: elsewhere.example\r\n"),
            "more than one Host",
        ),
        (no_host("/ws/echo"), "missing Host"),
        (
            format!(
                "GET {} HTTP/1.1\r\nConnection: close\r\n\r\n",
                absolute("/")
            ),
            "missing Host",
        ),
        (
            format!(
                "GET {} HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\nConnection: close\r\n\r\n",
                absolute("/")
            ),
            "more than one Host",
        ),
    ] {
        let answer = gw.raw(request.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{request}\n{answer}");
        assert!(answer.contains(says), "{answer}");
    }
    // HTTP/1.0 has no Host requirement: the authority alone is the host.
    let answer = gw
        .raw(format!("GET {} HTTP/1.0\r\n\r\n", absolute("/")).as_bytes())
        .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    // A plain GET in absolute form reaches the static route.
    let answer = gw
        .raw(
            format!(
                "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
                absolute("/")
            )
            .as_bytes(),
        )
        .await;
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("Hello, World!"),
        "{answer}"
    );
}

/// Wait until the test support's readiness probe (a connect closed before TLS) has failed its
/// TLS handshake and left the pending connections, so that the pending count is the test's own.
async fn probe_gone(gw: &Gateway) {
    gw.wait_metric("portcullis_tls_handshake_failures_total 1")
        .await;
    gw.wait_metric("portcullis_connections_pending 0").await;
}

/// 6a. A validly signed `exp` of 2^63 seconds or more used to panic in `UNIX_EPOCH + Duration`:
/// such a token is admitted (its expiry lies beyond any clock, so it never closes the socket),
/// and the gateway keeps serving everyone.
#[tokio::test]
async fn a_token_expiring_past_any_clock_is_admitted_and_the_gateway_keeps_serving() {
    let mut gw = token_gateway("").await;
    for exp in [1u64 << 63, u64::MAX] {
        let token = es(json!({ "exp": exp }));
        let (mut ws, _) = gw
            .ws_headers("/ws/t", &[("authorization", &format!("Bearer {token}"))])
            .await;
        assert_eq!(
            roundtrip(&mut ws, Message::text(format!("exp {exp}"))).await,
            Message::text(format!("echo: exp {exp}")),
        );
        ws.close(None).await.unwrap();
        finish(&mut ws).await;
    }
    let mut ws = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("still here")).await,
        Message::text("echo: still here")
    );
    assert!(gw.is_running(), "the gateway died:\n{}", gw.log());
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

/// 6b. The JWKS client's chunked-body reader used to overflow on a chunk size near `usize::MAX`,
/// which ended the refresh thread for good. An identity provider that answers with such a chunk
/// is a failed fetch like any other: the last good keys stay, the fetcher lives on and picks up
/// the next good document, it is never restarted (no panic), and the gateway stays ready.
#[tokio::test]
async fn an_absurd_jwks_chunk_size_is_a_failed_fetch_and_the_keys_still_refresh() {
    let good = Arc::new(AtomicBool::new(false));
    let serving = good.clone();
    let document = json!({ "keys": [ec_jwk("k1", &keys().ec_point)] }).to_string();
    let idp = HttpService::start(Arc::new(move |_: &HttpRequest| {
        if serving.load(Ordering::SeqCst) {
            HttpReply::new(200, document.clone()).header("Content-Type", "application/json")
        } else {
            HttpReply::raw(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\nfffffffffffffffe\r\n{\"keys\":[",
            )
        }
    }))
    .await;
    let gw = Gateway::start(&format!(
        "[[routes]]\npath = \"/ws/idp\"\nmode = \"echo\"\npolicy = \"idp\"\n\
         [policies.idp.jwt]\njwks_url = \"{}\"\njwks_refresh = \"1h\"\njwks_min_refresh = \"1s\"\n",
        idp.url("/jwks")
    ))
    .await;
    gw.wait_log_line("the absurd answer is a failed fetch", |l| {
        l.contains("jwks: fetching") && l.contains("keeping the last good keys")
    })
    .await;
    let token = sign(Algorithm::ES256, Some("k1"), &claims(json!({})));
    assert_eq!(gw.try_handshake("/ws/idp", &bearer(&token)).await.0, 401);
    assert_eq!(
        gw.admin_request("/readyz", "").await,
        (200, "ready\n".into())
    );
    let absurd = idp.requests().len();
    assert!(absurd >= 1);

    // The provider recovers: the unknown kid refreshes the keys (at most once a second).
    good.store(true, Ordering::SeqCst);
    eventually(
        STEP,
        "k1 admitted once the good document is served",
        || async {
            let (status, head) = gw.try_handshake("/ws/idp", &bearer(&token)).await;
            done_or(status == 101, head)
        },
    )
    .await;
    assert!(idp.requests().len() > absurd);
    gw.wait_metric("portcullis_background_task_restarts_total{task=\"jwks\"} 0")
        .await;
    assert_eq!(
        gw.admin_request("/readyz", "").await,
        (200, "ready\n".into())
    );
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

/// 6c. A duration written as a bare integer used to skip the one-year cap and then overflow the
/// relay's timers or the shutdown grace: `--check` refuses it, naming the key.
#[tokio::test]
async fn check_refuses_durations_past_a_year_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let relay =
        "[[routes]]\npath = \"/r\"\nmode = \"relay\"\nupstreams = [\"ws://127.0.0.1:9/\"]\n";
    for (extra, key) in [
        (
            format!("{relay}idle_timeout = 99999999999\n"),
            "routes[2].idle_timeout",
        ),
        (
            "[limits]\nkeepalive_timeout = 99999999999\n".to_string(),
            "limits.keepalive_timeout",
        ),
        (
            "[server]\nshutdown_grace = 99999999999\n".to_string(),
            "server.shutdown_grace",
        ),
    ] {
        let path = dir.path().join("candidate.toml");
        std::fs::write(&path, config_text(true, &extra)).unwrap();
        let mut check = Command::new(binary());
        check
            .args(["--check", "--config", path.to_str().unwrap()])
            .current_dir(dir.path());
        let out = output_within_async(check, b"", STEP).await;
        let text = text_of(&out);
        assert!(!out.status.success(), "{extra}: {text}");
        assert!(
            text.contains(key) && text.contains("out of range"),
            "{extra}: the error should name {key}: {text}"
        );
    }
}

/// 6d. An introspection answer whose `exp` lies beyond the monotonic clock, with `cache_ttl`
/// set, used to panic computing the cache deadline (`Instant + Duration`): an identity provider
/// could kill every handshake of the route. It is admitted, cached, and the socket stays open.
#[tokio::test]
async fn an_introspected_exp_past_any_clock_is_admitted_and_cached() {
    let idp = HttpService::start(Arc::new(|r: &HttpRequest| {
        // Past i64::MAX seconds from now: beyond what the monotonic clock can add.
        let answer = json!({ "active": true, "sub": "far", "exp": u64::MAX });
        if r.form("token").as_deref() == Some("far-future") {
            HttpReply::new(200, answer.to_string())
        } else {
            HttpReply::new(200, "{\"active\":false}")
        }
    }))
    .await;
    let gw = Gateway::start_prepared(
        true,
        &format!(
            "[[routes]]\npath = \"/ws/intro\"\nmode = \"echo\"\npolicy = \"intro\"\n\
             [policies.intro.introspection]\nurl = \"{}\"\nclient_id = \"gw\"\n\
             client_secret_file = \"intro.secret\"\ncache_ttl = \"1h\"\n",
            idp.url("/introspect")
        ),
        |dir| std::fs::write(dir.join("intro.secret"), "s3cret\n").unwrap(),
    )
    .await;
    for _ in 0..2 {
        let (mut ws, _) = gw
            .ws_headers("/ws/intro", &[("authorization", "Bearer far-future")])
            .await;
        assert_eq!(
            roundtrip(&mut ws, Message::text("far")).await,
            Message::text("echo: far")
        );
    }
    assert_eq!(
        idp.requests().len(),
        1,
        "the second handshake was a cache hit"
    );
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

/// 8. Connections that never finish TLS are closed at `head_timeout`, not pingora's 60 s; and
/// not-yet-admitted connections are capped per client address and in total, past which a new
/// one is closed at once and counted.
#[tokio::test]
async fn connections_that_never_finish_tls_are_bounded_and_capped() {
    let gw = Gateway::start("[limits]\nhead_timeout = \"1s\"\nmax_pending_per_ip = 5\n").await;
    probe_gone(&gw).await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(gw.address()).await.unwrap());
    }
    gw.wait_metric("portcullis_connections_pending 5").await;
    // Every pending slot of this address is taken: the next connect is closed at once.
    let mut over = TcpStream::connect(gw.address()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(STEP, over.read(&mut buf))
        .await
        .expect("the connection over the cap was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    gw.wait_metric("portcullis_connections_dropped_total{reason=\"pending_limit_per_ip\"} 1")
        .await;
    // The five that never send a byte are closed at the head timeout.
    for mut s in idle {
        let n = tokio::time::timeout(STEP, s.read(&mut buf))
            .await
            .expect("an idle connection was held past the head timeout")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(5),
        "idle connections were held {held:?}"
    );
    gw.wait_metric("portcullis_connections_dropped_total{reason=\"handshake_timeout\"} 5")
        .await;
    gw.wait_metric("portcullis_connections_pending 0").await;
    // Their slots are free again: a real client gets through.
    let mut ws = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("after")).await,
        Message::text("echo: after")
    );
    // A global cap works the same way.
    let gw = Gateway::start("[limits]\nmax_pending_connections = 2\n").await;
    probe_gone(&gw).await;
    let _a = TcpStream::connect(gw.address()).await.unwrap();
    let _b = TcpStream::connect(gw.address()).await.unwrap();
    gw.wait_metric("portcullis_connections_pending 2").await;
    let mut c = TcpStream::connect(gw.address()).await.unwrap();
    let n = tokio::time::timeout(STEP, c.read(&mut buf))
        .await
        .expect("the connection over the global cap was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    gw.wait_metric("portcullis_connections_dropped_total{reason=\"pending_limit\"} 1")
        .await;
}

/// A kept-alive connection may idle up to `keepalive_timeout` before its next request; once
/// that request's first byte is in, the rest of its head must come within `head_timeout`, as
/// the first head's must (it used to get the whole `keepalive_timeout`: a client trickling
/// heads could hold a connection head-pending for a minute per request).
#[tokio::test]
async fn a_trickled_head_on_a_kept_alive_connection_gets_head_timeout() {
    let gw = Gateway::start("[limits]\nhead_timeout = \"1s\"\nkeepalive_timeout = \"30s\"\n").await;
    let mut tls = gw.tls().await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut tls, &mut got, "the first answer", |g| {
        g.ends_with(b"Hello, World!")
    })
    .await;
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{got:?}");
    // Idle for longer than head_timeout between requests: that is keepalive_timeout's to bound.
    tokio::time::sleep(Duration::from_millis(1500)).await; // the idle time is the test's subject
    tls.write_all(b"G").await.unwrap();
    let first_byte = Instant::now();
    let (mut r, mut w) = tokio::io::split(tls);
    // The rest of the head, a byte every 100 ms: 15 s of it, far past head_timeout.
    let rest = format!(
        "ET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}",
        "z".repeat(120)
    );
    let trickle = async move {
        for b in rest.bytes() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.write_all(&[b]).await.is_err() {
                break;
            }
        }
        // Only the answer (or read_until's own deadline) ends the wait.
        std::future::pending::<()>().await
    };
    let mut answer = Vec::new();
    let read = read_until(&mut r, &mut answer, "the 408", has_head);
    tokio::select! {
        _ = read => {}
        _ = trickle => unreachable!(),
    }
    let took = first_byte.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "408 {took:?} after the head's first byte (head_timeout is 1 s)"
    );
}

/// 9. When a client's valid message and a frame that breaks the protocol arrive together, the
/// upstream's reply to the valid message still reaches the client, then the client gets 1002
/// (the order Autobahn's strict cases want, as the local echo route keeps).
#[tokio::test]
async fn the_upstream_reply_before_a_protocol_error_reaches_the_client() {
    let up = Upstream::start(
        Handshake::default(),
        handler(|mut ws, _tx| async move {
            // Answer every data message, slowly enough that the answer is in flight when the
            // gateway closes the upstream after the client's bad frame.
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = ws
                        .send(Message::text(format!("re: {}", m.to_text().unwrap())))
                        .await;
                }
            }
        }),
    )
    .await;
    let gw = Gateway::start(&format!(
        "[[routes]]\npath = \"/r\"\nmode = \"relay\"\nupstreams = [\"{}\"]\nping_interval = \"0s\"\n",
        up.url("/")
    ))
    .await;
    let (status, _, mut tls) = gw.handshake_open("/r", "").await;
    assert_eq!(status, 101);
    // A valid text frame and a frame with a reserved bit set, in one write.
    let mut bytes = client_frame(0x1, b"hello", Some([9, 8, 7, 6]));
    bytes.extend(raw_frame(0xC1, b"bad", Some([1, 2, 3, 4])));
    tls.write_all(&bytes).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(tls, Role::Client, None).await;
    assert_eq!(next_message(&mut ws).await, Message::text("re: hello"));
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1002);
}
