//! What happens after `101 Switching Protocols`: the WebSocket sessions, their buffers, their
//! close codes, and the count of open sockets that a graceful stop waits on.

pub mod echo;
pub mod guard;
pub mod relay;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::config::Limits;
use crate::metrics::Meter;
use crate::shutdown::StopSignal;
use guard::{Expiry, Guard, Violation};

/// Close codes the gateway sends (RFC 6455, section 7.4.1), in one place.
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// Gateway shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol (bad framing, reserved bits, unmasked client frame...).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation (rate, token expiry).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message larger than the route allows.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Something failed inside the gateway.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// tungstenite's configuration for one socket, sized for a gateway: a small initial read buffer
/// (tungstenite's default is 128 KiB per socket), eager writes, and a bounded write queue.
/// `read_max` is the largest message this socket may receive; `write_max` the largest it must
/// send (tungstenite refuses to queue a message larger than its write queue).
pub fn websocket_config(limits: &Limits, read_max: usize, write_max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(limits.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_write_buffer_bytes.max(write_max + 64))
        .max_message_size(Some(read_max))
        .max_frame_size(Some(read_max))
}

/// Which side started the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Initiator {
    #[default]
    None,
    Client,
    Gateway,
}

impl Initiator {
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::None => "none",
            Initiator::Client => "client",
            Initiator::Gateway => "gateway",
        }
    }
}

/// How a session ended and what went through it: the access-log line's content.
#[derive(Debug, Clone, Default)]
pub struct SessionEnd {
    pub close_code: Option<u16>,
    pub initiator: Initiator,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl SessionEnd {
    /// Record that the gateway closed the session with `code`.
    pub fn close_by_gateway(&mut self, code: u16) {
        self.initiator = Initiator::Gateway;
        self.close_code = Some(code);
    }
}

/// What every session needs besides its socket: the shutdown signal, the close timeout, the
/// policy for messages from the client, the token's expiry, and the route's message counters.
pub struct SessionContext {
    /// Shutdown (jittered over the drain window) and route removal: close 1001.
    pub stop: StopSignal,
    pub close_timeout: Duration,
    /// Applied to each data message the client sends.
    pub inbound: Guard,
    pub expiry: Option<Expiry>,
    /// Counts every message by direction and class (`Meter::default()` counts nothing).
    pub meter: Meter,
}

/// The close code and reason for a read error, or `None` when the peer is gone and nothing can
/// be sent.
pub fn close_for_error(e: &WsError) -> Option<Violation> {
    let (code, reason) = match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            (close::MESSAGE_TOO_BIG, "message too big")
        }
        WsError::Capacity(_) => (close::MESSAGE_TOO_BIG, "frame too big"),
        WsError::Utf8(_) => (close::INVALID_PAYLOAD, "invalid UTF-8 in text message"),
        WsError::Protocol(_) => (close::PROTOCOL_ERROR, "protocol error"),
        WsError::WriteBufferFull(_) => (close::POLICY_VIOLATION, "peer does not read"),
        _ => return None,
    };
    Some(Violation { code, reason })
}

/// Send our close frame, then wait (bounded) for the peer's reply so the close handshake
/// completes cleanly; the socket is dropped afterwards either way.
pub async fn close_and_drain<S>(
    ws: &mut WebSocketStream<S>,
    code: u16,
    reason: &str,
    close_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let drain = async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(close_timeout, drain).await;
}

/// Counts open WebSocket sessions so that a graceful stop knows when the last one has gone.
#[derive(Debug, Default)]
pub struct Sessions {
    open: AtomicUsize,
    changed: Notify,
}

impl Sessions {
    /// Count a session as open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> SessionGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        SessionGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Resolves once no session is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.changed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps one session counted; dropping it (however the session ends) releases the count.
#[derive(Debug)]
pub struct SessionGuard(Arc<Sessions>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn guards_release_their_count() {
        let sessions = Arc::new(Sessions::default());
        let a = sessions.open();
        let b = sessions.open();
        assert_eq!(sessions.count(), 2);
        drop(a);
        let waiter = tokio::spawn({
            let s = sessions.clone();
            async move { s.all_closed().await }
        });
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sessions.count(), 0);
    }
}
