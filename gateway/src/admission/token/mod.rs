//! Checks 4 and 5: find the token (header, subprotocol, query, cookie — in the policy's order),
//! verify it (signature with a pinned key, `exp`/`nbf`/`iat` with leeway, `iss`/`aud`), then check
//! the claims the policy requires.
//!
//! Rejections follow RFC 6750: a missing token is `401` with a bare `WWW-Authenticate: Bearer`
//! challenge; a bad one is `401` with `error="invalid_token"`; a valid token that lacks the
//! required claims is `403` with `error="insufficient_scope"`.

use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Validation};
use serde_json::{Map, Value};

pub(crate) mod extract;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod hs256;
pub(crate) mod numeric_date;

use super::keyset::KeySet;
use super::Rejection;
use crate::config::defaults;
use crate::config::policy::{ClaimRule, Jwt, OnExpiry, TokenSource};
use crate::core::reason::Reason;
use crate::net::http1::RequestHead;
use extract::Found;

/// A compiled token policy.
pub(crate) struct TokenPolicy {
    locator: Locator,
    pub(crate) keys: KeySet,
    issuers: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
    require_exp: bool,
    leeway: Duration,
    rules: ClaimRules,
    on_expiry: OnExpiry,
    expiry_grace: Duration,
}

/// Where a policy looks for its token, and how long one may be (shared by `jwt` and
/// `introspection`).
pub(crate) struct Locator {
    sources: Vec<TokenSource>,
    query_param: String,
    cookie: String,
    max_token_bytes: usize,
}

/// The claims a policy requires (check 5), of a JWT or of an introspection answer.
pub(crate) struct ClaimRules {
    required_claims: Vec<String>,
    claims: Vec<(String, Vec<String>)>,
}

/// A verified token.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) token: String,
    pub(crate) subject: Option<String>,
    pub(crate) claims: Map<String, Value>,
    /// When an open socket must close (`exp` + leeway + grace), unless the policy ignores expiry.
    pub(crate) closes_at: Option<SystemTime>,
}

impl TokenPolicy {
    pub(crate) fn compile(jwt: &Jwt, key: &str) -> Result<TokenPolicy, String> {
        Ok(TokenPolicy {
            locator: Locator::new(
                jwt.sources.as_deref(),
                jwt.query_param.as_deref(),
                jwt.cookie.as_deref(),
                jwt.max_token_bytes,
            ),
            keys: KeySet::load(jwt, key)?,
            issuers: jwt.issuers.clone(),
            audiences: jwt.audiences.clone(),
            require_exp: jwt.require_exp.unwrap_or(defaults::REQUIRE_EXP),
            leeway: jwt.leeway.map_or(defaults::LEEWAY, |d| d.0),
            rules: ClaimRules::new(&jwt.required_claims, &jwt.claims),
            on_expiry: jwt.on_expiry,
            expiry_grace: jwt.expiry_grace.map_or(defaults::EXPIRY_GRACE, |d| d.0),
        })
    }

    /// Where the token is looked for.
    pub(crate) fn locator(&self) -> &Locator {
        &self.locator
    }

    /// Find, verify and authorize the request's token.
    pub(crate) async fn check(&self, head: &RequestHead) -> Result<Verified, Rejection> {
        let token = self.locator.token(head)?;
        let claims = self.verify(&token).await?;
        self.rules.authorize(&claims)?;
        let subject = claims.get("sub").and_then(Value::as_str).map(String::from);
        let exp = claims.get("exp").and_then(numeric_date::seconds);
        let closes_at = match (self.on_expiry, exp) {
            // The leeway that admitted a just-expired token also keeps it open that long. A date
            // beyond the clock's range never comes.
            (OnExpiry::Close, Some(exp)) => {
                numeric_date::moment(exp, self.leeway.saturating_add(self.expiry_grace))
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

    async fn verify(&self, token: &str) -> Result<Map<String, Value>, Rejection> {
        let header =
            decode_header(token).map_err(|_| invalid(Reason::AuthInvalid, "malformed token"))?;
        // RFC 7515, section 4.1.11: a token naming critical extensions the recipient does not
        // understand is invalid. The gateway understands none.
        if header.crit.is_some() {
            return Err(invalid(
                Reason::AuthInvalid,
                "unsupported critical header parameter",
            ));
        }
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
        let Some(iat) = numeric_date::seconds(iat) else {
            return Err(invalid(Reason::AuthInvalid, "iat is not a number"));
        };
        if iat > numeric_date::now() + self.leeway.as_secs_f64() {
            return Err(invalid(Reason::AuthInvalid, "token issued in the future"));
        }
        Ok(())
    }
}

impl Locator {
    pub(crate) fn new(
        sources: Option<&[TokenSource]>,
        query_param: Option<&str>,
        cookie: Option<&str>,
        max_token_bytes: Option<usize>,
    ) -> Locator {
        Locator {
            sources: sources.map_or(defaults::TOKEN_SOURCES.to_vec(), <[_]>::to_vec),
            query_param: query_param.unwrap_or(defaults::QUERY_PARAM).into(),
            cookie: cookie.unwrap_or(defaults::COOKIE).into(),
            max_token_bytes: max_token_bytes.unwrap_or(defaults::MAX_TOKEN_BYTES),
        }
    }

    /// The query parameter that may carry the token.
    pub(crate) fn query_param(&self) -> &str {
        &self.query_param
    }

    /// The cookie that may carry the token.
    pub(crate) fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// The request's token: `401` when there is none or it is too large.
    pub(crate) fn token(&self, head: &RequestHead) -> Result<String, Rejection> {
        let token = self.find(head)?.ok_or_else(missing)?;
        if token.len() > self.max_token_bytes {
            return Err(invalid(Reason::AuthInvalid, "token too large"));
        }
        Ok(token)
    }

    /// The request's token, from the one configured source that has it. A token sent by more
    /// than one method, or twice by one (RFC 6750, section 2: clients must use exactly one), is
    /// refused with `400 invalid_request`, so nothing in front of the gateway can disagree about
    /// which credential counted.
    pub(crate) fn find(&self, head: &RequestHead) -> Result<Option<String>, Rejection> {
        let mut token = None;
        for source in &self.sources {
            let found = match source {
                TokenSource::Header => extract::from_authorization(head),
                TokenSource::Subprotocol => extract::from_subprotocol(head),
                TokenSource::Query => extract::query_param(&head.target, &self.query_param),
                TokenSource::Cookie => extract::cookie(head, &self.cookie),
            };
            match found {
                Found::None => {}
                Found::Many => {
                    return Err(Rejection::invalid_request(&format!(
                        "token sent more than once ({})",
                        source.as_str()
                    )))
                }
                Found::One(t) if token.is_none() => token = Some(t),
                Found::One(_) => {
                    return Err(Rejection::invalid_request(
                        "token sent by more than one method",
                    ))
                }
            }
        }
        Ok(token)
    }
}

impl ClaimRules {
    pub(crate) fn new(
        required: &[String],
        claims: &std::collections::BTreeMap<String, ClaimRule>,
    ) -> ClaimRules {
        ClaimRules {
            required_claims: required.to_vec(),
            claims: claims
                .iter()
                .map(|(k, rule)| {
                    (
                        k.clone(),
                        rule.values().into_iter().map(String::from).collect(),
                    )
                })
                .collect(),
        }
    }

    /// Check 5: the claims the policy requires (403 when lacking).
    pub(crate) fn authorize(&self, claims: &Map<String, Value>) -> Result<(), Rejection> {
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

pub(crate) fn missing() -> Rejection {
    Rejection::new(Reason::AuthMissing, 401, "token required\n")
        .header("WWW-Authenticate", "Bearer realm=\"portcullis\"")
}

/// `401 invalid_token` with `why` as the `error_description`.
pub(crate) fn invalid(reason: Reason, why: &str) -> Rejection {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const SECRET: &[u8] = b"a test secret of at least 32 bytes..";

    fn head_with(token: &str) -> RequestHead {
        RequestHead::for_test("GET", "/", &[("authorization", &format!("Bearer {token}"))])
    }

    async fn check(claims: &str) -> Result<Verified, Rejection> {
        let policy = hs256::policy("", SECRET).unwrap();
        let token = hs256::sign(SECRET, br#"{"alg":"HS256","typ":"JWT"}"#, claims.as_bytes());
        policy.check(&head_with(&token)).await
    }

    /// A validly signed `exp` of 2^63 s or more panicked in `UNIX_EPOCH + Duration`: now it is
    /// an expiry too far away to ever come.
    #[tokio::test]
    async fn huge_exp_never_closes_and_does_not_panic() {
        for exp in [1u64 << 63, u64::MAX, (1 << 63) - 1, i64::MAX as u64 / 2] {
            let v = check(&format!(r#"{{"sub":"s","exp":{exp}}}"#))
                .await
                .unwrap_or_else(|r| panic!("exp {exp}: {}", r.answer.body));
            assert!(v.closes_at.is_none_or(|at| at > SystemTime::now()), "{exp}");
        }
        let soon = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let v = check(&format!(r#"{{"exp":{soon}}}"#)).await.unwrap();
        let expected = UNIX_EPOCH + Duration::from_secs(soon) + defaults::LEEWAY;
        assert_eq!(v.closes_at, Some(expected + defaults::EXPIRY_GRACE));
    }
}
