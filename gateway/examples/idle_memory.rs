//! Resident memory per idle `wss` connection of the gateway.
//!
//! Starts the real `portcullis` binary on a free loopback port with a generated configuration
//! (a self-signed certificate in a temporary folder, one `echo` route), opens N WebSocket
//! connections over TLS, sends one message on each so that every session is really established,
//! leaves them all idle, and compares the gateway's VmRSS with and without them.
//!
//! ```text
//! cargo build --release -p portcullis --bin portcullis --example idle_memory
//! cargo run --release -p portcullis --example idle_memory -- [--conns N] [--binary PATH]
//! ```
//!
//! `--conns` defaults to 5000, `--binary` to `target/release/portcullis`. The output ends with
//! one JSON line holding the same figures, for scripts.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const USAGE: &str = "\
idle_memory - resident memory per idle wss connection of the portcullis gateway

USAGE:
    cargo run --release -p portcullis --example idle_memory -- [--conns N] [--binary PATH]

OPTIONS:
    --conns N        idle connections to open (default 5000)
    --settle SECS    how long they stay idle before memory is read (default 5)
    --binary PATH    gateway binary (default target/release/portcullis)
    -h, --help       this text";

const DEFAULT_CONNS: usize = 5000;
const DEFAULT_BINARY: &str = "target/release/portcullis";
/// Connections being set up at the same time.
const CONCURRENCY: usize = 200;
/// Connections opened and closed before the baseline is read.
const WARMUP_CONNS: usize = 4;
/// Bound on the whole measurement (start, connect, measure, close).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on the gateway's start (until its TLS port accepts).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one connection's TCP connect, TLS, WebSocket handshake and first echo.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on one connection's close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the gateway gets to settle before its memory is read.
/// How long the connections stay idle before memory is read: long enough for every socket to
/// have been quiet for `session::idle::QUIET` (1 s) and given its buffers back.
const DEFAULT_SETTLE: Duration = Duration::from_secs(5);
/// VmRSS is read this many times, `SAMPLE_GAP` apart, and the largest value is kept.
const SAMPLES: usize = 5;
const SAMPLE_GAP: Duration = Duration::from_millis(200);
/// Bound on the gateway's exit after SIGTERM; SIGKILL follows.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// File descriptors needed besides one per connection (listeners, logs, runtime).
const SPARE_FDS: u64 = 64;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;
type Ws = WebSocketStream<TlsStream<TcpStream>>;

struct Args {
    conns: usize,
    binary: PathBuf,
    settle: Duration,
}

fn parse_args() -> Result<Option<Args>> {
    let mut conns = DEFAULT_CONNS;
    let mut settle = DEFAULT_SETTLE;
    let mut binary = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "--conns" => {
                let v = value("a number")?;
                conns = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--conns: {v:?} is not a positive number"))?;
            }
            "--binary" => binary = Some(PathBuf::from(value("a path")?)),
            "--settle" => {
                let v = value("seconds")?;
                settle = v
                    .parse()
                    .ok()
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("--settle: {v:?} is not a number of seconds"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let binary = match binary {
        Some(path) => path,
        None => {
            // `cargo run` keeps the caller's folder; fall back to the workspace's target folder.
            let here = PathBuf::from(DEFAULT_BINARY);
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(DEFAULT_BINARY);
            if !here.exists() && workspace.exists() {
                workspace
            } else {
                here
            }
        }
    };
    if !binary.is_file() {
        return Err(format!(
            "gateway binary {} not found; build it with \
             `cargo build --release -p portcullis --bin portcullis` or pass --binary PATH",
            binary.display()
        )
        .into());
    }
    Ok(Some(Args {
        conns,
        binary,
        settle,
    }))
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (the gateway child inherits it) and return the
/// soft limit in effect.
fn raise_nofile_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            eprintln!(
                "warning: cannot raise RLIMIT_NOFILE from {} to {}: {}",
                limit.rlim_cur,
                limit.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(limit.rlim_cur)
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The gateway process. Dropping it kills the process if it still runs.
struct Gateway {
    child: Child,
    log: PathBuf,
}

impl Gateway {
    fn start(binary: &Path, config: &Path, log: &Path) -> Result<Gateway> {
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        Ok(Gateway {
            child,
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error when the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!("the gateway exited unexpectedly ({status})").into()),
        }
    }

    /// Wait until the TLS port accepts TCP connections and the certificate has been written.
    async fn wait_ready(&mut self, addr: SocketAddr, cert: &Path) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if cert.exists() && TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the gateway did not accept connections on {addr} within {}s",
                    START_TIMEOUT.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then wait (bounded); SIGKILL if it is still running after that.
    async fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid())?;
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!("kill(SIGTERM): {}", std::io::Error::last_os_error()).into());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child.kill()?;
        self.child.wait()?;
        Err(format!(
            "the gateway did not exit within {}s of SIGTERM; killed it",
            STOP_TIMEOUT.as_secs()
        )
        .into())
    }

    /// The last lines of the gateway's log, for error messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A field of `/proc/<pid>/status` given in kB (e.g. `VmRSS`).
fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status").into())
}

/// The largest VmRSS over a few samples.
async fn sample_rss(pid: u32) -> Result<u64> {
    let mut max = 0;
    for i in 0..SAMPLES {
        if i > 0 {
            tokio::time::sleep(SAMPLE_GAP).await;
        }
        max = max.max(proc_status_kib(pid, "VmRSS")?);
    }
    Ok(max)
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// A rustls client trusting only the gateway's self-signed certificate.
fn tls_connector(cert: &Path) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert)? {
        roots.add(der?)?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Small client buffers: the client's memory is not measured, but 5000 sockets with
/// tungstenite's default 128 KiB read buffer would still cost this process 640 MiB.
fn client_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// TCP, TLS, WebSocket handshake, then one echo round trip.
async fn open(connector: TlsConnector, port: u16) -> Result<Ws> {
    let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    tcp.set_nodelay(true)?;
    let tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let url = format!("wss://localhost:{port}/ws/echo");
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(url, tls, Some(client_ws_config()))
            .await
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
    ws.send(Message::text("hi")).await?;
    match ws.next().await {
        Some(Ok(Message::Text(reply))) if reply.as_str() == "echo: hi" => Ok(ws),
        other => Err(format!("expected the text reply \"echo: hi\", got {other:?}").into()),
    }
}

/// Open `n` connections, `CONCURRENCY` at a time. Fails on the first connection that fails.
async fn open_all(connector: &TlsConnector, port: u16, n: usize) -> Result<Vec<Ws>> {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let permits = permits.clone();
        let connector = connector.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            match tokio::time::timeout(CONNECT_TIMEOUT, open(connector, port)).await {
                Ok(result) => result,
                Err(_) => {
                    Err(format!("not established within {}s", CONNECT_TIMEOUT.as_secs()).into())
                }
            }
        });
    }
    let mut open = Vec::with_capacity(n);
    let step = (n / 5).max(1000);
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok(ws) => open.push(ws),
            Err(e) => {
                return Err(format!(
                    "connection failed after {} of {n} were open: {e}",
                    open.len()
                )
                .into())
            }
        }
        if open.len() % step == 0 && open.len() < n {
            eprintln!("  {} / {n} open", open.len());
        }
    }
    Ok(open)
}

/// Close every connection with a close handshake, `CONCURRENCY` at a time. Returns how many did
/// not close cleanly within `CLOSE_TIMEOUT`.
async fn close_all(conns: Vec<Ws>) -> usize {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for mut ws in conns {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let handshake = async {
                ws.close(None).await.ok()?;
                // The stream ends once the gateway's close reply has arrived.
                while let Some(Ok(_)) = ws.next().await {}
                Some(())
            };
            tokio::time::timeout(CLOSE_TIMEOUT, handshake).await.ok()?
        });
    }
    let mut unclean = 0;
    while let Some(joined) = tasks.join_next().await {
        if !matches!(joined, Ok(Some(()))) {
            unclean += 1;
        }
    }
    unclean
}

struct Report {
    conns: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    fds_before: usize,
    fds_after: usize,
}

impl Report {
    fn kib_per_conn(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) / self.conns as f64
    }

    fn print(&self) {
        println!("idle wss connections : {}", self.conns);
        println!("gateway VmRSS before : {} KiB", self.rss_before_kib);
        println!("gateway VmRSS after  : {} KiB", self.rss_after_kib);
        println!("per connection       : {:.2} KiB", self.kib_per_conn());
        println!(
            "gateway open fds     : {} -> {}",
            self.fds_before, self.fds_after
        );
        println!(
            "{{\"connections\":{},\"rss_before_kib\":{},\"rss_after_kib\":{},\"kib_per_connection\":{:.2},\"fds_before\":{},\"fds_after\":{}}}",
            self.conns,
            self.rss_before_kib,
            self.rss_after_kib,
            self.kib_per_conn(),
            self.fds_before,
            self.fds_after
        );
    }
}

/// Everything between "the gateway runs" and "the connections are closed again".
async fn measure(
    gateway: &mut Gateway,
    port: u16,
    cert: &Path,
    conns: usize,
    settle: Duration,
) -> Result<Report> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    gateway.wait_ready(addr, cert).await?;
    let connector = tls_connector(cert)?;
    let pid = gateway.pid();

    let warmup = open_all(&connector, port, WARMUP_CONNS).await?;
    if close_all(warmup).await > 0 {
        return Err("warm-up connections did not close cleanly".into());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    gateway.check_alive()?;
    let rss_before_kib = sample_rss(pid).await?;
    let fds_before = open_fds(pid)?;
    eprintln!(
        "baseline: VmRSS {rss_before_kib} KiB, {fds_before} fds; opening {conns} connections"
    );

    let started = Instant::now();
    let open = open_all(&connector, port, conns).await?;
    eprintln!(
        "  {conns} / {conns} open in {:.1}s; idle for {:.1}s",
        started.elapsed().as_secs_f64(),
        settle.as_secs_f64()
    );
    tokio::time::sleep(settle).await;
    gateway.check_alive()?;
    let rss_after_kib = sample_rss(pid).await?;
    let fds_after = open_fds(pid)?;

    let unclean = close_all(open).await;
    if unclean > 0 {
        eprintln!("warning: {unclean} connection(s) did not close cleanly");
    }
    Ok(Report {
        conns,
        rss_before_kib,
        rss_after_kib,
        fds_before,
        fds_after,
    })
}

async fn run(args: Args, nofile: u64) -> Result<Report> {
    let needed = args.conns as u64 + SPARE_FDS;
    if nofile < needed {
        return Err(format!(
            "--conns {} needs about {needed} file descriptors, but RLIMIT_NOFILE is {nofile}",
            args.conns
        )
        .into());
    }
    // Declared first so that it is removed last, after the gateway has stopped.
    let dir = tempfile::Builder::new()
        .prefix("portcullis-idle-memory-")
        .tempdir()?;
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let config = dir.path().join("portcullis.toml");
    let log = dir.path().join("gateway.log");
    let port = free_port()?;
    fs::write(
        &config,
        format!(
            "[server]\nthreads = 2\n\n[admin]\nenabled = false\n\n[[listeners]]\n\
             address = \"127.0.0.1:{port}\"\n\n[listeners.tls]\ncert = {cert:?}\nkey = {key:?}\n\
             generate_self_signed = true\n\n[[routes]]\npath = \"/ws/echo\"\nmode = \"echo\"\n",
            cert = cert.display().to_string(),
            key = key.display().to_string(),
        ),
    )?;

    eprintln!(
        "starting {} on 127.0.0.1:{port} (RLIMIT_NOFILE {nofile})",
        args.binary.display()
    );
    let mut gateway = Gateway::start(&args.binary, &config, &log)?;
    let outcome = tokio::select! {
        r = tokio::time::timeout(RUN_TIMEOUT, measure(&mut gateway, port, &cert, args.conns, args.settle)) => {
            r.unwrap_or_else(|_| Err(format!("timed out after {}s", RUN_TIMEOUT.as_secs()).into()))
        }
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    let stopped = gateway.stop().await;
    let report = outcome.map_err(|e| -> Error {
        let tail = gateway.log_tail();
        if tail.is_empty() {
            e
        } else {
            format!("{e}\n--- end of the gateway's log ---\n{tail}").into()
        }
    })?;
    stopped?;
    drop(gateway);
    dir.close()?;
    Ok(report)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle_memory: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = raise_nofile_limit().and_then(|nofile| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(args, nofile))
    });
    match result {
        Ok(report) => {
            report.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idle_memory: {e}");
            ExitCode::FAILURE
        }
    }
}
