//! permessage-deflate (RFC 7692) terminated at the gateway, with real clients: Python's
//! `websockets` (compression on, as browsers have it) through the echo route and through relays
//! to a Python upstream with and without compression; inflation bombs end with 1009 while the
//! gateway's memory stays within the limit; an upstream that answers with an extension the
//! gateway never offered is refused with 502.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::upstream::*;
use crate::support::*;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/clients/python_deflate.py"
);

/// A Python `websockets` echo upstream, with (`"deflate"`) or without (`"plain"`) compression,
/// on a free port; it stops when dropped.
struct PythonUpstream {
    port: u16,
    _child: Reaper,
}

impl PythonUpstream {
    fn start(mode: &str) -> PythonUpstream {
        let mut child = Command::new("python3")
            .args([SCRIPT, "server", mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let child = Reaper(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the Python upstream prints its port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port: {line:?}"));
        PythonUpstream {
            port,
            _child: child,
        }
    }
}

/// Peak RSS of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn python_client(gw: &Gateway, path: &str, mode: &str) -> String {
    let mut python = Command::new("python3");
    python.args([
        SCRIPT,
        "client",
        &gw.url(path),
        gw.cert.to_str().unwrap(),
        mode,
    ]);
    let out = output_within_async(python, b"", Duration::from_secs(90)).await;
    let text = text_of(&out);
    assert!(out.status.success(), "python client failed:\n{text}");
    assert!(text.contains("ALL OK"), "{text}");
    text
}

/// The sum of a metric's samples whose labels contain every one of `labels`.
fn sum_of(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn python_client_compresses_through_the_echo_and_bombs_end_with_1009() {
    let gw = Gateway::start("").await;
    let before = peak_rss_kib(gw.pid());
    python_client(&gw, "/ws/echo", "echo").await;
    let grown = peak_rss_kib(gw.pid()).saturating_sub(before);
    // Two bombs of 16 MiB each inflate no further than the 1 MiB limit.
    assert!(grown < 8 * 1024, "peak RSS grew by {grown} KiB");
    let line = gw
        .wait_log_line("a compressed session's access line", |l| {
            l.contains("route=/ws/echo") && l.contains("extension=")
        })
        .await;
    assert!(
        line.contains("server_max_window_bits=12; client_max_window_bits=12"),
        "{line}"
    );
    // Bytes on the wire against the messages' own size: the chat messages shrink.
    let metrics = gw.admin_get("/metrics").await;
    let wire = sum_of(
        &metrics,
        "portcullis_message_bytes_total",
        &["/ws/echo", "direction=\"from_client\"", "class=\"text\""],
    );
    let plain = sum_of(
        &metrics,
        "portcullis_message_plain_bytes_total",
        &["/ws/echo", "direction=\"from_client\""],
    );
    assert!(
        plain > 30_000.0 && wire < plain * 0.3,
        "wire {wire}, plain {plain}"
    );
}

#[tokio::test]
async fn python_client_through_relays_with_and_without_upstream_compression() {
    let compressing = PythonUpstream::start("deflate");
    let plain = PythonUpstream::start("plain");
    let routes = format!(
        "[[routes]]\npath = \"/z\"\nmode = \"relay\"\nupstreams = [\"ws://127.0.0.1:{}/\"]\n\
         [[routes]]\npath = \"/p\"\nmode = \"relay\"\nupstreams = [\"ws://127.0.0.1:{}/\"]\n",
        compressing.port, plain.port
    );
    let gw = Gateway::start(&routes).await;
    let text = python_client(&gw, "/z", "relay").await;
    assert!(
        text.contains("upstream extension: permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
        "{text}"
    );
    let text = python_client(&gw, "/p", "relay").await;
    assert!(text.contains("upstream extension: none"), "{text}");
}

#[tokio::test]
async fn an_upstream_extension_never_offered_is_502_and_no_subprotocol_is_allowed() {
    let up = Upstream::start(
        Handshake {
            answer_headers: vec![("sec-websocket-extensions", "permessage-deflate")],
            ..Handshake::default()
        },
        echo(),
    )
    .await;
    let no_protocol = Upstream::echo().await;
    let routes = format!(
        "[[routes]]\npath = \"/off\"\nmode = \"relay\"\nupstreams = [\"{}\"]\n[routes.compression]\nenabled = false\n\
         [[routes]]\npath = \"/np\"\nmode = \"relay\"\nupstreams = [\"{}\"]\n",
        up.url("/"),
        no_protocol.url("/")
    );
    let gw = Gateway::start(&routes).await;
    // Compression off on the route: the gateway offered nothing, the upstream agreed to
    // something anyway.
    let answer = gw.raw(handshake("/off", "").as_bytes()).await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    gw.wait_metric(r#"portcullis_rejections_total{reason="upstream_unavailable",route="/off"} 1"#)
        .await;
    // The client offers a subprotocol, the upstream selects none: a 101 without one.
    let (status, answer) = gw
        .try_handshake("/np", "Sec-WebSocket-Protocol: chat.v1\r\n")
        .await;
    assert_eq!(status, 101, "{answer}");
    assert!(
        !answer
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol"),
        "{answer}"
    );
}
