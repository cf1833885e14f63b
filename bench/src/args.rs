//! The command line: every option, its default, and the checks that can be made before anything
//! starts.

use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
portcullis-bench - Portcullis vs NGINX vs HAProxy, each terminating wss in front of one upstream
echo server, driven in turn by the same closed-loop load generator

USAGE:
    portcullis-bench [OPTIONS]
    portcullis-bench --soak DURATION [SOAK OPTIONS]

OPTIONS:
    --conns N           connections of the closed-loop load, and handshakes in flight [50]
    --size S            message size in bytes (binary messages) [128]
    --duration SECS     measured load per server and round [10]
    --idle N            idle connections held for the memory figure [5000]
    --handshakes N      handshakes per server and round (also at the size of --hold-*) [2000]
    --rounds N          rounds; each figure is the median over them [3]
    --workers N         worker processes or threads of every proxy: NGINX worker_processes,
                        HAProxy nbthread, Portcullis [server] threads [2]
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

OPT-IN PHASES:
    --sizes LIST        message-size sweep: the load phase once per size (bytes, e.g.
                        64,1024,4096,65536) for every relay and Portcullis's echo route
    --svg FILE          draw the sweep (CPU per message and messages per second by size) as SVG
    --burst N           retention: open N connections, close them all, watch the RSS fall
    --burst-watch SECS  how long to watch the RSS after the burst closes [30]
    --hold-relay N      hold N relayed connections through every proxy, with the handshake
                        rate measured at that size
    --hold-echo M       hold M connections on Portcullis's echo route, likewise
    --balance           Portcullis's relay route over three upstream URLs: handshakes by round
                        robin, then by balance = \"hash\" of the client address, in each round
    --tracing           Portcullis's relay handshakes without [tracing], then with it (every
                        handshake and session recorded, exported to a sink), in each round
    --compression       permessage-deflate on a JSON chat corpus: closed-loop load with and
                        without compression through Portcullis's relay (passing compressed
                        messages through to a compressing upstream echo), its echo route and
                        NGINX; memory per idle compressed socket (relay and echo, --idle of
                        them, with and without context takeover)
    --http2             WebSockets over HTTP/2 (RFC 8441) on Portcullis's relay and echo routes
                        (and the baseline's relay): new wss connections against new streams on
                        an open HTTP/2 connection (per second, CPU per handshake), the RSS of an
                        extra idle stream on shared connections (--idle streams), --size-byte
                        messages over --conns wss connections against --conns streams of one
                        connection; a build without [listeners.tls] http2 gives the wss figures

SOAK (runs alone: none of the phases above):
    --soak DURATION     Portcullis's relay route for DURATION (e.g. 90s, 5m, 1h, 1h30m):
                        cycles of held sockets, handshake churn and message load, with the
                        gateway's RSS and open descriptors sampled every interval
    --soak-hold N       sockets held in each cycle [3000]
    --soak-interval D   the length of a cycle, and the sampling interval [60s]
    --soak-json FILE    write the samples and the drift as JSON
    --soak-svg FILE     draw RSS and descriptors over time as SVG

NGINX and HAProxy are looked up on PATH and in /usr/sbin (scripts/bench installs them).";

/// The worker count of every proxy unless `--workers` says otherwise: the machine's cores.
pub const DEFAULT_WORKERS: usize = 2;

pub struct Args {
    pub conns: usize,
    pub size: usize,
    pub duration: f64,
    pub idle: usize,
    pub handshakes: usize,
    pub rounds: usize,
    pub workers: usize,
    pub only: Vec<String>,
    pub portcullis: Vec<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub quick: bool,
    /// `--sizes`, sorted, without repeats; empty without the option.
    pub sizes: Vec<usize>,
    pub svg: Option<PathBuf>,
    pub burst: Option<usize>,
    pub burst_watch: Duration,
    pub hold_relay: Option<usize>,
    pub hold_echo: Option<usize>,
    /// `--balance`: round robin against `balance = "hash"`.
    pub balance: bool,
    /// `--tracing`: handshakes without and with `[tracing]`.
    pub tracing: bool,
    pub compression: bool,
    /// `--http2`: new `wss` connections against new streams on an open HTTP/2 connection.
    pub http2: bool,
    pub soak: Option<Soak>,
}

/// The soak's options.
pub struct Soak {
    pub duration: Duration,
    pub hold: usize,
    pub interval: Duration,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
}

impl Args {
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64((self.duration / 5.0).min(2.0))
    }

    /// Pause for the servers to settle before a memory or CPU reading.
    pub fn settle(&self) -> Duration {
        Duration::from_millis(if self.quick { 200 } else { 1000 })
    }

    /// How long held connections stay idle before the memory reading: idle means idle for a
    /// while. Every server here gives a quiet connection's buffers back (NGINX and HAProxy with
    /// OpenSSL's release-buffers mode as soon as a read finds nothing, Portcullis once a socket
    /// has been quiet for a second), and the figure is what an idle connection costs, not one
    /// that has just spoken.
    pub fn idle_settle(&self) -> Duration {
        Duration::from_millis(if self.quick { 200 } else { 5000 })
    }

    pub fn wants(&self, name: &str) -> bool {
        self.only.iter().any(|o| o == name)
    }
}

/// `90`, `90s`, `5m`, `1h`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (e.g. 90s, 5m, 1h, 1h30m)");
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs > 0.0)
            .then(|| Duration::from_secs_f64(secs))
            .ok_or_else(bad);
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * unit;
        rest = &rest[unit_len..];
    }
    (total > 0.0)
        .then(|| Duration::from_secs_f64(total))
        .ok_or_else(bad)
}

/// The arguments after the program's name; `Ok(None)` for `--help`.
pub fn parse(argv: &[String]) -> Result<Option<Args>, String> {
    fn num<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
        v.ok_or(format!("{flag} needs a value"))?
            .parse()
            .map_err(|_| format!("{flag}: not a number"))
    }
    fn duration(flag: &str, v: Option<&String>) -> Result<Duration, String> {
        parse_duration(v.ok_or(format!("{flag} needs a value"))?)
            .map_err(|e| format!("{flag}: {e}"))
    }
    let quick = argv.iter().any(|a| a == "--quick");
    let mut a = Args {
        conns: 50,
        size: 128,
        duration: 10.0,
        idle: 5000,
        handshakes: 2000,
        rounds: 3,
        workers: DEFAULT_WORKERS,
        only: Vec::new(),
        portcullis: Vec::new(),
        baseline: None,
        json: None,
        markdown: None,
        quick,
        sizes: Vec::new(),
        svg: None,
        burst: None,
        burst_watch: Duration::from_secs(30),
        balance: false,
        tracing: false,
        hold_relay: None,
        hold_echo: None,
        compression: false,
        http2: false,
        soak: None,
    };
    if quick {
        (a.conns, a.size, a.duration, a.idle, a.handshakes, a.rounds) = (4, 64, 1.0, 40, 40, 1);
    }
    let mut soak = Soak {
        duration: Duration::ZERO,
        hold: 3000,
        interval: Duration::from_secs(60),
        json: None,
        svg: None,
    };
    let mut soak_options = Vec::new();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let path = |v: Option<&String>| -> Result<PathBuf, String> {
            Ok(v.ok_or(format!("{flag} needs a path"))?.into())
        };
        if flag.starts_with("--soak-") {
            soak_options.push(flag.clone());
        }
        match flag.as_str() {
            "--conns" => a.conns = num(flag, it.next())?,
            "--size" => a.size = num(flag, it.next())?,
            "--duration" => a.duration = num(flag, it.next())?,
            "--idle" => a.idle = num(flag, it.next())?,
            "--handshakes" => a.handshakes = num(flag, it.next())?,
            "--rounds" => a.rounds = num(flag, it.next())?,
            "--workers" => a.workers = num(flag, it.next())?,
            "--only" => {
                let list = it.next().ok_or("--only needs a list")?;
                a.only = list.split(',').map(|s| s.trim().to_string()).collect();
            }
            "--portcullis" => a.portcullis.push(path(it.next())?),
            "--baseline" => a.baseline = Some(path(it.next())?),
            "--json" => a.json = Some(path(it.next())?),
            "--markdown" => a.markdown = Some(path(it.next())?),
            "--sizes" => {
                let list = it.next().ok_or("--sizes needs a list")?;
                for s in list.split(',') {
                    a.sizes.push(
                        s.trim()
                            .parse()
                            .map_err(|_| format!("--sizes: {s:?} is not a number"))?,
                    );
                }
            }
            "--svg" => a.svg = Some(path(it.next())?),
            "--burst" => a.burst = Some(num(flag, it.next())?),
            "--burst-watch" => a.burst_watch = duration(flag, it.next())?,
            "--hold-relay" => a.hold_relay = Some(num(flag, it.next())?),
            "--hold-echo" => a.hold_echo = Some(num(flag, it.next())?),
            "--balance" => a.balance = true,
            "--tracing" => a.tracing = true,
            "--compression" => a.compression = true,
            "--http2" => a.http2 = true,
            "--soak" => soak.duration = duration(flag, it.next())?,
            "--soak-hold" => soak.hold = num(flag, it.next())?,
            "--soak-interval" => soak.interval = duration(flag, it.next())?,
            "--soak-json" => soak.json = Some(path(it.next())?),
            "--soak-svg" => soak.svg = Some(path(it.next())?),
            "--quick" => {}
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.conns == 0 || a.handshakes == 0 || a.idle == 0 || a.rounds == 0 || a.size == 0 {
        return Err("--conns, --size, --idle, --handshakes and --rounds must be at least 1".into());
    }
    if a.workers == 0 || a.workers > 64 {
        return Err("--workers must be between 1 and 64".into());
    }
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 3600.0) {
        return Err("--duration must be between 0 and 3600 seconds".into());
    }
    a.sizes.sort_unstable();
    a.sizes.dedup();
    for &size in a.sizes.iter().chain([&a.size]) {
        if size == 0 || size > 1 << 20 {
            return Err(
                "message sizes must be 1 byte to 1 MiB (Portcullis's default message limit)".into(),
            );
        }
    }
    if a.svg.is_some() && a.sizes.len() < 2 {
        return Err(
            "--svg draws the message-size sweep: give --sizes with two sizes or more".into(),
        );
    }
    if a.burst == Some(0) || a.hold_relay == Some(0) || a.hold_echo == Some(0) {
        return Err("--burst, --hold-relay and --hold-echo must be at least 1".into());
    }
    if a.burst_watch < Duration::from_secs(1) || a.burst_watch > Duration::from_secs(3600) {
        return Err("--burst-watch must be between 1 and 3600 seconds".into());
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
    if a.hold_echo.is_some() && !a.wants("portcullis") {
        return Err("--hold-echo holds Portcullis's echo route: add portcullis to --only".into());
    }
    if soak.duration.is_zero() {
        if let Some(flag) = soak_options.first() {
            return Err(format!(
                "{flag} is an option of the soak: add --soak DURATION"
            ));
        }
    } else {
        let phases = [
            ("--sizes", !a.sizes.is_empty()),
            ("--svg", a.svg.is_some()),
            ("--burst", a.burst.is_some()),
            ("--hold-relay", a.hold_relay.is_some()),
            ("--hold-echo", a.hold_echo.is_some()),
            ("--balance", a.balance),
            ("--tracing", a.tracing),
            ("--compression", a.compression),
            ("--http2", a.http2),
            ("--baseline", a.baseline.is_some()),
            ("--json", a.json.is_some()),
        ];
        if let Some((flag, _)) = phases.iter().find(|(_, given)| *given) {
            return Err(format!(
                "--soak runs alone, without {flag} (its JSON is --soak-json)"
            ));
        }
        if !a.wants("portcullis") {
            return Err("--soak measures Portcullis: add portcullis to --only".into());
        }
        if soak.hold == 0 || soak.interval < Duration::from_secs(1) {
            return Err("--soak-hold must be at least 1 and --soak-interval at least 1s".into());
        }
        a.soak = Some(soak);
    }
    Ok(Some(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>, String> {
        parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).unwrap().as_secs_f64();
        assert_eq!(d("90"), 90.0);
        assert_eq!(d("10s"), 10.0);
        assert_eq!(d("5m"), 300.0);
        assert_eq!(d("1h30m"), 5400.0);
        assert_eq!(d("500ms"), 0.5);
        for bad in ["", "m", "5x", "1h30", "-3", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_sorted_and_checked() {
        let a = args(&["--sizes", "4096,64,64,1024"]).unwrap().unwrap();
        assert_eq!(a.sizes, [64, 1024, 4096]);
        assert!(args(&["--sizes", "64,0"]).is_err());
        assert!(args(&["--sizes", "64,2000000"]).is_err());
        assert!(args(&["--svg", "x.svg", "--sizes", "64"]).is_err());
    }

    #[test]
    fn soak_runs_alone() {
        let a = args(&["--soak", "5m", "--soak-hold", "100"])
            .unwrap()
            .unwrap();
        let soak = a.soak.unwrap();
        assert_eq!((soak.duration.as_secs(), soak.hold), (300, 100));
        assert!(args(&["--soak", "5m", "--burst", "10"]).is_err());
        assert!(args(&["--soak-json", "x.json"]).is_err());
        assert!(args(&["--soak", "5m", "--only", "nginx"]).is_err());
    }

    #[test]
    fn quick_defaults_yield_to_explicit_options() {
        let a = args(&["--conns", "7", "--quick"]).unwrap().unwrap();
        assert_eq!((a.conns, a.size, a.rounds, a.workers), (7, 64, 1, 2));
    }
}
