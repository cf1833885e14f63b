//! Smoke test: the benchmark runs briefly (`--quick`, with every opt-in phase at a tiny size)
//! against Portcullis and whichever of NGINX and HAProxy is installed (under CI both must be:
//! `scripts/bootstrap --test` installs them), and its JSON holds every figure, each a finite
//! number; a 10-second soak writes its samples and curve. Figures are never compared with
//! anything: the machines are noisy.
//!
//! The Portcullis binary is the workspace's own build (or `PORTCULLIS_BENCH_PORTCULLIS`); it
//! serves every configuration, so no section may be skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The whole benchmark run is bounded by this.
const LIMIT: Duration = Duration::from_secs(180);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The workspace's `portcullis` binary, built now if it is not yet (`cargo test --workspace`
/// has built it already for the gateway's own tests).
fn portcullis_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PORTCULLIS_BENCH_PORTCULLIS") {
        return path.into();
    }
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "portcullis",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo build -p portcullis failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["target"]["name"] == "portcullis")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the portcullis executable")
}

/// nginx or haproxy, where Debian puts them. Under CI a missing one is a failure.
fn installed(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .any(|d| d.join(name).is_file());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing: run scripts/bootstrap --test"
        );
        eprintln!(
            "{name} not found: the smoke test leaves it out (scripts/bootstrap --test installs it)"
        );
    }
    found
}

/// Run the benchmark, killing it past [`LIMIT`].
fn run_bench(args: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis-bench"))
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "portcullis-bench {args:?} failed: {status}"
            );
            return;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portcullis-bench did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const LOAD: &[&str] = &[
    "messages_per_second",
    "latency_p50_us",
    "latency_p99_us",
    "cpu_us_per_message",
];
const IDLE: &[&str] = &["connections", "rss_bytes_per_connection"];
const HANDSHAKE: &[&str] = &["handshakes_per_second", "cpu_us_per_handshake", "errors"];

fn figures(section: &str) -> &'static [&'static str] {
    match section {
        "load" => LOAD,
        "idle" => IDLE,
        _ => HANDSHAKE,
    }
}

/// Every section of a Portcullis subject: its own handshakes with each kind of credential too.
const PORTCULLIS_SECTIONS: &[&str] = &[
    "load",
    "idle",
    "handshake",
    "handshake_jwt",
    "handshake_authz_hit",
    "handshake_authz_miss",
    "handshake_introspection",
    "handshake_limits",
    "handshake_cluster",
    "handshake_cluster_rc",
];

fn finite(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite(), "{what} is not finite: {x}");
    x
}

#[test]
fn quick_run_reports_every_figure() {
    let portcullis = portcullis_binary();
    let mut only = vec!["portcullis"];
    only.extend(["nginx", "haproxy"].into_iter().filter(|n| installed(n)));
    let dir = tempfile::tempdir().unwrap();
    let (json_path, md_path) = (dir.path().join("out.json"), dir.path().join("out.md"));
    let svg_path = dir.path().join("sweep.svg");
    let only_arg = only.join(",");
    run_bench(&[
        "--quick",
        "--only",
        &only_arg,
        "--portcullis",
        portcullis.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
        "--markdown",
        md_path.to_str().unwrap(),
        "--workers",
        "1",
        "--sizes",
        "64,1024",
        "--svg",
        svg_path.to_str().unwrap(),
        "--burst",
        "40",
        "--burst-watch",
        "2",
        "--hold-relay",
        "50",
        "--hold-echo",
        "50",
        "--balance",
        "--tracing",
        "--compression",
    ]);

    let out: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    for key in ["date", "command"] {
        assert!(out[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    finite(&out["machine"]["cpus"], "machine.cpus");
    finite(&out["machine"]["memory_gib"], "machine.memory_gib");

    let mut subjects = vec![
        ("portcullis", PORTCULLIS_SECTIONS),
        ("portcullis_echo", PORTCULLIS_SECTIONS),
        ("upstream_direct", &["load", "idle", "handshake"][..]),
    ];
    for proxy in &only[1..] {
        subjects.push((proxy, &["load", "idle", "handshake"][..]));
    }
    let results = &out["results"];
    // Cluster limits (one Redis, a Redis Cluster) against local ones, per Portcullis subject.
    for key in ["cluster_vs_local", "redis_cluster_vs_local"] {
        for subject in ["portcullis", "portcullis_echo"] {
            let c = &out[key][subject];
            finite(&c["handshakes_per_second"], &format!("{key}.{subject}"));
            assert!(c["met"].is_boolean(), "{key}.{subject}: {c}");
        }
    }
    for (subject, sections) in &subjects {
        for section in *sections {
            let s = &results[subject][section];
            assert!(
                s.is_object(),
                "results.{subject}.{section} is missing:\n{out:#}"
            );
            assert!(
                s.get("skipped").is_none(),
                "results.{subject}.{section}: {s}"
            );
            for figure in figures(section) {
                finite(&s[figure], &format!("results.{subject}.{section}.{figure}"));
            }
            if section.starts_with("handshake") {
                assert_eq!(s["errors"], 0.0, "{subject}.{section}: failed handshakes");
            }
            if *section == "idle" {
                assert_eq!(s["connections"], 40.0, "{subject}.idle.connections");
            }
        }
    }
    let mut pairs = vec![("portcullis_echo", "upstream_direct")];
    pairs.extend(only[1..].iter().map(|p| ("portcullis", *p)));
    for (a, b) in pairs {
        let ratios = &out["ratios"][format!("{a}/{b}")];
        for section in PORTCULLIS_SECTIONS {
            for figure in figures(section) {
                if matches!(*figure, "errors" | "connections") {
                    continue;
                }
                let key = format!("{section}.{figure}");
                let v = ratios
                    .get(&key)
                    .unwrap_or_else(|| panic!("ratios.{a}/{b}.{key} is missing"));
                // Handshakes with a credential are compared with the other side's plain ones.
                let reference = if section.starts_with("handshake") {
                    "handshake"
                } else {
                    section
                };
                let denominator = &results[b][reference][figure];
                if denominator == 0.0 {
                    // CPU time comes in clock ticks (10 ms): a quick run may see none.
                    assert!(v.is_null(), "ratios.{a}/{b}.{key} over zero: {v}");
                } else {
                    finite(v, &format!("ratios.{a}/{b}.{key}"));
                }
            }
        }
    }

    // Round robin against balance = "hash" over the same three upstreams, and handshakes
    // without and with [tracing] (every span exported to the sink): Portcullis's relay only.
    for section in [
        "balance_round_robin",
        "balance_hash",
        "traces_off",
        "traces_on",
    ] {
        let s = &results["portcullis"][section];
        for figure in HANDSHAKE {
            finite(
                &s[figure],
                &format!("results.portcullis.{section}.{figure}"),
            );
        }
        assert_eq!(s["errors"], 0.0, "{section}: failed handshakes");
        assert!(results["portcullis_echo"].get(section).is_none());
    }
    finite(
        &out["hash_vs_round_robin"]["handshakes_per_second"],
        "hash_vs_round_robin.handshakes_per_second",
    );

    for figure in ["handshakes_per_second", "cpu_us_per_handshake"] {
        finite(
            &out["traces_on_vs_off"][figure],
            &format!("traces_on_vs_off.{figure}"),
        );
    }
    assert!(out["traces_on_vs_off"]["met"].is_boolean());

    assert_eq!(out["settings"]["workers"], 1, "settings.workers");
    check_opt_in_phases(&out, &only[1..]);
    check_compression(&out, only.contains(&"nginx"));

    let targets = out["targets"].as_array().expect("targets");
    // Always: memory per idle relayed and echo connection, retention after the burst (relay
    // and echo), the holds (relay and echo), the four of compression (idle echo sockets with
    // and without context takeover, CPU and bytes compressed against uncompressed). Against
    // NGINX: CPU per message, handshakes with a JWT, CPU per message at each of the two sizes;
    // against HAProxy: memory per idle socket.
    let expected =
        10 + 4 * usize::from(only.contains(&"nginx")) + usize::from(only.contains(&"haproxy"));
    assert_eq!(targets.len(), expected, "{targets:#?}");
    for t in targets {
        if t["figure"] == "burst.secs_to_within_25pct" {
            // Not reached within a 2 s watch: no figure, and no verdict before 30 s.
            assert!(t["portcullis"].is_null() || finite(&t["portcullis"], "burst") >= 0.0);
            assert!(t["met"].is_boolean() || t["met"].is_null(), "{t}");
            continue;
        }
        finite(&t["portcullis"], "targets[].portcullis");
        finite(&t["reference_value"], "targets[].reference_value");
        assert!(t["met"].is_boolean(), "targets[].met: {t}");
    }

    let markdown = std::fs::read_to_string(&md_path).unwrap();
    assert!(markdown.contains("| figure | better |"), "{markdown}");
    assert!(markdown.contains("Targets:"), "{markdown}");
    assert!(
        markdown.contains("handshakes per second with cluster limits on a Redis Cluster >= 0.8"),
        "{markdown}"
    );
    for heading in [
        "### Message sizes",
        "### Retention",
        "### Large holds",
        "### Balancing",
        "### Compression",
    ] {
        assert!(markdown.contains(heading), "{heading}:\n{markdown}");
    }

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    for name in std::iter::once("Portcullis echo route").chain(only[1..].iter().map(|p| match *p {
        "nginx" => "NGINX",
        _ => "HAProxy",
    })) {
        assert!(svg.contains(name), "{name} is not in the chart");
    }
    // Two panels, a line for each server in each.
    assert_eq!(
        svg.matches("<polyline").count(),
        2 * (only.len() + 1),
        "{svg}"
    );
}

/// The sweep, the burst and the holds: every figure of every server that runs them.
fn check_opt_in_phases(out: &Value, peers: &[&str]) {
    let results = &out["results"];
    assert_eq!(out["sweep"]["sizes"], serde_json::json!([64, 1024]));
    assert!(
        out["sweep"]["cpu_vs_nginx_met_at_every_size"].is_boolean() || !peers.contains(&"nginx"),
        "{}",
        out["sweep"]
    );
    let mut servers = vec!["portcullis", "portcullis_echo"];
    servers.extend(peers);
    for subject in &servers {
        for size in ["64", "1024"] {
            for figure in LOAD {
                finite(
                    &results[subject]["sweep"][size][figure],
                    &format!("results.{subject}.sweep.{size}.{figure}"),
                );
            }
        }
        let burst = &results[subject]["burst"];
        assert_eq!(burst["connections"], 40.0, "{subject}.burst");
        for figure in ["rss_pre_burst_bytes", "rss_peak_bytes", "rss_end_bytes"] {
            let v = finite(&burst[figure], &format!("{subject}.burst.{figure}"));
            assert!(v > 0.0, "{subject}.burst.{figure}: {v}");
        }
        // A 2-second watch has no 5-second figure.
        assert!(burst["rss_after_5s_bytes"].is_null(), "{subject}.burst");
        let secs = &burst["secs_to_within_25pct"];
        assert!(secs.is_null() || (0.0..=2.0).contains(&finite(secs, "burst secs")));
        assert!(
            burst["met"].is_boolean() || burst["met"].is_null(),
            "{burst}"
        );
        let hold = &results[subject]["hold"];
        assert_eq!(hold["connections"], 50.0, "{subject}.hold");
        assert_eq!(hold["errors"], 0.0, "{subject}.hold");
        for figure in [
            "rss_bytes",
            "rss_bytes_per_connection",
            "handshakes_per_second",
            "cpu_us_per_handshake",
        ] {
            finite(&hold[figure], &format!("{subject}.hold.{figure}"));
        }
    }
    assert!(results["upstream_direct"].get("sweep").is_none());
    for peer in peers {
        let ratios = &out["ratios"][format!("portcullis/{peer}")];
        let mut keys: Vec<String> = ["64", "1024"]
            .iter()
            .flat_map(|size| LOAD.iter().map(move |f| format!("sweep.{size}.{f}")))
            .collect();
        keys.extend(
            [
                "rss_bytes",
                "rss_bytes_per_connection",
                "handshakes_per_second",
            ]
            .map(|f| format!("hold.{f}")),
        );
        for key in keys {
            let v = ratios
                .get(&key)
                .unwrap_or_else(|| panic!("ratios.portcullis/{peer}.{key} is missing"));
            finite(v, &format!("ratios.portcullis/{peer}.{key}"));
        }
    }
}

/// `--compression`: the corpus's load compressed and not through the relay, the echo route and
/// NGINX, each figure a number, and compression in effect (fewer bytes on the wire than the
/// messages' own; exactly as many without it); idle compressed sockets on the relay and the
/// echo route, with and without context takeover.
fn check_compression(out: &Value, nginx: bool) {
    let results = &out["results"];
    let mut loaded = vec!["portcullis", "portcullis_echo"];
    if nginx {
        loaded.push("nginx");
    }
    const FIGURES: [&str; 6] = [
        "messages_per_second",
        "latency_p50_us",
        "latency_p99_us",
        "cpu_us_per_message",
        "wire_bytes_per_message",
        "plain_bytes_per_message",
    ];
    for subject in &loaded {
        for section in ["compression", "compression_plain"] {
            for figure in FIGURES {
                finite(
                    &results[subject][section][figure],
                    &format!("results.{subject}.{section}.{figure}"),
                );
            }
        }
        let on = &results[subject]["compression"];
        let off = &results[subject]["compression_plain"];
        let wire = finite(&on["wire_bytes_per_message"], "wire");
        assert!(
            wire < finite(&on["plain_bytes_per_message"], "plain"),
            "{subject}: nothing compressed: {on}"
        );
        assert_eq!(
            off["wire_bytes_per_message"], off["plain_bytes_per_message"],
            "{subject}: uncompressed: {off}"
        );
        finite(
            &out["compression"][subject]["wire_bytes_per_message"],
            &format!("compression.{subject}"),
        );
    }
    for subject in ["portcullis", "portcullis_echo"] {
        for section in ["compression_idle", "compression_idle_no_takeover"] {
            let s = &results[subject][section];
            assert_eq!(s["connections"], 40.0, "{subject}.{section}: {s}");
            finite(
                &s["rss_bytes_per_connection"],
                &format!("{subject}.{section}"),
            );
        }
    }
    assert!(results["upstream_direct"].get("compression").is_none());
    if nginx {
        assert!(results["nginx"].get("compression_idle").is_none());
        let ratios = &out["ratios"]["portcullis/nginx"];
        for figure in FIGURES
            .iter()
            .filter(|f| !f.ends_with("_bytes_per_message"))
        {
            let key = format!("compression.{figure}");
            let v = ratios.get(&key).unwrap_or_else(|| panic!("ratios.{key}"));
            assert!(v.is_number() || v.is_null(), "ratios.{key}: {v}");
        }
    }
}

#[test]
fn short_soak_writes_samples_and_curve() {
    let portcullis = portcullis_binary();
    let dir = tempfile::tempdir().unwrap();
    let (json_path, svg_path) = (dir.path().join("soak.json"), dir.path().join("soak.svg"));
    run_bench(&[
        "--quick",
        "--portcullis",
        portcullis.to_str().unwrap(),
        "--soak",
        "10s",
        "--soak-interval",
        "4s",
        "--soak-hold",
        "50",
        "--soak-json",
        json_path.to_str().unwrap(),
        "--soak-svg",
        svg_path.to_str().unwrap(),
    ]);
    let out: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(out["settings"]["hold"], 50);
    let samples = out["samples"].as_array().expect("samples");
    // The start, and after each cycle (4 s, 4 s, 2 s; a slow machine may overrun one).
    assert!((3..=4).contains(&samples.len()), "{samples:#?}");
    let mut last = (0.0, 0.0);
    for (i, s) in samples.iter().enumerate() {
        assert!(finite(&s["rss_bytes"], "rss_bytes") > 0.0);
        assert!(finite(&s["fds"], "fds") > 0.0);
        let (messages, handshakes) = (finite(&s["messages"], "m"), finite(&s["handshakes"], "h"));
        assert!(
            messages >= last.0 && handshakes >= last.1,
            "not cumulative: {s}"
        );
        last = (messages, handshakes);
        // Each cycle's held reading: 50 relayed sockets are 100 descriptors.
        if i > 0 {
            assert!(finite(&s["held_fds"], "held_fds") >= 100.0, "{s}");
            finite(&s["held_rss_bytes"], "held_rss_bytes");
        }
    }
    assert!(last.0 > 0.0 && last.1 > 0.0, "no load: {samples:#?}");
    let drift = &out["drift"];
    finite(&drift["rss_bytes"], "drift.rss_bytes");
    finite(&drift["rss_percent"], "drift.rss_percent");
    assert!(drift["fds"].is_i64(), "{drift}");
    assert_eq!(out["totals"]["errors"], 0, "{}", out["totals"]);
    assert!(out["gateway_died"].is_null());
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Gateway RSS") && svg.contains("descriptors"));
}

/// `--http2` with a `--baseline` that does not serve HTTP/2: Portcullis's relay and echo
/// routes give every figure of the phase (new `wss` connections and new streams on an open
/// HTTP/2 connection, messages over both, the extra idle stream's memory), with their ratios
/// and targets; the baseline gives its `wss` and HTTP/1.1 figures and none of HTTP/2.
///
/// The baseline is the workspace's own binary behind a shell script that refuses, as a build
/// from before HTTP/2 does (unknown key), any configuration with `http2 = true`, and runs every
/// other one unchanged.
#[test]
fn http2_phase_beside_a_baseline_without_http2() {
    let portcullis = portcullis_binary();
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("portcullis-without-http2");
    std::fs::write(
        &baseline,
        format!(
            "#!/bin/sh\nprev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = --config ] && grep -q \
             '^http2 = true' \"$a\"; then\n    echo 'unknown field `http2`' >&2\n    exit 1\n  \
             fi\n  prev=\"$a\"\ndone\nexec '{}' \"$@\"\n",
            portcullis.display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&baseline).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&baseline, permissions).unwrap();
    let (json_path, md_path) = (dir.path().join("out.json"), dir.path().join("out.md"));
    run_bench(&[
        "--quick",
        "--only",
        "portcullis",
        "--portcullis",
        portcullis.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
        "--workers",
        "1",
        "--http2",
        "--json",
        json_path.to_str().unwrap(),
        "--markdown",
        md_path.to_str().unwrap(),
    ]);
    let out: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let results = &out["results"];
    const WSS: &[&str] = &[
        "wss_handshakes_per_second",
        "wss_cpu_us_per_handshake",
        "h1_messages_per_second",
        "h1_cpu_us_per_message",
    ];
    const H2: &[&str] = &[
        "h2_handshakes_per_second",
        "h2_cpu_us_per_handshake",
        "h2_messages_per_second",
        "h2_cpu_us_per_message",
        "h2_rss_bytes_per_idle_stream",
    ];
    for subject in ["portcullis", "portcullis_echo", "portcullis_baseline"] {
        let s = &results[subject]["http2"];
        assert!(
            s.is_object(),
            "results.{subject}.http2 is missing:\n{out:#}"
        );
        for figure in WSS {
            finite(&s[figure], &format!("results.{subject}.http2.{figure}"));
        }
        assert_eq!(s["errors"], 0.0, "{subject}.http2: failed handshakes");
        let served = subject != "portcullis_baseline";
        assert_eq!(out["http2"][subject]["served"], served, "http2.{subject}");
        for figure in H2 {
            if served {
                finite(&s[figure], &format!("results.{subject}.http2.{figure}"));
            } else {
                assert!(s[figure].is_null(), "results.{subject}.http2.{figure}: {s}");
            }
        }
        // --idle 40: 20 streams, then 20 more on the same connections.
        if served {
            assert_eq!(s["idle_streams"], 20.0, "{subject}: {s}");
        } else {
            assert!(s["idle_streams"].is_null(), "{subject}: {s}");
        }
        for (ratio, over, under) in [
            (
                "messages_per_second_h2_vs_h1",
                "h2_messages_per_second",
                "h1_messages_per_second",
            ),
            (
                "cpu_per_message_h2_vs_h1",
                "h2_cpu_us_per_message",
                "h1_cpu_us_per_message",
            ),
            (
                "cpu_per_handshake_stream_vs_wss",
                "h2_cpu_us_per_handshake",
                "wss_cpu_us_per_handshake",
            ),
        ] {
            let v = &out["http2"][subject][ratio];
            if served && s[under] != 0.0 && s[over].is_number() {
                finite(v, &format!("http2.{subject}.{ratio}"));
            } else if !served {
                assert!(v.is_null(), "http2.{subject}.{ratio}: {v}");
            }
        }
    }
    // The HTTP/1.1 figures against the baseline's; the HTTP/2 ones have nothing to compare.
    let ratios = &out["ratios"]["portcullis/portcullis_baseline"];
    for figure in WSS {
        let key = format!("http2.{figure}");
        if results["portcullis_baseline"]["http2"][figure] != 0.0 {
            finite(
                &ratios[&key],
                &format!("ratios.portcullis/portcullis_baseline.{key}"),
            );
        }
    }
    for figure in H2 {
        assert!(ratios[format!("http2.{figure}")].is_null(), "{figure}");
    }
    let http2_targets: Vec<&Value> = out["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["figure"].as_str().unwrap().starts_with("http2."))
        .collect();
    // Four each for the relay and the echo route; none for the baseline.
    assert_eq!(http2_targets.len(), 8, "{http2_targets:#?}");
    for t in http2_targets {
        assert_ne!(t["subject"], "portcullis_baseline");
        finite(&t["portcullis"], "targets[].portcullis");
        finite(&t["reference_value"], "targets[].reference_value");
        assert!(t["met"].is_boolean(), "targets[].met: {t}");
    }
    let markdown = std::fs::read_to_string(&md_path).unwrap();
    assert!(
        markdown.contains("### WebSockets over HTTP/2"),
        "{markdown}"
    );
    assert!(
        markdown.contains("baseline (relay): does not serve HTTP/2"),
        "{markdown}"
    );
}
