//! Where a token is: `Authorization: Bearer`, a `bearer.<token>` subprotocol entry, a query
//! parameter or a cookie; and the request's target and cookies without it (for forwarding and
//! for logs).

use std::borrow::Cow;

use crate::core::credential::BEARER_SUBPROTOCOL_PREFIX;
use crate::core::header;
use crate::net::http1::RequestHead;

/// `Authorization: Bearer <token>`.
pub(crate) fn from_authorization(head: &RequestHead) -> Option<String> {
    let value = head.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// A `Sec-WebSocket-Protocol` entry `bearer.<token>`.
pub(crate) fn from_subprotocol(head: &RequestHead) -> Option<String> {
    header::items(head.headers.get_all("sec-websocket-protocol"))
        .find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
        .filter(|t| !t.is_empty())
        .map(String::from)
}

/// The cookie `name`.
pub(crate) fn cookie(head: &RequestHead, name: &str) -> Option<String> {
    head.headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|t| !t.is_empty())
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

/// The query of a request target (after `?`, before any `#`).
fn query_of(target: &str) -> Option<&str> {
    target.split_once('?')?.1.split('#').next()
}

/// A query parameter's (form-decoded) value; empty values do not count.
pub(crate) fn query_param(target: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query_of(target)?.as_bytes())
        .find_map(|(k, v)| (k == name && !v.is_empty()).then(|| v.into_owned()))
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
        assert_eq!(from_authorization(&h).as_deref(), Some("h.tok"));
        assert_eq!(from_subprotocol(&h).as_deref(), Some("s.tok"));
        assert_eq!(
            query_param(&h.target, "access_token").as_deref(),
            Some("q.tok")
        );
        assert_eq!(cookie(&h, "access_token").as_deref(), Some("c.tok"));
        assert_eq!(strip_query_param(&h.target, "access_token"), "/ws?a=1&b=2");
        assert_eq!(
            strip_query_param("/ws?access_token=x", "access_token"),
            "/ws"
        );
        assert_eq!(
            strip_query_param("/ws?access%5Ftoken=x&a+b=1", "access_token"),
            "/ws?a+b=1"
        );
        assert!(from_authorization(&head("/", &[("authorization", "Basic abc")])).is_none());
        assert_eq!(query_param("/?t=a%2", "t").as_deref(), Some("a%2"));
        assert_eq!(query_param("/?t=a+b", "t").as_deref(), Some("a b"));
        assert_eq!(query_param("/?t=&t=x", "t").as_deref(), Some("x"));
    }
}
