//! A WebSocket client nobody here wrote: Python's `websockets` package, talking to `/ws/echo`
//! over `wss`. `scripts/bootstrap` installs it from PyPI.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

#[test]
fn python_websockets_client_over_wss() {
    let gw = Gateway::start("");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/clients/python_echo.py"
    );
    let mut child = Command::new("python3")
        .args([script, &gw.url("/ws/echo"), gw.cert.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed (scripts/bootstrap installs the client)");
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("python client timed out");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python client failed:\n{text}");
    assert!(text.contains("ALL OK"), "{text}");
}
