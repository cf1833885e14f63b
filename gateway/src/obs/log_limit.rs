//! Warnings that something outside can cause once per handshake (an authorizer that is down, an
//! introspection endpoint that fails), written at most once per interval so that a burst of
//! handshakes cannot flood the log. The lines left out are counted into the next one that is
//! written; the metrics count every event.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often such a warning may be written: once a burst is over, the next event says at once
/// what happened, and a lasting failure is still heard of six times a minute.
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// One warning's limit.
#[derive(Debug)]
pub(crate) struct LogLimit {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When a line was last written.
    last: Option<Instant>,
    /// Lines left out since.
    left_out: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(EVERY)
    }
}

impl LogLimit {
    pub(crate) fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a line may be written now: `Some(n)`, `n` being how many were left out since the
    /// last one; `None`: leave this one out (it is counted).
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            state.left_out += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.left_out))
    }
}

/// ` (N more like it since the last)` for a line that follows left-out ones, else nothing.
pub(crate) fn left_out(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like it since the last)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let limit = LogLimit::new(Duration::from_millis(100));
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(limit.allow(), Some(5));
        assert_eq!(limit.allow(), None);
        assert_eq!(left_out(0), "");
        assert_eq!(left_out(5), " (5 more like it since the last)");
    }
}
