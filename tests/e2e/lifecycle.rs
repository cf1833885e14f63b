//! Start-up on the embedded default, and the graceful stop: SIGTERM/SIGINT stop accepting, send
//! close 1001 to every open socket, and exit once they are gone (within the grace period).

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// The README's first command runs exactly this: no arguments, default ports 8443 and 9090.
#[tokio::test]
async fn embedded_default_starts_generates_a_cert_and_echoes() {
    let dir = tempfile::tempdir().unwrap();
    for port in [8443, 9090] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is busy: the default-config test needs it free"
        );
    }
    let cert = dir.path().join("certs/dev/cert.pem");
    let mut gw = Gateway::run(dir, &[], cert, true).await;
    assert_eq!((gw.port, gw.admin_port), (8443, 9090));
    assert!(gw.cert.exists());
    assert!(gw.dir.path().join("certs/dev/key.pem").exists());
    assert!(
        gw.log()
            .contains("generated a self-signed development certificate"),
        "{}",
        gw.log()
    );
    let mut ws = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("default")).await,
        Message::text("echo: default")
    );
    let answer = gw
        .raw(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert!(answer.ends_with("Hello, World!"), "{answer}");
    let health = gw.admin_get("/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // The admin listener is not on the public port.
    let answer = gw
        .raw(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status_of(&answer), 404);
    drop(ws);
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(15)).await;
}

async fn drain_with(sig: &str) {
    let mut gw = Gateway::start("[server]\nshutdown_grace = \"5s\"\ndrain_window = \"0s\"\n").await;
    let mut a = gw.ws("/ws/echo").await;
    let mut b = gw.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut a, Message::text("1")).await,
        Message::text("echo: 1")
    );
    gw.signal(sig);
    assert_eq!(
        expect_close(&mut a).await,
        (1001, "server shutting down".to_string())
    );
    assert_eq!(expect_close(&mut b).await.0, 1001);
    // tungstenite replies to the close for us; then the gateway has nothing open and exits,
    // well before the grace period.
    let _ = tokio::time::timeout(STEP, futures_util::StreamExt::next(&mut a)).await;
    let _ = tokio::time::timeout(STEP, futures_util::StreamExt::next(&mut b)).await;
    let took = gw.wait_exit(Duration::from_secs(8)).await;
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    let log = gw.log();
    assert!(log.contains("all sockets closed"), "{log}");
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .is_err());
}

#[tokio::test]
async fn sigterm_drains_with_1001() {
    drain_with("TERM").await;
}

#[tokio::test]
async fn sigint_drains_with_1001() {
    drain_with("INT").await;
}

/// A client that never answers our close does not hold the process past the grace period.
#[tokio::test]
async fn grace_period_bounds_the_drain() {
    let mut gw =
        Gateway::start("[server]\nshutdown_grace = \"1s\"\n[limits]\nclose_timeout = \"30s\"\n")
            .await;
    // A raw client: completes the upgrade, then never reads or answers.
    let (_, head, _raw) = gw.handshake_open("/ws/echo", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    gw.signal("TERM");
    let took = gw.wait_exit(Duration::from_secs(8)).await;
    assert!(
        took >= Duration::from_millis(900),
        "exited before the grace period: {took:?}"
    );
    assert!(gw.log().contains("grace period over"), "{}", gw.log());
}

/// The 1001 closes of a drain are spread over `drain_window`, so clients do not reconnect in a
/// stampede; all of them still come within the window.
#[tokio::test]
async fn drain_spreads_closes_over_the_window() {
    let mut gw = Gateway::start("[server]\nshutdown_grace = \"6s\"\ndrain_window = \"2s\"\n").await;
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(gw.ws("/ws/echo").await);
    }
    let signalled = std::time::Instant::now();
    gw.signal("TERM");
    let arrivals = futures_util::future::join_all(sockets.iter_mut().map(|ws| async move {
        let close = expect_close(ws).await;
        (close, signalled.elapsed())
    }))
    .await;
    let times: Vec<Duration> = arrivals.iter().map(|(_, t)| *t).collect();
    for ((code, reason), t) in &arrivals {
        assert_eq!((*code, reason.as_str()), (1001, "server shutting down"));
        assert!(*t < Duration::from_millis(2600), "{t:?}");
    }
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(
        spread > Duration::from_millis(200),
        "closes not spread: {times:?}"
    );
    drop(sockets);
    gw.wait_exit(Duration::from_secs(8)).await;
}

/// Start a new process with `server` that takes over `old`'s listening sockets (`--upgrade`),
/// and send `old` SIGQUIT. The new process and its log file.
async fn upgrade(old: &Gateway, server: &str) -> (Reaper, std::path::PathBuf) {
    // The sockets are handed over by address: the new process names the concrete ports the
    // old one was given for its port-0 listeners.
    let new_config = config_text_at(&old.address(), &old.admin_address(), true, "", server);
    std::fs::write(old.dir.path().join("new.toml"), new_config).unwrap();
    let new = Reaper(spawn_logged(
        &["--upgrade", "--config", "new.toml"],
        old.dir.path(),
        "new.log",
    ));
    let new_log = old.dir.path().join("new.log");
    wait_file_log(&new_log, "waiting for the running gateway").await;
    old.signal("QUIT");
    (new, new_log)
}

/// A deploy without cutting sockets: a new process takes the listening sockets (`--upgrade`),
/// the old one gets SIGQUIT, hands them over, then drains its own sockets with 1001 and exits.
/// New connections are served throughout.
#[tokio::test]
async fn zero_downtime_upgrade_hands_over_the_listeners() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("upgrade.sock");
    let server = format!(
        "[server]\nupgrade_sock = \"{}\"\ndrain_window = \"0s\"\nshutdown_grace = \"5s\"\n",
        sock.display()
    );
    let mut old = Gateway::start(&server).await;
    let mut before = old.ws("/ws/echo").await;
    let (new, new_log) = upgrade(&old, &server).await;
    // While the old process hands over and drains, new connections keep being served.
    let mut during = old.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut during, Message::text("d")).await,
        Message::text("echo: d")
    );
    // The old process's sockets get 1001, then it exits.
    assert_eq!(expect_close(&mut before).await.0, 1001);
    drop(during);
    old.wait_exit(Duration::from_secs(15)).await;
    // The new process alone serves now.
    let mut after = old.ws("/ws/echo").await;
    assert_eq!(
        roundtrip(&mut after, Message::text("a")).await,
        Message::text("echo: a")
    );
    drop(after);
    // The new process writes the session's access-log line when the session ends.
    wait_file_log(&new_log, "route=/ws/echo").await;
    drop(new);
}

/// With a listening socket per thread (`work_stealing = false`), an upgrade to fewer threads
/// closes the sockets it has no thread for: the kernel spreads connections over every socket
/// of the port, so one left open without a thread would leave about half of them unanswered.
#[tokio::test]
async fn an_upgrade_to_fewer_threads_leaves_no_socket_without_a_thread() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("upgrade.sock");
    let server = |threads: usize| {
        format!(
            "[server]\nthreads = {threads}\nwork_stealing = false\nupgrade_sock = \"{}\"\n\
             drain_window = \"0s\"\nshutdown_grace = \"2s\"\n",
            sock.display()
        )
    };
    // 16 connections from as many source ports: on two sockets, all 16 land on the same one
    // once in 32,768 runs.
    async fn every_connection_served(gw: &Gateway) {
        for i in 0..16u8 {
            let mut ws = gw.ws("/ws/echo").await;
            let m = Message::binary(vec![i]);
            assert_eq!(roundtrip(&mut ws, m.clone()).await, m);
        }
    }
    let mut old = Gateway::start(&server(2)).await;
    every_connection_served(&old).await;
    let (new, _) = upgrade(&old, &server(1)).await;
    old.wait_exit(Duration::from_secs(15)).await;
    every_connection_served(&old).await;
    drop(new);
}
