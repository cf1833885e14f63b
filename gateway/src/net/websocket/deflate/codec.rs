//! The permessage-deflate codec of one direction: an [`Inflater`] for what a peer sends, a
//! [`Deflater`] for what the gateway sends (RFC 7692 section 7.2), on zlib (flate2 with the
//! zlib-ng backend that pingora already builds).
//!
//! Inflation is capped: the message limit applies to the inflated size and is enforced while
//! inflating, so a bomb (a few KiB that inflate to gigabytes) costs at most the limit in memory
//! and the time to inflate that much ([`Inflated::TooBig`], close 1009).
//!
//! Idle sockets keep only what context takeover needs. zlib's state is large (an inflater
//! about 7 KiB plus its window, a compressor over 200 KiB), so [`Inflater::release_if_quiet`]
//! and [`Deflater::release_if_quiet`] drop it once a direction has been quiet for
//! [`crate::net::websocket::QUIET`], keeping the last window of plain bytes; the next message
//! rebuilds the state with that window as a preset dictionary, which is exactly the context
//! the peer's side still has. Without context takeover nothing is kept.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::time::Instant;

use super::Direction;
use crate::net::websocket::QUIET;

/// The four bytes every compressed message ends with before its sender removes them (RFC 7692
/// section 7.2.1), put back before inflating (section 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// zlib cannot use a window of 2^8 bytes (it takes 9 instead); a larger window still reads a
/// stream written with a smaller one, so inflaters use at least this.
const MIN_ZLIB_BITS: u8 = 9;

/// Why a compressed message was not inflated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inflated {
    /// It inflates past the message limit (close 1009).
    TooBig,
    /// Not a valid deflate stream (close 1007).
    Invalid,
}

/// The last window of plain bytes of a direction: the context a peer keeps between messages.
#[derive(Debug, Default)]
struct Window {
    bytes: Vec<u8>,
}

impl Window {
    fn push(&mut self, data: &[u8], size: usize) {
        if data.len() >= size {
            self.bytes.clear();
            self.bytes.extend_from_slice(&data[data.len() - size..]);
        } else {
            let over = (self.bytes.len() + data.len()).saturating_sub(size);
            self.bytes.drain(..over);
            self.bytes.extend_from_slice(data);
        }
    }
}

/// Inflates the messages one peer sends.
pub(crate) struct Inflater {
    dir: Direction,
    state: Option<Box<Decompress>>,
    /// Kept only with context takeover.
    window: Window,
    last_used: Instant,
}

impl Inflater {
    pub(crate) fn new(dir: Direction) -> Inflater {
        Inflater {
            dir,
            state: None,
            window: Window::default(),
            last_used: Instant::now(),
        }
    }

    fn bits(&self) -> u8 {
        self.dir.window_bits.max(MIN_ZLIB_BITS)
    }

    /// Inflate one message's payload, allocating and inflating no more than `max` bytes (and
    /// one more to know it is too big).
    pub(crate) fn inflate(&mut self, payload: &[u8], max: usize) -> Result<Vec<u8>, Inflated> {
        self.last_used = Instant::now();
        let bits = self.bits();
        let state = match &mut self.state {
            Some(s) => s,
            none => {
                let mut d = Box::new(Decompress::new_with_window_bits(false, bits));
                if !self.window.bytes.is_empty() {
                    d.set_dictionary(&self.window.bytes)
                        .map_err(|_| Inflated::Invalid)?;
                }
                none.insert(d)
            }
        };
        let limit = max.saturating_add(1);
        // A first guess, never past the limit (which may be below the guess's floor).
        let first = payload.len().saturating_mul(2).max(64).min(limit);
        let mut out: Vec<u8> = Vec::with_capacity(first);
        let mut parts = [payload, &TAIL[..]];
        let mut ended = false;
        for input in parts.iter_mut() {
            while !input.is_empty() && !ended {
                if out.len() == out.capacity() {
                    if out.len() >= limit {
                        return self.fail(Inflated::TooBig);
                    }
                    // Grow geometrically, never past the limit.
                    out.reserve_exact(out.capacity().min(limit - out.len()));
                }
                let before = state.total_in();
                let produced = out.len();
                let status = state
                    .decompress_vec(input, &mut out, FlushDecompress::Sync)
                    .map_err(|_| Inflated::Invalid);
                let status = match status {
                    Ok(s) => s,
                    Err(e) => return self.fail(e),
                };
                let used = (state.total_in() - before) as usize;
                *input = &input[used..];
                match status {
                    Status::StreamEnd => ended = true,
                    // No progress with room to spare: the stream is broken.
                    Status::BufError
                        if used == 0 && out.len() == produced && out.len() < out.capacity() =>
                    {
                        return self.fail(Inflated::Invalid);
                    }
                    _ => {}
                }
            }
        }
        if out.len() > max {
            return self.fail(Inflated::TooBig);
        }
        // Drain what zlib still holds for this message (output space ran out last round).
        loop {
            if out.len() >= limit {
                return self.fail(Inflated::TooBig);
            }
            if out.len() == out.capacity() {
                out.reserve_exact(out.capacity().min(limit - out.len()).max(1));
            }
            let produced = out.len();
            match state.decompress_vec(&[], &mut out, FlushDecompress::Sync) {
                Ok(_) if out.len() == produced => break,
                Ok(_) => {}
                Err(_) => return self.fail(Inflated::Invalid),
            }
        }
        if out.len() > max {
            return self.fail(Inflated::TooBig);
        }
        if self.dir.no_context_takeover || ended {
            // A final block ends the peer's stream: the next message starts a new one (from
            // the window, with context takeover).
            self.state = None;
        }
        if !self.dir.no_context_takeover {
            self.window.push(&out, 1 << bits);
        }
        Ok(out)
    }

    fn fail<T>(&mut self, why: Inflated) -> Result<T, Inflated> {
        // The session ends; nothing of this state is reused.
        self.state = None;
        Err(why)
    }

    /// Drop zlib's state once this direction has been quiet for [`QUIET`] (see the module docs).
    pub(crate) fn release_if_quiet(&mut self) {
        if self.state.is_some() && self.last_used.elapsed() >= QUIET {
            self.state = None;
            self.window.bytes.shrink_to_fit();
        }
    }
}

/// Compresses the messages the gateway sends to one peer.
pub(crate) struct Deflater {
    dir: Direction,
    level: u32,
    min_bytes: usize,
    state: Option<Box<Compress>>,
    window: Window,
    last_used: Instant,
}

impl Deflater {
    /// `None` when nothing would ever be compressed: zlib cannot write within a 256-byte
    /// window, so a peer that asked for one gets every message uncompressed (RFC 7692 lets a
    /// sender leave any message uncompressed).
    pub(crate) fn new(dir: Direction, level: u32, min_bytes: usize) -> Option<Deflater> {
        (dir.window_bits >= MIN_ZLIB_BITS).then(|| Deflater {
            dir,
            level,
            min_bytes,
            state: None,
            window: Window::default(),
            last_used: Instant::now(),
        })
    }

    /// The compressed payload of a message (RSV1 to be set on its frame), or `None` to send it
    /// as it is (shorter than `min_bytes`).
    pub(crate) fn deflate(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < self.min_bytes {
            return None;
        }
        self.last_used = Instant::now();
        let bits = self.dir.window_bits;
        let state = match &mut self.state {
            Some(s) => s,
            none => {
                let mut c = Box::new(Compress::new_with_window_bits(
                    Compression::new(self.level),
                    false,
                    bits,
                ));
                if !self.window.bytes.is_empty() && c.set_dictionary(&self.window.bytes).is_err() {
                    return None;
                }
                none.insert(c)
            }
        };
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = data;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let before = state.total_in();
            if state
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                self.state = None;
                return None;
            }
            input = &input[(state.total_in() - before) as usize..];
            // Done once all input is in and the flush left room to spare.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.dir.no_context_takeover {
            state.reset();
        } else {
            self.window.push(data, 1 << bits);
        }
        Some(out)
    }

    /// Drop zlib's state once this direction has been quiet for [`QUIET`].
    pub(crate) fn release_if_quiet(&mut self) {
        if self.state.is_some() && self.last_used.elapsed() >= QUIET {
            self.state = None;
            self.window.bytes.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Direction = Direction {
        window_bits: 12,
        no_context_takeover: false,
    };

    fn chat(i: usize) -> Vec<u8> {
        format!("{{\"type\":\"message\",\"room\":\"general\",\"user\":\"user{}\",\"text\":\"hello number {i}\",\"ts\":{}}}", i % 7, 1_700_000_000 + i).into_bytes()
    }

    #[test]
    fn round_trips_with_and_without_context_takeover() {
        for dir in [
            KEEP,
            Direction {
                no_context_takeover: true,
                ..KEEP
            },
        ] {
            let mut d = Deflater::new(dir, 6, 0).unwrap();
            let mut i = Inflater::new(dir);
            let (mut plain, mut wire) = (0, 0);
            for n in 0..200 {
                let m = chat(n);
                let c = d.deflate(&m).unwrap();
                assert!(!c.ends_with(&TAIL));
                plain += m.len();
                wire += c.len();
                assert_eq!(i.inflate(&c, 1 << 20).unwrap(), m);
            }
            if !dir.no_context_takeover {
                assert!(wire * 4 < plain, "context takeover: {wire} of {plain}");
            }
        }
    }

    #[test]
    fn released_state_comes_back_from_the_window() {
        let mut d = Deflater::new(KEEP, 6, 0).unwrap();
        let mut i = Inflater::new(KEEP);
        for n in 0..50 {
            let c = d.deflate(&chat(n)).unwrap();
            i.inflate(&c, 1 << 20).unwrap();
        }
        // Both drop their state, as a quiet socket does; the next messages still agree, and
        // the deflater still finds back-references into the earlier messages.
        d.state = None;
        i.state = None;
        let c = d.deflate(&chat(50)).unwrap();
        assert!(c.len() < chat(50).len() / 2, "{}", c.len());
        assert_eq!(i.inflate(&c, 1 << 20).unwrap(), chat(50));
        // Each side on its own: a released inflater reads a deflater that kept its state.
        i.state = None;
        let c = d.deflate(&chat(51)).unwrap();
        assert_eq!(i.inflate(&c, 1 << 20).unwrap(), chat(51));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 16 << 20];
        let mut d = Deflater::new(KEEP, 9, 0).unwrap();
        let bomb = d.deflate(&zeros).unwrap();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let mut i = Inflater::new(KEEP);
        assert_eq!(i.inflate(&bomb, 1 << 20), Err(Inflated::TooBig));
        // Exactly at the limit is fine.
        let mut d = Deflater::new(KEEP, 6, 0).unwrap();
        let exact = d.deflate(&zeros[..1 << 20]).unwrap();
        let mut i = Inflater::new(KEEP);
        assert_eq!(i.inflate(&exact, 1 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn a_limit_below_the_first_guess_is_kept() {
        // Found by the echo_session fuzz target: a route limit under 64 bytes.
        let mut d = Deflater::new(KEEP, 6, 0).unwrap();
        let mut i = Inflater::new(KEEP);
        let c = d.deflate(b"0123456789").unwrap();
        assert_eq!(i.inflate(&c, 10).unwrap(), b"0123456789");
        let c = d.deflate(b"0123456789!").unwrap();
        assert_eq!(i.inflate(&c, 10), Err(Inflated::TooBig));
        let mut i = Inflater::new(KEEP);
        // The empty message, as RFC 7692 section 7.2.3.6 compresses it.
        assert_eq!(i.inflate(&[0x00], 0).unwrap(), b"");
    }

    #[test]
    fn garbage_is_invalid() {
        let mut i = Inflater::new(KEEP);
        assert_eq!(
            i.inflate(&[0xff, 0xff, 0xff, 0xff], 1024),
            Err(Inflated::Invalid)
        );
    }

    #[test]
    fn short_messages_and_tiny_windows_go_uncompressed() {
        let mut d = Deflater::new(KEEP, 6, 16).unwrap();
        assert_eq!(d.deflate(b"short"), None);
        assert!(Deflater::new(
            Direction {
                window_bits: 8,
                ..KEEP
            },
            6,
            0
        )
        .is_none());
        // A peer that compresses with a 256-byte window is still read.
        let mut i = Inflater::new(Direction {
            window_bits: 8,
            ..KEEP
        });
        let mut d = Deflater::new(
            Direction {
                window_bits: 9,
                ..KEEP
            },
            6,
            0,
        )
        .unwrap();
        let c = d.deflate(&chat(1)).unwrap();
        assert_eq!(i.inflate(&c, 1024).unwrap(), chat(1));
    }
}
