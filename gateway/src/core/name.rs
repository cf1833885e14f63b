//! Server-name patterns of SNI certificates.

use serde::Deserialize;

/// A server-name pattern: exact (`chat.example.com`) or a one-level wildcard (`*.example.com`,
/// which matches `a.example.com` but neither `example.com` nor `a.b.example.com`, as browsers do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NamePattern {
    Exact(String),
    Wildcard(String),
}

impl NamePattern {
    pub(crate) fn parse(name: &str) -> Result<NamePattern, String> {
        let lower = name.trim().to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        match lower.strip_prefix("*.") {
            Some(domain) if valid(domain) => Ok(NamePattern::Wildcard(domain.to_string())),
            None if valid(&lower) => Ok(NamePattern::Exact(lower)),
            _ => Err(format!(
                "{name:?} is not a server name (e.g. \"chat.example.com\" or \"*.example.com\")"
            )),
        }
    }

    /// Whether `name` (lower case) matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Wildcard(domain) => name
                .strip_suffix(domain.as_str())
                .and_then(|sub| sub.strip_suffix('.'))
                .is_some_and(|sub| !sub.is_empty() && !sub.contains('.')),
        }
    }

    pub(crate) fn is_exact(&self) -> bool {
        matches!(self, NamePattern::Exact(_))
    }
}

impl<'de> Deserialize<'de> for NamePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        NamePattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let w = NamePattern::parse("*.Example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("a.b.example.com"));
        assert!(!w.matches("aexample.com"));
        let e = NamePattern::parse("chat.example.com").unwrap();
        assert!(e.matches("chat.example.com"));
        assert!(NamePattern::parse("*.*.x").is_err());
        assert!(NamePattern::parse("a..b").is_err());
        assert!(NamePattern::parse("").is_err());
    }
}
