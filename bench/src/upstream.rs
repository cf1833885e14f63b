//! The upstream echo server every proxy relays to: plain `ws://`, every data message echoed
//! unchanged. It runs as a process of its own (`portcullis-bench upstream-echo`), so that its CPU
//! and memory are never mixed with the load generator's, and so that it can itself be measured
//! as the direct baseline of the local-echo comparison.
//!
//! The compression phase has one of its own (`portcullis-bench upstream-deflate-echo`), which
//! also accepts permessage-deflate ([`crate::deflate::upstream_answer`]) and sends each
//! compressed message back as it came. It is a separate process because Portcullis offers
//! compression to its upstream whenever the route has it on: the plain echo declining it is what
//! keeps every other phase's relay uncompressed.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, SEC_WEBSOCKET_EXTENSIONS};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Buffers sized like Portcullis's own sockets (4 KiB read buffer, eager writes) rather than
/// tungstenite's 128 KiB defaults.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Serve on 127.0.0.1:`port` with `threads` worker threads until killed.
pub fn run(port: u16, threads: usize) -> Result<(), String> {
    serve_on(port, threads, false)
}

/// The same, accepting permessage-deflate.
pub fn run_deflate(port: u16, threads: usize) -> Result<(), String> {
    serve_on(port, threads, true)
}

fn serve_on(port: u16, threads: usize, deflate: bool) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("upstream echo: cannot listen on 127.0.0.1:{port}: {e}"))?;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            if deflate {
                tokio::spawn(serve_deflate(tcp));
            } else {
                tokio::spawn(serve(tcp));
            }
        }
    })
}

async fn serve(tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(websocket_config())).await
    else {
        return;
    };
    echo(ws).await;
}

/// Accept permessage-deflate when offered; a compressed message (a `Message::Frame` with RSV1)
/// goes back unchanged, which both directions' equal agreement makes valid.
async fn serve_deflate(tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let config = websocket_config().compressed_messages(true);
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(tcp, answer_deflate, Some(config)).await
    else {
        return;
    };
    echo(ws).await;
}

/// The handshake's answer to permessage-deflate offers, if one can be taken.
// The signature is tungstenite's handshake callback, error type included.
#[allow(clippy::result_large_err)]
fn answer_deflate(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offers: Vec<&str> = request
        .headers()
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Some(value) = crate::deflate::upstream_answer(&offers.join(", "))
        .and_then(|a| HeaderValue::from_str(&a).ok())
    {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_EXTENSIONS, value);
    }
    Ok(response)
}

async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Binary(_) | Message::Text(_) | Message::Frame(_) => {
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            // tungstenite answers pings and closes itself on the next read.
            _ => continue,
        }
    }
}
