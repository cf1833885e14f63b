//! The relay session: frames both ways between a client and its upstream, under policy. The
//! pumps are in [`pump`], the table of who is told what at the end in [`outcome`], the clocks
//! and watchdogs in [`timers`].
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

mod outcome;
mod pump;
mod timers;

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

use super::deflate::Translate;
use super::guard::Guard;
use super::idle::wake_when_quiet;
use super::{Outside, SessionContext};
use crate::core::end::{EndReason, SessionEnd};
use outcome::{Outcome, Plan};
use pump::{client_to_upstream, finish, finish_upstream_delivering, upstream_to_client};
use timers::{idle, silent_client, Shared};

/// Relay-only settings of a session (the rest is in [`SessionContext`]).
pub(crate) struct RelayOptions {
    /// Applied to each data message the upstream sends.
    pub(crate) outbound: Guard,
    /// Ping a client silent this long; `None`: no pings.
    pub(crate) ping_interval: Option<Duration>,
    /// After a ping, how long the client has to send anything.
    pub(crate) ping_timeout: Duration,
    /// Close when no data message went either way for this long.
    pub(crate) idle_timeout: Option<Duration>,
    /// permessage-deflate of each direction, if either side agreed it.
    pub(crate) to_upstream: Option<Box<Translate>>,
    pub(crate) to_client: Option<Box<Translate>>,
}

/// How a relay session ended.
#[derive(Debug, Clone)]
pub(crate) struct RelayEnd {
    /// Counts are client-centric: `in` is client → upstream. `close_code` is what the client
    /// got or sent.
    pub(crate) session: SessionEnd,
    pub(crate) reason: EndReason,
    /// The close code the upstream got or sent, if any.
    pub(crate) upstream_close_code: Option<u16>,
}

/// Relay until either side closes, breaks the protocol or the policy, goes quiet, or the
/// gateway shuts down; then close both sides (bounded by the close timeout).
/// (`ctx` is borrowed field by field, never moved out: an open socket holds its session's
/// future, which would otherwise keep two copies of it. For the same reason this is a function
/// that splits the streams and returns an `async` block: an `async fn` would keep its arguments
/// twice, the two streams among them, which the split has moved out.)
pub(crate) fn run<C, U>(
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
    mut ctx: SessionContext,
    mut opts: RelayOptions,
) -> impl Future<Output = RelayEnd>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();
    async move {
        let SessionContext {
            stop,
            close_timeout,
            inbound,
            expiry,
            meter,
            counters,
            control,
        } = &mut ctx;
        let (close_timeout, expiry) = (*close_timeout, *expiry);
        let shared = Shared::new(counters.clone());

        let (mut to_upstream, mut to_client) = (opts.to_upstream.take(), opts.to_client.take());
        let outcome = {
            let up = client_to_upstream(
                &mut c_rx,
                &mut u_tx,
                inbound,
                (&shared, meter),
                &mut to_upstream,
            );
            let down = upstream_to_client(
                &mut u_rx,
                &mut c_tx,
                &opts,
                (&shared, meter),
                &mut to_client,
            );
            tokio::select! {
                biased;
                outside = Outside::wait(stop, expiry, control) => match outside {
                    Outside::Operator(request) => Outcome::Operator(request),
                    other => Outcome::Gateway { reason: other.close().1 },
                },
                // The timers before the pumps: a busy pump must not starve them.
                _ = silent_client(&shared, opts.ping_interval, opts.ping_timeout) => {
                    Outcome::Gateway { reason: EndReason::PingTimeout }
                }
                _ = idle(&shared, opts.idle_timeout) => Outcome::Gateway { reason: EndReason::IdleTimeout },
                // Never completes: wakes the pumps so that quiet sockets' next reads give their
                // buffers back.
                never = wake_when_quiet(counters) => match never {},
                o = up => o,
                o = down => o,
            }
        };

        let Plan {
            mut end,
            client,
            upstream,
            upstream_first,
        } = Plan::of(outcome);
        // A client that never answered pings will not answer a close either: do not wait for it.
        let client_wait = if end.reason == EndReason::PingTimeout {
            close_timeout.min(Duration::from_secs(1))
        } else {
            close_timeout
        };
        if upstream_first {
            finish_upstream_delivering(
                (&mut u_tx, &mut u_rx),
                upstream,
                close_timeout,
                &mut c_tx,
                (&opts, &shared, meter),
                &mut to_client,
            )
            .await;
            finish(&mut c_tx, &mut c_rx, client, client_wait).await;
        } else {
            tokio::join!(
                finish(&mut c_tx, &mut c_rx, client, client_wait),
                finish(&mut u_tx, &mut u_rx, upstream, close_timeout),
            );
        }

        counters.load_into(&mut end.session);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::metrics::Meter;
    use crate::session::close::frame;
    use crate::session::guard::Rates;
    use crate::session::stop::StopSignal;
    use futures_util::SinkExt;
    use tokio::io::duplex;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;

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
            counters: Default::default(),
            control: crate::session::control::Control::none(),
        }
    }

    fn opts() -> RelayOptions {
        RelayOptions {
            outbound: Guard::new(1 << 20, Rates::default()),
            ping_interval: None,
            ping_timeout: Duration::from_secs(1),
            idle_timeout: None,
            to_upstream: None,
            to_client: None,
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
            .send(Message::Close(Some(frame(4001, "done"))))
            .await
            .unwrap();
        let got = client.next().await.unwrap().unwrap();
        assert_eq!(got, Message::Close(Some(frame(4001, "done"))));
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
    async fn the_upstream_reply_to_a_valid_message_reaches_the_client_before_its_1002() {
        use tokio::io::AsyncWriteExt;
        let (a, mut raw_client) = duplex(64 * 1024);
        let gw_client_side = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let (mut upstream, gw_upstream_side) = pair().await;
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let session = tokio::spawn(run(gw_client_side, gw_upstream_side, ctx(rx), opts()));
        // A valid masked text "hi", then a frame with a reserved bit set, in one write.
        let mut bytes = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        bytes.extend([0xC1, 0x80, 0, 0, 0, 0]);
        raw_client.write_all(&bytes).await.unwrap();
        assert_eq!(upstream.next().await.unwrap().unwrap(), Message::text("hi"));
        // The upstream answers "hi" while the gateway's close is on its way to it; the reply and
        // then the upstream's close reply go back.
        upstream.send(Message::text("re: hi")).await.unwrap();
        let close = upstream.next().await.unwrap().unwrap();
        assert_eq!(
            close,
            Message::Close(Some(frame(1001, "client protocol error")))
        );
        assert!(upstream.next().await.is_none());
        let mut client = WebSocketStream::from_raw_socket(raw_client, Role::Client, None).await;
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::text("re: hi")
        );
        match client.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1002),
            other => panic!("expected the client's close, got {other:?}"),
        }
        let end = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end.reason, EndReason::ClientProtocolError);
        assert_eq!(end.session.messages_out, 1);
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
            Message::Close(Some(frame(1009, "message too big")))
        );
        assert_eq!(
            upstream.next().await.unwrap().unwrap(),
            Message::Close(Some(frame(1001, "client message too big")))
        );
        let end = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end.reason, EndReason::ClientPolicy);
    }
}
