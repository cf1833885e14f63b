//! Checks 4 and 5: find the token (header, subprotocol, query, cookie — in the policy's order),
//! verify it (signature with a pinned key, `exp`/`nbf`/`iat` with leeway, `iss`/`aud`), then check
//! the claims the policy requires.
//!
//! Rejections follow RFC 6750: a missing token is `401` with a bare `WWW-Authenticate: Bearer`
//! challenge; a bad one is `401` with `error="invalid_token"`; a valid token that lacks the
//! required claims is `403` with `error="insufficient_scope"`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Validation};
use serde_json::{Map, Value};

use super::keys::KeySet;
use super::{Reason, Rejection};
use crate::config::policy::{defaults, Jwt, OnExpiry, TokenSource};
use crate::http1::RequestHead;

/// The default order of token sources.
pub const DEFAULT_SOURCES: [TokenSource; 4] = [
    TokenSource::Header,
    TokenSource::Subprotocol,
    TokenSource::Query,
    TokenSource::Cookie,
];

/// A compiled token policy.
pub struct TokenPolicy {
    sources: Vec<TokenSource>,
    query_param: String,
    cookie: String,
    max_token_bytes: usize,
    pub keys: KeySet,
    issuers: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
    require_exp: bool,
    leeway: Duration,
    required_claims: Vec<String>,
    claims: Vec<(String, Vec<String>)>,
    on_expiry: OnExpiry,
    expiry_grace: Duration,
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub token: String,
    pub subject: Option<String>,
    pub claims: Map<String, Value>,
    /// When an open socket must close (`exp` + leeway + grace), unless the policy ignores expiry.
    pub closes_at: Option<SystemTime>,
}

impl TokenPolicy {
    pub fn compile(jwt: &Jwt, key: &str) -> Result<TokenPolicy, String> {
        Ok(TokenPolicy {
            sources: jwt.sources.clone().unwrap_or(DEFAULT_SOURCES.to_vec()),
            query_param: jwt
                .query_param
                .clone()
                .unwrap_or(defaults::QUERY_PARAM.into()),
            cookie: jwt.cookie.clone().unwrap_or(defaults::COOKIE.into()),
            max_token_bytes: jwt.max_token_bytes.unwrap_or(defaults::MAX_TOKEN_BYTES),
            keys: KeySet::load(jwt, key)?,
            issuers: jwt.issuers.clone(),
            audiences: jwt.audiences.clone(),
            require_exp: jwt.require_exp.unwrap_or(true),
            leeway: jwt.leeway.map_or(defaults::LEEWAY, |d| d.0),
            required_claims: jwt.required_claims.clone(),
            claims: jwt
                .claims
                .iter()
                .map(|(k, rule)| {
                    (
                        k.clone(),
                        rule.values().into_iter().map(String::from).collect(),
                    )
                })
                .collect(),
            on_expiry: jwt.on_expiry,
            expiry_grace: jwt.expiry_grace.map_or(Duration::ZERO, |d| d.0),
        })
    }

    /// The query parameter that may carry the token.
    pub fn query_param(&self) -> &str {
        &self.query_param
    }

    /// The cookie that may carry the token.
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// Find, verify and authorize the request's token.
    pub async fn check(&self, head: &RequestHead) -> Result<Verified, Rejection> {
        let token = self.find(head).ok_or_else(missing)?;
        if token.len() > self.max_token_bytes {
            return Err(invalid(Reason::AuthInvalid, "token too large"));
        }
        let claims = self.verify(&token).await?;
        self.authorize(&claims)?;
        let subject = claims.get("sub").and_then(Value::as_str).map(String::from);
        let closes_at = match (self.on_expiry, claims.get("exp").and_then(Value::as_u64)) {
            // The leeway that admitted a just-expired token also keeps it open that long.
            (OnExpiry::Close, Some(exp)) => {
                Some(UNIX_EPOCH + Duration::from_secs(exp) + self.leeway + self.expiry_grace)
            }
            _ => None,
        };
        Ok(Verified {
            token,
            subject,
            claims,
            closes_at,
        })
    }

    /// The token from the first source that has one.
    pub fn find(&self, head: &RequestHead) -> Option<String> {
        self.sources.iter().find_map(|source| match source {
            TokenSource::Header => from_authorization(head),
            TokenSource::Subprotocol => from_subprotocol(head),
            TokenSource::Query => query_param(&head.target, &self.query_param),
            TokenSource::Cookie => cookie(head, &self.cookie),
        })
    }

    async fn verify(&self, token: &str) -> Result<Map<String, Value>, Rejection> {
        let header =
            decode_header(token).map_err(|_| invalid(Reason::AuthInvalid, "malformed token"))?;
        let candidates = self
            .keys
            .candidates(header.kid.as_deref(), header.alg)
            .await;
        if candidates.is_empty() {
            return Err(invalid(
                Reason::AuthInvalid,
                if header.kid.is_some() {
                    "unknown key id"
                } else {
                    "no key for this algorithm"
                },
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required = vec![];
        if self.require_exp {
            required.push("exp");
        }
        if let Some(iss) = &self.issuers {
            validation.set_issuer(iss);
            required.push("iss");
        }
        match &self.audiences {
            Some(aud) => {
                validation.set_audience(aud);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);

        let mut last = ErrorKind::InvalidSignature;
        for key in candidates {
            match decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => {
                    self.check_iat(&data.claims)?;
                    return Ok(data.claims);
                }
                // Another key with the same kid/alg may still verify it.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => {
                    last = e.into_kind();
                    break;
                }
            }
        }
        Err(match last {
            ErrorKind::ExpiredSignature => invalid(Reason::AuthExpired, "token expired"),
            ErrorKind::ImmatureSignature => invalid(Reason::AuthInvalid, "token not yet valid"),
            ErrorKind::InvalidAudience => invalid(Reason::AuthInvalid, "audience not accepted"),
            ErrorKind::InvalidIssuer => invalid(Reason::AuthInvalid, "issuer not accepted"),
            ErrorKind::MissingRequiredClaim(c) => {
                invalid(Reason::AuthInvalid, &format!("missing claim {c}"))
            }
            ErrorKind::InvalidSignature => invalid(Reason::AuthInvalid, "bad signature"),
            _ => invalid(Reason::AuthInvalid, "invalid token"),
        })
    }

    /// `iat` in the future (beyond leeway) means a forged or badly clocked issuer.
    fn check_iat(&self, claims: &Map<String, Value>) -> Result<(), Rejection> {
        let Some(iat) = claims.get("iat") else {
            return Ok(());
        };
        let Some(iat) = iat.as_u64() else {
            return Err(invalid(Reason::AuthInvalid, "iat is not a number"));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if iat > now + self.leeway.as_secs() {
            return Err(invalid(Reason::AuthInvalid, "token issued in the future"));
        }
        Ok(())
    }

    /// Check 5: the claims the policy requires (403 when lacking).
    fn authorize(&self, claims: &Map<String, Value>) -> Result<(), Rejection> {
        for name in &self.required_claims {
            if claims.get(name).is_none_or(Value::is_null) {
                return Err(forbidden(&format!("claim {name} required")));
            }
        }
        for (name, wanted) in &self.claims {
            let have: Vec<&str> = match claims.get(name) {
                Some(Value::String(s)) => s.split(' ').filter(|s| !s.is_empty()).collect(),
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                Some(Value::Bool(b)) => vec![if *b { "true" } else { "false" }],
                _ => vec![],
            };
            if let Some(missing) = wanted.iter().find(|w| !have.contains(&w.as_str())) {
                return Err(forbidden(&format!("claim {name} must include {missing}")));
            }
        }
        Ok(())
    }
}

fn missing() -> Rejection {
    Rejection::new(Reason::AuthMissing, 401, "token required\n")
        .header("WWW-Authenticate", "Bearer realm=\"portcullis\"")
}

fn invalid(reason: Reason, why: &str) -> Rejection {
    Rejection::new(reason, 401, format!("{why}\n")).header(
        "WWW-Authenticate",
        format!(
            "Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"{why}\""
        ),
    )
}

fn forbidden(why: &str) -> Rejection {
    Rejection::new(Reason::Forbidden, 403, format!("{why}\n")).header(
        "WWW-Authenticate",
        format!(
            "Bearer realm=\"portcullis\", error=\"insufficient_scope\", error_description=\"{why}\""
        ),
    )
}

fn from_authorization(head: &RequestHead) -> Option<String> {
    let value = head.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

fn from_subprotocol(head: &RequestHead) -> Option<String> {
    head.headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(defaults::SUBPROTOCOL_PREFIX))
        .filter(|t| !t.is_empty())
        .map(String::from)
}

/// Whether a subprotocol entry carries a token (and so must never be forwarded or echoed).
pub fn is_token_subprotocol(protocol: &str) -> bool {
    protocol.starts_with(defaults::SUBPROTOCOL_PREFIX)
}

fn cookie(head: &RequestHead, name: &str) -> Option<String> {
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
pub fn strip_cookie(value: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split('=').next().map(str::trim) != Some(name))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// A query parameter's (percent-decoded) value.
pub fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1.split('#').next()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name)
            .then(|| percent_decode(v))
            .filter(|v| !v.is_empty())
    })
}

/// The request target without the query parameter `name` (for forwarding and for logs).
pub fn strip_query_param(target: &str, name: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| percent_decode(pair.split('=').next().unwrap_or("")) != name)
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert!(from_authorization(&head("/", &[("authorization", "Basic abc")])).is_none());
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
