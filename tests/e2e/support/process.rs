//! Child processes other than the gateway: external tools and the processes a test starts
//! besides its `Gateway`.

use std::path::PathBuf;
use std::process::{Child, Command};

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
