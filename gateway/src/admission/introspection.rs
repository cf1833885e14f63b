//! Checks 4 and 5 for opaque tokens: OAuth 2.0 token introspection (RFC 7662,
//! `[policies.NAME.introspection]`). The token is found as a JWT would be, then posted to the
//! authorization server's endpoint with the gateway's client credentials (HTTP Basic); an
//! answer with `active: true` is checked like a JWT's claims (`exp`/`nbf` with leeway, `iss`,
//! `aud`, required claims and values such as `scope`), and its `exp` closes the socket as a
//! JWT's does. Active answers may be cached (`cache_ttl`), never past the token's `exp`.

use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value};

use super::cache::{self, TtlCache};
use super::token::{invalid, numeric_date, ClaimRules, Locator, Verified};
use super::Rejection;
use crate::config::defaults;
use crate::config::identity::Introspection;
use crate::config::policy::OnExpiry;
use crate::core::duration::deadline;
use crate::core::reason::Reason;
use crate::core::url::HttpUrl;
use crate::net::http1::RequestHead;
use crate::net::http_client::{Call, HttpClient};
use crate::obs::log_limit::{left_out, LogLimit};
use crate::obs::trace;

/// A compiled `introspection` table.
pub(crate) struct Introspector {
    url: HttpUrl,
    client: HttpClient,
    /// `Basic base64(client_id:secret)`; never logged.
    authorization: HeaderValue,
    timeout: Duration,
    locator: Locator,
    issuers: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
    leeway: Duration,
    rules: ClaimRules,
    on_expiry: OnExpiry,
    expiry_grace: Duration,
    cache: Option<(Duration, TtlCache<Map<String, Value>>)>,
    /// The warning of an endpoint that cannot be asked, which every handshake may cause.
    warn: LogLimit,
}

impl Introspector {
    /// Compile; reads the client secret (an error names its key, never its value).
    pub(crate) fn compile(i: &Introspection, key: &str) -> Result<Introspector, String> {
        let (_, secret) = i
            .secret()
            .read()
            .map_err(|e| format!("{key}.{e}"))?
            .ok_or_else(|| format!("{key}: no client secret"))?;
        let secret = String::from_utf8(secret)
            .map_err(|_| format!("{key}: the client secret is not UTF-8 text"))?;
        let secret = secret.trim_end_matches(['\r', '\n']);
        if secret.is_empty() {
            return Err(format!("{key}: the client secret is empty"));
        }
        // RFC 6749, section 2.3.1: both parts form-encoded before Basic.
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&i.client_id),
            enc(secret)
        ));
        let mut authorization = HeaderValue::from_str(&format!("Basic {basic}"))
            .map_err(|_| format!("{key}: unusable client credentials"))?;
        authorization.set_sensitive(true);
        Ok(Introspector {
            url: i.url.clone(),
            client: HttpClient::new(i.ca_file.as_deref())
                .map_err(|e| format!("{key}.ca_file: {e}"))?,
            authorization,
            timeout: i.timeout.map_or(defaults::INTROSPECTION_TIMEOUT, |d| d.0),
            locator: Locator::new(
                i.sources.as_deref(),
                i.query_param.as_deref(),
                i.cookie.as_deref(),
                i.max_token_bytes,
            ),
            issuers: i.issuers.clone(),
            audiences: i.audiences.clone(),
            leeway: i.leeway.map_or(defaults::LEEWAY, |d| d.0),
            rules: ClaimRules::new(&i.required_claims, &i.claims),
            on_expiry: i.on_expiry,
            expiry_grace: i.expiry_grace.map_or(defaults::EXPIRY_GRACE, |d| d.0),
            cache: i
                .cache_ttl
                .map(|ttl| (ttl.0, TtlCache::new(defaults::IDENTITY_CACHE_ENTRIES))),
            warn: LogLimit::default(),
        })
    }

    /// Where the token is looked for.
    pub(crate) fn locator(&self) -> &Locator {
        &self.locator
    }

    /// Find the token, have it introspected (or remember the answer), check the answer.
    pub(crate) async fn check(&self, head: &RequestHead) -> Result<Verified, Rejection> {
        let token = self.locator.token(head)?;
        let key = cache::key(&[token.as_bytes()]);
        let cached = self.cache.as_ref().and_then(|(_, c)| c.get(&key));
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let claims = self.introspect(&token).await?;
                if let Some((ttl, cache)) = &self.cache {
                    let exp = claims.get("exp").and_then(numeric_date::seconds);
                    let until =
                        cache_deadline(tokio::time::Instant::now(), *ttl, exp, numeric_date::now());
                    cache.insert(key, claims.clone(), until);
                }
                claims
            }
        };
        self.validate(&claims)?;
        self.rules.authorize(&claims)?;
        let exp = claims.get("exp").and_then(numeric_date::seconds);
        let closes_at: Option<SystemTime> = match (self.on_expiry, exp) {
            (OnExpiry::Close, Some(exp)) => {
                numeric_date::moment(exp, self.leeway.saturating_add(self.expiry_grace))
            }
            _ => None,
        };
        Ok(Verified {
            subject: claims.get("sub").and_then(Value::as_str).map(String::from),
            token,
            claims,
            closes_at,
        })
    }

    /// One call to the endpoint: the answer's claims when the token is active.
    async fn introspect(&self, token: &str) -> Result<Map<String, Value>, Rejection> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, self.authorization.clone());
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let call = Call {
            method: Method::POST,
            url: &self.url,
            headers,
            body: Bytes::from(body),
            timeout: self.timeout,
            max_body: defaults::INTROSPECTION_MAX_ANSWER_BYTES,
        };
        let sent = trace::step("introspection", &self.url.text, self.client.send(call));
        let reply = match sent.await {
            Ok(reply) if reply.status == StatusCode::OK => reply,
            Ok(reply) => return Err(self.unavailable(&format!("answered {}", reply.status))),
            Err(e) => return Err(self.unavailable(&e.to_string())),
        };
        let answer: Map<String, Value> = serde_json::from_slice(&reply.body)
            .map_err(|_| self.unavailable("answered something that is not a JSON object"))?;
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Err(invalid(Reason::AuthInvalid, "token not active"));
        }
        Ok(answer)
    }

    /// The endpoint gave no usable answer: refused with 503 (counted as `auth_unavailable`),
    /// warned about at most once per `log_limit::EVERY`.
    fn unavailable(&self, why: &str) -> Rejection {
        if let Some(n) = self.warn.allow() {
            log::warn!(
                "introspection: {} {why}; refusing{}",
                self.url.shown(),
                left_out(n)
            );
        }
        Rejection::new(
            Reason::AuthUnavailable,
            503,
            "token introspection unavailable\n",
        )
        .header("Retry-After", "1")
    }

    /// `exp`, `nbf`, `iss`, `aud` of an active answer, as for a JWT.
    fn validate(&self, claims: &Map<String, Value>) -> Result<(), Rejection> {
        let now = numeric_date::now();
        let leeway = self.leeway.as_secs_f64();
        let date = |name: &str| -> Result<Option<f64>, Rejection> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => numeric_date::seconds(v).map(Some).ok_or_else(|| {
                    invalid(Reason::AuthInvalid, &format!("{name} is not a number"))
                }),
            }
        };
        if date("exp")?.is_some_and(|exp| exp + leeway <= now) {
            return Err(invalid(Reason::AuthExpired, "token expired"));
        }
        if date("nbf")?.is_some_and(|nbf| nbf > now + leeway) {
            return Err(invalid(Reason::AuthInvalid, "token not yet valid"));
        }
        if let Some(issuers) = &self.issuers {
            let iss = claims.get("iss").and_then(Value::as_str);
            if !iss.is_some_and(|i| issuers.iter().any(|w| w == i)) {
                return Err(invalid(Reason::AuthInvalid, "issuer not accepted"));
            }
        }
        if let Some(audiences) = &self.audiences {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => audiences.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| audiences.iter().any(|w| w == a)),
                _ => false,
            };
            if !ok {
                return Err(invalid(Reason::AuthInvalid, "audience not accepted"));
            }
        }
        Ok(())
    }
}

/// Until when an active answer may be cached: `ttl` after `now`, never past the token's `exp`
/// (Unix seconds, `unix_now` being now). The `exp` comes from the identity provider and may lie
/// beyond anything the monotonic clock can hold (`Instant + Duration` would panic): the deadline
/// saturates instead, and an `exp` already past means no caching.
fn cache_deadline(
    now: tokio::time::Instant,
    ttl: Duration,
    exp: Option<f64>,
    unix_now: f64,
) -> tokio::time::Instant {
    let until = deadline(now, ttl);
    let Some(exp) = exp else { return until };
    let left = exp - unix_now;
    let left = if left > 0.0 {
        Duration::try_from_secs_f64(left).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    };
    until.min(deadline(now, left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_deadlines_follow_ttl_and_exp_and_never_overflow() {
        let now = tokio::time::Instant::now();
        let hour = Duration::from_secs(3600);
        let unix = 1_800_000_000.0;
        assert_eq!(cache_deadline(now, hour, None, unix), now + hour);
        assert_eq!(
            cache_deadline(now, hour, Some(unix + 5.5), unix),
            now + Duration::from_millis(5500)
        );
        assert_eq!(cache_deadline(now, hour, Some(unix - 1.0), unix), now);
        // Far dates an identity provider may sign: 2^63 s, u64::MAX (which used to panic:
        // more seconds than the monotonic clock can add), f64::MAX. The ttl decides.
        for exp in [(1u64 << 63) as f64, u64::MAX as f64, f64::MAX] {
            assert_eq!(
                cache_deadline(now, hour, Some(exp), unix),
                now + hour,
                "{exp}"
            );
        }
    }
}
