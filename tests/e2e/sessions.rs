//! Live session control over the admin API and the `portcullis sessions` subcommand: list and
//! close by id, subject and route; revoke a subject (1008 `revoked`, then 401 until the ttl
//! ends); across two replicas through a real Redis; the lifetime close with jitter; refusals
//! without the admin token; never a token or a query string in a listing.

use std::process::Command;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;
use crate::tokens::*;

pub(crate) const TOKEN: &str = "s3cret-admin-token";

const ROUTES: &str = "[[routes]]\npath = \"/ws/chat\"\nmode = \"echo\"\npolicy = \"chat\"\n\
     [policies.chat.jwt]\nkeys = [{ alg = \"ES256\", pem_file = \"keys/ec.pub.pem\" }]\n\
     [[routes]]\npath = \"/ws/short\"\nmode = \"echo\"\nmax_session_duration = \"2s\"\n";

pub(crate) async fn gateway(extra: &str) -> Gateway {
    Gateway::start_full_prepared(
        "token_file = \"admin.token\"\n",
        &format!("{ROUTES}{extra}"),
        |dir| {
            write_keys(dir);
            std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
        },
    )
    .await
}

pub(crate) fn token_for(subject: &str, jti: &str) -> String {
    sign(
        Algorithm::ES256,
        None,
        &claims(json!({ "sub": subject, "jti": jti })),
    )
}

/// A chat socket as `subject`, its token passed in the query string.
pub(crate) async fn chat(gw: &Gateway, subject: &str, jti: &str) -> Wss {
    let url = gw.url(&format!(
        "/ws/chat?room=7&access_token={}",
        token_for(subject, jti)
    ));
    gw.ws_request(url, None).await.0
}

/// A `[cluster]` table for the Redis at `url`, with its own key prefix.
pub(crate) fn cluster_table(url: &str, prefix: &str) -> String {
    format!(
        "[cluster]\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\nlease_ttl = \"4s\"\ntimeout = \"500ms\"\n"
    )
}

/// `portcullis sessions ARGS` against `gw`'s admin listener, with its configuration file.
fn sessions_cli(gw: &Gateway, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("sessions")
        .arg("--config")
        .arg(gw.dir.path().join("portcullis.toml"))
        .args(["--admin", &gw.admin_address()])
        .args(args);
    cmd
}

/// One admin request with the token: status and JSON body.
pub(crate) async fn admin(
    gw: &Gateway,
    method: &str,
    target: &str,
    body: Option<Value>,
) -> (u16, Value) {
    admin_as(gw, method, target, body, Some(TOKEN)).await
}

async fn admin_as(
    gw: &Gateway,
    method: &str,
    target: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map_or(String::new(), bearer);
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", gw.admin_port))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    read_until(&mut s, &mut out, "the admin answer", |_| false).await;
    let (status, body) = status_and_body(&String::from_utf8_lossy(&out));
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn listed(gw: &Gateway, query: &str) -> Value {
    let (status, body) = admin(gw, "GET", &format!("/sessions{query}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn list_and_close_by_id_subject_and_route() {
    let gw = gateway("").await;
    let mut a1 = chat(&gw, "alice", "t1").await;
    let mut a2 = chat(&gw, "alice", "t2").await;
    let mut b = chat(&gw, "bob", "t3").await;
    let mut e = gw.ws("/ws/echo").await;
    // Counters move while the session runs.
    assert_eq!(
        roundtrip(&mut a1, tokio_tungstenite::tungstenite::Message::text("hi")).await,
        tokio_tungstenite::tungstenite::Message::text("echo: hi")
    );
    let all = listed(&gw, "").await;
    assert_eq!(all["total"], 4, "{all}");
    let text = all.to_string();
    assert!(
        !text.contains("access_token") && !text.contains("room=7"),
        "{text}"
    );
    assert!(
        !text.contains(&token_for("alice", "t1")[..20]),
        "a token is listed: {text}"
    );
    let alice = listed(&gw, "?subject=alice").await;
    assert_eq!(alice["total"], 2);
    let first = &alice["sessions"][0];
    assert_eq!(first["route"], "/ws/chat");
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["messages_in"], 1, "{first}");
    assert_eq!(first["bytes_out"], 8, "{first}");
    assert!(first["started_at"].as_f64().unwrap() > 1.7e9);
    assert_eq!(
        listed(&gw, "?route=/ws/echo&limit=1").await["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        listed(&gw, "?client=127.0.0.1&offset=3").await["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // By id, with an own code and reason.
    let id = first["id"].as_str().unwrap().to_string();
    let (status, body) = admin(
        &gw,
        "POST",
        "/sessions/close",
        Some(json!({"id": id, "code": 4001, "reason": "maintenance"})),
    )
    .await;
    assert_eq!((status, &body["closed"]), (200, &json!(1)), "{body}");
    assert_eq!(expect_close(&mut a1).await, (4001, "maintenance".into()));
    // By subject: the default 1008.
    let (_, body) = admin(
        &gw,
        "POST",
        "/sessions/close",
        Some(json!({"subject": "alice"})),
    )
    .await;
    assert_eq!(body["closed"], 1, "{body}");
    assert_eq!(
        expect_close(&mut a2).await,
        (1008, "closed by operator".into())
    );
    // By route.
    let (_, body) = admin(
        &gw,
        "POST",
        "/sessions/close",
        Some(json!({"route": "/ws/echo"})),
    )
    .await;
    assert_eq!(body["closed"], 1, "{body}");
    assert_eq!(expect_close(&mut e).await.0, 1008);
    // Bob is untouched.
    assert_eq!(
        roundtrip(
            &mut b,
            tokio_tungstenite::tungstenite::Message::text("still")
        )
        .await,
        tokio_tungstenite::tungstenite::Message::text("echo: still")
    );
    gw.wait_log_line("an admin close in the access log", |l| {
        l.contains("subject=alice") && l.contains("end_reason=admin")
    })
    .await;
    let sample = "portcullis_gateway_closes_total{reason=\"admin\",route=\"/ws/chat\"} 2";
    gw.wait_metric_with(sample, &bearer(TOKEN)).await;
    // Bad requests say why.
    let (status, _) = admin(&gw, "POST", "/sessions/close", Some(json!({}))).await;
    assert_eq!(status, 400);
    let (status, _) = admin(
        &gw,
        "POST",
        "/sessions/close",
        Some(json!({"route": "/x", "code": 1005})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn revocation_closes_refuses_then_admits_after_the_ttl() {
    let gw = gateway("").await;
    let mut eve = chat(&gw, "eve", "e1").await;
    let (status, body) = admin(
        &gw,
        "POST",
        "/revocations",
        Some(json!({"subject": "eve", "ttl": "2s"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["closed"], 1);
    assert_eq!(expect_close(&mut eve).await, (1008, "revoked".into()));
    let revoked_at = Instant::now();
    let e2 = bearer(&token_for("eve", "e2"));
    let (status, head) = gw.try_handshake("/ws/chat", &e2).await;
    assert_eq!(status, 401, "{head}");
    assert!(
        head.contains("error=\"invalid_token\", error_description=\"token revoked\""),
        "{head}"
    );
    let (_, list) = admin(&gw, "GET", "/revocations", None).await;
    assert_eq!(list["revocations"][0]["subject"], "eve", "{list}");
    // A token id too, lifted again before its ttl.
    let (status, _) = admin(
        &gw,
        "POST",
        "/revocations",
        Some(json!({"jti": "z9", "ttl": "1h"})),
    )
    .await;
    assert_eq!(status, 200);
    let z9 = bearer(&token_for("zoe", "z9"));
    assert_eq!(gw.try_handshake("/ws/chat", &z9).await.0, 401);
    let (status, body) = admin(&gw, "DELETE", "/revocations?jti=z9", None).await;
    assert_eq!((status, &body["lifted"]), (200, &json!(true)), "{body}");
    assert_eq!(gw.try_handshake("/ws/chat", &z9).await.0, 101);
    // After the ttl eve is admitted again.
    eventually(
        STEP,
        "eve admitted once the revocation's ttl ended",
        || async {
            let (status, head) = gw.try_handshake("/ws/chat", &e2).await;
            done_or(status == 101, head)
        },
    )
    .await;
    assert!(revoked_at.elapsed() >= Duration::from_millis(1500));
    gw.wait_log("reason=revoked").await;
}

#[tokio::test]
async fn state_changing_endpoints_need_the_admin_token() {
    // Without a token configured they do not exist.
    let open = Gateway::start_prepared(true, ROUTES, write_keys).await;
    for (method, path) in [
        ("POST", "/sessions/close"),
        ("POST", "/revocations"),
        ("DELETE", "/revocations"),
    ] {
        let (status, body) = admin_as(
            &open,
            method,
            path,
            Some(json!({"subject": "x", "ttl": "1s"})),
            None,
        )
        .await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not JSON: {body}"));
        assert!(error.contains("need an admin token"), "{body}");
    }
    assert_eq!(admin_as(&open, "GET", "/sessions", None, None).await.0, 200);
    // With one they need it, and listings do too. Every refusal of these endpoints is JSON
    // with an "error", like their other answers.
    let gw = gateway("").await;
    for (method, path) in [
        ("POST", "/sessions/close"),
        ("POST", "/revocations"),
        ("GET", "/sessions"),
        ("GET", "/revocations"),
    ] {
        for token in [None, Some("wrong")] {
            let (status, body) =
                admin_as(&gw, method, path, Some(json!({"subject": "x"})), token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert!(
                body["error"].is_string(),
                "{method} {path}: not JSON: {body}"
            );
        }
    }
    for (method, path, allow) in [
        ("PUT", "/sessions", "GET"),
        ("GET", "/sessions/close", "POST"),
        ("PATCH", "/revocations", "GET, POST, DELETE"),
    ] {
        let auth = format!("Authorization: Bearer {TOKEN}\r\n");
        let answer = raw_admin(&gw, method, path, &auth).await;
        let (status, body) = status_and_body(&answer);
        assert_eq!(status, 405, "{method} {path}: {answer}");
        assert!(answer.contains(&format!("Allow: {allow}\r\n")), "{answer}");
        assert!(
            answer.contains("Content-Type: application/json"),
            "{answer}"
        );
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{answer}"));
        assert!(body["error"].is_string(), "{answer}");
    }
    let answer = raw_admin(&gw, "GET", "/sessions", "").await;
    assert!(
        answer.contains("Content-Type: application/json"),
        "{answer}"
    );
    assert!(answer.contains("WWW-Authenticate: Bearer"), "{answer}");
    // The other admin paths keep their plain text.
    let (status, body) = gw.admin_request("/metrics", "").await;
    assert_eq!((status, body.as_str()), (401, "unauthorized\n"));
}

/// One raw admin request (`auth`: header lines): the whole answer.
async fn raw_admin(gw: &Gateway, method: &str, target: &str, auth: &str) -> String {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect(("127.0.0.1", gw.admin_port))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    read_until(&mut s, &mut out, "the admin answer", |_| false).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Bad input is a 400 whose `error` names the field and what it may be, never a parser's
/// internals ("data did not match any variant of untagged enum").
#[tokio::test]
async fn bad_requests_are_400s_naming_the_field_and_its_range() {
    let gw = gateway("").await;
    let close_codes = "1000-1003, 1007-1014 or 3000-4999";
    let ttl_range = ["ttl", "greater than zero", "at most one year"];
    let text = |b: &str| Some(b.to_string());
    let mut cases: Vec<(&str, &str, Option<String>, Vec<&str>)> = vec![
        (
            "POST",
            "/revocations",
            text("{\"subject\": \"x\", \"ttl\": "),
            vec!["invalid JSON body"],
        ),
        (
            "POST",
            "/sessions/close",
            text("[1, 2"),
            vec!["invalid JSON body"],
        ),
        ("POST", "/sessions/close", None, vec!["invalid JSON body"]),
        (
            "POST",
            "/sessions/close",
            text("{\"route\": \"/x\", \"cod\": 1000}"),
            vec!["unknown field `cod`"],
        ),
        (
            "POST",
            "/revocations",
            text("{\"subject\": \"x\", \"jti\": \"y\", \"ttl\": \"1h\"}"),
            vec!["exactly one of \"subject\" and \"jti\""],
        ),
        (
            "POST",
            "/revocations",
            text("{\"ttl\": \"1h\"}"),
            vec!["exactly one of \"subject\" and \"jti\""],
        ),
        (
            "POST",
            "/revocations",
            text("{\"subject\": \"x\"}"),
            vec!["ttl", "required"],
        ),
        (
            "POST",
            "/revocations",
            text("{\"subject\": \"x\", \"ttl\": null}"),
            vec!["ttl", "required"],
        ),
        ("GET", "/sessions?limit=0", None, vec!["limit", "1 to 1000"]),
        (
            "GET",
            "/sessions?limit=1001",
            None,
            vec!["limit", "1 to 1000"],
        ),
        (
            "GET",
            "/sessions?limit=-1",
            None,
            vec!["limit", "1 to 1000"],
        ),
        ("GET", "/sessions?offset=x", None, vec!["offset"]),
    ];
    for code in [
        "999", "1004", "1005", "1006", "1015", "5000", "70000", "-1", "1000.5", "\"1000\"",
    ] {
        let body = format!("{{\"route\": \"/ws/echo\", \"code\": {code}}}");
        cases.push((
            "POST",
            "/sessions/close",
            Some(body),
            vec!["code", close_codes],
        ));
    }
    for ttl in [
        "0",
        "\"0s\"",
        "-5",
        "1.5",
        "31536001",
        "\"8761h\"",
        "\"2y\"",
        "true",
    ] {
        let body = format!("{{\"subject\": \"x\", \"ttl\": {ttl}}}");
        cases.push(("POST", "/revocations", Some(body), ttl_range.to_vec()));
    }
    for (method, target, body, says) in cases {
        let (status, answer) = admin_raw_body(&gw, method, target, body.as_deref()).await;
        assert_eq!(status, 400, "{method} {target} {body:?}: {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {target} {body:?}: not a JSON error: {answer}"));
        for word in says {
            assert!(
                error.contains(word),
                "{method} {target} {body:?}: {error:?} should say {word:?}"
            );
        }
        assert!(!error.contains("untagged"), "{error}");
    }
    // What is in range passes.
    for ttl in ["1", "\"90s\"", "31536000", "\"1h\""] {
        let body = format!("{{\"subject\": \"nobody\", \"ttl\": {ttl}}}");
        let (status, answer) = admin_raw_body(&gw, "POST", "/revocations", Some(&body)).await;
        assert_eq!(status, 200, "{ttl}: {answer}");
    }
    for code in [1000, 1003, 1007, 1014, 3000, 4999] {
        let body = format!("{{\"route\": \"/nowhere\", \"code\": {code}}}");
        let (status, answer) = admin_raw_body(&gw, "POST", "/sessions/close", Some(&body)).await;
        assert_eq!(status, 200, "{code}: {answer}");
    }
}

/// One admin request with the token and `body` sent as it is: status and JSON body.
async fn admin_raw_body(
    gw: &Gateway,
    method: &str,
    target: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", gw.admin_port))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    read_until(&mut s, &mut out, "the admin answer", |_| false).await;
    let (status, body) = status_and_body(&String::from_utf8_lossy(&out));
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn lifetime_closes_with_1001_at_jittered_moments() {
    let gw = gateway("").await;
    let started = Instant::now();
    let mut a = gw.ws("/ws/short").await;
    let mut b = gw.ws("/ws/short").await;
    let (ra, rb) = tokio::join!(
        async {
            let close = expect_close(&mut a).await;
            (close, started.elapsed())
        },
        async {
            let close = expect_close(&mut b).await;
            (close, started.elapsed())
        }
    );
    for ((code, reason), at) in [&ra, &rb] {
        assert_eq!((*code, reason.as_str()), (1001, "session lifetime reached"));
        // In the last tenth of the 2 s lifetime (and not much after).
        assert!(
            *at >= Duration::from_millis(1750) && *at < Duration::from_secs(4),
            "{at:?}"
        );
    }
    assert_ne!(ra.1, rb.1, "two sockets closed at the same moment");
    let sample = "portcullis_gateway_closes_total{reason=\"lifetime\",route=\"/ws/short\"} 2";
    gw.wait_metric_with(sample, &bearer(TOKEN)).await;
}

#[tokio::test]
async fn the_sessions_subcommand_talks_to_the_admin_api() {
    let gw = gateway("").await;
    let mut carol = chat(&gw, "carol", "c1").await;
    let cli = |args: &[&str]| sessions_cli(&gw, args);
    let out = run_ok_async(cli(&["list", "--subject", "carol"])).await;
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["total"], 1, "{out}");
    let out = run_ok_async(cli(&["revoke", "--subject", "carol", "--ttl", "1h"])).await;
    assert!(out.contains("\"closed\": 1"), "{out}");
    assert_eq!(expect_close(&mut carol).await, (1008, "revoked".into()));
    let out = run_ok_async(cli(&["revocations"])).await;
    assert!(out.contains("carol"), "{out}");
    run_ok_async(cli(&["unrevoke", "--subject", "carol"])).await;
    let c2 = bearer(&token_for("carol", "c2"));
    assert_eq!(gw.try_handshake("/ws/chat", &c2).await.0, 101);
    let failed = output_within_async(cli(&["close"]), b"", Duration::from_secs(30)).await;
    assert!(!failed.status.success());
    assert!(text_of(&failed).contains("400"), "{}", text_of(&failed));
}

#[tokio::test]
async fn a_revocation_reaches_every_replica_through_redis() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let cluster = format!(
        "[cluster]\nredis_url = \"{}\"\nkey_prefix = \"sessions-test:\"\nlease_ttl = \"4s\"\ntimeout = \"500ms\"\n",
        redis.url()
    );
    let a = gateway(&cluster).await;
    let b = gateway(&cluster).await;
    for gw in [&a, &b] {
        gw.wait_log("cluster: connected to").await;
    }
    redis.wait_subscribers("sessions-test:events", 2).await;
    let mut on_b = chat(&b, "mallory", "m1").await;
    let sent = Instant::now();
    let (status, body) = admin(
        &a,
        "POST",
        "/revocations",
        Some(json!({"subject": "mallory", "ttl": "1h"})),
    )
    .await;
    assert_eq!(
        (status, &body["cluster"]),
        (200, &json!("published")),
        "{body}"
    );
    assert_eq!(expect_close(&mut on_b).await, (1008, "revoked".into()));
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    let m2 = bearer(&token_for("mallory", "m2"));
    assert_eq!(b.try_handshake("/ws/chat", &m2).await.0, 401);
    // A close by subject published from B reaches A.
    let mut on_a = chat(&a, "oscar", "o1").await;
    let (_, body) = admin(
        &b,
        "POST",
        "/sessions/close",
        Some(json!({"subject": "oscar"})),
    )
    .await;
    assert_eq!(body["closed"], 0, "{body}");
    assert_eq!(expect_close(&mut on_a).await.0, 1008);
    // A replica that starts later honours the revocation (it reads the key).
    let c = gateway(&cluster).await;
    eventually(STEP, "the late replica refuses mallory", || async {
        let (status, head) = c.try_handshake("/ws/chat", &m2).await;
        done_or(status == 401, head)
    })
    .await;
}

#[tokio::test]
async fn relayed_sessions_are_listed_with_their_upstream_and_closed_on_both_sides() {
    let mut up = crate::support::upstream::Upstream::echo().await;
    // An upstream URL may carry a query string (a key, a shard): never listed.
    let upstream = up.url("/chat");
    let gw = gateway(&format!(
        "[[routes]]\npath = \"/ws/relay\"\nmode = \"relay\"\n\
         upstreams = [\"{upstream}?shard=3&key=s3cret\"]\n"
    ))
    .await;
    let mut ws = gw.ws("/ws/relay").await;
    let (_, uri) = up.request().await;
    assert_eq!(
        uri, "/chat?shard=3&key=s3cret",
        "the upstream still gets its query"
    );
    let listed = listed(&gw, "?route=/ws/relay").await;
    assert_eq!(
        listed["sessions"][0]["upstream"],
        upstream.as_str(),
        "{listed}"
    );
    assert!(!listed.to_string().contains("s3cret"), "{listed}");
    let (_, body) = admin(
        &gw,
        "POST",
        "/sessions/close",
        Some(json!({"route": "/ws/relay", "code": 4002, "reason": "rebalancing"})),
    )
    .await;
    assert_eq!(body["closed"], 1, "{body}");
    assert_eq!(expect_close(&mut ws).await, (4002, "rebalancing".into()));
    assert_eq!(
        up.closed().await,
        (1001, "client closed by operator".into())
    );
    gw.wait_log_line("the relay's end reason", |l| {
        l.contains("route=/ws/relay") && l.contains("end_reason=admin")
    })
    .await;
}

/// A replica cut off from Redis misses the events of that time. When its line comes back it
/// reads the revocation keys and tombstones again and merges them with what it held, the newer
/// action winning: a revocation made meanwhile closes the subject's open socket, and a lift
/// made meanwhile admits again.
#[tokio::test]
async fn a_replica_cut_off_from_redis_catches_up_on_revocations_and_lifts() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let pipe = Pipe::to(redis.port);
    let a = gateway(&cluster_table(&pipe.redis_url(), "cut-test:")).await;
    let b = gateway(&cluster_table(&redis.url(), "cut-test:")).await;
    redis.wait_subscribers("cut-test:events", 2).await;
    let trudy = format!("Authorization: Bearer {}\r\n", token_for("trudy", "t1"));
    let revoke = |subject: &str| json!({"subject": subject, "ttl": "1h"});
    let (status, body) = admin(&b, "POST", "/revocations", Some(revoke("trudy"))).await;
    assert_eq!((status, &body["cluster"]), (200, &json!("published")));
    eventually(STEP, "A refuses trudy", || async {
        let (status, head) = a.try_handshake("/ws/chat", &trudy).await;
        done_or(status == 401, head)
    })
    .await;
    let mut mallory = chat(&a, "mallory", "m1").await;

    pipe.cut();
    redis.wait_subscribers("cut-test:events", 1).await;
    let (status, body) = admin(&b, "DELETE", "/revocations?subject=trudy", None).await;
    assert_eq!((status, &body["cluster"]), (200, &json!("published")));
    let (status, body) = admin(&b, "POST", "/revocations", Some(revoke("mallory"))).await;
    assert_eq!((status, &body["cluster"]), (200, &json!("published")));
    // A heard neither: mallory's socket still works, trudy is still refused.
    let echo = roundtrip(&mut mallory, Message::text("still here")).await;
    assert_eq!(echo, Message::text("echo: still here"));
    assert_eq!(a.try_handshake("/ws/chat", &trudy).await.0, 401);

    pipe.restore();
    assert_eq!(expect_close(&mut mallory).await, (1008, "revoked".into()));
    eventually(STEP, "A admits trudy again", || async {
        let (status, head) = a.try_handshake("/ws/chat", &trudy).await;
        done_or(status == 101, head)
    })
    .await;
    let bearer = format!("Authorization: Bearer {}\r\n", token_for("mallory", "m2"));
    assert_eq!(a.try_handshake("/ws/chat", &bearer).await.0, 401);
    a.wait_log_line("the revoked session's end reason", |l| {
        l.contains("subject=mallory") && l.contains("end_reason=revoked")
    })
    .await;
}

/// With `[cluster]`, an operator's action that cannot reach Redis still applies on the replica
/// asked, which answers 503 saying so (and `portcullis sessions` exits with status 2); one
/// made just after the line came back, on a connection that had died unnoticed, is published
/// by its second attempt.
#[tokio::test]
async fn an_action_that_cannot_be_published_answers_503_with_what_was_done_here() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let pipe = Pipe::to(redis.port);
    // The liveness check slowed down to a minute: the dead connection is to be found by the
    // action itself, as the test says, not by a ping that happens to run first.
    let table = cluster_table(&pipe.redis_url(), "unpublished-test:")
        .replace("[cluster]\n", "[cluster]\nliveness_interval = \"60s\"\n");
    let gw = gateway(&table).await;
    gw.wait_log("cluster: connected to").await;
    let mut victor = chat(&gw, "victor", "v1").await;

    pipe.cut();
    let started = Instant::now();
    let close = json!({"subject": "victor", "code": 4001});
    let (status, body) = admin(&gw, "POST", "/sessions/close", Some(close)).await;
    assert_eq!(
        (status, &body["closed"], &body["published"]),
        (503, &json!(1), &json!(false)),
        "{body}"
    );
    let why = body["cluster"].as_str().unwrap_or_default();
    assert!(why.starts_with("not published ("), "{body}");
    assert!(why.ends_with("applied on this replica only"), "{body}");
    assert_eq!(
        expect_close(&mut victor).await.0,
        4001,
        "closed here all the same"
    );
    // Two attempts, each waiting at most 1 s for a connection and 1 s for a call.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let revoke = json!({"subject": "wendy", "ttl": "1h"});
    let (status, body) = admin(&gw, "POST", "/revocations", Some(revoke)).await;
    assert_eq!((status, &body["published"]), (503, &json!(false)), "{body}");
    let wendy = format!("Authorization: Bearer {}\r\n", token_for("wendy", "w1"));
    assert_eq!(
        gw.try_handshake("/ws/chat", &wendy).await.0,
        401,
        "revoked here"
    );
    let cli = sessions_cli(&gw, &["unrevoke", "--subject", "wendy"]);
    let out = output_within_async(cli, b"", Duration::from_secs(30)).await;
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("applied on this replica only"), "{text}");
    assert!(text.contains("\"lifted\": true"), "{text}");
    assert_eq!(
        gw.try_handshake("/ws/chat", &wendy).await.0,
        101,
        "lifted here"
    );

    // Back, and then a blip: the connection the gateway holds dies and nothing uses it before
    // the operator's next action (the event subscriber waits 100 ms before it subscribes
    // again), whose first attempt fails on it.
    pipe.restore();
    gw.wait_metric_with("portcullis_cluster_connected 1", &bearer(TOKEN))
        .await;
    pipe.cut();
    pipe.restore();
    let revoke = json!({"subject": "xavier", "ttl": "1h"});
    let (status, body) = admin(&gw, "POST", "/revocations", Some(revoke)).await;
    assert_eq!(
        (status, &body["cluster"]),
        (200, &json!("published")),
        "{body}"
    );
    assert_eq!(body["published"], true, "{body}");
    assert_eq!(
        redis
            .cli(&["EXISTS", "unpublished-test:revoked:sub:xavier"])
            .await,
        "1"
    );
}
