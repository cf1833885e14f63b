//! Reloading without dropping sockets: SIGHUP (or a file change) puts a new configuration in
//! force for new handshakes while open sockets keep the rules they were admitted under; an
//! invalid file keeps the old configuration, and so does one that is valid but fails to load
//! (writing nothing); connection caps and upstream health carry over; removed routes close their
//! sockets with 1001 after a grace period.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use crate::support::upstream::HeldPort;
use crate::support::*;

const OPEN: &str =
    "[[routes]]\npath = \"/ws/room\"\nmode = \"echo\"\nprefix = \"v1: \"\npolicy = \"room\"\n\
                    [policies.room]\n";
const LOCKED: &str =
    "[[routes]]\npath = \"/ws/room\"\nmode = \"echo\"\nprefix = \"v2: \"\npolicy = \"room\"\n\
                      [policies.room.origin]\nallow = [\"https://only.example\"]\n";

/// Replace the configuration (the same listener addresses, so a reload changes only routes and
/// policies) with a modification time that differs from the one before, which the file watcher
/// compares (file systems with coarse timestamps could give two quick writes the same one).
fn rewrite(gw: &Gateway, extra: &str, server: &str) {
    let path = gw.dir.path().join("portcullis.toml");
    let modified = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = modified(&path);
    std::fs::write(&path, config_text(true, &format!("{server}\n{extra}"))).unwrap();
    if modified(&path) == before {
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(before + Duration::from_secs(1)).unwrap();
    }
}

#[tokio::test]
async fn sighup_applies_a_new_policy_to_new_handshakes_only() {
    let gw = Gateway::start(OPEN).await;
    let mut old = gw.ws("/ws/room").await;
    assert_eq!(
        roundtrip(&mut old, Message::text("a")).await,
        Message::text("v1: a")
    );

    rewrite(&gw, LOCKED, "");
    gw.signal("HUP");
    gw.wait_log("reload: configuration from").await;

    // New handshakes follow the new policy...
    assert_eq!(gw.try_handshake("/ws/room", "").await.0, 403);
    let (status, _) = gw
        .try_handshake("/ws/room", "Origin: https://only.example\r\n")
        .await;
    assert_eq!(status, 101);
    // ...and the new route settings.
    let (mut new, _) = gw
        .ws_headers("/ws/room", &[("origin", "https://only.example")])
        .await;
    assert_eq!(
        roundtrip(&mut new, Message::text("b")).await,
        Message::text("v2: b")
    );
    // The old socket keeps the rules it was admitted under.
    assert_eq!(
        roundtrip(&mut old, Message::text("c")).await,
        Message::text("v1: c")
    );
    // Counted before the reload's log line is written.
    let metrics = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("portcullis_config_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_old_configuration() {
    let gw = Gateway::start(OPEN).await;
    let mut old = gw.ws("/ws/room").await;
    // One at a time: signals sent back to back may be delivered as one.
    for (i, broken) in [
        "[[routes]\nthis is not toml",
        "[[routes]]\npath = \"/ws/room\"\nmode = \"echo\"\npolicy = \"nope\"\n",
        "[limits]\nmax_mesage_bytes = 1\n",
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(gw.dir.path().join("portcullis.toml"), broken).unwrap();
        gw.signal("HUP");
        gw.wait_metric(&format!(
            "portcullis_config_reloads_total{{result=\"failure\"}} {}",
            i + 1
        ))
        .await;
    }
    // Logged right after the failure is counted.
    gw.wait_log("reload failed, the configuration in force stays")
        .await;
    // Still the old configuration: open, v1.
    assert_eq!(gw.try_handshake("/ws/room", "").await.0, 101);
    assert_eq!(
        roundtrip(&mut old, Message::text("x")).await,
        Message::text("v1: x")
    );
    let mut fresh = gw.ws("/ws/room").await;
    assert_eq!(
        roundtrip(&mut fresh, Message::text("y")).await,
        Message::text("v1: y")
    );
}

/// A relay route whose CA file is `ca_file`. The configuration names an existing file, so it
/// loads (`Config::load` checks only that the file is there); whether the file holds a
/// certificate is found out by the generation builder, when it builds the relays (the last
/// thing it builds).
fn secure_route(ca_file: &str) -> String {
    format!(
        "[[routes]]\npath = \"/secure\"\nmode = \"relay\"\n\
         upstreams = [\"wss://127.0.0.1:9/\"]\nupstream_ca_file = \"{ca_file}\"\n"
    )
}

/// What a CA file that is no certificate makes the builder say.
const NO_CERTIFICATE: &str = "upstream_ca_file: no certificate found in";

/// `/readyz` answering 503 because `path` has no healthy upstream (bounded: the listeners must
/// be running first).
async fn wait_not_ready_for(gw: &Gateway, path: &str) {
    let want = format!("no healthy upstream for {path}");
    eventually(STEP, format!("/readyz: {want}"), || async {
        let answer = gw.admin_get("/readyz").await;
        done_or(status_of(&answer) == 503 && answer.contains(&want), answer)
    })
    .await;
}

#[tokio::test]
async fn a_reload_puts_new_connection_caps_in_force_and_keeps_counting_open_sockets() {
    let room = |max_connections: usize, per_route: usize| {
        format!(
            "[limits]\nmax_connections = {max_connections}\n\
             [[routes]]\npath = \"/ws/room\"\nmode = \"echo\"\nprefix = \"v1: \"\npolicy = \"room\"\n\
             [policies.room.limits]\nconnections_per_route = {per_route}\n"
        )
    };
    let gw = Gateway::start(&room(100, 5)).await;
    gw.wait_metric("portcullis_connections_limit{route=\"all\"} 100")
        .await;
    gw.wait_metric("portcullis_connections_limit{route=\"/ws/room\"} 5")
        .await;
    let mut before = gw.ws("/ws/room").await;

    rewrite(&gw, &room(50, 1), "");
    gw.signal("HUP");
    gw.wait_metric("portcullis_connections_limit{route=\"all\"} 50")
        .await;
    gw.wait_metric("portcullis_connections_limit{route=\"/ws/room\"} 1")
        .await;
    // The socket admitted before the reload holds the route's one slot now...
    let (status, head) = gw.try_handshake("/ws/room", "").await;
    assert_eq!(status, 429, "{head}");
    assert!(
        head.contains("too many connections on this route"),
        "{head}"
    );
    assert_eq!(
        roundtrip(&mut before, Message::text("a")).await,
        Message::text("v1: a")
    );
    // ...and gives it back when it ends.
    before.close(None).await.unwrap();
    finish(&mut before).await;
    eventually(
        STEP,
        "a handshake admitted once the old socket ended",
        || async {
            let (status, head) = gw.try_handshake("/ws/room", "").await;
            done_or(status == 101, head)
        },
    )
    .await;
}

#[tokio::test]
async fn a_reload_failing_in_the_builder_keeps_upstream_health_and_all_else_in_force() {
    // An upstream that refuses connections: the first handshake takes it out of the rotation.
    let down = HeldPort::new();
    let svc = format!(
        "[[routes]]\npath = \"/svc\"\nmode = \"relay\"\nupstreams = [\"{}\"]\nunhealthy_for = \"1h\"\n",
        down.url("/")
    );
    let gw = Gateway::start(&format!("{OPEN}{svc}")).await;
    assert_eq!(gw.try_handshake("/svc", "").await.0, 502);
    let ejected = format!(
        "portcullis_upstream_healthy{{upstream=\"{}\"}} 0",
        down.url("/")
    );
    gw.wait_metric(&ejected).await;
    wait_not_ready_for(&gw, "/svc").await;

    // The same upstream, the room locked, and a route the builder cannot load.
    std::fs::write(gw.dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    rewrite(&gw, &format!("{LOCKED}{svc}{}", secure_route("ca.pem")), "");
    gw.signal("HUP");
    gw.wait_metric("portcullis_config_reloads_total{result=\"failure\"} 1")
        .await;
    gw.wait_log(NO_CERTIFICATE).await;
    // Nothing live changed: the upstream is still out of the rotation and reported down...
    let scrape = gw.admin_get("/metrics").await;
    assert!(scrape.lines().any(|l| l == ejected), "{scrape}");
    assert!(
        scrape
            .lines()
            .any(|l| l == "portcullis_config_reloads_total{result=\"success\"} 0"),
        "{scrape}"
    );
    let ready = gw.admin_get("/readyz").await;
    assert!(ready.contains("no healthy upstream for /svc"), "{ready}");
    // ...the room is open (the old policy and prefix) and the new route does not exist.
    let mut room = gw.ws("/ws/room").await;
    assert_eq!(
        roundtrip(&mut room, Message::text("x")).await,
        Message::text("v1: x")
    );
    assert_eq!(gw.try_handshake("/secure", "").await.0, 404);

    // A reload that succeeds with the upstream unchanged keeps its health too.
    rewrite(&gw, &format!("{LOCKED}{svc}"), "");
    gw.signal("HUP");
    gw.wait_metric("portcullis_config_reloads_total{result=\"success\"} 1")
        .await;
    assert_eq!(gw.try_handshake("/ws/room", "").await.0, 403);
    let scrape = gw.admin_get("/metrics").await;
    assert!(scrape.lines().any(|l| l == ejected), "{scrape}");
    let ready = gw.admin_get("/readyz").await;
    assert!(ready.contains("no healthy upstream for /svc"), "{ready}");
}

#[tokio::test]
async fn a_failed_reload_writes_no_development_certificate() {
    let gw = Gateway::start(OPEN).await;
    // The listener's pair moves to certs2/, to be generated; a relay route's CA file holds no
    // certificate, so the reload fails after the listener's certificates were dealt with.
    let ca = gw.dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let text = config_text(true, &format!("{OPEN}{}", secure_route("ca.pem")));
    std::fs::write(
        gw.dir.path().join("portcullis.toml"),
        text.replace("certs/", "certs2/"),
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_metric("portcullis_config_reloads_total{result=\"failure\"} 1")
        .await;
    gw.wait_log(NO_CERTIFICATE).await;
    let certs2 = gw.dir.path().join("certs2");
    assert!(
        !certs2.exists(),
        "a failed reload wrote {}",
        certs2.display()
    );
    try_tls_connect(gw.port, &gw.cert, "localhost")
        .await
        .expect("the certificate in force is still served");

    // With a CA file that holds a certificate the same configuration loads, and the pair it
    // asks for is generated and served.
    std::fs::write(&ca, TestCa::new("upstream CA").cert_pem).unwrap();
    gw.signal("HUP");
    gw.wait_metric("portcullis_config_reloads_total{result=\"success\"} 1")
        .await;
    let new_cert = certs2.join("cert.pem");
    assert!(new_cert.exists() && certs2.join("key.pem").exists());
    try_tls_connect(gw.port, &new_cert, "localhost")
        .await
        .expect("the generated certificate is served");
    assert!(
        try_tls_connect(gw.port, &gw.cert, "localhost")
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
}

#[tokio::test]
async fn removed_routes_close_their_sockets_after_the_grace_period() {
    let gw = Gateway::start(OPEN).await;
    let mut doomed = gw.ws("/ws/room").await;
    let mut kept = gw.ws("/ws/echo").await;
    rewrite(&gw, "", "[server]\nroute_removal_grace = \"1s\"\n");
    let reloaded = std::time::Instant::now();
    gw.signal("HUP");
    gw.wait_log("reload: configuration from").await;
    // Gone for new handshakes at once...
    assert_eq!(gw.try_handshake("/ws/room", "").await.0, 404);
    // ...but the open socket lives through the grace period, then gets 1001.
    assert_eq!(
        roundtrip(&mut doomed, Message::text("still")).await,
        Message::text("v1: still")
    );
    let (code, reason) = expect_close(&mut doomed).await;
    assert_eq!((code, reason.as_str()), (1001, "route removed"));
    assert!(
        reloaded.elapsed() >= Duration::from_millis(900),
        "{:?}",
        reloaded.elapsed()
    );
    assert_eq!(
        roundtrip(&mut kept, Message::text("ok")).await,
        Message::text("echo: ok")
    );
}

#[tokio::test]
async fn file_changes_reload_when_watched() {
    let gw = Gateway::start(&format!("[server]\nwatch_interval = \"100ms\"\n{OPEN}")).await;
    let mut old = gw.ws("/ws/room").await;
    rewrite(&gw, LOCKED, "[server]\nwatch_interval = \"100ms\"\n");
    gw.wait_log("reload: configuration from").await;
    assert_eq!(gw.try_handshake("/ws/room", "").await.0, 403);
    assert_eq!(
        roundtrip(&mut old, Message::text("z")).await,
        Message::text("v1: z")
    );
}
