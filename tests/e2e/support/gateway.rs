//! The gateway under test: the real `portcullis` binary in its own temporary folder, with its
//! listeners on kernel-chosen ports (`127.0.0.1:0`) that the harness learns from its log. The
//! process is killed and the folder removed when the handle drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::client::*;
use super::process::binary;
use super::wait::*;

/// A listener address the kernel gives a free port for, race-free.
pub const ANY_PORT: &str = "127.0.0.1:0";

/// What the gateway logs for its first public listener, TLS or not (the module path in the log
/// line's prefix may change; the message does not).
const PUBLIC_LINES: [&str; 2] = ["listening on wss://", "listening on ws://"];
/// What it logs for the admin listener.
const ADMIN_LINE: &str = "admin listener on http://";

/// A running gateway; killed on drop.
pub struct Gateway {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub cert: PathBuf,
    pub tls: bool,
}

/// The base configuration every test starts from, on kernel-chosen ports; `extra` TOML is
/// appended (new tables only).
pub fn config_text(tls: bool, extra: &str) -> String {
    config_text_at(ANY_PORT, ANY_PORT, tls, "", extra)
}

/// [`config_text`] on the given listener and admin addresses, with `admin_extra` keys added to
/// the `[admin]` table.
pub fn config_text_at(
    address: &str,
    admin_address: &str,
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
        "[[listeners]]\naddress = \"{address}\"\n{tls_table}\n\
         [admin]\naddress = \"{admin_address}\"\n{admin_extra}\n\
         [[routes]]\npath = \"/\"\nmode = \"static\"\nbody = \"Hello, World!\"\n\n\
         [[routes]]\npath = \"/ws/echo\"\nmode = \"echo\"\n\n{extra}\n"
    )
}

impl Gateway {
    /// Start with the base configuration over TLS plus `extra`.
    pub async fn start(extra: &str) -> Gateway {
        Gateway::start_with(true, extra).await
    }

    pub async fn start_with(tls: bool, extra: &str) -> Gateway {
        Gateway::start_full(tls, "", extra, |_| {}).await
    }

    /// Start after `prepare` has written files (keys, policies) into the gateway's folder.
    pub async fn start_prepared(tls: bool, extra: &str, prepare: impl FnOnce(&Path)) -> Gateway {
        Gateway::start_full(tls, "", extra, prepare).await
    }

    /// Start over TLS with `tls_extra` keys in `[listeners.tls]` (say, `client_ca`), after
    /// `prepare` has written files into the gateway's folder.
    pub async fn start_tls_extra(
        tls_extra: &str,
        extra: &str,
        prepare: impl FnOnce(&Path),
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let marker = "generate_self_signed = true\n";
        let text = config_text(true, extra).replacen(marker, &format!("{marker}{tls_extra}\n"), 1);
        std::fs::write(dir.path().join("portcullis.toml"), text).unwrap();
        let cert = dir.path().join("certs/cert.pem");
        Gateway::run(dir, &["--config", "portcullis.toml"], cert, true).await
    }

    /// Start over TLS with `admin_extra` keys in `[admin]` and `extra` tables appended.
    pub async fn start_admin(admin_extra: &str, extra: &str) -> Gateway {
        Gateway::start_full(true, admin_extra, extra, |_| {}).await
    }

    /// Start over TLS with `admin_extra` keys in `[admin]` and `extra` tables appended, after
    /// `prepare` has written files into the gateway's folder.
    pub async fn start_full_prepared(
        admin_extra: &str,
        extra: &str,
        prepare: impl FnOnce(&Path),
    ) -> Gateway {
        Gateway::start_full(true, admin_extra, extra, prepare).await
    }

    async fn start_full(
        tls: bool,
        admin_extra: &str,
        extra: &str,
        prepare: impl FnOnce(&Path),
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let text = config_text_at(ANY_PORT, ANY_PORT, tls, admin_extra, extra);
        std::fs::write(dir.path().join("portcullis.toml"), text).unwrap();
        let cert = dir.path().join("certs/cert.pem");
        Gateway::run(dir, &["--config", "portcullis.toml"], cert, tls).await
    }

    /// Run the binary with `args` in `dir` (logging to `dir/gateway.log`), clients trusting
    /// `cert`; returns once both listeners accept connections (bounded).
    pub async fn run(dir: tempfile::TempDir, args: &[&str], cert: PathBuf, tls: bool) -> Gateway {
        let child = spawn(args, dir.path());
        let mut gw = Gateway {
            child: Some(child),
            dir,
            port: 0,
            admin_port: 0,
            cert,
            tls,
        };
        let (public, admin) = gw.listening_addresses().await;
        (gw.port, gw.admin_port) = (public.port(), admin.port());
        for addr in [public, admin] {
            eventually(START, format!("{addr} accepting connections"), || async {
                // One connection, closed at once: a probe (for TLS, one failed TLS handshake).
                TcpStream::connect(addr).await.map(drop)
            })
            .await;
        }
        gw
    }

    /// The concrete public and admin addresses, from the log lines the gateway writes at start
    /// (bounded; a gateway that exits first fails at once, with its log).
    async fn listening_addresses(&mut self) -> (SocketAddr, SocketAddr) {
        let deadline = Instant::now() + START;
        loop {
            let log = self.log();
            let public = PUBLIC_LINES.iter().find_map(|l| address_after(&log, l));
            if let (Some(public), Some(admin)) = (public, address_after(&log, ADMIN_LINE)) {
                return (public, admin);
            }
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the gateway exited ({status}) before listening; log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "no listening addresses in the gateway's log within {START:?}; log:\n{log}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// The log's complete lines so far.
    pub fn log(&self) -> String {
        complete_lines(&self.log_path())
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("the gateway has exited").id() as i32
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Send a signal: "TERM", "INT", "HUP", "QUIT" or "KILL".
    pub fn signal(&self, sig: &str) {
        let number = match sig {
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "HUP" => libc::SIGHUP,
            "QUIT" => libc::SIGQUIT,
            "KILL" => libc::SIGKILL,
            other => panic!("no such signal in the tests: {other}"),
        };
        // SAFETY: kill(2) on our own child, which is not yet reaped (so the pid is its own).
        let rc = unsafe { libc::kill(self.pid(), number) };
        assert_eq!(rc, 0, "kill -{sig} failed");
    }

    /// Wait (bounded) for the process to exit successfully; returns how long it took.
    pub async fn wait_exit(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("the gateway has exited already");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                assert!(
                    status.success(),
                    "exit status {status}; log:\n{}",
                    self.log()
                );
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "gateway did not exit within {limit:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Wait (bounded) for the process to end by `signal` (say `libc::SIGKILL` after
    /// `signal("KILL")`); returns how long it took.
    pub async fn wait_killed(&mut self, signal: i32, limit: Duration) -> Duration {
        use std::os::unix::process::ExitStatusExt;
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("the gateway has exited already");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                assert_eq!(status.signal(), Some(signal), "exit status {status}");
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "gateway still running {limit:?} after the signal"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Wait (bounded) until the log holds a line for which `pred` holds; returns that line.
    pub async fn wait_log_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        eventually(STEP, what, || async {
            let log = self.log();
            log.lines().find(|l| pred(l)).map(str::to_string).ok_or(log)
        })
        .await
    }

    /// Wait (bounded) until the log holds `needle`: for lines the gateway writes as a result of
    /// something the test did (a session's access-log line is written when the session ends).
    pub async fn wait_log(&self, needle: &str) {
        self.wait_log_line(&format!("{needle:?} in the log"), |l| l.contains(needle))
            .await;
    }

    /// The public listener's address, as its configuration would name it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The admin listener's address, as its configuration would name it.
    pub fn admin_address(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
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

    pub async fn ws_with(&self, path: &str, config: Option<WebSocketConfig>) -> Wss {
        self.ws_request(self.url(path), config).await.0
    }

    /// A WebSocket client session on `path` whose handshake carries `headers`; also returns the
    /// 101 answer.
    pub async fn ws_headers(
        &self,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> (Wss, Response) {
        let mut req = self.url(path).into_client_request().unwrap();
        for (name, value) in headers {
            req.headers_mut().insert(*name, value.parse().unwrap());
        }
        self.ws_request(req, None).await
    }

    /// A WebSocket client session for `request` (which must get a 101), over TLS.
    pub async fn ws_request(
        &self,
        request: impl IntoClientRequest + Unpin,
        config: Option<WebSocketConfig>,
    ) -> (Wss, Response) {
        let tls = self.tls().await;
        let (ws, resp) = tokio::time::timeout(
            STEP,
            tokio_tungstenite::client_async_with_config(request, tls, config),
        )
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
        assert_eq!(resp.status(), 101);
        (ws, resp)
    }

    /// Send raw bytes over TLS and read the whole answer (the gateway closes after errors).
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut tls = self.tls().await;
        tls.write_all(request).await.unwrap();
        let mut out = Vec::new();
        read_until(&mut tls, &mut out, "the whole answer", |_| false).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Send a handshake for `target` with `extra` header lines and return the answer's status and
    /// head (without waiting for the connection to end, since a 101 keeps it open).
    pub async fn try_handshake(&self, target: &str, extra: &str) -> (u16, String) {
        let (status, head, _) = self.handshake_open(target, extra).await;
        (status, head)
    }

    /// [`Gateway::try_handshake`], keeping the connection open: status, head and the stream.
    pub async fn handshake_open(
        &self,
        target: &str,
        extra: &str,
    ) -> (u16, String, TlsStream<TcpStream>) {
        let mut tls = self.tls().await;
        tls.write_all(handshake(target, extra).as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        read_until(&mut tls, &mut got, "the answer's head", has_head).await;
        let text = String::from_utf8_lossy(&got).into_owned();
        (status_of(&text), text, tls)
    }

    /// A handshake for `target` with `extra` header lines over TLS presenting `identity`:
    /// status and head, or what failed (the TLS handshake, or the connection before an answer:
    /// under TLS 1.3 a refused client certificate shows on the first read).
    pub async fn try_handshake_as(
        &self,
        target: &str,
        extra: &str,
        identity: Option<&ClientIdentity>,
    ) -> Result<(u16, String), String> {
        let (status, head, _) = self.handshake_open_as(target, extra, identity).await?;
        Ok((status, head))
    }

    /// [`Gateway::try_handshake_as`], keeping the connection open.
    pub async fn handshake_open_as(
        &self,
        target: &str,
        extra: &str,
        identity: Option<&ClientIdentity>,
    ) -> Result<(u16, String, TlsStream<TcpStream>), String> {
        let mut tls = try_tls_connect_as(self.port, &self.cert, "localhost", identity)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        tls.write_all(handshake(target, extra).as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !has_head(&got) {
            use tokio::io::AsyncReadExt;
            match tokio::time::timeout(STEP, tls.read(&mut chunk)).await {
                Err(_) => panic!("no answer in time; got {got:?}"),
                Ok(Err(e)) => return Err(format!("read: {e}")),
                Ok(Ok(0)) => return Err("closed before an answer".into()),
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            }
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        Ok((status_of(&text), text, tls))
    }

    /// GET over plain HTTP on the admin port: the whole answer.
    pub async fn admin_get(&self, path: &str) -> String {
        http_get(self.admin_port, path, "").await
    }

    /// Wait (bounded) until `/metrics` has the sample line `sample` (`name{labels} value`, all
    /// of the line); returns the scrape.
    pub async fn wait_metric(&self, sample: &str) -> String {
        self.wait_metric_with(sample, "").await
    }

    /// [`Gateway::wait_metric`], the scrapes sent with extra `headers` lines (each ending in
    /// \r\n), such as the admin token's [`bearer`] line.
    pub async fn wait_metric_with(&self, sample: &str, headers: &str) -> String {
        eventually(STEP, format!("{sample:?} in /metrics"), || async {
            let scrape = http_get(self.admin_port, "/metrics", headers).await;
            done_or(scrape.lines().any(|l| l == sample), scrape.clone()).map(|()| scrape)
        })
        .await
    }

    /// GET on the admin port with extra `headers` lines: status and body.
    pub async fn admin_request(&self, path: &str, headers: &str) -> (u16, String) {
        status_and_body(&http_get(self.admin_port, path, headers).await)
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

/// The complete lines of a log file so far (a line being written is left out).
pub fn complete_lines(path: &Path) -> String {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    text
}

/// Wait (bounded) until the log file at `path` holds `needle` (for processes other than a
/// [`Gateway`], such as the new process of an upgrade).
pub async fn wait_file_log(path: &Path, needle: &str) -> String {
    eventually(
        STEP,
        format!("{needle:?} in {}", path.display()),
        || async {
            let log = complete_lines(path);
            done_or(log.contains(needle), log.clone()).map(|()| log)
        },
    )
    .await
}

/// The socket address written right after the first `marker` in `log`, as in
/// `listening on wss://127.0.0.1:33169`.
fn address_after(log: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &log[log.find(marker)? + marker.len()..];
    let end =
        rest.find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))?;
    rest[..end].parse().ok()
}
