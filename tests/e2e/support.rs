//! Test support: start the real `portcullis` binary on free loopback ports with a generated
//! certificate, and talk to it over real TLS and WebSocket clients. Everything is bounded in time
//! and the process is killed when the handle drops.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject, pki_types::CertificateDer};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Upper bound for any single step of a test.
pub const STEP: Duration = Duration::from_secs(10);

pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running gateway; killed on drop.
pub struct Gateway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub cert: PathBuf,
    pub tls: bool,
}

/// The base configuration every test starts from; `extra` TOML is appended (new tables only).
pub fn config_text(port: u16, admin_port: u16, tls: bool, extra: &str) -> String {
    config_text_admin(port, admin_port, tls, "", extra)
}

/// [`config_text`] with `admin_extra` keys added to the `[admin]` table.
pub fn config_text_admin(
    port: u16,
    admin_port: u16,
    tls: bool,
    admin_extra: &str,
    extra: &str,
) -> String {
    let tls_table = if tls {
        "[listeners.tls]\ncert = \"certs/cert.pem\"\nkey = \"certs/key.pem\"\ngenerate_self_signed = true\n"
    } else {
        ""
    };
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:{port}\"\n{tls_table}\n\
         [admin]\naddress = \"127.0.0.1:{admin_port}\"\n{admin_extra}\n\
         [[routes]]\npath = \"/\"\nmode = \"static\"\nbody = \"Hello, World!\"\n\n\
         [[routes]]\npath = \"/ws/echo\"\nmode = \"echo\"\n\n{extra}\n"
    )
}

impl Gateway {
    /// Start with the base configuration over TLS plus `extra`.
    pub fn start(extra: &str) -> Gateway {
        Gateway::start_with(true, extra)
    }

    pub fn start_with(tls: bool, extra: &str) -> Gateway {
        Gateway::start_full(tls, "", extra, |_| {})
    }

    /// Start after `prepare` has written files (keys, policies) into the gateway's folder.
    pub fn start_prepared(tls: bool, extra: &str, prepare: impl FnOnce(&Path)) -> Gateway {
        Gateway::start_full(tls, "", extra, prepare)
    }

    /// Start over TLS with `admin_extra` keys in `[admin]` and `extra` tables appended.
    pub fn start_admin(admin_extra: &str, extra: &str) -> Gateway {
        Gateway::start_full(true, admin_extra, extra, |_| {})
    }

    fn start_full(
        tls: bool,
        admin_extra: &str,
        extra: &str,
        prepare: impl FnOnce(&Path),
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let (port, admin_port) = (free_port(), free_port());
        let config = dir.path().join("portcullis.toml");
        let text = config_text_admin(port, admin_port, tls, admin_extra, extra);
        std::fs::write(&config, text).unwrap();
        let child = spawn(&["--config", config.to_str().unwrap()], dir.path());
        let gw = Gateway {
            child: Some(child),
            cert: dir.path().join("certs/cert.pem"),
            dir,
            port,
            admin_port,
            tls,
        };
        gw.wait_ready();
        gw
    }

    /// Wait until both listeners accept connections (bounded).
    pub fn wait_ready(&self) {
        wait_listening(self.port, self.log_path().as_path());
        wait_listening(self.admin_port, self.log_path().as_path());
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait (bounded) for the process to exit; returns how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exit status {status}; log:\n{}",
                    self.log()
                );
                self.child = None;
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "gateway did not exit within {limit:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://localhost:{}{path}", self.port)
    }

    /// A TLS connection to the public port that trusts the generated certificate.
    pub async fn tls(&self) -> TlsStream<TcpStream> {
        tls_connect(self.port, &self.cert).await
    }

    /// A WebSocket client session on `path`.
    pub async fn ws(&self, path: &str) -> Wss {
        self.ws_with(path, None).await
    }

    /// A WebSocket client session on `path` whose handshake carries `headers`; also returns the
    /// 101 answer.
    pub async fn ws_headers(
        &self,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> (
        Wss,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = self.url(path).into_client_request().unwrap();
        for (name, value) in headers {
            req.headers_mut().insert(*name, value.parse().unwrap());
        }
        let tls = self.tls().await;
        tokio::time::timeout(STEP, tokio_tungstenite::client_async(req, tls))
            .await
            .expect("handshake timed out")
            .expect("handshake failed")
    }

    pub async fn ws_with(&self, path: &str, config: Option<WebSocketConfig>) -> Wss {
        let tls = self.tls().await;
        let (ws, resp) = tokio::time::timeout(
            STEP,
            tokio_tungstenite::client_async_with_config(self.url(path), tls, config),
        )
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
        assert_eq!(resp.status(), 101);
        ws
    }

    /// Send raw bytes over TLS and read the whole answer (the gateway closes after errors).
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut tls = self.tls().await;
        tls.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(STEP, tls.read_to_end(&mut out))
            .await
            .expect("no answer in time");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Send a handshake for `path` with `extra` header lines and return the answer's status and
    /// head (without waiting for the connection to end, since a 101 keeps it open).
    pub async fn try_handshake(&self, target: &str, extra: &str) -> (u16, String) {
        let mut tls = self.tls().await;
        tls.write_all(handshake(target, extra).as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + STEP;
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout_at(deadline, tls.read(&mut chunk))
                .await
                .expect("no answer in time")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        (status_of(&text), text)
    }

    /// GET over plain HTTP on the admin port.
    pub fn admin_get(&self, path: &str) -> String {
        http_get(self.admin_port, path)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawn the binary in `cwd`, logging to `cwd/gateway.log`.
pub fn spawn(args: &[&str], cwd: &Path) -> Child {
    spawn_logged(args, cwd, "gateway.log")
}

/// Spawn the binary in `cwd`, logging to `cwd/log_name`.
pub fn spawn_logged(args: &[&str], cwd: &Path, log_name: &str) -> Child {
    let log = std::fs::File::create(cwd.join(log_name)).unwrap();
    Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn wait_listening(port: u16, log: &Path) {
    let start = Instant::now();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "port {port} never opened; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A TLS client connection trusting only `cert`.
pub async fn tls_connect(port: u16, cert: &Path) -> TlsStream<TcpStream> {
    try_tls_connect(port, cert, "localhost")
        .await
        .expect("TLS handshake failed")
}

/// A TLS client connection to `port` asking for server name `name` and trusting only `cert`.
pub async fn try_tls_connect(
    port: u16,
    cert: &Path,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(
        STEP,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
}

/// A blocking HTTP/1.1 GET (one request, connection closed after).
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = StdTcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The next data or close message, skipping pings/pongs (bounded).
pub async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Message {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no message in time")
            .expect("stream ended")
            .expect("read error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// Send one message and return the reply.
pub async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    msg: Message,
) -> Message {
    ws.send(msg).await.unwrap();
    next_message(ws).await
}

/// The close code and reason of the next message, which must be a close.
pub async fn expect_close<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> (u16, String) {
    match next_message(ws).await {
        Message::Close(Some(frame)) => (u16::from(frame.code), frame.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// The status line's code of a raw HTTP answer.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// A valid handshake for `path`, with `extra` header lines (each ending in \r\n).
pub fn handshake(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// A client frame as bytes: FIN set, the given opcode, masked (unless `mask` is `None`).
pub fn client_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    raw_frame(0x80 | opcode, payload, mask)
}

/// A raw frame: first byte as given (FIN, RSV, opcode), masked when `mask` is set.
pub fn raw_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(mask_bit | payload.len() as u8);
    } else {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Kills a child process when dropped (for processes a test starts besides its `Gateway`).
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An external tool on PATH (`scripts/bootstrap --test` installs the ones the tests use). Under
/// CI its absence is a failure, so a green CI cannot hide a missing install step; elsewhere the
/// caller skips the checks that need it.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing: run scripts/bootstrap --test"
        );
        eprintln!("{name} not found: skipping its checks (scripts/bootstrap --test installs it)");
    }
    found
}

/// Run a command that must succeed; its stdout and stderr.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}
