//! Real browsers: headless Chromium (Debian's `chromium`, driven by ChromeDriver) and headless
//! Firefox ESR (Debian's `firefox-esr`, driven by geckodriver) load a page served on loopback,
//! which opens WebSockets through the browser's own API over real `wss` to the gateway. The page
//! reports what it saw; the test asserts it, and checks the gateway's side (why it refused) in
//! its metrics. `scripts/bootstrap --test` installs both browsers, their drivers and certutil.
//!
//! The gateway's certificate is issued by a test CA that each browser trusts through a fresh NSS
//! database (see `support::browser`), not by switching certificate checks off: any other
//! certificate error would still fail, and so would the echo case.

use jsonwebtoken::Algorithm;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use std::path::Path;

use crate::support::upstream::{HttpServer, Upstream};
use crate::support::*;
use crate::tokens::*;

const PAGE: &str = include_str!("../clients/browser_page.html");

/// A token route that, like a browser app's, takes its token from a `bearer.` subprotocol entry
/// and admits one page origin.
fn config(origin: &str) -> String {
    format!(
        r#"
[[routes]]
path = "/ws/chat"
mode = "echo"
policy = "browser"

[policies.browser.origin]
allow = ["{origin}"]

[policies.browser.jwt]
sources = ["subprotocol"]
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]
keys = [{{ kid = "es", alg = "ES256", pem_file = "keys/ec.pub.pem" }}]
"#
    )
}

/// A test CA and the gateway certificate it issued (for `localhost` and `127.0.0.1`), written
/// where the base configuration's `[listeners.tls]` reads them (so none is generated), with the
/// CA beside them as `certs/ca.pem` for the clients, and the token keys.
pub fn write_ca_issued_pair_and_keys(dir: &Path) {
    let ca = TestCa::new("Portcullis test CA");
    let (cert, key) = ca.issue_server();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("cert.pem"), cert).unwrap();
    std::fs::write(certs.join("key.pem"), key).unwrap();
    std::fs::write(certs.join("ca.pem"), &ca.cert_pem).unwrap();
    write_keys(dir);
}

/// Load the page from `page` with `params` in its fragment and wait (bounded) for its report.
async fn observe(browser: &Browser, page: &HttpServer, params: Value) -> Value {
    // Everything but letters and digits as `%XX`: the page reads it with decodeURIComponent.
    let fragment = utf8_percent_encode(&params.to_string(), NON_ALPHANUMERIC).to_string();
    let url = format!("{}#{fragment}", page.url("/"));
    browser.goto(&url).await;
    let report = browser
        .execute_async("const done = arguments[arguments.length - 1]; window.observed.then(done);")
        .await;
    assert!(
        report.get("page_error").is_none(),
        "the page failed: {report}"
    );
    report
}

/// What each browser shows of the compression negotiated by default (`WebSocket.extensions`):
/// Chromium's offer (`permessage-deflate; client_max_window_bits`) lets the gateway choose both
/// windows, and Chromium shows the answer as it came; Firefox shows the extension's name only.
fn deflate(engine: Engine) -> &'static str {
    match engine {
        Engine::Chromium => {
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        }
        Engine::Firefox => "permessage-deflate",
    }
}

/// What the page sees of a session refused before the 101: an error, then close code 1006 (the
/// browser shows a page nothing of the HTTP refusal), never an open.
/// What the page reports of its echo session: a text and every byte value echoed, closed by
/// the page with 4000.
fn echo_case(engine: Engine, name: &str) -> Value {
    let bytes: Vec<u8> = (0..=255).collect();
    json!({
        "opened": true, "protocol": "", "errors": 0, "timed_out": false,
        "extensions": deflate(engine),
        "received": [{ "text": format!("echo: hello from {name}") }, { "binary": bytes }],
        "close": { "code": 4000, "reason": format!("bye from {name}"), "clean": true },
    })
}

fn refused() -> Value {
    json!({
        "opened": false, "protocol": null, "extensions": null, "received": [], "errors": 1,
        "close": { "code": 1006, "reason": "", "clean": false }, "timed_out": false,
    })
}

#[tokio::test]
async fn chromium_over_wss_echo_token_subprotocol_origin_and_refusals() {
    over_wss_echo_token_subprotocol_origin_and_refusals(Engine::Chromium).await;
}

#[tokio::test]
async fn firefox_over_wss_echo_token_subprotocol_origin_and_refusals() {
    over_wss_echo_token_subprotocol_origin_and_refusals(Engine::Firefox).await;
}

/// Over HTTP/1.1 `wss` (a listener with `http2 = false`, so that no browser can pick HTTP/2),
/// from a page on another (plain HTTP) origin.
async fn over_wss_echo_token_subprotocol_origin_and_refusals(engine: Engine) {
    let allowed = HttpServer::page(PAGE.to_string()).await;
    let elsewhere = HttpServer::page(PAGE.to_string()).await;
    let allowed_origin = format!("http://{}", allowed.addr);
    let gw = Gateway::start_tls_extra(
        "http2 = false",
        &config(&allowed_origin),
        write_ca_issued_pair_and_keys,
    )
    .await;
    let Some(browser) = Browser::start(engine, &gw.dir.path().join("certs/ca.pem")).await else {
        return;
    };
    let name = engine.name();
    let token = sign(Algorithm::ES256, Some("es"), &claims(json!({})));
    let gateway = format!("wss://127.0.0.1:{}", gw.port);

    // From the allowed origin: the echo, the token route with a token, and without one.
    let report = observe(
        &browser,
        &allowed,
        json!({
            "browser": name, "gateway": gateway, "token": token,
            "cases": ["echo", "compressed", "token", "no_token"],
        }),
    )
    .await;
    assert_eq!(report["origin"], allowed_origin.as_str(), "{report}");
    assert_eq!(report["page_protocol"], "http/1.1", "{report}");
    let cases = &report["cases"];
    assert_eq!(cases["echo"], echo_case(engine, name), "the echo session");
    assert_eq!(
        cases["token"],
        json!({
            "opened": true, "protocol": "chat.v1", "errors": 0, "timed_out": false,
            "extensions": deflate(engine),
            "received": [{ "text": format!("echo: hello from {name}") }],
            "close": { "code": 1000, "reason": "done", "clean": true },
        }),
        "the session with a token"
    );
    // Compressed both ways: the browser's messages inflated and answered compressed, as the
    // gateway's own counts of the plain bytes show.
    let compressed = &cases["compressed"];
    assert_eq!(compressed["extensions"], deflate(engine), "{compressed}");
    assert_eq!(compressed["close"]["code"], 1000, "{compressed}");
    let texts = compressed["received"].as_array().unwrap();
    assert_eq!(texts.len(), 2, "{compressed}");
    for t in texts {
        let t = t["text"].as_str().unwrap();
        assert!(
            t.starts_with("echo: [{\"type\":\"message\"") && t.len() > 2000,
            "{t}"
        );
    }
    let scrape = gw.admin_get("/metrics").await;
    let plain = |direction: &str| {
        let prefix = format!(
            "portcullis_message_plain_bytes_total{{direction=\"{direction}\",route=\"/ws/echo\"}} "
        );
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(plain("from_client") > 4000.0, "{scrape}");
    assert!(plain("to_client") > 4000.0, "{scrape}");
    assert_eq!(cases["no_token"], refused(), "the session without a token");
    // The page could not see why; the gateway says it was the missing token.
    gw.wait_metric(r#"portcullis_rejections_total{reason="auth_missing",route="/ws/chat"} 1"#)
        .await;

    // From another origin (another port), with a good token: refused for the origin.
    let other_origin = format!("http://{}", elsewhere.addr);
    let report = observe(
        &browser,
        &elsewhere,
        json!({ "browser": name, "gateway": gateway, "token": token, "cases": ["with_token"] }),
    )
    .await;
    assert_eq!(report["origin"], other_origin.as_str(), "{report}");
    assert_eq!(
        report["cases"]["with_token"],
        refused(),
        "the session from another origin"
    );
    let scrape = gw
        .wait_metric(r#"portcullis_rejections_total{reason="origin",route="/ws/chat"} 1"#)
        .await;
    // Exactly those two refusals: nothing else (a certificate or token problem) was refused.
    let refusals: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("portcullis_rejections_total{") && !l.ends_with(" 0"))
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    // Three sessions ended in the access log, and the token is in no line of it.
    let log = eventually(STEP, "three sessions in the access log", || async {
        let log = gw.log();
        done_or(log.matches("] session route=").count() == 3, log.clone()).map(|()| log)
    })
    .await;
    assert!(!log.contains(&token), "a token reached the log");
}

#[tokio::test]
async fn chromium_over_http2_echo_relay_token_and_refusal_on_the_page_connection() {
    over_http2_on_the_page_connection(Engine::Chromium).await;
}

#[tokio::test]
async fn firefox_over_http2_echo_relay_token_and_refusal_on_the_page_connection() {
    over_http2_on_the_page_connection(Engine::Firefox).await;
}

/// The page's script alone, to run in a page the gateway served itself.
fn page_script() -> &'static str {
    let start = PAGE.find("<script>").expect("the page's script") + "<script>".len();
    let end = PAGE.rfind("</script>").expect("the page's script end");
    &PAGE[start..end]
}

/// With the listener's default (HTTP/2 offered), the browser loads a page from the gateway
/// itself (the static `/` route, over HTTP/2), and that page's WebSockets — echo, relay, the
/// token in the subprotocol, and one refused for want of a token — ride RFC 8441 streams on
/// the same connection: the gateway counts one HTTP/2 connection, and logs and counts every
/// socket and the refusal as `h2`.
async fn over_http2_on_the_page_connection(engine: Engine) {
    let up = Upstream::echo().await;
    let routes = format!(
        "{}\n[[routes]]\npath = \"/ws/relay\"\nmode = \"relay\"\nupstreams = [\"{}\"]\n",
        token_route(),
        up.url("/")
    );
    let gw = Gateway::start_prepared(true, &routes, write_ca_issued_pair_and_keys).await;
    let Some(browser) = Browser::start(engine, &gw.dir.path().join("certs/ca.pem")).await else {
        return;
    };
    let name = engine.name();
    let token = sign(Algorithm::ES256, Some("es"), &claims(json!({})));
    let origin = format!("https://127.0.0.1:{}", gw.port);
    browser.goto(&format!("{origin}/")).await;
    let params = json!({
        "browser": name, "gateway": format!("wss://127.0.0.1:{}", gw.port), "token": token,
        "cases": ["echo", "relay", "token", "no_token"],
    });
    let script = format!(
        "window.portcullisParams = {params};\n{}\n\
         const done = arguments[arguments.length - 1]; window.observed.then(done);",
        page_script()
    );
    let report = browser.execute_async(&script).await;
    assert!(
        report.get("page_error").is_none(),
        "the page failed: {report}"
    );
    assert_eq!(report["origin"], origin.as_str(), "{report}");
    assert_eq!(
        report["page_protocol"], "h2",
        "the page did not come over HTTP/2: {report}"
    );
    let cases = &report["cases"];
    assert_eq!(cases["echo"], echo_case(engine, name), "the echo session");
    assert_eq!(cases["relay"]["opened"], true, "{report}");
    assert_eq!(
        cases["relay"]["received"],
        json!([{ "text": format!("hello from {name}") }]),
        "{report}"
    );
    assert_eq!(
        cases["relay"]["close"],
        json!({ "code": 1000, "reason": "done", "clean": true }),
        "{report}"
    );
    assert_eq!(cases["token"]["opened"], true, "{report}");
    assert_eq!(cases["token"]["protocol"], "chat.v1", "{report}");
    assert_eq!(
        cases["token"]["received"],
        json!([{ "text": format!("echo: hello from {name}") }]),
        "{report}"
    );
    assert_eq!(cases["token"]["close"]["code"], 1000, "{report}");
    assert_eq!(cases["no_token"], refused(), "the session without a token");

    // The gateway's side: one HTTP/2 connection carried the page and every socket.
    gw.wait_metric(r#"portcullis_rejections_total{reason="auth_missing",route="/ws/chat"} 1"#)
        .await;
    let scrape = gw
        .wait_metric(r#"portcullis_websockets_opened_total{protocol="h2"} 3"#)
        .await;
    assert!(
        scrape
            .lines()
            .any(|l| l == "portcullis_http2_connections_total 1"),
        "{scrape}"
    );
    assert!(
        !scrape.lines().any(|l| l
            .starts_with(r#"portcullis_websockets_opened_total{protocol="h1"}"#)
            && !l.ends_with(" 0")),
        "{scrape}"
    );
    let log = eventually(STEP, "three h2 sessions in the access log", || async {
        let log = gw.log();
        let sessions = log
            .lines()
            .filter(|l| l.contains("] session route="))
            .count();
        done_or(sessions == 3, log.clone()).map(|()| log)
    })
    .await;
    for line in log
        .lines()
        .filter(|l| l.contains("] session route=") || l.contains("] rejection route="))
    {
        assert!(line.contains("protocol=h2"), "{line}");
    }
    assert!(!log.contains(&token), "a token reached the log");
}

/// The token route of [`config`] without an origin allow-list (the page's origin is the
/// gateway's own, on a port known only once it runs).
fn token_route() -> String {
    format!(
        r#"
[[routes]]
path = "/ws/chat"
mode = "echo"
policy = "browser"

[policies.browser.jwt]
sources = ["subprotocol"]
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]
keys = [{{ kid = "es", alg = "ES256", pem_file = "keys/ec.pub.pem" }}]
"#
    )
}
