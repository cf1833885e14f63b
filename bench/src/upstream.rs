//! The upstream echo server every proxy relays to: plain `ws://`, every data message echoed
//! unchanged. It runs as a process of its own (`portcullis-bench upstream-echo`), so that its CPU
//! and memory are never mixed with the load generator's, and so that it can itself be measured
//! as the direct baseline of the local-echo comparison.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Buffers sized like Portcullis's own sockets (4 KiB read buffer, eager writes) rather than
/// tungstenite's 128 KiB defaults.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Serve on 127.0.0.1:`port` with `threads` worker threads until killed.
pub fn run(port: u16, threads: usize) -> Result<(), String> {
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
            tokio::spawn(serve(tcp));
        }
    })
}

async fn serve(tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Ok(mut ws) =
        tokio_tungstenite::accept_async_with_config(tcp, Some(websocket_config())).await
    else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Binary(_) | Message::Text(_) => {
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            // tungstenite answers pings and closes itself on the next read.
            _ => continue,
        }
    }
}
