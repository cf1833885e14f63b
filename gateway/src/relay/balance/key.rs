//! The key a `balance = "hash"` route hashes, read from an admitted handshake. A claim is read
//! from the claims admission verified, never from the request; a header the policy sets
//! upstream from what it verified, never from the client's copy; the client address is the one
//! admission resolved through the trusted proxies. A key the handshake carries twice (two
//! headers, two query parameters, two cookies) is no key: either could be the client's pick.

use std::borrow::Cow;

use crate::admission::Admitted;
use crate::config::HashKey;
use crate::net::fields::{self, Found};
use crate::net::http1::RequestHead;

/// The key's bytes, or `None` when the handshake lacks it (or holds it twice, or empty).
/// `policy_headers` are the headers the route's policy sets upstream.
pub(crate) fn of<'a>(
    key: &HashKey,
    head: &'a RequestHead,
    admitted: &'a Admitted,
    policy_headers: &[http::HeaderName],
) -> Option<Cow<'a, [u8]>> {
    let found: Cow<'a, [u8]> = match key {
        HashKey::Claim(name) => match admitted.claims.get(name)? {
            serde_json::Value::Null => return None,
            serde_json::Value::String(s) => Cow::Borrowed(s.as_bytes()),
            // Numbers and booleans printed, arrays and objects as JSON: what forward_claims
            // would send, and the same on every replica.
            other => Cow::Owned(other.to_string().into_bytes()),
        },
        // A header the policy sets upstream (a client certificate's, an authorizer's answer)
        // is read from what the policy set: the client's own copy never goes upstream, so it
        // is not the key either.
        HashKey::Header(name) if policy_headers.contains(name) => {
            let mut values = admitted.identity_headers.iter().filter(|(n, _)| n == name);
            match (values.next(), values.next()) {
                (Some((_, v)), None) => Cow::Borrowed(v.as_bytes()),
                _ => return None,
            }
        }
        HashKey::Header(name) => {
            let mut values = head.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => Cow::Borrowed(v.as_bytes()),
                _ => return None,
            }
        }
        HashKey::Query(name) => one(fields::query_param(&head.target, name))?,
        HashKey::Cookie(name) => one(fields::cookie(head, name))?,
        HashKey::ClientIp => Cow::Owned(admitted.client_ip?.to_string().into_bytes()),
    };
    (!found.is_empty()).then_some(found)
}

fn one<'a>(found: Found) -> Option<Cow<'a, [u8]>> {
    match found {
        Found::One(v) => Some(Cow::Owned(v.into_bytes())),
        Found::None | Found::Many => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead::for_test("GET", target, headers)
    }

    fn key(text: &str, head: &RequestHead, admitted: &Admitted) -> Option<Vec<u8>> {
        key_with(text, head, admitted, &[])
    }

    fn key_with(
        text: &str,
        head: &RequestHead,
        admitted: &Admitted,
        policy_headers: &[http::HeaderName],
    ) -> Option<Vec<u8>> {
        of(
            &HashKey::parse(text).unwrap(),
            head,
            admitted,
            policy_headers,
        )
        .map(|k| k.into_owned())
    }

    #[test]
    fn each_source_and_what_is_no_key() {
        let mut admitted = Admitted {
            client_ip: Some("203.0.113.7".parse().unwrap()),
            ..Admitted::default()
        };
        admitted.claims.insert("sub".into(), "alice".into());
        admitted.claims.insert("org".into(), 42.into());
        let h = head(
            "/r?room=7&dup=1&dup=2",
            &[
                ("x-room", "blue"),
                ("cookie", "sid=abc; theme=dark"),
                ("x-two", "a"),
                ("x-two", "b"),
            ],
        );
        let b = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(key("claim:sub", &h, &admitted), b("alice"));
        assert_eq!(key("claim:org", &h, &admitted), b("42"));
        assert_eq!(key("claim:tenant", &h, &admitted), None);
        assert_eq!(key("header:x-room", &h, &admitted), b("blue"));
        assert_eq!(key("header:x-two", &h, &admitted), None);
        assert_eq!(key("header:x-none", &h, &admitted), None);
        assert_eq!(key("query:room", &h, &admitted), b("7"));
        assert_eq!(key("query:dup", &h, &admitted), None);
        assert_eq!(key("cookie:sid", &h, &admitted), b("abc"));
        assert_eq!(key("cookie:none", &h, &admitted), None);
        assert_eq!(key("client_ip", &h, &admitted), b("203.0.113.7"));
    }

    #[test]
    fn a_header_the_policy_sets_is_read_from_the_policy() {
        let x_user = http::HeaderName::from_static("x-user");
        let policy = [x_user.clone()];
        let mut admitted = Admitted::default();
        let h = head("/r", &[("x-user", "mallory")]);
        assert_eq!(key_with("header:x-user", &h, &admitted, &policy), None);
        admitted
            .identity_headers
            .push((x_user, http::HeaderValue::from_static("alice")));
        assert_eq!(
            key_with("header:x-user", &h, &admitted, &policy),
            Some(b"alice".to_vec())
        );
    }

    #[test]
    fn a_claim_key_is_never_read_from_the_request() {
        // No verified token: a header, query parameter or cookie named like the claim is no key.
        let h = head(
            "/r?sub=mallory",
            &[("sub", "mallory"), ("cookie", "sub=mallory")],
        );
        assert_eq!(key("claim:sub", &h, &Admitted::default()), None);
    }
}
