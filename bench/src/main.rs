//! `portcullis-bench`: Portcullis, NGINX and HAProxy each terminating `wss` with the same
//! certificate in front of the same upstream echo server, driven in turn by the same load
//! generator. See `bench/README.md`.

mod args;
mod burst;
mod certs;
mod chart;
mod compression;
mod deflate;
mod grid;
mod hold;
mod http2;
mod identity;
mod load;
mod measure;
mod phases;
mod procs;
mod redis_cluster;
mod report;
mod servers;
mod soak;
mod sweep;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use args::{Args, USAGE};
use grid::{Section, Subject};
use report::{Results, RunInfo};
use servers::{Env, PortcullisRoute};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("upstream-echo") => return upstream_main(&argv[2..], upstream::run),
        Some("upstream-deflate-echo") => return upstream_main(&argv[2..], upstream::run_deflate),
        Some("identity-server") => return upstream_main(&argv[2..], identity::run),
        _ => {}
    }
    let args = match args::parse(&argv[1..]) {
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

/// `portcullis-bench upstream-echo --port P --threads N`: the upstream echo server (and
/// `upstream-deflate-echo`, the same accepting permessage-deflate), and
/// `portcullis-bench identity-server ...`: the authorizer and introspection endpoint (each
/// started by the benchmark itself).
fn upstream_main(argv: &[String], serve: fn(u16, usize) -> Result<(), String>) -> ExitCode {
    let (mut port, mut threads) = (0u16, servers::HELPER_THREADS);
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), value) {
            ("--port", Some(v)) if v <= u16::MAX as usize => port = v as u16,
            ("--threads", Some(v)) if v > 0 => threads = v,
            _ => {
                eprintln!(
                    "usage: portcullis-bench upstream-echo|upstream-deflate-echo|identity-server \
                     --port P [--threads N]"
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
    phases::check_descriptors(args, nofile)?;
    let command = std::iter::once("portcullis-bench")
        .chain(argv[1..].iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    // The soak measures Portcullis's relay route alone.
    let wants = |name: &str| args.wants(name) && (args.soak.is_none() || name == "portcullis");
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(soak) = &args.soak {
        // No identity server or Redis: the soak's route is public.
        let mut env = Env::new(
            dir.path().to_path_buf(),
            material,
            client_tls,
            servers::Backends {
                upstream_port,
                deflate_upstream_port: 0,
                identity_port: 0,
            },
            nofile,
            args.workers,
            servers::Peers {
                nginx: None,
                haproxy: None,
            },
        );
        let route = PortcullisRoute::of(Subject::Portcullis, Section::Load);
        serve_with_first_accepting(&mut env, &portcullis_bins, route)?;
        let bin = env
            .portcullis_for(route)
            .ok_or("no --portcullis binary accepts a relay route")?
            .to_path_buf();
        let info = soak::Info {
            date: utc_now(),
            command,
            binary: bin.display().to_string(),
            version: version_of(&bin, "--version"),
        };
        return soak::run(&env, &rt, args, soak, &mut upstream, &info);
    }
    let identity_port = procs::free_port()?;
    let mut identity = procs::Proc::spawn(
        "identity server",
        servers::identity_command(identity_port)?,
        &dir.path().join("identity.log"),
    )?;
    identity.wait_listening(identity_port, Duration::from_secs(30))?;
    // The compression sections' upstream, which accepts permessage-deflate (the shared one
    // must not: Portcullis offers it to every upstream).
    let mut deflate_upstream = if args.compression {
        let port = procs::free_port()?;
        let mut proc = procs::Proc::spawn(
            "upstream deflate echo",
            servers::deflate_upstream_command(port)?,
            &dir.path().join("upstream-deflate.log"),
        )?;
        proc.wait_listening(port, Duration::from_secs(30))?;
        Some((proc, port))
    } else {
        None
    };
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
    // The `_rc` section's Redis Cluster: three primaries for the whole run, keeping nothing.
    let redis_cluster = match (find_program("redis-server"), find_program("redis-cli")) {
        (Some(server), Some(cli)) if wants("portcullis") => Some(
            redis_cluster::RedisCluster::start(&server, &cli, dir.path())?,
        ),
        _ => None,
    };

    let mut env = Env::new(
        dir.path().to_path_buf(),
        material,
        client_tls,
        servers::Backends {
            upstream_port,
            deflate_upstream_port: deflate_upstream.as_ref().map_or(0, |(_, port)| *port),
            identity_port,
        },
        nofile,
        args.workers,
        servers::Peers {
            nginx: nginx.clone(),
            haproxy: haproxy.clone(),
        },
    );
    env.redis = redis.as_ref().map(|(_, port)| *port);
    env.redis_cluster = redis_cluster
        .as_ref()
        .map(|c| c.ports.clone())
        .unwrap_or_default();
    for route in PortcullisRoute::all() {
        serve_with_first_accepting(&mut env, &portcullis_bins, route)?;
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
    // The opt-in sections, in the order they run within a round.
    let mut extra: Vec<Section> = args.sizes.iter().map(|&s| Section::Sweep(s)).collect();
    if args.burst.is_some() {
        extra.push(Section::Burst);
    }
    if args.hold_relay.is_some() || args.hold_echo.is_some() {
        extra.push(Section::Hold);
    }
    if args.balance {
        extra.extend([Section::BalanceRoundRobin, Section::BalanceHash]);
    }
    if args.tracing {
        extra.extend([Section::TracesOff, Section::TracesOn]);
    }
    if args.compression {
        extra.extend(Section::COMPRESSION);
    }
    if args.http2 {
        extra.push(Section::Http2);
    }
    let mut results = Results::default();
    for &subject in subjects.iter().filter(|s| s.is_portcullis()) {
        for section in Section::ALL.into_iter().chain(extra.iter().copied()) {
            let route = env.route(subject, section);
            if !measure::runs(args, subject, section) {
                continue;
            }
            if section == Section::HandshakeCluster && env.redis.is_none() {
                results.skip(
                    subject,
                    section,
                    "redis-server is not installed (scripts/bootstrap --bench installs it)".into(),
                );
            } else if section == Section::HandshakeClusterRc && env.redis_cluster.is_empty() {
                results.skip(
                    subject,
                    section,
                    "redis-server or redis-cli is not installed (scripts/bootstrap --bench \
                     installs them)"
                        .into(),
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

    let started = Instant::now();
    // The load at --size is also the sweep's figure at that size, when the sweep has it.
    let sweep_has_size = args.sizes.contains(&args.size);
    let mut order = vec![Section::Load];
    order.extend(
        extra.iter().filter(
            |s| matches!(s, Section::Sweep(size) if !(sweep_has_size && *size == args.size)),
        ),
    );
    order.extend([Section::Idle, Section::Handshake]);
    order.extend(Section::PORTCULLIS_ONLY);
    order.extend(extra.iter().filter(|s| !matches!(s, Section::Sweep(_))));
    for round in 1..=args.rounds {
        for &section in &order {
            for &subject in &subjects {
                if !measure::runs(args, subject, section) || results.is_skipped(subject, section) {
                    continue;
                }
                upstream.check_alive()?;
                identity.check_alive()?;
                if let Some((proc, _)) = &mut deflate_upstream {
                    proc.check_alive()?;
                }
                let figures = measure::measure(&env, &rt, args, subject, section).map_err(|e| {
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
                let also_sweep = section == Section::Load
                    && sweep_has_size
                    && measure::runs(args, subject, Section::Sweep(args.size));
                for (figure, value) in figures {
                    results.add(subject, section, figure, value);
                    if also_sweep {
                        results.add(subject, Section::Sweep(args.size), figure, value);
                    }
                }
            }
        }
    }
    drop(upstream);
    drop(deflate_upstream);
    drop(identity);
    drop(redis);
    drop(redis_cluster);

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
        command,
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
            "workers": args.workers,
            "only": args.only,
            "quick": args.quick,
            "sizes": args.sizes,
            "burst": args.burst,
            "burst_watch_secs": args.burst_watch.as_secs_f64(),
            "hold_relay": args.hold_relay,
            "hold_echo": args.hold_echo,
            "balance": args.balance,
            "tracing": args.tracing,
            "compression": args.compression,
            "http2": args.http2,
            "http2_streams_per_connection": servers::H2_STREAMS_PER_CONNECTION,
            "compression_corpus_messages": compression::CORPUS_MESSAGES,
            "compression_messages_before_quiet": compression::MESSAGES_BEFORE_QUIET,
            "nofile": nofile,
            "client_source_addresses": load::SOURCES,
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
        extra,
        burst_watch_secs: args.burst_watch.as_secs_f64(),
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
    if let Some(path) = &args.svg {
        write_file(path, &sweep::svg(&results, &info))?;
    }
    Ok(())
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

/// `route` runs on the first of `bins` whose `--check` accepts its configuration (none: the
/// route is not measured).
fn serve_with_first_accepting(
    env: &mut Env,
    bins: &[PathBuf],
    route: PortcullisRoute,
) -> Result<(), String> {
    for bin in bins {
        if servers::accepts(env, bin, route)? {
            env.portcullis.push((route, bin.clone()));
            break;
        }
    }
    Ok(())
}
