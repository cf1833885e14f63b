//! Where a token is: `Authorization: Bearer`, a `bearer.<token>` subprotocol entry, a query
//! parameter or a cookie; and the request's target and cookies without it (for forwarding and
//! for logs). Each source says whether it holds none, one, or more than one token.

#[cfg(test)]
use crate::core::credential::strip_query_param;
use crate::core::credential::{bearer_token, BEARER_SUBPROTOCOL_PREFIX};
use crate::core::header;
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
    fn of(mut candidates: impl Iterator<Item = String>) -> Found {
        match (candidates.next(), candidates.next()) {
            (None, _) => Found::None,
            (Some(t), None) if t.is_empty() => Found::None,
            (Some(t), None) => Found::One(t),
            (Some(_), Some(_)) => Found::Many,
        }
    }
}

/// `Authorization: Bearer <token>` (the upgrade check refuses a second `Authorization`).
pub(crate) fn from_authorization(head: &RequestHead) -> Found {
    let token = head.header("authorization").and_then(bearer_token);
    Found::of(token.map(String::from).into_iter())
}

/// A `Sec-WebSocket-Protocol` entry `bearer.<token>`.
pub(crate) fn from_subprotocol(head: &RequestHead) -> Found {
    Found::of(
        header::items(head.headers.get_all("sec-websocket-protocol"))
            .filter_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
            .map(String::from),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead::for_test("GET", target, headers)
    }

    #[test]
    fn sources() {
        let h = head(
            "/ws?a=1&access_token=q%2Etok&b=2",
            &[
                ("authorization", "Bearer h.tok"),
                ("sec-websocket-protocol", "chat, bearer.s.tok"),
                ("cookie", "x=1; access_token=c.tok"),
            ],
        );
        let one = |t: &str| Found::One(t.to_string());
        assert_eq!(from_authorization(&h), one("h.tok"));
        assert_eq!(from_subprotocol(&h), one("s.tok"));
        assert_eq!(query_param(&h.target, "access_token"), one("q.tok"));
        assert_eq!(cookie(&h, "access_token"), one("c.tok"));
        assert_eq!(strip_query_param(&h.target, "access_token"), "/ws?a=1&b=2");
        assert_eq!(
            strip_query_param("/ws?access_token=x", "access_token"),
            "/ws"
        );
        assert_eq!(
            strip_query_param("/ws?access%5Ftoken=x&a+b=1", "access_token"),
            "/ws?a+b=1"
        );
        assert_eq!(
            from_authorization(&head("/", &[("authorization", "Basic abc")])),
            Found::None
        );
        assert_eq!(query_param("/?t=a%2", "t"), one("a%2"));
        assert_eq!(query_param("/?t=a+b", "t"), one("a b"));
        assert_eq!(query_param("/?t=", "t"), Found::None);
        assert_eq!(query_param("/", "t"), Found::None);
    }

    #[test]
    fn a_source_holding_two_tokens_says_so() {
        assert_eq!(query_param("/?t=a&t=b", "t"), Found::Many);
        assert_eq!(query_param("/?t=&t=b", "t"), Found::Many);
        let h = head(
            "/",
            &[
                ("sec-websocket-protocol", "bearer.a, chat"),
                ("sec-websocket-protocol", "bearer.b"),
                ("cookie", "t=1"),
                ("cookie", "t=2"),
            ],
        );
        assert_eq!(from_subprotocol(&h), Found::Many);
        assert_eq!(cookie(&h, "t"), Found::Many);
    }
}
