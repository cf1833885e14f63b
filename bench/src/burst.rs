//! Retention after a burst (`--burst N`): does a server give back the memory a burst of
//! connections took once they are gone? The issue found that none of the three did (Portcullis
//! kept its peak RSS five seconds after 4,000 connections closed), and sets the target: back
//! within 25 % of the pre-burst RSS within 30 s.

use std::time::Duration;

use crate::args::Args;
use crate::load::Target;
use crate::phases::{self, Figures};
use crate::procs::Proc;
use crate::report::BURST_TOLERANCE;

/// The RSS that counts as "back": the pre-burst figure plus the tolerance.
pub fn threshold(pre_burst: u64) -> f64 {
    pre_burst as f64 * (1.0 + BURST_TOLERANCE)
}

/// The first second (after the close) at which `samples` (one a second from 0) fell within
/// the threshold, or infinity if none did.
pub fn secs_to_recover(samples: &[u64], pre_burst: u64) -> f64 {
    samples
        .iter()
        .position(|&rss| rss as f64 <= threshold(pre_burst))
        .map_or(f64::INFINITY, |i| i as f64)
}

/// RSS before (after a warm-up), at the peak (all `n` open, each checked with one round trip),
/// then every second for `--burst-watch` seconds after they all closed.
pub fn phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    proc: &mut Proc,
    target: &Target,
    n: usize,
) -> Result<Figures, String> {
    let held = phases::hold(rt, args, proc, target, n)?.all(rt)?;
    let (pre, peak) = (held.before.rss_bytes, held.after.rss_bytes);
    let closed_at = tokio::time::Instant::now();
    held.close(rt);
    let watch = args.burst_watch.as_secs();
    let mut samples = Vec::with_capacity(watch as usize + 1);
    for second in 0..=watch {
        phases::sleep_until(closed_at + Duration::from_secs(second));
        proc.check_alive()?;
        samples.push(proc.usage().rss_bytes);
    }
    let at = |second: usize| samples.get(second).map_or(f64::NAN, |&v| v as f64);
    Ok(vec![
        ("connections", n as f64),
        ("rss_pre_burst_bytes", pre as f64),
        ("rss_peak_bytes", peak as f64),
        // NaN (null in the JSON) when the watch is shorter than 5 s.
        ("rss_after_5s_bytes", at(5)),
        ("rss_end_bytes", at(samples.len() - 1)),
        ("secs_to_within_25pct", secs_to_recover(&samples, pre)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_the_first_second_within_a_quarter() {
        assert_eq!(secs_to_recover(&[400, 300, 126, 120], 100), 3.0);
        assert_eq!(secs_to_recover(&[400, 125], 100), 1.0);
        assert_eq!(secs_to_recover(&[100], 100), 0.0);
        assert!(secs_to_recover(&[400, 300], 100).is_infinite());
    }
}
