//! Handshake rates across replicas: GCRA (the generic cell rate algorithm, as `governor` runs it
//! locally) evaluated atomically in Redis by one Lua script, called by its SHA (and loaded on
//! `NOSCRIPT`), one round trip per check. The key holds the theoretical arrival time in
//! microseconds of Redis's clock, and expires when it no longer matters.

use std::time::Duration;

use super::link::Link;
use super::ClusterError;
use crate::core::labels::ClusterOp;

/// KEYS[1]: the rate's key. ARGV: the emission interval and the tolerance (interval × burst),
/// in microseconds. Returns 0 when the handshake conforms (and records it), else how many
/// microseconds until it would.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > tolerance then
  return math.max(1, ahead - tolerance)
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ahead / 1000) + 1)
return 0
";

/// A rate as GCRA parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Time between two conforming handshakes at the sustained rate.
    pub(crate) interval: Duration,
    /// How many may come at once.
    pub(crate) burst: u32,
}

/// The GCRA script.
pub(crate) struct Rates {
    script: redis::Script,
}

impl Rates {
    pub(crate) fn new() -> Rates {
        Rates {
            script: redis::Script::new(GCRA),
        }
    }

    /// `Ok(Ok(()))` when a handshake under `key` conforms (and is counted), `Ok(Err(wait))` when
    /// it is over the rate; the call may take `within`.
    pub(crate) async fn check(
        &self,
        link: &Link,
        within: Duration,
        key: &str,
        gcra: Gcra,
    ) -> Result<Result<(), Duration>, ClusterError> {
        let interval = gcra.interval.as_micros().max(1) as u64;
        let tolerance = interval.saturating_mul(u64::from(gcra.burst.max(1)));
        let mut invocation = self.script.key(key);
        invocation.arg(interval).arg(tolerance);
        let wait = link
            .call_within(ClusterOp::Rate, within, |mut conn| async move {
                invocation.invoke_async::<u64>(&mut conn).await
            })
            .await?;
        Ok(match wait {
            0 => Ok(()),
            micros => Err(Duration::from_micros(micros)),
        })
    }
}
