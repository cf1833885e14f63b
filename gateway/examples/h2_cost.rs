//! What a WebSocket over HTTP/2 (RFC 8441) costs the gateway beside one over its own `wss`
//! connection, measured in one run on the real release binary (a figure, not a test):
//!
//! - handshakes: N new `wss` connections (TCP, a full TLS 1.3 handshake without resumption, the
//!   upgrade, the `101`) against N new extended CONNECT streams on one open HTTP/2 connection
//!   (the `200`); handshakes per second and the gateway's CPU time per handshake;
//! - idle: the gateway's RSS growth per idle WebSocket stream on shared connections;
//! - messages: C sockets each way in a closed loop of `--size`-byte binary round trips for
//!   `--seconds`: round trips per second and the gateway's CPU per round trip.
//!
//! ```text
//! cargo build --release -p portcullis --bin portcullis --example h2_cost
//! target/release/examples/h2_cost [--handshakes N] [--idle M] [--conns C] [--size B] [--seconds S]
//! ```
//!
//! CPU is `utime + stime` of the gateway from `/proc/PID/stat`, RSS its `VmRSS`.

#[path = "../../tests/e2e/support/h2_ws.rs"]
mod h2_ws;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use h2::client::SendRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use h2_ws::H2Ws;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// Bound on any one step (a connect, a handshake, a round trip).
const STEP: Duration = Duration::from_secs(20);

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `utime + stime` of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn tls(cert: &Path, alpn: &[&[u8]]) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert)? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every handshake is a full one, as a new client's is.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

struct Target {
    port: u16,
    cert: PathBuf,
}

impl Target {
    async fn wss(&self) -> Result<WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>> {
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await?;
        let name = ServerName::try_from("localhost")?;
        let stream = tls(&self.cert, &[])?.connect(name, tcp).await?;
        let url = format!("wss://localhost:{}/ws/echo", self.port);
        let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
        Ok(ws)
    }

    /// An HTTP/2 connection with room for many streams (its frames driven by a task).
    async fn h2(&self) -> Result<SendRequest<Bytes>> {
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await?;
        let name = ServerName::try_from("localhost")?;
        let stream = tls(&self.cert, &[b"h2"])?.connect(name, tcp).await?;
        let (send, conn) = h2::client::Builder::new()
            .initial_connection_window_size(16 << 20)
            .handshake(stream)
            .await?;
        tokio::spawn(conn);
        let send = send.ready().await?;
        let deadline = Instant::now() + STEP;
        while !send.is_extended_connect_protocol_enabled() {
            if Instant::now() > deadline {
                return Err("the gateway did not enable extended CONNECT".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(send)
    }
}

async fn h2_ws(send: &SendRequest<Bytes>, port: u16) -> Result<WebSocketStream<H2Ws>> {
    let mut request = http::Request::builder()
        .method("CONNECT")
        .uri(format!("https://localhost:{port}/ws/echo"))
        .header("sec-websocket-version", "13")
        .body(())?;
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let mut send = send.clone().ready().await?;
    let (response, stream) = send.send_request(request, false)?;
    let response = response.await?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()).into());
    }
    let io = H2Ws::new(stream, response.into_body());
    Ok(WebSocketStream::from_raw_socket(io, Role::Client, None).await)
}

/// Every socket in a closed loop of `payload` round trips for `run`: the round trips made and
/// the gateway's CPU seconds meanwhile.
async fn closed_loop<S: AsyncRead + AsyncWrite + Unpin>(
    sockets: &mut [WebSocketStream<S>],
    payload: &[u8],
    run: Duration,
    pid: u32,
) -> (u64, f64) {
    let cpu0 = cpu_seconds(pid);
    let until = Instant::now() + run;
    let counts = futures_util::future::join_all(sockets.iter_mut().map(|ws| async move {
        let mut n = 0u64;
        while Instant::now() < until {
            roundtrip(ws, payload).await.map(|()| n += 1).ok();
        }
        n
    }))
    .await;
    (counts.iter().sum(), cpu_seconds(pid) - cpu0)
}

async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    payload: &[u8],
) -> Result<()> {
    ws.send(Message::binary(payload.to_vec())).await?;
    loop {
        match tokio::time::timeout(STEP, ws.next()).await? {
            Some(Ok(Message::Binary(b))) if b.as_ref() == payload => return Ok(()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
}

/// Run `n` jobs, `at_once` at a time; the wall time and the gateway's CPU they took.
async fn measure<F, Fut>(pid: u32, n: usize, at_once: usize, job: F) -> Result<(f64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        let batch = at_once.min(n - done);
        let jobs = (0..batch).map(|_| job());
        for r in futures_util::future::join_all(jobs).await {
            r?;
        }
        done += batch;
    }
    Ok((t0.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu0))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let handshakes = arg("--handshakes", 2000);
    let idle = arg("--idle", 2000);
    let conns = arg("--conns", 50);
    let size = arg("--size", 64);
    let seconds = arg("--seconds", 5);
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/portcullis");
    let dir = tempfile::tempdir()?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let admin = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:{port}\"\n[listeners.tls]\ncert = \"cert.pem\"\n\
         key = \"key.pem\"\ngenerate_self_signed = true\nhttp2 = true\n\
         [admin]\naddress = \"127.0.0.1:{admin}\"\n\
         [limits]\nmax_pending_per_ip = 100000\n[http2]\nmax_concurrent_streams = 1000\n\
         [[routes]]\npath = \"/ws/echo\"\nmode = \"echo\"\nprefix = \"\"\n"
    );
    std::fs::write(dir.path().join("portcullis.toml"), config)?;
    let mut child: Child = Command::new(&binary)
        .args(["--config", "portcullis.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e} (build it first)", binary.display()))?;
    let pid = child.id();
    let target = Target {
        port,
        cert: dir.path().join("cert.pem"),
    };
    let deadline = Instant::now() + STEP;
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .is_err()
        || !target.cert.exists()
    {
        if Instant::now() > deadline {
            return Err("the gateway did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let load = cpu_load();

    // Handshakes, both ways in the same run.
    let (wss_s, wss_cpu) = measure(pid, handshakes, 20, || async {
        let mut ws = target.wss().await?;
        let _ = ws.close(None).await;
        Ok(())
    })
    .await?;
    let shared = target.h2().await?;
    let (h2_s, h2_cpu) = measure(pid, handshakes, 20, || async {
        let mut ws = h2_ws(&shared, port).await?;
        let _ = ws.close(None).await;
        Ok(())
    })
    .await?;
    println!(
        "handshakes: wss {:.0}/s {:.1} us CPU each; new stream on an open h2 connection {:.0}/s {:.1} us CPU each; CPU ratio h2/wss {:.3}",
        handshakes as f64 / wss_s,
        wss_cpu / handshakes as f64 * 1e6,
        handshakes as f64 / h2_s,
        h2_cpu / handshakes as f64 * 1e6,
        h2_cpu / wss_cpu
    );

    // Idle streams: RSS per stream, on connections of up to 1000 streams.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid);
    let mut held = Vec::new();
    let mut connections = Vec::new();
    for i in 0..idle {
        if i % 1000 == 0 {
            connections.push(target.h2().await?);
        }
        let mut ws = h2_ws(connections.last().unwrap(), port).await?;
        roundtrip(&mut ws, b"x").await?;
        held.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(pid);
    println!(
        "idle: {idle} streams on {} connections: {:.2} KiB RSS per stream",
        connections.len(),
        (after.saturating_sub(before)) as f64 / idle as f64
    );
    drop(held);
    drop(connections);

    // Messages: `conns` sockets each way, closed loop, `size` bytes.
    let payload = vec![7u8; size];
    let run = Duration::from_secs(seconds as u64);
    let mut h1 = Vec::new();
    for _ in 0..conns {
        h1.push(target.wss().await?);
    }
    let (h1_msgs, h1_cpu) = closed_loop(&mut h1, &payload, run, pid).await;
    drop(h1);
    let conn = target.h2().await?;
    let mut h2s = Vec::new();
    for _ in 0..conns {
        h2s.push(h2_ws(&conn, port).await?);
    }
    let (h2_msgs, h2_cpu) = closed_loop(&mut h2s, &payload, run, pid).await;
    println!(
        "messages ({size} B, {conns} sockets, {seconds} s): h1 {:.0}/s {:.2} us CPU each; h2 (one connection) {:.0}/s {:.2} us CPU each; h2/h1 msgs {:.2}, CPU per msg {:.2}",
        h1_msgs as f64 / run.as_secs_f64(),
        h1_cpu / h1_msgs as f64 * 1e6,
        h2_msgs as f64 / run.as_secs_f64(),
        h2_cpu / h2_msgs as f64 * 1e6,
        h2_msgs as f64 / h1_msgs as f64,
        (h2_cpu / h2_msgs as f64) / (h1_cpu / h1_msgs as f64)
    );
    println!("load average at start: {load}");
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

fn cpu_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
