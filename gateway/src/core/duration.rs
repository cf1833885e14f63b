//! Durations as configuration writes them.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
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

/// How a duration may be written, for error messages.
pub(crate) const FORMS: &str = "whole seconds or text such as \"500ms\", \"10s\", \"2m\", \"1h\"";

impl<'de> Deserialize<'de> for HumanDuration {
    /// Each form has its own error, saying what was wrong with the value (an untagged enum
    /// would only say that it matched no variant).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = HumanDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration: {FORMS}")
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<HumanDuration, E> {
        if secs <= MAX_SECS {
            Ok(HumanDuration(Duration::from_secs(secs)))
        } else {
            Err(E::custom(format!(
                "duration {secs} is out of range (at most {MAX_SECS} seconds, one year)"
            )))
        }
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<HumanDuration, E> {
        match u64::try_from(secs) {
            Ok(secs) => self.visit_u64(secs),
            Err(_) => Err(E::custom(format!("duration {secs} is negative"))),
        }
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<HumanDuration, E> {
        if secs < 0.0 {
            return Err(E::custom(format!("duration {secs} is negative")));
        }
        Err(E::custom(format!(
            "duration {secs} is not whole seconds (write a fraction as text, e.g. \"{secs}s\")"
        )))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
        HumanDuration::parse(text)
            .map(HumanDuration)
            .map_err(E::custom)
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

    /// Every wrong form says what is wrong with it, in TOML and in JSON (the admin API).
    #[test]
    fn wrong_forms_say_what_is_wrong() {
        let toml = |text: &str| toml::from_str::<Holder>(text).unwrap_err().to_string();
        let json = |text: &str| {
            serde_json::from_str::<Holder>(text)
                .unwrap_err()
                .to_string()
        };
        for (e, says) in [
            (toml("d = -5"), "duration -5 is negative"),
            (json(r#"{"d": -5}"#), "duration -5 is negative"),
            (
                toml("d = 1.5"),
                "not whole seconds (write a fraction as text, e.g. \"1.5s\")",
            ),
            (json(r#"{"d": 1.5}"#), "not whole seconds"),
            (json(r#"{"d": -0.5}"#), "is negative"),
            (
                json(r#"{"d": true}"#),
                "expected a duration: whole seconds or text",
            ),
            (json(r#"{"d": "2y"}"#), "unknown duration unit"),
        ] {
            assert!(e.contains(says), "{e:?} should say {says:?}");
            assert!(!e.contains("untagged"), "{e}");
        }
        assert_eq!(
            serde_json::from_str::<Holder>(r#"{"d": "1.5s"}"#)
                .unwrap()
                .d
                .0,
            Duration::from_millis(1500)
        );
    }
}
