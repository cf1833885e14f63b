//! Where a credential travels in a request, and how it is taken out of what the relay forwards.
//!
//! - `Authorization: Bearer <token>` ([`bearer_token`]): read by admission (a WebSocket
//!   client's token) and by the admin listener (the operator's token), one parser for both.
//! - A `bearer.<token>` subprotocol entry: browsers cannot set `Authorization` on a WebSocket, so
//!   they offer the token in `Sec-WebSocket-Protocol` next to their real protocol. Such an entry
//!   is a credential: it is never echoed, selected or forwarded.

use std::borrow::Cow;

/// The `Sec-WebSocket-Protocol` entry prefix that carries a token.
pub(crate) const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// Whether a subprotocol entry carries a token.
pub(crate) fn is_token_subprotocol(protocol: &str) -> bool {
    protocol.starts_with(BEARER_SUBPROTOCOL_PREFIX)
}

/// The token of an `Authorization` header value in the `Bearer` scheme (RFC 6750): the scheme
/// in any case, separated from the token by spaces or tabs; whitespace around the value and the
/// token is ignored. `None` for another scheme or an empty token.
pub(crate) fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A `Cookie` header value without the cookie `name`; `None` when nothing is left.
pub(crate) fn strip_cookie(value: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split('=').next().map(str::trim) != Some(name))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// The decoded name of one raw `name=value` query pair.
fn pair_name(pair: &str) -> Cow<'_, str> {
    form_urlencoded::parse(pair.as_bytes())
        .next()
        .map_or(Cow::Borrowed(""), |(k, _)| k)
}

/// The request target without the query parameter `name` (for forwarding and for logs); the
/// other pairs stay exactly as sent. Percent-encoded names count too (`access%5Ftoken`).
pub(crate) fn strip_query_param(target: &str, name: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let kept: Vec<&str> = query.split('&').filter(|p| pair_name(p) != name).collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Where a route's policy takes a token from besides `Authorization` and the `bearer.`
/// subprotocol, and the identity headers it sets upstream: built once per configuration
/// generation from the compiled policy, so that a relay strips all of it from what it forwards
/// without knowing how admission reads a token.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyCredentials {
    /// The query parameter a token may travel in (stripped unless the route forwards tokens).
    pub(crate) query_param: String,
    /// The cookie a token may travel in, if the policy reads one.
    pub(crate) cookie: Option<String>,
    /// Headers the policy sets upstream (client certificate, authorizer): the client's own
    /// copies never go.
    pub(crate) identity_headers: Vec<http::HeaderName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_in_any_case_with_any_whitespace() {
        for value in [
            "Bearer abc.def",
            "bearer abc.def",
            "BEARER abc.def",
            "bEaReR abc.def",
            "Bearer   abc.def",
            "Bearer\tabc.def",
            "  Bearer abc.def  ",
            "Bearer \t abc.def\t",
        ] {
            assert_eq!(bearer_token(value), Some("abc.def"), "{value:?}");
        }
        for value in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer \t ",
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "Bearerabc.def",
            "Token abc.def",
            "abc.def",
        ] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
