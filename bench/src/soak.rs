//! The soak (`--soak DURATION`): one Portcullis relay for a long time, in cycles of
//! `--soak-interval` each (60 s by default): `--soak-hold` sockets opened and held, handshake
//! churn (connections opened and dropped without pause) and closed-loop message load through
//! the relay, then the held sockets closed. The gateway's RSS and open descriptors are sampled
//! at the start and after every cycle once the held sockets are closed (what it keeps between
//! cycles: flat is the target), and just before they close (what it holds at the top of a
//! cycle). Errors are counted, not fatal; only the gateway's (or the upstream's) death ends the
//! soak early, after the samples so far are written.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::args::{Args, Soak};
use crate::chart::{self, Axis, Panel, Scale, Series};
use crate::grid::{Section, Subject};
use crate::load::{self, Target};
use crate::phases;
use crate::procs::Proc;
use crate::servers::Env;

/// Facts about the run for the outputs.
pub struct Info {
    pub date: String,
    pub command: String,
    pub binary: String,
    pub version: String,
}

/// One reading of the gateway.
#[derive(Clone, Debug)]
pub struct Sample {
    pub secs: f64,
    pub rss_bytes: u64,
    pub fds: usize,
    /// Read just before the cycle's held sockets closed (none at the start).
    pub held_rss_bytes: Option<u64>,
    pub held_fds: Option<usize>,
    /// Cumulative since the start.
    pub messages: u64,
    pub handshakes: u64,
    pub errors: u64,
    /// The cycle's message latency (none at the start).
    pub latency_p99_us: Option<f64>,
}

/// What the clients did, cumulative.
#[derive(Default)]
struct Counts {
    messages: u64,
    handshakes: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Counts {
    fn failed(&mut self, n: usize, error: Option<String>) {
        self.errors += n as u64;
        if self.first_error.is_none() {
            self.first_error = error;
        }
    }
}

/// Handshake churn `parallel` at a time until `until`: returns the successes and failures.
async fn churn(target: Target, parallel: usize, until: Instant) -> (usize, usize, String) {
    let (mut ok, mut failed, mut first) = (0, 0, String::new());
    while Instant::now() < until {
        let (o, f, e) = load::handshakes(&target, parallel * 4, parallel).await;
        (ok, failed) = (ok + o, failed + f);
        if first.is_empty() {
            first = e;
        }
    }
    (ok, failed, first)
}

/// One cycle, ending at `end`. Returns the cycle's p99 latency and the held reading.
fn cycle(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    soak: &Soak,
    proc: &Proc,
    target: &Target,
    end: Instant,
    counts: &mut Counts,
) -> (Option<f64>, u64, usize) {
    let settle = args.settle();
    let held = rt.block_on(load::open_counting(target, soak.hold, args.conns));
    counts.handshakes += held.open.len() as u64;
    counts.failed(held.failed, held.first_error);
    // The load and the churn stop a settle before the cycle's end, when the held ones close.
    let until = end.checked_sub(settle).unwrap_or(end).max(Instant::now());
    let loaded = rt.block_on(load::open_counting(target, args.conns, args.conns));
    counts.handshakes += loaded.open.len() as u64;
    counts.failed(loaded.failed, loaded.first_error);
    let payload = phases::payload(args.size);
    let start = Instant::now();
    let tasks: Vec<_> = loaded
        .open
        .into_iter()
        .map(|ws| rt.spawn(load::closed_loop(ws, payload.clone(), start, until)))
        .collect();
    let churn = rt.spawn(churn(target.clone(), (args.conns / 10).max(1), until));
    let mut latencies = Vec::new();
    for task in tasks {
        match rt.block_on(task) {
            Ok(Ok(part)) => latencies.extend(part),
            Ok(Err(e)) => counts.failed(1, Some(e)),
            Err(e) => counts.failed(1, Some(format!("client task: {e}"))),
        }
    }
    match rt.block_on(churn) {
        Ok((ok, failed, first)) => {
            counts.handshakes += ok as u64;
            counts.failed(failed, (!first.is_empty()).then_some(first));
        }
        Err(e) => counts.failed(1, Some(format!("churn task: {e}"))),
    }
    counts.messages += latencies.len() as u64;
    latencies.sort_unstable();
    let p99 = (!latencies.is_empty()).then(|| load::quantile(&latencies, 0.99));
    let (held_rss, held_fds) = (proc.usage().rss_bytes, proc.open_fds());
    let conns = held.open;
    rt.block_on(async move { drop(conns) });
    phases::sleep_until(end);
    (p99, held_rss, held_fds)
}

/// Run the soak and write its outputs; fails only if the gateway or the upstream dies (after
/// writing what was sampled).
pub fn run(
    env: &Env,
    rt: &tokio::runtime::Runtime,
    args: &Args,
    soak: &Soak,
    upstream: &mut Proc,
    info: &Info,
) -> Result<(), String> {
    let (mut proc, target) = env.start(Subject::Portcullis, Section::Load)?;
    let start = Instant::now();
    let deadline = start + soak.duration;
    let mut counts = Counts::default();
    let sample = |proc: &Proc, counts: &Counts, held: Option<(u64, usize)>, p99| Sample {
        secs: start.elapsed().as_secs_f64(),
        rss_bytes: proc.usage().rss_bytes,
        fds: proc.open_fds(),
        held_rss_bytes: held.map(|h| h.0),
        held_fds: held.map(|h| h.1),
        messages: counts.messages,
        handshakes: counts.handshakes,
        errors: counts.errors,
        latency_p99_us: p99,
    };
    let mut samples = vec![sample(&proc, &counts, None, None)];
    let mut died = None;
    while Instant::now() < deadline {
        // No stub of a cycle at the end: the last full cycle's sample is the end.
        if samples.len() > 1 && deadline - Instant::now() < soak.interval / 4 {
            break;
        }
        let end = (Instant::now() + soak.interval).min(deadline);
        let (p99, held_rss, held_fds) = cycle(rt, args, soak, &proc, &target, end, &mut counts);
        if let Err(e) = proc.check_alive().and_then(|()| upstream.check_alive()) {
            died = Some(e);
            break;
        }
        let s = sample(&proc, &counts, Some((held_rss, held_fds)), p99);
        eprintln!(
            "[{:>5.0}s] soak: RSS {:.1} MiB ({:.1} held), {} fds ({} held), {} messages, {} \
             handshakes, {} errors",
            s.secs,
            mib(s.rss_bytes),
            mib(held_rss),
            s.fds,
            held_fds,
            s.messages,
            s.handshakes,
            s.errors
        );
        samples.push(s);
    }
    drop(proc);
    let out = json(&samples, &counts, args, soak, info, died.as_deref());
    let markdown = markdown(&out);
    println!("{markdown}");
    if let Some(path) = &args.markdown {
        crate::write_file(path, &markdown)?;
    }
    if let Some(path) = &soak.json {
        let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
        crate::write_file(path, &(text + "\n"))?;
    }
    if let Some(path) = &soak.svg {
        crate::write_file(path, &svg(&samples, soak, info))?;
    }
    match died {
        Some(e) => Err(format!("the soak ended early: {e}")),
        None => Ok(()),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The last sample against the first after the warm-up (the first cycle): RSS in bytes and
/// per cent, descriptors; null with fewer than two samples after the start.
fn drift(samples: &[Sample]) -> Value {
    let (Some(first), Some(last)) = (samples.get(1), samples.last()) else {
        return Value::Null;
    };
    let rss = last.rss_bytes as f64 - first.rss_bytes as f64;
    let held = match (first.held_rss_bytes, last.held_rss_bytes) {
        (Some(a), Some(b)) => json!(b as f64 - a as f64),
        _ => Value::Null,
    };
    json!({
        "from_secs": first.secs,
        "to_secs": last.secs,
        "rss_bytes": rss,
        "rss_percent": rss * 100.0 / (first.rss_bytes as f64).max(1.0),
        "fds": last.fds as i64 - first.fds as i64,
        "held_rss_bytes": held,
    })
}

fn json(
    samples: &[Sample],
    counts: &Counts,
    args: &Args,
    soak: &Soak,
    info: &Info,
    died: Option<&str>,
) -> Value {
    let rows: Vec<Value> = samples
        .iter()
        .map(|s| {
            json!({
                "secs": s.secs,
                "rss_bytes": s.rss_bytes,
                "fds": s.fds,
                "held_rss_bytes": s.held_rss_bytes,
                "held_fds": s.held_fds,
                "messages": s.messages,
                "handshakes": s.handshakes,
                "errors": s.errors,
                "latency_p99_us": s.latency_p99_us,
            })
        })
        .collect();
    json!({
        "date": info.date,
        "command": info.command,
        "portcullis": { "path": info.binary, "version": info.version },
        "settings": {
            "duration_secs": soak.duration.as_secs_f64(),
            "interval_secs": soak.interval.as_secs_f64(),
            "hold": soak.hold,
            "conns": args.conns,
            "churn_parallel": (args.conns / 10).max(1),
            "size": args.size,
            "workers": args.workers,
        },
        "samples": rows,
        "drift": drift(samples),
        "totals": {
            "messages": counts.messages,
            "handshakes": counts.handshakes,
            "errors": counts.errors,
            "first_error": counts.first_error,
        },
        "gateway_died": died,
    })
}

fn markdown(out: &Value) -> String {
    let s = &out["settings"];
    let mut text = format!(
        "## Portcullis soak: {}\n\nCommand: `{}`\n\nRelay route, {} worker(s); cycles of {} s: \
         {} sockets held, handshake churn ({} at a time) and {} closed-loop connections of \
         {}-byte messages. RSS and descriptors after each cycle (held sockets closed), and \
         just before its held sockets closed.\n\n\
         | time (s) | RSS (MiB) | fds | RSS held (MiB) | fds held | messages | handshakes | errors |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
        out["date"].as_str().unwrap_or(""),
        out["command"].as_str().unwrap_or(""),
        s["workers"],
        s["interval_secs"],
        s["hold"],
        s["churn_parallel"],
        s["conns"],
        s["size"],
    );
    let mib = |v: &Value| {
        v.as_f64()
            .map_or("–".into(), |b| format!("{:.1}", b / 1048576.0))
    };
    let int = |v: &Value| v.as_f64().map_or("–".into(), |n| format!("{n:.0}"));
    for r in out["samples"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            int(&r["secs"]),
            mib(&r["rss_bytes"]),
            int(&r["fds"]),
            mib(&r["held_rss_bytes"]),
            int(&r["held_fds"]),
            int(&r["messages"]),
            int(&r["handshakes"]),
            int(&r["errors"]),
        ));
    }
    let d = &out["drift"];
    if d.is_null() {
        text.push_str("\nDrift: not measured (fewer than two cycles).\n");
    } else {
        text.push_str(&format!(
            "\nDrift from {} s (after the first cycle) to {} s: RSS {:+.2} MiB ({:+.1} %), \
             descriptors {:+}, RSS with the sockets held {} MiB.\n",
            int(&d["from_secs"]),
            int(&d["to_secs"]),
            d["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            d["rss_percent"].as_f64().unwrap_or(0.0),
            d["fds"].as_i64().unwrap_or(0),
            d["held_rss_bytes"]
                .as_f64()
                .map_or("–".into(), |b| format!("{:+.2}", b / 1048576.0)),
        ));
    }
    let t = &out["totals"];
    text.push_str(&format!(
        "Errors: {}{}.\n",
        t["errors"],
        t["first_error"]
            .as_str()
            .map_or(String::new(), |e| format!(" (the first: {e})"))
    ));
    if let Some(e) = out["gateway_died"].as_str() {
        text.push_str(&format!("\nThe soak ended early: {e}\n"));
    }
    text
}

/// RSS and descriptors over time, after each cycle and with its sockets held.
fn svg(samples: &[Sample], soak: &Soak, info: &Info) -> String {
    let minutes = soak.duration >= Duration::from_secs(600);
    let (unit, per) = if minutes {
        ("minutes", 60.0)
    } else {
        ("seconds", 1.0)
    };
    let x = |s: &Sample| s.secs / per;
    let panel = |title: &str, label: &str, between: Vec<(f64, f64)>, held: Vec<(f64, f64)>| Panel {
        title: title.into(),
        x: Axis {
            label: format!("time ({unit})"),
            scale: Scale::Linear,
            ticks: None,
        },
        y: Axis {
            label: label.into(),
            scale: Scale::Linear,
            ticks: None,
        },
        series: vec![
            Series {
                name: "between cycles".into(),
                points: between,
                color: chart::PALETTE[0],
                dashed: false,
            },
            Series {
                name: format!("{} sockets held", soak.hold),
                points: held,
                color: chart::PALETTE[1],
                dashed: true,
            },
        ],
    };
    let rss = panel(
        "Gateway RSS",
        "RSS (MiB)",
        samples.iter().map(|s| (x(s), mib(s.rss_bytes))).collect(),
        samples
            .iter()
            .filter_map(|s| Some((x(s), mib(s.held_rss_bytes?))))
            .collect(),
    );
    let fds = panel(
        "Gateway open descriptors",
        "descriptors",
        samples.iter().map(|s| (x(s), s.fds as f64)).collect(),
        samples
            .iter()
            .filter_map(|s| Some((x(s), s.held_fds? as f64)))
            .collect(),
    );
    chart::svg(
        &format!(
            "Portcullis soak, relay route: {} s cycles ({})",
            soak.interval.as_secs_f64(),
            info.date
        ),
        &[rss, fds],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64, rss: u64, fds: usize) -> Sample {
        Sample {
            secs,
            rss_bytes: rss,
            fds,
            held_rss_bytes: Some(rss * 2),
            held_fds: Some(fds * 2),
            messages: 0,
            handshakes: 0,
            errors: 0,
            latency_p99_us: None,
        }
    }

    #[test]
    fn drift_is_last_against_first_after_warmup() {
        assert!(drift(&[at(0.0, 10, 5)]).is_null());
        let d = drift(&[at(0.0, 10, 5), at(60.0, 100, 20), at(120.0, 110, 18)]);
        assert_eq!(d["rss_bytes"], 10.0);
        assert_eq!(d["rss_percent"], 10.0);
        assert_eq!(d["fds"], -2);
        assert_eq!(d["held_rss_bytes"], 20.0);
        assert_eq!(d["from_secs"], 60.0);
    }
}
