//! What happens after `101 Switching Protocols`: the WebSocket sessions ([`echo`], [`relay`]),
//! the per-direction policy they apply ([`guard`]), how they close ([`close`]), what stops them
//! from outside ([`stop`], [`control`]), the open sessions an operator can list and close
//! ([`registry`]), and the count of open sockets a graceful stop waits on ([`count`]).

pub(crate) mod close;
pub(crate) mod control;
pub(crate) mod count;
pub(crate) mod echo;
pub(crate) mod guard;
pub(crate) mod registry;
pub(crate) mod relay;
pub(crate) mod stop;

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Limits;
use crate::obs::metrics::Meter;
use control::Control;
use guard::{Expiry, Guard};
use registry::Counters;
use stop::StopSignal;

/// tungstenite's configuration for one socket, sized for a gateway: a small initial read buffer
/// (tungstenite's default is 128 KiB per socket), eager writes, and a bounded write queue.
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
}

/// What every session needs besides its socket: the stop signal, the close timeout, the
/// policy for messages from the client, the token's expiry, and the route's message counters.
pub(crate) struct SessionContext {
    /// Shutdown (jittered over the drain window) and route removal: close 1001.
    pub(crate) stop: StopSignal,
    pub(crate) close_timeout: Duration,
    /// Applied to each data message the client sends.
    pub(crate) inbound: Guard,
    pub(crate) expiry: Option<Expiry>,
    /// Counts every message by direction and class (`Meter::default()` counts nothing).
    pub(crate) meter: Meter,
    /// This session's own counts, readable while it runs (the admin API lists them).
    pub(crate) counters: Arc<Counters>,
    /// An operator's close, and the route's maximum lifetime.
    pub(crate) control: Control,
}
