//! Floods of control frames (RFC 9113 section 10.5): PING, SETTINGS, PRIORITY, RST_STREAM and
//! WINDOW_UPDATE frames each cost the server work (an answer, a lookup, a queued frame) and
//! carry no data, and h2 answers any number of them. The client's bytes are walked frame by
//! frame, before h2 reads them, and each control frame spends from a per-connection budget
//! (`[http2] max_control_frames_per_second`, refilled at that rate, holding at most as many);
//! an empty budget ends the connection with GOAWAY `ENHANCE_YOUR_CALM`.
//!
//! The walk reads only the 9-byte frame headers: a frame's payload is skipped by its length,
//! so DATA costs a few integer operations per frame and nothing per byte.
//!
//! It also notes whether a header block is open (HEADERS without END_HEADERS, not yet ended by
//! a CONTINUATION with it): h2 hands over whole header blocks only, and while one is open no
//! other frame may come (RFC 9113 section 6.10), so an unfinished one holds the connection and
//! every stream on it; the connection's I/O bounds it by `[limits] head_timeout`.

use std::time::{Duration, Instant};

/// The client connection preface (RFC 9113 section 3.4), which precedes the first frame.
const PREFACE_LEN: usize = 24;
/// A frame header: length (24 bits), type, flags, stream id (RFC 9113 section 4.1).
const HEADER_LEN: usize = 9;

const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// What a frame costs the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// PING or SETTINGS asking for an answer, PRIORITY, RST_STREAM.
    Frame,
    /// WINDOW_UPDATE: free while the data the gateway sent explains it.
    WindowUpdate,
}

/// The control frame a frame header announces, if it is one.
fn control(kind: u8, flags: u8) -> Option<Control> {
    match kind {
        PING | SETTINGS if flags & ACK == 0 => Some(Control::Frame),
        PRIORITY | RST_STREAM => Some(Control::Frame),
        WINDOW_UPDATE => Some(Control::WindowUpdate),
        _ => None,
    }
}

/// Follows frame boundaries across reads split anywhere.
#[derive(Debug)]
pub(crate) struct FrameWalker {
    /// Preface bytes still to come.
    preface: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    /// A frame header split across reads, and how much of it has come.
    header: [u8; HEADER_LEN],
    have: usize,
    /// A header block was begun and its END_HEADERS has not come yet.
    block_open: bool,
}

impl FrameWalker {
    /// A walker for the client side of a connection (preface first).
    pub(crate) fn client() -> FrameWalker {
        FrameWalker {
            preface: PREFACE_LEN,
            skip: 0,
            header: [0; HEADER_LEN],
            have: 0,
            block_open: false,
        }
    }

    /// Whether the frames walked so far leave a header block open.
    pub(crate) fn header_block_open(&self) -> bool {
        self.block_open
    }

    /// Walk the next bytes of the connection; `on_control` for each control frame whose
    /// header they complete.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut on_control: impl FnMut(Control)) {
        if self.preface > 0 {
            let n = self.preface.min(bytes.len());
            self.preface -= n;
            bytes = &bytes[n..];
        }
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let header: &[u8] = if self.have == 0 && bytes.len() >= HEADER_LEN {
                let (header, rest) = bytes.split_at(HEADER_LEN);
                bytes = rest;
                header
            } else {
                let n = (HEADER_LEN - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have < HEADER_LEN {
                    return;
                }
                self.have = 0;
                &self.header
            };
            self.skip =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            match header[3] {
                HEADERS => self.block_open = header[4] & END_HEADERS == 0,
                CONTINUATION if header[4] & END_HEADERS != 0 => self.block_open = false,
                _ => {}
            }
            if let Some(c) = control(header[3], header[4]) {
                on_control(c);
            }
        }
    }
}

/// WINDOW_UPDATE frames the data the gateway sent explains: a client may send one for its
/// stream and one for the connection per DATA frame it got, and the smallest DATA frame of a
/// WebSocket message is 11 bytes, so one per 4 bytes written, up to this many owed at once.
const WINDOW_UPDATE_CREDIT_MAX: u64 = 1 << 16;

/// A connection's control-frame budget: refilled at `rate` a second, holding at most `rate`.
#[derive(Debug)]
pub(crate) struct ControlBudget {
    rate: u32,
    tokens: u32,
    refilled: Instant,
    /// WINDOW_UPDATE frames the gateway's writes have paid for.
    credit: u64,
}

impl ControlBudget {
    pub(crate) fn new(rate: u32, now: Instant) -> ControlBudget {
        ControlBudget {
            rate,
            tokens: rate,
            refilled: now,
            credit: 0,
        }
    }

    /// The gateway wrote `n` bytes to the client.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.credit = (self.credit + (n as u64 >> 2)).min(WINDOW_UPDATE_CREDIT_MAX);
    }

    /// Spend for one control frame; `false` once the budget is exhausted.
    pub(crate) fn spend(&mut self, c: Control, now: Instant) -> bool {
        if c == Control::WindowUpdate && self.credit > 0 {
            self.credit -= 1;
            return true;
        }
        if self.tokens == 0 {
            let rate = u128::from(self.rate);
            let elapsed = now.saturating_duration_since(self.refilled).as_micros();
            let earned = elapsed * rate / 1_000_000;
            if earned >= rate {
                self.tokens = self.rate;
                self.refilled = now;
            } else if earned > 0 {
                self.tokens = earned as u32;
                // The fraction of a token not yet earned stays for the next refill.
                self.refilled += Duration::from_micros((earned * 1_000_000 / rate) as u64);
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload_len: usize) -> Vec<u8> {
        let mut f = vec![
            (payload_len >> 16) as u8,
            (payload_len >> 8) as u8,
            payload_len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        // A payload that looks like frame headers of PINGs, which must be skipped, not read.
        f.extend((0..payload_len).map(|i| if i % 9 == 3 { PING } else { 0 }));
        f
    }

    /// A connection: the preface, a SETTINGS, its ACK, a big DATA, a PING, a PING ACK,
    /// HEADERS, a WINDOW_UPDATE, an empty DATA, a PRIORITY, an RST_STREAM.
    fn connection() -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        for f in [
            frame(SETTINGS, 0, 12),
            frame(SETTINGS, ACK, 0),
            frame(0x0, 0, 70_000),
            frame(PING, 0, 8),
            frame(PING, ACK, 8),
            frame(0x1, 0x4, 300),
            frame(WINDOW_UPDATE, 0, 4),
            frame(0x0, 0x1, 0),
            frame(PRIORITY, 0, 5),
            frame(RST_STREAM, 0, 4),
        ] {
            bytes.extend(f);
        }
        bytes
    }

    const EXPECTED: [Control; 5] = [
        Control::Frame,
        Control::Frame,
        Control::WindowUpdate,
        Control::Frame,
        Control::Frame,
    ];

    fn walk(chunks: &[&[u8]]) -> Vec<Control> {
        let mut walker = FrameWalker::client();
        let mut seen = Vec::new();
        for chunk in chunks {
            walker.feed(chunk, |c| seen.push(c));
        }
        seen
    }

    #[test]
    fn walks_frames_in_one_read() {
        assert_eq!(walk(&[&connection()]), EXPECTED);
    }

    #[test]
    fn walks_frames_split_at_every_byte() {
        let bytes = connection();
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(walk(&[a, b]), EXPECTED, "split at {at}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(walk(&singles), EXPECTED);
        let sevens: Vec<&[u8]> = bytes.chunks(7).collect();
        assert_eq!(walk(&sevens), EXPECTED);
    }

    #[test]
    fn a_preface_split_short_is_still_skipped() {
        let bytes = connection();
        assert_eq!(walk(&[&bytes[..5], &bytes[5..20], &bytes[20..]]), EXPECTED);
    }

    /// Whether a header block is open after each of `frames`, fed one by one and split.
    fn blocks_open(frames: &[Vec<u8>]) -> Vec<bool> {
        let mut walker = FrameWalker::client();
        walker.feed(PREFACE, |_| {});
        frames
            .iter()
            .map(|f| {
                let (a, b) = f.split_at(f.len() / 2);
                walker.feed(a, |_| {});
                walker.feed(b, |_| {});
                walker.header_block_open()
            })
            .collect()
    }

    #[test]
    fn notes_a_header_block_begun_and_not_finished() {
        let frames = [
            frame(0x1, 0x4 | 0x1, 30),    // HEADERS, END_HEADERS: whole
            frame(0x0, 0, 100),           // DATA
            frame(0x1, 0x1, 30),          // HEADERS without END_HEADERS: open
            frame(CONTINUATION, 0, 20),   // still open
            frame(CONTINUATION, 0x4, 20), // END_HEADERS: finished
            frame(PING, 0, 8),            // a frame between blocks
            frame(0x1, 0, 16_384),        // open again, its payload skipped
            frame(CONTINUATION, 0x4, 0),  // finished by an empty CONTINUATION
            frame(0x1, 0, 9),             // left open at the end
        ];
        assert_eq!(
            blocks_open(&frames),
            [false, false, true, true, false, false, true, false, true]
        );
        // Payload bytes that look like a CONTINUATION with END_HEADERS do not finish a block.
        let mut tricky = frame(0x1, 0, 9);
        tricky[9 + 3] = CONTINUATION;
        tricky[9 + 4] = 0x4;
        assert_eq!(blocks_open(&[tricky]), [true]);
    }

    #[test]
    fn the_budget_holds_one_second_and_refills_at_its_rate() {
        let start = Instant::now();
        let mut budget = ControlBudget::new(100, start);
        for _ in 0..100 {
            assert!(budget.spend(Control::Frame, start));
        }
        assert!(!budget.spend(Control::Frame, start));
        // A tenth of a second later, ten more.
        let later = start + Duration::from_millis(100);
        for _ in 0..10 {
            assert!(budget.spend(Control::Frame, later));
        }
        assert!(!budget.spend(Control::Frame, later));
        // A long quiet time refills it to one second's worth, no more.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..100 {
            assert!(budget.spend(Control::Frame, much_later));
        }
        assert!(!budget.spend(Control::Frame, much_later));
    }

    #[test]
    fn a_steady_rate_under_the_budget_is_never_refused() {
        let start = Instant::now();
        let mut budget = ControlBudget::new(100, start);
        // 90 a second for a minute, after spending the whole burst at once.
        for _ in 0..100 {
            assert!(budget.spend(Control::Frame, start));
        }
        for i in 1..=5400u64 {
            let now = start + Duration::from_micros(i * 1_000_000 / 90);
            assert!(budget.spend(Control::Frame, now), "frame {i}");
        }
    }

    #[test]
    fn window_updates_are_free_while_data_sent_explains_them() {
        let start = Instant::now();
        let mut budget = ControlBudget::new(10, start);
        // 11 bytes written: two WINDOW_UPDATEs paid, the next ones from the budget.
        budget.wrote(11);
        for _ in 0..12 {
            assert!(budget.spend(Control::WindowUpdate, start));
        }
        assert!(!budget.spend(Control::WindowUpdate, start));
        // Pings never use the credit.
        budget.wrote(4000);
        assert!(!budget.spend(Control::Frame, start));
        assert!(budget.spend(Control::WindowUpdate, start));
    }
}
