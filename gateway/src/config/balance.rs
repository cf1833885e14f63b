//! How a relay route spreads sockets over its upstreams: the `balance` policy, the `hash_key`
//! of `balance = "hash"`, and an `upstreams` entry (a URL, or a table with its weight and drain
//! flag).

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;

use super::defaults;
use crate::core::url::WsUrl;

/// How a relay route spreads new sockets over its upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Balance {
    /// Each new socket goes to the next healthy upstream in turn.
    #[default]
    RoundRobin,
    /// Each new socket goes to the healthy upstream with the fewest open sockets.
    LeastConnections,
    /// Consistent hashing of a key (`hash_key`) with bounded loads (`hash_balance_factor`).
    Hash,
}

/// What `balance = "hash"` hashes. Written `claim:NAME`, `header:NAME`, `query:NAME`,
/// `cookie:NAME` or `client_ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HashKey {
    /// A claim of the token admission verified (never read from the request itself).
    Claim(String),
    /// A request header (lower case).
    Header(http::HeaderName),
    /// A query parameter of the request target.
    Query(String),
    /// A cookie.
    Cookie(String),
    /// The client address as resolved through `[server] trusted_proxies`.
    ClientIp,
}

impl Default for HashKey {
    fn default() -> HashKey {
        HashKey::Claim(defaults::HASH_KEY_CLAIM.to_string())
    }
}

/// The forms of `hash_key`, for error messages.
const HASH_KEY_FORMS: &str =
    "\"claim:NAME\", \"header:NAME\", \"query:NAME\", \"cookie:NAME\" or \"client_ip\"";

impl HashKey {
    pub(crate) fn parse(text: &str) -> Result<HashKey, String> {
        if text == "client_ip" {
            return Ok(HashKey::ClientIp);
        }
        let Some((kind, name)) = text.split_once(':') else {
            return Err(format!("{text:?} is not one of {HASH_KEY_FORMS}"));
        };
        if name.is_empty() {
            return Err(format!("{text:?}: the name after {kind:?} is empty"));
        }
        match kind {
            "claim" => Ok(HashKey::Claim(name.to_string())),
            "header" => http::HeaderName::from_bytes(name.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("{text:?}: {name:?} is not a valid header name")),
            "query" => Ok(HashKey::Query(name.to_string())),
            "cookie" => Ok(HashKey::Cookie(name.to_string())),
            _ => Err(format!("{text:?} is not one of {HASH_KEY_FORMS}")),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Claim(n) => write!(f, "claim:{n}"),
            HashKey::Header(n) => write!(f, "header:{n}"),
            HashKey::Query(n) => write!(f, "query:{n}"),
            HashKey::Cookie(n) => write!(f, "cookie:{n}"),
            HashKey::ClientIp => f.write_str("client_ip"),
        }
    }
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HashKey::parse(&text).map_err(de::Error::custom)
    }
}

/// One entry of a relay route's `upstreams`: `"ws://…"`, or
/// `{ url = "ws://…", weight = 2, drain = true }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamEntry {
    pub(crate) url: WsUrl,
    /// Relative share of new sockets (1..=100).
    pub(crate) weight: u32,
    /// Takes no new sockets; its open ones stay.
    pub(crate) drain: bool,
}

impl std::ops::Deref for UpstreamEntry {
    type Target = WsUrl;
    fn deref(&self) -> &WsUrl {
        &self.url
    }
}

/// The table form of an entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamTable {
    url: WsUrl,
    weight: Option<u32>,
    drain: Option<bool>,
}

impl<'de> Deserialize<'de> for UpstreamEntry {
    /// A string or a table, each with its own error (an untagged enum would only say that the
    /// value matched neither).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = UpstreamEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a ws:// or wss:// URL, or a table { url = \"ws://…\", weight = 1, drain = false }",
        )
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<UpstreamEntry, E> {
        Ok(UpstreamEntry {
            url: WsUrl::parse(text).map_err(E::custom)?,
            weight: defaults::UPSTREAM_WEIGHT,
            drain: false,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UpstreamEntry, A::Error> {
        let t = UpstreamTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(UpstreamEntry {
            url: t.url,
            weight: t.weight.unwrap_or(defaults::UPSTREAM_WEIGHT),
            drain: t.drain.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_parse_and_print_back() {
        for text in [
            "claim:sub",
            "header:x-room",
            "query:room",
            "cookie:sid",
            "client_ip",
        ] {
            assert_eq!(HashKey::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            HashKey::parse("header:X-Room").unwrap(),
            HashKey::Header(http::HeaderName::from_static("x-room"))
        );
        for bad in ["sub", "claim:", "body:x", "header:a b", "client_ip:x"] {
            assert!(HashKey::parse(bad).is_err(), "{bad}");
        }
    }
}
