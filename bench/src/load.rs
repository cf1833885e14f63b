//! The load generator: WebSocket clients over TLS 1.3 (or plain TCP for the direct baseline),
//! the same for every proxy. Every client step is bounded in time.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject, pki_types::CertificateDer};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

/// The bound on one client step (connect, TLS, upgrade, one round trip).
pub const STEP: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<Either<TlsStream<TcpStream>, TcpStream>>;

/// Where the clients connect.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    /// `Some`: `wss` trusting only the benchmark's certificate; `None`: plain `ws`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub path: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// `Some`: every connection's token gets a new `-N` suffix (a cache miss each time).
    pub unique_tokens: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// A TLS 1.3 client configuration that trusts `cert` only and never resumes a session, so that
/// every handshake of the handshake phase is a full one.
pub fn tls_config(cert: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STEP, f)
        .await
        .map_err(|_| format!("{what} timed out after {STEP:?}"))
}

/// The loopback source addresses the clients connect from, in turn: 127.0.0.2 onwards. The
/// servers listen on 127.0.0.1; each source address has its own ~28,000 ephemeral ports toward
/// each server port, so that tens of thousands of connections, and the TIME_WAIT left by those
/// of the previous phases, never exhaust them.
pub const SOURCES: u32 = 16;

static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// A TCP connection to 127.0.0.1:`port` from the next source address.
pub async fn tcp_connect(port: u16) -> std::io::Result<TcpStream> {
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % SOURCES;
    let source = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + n);
    let socket = TcpSocket::new_v4()?;
    // The port is chosen at connect, per destination, not at bind: a bind-time port would have
    // to be unique among every socket of that source address.
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(SocketAddr::from((source, 0)))?;
    socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
}

/// TCP, TLS and the WebSocket upgrade (which must answer 101).
pub async fn connect(t: &Target) -> Result<Ws, String> {
    Ok(connect_offering(t, None).await?.0)
}

/// [`connect`] with `extensions` offered (`Sec-WebSocket-Extensions`); returns the server's
/// answer to them too. Offering permessage-deflate lets compressed messages in
/// (`compressed_messages`): the caller checks that the server agreed before it sends any.
pub async fn connect_offering(
    t: &Target,
    extensions: Option<&str>,
) -> Result<(Ws, Option<String>), String> {
    let tcp = bounded("connect", tcp_connect(t.port))
        .await?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (stream, scheme) = match &t.tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("valid name");
            let tls = bounded("TLS", TlsConnector::from(config.clone()).connect(name, tcp))
                .await?
                .map_err(|e| format!("TLS: {e}"))?;
            (Either::Left(tls), "wss")
        }
        None => (Either::Right(tcp), "ws"),
    };
    let mut request = format!("{scheme}://localhost:{}{}", t.port, t.path)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(token) = &t.token {
        let token = match &t.unique_tokens {
            Some(n) => format!(
                "{token}-{}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            None => token.clone(),
        };
        let value = format!("Bearer {token}").parse().map_err(|_| "bad token")?;
        request.headers_mut().insert("authorization", value);
    }
    let mut config = crate::upstream::websocket_config();
    if let Some(offer) = extensions {
        let value = offer.parse().map_err(|_| "bad extension offer")?;
        request
            .headers_mut()
            .insert("sec-websocket-extensions", value);
        config = config.compressed_messages(true);
    }
    let (ws, response) = bounded(
        "upgrade",
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)),
    )
    .await?
    .map_err(|e| format!("upgrade: {e}"))?;
    let answer = response
        .headers()
        .get("sec-websocket-extensions")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    Ok((ws, answer))
}

/// Send `payload` and wait for it to come back unchanged (over any transport: a `wss`
/// connection or an HTTP/2 stream).
pub async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    payload: &[u8],
) -> Result<(), String> {
    bounded("send", ws.send(Message::binary(payload.to_vec())))
        .await?
        .map_err(|e| format!("send: {e}"))?;
    loop {
        match bounded("echo", ws.next()).await? {
            Some(Ok(Message::Binary(got))) if got.as_ref() == payload => return Ok(()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return Err(format!("unexpected answer: {other:?}")),
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("connection closed".into()),
        }
    }
}

/// Open `n` connections, at most `parallel` at a time, each checked with one round trip; fails
/// if any fails.
pub async fn open(t: &Target, n: usize, parallel: usize) -> Result<Vec<Ws>, String> {
    let opened = open_counting(t, n, parallel).await;
    match opened.first_error {
        Some(e) => Err(format!(
            "{} of {n} connections failed, the first with: {e}",
            opened.failed
        )),
        None => Ok(opened.open),
    }
}

/// What [`open_counting`] opened, and what failed.
pub struct Opened {
    pub open: Vec<Ws>,
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Like [`open`], but keeps the connections that did open and counts the failures (for the
/// large holds and the soak, where a failure is a figure rather than the end of the run).
pub async fn open_counting(t: &Target, n: usize, parallel: usize) -> Opened {
    let results: Vec<Result<Ws, String>> = stream::iter(0..n)
        .map(|_| async move {
            let mut ws = connect(t).await?;
            round_trip(&mut ws, b"hello").await?;
            Ok::<_, String>(ws)
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut opened = Opened {
        open: Vec::with_capacity(n),
        failed: 0,
        first_error: None,
    };
    for r in results {
        match r {
            Ok(ws) => opened.open.push(ws),
            Err(e) => {
                opened.failed += 1;
                opened.first_error.get_or_insert(e);
            }
        }
    }
    opened
}

/// One closed-loop client: send a message, wait for its echo, record the latency (µs) when the
/// message was sent after `measure_from` and came back by `until`; repeat until `until`.
pub async fn closed_loop<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    payload: Arc<Vec<u8>>,
    measure_from: Instant,
    until: Instant,
) -> Result<Vec<u32>, String> {
    let mut latencies = Vec::new();
    loop {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        round_trip(&mut ws, &payload).await?;
        let back = Instant::now();
        if sent >= measure_from && back <= until {
            latencies.push((back - sent).as_micros().min(u32::MAX as u128) as u32);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(latencies)
}

/// `total` handshakes (TCP, TLS, upgrade), `parallel` at a time; each connection is dropped
/// right after its 101. Returns the successes and the failures (with the first error).
pub async fn handshakes(t: &Target, total: usize, parallel: usize) -> (usize, usize, String) {
    let results: Vec<Result<(), String>> = stream::iter(0..total)
        .map(|_| async move { connect(t).await.map(drop) })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let first = failed.first().map_or(String::new(), |e| e.to_string());
    (results.len() - failed.len(), failed.len(), first)
}

/// The `q`-quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
