//! Headless Chromium (Debian's `chromium`), driven by ChromeDriver through its W3C WebDriver HTTP
//! API: a few JSON requests over loopback, no client library and no npm. ChromeDriver runs in a
//! process group of its own, which Chromium and its helper processes inherit (its crash handlers,
//! which leave the group, exit with the browser), so dropping the handle kills them all, also
//! when a test fails half-way.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::status_and_body;
use super::process::tool;
use super::wait::*;

/// Chromium's flags here: headless as root, and none of its background connections (updates,
/// sync, safe browsing, QUIC probes), which a closed network refuses, many at a time.
const FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// What ChromeDriver prints once it listens (on the port the kernel chose for `--port=0`).
const STARTED: &str = "ChromeDriver was started successfully on port ";

/// One Chromium session under ChromeDriver; both are killed on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// ChromeDriver's output and log, and Chromium's fresh, empty profile.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Start ChromeDriver and a headless Chromium session with `extra_flags` besides [`FLAGS`].
    /// `None` when chromium or chromedriver is not installed (a failure under CI, see `tool`).
    pub async fn start(extra_flags: &[String]) -> Option<Browser> {
        let chromium = tool("chromium")?;
        let chromedriver = tool("chromedriver")?;
        let dir = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(dir.path().join("chromedriver.out")).unwrap();
        let driver = Command::new(chromedriver)
            .arg("--port=0")
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("chromedriver cannot start");
        let mut browser = Browser {
            driver,
            port: 0,
            session: String::new(),
            dir,
        };
        browser.port = browser.driver_port().await;
        let profile = browser.dir.path().join("profile");
        std::fs::create_dir(&profile).unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra_flags.iter().cloned());
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "timeouts": { "pageLoad": millis(STEP), "script": millis(START) },
        }}});
        let session = browser
            .call("POST", "/session", Some(&capabilities), START)
            .await;
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_string();
        Some(browser)
    }

    /// The port ChromeDriver listens on, from its output (bounded; an early exit fails at once).
    async fn driver_port(&mut self) -> u16 {
        let deadline = Instant::now() + START;
        loop {
            let out = self.output();
            if let Some(rest) = out.split_once(STARTED).map(|(_, r)| r) {
                // The number is complete once the sentence's full stop follows it.
                if let Some(port) = rest.split_once('.').and_then(|(n, _)| n.parse().ok()) {
                    return port;
                }
            }
            if let Some(status) = self.driver.try_wait().unwrap() {
                panic!("chromedriver exited ({status}) before listening:\n{out}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not listening within {START:?}:\n{out}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.out")).unwrap_or_default()
    }

    /// The end of ChromeDriver's log, for failure messages.
    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(0);
        log[start..].to_string()
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
            // ChromeDriver may keep the connection open despite `Connection: close`: the answer
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
                    "WebDriver {method} {path}: no answer within {limit:?}; chromedriver's log:\n{}",
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
            "WebDriver {method} {path} failed: {value}; chromedriver's log:\n{}",
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
        // Chromium's processes were reparented when ChromeDriver died; wait (bounded) until the
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

/// The `--ignore-certificate-errors-spki-list` entry for a certificate whose private key is the
/// PEM file `key`: base64 of the SHA-256 of its SubjectPublicKeyInfo. Chromium then accepts that
/// key's certificate, and no other that fails verification. Checked against `cert`: the SPKI
/// must be in it.
pub fn spki_pin(cert: &Path, key: &Path) -> String {
    use rcgen::PublicKeyData;
    use rustls::pki_types::pem::PemObject;
    let pair = rcgen::KeyPair::from_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
    let spki = pair.subject_public_key_info();
    let der = rustls::pki_types::CertificateDer::from_pem_file(cert).unwrap();
    assert!(
        der.windows(spki.len()).any(|w| w == spki.as_slice()),
        "{} does not hold the public key of {}",
        cert.display(),
        key.display()
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}
