//! The phases, each measured on a fresh server instance: the closed-loop load (also once per
//! size of the sweep), idle connections, handshakes, and the helpers the opt-in phases
//! (`burst`, `hold`) build on. Which phase runs for whom, and on which server, is `measure`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

use crate::args::Args;
use crate::load::{self, Target, Ws};
use crate::procs::{Proc, Usage};

pub type Figures = Vec<(&'static str, f64)>;

/// Fails unless every process can hold the connections the run asks for: a relay holds two
/// descriptors per relayed connection (client and upstream), an echo route one, the load
/// generator one per connection, the upstream echo one per relayed connection; HAProxy's
/// `maxconn` is derived from the same limit. Each has `nofile` (the hard limit, raised for the
/// benchmark and inherited by every server).
pub fn check_descriptors(args: &Args, nofile: u64) -> Result<(), String> {
    let extra = args.conns as u64;
    let mut needs: Vec<(String, u64)> = vec![
        (format!("--idle {}", args.idle), args.idle as u64),
        (
            format!("--burst {}", args.burst.unwrap_or(0)),
            args.burst.unwrap_or(0) as u64,
        ),
        (
            format!("--hold-relay {}", args.hold_relay.unwrap_or(0)),
            args.hold_relay.unwrap_or(0) as u64,
        ),
    ];
    if let Some(soak) = &args.soak {
        needs.push((format!("--soak-hold {}", soak.hold), soak.hold as u64));
    }
    for (what, n) in needs {
        let needed = 2 * (n + extra) + 500;
        if needed > nofile {
            return Err(format!(
                "{what} needs about {needed} open files in the proxy (two sockets per relayed \
                 connection, {extra} more connections in flight, 500 of its own), but the limit \
                 is {nofile}: raise the hard limit (ulimit -Hn) or ask for fewer connections"
            ));
        }
    }
    if let Some(m) = args.hold_echo {
        let needed = m as u64 + extra + 500;
        if needed > nofile {
            return Err(format!(
                "--hold-echo {m} needs about {needed} open files in Portcullis and in the load \
                 generator (one socket per connection, {extra} more in flight, 500 of their own), \
                 but the limit is {nofile}: raise the hard limit (ulimit -Hn) or lower --hold-echo"
            ));
        }
    }
    Ok(())
}

pub fn sleep_until(t: tokio::time::Instant) {
    std::thread::sleep(t.into_std().saturating_duration_since(Instant::now()));
}

/// `size` bytes of a fixed pattern.
pub fn payload(size: usize) -> Arc<Vec<u8>> {
    Arc::new((0..size).map(|i| (i % 251) as u8).collect())
}

/// Closed-loop load with `size`-byte messages: messages per second, latency p50/p99, server
/// CPU per message.
pub fn load_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
    size: usize,
) -> Result<Figures, String> {
    let conns = rt.block_on(load::open(target, args.conns, args.conns))?;
    closed_loop_phase(rt, args, proc, conns, size)
}

/// The closed-loop load on sockets already open (`wss` connections, or the HTTP/2 phase's
/// streams): the figures of [`load_phase`].
pub fn closed_loop_phase<S>(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    conns: Vec<WebSocketStream<S>>,
    size: usize,
) -> Result<Figures, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let payload = payload(size);
    let measure_from = tokio::time::Instant::now() + args.warmup();
    let until = measure_from + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|ws| rt.spawn(load::closed_loop(ws, payload.clone(), measure_from, until)))
        .collect();
    sleep_until(measure_from);
    let before = proc.usage();
    sleep_until(until);
    let after = proc.usage();
    let mut latencies = Vec::new();
    for task in tasks {
        let part = rt
            .block_on(task)
            .map_err(|e| format!("client task: {e}"))??;
        latencies.extend(part);
    }
    latencies.sort_unstable();
    let n = latencies.len();
    if n == 0 {
        return Err("no message came back in the measured time".into());
    }
    Ok(vec![
        ("messages_per_second", n as f64 / args.duration),
        ("latency_p50_us", load::quantile(&latencies, 0.50)),
        ("latency_p99_us", load::quantile(&latencies, 0.99)),
        (
            "cpu_us_per_message",
            (after.cpu_secs - before.cpu_secs) * 1e6 / n as f64,
        ),
    ])
}

/// Connections held on a server, with its usage before they were opened and once they all were.
pub struct Held {
    pub conns: Vec<Ws>,
    pub failed: usize,
    pub first_error: Option<String>,
    pub before: Usage,
    pub after: Usage,
}

impl Held {
    /// Close them all (inside the runtime, which their sockets belong to).
    pub fn close(self, rt: &tokio::runtime::Runtime) {
        let conns = self.conns;
        rt.block_on(async move { drop(conns) });
    }

    /// Fails if any connection failed to open (closing those that did).
    pub fn all(self, rt: &tokio::runtime::Runtime) -> Result<Held, String> {
        match &self.first_error {
            None => Ok(self),
            Some(e) => {
                let e = format!(
                    "{} of {} connections failed, the first with: {e}",
                    self.failed,
                    self.failed + self.conns.len()
                );
                self.close(rt);
                Err(e)
            }
        }
    }

    pub fn rss_growth_per_connection(&self) -> f64 {
        (self.after.rss_bytes as f64 - self.before.rss_bytes as f64)
            / self.conns.len().max(1) as f64
    }
}

/// Warm the server up, read its usage, open `n` connections (`--conns` at a time, each checked
/// with one round trip), let it settle and read its usage again. The warm-up (`--conns`
/// connections opened and closed) puts what a server builds lazily on its first connections
/// (per-worker TLS and buffer pools) into the "before" figure rather than into the growth.
pub fn hold(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
    n: usize,
) -> Result<Held, String> {
    let warm = rt.block_on(load::open(target, args.conns, args.conns))?;
    rt.block_on(async move { drop(warm) });
    std::thread::sleep(args.settle());
    let before = proc.usage();
    let opened = rt.block_on(load::open_counting(target, n, args.conns));
    std::thread::sleep(args.idle_settle());
    let after = proc.usage();
    Ok(Held {
        conns: opened.open,
        failed: opened.failed,
        first_error: opened.first_error,
        before,
        after,
    })
}

/// Idle connections: server memory per connection.
pub fn idle_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
) -> Result<Figures, String> {
    let held = hold(rt, args, proc, target, args.idle)?.all(rt)?;
    let per_connection = held.rss_growth_per_connection();
    held.close(rt);
    Ok(vec![
        ("connections", args.idle as f64),
        ("rss_bytes_per_connection", per_connection),
    ])
}

/// Handshakes: per second, and server CPU per handshake (teardown included).
pub fn handshake_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
) -> Result<Figures, String> {
    let before = proc.usage();
    let start = Instant::now();
    let (ok, failed, first_error) =
        rt.block_on(load::handshakes(target, args.handshakes, args.conns));
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(args.settle() / 2);
    let after = proc.usage();
    if ok == 0 {
        return Err(format!("every handshake failed: {first_error}"));
    }
    if failed > 0 {
        eprintln!(
            "warning: {failed} of {} handshakes failed, the first with: {first_error}",
            args.handshakes
        );
    }
    Ok(vec![
        ("handshakes_per_second", ok as f64 / elapsed),
        (
            "cpu_us_per_handshake",
            (after.cpu_secs - before.cpu_secs) * 1e6 / ok as f64,
        ),
        ("errors", failed as f64),
    ])
}
