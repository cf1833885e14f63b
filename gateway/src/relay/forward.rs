//! The upstream's handshake request: what of the client's request goes on (end-to-end headers,
//! its query), what never does (hop-by-hop and WebSocket headers, identity headers the client
//! sent, its token unless the route forwards it, `bearer.` subprotocol entries), and what the
//! gateway adds (`X-Forwarded-*`, `Forwarded`, verified claims, the client certificate's and
//! the external authorizer's identity headers).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::admission::Admitted;
use crate::config::Route;
use crate::core::credential::{
    is_token_subprotocol, strip_cookie, strip_query_param, PolicyCredentials,
};
use crate::core::header;
use crate::core::url::Url;
use crate::net::http1::RequestHead;
use crate::net::websocket::headers;

/// The forwarding rules of one relay route.
pub(crate) struct Forwarding {
    forward_token: bool,
    /// What of the client's request belongs to the route's policy.
    credentials: PolicyCredentials,
    subprotocols: Option<Vec<String>>,
    forward_claims: Vec<(String, HeaderName)>,
}

impl Forwarding {
    /// The rules of a validated route under its policy's `credentials`.
    pub(crate) fn of(route: &Route, credentials: PolicyCredentials) -> Result<Forwarding, String> {
        let forward_claims = route
            .forward_claims
            .iter()
            .flatten()
            .map(|(claim, header)| {
                HeaderName::from_bytes(header.as_bytes())
                    .map(|h| (claim.clone(), h))
                    .map_err(|_| format!("forward_claims.{claim}: invalid header name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Forwarding {
            forward_token: route.relay().forward_token,
            credentials,
            subprotocols: route.subprotocols.clone(),
            forward_claims,
        })
    }

    /// The headers the route's policy sets upstream (the client's copies never go).
    pub(crate) fn policy_headers(&self) -> &[HeaderName] {
        &self.credentials.identity_headers
    }

    /// The subprotocols to offer upstream: the client's list (already without `bearer.`
    /// entries), in its order, filtered by the route's allow-list.
    pub(crate) fn offered_protocols(&self, admitted: &Admitted) -> Vec<String> {
        admitted
            .protocols
            .iter()
            .filter(|p| !is_token_subprotocol(p))
            .filter(|p| {
                self.subprotocols
                    .as_ref()
                    .is_none_or(|allowed| allowed.contains(p))
            })
            .cloned()
            .collect()
    }

    /// The handshake request for `upstream`: the client's end-to-end headers, minus hop-by-hop
    /// and WebSocket headers, minus any identity header the client sent (it must not be able
    /// to speak for the gateway), minus its token unless the route forwards it; then the
    /// gateway's identity headers.
    pub(crate) fn request(
        &self,
        upstream: &Url,
        head: &RequestHead,
        admitted: &Admitted,
        client_tls: bool,
    ) -> Result<http::Request<()>, Refused> {
        let forward_token = self.forward_token;
        let mut headers = HeaderMap::new();
        let connection_listed: Vec<String> = header::items(head.headers.get_all("connection"))
            .map(str::to_ascii_lowercase)
            .collect();
        for (name, value) in head.headers.iter() {
            let n = name.as_str();
            let drop = headers::never_forwarded(n, &connection_listed)
                || self.forward_claims.iter().any(|(_, h)| h == name)
                || self.credentials.identity_headers.contains(name);
            if !drop {
                headers.append(name.clone(), value.clone());
            }
        }
        if !forward_token {
            // The token's cookie stays with the gateway.
            if let Some(name) = &self.credentials.cookie {
                let cookies: Vec<String> = headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(|v| strip_cookie(v, name))
                    .collect();
                headers.remove(http::header::COOKIE);
                for c in cookies {
                    if let Ok(v) = HeaderValue::from_str(&c) {
                        headers.append(http::header::COOKIE, v);
                    }
                }
            }
        }
        if forward_token {
            if let Some(auth) = head.headers.get("authorization") {
                headers.insert(http::header::AUTHORIZATION, auth.clone());
            } else if let Some(token) = &admitted.token {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                    headers.insert(http::header::AUTHORIZATION, v);
                }
            }
        }

        // Identity.
        let proto = if client_tls { "https" } else { "http" };
        headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        let original_host = head.header("host").unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(original_host) {
            headers.insert("x-forwarded-host", v);
        }
        let mut forwarded = String::new();
        if let Some(ip) = admitted.client_ip {
            if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
                headers.insert("x-forwarded-for", v);
            }
            match ip {
                IpAddr::V4(v4) => forwarded.push_str(&format!("for={v4}")),
                IpAddr::V6(v6) => forwarded.push_str(&format!("for=\"[{v6}]\"")),
            }
            forwarded.push(';');
        }
        forwarded.push_str(&format!("proto={proto}"));
        if !original_host.is_empty()
            && original_host
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            forwarded.push_str(&format!(";host=\"{original_host}\""));
        }
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            headers.insert("forwarded", v);
        }
        for (claim, header) in &self.forward_claims {
            let value = match admitted.claims.get(claim) {
                Some(v) => claim_text(v),
                None if claim == "sub" => admitted.subject.clone(),
                None => None,
            };
            if let Some(v) = value {
                let v = claim_header(&v).ok_or_else(|| Refused::Identity(claim.clone()))?;
                headers.insert(header.clone(), v);
            }
        }
        // The client certificate's and the authorizer's identity headers.
        for (name, value) in &admitted.identity_headers {
            headers.append(name.clone(), value.clone());
        }

        // The WebSocket handshake's own headers (key, subprotocols, extensions) are added by
        // `net::websocket::upstream`.
        let host = HeaderValue::from_str(&upstream.host_header())
            .map_err(|_| Refused::Local("invalid upstream host".into()))?;
        headers.insert(http::header::HOST, host);
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        );
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("sec-websocket-version", HeaderValue::from_static("13"));

        let target = join_query(
            &upstream.path_and_query,
            head.target.split_once('?').map(|(_, q)| q),
            (!forward_token).then_some(self.credentials.query_param.as_str()),
        );
        let scheme = upstream.scheme.as_str();
        let uri = format!("{scheme}://{}{target}", upstream.host_header());
        let mut request = uri
            .as_str()
            .into_client_request()
            .map_err(|e| Refused::Local(format!("invalid upstream request: {e}")))?;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// Largest claim value forwarded as a header; a longer one refuses the handshake.
const MAX_CLAIM_HEADER: usize = 8 * 1024;

/// A claim's text as a header value: as it is, UTF-8 included (RFC 9110 section 5.5 lets a field
/// value carry bytes above 0x7f; the upstream reads them as UTF-8). `None` when no header can
/// carry it faithfully: control characters (CR and LF would split the header, NUL ends it) or
/// over [`MAX_CLAIM_HEADER`] bytes. Dropping such a header would send the upstream an
/// authenticated session without its identity, so the caller refuses the handshake instead.
fn claim_header(v: &str) -> Option<HeaderValue> {
    let clean = v.len() <= MAX_CLAIM_HEADER && !v.chars().any(|c| c.is_control() && c != '\t');
    clean
        .then(|| HeaderValue::from_bytes(v.as_bytes()).ok())
        .flatten()
}

/// Why no upstream request was made.
#[derive(Debug)]
pub(crate) enum Refused {
    /// This claim, forwarded as a header, holds what no header can carry ([`claim_header`]).
    Identity(String),
    /// The gateway could not form the request (its configuration).
    Local(String),
}

/// A claim as header text: strings as they are, numbers and booleans printed, arrays of
/// scalars joined with `,`, objects as JSON.
fn claim_text(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(_) | Value::Object(_) | Value::Null => None,
                    other => Some(other.to_string()),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(_) => Some(v.to_string()),
    }
}

/// The upstream request target: its own path and query, then the client's query minus the
/// token parameter `strip` (absent when the route forwards the token).
fn join_query(upstream: &str, client_query: Option<&str>, strip: Option<&str>) -> String {
    let query = client_query.unwrap_or_default();
    let query = match strip {
        // Percent-encoded names count too (`access%5Ftoken`).
        Some(name) => strip_query_param(&format!("?{query}"), name),
        None => format!("?{query}"),
    };
    let kept: Vec<&str> = query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    if kept.is_empty() {
        return upstream.to_string();
    }
    let sep = if upstream.contains('?') { '&' } else { '?' };
    format!("{upstream}{sep}{}", kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn route(extra: &str) -> Route {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\npath = \"/r\"\nmode = \"relay\"\n{extra}"
        );
        Config::parse(&text, "t", None).unwrap().routes.remove(0)
    }

    /// A policy that reads its token from the default query parameter only.
    fn credentials() -> PolicyCredentials {
        PolicyCredentials {
            query_param: crate::config::defaults::QUERY_PARAM.into(),
            ..PolicyCredentials::default()
        }
    }

    fn head(headers: &[(&str, &str)], target: &str) -> RequestHead {
        RequestHead::for_test("GET", target, headers)
    }

    fn upstream(route: &Route) -> Url {
        route.upstreams.as_ref().unwrap()[0].0.clone()
    }

    #[test]
    fn identity_headers_replace_the_clients_own() {
        let route = route(
            "upstreams = [\"ws://backend:9001/chat?v=1\"]\nsubprotocols = [\"chat.v2\", \"chat.v1\"]\nforward_claims = { sub = \"X-Auth-Subject\", tenant = \"X-Tenant\" }",
        );
        let r = Forwarding::of(&route, credentials()).unwrap();
        let h = head(
            &[
                ("host", "gw.example"),
                ("x-forwarded-for", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6"),
                ("x-auth-subject", "admin"),
                ("x-tenant", "evil"),
                ("authorization", "Bearer secret"),
                ("cookie", "a=b"),
                ("connection", "Upgrade, X-Drop-Me"),
                ("x-drop-me", "1"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-extensions", "permessage-deflate"),
            ],
            "/r?room=1&access_token=secret",
        );
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "alice".into());
        let admitted = Admitted {
            client_ip: Some("10.1.2.3".parse().unwrap()),
            claims,
            protocols: vec!["chat.v1".into(), "other".into(), "chat.v2".into()],
            ..Admitted::default()
        };
        let req = r.request(&upstream(&route), &h, &admitted, true).unwrap();
        let get = |n: &str| {
            req.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(req.uri().to_string(), "ws://backend:9001/chat?v=1&room=1");
        assert_eq!(get("host").unwrap(), "backend:9001");
        assert_eq!(get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(get("x-forwarded-host").unwrap(), "gw.example");
        assert_eq!(
            get("forwarded").unwrap(),
            "for=10.1.2.3;proto=https;host=\"gw.example\""
        );
        assert_eq!(get("x-auth-subject").unwrap(), "alice");
        assert_eq!(
            get("x-tenant"),
            None,
            "absent claim: the client's copy is gone too"
        );
        assert_eq!(get("authorization"), None);
        assert_eq!(get("cookie").unwrap(), "a=b");
        assert_eq!(get("x-drop-me"), None);
        assert_eq!(get("sec-websocket-extensions"), None);
        assert_eq!(r.offered_protocols(&admitted), ["chat.v1", "chat.v2"]);
        assert_eq!(
            get("sec-websocket-protocol"),
            None,
            "added by the handshake itself"
        );
        assert_eq!(
            get("sec-websocket-key"),
            None,
            "added by the handshake itself"
        );
        assert_eq!(req.headers().get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn tokens_only_when_asked() {
        let route = route("upstreams = [\"ws://[::1]:9001/\"]\nforward_token = true");
        let r = Forwarding::of(&route, credentials()).unwrap();
        let h = head(&[("authorization", "Bearer t0k")], "/r?access_token=t0k");
        let admitted = Admitted {
            client_ip: Some("::1".parse().unwrap()),
            ..Admitted::default()
        };
        let req = r.request(&upstream(&route), &h, &admitted, false).unwrap();
        assert_eq!(req.uri().to_string(), "ws://[::1]:9001/?access_token=t0k");
        assert_eq!(req.headers()["authorization"], "Bearer t0k");
        assert_eq!(req.headers()["x-forwarded-proto"], "http");
        assert_eq!(req.headers()["forwarded"], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn a_claim_no_header_can_carry_refuses_the_handshake() {
        let route = route(
            "upstreams = [\"ws://backend:9001/\"]\nforward_claims = { sub = \"X-Auth-Subject\", roles = \"X-Roles\" }",
        );
        let r = Forwarding::of(&route, credentials()).unwrap();
        let h = head(&[("host", "gw")], "/r");
        let send = |sub: serde_json::Value| {
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), sub);
            claims.insert("roles".into(), serde_json::json!(["a", "b"]));
            let admitted = Admitted {
                claims,
                ..Admitted::default()
            };
            r.request(&upstream(&route), &h, &admitted, true)
        };
        for bad in [
            "a\rb",
            "a\nb",
            "a\r\nX-Admin: 1",
            "a\0b",
            &"x".repeat(64 * 1024),
        ] {
            match send(bad.into()) {
                Err(Refused::Identity(claim)) => assert_eq!(claim, "sub"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let ok = send("José 🙂".into()).unwrap();
        assert_eq!(
            ok.headers()["x-auth-subject"].as_bytes(),
            "José 🙂".as_bytes()
        );
        assert_eq!(ok.headers()["x-roles"], "a,b");
    }

    #[test]
    fn claims_as_text() {
        assert_eq!(claim_text(&serde_json::json!("a")).unwrap(), "a");
        assert_eq!(claim_text(&serde_json::json!(7)).unwrap(), "7");
        assert_eq!(
            claim_text(&serde_json::json!(["r1", "r2"])).unwrap(),
            "r1,r2"
        );
        assert_eq!(claim_text(&serde_json::json!(null)), None);
    }
}
