//! tungstenite's settings for one socket of the gateway: message and frame limits, buffer sizes,
//! and giving buffers back while quiet. Compression is switched on per socket, once agreed
//! (`compressed_messages`).

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::QUIET;
use crate::config::Limits;

/// tungstenite's configuration for one socket, sized for a gateway: a small read buffer
/// (tungstenite's default is 128 KiB per socket) that is given back once the socket is quiet,
/// as is the write buffer once the socket has been [`QUIET`] (`release_idle_buffers`, our
/// patch: vendor/README.md; `session::idle` wakes quiet sessions so that it happens),
/// eager writes, and a bounded write queue.
/// `read_max` is the largest message this socket may receive; `write_max` the largest it must
/// send (tungstenite refuses to queue a message larger than its write queue).
pub(crate) fn websocket_config(
    limits: &Limits,
    read_max: usize,
    write_max: usize,
) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(limits.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(
            limits
                .max_write_buffer_bytes
                .max(write_max.saturating_add(64)),
        )
        .max_message_size(Some(read_max))
        .max_frame_size(Some(read_max))
        .release_idle_buffers(Some(QUIET))
}
