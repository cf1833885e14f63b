//! How a policy reads a token, shared by `[policies.NAME.jwt]` and
//! `[policies.NAME.introspection]`: where it is found, what an expiry does to an open socket,
//! and the claim values required.

use serde::Deserialize;

/// Where a token may be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// A `Sec-WebSocket-Protocol` entry `bearer.<token>` (browsers cannot set headers).
    Subprotocol,
    /// A query parameter (default `access_token`).
    Query,
    /// A cookie (default `access_token`).
    Cookie,
}

impl TokenSource {
    /// The name as configured.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenSource::Header => "header",
            TokenSource::Subprotocol => "subprotocol",
            TokenSource::Query => "query",
            TokenSource::Cookie => "cookie",
        }
    }
}

/// What to do when the token of an open socket expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnExpiry {
    /// Close with 1008 `token expired` (after `expiry_grace`).
    #[default]
    Close,
    /// Let the socket live on.
    Ignore,
}

/// A required claim value: one, or all of several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum ClaimRule {
    One(String),
    All(Vec<String>),
}

impl ClaimRule {
    pub(crate) fn values(&self) -> Vec<&str> {
        match self {
            ClaimRule::One(v) => vec![v.as_str()],
            ClaimRule::All(vs) => vs.iter().map(String::as_str).collect(),
        }
    }
}
