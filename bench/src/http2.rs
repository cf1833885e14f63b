//! `--http2`: WebSockets over HTTP/2 (RFC 8441) against new `wss` connections, on one Portcullis
//! process (its relay or echo route, or the baseline's relay), in this order:
//!
//! - handshakes: `--handshakes` new `wss` connections (TCP, a full TLS 1.3 handshake, the
//!   upgrade and its 101; each dropped after it), then [`STREAMS_PER_WSS`] times as many
//!   extended CONNECT streams on one HTTP/2 connection opened beforehand (the 200; each stream
//!   ended by the client after it, and by the gateway in turn), `--conns` at a time: per
//!   second, and the gateway's CPU per handshake, teardown included;
//! - messages: `--conns` `wss` connections in the `load` phase's closed loop (`--size` bytes,
//!   `--duration` s after the warm-up), then `--conns` streams of one HTTP/2 connection the same
//!   way;
//! - idle streams: what one more idle stream on shared connections costs. K connections carry
//!   `--idle`/2 streams (each checked with one round trip) and stay quiet for the idle settle
//!   (past the gateway's one quiet second before it gives idle buffers back); RSS. Then
//!   `--idle` streams on the same connections, quiet again; RSS. The figure is the growth over
//!   the streams added, so the connections' own memory (TLS, HPACK, the h2 state) is not in it.
//!   K is the fewest connections of at most [`H2_STREAMS_PER_CONNECTION`] streams, at least 2.
//!
//! A build that does not serve HTTP/2 (`[listeners.tls] http2`) gives the `wss` and HTTP/1.1
//! figures only.

#[path = "../../tests/e2e/support/h2_ws.rs"]
mod h2_ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::args::Args;
use crate::load::{self, bounded, Target};
use crate::phases::{self, Figures};
use crate::procs::Proc;
use crate::servers::H2_STREAMS_PER_CONNECTION;
use h2_ws::H2Ws;

type Stream = WebSocketStream<H2Ws>;

/// New streams measured per new `wss` connection: a stream costs the gateway about a tenth of
/// a connection or less, and CPU time comes in clock ticks of 10 ms, so as many streams as
/// connections would leave the stream's figure a tick or two.
pub const STREAMS_PER_WSS: usize = 10;

/// The phase on a server started for it; `h2`: whether it serves HTTP/2.
pub fn phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
    h2: bool,
) -> Result<Figures, String> {
    let mut figures = Figures::new();
    let mut errors = 0.0;
    let wss = phases::handshake_phase(rt, args, proc, target)?;
    errors += take(&wss, "errors");
    figures.extend(renamed(
        &wss,
        &[
            ("handshakes_per_second", "wss_handshakes_per_second"),
            ("cpu_us_per_handshake", "wss_cpu_us_per_handshake"),
        ],
    ));
    if h2 {
        let streams = handshakes(rt, args, proc, target)?;
        errors += take(&streams, "errors");
        figures.extend(renamed(
            &streams,
            &[
                ("handshakes_per_second", "h2_handshakes_per_second"),
                ("cpu_us_per_handshake", "h2_cpu_us_per_handshake"),
            ],
        ));
    }
    let h1 = phases::load_phase(rt, args, proc, target, args.size)?;
    figures.extend(renamed(
        &h1,
        &[
            ("messages_per_second", "h1_messages_per_second"),
            ("cpu_us_per_message", "h1_cpu_us_per_message"),
        ],
    ));
    if h2 {
        let conn = rt.block_on(connect(target))?;
        let streams = rt.block_on(open_websockets(
            std::slice::from_ref(&conn),
            target,
            0..args.conns,
            args.conns,
        ))?;
        let h2 = phases::closed_loop_phase(rt, args, proc, streams, args.size)?;
        rt.block_on(async move { drop(conn) });
        figures.extend(renamed(
            &h2,
            &[
                ("messages_per_second", "h2_messages_per_second"),
                ("cpu_us_per_message", "h2_cpu_us_per_message"),
            ],
        ));
        let (added, per_stream) = idle_streams(rt, args, proc, target)?;
        figures.push(("idle_streams", added as f64));
        figures.push(("h2_rss_bytes_per_idle_stream", per_stream));
    }
    figures.push(("errors", errors));
    Ok(figures)
}

fn take(figures: &Figures, name: &str) -> f64 {
    figures
        .iter()
        .find(|(f, _)| *f == name)
        .map_or(0.0, |(_, v)| *v)
}

/// `figures`' values under the names of `map` (from, to).
fn renamed(figures: &Figures, map: &[(&str, &'static str)]) -> Figures {
    map.iter()
        .filter_map(|&(from, to)| {
            figures
                .iter()
                .find(|(f, _)| *f == from)
                .map(|(_, v)| (to, *v))
        })
        .collect()
}

/// New WebSocket streams on one open HTTP/2 connection ([`STREAMS_PER_WSS`] × `--handshakes`),
/// `--conns` at a time, each ended after its 200 ([`end_stream`]): per second, the gateway's CPU per handshake, failures.
fn handshakes(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
) -> Result<Figures, String> {
    let conn = rt.block_on(connect(target))?;
    let before = proc.usage();
    let start = Instant::now();
    let total = args.handshakes * STREAMS_PER_WSS;
    let results: Vec<Result<(), String>> = rt.block_on(
        stream::iter(0..total)
            .map(|_| {
                let conn = &conn;
                async move { end_stream(open_stream(conn, target).await?).await }
            })
            .buffer_unordered(args.conns.max(1))
            .collect(),
    );
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(args.settle() / 2);
    let after = proc.usage();
    rt.block_on(async move { drop(conn) });
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let ok = results.len() - failed.len();
    if ok == 0 {
        return Err(format!(
            "every stream handshake failed: {}",
            failed.first().map_or("", |e| e.as_str())
        ));
    }
    if let Some(first) = failed.first() {
        eprintln!(
            "warning: {} of {} stream handshakes failed, the first with: {first}",
            failed.len(),
            total
        );
    }
    Ok(vec![
        ("handshakes_per_second", ok as f64 / elapsed),
        (
            "cpu_us_per_handshake",
            (after.cpu_secs - before.cpu_secs) * 1e6 / ok as f64,
        ),
        ("errors", failed.len() as f64),
    ])
}

/// The client's END_STREAM right after the 200, as a `wss` connection is dropped (FIN) after
/// its 101, then the server's end of the stream. Not a reset: the gateway's flood bound counts
/// a client's RST_STREAM frames (`[http2] max_control_frames_per_second`), and a client that
/// resets a thousand streams a second is sent GOAWAY, as it should be.
async fn end_stream((mut send, mut recv): (SendStream<Bytes>, RecvStream)) -> Result<(), String> {
    send.send_data(Bytes::new(), true)
        .map_err(|e| format!("END_STREAM: {e}"))?;
    bounded("the end of the stream", async {
        while let Some(data) = recv.data().await {
            // Whatever the gateway sends before it ends the stream (a close frame) is read.
            if let Ok(data) = data {
                let _ = recv.flow_control().release_capacity(data.len());
            } else {
                break;
            }
        }
    })
    .await
}

/// The marginal RSS of an idle stream on shared connections (see the module's comment): the
/// streams added and the growth per stream.
fn idle_streams(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
) -> Result<(usize, f64), String> {
    let total = args.idle.max(2);
    let first = total / 2;
    let k = total.div_ceil(H2_STREAMS_PER_CONNECTION).max(2);
    let conns = rt.block_on(async {
        let mut conns = Vec::with_capacity(k);
        for _ in 0..k {
            conns.push(connect(target).await?);
        }
        Ok::<_, String>(conns)
    })?;
    let mut held = rt.block_on(open_websockets(&conns, target, 0..first, args.conns))?;
    std::thread::sleep(args.idle_settle());
    let before = proc.usage();
    let more = rt.block_on(open_websockets(&conns, target, first..total, args.conns));
    let more = match more {
        Ok(more) => more,
        Err(e) => {
            rt.block_on(async move { drop((held, conns)) });
            return Err(e);
        }
    };
    held.extend(more);
    std::thread::sleep(args.idle_settle());
    let after = proc.usage();
    rt.block_on(async move { drop((held, conns)) });
    let added = total - first;
    let growth = after.rss_bytes as f64 - before.rss_bytes as f64;
    Ok((added, growth / added as f64))
}

/// An HTTP/2 connection to the target (ALPN `h2`, the benchmark's TLS 1.3 client otherwise),
/// with extended CONNECT enabled by the server's SETTINGS; its frames are driven by a task.
async fn connect(target: &Target) -> Result<SendRequest<Bytes>, String> {
    let config = target.tls.as_ref().ok_or("HTTP/2 is measured over TLS")?;
    let mut config = rustls::ClientConfig::clone(config);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = bounded("connect", load::tcp_connect(target.port))
        .await?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("valid name");
    let tls = bounded(
        "TLS",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await?
    .map_err(|e| format!("TLS: {e}"))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("the server did not choose h2 by ALPN".into());
    }
    // A connection window for many streams at once (the default is 64 KiB for all of them).
    let (send, conn) = bounded(
        "HTTP/2 handshake",
        h2::client::Builder::new()
            .initial_connection_window_size(16 << 20)
            .handshake::<_, Bytes>(tls),
    )
    .await?
    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let send = bounded("HTTP/2 ready", send.ready())
        .await?
        .map_err(|e| format!("HTTP/2: {e}"))?;
    // The server's SETTINGS, with ENABLE_CONNECT_PROTOCOL, follow its preface.
    bounded("extended CONNECT enabled", async {
        while !send.is_extended_connect_protocol_enabled() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    Ok(send)
}

/// An extended CONNECT for a WebSocket on the target's path, answered 200: the stream's halves.
async fn open_stream(
    conn: &SendRequest<Bytes>,
    target: &Target,
) -> Result<(SendStream<Bytes>, RecvStream), String> {
    let mut request = http::Request::builder()
        .method("CONNECT")
        .uri(format!("https://localhost:{}{}", target.port, target.path))
        .header("sec-websocket-version", "13")
        .body(())
        .map_err(|e| e.to_string())?;
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let mut conn = bounded("a stream slot", conn.clone().ready())
        .await?
        .map_err(|e| format!("HTTP/2: {e}"))?;
    let (response, send) = conn
        .send_request(request, false)
        .map_err(|e| format!("CONNECT: {e}"))?;
    let response = bounded("CONNECT", response)
        .await?
        .map_err(|e| format!("CONNECT: {e}"))?;
    if response.status() != 200 {
        return Err(format!("CONNECT answered {}", response.status()));
    }
    Ok((send, response.into_body()))
}

/// WebSockets on streams `range` spread over `conns` in turn, `parallel` at a time, each
/// checked with one round trip; fails if any fails.
async fn open_websockets(
    conns: &[SendRequest<Bytes>],
    target: &Target,
    range: std::ops::Range<usize>,
    parallel: usize,
) -> Result<Vec<Stream>, String> {
    let results: Vec<Result<Stream, String>> = stream::iter(range)
        .map(|i| async move {
            let (send, recv) = open_stream(&conns[i % conns.len()], target).await?;
            let mut ws = WebSocketStream::from_raw_socket(
                H2Ws::new(send, recv),
                Role::Client,
                Some(crate::upstream::websocket_config()),
            )
            .await;
            load::round_trip(&mut ws, b"hello").await?;
            Ok(ws)
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
