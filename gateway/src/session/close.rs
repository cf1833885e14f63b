//! Closing a WebSocket: the close a read error calls for, and the close handshake itself.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::WebSocketStream;

use crate::core::close::{self, Violation};

/// The close code and reason for a read error, or `None` when the peer is gone and nothing can
/// be sent.
pub(crate) fn close_for_error(e: &WsError) -> Option<Violation> {
    Some(match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => close::MESSAGE_TOO_BIG_CLOSE,
        WsError::Capacity(_) => close::FRAME_TOO_BIG,
        WsError::Utf8(_) => close::INVALID_UTF8,
        WsError::Protocol(_) => close::PROTOCOL,
        WsError::WriteBufferFull(_) => close::PEER_DOES_NOT_READ,
        _ => return None,
    })
}

/// Like [`close_for_error`], but a peer that merely went away (reset, closed without a close
/// frame) is gone rather than at fault.
pub(crate) fn fault_of(e: &WsError) -> Option<Violation> {
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Io(_) => None,
        other => close_for_error(other),
    }
}

/// A close frame with `code` and `reason`.
pub(crate) fn frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

/// The code of a received close frame (1005 for one without a code).
pub(crate) fn code_of(frame: Option<&CloseFrame>) -> u16 {
    frame.map_or(close::NO_STATUS, |f| u16::from(f.code))
}

/// Send our close frame, then wait (bounded) for the peer's reply so the close handshake
/// completes cleanly; the socket is dropped afterwards either way.
pub(crate) async fn close_and_drain<S>(
    ws: &mut WebSocketStream<S>,
    code: u16,
    reason: &str,
    close_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async {
        if ws.close(Some(frame(code, reason))).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(close_timeout, drain).await;
}
