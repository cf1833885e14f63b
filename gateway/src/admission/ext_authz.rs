//! Check 5c (the README's check table), external authorization: an authorization service is
//! asked about each handshake (`[policies.NAME.ext_authz]`), with the contract of Envoy's
//! `ext_authz` HTTP service, Traefik's ForwardAuth and NGINX's `auth_request`:
//!
//! - the gateway sends `GET <url>` with `X-Forwarded-Method`, `X-Forwarded-Uri` (the request
//!   target), `X-Forwarded-Host`, `X-Forwarded-Proto` (`https` when the client came over TLS),
//!   `X-Forwarded-For` (the client address), the client's
//!   credentials (`Authorization` and `Cookie` as sent; a `bearer.` subprotocol entry as
//!   `Authorization: Bearer`; a verified client certificate as `X-Forwarded-Client-Cert`), and
//!   the client headers the policy's `send_headers` names;
//! - a `2xx` admits, and the answer's `copy_headers` go to the upstream request;
//! - a `3xx`, `4xx` or `5xx` answer refuses with its status and (the start of) its body, with
//!   its `WWW-Authenticate` and `Location` headers;
//! - no answer in time, none at all, or one that is no decision (`1xx`, past `599`, too large)
//!   is `on_error`: `503` (deny, the default) or admit. Either way it is counted
//!   (`portcullis_ext_authz_errors_total`, so that fail-open admissions are seen) and warned
//!   about at most once per `log_limit::EVERY` per authorizer (it can happen on every
//!   handshake).
//!
//! Decisions may be cached (`cache_ttl`), keyed by a hash of what the authorizer is told except
//! the client address: the route, the request target, host and scheme, the credentials and the
//! `send_headers` values. A request with no credential (no `Authorization`, `Cookie`, verified
//! client certificate or token query parameter) is never cached: its answer may depend on the
//! address, which is not part of the key.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::cache::{self, TtlCache};
use super::token::extract::{from_subprotocol, has_query_param, Found};
use super::Rejection;
use crate::config::defaults;
use crate::config::identity::{ExtAuthz, OnError};
use crate::core::labels::AuthzError;
use crate::core::reason::Reason;
use crate::core::url::HttpUrl;
use crate::net::http1::RequestHead;
use crate::net::http_client::{Call, HttpClient, HttpError};
use crate::net::peer_cert::PeerCert;
use crate::obs::log_limit::{left_out, LogLimit};
use crate::obs::metrics::Metrics;
use crate::obs::trace;

/// What the authorizer decided.
#[derive(Debug, Clone)]
enum Decision {
    /// Admitted, with these headers for the upstream.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// Refused with this answer.
    Deny(Rejection),
}

/// What the authorizer is told about one handshake.
pub(crate) struct Question<'a> {
    pub(crate) head: &'a RequestHead,
    pub(crate) route: &'a str,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) cert: Option<&'a PeerCert>,
    /// The query parameter a token comes in under the policy (its locator's): the one query
    /// parameter that makes a request a credential to the cache.
    pub(crate) token_param: &'a str,
}

/// A compiled `ext_authz` table.
pub(crate) struct Authorizer {
    url: HttpUrl,
    client: HttpClient,
    timeout: Duration,
    send_headers: Vec<HeaderName>,
    copy_headers: Vec<HeaderName>,
    on_error: OnError,
    cache: Option<(Duration, TtlCache<Decision>)>,
    /// The warning of an authorizer that cannot be asked, which every handshake may cause.
    warn: LogLimit,
}

impl Authorizer {
    pub(crate) fn compile(e: &ExtAuthz, key: &str) -> Result<Authorizer, String> {
        let names = |list: &[String], k: &str| {
            list.iter()
                .enumerate()
                .map(|(i, n)| {
                    HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| format!("{key}.{k}[{i}]: invalid header name"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Authorizer {
            url: e.url.clone(),
            client: HttpClient::new(e.ca_file.as_deref())
                .map_err(|err| format!("{key}.ca_file: {err}"))?,
            timeout: e.timeout.map_or(defaults::EXT_AUTHZ_TIMEOUT, |d| d.0),
            send_headers: names(&e.send_headers, "send_headers")?,
            copy_headers: names(&e.copy_headers, "copy_headers")?,
            on_error: e.on_error,
            cache: e
                .cache_ttl
                .map(|ttl| (ttl.0, TtlCache::new(defaults::IDENTITY_CACHE_ENTRIES))),
            warn: LogLimit::default(),
        })
    }

    /// The header names this policy sets upstream from the authorizer's answer (a client's
    /// own copies are removed).
    pub(crate) fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.copy_headers.iter()
    }

    /// Ask (or remember) whether `q` may proceed: the headers for the upstream, or the refusal.
    pub(crate) async fn check(
        &self,
        q: &Question<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Rejection> {
        let headers = self.request_headers(q);
        let key = self
            .cache
            .as_ref()
            .and_then(|_| self.cache_key(q, &headers));
        if let (Some((_, cache)), Some(key)) = (&self.cache, &key) {
            if let Some(decision) = cache.get(key) {
                return decision.into_result();
            }
        }
        let call = Call {
            method: Method::GET,
            url: &self.url,
            headers,
            body: Bytes::new(),
            timeout: self.timeout,
            max_body: defaults::EXT_AUTHZ_MAX_ANSWER_BYTES,
        };
        let sent = trace::step("ext_authz", &self.url.text, self.client.send(call));
        let decision = match sent.await {
            Ok(reply) if reply.status.is_success() => Decision::Allow(self.copied(&reply.headers)),
            Ok(reply) if (300..600).contains(&reply.status.as_u16()) => {
                Decision::Deny(refusal(reply.status.as_u16(), &reply.headers, &reply.body))
            }
            Ok(reply) => {
                let why = format!("answered {}", reply.status.as_u16());
                return self.failed(q.route, AuthzError::Status, &why);
            }
            Err(e) => return self.failed(q.route, error_kind(&e), &e.to_string()),
        };
        if let (Some((ttl, cache)), Some(key)) = (&self.cache, key) {
            cache.insert(key, decision.clone(), tokio::time::Instant::now() + *ttl);
        }
        decision.into_result()
    }

    /// The authorizer could not be asked: counted, warned about (rate-limited), and
    /// `on_error` decides.
    fn failed(
        &self,
        route: &str,
        error: AuthzError,
        why: &str,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Rejection> {
        Metrics::global().ext_authz_error(route, error, self.on_error);
        if let Some(n) = self.warn.allow() {
            let does = match self.on_error {
                OnError::Deny => "refusing",
                OnError::Allow => "admitting",
            };
            log::warn!(
                "ext_authz: {} {why}; {does} (on_error = {}){}",
                self.url.shown(),
                self.on_error.as_str(),
                left_out(n)
            );
        }
        match self.on_error {
            OnError::Deny => {
                Err(
                    Rejection::new(Reason::AuthUnavailable, 503, "authorization unavailable\n")
                        .header("Retry-After", "1"),
                )
            }
            OnError::Allow => Ok(Vec::new()),
        }
    }

    /// What the authorizer gets: the request's method, target, host and client address, its
    /// credentials, and the allow-listed headers.
    fn request_headers(&self, q: &Question<'_>) -> HeaderMap {
        let mut h = HeaderMap::new();
        let head = q.head;
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.append(name, v);
            }
        };
        put("x-forwarded-method", &head.method);
        put("x-forwarded-uri", &head.target);
        if let Some(host) = head.header("host") {
            put("x-forwarded-host", host);
        }
        put("x-forwarded-proto", if head.tls { "https" } else { "http" });
        if let Some(ip) = q.client_ip {
            put("x-forwarded-for", &ip.to_string());
        }
        if let Some(cert) = q.cert {
            put("x-forwarded-client-cert", &client_cert_header(cert));
        }
        for name in &self.send_headers {
            for v in head.headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        for v in head.headers.get_all(http::header::AUTHORIZATION) {
            h.append(http::header::AUTHORIZATION, v.clone());
        }
        if !h.contains_key(http::header::AUTHORIZATION) {
            if let Found::One(token) = from_subprotocol(head) {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                    h.insert(http::header::AUTHORIZATION, v);
                }
            }
        }
        for v in head.headers.get_all(http::header::COOKIE) {
            h.append(http::header::COOKIE, v.clone());
        }
        h
    }

    /// The cache key of a question, from what the authorizer is sent (`sent`) except the
    /// client address: the route, the request target, host and scheme, the credentials and the
    /// `send_headers` values (two tenants with one token are two questions). `None`, not
    /// cached, without any credential: then the answer may rest on the address alone.
    fn cache_key(&self, q: &Question<'_>, sent: &HeaderMap) -> Option<cache::Key> {
        use http::header::{AUTHORIZATION, COOKIE};
        let fingerprint = q.cert.map(|c| c.fingerprint.as_bytes());
        let token_in_query = has_query_param(&q.head.target, q.token_param);
        let credential = sent.contains_key(AUTHORIZATION)
            || sent.contains_key(COOKIE)
            || fingerprint.is_some()
            || token_in_query;
        if !credential {
            return None;
        }
        let mut parts: Vec<&[u8]> = vec![
            q.route.as_bytes(),
            q.head.target.as_bytes(),
            fingerprint.unwrap_or_default(),
        ];
        // Each named header with each of its values, in the order sent; a name with no value
        // still takes its place, so that values cannot shift from one header to the next.
        let named = ["x-forwarded-host", "x-forwarded-proto"]
            .into_iter()
            .map(HeaderName::from_static)
            .chain([AUTHORIZATION, COOKIE])
            .chain(self.send_headers.iter().cloned());
        let mut counts = Vec::new();
        for name in named {
            let values: Vec<&[u8]> = sent
                .get_all(&name)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            counts.push((values.len() as u64).to_be_bytes());
            parts.extend(values);
        }
        let counts: Vec<u8> = counts.concat();
        parts.push(&counts);
        Some(cache::key(&parts))
    }

    fn copied(&self, answer: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        self.copy_headers
            .iter()
            .flat_map(|name| {
                answer
                    .get_all(name)
                    .iter()
                    .map(|v| (name.clone(), v.clone()))
            })
            .collect()
    }
}

impl Decision {
    fn into_result(self) -> Result<Vec<(HeaderName, HeaderValue)>, Rejection> {
        match self {
            Decision::Allow(headers) => Ok(headers),
            Decision::Deny(rejection) => Err(rejection),
        }
    }
}

/// The metric label of a call that got no answer.
fn error_kind(e: &HttpError) -> AuthzError {
    match e {
        HttpError::Timeout => AuthzError::Timeout,
        HttpError::Connect(_) => AuthzError::Connect,
        HttpError::TooLarge => AuthzError::TooLarge,
        HttpError::Protocol(_) => AuthzError::Protocol,
    }
}

/// The verified certificate as Envoy's `x-forwarded-client-cert` writes it.
fn client_cert_header(cert: &PeerCert) -> String {
    let mut out = format!(
        "Hash={};Subject=\"{}\"",
        cert.fingerprint,
        cert.subject.replace('"', "\\\"")
    );
    for san in &cert.sans {
        let kind = if san.contains("://") {
            "URI"
        } else if san.parse::<IpAddr>().is_ok() {
            "IP"
        } else if san.contains('@') {
            "Email"
        } else {
            "DNS"
        };
        out.push_str(&format!(";{kind}={san}"));
    }
    out
}

/// The authorizer's refusal as the client's answer: its status, the start of its body (text
/// only), and the headers that make sense to a client.
fn refusal(status: u16, headers: &HeaderMap, body: &[u8]) -> Rejection {
    let mut text = String::from_utf8_lossy(&body[..body.len().min(defaults::EXT_AUTHZ_BODY_BYTES)])
        .replace(|c: char| c.is_control() && c != '\n', " ");
    if text.is_empty() {
        text = "not authorized".into();
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let mut rejection = Rejection::new(Reason::AuthzDenied, status, text);
    for (name, key) in [
        ("WWW-Authenticate", http::header::WWW_AUTHENTICATE),
        ("Location", http::header::LOCATION),
    ] {
        if let Some(v) = headers.get(key).and_then(|v| v.to_str().ok()) {
            rejection = rejection.header(name, v);
        }
    }
    rejection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_status_short_text_and_challenge() {
        let mut h = HeaderMap::new();
        h.insert(
            "www-authenticate",
            "Bearer realm=\"authz\"".parse().unwrap(),
        );
        let r = refusal(401, &h, b"no\r\nway");
        assert_eq!(r.answer.status, 401);
        assert_eq!(r.answer.body, "no \nway\n");
        assert_eq!(r.answer.headers[0].1, "Bearer realm=\"authz\"");
        let long = vec![b'x'; 5000];
        let r = refusal(403, &HeaderMap::new(), &long);
        assert_eq!(r.answer.body.len(), defaults::EXT_AUTHZ_BODY_BYTES + 1);
        assert_eq!(
            refusal(403, &HeaderMap::new(), b"").answer.body,
            "not authorized\n"
        );
    }

    fn question(head: &RequestHead) -> Question<'_> {
        Question {
            head,
            route: "/ws",
            client_ip: None,
            cert: None,
            token_param: "access_token",
        }
    }

    fn authorizer(table: &str) -> Authorizer {
        let text = format!("url = \"http://127.0.0.1:9/\"\n{table}");
        Authorizer::compile(&toml::from_str(&text).unwrap(), "k").unwrap()
    }

    #[test]
    fn cache_keys_need_a_credential_and_differ_by_it() {
        let a = authorizer("");
        let key = |h: &RequestHead| a.cache_key(&question(h), &a.request_headers(&question(h)));
        let head = |target: &str, headers: &[(&str, &str)]| {
            let mut all = vec![("host", "gw")];
            all.extend_from_slice(headers);
            RequestHead::for_test("GET", target, &all)
        };
        // No credential, not cached; a query string is no credential, unless it holds the
        // policy's token parameter with a value.
        for anonymous in ["/ws", "/ws?room=1", "/ws?access_token=", "/ws?token=x"] {
            assert!(key(&head(anonymous, &[])).is_none(), "{anonymous}");
        }
        assert!(key(&head("/ws?room=1&access_token=t", &[])).is_some());
        let alice = head("/ws", &[("authorization", "Bearer a")]);
        let bob = head("/ws", &[("authorization", "Bearer b")]);
        let sub = head("/ws", &[("sec-websocket-protocol", "bearer.a")]);
        let key = |h: &RequestHead| key(h).unwrap();
        assert_ne!(key(&alice), key(&bob));
        assert_eq!(
            key(&alice),
            key(&sub),
            "the same bearer token, however sent"
        );
        assert_ne!(
            key(&alice),
            key(&head("/ws?x", &[("authorization", "Bearer a")]))
        );
        let mut secure = head("/ws", &[("authorization", "Bearer a")]);
        secure.tls = true;
        assert_ne!(
            key(&alice),
            key(&secure),
            "the scheme is part of the question"
        );
        let sent = a.request_headers(&question(&sub));
        assert_eq!(sent["authorization"], "Bearer a");
        assert_eq!(sent["x-forwarded-uri"], "/ws");
        assert_eq!(sent["x-forwarded-proto"], "http");
        assert_eq!(
            a.request_headers(&question(&secure))["x-forwarded-proto"],
            "https"
        );
    }

    /// The values of `send_headers` are part of what is decided: the same token for another
    /// tenant is another question; headers not sent do not matter.
    #[test]
    fn cache_keys_hold_the_send_headers_values() {
        let a = authorizer("send_headers = [\"x-tenant\", \"x-region\"]");
        let key = |headers: &[(&str, &str)]| {
            let mut all = vec![("host", "gw"), ("authorization", "Bearer t")];
            all.extend_from_slice(headers);
            let h = RequestHead::for_test("GET", "/ws", &all);
            a.cache_key(&question(&h), &a.request_headers(&question(&h)))
                .unwrap()
        };
        let tenant_a = key(&[("x-tenant", "a")]);
        assert_ne!(tenant_a, key(&[("x-tenant", "b")]));
        assert_ne!(tenant_a, key(&[]));
        assert_eq!(tenant_a, key(&[("x-tenant", "a"), ("x-other", "ignored")]));
        // A value cannot move from one header to the next unnoticed.
        assert_ne!(key(&[("x-tenant", "a")]), key(&[("x-region", "a")]));
        assert_ne!(
            key(&[("x-tenant", "a"), ("x-tenant", "b")]),
            key(&[("x-tenant", "a"), ("x-region", "b")])
        );
    }
}
