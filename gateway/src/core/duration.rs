//! Durations as configuration writes them.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// A duration written as `"500ms"`, `"10s"`, `"2m"`, `"1h"`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub(crate) Duration);

/// The longest duration a configuration may set, in either form. Every sum the gateway makes
/// of configured durations and clock readings then stays far inside what the clocks can hold.
pub(crate) const MAX_SECS: u64 = 86_400 * 365;

/// Thirty years: tokio's own "far future". No deadline of this process's life lies further.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The deadline `d` after `at`, saturated at thirty years on: `Instant + Duration` panics when
/// the sum leaves the clock's range, and a deadline that far away never comes anyway.
pub(crate) fn deadline(at: Instant, d: Duration) -> Instant {
    at + d.min(FAR)
}

impl HumanDuration {
    pub(crate) fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num.parse().map_err(|_| {
            format!("invalid duration {s:?} (expected e.g. \"500ms\", \"10s\", \"2m\")")
        })?;
        let secs = match unit.trim() {
            "ms" => value / 1000.0,
            "s" | "" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?} (use ms, s, m or h)"
                ))
            }
        };
        if !secs.is_finite() || !(0.0..=MAX_SECS as f64).contains(&secs) {
            return Err(format!("duration {s:?} is out of range"));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) if s <= MAX_SECS => Ok(HumanDuration(Duration::from_secs(s))),
            Raw::Secs(s) => Err(serde::de::Error::custom(format!(
                "duration {s} is out of range (at most {MAX_SECS} seconds, one year)"
            ))),
            Raw::Text(t) => HumanDuration::parse(&t)
                .map(HumanDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(
            HumanDuration::parse("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            HumanDuration::parse("2m").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(HumanDuration::parse("7").unwrap(), Duration::from_secs(7));
        assert!(HumanDuration::parse("-1s").is_err());
        assert!(HumanDuration::parse("1y").is_err());
    }

    #[test]
    fn deadlines_saturate_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(deadline(now, Duration::MAX), now + FAR);
    }

    #[derive(Debug, Deserialize)]
    struct Holder {
        d: HumanDuration,
    }

    /// A bare integer used to skip the one-year cap, and `u64::MAX` seconds then overflowed the
    /// relay's timers and the shutdown grace.
    #[test]
    fn bare_integers_have_the_same_cap_as_text() {
        let parse = |text: &str| toml::from_str::<Holder>(text).map(|h| h.d.0);
        assert_eq!(parse("d = 7").unwrap(), Duration::from_secs(7));
        assert_eq!(
            parse(&format!("d = {MAX_SECS}")).unwrap(),
            Duration::from_secs(MAX_SECS)
        );
        for text in [
            format!("d = {}", MAX_SECS + 1),
            format!("d = {}", i64::MAX),
            format!("d = \"{}\"", MAX_SECS + 1),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains("out of range"), "{text}: {e}");
        }
    }
}
