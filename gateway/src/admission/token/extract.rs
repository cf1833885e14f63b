//! Where a token is: `Authorization: Bearer`, a `bearer.<token>` subprotocol entry, a query
//! parameter or a cookie; and the request's target and cookies without it (for forwarding and
//! for logs). Each source says whether it holds none, one, or more than one token.

#[cfg(test)]
use crate::core::credential::strip_query_param;
use crate::core::credential::{bearer_token, BEARER_SUBPROTOCOL_PREFIX};
use crate::core::header;
pub(crate) use crate::net::fields::{cookie, has_query_param, query_param, Found};
use crate::net::http1::RequestHead;

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
