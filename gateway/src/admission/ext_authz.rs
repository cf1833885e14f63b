//! Check 4, external authorization: an authorization service is asked about each handshake
//! (`[policies.NAME.ext_authz]`), with the contract of Envoy's `ext_authz` HTTP service,
//! Traefik's ForwardAuth and NGINX's `auth_request`:
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
//! Decisions may be cached (`cache_ttl`) by a hash of the route, the request target and the
//! credentials; a request with no credential at all is never cached.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::cache::{self, TtlCache};
use super::token::extract::{from_subprotocol, Found};
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
        let key = self.cache.as_ref().and_then(|_| cache_key(q, &headers));
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
        let decision = match self.client.send(call).await {
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

/// The cache key: route, target and credentials; `None` (not cached) without any credential.
fn cache_key(q: &Question<'_>, sent: &HeaderMap) -> Option<cache::Key> {
    let authorization = sent
        .get(http::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let cookies: Vec<&[u8]> = sent
        .get_all(http::header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let fingerprint = q.cert.map(|c| c.fingerprint.as_bytes());
    let query = q.head.target.contains('?');
    if authorization.is_none() && cookies.is_empty() && fingerprint.is_none() && !query {
        return None;
    }
    let cookies = cookies.join(&b"; "[..]);
    Some(cache::key(&[
        q.route.as_bytes(),
        q.head.target.as_bytes(),
        authorization.unwrap_or_default(),
        &cookies,
        fingerprint.unwrap_or_default(),
    ]))
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

    #[test]
    fn cache_keys_need_a_credential_and_differ_by_it() {
        let anon = RequestHead::for_test("GET", "/ws", &[("host", "gw")]);
        let q = |head| Question {
            head,
            route: "/ws",
            client_ip: None,
            cert: None,
        };
        let a = Authorizer::compile(
            &toml::from_str("url = \"http://127.0.0.1:9/\"").unwrap(),
            "k",
        )
        .unwrap();
        assert!(cache_key(&q(&anon), &a.request_headers(&q(&anon))).is_none());
        let alice = RequestHead::for_test("GET", "/ws", &[("authorization", "Bearer a")]);
        let bob = RequestHead::for_test("GET", "/ws", &[("authorization", "Bearer b")]);
        let sub = RequestHead::for_test("GET", "/ws", &[("sec-websocket-protocol", "bearer.a")]);
        let key = |h| cache_key(&q(h), &a.request_headers(&q(h))).unwrap();
        assert_ne!(key(&alice), key(&bob));
        assert_eq!(
            key(&alice),
            key(&sub),
            "the same bearer token, however sent"
        );
        let sent = a.request_headers(&q(&sub));
        assert_eq!(sent["authorization"], "Bearer a");
        assert_eq!(sent["x-forwarded-uri"], "/ws");
        assert_eq!(sent["x-forwarded-proto"], "http");
        let mut secure = RequestHead::for_test("GET", "/ws", &[]);
        secure.tls = true;
        assert_eq!(a.request_headers(&q(&secure))["x-forwarded-proto"], "https");
    }
}
