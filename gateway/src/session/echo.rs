//! The local echo: a text message `X` is answered with `<prefix>X`, a binary message comes back
//! unchanged, pings get pongs (tungstenite answers them), and a close gets a close with the same
//! code. This is the Pedestal guide's example, served by the gateway itself.

use std::future::Future;

use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::close::{close_and_drain, close_for_error, code_of};
use super::deflate::{is_compressed, next_or_quiet, Translate};
use super::{idle, Outside, SessionContext};
use crate::core::close::Violation;
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

/// Run one echo session until either side closes, policy ends it, or the gateway shuts down.
/// (`ctx` is borrowed field by field, never moved out: an open socket holds its session's future,
/// which would otherwise keep two copies of it. For the same reason this returns an `async`
/// block instead of being an `async fn`, whose future keeps a second copy of every argument, the
/// socket included: 536 bytes, which put the task a size class (1 KiB) higher.)
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn run<S, P>(
    mut ws: WebSocketStream<S>,
    prefix: P,
    mut ctx: SessionContext,
    (mut inbound_deflate, mut outbound_deflate): Deflate,
) -> impl Future<Output = SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: AsRef<str>,
{
    async move {
        let prefix = prefix.as_ref();
        let SessionContext {
            stop,
            close_timeout,
            inbound,
            expiry,
            meter,
            counters,
            control,
        } = &mut ctx;
        let mut end = SessionEnd::default();
        // What the gateway closes with, if it is the gateway that ends the session, and the end
        // reason it reports (only for closes from outside the socket).
        let close: Option<((u16, String), Option<EndReason>)> = {
            let outside = Outside::wait(stop, *expiry, control);
            // On the heap: its timer is the last ~100 bytes that kept the session's task a
            // size class (512 bytes) larger on every idle socket.
            let mut quiet = Box::pin(idle::wake_when_quiet(counters));
            tokio::pin!(outside);
            loop {
                let next = tokio::select! {
                    biased;
                    why = &mut outside => {
                        let ((code, reason), cause) = why.close();
                        break Some(((code, reason.to_string()), Some(cause)));
                    }
                    next = next_or_quiet(&mut ws, || {
                        Translate::release_if_quiet(inbound_deflate.as_deref_mut());
                        Translate::release_if_quiet(outbound_deflate.as_deref_mut());
                    }) => next,
                    // Never completes: wakes the loop so that a quiet socket's next read gives
                    // its buffers back.
                    never = quiet.as_mut() => match never {},
                };
                let message = match next {
                    None => break None,
                    Some(Err(e)) => {
                        break close_for_error(&e).map(|violation| {
                            log::debug!("echo session: {e}; closing with {}", violation.code);
                            (owned(violation), None)
                        })
                    }
                    Some(Ok(message)) => message,
                };
                meter.message(
                    Direction::FromClient,
                    Class::of(&message),
                    payload_len(&message),
                );
                let max = inbound.max_message();
                let message = match Translate::receive(inbound_deflate.as_deref_mut(), message, max)
                {
                    Ok(received) => {
                        if received.was_compressed() {
                            meter.plain(Direction::FromClient, received.plain.len());
                        }
                        received.plain
                    }
                    Err(violation) => break Some((owned(violation), None)),
                };
                if message.is_text() || message.is_binary() {
                    counters.count_in(message.len());
                    if let Err(violation) = inbound.on_message(message.len()) {
                        break Some((owned(violation), None));
                    }
                }
                let reply = match message {
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
                };
                let plain = reply.len();
                let reply = match outbound_deflate.as_deref_mut() {
                    Some(t) => t.compress(reply),
                    None => reply,
                };
                let (wire, class, compressed) = (
                    payload_len(&reply),
                    Class::of(&reply),
                    is_compressed(&reply),
                );
                if ws.send(reply).await.is_err() {
                    break None;
                }
                meter.message(Direction::ToClient, class, wire);
                if compressed {
                    meter.plain(Direction::ToClient, plain);
                }
                counters.count_out(plain);
            }
        };
        if let Some(((code, reason), cause)) = close {
            close_by_gateway(&mut ws, &mut end, meter, (code, &reason), *close_timeout).await;
            end.reason = cause;
        }
        counters.load_into(&mut end);
        end
    }
}

/// The echo's compression: for what the client sends, and for the answers.
type Deflate = (Option<Box<Translate>>, Option<Box<Translate>>);

/// A close of the gateway's own, as [`close_by_gateway`] takes it.
fn owned(v: Violation) -> (u16, String) {
    (v.code, v.reason.to_string())
}
