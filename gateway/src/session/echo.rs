//! The local echo: a text message `X` is answered with `<prefix>X`, a binary message comes back
//! unchanged, pings get pongs (tungstenite answers them), and a close gets a close with the same
//! code. This is the Pedestal guide's example, served by the gateway itself.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::close::{close_and_drain, close_for_error, code_of};
use super::guard::Expiry;
use super::SessionContext;
use crate::core::close::{self, Violation};
use crate::core::end::{EndReason, Initiator, SessionEnd};
use crate::core::labels::{payload_len, Class, Direction};
use crate::obs::metrics::Meter;

/// The gateway ends the session: record it, count our close frame, send it and wait for the
/// client's reply.
async fn close_by_gateway<S>(
    ws: &mut WebSocketStream<S>,
    end: &mut SessionEnd,
    meter: &Meter,
    (code, reason): (u16, &str),
    close_timeout: std::time::Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    end.close_by_gateway(code);
    meter.message(Direction::ToClient, Class::Control, 2 + reason.len());
    close_and_drain(ws, code, reason, close_timeout).await;
}

fn pair(v: Violation) -> (u16, &'static str) {
    (v.code, v.reason)
}

/// Run one echo session until either side closes, policy ends it, or the gateway shuts down.
pub(crate) async fn run<S>(
    mut ws: WebSocketStream<S>,
    prefix: &str,
    ctx: SessionContext,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let SessionContext {
        mut stop,
        close_timeout,
        inbound,
        expiry,
        meter,
        counters,
        mut control,
    } = ctx;
    let mut end = SessionEnd::default();
    let finish = |mut end: SessionEnd| {
        counters.load_into(&mut end);
        end
    };
    loop {
        let next = tokio::select! {
            biased;
            why = stop.wait() => {
                close_by_gateway(&mut ws, &mut end, &meter, pair(why.close()), close_timeout).await;
                end.reason = Some(why.into());
                return finish(end);
            }
            _ = Expiry::wait(expiry) => {
                close_by_gateway(&mut ws, &mut end, &meter, pair(close::TOKEN_EXPIRED), close_timeout).await;
                end.reason = Some(EndReason::TokenExpired);
                return finish(end);
            }
            request = control.wait() => {
                close_by_gateway(&mut ws, &mut end, &meter, (request.code, &request.reason), close_timeout).await;
                end.reason = Some(request.cause);
                return finish(end);
            }
            next = ws.next() => next,
        };
        let reply = match next {
            None => return finish(end),
            Some(Err(e)) => {
                if let Some(violation) = close_for_error(&e) {
                    log::debug!("echo session: {e}; closing with {}", violation.code);
                    close_by_gateway(&mut ws, &mut end, &meter, pair(violation), close_timeout)
                        .await;
                }
                return finish(end);
            }
            Some(Ok(message)) => {
                meter.message(
                    Direction::FromClient,
                    Class::of(&message),
                    payload_len(&message),
                );
                if message.is_text() || message.is_binary() {
                    counters.count_in(message.len());
                    if let Err(violation) = inbound.on_message(message.len()) {
                        close_by_gateway(&mut ws, &mut end, &meter, pair(violation), close_timeout)
                            .await;
                        return finish(end);
                    }
                }
                match message {
                    Message::Text(text) => Message::text(format!("{prefix}{}", text.as_str())),
                    Message::Binary(data) => Message::Binary(data),
                    Message::Close(frame) => {
                        // tungstenite has queued the reply with the same code; the next read
                        // flushes it and then ends the stream.
                        if end.initiator == Initiator::None {
                            let len = frame.as_ref().map_or(0, |f| 2 + f.reason.len());
                            meter.message(Direction::ToClient, Class::Control, len);
                            end.initiator = Initiator::Client;
                            end.close_code = Some(code_of(frame.as_ref()));
                        }
                        continue;
                    }
                    // Pongs to pings are sent by tungstenite on the next read.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                }
            }
        };
        let (len, class) = (reply.len(), Class::of(&reply));
        if ws.send(reply).await.is_err() {
            return finish(end);
        }
        meter.message(Direction::ToClient, class, len);
        counters.count_out(len);
    }
}
