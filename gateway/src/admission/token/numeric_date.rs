//! RFC 7519 NumericDate (section 2): seconds since the epoch, "non-integer values can be
//! represented". `exp`, `nbf` and `iat` are all read here, so every form admission accepts
//! (jsonwebtoken accepts integers and finite non-negative decimals) also drives the expiry
//! close, and no value an identity provider signs can overflow a clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The seconds of a NumericDate claim: an integer or a finite, non-negative decimal. `None`
/// for anything else.
pub(crate) fn seconds(v: &Value) -> Option<f64> {
    if let Some(n) = v.as_u64() {
        return Some(n as f64);
    }
    v.as_f64().filter(|s| s.is_finite() && *s >= 0.0)
}

/// The moment `secs` after the epoch, plus `extra`; `None` when it lies beyond what the
/// clock can represent (a date that is, for a socket, never).
pub(crate) fn moment(secs: f64, extra: Duration) -> Option<SystemTime> {
    let since_epoch = Duration::try_from_secs_f64(secs).ok()?;
    UNIX_EPOCH.checked_add(since_epoch)?.checked_add(extra)
}

/// Seconds since the epoch now (0 before 1970).
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_and_decimals_but_nothing_else() {
        assert_eq!(seconds(&json!(1796117809)), Some(1796117809.0));
        assert_eq!(seconds(&json!(1796117809.5)), Some(1796117809.5));
        assert_eq!(seconds(&json!(-1)), None);
        assert_eq!(seconds(&json!("1796117809")), None);
        assert_eq!(seconds(&json!(null)), None);
        assert_eq!(seconds(&json!(u64::MAX)), Some(u64::MAX as f64));
    }

    #[test]
    fn far_dates_do_not_overflow() {
        let half = moment(1.5, Duration::from_secs(1)).unwrap();
        assert_eq!(
            half.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(moment(u64::MAX as f64, Duration::ZERO), None);
        assert_eq!(moment(9.3e18, Duration::MAX), None);
        assert_eq!(moment(f64::MAX, Duration::ZERO), None);
    }
}
