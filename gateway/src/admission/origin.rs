//! Check 3: the `Origin` allow-list — the defence against cross-site WebSocket hijacking. A page
//! on another site can open a WebSocket to us with the user's cookies; only its `Origin` header
//! (which scripts cannot forge in a browser) tells us so.

use super::Rejection;
use crate::config::policy::Origin;
use crate::core::reason::Reason;
use crate::net::http1::RequestHead;

/// Admit or refuse (403) by the request's `Origin`.
pub(crate) fn check(head: &RequestHead, policy: &Origin) -> Result<(), Rejection> {
    let refuse = |why: &str| Err(Rejection::new(Reason::Origin, 403, format!("{why}\n")));
    let mut values = head.headers.get_all("origin").iter();
    let origin = match (values.next(), values.next()) {
        (None, _) => {
            return if policy.allow_missing {
                Ok(())
            } else {
                refuse("an Origin header is required")
            }
        }
        (Some(_), Some(_)) => return refuse("more than one Origin header"),
        (Some(v), None) => match v.to_str() {
            Ok(v) => v.trim(),
            Err(_) => return refuse("origin not allowed"),
        },
    };
    if origin == "null" {
        return if policy.allow_null {
            Ok(())
        } else {
            refuse("origin not allowed")
        };
    }
    if policy.allow.iter().any(|pattern| matches(pattern, origin)) {
        Ok(())
    } else {
        refuse("origin not allowed")
    }
}

/// Whether `origin` matches `pattern`: exactly (ASCII case-insensitive, as origins are
/// serialized lower-case), or, for `scheme://*.domain`, any subdomain of `domain` (not `domain`
/// itself) with the same scheme and port.
fn matches(pattern: &str, origin: &str) -> bool {
    let (Some((p_scheme, p_host)), Some((o_scheme, o_host))) =
        (pattern.split_once("://"), origin.split_once("://"))
    else {
        return false;
    };
    if !p_scheme.eq_ignore_ascii_case(o_scheme) {
        return false;
    }
    let p_host = p_host.to_ascii_lowercase();
    let o_host = o_host.to_ascii_lowercase();
    match p_host.strip_prefix("*.") {
        None => p_host == o_host,
        Some(domain) => o_host
            .strip_suffix(domain)
            .and_then(|sub| sub.strip_suffix('.'))
            .is_some_and(|sub| {
                !sub.is_empty()
                    && sub
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(origin: Option<&str>) -> RequestHead {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        RequestHead::for_test("GET", "/", &headers)
    }

    #[test]
    fn allow_list() {
        let policy = Origin {
            allow: vec![
                "https://chat.example.com".into(),
                "https://*.example.org".into(),
            ],
            allow_missing: false,
            allow_null: false,
        };
        let ok = |o| check(&head(Some(o)), &policy).is_ok();
        assert!(ok("https://chat.example.com"));
        assert!(ok("HTTPS://Chat.Example.com"));
        assert!(ok("https://a.example.org"));
        assert!(ok("https://a.b.example.org"));
        assert!(
            !ok("https://example.org"),
            "the bare domain is not a subdomain"
        );
        assert!(!ok("https://evilexample.org"));
        assert!(!ok("https://example.org.evil.com"));
        assert!(!ok("http://chat.example.com"), "scheme matters");
        assert!(!ok("https://chat.example.com:8443"), "port matters");
        assert!(!ok("https://a.example.org:444"));
        assert!(!ok("null"));
        let r = check(&head(None), &policy).unwrap_err();
        assert_eq!(r.answer.status, 403);
        assert_eq!(r.reason, Reason::Origin);
        let open = Origin {
            allow: vec![],
            allow_missing: true,
            allow_null: true,
        };
        assert!(check(&head(None), &open).is_ok());
        assert!(check(&head(Some("null")), &open).is_ok());
        assert!(check(&head(Some("https://x.y")), &open).is_err());
    }
}
