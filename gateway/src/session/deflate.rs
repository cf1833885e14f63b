//! permessage-deflate in a session: what one direction does with each data message
//! ([`Translate`]). A compressed message (tungstenite hands it over whole, as one frame with
//! RSV1: `compressed_messages`, our patch) is inflated to be checked like any other (size while
//! inflating, UTF-8, rates on the inflated bytes); then it goes on unchanged where both sides
//! of the gateway agreed parameters that fit ([`Direction::fits`]: pass-through, the
//! receiver's inflater stays in step because every compressed message passes in order), or is
//! sent plain or compressed by the gateway's own deflater for that side.
//!
//! A session without compression holds no [`Translate`] at all (`Option<Box<_>>`): the idle
//! socket of an uncompressed route costs one pointer more per direction.

use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::config::compression::Compression;
use crate::core::close::{self, Violation};
use crate::net::websocket::deflate::codec::{Deflater, Inflated, Inflater};
use crate::net::websocket::deflate::{Agreed, Direction};

/// One direction's compression work (see the module docs).
pub(crate) struct Translate {
    /// For the sender's compressed messages.
    inflater: Option<Inflater>,
    /// For what the gateway compresses toward the receiver (never with pass-through).
    deflater: Option<Deflater>,
    /// Forward the sender's compressed messages unchanged.
    pass_through: bool,
}

/// A received data message, plain, and the frame it came in if it was compressed.
pub(crate) struct Received {
    pub(crate) plain: Message,
    compressed: Option<Frame>,
}

impl Received {
    /// It came compressed.
    pub(crate) fn was_compressed(&self) -> bool {
        self.compressed.is_some()
    }
}

/// Whether a message goes out compressed (a frame with RSV1).
pub(crate) fn is_compressed(message: &Message) -> bool {
    matches!(message, Message::Frame(f) if f.header().rsv1)
}

impl Translate {
    /// The echo route: inflate what the client sends, compress what the gateway answers.
    pub(crate) fn echo(
        client: &Agreed,
        settings: &Compression,
    ) -> (Option<Box<Translate>>, Option<Box<Translate>>) {
        let inbound = Translate {
            inflater: Some(Inflater::new(client.client)),
            deflater: None,
            pass_through: false,
        };
        let outbound = Translate {
            inflater: None,
            deflater: Deflater::new(client.server, settings.level, settings.min_bytes),
            pass_through: false,
        };
        (
            Some(Box::new(inbound)),
            outbound.deflater.is_some().then(|| Box::new(outbound)),
        )
    }

    /// A relay's two directions, client → upstream and upstream → client, from what each side
    /// agreed (if anything).
    pub(crate) fn relay(
        client: Option<&Agreed>,
        upstream: Option<&Agreed>,
        settings: &Compression,
    ) -> (Option<Box<Translate>>, Option<Box<Translate>>) {
        // Client → upstream: the client sends `client.client`, the upstream reads
        // `upstream.client` (the gateway is its client).
        let to_upstream = Translate::direction(
            client.map(|c| c.client),
            upstream.map(|u| u.client),
            settings,
        );
        let to_client = Translate::direction(
            upstream.map(|u| u.server),
            client.map(|c| c.server),
            settings,
        );
        (to_upstream, to_client)
    }

    fn direction(
        sender: Option<Direction>,
        receiver: Option<Direction>,
        settings: &Compression,
    ) -> Option<Box<Translate>> {
        let pass_through = matches!((sender, receiver), (Some(s), Some(r)) if s.fits(r));
        let t = Translate {
            inflater: sender.map(Inflater::new),
            deflater: receiver
                .filter(|_| !pass_through)
                .and_then(|r| Deflater::new(r, settings.level, settings.min_bytes)),
            pass_through,
        };
        (t.inflater.is_some() || t.deflater.is_some()).then(|| Box::new(t))
    }

    /// A received message made plain: a compressed one inflated (at most `max` bytes) and, if
    /// text, checked as UTF-8; others as they are.
    pub(crate) fn receive(
        t: Option<&mut Translate>,
        message: Message,
        max: usize,
    ) -> Result<Received, Violation> {
        let frame = match message {
            Message::Frame(f) if f.header().rsv1 => f,
            plain => {
                return Ok(Received {
                    plain,
                    compressed: None,
                })
            }
        };
        // tungstenite passes RSV1 only when this side negotiated compression.
        let inflater = t.and_then(|t| t.inflater.as_mut()).ok_or(close::PROTOCOL)?;
        let data = inflater
            .inflate(frame.payload(), max)
            .map_err(|e| match e {
                Inflated::TooBig => close::MESSAGE_TOO_BIG_CLOSE,
                Inflated::Invalid => close::INVALID_COMPRESSED,
            })?;
        let plain = match frame.header().opcode {
            OpCode::Data(Data::Text) => {
                Message::Text(data.try_into().map_err(|_| close::INVALID_UTF8)?)
            }
            _ => Message::Binary(data.into()),
        };
        Ok(Received {
            plain,
            compressed: Some(frame),
        })
    }

    /// What goes on to the receiver: the compressed frame as it came (pass-through), the
    /// message compressed by the gateway, or the plain message.
    pub(crate) fn send(t: Option<&mut Translate>, received: Received) -> Message {
        let Some(t) = t else { return received.plain };
        if t.pass_through {
            return match received.compressed {
                Some(frame) => Message::Frame(frame),
                None => received.plain,
            };
        }
        t.compress(received.plain)
    }

    /// A message of the gateway's own (the echo's answer), compressed when this side agreed.
    pub(crate) fn compress(&mut self, plain: Message) -> Message {
        let Some(deflater) = self.deflater.as_mut() else {
            return plain;
        };
        let (opcode, bytes): (Data, &[u8]) = match &plain {
            Message::Text(t) => (Data::Text, t.as_bytes()),
            Message::Binary(b) => (Data::Binary, b),
            _ => return plain,
        };
        match deflater.deflate(bytes) {
            Some(payload) => {
                let mut frame = Frame::message(payload, OpCode::Data(opcode), true);
                frame.header_mut().rsv1 = true;
                Message::Frame(frame)
            }
            None => plain,
        }
    }

    /// Give back zlib's state once the direction is quiet (called while its socket waits).
    pub(crate) fn release_if_quiet(t: Option<&mut Translate>) {
        if let Some(t) = t {
            if let Some(i) = t.inflater.as_mut() {
                i.release_if_quiet();
            }
            if let Some(d) = t.deflater.as_mut() {
                d.release_if_quiet();
            }
        }
    }
}

/// The next item of `stream`; each time none is ready, `quiet` runs first. The sessions pass
/// the release of their codecs' zlib state ([`Translate::release_if_quiet`]): a quiet socket is
/// polled again once it has been quiet (`session::idle`), and gives its state back then.
pub(crate) async fn next_or_quiet<S>(stream: &mut S, mut quiet: impl FnMut()) -> Option<S::Item>
where
    S: futures_util::Stream + Unpin,
{
    use futures_util::StreamExt;
    std::future::poll_fn(|cx| {
        let next = stream.poll_next_unpin(cx);
        if next.is_pending() {
            quiet();
        }
        next
    })
    .await
}
