//! Metrics, access log and the admin listener, end to end: scripted traffic against the real
//! gateway, then `/metrics` scraped over HTTP, parsed, and checked for exact values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use portcullis::obs::metrics::defs;

use crate::support::*;

/// One scrape: `name{labels}` → value, plus the histograms' sample counts.
#[derive(Debug)]
struct Scrape {
    text: String,
    samples: Vec<prometheus_parse::Sample>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        check_text_format(&text);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let samples = prometheus_parse::Scrape::parse(lines)
            .expect("prometheus-parse reads the scrape")
            .samples;
        Scrape { text, samples }
    }

    /// The value of the sample `name` whose labels are exactly `labels` (0 when absent, as
    /// Prometheus treats a missing counter); panics on a histogram.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let found: Vec<_> = self
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| {
                let have: BTreeMap<&str, &str> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                have == want
            })
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} matched {found:?}");
        match found.first().map(|s| &s.value) {
            None => 0.0,
            Some(prometheus_parse::Value::Counter(v))
            | Some(prometheus_parse::Value::Gauge(v))
            | Some(prometheus_parse::Value::Untyped(v)) => *v,
            Some(other) => panic!("{name} is not a counter or gauge: {other:?}"),
        }
    }

    /// The observation count of a histogram series (its `_count` sample).
    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut sorted: Vec<_> = labels.to_vec();
        sorted.sort();
        let rendered: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let prefix = format!("{name}_count{{{}}} ", rendered.join(","));
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    /// The sum over every series of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => 0.0,
            })
            .sum()
    }
}

/// A strict check of the text exposition format (prometheus-parse skips lines it cannot read,
/// so it proves little by itself): every line is a HELP, a TYPE or a sample; each family is
/// declared once, HELP then TYPE, before its samples; names, labels and values are well formed.
fn check_text_format(text: &str) {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(name_ok(name) && !help.is_empty(), "bad HELP line {line:?}");
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE line {line:?}"
            );
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(
                declared
                    .insert(name.to_string(), kind.to_string())
                    .is_none(),
                "TYPE twice for {name}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample: series value");
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, Some(l.strip_suffix('}').expect("labels end with }"))),
            None => (series, None),
        };
        assert!(name_ok(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| declared.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(
            declared.contains_key(family),
            "sample before TYPE: {line:?}"
        );
        if let Some(labels) = labels {
            // label="value" pairs; values here never contain quotes or commas.
            for pair in labels.split(',') {
                let (k, v) = pair.split_once('=').expect("label=value");
                assert!(name_ok(k), "bad label name in {line:?}");
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "unquoted label value in {line:?}"
                );
            }
        }
    }
}

async fn scrape(gw: &Gateway) -> Scrape {
    scrape_with(gw, "").await
}

async fn scrape_with(gw: &Gateway, headers: &str) -> Scrape {
    let (status, body) = gw.admin_request("/metrics", headers).await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body)
}

/// Scrape until `ready` holds (bounded): sessions end on the gateway's side a little after the
/// client has seen the close.
async fn scrape_until(gw: &Gateway, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    eventually(STEP, what, || async {
        let s = scrape(gw).await;
        if ready(&s) {
            Ok(s)
        } else {
            Err(s.text)
        }
    })
    .await
}

async fn client_close(ws: &mut Wss, code: u16, reason: &str) {
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    })))
    .await
    .unwrap();
    assert_eq!(expect_close(ws).await, (code, reason.to_string()));
    finish(ws).await;
}

const ECHO: &str = "/ws/echo";
const SMALL: &str = "/ws/small";
const SMALL_ROUTE: &str =
    "[[routes]]\npath = \"/ws/small\"\nmode = \"echo\"\nprefix = \"\"\nmax_message_bytes = 10\n";
const SECRET: &str = "SECRET-t0ken-value";

/// Per-thread runtimes (`work_stealing = false`) on two threads: sockets opened together are all
/// served, and the message counters (per thread, summed at each scrape) come out exact.
#[tokio::test]
async fn per_thread_runtimes_serve_every_socket_and_count_exactly() {
    let gw = Gateway::start("[server]\nthreads = 2\nwork_stealing = false\n").await;
    gw.wait_log("2 threads").await;
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(gw.ws(ECHO).await);
    }
    let mut sessions = tokio::task::JoinSet::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        sessions.spawn(async move {
            for _ in 0..5 {
                let message = Message::binary(vec![i as u8; 3]);
                assert_eq!(roundtrip(&mut ws, message.clone()).await, message);
            }
            ws
        });
    }
    let mut done = Vec::new();
    while let Some(ws) = sessions.join_next().await {
        done.push(ws.expect("a session's task"));
    }
    let count = |m: &Scrape, name: &str, direction: &str| {
        m.get(
            name,
            &[
                ("route", ECHO),
                ("direction", direction),
                ("class", "binary"),
            ],
        )
    };
    let m = scrape_until(&gw, "40 binary messages each way", |m| {
        count(m, "portcullis_messages_total", "to_client") >= 40.0
    })
    .await;
    for direction in ["from_client", "to_client"] {
        assert_eq!(count(&m, "portcullis_messages_total", direction), 40.0);
        assert_eq!(
            count(&m, "portcullis_message_bytes_total", direction),
            120.0
        );
    }
    // A later scrape adds nothing that did not happen.
    let again = scrape(&gw).await;
    assert_eq!(
        count(&again, "portcullis_messages_total", "from_client"),
        40.0
    );
    drop(done);
}

#[tokio::test]
async fn scripted_traffic_gives_exact_counts() {
    let gw = Gateway::start(&format!(
        "{SMALL_ROUTE}\n[limits]\nhead_timeout = \"500ms\"\n"
    ))
    .await;
    // The test support's readiness probe (connect, then close without TLS) is one failed TLS
    // handshake; pingora reports it asynchronously.
    let before = scrape_until(&gw, "the readiness probe's TLS failure", |m| {
        m.get("portcullis_tls_handshake_failures_total", &[]) >= 1.0
    })
    .await;
    // Configured routes start at zero.
    assert_eq!(
        before.get(
            "portcullis_handshakes_total",
            &[("route", ECHO), ("result", "accepted")]
        ),
        0.0
    );
    assert!(before
        .text
        .contains("portcullis_rejections_total{reason=\"origin\",route=\"/ws/echo\"} 0\n"));
    assert_eq!(
        before.get("portcullis_connections_accepted_total", &[]),
        0.0
    );
    let tls_failures_before = before.get("portcullis_tls_handshake_failures_total", &[]);

    // Session A: text, binary, a ping, then the client closes with 1000.
    let mut a = gw.ws(ECHO).await;
    assert_eq!(
        roundtrip(&mut a, Message::text("hello")).await,
        Message::text("echo: hello")
    );
    assert_eq!(
        roundtrip(&mut a, Message::binary(vec![1u8, 2, 3])).await,
        Message::binary(vec![1u8, 2, 3])
    );
    a.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    assert_eq!(
        next_frame(&mut a).await,
        Message::Pong(b"p".to_vec().into())
    );
    client_close(&mut a, 1000, "bye").await;

    // Session B: the client closes with an application code.
    let mut b = gw.ws(ECHO).await;
    client_close(&mut b, 4000, "app").await;

    // Session C: a message over the route's limit, closed by the gateway with 1009.
    let mut c = gw.ws(SMALL).await;
    c.send(Message::text("0123456789X")).await.unwrap();
    let (code, reason) = expect_close(&mut c).await;
    assert_eq!(code, 1009);
    finish(&mut c).await;

    // Session S: a token in the query string (which must never be logged).
    let mut s = gw.ws(&format!("{ECHO}?access_token={SECRET}")).await;
    client_close(&mut s, 1000, "").await;

    // Rejections, one per reason the gateway knows today.
    let plain = format!(
        "GET {ECHO}?access_token={SECRET} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(status_of(&gw.raw(plain.as_bytes()).await), 426);
    let no_key = handshake(ECHO, "").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(status_of(&gw.raw(no_key.as_bytes()).await), 400);
    assert_eq!(
        status_of(&gw.raw(handshake("/nowhere", "").as_bytes()).await),
        404
    );
    assert_eq!(status_of(&gw.raw(b"\x01\x02 not http\r\n\r\n").await), 400);
    let huge = format!(
        "GET {ECHO} HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16_500)
    );
    assert_eq!(status_of(&gw.raw(huge.as_bytes()).await), 431);
    assert_eq!(status_of(&gw.raw(b"").await), 408); // says nothing: head timeout
                                                    // A plain request to an unknown path is a 404 but not a refused handshake.
    let plain_404 = "GET /nowhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&gw.raw(plain_404.as_bytes()).await), 404);

    // A TLS handshake that fails: plain bytes to the TLS port.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(STEP, tcp.read_to_end(&mut sink)).await;

    let m = scrape_until(&gw, "four sessions closed and a TLS failure", |m| {
        m.sum("portcullis_closes_total", &[]) == 4.0
            && m.sum("portcullis_connections_open", &[]) == 0.0
            && m.get("portcullis_tls_handshake_failures_total", &[]) > tls_failures_before
    })
    .await;
    let get = |name: &str, labels: &[(&str, &str)]| m.get(name, labels);

    // Connections: 4 WebSocket sessions + 7 plain requests over TLS; not the failed TLS one.
    assert_eq!(get("portcullis_connections_accepted_total", &[]), 11.0);
    assert_eq!(
        get("portcullis_tls_handshake_failures_total", &[]),
        tls_failures_before + 1.0
    );
    assert_eq!(get("portcullis_connections_open", &[("route", ECHO)]), 0.0);
    assert_eq!(get("portcullis_connections_open", &[("route", SMALL)]), 0.0);

    // Handshakes by result, and the rejections by reason.
    let hs = |route, result| {
        get(
            "portcullis_handshakes_total",
            &[("route", route), ("result", result)],
        )
    };
    assert_eq!(hs(ECHO, "accepted"), 3.0);
    assert_eq!(hs(SMALL, "accepted"), 1.0);
    assert_eq!(hs(ECHO, "rejected"), 2.0);
    assert_eq!(hs("none", "rejected"), 4.0);
    assert_eq!(hs(ECHO, "failed"), 0.0);
    let rej = |route, reason| {
        get(
            "portcullis_rejections_total",
            &[("route", route), ("reason", reason)],
        )
    };
    assert_eq!(rej(ECHO, "upgrade_required"), 1.0);
    assert_eq!(rej(ECHO, "bad_request"), 1.0);
    assert_eq!(rej("none", "no_route"), 1.0);
    assert_eq!(rej("none", "bad_request"), 1.0);
    assert_eq!(rej("none", "head_too_large"), 1.0);
    assert_eq!(rej("none", "head_timeout"), 1.0);
    for reason in [
        "origin",
        "auth_missing",
        "auth_invalid",
        "auth_expired",
        "forbidden",
        "rate_limited",
        "conn_limit",
        "upstream_unavailable",
        "shutting_down",
    ] {
        assert_eq!(rej(ECHO, reason), 0.0, "{reason}");
    }
    assert_eq!(m.sum("portcullis_rejections_total", &[]), 6.0);
    // Every rejection is a rejected handshake.
    assert_eq!(
        m.sum("portcullis_rejections_total", &[]),
        m.sum("portcullis_handshakes_total", &[("result", "rejected")])
    );
    let hd = "portcullis_handshake_duration_seconds";
    assert_eq!(
        m.histogram_count(hd, &[("route", ECHO), ("result", "accepted")]),
        3.0
    );
    assert_eq!(
        m.histogram_count(hd, &[("route", ECHO), ("result", "rejected")]),
        2.0
    );
    assert_eq!(
        m.histogram_count(hd, &[("route", "none"), ("result", "rejected")]),
        4.0
    );

    // Messages and bytes, by direction and class.
    let msg = |route, dir, class| {
        get(
            "portcullis_messages_total",
            &[("route", route), ("direction", dir), ("class", class)],
        )
    };
    let bytes = |route, dir, class| {
        get(
            "portcullis_message_bytes_total",
            &[("route", route), ("direction", dir), ("class", class)],
        )
    };
    assert_eq!(msg(ECHO, "from_client", "text"), 1.0);
    assert_eq!(bytes(ECHO, "from_client", "text"), 5.0);
    assert_eq!(msg(ECHO, "to_client", "text"), 1.0);
    assert_eq!(bytes(ECHO, "to_client", "text"), 11.0); // "echo: hello"
    assert_eq!(msg(ECHO, "from_client", "binary"), 1.0);
    assert_eq!(bytes(ECHO, "from_client", "binary"), 3.0);
    assert_eq!(msg(ECHO, "to_client", "binary"), 1.0);
    assert_eq!(bytes(ECHO, "to_client", "binary"), 3.0);
    // From the client: a ping ("p") and three closes (1000 "bye", 4000 "app", 1000 "").
    assert_eq!(msg(ECHO, "from_client", "control"), 4.0);
    assert_eq!(
        bytes(ECHO, "from_client", "control"),
        (1 + 5 + 5 + 2) as f64
    );
    // To the client: the three close replies (pongs sent by tungstenite are not counted).
    assert_eq!(msg(ECHO, "to_client", "control"), 3.0);
    assert_eq!(bytes(ECHO, "to_client", "control"), (5 + 5 + 2) as f64);
    // The oversized message is refused before delivery: only our close frame counts.
    assert_eq!(msg(SMALL, "from_client", "text"), 0.0);
    assert_eq!(msg(SMALL, "to_client", "control"), 1.0);
    assert_eq!(
        bytes(SMALL, "to_client", "control"),
        (2 + reason.len()) as f64
    );
    assert_eq!(
        m.sum(
            "portcullis_messages_total",
            &[("direction", "from_upstream")]
        ),
        0.0
    );

    // Closes by code and initiator; client-chosen codes are bucketed.
    let closes = |route, code, who| {
        get(
            "portcullis_closes_total",
            &[("route", route), ("code", code), ("initiator", who)],
        )
    };
    assert_eq!(closes(ECHO, "1000", "client"), 2.0);
    assert_eq!(closes(ECHO, "4xxx", "client"), 1.0);
    assert_eq!(closes(SMALL, "1009", "gateway"), 1.0);
    assert!(!m.text.contains("code=\"4000\""));
    let cd = "portcullis_connection_duration_seconds";
    assert_eq!(m.histogram_count(cd, &[("route", ECHO)]), 3.0);
    assert_eq!(m.histogram_count(cd, &[("route", SMALL)]), 1.0);

    assert_eq!(
        get(
            "portcullis_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // Labels are low-cardinality: no client address, no raw request target.
    assert!(!m.text.contains("127.0.0.1"), "{}", m.text);
    assert!(!m.text.contains("/nowhere") && !m.text.contains("access_token"));

    // The access log: one line per session and per rejection, never the token. A session's
    // line is written after its close is counted: wait for the lines.
    let log = eventually(STEP, "4 session and 6 rejection lines", || async {
        let log = gw.log();
        let count = |kind: &str| {
            log.lines()
                .filter(|l| l.contains(" access] ") && l.contains(kind))
                .count()
        };
        let all_there = count("] session ") >= 4 && count("] rejection ") >= 6;
        done_or(all_there, log.clone()).map(|()| log)
    })
    .await;
    assert!(
        !log.contains(SECRET),
        "the token leaked into the log:\n{log}"
    );
    let access: Vec<&str> = log.lines().filter(|l| l.contains(" access] ")).collect();
    let sessions: Vec<&&str> = access.iter().filter(|l| l.contains("] session ")).collect();
    let rejections: Vec<&&str> = access
        .iter()
        .filter(|l| l.contains("] rejection "))
        .collect();
    assert_eq!(sessions.len(), 4, "{log}");
    assert_eq!(rejections.len(), 6, "{log}");
    assert!(
        sessions.iter().any(|l| l.contains("session route=/ws/echo client=127.0.0.1 result=closed close_code=1000 initiator=client duration_s=")
            && l.contains(" messages_in=2 messages_out=2 bytes_in=8 bytes_out=14")),
        "{log}"
    );
    assert!(sessions.iter().any(|l| l.contains(
        "route=/ws/echo client=127.0.0.1 result=closed close_code=4000 initiator=client"
    )));
    assert!(sessions.iter().any(|l| l.contains(
        "route=/ws/small client=127.0.0.1 result=closed close_code=1009 initiator=gateway"
    )));
    for (route, reason, status) in [
        (ECHO, "upgrade_required", 426),
        (ECHO, "bad_request", 400),
        ("none", "no_route", 404),
        ("none", "bad_request", 400),
        ("none", "head_too_large", 431),
        ("none", "head_timeout", 408),
    ] {
        let want = format!("rejection route={route} client=127.0.0.1 result=rejected reason={reason} status={status} protocol=h1");
        assert!(
            rejections.iter().any(|l| l.ends_with(&want)),
            "no {want:?} in\n{log}"
        );
    }
}

#[tokio::test]
async fn json_access_log_lines() {
    let gw = Gateway::start("[server]\nlog_format = \"json\"\n").await;
    let opened = Instant::now();
    let mut ws = gw.ws(&format!("{ECHO}?access_token={SECRET}")).await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("hi")).await,
        Message::text("echo: hi")
    );
    // The test: the session stays open this long, so its logged duration is at least this.
    const HELD: Duration = Duration::from_millis(300);
    tokio::time::sleep(HELD).await;
    client_close(&mut ws, 4001, "done").await;
    let plain = format!("GET {ECHO}?access_token={SECRET} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&gw.raw(plain.as_bytes()).await), 426);
    scrape_until(&gw, "the session's end", |m| {
        m.sum("portcullis_closes_total", &[]) == 1.0
    })
    .await;
    // Both access-log lines are written by now or soon (the session's after its close counts).
    let log = eventually(STEP, "a session and a rejection line", || async {
        let log = gw.log();
        let events: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let has = |event: &str| events.iter().any(|v| v["event"] == event);
        done_or(has("session") && has("rejection"), log.clone()).map(|()| log)
    })
    .await;
    // The session began after `opened` and ended before its line was seen.
    let within = opened.elapsed();

    assert!(
        !log.contains(SECRET),
        "the token leaked into the log:\n{log}"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    // Every line is JSON, the process's own lines too.
    assert!(lines
        .iter()
        .any(|v| v["target"] == "portcullis::lifecycle::server" && v["msg"].is_string()));
    let session = lines
        .iter()
        .find(|v| v["event"] == "session")
        .expect("a session line");
    assert_eq!(session["target"], "access");
    assert_eq!(session["level"], "INFO");
    assert!(session["ts"].is_string());
    assert_eq!(session["route"], ECHO);
    assert_eq!(session["client"], "127.0.0.1");
    assert_eq!(session["result"], "closed");
    assert_eq!(session["close_code"], 4001);
    assert_eq!(session["initiator"], "client");
    let duration = session["duration_s"].as_f64().unwrap();
    // duration_s is rounded to the millisecond.
    assert!(
        duration >= HELD.as_secs_f64() && duration <= within.as_secs_f64() + 0.001,
        "duration_s {duration} is not within [{HELD:?}, {within:?}]"
    );
    assert_eq!(session["messages_in"], 1);
    assert_eq!(session["messages_out"], 1);
    assert_eq!(session["bytes_in"], 2);
    assert_eq!(session["bytes_out"], 8);
    let rejection = lines
        .iter()
        .find(|v| v["event"] == "rejection")
        .expect("a rejection line");
    assert_eq!(rejection["route"], ECHO);
    assert_eq!(rejection["reason"], "upgrade_required");
    assert_eq!(rejection["status"], 426);
    assert_eq!(rejection["result"], "rejected");
}

#[tokio::test]
async fn bearer_token_protects_metrics_and_readyz() {
    let secrets = tempfile::tempdir().unwrap();
    let token = "adm1n-T0KEN-for-tests";
    let file = secrets.path().join("admin.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let gw =
        Gateway::start_admin(&format!("token_file = {:?}\n", file.to_str().unwrap()), "").await;

    for path in ["/metrics", "/readyz"] {
        let (status, _) = gw.admin_request(path, "").await;
        assert_eq!(status, 401, "{path} without a token");
        let (status, _) = gw.admin_request(path, &bearer("wrong")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let auth = bearer(token);
    let m = scrape_with(&gw, &auth).await;
    assert_eq!(
        m.get(
            "portcullis_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // Ready once pingora reports its services running (a moment after the listeners accept).
    eventually(STEP, "/readyz ready with the token", || async {
        let answer = gw.admin_request("/readyz", &auth).await;
        done_or(
            answer == (200, "ready\n".to_string()),
            format!("{answer:?}"),
        )
    })
    .await;
    // Liveness needs no secret.
    assert_eq!(
        gw.admin_request("/healthz", "").await,
        (200, "ok\n".to_string())
    );
    assert!(!gw.log().contains(token));
}

#[tokio::test]
async fn readyz_once_listeners_run_and_healthz_always() {
    let gw = Gateway::start("").await;
    // pingora reports Running right after it has started the services: poll briefly.
    let body = eventually(STEP, "/readyz ready", || async {
        let (status, body) = gw.admin_request("/readyz", "").await;
        if status != 200 {
            assert_eq!(status, 503, "{body}");
        }
        done_or(status == 200, body.clone()).map(|()| body)
    })
    .await;
    assert_eq!(body, "ready\n");
    assert_eq!(
        gw.admin_get("/healthz").await.lines().next(),
        Some("HTTP/1.1 200 OK")
    );
    let answer = gw.admin_get("/metrics").await;
    assert!(
        answer.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{answer}"
    );
    assert_eq!(status_of(&gw.admin_get("/other").await), 404);
}

// --- promtool, Python's parser, and the deploy files ---------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `promtool`, when installed (`scripts/bootstrap --test` installs it).
fn promtool() -> Option<PathBuf> {
    tool("promtool")
}

#[tokio::test]
async fn exposition_passes_promtool_and_python_parser() {
    let gw = Gateway::start("").await;
    let mut ws = gw.ws(ECHO).await;
    assert_eq!(
        roundtrip(&mut ws, Message::text("x")).await,
        Message::text("echo: x")
    );
    client_close(&mut ws, 1000, "").await;
    let _ = gw
        .raw(b"GET /ws/echo HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    scrape_until(&gw, "the session's end", |m| {
        m.sum("portcullis_closes_total", &[]) == 1.0
    })
    .await;

    // Python's prometheus_client, over urllib: a client and a parser nobody here wrote.
    let script = repo().join("tests/clients/scrape_metrics.py");
    let url = format!("http://127.0.0.1:{}/metrics", gw.admin_port);
    let mut python = Command::new("python3");
    python.arg(&script).arg(&url);
    let out = run_ok_async(python).await;
    let families: serde_json::Value =
        serde_json::from_str(out.trim()).expect("JSON from the script");
    // Families without a series yet (no upstream configured) are not exposed. The global
    // connection cap always exists (`[limits] max_connections`).
    assert_eq!(
        families[defs::CONNECTIONS_LIMIT.name]["samples"][0]["value"],
        serde_json::json!(100000)
    );
    let unset = [
        defs::RELAY_ENDS.name,
        defs::GATEWAY_CLOSES.name,
        defs::UPSTREAM_CONNECT_ERRORS.name,
        defs::UPSTREAM_CONNECT_DURATION.name,
        defs::UPSTREAM_HEALTHY.name,
        defs::UPSTREAM_SELECTIONS.name,
        defs::UPSTREAM_SOCKETS_OPEN.name,
        defs::HASH_KEY_MISSING.name,
        // No [cluster] table: no cluster series.
        defs::CLUSTER_CALL_DURATION.name,
        defs::CLUSTER_ERRORS.name,
        defs::CLUSTER_FALLBACKS.name,
        defs::CLUSTER_LEASES.name,
        defs::CLUSTER_CONNECTED.name,
        defs::CLUSTER_SUBSCRIBED.name,
        // No authorizer has failed: no ext_authz error series.
        defs::EXT_AUTHZ_ERRORS.name,
    ];
    for def in defs::ALL {
        let family = &families[def.name.strip_suffix("_total").unwrap_or(def.name)];
        if unset.contains(&def.name) {
            assert!(family.is_null(), "{}: {family}", def.name);
        } else {
            assert_eq!(
                family["type"],
                def.kind.as_str(),
                "{}: {families}",
                def.name
            );
        }
    }
    let handshakes = &families["portcullis_handshakes"]["samples"];
    assert!(handshakes
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["labels"]["result"] == "accepted"
            && s["labels"]["route"] == ECHO
            && s["value"] == 1.0));

    if let Some(promtool) = promtool() {
        let text = scrape(&gw).await.text;
        let mut check = Command::new(&promtool);
        check.args(["check", "metrics"]);
        let out = output_within_async(check, text.as_bytes(), STEP).await;
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}",
            text_of(&out)
        );
    }
}

#[test]
fn deploy_files_use_only_defined_metrics_and_pass_promtool() {
    let names: Vec<&str> = defs::ALL.iter().map(|d| d.name).collect();
    let histograms: Vec<&str> = defs::ALL
        .iter()
        .filter(|d| d.kind == defs::Kind::Histogram)
        .map(|d| d.name)
        .collect();
    let known = |used: &str| {
        names.contains(&used)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                used.strip_suffix(s)
                    .is_some_and(|h| histograms.contains(&h))
            })
    };
    let used_in = |text: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("portcullis_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.push(tail[..end].to_string());
            rest = &tail[end..];
        }
        out
    };

    // Alert rules: valid YAML with groups of rules, each on defined metrics.
    let alerts_text = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let alerts: serde_yaml::Value = serde_yaml::from_str(&alerts_text).unwrap();
    let mut rules = 0;
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            assert!(rule["alert"].is_string() || rule["record"].is_string());
            for name in used_in(expr) {
                assert!(known(&name), "alert rule uses unknown metric {name}");
            }
            rules += 1;
        }
    }
    assert!(rules >= 3);

    // The dashboard: valid JSON whose queries use defined metrics.
    let dash_text = std::fs::read_to_string(repo().join("deploy/grafana/portcullis.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash_text).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    let mut queries = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for name in used_in(expr) {
                assert!(known(&name), "dashboard uses unknown metric {name}");
            }
            queries += 1;
        }
    }
    assert!(queries >= 8);
    // Every metric appears somewhere in the dashboard.
    for def in defs::ALL {
        assert!(
            dash_text.contains(def.name),
            "the dashboard does not show {}",
            def.name
        );
    }

    // The scrape config is YAML with a job for the admin listener.
    let scrape: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    assert!(scrape["scrape_configs"][0]["job_name"].is_string());

    if let Some(promtool) = promtool() {
        let dir = repo().join("deploy/prometheus");
        run_ok(Command::new(&promtool).current_dir(&dir).args([
            "check",
            "config",
            "prometheus.yml",
        ]));
        run_ok(
            Command::new(&promtool)
                .current_dir(&dir)
                .args(["check", "rules", "alerts.yml"]),
        );
        run_ok(Command::new(&promtool).current_dir(&dir).args([
            "test",
            "rules",
            "alerts_test.yml",
        ]));
    }
}
