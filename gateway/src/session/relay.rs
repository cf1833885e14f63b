//! The relay session: frames both ways between a client and its upstream, under policy.
//!
//! Each side is a tungstenite stream, so nothing malformed is ever forwarded: a message is
//! forwarded only once tungstenite has read it whole and valid (fragments reassembled, UTF-8
//! checked, masking and reserved bits verified). A side that breaks the protocol is closed with
//! the RFC's code (1002/1007/1009); the other side then gets 1011 (the upstream failed the
//! client) or 1001 (the client went away, from the upstream's point of view).
//!
//! The two directions are two pumps in one task. Each pump awaits the write of one message
//! before it reads the next, so a side that does not read stops the reads from the other side
//! (TCP backpressure reaches the sender) and a connection never holds more than one message
//! per direction plus tungstenite's buffers.
//!
//! Control frames are hop by hop: tungstenite answers each side's pings itself, and pings are
//! also forwarded to the other side (whose pongs the gateway keeps). The gateway pings a client
//! that has been silent for `ping_interval` and drops one that then stays silent for
//! `ping_timeout`. Close frames are answered by tungstenite with the same code and passed on,
//! code and reason, to the other side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::guard::{Expiry, Guard, Violation};
use super::{close, close_for_error, Initiator, SessionContext, SessionEnd};
use crate::metrics::{payload_len, Class, Direction, Meter};
use crate::shutdown::Stop;

/// Relay-only settings of a session (the rest is in [`SessionContext`]).
pub struct RelayOptions {
    /// Applied to each data message the upstream sends.
    pub outbound: Guard,
    /// Ping a client silent this long; `None`: no pings.
    pub ping_interval: Option<Duration>,
    /// After a ping, how long the client has to send anything.
    pub ping_timeout: Duration,
    /// Close when no data message went either way for this long.
    pub idle_timeout: Option<Duration>,
}

/// Why a relay session ended: a low-cardinality label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent a close frame.
    ClientClosed,
    /// The upstream sent a close frame.
    UpstreamClosed,
    /// The client's connection ended without a close frame.
    ClientGone,
    /// The upstream's connection ended without a close frame, or writing to it failed.
    UpstreamGone,
    /// The client broke the protocol (1002/1007/1009 to it).
    ClientProtocolError,
    /// The upstream broke the protocol (1002/1007/1009 to it, 1011 to the client).
    UpstreamProtocolError,
    /// A client message broke the route's policy (size, rate).
    ClientPolicy,
    /// An upstream message broke the route's policy.
    UpstreamPolicy,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// No data either way for `idle_timeout`.
    IdleTimeout,
    /// The token expired.
    TokenExpired,
    /// The gateway is shutting down.
    Shutdown,
    /// A reload removed the route.
    RouteRemoved,
}

impl EndReason {
    pub const ALL: [EndReason; 13] = [
        EndReason::ClientClosed,
        EndReason::UpstreamClosed,
        EndReason::ClientGone,
        EndReason::UpstreamGone,
        EndReason::ClientProtocolError,
        EndReason::UpstreamProtocolError,
        EndReason::ClientPolicy,
        EndReason::UpstreamPolicy,
        EndReason::PingTimeout,
        EndReason::IdleTimeout,
        EndReason::TokenExpired,
        EndReason::Shutdown,
        EndReason::RouteRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientClosed => "client_closed",
            EndReason::UpstreamClosed => "upstream_closed",
            EndReason::ClientGone => "client_gone",
            EndReason::UpstreamGone => "upstream_gone",
            EndReason::ClientProtocolError => "client_protocol_error",
            EndReason::UpstreamProtocolError => "upstream_protocol_error",
            EndReason::ClientPolicy => "client_policy",
            EndReason::UpstreamPolicy => "upstream_policy",
            EndReason::PingTimeout => "ping_timeout",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::TokenExpired => "token_expired",
            EndReason::Shutdown => "shutdown",
            EndReason::RouteRemoved => "route_removed",
        }
    }
}

/// How a relay session ended.
#[derive(Debug, Clone)]
pub struct RelayEnd {
    /// Counts are client-centric: `in` is client → upstream. `close_code` is what the client
    /// got or sent.
    pub session: SessionEnd,
    pub reason: EndReason,
    /// The close code the upstream got or sent, if any.
    pub upstream_close_code: Option<u16>,
}

/// What ended the pumps, with what each side must be told.
enum Outcome {
    /// A side sent a close frame: the other side gets the same code and reason.
    Closed {
        by_client: bool,
        frame: Option<CloseFrame>,
    },
    /// A side is gone; the other gets a close.
    Gone { client: bool },
    /// A side broke the protocol or the policy: it gets `violation`, the other side a close.
    Broke {
        client: bool,
        violation: Violation,
        policy: bool,
    },
    /// The gateway ends the session for both sides.
    Gateway { reason: EndReason },
}

/// Mutable state shared by the pumps and watchdogs of one session. They all run in one task;
/// atomics (relaxed) only because the session future must be `Send`.
struct Shared {
    base: Instant,
    heard_from_client: Moment,
    last_ping: Moment,
    last_data: Moment,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// An instant after `Shared::base`, or none (stored as nanoseconds + 1; 0 is none).
#[derive(Default)]
struct Moment(AtomicU64);

impl Shared {
    fn new() -> Shared {
        let shared = Shared {
            base: Instant::now(),
            heard_from_client: Moment::default(),
            last_ping: Moment::default(),
            last_data: Moment::default(),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        };
        shared.touch(&shared.heard_from_client);
        shared.touch(&shared.last_data);
        shared
    }

    fn touch(&self, m: &Moment) {
        let nanos = self.base.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64;
        m.0.store(nanos + 1, Ordering::Relaxed);
    }

    fn get(&self, m: &Moment) -> Option<Instant> {
        match m.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    fn heard(&self) -> Instant {
        self.get(&self.heard_from_client).unwrap_or(self.base)
    }

    fn count(&self, messages: &AtomicU64, bytes: &AtomicU64, len: usize) {
        messages.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}

type Tx<S> = SplitSink<WebSocketStream<S>, Message>;
type Rx<S> = SplitStream<WebSocketStream<S>>;

/// Relay until either side closes, breaks the protocol or the policy, goes quiet, or the
/// gateway shuts down; then close both sides (bounded by the close timeout).
pub async fn run<C, U>(
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
    ctx: SessionContext,
    opts: RelayOptions,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let SessionContext {
        mut stop,
        close_timeout,
        inbound,
        expiry,
        meter,
    } = ctx;
    let shared = Shared::new();
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();

    let outcome = {
        let up = client_to_upstream(&mut c_rx, &mut u_tx, &inbound, &shared, &meter);
        let down = upstream_to_client(&mut u_rx, &mut c_tx, &opts, &shared, &meter);
        tokio::select! {
            biased;
            why = stop.wait() => Outcome::Gateway {
                reason: match why {
                    Stop::Shutdown => EndReason::Shutdown,
                    Stop::RouteRemoved => EndReason::RouteRemoved,
                },
            },
            _ = Expiry::wait(expiry) => Outcome::Gateway { reason: EndReason::TokenExpired },
            // The timers before the pumps: a busy pump must not starve them.
            _ = silent_client(&shared, opts.ping_interval, opts.ping_timeout) => {
                Outcome::Gateway { reason: EndReason::PingTimeout }
            }
            _ = idle(&shared, opts.idle_timeout) => Outcome::Gateway { reason: EndReason::IdleTimeout },
            o = up => o,
            o = down => o,
        }
    };

    let mut end = RelayEnd {
        session: SessionEnd::default(),
        reason: EndReason::Shutdown,
        upstream_close_code: None,
    };
    // What each side gets: `Some(frame)` a close of ours, `None` when it closed itself or is gone.
    let (to_client, to_upstream, drain_client, drain_upstream) = match outcome {
        Outcome::Closed { by_client, frame } => {
            let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
            end.session.close_code = Some(code);
            end.upstream_close_code = Some(code);
            let passed = frame.map(|f| CloseFrame {
                code: f.code,
                reason: f.reason,
            });
            if by_client {
                end.reason = EndReason::ClientClosed;
                end.session.initiator = Initiator::Client;
                (None, Some(passed), true, false)
            } else {
                end.reason = EndReason::UpstreamClosed;
                end.session.initiator = Initiator::Gateway;
                (Some(passed), None, false, true)
            }
        }
        Outcome::Gone { client: true } => {
            end.reason = EndReason::ClientGone;
            end.session.initiator = Initiator::Client;
            (
                None,
                Some(frame(close::GOING_AWAY, "client disconnected")),
                false,
                false,
            )
        }
        Outcome::Gone { client: false } => {
            end.reason = EndReason::UpstreamGone;
            (
                Some(frame(close::INTERNAL_ERROR, "upstream connection lost")),
                None,
                false,
                false,
            )
        }
        Outcome::Broke {
            client: true,
            violation,
            policy,
        } => {
            end.reason = if policy {
                EndReason::ClientPolicy
            } else {
                EndReason::ClientProtocolError
            };
            let other = match (policy, violation.code) {
                (_, close::MESSAGE_TOO_BIG) => "client message too big",
                (true, _) => "client closed by policy",
                (false, _) => "client protocol error",
            };
            (
                Some(frame(violation.code, violation.reason)),
                Some(frame(close::GOING_AWAY, other)),
                false,
                false,
            )
        }
        Outcome::Broke {
            client: false,
            violation,
            policy,
        } => {
            end.reason = if policy {
                EndReason::UpstreamPolicy
            } else {
                EndReason::UpstreamProtocolError
            };
            let other = match (policy, violation.code) {
                (_, close::MESSAGE_TOO_BIG) => "upstream message too big",
                (true, _) => "upstream closed by policy",
                (false, _) => "upstream protocol error",
            };
            (
                Some(frame(close::INTERNAL_ERROR, other)),
                Some(frame(violation.code, violation.reason)),
                false,
                false,
            )
        }
        Outcome::Gateway { reason } => {
            end.reason = reason;
            let (client_frame, upstream_frame) = match reason {
                EndReason::TokenExpired => (
                    frame(Expiry::VIOLATION.code, Expiry::VIOLATION.reason),
                    frame(close::GOING_AWAY, "client token expired"),
                ),
                EndReason::PingTimeout => (
                    frame(close::GOING_AWAY, "ping timeout"),
                    frame(close::GOING_AWAY, "client ping timeout"),
                ),
                EndReason::IdleTimeout => (
                    frame(close::GOING_AWAY, "idle timeout"),
                    frame(close::GOING_AWAY, "idle timeout"),
                ),
                EndReason::RouteRemoved => (
                    frame(close::GOING_AWAY, Stop::RouteRemoved.reason()),
                    frame(close::GOING_AWAY, Stop::RouteRemoved.reason()),
                ),
                _ => (
                    frame(close::GOING_AWAY, "server shutting down"),
                    frame(close::GOING_AWAY, "server shutting down"),
                ),
            };
            (Some(client_frame), Some(upstream_frame), false, false)
        }
    };
    if let Some(Some(f)) = &to_client {
        end.session.close_by_gateway(u16::from(f.code));
    }
    if let Some(Some(f)) = &to_upstream {
        end.upstream_close_code = Some(u16::from(f.code));
    }
    // A client that never answered pings will not answer a close either: do not wait for it.
    let client_wait = if end.reason == EndReason::PingTimeout {
        close_timeout.min(Duration::from_secs(1))
    } else {
        close_timeout
    };
    tokio::join!(
        finish(&mut c_tx, &mut c_rx, to_client, drain_client, client_wait),
        finish(
            &mut u_tx,
            &mut u_rx,
            to_upstream,
            drain_upstream,
            close_timeout
        ),
    );

    end.session.messages_in = shared.messages_in.load(Ordering::Relaxed);
    end.session.messages_out = shared.messages_out.load(Ordering::Relaxed);
    end.session.bytes_in = shared.bytes_in.load(Ordering::Relaxed);
    end.session.bytes_out = shared.bytes_out.load(Ordering::Relaxed);
    end
}

fn frame(code: u16, reason: &str) -> Option<CloseFrame> {
    Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    })
}

/// Close one side: send `close` (when `Some`) and wait for the reply, or (when `drain`) flush
/// tungstenite's reply to the side's own close and wait for the end of the connection.
async fn finish<S>(
    tx: &mut Tx<S>,
    rx: &mut Rx<S>,
    close: Option<Option<CloseFrame>>,
    drain: bool,
    limit: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
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

/// How a read error ends the session: a violation to send back, or `None` when the peer is
/// simply gone.
fn broke(e: &WsError) -> Option<Violation> {
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Io(_) => None,
        other => close_for_error(other),
    }
}

async fn client_to_upstream<C, U>(
    rx: &mut Rx<C>,
    tx: &mut Tx<U>,
    guard: &Guard,
    shared: &Shared,
    meter: &Meter,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = match rx.next().await {
            None => return Outcome::Gone { client: true },
            Some(Err(e)) => {
                return match broke(&e) {
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
        match message {
            Message::Text(_) | Message::Binary(_) => {
                let len = message.len();
                if let Err(violation) = guard.on_message(len) {
                    return Outcome::Broke {
                        client: true,
                        violation,
                        policy: true,
                    };
                }
                shared.touch(&shared.last_data);
                shared.count(&shared.messages_in, &shared.bytes_in, len);
                if tx.send(message).await.is_err() {
                    return Outcome::Gone { client: false };
                }
                meter.message(Direction::ToUpstream, class, len);
            }
            Message::Ping(payload) => {
                if tx.send(Message::Ping(payload)).await.is_err() {
                    return Outcome::Gone { client: false };
                }
                meter.message(Direction::ToUpstream, class, len);
            }
            Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => {
                return Outcome::Closed {
                    by_client: true,
                    frame,
                }
            }
        }
    }
}

async fn upstream_to_client<U, C>(
    rx: &mut Rx<U>,
    tx: &mut Tx<C>,
    opts: &RelayOptions,
    shared: &Shared,
    meter: &Meter,
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
                        Some((pinged + interval).max(Instant::now() + interval)),
                        false,
                    ),
                    None => (Some(heard + interval), true),
                }
            }
        };
        let next = tokio::select! {
            next = rx.next() => next,
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
                return match broke(&e) {
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
        match message {
            Message::Text(_) | Message::Binary(_) => {
                if let Err(violation) = opts.outbound.on_message(len) {
                    return Outcome::Broke {
                        client: false,
                        violation,
                        policy: true,
                    };
                }
                shared.touch(&shared.last_data);
                shared.count(&shared.messages_out, &shared.bytes_out, len);
                if tx.send(message).await.is_err() {
                    return Outcome::Gone { client: true };
                }
                meter.message(Direction::ToClient, class, len);
            }
            Message::Ping(payload) => {
                if tx.send(Message::Ping(payload)).await.is_err() {
                    return Outcome::Gone { client: true };
                }
                meter.message(Direction::ToClient, class, len);
            }
            Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => {
                return Outcome::Closed {
                    by_client: false,
                    frame,
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the client has been silent for `interval + timeout` (it was pinged after
/// `interval` and did not answer within `timeout`); never when pings are off.
async fn silent_client(shared: &Shared, interval: Option<Duration>, timeout: Duration) {
    let Some(interval) = interval else {
        return std::future::pending().await;
    };
    loop {
        let deadline = shared.heard() + interval + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Resolves when no data message went either way for `limit`; never without a limit.
async fn idle(shared: &Shared, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    loop {
        let deadline = shared.get(&shared.last_data).unwrap_or(shared.base) + limit;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::guard::Rates;
    use crate::shutdown::StopSignal;
    use tokio::io::duplex;
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (server, client)
    }

    fn ctx(shutdown: pingora::server::ShutdownWatch) -> SessionContext {
        let removed = tokio::sync::watch::channel(false).1;
        SessionContext {
            stop: StopSignal::new(shutdown, removed, Duration::ZERO),
            close_timeout: Duration::from_secs(1),
            inbound: Guard::new(10, Rates::default()),
            expiry: None,
            meter: Meter::default(),
        }
    }

    fn opts() -> RelayOptions {
        RelayOptions {
            outbound: Guard::new(1 << 20, Rates::default()),
            ping_interval: None,
            ping_timeout: Duration::from_secs(1),
            idle_timeout: None,
        }
    }

    #[tokio::test]
    async fn relays_both_ways_and_passes_the_close() {
        let (gw_client_side, mut client) = pair().await;
        let (mut upstream, gw_upstream_side) = pair().await;
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let session = tokio::spawn(async move {
            // The upstream side of the gateway is the WebSocket client.
            run(gw_client_side, gw_upstream_side, ctx(rx), opts()).await
        });
        client.send(Message::text("hi")).await.unwrap();
        assert_eq!(upstream.next().await.unwrap().unwrap(), Message::text("hi"));
        upstream.send(Message::binary(vec![1, 2])).await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::binary(vec![1, 2])
        );
        upstream
            .send(Message::Close(frame(4001, "done")))
            .await
            .unwrap();
        let got = client.next().await.unwrap().unwrap();
        assert_eq!(got, Message::Close(frame(4001, "done")));
        drop(client);
        let end = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end.reason, EndReason::UpstreamClosed);
        assert_eq!(end.session.close_code, Some(4001));
        assert_eq!(end.session.messages_in, 1);
        assert_eq!(end.session.bytes_out, 2);
    }

    #[tokio::test]
    async fn oversized_client_message_closes_both() {
        let (gw_client_side, mut client) = pair().await;
        let (mut upstream, gw_upstream_side) = pair().await;
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let session = tokio::spawn(run(gw_client_side, gw_upstream_side, ctx(rx), opts()));
        client.send(Message::text("01234567890")).await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Close(frame(1009, "message too big"))
        );
        assert_eq!(
            upstream.next().await.unwrap().unwrap(),
            Message::Close(frame(1001, "client message too big"))
        );
        let end = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end.reason, EndReason::ClientPolicy);
    }
}
