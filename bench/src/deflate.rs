//! permessage-deflate (RFC 7692) for the benchmark's own ends: the offers its clients make, the
//! answer its compressing upstream echo gives, and a codec per connection (raw deflate with a
//! sync flush, the trailing `00 00 ff ff` stripped on the wire). tungstenite carries compressed
//! messages as `Message::Frame`s with RSV1 (the vendored crate's `compressed_messages`).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// The extension's registered name.
pub const NAME: &str = "permessage-deflate";

/// What a browser offers: compression both ways, and leave to the server the window the client
/// compresses with.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The same without context takeover either way: each message compressed on its own.
pub const OFFER_NO_TAKEOVER: &str =
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
     client_max_window_bits";

/// The window the upstream echo grants each way unless the offer asks for less: 12 bits, as the
/// gateway's default and Python `websockets`.
const UPSTREAM_BITS: u8 = 12;

/// The largest window RFC 7692 defines.
const MAX_BITS: u8 = 15;

/// What a sync flush ends with, left off the wire (RFC 7692 section 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One direction's agreement: the sender's window and whether it resets after each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    pub window_bits: u8,
    pub no_context_takeover: bool,
}

/// Both directions of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// What the server sends with.
    pub server: Direction,
    /// What the client sends with.
    pub client: Direction,
}

/// One `permessage-deflate` element's parameters; `None` for another extension or a malformed
/// element.
#[derive(Debug, Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: named without a value (an offer's "any window you like").
    client_max_window_bits: Option<Option<u8>>,
}

fn parse(element: &str) -> Option<Params> {
    let mut parts = element.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let bits = |v: &str| {
        v.trim_matches('"')
            .parse::<u8>()
            .ok()
            .filter(|b| (8..=MAX_BITS).contains(b))
    };
    let mut p = Params::default();
    for part in parts.filter(|p| !p.is_empty()) {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (part, None),
        };
        match (name, value) {
            ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => p.server_max_window_bits = Some(bits(v)?),
            ("client_max_window_bits", None) => p.client_max_window_bits = Some(None),
            ("client_max_window_bits", Some(v)) => p.client_max_window_bits = Some(Some(bits(v)?)),
            _ => return None,
        }
    }
    Some(p)
}

/// The client's reading of the server's `Sec-WebSocket-Extensions` answer to [`OFFER`] or
/// [`OFFER_NO_TAKEOVER`]: `Ok(None)` when the server declined.
pub fn agreed(answer: Option<&str>) -> Result<Option<Agreed>, String> {
    let Some(answer) = answer.filter(|a| !a.trim().is_empty()) else {
        return Ok(None);
    };
    let p = parse(answer).ok_or_else(|| format!("unexpected extension answer {answer:?}"))?;
    Ok(Some(Agreed {
        server: Direction {
            window_bits: p.server_max_window_bits.unwrap_or(MAX_BITS),
            no_context_takeover: p.server_no_context_takeover,
        },
        client: Direction {
            window_bits: p.client_max_window_bits.flatten().unwrap_or(MAX_BITS),
            no_context_takeover: p.client_no_context_takeover,
        },
    }))
}

/// The upstream echo's answer to a client's extension offers (the gateway's
/// `permessage-deflate; server_max_window_bits=12; client_max_window_bits=12`, or a browser's
/// through NGINX): the first permessage-deflate offer it can take, answered so that both
/// directions agree the same window and the same context rule. That is what lets the echo send
/// every compressed message back unchanged: the client's inflater for the server's messages
/// then goes through exactly the states the server's inflater went through for the client's.
/// `None`: no offer it can take (the echo then speaks plain).
pub fn upstream_answer(offers: &str) -> Option<String> {
    offers.split(',').filter_map(parse).find_map(|p| {
        // The window the client compresses with: what it allows the server to ask for.
        let bits = match p.client_max_window_bits {
            Some(v) => UPSTREAM_BITS.min(v.unwrap_or(MAX_BITS)),
            None => MAX_BITS,
        };
        // The server then sends with the same window: it must be within the client's limit.
        if p.server_max_window_bits.is_some_and(|s| s < bits) {
            return None;
        }
        let mut out = format!("{NAME}; server_max_window_bits={bits}");
        if p.client_max_window_bits.is_some() {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        if p.server_no_context_takeover || p.client_no_context_takeover {
            out.push_str("; server_no_context_takeover; client_no_context_takeover");
        }
        Some(out)
    })
}

/// A client's codec: compresses what it sends, inflates what it receives, keeping each
/// direction's context or resetting it per message as agreed.
pub struct Codec {
    agreed: Agreed,
    compress: Compress,
    decompress: Decompress,
}

impl Codec {
    pub fn new(agreed: Agreed) -> Codec {
        Codec {
            agreed,
            compress: Compress::new_with_window_bits(
                Compression::default(),
                false,
                agreed.client.window_bits,
            ),
            decompress: Decompress::new_with_window_bits(false, agreed.server.window_bits),
        }
    }

    /// `text` as a compressed text message (one frame, RSV1 set), and its payload's length.
    pub fn text_message(&mut self, text: &[u8]) -> Result<(Message, usize), String> {
        let payload = self.deflate(text)?;
        let len = payload.len();
        let mut frame = Frame::message(payload, OpCode::Data(Data::Text), true);
        frame.header_mut().rsv1 = true;
        Ok((Message::Frame(frame), len))
    }

    fn deflate(&mut self, data: &[u8]) -> Result<Vec<u8>, String> {
        if self.agreed.client.no_context_takeover {
            self.compress.reset();
        }
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let start = self.compress.total_in();
        loop {
            let done = (self.compress.total_in() - start) as usize;
            self.compress
                .compress_vec(&data[done..], &mut out, FlushCompress::Sync)
                .map_err(|e| format!("deflate: {e}"))?;
            // A sync flush is complete once it left room in the output.
            if (self.compress.total_in() - start) as usize == data.len()
                && out.len() < out.capacity()
            {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        Ok(out)
    }

    /// The plain bytes of a compressed message's payload.
    pub fn inflate(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        if self.agreed.server.no_context_takeover {
            self.decompress =
                Decompress::new_with_window_bits(false, self.agreed.server.window_bits);
        }
        let input = [payload, &TAIL[..]].concat();
        let mut out = Vec::with_capacity(payload.len() * 4 + 64);
        let start = self.decompress.total_in();
        loop {
            let done = (self.decompress.total_in() - start) as usize;
            let status = self
                .decompress
                .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
                .map_err(|e| format!("inflate: {e}"))?;
            let consumed = (self.decompress.total_in() - start) as usize == input.len();
            if status == Status::StreamEnd || (consumed && out.len() < out.capacity()) {
                break;
            }
            if status == Status::BufError && out.len() < out.capacity() {
                return Err("inflate: truncated compressed message".into());
            }
            out.reserve(out.capacity().max(64));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(i: usize) -> Vec<u8> {
        format!(
            "{{\"type\":\"message\",\"room\":\"general\",\"user\":\"user{i}\",\"text\":\"hello {i}\"}}"
        )
        .into_bytes()
    }

    #[test]
    fn the_upstream_answers_the_gateways_offer_with_the_same_parameters() {
        let offer = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12";
        assert_eq!(upstream_answer(offer).as_deref(), Some(offer));
        // A browser's offer through NGINX: 12-bit windows both ways.
        assert_eq!(upstream_answer(OFFER).as_deref(), Some(offer));
        let no = upstream_answer(OFFER_NO_TAKEOVER).unwrap();
        assert!(
            no.contains("server_no_context_takeover") && no.contains("client_no_context_takeover")
        );
        assert_eq!(upstream_answer("x-webkit-deflate-frame"), None);
        // No client window limit offered: the server sends with 15 bits, if allowed to.
        assert_eq!(
            upstream_answer("permessage-deflate").as_deref(),
            Some("permessage-deflate; server_max_window_bits=15")
        );
        assert_eq!(
            upstream_answer("permessage-deflate; server_max_window_bits=10"),
            None
        );
    }

    #[test]
    fn an_echoed_stream_inflates_with_and_without_context_takeover() {
        for offer in [OFFER, OFFER_NO_TAKEOVER] {
            let agreed = agreed(upstream_answer(offer).as_deref()).unwrap().unwrap();
            assert_eq!(agreed.server, agreed.client);
            let mut codec = Codec::new(agreed);
            let mut sizes = Vec::new();
            for i in 0..20 {
                let plain = chat(i);
                let payload = codec.deflate(&plain).unwrap();
                assert!(!payload.ends_with(&TAIL));
                sizes.push(payload.len());
                // The echo sends the same payload back.
                assert_eq!(codec.inflate(&payload).unwrap(), plain);
            }
            if agreed.client.no_context_takeover {
                assert!(sizes[19] > sizes[0] / 2, "{sizes:?}");
            } else {
                assert!(sizes[19] < sizes[0] / 2, "context takeover: {sizes:?}");
            }
        }
        assert_eq!(agreed(None).unwrap(), None);
        assert!(agreed(Some("x-other")).is_err());
    }
}
