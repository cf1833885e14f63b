//! Child processes other than the gateway: external tools and clients, each run to its end
//! within a time limit, and killed if it overstays.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::wait::POLL;

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Kills a child process when dropped (for processes a test starts besides its `Gateway`).
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `cmd` to its end, feeding it `input` on stdin; it is killed (and the test fails) if it
/// runs longer than `limit`. A blocking call: from an async test use [`output_within_async`].
pub fn output_within(cmd: &mut Command, input: &[u8], limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot start: {e}"));
    let mut child = Reaper(child);
    let mut stdin = child.0.stdin.take().unwrap();
    let input = input.to_vec();
    let feed = std::thread::spawn(move || {
        // A tool may exit without reading its input.
        let _ = stdin.write_all(&input);
    });
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(child.0.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.0.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        // On panic the Reaper kills the child, which ends the pipe threads.
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not finish within {limit:?}"
        );
        std::thread::sleep(POLL);
    };
    feed.join().unwrap();
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// [`output_within`] for async tests (on a blocking thread, so the runtime keeps running).
pub async fn output_within_async(mut cmd: Command, input: &[u8], limit: Duration) -> Output {
    let input = input.to_vec();
    tokio::task::spawn_blocking(move || output_within(&mut cmd, &input, limit))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Stdout then stderr of a finished command, as text.
pub fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run a command that must succeed within a minute; its stdout and stderr.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output_within(cmd, b"", Duration::from_secs(60));
    let text = text_of(&out);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// [`run_ok`] for async tests.
pub async fn run_ok_async(mut cmd: Command) -> String {
    tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
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
