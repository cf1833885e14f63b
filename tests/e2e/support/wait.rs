//! Waiting for a condition instead of sleeping: every wait polls what it waits for, with a
//! deadline and a panic that says what never happened and what was seen last.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// Upper bound for any single step of a test.
pub const STEP: Duration = Duration::from_secs(10);

/// Upper bound for a gateway to start (generating a certificate, binding, on a busy machine).
pub const START: Duration = Duration::from_secs(30);

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Poll `probe` until it gives `Ok` (bounded by `limit`) and return that value. Each `Err` is
/// the last observation, shown in the panic if the condition never holds.
pub async fn eventually<T, E, F, Fut>(limit: Duration, what: impl Display, mut probe: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{what}: not within {limit:?}; last seen:\n{seen}"
                );
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// For [`eventually`] probes: `Ok(())` once `done`, else `Err(seen)` (the last observation).
pub fn done_or<S: Display>(done: bool, seen: S) -> Result<(), S> {
    if done {
        Ok(())
    } else {
        Err(seen)
    }
}

/// Sleep until the wall clock is past `unix_seconds` (plus a little, for the whole-second
/// rounding of token times). For tests whose subject is time passing (a token's `exp`).
pub async fn sleep_past_unix(unix_seconds: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let target = Duration::from_secs(unix_seconds) + Duration::from_millis(50);
    tokio::time::sleep(target.saturating_sub(now)).await;
}
