//! The local echo: a text message `X` is answered with `<prefix>X`, a binary message comes back
//! unchanged, pings get pongs (tungstenite answers them), and a close gets a close with the same
//! code. This is the Pedestal guide's example, served by the gateway itself.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::guard::{Expiry, Violation};
use super::{close, close_and_drain, close_for_error, Initiator, SessionContext, SessionEnd};
use crate::shutdown::shutting_down;

/// Run one echo session until either side closes, policy ends it, or the gateway shuts down.
pub async fn run<S>(mut ws: WebSocketStream<S>, prefix: &str, ctx: SessionContext) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let SessionContext {
        mut shutdown,
        close_timeout,
        inbound,
        expiry,
    } = ctx;
    let mut end = SessionEnd::default();
    loop {
        let next = tokio::select! {
            biased;
            _ = shutting_down(&mut shutdown) => {
                end.close_by_gateway(close::GOING_AWAY);
                close_and_drain(&mut ws, close::GOING_AWAY, "server shutting down", close_timeout).await;
                return end;
            }
            _ = Expiry::wait(expiry) => {
                let v = Expiry::VIOLATION;
                end.close_by_gateway(v.code);
                close_and_drain(&mut ws, v.code, v.reason, close_timeout).await;
                return end;
            }
            next = ws.next() => next,
        };
        let reply = match next {
            None => return end,
            Some(Err(e)) => {
                if let Some(Violation { code, reason }) = close_for_error(&e) {
                    log::debug!("echo session: {e}; closing with {code}");
                    end.close_by_gateway(code);
                    close_and_drain(&mut ws, code, reason, close_timeout).await;
                }
                return end;
            }
            Some(Ok(message)) => {
                if message.is_text() || message.is_binary() {
                    end.messages_in += 1;
                    end.bytes_in += message.len() as u64;
                    if let Err(Violation { code, reason }) = inbound.on_message(message.len()) {
                        end.close_by_gateway(code);
                        close_and_drain(&mut ws, code, reason, close_timeout).await;
                        return end;
                    }
                }
                match message {
                    Message::Text(text) => Message::text(format!("{prefix}{}", text.as_str())),
                    Message::Binary(data) => Message::Binary(data),
                    Message::Close(frame) => {
                        // tungstenite has queued the reply with the same code; the next read
                        // flushes it and then ends the stream.
                        if end.initiator == Initiator::None {
                            end.initiator = Initiator::Client;
                            end.close_code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                        }
                        continue;
                    }
                    // Pongs to pings are sent by tungstenite on the next read.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                }
            }
        };
        let len = reply.len() as u64;
        if ws.send(reply).await.is_err() {
            return end;
        }
        end.messages_out += 1;
        end.bytes_out += len;
    }
}
