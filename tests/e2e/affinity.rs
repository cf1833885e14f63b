//! `balance = "hash"` end to end: real test upstreams on loopback behind the real gateway, keyed
//! by the subject of a verified token. Each upstream tells the client who it is by the one
//! subprotocol it accepts (`up-a`, `up-b`, ...), which the gateway returns in its 101, so a
//! handshake alone says where a subject landed.
//!
//! The gateway listens on plain `ws://` here: the balancing does not depend on TLS, and a
//! thousand handshakes per run stay cheap. The upstreams' ports are the kernel's choice, and an
//! upstream's place in the hash is its URL, so where a subject lands differs from run to run:
//! bounds here leave room for sampling (the exact ±15 % over fixed upstreams is the unit test's,
//! `relay::balance::hash`).

use std::collections::HashMap;

use futures_util::StreamExt;
use jsonwebtoken::Algorithm;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::upstream::*;
use crate::support::*;
use crate::tokens::{claims, sign, write_keys};

/// The names the upstreams answer with, in the order they are started.
const NAMES: [&str; 4] = ["up-a", "up-b", "up-c", "up-d"];

/// A policy that verifies HS256 tokens (cheap to sign a thousand of).
const POLICY: &str = "[policies.ids.jwt]\n\
                      keys = [{ kid = \"hs\", alg = \"HS256\", secret_file = \"keys/hs.secret\" }]\n";

/// Reload `gw` (a plain listener, as every test here starts it) with `routes` and the subjects'
/// policy, and wait until the reload has happened.
async fn reload(gw: &Gateway, routes: &str) {
    std::fs::write(
        gw.dir.path().join("portcullis.toml"),
        config_text(false, &format!("{routes}\n{POLICY}")),
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_log("reload: configuration from").await;
}

/// The first three named upstreams.
async fn three_named() -> [Upstream; 3] {
    [
        named(NAMES[0]).await,
        named(NAMES[1]).await,
        named(NAMES[2]).await,
    ]
}

/// An echo upstream that accepts only its own name as subprotocol.
async fn named(name: &'static str) -> Upstream {
    Upstream::start(
        Handshake {
            protocols: vec![name],
            ..Handshake::default()
        },
        echo(),
    )
    .await
}

/// A hash route on `path` over `upstreams` (URLs) behind the token policy, with `extra` keys.
fn route(path: &str, upstreams: &[String], extra: &str) -> String {
    let list = upstreams
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[routes]]\npath = \"{path}\"\nmode = \"relay\"\npolicy = \"ids\"\nbalance = \"hash\"\n\
         upstreams = [{list}]\n{extra}\n"
    )
}

async fn start(routes: &str) -> Gateway {
    Gateway::start_prepared(false, &format!("{routes}\n{POLICY}"), write_keys).await
}

fn bearer_for(subject: &str) -> String {
    let token = sign(
        Algorithm::HS256,
        Some("hs"),
        &claims(serde_json::json!({ "sub": subject })),
    );
    format!("Authorization: Bearer {token}\r\n")
}

/// A handshake on the gateway's plain listener with `extra` header lines, offering every
/// upstream's name: the name of the upstream it reached, and the open connection.
async fn open(gw: &Gateway, target: &str, extra: &str) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let offer = format!("Sec-WebSocket-Protocol: {}\r\n{extra}", NAMES.join(", "));
    tcp.write_all(handshake(target, &offer).as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut tcp, &mut got, "the answer's head", has_head).await;
    let head = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(status_of(&head), 101, "{head}");
    let name = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Protocol: "))
        .unwrap_or_else(|| panic!("no upstream name in {head}"))
        .trim()
        .to_string();
    (name, tcp)
}

/// Where `subject` lands on `path` (the connection is dropped at once).
async fn home(gw: &Gateway, path: &str, subject: &str) -> String {
    open(gw, path, &bearer_for(subject)).await.0
}

/// Where each subject lands, sixteen handshakes at a time.
async fn homes(gw: &Gateway, path: &str, subjects: &[String]) -> Vec<String> {
    futures_util::stream::iter(subjects)
        .map(|s| home(gw, path, s))
        .buffered(16)
        .collect()
        .await
}

fn subjects(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

fn count(names: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for n in names {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    counts
}

/// The sum of a metric's samples whose labels contain `label` (e.g. `reason="hash"`).
fn sum(scrape: &str, name: &str, label: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait until no relayed socket is open on any upstream (sessions end just after the client
/// goes; the load bound counts open sockets).
async fn wait_idle(gw: &Gateway) {
    eventually(STEP, "no relayed socket open", || async {
        let scrape = gw.admin_get("/metrics").await;
        let open = sum(&scrape, "portcullis_upstream_sockets_open", "upstream=");
        done_or(open == 0.0, scrape)
    })
    .await;
}

#[tokio::test]
async fn subjects_spread_evenly_stick_to_their_upstream_and_a_header_cannot_move_them() {
    let ups = three_named().await;
    let urls: Vec<String> = ups.iter().map(|u| u.url("/")).collect();
    // `/spread` has no load bound, so concurrent handshakes show the hash alone; `/sticky` has
    // the default bound; `/room` hashes a header.
    let routes = format!(
        "{}{}{}",
        route("/spread", &urls, "hash_balance_factor = 0"),
        route("/sticky", &urls, ""),
        route(
            "/room",
            &urls,
            "hash_key = \"header:x-room\"\nhash_balance_factor = 0"
        )
    );
    let gw = start(&routes).await;

    let all = subjects(1000);
    let landed = homes(&gw, "/spread", &all).await;
    let counts = count(&landed);
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (name, c) in &counts {
        // Even is 333; ±20 % is more than four standard deviations of the sampling.
        assert!((267..=400).contains(c), "{name}: {c} of 1000 ({counts:?})");
    }
    // The same subjects again land where they did.
    assert_eq!(homes(&gw, "/spread", &all[..100]).await, landed[..100]);
    let scrape = gw.admin_get("/metrics").await;
    assert_eq!(
        sum(
            &scrape,
            "portcullis_upstream_selections_total",
            "reason=\"hash\""
        ),
        1100.0
    );

    // One subject reconnecting 20 times, each time with a spoofed key in a header, the query
    // and a cookie named like the claim, and another forwarded address: always its upstream.
    wait_idle(&gw).await;
    let first = home(&gw, "/sticky", "user-7").await;
    for i in 0..20 {
        wait_idle(&gw).await;
        let spoofed = format!(
            "{}sub: user-{i}\r\nX-Room: {i}\r\nCookie: sub=user-{i}\r\nX-Forwarded-For: 198.51.100.{i}\r\n",
            bearer_for("user-7")
        );
        let (name, _) = open(&gw, &format!("/sticky?sub=user-{i}"), &spoofed).await;
        assert_eq!(name, first, "reconnect {i}");
    }
    // While the header does move a handshake on a route that hashes it.
    let rooms: Vec<String> = futures_util::stream::iter(0..30)
        .map(|i| {
            let gw = &gw;
            async move {
                let extra = format!("{}X-Room: room-{i}\r\n", bearer_for("user-7"));
                open(gw, "/room", &extra).await.0
            }
        })
        .buffered(1)
        .collect()
        .await;
    assert!(
        count(&rooms).len() > 1,
        "30 rooms on one upstream: {rooms:?}"
    );
}

#[tokio::test]
async fn a_handshake_without_the_key_goes_by_least_connections_and_is_counted() {
    let ups = [named(NAMES[0]).await, named(NAMES[1]).await];
    let urls: Vec<String> = ups.iter().map(|u| u.url("/")).collect();
    let gw = start(&route("/room", &urls, "hash_key = \"header:x-room\"")).await;
    gw.wait_metric("portcullis_relay_hash_key_missing_total{route=\"/room\"} 0")
        .await;
    // Held open: the second keyless handshake goes to the other upstream.
    let (a, _held) = open(&gw, "/room", &bearer_for("u")).await;
    let (b, _held2) = open(&gw, "/room", &bearer_for("u")).await;
    assert_ne!(a, b);
    gw.wait_metric("portcullis_relay_hash_key_missing_total{route=\"/room\"} 2")
        .await;
    // The same room lands on one upstream, whoever asks.
    let mut seen = Vec::new();
    for s in ["u1", "u2", "u3"] {
        wait_idle_but(&gw, 2).await;
        let extra = format!("{}X-Room: blue\r\n", bearer_for(s));
        seen.push(open(&gw, "/room", &extra).await.0);
    }
    assert!(seen.iter().all(|n| *n == seen[0]), "{seen:?}");
}

/// Wait until exactly `n` relayed sockets are open.
async fn wait_idle_but(gw: &Gateway, n: usize) {
    eventually(STEP, format!("{n} relayed sockets open"), || async {
        let scrape = gw.admin_get("/metrics").await;
        let open = sum(&scrape, "portcullis_upstream_sockets_open", "upstream=");
        done_or(open == n as f64, scrape)
    })
    .await;
}

/// Read from a raw client connection until `needle` arrived (an echoed frame's payload).
async fn echoed(tcp: &mut TcpStream, needle: &[u8]) {
    tcp.write_all(&client_frame(0x1, needle, Some([1, 2, 3, 4])))
        .await
        .unwrap();
    let mut got = Vec::new();
    let found = read_until(tcp, &mut got, "the echo", |b| {
        b.windows(needle.len()).any(|w| w == needle)
    })
    .await;
    assert!(found, "the connection ended: {got:?}");
}

#[tokio::test]
async fn a_fourth_upstream_by_reload_takes_a_quarter_and_no_open_socket_moves() {
    let ups = [
        named(NAMES[0]).await,
        named(NAMES[1]).await,
        named(NAMES[2]).await,
        named(NAMES[3]).await,
    ];
    let urls: Vec<String> = ups.iter().map(|u| u.url("/")).collect();
    let three = route("/r", &urls[..3], "hash_balance_factor = 0");
    let gw = start(&three).await;
    let all = subjects(1000);
    let before = homes(&gw, "/r", &all).await;
    // Three sockets stay open across the reload.
    let mut held = Vec::new();
    for s in &all[..3] {
        let (name, tcp) = open(&gw, "/r", &bearer_for(s)).await;
        held.push((name, tcp));
    }
    wait_idle_but(&gw, 3).await;

    let four = route("/r", &urls, "hash_balance_factor = 0");
    reload(&gw, &four).await;
    gw.wait_metric(&format!(
        "portcullis_upstream_sockets_open{{upstream=\"{}\"}} 0",
        urls[3]
    ))
    .await;

    let after = homes(&gw, "/r", &all).await;
    let moved: Vec<usize> = (0..all.len()).filter(|&i| before[i] != after[i]).collect();
    for &i in &moved {
        assert_eq!(
            after[i], "up-d",
            "{} moved between the old upstreams",
            all[i]
        );
    }
    // 1/4 expected; at most 1.2/4.
    assert!(
        moved.len() > 150 && moved.len() <= 300,
        "{} of 1000 moved",
        moved.len()
    );
    // The open sockets still reach the upstream they were opened to.
    for (i, (name, tcp)) in held.iter_mut().enumerate() {
        assert_eq!(*name, before[i]);
        echoed(tcp, format!("still {i}").as_bytes()).await;
    }
    wait_idle_but(&gw, 3).await;
}

#[tokio::test]
async fn a_hot_subject_spreads_once_its_upstream_passes_the_bound() {
    let ups = three_named().await;
    let urls: Vec<String> = ups.iter().map(|u| u.url("/")).collect();
    let gw = start(&route("/hot", &urls, "")).await;
    let auth = bearer_for("hot");
    let mut held = Vec::new();
    let mut names = Vec::new();
    for _ in 0..100 {
        let (name, tcp) = open(&gw, "/hot", &auth).await;
        names.push(name);
        held.push(tcp);
    }
    let counts = count(&names);
    // No upstream above ceil(1.25 × 100 / 3) = 42; the subject's own upstream fills first.
    assert!(counts.values().all(|&c| c <= 42), "{counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert_eq!(counts[names[0].as_str()], 42, "{counts:?}");
    let scrape = gw.admin_get("/metrics").await;
    let overflow = sum(
        &scrape,
        "portcullis_upstream_selections_total",
        "reason=\"overflow\"",
    );
    let hashed = sum(
        &scrape,
        "portcullis_upstream_selections_total",
        "reason=\"hash\"",
    );
    assert_eq!((hashed, overflow), (42.0, 58.0));
    assert_eq!(
        sum(&scrape, "portcullis_upstream_sockets_open", "upstream="),
        100.0
    );
}

#[tokio::test]
async fn an_ejected_upstreams_subjects_move_and_come_back() {
    let a = named(NAMES[0]).await;
    let b = named(NAMES[1]).await;
    let port = HeldPort::new();
    let handshake = Handshake {
        protocols: vec![NAMES[2]],
        ..Handshake::default()
    };
    let c = Upstream::serve(port.listen(), handshake.clone(), echo());
    let urls = [a.url("/"), b.url("/"), port.url("/")];
    let gw = start(&route(
        "/r",
        &urls,
        "hash_balance_factor = 0\nhealth_check_interval = \"200ms\"\nunhealthy_for = \"1h\"",
    ))
    .await;
    let healthy = |up: bool| {
        format!(
            "portcullis_upstream_healthy{{upstream=\"{}\"}} {}",
            urls[2],
            u8::from(up)
        )
    };
    let all = subjects(300);
    let before = homes(&gw, "/r", &all).await;
    assert!(before.iter().any(|n| n == "up-c"));

    drop(c);
    gw.wait_metric(&healthy(false)).await;
    let during = homes(&gw, "/r", &all).await;
    for i in 0..all.len() {
        if before[i] == "up-c" {
            assert_ne!(during[i], "up-c", "{}", all[i]);
        } else {
            assert_eq!(
                during[i], before[i],
                "{} moved though its upstream is up",
                all[i]
            );
        }
    }

    let _c = Upstream::serve(port.listen(), handshake, echo());
    gw.wait_metric(&healthy(true)).await;
    assert_eq!(homes(&gw, "/r", &all).await, before);
}

#[tokio::test]
async fn an_upstream_in_drain_keeps_its_open_sockets_and_takes_no_new_ones() {
    let ups = [named(NAMES[0]).await, named(NAMES[1]).await];
    let urls: Vec<String> = ups.iter().map(|u| u.url("/")).collect();
    let gw = start(&route("/d", &urls, "hash_balance_factor = 0")).await;
    // A subject of up-a, and one of its sockets held open.
    let all = subjects(40);
    let before = homes(&gw, "/d", &all).await;
    let on_a = before
        .iter()
        .position(|n| n == "up-a")
        .expect("a subject on up-a");
    let (name, mut held) = open(&gw, "/d", &bearer_for(&all[on_a])).await;
    assert_eq!(name, "up-a");
    wait_idle_but(&gw, 1).await;

    let drained = format!(
        "[[routes]]\npath = \"/d\"\nmode = \"relay\"\npolicy = \"ids\"\nbalance = \"hash\"\n\
         hash_balance_factor = 0\nupstreams = [{{ url = \"{}\", drain = true }}, \"{}\"]\n",
        urls[0], urls[1]
    );
    reload(&gw, &drained).await;

    // No new socket goes to up-a, the subjects of up-b stay, the open socket stays.
    let during = homes(&gw, "/d", &all).await;
    assert!(during.iter().all(|n| n == "up-b"), "{during:?}");
    echoed(&mut held, b"still here").await;
    gw.wait_metric(&format!(
        "portcullis_upstream_sockets_open{{upstream=\"{}\"}} 1",
        urls[0]
    ))
    .await;
    // Its session's access-log line names the upstream it was relayed to.
    drop(held);
    gw.wait_log_line("the held session's access-log line", |l| {
        l.contains("] session route=/d ") && l.contains(&format!(" upstream={} ", urls[0]))
    })
    .await;
}

#[tokio::test]
async fn client_ip_is_the_address_the_trusted_proxy_forwarded() {
    let ups = three_named().await;
    let urls: Vec<String> = ups.iter().map(|u| u.url("/")).collect();
    let routes = route(
        "/ip",
        &urls,
        "hash_key = \"client_ip\"\nhash_balance_factor = 0",
    )
    .replace("policy = \"ids\"\n", "");
    // The test's connections come from 127.0.0.1: a trusted proxy.
    let gw = start(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n{routes}"
    ))
    .await;
    let from = |i: usize| format!("X-Forwarded-For: 198.51.100.{i}\r\n");
    let mut first = Vec::new();
    for i in 0..30 {
        first.push(open(&gw, "/ip", &from(i)).await.0);
    }
    assert!(
        count(&first).len() > 1,
        "30 addresses on one upstream: {first:?}"
    );
    // Each forwarded address again lands where it did.
    for (i, name) in first.iter().enumerate() {
        assert_eq!(&open(&gw, "/ip", &from(i)).await.0, name, "198.51.100.{i}");
    }
    let scrape = gw.admin_get("/metrics").await;
    assert_eq!(
        sum(
            &scrape,
            "portcullis_upstream_selections_total",
            "reason=\"hash\""
        ),
        60.0
    );
}
