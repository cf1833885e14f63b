//! A minimal HTTP/1.1 GET client for JWKS documents: `http://` or `https://` (rustls, system roots
//! or a given CA file), bounded in time and size. Small on purpose: it fetches one JSON document
//! in the background, never inside a handshake.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::core::url::Url;
use crate::net::client_tls::client_config;

/// Largest document accepted.
const MAX_BODY: usize = 1024 * 1024;

/// TLS client settings for `https://` fetches.
pub(crate) fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    client_config(ca_file, None, &[]).map_err(|e| e.to_string())
}

/// GET `url` and return the body of a `200` answer.
pub(crate) async fn get(
    url: &Url,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if url.tls() {
            let name = ServerName::try_from(url.host.clone()).map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(stream, url).await
        } else {
            exchange(tcp, url).await
        }
    })
    .await
    .map_err(|_| format!("timed out after {timeout:?}"))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    url: &Url,
) -> Result<Vec<u8>, String> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: portcullis\r\nConnection: close\r\n\r\n",
        url.path_and_query, url.host
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    (&mut io)
        .take((MAX_BODY + 64 * 1024) as u64)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    body_of(&raw)
}

/// The body of a complete HTTP/1.1 answer `raw` when its status is `200`.
pub(crate) fn body_of(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err("malformed HTTP answer".into()),
    };
    let status = resp.code.unwrap_or(0);
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    let chunked = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let body = &raw[head_len..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    if body.len() > MAX_BODY {
        return Err("document too large".into());
    }
    Ok(body)
}

/// Decode a chunked body.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked body")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        // `size` comes from the identity provider's server: no arithmetic on it (a size near
        // `usize::MAX` overflowed `size + 2`), only bounded slicing.
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        let rest = data[size..]
            .strip_prefix(b"\r\n")
            .ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        data = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_err());
        assert!(dechunk(b"2\r\nabX").is_err());
    }

    /// Chunk sizes near `usize::MAX` overflowed `size + 2` (a panic in debug builds, a wrong
    /// slice in release), which killed the JWKS refresh thread for good.
    #[test]
    fn huge_chunk_sizes_are_errors() {
        for size in [usize::MAX, usize::MAX - 1, usize::MAX - 2, usize::MAX / 2] {
            let body = format!("{size:x}\r\nabc\r\n0\r\n\r\n");
            assert!(dechunk(body.as_bytes()).is_err(), "{size:x}");
        }
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffe\r\nab";
        assert!(body_of(answer).is_err());
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}x\r\n0\r\n\r\n";
        assert_eq!(body_of(answer).unwrap(), b"{}x");
    }
}
