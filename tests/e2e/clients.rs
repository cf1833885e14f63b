//! A WebSocket client nobody here wrote: Python's `websockets` package, talking to `/ws/echo`
//! over `wss`. `scripts/bootstrap` installs it from PyPI.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn python_websockets_client_over_wss() {
    let gw = Gateway::start("").await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/clients/python_echo.py"
    );
    // python3 is needed (scripts/bootstrap installs the client).
    let mut python = Command::new("python3");
    python.args([script, &gw.url("/ws/echo"), gw.cert.to_str().unwrap()]);
    let out = output_within_async(python, b"", Duration::from_secs(30)).await;
    let text = text_of(&out);
    assert!(out.status.success(), "python client failed:\n{text}");
    assert!(text.contains("ALL OK"), "{text}");
}
