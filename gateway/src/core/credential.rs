//! Where a credential travels in a request.
//!
//! - `Authorization: Bearer <token>` ([`bearer_token`]): read by admission (a WebSocket
//!   client's token) and by the admin listener (the operator's token), one parser for both.
//! - A `bearer.<token>` subprotocol entry: browsers cannot set `Authorization` on a WebSocket, so
//!   they offer the token in `Sec-WebSocket-Protocol` next to their real protocol. Such an entry
//!   is a credential: it is never echoed, selected or forwarded.

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
