//! A request's query parameters and cookies by name, each answered as none, one, or more than
//! one value ([`Found`]): admission reads a token from them, a hashing relay its key, and both
//! must tell a value sent twice from one sent once.

use crate::net::http1::RequestHead;

/// What one source holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    None,
    One(String),
    /// The same source carries the token more than once.
    Many,
}

impl Found {
    /// From every candidate value a source holds (empty values are no token).
    pub(crate) fn of(mut candidates: impl Iterator<Item = String>) -> Found {
        match (candidates.next(), candidates.next()) {
            (None, _) => Found::None,
            (Some(t), None) if t.is_empty() => Found::None,
            (Some(t), None) => Found::One(t),
            (Some(_), Some(_)) => Found::Many,
        }
    }
}

/// The cookie `name`, over every `Cookie` header.
pub(crate) fn cookie(head: &RequestHead, name: &str) -> Found {
    Found::of(
        head.headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
            }),
    )
}

/// The query of a request target (after `?`, before any `#`).
fn query_of(target: &str) -> Option<&str> {
    target.split_once('?')?.1.split('#').next()
}

/// A query parameter's (form-decoded) value.
pub(crate) fn query_param(target: &str, name: &str) -> Found {
    let query = query_of(target).unwrap_or_default();
    Found::of(
        form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned()),
    )
}

/// Whether the target's query holds the parameter `name` with a value (however many times):
/// a query string is a credential only then.
pub(crate) fn has_query_param(target: &str, name: &str) -> bool {
    let query = query_of(target).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == name && !v.is_empty())
}
