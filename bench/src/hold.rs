//! Large holds (`--hold-relay N`, `--hold-echo M`): the memory of many connections at the size
//! the issue asks for (9,000 relayed and 19,000 echo connections at a 20,000-descriptor limit),
//! and whether handshakes still go as fast with them open. A connection that fails to open is
//! counted, not fatal: how many a server could hold is the figure.

use crate::args::Args;
use crate::load::Target;
use crate::phases::{self, Figures};
use crate::procs::Proc;

/// Hold `n` connections (each checked with one round trip), read the RSS, then measure
/// `--handshakes` handshakes (`--conns` at a time, each dropped after its 101) while they stay
/// open.
pub fn phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &Proc,
    target: &Target,
    n: usize,
) -> Result<Figures, String> {
    let held = phases::hold(rt, args, proc, target, n)?;
    if held.conns.is_empty() {
        let e = held.first_error.unwrap_or_default();
        return Err(format!("none of {n} connections opened: {e}"));
    }
    if let Some(e) = &held.first_error {
        eprintln!(
            "warning: {} of {n} connections to hold failed, the first with: {e}",
            held.failed
        );
    }
    let handshakes = phases::handshake_phase(rt, args, proc, target);
    let (count, failed) = (held.conns.len(), held.failed);
    let (rss, per_connection) = (held.after.rss_bytes, held.rss_growth_per_connection());
    held.close(rt);
    let mut figures = vec![
        ("connections", count as f64),
        ("rss_bytes", rss as f64),
        ("rss_bytes_per_connection", per_connection),
    ];
    for (figure, value) in handshakes? {
        let value = if figure == "errors" {
            value + failed as f64
        } else {
            value
        };
        figures.push((figure, value));
    }
    Ok(figures)
}
