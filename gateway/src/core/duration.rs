//! Durations as configuration writes them.

use std::time::Duration;

use serde::Deserialize;

/// A duration written as `"500ms"`, `"10s"`, `"2m"`, `"1h"`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub(crate) Duration);

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
        if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
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
            Raw::Secs(s) => Ok(HumanDuration(Duration::from_secs(s))),
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
}
