//! Admission before the 101, over real `wss`: each rule with an admitted and a refused case, the
//! exact status and headers, and the classic JWT attacks.

use std::time::Duration;

use futures_util::StreamExt;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::upstream::HttpServer;
use crate::support::*;
use crate::tokens::*;

const CHAT: &str = r#"
[[routes]]
path = "/ws/chat"
mode = "echo"
policy = "chat"

[[routes]]
path = "/ws/internal"
mode = "echo"
policy = "internal"

[policies.chat.origin]
allow = ["https://chat.example.com", "https://*.example.org"]
allow_missing = true

[policies.chat.jwt]
issuers = ["https://idp.test"]
audiences = ["chat"]
leeway = "0s"
keys = [
  { kid = "rs", alg = "RS256", pem_file = "keys/rsa.pub.pem" },
  { kid = "ps", alg = "PS256", pem_file = "keys/rsa.pub.pem" },
  { kid = "es", alg = "ES256", pem_file = "keys/ec.pub.pem" },
  { kid = "ed", alg = "EdDSA", pem_file = "keys/ed.pub.pem" },
  { kid = "hs", alg = "HS256", secret_file = "keys/hs.secret" },
]

[policies.chat.jwt.claims]
scope = "chat:write"

[policies.internal.jwt]
keys = [{ alg = "ES256", pem_file = "keys/ec.pub.pem" }]
required_claims = ["sub"]

[policies.internal.jwt.claims]
roles = ["admin"]
"#;

async fn chat_gateway(extra: &str) -> Gateway {
    Gateway::start_prepared(true, &format!("{CHAT}\n{extra}"), write_keys).await
}

fn good(alg: Algorithm, kid: &str) -> String {
    sign(alg, Some(kid), &claims(json!({})))
}

#[tokio::test]
async fn every_algorithm_with_its_pinned_key_is_admitted() {
    let gw = chat_gateway("").await;
    for (alg, kid) in [
        (Algorithm::RS256, "rs"),
        (Algorithm::PS256, "ps"),
        (Algorithm::ES256, "es"),
        (Algorithm::EdDSA, "ed"),
        (Algorithm::HS256, "hs"),
    ] {
        let (status, head) = gw.try_handshake("/ws/chat", &bearer(&good(alg, kid))).await;
        assert_eq!(status, 101, "{alg:?}: {head}");
    }
    // A real client session with a token: echo works and the log names the subject, not the token.
    let token = good(Algorithm::ES256, "es");
    let (mut ws, _) = gw
        .ws_headers("/ws/chat", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("hi")).await,
        Message::text("echo: hi")
    );
    drop(ws);
    // The session's access-log line is written when the session ends; the one that echoed a
    // message, not the try_handshake sessions before it.
    gw.wait_log_line("this session's access-log line", |l| {
        l.contains("] session route=/ws/chat ") && l.contains(" messages_in=1 ")
    })
    .await;
    let log = gw.log();
    assert!(log.contains("subject=alice"), "{log}");
    assert!(!log.contains(&token), "the log holds a token");
}

#[tokio::test]
async fn token_sources_header_subprotocol_query_cookie() {
    let gw = chat_gateway("").await;
    let t = good(Algorithm::ES256, "es");
    // Query parameter.
    let (status, _) = gw
        .try_handshake(&format!("/ws/chat?room=1&access_token={t}"), "")
        .await;
    assert_eq!(status, 101);
    // Cookie.
    let (status, _) = gw
        .try_handshake(
            "/ws/chat",
            &format!("Cookie: theme=dark; access_token={t}\r\n"),
        )
        .await;
    assert_eq!(status, 101);
    // Subprotocol, as a browser would: the token entry is never echoed back; the app protocol is.
    let (status, head) = gw
        .try_handshake(
            "/ws/chat",
            &format!("Sec-WebSocket-Protocol: bearer.{t}, chat.v1\r\n"),
        )
        .await;
    assert_eq!(status, 101, "{head}");
    assert!(
        head.contains("Sec-WebSocket-Protocol: chat.v1\r\n"),
        "{head}"
    );
    assert!(!head.contains(&t));
    let (status, head) = gw
        .try_handshake(
            "/ws/chat",
            &format!("Sec-WebSocket-Protocol: bearer.{t}\r\n"),
        )
        .await;
    assert_eq!(status, 101);
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
    // The four sessions' access-log lines are written as they end (a token must be in none).
    let log = eventually(STEP, "four sessions in the access log", || async {
        let log = gw.log();
        let sessions = log.matches("] session route=/ws/chat ").count();
        done_or(sessions == 4, log.clone()).map(|()| log)
    })
    .await;
    assert!(!log.contains(&t), "a token reached the log");
}

/// A browser-style client (tokio-tungstenite offering `bearer.<token>` and an app protocol, as
/// `new WebSocket(url, ["bearer." + token, "chat.v1"])` does) gets the app protocol back.
#[tokio::test]
async fn browser_style_subprotocol_client() {
    let gw = chat_gateway("").await;
    let t = good(Algorithm::RS256, "rs");
    let protocols = format!("bearer.{t}, chat.v1");
    let (mut ws, resp) = gw
        .ws_headers(
            "/ws/chat",
            &[
                ("sec-websocket-protocol", &protocols),
                ("origin", "https://chat.example.com"),
            ],
        )
        .await;
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "chat.v1"
    );
    assert_eq!(
        roundtrip(&mut ws, Message::text("from the browser")).await,
        Message::text("echo: from the browser")
    );
}

#[tokio::test]
async fn missing_token_is_401_without_an_error_code() {
    let gw = chat_gateway("").await;
    let (status, head) = gw.try_handshake("/ws/chat", "").await;
    assert_eq!(status, 401);
    assert!(
        head.contains("WWW-Authenticate: Bearer realm=\"portcullis\"\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("error="),
        "RFC 6750: no error code without a token: {head}"
    );
    gw.wait_log("reason=auth_missing").await;
}

#[tokio::test]
async fn jwt_attacks_are_refused() {
    let gw = chat_gateway("").await;
    let k = keys();
    let payload = claims(json!({}));
    let rsa_pub_secret = k.rsa_public.as_bytes();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            forge(&json!({"alg": "none", "typ": "JWT"}), &payload, ""),
            "malformed token",
        ),
        (
            "alg none with kid",
            forge(&json!({"alg": "none", "kid": "rs"}), &payload, ""),
            "malformed token",
        ),
        (
            "HS256 signed with the RSA public key (algorithm confusion)",
            hs256_with_secret("rs", &payload, rsa_pub_secret),
            "unknown key id",
        ),
        (
            "HS256 with the EC key's kid",
            hs256_with_secret("es", &payload, k.ec_public.as_bytes()),
            "unknown key id",
        ),
        (
            "expired",
            sign(
                Algorithm::ES256,
                Some("es"),
                &claims(json!({"exp": now() - 10})),
            ),
            "token expired",
        ),
        (
            "not yet valid",
            sign(
                Algorithm::ES256,
                Some("es"),
                &claims(json!({"nbf": now() + 600})),
            ),
            "token not yet valid",
        ),
        (
            "issued in the future",
            sign(
                Algorithm::ES256,
                Some("es"),
                &claims(json!({"iat": now() + 600})),
            ),
            "token issued in the future",
        ),
        (
            "wrong audience",
            sign(
                Algorithm::ES256,
                Some("es"),
                &claims(json!({"aud": "billing"})),
            ),
            "audience not accepted",
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::ES256,
                Some("es"),
                &claims(json!({"iss": "https://evil.test"})),
            ),
            "issuer not accepted",
        ),
        (
            "no exp",
            sign(Algorithm::ES256, Some("es"), &claims(json!({"exp": null}))),
            "missing claim exp",
        ),
        (
            "bad signature (payload changed after signing)",
            {
                let t = good(Algorithm::ES256, "es");
                let parts: Vec<&str> = t.split('.').collect();
                let evil = claims(json!({"sub": "mallory"}));
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                use base64::Engine;
                format!("{}.{}.{}", parts[0], b64.encode(evil.to_string()), parts[2])
            },
            "bad signature",
        ),
        (
            "signed by a key we do not know, under a known kid",
            sign_ec2("es", &payload),
            "bad signature",
        ),
        (
            "unknown kid",
            sign(Algorithm::ES256, Some("nope"), &payload),
            "unknown key id",
        ),
        (
            "malformed base64",
            "abc.d@f.ghi".to_string(),
            "malformed token",
        ),
        ("not a JWT", "hello".to_string(), "malformed token"),
        (
            "oversized",
            sign(
                Algorithm::ES256,
                Some("es"),
                &claims(json!({"pad": "x".repeat(9000)})),
            ),
            "token too large",
        ),
    ];
    for (what, token, description) in cases {
        let (status, head) = gw.try_handshake("/ws/chat", &bearer(&token)).await;
        assert_eq!(status, 401, "{what}: {head}");
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"{description}\""
        );
        assert!(head.contains(&challenge), "{what}: {head}");
    }
    gw.wait_log("reason=auth_expired").await;
    gw.wait_log("reason=auth_invalid").await;
}

#[tokio::test]
async fn claims_policy_gives_403() {
    let gw = chat_gateway("").await;
    let no_scope = sign(
        Algorithm::ES256,
        Some("es"),
        &claims(json!({"scope": "chat:read"})),
    );
    let (status, head) = gw.try_handshake("/ws/chat", &bearer(&no_scope)).await;
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("error=\"insufficient_scope\""), "{head}");
    // The internal route keys on a roles claim (an array) and a required sub.
    let admin = sign(
        Algorithm::ES256,
        None,
        &claims(json!({"roles": ["user", "admin"]})),
    );
    assert_eq!(
        gw.try_handshake("/ws/internal", &bearer(&admin)).await.0,
        101
    );
    let user = sign(Algorithm::ES256, None, &claims(json!({"roles": ["user"]})));
    assert_eq!(
        gw.try_handshake("/ws/internal", &bearer(&user)).await.0,
        403
    );
    let anonymous = sign(
        Algorithm::ES256,
        None,
        &claims(json!({"roles": ["admin"], "sub": null})),
    );
    assert_eq!(
        gw.try_handshake("/ws/internal", &bearer(&anonymous))
            .await
            .0,
        403
    );
    gw.wait_log("reason=forbidden").await;
}

/// Cross-site WebSocket hijacking: a page on another site opens a socket with the victim's
/// cookie. The Origin check refuses it with 403 before any token work.
#[tokio::test]
async fn origin_allow_list_stops_cross_site_hijacking() {
    let gw = chat_gateway("").await;
    let cookie = format!("Cookie: access_token={}\r\n", good(Algorithm::ES256, "es"));
    for origin in [
        "https://chat.example.com",
        "https://eu.example.org",
        "https://a.b.example.org",
    ] {
        let (status, head) = gw
            .try_handshake("/ws/chat", &format!("Origin: {origin}\r\n{cookie}"))
            .await;
        assert_eq!(status, 101, "{origin}: {head}");
    }
    for origin in [
        "https://evil.example.net",
        "https://example.org",
        "https://chat.example.com.evil.net",
        "http://chat.example.com",
        "null",
    ] {
        let (status, head) = gw
            .try_handshake("/ws/chat", &format!("Origin: {origin}\r\n{cookie}"))
            .await;
        assert_eq!(status, 403, "{origin}: {head}");
    }
    // Before token work: no token at all still gets 403, not 401.
    let (status, _) = gw
        .try_handshake("/ws/chat", "Origin: https://evil.example.net\r\n")
        .await;
    assert_eq!(status, 403);
    // No Origin (a non-browser client) is allowed by this policy's explicit choice.
    assert_eq!(gw.try_handshake("/ws/chat", &cookie).await.0, 101);
    gw.wait_log("reason=origin").await;
}

#[tokio::test]
async fn origin_null_and_missing_are_explicit_choices() {
    let gw = chat_gateway(
        "[[routes]]\npath = \"/ws/strict\"\nmode = \"echo\"\npolicy = \"strict\"\n\
         [policies.strict.origin]\nallow = [\"https://app.test\"]\n\
         [[routes]]\npath = \"/ws/sandbox\"\nmode = \"echo\"\npolicy = \"sandbox\"\n\
         [policies.sandbox.origin]\nallow = []\nallow_null = true\n",
    )
    .await;
    assert_eq!(gw.try_handshake("/ws/strict", "").await.0, 403);
    assert_eq!(
        gw.try_handshake("/ws/strict", "Origin: https://app.test\r\n")
            .await
            .0,
        101
    );
    assert_eq!(
        gw.try_handshake("/ws/sandbox", "Origin: null\r\n").await.0,
        101
    );
    assert_eq!(gw.try_handshake("/ws/sandbox", "").await.0, 403);
}

#[tokio::test]
async fn token_expiring_during_an_open_socket_closes_it_with_1008() {
    let gw = chat_gateway("").await;
    let token = sign(
        Algorithm::ES256,
        Some("es"),
        &claims(json!({"exp": now() + 2})),
    );
    let (mut ws, _) = gw
        .ws_headers("/ws/chat", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("before")).await,
        Message::text("echo: before")
    );
    let started = std::time::Instant::now();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn expiry_can_be_ignored_or_given_grace() {
    let gw = Gateway::start_prepared(
        true,
        "[[routes]]\npath = \"/ws/lax\"\nmode = \"echo\"\npolicy = \"lax\"\n\
         [policies.lax.jwt]\nkeys = [{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }]\n\
         leeway = \"0s\"\non_expiry = \"ignore\"\n\
         [[routes]]\npath = \"/ws/graced\"\nmode = \"echo\"\npolicy = \"graced\"\n\
         [policies.graced.jwt]\nkeys = [{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }]\n\
         leeway = \"0s\"\nexpiry_grace = \"2s\"\n",
        write_keys,
    )
    .await;
    let started = std::time::Instant::now();
    // exp is 1-2 s away (whole seconds); the graced close comes 2 s after it.
    let exp = now() + 2;
    let connect = |path: &'static str| {
        let gw = &gw;
        async move {
            let token = sign(Algorithm::ES256, None, &claims(json!({ "exp": exp })));
            gw.ws_headers(path, &[("authorization", &format!("Bearer {token}"))])
                .await
                .0
        }
    };
    let mut lax = connect("/ws/lax").await;
    let mut graced = connect("/ws/graced").await;
    // The test: time passes exp (nothing to observe: both sockets stay open), and the graced
    // socket is still open then.
    sleep_past_unix(exp).await;
    assert_eq!(
        roundtrip(&mut graced, Message::text("in grace")).await,
        Message::text("echo: in grace")
    );
    let (code, reason) = expect_close(&mut graced).await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        roundtrip(&mut lax, Message::text("after exp")).await,
        Message::text("echo: after exp")
    );
}

/// The policy's `jwks_min_refresh`: unknown kids cause at most one fetch per this window.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// The test's subject is this window: sleep past it since the last fetch a token could cause.
async fn past_min_refresh() {
    tokio::time::sleep(MIN_REFRESH + Duration::from_millis(100)).await;
}

#[tokio::test]
async fn jwks_rotation_unknown_kid_refresh_and_last_good_copy() {
    let k = keys();
    let jwks = |keys: Vec<serde_json::Value>| json!({ "keys": keys }).to_string();
    let server = HttpServer::start(jwks(vec![ec_jwk("k1", &k.ec_point)])).await;
    let gw = Gateway::start(&format!(
        "[[routes]]\npath = \"/ws/idp\"\nmode = \"echo\"\npolicy = \"idp\"\n\
         [policies.idp.jwt]\njwks_url = \"{}\"\n\
         jwks_refresh = \"1h\"\njwks_min_refresh = \"{}s\"\n",
        server.url("/.well-known/jwks.json"),
        MIN_REFRESH.as_secs()
    ))
    .await;
    // The first fetch happens in the background at start-up.
    let t1 = sign(Algorithm::ES256, Some("k1"), &claims(json!({})));
    eventually(STEP, "k1 accepted", || async {
        let (status, head) = gw.try_handshake("/ws/idp", &bearer(&t1)).await;
        done_or(status == 101, format!("{head}\n{}", gw.log()))
    })
    .await;
    // Rotation: the IdP starts signing with k2; the first token naming k2 triggers a refresh
    // (once the window since t1's, if t1 caused one, is over).
    server.set_body(Some(jwks(vec![
        ec_jwk("k1", &k.ec_point),
        ec_jwk("k2", &k.ec2_point),
    ])));
    past_min_refresh().await;
    let t2 = sign_ec2("k2", &claims(json!({})));
    let (status, head) = gw.try_handshake("/ws/idp", &bearer(&t2)).await;
    assert_eq!(status, 101, "{head}\n{}", gw.log());
    // Unknown kids are refreshed at most once per jwks_min_refresh: a burst of bad kids costs
    // the IdP one extra fetch (the refresh is awaited before the answer), not more.
    past_min_refresh().await;
    let before = server.hits();
    for i in 0..5 {
        let t = sign(
            Algorithm::ES256,
            Some(&format!("ghost{i}")),
            &claims(json!({})),
        );
        assert_eq!(gw.try_handshake("/ws/idp", &bearer(&t)).await.0, 401);
    }
    let after = server.hits();
    assert!(
        after - before <= 1,
        "{} fetches for 5 unknown kids",
        after - before
    );
    assert_eq!(
        after - before,
        1,
        "the window was over: one refresh was due"
    );
    // The IdP goes down: the last good keys stay in use.
    server.set_body(None);
    past_min_refresh().await;
    let t = sign(Algorithm::ES256, Some("ghost-x"), &claims(json!({})));
    assert_eq!(gw.try_handshake("/ws/idp", &bearer(&t)).await.0, 401);
    assert_eq!(gw.try_handshake("/ws/idp", &bearer(&t2)).await.0, 101);
    gw.wait_log("keeping the last good keys").await;
}

#[tokio::test]
async fn handshake_rate_per_ip_gives_429_with_retry_after() {
    let gw = Gateway::start(
        "[[routes]]\npath = \"/ws/rated\"\nmode = \"echo\"\npolicy = \"rated\"\n\
         [policies.rated.limits]\nhandshakes_per_ip = { per_minute = 6, burst = 3 }\n",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(gw.try_handshake("/ws/rated", "").await.0, 101);
    }
    let (status, head) = gw.try_handshake("/ws/rated", "").await;
    assert_eq!(status, 429, "{head}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    // Other routes (other policies) are not affected.
    assert_eq!(gw.try_handshake("/ws/echo", "").await.0, 101);
    gw.wait_log("reason=rate_limited").await;
}

#[tokio::test]
async fn handshake_rate_per_subject() {
    let gw = chat_gateway(
        "[[routes]]\npath = \"/ws/sub\"\nmode = \"echo\"\npolicy = \"sub\"\n\
         [policies.sub.jwt]\nkeys = [{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }]\n\
         [policies.sub.limits]\nhandshakes_per_subject = { per_minute = 2, burst = 2 }\n",
    )
    .await;
    let alice = sign(Algorithm::ES256, None, &claims(json!({})));
    let bob = sign(Algorithm::ES256, None, &claims(json!({"sub": "bob"})));
    assert_eq!(gw.try_handshake("/ws/sub", &bearer(&alice)).await.0, 101);
    assert_eq!(gw.try_handshake("/ws/sub", &bearer(&alice)).await.0, 101);
    assert_eq!(gw.try_handshake("/ws/sub", &bearer(&alice)).await.0, 429);
    assert_eq!(gw.try_handshake("/ws/sub", &bearer(&bob)).await.0, 101);
}

/// N parallel handshakes against a cap of K: exactly K are admitted; slots come back when
/// sockets end, including sockets that end in errors.
#[tokio::test]
async fn connection_caps_under_concurrency_and_no_slot_leaks() {
    let gw = Gateway::start(
        "[[routes]]\npath = \"/ws/capped\"\nmode = \"echo\"\npolicy = \"capped\"\nmax_message_bytes = 16\n\
         [policies.capped.limits]\nconnections_per_ip = 3\n",
    ).await;
    let attempts = futures_util::future::join_all((0..12).map(|_| async {
        let req = gw.url("/ws/capped").into_client_request().unwrap();
        tokio_tungstenite::client_async(req, gw.tls().await).await
    }))
    .await;
    let mut open = Vec::new();
    let mut refused = 0;
    for a in attempts {
        match a {
            Ok((ws, _)) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 429);
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((open.len(), refused), (3, 9));
    // End one socket with an error (1009), one with a normal close, drop one abruptly.
    let mut a = open.pop().unwrap();
    futures_util::SinkExt::send(&mut a, Message::text("x".repeat(100)))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut a).await.0, 1009);
    let mut b = open.pop().unwrap();
    b.close(None).await.unwrap();
    while let Some(Ok(_)) = tokio::time::timeout(STEP, b.next()).await.unwrap() {}
    drop(open.pop());
    drop(a);
    // All three slots come back.
    let admitted = std::cell::Cell::new(0);
    eventually(STEP, "three handshakes admitted again", || async {
        let (status, head) = gw.try_handshake("/ws/capped", "").await;
        assert!(status == 101 || status == 429, "{head}");
        admitted.set(admitted.get() + usize::from(status == 101));
        done_or(admitted.get() == 3, format!("slots leaked: {head}"))
    })
    .await;
}

#[tokio::test]
async fn per_route_and_global_caps() {
    let gw = Gateway::start(
        "[limits]\nmax_connections = 3\n\
         [[routes]]\npath = \"/ws/room\"\nmode = \"echo\"\npolicy = \"room\"\n\
         [policies.room.limits]\nconnections_per_route = 1\n",
    )
    .await;
    let _room = gw.ws("/ws/room").await;
    let (status, head) = gw.try_handshake("/ws/room", "").await;
    assert_eq!(status, 429, "{head}");
    let _a = gw.ws("/ws/echo").await;
    let _b = gw.ws("/ws/echo").await;
    let (status, head) = gw.try_handshake("/ws/echo", "").await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("Retry-After: 1"));
    gw.wait_log("reason=conn_limit").await;
}

#[tokio::test]
async fn per_connection_message_and_byte_rates_close_with_1008() {
    let gw = Gateway::start(
        "[[routes]]\npath = \"/ws/slow\"\nmode = \"echo\"\npolicy = \"slow\"\n\
         [policies.slow.limits]\nmessages_per_second = 5\n\
         [[routes]]\npath = \"/ws/thin\"\nmode = \"echo\"\npolicy = \"thin\"\n\
         [policies.thin.limits]\nbytes_per_second = 1000\n",
    )
    .await;
    let mut ws = gw.ws("/ws/slow").await;
    let closed = send_until_closed(&mut ws, 50).await;
    assert_eq!(closed, Some((1008, "message rate exceeded".into())));
    let mut ws = gw.ws("/ws/thin").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("a".repeat(600))).await,
        Message::text(format!("echo: {}", "a".repeat(600)))
    );
    futures_util::SinkExt::send(&mut ws, Message::text("b".repeat(600)))
        .await
        .unwrap();
    assert_eq!(
        expect_close(&mut ws).await,
        (1008, "byte rate exceeded".into())
    );
}

#[tokio::test]
async fn client_ip_from_trusted_proxies_only() {
    let limits = "[[routes]]\npath = \"/ws/one\"\nmode = \"echo\"\npolicy = \"one\"\n\
                  [policies.one.limits]\nconnections_per_ip = 1\n";
    let a = "X-Forwarded-For: 198.51.100.1\r\n";
    let b = "Forwarded: for=198.51.100.2;proto=https\r\n";
    // Behind a trusted proxy (this test's loopback address), the forwarded address is the client.
    let gw = Gateway::start(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{limits}"
    ))
    .await;
    let mut keep = Vec::new();
    for (hdr, want) in [(a, 101), (a, 429), (b, 101), (b, 429)] {
        let (status, _, tls) = gw.handshake_open("/ws/one", hdr).await;
        assert_eq!(status, want, "{hdr}");
        keep.push(tls);
    }
    // Without trusted proxies the headers are ignored: everyone is 127.0.0.1, and a client
    // cannot claim another address to dodge its cap.
    let gw2 = Gateway::start(limits).await;
    let (status, _, _first) = gw2.handshake_open("/ws/one", a).await;
    assert_eq!(status, 101);
    let (status, _, _second) = gw2.handshake_open("/ws/one", b).await;
    assert_eq!(status, 429);
}
