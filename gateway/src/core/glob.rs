//! Patterns of client-certificate identities (`allow_subjects`, `allow_sans`): exact text, or
//! text with `*` standing for one label or segment: any run of characters but `.`, `/` and `,`.
//! So `*.svc.example.com` matches `a.svc.example.com` but not `a.b.svc.example.com`, and
//! `spiffe://example.org/ns/*/sa/chat` one namespace. Matching ignores ASCII case.

use serde::Deserialize;

/// An identity pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob(String);

/// Characters a `*` never stands for.
const SEPARATORS: [char; 3] = ['.', '/', ','];

impl Glob {
    pub(crate) fn parse(text: &str) -> Result<Glob, String> {
        if text.trim().is_empty() {
            return Err("a pattern must not be empty".into());
        }
        if text.contains("**") {
            return Err(format!("{text:?}: '**' is not a pattern (use one '*')"));
        }
        Ok(Glob(text.to_ascii_lowercase()))
    }

    /// Whether `text` matches the pattern.
    pub(crate) fn matches(&self, text: &str) -> bool {
        matches_from(self.0.as_bytes(), text.to_ascii_lowercase().as_bytes())
    }
}

fn matches_from(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            // `*` takes one or more characters of one segment (never none, never a separator).
            let segment = text
                .iter()
                .position(|c| SEPARATORS.contains(&(*c as char)))
                .unwrap_or(text.len());
            (1..=segment).any(|n| matches_from(rest, &text[n..]))
        }
        Some((c, rest)) => text.first() == Some(c) && matches_from(rest, &text[1..]),
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Glob::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_stay_within_a_segment() {
        let g = Glob::parse("*.svc.Example.com").unwrap();
        assert!(g.matches("chat.svc.example.com"));
        assert!(!g.matches("a.b.svc.example.com"));
        assert!(!g.matches(".svc.example.com"));
        assert!(!g.matches("svc.example.com"));
        let g = Glob::parse("spiffe://example.org/ns/*/sa/chat").unwrap();
        assert!(g.matches("spiffe://example.org/ns/prod/sa/chat"));
        assert!(!g.matches("spiffe://example.org/ns/a/b/sa/chat"));
        let g = Glob::parse("CN=svc-*,O=Example").unwrap();
        assert!(g.matches("CN=svc-chat,O=Example"));
        assert!(!g.matches("CN=svc-chat,OU=x,O=Example"));
        let exact = Glob::parse("CN=a").unwrap();
        assert!(exact.matches("cn=A") && !exact.matches("CN=ab"));
        assert!(Glob::parse(" ").is_err() && Glob::parse("a**").is_err());
    }
}
