//! The authorizer and the introspection endpoint of the identity phases, a process of its own
//! (`portcullis-bench identity-server`), so that its CPU is never counted as Portcullis's or the
//! load generator's. A small HTTP/1.1 server with keep-alive (Portcullis's client pools its
//! connections): `GET /authz` admits any bearer token (`200`, `X-User: bench`), `POST
//! /introspect` with the right client credentials calls any token active.

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The token the identity phases send (plus `-N` when each handshake needs its own).
pub const TOKEN: &str = "opaque-bench-token";
/// Portcullis's client secret at the introspection endpoint.
pub const CLIENT_SECRET: &str = "bench-secret";
pub const AUTHZ_PATH: &str = "/authz";
pub const INTROSPECT_PATH: &str = "/introspect";
/// The trace sink: an OTLP/HTTP collector that takes every export and keeps nothing.
pub const TRACES_PATH: &str = "/v1/traces";

/// Serve on 127.0.0.1:`port` with `threads` worker threads until killed.
pub fn run(port: u16, threads: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let basic = format!(
        "basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("bench:{CLIENT_SECRET}"))
    )
    // The head is read lower-cased.
    .to_ascii_lowercase();
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("identity server: cannot listen on 127.0.0.1:{port}: {e}"))?;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(tcp, basic.clone()));
        }
    })
}

/// One connection: requests until the client closes it.
async fn serve(mut tcp: TcpStream, basic: String) {
    let _ = tcp.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match tcp.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        let length: usize = header("content-length").parse().unwrap_or(0);
        if buf.len() < end + 4 + length {
            match tcp.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            continue;
        }
        let request_line = head.lines().next().unwrap_or_default().to_string();
        let authorization = header("authorization");
        buf.drain(..end + 4 + length);
        let (status, extra, body) = if request_line.starts_with(&format!("get {AUTHZ_PATH}")) {
            if authorization.starts_with("bearer ") {
                ("200 OK", "X-User: bench\r\n", String::new())
            } else {
                ("401 Unauthorized", "", "no token".to_string())
            }
        } else if request_line.starts_with(&format!("post {INTROSPECT_PATH}")) {
            if authorization == basic {
                let exp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    + 3600;
                let body = format!(
                    "{{\"active\":true,\"sub\":\"bench\",\"scope\":\"bench\",\"exp\":{exp}}}"
                );
                ("200 OK", "Content-Type: application/json\r\n", body)
            } else {
                ("401 Unauthorized", "", "bad client".to_string())
            }
        } else if request_line.starts_with(&format!("post {TRACES_PATH}")) {
            // An empty ExportTraceServiceResponse: everything accepted.
            (
                "200 OK",
                "Content-Type: application/x-protobuf\r\n",
                String::new(),
            )
        } else {
            ("404 Not Found", "", String::new())
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if tcp.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}
