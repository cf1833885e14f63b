//! The two pumps of a relay session (client → upstream, upstream → client) and the close of one
//! side. Each pump awaits the write of one message before it reads the next, so a side that
//! does not read stops the reads from the other side (TCP backpressure reaches the sender).

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::outcome::{Finish, Outcome};
use super::timers::{sleep_until_opt, Shared};
use super::RelayOptions;
use crate::core::close::{self, Violation};
use crate::core::duration::deadline;
use crate::core::labels::{payload_len, Class, Direction};
use crate::obs::metrics::Meter;
use crate::session::close::fault_of;
use crate::session::deflate::{is_compressed, next_or_quiet, Received, Translate};
use crate::session::guard::Guard;

pub(super) type Tx<S> = SplitSink<WebSocketStream<S>, Message>;
pub(super) type Rx<S> = SplitStream<WebSocketStream<S>>;

/// Close one side: send its close (when there is one) and wait for the reply, or (when
/// `drain`) flush tungstenite's reply to the side's own close and wait for the end of the
/// connection.
pub(super) async fn finish<S>(tx: &mut Tx<S>, rx: &mut Rx<S>, how: Finish, limit: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Finish { close, drain } = how;
    let work = async {
        if let Some(frame) = close {
            if tx.send(Message::Close(frame)).await.is_err() {
                return;
            }
        } else if !drain {
            return;
        }
        while let Some(Ok(_)) = rx.next().await {}
    };
    let _ = tokio::time::timeout(limit, work).await;
}

/// Close the upstream after the client broke the protocol, while the upstream's answers to the
/// client's valid messages before the fault still reach the client: send the upstream its
/// close, deliver its data messages to the client until its close reply (or `limit`). The
/// client is closed afterwards, by the caller.
pub(super) async fn finish_upstream_delivering<U, C>(
    (u_tx, u_rx): (&mut Tx<U>, &mut Rx<U>),
    how: Finish,
    limit: Duration,
    c_tx: &mut Tx<C>,
    (opts, shared, meter): (&RelayOptions, &Shared, &Meter),
    translate: &mut Option<Box<Translate>>,
) where
    U: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let work = async {
        if let Some(frame) = how.close {
            if u_tx.send(Message::Close(frame)).await.is_err() {
                return;
            }
        }
        while let Some(Ok(message)) = u_rx.next().await {
            let (class, len) = (Class::of(&message), payload_len(&message));
            meter.message(Direction::FromUpstream, class, len);
            let max = opts.outbound.max_message();
            let Ok(received) = Translate::receive(translate.as_deref_mut(), message, max) else {
                return;
            };
            let len = received.plain.len();
            if !(received.plain.is_text() || received.plain.is_binary())
                || opts.outbound.on_message(len).is_err()
            {
                continue;
            }
            shared.counters.count_out(len);
            let out = Translate::send(translate.as_deref_mut(), received);
            let (class, len) = (Class::of(&out), payload_len(&out));
            if c_tx.send(out).await.is_err() {
                return;
            }
            meter.message(Direction::ToClient, class, len);
        }
    };
    let _ = tokio::time::timeout(limit, work).await;
}

/// A compressed message that cannot be made plain breaks the protocol (or, too big, the
/// policy) of the side that sent it.
fn broke(client: bool, violation: Violation) -> Outcome {
    Outcome::Broke {
        client,
        violation,
        policy: violation.code == close::MESSAGE_TOO_BIG,
    }
}

/// A data message from one side (`from_client`), made plain: checked by `guard`, counted, and
/// sent on to the other side as that side agreed (passed through, compressed or plain). `Err`
/// is how the pump ends.
async fn forward_data<T>(
    received: Received,
    from_client: bool,
    guard: &Guard,
    tx: &mut Tx<T>,
    translate: Option<&mut Translate>,
    (shared, meter): (&Shared, &Meter),
) -> Result<(), Outcome>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let len = received.plain.len();
    if let Err(violation) = guard.on_message(len) {
        return Err(Outcome::Broke {
            client: from_client,
            violation,
            policy: true,
        });
    }
    shared.touch(&shared.last_data);
    let (from, to) = if from_client {
        shared.counters.count_in(len);
        (Direction::FromClient, Direction::ToUpstream)
    } else {
        shared.counters.count_out(len);
        (Direction::FromUpstream, Direction::ToClient)
    };
    if received.was_compressed() {
        meter.plain(from, len);
    }
    let out = Translate::send(translate, received);
    let (class, wire, compressed) = (Class::of(&out), payload_len(&out), is_compressed(&out));
    if tx.send(out).await.is_err() {
        return Err(Outcome::Gone {
            client: !from_client,
        });
    }
    meter.message(to, class, wire);
    if compressed {
        meter.plain(to, len);
    }
    Ok(())
}

pub(super) async fn client_to_upstream<C, U>(
    rx: &mut Rx<C>,
    tx: &mut Tx<U>,
    guard: &Guard,
    (shared, meter): (&Shared, &Meter),
    translate: &mut Option<Box<Translate>>,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message =
            match next_or_quiet(rx, || Translate::release_if_quiet(translate.as_deref_mut())).await
            {
                None => return Outcome::Gone { client: true },
                Some(Err(e)) => {
                    return match fault_of(&e) {
                        Some(violation) => {
                            log::debug!("relay: client error {e}");
                            Outcome::Broke {
                                client: true,
                                violation,
                                policy: matches!(e, WsError::Capacity(_)),
                            }
                        }
                        None => Outcome::Gone { client: true },
                    }
                }
                Some(Ok(m)) => m,
            };
        shared.touch(&shared.heard_from_client);
        let (class, len) = (Class::of(&message), payload_len(&message));
        meter.message(Direction::FromClient, class, len);
        let max = guard.max_message();
        let received = match Translate::receive(translate.as_deref_mut(), message, max) {
            Ok(r) => r,
            Err(violation) => return broke(true, violation),
        };
        match &received.plain {
            Message::Text(_) | Message::Binary(_) => {
                let t = translate.as_deref_mut();
                if let Err(end) = forward_data(received, true, guard, tx, t, (shared, meter)).await
                {
                    return end;
                }
            }
            Message::Ping(payload) => {
                if tx.send(Message::Ping(payload.clone())).await.is_err() {
                    return Outcome::Gone { client: false };
                }
                meter.message(Direction::ToUpstream, class, len);
            }
            Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => {
                return Outcome::Closed {
                    by_client: true,
                    frame: frame.clone(),
                }
            }
        }
    }
}

pub(super) async fn upstream_to_client<U, C>(
    rx: &mut Rx<U>,
    tx: &mut Tx<C>,
    opts: &RelayOptions,
    (shared, meter): (&Shared, &Meter),
    translate: &mut Option<Box<Translate>>,
) -> Outcome
where
    U: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        // Ping once per silence: when the client has been quiet for the interval and has not
        // been pinged since it was last heard. After a ping, wake again an interval later to
        // see whether the client has been heard since (the other pump hears it).
        let (wake_at, ping_due) = match opts.ping_interval {
            None => (None, false),
            Some(interval) => {
                let heard = shared.heard();
                match shared.get(&shared.last_ping).filter(|p| *p >= heard) {
                    // Pinged, not heard since: look again later (never in the past, which
                    // would spin).
                    Some(pinged) => (
                        Some(deadline(pinged, interval).max(deadline(Instant::now(), interval))),
                        false,
                    ),
                    None => (Some(deadline(heard, interval)), true),
                }
            }
        };
        let next = tokio::select! {
            next = next_or_quiet(rx, || Translate::release_if_quiet(translate.as_deref_mut())) => next,
            _ = sleep_until_opt(wake_at) => {
                if ping_due {
                    shared.touch(&shared.last_ping);
                    if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return Outcome::Gone { client: true };
                    }
                    meter.message(Direction::ToClient, Class::Control, 0);
                }
                continue;
            }
        };
        let message = match next {
            None => return Outcome::Gone { client: false },
            Some(Err(e)) => {
                return match fault_of(&e) {
                    Some(violation) => {
                        log::debug!("relay: upstream error {e}");
                        Outcome::Broke {
                            client: false,
                            violation,
                            policy: matches!(e, WsError::Capacity(_)),
                        }
                    }
                    None => Outcome::Gone { client: false },
                }
            }
            Some(Ok(m)) => m,
        };
        let (class, len) = (Class::of(&message), payload_len(&message));
        meter.message(Direction::FromUpstream, class, len);
        let max = opts.outbound.max_message();
        let received = match Translate::receive(translate.as_deref_mut(), message, max) {
            Ok(r) => r,
            Err(violation) => return broke(false, violation),
        };
        match &received.plain {
            Message::Text(_) | Message::Binary(_) => {
                let t = translate.as_deref_mut();
                let guard = &opts.outbound;
                if let Err(end) = forward_data(received, false, guard, tx, t, (shared, meter)).await
                {
                    return end;
                }
            }
            Message::Ping(payload) => {
                if tx.send(Message::Ping(payload.clone())).await.is_err() {
                    return Outcome::Gone { client: true };
                }
                meter.message(Direction::ToClient, class, len);
            }
            Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => {
                return Outcome::Closed {
                    by_client: false,
                    frame: frame.clone(),
                }
            }
        }
    }
}
