//! Headless browsers driven through the W3C WebDriver HTTP API: Debian's Chromium under
//! ChromeDriver and Debian's Firefox ESR under geckodriver (from crates.io). A few JSON requests
//! over loopback, the same for both, no client library and no npm. The driver runs in a process
//! group of its own, which the browser and its helper processes inherit (Chromium's crash
//! handlers, which leave the group, exit with the browser), so dropping the handle kills them
//! all, also when a test fails half-way.
//!
//! Both trust the test's CA the way a user's browser trusts a private CA: a fresh NSS database
//! (`certutil`, from libnss3-tools) with the CA as a trust anchor for servers — Firefox's in its
//! new profile, Chromium's in `$HOME/.pki/nssdb` of a fresh home. No certificate check is
//! switched off, so any other certificate error still fails.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::status_and_body;
use super::process::{run_ok, tool};
use super::wait::*;

/// Chromium's flags here: headless as root, and none of its background connections (updates,
/// sync, safe browsing, QUIC probes), which a closed network refuses, many at a time.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Which browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
        }
    }

    /// The browser's binary and its WebDriver server.
    fn tools(self) -> &'static [&'static str; 2] {
        match self {
            Engine::Chromium => &["chromium", "chromedriver"],
            Engine::Firefox => &["firefox-esr", "geckodriver"],
        }
    }

    /// What the driver prints once it listens, followed by the port (and, for ChromeDriver, a
    /// full stop); the kernel chose the port for `--port=0`.
    fn started(self) -> &'static str {
        match self {
            Engine::Chromium => "ChromeDriver was started successfully on port ",
            Engine::Firefox => "Listening on 127.0.0.1:",
        }
    }
}

/// One browser session under its WebDriver server; both are killed on drop.
pub struct Browser {
    pub engine: Engine,
    driver: Child,
    port: u16,
    session: String,
    /// The driver's output and log, the browser's fresh profile and home.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Start `engine` headless with a fresh profile that trusts the CA certificate(s) in the PEM
    /// file `ca`. `None` when the browser, its driver or certutil is not installed (a failure
    /// under CI, see `tool`).
    pub async fn start(engine: Engine, ca: &Path) -> Option<Browser> {
        let [browser_name, driver_name] = engine.tools();
        let binary = tool(browser_name)?;
        let driver_binary = tool(driver_name)?;
        let certutil = tool("certutil")?;
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let profile = dir.path().join("profile");
        let nssdb = match engine {
            Engine::Chromium => home.join(".pki/nssdb"),
            Engine::Firefox => profile.clone(),
        };
        trust_ca(&certutil, &nssdb, ca);
        let out = std::fs::File::create(dir.path().join("driver.out")).unwrap();
        let log = dir.path().join("driver.log");
        let mut command = Command::new(driver_binary);
        match engine {
            Engine::Chromium => command
                .arg("--port=0")
                .arg(format!("--log-path={}", log.display())),
            // geckodriver logs to its output; `--log` keeps it informative without tracing.
            Engine::Firefox => command.args(["--port", "0", "--log", "info"]),
        };
        let driver = command
            // The browser finds its NSS database (Chromium) and writes nothing outside the test.
            .env("HOME", &home)
            .env("TMPDIR", dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{driver_name} cannot start: {e}"));
        let mut browser = Browser {
            engine,
            driver,
            port: 0,
            session: String::new(),
            dir,
        };
        browser.port = browser.driver_port().await;
        let timeouts = json!({ "pageLoad": millis(STEP), "script": millis(START) });
        let capabilities = match engine {
            Engine::Chromium => {
                let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
                args.push(format!("--user-data-dir={}", profile.display()));
                json!({
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": binary, "args": args },
                    "timeouts": timeouts,
                })
            }
            Engine::Firefox => json!({
                "browserName": "firefox",
                "moz:firefoxOptions": {
                    "binary": binary,
                    // geckodriver uses a profile named with -profile as it is (the CA in it) and
                    // writes the prefs into its user.js.
                    "args": ["-headless", "-profile", profile],
                    "prefs": FIREFOX_PREFS.iter().map(|(k, v)| (k.to_string(), v.clone()))
                        .collect::<serde_json::Map<String, Value>>(),
                },
                "timeouts": timeouts,
            }),
        };
        let session = browser
            .call(
                "POST",
                "/session",
                Some(&json!({ "capabilities": { "alwaysMatch": capabilities } })),
                START,
            )
            .await;
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_string();
        Some(browser)
    }

    /// The port the driver listens on, from its output (bounded; an early exit fails at once).
    async fn driver_port(&mut self) -> u16 {
        let deadline = Instant::now() + START;
        let driver = self.engine.tools()[1];
        loop {
            let out = self.output();
            if let Some(rest) = out.split_once(self.engine.started()).map(|(_, r)| r) {
                // The number is complete once something else follows it.
                let digits = rest.find(|c: char| !c.is_ascii_digit());
                if let Some(port) = digits.and_then(|end| rest[..end].parse().ok()) {
                    return port;
                }
            }
            if let Some(status) = self.driver.try_wait().unwrap() {
                panic!("{driver} exited ({status}) before listening:\n{out}");
            }
            assert!(
                Instant::now() < deadline,
                "{driver} not listening within {START:?}:\n{out}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("driver.out")).unwrap_or_default()
    }

    /// The end of the driver's log (geckodriver's is its output), for failure messages.
    fn log_tail(&self) -> String {
        let log = match self.engine {
            Engine::Chromium => {
                std::fs::read_to_string(self.dir.path().join("driver.log")).unwrap_or_default()
            }
            Engine::Firefox => self.output(),
        };
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}'s log:\n{}", self.engine.tools()[1], &log[start..])
    }

    /// Load `url` and wait for its load event (bounded by the session's page-load timeout).
    pub async fn goto(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(&json!({ "url": url })), START)
            .await;
    }

    /// Run `script` in the page as an asynchronous WebDriver script (it ends by calling its last
    /// argument with the result); returns that result, as JSON (bounded by the script timeout).
    pub async fn execute_async(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/async", self.session);
        let body = json!({ "script": script, "args": [] });
        self.call("POST", &path, Some(&body), START + STEP).await
    }

    /// One WebDriver command: its `value`; a non-200 answer (a WebDriver error) fails the test.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>, limit: Duration) -> Value {
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let exchange = async {
            let mut s = TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.write_all(request.as_bytes()).await?;
            // A driver may keep the connection open despite `Connection: close`: the answer
            // ends where its Content-Length says.
            let mut answer = Vec::new();
            let mut chunk = [0u8; 16384];
            while !answer_complete(&answer) {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&chunk[..n]);
            }
            std::io::Result::Ok(answer)
        };
        let answer = tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "WebDriver {method} {path}: no answer within {limit:?}; {}",
                    self.log_tail()
                )
            })
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let (status, text) = status_and_body(&String::from_utf8_lossy(&answer));
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e} in {text:?}"));
        assert_eq!(
            status,
            200,
            "WebDriver {method} {path} failed: {value}; {}",
            self.log_tail()
        );
        value["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = self.driver.id() as i32;
        // SAFETY: killpg(2) on the process group our own child leads; the child is not reaped
        // yet, so the group id is still ours.
        unsafe { libc::killpg(group, libc::SIGKILL) };
        let _ = self.driver.wait();
        // The browser's processes were reparented when the driver died; wait (bounded) until the
        // group is gone before its profile folder is removed.
        let deadline = Instant::now() + STEP;
        // SAFETY: signal 0 only checks whether the group still has a process.
        while unsafe { libc::killpg(group, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
}

/// Whether `bytes` hold an HTTP answer's head and as much body as its Content-Length says.
fn answer_complete(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    length.is_some_and(|n| bytes.len() >= end + 4 + n)
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Firefox's preferences here: nothing fetched in the background (a closed network refuses it),
/// and WebSockets over HTTP/2 (RFC 8441) explicitly on, as they are by default.
const FIREFOX_PREFS: [(&str, Value); 7] = [
    ("network.http.http2.websockets", Value::Bool(true)),
    ("app.update.disabledForTesting", Value::Bool(true)),
    ("browser.safebrowsing.update.enabled", Value::Bool(false)),
    ("network.captive-portal-service.enabled", Value::Bool(false)),
    ("network.connectivity-service.enabled", Value::Bool(false)),
    ("security.OCSP.enabled", Value::Bool(false)),
    ("network.dns.disablePrefetch", Value::Bool(true)),
];

/// A new NSS database at `db` (a profile folder, or Chromium's `$HOME/.pki/nssdb`) whose only
/// added certificate is the CA in the PEM file `ca`, trusted to issue server certificates
/// (`C,,`): the browser then verifies the gateway's certificate as any other.
fn trust_ca(certutil: &Path, db: &Path, ca: &Path) {
    std::fs::create_dir_all(db).unwrap();
    let db = format!("sql:{}", db.display());
    run_ok(Command::new(certutil).args(["-N", "-d", &db, "--empty-password"]));
    run_ok(
        Command::new(certutil)
            .args([
                "-A",
                "-d",
                &db,
                "-n",
                "Portcullis test CA",
                "-t",
                "C,,",
                "-i",
            ])
            .arg(ca),
    );
}
