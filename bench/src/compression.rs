//! The compression phase (`--compression`): permessage-deflate on a JSON chat corpus. The
//! clients offer it as a browser does (`permessage-deflate; client_max_window_bits`), compress
//! what they send and inflate what comes back ([`crate::deflate::Codec`]); behind a relay the
//! upstream echo accepts it too, so that Portcullis passes compressed messages through and NGINX
//! relays them end to end. The reference is the same corpus with nothing offered, and the
//! memory of idle compressed sockets is read with and without context takeover.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::deflate::{self, Codec};
use crate::load::{self, bounded, Target, Ws};
use crate::phases::{sleep_until, Figures};
use crate::procs::Proc;

/// Messages in the corpus; each connection starts at its own place in it and goes round.
pub const CORPUS_MESSAGES: usize = 1000;

/// Round trips each idle socket makes before it goes quiet: its zlib state was built, and its
/// context (the last window of plain bytes each way, which Portcullis keeps for context
/// takeover) is full, as on a socket that has been chatting: 32 messages of about 150 bytes
/// are more than a 12-bit window (4 KiB). After only a few messages the window would hold
/// just those.
pub const MESSAGES_BEFORE_QUIET: usize = 32;

/// How long idle compressed sockets stay quiet before the memory reading: more than twice the
/// second after which Portcullis drops a quiet socket's zlib state.
pub const QUIET: Duration = Duration::from_millis(2500);

/// Words of the messages' text: a chat's everyday vocabulary.
const WORDS: [&str; 48] = [
    "hi", "hello", "thanks", "ok", "sure", "yes", "no", "maybe", "the", "a", "is", "it", "this",
    "that", "we", "you", "I", "can", "will", "deploy", "build", "test", "review", "meeting",
    "today", "tomorrow", "later", "lunch", "coffee", "server", "bug", "fix", "release", "looks",
    "good", "to", "me", "on", "in", "for", "with", "please", "check", "done", "again", "now",
    "soon", "great",
];
const ROOMS: [&str; 4] = ["general", "random", "dev", "support"];

/// xorshift64*: the same corpus on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The corpus: chat messages as JSON of about 150 bytes with the same keys, e.g.
/// `{"type":"message","room":"general","user":"user17","text":"...","ts":1765100000123}`,
/// with 200 users, four rooms, 9 to 20 words of text and increasing timestamps.
pub fn corpus() -> Arc<Vec<String>> {
    let mut rng = Rng(0x5eed_c0ff_ee15_b00c);
    let mut ts: u64 = 1_765_100_000_000;
    let messages = (0..CORPUS_MESSAGES)
        .map(|_| {
            ts += 200 + rng.below(5000) as u64;
            let room = ROOMS[rng.below(ROOMS.len())];
            let user = rng.below(200);
            let words = 9 + rng.below(12);
            let text: Vec<&str> = (0..words).map(|_| WORDS[rng.below(WORDS.len())]).collect();
            format!(
                "{{\"type\":\"message\",\"room\":\"{room}\",\"user\":\"user{user}\",\"text\":\"{}\",\"ts\":{ts}}}",
                text.join(" ")
            )
        })
        .collect();
    Arc::new(messages)
}

/// A client of the corpus: compressing when it offered and the server agreed.
struct Client {
    ws: Ws,
    codec: Option<Codec>,
}

impl Client {
    /// Connect offering `offer` (none: plain); an offer the server declines is an error, since
    /// the figure would not be of compression.
    async fn connect(t: &Target, offer: Option<&str>) -> Result<Client, String> {
        let (ws, answer) = load::connect_offering(t, offer).await?;
        let codec = match (offer, deflate::agreed(answer.as_deref())?) {
            (Some(_), Some(agreed)) => Some(Codec::new(agreed)),
            (Some(_), None) => return Err("the server declined permessage-deflate".into()),
            (None, None) => None,
            (None, Some(_)) => return Err(format!("an extension not offered: {answer:?}")),
        };
        Ok(Client { ws, codec })
    }

    /// Send `text` and wait for it to come back unchanged (inflated where it comes compressed);
    /// returns the payload bytes of both frames, as on the wire.
    async fn round_trip(&mut self, text: &str) -> Result<usize, String> {
        let (message, sent) = match &mut self.codec {
            Some(codec) => codec.text_message(text.as_bytes())?,
            None => (Message::text(text), text.len()),
        };
        bounded("send", self.ws.send(message))
            .await?
            .map_err(|e| format!("send: {e}"))?;
        loop {
            match bounded("echo", self.ws.next()).await? {
                Some(Ok(Message::Frame(frame))) if frame.header().rsv1 => {
                    let codec = self.codec.as_mut().ok_or("a compressed message unagreed")?;
                    if codec.inflate(frame.payload())? != text.as_bytes() {
                        return Err("the echo inflated to another message".into());
                    }
                    return Ok(sent + frame.payload().len());
                }
                // A sender may leave any message uncompressed.
                Some(Ok(Message::Text(got))) if got.as_str() == text => return Ok(sent + got.len()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => return Err(format!("unexpected answer: {other:?}")),
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("connection closed".into()),
            }
        }
    }
}

/// Open `n` clients, `parallel` at a time, each after `rounds` round trips of the corpus (from
/// its own place in it); fails if any fails.
async fn open(
    t: &Target,
    n: usize,
    parallel: usize,
    offer: Option<&str>,
    corpus: &[String],
    rounds: usize,
) -> Result<Vec<Client>, String> {
    let results: Vec<Result<Client, String>> = stream::iter(0..n)
        .map(|i| async move {
            let mut client = Client::connect(t, offer).await?;
            for k in 0..rounds {
                client
                    .round_trip(&corpus[(i * rounds + k) % corpus.len()])
                    .await?;
            }
            Ok(client)
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(format!(
            "{failed} of {n} connections failed, the first with: {e}"
        ));
    }
    Ok(results.into_iter().flatten().collect())
}

/// What one closed-loop client measured.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    wire_bytes: u64,
    plain_bytes: u64,
}

/// One closed-loop client going round the corpus from `start`: send, wait for the echo, and
/// for a round trip sent after `measure_from` and back by `until` record its latency, its bytes
/// on the wire and its message's bytes (both ways).
async fn closed_loop(
    mut client: Client,
    corpus: Arc<Vec<String>>,
    start: usize,
    measure_from: Instant,
    until: Instant,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    for i in start.. {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        let text = &corpus[i % corpus.len()];
        let wire = client.round_trip(text).await?;
        let back = Instant::now();
        if sent >= measure_from && back <= until {
            tally
                .latencies
                .push((back - sent).as_micros().min(u32::MAX as u128) as u32);
            tally.wire_bytes += wire as u64;
            tally.plain_bytes += 2 * text.len() as u64;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.ws.close(None)).await;
    Ok(tally)
}

/// Closed-loop load of the corpus, compressed (the clients offer permessage-deflate) or not:
/// messages per second, latency p50/p99, server CPU per message, and the payload bytes on the
/// wire per round trip against the messages' own.
pub fn load_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
    compressed: bool,
) -> Result<Figures, String> {
    let corpus = corpus();
    let offer = compressed.then_some(deflate::OFFER);
    let clients = rt.block_on(open(target, args.conns, args.conns, offer, &corpus, 1))?;
    let measure_from = Instant::now() + args.warmup();
    let until = measure_from + Duration::from_secs_f64(args.duration);
    let stride = CORPUS_MESSAGES / args.conns.max(1);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            rt.spawn(closed_loop(
                client,
                corpus.clone(),
                i * stride,
                measure_from,
                until,
            ))
        })
        .collect();
    sleep_until(measure_from);
    let before = proc.usage();
    sleep_until(until);
    let after = proc.usage();
    let mut all = Tally::default();
    for task in tasks {
        let part = rt
            .block_on(task)
            .map_err(|e| format!("client task: {e}"))??;
        all.latencies.extend(part.latencies);
        all.wire_bytes += part.wire_bytes;
        all.plain_bytes += part.plain_bytes;
    }
    all.latencies.sort_unstable();
    let n = all.latencies.len();
    if n == 0 {
        return Err("no message came back in the measured time".into());
    }
    Ok(vec![
        ("messages_per_second", n as f64 / args.duration),
        ("latency_p50_us", load::quantile(&all.latencies, 0.50)),
        ("latency_p99_us", load::quantile(&all.latencies, 0.99)),
        (
            "cpu_us_per_message",
            (after.cpu_secs - before.cpu_secs) * 1e6 / n as f64,
        ),
        ("wire_bytes_per_message", all.wire_bytes as f64 / n as f64),
        ("plain_bytes_per_message", all.plain_bytes as f64 / n as f64),
    ])
}

/// Idle compressed sockets, with or without context takeover: `--idle` of them opened
/// (`--conns` at a time), each after [`MESSAGES_BEFORE_QUIET`] compressed round trips, then quiet for [`QUIET`] (at
/// least): the server's RSS growth per socket. Warmed up like the idle phase, with compressed
/// sockets. The clients keep their sockets and drop their own zlib state (they send nothing
/// more).
pub fn idle_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
    takeover: bool,
) -> Result<Figures, String> {
    let corpus = corpus();
    let offer = Some(if takeover {
        deflate::OFFER
    } else {
        deflate::OFFER_NO_TAKEOVER
    });
    let rounds = MESSAGES_BEFORE_QUIET;
    let warm = rt.block_on(open(target, args.conns, args.conns, offer, &corpus, rounds))?;
    rt.block_on(async move { drop(warm) });
    // The warm-up's zlib states are freed as its sockets close, but the allocator gives their
    // pages back only after its decay (2 s in Portcullis): read the baseline once they are
    // gone, or the held sockets would reuse them unseen and look smaller than they are.
    std::thread::sleep(args.settle() + QUIET);
    let before = proc.usage();
    let clients = rt.block_on(open(target, args.idle, args.conns, offer, &corpus, rounds))?;
    let held: Vec<Ws> = clients.into_iter().map(|c| c.ws).collect();
    std::thread::sleep(args.idle_settle().max(QUIET));
    let after = proc.usage();
    rt.block_on(async move { drop(held) });
    Ok(vec![
        ("connections", args.idle as f64),
        (
            "rss_bytes_per_connection",
            (after.rss_bytes as f64 - before.rss_bytes as f64) / args.idle.max(1) as f64,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_fixed_json_of_about_150_bytes() {
        let (a, b) = (corpus(), corpus());
        assert_eq!(a, b);
        assert_eq!(a.len(), CORPUS_MESSAGES);
        let mean = a.iter().map(String::len).sum::<usize>() / a.len();
        assert!((120..=180).contains(&mean), "{mean}");
        for m in a.iter() {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            assert_eq!(v["type"], "message");
            assert!(v["ts"].is_u64() && v["text"].is_string() && v["user"].is_string());
        }
    }
}
