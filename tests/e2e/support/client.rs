//! The client side: TLS connections that trust a given certificate, plain HTTP requests, raw
//! bytes and frames, and WebSocket message helpers. Every read is bounded in time.

use std::path::Path;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject, pki_types::CertificateDer};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::wait::STEP;

pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

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
    try_tls_connect_as(port, cert, name, None).await
}

/// A client certificate and its key, PEM (see [`TestCa`]).
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A test certificate authority (rcgen) that issues client certificates.
pub struct TestCa {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A client certificate with common name `cn` (and organisation `Example`) and `sans`
    /// (DNS names, or URIs when they contain `://`).
    pub fn issue(&self, cn: &str, sans: &[&str]) -> ClientIdentity {
        self.issue_serial(cn, sans, None)
    }

    /// A server certificate for `127.0.0.1` and `localhost` (for a test service over TLS that
    /// the gateway must trust through a `ca_file`): (cert PEM, key PEM).
    pub fn issue_server(&self) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test service");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A revocation list (PEM) of this CA naming the certificates with these serial numbers.
    pub fn crl(&self, revoked: &[u64]) -> String {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&n| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(n),
                    revocation_time: rcgen::date_time_ymd(2025, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }

    /// [`TestCa::issue`] with a chosen serial number (for revocation lists).
    pub fn issue_serial(&self, cn: &str, sans: &[&str], serial: Option<u64>) -> ClientIdentity {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serial_number = serial.map(rcgen::SerialNumber::from);
        for san in sans {
            params.subject_alt_names.push(if san.contains("://") {
                rcgen::SanType::URI((*san).try_into().unwrap())
            } else {
                rcgen::SanType::DnsName((*san).try_into().unwrap())
            });
        }
        // Issued in this order, read the other way in RFC 4514: `CN=<cn>,O=Example`.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// [`try_tls_connect`], presenting `identity` when given.
pub async fn try_tls_connect_as(
    port: u16,
    cert: &Path,
    name: &str,
    identity: Option<&ClientIdentity>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => {
            let chain = vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap()];
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("TCP connect timed out")
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(
        STEP,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
}

/// An HTTP/1.1 GET over plain TCP with `headers` (lines ending in \r\n), one request with
/// `Connection: close`: the whole answer.
pub async fn http_get(port: u16, path: &str, headers: &str) -> String {
    let mut s = tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("TCP connect timed out")
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("no complete answer to GET {path} in time"))
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The status and the body of a raw HTTP answer.
pub fn status_and_body(answer: &str) -> (u16, String) {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status_of(answer), body.to_string())
}

/// The status line's code of a raw HTTP answer.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// Read from `io` into `got` until `done(got)` holds (true) or the peer ends the connection
/// (false); panics naming `what` if neither happens in time.
pub async fn read_until<S: AsyncRead + Unpin>(
    io: &mut S,
    got: &mut Vec<u8>,
    what: &str,
    done: impl Fn(&[u8]) -> bool,
) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + STEP;
    while !done(got) {
        let n = tokio::time::timeout_at(deadline, io.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("{what}: not in time; got {got:?}"))
            .unwrap_or(0);
        if n == 0 {
            return false;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    true
}

/// Whether `bytes` hold a complete HTTP head.
pub fn has_head(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Read a raw client connection that sent a handshake until the server's close frame: its code
/// and reason. The answer must be a 101 and the first frame after it the close.
pub async fn raw_close<S: AsyncRead + Unpin>(io: &mut S, what: &str) -> (u16, String) {
    let mut got = Vec::new();
    let complete = read_until(io, &mut got, what, |g| parsed_close(g, what).is_some()).await;
    assert!(complete, "{what}: closed without a close frame: {got:?}");
    parsed_close(&got, what).unwrap()
}

/// The close frame right behind a 101 head in `got`, once it is all there.
fn parsed_close(got: &[u8], what: &str) -> Option<(u16, String)> {
    let i = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&got[..i]);
    assert!(head.starts_with("HTTP/1.1 101"), "{what}: {head}");
    let body = &got[i + 4..];
    let first = *body.first()?;
    assert_eq!(first, 0x88, "{what}: expected a close frame, got {body:?}");
    let len = (*body.get(1)? & 0x7f) as usize;
    if len < 2 || body.len() < 2 + len {
        return None;
    }
    let code = u16::from_be_bytes([body[2], body[3]]);
    Some((code, String::from_utf8_lossy(&body[4..2 + len]).to_string()))
}

/// The next data or close message, skipping pings/pongs (bounded).
pub async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Message {
    loop {
        let msg = next_frame(ws).await;
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The next message of any kind, pings and pongs included (bounded).
pub async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    tokio::time::timeout(STEP, ws.next())
        .await
        .expect("no message in time")
        .expect("stream ended")
        .expect("read error")
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

/// Send numbered text messages, reading the reply to each, until the server closes (at most
/// `max` messages): the close's code and reason, or `None` if all were answered.
pub async fn send_until_closed<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    max: usize,
) -> Option<(u16, String)> {
    for i in 0..max {
        ws.send(Message::text(format!("m{i}"))).await.ok();
        if let Message::Close(Some(f)) = next_message(ws).await {
            return Some((u16::from(f.code), f.reason.to_string()));
        }
    }
    None
}

/// Read until the peer ends the connection (which flushes our close reply), bounded.
pub async fn finish<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    let _ = tokio::time::timeout(STEP, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// The header line `Authorization: Bearer <token>` (with its \r\n), for a handshake's or an
/// admin request's extra header lines.
pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
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

/// A self-signed certificate for `names`: (cert PEM, key PEM).
pub fn self_signed(names: &[&str]) -> (String, String) {
    let names = names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let pair = rcgen::generate_simple_self_signed(names).unwrap();
    (pair.cert.pem(), pair.signing_key.serialize_pem())
}
