//! `portcullis-bench`: Portcullis, NGINX and HAProxy each terminating `wss` with the same
//! certificate in front of the same upstream echo server, driven in turn by the same load
//! generator. See `bench/README.md`.

mod certs;
mod identity;
mod load;
mod procs;
mod report;
mod servers;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use report::{Results, RunInfo, Section};
use servers::{Env, PortcullisRoute, Subject};

const USAGE: &str = "\
portcullis-bench - Portcullis vs NGINX vs HAProxy, each terminating wss in front of one upstream
echo server, driven in turn by the same closed-loop load generator

USAGE:
    portcullis-bench [OPTIONS]

OPTIONS:
    --conns N           connections of the closed-loop load, and handshakes in flight [50]
    --size S            message size in bytes (binary messages) [128]
    --duration SECS     measured load per server and round [10]
    --idle N            idle connections held for the memory figure [5000]
    --handshakes N      handshakes per server and round [2000]
    --rounds N          rounds; each figure is the median over them [3]
    --only LIST         servers to run, of portcullis,nginx,haproxy [all three]
    --portcullis PATH   a Portcullis binary; may be given several times: each Portcullis
                        configuration (relay route, echo route, each public or with a JWT,
                        ext_authz or introspection policy) runs on the first one that
                        accepts it (`--check`)
                        [the `portcullis` next to this binary, e.g. target/release/portcullis]
    --baseline PATH     also run this Portcullis build with the same relay route, as a column
                        of its own with the ratios Portcullis/baseline (before/after a change,
                        in one run)
    --json FILE         write the results as JSON
    --markdown FILE     write the results as a markdown table (also printed on stdout)
    --quick             tiny numbers, for a smoke test (explicit options still apply)
    -h, --help          this text

NGINX and HAProxy are looked up on PATH and in /usr/sbin (scripts/bench installs them).";

struct Args {
    conns: usize,
    size: usize,
    duration: f64,
    idle: usize,
    handshakes: usize,
    rounds: usize,
    only: Vec<String>,
    portcullis: Vec<PathBuf>,
    baseline: Option<PathBuf>,
    json: Option<PathBuf>,
    markdown: Option<PathBuf>,
    quick: bool,
}

impl Args {
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64((self.duration / 5.0).min(2.0))
    }

    /// Pause for the servers to settle before a memory or CPU reading.
    fn settle(&self) -> Duration {
        Duration::from_millis(if self.quick { 200 } else { 1000 })
    }
}

fn parse_args(argv: &[String]) -> Result<Option<Args>, String> {
    fn num<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
        v.ok_or(format!("{flag} needs a value"))?
            .parse()
            .map_err(|_| format!("{flag}: not a number"))
    }
    let quick = argv.iter().any(|a| a == "--quick");
    let mut a = if quick {
        Args {
            conns: 4,
            size: 64,
            duration: 1.0,
            idle: 40,
            handshakes: 40,
            rounds: 1,
            only: Vec::new(),
            portcullis: Vec::new(),
            baseline: None,
            json: None,
            markdown: None,
            quick,
        }
    } else {
        Args {
            conns: 50,
            size: 128,
            duration: 10.0,
            idle: 5000,
            handshakes: 2000,
            rounds: 3,
            only: Vec::new(),
            portcullis: Vec::new(),
            baseline: None,
            json: None,
            markdown: None,
            quick,
        }
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--conns" => a.conns = num(flag, it.next())?,
            "--size" => a.size = num(flag, it.next())?,
            "--duration" => a.duration = num(flag, it.next())?,
            "--idle" => a.idle = num(flag, it.next())?,
            "--handshakes" => a.handshakes = num(flag, it.next())?,
            "--rounds" => a.rounds = num(flag, it.next())?,
            "--only" => {
                let list = it.next().ok_or("--only needs a list")?;
                a.only = list.split(',').map(|s| s.trim().to_string()).collect();
            }
            "--portcullis" => a
                .portcullis
                .push(it.next().ok_or("--portcullis needs a path")?.into()),
            "--baseline" => a.baseline = Some(it.next().ok_or("--baseline needs a path")?.into()),
            "--json" => a.json = Some(it.next().ok_or("--json needs a file")?.into()),
            "--markdown" => a.markdown = Some(it.next().ok_or("--markdown needs a file")?.into()),
            "--quick" => {}
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.conns == 0 || a.handshakes == 0 || a.idle == 0 || a.rounds == 0 || a.size == 0 {
        return Err("--conns, --size, --idle, --handshakes and --rounds must be at least 1".into());
    }
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 3600.0) {
        return Err("--duration must be between 0 and 3600 seconds".into());
    }
    if a.size > 1 << 20 {
        return Err("--size must be at most 1 MiB (Portcullis's default message limit)".into());
    }
    if a.only.is_empty() {
        a.only = vec!["portcullis".into(), "nginx".into(), "haproxy".into()];
    }
    for name in &a.only {
        if !["portcullis", "nginx", "haproxy"].contains(&name.as_str()) {
            return Err(format!(
                "--only: unknown server {name:?} (portcullis, nginx, haproxy)"
            ));
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("upstream-echo") => return upstream_main(&argv[2..], upstream::run),
        Some("identity-server") => return upstream_main(&argv[2..], identity::run),
        _ => {}
    }
    let args = match parse_args(&argv[1..]) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("portcullis-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    procs::install_signal_handlers();
    match run(&args, &argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// `portcullis-bench upstream-echo --port P --threads N`: the upstream echo server, and
/// `portcullis-bench identity-server ...`: the authorizer and introspection endpoint (each
/// started by the benchmark itself).
fn upstream_main(argv: &[String], serve: fn(u16, usize) -> Result<(), String>) -> ExitCode {
    let (mut port, mut threads) = (0u16, servers::WORKERS);
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), value) {
            ("--port", Some(v)) if v <= u16::MAX as usize => port = v as u16,
            ("--threads", Some(v)) if v > 0 => threads = v,
            _ => {
                eprintln!(
                    "usage: portcullis-bench upstream-echo|identity-server --port P [--threads N]"
                );
                return ExitCode::from(2);
            }
        }
    }
    match serve(port, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Write a file the benchmark generates; the error names it.
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A program on PATH or in the sbin folders (where Debian puts nginx and haproxy).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The first line a program prints for its version flag.
fn version_of(bin: &Path, flag: &str) -> String {
    Command::new(bin)
        .arg(flag)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn run(args: &Args, argv: &[String]) -> Result<(), String> {
    let nofile = procs::raise_nofile_limit();
    let needed = args.idle as u64 * 2 + 500;
    if needed > nofile {
        return Err(format!(
            "--idle {} needs about {needed} open files in the proxy (two sockets per \
             connection), but the limit is {nofile}: raise the hard limit (ulimit -Hn) or lower \
             --idle",
            args.idle
        ));
    }
    let wants = |name: &str| args.only.iter().any(|o| o == name);
    let program = |name: &str| -> Result<Option<PathBuf>, String> {
        if !wants(name) {
            return Ok(None);
        }
        find_program(name).map(Some).ok_or_else(|| {
            format!(
                "{name} is not installed: scripts/bench (or scripts/bootstrap --bench) \
                 installs it; or leave it out with --only"
            )
        })
    };
    let (nginx, haproxy) = (program("nginx")?, program("haproxy")?);
    let portcullis_bins: Vec<PathBuf> = if !wants("portcullis") {
        Vec::new()
    } else if args.portcullis.is_empty() {
        let own = std::env::current_exe().map_err(|e| e.to_string())?;
        vec![own.with_file_name("portcullis")]
    } else {
        args.portcullis.clone()
    };
    // Absolute: the servers run in folders of their own.
    let portcullis_bins = portcullis_bins
        .iter()
        .map(|bin| {
            bin.canonicalize().map_err(|e| {
                format!(
                    "no Portcullis binary at {} ({e}): cargo build --release -p portcullis, or \
                     pass --portcullis PATH",
                    bin.display()
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let dir = tempfile::Builder::new()
        .prefix("portcullis-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let material = certs::generate(dir.path())?;
    let client_tls = load::tls_config(&material.cert)?;

    let upstream_port = procs::free_port()?;
    let mut upstream = procs::Proc::spawn(
        "upstream echo",
        servers::upstream_command(upstream_port)?,
        &dir.path().join("upstream.log"),
    )?;
    upstream.wait_listening(upstream_port, Duration::from_secs(30))?;
    let identity_port = procs::free_port()?;
    let mut identity = procs::Proc::spawn(
        "identity server",
        servers::identity_command(identity_port)?,
        &dir.path().join("identity.log"),
    )?;
    identity.wait_listening(identity_port, Duration::from_secs(30))?;
    // The cluster section's Redis: one for the whole run, on a free port, keeping nothing.
    let redis = match find_program("redis-server").filter(|_| wants("portcullis")) {
        Some(bin) => {
            let port = procs::free_port()?;
            let mut cmd = std::process::Command::new(bin);
            cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .current_dir(dir.path());
            let mut proc = procs::Proc::spawn("redis-server", cmd, &dir.path().join("redis.log"))?;
            proc.wait_listening(port, Duration::from_secs(30))?;
            Some((proc, port))
        }
        None => None,
    };

    let mut env = Env::new(
        dir.path().to_path_buf(),
        material,
        client_tls,
        servers::Backends {
            upstream_port,
            identity_port,
        },
        nofile,
        nginx.clone(),
        haproxy.clone(),
    );
    env.redis = redis.as_ref().map(|(_, port)| *port);
    for route in PortcullisRoute::all() {
        for bin in &portcullis_bins {
            if servers::accepts(&env, bin, route)? {
                env.portcullis.push((route, bin.clone()));
                break;
            }
        }
    }

    if let Some(bin) = &args.baseline {
        let bin = bin
            .canonicalize()
            .map_err(|e| format!("no baseline binary at {} ({e})", bin.display()))?;
        for route in PortcullisRoute::all().filter(|r| !r.echo) {
            if servers::accepts(&env, &bin, route)? {
                env.baseline.push((route, bin.clone()));
            }
        }
    }
    let subjects: Vec<Subject> = Subject::ALL
        .into_iter()
        .filter(|s| wants(s.only_name()))
        .filter(|s| *s != Subject::Baseline || args.baseline.is_some())
        .collect();
    let mut results = Results::default();
    for &subject in subjects.iter().filter(|s| s.is_portcullis()) {
        for section in Section::ALL {
            let route = PortcullisRoute::of(subject, section);
            if section == Section::HandshakeCluster && env.redis.is_none() {
                results.skip(
                    subject,
                    section,
                    "redis-server is not installed (scripts/bootstrap --bench installs it)".into(),
                );
            } else if env.binary_for(subject, route).is_none() {
                results.skip(
                    subject,
                    section,
                    format!("no --portcullis binary accepts {}", route.describe()),
                );
            }
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    for round in 1..=args.rounds {
        for section in [Section::Load, Section::Idle, Section::Handshake] {
            for &subject in &subjects {
                let mut sections = vec![section];
                if section == Section::Handshake && subject.is_portcullis() {
                    sections.extend(Section::PORTCULLIS_ONLY);
                }
                for section in sections {
                    if results.is_skipped(subject, section) {
                        continue;
                    }
                    upstream.check_alive()?;
                    identity.check_alive()?;
                    let figures = measure(&env, &rt, args, subject, section).map_err(|e| {
                        format!("round {round}, {} {}: {e}", subject.key(), section.key())
                    })?;
                    let shown: Vec<String> =
                        figures.iter().map(|(f, v)| format!("{f} {v:.1}")).collect();
                    eprintln!(
                        "[{:>4.0}s] round {round}/{}: {} {}: {}",
                        started.elapsed().as_secs_f64(),
                        args.rounds,
                        subject.key(),
                        section.key(),
                        shown.join(", ")
                    );
                    for (figure, value) in figures {
                        results.add(subject, section, figure, value);
                    }
                }
            }
        }
    }
    drop(upstream);
    drop(identity);
    drop(redis);

    let (cpus, memory_gib) = procs::machine();
    let mut versions = serde_json::Map::new();
    if let Some(bin) = &nginx {
        versions.insert("nginx".into(), json!(version_of(bin, "-v")));
    }
    if let Some(bin) = &haproxy {
        versions.insert("haproxy".into(), json!(version_of(bin, "-v")));
    }
    let binaries: serde_json::Map<String, serde_json::Value> = PortcullisRoute::all()
        .filter(|_| wants("portcullis"))
        .map(|route| {
            let value = match env.portcullis_for(route) {
                Some(bin) => json!({
                    "path": bin.display().to_string(),
                    "version": version_of(bin, "--version"),
                }),
                None => serde_json::Value::Null,
            };
            (route.key(), value)
        })
        .collect();
    let info = RunInfo {
        date: utc_now(),
        command: std::iter::once("portcullis-bench")
            .chain(argv[1..].iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        cpus,
        memory_gib,
        settings: json!({
            "conns": args.conns,
            "size": args.size,
            "duration_secs": args.duration,
            "warmup_secs": args.warmup().as_secs_f64(),
            "idle": args.idle,
            "handshakes": args.handshakes,
            "rounds": args.rounds,
            "only": args.only,
            "quick": args.quick,
        }),
        versions: serde_json::Value::Object(versions),
        portcullis_binaries: serde_json::Value::Object(binaries),
        baseline: env
            .baseline
            .first()
            .map(|(_, bin)| {
                json!({
                    "path": bin.display().to_string(),
                    "version": version_of(bin, "--version"),
                })
            })
            .unwrap_or(serde_json::Value::Null),
        subjects,
    };
    let markdown = report::markdown(&results, &info);
    println!("{markdown}");
    if let Some(path) = &args.markdown {
        write_file(path, &markdown)?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report::json(&results, &info))
            .map_err(|e| e.to_string())?;
        write_file(path, &(text + "\n"))?;
    }
    Ok(())
}

type Figures = Vec<(&'static str, f64)>;

/// One phase on a fresh server instance.
fn measure(
    env: &Env,
    rt: &tokio::runtime::Runtime,
    args: &Args,
    subject: Subject,
    section: Section,
) -> Result<Figures, String> {
    let (mut proc, target) = env.start(subject, section)?;
    let figures = match section {
        Section::Load => load_phase(rt, args, &proc, &target),
        Section::Idle => idle_phase(rt, args, &proc, &target),
        _ => handshake_phase(rt, args, &proc, &target),
    };
    // An error of the clients is often explained by the server's death.
    proc.check_alive()?;
    figures
}

fn sleep_until(t: tokio::time::Instant) {
    std::thread::sleep(t.into_std().saturating_duration_since(Instant::now()));
}

/// Closed-loop load: messages per second, latency p50/p99, server CPU per message.
fn load_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &procs::Proc,
    target: &load::Target,
) -> Result<Figures, String> {
    let conns = rt.block_on(load::open(target, args.conns, args.conns))?;
    let payload: Arc<Vec<u8>> = Arc::new((0..args.size).map(|i| (i % 251) as u8).collect());
    let measure_from = tokio::time::Instant::now() + args.warmup();
    let until = measure_from + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|ws| rt.spawn(load::closed_loop(ws, payload.clone(), measure_from, until)))
        .collect();
    sleep_until(measure_from);
    let before = proc.usage();
    sleep_until(until);
    let after = proc.usage();
    let mut latencies = Vec::new();
    for task in tasks {
        let part = rt
            .block_on(task)
            .map_err(|e| format!("client task: {e}"))??;
        latencies.extend(part);
    }
    latencies.sort_unstable();
    let n = latencies.len();
    if n == 0 {
        return Err("no message came back in the measured time".into());
    }
    Ok(vec![
        ("messages_per_second", n as f64 / args.duration),
        ("latency_p50_us", load::quantile(&latencies, 0.50)),
        ("latency_p99_us", load::quantile(&latencies, 0.99)),
        (
            "cpu_us_per_message",
            (after.cpu_secs - before.cpu_secs) * 1e6 / n as f64,
        ),
    ])
}

/// Idle connections: server memory per connection.
fn idle_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &procs::Proc,
    target: &load::Target,
) -> Result<Figures, String> {
    // A few connections first, so that what a server builds lazily on its first connections
    // (per-worker TLS and buffer pools) is in the baseline, not in the per-connection figure.
    let warm = rt.block_on(load::open(target, args.conns, args.conns))?;
    rt.block_on(async move { drop(warm) });
    std::thread::sleep(args.settle());
    let before = proc.usage();
    let held = rt.block_on(load::open(target, args.idle, args.conns))?;
    std::thread::sleep(args.settle());
    let after = proc.usage();
    rt.block_on(async move { drop(held) });
    Ok(vec![
        ("connections", args.idle as f64),
        (
            "rss_bytes_per_connection",
            (after.rss_bytes as f64 - before.rss_bytes as f64) / args.idle as f64,
        ),
    ])
}

/// Handshakes: per second, and server CPU per handshake (teardown included).
fn handshake_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &procs::Proc,
    target: &load::Target,
) -> Result<Figures, String> {
    let before = proc.usage();
    let start = Instant::now();
    let (ok, failed, first_error) =
        rt.block_on(load::handshakes(target, args.handshakes, args.conns));
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(args.settle() / 2);
    let after = proc.usage();
    if ok == 0 {
        return Err(format!("every handshake failed: {first_error}"));
    }
    if failed > 0 {
        eprintln!(
            "warning: {failed} of {} handshakes failed, the first with: {first_error}",
            args.handshakes
        );
    }
    Ok(vec![
        ("handshakes_per_second", ok as f64 / elapsed),
        (
            "cpu_us_per_handshake",
            (after.cpu_secs - before.cpu_secs) * 1e6 / ok as f64,
        ),
        ("errors", failed as f64),
    ])
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}
