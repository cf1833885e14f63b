//! Identity beyond a local JWT, end to end: client certificates from a test CA (rcgen) on
//! `required` and `optional` listeners, a real HTTP authorizer (ext_authz), a real
//! introspection endpoint (RFC 7662), and a JWKS served over IPv6 loopback.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::upstream::{HeldPort, HttpReply, HttpRequest, HttpService, Upstream};
use crate::support::*;
use crate::tokens::*;

/// The value of a metric sample without labels (0 when absent).
async fn counter(gw: &Gateway, name: &str) -> f64 {
    gw.admin_get("/metrics")
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn write_ca(ca: &TestCa) -> impl FnOnce(&std::path::Path) + '_ {
    move |dir| std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap()
}

#[tokio::test]
async fn required_listener_admits_its_cas_clients_and_refuses_others_at_tls() {
    let ca = TestCa::new("Test CA");
    let other = TestCa::new("Other CA");
    let gw = Gateway::start_tls_extra("client_ca = \"ca.pem\"", "", write_ca(&ca)).await;
    let good = ca.issue("svc-a", &["a.svc.example.com"]);
    let (status, _) = gw
        .try_handshake_as("/ws/echo", "", Some(&good))
        .await
        .unwrap();
    assert_eq!(status, 101);

    let failures = counter(&gw, "portcullis_tls_handshake_failures_total").await;
    let foreign = other.issue("svc-a", &["a.svc.example.com"]);
    let e = gw
        .try_handshake_as("/ws/echo", "", Some(&foreign))
        .await
        .unwrap_err();
    assert!(!e.is_empty());
    let e = gw.try_handshake_as("/ws/echo", "", None).await.unwrap_err();
    assert!(!e.is_empty());
    // Both were refused by the TLS layer, not answered by HTTP.
    eventually(STEP, "two more TLS failures", || async {
        let now = counter(&gw, "portcullis_tls_handshake_failures_total").await;
        done_or(now >= failures + 2.0, now)
    })
    .await;
}

#[tokio::test]
async fn client_ca_follows_a_reload() {
    let first = TestCa::new("First CA");
    let second = TestCa::new("Second CA");
    let gw = Gateway::start_tls_extra("client_ca = \"ca.pem\"", "", write_ca(&first)).await;
    let old = first.issue("svc", &[]);
    let new = second.issue("svc", &[]);
    assert_eq!(
        gw.try_handshake_as("/ws/echo", "", Some(&old))
            .await
            .unwrap()
            .0,
        101
    );
    assert!(gw
        .try_handshake_as("/ws/echo", "", Some(&new))
        .await
        .is_err());
    std::fs::write(gw.dir.path().join("ca.pem"), &second.cert_pem).unwrap();
    gw.signal("HUP");
    gw.wait_log("reload: configuration from").await;
    assert_eq!(
        gw.try_handshake_as("/ws/echo", "", Some(&new))
            .await
            .unwrap()
            .0,
        101
    );
    assert!(gw
        .try_handshake_as("/ws/echo", "", Some(&old))
        .await
        .is_err());
}

#[tokio::test]
async fn revoked_client_certificates_are_refused_at_tls() {
    let ca = TestCa::new("Test CA");
    let crl = ca.crl(&[666]);
    let gw = Gateway::start_tls_extra(
        "client_ca = \"ca.pem\"\nclient_crls = [\"ca.crl.pem\"]",
        "",
        |dir| {
            std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
            std::fs::write(dir.join("ca.crl.pem"), &crl).unwrap();
        },
    )
    .await;
    let good = ca.issue_serial("svc", &[], Some(7));
    let revoked = ca.issue_serial("svc", &[], Some(666));
    assert_eq!(
        gw.try_handshake_as("/ws/echo", "", Some(&good))
            .await
            .unwrap()
            .0,
        101
    );
    assert!(gw
        .try_handshake_as("/ws/echo", "", Some(&revoked))
        .await
        .is_err());
}

const CERT_POLICIES: &str = r#"
[[routes]]
path = "/ws/svc"
mode = "echo"
policy = "svc"

[[routes]]
path = "/ws/up"
mode = "relay"
policy = "fwd"
upstreams = ["UPSTREAM"]
ping_interval = "0s"

[policies.svc.client_cert]
require = true
allow_sans = ["*.svc.example.com"]
subject_from = "cn"

[policies.svc.limits]
connections_per_subject = 1

[policies.fwd.client_cert]
forward_headers = { subject = "X-Client-Subject", sans = "X-Client-SANs", fingerprint = "X-Client-Cert-Sha256" }
"#;

#[tokio::test]
async fn optional_listener_policy_requires_allows_caps_by_subject_and_forwards() {
    let ca = TestCa::new("Test CA");
    let mut up = Upstream::echo().await;
    let gw = Gateway::start_tls_extra(
        "client_ca = \"ca.pem\"\nclient_auth = \"optional\"",
        &CERT_POLICIES.replace("UPSTREAM", &up.url("/up")),
        write_ca(&ca),
    )
    .await;
    // Optional: no certificate is fine on a public route, a policy that requires one says 403.
    assert_eq!(gw.try_handshake("/ws/echo", "").await.0, 101);
    let (status, head) = gw.try_handshake("/ws/svc", "").await;
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("client certificate required"), "{head}");

    let chat = ca.issue("chat", &["chat.svc.example.com"]);
    let billing = ca.issue("billing", &["billing.svc.example.com"]);
    let stranger = ca.issue("chat", &["chat.example.net"]);
    let (status, head) = gw
        .try_handshake_as("/ws/svc", "", Some(&stranger))
        .await
        .unwrap();
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("client certificate not allowed"), "{head}");

    // The certificate's CN is the subject: one socket per subject.
    let (status, _, held) = gw
        .handshake_open_as("/ws/svc", "", Some(&chat))
        .await
        .unwrap();
    assert_eq!(status, 101);
    let (status, head) = gw
        .try_handshake_as("/ws/svc", "", Some(&chat))
        .await
        .unwrap();
    assert_eq!(status, 429, "{head}");
    let (status, _) = gw
        .try_handshake_as("/ws/svc", "", Some(&billing))
        .await
        .unwrap();
    assert_eq!(status, 101, "another subject has its own slot");
    let mut ws = WebSocketStream::from_raw_socket(held, Role::Client, None).await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("hi")).await,
        Message::text("echo: hi")
    );
    ws.close(None).await.unwrap();
    finish(&mut ws).await;
    gw.wait_log_line("the session's access line names the subject", |l| {
        l.contains("session route=/ws/svc") && l.contains("subject=chat")
    })
    .await;

    // The verified identity goes upstream; the client's own copies of those headers do not.
    let spoof = "X-Client-Subject: CN=admin\r\nX-Client-Cert-Sha256: 00\r\nX-Client-SANs: evil\r\n";
    let (status, _) = gw
        .try_handshake_as("/ws/up", spoof, Some(&chat))
        .await
        .unwrap();
    assert_eq!(status, 101);
    let (headers, _) = up.request().await;
    let all = |n: &str| {
        headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-client-subject"), ["CN=chat,O=Example"]);
    assert_eq!(all("x-client-sans"), ["chat.svc.example.com"]);
    let fp = all("x-client-cert-sha256");
    assert_eq!(fp.len(), 1);
    assert!(fp[0].len() == 64 && fp[0].chars().all(|c| c.is_ascii_hexdigit()));
    // Without a certificate nothing is forwarded, and the spoofed copies are still stripped.
    assert_eq!(gw.try_handshake("/ws/up", spoof).await.0, 101);
    let (headers, _) = up.request().await;
    assert!(headers.get("x-client-subject").is_none());
    assert!(headers.get("x-client-cert-sha256").is_none());
}

/// The test authorizer: decides by the bearer token it is given.
fn authorizer() -> Arc<dyn Fn(&HttpRequest) -> HttpReply + Send + Sync> {
    Arc::new(|r: &HttpRequest| match r.header("authorization") {
        t if t.starts_with("Bearer allow") => HttpReply::new(200, "")
            .header("X-User", "alice")
            .header("X-Unlisted", "not copied"),
        "Bearer deny401" => HttpReply::new(401, "bad credentials")
            .header("WWW-Authenticate", "Bearer realm=\"authz\""),
        "Bearer deny403" => HttpReply::new(403, "forbidden by policy"),
        "Bearer slow" => HttpReply {
            delay: Duration::from_secs(2),
            ..HttpReply::new(200, "")
        },
        _ => HttpReply::new(401, "who are you"),
    })
}

fn authz_config(authz: &str, down: &str, upstream: &str) -> String {
    format!(
        r#"
[[routes]]
path = "/ws/authz"
mode = "relay"
policy = "authz"
upstreams = ["{upstream}"]
ping_interval = "0s"

[[routes]]
path = "/ws/authz-echo"
mode = "echo"
policy = "authz"

[[routes]]
path = "/ws/open"
mode = "echo"
policy = "open"

[[routes]]
path = "/ws/cached"
mode = "echo"
policy = "cached"

[[routes]]
path = "/ws/down"
mode = "echo"
policy = "down"

[[routes]]
path = "/ws/down-open"
mode = "echo"
policy = "down_open"

[policies.authz.ext_authz]
url = "{authz}"
timeout = "200ms"
send_headers = ["x-request-id"]
copy_headers = ["x-user"]

[policies.open.ext_authz]
url = "{authz}"
timeout = "200ms"
on_error = "allow"

[policies.cached.ext_authz]
url = "{authz}"
cache_ttl = "1m"

[policies.down.ext_authz]
url = "{down}"

[policies.down_open.ext_authz]
url = "{down}"
on_error = "allow"

[[routes]]
path = "/ws/tenant"
mode = "echo"
policy = "tenant"

[[routes]]
path = "/ws/limited"
mode = "echo"
policy = "limited"

[[routes]]
path = "/ws/capped"
mode = "echo"
policy = "capped"

[[routes]]
path = "/ws/brief"
mode = "echo"
policy = "brief"

[policies.tenant.ext_authz]
url = "{authz}"
send_headers = ["x-tenant"]
cache_ttl = "1m"

[policies.limited.ext_authz]
url = "{authz}"

[policies.limited.limits]
handshakes_per_ip = {{ per_minute = 1, burst = 1 }}

[policies.capped.ext_authz]
url = "{authz}"

[policies.capped.limits]
connections_per_ip = 1

[policies.brief.ext_authz]
url = "{authz}"
cache_ttl = "1s"
"#
    )
}

/// What every authorizer test stands on: the authorizer, an address where nothing listens
/// (the unreachable authorizer's), the upstream echo, and the configuration naming them.
struct AuthzSetting {
    authz: HttpService,
    up: Upstream,
    down: HeldPort,
    config: String,
}

impl AuthzSetting {
    async fn new() -> AuthzSetting {
        let authz = HttpService::start(authorizer()).await;
        let down = HeldPort::new();
        let up = Upstream::echo().await;
        let config = authz_config(
            &authz.url("/check"),
            &format!("http://{}/check", down.addr),
            &up.url("/up"),
        );
        AuthzSetting {
            authz,
            up,
            down,
            config,
        }
    }
}

#[tokio::test]
async fn authorizer_admits_copies_headers_and_sees_the_request() {
    let mut s = AuthzSetting::new().await;
    let gw = Gateway::start(&s.config).await;
    let extra = format!(
        "{}X-Request-Id: r-1\r\nX-Other: private\r\nX-User: mallory\r\n",
        bearer("allow")
    );
    let (status, head) = gw.try_handshake("/ws/authz?room=1", &extra).await;
    assert_eq!(status, 101, "{head}");
    let (headers, _) = s.up.request().await;
    let users: Vec<_> = headers.get_all("x-user").iter().collect();
    assert_eq!(users, ["alice"], "the authorizer's copy only");
    assert!(
        headers.get("x-unlisted").is_none(),
        "only copy_headers are copied"
    );

    let asked = s.authz.requests();
    assert_eq!(asked.len(), 1);
    let q = &asked[0];
    assert_eq!((q.method.as_str(), q.target.as_str()), ("GET", "/check"));
    assert_eq!(q.header("x-forwarded-method"), "GET");
    assert_eq!(q.header("x-forwarded-uri"), "/ws/authz?room=1");
    assert_eq!(q.header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(q.header("authorization"), "Bearer allow");
    assert_eq!(q.header("x-request-id"), "r-1");
    assert_eq!(q.header("x-other"), "", "not in send_headers");

    // A token in a `bearer.` subprotocol entry reaches the authorizer as a bearer token.
    let (status, _) = gw
        .try_handshake(
            "/ws/authz-echo",
            "Sec-WebSocket-Protocol: bearer.allow-sub, chat\r\n",
        )
        .await;
    assert_eq!(status, 101);
    assert_eq!(
        s.authz.requests().last().unwrap().header("authorization"),
        "Bearer allow-sub"
    );
}

#[tokio::test]
async fn authorizer_refusals_timeouts_outages_and_cache() {
    let s = AuthzSetting::new().await;
    let gw = Gateway::start(&s.config).await;
    let answer = gw
        .raw(handshake("/ws/authz-echo", &bearer("deny401")).as_bytes())
        .await;
    let (status, body) = status_and_body(&answer);
    assert_eq!(
        (status, body.as_str()),
        (401, "bad credentials\n"),
        "{answer}"
    );
    assert!(
        answer.contains("WWW-Authenticate: Bearer realm=\"authz\""),
        "{answer}"
    );
    let answer = gw
        .raw(handshake("/ws/authz-echo", &bearer("deny403")).as_bytes())
        .await;
    let (status, body) = status_and_body(&answer);
    assert_eq!((status, body.as_str()), (403, "forbidden by policy\n"));

    // Too slow (2 s against a 200 ms timeout): deny by default, admit with on_error = allow.
    let started = std::time::Instant::now();
    let (status, head) = gw.try_handshake("/ws/authz-echo", &bearer("slow")).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("Retry-After: 1"), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout bounded it"
    );
    assert_eq!(gw.try_handshake("/ws/open", &bearer("slow")).await.0, 101);
    // Down (nothing listens): the same two ways.
    assert_eq!(gw.try_handshake("/ws/down", &bearer("allow")).await.0, 503);
    for _ in 0..5 {
        assert_eq!(
            gw.try_handshake("/ws/down-open", &bearer("allow")).await.0,
            101
        );
    }
    // Every failed call is counted, by route, kind and what on_error made of it: the fail-open
    // admissions are visible in the metrics, not only in the log.
    for sample in [
        "portcullis_ext_authz_errors_total{error=\"timeout\",on_error=\"deny\",route=\"/ws/authz-echo\"} 1",
        "portcullis_ext_authz_errors_total{error=\"timeout\",on_error=\"allow\",route=\"/ws/open\"} 1",
        "portcullis_ext_authz_errors_total{error=\"connect\",on_error=\"deny\",route=\"/ws/down\"} 1",
        "portcullis_ext_authz_errors_total{error=\"connect\",on_error=\"allow\",route=\"/ws/down-open\"} 5",
    ] {
        gw.wait_metric(sample).await;
    }
    // ... and the warning is rate-limited: five fail-open admissions within seconds, one line.
    let warned = |log: &str| {
        log.lines()
            .filter(|l| l.contains(&s.down.addr.to_string()) && l.contains("on_error = allow"))
            .count()
    };
    assert_eq!(warned(&gw.log()), 1, "{}", gw.log());
    gw.wait_metric(
        "portcullis_rejections_total{reason=\"authz_denied\",route=\"/ws/authz-echo\"} 2",
    )
    .await;
    gw.wait_metric(
        "portcullis_rejections_total{reason=\"auth_unavailable\",route=\"/ws/authz-echo\"} 1",
    )
    .await;
    gw.wait_metric("portcullis_rejections_total{reason=\"auth_unavailable\",route=\"/ws/down\"} 1")
        .await;
    gw.wait_log("reason=authz_denied status=401").await;

    // Cached decisions: the same credentials and route ask once; other credentials ask again.
    let asked = |token: &'static str| {
        s.authz.count(move |r| {
            r.header("x-forwarded-uri") == "/ws/cached" && r.header("authorization") == token
        })
    };
    for _ in 0..3 {
        assert_eq!(
            gw.try_handshake("/ws/cached", &bearer("allow-1")).await.0,
            101
        );
    }
    assert_eq!(asked("Bearer allow-1"), 1);
    assert_eq!(
        gw.try_handshake("/ws/cached", &bearer("allow-2")).await.0,
        101
    );
    assert_eq!(asked("Bearer allow-2"), 1);
    // Refusals are decisions too.
    for _ in 0..2 {
        assert_eq!(
            gw.try_handshake("/ws/cached", &bearer("deny403")).await.0,
            403
        );
    }
    assert_eq!(asked("Bearer deny403"), 1);
}

/// The cache key holds what the authorizer decides on besides the credentials: the values of
/// `send_headers` (the same token for another tenant is another question), and a request
/// target with a query string is no credential unless it carries the policy's token parameter.
#[tokio::test]
async fn authorizer_cache_keys_hold_send_headers_and_only_the_token_parameter() {
    let s = AuthzSetting::new().await;
    let gw = Gateway::start(&s.config).await;
    let asked = |tenant: &'static str| {
        s.authz.count(move |r| {
            r.header("x-forwarded-uri") == "/ws/tenant" && r.header("x-tenant") == tenant
        })
    };
    for tenant in ["a", "b", "a", "b"] {
        let extra = format!("{}X-Tenant: {tenant}\r\n", bearer("allow-t"));
        assert_eq!(gw.try_handshake("/ws/tenant", &extra).await.0, 101);
    }
    assert_eq!((asked("a"), asked("b")), (1, 1), "each tenant asked once");

    // No credential but a query string: never cached, every handshake asks.
    let target = |r: &HttpRequest| r.header("x-forwarded-uri").to_string();
    for _ in 0..2 {
        assert_eq!(gw.try_handshake("/ws/cached?room=1", "").await.0, 401);
    }
    assert_eq!(s.authz.count(|r| target(r) == "/ws/cached?room=1"), 2);
    // The policy's token parameter (here the default, access_token) is a credential.
    for _ in 0..2 {
        let (status, _) = gw.try_handshake("/ws/cached?access_token=q1", "").await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        s.authz.count(|r| target(r) == "/ws/cached?access_token=q1"),
        1
    );
}

/// `X-Forwarded-Proto` is one of the headers the gateway owns towards the authorizer (a policy
/// cannot name it in send_headers): the scheme the client used, `https` on a TLS listener.
#[tokio::test]
async fn authorizer_sees_the_forwarded_proto() {
    let s = AuthzSetting::new().await;
    let spoof = format!("{}X-Forwarded-Proto: gopher\r\n", bearer("allow"));
    let tls = Gateway::start(&s.config).await;
    assert_eq!(tls.try_handshake("/ws/authz-echo", &spoof).await.0, 101);
    let plain = Gateway::start_with(false, &s.config).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", plain.port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, handshake("/ws/authz-echo", &spoof).as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut tcp, &mut got, "the plain answer", has_head).await;
    assert_eq!(status_of(&String::from_utf8_lossy(&got)), 101);
    let protos: Vec<Vec<String>> = s
        .authz
        .requests()
        .iter()
        .map(|r| {
            r.headers
                .get_all("x-forwarded-proto")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(protos, [vec!["https"], vec!["http"]]);
}

/// Where the authorizer stands among the checks: after the rate limit (a handshake refused for
/// its rate never reaches it), before the caps (a cap refusal comes after its allow).
#[tokio::test]
async fn authorizer_runs_after_the_rate_and_before_the_caps() {
    let s = AuthzSetting::new().await;
    let gw = Gateway::start(&s.config).await;
    let asked = |route: &'static str| s.authz.count(move |r| r.header("x-forwarded-uri") == route);
    assert_eq!(
        gw.try_handshake("/ws/limited", &bearer("allow")).await.0,
        101
    );
    let (status, head) = gw.try_handshake("/ws/limited", &bearer("allow")).await;
    assert_eq!(status, 429, "{head}");
    assert_eq!(
        asked("/ws/limited"),
        1,
        "the rate-limited handshake reached the authorizer"
    );

    let (status, _, _held) = gw.handshake_open("/ws/capped", &bearer("allow")).await;
    assert_eq!(status, 101);
    let (status, head) = gw.try_handshake("/ws/capped", &bearer("allow")).await;
    assert_eq!(status, 429, "{head}");
    assert_eq!(
        asked("/ws/capped"),
        2,
        "the authorizer allowed it before the cap refused"
    );
    gw.wait_metric("portcullis_rejections_total{reason=\"conn_limit\",route=\"/ws/capped\"} 1")
        .await;
    gw.wait_metric("portcullis_rejections_total{reason=\"rate_limited\",route=\"/ws/limited\"} 1")
        .await;
}

/// A cached decision lives `cache_ttl`, then the authorizer is asked again.
#[tokio::test]
async fn authorizer_cache_entries_expire_after_their_ttl() {
    let s = AuthzSetting::new().await;
    let gw = Gateway::start(&s.config).await;
    let asked = || {
        s.authz
            .count(|r| r.header("x-forwarded-uri") == "/ws/brief")
    };
    for _ in 0..2 {
        assert_eq!(
            gw.try_handshake("/ws/brief", &bearer("allow-b")).await.0,
            101
        );
    }
    assert_eq!(asked(), 1);
    let cached_at = std::time::Instant::now();
    // The ttl passing is the test's subject (cache_ttl = "1s").
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        gw.try_handshake("/ws/brief", &bearer("allow-b")).await.0,
        101
    );
    assert_eq!(
        asked(),
        2,
        "asked again {:?} after caching",
        cached_at.elapsed()
    );
}

/// The test introspection endpoint: checks the gateway's client credentials, then answers by
/// token. `short` expires 2 s after it is first introspected (`short_exp`); after that answer
/// the endpoint calls it inactive (as a server would after its expiry).
struct Idp {
    service: HttpService,
    short_exp: Arc<AtomicU64>,
}

async fn idp() -> Idp {
    let short_exp = Arc::new(AtomicU64::new(0));
    let exp = short_exp.clone();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("gw:s3cret")
    );
    let service = HttpService::start(Arc::new(move |r: &HttpRequest| {
        if r.method != "POST" || r.header("authorization") != basic {
            return HttpReply::new(401, "{\"error\":\"invalid_client\"}");
        }
        let active = |extra: serde_json::Value| {
            let mut a = json!({
                "active": true, "sub": "alice", "scope": "chat:read chat:write",
                "exp": now() + 300, "iss": ISSUER, "aud": AUDIENCE,
            });
            for (k, v) in extra.as_object().unwrap() {
                a[k] = v.clone();
            }
            HttpReply::new(200, a.to_string())
        };
        match r.form("token").as_deref() {
            Some("good") => active(json!({})),
            Some("reader") => active(json!({"scope": "chat:read"})),
            Some("short") if exp.load(Ordering::SeqCst) == 0 => {
                exp.store(now() + 2, Ordering::SeqCst);
                active(json!({"exp": exp.load(Ordering::SeqCst)}))
            }
            _ => HttpReply::new(200, "{\"active\":false}"),
        }
    }))
    .await;
    Idp { service, short_exp }
}

fn introspection_config(url: &str) -> String {
    format!(
        r#"
[[routes]]
path = "/ws/intro"
mode = "echo"
policy = "intro"

[[routes]]
path = "/ws/intro-cached"
mode = "echo"
policy = "intro_cached"

[policies.intro.introspection]
url = "{url}"
client_id = "gw"
client_secret_file = "intro.secret"
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]
leeway = "0s"

[policies.intro.introspection.claims]
scope = "chat:write"

[policies.intro_cached.introspection]
url = "{url}"
client_id = "gw"
client_secret_file = "intro.secret"
leeway = "0s"
cache_ttl = "1h"
"#
    )
}

async fn introspection_gateway(idp: &Idp) -> Gateway {
    Gateway::start_prepared(
        true,
        &introspection_config(&idp.service.url("/introspect")),
        |dir| std::fs::write(dir.join("intro.secret"), "s3cret\n").unwrap(),
    )
    .await
}

#[tokio::test]
async fn introspection_active_inactive_scope_and_expiry_close() {
    let idp = idp().await;
    let gw = introspection_gateway(&idp).await;
    let (mut ws, _) = gw
        .ws_headers("/ws/intro", &[("authorization", "Bearer good")])
        .await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("hi")).await,
        Message::text("echo: hi")
    );
    let sent = &idp.service.requests()[0];
    assert_eq!(sent.form("token").as_deref(), Some("good"));
    assert_eq!(
        sent.form("token_type_hint").as_deref(),
        Some("access_token")
    );

    let (status, head) = gw.try_handshake("/ws/intro", &bearer("gone")).await;
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("token not active"), "{head}");
    let (status, head) = gw.try_handshake("/ws/intro", &bearer("reader")).await;
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("insufficient_scope"), "{head}");
    let (status, head) = gw.try_handshake("/ws/intro", "").await;
    assert_eq!(status, 401, "{head}");
    gw.wait_metric("portcullis_rejections_total{reason=\"auth_invalid\",route=\"/ws/intro\"} 1")
        .await;

    // The answer's exp closes the socket, as a JWT's does.
    let (mut ws, _) = gw
        .ws_headers("/ws/intro", &[("authorization", "Bearer short")])
        .await;
    let started = std::time::Instant::now();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn introspection_answers_are_cached_but_never_past_exp() {
    let idp = idp().await;
    let gw = introspection_gateway(&idp).await;
    let calls = |token: &'static str| {
        idp.service
            .count(move |r| r.form("token").as_deref() == Some(token))
    };
    for _ in 0..3 {
        assert_eq!(
            gw.try_handshake("/ws/intro-cached", &bearer("good"))
                .await
                .0,
            101
        );
    }
    assert_eq!(calls("good"), 1);
    assert_eq!(
        gw.try_handshake("/ws/intro-cached", &bearer("short"))
            .await
            .0,
        101
    );
    assert_eq!(calls("short"), 1);
    sleep_past_unix(idp.short_exp.load(Ordering::SeqCst)).await; // the sleep is the test: the token's exp passes
    let (status, head) = gw.try_handshake("/ws/intro-cached", &bearer("short")).await;
    assert_eq!(status, 401, "{head}");
    assert!(
        head.contains("token not active"),
        "asked the endpoint again instead of the expired cache entry: {head}"
    );
    assert_eq!(calls("short"), 2);
}

#[tokio::test]
async fn jwks_over_ipv6_loopback() {
    let jwks = json!({ "keys": [ec_jwk("k6", &keys().ec_point)] }).to_string();
    let service = HttpService::start_at(
        "[::1]:0",
        Arc::new(move |_: &HttpRequest| {
            HttpReply::new(200, jwks.clone()).header("Content-Type", "application/json")
        }),
    )
    .await;
    let url = service.url("/jwks");
    assert!(url.starts_with("http://[::1]:"), "{url}");
    let gw = Gateway::start(&format!(
        "[[routes]]\npath = \"/ws/v6\"\nmode = \"echo\"\npolicy = \"v6\"\n\
         [policies.v6.jwt]\njwks_url = \"{url}\"\n"
    ))
    .await;
    gw.wait_log("jwks: 1 key(s) from http://[::1]:").await;
    let token = sign(Algorithm::ES256, Some("k6"), &claims(json!({})));
    assert_eq!(gw.try_handshake("/ws/v6", &bearer(&token)).await.0, 101);
    assert_eq!(service.requests()[0].header("host"), &url[7..url.len() - 5]);
}

/// The one HTTP client's `ca_file`, end to end: a JWKS endpoint, an authorizer and an
/// introspection endpoint served over TLS with a certificate from a test CA. Trusting that CA
/// works; trusting another fails the TLS handshake, and each caller does what it does when its
/// endpoint cannot be asked.
struct TlsServices {
    jwks: HttpService,
    authz: HttpService,
    idp: HttpService,
    ca: TestCa,
    other: TestCa,
}

async fn tls_services() -> TlsServices {
    let ca = TestCa::new("Service CA");
    let other = TestCa::new("Another CA");
    let (cert, key) = ca.issue_server();
    let document = json!({ "keys": [ec_jwk("k1", &keys().ec_point)] }).to_string();
    let jwks = HttpService::start_tls(
        &cert,
        &key,
        Arc::new(move |_: &HttpRequest| HttpReply::new(200, document.clone())),
    )
    .await;
    let authz = HttpService::start_tls(&cert, &key, authorizer()).await;
    let idp = HttpService::start_tls(
        &cert,
        &key,
        Arc::new(|r: &HttpRequest| match r.form("token").as_deref() {
            Some("good") => HttpReply::new(
                200,
                json!({"active": true, "sub": "alice", "exp": now() + 300}).to_string(),
            ),
            _ => HttpReply::new(200, "{\"active\":false}"),
        }),
    )
    .await;
    TlsServices {
        jwks,
        authz,
        idp,
        ca,
        other,
    }
}

fn https_config(s: &TlsServices) -> String {
    let jwks = s.jwks.url("/jwks");
    let authz = s.authz.url("/check");
    let idp = s.idp.url("/introspect");
    assert!(jwks.starts_with("https://127.0.0.1:"), "{jwks}");
    let mut text = format!(
        "[[routes]]\npath = \"/ws/jwks\"\nmode = \"echo\"\npolicy = \"jwks\"\n\
         [policies.jwks.jwt]\njwks_url = \"{jwks}\"\njwks_ca_file = \"jwks-ca.pem\"\n\
         jwks_refresh = \"1h\"\njwks_min_refresh = \"1s\"\n"
    );
    for (name, ca, on_error) in [
        ("authz", "ca.pem", "deny"),
        ("authz_wrong", "other.pem", "deny"),
        ("authz_wrong_open", "other.pem", "allow"),
    ] {
        text.push_str(&format!(
            "[[routes]]\npath = \"/ws/{name}\"\nmode = \"echo\"\npolicy = \"{name}\"\n\
             [policies.{name}.ext_authz]\nurl = \"{authz}\"\nca_file = \"{ca}\"\n\
             timeout = \"2s\"\non_error = \"{on_error}\"\n"
        ));
    }
    for (name, ca) in [("intro", "ca.pem"), ("intro_wrong", "other.pem")] {
        text.push_str(&format!(
            "[[routes]]\npath = \"/ws/{name}\"\nmode = \"echo\"\npolicy = \"{name}\"\n\
             [policies.{name}.introspection]\nurl = \"{idp}\"\nclient_id = \"gw\"\n\
             client_secret_file = \"intro.secret\"\nca_file = \"{ca}\"\n"
        ));
    }
    text
}

#[tokio::test]
async fn https_endpoints_are_trusted_through_ca_file_and_a_wrong_ca_fails() {
    let s = tls_services().await;
    let gw = Gateway::start_prepared(true, &https_config(&s), |dir| {
        std::fs::write(dir.join("ca.pem"), &s.ca.cert_pem).unwrap();
        std::fs::write(dir.join("jwks-ca.pem"), &s.ca.cert_pem).unwrap();
        std::fs::write(dir.join("other.pem"), &s.other.cert_pem).unwrap();
        std::fs::write(dir.join("intro.secret"), "s3cret\n").unwrap();
    })
    .await;

    // The authorizer: its CA admits; another CA is an authorizer that cannot be asked.
    assert_eq!(gw.try_handshake("/ws/authz", &bearer("allow")).await.0, 101);
    let (status, head) = gw.try_handshake("/ws/authz", &bearer("deny403")).await;
    assert_eq!(status, 403, "{head}");
    assert_eq!(s.authz.requests().len(), 2);
    let (status, head) = gw.try_handshake("/ws/authz_wrong", &bearer("allow")).await;
    assert_eq!(status, 503, "{head}");
    assert_eq!(
        gw.try_handshake("/ws/authz_wrong_open", &bearer("allow"))
            .await
            .0,
        101
    );
    assert_eq!(
        s.authz.requests().len(),
        2,
        "a request reached the authorizer over a TLS connection the gateway should not trust"
    );
    gw.wait_metric(
        "portcullis_ext_authz_errors_total{error=\"connect\",on_error=\"allow\",route=\"/ws/authz_wrong_open\"} 1",
    )
    .await;

    // Introspection: the same.
    assert_eq!(gw.try_handshake("/ws/intro", &bearer("good")).await.0, 101);
    assert_eq!(gw.try_handshake("/ws/intro", &bearer("bad")).await.0, 401);
    assert_eq!(
        gw.try_handshake("/ws/intro_wrong", &bearer("good")).await.0,
        503
    );
    assert_eq!(s.idp.requests().len(), 2);

    // JWKS: fetched over TLS through its CA file.
    let token = sign(Algorithm::ES256, Some("k1"), &claims(json!({})));
    eventually(STEP, "the https JWKS key admits", || async {
        let (status, head) = gw.try_handshake("/ws/jwks", &bearer(&token)).await;
        done_or(status == 101, head)
    })
    .await;
    // Its CA file now names another CA (reloaded): the next fetch fails the TLS handshake, and
    // the keys fetched before stay in use.
    std::fs::write(gw.dir.path().join("jwks-ca.pem"), &s.other.cert_pem).unwrap();
    let fetched = s.jwks.requests().len();
    gw.signal("HUP");
    gw.wait_log("reload: configuration from").await;
    let ghost = sign(Algorithm::ES256, Some("ghost"), &claims(json!({})));
    eventually(
        STEP,
        "a refresh for an unknown kid fails at TLS",
        || async {
            assert_eq!(gw.try_handshake("/ws/jwks", &bearer(&ghost)).await.0, 401);
            let log = gw.log();
            let failed = log
                .lines()
                .filter(|l| l.contains("jwks: fetching https://127.0.0.1:"))
                .any(|l| l.contains("keeping the last good keys"));
            done_or(failed, log)
        },
    )
    .await;
    assert_eq!(
        s.jwks.requests().len(),
        fetched,
        "no request over the untrusted TLS"
    );
    assert_eq!(gw.try_handshake("/ws/jwks", &bearer(&token)).await.0, 101);
}
